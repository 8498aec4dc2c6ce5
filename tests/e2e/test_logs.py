"""Function logs through the real daemon: CLI `logs` (plain, --since, --follow), the NDJSON API,
and the per-function disk cap under a runaway printer.
Run: cd tests/e2e && python3 -m unittest -v test_logs
"""

import glob
import http.client
import json
import os
import re
import sys
import threading
import time
import unittest
import uuid

from nimbus_harness import LineReader, NimbusTestCase, shutdown_socket, stop_process

PRINTER_PY = """\
import sys


def handler(event, context):
    for line in event.get("out", []):
        print(line)
    for line in event.get("err", []):
        print(line, file=sys.stderr)
    if event.get("raw"):
        sys.stdout.buffer.write(bytes.fromhex(event["raw"]))
        sys.stdout.flush()
    if event.get("long"):
        sys.stdout.write("L" * event["long"] + "\\n")
        sys.stdout.flush()
    return "ok"
"""

FLOOD_PY = """\
import sys


def handler(event, context):
    line = "x" * 1000
    out = sys.stdout
    for i in range(event["lines"]):
        out.write("%08d %s\\n" % (i, line))
    out.flush()
    return "done"
"""

CLI_LINE = re.compile(r"^(\S+Z) \[v(\d+) (\S+) (\S+)( stderr)?\] (.*)$")


def now_ms():
    return int(time.time() * 1000)


