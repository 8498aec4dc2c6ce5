"""Metering end to end (docs/internals/metering.md): a workload of known invocations, whose
durations the function forces, gives exact counts in `nimbus usage` and billed ms equal to the
sum of the REPORT records' billed durations (each the ceiling of its duration); rows add up to
the total, costs follow the price sheet in integer micro-dollars; a function that allocates
200 MB and one that burns 300 ms of CPU show it within tolerance (skipped without cgroups);
min_instances are charged as provisioned concurrency."""
import json
import math
import os
import tempfile
import time
import unittest

from nimbus_harness import NimbusTestCase, sandbox_unavailable

APP = """import time
def handler(event, context):
    if event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000.0)
    if event.get("alloc_mb"):
        b = b"x" * (event["alloc_mb"] << 20)   # filled: every page is touched
        return {"len": len(b)}
    if event.get("burn_ms"):
        t = time.process_time()
        while time.process_time() - t < event["burn_ms"] / 1000.0:
            pass
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"ok": True}
"""

CALLER = """import nimbus
def handler(event, context):
    nimbus.invoke_async("tgt", {})
    return nimbus.invoke("tgt", {})
"""

# A price sheet that makes every term count (CPU-ms is free by default).
PRICES = {"request_per_million": 0.2, "gb_second": 0.0000166667,
          "provisioned_gb_second": 0.0000041667, "cpu_ms": 0.000001}
FEMTO = {"request": 200000000, "gbs": 16666700000, "prov": 4166700000, "cpu_ms": 1000000000}


