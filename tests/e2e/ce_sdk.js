// The npm `cloudevents` SDK as a real producer and consumer of nimbus's event bus
// (test_events.py). NODE_PATH points at the node_modules the test installed it into.
//
//   node ce_sdk.js produce URL TOKEN PREFIX
//       emits two events to URL/v1/events with the SDK's emitter over its HTTP transport, one
//       in binary mode and one in structured mode, and prints [{event, status, body}...] as JSON
//   node ce_sdk.js consume
//       reads a JSON array of message bodies (structured-mode JSON, as a rule's queue target
//       holds them) on stdin, turns each into a CloudEvent with HTTP.toEvent (validating it),
//       and prints the events as JSON
"use strict";
const { CloudEvent, HTTP, Mode, emitterFor, httpTransport } = require("cloudevents");

async function produce(url, token, prefix) {
  const transport = httpTransport(url + "/v1/events");
  const auth = { headers: { Authorization: "Bearer " + token } };
  const out = [];
  const modes = [
    [Mode.BINARY, { type: "com.example.order.created", data: { total: 42, items: ["a", "b"] } }],
    [Mode.STRUCTURED, { type: "com.example.order.shipped", subject: "order-7", data: { ok: true } }],
  ];
  for (const [mode, attrs] of modes) {
    const ce = new CloudEvent({ source: prefix + mode, partitionkey: "p1", ...attrs });
    const emit = emitterFor(transport, { mode });
    const resp = await emit(ce, auth);
    out.push({ event: ce.toJSON(), mode, body: resp.body });
  }
  // A message built by the SDK's binding, sent by hand: the headers it sets are what other
  // producers send too.
  const ce = new CloudEvent({ source: prefix + "manual", type: "com.example.manual",
                              datacontenttype: "text/plain", data: "plain" });
  const msg = HTTP.binary(ce);
  const resp = await transport(msg, auth);
  out.push({ event: ce.toJSON(), mode: "binary-manual", body: resp.body });
  process.stdout.write(JSON.stringify(out));
}

async function consume() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const bodies = JSON.parse(input);
  const events = bodies.map((body) => {
    const ev = HTTP.toEvent({ headers: { "content-type": "application/cloudevents+json" }, body });
    ev.validate(); // throws on an invalid event
    // The constructor over the parsed JSON: the other way a consumer reads one.
    const again = new CloudEvent(JSON.parse(body));
    if (again.id !== ev.id) throw new Error("the two readings differ");
    return ev.toJSON();
  });
  process.stdout.write(JSON.stringify(events));
}

const [cmd, ...args] = process.argv.slice(2);
(cmd === "produce" ? produce(...args) : consume()).catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