class Logs(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()
        cls.d.deploy("printer", {"app.py": PRINTER_PY}, "python3", "app.handler")

    def invoke_rid(self, name, event):
        r = self.d.invoke(name, event)
        self.assert_ok(r)
        rid = r.headers["x-nimbus-request-id"]
        self.assertRegex(rid, r"^[0-9a-f-]{36}$")
        return rid

    def cli_lines(self, *args):
        p = self.d.cli("logs", *args)
        self.assertEqual(p.returncode, 0, p)
        out = []
        for line in p.stdout.splitlines():
            m = CLI_LINE.match(line)
            self.assertIsNotNone(m, f"unexpected logs line {line!r}")
            out.append(m)
        return out

    def test_cli_logs_tag_lines_with_request_id_and_platform_lines(self):
        tag = uuid.uuid4().hex
        rid = self.invoke_rid("printer", {"out": [f"out {tag}"], "err": [f"err {tag}"]})
        lines = [m for m in self.cli_lines("printer") if m.group(4) == rid]
        texts = [m.group(6) for m in lines]
        self.assertIn(f"out {tag}", texts)
        self.assertIn(f"err {tag}", texts)
        by_text = {m.group(6): m for m in lines}
        self.assertIsNone(by_text[f"out {tag}"].group(5))
        self.assertEqual(by_text[f"err {tag}"].group(5), " stderr")
        self.assertEqual(by_text[f"out {tag}"].group(2), "1")
        self.assertRegex(by_text[f"out {tag}"].group(3), r"^i-\d+$")
        # START, output, END, REPORT in that order.
        self.assertEqual(texts[0], f"START RequestId: {rid} Version: 1")
        self.assertEqual(texts[-2], f"END RequestId: {rid}")
        self.assertRegex(texts[-1], rf"^REPORT RequestId: {rid}\tDuration: [\d.]+ ms\t"
                                    r"Billed Duration: \d+ ms\tMemory Size: 128 MB"
                                    r"(\tMax Memory Used: \d+ MB)?(\tCPU Time: [\d.]+ ms)?"
                                    r"(\tInit Duration: [\d.]+ ms)?$")
        # The record's report object carries the same figures (CPU time only when measured).
        rep = [r for r in self.d.logs("printer") if r.get("request_id") == rid and "report" in r]
        self.assertEqual(len(rep), 1, rep)
        rep = rep[0]["report"]
        self.assertEqual(rep["trigger"], "http")
        self.assertEqual(rep["memory_size_mb"], 128)
        self.assertEqual(rep["billed_duration_ms"], max(1, -(-round(rep["duration_ms"] * 1000) // 1000)))
        self.assertEqual(rep["cpu_time_ms"] is None, "CPU Time" not in texts[-1])
        self.assertLess(texts.index(f"out {tag}"), texts.index(f"END RequestId: {rid}"))
        # --json prints the daemon's records.
        p = self.d.cli("logs", "printer", "--json")
        self.assertEqual(p.returncode, 0, p)
        recs = [json.loads(line) for line in p.stdout.splitlines()]
        self.assertIn({"request_id": rid, "stream": "stderr", "line": f"err {tag}"},
                      [{k: r.get(k) for k in ("request_id", "stream", "line")} for r in recs])

    def test_since_and_limit(self):
        self.d.deploy("since", {"app.py": PRINTER_PY}, "python3", "app.handler")
        self.invoke_rid("since", {"out": ["before"]})
        time.sleep(0.05)
        cut = now_ms()
        time.sleep(0.05)
        rid = self.invoke_rid("since", {"out": ["after"]})
        texts = [m.group(6) for m in self.cli_lines("since", "--since", str(cut))]
        self.assertIn("after", texts)
        self.assertNotIn("before", texts)
        self.assertTrue(all(m.group(4) == rid for m in self.cli_lines("since", "--since", str(cut))))
        texts = [m.group(6) for m in self.cli_lines("since", "--since", "1h")]
        self.assertIn("before", texts)
        self.assertIn("after", texts)
        # The API agrees, and limit keeps the newest lines.
        recs = self.d.logs("since", f"since={cut}")
        self.assertEqual({r["request_id"] for r in recs}, {rid})
        recs = self.d.logs("since", "limit=2")
        self.assertEqual(len(recs), 2)
        self.assertTrue(recs[-1]["line"].startswith(f"REPORT RequestId: {rid}"), recs)
        texts = [m.group(6) for m in self.cli_lines("since", "-n", "1")]
        self.assertEqual(len(texts), 1)

    def test_follow_streams_new_lines(self):
        self.d.deploy("follow", {"app.py": PRINTER_PY}, "python3", "app.handler")
        self.invoke_rid("follow", {"out": ["old line"]})
        proc = self.d.cli_popen("logs", "follow", "--follow")
        self.addCleanup(stop_process, proc)
        reader = LineReader(proc.stdout)
        self.assertIsNotNone(reader.wait_for(lambda l: l.endswith("] old line"), 5),
                             f"existing lines not printed: {reader.lines}")
        tag = uuid.uuid4().hex
        rid = self.invoke_rid("follow", {"out": [f"new {tag}"]})
        line = reader.wait_for(lambda l: l.endswith(f"new {tag}"), 5)
        self.assertIsNotNone(line, f"followed output: {reader.lines}")
        self.assertIn(rid, line)
        self.assertIsNotNone(reader.wait_for(lambda l: f"REPORT RequestId: {rid}" in l, 5))
        self.assertIsNone(proc.poll(), "logs --follow must keep running")

    def test_api_ndjson_and_follow(self):
        tag = uuid.uuid4().hex
        rid = self.invoke_rid("printer", {"out": [f"api {tag}"]})
        r = self.d.api("GET", "/v1/functions/printer/logs")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers["content-type"], "application/x-ndjson")
        recs = [json.loads(line) for line in r.body.decode().splitlines()]
        self.assertTrue(r.body.endswith(b"\n"))
        mine = [x for x in recs if x.get("request_id") == rid]
        self.assertEqual([x["stream"] for x in mine], ["platform", "stdout", "platform", "platform"])
        out = mine[1]
        self.assertEqual(set(out), {"ts", "version", "instance", "request_id", "stream", "line"})
        self.assertEqual((out["version"], out["line"]), (1, f"api {tag}"))
        self.assertLessEqual(abs(out["ts"] - now_ms()), 60000)
        self.assertEqual(recs, sorted(recs, key=lambda x: x["ts"]))
        # The long namespace form answers the same.
        r2 = self.d.api("GET", "/v1/namespaces/default/functions/printer/logs")
        self.assertEqual(r2.status, 200)
        self.assertIn(f"api {tag}".encode(), r2.body)

        # follow=1 over raw HTTP: the stream stays open and carries new records.
        conn = http.client.HTTPConnection(self.d.host, self.d.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/v1/functions/printer/logs?follow=1&limit=1",
                     headers={"Authorization": "Bearer " + self.d.token})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        # Shut the socket down first: that wakes the reader thread blocked in recv, which
        # otherwise holds the response's lock and makes close() wait for the socket timeout.
        self.addCleanup(shutdown_socket, conn.sock)
        reader = LineReader(resp)
        tag2 = uuid.uuid4().hex
        self.invoke_rid("printer", {"out": [f"streamed {tag2}"]})
        got = reader.wait_for(lambda l: f"streamed {tag2}" in l, 5)
        self.assertIsNotNone(got, reader.lines)
        self.assertEqual(json.loads(got)["stream"], "stdout")

    def test_long_lines_are_cut_and_bad_utf8_replaced(self):
        self.d.deploy("odd", {"app.py": PRINTER_PY}, "python3", "app.handler")
        rid = self.invoke_rid("odd", {"long": 40000, "raw": (b"\xff\xfeab\n").hex()})
        recs = [x for x in self.d.logs("odd") if x.get("request_id") == rid and x["stream"] == "stdout"]
        pieces = [x["line"] for x in recs if set(x["line"]) == {"L"}]
        self.assertEqual(sum(map(len, pieces)), 40000)
        self.assertGreater(len(pieces), 1)
        self.assertTrue(all(len(p) <= 16384 for p in pieces))
        self.assertIn("??ab", [x["line"] for x in recs])

    def test_runaway_printer_is_capped_and_daemon_stays_responsive(self):
        self.d.deploy("flood", {"app.py": FLOOD_PY}, "python3", "app.handler", timeout_s=3)
        self.invoke_rid("printer", {"out": ["before the flood"]})
        box = {}
        th = threading.Thread(target=lambda: box.update(r=self.d.invoke("flood", {"lines": 50000}, timeout=30)))
        t0 = time.monotonic()
        th.start()
        worst = 0.0
        try:
            while th.is_alive() and time.monotonic() - t0 < 20:
                t = time.monotonic()
                r = self.d.api("GET", "/healthz", token=None, timeout=5)
                self.assertEqual(r.status, 200)
                worst = max(worst, time.monotonic() - t)
                time.sleep(0.05)
        finally:
            th.join(30)
        self.assertLess(worst, 0.5, "the daemon must keep answering while a function floods its log")
        if os.environ.get("NIMBUS_E2E_VERBOSE"):
            print(f"flood: worst /healthz {worst * 1000:.1f} ms", file=sys.stderr)
        r = box["r"]
        # 50 MB at the 4 MiB/s output throttle cannot finish in 3 s: the function times out.
        self.assert_fn_error(r, "Sandbox.Timedout")
        files = glob.glob(os.path.join(self.d.data, "logs", "default", "flood.log*"))
        sizes = {os.path.basename(f): os.path.getsize(f) for f in files}
        self.assertIn("flood.log.1", sizes, f"the log never rotated: {sizes}")
        self.assertLessEqual(sum(sizes.values()), 8 << 20, sizes)
        total = sum(sizes.values())
        self.assertGreater(total, 4 << 20, sizes)
        # The newest lines were kept, the oldest dropped.
        recs = self.d.logs("flood", "limit=5000")
        nums = [int(x["line"][:8]) for x in recs if x["stream"] == "stdout"]
        self.assertTrue(nums)
        self.assertGreater(min(nums), 0, "the oldest lines should have been rotated out")
        self.assertEqual(nums, sorted(nums))
        # Other functions' logs are untouched and the daemon answers normally.
        self.assertIn("before the flood", [x["line"] for x in self.d.logs("printer")])
        self.assertEqual(self.assert_ok(self.d.invoke("printer", {})), "ok")


if __name__ == "__main__":
    unittest.main()
