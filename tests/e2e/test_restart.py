"""Stopping and restarting the real daemon: clean SIGTERM, state kept across restarts, the data
dir lock, and draining in-flight invocations.
Run: cd tests/e2e && python3 -m unittest -v test_restart
"""

import http.client
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from nimbus_harness import (BIN, NimbusTestCase, client_env, dir_files, example,
                            processes_matching, tar_bytes, wait_until)

SLEEPY = """\
import time

calls = 0


def handler(event, context):
    global calls
    calls += 1
    time.sleep(event.get("sleep", 0))
    return {"slept": event.get("sleep", 0), "calls": calls, "tag": %r}
"""


class Restart(NimbusTestCase):
    def assert_stopped_cleanly(self, d, sig=signal.SIGTERM, within=10):
        t = time.monotonic()
        rc = d.stop(sig, timeout=within + 10)
        self.assertEqual(rc, 0, d.log_text())
        self.assertLess(time.monotonic() - t, within)
        self.assertIn("stopped cleanly", d.log_text())
        # No instance outlives the daemon (their command lines name the data dir).
        self.assertTrue(wait_until(lambda: not processes_matching(d.data), timeout=3),
                        processes_matching(d.data))

    def test_state_survives_a_restart(self):
        d = self.new_daemon().start()
        token = d.token
        d.deploy("py", tar_bytes({"app.py": SLEEPY % "v1"}), "python3", "app.handler")
        d.deploy("py", tar_bytes({"app.py": SLEEPY % "v2"}), memory_mb=256)
        d.deploy("node", dir_files(example("node-hello")), "nodejs20.x", "index.handler")
        d.deploy("sh", dir_files(example("provided-hello")), "provided", "function.handler")
        before = d.functions()
        versions_before = d.api("GET", "/v1/functions/py/versions").json()
        self.assertEqual(self.assert_ok(d.invoke("py"))["tag"], "v2")
        self.assertEqual(self.assert_ok(d.invoke("sh"))["count"], 1)
        self.assert_stopped_cleanly(d)
        self.assertFalse(d.running())

        d.start()
        self.assertEqual(d.token, token, "the admin token is kept")
        self.assertEqual(d.functions(), before)
        self.assertEqual(d.api("GET", "/v1/functions/py/versions").json(), versions_before)
        self.assertEqual(self.assert_ok(d.invoke("py"))["tag"], "v2")
        r = d.invoke("py", version=1)
        self.assertEqual((self.assert_ok(r)["tag"], r.headers["x-nimbus-executed-version"]), ("v1", "1"))
        self.assertEqual(self.assert_ok(d.invoke("node", {"name": "N"}))["message"], "Hello, N!")
        self.assertEqual(self.assert_ok(d.invoke("sh"))["count"], 1, "instances do not survive a restart")
        # Logs from before the restart are still there, and the CLI finds the new port.
        p = d.cli("logs", "py")
        self.assertEqual(p.returncode, 0, p)
        self.assertGreaterEqual(p.stdout.count("START RequestId"), 3)
        p = d.cli("ls")
        self.assertEqual(p.returncode, 0, p)
        for name in ("py", "node", "sh"):
            self.assertIn(name, p.stdout)
        # Updating after a restart continues the version sequence.
        fn = d.deploy("py", tar_bytes({"app.py": SLEEPY % "v3"}))
        self.assertEqual(fn["version"], 3)
        self.assert_stopped_cleanly(d, signal.SIGINT)

    def test_second_daemon_on_the_same_data_dir_refuses(self):
        d = self.new_daemon().start()
        d.deploy("py", tar_bytes({"app.py": SLEEPY % "x"}), "python3", "app.handler")
        with open(os.path.join(d.data, "listen")) as f:
            listen = f.read()
        p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data", d.data],
                           capture_output=True, text=True, timeout=20, env=client_env())
        self.assertNotEqual(p.returncode, 0, p)
        self.assertIn(f"another nimbus (pid {d.proc.pid}) is already running on", p.stderr)
        self.assertIn(os.path.realpath(d.data), p.stderr)
        # The first one is untouched and still serving where it said it was.
        with open(os.path.join(d.data, "listen")) as f:
            self.assertEqual(f.read(), listen)
        self.assertTrue(d.running())
        self.assertEqual(self.assert_ok(d.invoke("py"))["tag"], "x")
        self.assert_stopped_cleanly(d)

    def test_sigterm_drains_the_inflight_invocation(self):
        d = self.new_daemon().start()
        d.deploy("sleepy", tar_bytes({"app.py": SLEEPY % "drain"}), "python3", "app.handler")
        self.assert_ok(d.invoke("sleepy"))  # warm
        # A keep-alive connection opened before the signal.
        conn = http.client.HTTPConnection(d.host, d.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/healthz")
        self.assertEqual(json.loads(conn.getresponse().read()), {"status": "ok"})
        box = {}
        th = threading.Thread(target=lambda: box.update(r=d.invoke("sleepy", {"sleep": 1}, timeout=20)))
        t0 = time.monotonic()
        th.start()
        time.sleep(0.3)
        d.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        # While draining: no new invocations, health says so.
        conn.request("GET", "/healthz")
        self.assertEqual(json.loads(conn.getresponse().read()), {"status": "draining"})
        conn.request("POST", "/v1/functions/sleepy/invoke", body=b"{}",
                     headers={"Authorization": "Bearer " + d.token})
        r = conn.getresponse()
        body = json.loads(r.read())
        self.assertEqual(r.status, 503, body)
        self.assertEqual(set(body["error"]), {"code", "message"})
        th.join(20)
        self.assertEqual(self.assert_ok(box["r"]), {"slept": 1, "calls": 2, "tag": "drain"})
        self.assertEqual(d.proc.wait(10), 0, d.log_text())
        self.assertGreater(time.monotonic() - t0, 0.95)
        log = d.log_text()
        self.assertIn("draining 1 in-flight invocations", log)
        self.assertIn("stopped cleanly", log)

    def test_drain_timeout_fails_what_is_left(self):
        d = self.new_daemon(args=["--drain-timeout", "1"]).start()
        d.deploy("sleepy", tar_bytes({"app.py": SLEEPY % "late"}), "python3", "app.handler", timeout_s=30)
        box = {}
        th = threading.Thread(target=lambda: box.update(r=d.invoke("sleepy", {"sleep": 20}, timeout=30)))
        th.start()
        time.sleep(0.5)
        t = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(15), 0, d.log_text())
        self.assertLess(time.monotonic() - t, 5)
        th.join(10)
        self.assertIn("r", box, "the in-flight invocation got no answer")
        self.assert_fn_error(box["r"], "Sandbox.Failure")
        self.assertIn("drain deadline passed", d.log_text())
        self.assertTrue(wait_until(lambda: not processes_matching(d.data), timeout=3))

    def test_restart_after_a_crash(self):
        d = self.new_daemon().start()
        d.deploy("py", tar_bytes({"app.py": SLEEPY % "crash"}), "python3", "app.handler")
        d.deploy("sh", dir_files(example("provided-hello")), "provided", "function.handler")
        self.assert_ok(d.invoke("py"))
        self.assert_ok(d.invoke("sh"))
        self.assertTrue(processes_matching(d.data), "no instance process found to begin with")
        d.proc.kill()
        d.proc.wait(10)
        # Instances notice their daemon is gone and exit.
        self.assertTrue(wait_until(lambda: not processes_matching(d.data), timeout=5),
                        processes_matching(d.data))
        d.start()
        self.assertEqual(self.assert_ok(d.invoke("py"))["calls"], 1)
        self.assertEqual(self.assert_ok(d.invoke("sh"))["count"], 1)
        self.assert_stopped_cleanly(d)


if __name__ == "__main__":
    unittest.main()
