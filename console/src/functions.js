// Functions: the list with instances by state, and one function's page: its configuration,
// versions, instances, recent invocations, a live log tail and an invoke form.
import { get, stream, enc, token, unauthorized } from "./api.js";
import { h, clear, table, kv, errorBox, fmtNum, fmtTime, link } from "./dom.js";

function instances(st) {
  const i = (st && st.instances) || {};
  return `${i.starting || 0} starting · ${i.idle || 0} idle · ${i.busy || 0} busy · ${i.draining || 0} draining`;
}

export function functionList(main) {
  const body = h("div");
  const status = h("div", { class: "status" });
  clear(main, h("h2", null, "Functions"), status, body);
  return {
    async refresh() {
      try {
        const r = await get("/v1/functions");
        clear(
          body,
          table(
            [
              { label: "name", get: (f) => link(`#/functions/${enc(f.name)}`, f.name, `fn-link-${f.name}`) },
              { label: "runtime", get: (f) => f.runtime },
              { label: "version", get: (f) => f.version, num: true },
              { label: "memory MB", get: (f) => f.memory_mb, num: true },
              { label: "instances", get: (f) => instances(f.stats) },
              { label: "in flight", get: (f) => fmtNum(f.stats ? f.stats.in_flight : 0), num: true },
              { label: "invocations", get: (f) => fmtNum(f.stats ? f.stats.invocations : 0), num: true },
            ],
            r.functions || [],
            { testid: "functions-table", empty: "no functions deployed" },
          ),
        );
        clear(status);
      } catch (e) {
        if (e.name !== "AbortError") clear(status, errorBox(e));
      }
    },
    dispose() {},
  };
}

const MAX_LOG_LINES = 500;