def cost_micro(row):
    """The expected cost from the row's own integer figures, as the daemon computes it."""
    mb_ms = round(row["gb_seconds"] * 1024000)
    kept = round(row["provisioned_gb_seconds"] * 1024000)
    cpu_us = round(row["cpu_ms"] * 1000)
    f = (row["requests"] * FEMTO["request"] + mb_ms * FEMTO["gbs"] // 1024000
         + kept * FEMTO["prov"] // 1024000 + cpu_us * FEMTO["cpu_ms"] // 1000)
    return (f + 500000000) // 1000000000


class MeteringTest(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        prices = os.path.join(cls.tmp.name, "prices.json")
        with open(prices, "w") as f:
            json.dump(PRICES, f)
        cls.d = cls.start_daemon(args=("--prices", prices))

    def reports(self, name):
        return {r["request_id"]: r["report"] for r in self.d.logs(name) if "report" in r}

    def usage(self, *args):
        p = self.d.cli("usage", "--format", "json", *args)
        self.assertEqual(p.returncode, 0, p)
        return json.loads(p.stdout)

    def test_workload_counts_billing_and_totals(self):
        self.d.deploy("sleeper", {"app.py": APP}, "python3", "app.handler", memory_mb=256)
        self.d.deploy("other", {"app.py": APP}, "python3", "app.handler", memory_mb=128)
        sleeps = [50, 120, 10, 200, 75, 1]
        for ms in sleeps:
            self.assertEqual(self.d.invoke("sleeper", {"sleep_ms": ms}).status, 200)
        r = self.d.invoke("sleeper", {"fail": True})
        self.assertIn(r.headers.get("x-nimbus-function-error"), ("Handled", "Unhandled"))
        for _ in range(3):
            self.d.invoke("other", {})

        reps = self.reports("sleeper")
        self.assertEqual(len(reps), len(sleeps) + 1, reps)
        billed = 0
        for rep in reps.values():
            # Duration has µs precision; billed is exactly its ceiling, at least 1 ms.
            self.assertEqual(rep["billed_duration_ms"],
                             max(1, math.ceil(round(rep["duration_ms"] * 1000) / 1000)), rep)
            billed += rep["billed_duration_ms"]
            self.assertEqual(rep["trigger"], "http")
        self.assertGreaterEqual(billed, sum(sleeps))

        rows = self.usage("--by", "function", "--since", "1h")
        by_fn = {r["function"]: r for r in rows if not r.get("total")}
        s = by_fn["sleeper"]
        self.assertEqual(s["requests"], len(sleeps) + 1)
        self.assertEqual(s["errors"], 1)
        self.assertEqual(s["billed_ms"], billed)
        self.assertEqual(s["cold_starts"], 1)
        self.assertAlmostEqual(s["gb_seconds"], billed * 256 / 1024000, places=9)
        self.assertEqual(by_fn["other"]["requests"], 3)
        self.assertEqual(by_fn["other"]["errors"], 0)

        # The rows add up to the total, costs included (integer micro-dollars).
        total = [r for r in rows if r.get("total")]
        self.assertEqual(len(total), 1)
        total = total[0]
        plain = [r for r in rows if not r.get("total")]
        for k in ("requests", "errors", "throttles", "billed_ms", "cold_starts", "cost_micro_usd"):
            self.assertEqual(sum(r[k] for r in plain), total[k], k)
        for k in ("gb_seconds", "cpu_ms", "cost_usd"):
            self.assertAlmostEqual(sum(r[k] for r in plain), total[k], places=6)
        for r in plain:
            self.assertEqual(r["cost_micro_usd"], cost_micro(r), r)

        # The other groupings see the same total.
        for by in ("namespace", "key", "day"):
            t = [r for r in self.usage("--by", by) if r.get("total")][0]
            self.assertEqual(t["requests"], total["requests"], by)
            self.assertEqual(t["billed_ms"], total["billed_ms"], by)
        # csv and table print the same rows.
        p = self.d.cli("usage", "--format", "csv")
        self.assertEqual(p.returncode, 0, p)
        self.assertTrue(p.stdout.startswith("function,requests,errors,"), p.stdout)
        self.assertIn("\nsleeper,7,1,", p.stdout)
        p = self.d.cli("usage", "--by", "nonsense")
        self.assertEqual(p.returncode, 2, p)
        # A window in the past has nothing.
        empty = self.usage("--from", "2001-01-01", "--to", "2001-01-02")
        self.assertEqual(len(empty), 1)
        self.assertEqual(empty[0]["requests"], 0)

    def test_memory_and_cpu_from_the_cgroup(self):
        self.d.deploy("hungry", {"app.py": APP}, "python3", "app.handler", memory_mb=512,
                      timeout_s=30)
        self.d.deploy("burner", {"app.py": APP}, "python3", "app.handler", memory_mb=512,
                      timeout_s=30)
        self.assertEqual(self.d.invoke("hungry", {}).status, 200)
        rep = list(self.reports("hungry").values())[0]
        if rep["max_memory_used_mb"] is None or rep["cpu_time_ms"] is None:
            sandbox_unavailable("cgroups unavailable: no Max Memory Used / CPU Time in REPORT "
                                "(see nimbus doctor)")
        self.assertEqual(self.d.invoke("hungry", {"alloc_mb": 200}).status, 200)
        peak = max(r["max_memory_used_mb"] for r in self.reports("hungry").values())
        self.assertGreaterEqual(peak, 200)
        self.assertLess(peak, 200 + 120)

        self.assertEqual(self.d.invoke("burner", {"burn_ms": 300}).status, 200)
        reps = list(self.reports("burner").values())
        self.assertEqual(len(reps), 1)
        self.assertGreaterEqual(reps[0]["cpu_time_ms"], 290)
        self.assertLess(reps[0]["cpu_time_ms"], 600)
        row = [r for r in self.usage() if r.get("function") == "burner"][0]
        self.assertGreaterEqual(row["cpu_ms"], 290)
        self.assertLess(row["cpu_ms"], 600)

    def test_min_instances_are_charged_as_provisioned(self):
        self.d.deploy("warm", {"app.py": APP}, "python3", "app.handler", memory_mb=1024,
                      min_instances=1)
        deadline = time.time() + 15
        while time.time() < deadline:
            row = [r for r in self.usage() if r.get("function") == "warm"]
            if row and row[0]["provisioned_gb_seconds"] >= 2:
                break
            time.sleep(0.5)
        self.assertTrue(row, "no usage row for a function kept warm")
        # 1 GB kept: one GB-second per second, sampled each second.
        self.assertGreaterEqual(row[0]["provisioned_gb_seconds"], 2)
        self.assertEqual(row[0]["requests"], 0)
        self.assertGreater(row[0]["cost_micro_usd"], 0)
        self.assertEqual(row[0]["cost_micro_usd"], cost_micro(row[0]))

    def test_every_trigger_is_recorded_with_its_caller(self):
        d = self.d
        d.deploy("tgt", {"app.py": APP}, "python3", "app.handler")
        d.deploy("caller", {"app.py": CALLER}, "python3", "app.handler")
        # http, call (and async from a function)
        self.assertEqual(d.invoke("tgt", {}).status, 200)
        self.assertEqual(d.invoke("caller", {}).status, 200)
        # async through the admin API
        r = d.api("POST", "/v1/functions/tgt/invoke", b"{}",
                  headers={"X-Nimbus-Invocation-Type": "Event"})
        self.assertEqual(r.status, 202, r)
        # queue subscription
        self.assertLess(d.api("PUT", "/v1/queues/mq", {}).status, 300)
        self.assertLess(d.api("PUT", "/v1/queues/mq/subscriptions/tgt", {}).status, 300)
        self.assertLess(d.api("POST", "/v1/queues/mq/messages", {"body": "{}"}).status, 300)
        # topic
        d.api("POST", "/v1/topics", {"name": "mt"})
        self.assertLess(d.api("POST", "/v1/topics/mt/subscriptions",
                              {"target": "function:tgt"}).status, 300)
        self.assertLess(d.api("POST", "/v1/topics/mt/publish", {"message": "hi"}).status, 300)
        # event bus rule
        self.assertLess(d.api("POST", "/v1/rules", {"name": "mr", "match": {"type": ["m.t"]},
                                                    "target": "function:tgt"}).status, 300)
        ev = {"specversion": "1.0", "id": "m1", "source": "m/x", "type": "m.t"}
        r = d.api("POST", "/v1/events", json.dumps(ev),
                  headers={"Content-Type": "application/cloudevents+json"})
        self.assertLess(r.status, 300, r)
        # schedule, a one-off two seconds from now
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2))
        self.assertLess(d.api("PUT", "/v1/schedules/ms", {"expression": f"at({at})",
                                                          "function": "tgt"}).status, 300)
        # a gateway route, with a key: the key is the caller
        self.assertIn(d.api("PUT", "/v1/apis/mapi", {"base_path": "/mapi"}).status, (200, 201))
        self.assertEqual(d.api("POST", "/v1/apis/mapi/routes", {"method": "GET", "path": "/x",
                                                                "function": "tgt",
                                                                "auth": "key"}).status, 201)
        r = d.api("POST", "/v1/keys", {"name": "mkey"})
        self.assertEqual(r.status, 201, r)
        key = r.json()["key"]
        d.api("POST", "/v1/apis/mapi/shares", {"consumer": "mkey"})
        r = d.gw("GET", "/mapi/x", headers={"x-api-key": key})
        self.assertEqual(r.status, 200, r)
        want = {"http", "api", "call", "async", "queue", "topic", "event", "schedule"}
        deadline = time.time() + 20
        while time.time() < deadline:
            got = {r["trigger"] for r in self.reports("tgt").values()}
            if want <= got:
                break
            time.sleep(0.3)
        self.assertLessEqual(want, got)
        # Callers: the calling function for call and its async invoke, the names otherwise.
        keys = {r["key"]: r["requests"] for r in self.usage("--by", "key") if not r.get("total")}
        for k in ("caller", "mq", "mt", "mr", "ms", "default/mkey"):
            self.assertIn(k, keys, keys)
        self.assertGreaterEqual(keys["caller"], 2)


if __name__ == "__main__":
    unittest.main()
