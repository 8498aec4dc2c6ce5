#!/usr/bin/env python3
"""Instance churn (bench only): one client per function, each invoking ?version=1 of its own
function (whose latest is version 2) back to back over a keep-alive connection for SECONDS.
An old version's pool keeps no idle instance, and with one client nothing waits when the
instance finishes, so every invocation starts an instance and stops it afterwards: the
functions' instance_starts over the run is the sustained churn. Prints one JSON object.

usage: churn.py BASE_URL TOKEN SECONDS FUNCTION...
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def main():
    base, token, seconds, names = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    u = urllib.parse.urlparse(base)
    hdr = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    lock = threading.Lock()
    tally = {"invocations": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    def client(name):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        n = errs = 0
        while time.monotonic() < deadline:
            c.request("POST", f"/v1/functions/{name}/invoke?version=1", b'{"name":"ada"}', hdr)
            r = c.getresponse()
            r.read()
            n += 1
            if r.status != 200 or r.getheader("X-Nimbus-Function-Error"):
                errs += 1
        c.close()
        with lock:
            tally["invocations"] += n
            tally["errors"] += errs

    threads = [threading.Thread(target=client, args=(n,)) for n in names]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally["seconds"] = round(time.monotonic() - t0, 3)
    print(json.dumps(tally))


main()
