"""Invocation timeouts through the real daemon.

A function running past timeout_s is answered at the deadline with Sandbox.Timedout, its whole
process tree is killed (background children included) and the next invocation gets a fresh
instance.
Run: cd tests/e2e && python3 -m unittest -v test_timeouts
"""

import random
import threading
import time
import unittest

from nimbus_harness import File, NimbusTestCase, processes_matching, wait_until

SLOW_PY = """\
import subprocess
import time

calls = 0


def handler(event, context):
    global calls
    calls += 1
    for secs in event.get("children", []):
        subprocess.Popen(["sleep", str(secs)])
    for secs in event.get("detached", []):
        subprocess.Popen(["sleep", str(secs)], start_new_session=True)
    if event.get("shell_bg"):
        subprocess.run(["sh", "-c", "sleep %d &" % event["shell_bg"]], check=True)
    print("calls", calls, "sleeping", event.get("sleep", 0), flush=True)
    time.sleep(event.get("sleep", 0))
    return {"calls": calls}
"""

HANG_NODE = """\
let calls = 0;
export const handler = async (event) => {
  calls += 1;
  if (event.hang) return new Promise(() => { setInterval(() => {}, 1000); });
  return { calls };
};
"""

# A custom runtime that takes one invocation, leaves a background sleeper behind and hangs.
HANG_BOOTSTRAP = """\
#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
curl -sS -o /dev/null "$api/invocation/next" || exit 1
sh -c 'sleep {secs} &'
exec sleep {secs}
"""


def marker_secs():
    """A sleep duration no other test uses, so /proc can tell our sleepers apart."""
    return random.randint(100000, 999999)


class Timeouts(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()
        cls.d.deploy("slow", {"app.py": SLOW_PY}, "python3", "app.handler", timeout_s=1)

    def timed_invoke(self, name, event):
        t = time.monotonic()
        r = self.d.invoke(name, event, timeout=10)
        return r, time.monotonic() - t

    def assert_timed_out(self, r, elapsed):
        doc = self.assert_fn_error(r, "Sandbox.Timedout")
        self.assertIn("timed out after 1.00 seconds", doc["errorMessage"])
        self.assertGreater(elapsed, 0.9, "answered before the deadline")
        self.assertLess(elapsed, 1.5, "answered too long after the deadline")
        return doc

    def assert_no_process(self, needle):
        left = wait_until(lambda: not processes_matching(needle), timeout=3)
        self.assertTrue(left, f"still running: {processes_matching(needle)}")

    def test_timeout_is_answered_at_the_deadline_and_next_call_is_fresh(self):
        self.d.deploy("slow1", {"app.py": SLOW_PY}, "python3", "app.handler", timeout_s=1)
        self.assertEqual(self.assert_ok(self.d.invoke("slow1", {}))["calls"], 1)
        self.assertEqual(self.assert_ok(self.d.invoke("slow1", {"sleep": 0.2}))["calls"], 2)
        r, elapsed = self.timed_invoke("slow1", {"sleep": 30})
        self.assert_timed_out(r, elapsed)
        t = time.monotonic()
        self.assertEqual(self.assert_ok(self.d.invoke("slow1", {}))["calls"], 1,
                         "after a timeout the next invocation must run on a fresh instance")
        self.assertLess(time.monotonic() - t, 3)
        lines = [rec["line"] for rec in self.d.logs("slow1") if rec["stream"] == "platform"]
        self.assertTrue(any("Task timed out after 1.00 seconds" in line for line in lines), lines)

    def check_descendants_killed(self, name, event, needle):
        """Invokes on a thread, sees the sleepers appear, then checks the timeout kills them."""
        box = {}
        th = threading.Thread(target=lambda: box.update(res=self.timed_invoke(name, event)))
        th.start()
        try:
            seen = wait_until(lambda: processes_matching(needle), timeout=5)
            self.assertTrue(seen, f"the function never started {needle!r}")
        finally:
            th.join(15)
        r, elapsed = box["res"]
        self.assert_timed_out(r, elapsed)
        self.assert_no_process(needle)

    def test_background_children_are_killed_on_timeout(self):
        a, b, c = marker_secs(), marker_secs(), marker_secs()
        event = {"children": [a], "detached": [b], "shell_bg": c, "sleep": 30}
        box = {}
        th = threading.Thread(target=lambda: box.update(res=self.timed_invoke("slow", event)))
        th.start()
        try:
            for secs in (a, b, c):
                self.assertTrue(wait_until(lambda: processes_matching(f"sleep {secs}"), timeout=5),
                                f"sleep {secs} never started")
        finally:
            th.join(15)
        self.assert_timed_out(*box["res"])
        for secs in (a, b, c):
            self.assert_no_process(f"sleep {secs}")
        self.assertEqual(self.assert_ok(self.d.invoke("slow", {}))["calls"], 1)

    def test_node_handler_that_never_answers(self):
        self.d.deploy("node-hang", {"index.mjs": HANG_NODE}, "nodejs20.x", "index.handler", timeout_s=1)
        self.assertEqual(self.assert_ok(self.d.invoke("node-hang", {}))["calls"], 1)
        self.assertEqual(self.assert_ok(self.d.invoke("node-hang", {}))["calls"], 2)
        self.assert_timed_out(*self.timed_invoke("node-hang", {"hang": True}))
        self.assertEqual(self.assert_ok(self.d.invoke("node-hang", {}))["calls"], 1)

    def test_custom_runtime_with_background_process(self):
        secs = marker_secs()
        code = {"bootstrap": File(HANG_BOOTSTRAP.replace("{secs}", str(secs)), 0o755)}
        self.d.deploy("sh-hang", code, "provided", "x", timeout_s=1)
        self.check_descendants_killed("sh-hang", {}, f"sleep {secs}")

    def test_daemon_stays_responsive_during_a_timeout(self):
        box = {}
        th = threading.Thread(target=lambda: box.update(res=self.timed_invoke("slow", {"sleep": 30})))
        th.start()
        try:
            time.sleep(0.3)
            for _ in range(5):
                t = time.monotonic()
                r = self.d.api("GET", "/healthz", token=None, timeout=5)
                self.assertEqual(r.status, 200)
                self.assertLess(time.monotonic() - t, 0.5, "the daemon is blocked by a busy instance")
            self.assertEqual(self.d.api("GET", "/v1/functions/slow").status, 200)
        finally:
            th.join(15)
        self.assert_timed_out(*box["res"])


if __name__ == "__main__":
    unittest.main()
