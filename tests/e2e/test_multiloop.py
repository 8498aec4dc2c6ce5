"""The multi-core data plane: `serve --loops N` runs N event loops, each with its own listener
on the same address (SO_REUSEPORT), and every limit holds across them.

Shown here with 3 loops (more than this machine may have cores, on purpose: the loops are
threads, and 3 makes "the other loops" plural): connections land on several loops (the
X-Nimbus-Loop header), max_concurrency and max_queue give exactly the expected 429s whatever
loop each request reached, a deploy during load loses nothing, shutdown under load answers
every accepted request, stats and logs (with --follow) see every loop, and an idle instance
on one loop serves requests that arrived on another (forwarded, not a second cold start).

Run: cd tests/e2e && python3 -m unittest -v test_multiloop
"""

import http.client
import json
import signal
import threading
import time
import unittest

from autoscale_util import SLEEP_FN, Stream, burst, stats
from nimbus_harness import LineReader, NimbusTestCase, shutdown_socket, wait_until

LOOPS = 3


def loops_of(d, n):
    """The X-Nimbus-Loop of n requests, each on a fresh connection."""
    seen = []
    for _ in range(n):
        c = http.client.HTTPConnection(d.host, d.port, timeout=10)
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        seen.append(r.getheader("x-nimbus-loop"))
        c.close()
    return seen


class MultiLoop(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon(args=["--loops", str(LOOPS)])

    def test_connections_are_served_by_several_loops(self):
        seen = loops_of(self.d, 60)
        self.assertTrue(all(s in {str(i) for i in range(LOOPS)} for s in seen), seen)
        self.assertGreaterEqual(len(set(seen)), 2, seen)
        self.assertIn(f"loops={LOOPS}", self.d.log_text())

    def test_max_concurrency_and_max_queue_hold_across_loops(self):
        d = self.d
        d.deploy("capped", SLEEP_FN, "python3", "app.handler", timeout_s=30, max_concurrency=2,
                 max_queue=4, queue_timeout_ms=60000)
        res = burst(d, "capped", 50, {"sleep": 1.0})
        ok = [r for r, _ in res if r.status == 200]
        throttled = [r for r, _ in res if r.status == 429]
        self.assertEqual((len(ok), len(throttled)), (6, 44), [r for r, _ in res][:3])
        # The burst reached more than one loop, and still only two instances ever ran.
        self.assertGreaterEqual(len({r.headers.get("x-nimbus-loop") for r, _ in res}), 2)
        self.assertLessEqual(len({r.json()["instance"] for r in ok}), 2)
        st = stats(d, "capped")
        self.assertEqual((st["throttles"], st["instance_starts"], st["invocations"]), (44, 2, 6),
                         st)

    def test_warm_instance_serves_requests_from_every_loop(self):
        d = self.d
        d.deploy("warm", SLEEP_FN, "python3", "app.handler", timeout_s=30)
        loops = set()
        for _ in range(12):
            r = d.invoke("warm", {"sleep": 0})
            self.assert_ok(r)
            loops.add(r.headers.get("x-nimbus-loop"))
        st = stats(d, "warm")
        # Sequential requests never need a second instance, whatever loop they reached.
        self.assertEqual((st["instance_starts"], st["invocations"]), (1, 12), st)
        self.assertGreaterEqual(len(loops), 2, loops)

    def test_deploy_during_load_loses_nothing(self):
        d = self.d
        d.deploy("roll", SLEEP_FN, "python3", "app.handler", timeout_s=30, environment={"VER": "1"})
        with Stream(d, "roll", {"sleep": 0.02}, 8) as stream:
            time.sleep(0.4)
            t2 = time.monotonic()
            d.deploy("roll", SLEEP_FN, environment={"VER": "2"})
            time.sleep(0.6)
        results, errors = stream.results, stream.errors
        self.assertEqual(errors, [])
        for _, r in results:
            self.assert_ok(r)
            self.assertEqual(r.json()["v"], r.headers["x-nimbus-executed-version"], r)
        late = [r for t, r in results if t > t2 + 0.3]
        self.assertTrue(late)
        self.assertEqual({r.headers["x-nimbus-executed-version"] for r in late}, {"2"})
        self.assertGreaterEqual(len({r.headers.get("x-nimbus-loop") for _, r in results}), 2)

    def test_logs_follow_sees_every_loop(self):
        d = self.d
        d.deploy("chatty", SLEEP_FN, "python3", "app.handler", timeout_s=30)
        self.assert_ok(d.invoke("chatty", {"sleep": 0}))  # the stream starts with a record
        c = http.client.HTTPConnection(d.host, d.port, timeout=20)
        self.addCleanup(c.close)
        c.request("GET", "/v1/functions/chatty/logs?follow=1",
                  headers={"Authorization": "Bearer " + d.token})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.addCleanup(shutdown_socket, c.sock)
        reader = LineReader(r)
        ids, loops = [], set()
        for _ in range(10):
            x = d.invoke("chatty", {"sleep": 0})
            self.assert_ok(x)
            ids.append(x.headers["x-nimbus-request-id"])
            loops.add(x.headers.get("x-nimbus-loop"))
        self.assertGreaterEqual(len(loops), 2, loops)
        for rid in ids:
            got = reader.wait_for(lambda line, rid=rid: rid in line and "REPORT" in line, 10)
            self.assertIsNotNone(got, reader.lines[-5:])
            self.assertEqual(json.loads(got)["request_id"], rid)
        # And the stored logs hold each REPORT exactly once, whole.
        reports = [x["request_id"] for x in d.logs("chatty") if x["line"].startswith("REPORT")]
        self.assertEqual(sorted(r for r in reports if r in ids), sorted(ids))


class MultiLoopShutdown(NimbusTestCase):
    def test_shutdown_during_load_answers_every_accepted_request(self):
        d = self.new_daemon(args=["--loops", str(LOOPS), "--drain-timeout", "30"])
        d.start()
        d.deploy("busy", SLEEP_FN, "python3", "app.handler", timeout_s=30, max_concurrency=4)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("res", burst(d, "busy", 24, {"sleep": 0.5})))
        t.start()
        self.assertTrue(wait_until(
            lambda: (lambda s: s["in_flight"] + s["queued"])(stats(d, "busy")) == 24, 10))
        d.send_signal(signal.SIGTERM)
        t.join(60)
        res = out["res"]
        self.assertEqual(len(res), 24)
        for r, _ in res:
            self.assert_ok(r)
        self.assertGreaterEqual(len({r.headers.get("x-nimbus-loop") for r, _ in res}), 2)
        self.assertEqual(d.proc.wait(30), 0)
        self.assertIn("stopped cleanly", d.log_text())


if __name__ == "__main__":
    unittest.main()
