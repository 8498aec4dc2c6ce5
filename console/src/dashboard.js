// The dashboard: the daemon's rates, durations, cold starts and concurrency over the last
// 15 minutes (GET /v1/metrics/series), and usage and cost per function over 24 hours.
import { get } from "./api.js";
import { chart } from "./charts.js";
import { h, clear, table, errorBox, fmtNum, link } from "./dom.js";

export function dashboard(main) {
  const charts = [
    chart("Invocations / s", "chart-invocations", [
      { label: "invocations", key: "invocations" },
      { label: "errors", key: "errors" },
      { label: "throttles", key: "throttles" },
    ]),
    chart("Duration (ms)", "chart-duration", [
      { label: "p50", key: "p50_ms", spanGaps: true },
      { label: "p99", key: "p99_ms", spanGaps: true },
    ]),
    chart("Cold starts / s", "chart-cold", [{ label: "cold starts", key: "cold_starts" }]),
    chart("Concurrency", "chart-concurrency", [{ label: "in flight", key: "concurrency" }]),
  ];
  const status = h("div", { class: "status" });
  const usage = h("div", { testid: "usage" });
  clear(
    main,
    h("h2", null, "Dashboard"),
    status,
    h("p", { class: "hint" }, "Last 15 minutes, every function of the daemon."),
    h("div", { class: "charts", testid: "dashboard" }, charts.map((c) => c.el)),
    h("h3", null, "Usage and cost per function, last 24 hours"),
    usage,
  );

  async function refresh() {
    try {
      const series = await get("/v1/metrics/series?seconds=900");
      for (const c of charts) c.update(series);
      const u = await get("/v1/usage?since=24h&by=function");
      clear(
        usage,
        table(
          [
            { label: "function", get: (r) => (r.total ? "total" : link(`#/functions/${encodeURIComponent(r.function)}`, r.function)) },
            { label: "requests", get: (r) => fmtNum(r.requests), num: true },
            { label: "errors", get: (r) => fmtNum(r.errors), num: true },
            { label: "throttles", get: (r) => fmtNum(r.throttles), num: true },
            { label: "cold starts", get: (r) => fmtNum(r.cold_starts), num: true },
            { label: "billed ms", get: (r) => fmtNum(r.billed_ms), num: true },
            { label: "GB-s", get: (r) => fmtNum(r.gb_seconds, 4), num: true },
            { label: "CPU ms", get: (r) => fmtNum(r.cpu_ms), num: true },
            { label: "cost (USD)", get: (r) => fmtNum(r.cost_usd, 6), num: true },
          ],
          u.usage || [],
          { testid: "usage-table", empty: "no usage yet" },
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
      for (const c of charts) c.dispose();
    },
  };
}
