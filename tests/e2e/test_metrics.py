"""GET /metrics end to end: a known workload (successes, an error, a throttle, a gateway request,
an async event, queued messages) gives exact counters; the page passes `promtool check metrics`
(Debian's prometheus package, installed by scripts/deps.sh --test); the token is required unless
the daemon runs with --metrics-public.
Run: cd tests/e2e && python3 -m unittest -v test_metrics
"""

import json
import re
import shutil
import subprocess
import time
import unittest

from nimbus_harness import NimbusTestCase

OK_PY = {"app.py": "def handler(event, context):\n    return {'ok': 1}\n"}
BAD_PY = {"app.py": "def handler(event, context):\n    raise ValueError('no')\n"}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse(text):
    """{(name, ((label, value), ...) sorted): float} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


class Metrics(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = d = cls.start_daemon()
        d.deploy("ok", OK_PY, "python3", "app.handler")
        d.deploy("bad", BAD_PY, "python3", "app.handler")
        d.deploy("off", OK_PY, "python3", "app.handler")
        r = d.api("PUT", "/v1/functions/off/scaling", {"max_concurrency": 0})
        assert r.status == 200, r
        r = d.api("PUT", "/v1/apis/shop", {"base_path": "/shop"})
        assert r.status in (200, 201), r
        r = d.api("POST", "/v1/apis/shop/routes",
                  {"method": "GET", "path": "/hi", "function": "ok", "auth": "none"})
        assert r.status == 201, r
        r = d.api("PUT", "/v1/queues/orders", {})
        assert r.status in (200, 201), r

    def scrape(self, token=True):
        r = self.d.api("GET", "/metrics", token=token)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers)
        return r.body.decode()

    def test_workload(self):
        d = self.d
        for _ in range(2):
            self.assertEqual(d.invoke("ok").status, 200)
        r = d.invoke("bad")
        self.assertEqual(r.status, 200, r)  # a function error: 200 with X-Nimbus-Function-Error
        bad_type = r.headers["x-nimbus-function-error"]  # what the errors' type label says
        self.assertEqual(d.invoke("off").status, 429)
        self.assertEqual(d.gw("GET", "/shop/hi").status, 200)
        self.assertEqual(d.gw("GET", "/nowhere").status, 404)
        r = d.api("POST", "/v1/functions/ok/invoke", {"a": 1},
                  headers={"X-Nimbus-Invocation-Type": "Event"})
        self.assertEqual(r.status, 202, r)
        r = d.api("POST", "/v1/queues/orders/messages", {"messages": [{"body": "1"}, {"body": "2"}]})
        self.assertEqual(r.status, 201, r)

        ok = dict(namespace="default", function="ok")
        deadline = time.monotonic() + 15
        while True:  # the async event runs on the dispatcher's time
            text = self.scrape()
            m = parse(text)
            done = m.get(key("nimbus_invocations_total", outcome="success", **ok)) == 4
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(done, text)

        for fn, outcome, n in (("ok", "success", 4), ("ok", "error", 0), ("bad", "error", 1),
                               ("bad", "success", 0), ("off", "throttled", 1),
                               ("off", "success", 0), ("ok", "timeout", 0), ("ok", "oom", 0)):
            with self.subTest(fn=fn, outcome=outcome):
                self.assertEqual(m[key("nimbus_invocations_total", namespace="default", function=fn,
                                       outcome=outcome)], n)
        self.assertEqual(m[key("nimbus_errors_total", namespace="default", function="bad",
                               type=bad_type)], 1)
        self.assertEqual([k for k in m if k[0] == "nimbus_errors_total"
                          and dict(k[1])["function"] != "bad"], [])
        self.assertEqual(m[key("nimbus_throttles_total", namespace="default", function="off")], 1)
        self.assertEqual(m[key("nimbus_throttles_total", **ok)], 0)
        # Cold starts: exactly what the scheduler counted (the API's stats), at least the first.
        stats = d.api("GET", "/v1/functions/ok").json()["stats"]
        cold = m[key("nimbus_cold_starts_total", **ok)]
        self.assertGreaterEqual(cold, 1)
        self.assertEqual(cold, stats["cold_starts"])
        # Histograms: every run observed once, cumulative buckets, +Inf equal to the count.
        self.assertEqual(m[key("nimbus_invocation_duration_seconds_count", **ok)], 4)
        self.assertEqual(m[key("nimbus_invocation_duration_seconds_bucket", le="+Inf", **ok)], 4)
        self.assertGreater(m[key("nimbus_invocation_duration_seconds_sum", **ok)], 0)
        self.assertEqual(m[key("nimbus_init_duration_seconds_count", **ok)], cold)
        self.assertEqual(m[key("nimbus_invocation_duration_seconds_count", namespace="default",
                               function="off")], 0)
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                          if k[0] == "nimbus_invocation_duration_seconds_bucket"
                          and dict(k[1])["function"] == "ok"))
        self.assertEqual(buckets[0][0], 0.001)
        self.assertEqual(buckets[-2][0], 60)
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        # Gauges: nothing runs now; the instances that ran are idle.
        for fn in ("ok", "bad", "off"):
            self.assertEqual(m[key("nimbus_concurrency", namespace="default", function=fn)], 0)
        self.assertGreaterEqual(m[key("nimbus_instances", state="idle")], 1)
        self.assertEqual(m[key("nimbus_instances", state="busy")], 0)
        self.assertEqual(m[key("nimbus_queue_depth", kind="user", queue="default/orders")], 2)
        self.assertGreaterEqual(
            m[key("nimbus_queue_oldest_age_seconds", kind="user", queue="default/orders")], 0)
        self.assertEqual(m[key("nimbus_queue_depth", kind="async", queue="default/ok")], 0)
        self.assertEqual(m[key("nimbus_gateway_requests_total", namespace="default", api="shop",
                               status_class="2xx")], 1)
        self.assertEqual(m[key("nimbus_gateway_requests_total", namespace="_none", api="_none",
                               status_class="4xx")], 1)
        # Process figures from /proc.
        self.assertGreater(m[key("process_open_fds")], 3)
        self.assertGreater(m[key("process_resident_memory_bytes")], 1 << 20)
        self.assertLess(abs(m[key("process_start_time_seconds")] - time.time()), 3600)
        self.assertGreater(m[key("process_cpu_seconds_total")], 0)
        # Every family announced once, sorted; counters end in _total.
        types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
        self.assertEqual([n for n, _ in types], sorted({n for n, _ in types}))
        for name, typ in types:
            self.assertEqual(typ == "counter", name.endswith("_total"), name)
        self.promtool(text)

    def promtool(self, text):
        tool = shutil.which("promtool")
        if not tool:
            print("\ntest_metrics: promtool not found (Debian's prometheus package, installed by "
                  "scripts/deps.sh --test): the page's promtool check is skipped", flush=True)
            return
        p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, f"promtool check metrics:\n{p.stdout}{p.stderr}")
        self.assertEqual(p.stdout.strip() + p.stderr.strip(), "", "promtool found problems")

    def test_nimbus_top(self):
        """`nimbus top` reads the rates and percentiles off two scrapes, and instances off
        /v1/functions."""
        d = self.d
        d.deploy("topfn", OK_PY, "python3", "app.handler")
        p = d.cli_popen("top", "--interval", "1", "--iterations", "2", "--json")
        end = time.monotonic() + 2.5
        n = 0
        while time.monotonic() < end:
            self.assertEqual(d.invoke("topfn", {}).status, 200)
            n += 1
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        frames = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual(len(frames), 2, out)
        rows = [next(r for r in f["functions"] if r["function"] == "topfn") for f in frames]
        self.assertTrue(all(r["rps"] > 0 for r in rows), rows)
        self.assertLessEqual(sum(r["rps"] for r in rows), n * 1.5, rows)
        self.assertTrue(all(r["p99_ms"] is not None and r["p99_ms"] > 0 for r in rows), rows)
        self.assertTrue(all(r["p50_ms"] <= r["p99_ms"] for r in rows), rows)
        self.assertEqual(rows[-1]["errors_per_s"], 0)
        self.assertGreaterEqual(rows[-1]["instances"]["idle"] + rows[-1]["instances"]["busy"], 1)
        p = d.cli("top", "--interval", "1", "--iterations", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("FUNCTION", p.stdout)
        self.assertIn("topfn", p.stdout)
        p = d.cli("top", "--interval", "0")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

    def test_token_required(self):
        self.assert_api_error(self.d.api("GET", "/metrics", token=None), 401, "unauthorized")
        self.assert_api_error(self.d.api("GET", "/metrics", token="nope"), 401, "unauthorized")

    def test_public_flag(self):
        d = self.new_daemon(args=["--metrics-public"]).start()
        r = d.api("GET", "/metrics", token=None)
        self.assertEqual(r.status, 200, r)
        self.assertIn("# TYPE nimbus_invocations_total counter", r.body.decode())
        self.assertEqual(d.api("GET", "/v1/functions", token=None).status, 401)


if __name__ == "__main__":
    unittest.main()
