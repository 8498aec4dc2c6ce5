"""The web console end to end: its static files over plain HTTP (no token, ETag and 304, the
security headers, 404 for an unknown file, the /console redirect, API data still behind the
token), the two routes it reads (GET /v1/metrics/series, GET /v1/functions/{name}/invocations),
and the console itself in Debian's headless Chromium driven by playwright-core (pinned in
package.json, installed once into $NIMBUS_BUILD/npm-cache): log in, the dashboard's chart drawn,
a function opened and invoked from the form, its invocation and log line appearing live, a
phone's width; screenshots go to $NIMBUS_BUILD/test-output/console/.
Run: cd tests/e2e && python3 -m unittest -v test_console
"""
import json
import os
import shutil
import socket
import subprocess
import time
import unittest

from nimbus_harness import (BUILD, HERE, SRC, NimbusTestCase, http_request, npm_cache_install,
                            wait_until)

NPM = shutil.which("npm")
NODE = shutil.which("node") or "/usr/bin/node"
CHROMIUM = "/usr/bin/chromium"
CACHE = os.path.join(BUILD, "npm-cache")
OUT = os.path.join(BUILD, "test-output", "console")
DRIVER = os.path.join(HERE, "console_drive.mjs")
MARKER = "console-e2e-marker"
FN_PY = {"app.py": ("def handler(event, context):\n"
                    f"    print('{MARKER}', event)\n"
                    "    return {'echo': event}\n")}


def pinned():
    with open(os.path.join(HERE, "package.json")) as f:
        return json.load(f)["devDependencies"]["playwright-core"]


def find_playwright():
    """node_modules holding the pinned playwright-core: this build dir's cache or a sibling's."""
    for cache in [CACHE] + [os.path.join(SRC, d, "npm-cache") for d in ("build", "build-asan")]:
        try:
            with open(os.path.join(cache, "node_modules", "playwright-core", "package.json")) as f:
                if json.load(f)["version"] == pinned():
                    return os.path.join(cache, "node_modules")
        except (OSError, ValueError, KeyError):
            pass
    return None


def install_playwright():
    """(node_modules path, None) or (None, why not); once per build dir, under the cache's lock
    (test_events.py and test_ric.py install into the same cache)."""
    return npm_cache_install(f"playwright-core@{pinned()}", find_playwright)


