// Time-series charts on uPlot: one chart per metric group, resized with its container.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#d97706", "#059669", "#7c3aed"];

// A chart card. series: [{label, key}] keys into the /v1/metrics/series answer.
export function chart(title, testid, series, { unit = "", windowS = 900 } = {}) {
  const box = h("div", { class: "chart-box" });
  const card = h("section", { class: "card chart", testid }, h("h3", null, title), box);
  let plot = null;
  let observer = null;

  function width() {
    return Math.max(200, box.clientWidth || card.clientWidth - 24 || 300);
  }

  function opts() {
    return {
      width: width(),
      height: 170,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      // The whole window even while the daemon has less history: the line grows from the right.
      scales: {
        x: { time: true, range: (u, min, max) => [max - windowS, max] },
        y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] },
      },
      axes: [{}, { size: 48, values: (u, vals) => vals.map((v) => v + unit) }],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 2,
          // Durations exist only in steps with invocations: joined across the quiet ones.
          spanGaps: !!s.spanGaps,
        })),
      ],
    };
  }

  return {
    el: card,
    // data: the /v1/metrics/series answer.
    update(data) {
      const cols = [data.t, ...series.map((s) => data[s.key])];
      let points = 0;
      let sum = 0;
      for (const s of series)
        for (const v of data[s.key]) {
          if (v !== null) {
            points++;
            sum += v;
          }
        }
      card.dataset.steps = String(data.t.length);
      card.dataset.points = String(points);
      card.dataset.sum = String(sum);
      if (!plot) {
        if (!card.isConnected) return;
        plot = new uPlot(opts(), cols, box);
        observer = new ResizeObserver(() => {
          if (plot) plot.setSize({ width: width(), height: 170 });
        });
        observer.observe(box);
      } else {
        plot.setData(cols);
      }
    },
    dispose() {
      if (observer) observer.disconnect();
      if (plot) plot.destroy();
      plot = null;
    },
  };
}