export function functionDetail(main, name) {
  const base = `/v1/functions/${enc(name)}`;
  const status = h("div", { class: "status" });
  const config = h("div");
  const inst = h("div", { testid: "instances" });
  const versions = h("div");
  const recent = h("div");
  const logs = h("ol", { class: "logs", testid: "log-tail" });
  const payload = h("textarea", { testid: "invoke-payload", rows: 5, spellcheck: "false", "aria-label": "payload" }, "{}");
  const invokeOut = h("div", { testid: "invoke-output" });
  const invokeBtn = h("button", { type: "submit", testid: "invoke-submit" }, "Invoke");
  const form = h("form", { class: "invoke", onsubmit: (ev) => (ev.preventDefault(), invoke()) }, payload, invokeBtn);
  clear(
    main,
    h("h2", null, h("a", { href: "#/functions" }, "Functions"), " / ", h("span", { testid: "fn-name" }, name)),
    status,
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h3", null, "Configuration"), config),
      h("section", { class: "card" }, h("h3", null, "Instances"), inst,
        h("h3", null, "Invoke"), form, invokeOut)),
    h("section", { class: "card" }, h("h3", null, "Recent invocations"), recent),
    h("section", { class: "card" }, h("h3", null, "Live log"), logs),
    h("section", { class: "card" }, h("h3", null, "Versions"), versions),
  );

  async function invoke() {
    invokeBtn.disabled = true;
    clear(invokeOut, h("p", { class: "hint" }, "invoking…"));
    try {
      const res = await fetch(`${base}/invoke`, {
        method: "POST",
        headers: { Authorization: "Bearer " + (token() || "") },
        body: payload.value,
      });
      const text = await res.text();
      const hdrs = [];
      res.headers.forEach((v, k) => {
        if (k.startsWith("x-nimbus-") || k === "retry-after") hdrs.push([k, v]);
      });
      hdrs.sort();
      let shown = text;
      try {
        shown = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // not JSON: shown as it came
      }
      const failed = !res.ok || res.headers.get("x-nimbus-function-error");
      clear(
        invokeOut,
        h("p", { testid: "invoke-status", class: failed ? "bad" : "good" }, `${res.status} ${res.statusText}`),
        kv(hdrs, "invoke-headers"),
        h("pre", { testid: "invoke-result" }, shown),
      );
      if (res.status === 401) unauthorized();
    } catch (e) {
      clear(invokeOut, errorBox(e));
    } finally {
      invokeBtn.disabled = false;
    }
  }

  // The log tail: follow=1 read as a stream; reconnects after the server ends it.
  const ctl = new AbortController();
  let lastTs = 0;
  function addLine(r) {
    lastTs = Math.max(lastTs, r.ts || 0);
    const li = h(
      "li",
      { class: "log-" + (r.stream || "stdout"), "data-request-id": r.request_id || "" },
      h("span", { class: "ts" }, fmtTime(r.ts)),
      " ",
      h("span", { class: "line" }, r.line),
    );
    logs.append(li);
    while (logs.childElementCount > MAX_LOG_LINES) logs.firstElementChild.remove();
    logs.scrollTop = logs.scrollHeight;
  }
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const q = lastTs ? `since=${lastTs + 1}` : "limit=100";
        await stream(`${base}/logs?follow=1&${q}`, addLine, ctl.signal);
      } catch (e) {
        if (e.name === "AbortError") return;
        if (e.status === 401 || e.status === 404) return;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();

  async function refresh() {
    try {
      const [f, v, inv] = await Promise.all([
        get(base),
        get(`${base}/versions`),
        get(`${base}/invocations?limit=20`),
      ]);
      clear(
        config,
        kv([
          ["runtime", f.runtime],
          ["handler", f.handler],
          ["version", String(f.version)],
          ["memory", `${f.memory_mb} MB`],
          ["timeout", `${f.timeout_s} s`],
          ["network", f.network],
          ["max concurrency", f.max_concurrency === null ? "unreserved" : String(f.max_concurrency)],
          ["min instances", String(f.min_instances)],
          ["idle timeout", f.idle_timeout_s === null ? "default" : `${f.idle_timeout_s} s`],
          ["service", f.service],
          ["environment", Object.keys(f.environment || {}).join(", ")],
          ["code sha256", f.code_sha256],
          ["updated", fmtTime(f.updated_at)],
        ]),
      );
      const st = f.stats || {};
      const i = st.instances || {};
      clear(
        inst,
        kv([
          ["starting", String(i.starting || 0)],
          ["idle", String(i.idle || 0)],
          ["busy", String(i.busy || 0)],
          ["draining", String(i.draining || 0)],
          ["in flight", String(st.in_flight || 0)],
          ["queued", String(st.queued || 0)],
          ["invocations", fmtNum(st.invocations || 0)],
          ["cold starts", fmtNum(st.cold_starts || 0)],
          ["throttles", fmtNum(st.throttles || 0)],
        ]),
      );
      clear(
        versions,
        table(
          [
            { label: "version", get: (x) => x.version, num: true },
            { label: "created", get: (x) => fmtTime(x.created_at) },
            { label: "runtime", get: (x) => x.runtime },
            { label: "handler", get: (x) => x.handler },
            { label: "memory MB", get: (x) => x.memory_mb, num: true },
            { label: "code", get: (x) => (x.code_sha256 || "").slice(0, 12) },
          ],
          (v.versions || []).slice().reverse(),
          { testid: "versions-table" },
        ),
      );
      clear(
        recent,
        table(
          [
            { label: "started", get: (x) => fmtTime(x.start_ms) },
            { label: "request id", get: (x) => h("code", null, x.request_id) },
            { label: "outcome", get: (x) => (x.error_type ? `${x.outcome} (${x.error_type})` : x.outcome) },
            { label: "trigger", get: (x) => x.trigger + (x.caller ? ` (${x.caller})` : "") },
            { label: "duration ms", get: (x) => fmtNum(x.duration_ms, 3), num: true },
            { label: "billed ms", get: (x) => fmtNum(x.billed_ms), num: true },
            { label: "cold", get: (x) => (x.cold ? `yes, init ${fmtNum(x.init_ms, 1)} ms` : "") },
            { label: "version", get: (x) => x.version, num: true },
          ],
          inv.invocations || [],
          {
            testid: "recent-invocations",
            empty: "no invocations yet",
            rowAttrs: (x) => ({ "data-request-id": x.request_id }),
          },
        ),
      );
      clear(status);
    } catch (e) {
      if (e.name !== "AbortError") clear(status, errorBox(e));
    }
  }

  return {
    refresh,
    dispose() {
      ctl.abort();
    },
  };
}