class Console(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = d = cls.start_daemon()
        d.deploy("console-fn", FN_PY, "python3", "app.handler")

    def get(self, path, headers=None):
        return http_request(self.d.host, self.d.port, "GET", path, headers=headers)

    # ---------- the static files over plain HTTP ----------

    def test_static_files(self):
        r = self.get("/console")
        self.assertEqual(r.status, 301, r)
        self.assertEqual(r.headers["location"], "/console/")

        r = self.get("/console/")  # no token
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/html"), r.headers)
        self.assertIn(b'<script type="module" src="app.js">', r.body)
        csp = r.headers["content-security-policy"]
        self.assertIn("default-src 'self'", csp)
        self.assertNotIn("script-src", csp)  # scripts: 'self' only, nothing inline
        self.assertEqual(r.headers["x-content-type-options"], "nosniff")
        self.assertEqual(r.headers["x-frame-options"], "DENY")
        self.assertEqual(r.headers["cache-control"], "no-cache")

        for name, ctype in (("app.js", "text/javascript"), ("app.css", "text/css")):
            r = self.get(f"/console/{name}?v=1")  # a query string names the same file
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.headers["content-type"].startswith(ctype), r.headers)
            self.assertGreater(len(r.body), 1000, name)
            etag = r.headers["etag"]
            self.assertRegex(etag, r'^"[0-9a-f]{24}"$')
            r2 = self.get(f"/console/{name}", {"If-None-Match": etag})
            self.assertEqual(r2.status, 304, r2)
            self.assertEqual(r2.body, b"")
            self.assertEqual(r2.headers["etag"], etag)
            r3 = self.get(f"/console/{name}", {"If-None-Match": '"something-else"'})
            self.assertEqual(r3.status, 200, r3)
            r4 = self.get(f"/console/{name}", {"If-None-Match": f'"x", W/{etag}'})
            self.assertEqual(r4.status, 304, r4)
            r5 = self.get(f"/console/{name}", {"If-None-Match": etag[:-1] + 'x"'})
            self.assertEqual(r5.status, 200, r5)
        self.assertIn(b"uplot", self.get("/console/app.css").body.lower())

        # HEAD: the GET's headers and no body, so a request pipelined behind it is read right.
        size = len(self.get("/console/app.js").body)
        with socket.create_connection((self.d.host, self.d.port), timeout=10) as sock:
            sock.sendall(b"HEAD /console/app.js HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, rest = raw.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertIn(f"content-length: {size}".encode(), head.lower())
        self.assertTrue(rest.startswith(b"HTTP/1.1 200"), rest[:200])
        self.assertTrue(rest.endswith(b'{"status":"ok"}\n'), rest[-200:])

        for path in ("/console/nope.js", "/console/app.js/x", "/console//app.js",
                     "/console/%2e%2e/admin.token", "/console/.%2e/x"):
            r = self.get(path)
            self.assertEqual(r.status, 404, (path, r))
            self.assertIn("error", r.json(), path)
        r = http_request(self.d.host, self.d.port, "POST", "/console/app.js", body=b"x")
        self.assertEqual(r.status, 405, r)

        # The data still needs the token.
        self.assertEqual(self.d.api("GET", "/v1/functions", token=False).status, 401)
        self.assertEqual(self.d.api("GET", "/v1/metrics/series", token=False).status, 401)
        self.assertEqual(
            self.d.api("GET", "/v1/functions/console-fn/invocations", token=False).status, 401)

    # ---------- the routes the console reads ----------

    def test_series(self):
        for _ in range(3):
            self.assertEqual(self.d.invoke("console-fn", {"x": 1}).status, 200)

        def seen():
            s = self.d.api("GET", "/v1/metrics/series?seconds=60").json()
            return s if sum(v for v in s["invocations"] if v) >= 3 else None
        s = wait_until(seen, timeout=10, interval=0.2)
        self.assertIsNotNone(s, "the invocations never showed in the series")
        self.assertEqual(s["step_s"], 1)
        keys = ("t", "invocations", "errors", "throttles", "cold_starts", "concurrency", "p50_ms",
                "p99_ms")
        for k in keys:
            self.assertEqual(len(s[k]), len(s["t"]), k)
        self.assertLessEqual(len(s["t"]), 60)
        self.assertEqual(s["t"], sorted(s["t"]))
        self.assertLessEqual(abs(s["t"][-1] - time.time()), 5)
        # Rates per second; p50 <= p99 wherever there were invocations, null elsewhere.
        for inv, p50, p99 in zip(s["invocations"], s["p50_ms"], s["p99_ms"]):
            if inv:
                self.assertIsNotNone(p50)
                self.assertLessEqual(p50, p99)
                self.assertLess(p99, 60000)
            else:
                self.assertIsNone(p50)
        s = self.d.api("GET", "/v1/metrics/series").json()
        self.assertEqual(s["step_s"], 5)
        self.assertTrue(all(t % 5 == 0 for t in s["t"]), s["t"])
        self.assertLessEqual(len(s["t"]), 180)
        for bad in ("0", "901", "x"):
            r = self.d.api("GET", f"/v1/metrics/series?seconds={bad}")
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["code"], "invalid_value")

    def test_invocations(self):
        ids = []
        for i in range(3):
            r = self.d.invoke("console-fn", {"n": i})
            self.assertEqual(r.status, 200, r)
            ids.append(r.headers["x-nimbus-request-id"])

        def listed():
            got = self.d.api("GET", "/v1/functions/console-fn/invocations?limit=500").json()
            rids = [x["request_id"] for x in got["invocations"]]
            return got if all(i in rids for i in ids) else None
        got = wait_until(listed, timeout=10, interval=0.2)
        self.assertIsNotNone(got, "the invocations' records never showed")
        got = got["invocations"]
        rids = [x["request_id"] for x in got]
        # Newest first.
        self.assertLess(rids.index(ids[2]), rids.index(ids[1]))
        self.assertLess(rids.index(ids[1]), rids.index(ids[0]))
        rec = got[rids.index(ids[2])]
        self.assertEqual(set(rec), {"request_id", "start_ms", "version", "trigger", "caller",
                                    "duration_ms", "billed_ms", "memory_mb", "max_memory_mb",
                                    "cpu_ms", "init_ms", "cold", "outcome", "error_type"})
        self.assertEqual(rec["outcome"], "success")
        self.assertEqual(rec["trigger"], "http")
        self.assertEqual(rec["memory_mb"], 128)
        self.assertIs(rec["cold"], False)
        self.assertGreater(rec["duration_ms"], 0)
        self.assertGreaterEqual(rec["billed_ms"], 1)
        self.assertLessEqual(abs(rec["start_ms"] / 1000 - time.time()), 60)

        got = self.d.api("GET", "/v1/functions/console-fn/invocations?limit=2").json()
        self.assertEqual([x["request_id"] for x in got["invocations"]], [ids[2], ids[1]])
        for bad in ("0", "501", "-1"):
            r = self.d.api("GET", f"/v1/functions/console-fn/invocations?limit={bad}")
            self.assertEqual(r.status, 400, r)
        r = self.d.api("GET", "/v1/functions/nope/invocations")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["error"]["code"], "not_found")

    # ---------- the console in a browser ----------

    def test_browser(self):
        if not os.path.exists(CHROMIUM):
            self.skipTest("Debian's chromium is not installed (scripts/deps.sh --test installs it)")
        self.assertTrue(NPM, "npm is missing (scripts/deps.sh installs it)")
        modules, why = install_playwright()
        self.assertIsNotNone(modules, why)
        # Work for the dashboard: the chart must have something to draw.
        for i in range(5):
            self.assertEqual(self.d.invoke("console-fn", {"warm": i}).status, 200)
        # Objects for the other pages.
        self.assertIn(self.d.api("PUT", "/v1/queues/console-q", {}).status, (200, 201))
        os.makedirs(OUT, exist_ok=True)
        for f in os.listdir(OUT):
            os.unlink(os.path.join(OUT, f))
        env = dict(os.environ, CONSOLE_URL=f"http://{self.d.host}:{self.d.port}",
                   CONSOLE_TOKEN=self.d.token, CONSOLE_FN="console-fn", CONSOLE_MARKER=MARKER,
                   CONSOLE_OUT=OUT, CONSOLE_NODE_MODULES=modules, CHROMIUM=CHROMIUM)
        p = subprocess.run([NODE, DRIVER], env=env, capture_output=True, text=True, timeout=240)
        self.assertEqual(p.returncode, 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        for shot in res["screenshots"]:
            self.assertGreater(os.path.getsize(shot), 5000, shot)
            print(f"screenshot: {shot}")
        self.assertEqual(len(res["screenshots"]), 4)
        # The request id the browser saw is a real record of the function.
        got = self.d.api("GET", "/v1/functions/console-fn/invocations?limit=50").json()
        self.assertIn(res["request_id"], [x["request_id"] for x in got["invocations"]])


if __name__ == "__main__":
    unittest.main()
