"""Topics end to end: fan-out to a failing function, a succeeding one, a queue and a webhook,
each with its own filter policy (exact, prefix, numeric range, exists, anything-but, a
String.Array), the failing one not delaying the others; SNS's shapes field by field; webhook
retries with backoff; bad input; topic rm; a restart between publish and delivery; the CLI.
Functions report to a ledger in this test process (as in test_async.py); webhooks POST to a
small HTTP server here too."""
import json
import re
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nimbus_harness import File, NimbusTestCase, wait_until
from test_async import Ledger

# Posts {"id": "<function>:<request id>", "event"} to the ledger; FAIL makes it slow and failing.
TOPIC_FN = {"app.py": File(b"""
import json, os, time, urllib.request
def handler(event, context):
    req = urllib.request.Request("http://127.0.0.1:%s/" % os.environ["LEDGER"],
                                 data=json.dumps({"id": os.environ["NAME"] + ":" + context.aws_request_id,
                                                  "event": event}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
    if os.environ.get("FAIL"):
        time.sleep(1)
        raise RuntimeError("failing on purpose")
    return {"ok": True}
""")}

ISO_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


class Hooks:
    """Webhook endpoints: /ok answers 200, /flaky 500 to the first two POSTs of each message
    then 200, /down 500 while `down` is set."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []  # (time, path, headers, body)
        self.down = True
        hooks = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                mid = self.headers.get("x-amz-sns-message-id")
                with hooks.lock:
                    hooks.posts.append((time.monotonic(), self.path, dict(self.headers), body))
                    seen = sum(1 for p in hooks.posts
                               if p[1] == self.path and p[2].get("x-amz-sns-message-id") == mid)
                    fail = (self.path == "/flaky" and seen <= 2) or (self.path == "/down" and hooks.down)
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path):
        with self.lock:
            return [p for p in self.posts if p[1] == path]

    def close(self):
        self.server.shutdown()


class Topics(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.ledger = Ledger()
        cls.addClassCleanup(cls.ledger.close)
        cls.hooks = Hooks()
        cls.addClassCleanup(cls.hooks.close)
        cls.d = cls.start_daemon()

    def deploy(self, name, fail=False, **cfg):
        env = {"LEDGER": str(self.ledger.port), "NAME": name}
        if fail:
            env["FAIL"] = "1"
        return self.d.deploy(name, TOPIC_FN, "python3", "app.handler", network="host", timeout_s=10,
                             environment=env, **cfg)

    def topic(self, name):
        r = self.d.api("POST", "/v1/topics", {"name": name})
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def subscribe(self, topic, target, filter=None, raw=None):
        body = {"target": target}
        if filter is not None:
            body["filter"] = filter
        if raw is not None:
            body["raw"] = raw
        r = self.d.api("POST", f"/v1/topics/{topic}/subscriptions", body)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def publish(self, topic, message, attributes=None, subject=None):
        body = {"message": message}
        if attributes is not None:
            body["attributes"] = attributes
        if subject is not None:
            body["subject"] = subject
        r = self.d.api("POST", f"/v1/topics/{topic}/publish", body)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(set(r.json()), {"messageId"})
        return r.json()["messageId"]

    def fn_events(self, fn):
        """(time, Sns object) of each delivery to function fn."""
        with self.ledger.lock:
            calls = [c for c in self.ledger.calls if c[1].startswith(fn + ":")]
        return [(t, ev["Records"][0]["Sns"]) for t, _, ev in calls]

    def drain_queue(self, name, want, wait=15):
        got, deadline = [], time.monotonic() + wait
        while len(got) < want and time.monotonic() < deadline:
            r = self.d.api("POST", f"/v1/queues/{name}/receive", {"max": 10})
            self.assertEqual(r.status, 200, r)
            got += r.json()["messages"]
            if len(got) < want:
                time.sleep(0.1)
        return got

    def test_fan_out_with_filters_and_a_failing_subscriber(self):
        d = self.d
        self.deploy("tgood")
        self.deploy("tbad", fail=True, max_retry_attempts=1, retry_delay_ms=2000)
        self.assertIn(d.api("PUT", "/v1/queues/tq", {}).status, (200, 201))
        t = self.topic("orders")
        self.assertEqual(t["arn"], "arn:nimbus:sns:local:default:orders")
        bad = self.subscribe("orders", "function:tbad")  # everything, and always fails
        good = self.subscribe("orders", "function:tgood", {
            "color": [{"prefix": "re"}], "size": [{"numeric": [">=", 10, "<", 20]}]})
        q = self.subscribe("orders", "queue:tq", {
            "region": [{"anything-but": ["eu"]}], "color": ["red", "blue"]})
        wh = self.subscribe("orders", "webhook:" + self.hooks.url("/ok"), {
            "vip": [{"exists": True}], "tags": ["urgent"]})
        self.assertEqual(d.api("GET", "/v1/topics/orders").json()["subscriptions"], 4)
        msgs = {
            # tgood (prefix re, 15 in [10, 20)); not tq (region eu); not the webhook (no vip)
            "m1": {"color": "red", "size": 15, "region": "eu"},
            # tq (us, blue); the webhook (vip, tags holds urgent); not tgood (size 5)
            "m2": {"color": "blue", "size": 5, "region": "us", "vip": "yes", "tags": ["urgent", "x"]},
            # tgood (reddish, 19.5); not tq (no region; not an exact color); not the webhook
            "m3": {"color": "reddish", "size": 19.5, "vip": 1, "tags": ["later"]},
            # tq (red, us); not tgood (25 out of range)
            "m4": {"color": "red", "size": 25, "region": "us"},
            # nobody but tbad: tags without vip
            "m5": {"tags": ["urgent"]},
        }
        start = time.monotonic()
        ids = {}
        for text, attrs in msgs.items():
            ids[text] = self.publish("orders", text, attrs, subject="subj-" + text)
        by_id = {v: k for k, v in ids.items()}

        # The others are served while tbad is still failing its first attempts.
        self.assertTrue(wait_until(lambda: len(self.fn_events("tgood")) >= 2, 20), self.fn_events("tgood"))
        got_q = self.drain_queue("tq", 2)
        self.assertTrue(wait_until(lambda: len(self.hooks.to("/ok")) >= 1, 15))
        others_done = time.monotonic()
        self.assertTrue(wait_until(
            lambda: len(d.api("GET", "/v1/functions/tbad/events/failed").json()["failed"]) == 5, 30),
            d.api("GET", "/v1/functions/tbad/events/failed").json())
        bad_done = time.monotonic()
        first_bad_retry = sorted(t for t, _ in self.fn_events("tbad"))[5] if len(self.fn_events("tbad")) > 5 else None
        # tbad runs each message twice (1 s each) with a 2 s retry delay: the others finished
        # before its retries began, so its failures did not hold them up.
        self.assertIsNotNone(first_bad_retry)
        self.assertLess(others_done, first_bad_retry + 0.5, (others_done - start, first_bad_retry - start))
        self.assertGreater(bad_done - start, 2.0)

        time.sleep(1)  # nothing more arrives anywhere
        good_events = self.fn_events("tgood")
        self.assertEqual(sorted(by_id[s["MessageId"]] for _, s in good_events), ["m1", "m3"])
        self.assertEqual(sorted(by_id[json.loads(m["body"])["MessageId"]] for m in got_q), ["m2", "m4"])
        self.assertEqual(self.drain_queue("tq", 1, wait=0.5), [])
        self.assertEqual([by_id[p[2]["x-amz-sns-message-id"]] for p in self.hooks.to("/ok")], ["m2"])
        bad_events = self.fn_events("tbad")
        self.assertEqual(sorted(by_id[s["MessageId"]] for _, s in bad_events),
                         sorted(["m1", "m2", "m3", "m4", "m5"] * 2))

        # SNS's Lambda event, field by field.
        with self.ledger.lock:
            ev = next(e for _, rid, e in self.ledger.calls
                      if rid.startswith("tgood:") and e["Records"][0]["Sns"]["Message"] == "m1")
        self.assertEqual(set(ev), {"Records"})
        self.assertEqual(len(ev["Records"]), 1)
        rec = ev["Records"][0]
        self.assertEqual(set(rec), {"EventSource", "EventVersion", "EventSubscriptionArn", "Sns"})
        self.assertEqual(rec["EventSource"], "aws:sns")
        self.assertEqual(rec["EventVersion"], "1.0")
        self.assertEqual(rec["EventSubscriptionArn"], good["arn"])
        self.assertEqual(good["arn"], "arn:nimbus:sns:local:default:orders:" + good["id"])
        sns = rec["Sns"]
        self.assertEqual(set(sns), {"Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp",
                                    "SignatureVersion", "Signature", "SigningCertUrl", "UnsubscribeUrl",
                                    "MessageAttributes"})
        self.assertEqual(sns["Type"], "Notification")
        self.assertEqual(sns["MessageId"], ids["m1"])
        self.assertEqual(sns["TopicArn"], "arn:nimbus:sns:local:default:orders")
        self.assertEqual(sns["Subject"], "subj-m1")
        self.assertEqual(sns["Message"], "m1")
        self.assertRegex(sns["Timestamp"], ISO_MS)
        self.assertEqual((sns["SignatureVersion"], sns["Signature"], sns["SigningCertUrl"],
                          sns["UnsubscribeUrl"]), ("1", "", "", ""))
        self.assertEqual(sns["MessageAttributes"], {
            "color": {"Type": "String", "Value": "red"},
            "size": {"Type": "Number", "Value": "15"},
            "region": {"Type": "String", "Value": "eu"}})

        # The queue's copy: SNS's notification JSON.
        n = next(json.loads(m["body"]) for m in got_q if json.loads(m["body"])["Message"] == "m2")
        self.assertEqual(set(n), {"Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp",
                                  "SignatureVersion", "Signature", "SigningCertURL", "UnsubscribeURL",
                                  "MessageAttributes"})
        self.assertEqual((n["Type"], n["MessageId"], n["Subject"]), ("Notification", ids["m2"], "subj-m2"))
        self.assertEqual(n["MessageAttributes"]["tags"], {"Type": "String.Array", "Value": '["urgent","x"]'})

        # The webhook's POST: SNS's headers and the same notification.
        _, _, headers, body = self.hooks.to("/ok")[0]
        h = {k.lower(): v for k, v in headers.items()}
        self.assertEqual(h["content-type"], "text/plain; charset=UTF-8")
        self.assertEqual(h["x-amz-sns-message-type"], "Notification")
        self.assertEqual(h["x-amz-sns-message-id"], ids["m2"])
        self.assertEqual(h["x-amz-sns-topic-arn"], "arn:nimbus:sns:local:default:orders")
        self.assertEqual(h["x-amz-sns-subscription-arn"], wh["arn"])
        self.assertNotIn("x-amz-sns-rawdelivery", h)
        self.assertEqual(json.loads(body)["Message"], "m2")
        self.assertEqual(json.loads(body)["MessageId"], ids["m2"])

        # The failing function's events are in its failure log, as any async event's.
        failed = d.api("GET", "/v1/functions/tbad/events/failed").json()["failed"]
        self.assertEqual({f["requestContext"]["condition"] for f in failed}, {"RetriesExhausted"})
        self.assertEqual(sorted(f["requestPayload"]["Records"][0]["Sns"]["Message"] for f in failed),
                         ["m1", "m2", "m3", "m4", "m5"])
        subs = d.api("GET", "/v1/topics/orders/subscriptions").json()["subscriptions"]
        self.assertEqual({s["id"] for s in subs}, {bad["id"], good["id"], q["id"], wh["id"]})
        whv = next(s for s in subs if s["id"] == wh["id"])
        self.assertEqual(whv["delivery"], {"pending": 0, "delivered": 1, "failed": 0})
        listed = d.api("GET", "/v1/topics").json()["topics"]
        o = next(x for x in listed if x["name"] == "orders")
        self.assertEqual((o["subscriptions"], o["stats"]["visible"], o["stats"]["sent"]), (4, 0, 5))

    def test_webhook_retries_with_backoff_then_delivers_once(self):
        self.topic("flaky")
        sub = self.subscribe("flaky", "webhook:" + self.hooks.url("/flaky"), raw=True)
        mid = self.publish("flaky", "raw body", {"k": "v"})
        self.assertTrue(wait_until(lambda: len(self.hooks.to("/flaky")) >= 3, 15), self.hooks.to("/flaky"))
        time.sleep(1.5)
        posts = self.hooks.to("/flaky")
        self.assertEqual(len(posts), 3, posts)  # 500, 500, 200: then never again
        self.assertEqual({p[2]["x-amz-sns-message-id"] for p in posts}, {mid})
        self.assertEqual({p[3] for p in posts}, {"raw body"})  # raw delivery: the bare message
        self.assertEqual(posts[0][2]["x-amz-sns-rawdelivery"], "true")
        gaps = [b[0] - a[0] for a, b in zip(posts, posts[1:])]
        self.assertGreater(gaps[0], 0.8, gaps)   # 1 s
        self.assertGreater(gaps[1], 1.8, gaps)   # then 2 s
        v = next(s for s in self.d.api("GET", "/v1/topics/flaky/subscriptions").json()["subscriptions"]
                 if s["id"] == sub["id"])
        self.assertEqual(v["delivery"], {"pending": 0, "delivered": 1, "failed": 0})

    def test_bad_input_changes_nothing(self):
        d = self.d
        self.topic("valid")
        self.assertIn(d.api("PUT", "/v1/queues/vq", {}).status, (200, 201))
        before = d.api("GET", "/v1/topics").json()
        e = self.assert_api_error
        e(d.api("POST", "/v1/topics/nosuch/publish", {"message": "x"}), 404, "not_found")
        e(d.api("GET", "/v1/topics/nosuch"), 404, "not_found")
        e(d.api("GET", "/v1/topics/nosuch/subscriptions"), 404, "not_found")
        e(d.api("DELETE", "/v1/topics/nosuch"), 404, "not_found")
        e(d.api("POST", "/v1/topics/nosuch/subscriptions", {"target": "queue:vq"}), 404, "not_found")
        e(d.api("DELETE", "/v1/topics/valid/subscriptions/nosuch"), 404, "not_found")
        e(d.api("POST", "/v1/topics", {"name": "bad name"}), 400, "invalid_name")
        e(d.api("POST", "/v1/topics", {"name": "x", "colour": "red"}), 400, "unknown_field")
        e(d.api("POST", "/v1/topics", b"{nope"), 400, "invalid_json")
        e(d.api("POST", "/v1/topics", {"name": "valid", "display_name": "other"}), 409, "conflict")
        sub = lambda body: d.api("POST", "/v1/topics/valid/subscriptions", body)
        msg = e(sub({"target": "queue:vq", "filter": {"a": [{"prefx": "x"}]}}), 400, "invalid_value")
        self.assertIn("filter policy", msg)
        e(sub({"target": "queue:vq", "filter": {"a": {"nested": ["x"]}}}), 400, "invalid_value")
        for target in ("webhook:ftp://host/x", "webhook:not a url", "function:nosuch", "queue:nosuch",
                       "lambda:x", ""):
            with self.subTest(target=target):
                self.assertIn("target", e(sub({"target": target}), 400, "invalid_value"))
        e(sub({"target": "queue:vq", "raw": "yes"}), 400, "invalid_value")
        e(sub({"target": "queue:vq", "batch": 1}), 400, "unknown_field")
        pub = lambda body: d.api("POST", "/v1/topics/valid/publish", body)
        e(pub({"message": "x" * (256 * 1024 + 1)}), 413, "payload_too_large")
        e(pub({"message": ""}), 400, "invalid_value")
        e(pub({"message": 5}), 400, "invalid_value")
        e(pub({"message": "x", "attributes": {f"a{i}": "v" for i in range(11)}}), 400, "invalid_value")
        self.assertIn("attributes.n", e(pub({"message": "x", "attributes": {"n": {"Type": "Number", "Value": "ten"}}}),
                                        400, "invalid_value"))
        e(pub({"message": "x", "attributes": {"b": True}}), 400, "invalid_value")
        e(pub({"message": "x", "subject": "s" * 101}), 400, "invalid_value")
        e(pub({"message": "x", "delay": 1}), 400, "unknown_field")
        self.assertEqual(d.api("GET", "/v1/topics").json(), before)
        self.assertEqual(d.api("GET", "/v1/topics/valid/subscriptions").json()["subscriptions"], [])

    def test_topic_rm_removes_its_subscriptions(self):
        d = self.d
        self.topic("gone")
        self.assertIn(d.api("PUT", "/v1/queues/gq", {}).status, (200, 201))
        self.subscribe("gone", "queue:gq")
        self.subscribe("gone", "webhook:" + self.hooks.url("/ok"))
        self.assertEqual(d.api("DELETE", "/v1/topics/gone").json(), {"deleted": "gone"})
        self.assert_api_error(d.api("GET", "/v1/topics/gone"), 404, "not_found")
        self.assert_api_error(d.api("POST", "/v1/topics/gone/publish", {"message": "x"}), 404, "not_found")
        t = self.topic("gone")  # the same name again starts empty
        self.assertEqual(t["subscriptions"], 0)
        self.assertEqual(d.api("GET", "/v1/topics/gone/subscriptions").json()["subscriptions"], [])
        self.publish("gone", "to nobody")
        time.sleep(0.5)
        self.assertEqual(self.drain_queue("gq", 1, wait=0.3), [])
        self.assertEqual(d.api("GET", "/v1/topics/gone").json()["stats"]["visible"], 0)

    def test_cli(self):
        d = self.d
        run = lambda *a, **kw: d.gcli("topic", *a, **kw)
        r = run("create", "clitopic")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("created topic clitopic", r.stdout)
        self.assertIn(d.api("PUT", "/v1/queues/cq", {}).status, (200, 201))
        r = run("subscribe", "clitopic", "queue:cq", "--filter", '{"n":[{"numeric":[">",5]}]}', "--raw")
        self.assertEqual(r.returncode, 0, r.stderr)
        sub_id = r.stdout.strip().rsplit(" ", 1)[1]
        r = run("publish", "clitopic", "hi", "--attr", "who=ada", "--attr-number", "n=7",
                "--attr-list", "tags=a,b", "--subject", "greeting")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"^[0-9a-f-]{36}$")
        m = self.drain_queue("cq", 1)
        self.assertEqual(m[0]["body"], "hi")
        self.assertEqual(m[0]["attributes"], {"who": "ada", "n": "7", "tags": '["a","b"]'})
        r = run("publish", "clitopic", "-", "--attr-number", "n=1", input="from stdin")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^clitopic\s+1\s+")
        r = run("subscriptions", "clitopic")
        self.assertIn(sub_id, r.stdout)
        self.assertIn("queue:cq", r.stdout)
        r = run("get", "clitopic", "--json")
        self.assertEqual(json.loads(r.stdout)["name"], "clitopic")
        # Usage errors: exit 2, one line, nothing sent.
        for args in (("publish", "clitopic", "x", "--attr-number", "n=ten"),
                     ("publish", "clitopic", "x", "--attr", "novalue"),
                     ("subscribe", "clitopic", "lambda:x"),
                     ("subscribe", "clitopic", "queue:cq", "--filter", "[1]"),
                     ("create", "bad name")):
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        r = run("publish", "nosuch", "x")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not_found", r.stderr)
        r = run("unsubscribe", "clitopic", sub_id)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("rm", "clitopic")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "deleted topic clitopic"))


class TopicsRestart(NimbusTestCase):
    def test_messages_survive_a_restart_between_publish_and_delivery(self):
        hooks = Hooks()
        self.addCleanup(hooks.close)
        d = self.new_daemon()
        d.start()
        self.assertEqual(d.api("POST", "/v1/topics", {"name": "durable"}).status, 201)
        r = d.api("POST", "/v1/topics/durable/subscriptions", {"target": "webhook:" + hooks.url("/down")})
        self.assertEqual(r.status, 201, r)
        ids = [d.api("POST", "/v1/topics/durable/publish", {"message": f"m{i}"}).json()["messageId"]
               for i in range(3)]
        self.assertTrue(wait_until(lambda: len(hooks.to("/down")) >= 3, 10))  # refused once each
        self.assertEqual(d.stop(), 0)
        hooks.down = False
        restarted = time.monotonic()
        d.start()
        delivered = lambda: {p[2]["x-amz-sns-message-id"] for p in hooks.to("/down") if p[0] > restarted}
        self.assertTrue(wait_until(lambda: set(ids) <= delivered() and
                                   d.api("GET", "/v1/topics/durable/subscriptions").json()
                                   ["subscriptions"][0]["delivery"]["pending"] == 0, 20),
                        hooks.to("/down"))


if __name__ == "__main__":
    unittest.main()
