// Drives the web console in Debian's headless Chromium with playwright-core, for
// test_console.py. Input from the environment: CONSOLE_URL (http://host:port), CONSOLE_TOKEN,
// CONSOLE_NODE_MODULES (where playwright-core is), CONSOLE_FN (a deployed function that prints
// CONSOLE_MARKER and the event), CONSOLE_OUT (the screenshots' directory), CHROMIUM. Prints one
// JSON line of results and exits 0, or prints the failed step and exits 1. Every wait is on a
// condition, with a deadline.
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { createRequire } from "node:module";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_ = env("CONSOLE_URL");
const TOKEN = env("CONSOLE_TOKEN");
const FN = env("CONSOLE_FN");
const MARKER = env("CONSOLE_MARKER");
const OUT = env("CONSOLE_OUT");
const T = 15000;
// The pinned playwright-core lives in the build dir's npm cache, not next to this script.
const { chromium } = createRequire(path.join(env("CONSOLE_NODE_MODULES"), "_"))("playwright-core");

const results = { screenshots: [], steps: [] };
let step = "start";
const pageErrors = [];

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function shot(page, name) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file, fullPage: true });
  results.screenshots.push(file);
}

async function noHorizontalOverflow(page, where) {
  const m = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  check(m.scroll <= m.inner, `${where}: the page is ${m.scroll}px wide in a ${m.inner}px window`);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "nimbus-chromium-"));
// Without the background-networking flags Chromium keeps calling out to Google's services,
// which on a closed network means a flood of failing connections.
// A fresh profile each run (playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(T);
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 401/.test(m.text())) pageErrors.push(m.text());
  });

  step = "open the console";
  await page.goto(`${URL_}/console/`);
  await page.getByTestId("login-token").waitFor();

  step = "a wrong token is refused";
  await page.getByTestId("login-token").fill("not-the-token");
  await page.getByTestId("login-submit").click();
  await page.getByTestId("login-error").waitFor({ state: "visible" });
  const loginErr = await page.getByTestId("login-error").textContent();
  check(/not the admin token/i.test(loginErr), `login error says why: ${loginErr}`);
  check(await page.getByTestId("dashboard").count() === 0, "no dashboard with a wrong token");

  step = "log in";
  await page.getByTestId("login-token").fill(TOKEN);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("dashboard").waitFor();

  step = "the dashboard's chart has the invocations";
  // Two 5-second steps of history, then the line itself in the canvas (uPlot draws on the
  // next frame), counted by the invocations series' colour, #2563eb.
  const pixels = await (
    await page.waitForFunction(() => {
      const c = document.querySelector('[data-testid="chart-invocations"]');
      const canvas = c && c.querySelector("canvas");
      if (!canvas || Number(c.dataset.sum) <= 0 || Number(c.dataset.steps) < 2) return false;
      const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let drawn = 0;
      let series = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 0) drawn++;
        if (d[i + 3] > 200 && Math.abs(d[i] - 37) < 30 && Math.abs(d[i + 1] - 99) < 30 && Math.abs(d[i + 2] - 235) < 30)
          series++;
      }
      return drawn > 500 && series > 20 && { drawn, series, w: canvas.width, h: canvas.height };
    }, null, { timeout: 30000, polling: 250 })
  ).jsonValue();
  results.chart = pixels;
  await page.getByTestId("usage-table").locator("tbody tr").first().waitFor();
  await shot(page, "dashboard-1280x800.png");

  step = "open the function from the list";
  await page.getByTestId("nav-functions").click();
  await page.getByTestId(`fn-link-${FN}`).click();
  await page.getByTestId("fn-name").filter({ hasText: FN }).waitFor();
  await page.getByTestId("instances").locator("dt").first().waitFor();

  step = "invoke it with a payload";
  const nonce = `n${Date.now()}`;
  await page.getByTestId("invoke-payload").fill(JSON.stringify({ probe: nonce }));
  await page.getByTestId("invoke-submit").click();
  await page.getByTestId("invoke-status").waitFor();
  const status = await page.getByTestId("invoke-status").textContent();
  check(status.startsWith("200"), `invoke status: ${status}`);
  const body = await page.getByTestId("invoke-result").textContent();
  check(body.includes(nonce), `the result echoes the payload: ${body}`);
  const hdrText = await page.getByTestId("invoke-headers").textContent();
  const rid = (hdrText.match(/x-nimbus-request-id([0-9a-f-]{36})/) || [])[1];
  check(rid, `the request id header is shown: ${hdrText}`);
  results.request_id = rid;

  step = "the invocation appears in recent invocations";
  await page.locator(`[data-testid="recent-invocations"] tr[data-request-id="${rid}"]`).waitFor({ timeout: T });

  step = "its log line appears in the live tail";
  await page
    .getByTestId("log-tail")
    .locator("li", { hasText: `${MARKER}` })
    .filter({ hasText: nonce })
    .waitFor({ timeout: T });
  await shot(page, "function-1280x800.png");

  step = "a phone's width";
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300); // one layout pass and the charts' resize observers
  await noHorizontalOverflow(page, "function page at 390px");
  check(!(await page.getByTestId("nav-dashboard").isVisible()), "the menu is folded on a phone");
  await shot(page, "function-390x844.png");
  await page.getByTestId("nav-toggle").click();
  await page.getByTestId("nav-dashboard").waitFor({ state: "visible" });
  await page.getByTestId("nav-dashboard").click();
  await page.getByTestId("dashboard").waitFor();
  check(!(await page.getByTestId("nav-dashboard").isVisible()), "the menu folds after a choice");
  await page.waitForFunction(() => {
    const c = document.querySelector('[data-testid="chart-invocations"]');
    return c && c.querySelector("canvas") && Number(c.dataset.points) > 0;
  });
  await page.waitForTimeout(300);
  await noHorizontalOverflow(page, "dashboard at 390px");
  const canvasW = await page.evaluate(() => document.querySelector('[data-testid="chart-invocations"] canvas').getBoundingClientRect().width);
  check(canvasW <= 390, `the chart fits the phone (${canvasW}px)`);
  await shot(page, "dashboard-390x844.png");

  step = "the other pages render";
  for (const [nav, table] of [["nav-apis", "apis-table"], ["nav-queues", "queues-table"], ["nav-topics", "topics-table"], ["nav-schedules", "schedules-table"]]) {
    await page.getByTestId("nav-toggle").click();
    await page.getByTestId(nav).click();
    await page.getByTestId(table).waitFor();
    await noHorizontalOverflow(page, `${nav} at 390px`);
  }

  step = "a refused token sends back to the login page";
  await page.evaluate(() => sessionStorage.setItem("nimbus.token", "stale"));
  await page.reload();
  await page.getByTestId("login-error").waitFor({ state: "visible" });

  step = "log out";
  await page.getByTestId("login-token").fill(TOKEN);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("logout").waitFor();
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.getByTestId("logout").click();
  await page.getByTestId("login-form").waitFor();
  check((await page.evaluate(() => sessionStorage.getItem("nimbus.token"))) === null, "the token is forgotten");

  step = "no script errors";
  check(pageErrors.length === 0, `page errors: ${pageErrors.join(" | ")}`);
  console.log(JSON.stringify(results));
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  console.error(`console_drive: step "${step}" failed: ${e.message}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join(" | ")}`);
  try {
    const pages = context.pages();
    if (pages.length) {
      const file = path.join(OUT, "failure.png");
      await pages[0].screenshot({ path: file, fullPage: true });
      console.error(`screenshot of the failure: ${file}`);
    }
  } catch {
    // the browser itself may be what failed
  }
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
