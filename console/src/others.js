// APIs (routes and their usage), queues, topics and schedules.
import { get, enc } from "./api.js";
import { h, clear, table, kv, errorBox, fmtNum, fmtTime, fmtAge, link } from "./dom.js";

// A page that shows one or more tables rebuilt on each refresh.
function page(main, title, build) {
  const status = h("div", { class: "status" });
  const body = h("div");
  clear(main, h("h2", null, ...[].concat(title)), status, body);
  return {
    async refresh() {
      try {
        const nodes = await build();
        clear(body, nodes);
        clear(status);
      } catch (e) {
        if (e.name !== "AbortError") clear(status, errorBox(e));
      }
    },
    dispose() {},
  };
}

export function apiList(main) {
  return page(main, "APIs", async () => {
    const r = await get("/v1/apis");
    return table(
      [
        { label: "name", get: (a) => link(`#/apis/${enc(a.name)}`, a.name, `api-link-${a.name}`) },
        { label: "base path", get: (a) => a.base_path },
        { label: "plan", get: (a) => a.plan || "" },
        { label: "updated", get: (a) => fmtTime(a.updated_at) },
      ],
      r.apis || [],
      { testid: "apis-table", empty: "no APIs" },
    );
  });
}

export function apiDetail(main, name) {
  const base = `/v1/apis/${enc(name)}`;
  return page(main, [h("a", { href: "#/apis" }, "APIs"), " / ", name], async () => {
    const [a, u] = await Promise.all([get(base), get(`${base}/usage?by=route&since=24h`)]);
    const usage = new Map((u.usage || []).map((x) => [x.route, x]));
    const routes = (a.routes || []).map((r) => ({ ...r, key: `${r.method} ${r.path}`, use: usage.get(`${r.method} ${r.path}`) || {} }));
    return [
      kv([
        ["base path", a.base_path],
        ["CORS", a.cors ? (a.cors.origins || []).join(", ") : "off"],
        ["JWT authorizer", a.jwt ? a.jwt.issuer || "on" : "off"],
        ["throttle", a.throttle ? `${a.throttle.rate}/s, burst ${a.throttle.burst}` : "none"],
        ["plan", a.plan],
      ]),
      h("h3", null, "Routes and usage, last 24 hours"),
      table(
        [
          { label: "route", get: (r) => r.key },
          { label: "function", get: (r) => link(`#/functions/${enc(r.function)}`, r.function) },
          { label: "auth", get: (r) => r.auth },
          { label: "requests", get: (r) => fmtNum(r.use.requests || 0), num: true },
          { label: "4xx", get: (r) => fmtNum(r.use.errors_4xx || 0), num: true },
          { label: "5xx", get: (r) => fmtNum(r.use.errors_5xx || 0), num: true },
          { label: "avg ms", get: (r) => fmtNum(r.use.latency_ms_avg, 2), num: true },
          { label: "max ms", get: (r) => fmtNum(r.use.latency_ms_max, 2), num: true },
        ],
        routes,
        { testid: "routes-table", empty: "no routes" },
      ),
    ];
  });
}

export function queueList(main) {
  return page(main, "Queues", async () => {
    const r = await get("/v1/queues");
    return table(
      [
        { label: "name", get: (q) => q.name },
        { label: "depth", get: (q) => fmtNum((q.stats.visible || 0) + (q.stats.delayed || 0)), num: true },
        { label: "in flight", get: (q) => fmtNum(q.stats.in_flight || 0), num: true },
        { label: "delayed", get: (q) => fmtNum(q.stats.delayed || 0), num: true },
        { label: "oldest", get: (q) => fmtAge(q.stats.oldest_ms), num: true },
        { label: "sent", get: (q) => fmtNum(q.stats.sent || 0), num: true },
        { label: "received", get: (q) => fmtNum(q.stats.received || 0), num: true },
        { label: "dead-lettered", get: (q) => fmtNum(q.stats.dead_lettered || 0), num: true },
        { label: "dead letter", get: (q) => q.dead_letter || "" },
      ],
      (r.queues || []).map((q) => ({ ...q, stats: q.stats || {} })),
      { testid: "queues-table", empty: "no queues" },
    );
  });
}

export function topicList(main) {
  return page(main, "Topics", async () => {
    const r = await get("/v1/topics");
    const topics = (r.topics || []).slice(0, 50);
    const subs = await Promise.all(
      topics.map((t) => get(`/v1/topics/${enc(t.name)}/subscriptions`).catch(() => ({ subscriptions: [] }))),
    );
    const rows = [];
    topics.forEach((t, i) => {
      for (const s of subs[i].subscriptions || []) rows.push({ topic: t.name, ...s });
    });
    return [
      table(
        [
          { label: "name", get: (t) => t.name },
          { label: "subscriptions", get: (t) => fmtNum(t.subscriptions || 0), num: true },
          { label: "waiting", get: (t) => fmtNum((t.stats || {}).visible || 0), num: true },
          { label: "in flight", get: (t) => fmtNum((t.stats || {}).in_flight || 0), num: true },
          { label: "oldest", get: (t) => fmtAge((t.stats || {}).oldest_ms), num: true },
          { label: "published", get: (t) => fmtNum((t.stats || {}).sent || 0), num: true },
        ],
        r.topics || [],
        { testid: "topics-table", empty: "no topics" },
      ),
      h("h3", null, "Subscriptions"),
      table(
        [
          { label: "topic", get: (s) => s.topic },
          { label: "target", get: (s) => s.target },
          { label: "filter", get: (s) => (s.filter ? JSON.stringify(s.filter) : "") },
          { label: "raw", get: (s) => (s.raw ? "yes" : "") },
          { label: "created", get: (s) => fmtTime(s.created_at) },
        ],
        rows,
        { testid: "subscriptions-table", empty: "no subscriptions" },
      ),
    ];
  });
}

export function scheduleList(main) {
  return page(main, "Schedules", async () => {
    const r = await get("/v1/schedules");
    return table(
      [
        { label: "name", get: (s) => s.name },
        { label: "expression", get: (s) => h("code", null, s.expression) },
        { label: "time zone", get: (s) => s.timezone },
        { label: "target", get: (s) => (s.function ? link(`#/functions/${enc(s.function)}`, s.function) : s.target || "") },
        { label: "state", get: (s) => s.state },
        { label: "next fire", get: (s) => (s.state === "enabled" ? fmtTime(s.next_fire) : "paused") },
      ],
      r.schedules || [],
      { testid: "schedules-table", empty: "no schedules" },
    );
  });
}
