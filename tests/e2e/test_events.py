"""The event bus end to end: CloudEvents ingested on POST /v1/events in binary, structured and
batch mode (each checked by what a function received), invalid events refused with a clear
400/415 and nothing routed, rules matching on type, source prefix and data fields (numeric,
anything-but) with non-matching and disabled ones delivering nothing, queue and topic targets,
platform events (a schedule's firing, an on_success destination record, a user queue send)
matched by rules without feeding themselves, the CLI, and the npm `cloudevents` SDK as a real
producer (its HTTP emitter, binary and structured) and consumer (HTTP.toEvent over what a rule
delivered to a queue).

Every test scopes its rules by type or source, since they share one daemon's namespace.
Run: cd tests/e2e && python3 -m unittest -v test_events
"""
import json
import os
import shutil
import subprocess
import time
import unittest
import urllib.parse

from nimbus_harness import BUILD, HERE, SRC, NimbusTestCase, npm_cache_install, wait_until
from test_async import LEDGER_FN, Ledger

NPM = shutil.which("npm")
NODE = shutil.which("node") or "/usr/bin/node"
CACHE = os.path.join(BUILD, "npm-cache")
SDK_SCRIPT = os.path.join(HERE, "ce_sdk.js")


def sdk_version():
    with open(os.path.join(HERE, "package.json")) as f:
        return json.load(f)["devDependencies"]["cloudevents"]


def find_sdk():
    """node_modules holding the pinned cloudevents: this build dir's cache or a sibling's."""
    for cache in [CACHE] + [os.path.join(SRC, d, "npm-cache") for d in ("build", "build-asan")]:
        pkg = os.path.join(cache, "node_modules", "cloudevents", "package.json")
        try:
            with open(pkg) as f:
                if json.load(f)["version"] == sdk_version():
                    return os.path.join(cache, "node_modules")
        except (OSError, ValueError, KeyError):
            pass
    return None


def install_sdk():
    """(node_modules path, None) or (None, why not). Installed once per build dir, under the
    lock test_ric.py uses for the same cache."""
    return npm_cache_install(f"cloudevents@{sdk_version()}", find_sdk)


def ce(id, source, type, **kw):
    return dict({"specversion": "1.0", "id": id, "source": source, "type": type}, **kw)


STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}


