"""Functions calling functions, queues, topics and the event bus from inside the sandbox
(docs/internals/calls.md): a python function calling a node function calling a C function,
synchronously and asynchronously, with the trace in the logs; the depth limit; the refusals
(another namespace, unknown function, missing topic, invalid CloudEvent); queue sends seen
through the admin API; and a provided runtime using the private Runtime API path."""
import json
import os
import time
import unittest

from nimbus_harness import BUILD, File, NimbusTestCase, run_cli, wait_until

C_BOOTSTRAP = os.path.join(BUILD, "tests", "calls_c", "bootstrap")

PY = {"app.py": File(b"""
import json, nimbus

def handler(event, context):
    mode = event.get("mode")
    me = context.aws_request_id
    if mode == "sync":
        return {"py": me, "node": nimbus.invoke("nodefn", event)}
    if mode == "async":
        return {"py": me, "queued": nimbus.invoke_async("nodefn", event)}
    if mode == "try":
        try:
            if event["op"] == "invoke":
                return {"ok": nimbus.invoke(event["target"], event.get("payload", {}))}
            if event["op"] == "send":
                body = event["body"] if "body" in event else "x" * event["big"]
                return {"ok": nimbus.send(event["target"], body, event.get("attributes"))}
            if event["op"] == "publish":
                return {"ok": nimbus.publish(event["target"], event["body"], event.get("attributes"),
                                             event.get("subject"))}
            if event["op"] == "emit":
                return {"ok": nimbus.emit(event["event"])}
        except nimbus.CallError as e:
            return {"call_error": e.code, "status": e.status, "message": e.message}
        except nimbus.FunctionError as e:
            return {"function_error": e.error_type, "message": e.error_message}
    if mode == "rec":
        if event["n"] == 0:
            return {"bottom": event["d"]}
        try:
            return nimbus.invoke(context.function_name, {"mode": "rec", "n": event["n"] - 1,
                                                         "d": event["d"] + 1})
        except nimbus.CallError as e:
            return {"call_error": e.code, "at": event["d"], "message": e.message}
    return {"echo": event}
""")}

NODE = {"index.mjs": File(b"""
import nimbus from 'nimbus';

export const handler = async (event, context) => {
  const me = context.awsRequestId;
  if (event.mode === 'async') {
    const id = await nimbus.invokeAsync('cfn', { op: 'record', tag: event.tag, node: me });
    return { node: me, queued: id };
  }
  if (event.mode === 'fanout') {
    const rs = await Promise.all([1, 2, 3].map((i) => nimbus.invoke('cfn', { op: 'echo', i })));
    return { node: me, results: rs.map((r) => r.event.i) };
  }
  const c = await nimbus.invoke('cfn', { op: 'echo', from: 'node' });
  return { node: me, c };
};
""")}

# The same C binary over the HTTP Runtime API: without NIMBUS_CHANNEL_FD the SDK speaks HTTP.
HTTP_BOOT = b"#!/bin/sh\nunset NIMBUS_CHANNEL_FD\nexec ./cfn\n"


def start_lines(logs, rid):
    return [r["line"] for r in logs if r.get("stream") == "platform"
            and r["line"].startswith(f"START RequestId: {rid} ")]


