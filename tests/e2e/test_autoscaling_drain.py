"""Graceful change under load: a deploy during a stream of requests loses none and no request
sees a mix of versions; a deleted function finishes what it runs; daemon shutdown during load
answers every accepted request, queued ones included.

Run: cd tests/e2e && python3 -m unittest -v test_autoscaling_drain
"""

import signal
import threading
import time
import unittest

from autoscale_util import SLEEP_FN, Stream, burst, live, stats, wait_stats
from nimbus_harness import NimbusTestCase, wait_until


class Drain(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def test_deploy_during_a_stream_loses_nothing_and_mixes_nothing(self):
        d = self.d
        d.deploy("roll", SLEEP_FN, "python3", "app.handler", timeout_s=30, environment={"VER": "1"})
        with Stream(d, "roll", {"sleep": 0.05}, 6) as stream:
            time.sleep(0.5)
            # A new version (config change), then a settings-only change, then code+config.
            d.deploy("roll", SLEEP_FN, environment={"VER": "2"})
            time.sleep(0.4)
            d.api("PUT", "/v1/functions/roll/scaling", {"max_concurrency": 4, "max_queue": 100})
            time.sleep(0.4)
            t3 = time.monotonic()
            d.deploy("roll", SLEEP_FN, environment={"VER": "3"}, timeout_s=20)
            time.sleep(0.6)
        results, errors = stream.results, stream.errors
        self.assertEqual(errors, [])
        self.assertGreater(len(results), 30)
        seen = set()
        for _, r in results:
            self.assert_ok(r)
            v = r.headers["x-nimbus-executed-version"]
            # The version that ran is the one whose config the instance had: never a mix.
            self.assertEqual(r.json()["v"], v, r)
            seen.add(v)
        self.assertEqual(seen, {"1", "2", "3"})
        # Requests sent well after the last deploy answered went to it.
        late = [r for t, r in results if t > t3 + 0.3]
        self.assertTrue(late)
        self.assertEqual({r.headers["x-nimbus-executed-version"] for r in late}, {"3"})
        st = wait_stats(d, "roll", lambda s: s["instances"]["draining"] == 0)
        self.assertEqual(st["instances"]["draining"], 0, st)
        self.assertLessEqual(live(st), 4, st)

    def test_delete_lets_in_flight_invocations_finish(self):
        d = self.d
        d.deploy("gone", SLEEP_FN, "python3", "app.handler", timeout_s=30)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", d.invoke("gone", {"sleep": 1.0})))
        t.start()
        self.assertTrue(wait_until(lambda: stats(d, "gone")["in_flight"] == 1, 10))
        self.assertEqual(d.api("DELETE", "/v1/functions/gone").status, 200)
        t.join(30)
        self.assert_ok(out["r"])
        self.assertEqual(d.invoke("gone").status, 404)


class Shutdown(NimbusTestCase):
    def test_shutdown_during_load_answers_every_accepted_request(self):
        d = self.new_daemon(args=["--drain-timeout", "30"])
        d.start()
        d.deploy("busy", SLEEP_FN, "python3", "app.handler", timeout_s=30, max_concurrency=4)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("res", burst(d, "busy", 16, {"sleep": 0.5})))
        t.start()
        # All 16 accepted: 4 running, 12 queued behind the cap.
        self.assertTrue(wait_until(lambda: (lambda s: s["in_flight"] + s["queued"])(stats(d, "busy")) == 16,
                                   10))
        d.send_signal(signal.SIGTERM)
        t.join(60)
        res = out["res"]
        self.assertEqual(len(res), 16)
        for r, _ in res:
            self.assert_ok(r)
        self.assertEqual(d.proc.wait(30), 0)
        self.assertIn("stopped cleanly", d.log_text())


if __name__ == "__main__":
    unittest.main()
