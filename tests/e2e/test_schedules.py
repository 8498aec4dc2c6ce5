"""Schedules end to end: a rate(1 second) schedule firing on time with no drift, catch-up after
downtime by policy, pause and resume, validation, and the CLI. Firings reach the function
through its async queue; the function reports each to a ledger in this test process (the
same ledger function as test_async.py)."""
import calendar
import time
import unittest

from nimbus_harness import NimbusTestCase, wait_until
from test_async import LEDGER_FN, Ledger


class Schedules(NimbusTestCase):
    def setUp(self):
        self.ledger = Ledger()
        self.addCleanup(self.ledger.close)
        self.d = self.new_daemon()
        self.d.start()
        self.d.deploy("tick", LEDGER_FN, "python3", "app.handler", network="host", timeout_s=5,
                      environment={"LEDGER": str(self.ledger.port)})

    def events(self, key):
        with self.ledger.lock:
            return [(t, ev) for t, _, ev in self.ledger.calls if isinstance(ev, dict) and key in ev]

    def test_rate_one_second_fires_on_time_without_drift(self):
        d = self.d
        r = d.api("PUT", "/v1/schedules/every", {"expression": "rate(1 second)", "function": "tick",
                                                  "payload": {"every": 1}})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.json()["next_fire"] is None or r.json()["next_fire"].endswith("Z"))
        time.sleep(10.5)
        d.api("POST", "/v1/schedules/every/pause")
        times = [t for t, _ in self.events("every")]
        self.assertGreaterEqual(len(times), 9, times)
        # Firing k comes k seconds after the second (the first may wait for a cold start): the
        # schedule, not the previous firing, sets the time, so lateness does not add up.
        drift = [round(t - times[1] - (k - 1), 3) for k, t in enumerate(times)][1:]
        self.assertLess(max(abs(x) for x in drift), 0.3, drift)
        n = len(self.events("every"))
        time.sleep(2)
        self.assertEqual(len(self.events("every")), n)  # paused: no more firings
        r = d.api("POST", "/v1/schedules/every/resume")
        self.assertEqual(r.json()["state"], "enabled")
        self.assertTrue(wait_until(lambda: len(self.events("every")) > n, 5))
        self.assertEqual(d.api("DELETE", "/v1/schedules/every").status, 200)

    def test_catch_up_after_downtime(self):
        d = self.d
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3))
        for name, policy in (("once", "one"), ("skipped", "none")):
            r = d.api("PUT", f"/v1/schedules/{name}",
                      {"expression": f"at({at})", "function": "tick", "catchup": policy,
                       "payload": {name: 1}})
            self.assertEqual(r.status, 201, r)
        d.stop()
        time.sleep(4)  # the at() time passes while the daemon is down
        d.start()
        self.assertTrue(wait_until(lambda: self.events("once"), 15), "the missed firing never came")
        time.sleep(1)
        self.assertEqual(len(self.events("once")), 1)
        self.assertEqual(self.events("skipped"), [])

    def test_validation_and_cli(self):
        d = self.d
        for body in ({"expression": "cron(0 12 * * * *)", "function": "tick"},  # no ?
                     {"expression": "rate(0 minutes)", "function": "tick"},
                     {"expression": "rate(5 minutes)", "function": "bad name"},
                     {"expression": "rate(5 minutes)", "function": "tick", "timezone": "Mars/Base"},
                     {"expression": "rate(5 minutes)", "function": "tick", "catchup": "some"},
                     {"expression": "rate(5 minutes)", "function": "tick", "start": "yesterday"},
                     {"expression": "rate(5 minutes)", "function": "tick", "colour": "red"}):
            r = d.api("PUT", "/v1/schedules/bad", body)
            self.assertEqual(r.status, 400, (body, r))
        p = d.gcli("schedule", "add", "daily", "cron(30 9 ? * MON-FRI *)", "tick",
                   "--timezone", "Europe/Berlin", "--payload", '{"report": true}')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(wait_until(lambda: d.api("GET", "/v1/schedules/daily").json()["next_fire"], 5))
        nxt = d.api("GET", "/v1/schedules/daily").json()["next_fire"]
        # 09:30 in Berlin is 07:30 or 08:30 UTC depending on the season; on a weekday.
        t = calendar.timegm(time.strptime(nxt, "%Y-%m-%dT%H:%M:%S.000Z"))
        self.assertIn(time.gmtime(t).tm_hour, (7, 8), nxt)
        self.assertEqual(time.gmtime(t).tm_min, 30)
        self.assertLess(time.gmtime(t).tm_wday, 5)
        p = d.gcli("schedule", "ls")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("daily", p.stdout)
        p = d.gcli("schedule", "add", "x", "rate(1 minute)", "tick", "--catchup", "sometimes")
        self.assertEqual(p.returncode, 2, p)
        p = d.gcli("schedule", "rm", "daily")
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    unittest.main()
