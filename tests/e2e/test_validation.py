"""Bad input through the real daemon: every refusal has the right status and error code, the
{"error":{"code","message"}} shape, and changes nothing; the CLI refuses bad command lines with
exit status 2 and one line on stderr without sending anything.
Run: cd tests/e2e && python3 -m unittest -v test_validation
"""

import os
import unittest
import urllib.parse

from nimbus_harness import (MIB, NimbusTestCase, SilentServer, example, run_cli,
                            tar_bytes)

ECHO_PY = """\
def handler(event, context):
    return event


def size(event, context):
    return {"len": len(event)}
"""


class ApiValidation(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()
        cls.code = {"app.py": ECHO_PY}
        cls.sha = cls.d.upload(tar_bytes(cls.code))["sha256"]
        cls.d.deploy("base", cls.code, "python3", "app.handler", environment={"AA": "1"})
        cls.d.deploy("base", cls.code, memory_mb=256)  # version 2
        cls.d.deploy("sizer", cls.code, "python3", "app.size")

    def snapshot(self):
        d = self.d
        # stats are the scheduler's live counters, not state a rejected request could change
        fns = [{k: v for k, v in f.items() if k != "stats"} for f in d.functions()]
        versions = {f["name"]: d.api("GET", f"/v1/functions/{f['name']}/versions").json() for f in fns}
        code = sorted(os.listdir(os.path.join(d.data, "code")))
        return fns, versions, code

    def setUp(self):
        self.before = self.snapshot()

    def tearDown(self):
        # Whatever the test sent, nothing changed: same functions, versions, code dirs.
        self.assertEqual(self.snapshot(), self.before)

    def put(self, name, body, raw=False):
        path = "/v1/functions/" + name
        if raw:
            return self.d.api("PUT", path, body, headers={"Content-Type": "application/json"})
        return self.d.api("PUT", path, body)

    def new_fn(self, **over):
        body = {"runtime": "python3", "handler": "app.handler", "code_sha256": self.sha}
        body.update(over)
        return {k: v for k, v in body.items() if v is not None}

    # -- PUT bodies ------------------------------------------------------------------------------

    def test_malformed_json(self):
        for body in (b'{"runtime":', b"", b"[1, 2]", b'"text"', b"null", b"{'a': 1}",
                     b'{"runtime":"python3","runtime":"python3"}'):
            with self.subTest(body=body):
                self.assert_api_error(self.put("fresh", body, raw=True), 400, "invalid_json")
                self.assert_api_error(self.put("base", body, raw=True), 400, "invalid_json")

    def test_unknown_field(self):
        msg = self.assert_api_error(self.put("fresh", self.new_fn(runtimee="python3")), 400, "unknown_field")
        self.assertIn("runtimee", msg)
        self.assert_api_error(self.put("base", {"memory": 256}), 400, "unknown_field")
        self.assert_api_error(self.put("base", {"version": 9}), 400, "unknown_field")

    def test_unknown_runtime(self):
        for rt in ("python2", "python3.x", "python3.", "java11", "nodejs16.x", "provided.al1", "", "PYTHON3"):
            with self.subTest(runtime=rt):
                self.assert_api_error(self.put("fresh", self.new_fn(runtime=rt)), 400, "invalid_runtime")
        self.assert_api_error(self.put("base", {"runtime": "ruby3.2"}), 400, "invalid_runtime")
        self.assert_api_error(self.put("fresh", self.new_fn(runtime=3)), 400, "invalid_value")

    def test_invalid_names(self):
        for name in ("bad name", "a" * 65, "dot.name", "ünï", "semi;colon", "slash/inside", "..", "a*"):
            with self.subTest(name=name):
                path = urllib.parse.quote(name, safe="/")
                r = self.put(path, self.new_fn())
                if "/" in name or name == "..":  # another path: no such route
                    self.assertIn(r.status, (404, 405), r)
                    continue
                self.assert_api_error(r, 400, "invalid_name")
                self.assert_api_error(self.d.api("GET", f"/v1/functions/{path}"), 400, "invalid_name")
                self.assert_api_error(self.d.invoke(name), 400, "invalid_name")
        # The limits themselves are fine: 64 characters of the whole alphabet.
        ok = ("aZ09_-" * 11)[:64]
        self.assertEqual(len(ok), 64)
        self.assert_api_error(self.d.api("GET", f"/v1/functions/{ok}"), 404, "not_found")

    def test_handler_file_missing_from_bundle(self):
        for rt, handler in (("python3", "nosuch.handler"), ("python3", "app/x.handler"),
                            ("nodejs20.x", "app.handler"), ("nodejs", "index.handler")):
            with self.subTest(runtime=rt, handler=handler):
                msg = self.assert_api_error(self.put("fresh", self.new_fn(runtime=rt, handler=handler)),
                                            400, "handler_not_found")
                self.assertIn(handler.split(".")[0], msg)
        self.assert_api_error(self.put("base", {"handler": "other.handler"}), 400, "handler_not_found")

    def test_provided_without_bootstrap(self):
        for rt in ("provided", "provided.al2", "provided.al2023"):
            with self.subTest(rt):
                msg = self.assert_api_error(self.put("fresh", self.new_fn(runtime=rt)), 400, "handler_not_found")
                self.assertIn("bootstrap", msg)
        # A directory named bootstrap does not count either.
        sha = self.d.upload(tar_bytes({"bootstrap/x": "x"}))["sha256"]
        self.before = self.snapshot()
        self.assert_api_error(self.put("fresh", self.new_fn(runtime="provided", code_sha256=sha)),
                              400, "handler_not_found")

    def test_invalid_handler_format(self):
        for handler in ("app", ".handler", "app.", "../app.handler", "/abs/app.handler", "a b.handler", ""):
            with self.subTest(handler=handler):
                self.assert_api_error(self.put("fresh", self.new_fn(handler=handler)), 400, "invalid_value")

    def test_memory_and_timeout_ranges(self):
        for field, bad in (("memory_mb", 64), ("memory_mb", 127), ("memory_mb", 10241), ("memory_mb", 20000),
                           ("memory_mb", "256"), ("memory_mb", 256.5), ("memory_mb", None),
                           ("timeout_s", 0), ("timeout_s", 901), ("timeout_s", -1), ("timeout_s", True),
                           ("timeout_s", "3"), ("ephemeral_storage_mb", 511),
                           ("ephemeral_storage_mb", 10241), ("ephemeral_storage_mb", "512"),
                           ("network", "bridge"), ("network", 1), ("network", None)):
            with self.subTest(field=field, value=bad):
                body = self.new_fn()
                body[field] = bad
                msg = self.assert_api_error(self.put("fresh", body), 400, "invalid_value")
                self.assertIn(field, msg)
                self.assert_api_error(self.put("base", {field: bad}), 400, "invalid_value")

    def test_environment_rules(self):
        big = {f"K{i:03d}": "v" * 60 for i in range(70)}  # > 4 KiB of keys and values
        self.assertGreater(sum(len(k) + len(v) for k, v in big.items()), 4096)
        cases = [big, {"AWS_LAMBDA_X": "1"}, {"AWS_LAMBDA_FUNCTION_NAME": "x"}, {"_HANDLER": "x"},
                 {"LAMBDA_TASK_ROOT": "/"}, {"NIMBUS_CHANNEL_FD": "4"}, {"AWS_REGION": "x"},
                 {"AWS_ACCESS_KEY_ID": "x"}, {"TZ": "x"}, {"1BAD": "x"}, {"BAD-KEY": "x"}, {"X": "x"},
                 {"GOOD": 1}, {"GOOD": None}, ["A=1"], "A=1"]
        for env in cases:
            with self.subTest(env=str(env)[:60]):
                self.assert_api_error(self.put("fresh", self.new_fn(environment=env)), 400, "invalid_value")
                self.assert_api_error(self.put("base", {"environment": env}), 400, "invalid_value")
        # A NUL inside a value is refused one way or another (the JSON parser refuses \u0000).
        r = self.put("fresh", self.new_fn(environment={"GOOD": "a\u0000b"}))
        self.assertEqual(r.status, 400, r)
        self.assertIn(r.json()["error"]["code"], ("invalid_json", "invalid_value"))
        # Just at the limit is accepted (checked on a function created and deleted here).
        fine = {"K" + "x" * 9: "v" * (4096 - 10)}
        r = self.put("envlimit", self.new_fn(environment=fine))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.d.api("DELETE", "/v1/functions/envlimit").status, 200)

    def test_description_too_long(self):
        self.assert_api_error(self.put("fresh", self.new_fn(description="d" * 257)), 400, "invalid_value")
        self.assert_api_error(self.put("base", {"description": 5}), 400, "invalid_value")

    def test_code_never_uploaded(self):
        missing = "0" * 64
        msg = self.assert_api_error(self.put("fresh", self.new_fn(code_sha256=missing)), 404, "not_found")
        self.assertIn("000000000000", msg)
        self.assert_api_error(self.put("base", {"code_sha256": missing}), 404, "not_found")
        for bad in ("abc", "G" * 64, self.sha.upper(), self.sha + "0", 42):
            with self.subTest(sha=bad):
                self.assert_api_error(self.put("fresh", self.new_fn(code_sha256=bad)), 400, "invalid_value")

    def test_required_fields_on_create(self):
        for missing in ("runtime", "handler", "code_sha256"):
            with self.subTest(missing=missing):
                msg = self.assert_api_error(self.put("fresh", self.new_fn(**{missing: None})), 400, "invalid_value")
                self.assertIn(missing, msg)
        self.assert_api_error(self.put("fresh", {}), 400, "invalid_value")

    def test_oversized_bodies(self):
        self.assert_api_error(self.put("fresh", b"{" + b" " * (300 << 10) + b"}", raw=True), 413, "payload_too_large")
        r = self.d.invoke("sizer", raw=b'"' + b"a" * (6 * MIB - 1) + b'"')
        self.assert_api_error(r, 413, "payload_too_large")
        # Exactly 6 MiB is allowed.
        r = self.d.invoke("sizer", raw=b'"' + b"a" * (6 * MIB - 2) + b'"')
        self.assertEqual(self.assert_ok(r), {"len": 6 * MIB - 2})
        r = self.d.api("POST", "/v1/code", b"\0" * (64 * MIB + 1))
        self.assert_api_error(r, 413, "payload_too_large")

    def test_invoke_bad_version(self):
        for q in ("abc", "0", "-1", "1.5", "", "99999999999999999999999"):
            with self.subTest(version=q):
                r = self.d.api("POST", f"/v1/functions/base/invoke?version={q}", b"{}")
                self.assert_api_error(r, 400, "invalid_value")
        self.assert_api_error(self.d.invoke("base", version=3), 404, "not_found")
        self.assert_api_error(self.d.invoke("base", version=12345), 404, "not_found")

    def test_logs_bad_query(self):
        for q in ("since=yesterday", "limit=-1", "limit=100001", "follow=2"):
            with self.subTest(q):
                self.assert_api_error(self.d.api("GET", f"/v1/functions/base/logs?{q}"), 400, "invalid_value")

    # -- auth, unknown things --------------------------------------------------------------------

    def test_missing_or_wrong_token(self):
        routes = [("GET", "/v1/version"), ("GET", "/v1/functions"), ("GET", "/v1/functions/base"),
                  ("PUT", "/v1/functions/base"), ("DELETE", "/v1/functions/base"),
                  ("GET", "/v1/functions/base/versions"), ("POST", "/v1/functions/base/invoke"),
                  ("GET", "/v1/functions/base/logs"), ("POST", "/v1/code"),
                  ("GET", "/v1/namespaces/default/functions")]
        bad_auth = [None, "wrong", self.d.token[:-1], self.d.token + "0", ""]
        for method, path in routes:
            for token in bad_auth:
                with self.subTest(route=f"{method} {path}", token=token):
                    body = b"{}" if method in ("PUT", "POST") else None
                    r = self.d.api(method, path, body, token=token)
                    self.assert_api_error(r, 401, "unauthorized")
                    self.assertTrue(r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers)
        # Other schemes and a missing space are refused too.
        for header in ("Basic " + self.d.token, self.d.token, "Bearer" + self.d.token):
            r = self.d.api("GET", "/v1/functions", token=None, headers={"Authorization": header})
            self.assert_api_error(r, 401, "unauthorized")
        # /healthz needs none.
        self.assertEqual(self.d.api("GET", "/healthz", token=None).json(), {"status": "ok"})

    def test_unknown_function(self):
        for method, path in (("GET", "/v1/functions/nosuch"), ("DELETE", "/v1/functions/nosuch"),
                             ("GET", "/v1/functions/nosuch/versions"), ("POST", "/v1/functions/nosuch/invoke"),
                             ("GET", "/v1/functions/nosuch/logs"),
                             ("GET", "/v1/namespaces/default/functions/nosuch")):
            with self.subTest(f"{method} {path}"):
                msg = self.assert_api_error(self.d.api(method, path, b"{}" if method == "POST" else None),
                                            404, "not_found")
                self.assertIn("nosuch", msg)

    def test_unknown_route_and_wrong_method(self):
        for method, path in (("GET", "/"), ("GET", "/v1"), ("GET", "/v1/nope"), ("GET", "/v2/functions"),
                             ("GET", "/v1/functions/base/nope"), ("POST", "/v1/functions/base/invoke/x"),
                             ("GET", "/healthz/x"), ("GET", "/v1/namespaces/default"),
                             ("GET", "/v1/namespaces//functions")):
            with self.subTest(f"{method} {path}"):
                self.assert_api_error(self.d.api(method, path), 404, "not_found")
        for method, path in (("POST", "/v1/functions"), ("DELETE", "/v1/functions"), ("PATCH", "/v1/functions/base"),
                             ("POST", "/v1/functions/base"), ("GET", "/v1/functions/base/invoke"),
                             ("PUT", "/v1/functions/base/invoke"), ("GET", "/v1/code"), ("POST", "/healthz"),
                             ("DELETE", "/v1/version"), ("POST", "/v1/functions/base/logs"),
                             ("DELETE", "/v1/namespaces/default/functions")):
            with self.subTest(f"{method} {path}"):
                self.assert_api_error(self.d.api(method, path, b"{}" if method in ("POST", "PUT", "PATCH") else None),
                                      405, "method_not_allowed")


