"""Asynchronous invocations, retries, destinations, the failure log, queues and subscriptions,
and a crash test: end to end against the real daemon. Functions report every delivery to a
ledger, an HTTP server in this test process (they run with network "host" for it), so what was
processed is known even when the daemon is killed."""
import json
import os
import signal
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nimbus_harness import File, NimbusTestCase, wait_until

# The function posts {"id", "event"} to the ledger; the ledger answers how many times it has
# seen that id. MODE (event field "mode") decides the outcome: "fail-until-3" fails the first
# two deliveries, "fail" always fails, anything else succeeds.
LEDGER_FN = {"app.py": File(b"""
import json, os, urllib.request
def handler(event, context):
    req = urllib.request.Request("http://127.0.0.1:%s/" % os.environ["LEDGER"],
                                 data=json.dumps({"id": context.aws_request_id,
                                                  "event": event}).encode(),
                                 headers={"Content-Type": "application/json"})
    seen = json.loads(urllib.request.urlopen(req, timeout=10).read())["seen"]
    mode = event.get("mode") if isinstance(event, dict) else None
    if (mode == "fail" and not os.environ.get("FIXED")) or (mode == "fail-until-3" and seen < 3):
        raise RuntimeError("failing on purpose, delivery %d" % seen)
    if "Records" in event:
        bad = [r["messageId"] for r in event["Records"] if r["body"] == "bad"]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in bad]}
    return {"ok": seen}
""")}


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (time, id, event)
        ledger = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with ledger.lock:
                    ledger.calls.append((time.monotonic(), body["id"], body["event"]))
                    seen = sum(1 for c in ledger.calls if c[1] == body["id"])
                out = json.dumps({"seen": seen}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, rid):
        with self.lock:
            return [c for c in self.calls if c[1] == rid]

    def ids(self):
        with self.lock:
            return [c[1] for c in self.calls]

    def close(self):
        self.server.shutdown()


