"""Helpers of the autoscaling tests (test_autoscaling*.py): bursts of truly parallel requests
and the function's live stats."""

import http.client
import json
import threading
import time

from nimbus_harness import Resp, dir_files, fixture, wait_until

SLEEP_FN = dir_files(fixture("py-sleep"))


def burst(d, name, n, event, timeout=60):
    """n invocations at once: every connection is opened first, then all requests leave
    together (a barrier), so they reach the daemon within a few milliseconds of each other.
    Returns [(Resp or Exception, seconds)] in request order."""
    conns = [http.client.HTTPConnection(d.host, d.port, timeout=timeout) for _ in range(n)]
    for c in conns:
        c.connect()
    body = json.dumps(event).encode()
    headers = {"Authorization": "Bearer " + d.token, "Content-Type": "application/json"}
    gate = threading.Barrier(n)
    out = [None] * n

    def one(i):
        c = conns[i]
        gate.wait()
        t0 = time.monotonic()
        try:
            c.request("POST", f"/v1/functions/{name}/invoke", body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            out[i] = (Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data),
                      time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out[i] = (e, time.monotonic() - t0)
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return out


class Stream:
    """n clients invoking name back to back (event each time) until stop(); results are
    [(monotonic time sent, Resp)], errors the exceptions. Use as a context manager."""

    def __init__(self, d, name, event, n):
        self.d, self.name, self.event = d, name, event
        self.results, self.errors = [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(n)]

    def _client(self):
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.results.append((t, self.d.invoke(self.name, self.event)))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)


def stats(d, name):
    r = d.api("GET", f"/v1/functions/{name}")
    assert r.status == 200, r
    return r.json()["stats"]


def live(st):
    i = st["instances"]
    return i["starting"] + i["idle"] + i["busy"] + i["draining"]


def wait_stats(d, name, pred, timeout=10.0):
    """Polls the function's stats until pred(stats) holds; returns the last stats."""
    last = {}

    def check():
        last["s"] = stats(d, name)
        return pred(last["s"])

    wait_until(check, timeout, 0.05)
    return last["s"]