class CliValidation(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()
        cls.d.deploy("base", {"app.py": ECHO_PY}, "python3", "app.handler")

    def setUp(self):
        self.silent = SilentServer()
        self.addCleanup(self.silent.close)

    def assert_usage_error(self, *args, needle=None):
        """Exit 2, exactly one 'nimbus: ' line on stderr, nothing on stdout, no connection."""
        p = run_cli("--url", self.silent.url, "--token", "x" * 64, *args, timeout=10)
        self.assertEqual(p.returncode, 2, p)
        self.assertEqual(p.stdout, "", p)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("nimbus: "), p.stderr)
        if needle:
            self.assertIn(needle, lines[0])
        self.assertFalse(self.silent.connected(), f"{args}: the CLI sent a request")
        return lines[0]

    def test_bad_command_lines(self):
        hello = example("python-hello")
        cases = [
            (["deploy", "f", hello, "--runtime"], "runtime"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--memory", "abc"], "memory"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--memory", "64"], "memory"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--timeout", "0"], "timeout"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--timeout", "901"], "timeout"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--ephemeral-storage", "511"],
             "ephemeral-storage"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--network", "bridge"], "network"),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--env", "1BAD=x"], None),
            (["deploy", "f", hello, "--runtime", "python3", "--handler", "app.handler", "--env", "NOEQUALS"], None),
            (["deploy", "f"], None),
            (["deploy", "f", "/nonexistent/dir", "--runtime", "python3", "--handler", "app.handler"], "/nonexistent/dir"),
            (["deploy", "f", os.path.join(hello, "app.py"), "--runtime", "python3", "--handler", "app.handler"], None),
            (["deploy", "f", hello, "--bogus"], "bogus"),
            (["invoke"], None),
            (["invoke", "base", "{}", "extra"], None),
            (["invoke", "base", "--version", "abc"], "version"),
            (["invoke", "base", "--version", "0"], "version"),
            (["invoke", "base", "@/nonexistent/event.json"], "/nonexistent/event.json"),
            (["logs", "base", "--since", "yesterday"], "since"),
            (["logs", "base", "--limit", "-1"], None),
            (["logs"], None),
            (["get"], None),
            (["rm"], None),
            (["versions"], None),
            (["ls", "extra"], None),
            (["ls", "--bogus"], "bogus"),
            (["frobnicate"], "frobnicate"),
        ]
        for args, needle in cases:
            with self.subTest(args=" ".join(args)):
                self.assert_usage_error(*args, needle=needle)
        self.assertEqual([f["name"] for f in self.d.functions()], ["base"])

    def test_api_errors_exit_1_with_one_line(self):
        p = self.d.cli("invoke", "nosuch")
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(p.stdout, "")
        self.assertEqual(p.stderr.strip().splitlines(), ["nimbus: function 'nosuch' not found (not_found)"])
        # Creating without --runtime reaches the daemon, which refuses: nothing is created.
        p = self.d.cli("deploy", "newfn", example("python-hello"), "--handler", "app.handler")
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertIn("runtime", p.stderr)
        self.assertIn("(invalid_value)", p.stderr)
        p = self.d.cli("deploy", "newfn", example("python-hello"), "--runtime", "cobol", "--handler", "app.handler")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("(invalid_runtime)", p.stderr)
        self.assertEqual([f["name"] for f in self.d.functions()], ["base"])
        # Wrong token, unreachable daemon.
        p = self.d.cli("ls", "--token", "0" * 64)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("(unauthorized)", p.stderr)
        p = self.d.cli("ls", "--url", self.silent.url.replace(str(self.silent.port), "1"))
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("cannot reach the daemon", p.stderr)
        p = self.d.cli("ls")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("base", p.stdout)


if __name__ == "__main__":
    unittest.main()
