// The nimbus web console: a login page, then a hash router over views that each refresh
// themselves from the admin API every 2 s while on screen and the tab is visible.
import "./app.css";
import { get, token, setToken, setUnauthorizedHandler } from "./api.js";
import { h, clear } from "./dom.js";
import { dashboard } from "./dashboard.js";
import { functionList, functionDetail } from "./functions.js";
import { apiList, apiDetail, queueList, topicList, scheduleList } from "./others.js";

const POLL_MS = 2000;
const root = document.getElementById("root");

const NAV = [
  ["#/", "Dashboard", "nav-dashboard"],
  ["#/functions", "Functions", "nav-functions"],
  ["#/apis", "APIs", "nav-apis"],
  ["#/queues", "Queues", "nav-queues"],
  ["#/topics", "Topics", "nav-topics"],
  ["#/schedules", "Schedules", "nav-schedules"],
];

function route(hash) {
  const path = (hash || "#/").replace(/^#/, "") || "/";
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    return null; // a malformed %-escape: no such page
  }
  if (parts.length === 0) return { key: "#/", make: dashboard };
  const [top, name] = parts;
  if (top === "functions") return name ? { key: "#/functions", make: (m) => functionDetail(m, name) } : { key: "#/functions", make: functionList };
  if (top === "apis") return name ? { key: "#/apis", make: (m) => apiDetail(m, name) } : { key: "#/apis", make: apiList };
  if (top === "queues") return { key: "#/queues", make: queueList };
  if (top === "topics") return { key: "#/topics", make: topicList };
  if (top === "schedules") return { key: "#/schedules", make: scheduleList };
  return null;
}

// ---------- login ----------

function showLogin(message) {
  stop();
  const input = h("input", {
    type: "password",
    id: "token",
    autocomplete: "current-password",
    testid: "login-token",
    placeholder: "admin token",
    required: true,
  });
  const err = h("div", { class: "error", role: "alert", testid: "login-error", hidden: !message }, message || "");
  const btn = h("button", { type: "submit", testid: "login-submit" }, "Log in");
  const form = h(
    "form",
    { class: "login card", testid: "login-form" },
    h("h1", null, "nimbus"),
    h("label", { for: "token" }, "Admin token"),
    input,
    h("p", { class: "hint" }, "The contents of DATA/admin.token. Kept for this tab only."),
    btn,
    err,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    btn.disabled = true;
    err.hidden = true;
    const t = input.value.trim();
    try {
      await get("/v1/functions", { tok: t });
      setToken(t);
      if (!location.hash || location.hash === "#/login") location.hash = "#/";
      showApp();
    } catch (e) {
      err.textContent = e.status === 401 ? "That token is not the admin token." : `${e.code || "error"}: ${e.message}`;
      err.hidden = false;
    } finally {
      btn.disabled = false;
    }
  });
  clear(root, h("main", { class: "login-page" }, form));
  input.focus();
}

setUnauthorizedHandler(() => {
  setToken(null);
  showLogin("The session ended (the admin token was refused). Log in again.");
});

// ---------- the app ----------

let view = null;
let timer = null;
let main = null;
let nav = null;

function stop() {
  if (timer) clearTimeout(timer);
  timer = null;
  if (view) view.dispose();
  view = null;
  main = null;
}

function schedule() {
  if (timer) clearTimeout(timer);
  timer = null;
  if (!view || document.hidden) return;
  timer = setTimeout(tick, POLL_MS);
}

let refreshing = null; // the view whose refresh is running: never two at once

async function tick() {
  const v = view;
  if (!v || refreshing === v) return;
  refreshing = v;
  try {
    await v.refresh();
  } finally {
    if (refreshing === v) refreshing = null;
  }
  if (v === view) schedule();
}

function showApp() {
  if (!main) {
    const toggle = h("button", { class: "menu", type: "button", "aria-expanded": "false", testid: "nav-toggle" }, "Menu");
    nav = h(
      "nav",
      { testid: "nav" },
      NAV.map(([href, label, id]) => h("a", { href, testid: id }, label)),
    );
    toggle.addEventListener("click", () => {
      const open = document.body.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", String(open));
    });
    nav.addEventListener("click", (ev) => {
      if (ev.target.closest("a")) document.body.classList.remove("nav-open");
    });
    const logout = h("button", { type: "button", class: "logout", testid: "logout" }, "Log out");
    logout.addEventListener("click", () => {
      setToken(null);
      showLogin("");
    });
    main = h("main", { id: "main" });
    clear(
      root,
      h("div", { class: "layout" },
        h("header", { class: "side" }, h("div", { class: "brand" }, h("a", { href: "#/" }, "nimbus"), toggle), nav, logout),
        main),
    );
  }
  render();
}

function render() {
  if (timer) clearTimeout(timer);
  timer = null;
  if (view) view.dispose();
  view = null;
  const r = route(location.hash);
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", r && a.getAttribute("href") === r.key);
  if (!r) {
    clear(main, h("h2", null, "Not found"), h("p", null, "No such page. ", h("a", { href: "#/" }, "Back to the dashboard")));
    return;
  }
  view = r.make(main);
  tick();
}

window.addEventListener("hashchange", () => {
  if (!token()) return showLogin("");
  if (location.hash === "#/login") return showLogin("");
  if (!main) return showApp();
  render();
});

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    if (timer) clearTimeout(timer);
    timer = null;
  } else if (view) {
    tick();
  }
});

if (token()) showApp();
else showLogin("");