class Calls(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        with open(C_BOOTSTRAP, "rb") as f:
            cbin = f.read()
        cls.d = cls.start_daemon()
        d = cls.d
        d.deploy("cfn", {"bootstrap": File(cbin, 0o755)}, runtime="provided", handler="x",
                 timeout_s=10)
        d.deploy("chttp", {"bootstrap": File(HTTP_BOOT, 0o755), "cfn": File(cbin, 0o755)},
                 runtime="provided", handler="x", timeout_s=10)
        d.deploy("nodefn", NODE, runtime="nodejs", handler="index.handler", timeout_s=10)
        d.deploy("pyfn", PY, runtime="python3", handler="app.handler", timeout_s=20)
        d.deploy("rec", PY, runtime="python3", handler="app.handler", timeout_s=30)
        d.deploy("rec2", PY, runtime="python3", handler="app.handler", timeout_s=30,
                 max_concurrency=2, queue_timeout_ms=300)
        for q in ("deliveries", "inbox", "inbox2", "routed", "qevents"):
            r = d.api("PUT", f"/v1/queues/{q}", {})
            assert r.status in (200, 201), r

    def invoke(self, name, event):
        r = self.d.invoke(name, event)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("x-nimbus-function-error", r.headers, r)
        return r.json()

    def logs(self, name):
        return self.d.logs(name)

    def receive(self, queue, want):
        got = []

        def more():
            r = self.d.api("POST", f"/v1/queues/{queue}/receive", {"max": 10})
            got.extend(r.json()["messages"])
            return len(got) >= want
        self.assertTrue(wait_until(more, timeout=20), got)
        return got

    def test_sync_chain_python_node_c(self):
        out = self.invoke("pyfn", {"mode": "sync", "x": 1})
        py_rid, node = out["py"], out["node"]
        c = node["c"]
        self.assertTrue(c["c"])
        self.assertEqual(c["event"], {"op": "echo", "from": "node"})
        # The runtime's trace header has the chain's Root: the python request id's hex digits.
        hexid = py_rid.replace("-", "")
        self.assertTrue(c["trace_id"].startswith(f"Root=1-{hexid[:8]}-{hexid[8:]};"), c)
        # The trace is in the logs: each callee's START names its caller and the chain's root.
        self.assertTrue(wait_until(lambda: start_lines(self.logs("cfn"), c["request_id"])))
        self.assertEqual(start_lines(self.logs("nodefn"), node["node"]),
                         [f"START RequestId: {node['node']} Version: 1 Caller: {py_rid} "
                          f"Trace: {py_rid}"])
        self.assertEqual(start_lines(self.logs("cfn"), c["request_id"]),
                         [f"START RequestId: {c['request_id']} Version: 1 Caller: {node['node']} "
                          f"Trace: {py_rid}"])
        self.assertEqual(start_lines(self.logs("pyfn"), py_rid),
                         [f"START RequestId: {py_rid} Version: 1"])
        # nimbus logs shows the same lines.
        p = self.d.cli("logs", "cfn")
        self.assertIn(f"Caller: {node['node']} Trace: {py_rid}", p.stdout)

    def test_async_chain_python_node_c(self):
        tag = f"t{time.time_ns()}"
        out = self.invoke("pyfn", {"mode": "async", "tag": tag})
        py_rid, node_rid = out["py"], out["queued"]
        self.assertEqual(len(node_rid), 36, out)
        # node runs from its async queue and queues the C function, which records to a queue.
        msgs = [m for m in self.receive("deliveries", 1) if tag in m["body"]]
        self.assertEqual(len(msgs), 1, msgs)
        body = json.loads(msgs[0]["body"])
        self.assertEqual((body["op"], body["tag"], body["node"]), ("record", tag, node_rid))
        self.assertEqual(msgs[0]["attributes"], {"by": "c"})
        # The async hops keep the chain: node's caller is python, C's is node, one trace.
        node_start = start_lines(self.logs("nodefn"), node_rid)
        self.assertEqual(node_start, [f"START RequestId: {node_rid} Version: 1 Caller: {py_rid} "
                                      f"Trace: {py_rid}"])
        cstarts = [t for t in (r["line"] for r in self.logs("cfn"))
                   if t.startswith("START") and f"Caller: {node_rid} Trace: {py_rid}" in t]
        self.assertEqual(len(cstarts), 1, cstarts)

    def test_node_calls_in_parallel(self):
        out = self.invoke("nodefn", {"mode": "fanout"})
        self.assertEqual(out["results"], [1, 2, 3])

    def test_depth_limit(self):
        t0 = time.monotonic()
        out = self.invoke("rec", {"mode": "rec", "n": 30, "d": 0})
        # Depth 16 runs; its call would run at 17.
        self.assertEqual(out["call_error"], "call_depth_exceeded", out)
        self.assertEqual(out["at"], 16, out)
        self.assertIn("16", out["message"])
        # Within the limit the chain completes.
        self.assertEqual(self.invoke("rec", {"mode": "rec", "n": 5, "d": 0}), {"bottom": 5})
        # A self-recursive chain at max_concurrency 2 cannot wait forever for itself: the
        # third level is throttled once its queue timeout passes.
        out = self.invoke("rec2", {"mode": "rec", "n": 30, "d": 0})
        self.assertEqual((out["call_error"], out["at"]), ("too_many_requests", 1), out)
        self.assertLess(time.monotonic() - t0, 40)
        self.assertEqual(self.invoke("pyfn", {"mode": "echo"}), {"echo": {"mode": "echo"}})

    def test_depth_limit_setting(self):
        d = self.new_daemon(env={"NIMBUS_MAX_CALL_DEPTH": "3"})
        d.start()
        d.deploy("rec", PY, runtime="python3", handler="app.handler", timeout_s=30)
        r = d.invoke("rec", {"mode": "rec", "n": 10, "d": 0})
        self.assertEqual(r.status, 200, r)
        out = r.json()
        self.assertEqual((out["call_error"], out["at"]), ("call_depth_exceeded", 3), out)
        self.assertIn("limit 3", out["message"])
        self.assertIn("--max-call-depth", run_cli("serve", "--help").stdout)

    def test_refusals(self):
        def call(**ev):
            return self.invoke("pyfn", {"mode": "try", **ev})
        for target in ("other/cfn", "arn:aws:lambda:us-east-1:000000000000:function:cfn"):
            out = call(op="invoke", target=target)
            self.assertEqual((out["call_error"], out["status"]), ("forbidden", 403), out)
        out = call(op="invoke", target="nope")
        self.assertEqual((out["call_error"], out["status"]), ("not_found", 404), out)
        out = call(op="invoke", target="cfn", payload={"op": "fail"})
        self.assertEqual(out["function_error"], "CFailure", out)
        out = call(op="publish", target="missing", body="hi")
        self.assertEqual((out["call_error"], out["status"]), ("not_found", 404), out)
        self.assertIn("topic 'missing' not found", out["message"])
        out = call(op="send", target="missing", body="hi")
        self.assertEqual((out["call_error"], out["status"]), ("not_found", 404), out)
        out = call(op="send", target="inbox", body="hi", attributes={"n": 1})
        self.assertEqual((out["call_error"], out["status"]), ("invalid_value", 400), out)
        out = call(op="emit", event={"type": "x.y", "specversion": "0.3"})
        self.assertEqual(out["status"], 400, out)
        out = call(op="emit", event={"type": ""})
        self.assertEqual(out["status"], 400, out)
        # An error message quoting a name cut inside a character (%.64s of "é"s) stays valid
        # JSON: once, such a call aborted the daemon.
        out = call(op="publish", target="missing", body="hi", attributes={"a" + "é" * 40: "v"})
        self.assertEqual((out["call_error"], out["status"]), ("invalid_value", 400), out)
        self.assertEqual(self.d.api("GET", "/healthz").status, 200)
        # Over the channel's frame: refused by the helper, the instance carries on.
        out = call(op="send", target="inbox", big=7 * 1024 * 1024)
        self.assertEqual((out["call_error"], out["status"]), ("payload_too_large", 413), out)

    def test_send_and_emit(self):
        out = self.invoke("pyfn", {"mode": "try", "op": "send", "target": "inbox",
                                   "body": "hello", "attributes": {"k": "v"}})
        mid = out["ok"]
        msgs = self.receive("inbox", 1)
        self.assertEqual([(m["id"], m["body"], m["attributes"]) for m in msgs],
                         [(mid, "hello", {"k": "v"})])
        self.assertIn(self.d.api("POST", "/v1/topics", {"name": "news"}).status, (200, 201))
        out = self.invoke("pyfn", {"mode": "try", "op": "publish", "target": "news",
                                   "body": "hello", "subject": "greeting",
                                   "attributes": {"lang": "en", "n": 3, "tags": ["a", "b"]}})
        self.assertEqual(len(out["ok"]), 36, out)
        out = self.invoke("pyfn", {"mode": "try", "op": "publish", "target": "news",
                                   "body": "hello", "attributes": {"bad": {"x": 1}}})
        self.assertEqual((out["call_error"], out["status"]), ("invalid_value", 400), out)
        out = self.invoke("pyfn", {"mode": "try", "op": "emit",
                                   "event": {"type": "com.example.created", "id": "ev-1",
                                             "data": {"n": 1}}})
        self.assertEqual(out, {"ok": "ev-1"})
        out = self.invoke("pyfn", {"mode": "try", "op": "emit",
                                   "event": {"type": "com.example.created", "data": {"n": 2}}})
        self.assertEqual(len(out["ok"]), 36, out)

    def test_emitted_and_sent_are_routed_by_rules(self):
        d = self.d
        for name, match, target in (
                ("routed", {"type": ["com.example.routed"]}, "queue:routed"),
                ("qevents", {"type": ["nimbus.queue.message"],
                             "source": ["nimbus://default/queues/inbox2"]}, "queue:qevents")):
            r = d.api("POST", "/v1/rules", {"name": name, "match": match, "target": target})
            self.assertEqual(r.status, 201, r)
        out = self.invoke("pyfn", {"mode": "try", "op": "emit",
                                   "event": {"type": "com.example.routed", "data": {"n": 7}}})
        ev = json.loads(self.receive("routed", 1)[0]["body"])
        self.assertEqual((ev["id"], ev["type"], ev["source"], ev["data"]),
                         (out["ok"], "com.example.routed", "nimbus://default/functions/pyfn",
                          {"n": 7}))
        out = self.invoke("pyfn", {"mode": "try", "op": "send", "target": "inbox2",
                                   "body": "from a function", "attributes": {"k": "v"}})
        ev = json.loads(self.receive("qevents", 1)[0]["body"])
        self.assertEqual((ev["type"], ev["id"], ev["data"]["body"], ev["data"]["attributes"]),
                         ("nimbus.queue.message", out["ok"], "from a function", {"k": "v"}))

    def test_loops_through_topics_and_rules_stop_at_the_depth_limit(self):
        """A function subscribed to its own topic, and one whose emitted events a rule routes back
        to it: each round runs one level deeper, and the round at the limit is refused."""
        d = self.d
        loop = {"app.py": File(b"""
import nimbus

def handler(event, context):
    how = context.function_name
    try:
        if how == "topicloop":
            nimbus.publish("loop", "again")
        else:
            nimbus.emit({"type": "com.example.loop", "data": {}})
        nimbus.send("looplog-" + how, "ran")
    except nimbus.CallError as e:
        nimbus.send("looplog-" + how, "stopped:" + e.code)
""")}
        for name in ("topicloop", "eventloop"):
            self.assertIn(d.api("PUT", f"/v1/queues/looplog-{name}", {}).status, (200, 201))
            d.deploy(name, loop, runtime="python3", handler="app.handler", timeout_s=10)
        self.assertEqual(d.api("POST", "/v1/topics", {"name": "loop"}).status, 201)
        r = d.api("POST", "/v1/topics/loop/subscriptions", {"target": "function:topicloop"})
        self.assertEqual(r.status, 201, r)
        r = d.api("POST", "/v1/rules", {"name": "loop", "match": {"type": ["com.example.loop"]},
                                        "target": "function:eventloop"})
        self.assertEqual(r.status, 201, r)
        for name in ("topicloop", "eventloop"):
            self.invoke(name, {})
            # Depth 0 (the invoke) to 15 publish or emit; the one at 16 is refused.
            got = [m["body"] for m in self.receive(f"looplog-{name}", 17)]
            self.assertEqual(got.count("ran"), 16, got)
            self.assertEqual(got[-1], "stopped:call_depth_exceeded", got)
            time.sleep(1)
            r = d.api("POST", f"/v1/queues/looplog-{name}/receive", {"max": 10})
            self.assertEqual(r.json()["messages"], [], "the loop went on")

    def test_provided_runtime_over_http(self):
        out = self.invoke("chttp", {"op": "call", "target": "cfn",
                                    "payload": {"op": "echo"}})
        self.assertEqual((out["rc"], out["status"], out["error_code"]), (0, 200, ""), out)
        self.assertTrue(out["body"]["c"], out)
        out = self.invoke("chttp", {"op": "call", "target": "cfn",
                                    "payload": {"op": "fail"}})
        self.assertEqual((out["rc"], out["status"], out["error_code"]), (1, 200, "Handled"), out)
        self.assertEqual(out["body"]["errorType"], "CFailure", out)
        out = self.invoke("chttp", {"op": "call", "target": "nope", "payload": {}})
        self.assertEqual((out["rc"], out["status"], out["error_code"]), (1, 404, "not_found"),
                         out)
        self.assertEqual(out["body"]["error"]["code"], "not_found", out)


if __name__ == "__main__":
    unittest.main()