class Async(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.ledger = Ledger()
        cls.addClassCleanup(cls.ledger.close)
        cls.d = cls.start_daemon()

    def deploy(self, name, **cfg):
        return self.d.deploy(name, LEDGER_FN, "python3", "app.handler", network="host", timeout_s=10,
                             environment={"LEDGER": str(self.ledger.port)}, **cfg)

    def send(self, name, event):
        r = self.d.api("POST", f"/v1/functions/{name}/invoke", event,
                       headers={"X-Nimbus-Invocation-Type": "Event"})
        self.assertEqual(r.status, 202, r)
        rid = r.json()["request_id"]
        self.assertEqual(rid, r.headers["x-nimbus-request-id"])
        return rid

    def receive(self, queue, wait=10, n=10):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            r = self.d.api("POST", f"/v1/queues/{queue}/receive", {"max": n})
            self.assertEqual(r.status, 200, r)
            if r.json()["messages"]:
                return r.json()["messages"]
            time.sleep(0.1)
        return []

    def queue(self, name, **cfg):
        r = self.d.api("PUT", f"/v1/queues/{name}", cfg)
        self.assertIn(r.status, (200, 201), r)

    def test_async_invoke_runs_the_event_with_a_stable_id(self):
        self.deploy("a1")
        rid = self.send("a1", {"hello": "world"})
        self.assertTrue(wait_until(lambda: self.ledger.of(rid), 15), "never delivered")
        (_, got_id, event), = self.ledger.of(rid)
        self.assertEqual(event, {"hello": "world"})
        time.sleep(0.5)
        self.assertEqual(len(self.ledger.of(rid)), 1)  # succeeded: not delivered again

    def test_retries_with_increasing_delays(self):
        self.deploy("a2", retry_delay_ms=600, max_retry_attempts=2)
        rid = self.send("a2", {"mode": "fail-until-3"})
        self.assertTrue(wait_until(lambda: len(self.ledger.of(rid)) >= 3, 20),
                        self.ledger.of(rid))
        times = [c[0] for c in self.ledger.of(rid)]
        self.assertGreaterEqual(times[1] - times[0], 0.55, times)   # first retry: the delay
        self.assertGreaterEqual(times[2] - times[1], 1.15, times)   # second: twice that
        time.sleep(1)
        self.assertEqual(len(self.ledger.of(rid)), 3)
        st = self.d.api("GET", "/v1/functions/a2").json()["stats"]["async"]
        self.assertEqual((st["queued"], st["failed"]), (0, 0), st)

    def test_always_failing_goes_to_the_destination_and_the_dead_letter_queue(self):
        self.queue("fails")
        self.queue("dlq")
        self.deploy("a3", retry_delay_ms=200, max_retry_attempts=1, on_failure="queue:fails",
                    dead_letter="queue:dlq")
        rid = self.send("a3", {"mode": "fail", "n": 7})
        rec = json.loads(self.receive("fails", 20)[0]["body"])
        self.assertEqual(rec["requestContext"]["requestId"], rid)
        self.assertEqual(rec["requestContext"]["condition"], "RetriesExhausted")
        self.assertEqual(rec["requestContext"]["approximateInvokeCount"], 2)
        self.assertEqual(rec["requestPayload"], {"mode": "fail", "n": 7})
        self.assertEqual(rec["responseContext"]["functionError"], "Unhandled")
        self.assertIn("failing on purpose", json.dumps(rec["responsePayload"]))
        dead = self.receive("dlq", 10)[0]
        self.assertEqual(json.loads(dead["body"]), {"mode": "fail", "n": 7})
        self.assertEqual(dead["id"], rid)
        self.assertEqual(len(self.ledger.of(rid)), 2)

    def test_failure_log_and_redrive(self):
        self.deploy("a4", max_retry_attempts=0)
        rid = self.send("a4", {"mode": "fail"})
        failed = lambda: self.d.api("GET", "/v1/functions/a4/events/failed").json()["failed"]
        self.assertTrue(wait_until(lambda: failed(), 15), "never in the failure log")
        self.assertEqual(failed()[0]["requestContext"]["requestId"], rid)
        self.assertEqual(self.d.api("GET", "/v1/functions/a4").json()["stats"]["async"]["failed"], 1)
        # Redriven after a fix (the same event now succeeds since the ledger saw it before).
        self.d.deploy("a4", LEDGER_FN, environment={"LEDGER": str(self.ledger.port), "FIXED": "1"})
        r = self.d.api("POST", "/v1/functions/a4/events/redrive")
        self.assertEqual(r.json(), {"redriven": 1})
        self.assertTrue(wait_until(lambda: len(self.ledger.of(rid)) >= 2, 15))
        self.assertEqual(failed(), [])

    def test_max_event_age_ends_a_throttled_event(self):
        self.deploy("a5", max_concurrency=0, max_event_age_s=2)
        rid = self.send("a5", {"x": 1})
        failed = lambda: self.d.api("GET", "/v1/functions/a5/events/failed").json()["failed"]
        self.assertTrue(wait_until(lambda: failed(), 20), "never failed")
        self.assertEqual(failed()[0]["requestContext"]["condition"], "EventAgeExceeded")
        self.assertEqual(self.ledger.of(rid), [])

    def test_bad_input(self):
        d = self.d
        self.deploy("a6")
        r = d.api("POST", "/v1/functions/a6/invoke", b"x" * (1024 * 1024 + 1),
                  headers={"X-Nimbus-Invocation-Type": "Event"})
        self.assert_api_error(r, 413, "payload_too_large")
        r = d.api("POST", "/v1/functions/nosuch/invoke", b"{}",
                  headers={"X-Nimbus-Invocation-Type": "Event"})
        self.assert_api_error(r, 404, "not_found")
        r = d.api("POST", "/v1/functions/a6/invoke", b"{}",
                  headers={"X-Nimbus-Invocation-Type": "Later"})
        self.assert_api_error(r, 400, "invalid_value")
        self.assertEqual(d.api("PUT", "/v1/functions/a6/scaling", {"on_failure": "lambda:x"}).status, 400)
        self.assertEqual(d.api("PUT", "/v1/functions/a6/scaling", {"max_retry_attempts": 3}).status, 400)
        self.assert_api_error(d.api("PUT", "/v1/queues/qbad", {"max_receives": 2}), 400, "invalid_value")
        self.assert_api_error(d.api("POST", "/v1/queues/nosuch/messages", {"body": "x"}), 404, "not_found")

    def test_queue_visibility_receipts_and_dead_letter(self):
        d = self.d
        self.queue("dl1")
        self.queue("q1", visibility_timeout_s=1, max_receives=2, dead_letter="dl1")
        r = d.api("POST", "/v1/queues/q1/messages", {"body": "hello", "attributes": {"k": "v"}})
        self.assertEqual(r.status, 201, r)
        mid = r.json()["ids"][0]
        m1 = self.receive("q1")[0]
        self.assertEqual((m1["id"], m1["body"], m1["receive_count"], m1["attributes"]),
                         (mid, "hello", 1, {"k": "v"}))
        self.assertEqual(d.api("POST", "/v1/queues/q1/receive", {"max": 10}).json()["messages"], [])
        m2 = self.receive("q1", 5)[0]  # visible again after the timeout
        self.assertEqual(m2["receive_count"], 2)
        stale = d.api("DELETE", f"/v1/queues/q1/messages/{mid}?receipt="
                      + urllib.parse.quote(m1["receipt"], safe=""))
        self.assertEqual(stale.status, 410, stale)
        # Received max_receives times and never deleted: the next receive moves it to the DLQ.
        time.sleep(1.2)
        self.assertEqual(d.api("POST", "/v1/queues/q1/receive", {"max": 10}).json()["messages"], [])
        dead = self.receive("dl1", 5)[0]
        self.assertEqual((dead["id"], dead["body"]), (mid, "hello"))
        ok = d.api("DELETE", f"/v1/queues/dl1/messages/{mid}?receipt="
                   + urllib.parse.quote(dead["receipt"], safe=""))
        self.assertEqual(ok.status, 200, ok)
        st = d.api("GET", "/v1/queues/q1").json()["stats"]
        self.assertEqual((st["visible"], st["in_flight"], st["dead_lettered"]), (0, 0, 1), st)
        # A dead-letter queue in use cannot be deleted.
        self.assert_api_error(d.api("DELETE", "/v1/queues/dl1"), 409, "conflict")

    def test_subscription_with_a_partial_batch_failure(self):
        d = self.d
        self.d.deploy("sub1", LEDGER_FN, "python3", "app.handler", network="host", timeout_s=1,
                      environment={"LEDGER": str(self.ledger.port)})
        self.queue("sdl")
        self.queue("sq", visibility_timeout_s=1, max_receives=2, dead_letter="sdl")
        self.deploy("slowsub")  # a 10 s timeout: longer than the queue's visibility
        r = d.api("PUT", "/v1/queues/sq/subscriptions/slowsub", {})
        self.assert_api_error(r, 400, "invalid_value")
        r = d.api("PUT", "/v1/queues/sq/subscriptions/sub1", {"batch_size": 10, "batch_window_ms": 300})
        self.assertEqual(r.status, 201, r)
        r = d.api("POST", "/v1/queues/sq/messages",
                  {"messages": [{"body": "good1"}, {"body": "bad"}, {"body": "good2"}]})
        self.assertEqual(r.status, 201, r)
        ids = r.json()["ids"]
        # The bad one comes back after the visibility timeout, twice, then goes to the DLQ.
        dead = self.receive("sdl", 20)
        self.assertEqual([m["id"] for m in dead], [ids[1]])
        bodies = [rec["body"] for _, _, ev in self.ledger.calls if isinstance(ev, dict)
                  for rec in ev.get("Records", [])]
        self.assertEqual(bodies.count("good1"), 1)
        self.assertEqual(bodies.count("good2"), 1)
        self.assertEqual(bodies.count("bad"), 2)
        batch = next(ev for _, _, ev in self.ledger.calls
                     if isinstance(ev, dict) and "Records" in ev)
        rec = batch["Records"][0]
        self.assertEqual(rec["eventSource"], "aws:sqs")
        self.assertIn("ApproximateReceiveCount", rec["attributes"])
        st = d.api("GET", "/v1/queues/sq").json()["stats"]
        self.assertEqual((st["visible"], st["in_flight"]), (0, 0), st)
        self.assertEqual(d.api("DELETE", "/v1/queues/sq/subscriptions/sub1").status, 200)


    def test_cli(self):
        d = self.d
        self.deploy("clifn", max_retry_attempts=0)
        p = d.gcli("invoke", "clifn", '{"via": "cli"}', "--async")
        self.assertEqual(p.returncode, 0, p.stderr)
        rid = p.stdout.strip()
        self.assertTrue(wait_until(lambda: self.ledger.of(rid), 15), p.stdout)
        self.assertEqual(self.ledger.of(rid)[0][2], {"via": "cli"})
        p = d.gcli("queue", "create", "cliq", "--visibility-timeout", "5")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = d.gcli("queue", "send", "cliq", "hello there", "--attr", "k=v")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = d.gcli("queue", "receive", "cliq", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        m = json.loads(p.stdout.splitlines()[0])
        self.assertEqual((m["body"], m["attributes"]), ("hello there", {"k": "v"}))
        p = d.gcli("queue", "delete", "cliq", m["id"], m["receipt"])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = d.gcli("queue", "stats", "cliq")
        self.assertEqual(p.returncode, 0, p.stderr)
        rid = self.send("clifn", {"mode": "fail"})
        self.assertTrue(wait_until(lambda: rid in d.gcli("events", "failed", "clifn").stdout, 15))
        p = d.gcli("queue", "create", "bad", "--max-receives", "3")
        self.assertEqual(p.returncode, 2, p)
        p = d.gcli("get", "clifn")
        self.assertIn("async:", p.stdout)


class CrashSafety(NimbusTestCase):
    """Events acknowledged with 202 survive SIGKILLs of the daemon: every one is processed."""

    def test_sigkill_during_processing_loses_nothing(self):
        ledger = Ledger()
        self.addCleanup(ledger.close)
        d = self.new_daemon()
        d.start()
        d.deploy("crash", LEDGER_FN, "python3", "app.handler", network="host", timeout_s=10,
                 retry_delay_ms=500, environment={"LEDGER": str(ledger.port)})
        acked, attempted = [], [0]
        lock = threading.Lock()
        stop = threading.Event()

        def client(k):
            i = 0
            while not stop.is_set():
                i += 1
                with lock:
                    attempted[0] += 1
                try:
                    r = d.api("POST", "/v1/functions/crash/invoke", {"c": k, "i": i},
                              headers={"X-Nimbus-Invocation-Type": "Event"}, timeout=5)
                except OSError:
                    time.sleep(0.05)  # the daemon is down: try again
                    continue
                if r.status == 202:
                    with lock:
                        acked.append(r.json()["request_id"])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        kills = 0
        try:
            for _ in range(3):
                time.sleep(1.0)
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
                kills += 1
                d.start()
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        acked_set = set(acked)

        def failed_ids():
            r = d.api("GET", "/v1/functions/crash/events/failed?limit=10000")
            return {f["requestContext"]["requestId"] for f in r.json()["failed"]}

        # Accounted for: processed (in the ledger), or failed to the failure log (kept, not lost).
        done = wait_until(lambda: acked_set <= set(ledger.ids()) | failed_ids(), 60)
        missing = acked_set - set(ledger.ids()) - failed_ids()
        self.assertTrue(done, f"{len(missing)} acknowledged events never processed; async stats "
                              f"{d.api('GET', '/v1/functions/crash').json()['stats']['async']}; "
                              f"some: {sorted(missing)[:3]}")
        seen = ledger.ids()
        processed = len(set(seen) & acked_set)
        duplicated = len(seen) - len(set(seen))
        failed = failed_ids()
        lost = len(acked_set - set(seen) - failed)
        print(f"\ncrash test: kills={kills} attempted={attempted[0]} acknowledged={len(acked_set)} "
              f"processed={processed} duplicated={duplicated} lost={lost} "
              f"dead-lettered={len(failed)}", flush=True)
        self.assertGreater(len(acked_set), 50)
        self.assertEqual(lost, 0)


if __name__ == "__main__":
    unittest.main()
