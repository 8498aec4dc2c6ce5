"""Instances that die or misbehave between invocations, and runtimes with unusual HTTP habits.

- An idle instance killed from outside is never handed an invocation: the next call starts a
  fresh instance instead of failing with Sandbox.Failure.
- A custom runtime whose HTTP client sends "Connection: close" on every request (Python's
  urllib does) gets complete answers, including a multi-megabyte event.
- A function opening many Runtime API connections is capped without harming its invocations.
- Function processes are in their own session: a signal to the daemon's process group does
  not reach them.
Run: cd tests/e2e && python3 -m unittest -v test_resilience
"""

import os
import signal
import unittest

from nimbus_harness import File, NimbusTestCase, wait_until

COUNTER_PY = """\
import os
calls = 0


def handler(event, context):
    global calls
    calls += 1
    return {"calls": calls, "pid": os.getpid(), "sid": os.getsid(0), "size": len(event.get("pad", ""))}
"""

# A custom runtime written with urllib, which sends "Connection: close" on every request.
URLLIB_BOOTSTRAP = """\
#!/usr/bin/python3
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
calls = 0
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    calls += 1
    body = json.dumps({"calls": calls, "size": len(event.get("pad", ""))}).encode()
    req = urllib.request.Request(api + rid + "/response", data=body, method="POST")
    urllib.request.urlopen(req).read()
"""

# Opens many idle connections to the Runtime API before serving normally.
GREEDY_BOOTSTRAP = """\
#!/usr/bin/python3
import http.client, json, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
hoard = []
for _ in range(40):
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.connect()
    hoard.append(c)
conn = http.client.HTTPConnection(host, int(port))
base = "/2018-06-01/runtime/invocation/"
while True:
    conn.request("GET", base + "next")
    r = conn.getresponse()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    r.read()
    conn.request("POST", base + rid + "/response", body=b'{"ok":true}')
    conn.getresponse().read()
"""


def instance_pid(d, name):
    """The pid of the init process of name's only live instance, from the daemon's log."""
    pids = []
    for line in d.log_text().splitlines():
        if "instance:" in line and f"fn={name} " in line and "pid=" in line:
            pids.append(int(line.rsplit("pid=", 1)[1].split()[0]))
    return pids[-1] if pids else None


class Resilience(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def test_idle_instance_killed_from_outside_is_not_used(self):
        self.d.deploy("victim", {"app.py": COUNTER_PY}, "python3", "app.handler")
        first = self.d.invoke("victim").json()
        self.assertEqual(first["calls"], 1)
        pid = instance_pid(self.d, "victim")
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_until(lambda: "idle -> stopping fn=victim" in self.d.log_text(), timeout=5),
                        "the daemon did not notice the idle instance die")
        r = self.d.invoke("victim")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("x-nimbus-function-error", {k.lower() for k in r.headers}, r.text)
        self.assertEqual(r.json()["calls"], 1)  # a fresh instance, not an error

    def test_runtime_with_connection_close_gets_whole_answers(self):
        self.d.deploy("urllib-rt", {"bootstrap": File(URLLIB_BOOTSTRAP, 0o755)}, "provided", "x")
        pad = "x" * (4 << 20)  # far bigger than a socket buffer
        for i in range(1, 4):
            r = self.d.invoke("urllib-rt", {"pad": pad} if i == 2 else {})
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("x-nimbus-function-error", {k.lower() for k in r.headers}, r.text)
            doc = r.json()
            self.assertEqual(doc["calls"], i, doc)  # the same warm instance every time
            self.assertEqual(doc["size"], len(pad) if i == 2 else 0)

    def test_runtime_api_connections_are_capped(self):
        self.d.deploy("greedy", {"bootstrap": File(GREEDY_BOOTSTRAP, 0o755)}, "provided", "x")
        r = self.d.invoke("greedy")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"ok": True})
        self.assertIn("Runtime API connections; dropping one", self.d.log_text())

    def test_functions_run_in_their_own_session(self):
        # A terminal's Ctrl-C goes to the daemon's process group; functions must not get it
        # (the daemon drains them itself). The instance's init (pid 1 of its PID namespace)
        # leads the function's session.
        self.d.deploy("session", {"app.py": COUNTER_PY}, "python3", "app.handler")
        doc = self.d.invoke("session").json()
        self.assertEqual(doc["sid"], 1, doc)


if __name__ == "__main__":
    unittest.main()
