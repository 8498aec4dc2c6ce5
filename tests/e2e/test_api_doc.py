"""docs/api.md against the real daemon: the routes table equals `nimbus serve --routes`, every
route answers when called correctly (short and /v1/namespaces/default long form), the error
codes table is what the daemon answers, and the documented JSON shapes match.
Run: cd tests/e2e && python3 -m unittest -v test_api_doc
"""

import json
import os
import re
import subprocess
import unittest
import urllib.parse

from nimbus_harness import BIN, MIB, SRC, NimbusTestCase, tar_bytes

API_MD = os.path.join(SRC, "docs", "api.md")
APP = "def handler(event, context):\n    print('doc check')\n    return {'echo': event}\n"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def read_doc():
    with open(API_MD, encoding="utf-8") as f:
        return f.read()


def doc_routes(text):
    """(METHOD, path) rows of the table between <!-- routes and <!-- /routes -->."""
    start = text.index("<!-- routes")
    end = text.index("<!-- /routes -->", start)
    rows = []
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[A-Z]+", cells[0]) or cells[0] == "method":
            continue
        rows.append((cells[0], cells[1].strip("`")))
    return rows


def doc_error_codes(text):
    """{code: status} from the errors table (rows like | `code` | 404 | when |)."""
    out = {}
    for m in re.finditer(r"^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|", text, re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def doc_json_after(text, heading):
    """The first ```json block after a heading line."""
    i = text.index(heading)
    m = re.search(r"```json\n(.*?)```", text[i:], re.S)
    return json.loads(m.group(1))


def server_routes():
    p = subprocess.run([BIN, "serve", "--routes"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p
    return [tuple(line.split(" ", 1)) for line in p.stdout.splitlines() if line.strip()]


class RoutesTable(unittest.TestCase):
    def test_doc_routes_equal_server_routes(self):
        doc = doc_routes(read_doc())
        srv = server_routes()
        self.assertGreaterEqual(len(doc), 10, "the routes table was not found or is nearly empty")
        self.assertEqual(len(doc), len(set(doc)), "duplicate rows in docs/api.md")
        self.assertEqual(len(srv), len(set(srv)), "duplicate routes in the server")
        self.assertEqual(set(doc) - set(srv), set(), "documented but not served")
        self.assertEqual(set(srv) - set(doc), set(), "served but not documented in docs/api.md")

    def test_routes_output_format(self):
        for method, path in server_routes():
            self.assertRegex(method, r"^(GET|PUT|POST|DELETE|PATCH)$")
            self.assertTrue(path.startswith("/"), path)


class RoutesAnswer(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()
        cls.archive = tar_bytes({"app.py": APP})
        cls.sha = cls.d.upload(cls.archive)["sha256"]
        cls.text = read_doc()

    # The gateway's objects each route needs, made (again) right before it is called, since
    # the DELETE routes run in any order.
    def ensure(self, kind, body):
        d = self.d
        if kind in ("keys", "clients"):
            if d.api("GET", f"/v1/{kind}/fn").status == 404:
                self.assertEqual(d.api("POST", f"/v1/{kind}", body).status, 201)
        elif kind == "apis":
            self.assertIn(d.api("PUT", "/v1/apis/fn", body).status, (200, 201))
        elif kind == "plans":
            self.assertIn(d.api("PUT", "/v1/plans/fn", body).status, (200, 201))

    def gateway_call(self, method, path):
        """(path with captures filled, body) for a gateway object route."""
        d = self.d
        sub = None
        body = None
        if path.startswith("/v1/apis/{name}"):
            self.ensure("apis", {"base_path": "/fn"})
        if path.startswith("/v1/keys") or "/shares" in path:
            self.ensure("keys", {"name": "fn"})
        if path.startswith("/v1/clients"):
            self.ensure("clients", {"name": "fn"})
        if path == "/v1/apis/{name}":
            body = {"base_path": "/fn"}
        elif path == "/v1/apis/{name}/routes":
            body = {"method": "GET", "path": "/r" + os.urandom(4).hex(), "function": "fn"}
        elif path == "/v1/apis/{name}/routes/{sub}":
            r = d.api("POST", "/v1/apis/fn/routes",
                      {"method": "GET", "path": "/d" + os.urandom(4).hex(), "function": "fn"})
            sub = r.json()["id"]
        elif path == "/v1/apis/{name}/shares":
            body = {"consumer": "fn"}
        elif path == "/v1/apis/{name}/shares/{sub}":
            d.api("POST", "/v1/apis/fn/shares", {"consumer": "fn"})
            sub = "fn"
        elif path == "/v1/plans/{name}":
            if method == "DELETE":
                self.ensure("plans", {"rate": 5})
            body = {"rate": 5}
        elif path in ("/v1/keys", "/v1/clients"):
            d.api("DELETE", path + "/fn")
            body = {"name": "fn"}
        elif path in ("/v1/keys/{name}", "/v1/clients/{name}") and method == "PATCH":
            body = {"enabled": True}
        elif path.endswith("/rotate"):
            body = b""
        return path.replace("{name}", "fn").replace("{sub}", sub or ""), body

    def queue_call(self, method, path):
        """(path, body) for a queue route, on queue `fq` (made again when needed)."""
        d = self.d
        d.api("PUT", "/v1/queues/fq", {})
        sub, body = "", None
        if path == "/v1/queues/{name}":
            body = {} if method == "PUT" else None
        elif path == "/v1/queues/{name}/messages":
            body = {"body": "doc"}
        elif path == "/v1/queues/{name}/receive":
            body = {"max": 1}
        elif path == "/v1/queues/{name}/messages/{sub}":
            mid = d.api("POST", "/v1/queues/fq/messages", {"body": "doc"}).json()["ids"][0]
            msgs = d.api("POST", "/v1/queues/fq/receive", {"max": 10}).json()["messages"]
            m = next(m for m in msgs if m["id"] == mid)
            sub = mid + "?receipt=" + urllib.parse.quote(m["receipt"], safe="")
        elif path == "/v1/queues/{name}/subscriptions/{sub}":
            if method == "DELETE":
                d.api("PUT", "/v1/queues/fq/subscriptions/fn", {})
            sub, body = "fn", {} if method == "PUT" else None
        return path.replace("{name}", "fq").replace("{sub}", sub), body

    def topic_call(self, method, path):
        """(path, body) for a topic route, on topic `ft` (made again when needed)."""
        d = self.d
        d.api("POST", "/v1/topics", {"name": "ft"})
        d.api("PUT", "/v1/queues/ftq", {})
        sub, body = "", None
        if (method, path) == ("POST", "/v1/topics"):
            body = {"name": "ft"}
        elif path == "/v1/topics/{name}/publish":
            body = {"message": "doc", "attributes": {"k": "v"}}
        elif (method, path) == ("POST", "/v1/topics/{name}/subscriptions"):
            body = {"target": "queue:ftq"}
        elif path == "/v1/topics/{name}/subscriptions/{sub}":
            sub = d.api("POST", "/v1/topics/ft/subscriptions", {"target": "queue:ftq"}).json()["id"]
        return path.replace("{name}", "ft").replace("{sub}", sub), body

    def call(self, method, path, prefix=""):
        """Calls one route correctly, on function `fn` (created here when needed)."""
        d = self.d
        if path.startswith(("/v1/apis", "/v1/plans", "/v1/keys", "/v1/clients")):
            p, body = self.gateway_call(method, path)
            return d.api(method, p, body)
        if path.startswith("/v1/queues"):
            p, body = self.queue_call(method, path)
            return d.api(method, p, body)
        if path.startswith("/v1/topics"):
            p, body = self.topic_call(method, path)
            return d.api(method, p, body)
        if path.startswith("/v1/services"):
            # A service of its own (deleting it deletes its function).
            d.put("fsvc", {"runtime": "python3", "handler": "app.handler",
                           "code_sha256": self.sha, "service": "fsvc"})
            return d.api(method, path.replace("{name}", "fsvc"))
        if path == "/v1/events":
            ev = {"specversion": "1.0", "id": "doc", "source": "doc/x", "type": "doc"}
            return d.api(method, path, json.dumps(ev),
                         headers={"Content-Type": "application/cloudevents+json"})
        if path.startswith("/v1/rules"):
            d.api("PUT", "/v1/queues/fq", {})
            if d.api("GET", "/v1/rules/fr").status == 404:
                d.api("POST", "/v1/rules", {"name": "fr", "match": {"type": ["doc"]}, "target": "queue:fq"})
            body = None
            if (method, path) == ("POST", "/v1/rules"):
                d.api("DELETE", "/v1/rules/fr2")
                body = {"name": "fr2", "match": {"type": ["doc"]}, "target": "queue:fq"}
            elif method == "PATCH":
                body = {"enabled": True}
            elif path.endswith("/test"):
                body = {"event": {"type": "doc"}}
            return d.api(method, path.replace("{name}", "fr"), body)
        if path.startswith("/v1/schedules"):
            d.api("PUT", "/v1/schedules/fs", {"expression": "rate(1 hour)", "function": "fn"})
            body = {"expression": "rate(1 hour)", "function": "fn"} if method == "PUT" else None
            return d.api(method, path.replace("{name}", "fs"), body if body is not None else
                         (b"" if method == "POST" else None))
        if path.endswith("/events/redrive"):
            p = path.replace("{name}", "fn")
            return d.api(method, prefix + p[3:] if prefix else p, b"")
        p = path.replace("{name}", "fn")
        if prefix and p.startswith("/v1/"):
            p = prefix + p[3:]
        body = None
        if (method, path) == ("POST", "/v1/code"):
            body = self.archive
        elif (method, path) == ("PUT", "/v1/functions/{name}"):
            body = {"runtime": "python3", "handler": "app.handler", "code_sha256": self.sha}
        elif (method, path) == ("PUT", "/v1/functions/{name}/scaling"):
            body = {"max_queue": 50}
        elif (method, path) == ("POST", "/v1/functions/{name}/invoke"):
            body = b'{"x": 1}'
        elif method in ("POST", "PUT"):
            self.fail(f"no known correct body for {method} {path}: teach test_api_doc.py")
        token = None if path == "/healthz" else True
        return d.api(method, p, body, token=token)

    def ensure_fn(self, prefix=""):
        r = self.call("PUT", "/v1/functions/{name}", prefix)
        self.assertIn(r.status, (200, 201), r)

    def check_all_routes(self, prefix):
        routes = server_routes()
        # DELETE last: it removes the function the others use.
        routes.sort(key=lambda mp: mp[0] == "DELETE")
        self.ensure_fn(prefix)
        for method, path in routes:
            if prefix and not path.startswith("/v1/functions"):
                continue
            with self.subTest(route=f"{method} {path}", prefix=prefix):
                r = self.call(method, path, prefix)
                self.assertNotIn(b"no route", r.body)
                self.assertLess(r.status, 300, r)
                self.assertTrue(r.headers.get("x-nimbus-request-id"), r.headers)
                if path == "/v1/functions/{name}/logs":
                    self.assertEqual(r.headers.get("content-type"), "application/x-ndjson")
                elif path == "/metrics":  # Prometheus text format (test_metrics.py)
                    self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"))
                else:
                    self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
                    json.loads(r.body)

    def test_every_route_answers_short_form(self):
        self.check_all_routes("")

    def test_every_function_route_answers_long_form(self):
        self.check_all_routes("/v1/namespaces/default")

    def test_long_form_is_the_same_resource(self):
        self.ensure_fn()
        d = self.d
        self.assertEqual(self.assert_ok(d.invoke("fn", {"a": 1})), {"echo": {"a": 1}})
        for short in ("/v1/functions", "/v1/functions/fn", "/v1/functions/fn/versions"):
            with self.subTest(short):
                a = d.api("GET", short)
                b = d.api("GET", "/v1/namespaces/default" + short[3:])
                self.assertEqual((a.status, a.json()), (b.status, b.json()))
        r = d.api("POST", "/v1/namespaces/default/functions/fn/invoke", b'{"b": 2}')
        self.assertEqual(self.assert_ok(r), {"echo": {"b": 2}})
        # Updating through the long form publishes on the same function.
        before = d.api("GET", "/v1/functions/fn").json()["version"]
        r = d.api("PUT", "/v1/namespaces/default/functions/fn", {"memory_mb": 512 if before % 2 else 256})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(d.api("GET", "/v1/functions/fn").json()["version"], before + 1)
        # Other namespaces are separate (and empty).
        self.assertEqual(d.api("GET", "/v1/namespaces/other/functions").json(), {"functions": []})
        self.assert_api_error(d.api("GET", "/v1/namespaces/other/functions/fn"), 404, "not_found")
        self.assert_api_error(d.api("GET", "/v1/namespaces/bad%20ns/functions"), 400, "invalid_name")

    # -- documented shapes ---------------------------------------------------------------------

    def test_function_object_shape(self):
        documented = doc_json_after(self.text, "### PUT /v1/functions/{name}")
        r = self.d.put("shape", {"runtime": "python3", "handler": "app.handler", "code_sha256": self.sha})
        self.assertEqual(r.status, 201, r)
        fn = r.json()
        self.assertEqual(set(fn), set(documented))
        self.assertEqual({k: fn[k] for k in ("namespace", "name", "memory_mb", "timeout_s", "environment",
                                             "description", "version", "changed")},
                         {"namespace": "default", "name": "shape", "memory_mb": 128, "timeout_s": 3,
                          "environment": {}, "description": "", "version": 1, "changed": True})
        self.assertRegex(fn["created_at"], ISO)
        self.assertRegex(fn["updated_at"], ISO)
        got = self.d.api("GET", "/v1/functions/shape").json()
        self.assertEqual(set(got), set(documented) - {"changed"})
        listed = self.d.api("GET", "/v1/functions").json()["functions"]
        self.assertEqual([f["name"] for f in listed], sorted(f["name"] for f in listed))
        self.assertIn(got, listed)
        vs = self.d.api("GET", "/v1/functions/shape/versions").json()["versions"]
        self.assertTrue({"version", "code_sha256", "runtime", "handler", "memory_mb", "timeout_s",
                         "created_at"} <= set(vs[0]), vs)
        self.assertEqual(self.d.api("GET", "/v1/version").json()["version"].count("."), 2)
        self.assertEqual(self.d.api("DELETE", "/v1/functions/shape").json(), {"deleted": "shape"})

    def test_code_and_log_record_shapes(self):
        r = self.d.api("POST", "/v1/code", tar_bytes({"app.py": APP, "x.txt": "x"}))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(set(r.json()), {"sha256", "size", "unpacked_size", "files"})
        self.ensure_fn()
        self.assert_ok(self.d.invoke("fn"))
        recs = self.d.logs("fn")
        documented = doc_json_after(self.text, "### GET /v1/functions/{name}/logs")
        self.assertEqual(set(recs[-1]), set(documented))
        self.assertEqual({x["stream"] for x in recs}, {"platform", "stdout"})

    def test_error_codes_table(self):
        """Each documented error code comes back with its documented status."""
        codes = doc_error_codes(self.text)
        self.assertIn("not_found", codes)
        self.ensure_fn()
        d = self.d
        new = {"runtime": "python3", "handler": "app.handler", "code_sha256": self.sha}
        triggers = {
            "unauthorized": lambda: d.api("GET", "/v1/functions", token="nope"),
            "not_found": lambda: d.api("GET", "/v1/functions/nosuch"),
            "method_not_allowed": lambda: d.api("PATCH", "/v1/functions/fn", b"{}"),
            "invalid_json": lambda: d.api("PUT", "/v1/functions/fn", b"{nope"),
            "unknown_field": lambda: d.put("fn", {"colour": "red"}),
            "invalid_value": lambda: d.put("fn", {"memory_mb": 1}),
            "invalid_name": lambda: d.api("GET", "/v1/functions/bad%20name"),
            "invalid_runtime": lambda: d.put("fn2", dict(new, runtime="cobol")),
            "invalid_archive": lambda: d.api("POST", "/v1/code", b"not an archive"),
            "handler_not_found": lambda: d.put("fn2", dict(new, handler="nosuch.handler")),
            "payload_too_large": lambda: d.api("POST", "/v1/functions/fn/invoke", b"x" * (6 * MIB + 1)),
            "bad_request": lambda: d.api("POST", "/v1/events", b"<event/>",
                                         headers={"Content-Type": "application/cloudevents+xml"}),
            "conflict": lambda: (d.api("PUT", "/v1/plans/dup", {"rate": 1}),
                                 d.api("POST", "/v1/keys", {"name": "dup"}),
                                 d.api("POST", "/v1/keys", {"name": "dup"}))[-1],
        }
        untriggerable = {"internal"}
        for code, status in codes.items():
            with self.subTest(code=code):
                if code in untriggerable:
                    continue
                if code == "too_many_requests":  # also carries Lambda's errorType: own shape
                    self.assertEqual(d.api("PUT", "/v1/functions/fn/scaling",
                                           {"max_concurrency": 0, "min_instances": 0}).status, 200)
                    r = d.invoke("fn")
                    d.api("PUT", "/v1/functions/fn/scaling", {"max_concurrency": None})
                    self.assertEqual(r.status, status, r)
                    self.assertEqual(r.json()["error"]["code"], code, r)
                    self.assertEqual(r.json()["errorType"], "TooManyRequestsException", r)
                    self.assertTrue(r.headers.get("retry-after"), r.headers)
                    continue
                self.assertIn(code, triggers, f"docs/api.md lists {code}: teach test_api_doc.py to trigger it")
                self.assert_api_error(triggers[code](), status, code)


if __name__ == "__main__":
    unittest.main()