class Events(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.ledger = Ledger()
        cls.addClassCleanup(cls.ledger.close)
        cls.d = cls.start_daemon()
        cls.d.deploy("sink", LEDGER_FN, "python3", "app.handler", network="host", timeout_s=10,
                     environment={"LEDGER": str(cls.ledger.port)})


    # -- helpers ---------------------------------------------------------------------------

    def post(self, body, headers=None, status=202):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        r = self.d.api("POST", "/v1/events", body, headers=headers or STRUCTURED)
        self.assertEqual(r.status, status, r)
        return r

    def rule(self, name, match, target, **kw):
        r = self.d.api("POST", "/v1/rules", dict({"name": name, "match": match, "target": target}, **kw))
        self.assertEqual(r.status, 201, r)
        return r.json()

    def queue(self, name):
        r = self.d.api("PUT", f"/v1/queues/{name}", {})
        self.assertIn(r.status, (200, 201), r)

    def drain(self, queue, want, wait=10):
        """Receives (and deletes) messages of queue until `want` arrived or wait passed; their
        bodies parsed."""
        got = []
        deadline = time.monotonic() + wait
        while len(got) < want and time.monotonic() < deadline:
            r = self.d.api("POST", f"/v1/queues/{queue}/receive", {"max": 10})
            self.assertEqual(r.status, 200, r)
            for m in r.json()["messages"]:
                got.append(json.loads(m["body"]))
                q = f"/v1/queues/{queue}/messages/{m['id']}?receipt=" + \
                    urllib.parse.quote(m["receipt"], safe="")
                self.assertEqual(self.d.api("DELETE", q).status, 200)
            if len(got) < want:
                time.sleep(0.05)
        return got

    def received(self, source_prefix):
        """Events the sink function got whose source starts with source_prefix."""
        with self.ledger.lock:
            return [ev for _, _, ev in self.ledger.calls
                    if isinstance(ev, dict) and str(ev.get("source", "")).startswith(source_prefix)]

    # -- ingestion ---------------------------------------------------------------------------

    def test_binary_structured_and_batch_reach_a_function(self):
        self.rule("to-sink", {"source": [{"prefix": "e2e/ingest/"}]}, "function:sink")
        r = self.post(b'{"total": 5, "items": ["x"]}', headers={
            "Content-Type": "application/json; charset=utf-8", "ce-specversion": "1.0",
            "ce-id": "b-1", "ce-source": "e2e/ingest/binary", "ce-type": "order.created",
            "ce-subject": "order%207", "ce-time": "2026-11-23T10:00:00Z", "ce-tenant": "acme",
            "ce-priority": "3"})
        self.assertEqual(r.json(), {"accepted": 1, "ids": ["b-1"]})
        r = self.post(ce("s-1", "e2e/ingest/structured", "order.paid", data={"paid": True},
                         datacontenttype="application/json", flag=True))
        self.assertEqual(r.json(), {"accepted": 1, "ids": ["s-1"]})
        r = self.post([ce("m-1", "e2e/ingest/batch", "a", data="text"),
                       ce("m-2", "e2e/ingest/batch", "b", data_base64="AAEC")], headers=BATCH)
        self.assertEqual(r.json(), {"accepted": 2, "ids": ["m-1", "m-2"]})
        # An empty batch is valid (the format allows it): nothing to keep.
        self.assertEqual(self.post([], headers=BATCH).json(), {"accepted": 0, "ids": []})
        self.assertTrue(wait_until(lambda: len(self.received("e2e/ingest/")) >= 4, 20),
                        self.received("e2e/ingest/"))
        got = {ev["id"]: ev for ev in self.received("e2e/ingest/")}
        self.assertEqual(got["b-1"], {"specversion": "1.0", "id": "b-1", "source": "e2e/ingest/binary",
                                      "type": "order.created", "subject": "order 7",
                                      "time": "2026-11-23T10:00:00Z", "tenant": "acme",
                                      "priority": "3",
                                      "datacontenttype": "application/json; charset=utf-8",
                                      "data": {"total": 5, "items": ["x"]}})
        self.assertEqual(got["s-1"], ce("s-1", "e2e/ingest/structured", "order.paid",
                                        data={"paid": True}, datacontenttype="application/json",
                                        flag=True))
        self.assertEqual(got["m-1"]["data"], "text")
        self.assertEqual(got["m-2"]["data_base64"], "AAEC")
        time.sleep(0.5)
        self.assertEqual(len(self.received("e2e/ingest/")), 4)  # once each

    def test_invalid_events_are_refused_and_nothing_routed(self):
        self.queue("invalid-q")
        self.rule("invalid", {"source": [{"prefix": "e2e/invalid"}]}, "queue:invalid-q")
        src = "e2e/invalid"
        binary = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": src, "ce-type": "t",
                  "Content-Type": "application/json"}
        bad, badjson, fmt = "invalid_value", "invalid_json", "bad_request"
        cases = [
            ("missing id", {k: v for k, v in binary.items() if k != "ce-id"}, b"{}", 400, bad, "id"),
            ("missing source", STRUCTURED, {"specversion": "1.0", "id": "1", "type": "t"}, 400, bad,
             "source"),
            ("missing type", STRUCTURED, {"specversion": "1.0", "id": "1", "source": src}, 400, bad,
             "type"),
            ("specversion 0.3", STRUCTURED, ce("1", src, "t", specversion="0.3"), 400, bad,
             "specversion"),
            ("bad extension name", STRUCTURED, ce("1", src, "t", **{"Foo-Bar": "x"}), 400, bad,
             "Foo-Bar"),
            ("bad extension header", dict(binary, **{"ce-Foo-Bar": "x"}), b"{}", 400, bad, "foo-bar"),
            ("data and data_base64", STRUCTURED, ce("1", src, "t", data=1, data_base64="AA=="), 400,
             bad, "data_base64"),
            ("bad JSON", STRUCTURED, b'{"specversion": "1.0",', 400, badjson, "JSON"),
            ("xml format", {"Content-Type": "application/cloudevents+xml"}, b"<event/>", 415, fmt,
             "xml"),
            ("one bad event of a batch", BATCH, [ce("1", src, "t"), ce("", src, "t")], 400, bad,
             "batch[1]"),
        ]
        for what, headers, body, status, code, needle in cases:
            with self.subTest(what):
                r = self.post(body, headers=headers, status=status)
                msg = self.assert_api_error(r, status, code)
                self.assertIn(needle.lower(), msg.lower(), r)
        self.post(ce("valid", src, "t"))
        got = self.drain("invalid-q", 2, wait=3)
        self.assertEqual([e["id"] for e in got], ["valid"])

    # -- rules -------------------------------------------------------------------------------

    def test_rules_match_type_source_prefix_and_data(self):
        for q in ("by-type", "by-prefix", "by-data", "by-off"):
            self.queue(q)
        self.rule("by-type", {"type": ["rt.order.created"]}, "queue:by-type")
        # Made with the CLI, as a user would.
        p = self.d.gcli("rule", "add", "by-prefix", "--match",
                        '{"type":[{"prefix":"rt."}],"source":[{"prefix":"shop/"}]}', "queue:by-prefix",
                        "--description", "the shop's events")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.rule("by-data", {"type": [{"prefix": "rt."}],
                              "data": {"total": [{"numeric": [">=", 100]}],
                                       "status": [{"anything-but": ["test", "void"]}]}}, "queue:by-data")
        self.rule("by-off", {"type": [{"prefix": "rt."}]}, "queue:by-off", enabled=False)
        self.post([
            ce("e1", "blog/1", "rt.order.created", data={"total": 5, "status": "live"}),
            ce("e2", "shop/eu/1", "rt.order.paid", data={"total": 100, "status": "live"}),
            ce("e3", "other", "rt.order.paid", data={"total": 100.5, "status": "void"}),
            ce("e4", "shopping", "rt.order.paid", data={"total": "100", "status": "live"}),
            ce("e5", "shop/x", "rt.order.created", data={"total": 99.99}),
        ], headers=BATCH)
        want = {"by-type": ["e1", "e5"], "by-prefix": ["e2", "e5"], "by-data": ["e2"]}
        for q, ids in want.items():
            with self.subTest(q):
                got = self.drain(q, len(ids))
                self.assertEqual(sorted(e["id"] for e in got), ids)
        time.sleep(0.5)
        for q in want:
            self.assertEqual(self.drain(q, 1, wait=0.3), [], q)  # nothing more
        self.assertEqual(self.drain("by-off", 1, wait=0.3), [])  # disabled

        # Enabled again (CLI), it routes; the test route says the same without sending.
        self.assertEqual(self.d.gcli("rule", "enable", "by-off").returncode, 0)
        r = self.d.api("POST", "/v1/rules/by-off/test", {"event": ce("x", "s", "rt.x")})
        self.assertEqual(r.json(), {"matched": True})
        r = self.d.api("POST", "/v1/rules/by-data/test", {"event": ce("x", "s", "rt.x", data={"total": 1})})
        self.assertEqual(r.json(), {"matched": False})
        self.post(ce("e6", "s", "rt.again"))
        self.assertEqual([e["id"] for e in self.drain("by-off", 1)], ["e6"])
        p = self.d.gcli("rule", "ls")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("queue:by-prefix", p.stdout)
        self.assertEqual(self.d.gcli("rule", "rm", "by-off").returncode, 0)
        self.assertEqual(self.d.api("GET", "/v1/rules/by-off").status, 404)

    def test_rule_validation(self):
        d = self.d
        self.queue("valid-q")
        bad = [
            ({"name": "x", "match": {"type": [{"prefx": "a"}]}, "target": "queue:valid-q"}, 400,
             'type[0]: unknown operator "prefx"'),
            ({"name": "x", "match": {"type": "a"}, "target": "queue:valid-q"}, 400, "match: pattern: type"),
            ({"name": "x", "target": "queue:valid-q"}, 400, "match is required"),
            ({"name": "x", "match": {}, "target": "lambda:f"}, 400, "target must be"),
            ({"name": "x", "match": {}, "target": "queue:nosuch"}, 404, "queue 'nosuch' not found"),
            ({"name": "x", "match": {}, "target": "function:nosuch"}, 404, "nosuch"),
            ({"name": "bad name", "match": {}, "target": "queue:valid-q"}, 400, "name"),
            ({"name": "x", "match": {}, "target": "queue:valid-q", "colour": 1}, 400, "colour"),
        ]
        for body, status, needle in bad:
            with self.subTest(body=body):
                r = d.api("POST", "/v1/rules", body)
                self.assertEqual(r.status, status, r)
                self.assertIn(needle, r.json()["error"]["message"])
        self.assertEqual(d.api("GET", "/v1/rules/x").status, 404)  # nothing was made
        self.rule("dup", {"type": ["never"]}, "queue:valid-q")
        self.assert_api_error(d.api("POST", "/v1/rules", {"name": "dup", "match": {}, "target": "queue:valid-q"}),
                              409, "conflict")
        r = d.api("PATCH", "/v1/rules/dup", {"target": "queue:nosuch"})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(d.api("GET", "/v1/rules/dup").json()["target"], "queue:valid-q")
        r = d.api("PATCH", "/v1/rules/dup", {"description": "d", "enabled": False})
        self.assertEqual(r.status, 200, r)
        self.assertEqual({k: r.json()[k] for k in ("name", "match", "target", "description", "enabled")},
                         {"name": "dup", "match": {"type": ["never"]}, "target": "queue:valid-q",
                          "description": "d", "enabled": False})
        p = d.gcli("rule", "add", "c", "--match", "{nope", "queue:valid-q")
        self.assertEqual(p.returncode, 2, p)
        p = d.gcli("rule", "add", "c", "--match", "{}", "queue:nosuch")
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertEqual(d.api("DELETE", "/v1/rules/dup").json(), {"deleted": "dup"})

    def test_topic_target(self):
        d = self.d
        r = d.api("POST", "/v1/topics", {"name": "photos"})
        self.assertEqual(r.status, 201, r)
        self.queue("photo-q")
        r = d.api("POST", "/v1/topics/photos/subscriptions",
                  {"target": "queue:photo-q", "raw": True, "filter": {"ce_type": ["photo.taken"]}})
        self.assertIn(r.status, (200, 201), r)
        self.rule("photos", {"source": [{"prefix": "camera/"}]}, "topic:photos")
        self.post([ce("p1", "camera/1", "photo.taken", subject="a.jpg"),
                   ce("p2", "camera/1", "photo.deleted")], headers=BATCH)
        got = self.drain("photo-q", 1)
        self.assertEqual([e["id"] for e in got], ["p1"])  # p2 stopped by the filter policy
        time.sleep(0.5)
        self.assertEqual(self.drain("photo-q", 1, wait=0.3), [])

    def test_topic_message_is_a_platform_event(self):
        d = self.d
        self.assertEqual(d.api("POST", "/v1/topics", {"name": "news"}).status, 201)
        self.queue("news-events")
        self.rule("news", {"type": ["nimbus.topic.message"], "subject": ["breaking"]},
                  "queue:news-events")
        r = d.api("POST", "/v1/topics/news/publish",
                  {"message": "hello", "subject": "breaking", "attributes": {"lang": "en"}})
        self.assertEqual(r.status, 202, r)
        mid = r.json()["messageId"]
        d.api("POST", "/v1/topics/news/publish", {"message": "quiet", "subject": "other"})
        got = self.drain("news-events", 1, wait=10)
        self.assertEqual(len(got), 1, got)
        ev = got[0]
        self.assertEqual((ev["type"], ev["source"], ev["id"], ev["subject"]),
                         ("nimbus.topic.message", "nimbus://default/topics/news", mid, "breaking"))
        self.assertEqual(ev["data"]["Message"], "hello")
        self.assertEqual(ev["data"]["MessageAttributes"]["lang"]["Value"], "en")
        time.sleep(0.5)
        self.assertEqual(self.drain("news-events", 1, wait=0.3), [])

    # -- platform events ---------------------------------------------------------------------

    def test_platform_events(self):
        d = self.d
        for q in ("fired-q", "success-q", "dest-q", "qmsg-q", "loop-q", "loopsrc"):
            self.queue(q)
        # A schedule firing.
        self.rule("fired", {"type": ["nimbus.schedule.fired"],
                            "source": ["nimbus://default/schedules/every-second"]}, "queue:fired-q")
        r = d.api("PUT", "/v1/schedules/every-second",
                  {"expression": "rate(1 second)", "function": "sink", "payload": {"from": "schedule"}})
        self.assertEqual(r.status, 201, r)
        got = self.drain("fired-q", 1, wait=10)
        d.api("DELETE", "/v1/schedules/every-second")
        self.assertTrue(got, "no nimbus.schedule.fired event")
        ev = got[0]
        self.assertEqual((ev["specversion"], ev["type"], ev["source"]),
                         ("1.0", "nimbus.schedule.fired", "nimbus://default/schedules/every-second"))
        self.assertRegex(ev["id"], r"^[0-9a-f-]{36}$")
        self.assertRegex(ev["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual({k: ev["data"][k] for k in ("schedule", "function", "payload")},
                         {"schedule": "every-second", "function": "sink", "payload": {"from": "schedule"}})
        self.assertRegex(ev["data"]["scheduledTime"], r"Z$")

        # A destination record (on_success).
        d.deploy("okfn", LEDGER_FN, "python3", "app.handler", network="host", timeout_s=10,
                 environment={"LEDGER": str(self.ledger.port)}, on_success="queue:dest-q")
        self.rule("success", {"type": ["nimbus.invocation.success"],
                              "source": ["nimbus://default/functions/okfn"]}, "queue:success-q")
        r = d.api("POST", "/v1/functions/okfn/invoke", {"x": 1},
                  headers={"X-Nimbus-Invocation-Type": "Event"})
        self.assertEqual(r.status, 202, r)
        rid = r.json()["request_id"]
        got = self.drain("success-q", 1, wait=20)
        self.assertTrue(got, "no nimbus.invocation.success event")
        ev = got[0]
        self.assertEqual((ev["type"], ev["source"], ev["subject"]),
                         ("nimbus.invocation.success", "nimbus://default/functions/okfn", rid))
        self.assertEqual(ev["data"]["requestContext"]["requestId"], rid)
        self.assertEqual(ev["data"]["requestContext"]["condition"], "Success")
        self.assertEqual(ev["data"]["requestPayload"], {"x": 1})
        self.assertEqual(len(self.drain("dest-q", 1)), 1)  # the destination got its record too

        # A user's queue send; routing it to a queue (even one whose events the rule would
        # match) emits nothing more: no loop.
        self.rule("qmsg", {"type": ["nimbus.queue.message"],
                           "source": [{"prefix": "nimbus://default/queues/loop"}]}, "queue:loop-q")
        r = d.api("POST", "/v1/queues/loopsrc/messages", {"body": "hello", "attributes": {"k": "v"}})
        self.assertEqual(r.status, 201, r)
        mid = r.json()["ids"][0]
        time.sleep(1.5)
        got = self.drain("loop-q", 5, wait=1)
        self.assertEqual(len(got), 1, got)
        ev = got[0]
        self.assertEqual((ev["type"], ev["source"], ev["id"]),
                         ("nimbus.queue.message", "nimbus://default/queues/loopsrc", mid))
        self.assertEqual(ev["data"], {"queue": "loopsrc", "messageId": mid, "body": "hello",
                                      "attributes": {"k": "v"}})

    # -- the npm SDK -------------------------------------------------------------------------

    @unittest.skipIf(NPM is None, "npm is not installed: cannot fetch the cloudevents SDK")
    def test_npm_sdk_producer_and_consumer(self):
        modules, why = install_sdk()
        self.assertIsNone(why, why)
        env = dict(os.environ, NODE_PATH=modules)
        self.queue("sdk-q")
        self.rule("sdk", {"source": [{"prefix": "sdk/"}]}, "queue:sdk-q")
        p = subprocess.run([NODE, SDK_SCRIPT, "produce", self.d.url, self.d.token, "sdk/"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        sent = json.loads(p.stdout)
        self.assertEqual(len(sent), 3)
        for s in sent:
            self.assertEqual(json.loads(s["body"]), {"accepted": 1, "ids": [s["event"]["id"]]}, s)
        # The consumer: what the rule delivered, read by the SDK.
        r = self.d.api("POST", "/v1/queues/sdk-q/receive", {"max": 10})
        bodies = [m["body"] for m in r.json()["messages"]]
        deadline = time.monotonic() + 10
        while len(bodies) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            bodies += [m["body"] for m in self.d.api("POST", "/v1/queues/sdk-q/receive",
                                                      {"max": 10}).json()["messages"]]
        self.assertEqual(len(bodies), 3, bodies)
        p = subprocess.run([NODE, SDK_SCRIPT, "consume"], input=json.dumps(bodies),
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = {e["id"]: e for e in json.loads(p.stdout)}
        for s in sent:
            ev = s["event"]
            with self.subTest(mode=s["mode"]):
                back = got[ev["id"]]
                for k in ("id", "source", "type", "time", "specversion", "data", "subject", "partitionkey"):
                    self.assertEqual(back.get(k), ev.get(k), k)
                # Binary mode's Content-Type becomes datacontenttype (the SDK sends JSON's when
                # the event names none).
                self.assertTrue(back.get("datacontenttype", "application/json").startswith(
                    ev.get("datacontenttype", "application/json")), back)
        # The CLI's event goes the same way.
        p = self.d.gcli("events", "put", "--type", "cli.event", "--source", "sdk/cli",
                        "--payload", '{"n": 1}', "--subject", "s")
        self.assertEqual(p.returncode, 0, p.stderr)
        got = self.drain("sdk-q", 1)
        self.assertEqual([(e["type"], e["data"], e["subject"]) for e in got], [("cli.event", {"n": 1}, "s")])


if __name__ == "__main__":
    unittest.main()
