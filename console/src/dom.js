// DOM helpers that only ever set text (textContent, attributes), never HTML: everything shown
// comes from the API and may hold anything.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A table in a horizontally scrolling box. cols: [{label, get(row) -> text or Node, num}].
export function table(cols, rows, { testid, empty = "none", rowAttrs } = {}) {
  const head = h("tr", null, cols.map((c) => h("th", { class: c.num ? "num" : null }, c.label)));
  const body = rows.length
    ? rows.map((r) =>
        h(
          "tr",
          rowAttrs ? rowAttrs(r) : null,
          cols.map((c) => h("td", { class: c.num ? "num" : null }, c.get(r))),
        ),
      )
    : [h("tr", null, h("td", { colspan: cols.length, class: "empty" }, empty))];
  return h("div", { class: "table-wrap", testid }, h("table", null, h("thead", null, head), h("tbody", null, body)));
}

// Key/value pairs as a definition list.
export function kv(pairs, testid) {
  return h(
    "dl",
    { class: "kv", testid },
    pairs.map(([k, v]) => [h("dt", null, k), h("dd", null, v === null || v === undefined || v === "" ? "—" : v)]),
  );
}

export function link(href, text, testid) {
  return h("a", { href, testid }, text);
}

export function errorBox(e) {
  const msg = e && e.code ? `${e.code}: ${e.message}` : String(e && e.message ? e.message : e);
  return h("div", { class: "error", role: "alert", testid: "error" }, msg);
}

export function fmtNum(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function fmtTime(v) {
  if (v === null || v === undefined || v === "") return "—";
  const d = typeof v === "number" ? new Date(v) : new Date(String(v));
  if (Number.isNaN(d.getTime())) return String(v);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtAge(ms) {
  if (!ms) return "—";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
