"""Every runtime's hello example through the real daemon, by CLI and by HTTP.

python3, nodejs, a POSIX-sh custom runtime (HTTP Runtime API with curl) and the C SDK example;
warm reuse of an instance; runtime aliases; node ESM/CommonJS, async and callback handlers.
Run: cd tests/e2e && python3 -m unittest -v test_examples
"""

import json
import os
import shutil
import tempfile
import unittest

from nimbus_harness import (BUILD, File, NimbusTestCase, dir_files, example, fixture)

C_BOOTSTRAP = os.path.join(BUILD, "examples", "c-hello", "bootstrap")


class Examples(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def cli_deploy(self, name, path, *opts):
        p = self.d.cli("deploy", name, path, *opts)
        self.assertEqual(p.returncode, 0, p)
        self.assertRegex(p.stdout, rf"^deployed {name} version 1 ")
        self.assertEqual(p.stderr, "")
        return p

    def cli_invoke(self, name, event=None):
        args = [name] + ([json.dumps(event)] if event is not None else [])
        p = self.d.cli("invoke", *args)
        self.assertEqual(p.returncode, 0, p)
        return json.loads(p.stdout)

    def http_invoke(self, name, event=None, version="1"):
        r = self.d.invoke(name, event)
        result = self.assert_ok(r)
        self.assertEqual(r.headers.get("x-nimbus-executed-version"), version, r.headers)
        self.assertRegex(r.headers.get("x-nimbus-request-id", ""), r"^[0-9a-f-]{36}$")
        return result

    def check_example(self, name, path, runtime, handler, expected_runtime, greeting="Hello, Ann!"):
        """Deploys by CLI, then alternates CLI and HTTP invocations of one warm instance."""
        self.cli_deploy(name, path, "--runtime", runtime, "--handler", handler)
        first = self.cli_invoke(name, {"name": "Ann"})
        self.assertEqual(first, {"message": greeting, "count": 1, "runtime": expected_runtime})
        second = self.http_invoke(name, {"name": "Ann"})
        self.assertEqual(second["count"], 2, "the warm instance must be reused")
        third = self.cli_invoke(name)  # default event {}
        self.assertEqual(third["count"], 3)
        fn = self.d.api("GET", f"/v1/functions/{name}").json()
        self.assertEqual((fn["runtime"], fn["handler"], fn["version"]), (runtime, handler, 1))

    # -- the four examples ---------------------------------------------------------------------

    def test_python_example(self):
        self.check_example("py-hello", example("python-hello"), "python3", "app.handler", "python3")
        # Its print went to the function's log, not to the result.
        p = self.d.cli("logs", "py-hello")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("hello called 3 times", p.stdout)

    def test_node_example(self):
        self.check_example("node-hello", example("node-hello"), "nodejs20.x", "index.handler", "nodejs")

    def test_shell_custom_runtime_example(self):
        self.cli_deploy("sh-hello", example("provided-hello"), "--runtime", "provided",
                        "--handler", "function.handler")
        expected = {"message": "Hello from a shell bootstrap!", "runtime": "provided"}
        counts = []
        for i in range(3):
            res = self.cli_invoke("sh-hello", {}) if i % 2 == 0 else self.http_invoke("sh-hello", {})
            counts.append(res.pop("count"))
            self.assertEqual(res, expected)
        self.assertEqual(counts, [1, 2, 3])
        # The handler returning non-zero: the bootstrap posts /error.
        r = self.d.invoke("sh-hello", {"fail": True})
        self.assert_fn_error(r, "Function.HandlerError")
        p = self.d.cli("invoke", "sh-hello", '{"fail": true}')
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(json.loads(p.stdout)["errorType"], "Function.HandlerError")
        # ...and the same instance goes on counting.
        self.assertEqual(self.http_invoke("sh-hello", {})["count"], 6)

    def test_c_sdk_example(self):
        self.assertTrue(os.access(C_BOOTSTRAP, os.X_OK), f"build {C_BOOTSTRAP} first (make build)")
        tmp = tempfile.mkdtemp(prefix="nimbus-c-hello-")
        self.addCleanup(shutil.rmtree, tmp, True)
        shutil.copy2(C_BOOTSTRAP, os.path.join(tmp, "bootstrap"))
        self.check_example("c-hello", tmp, "provided.al2023", "function.handler", "c")
        r = self.d.invoke("c-hello", {"fail": True})
        doc = self.assert_fn_error(r, "HelloError")
        self.assertEqual(doc["errorMessage"], "asked to fail")
        self.assertEqual(self.http_invoke("c-hello", {"name": "Bo"}),
                         {"message": "Hello, Bo!", "count": 5, "runtime": "c"})

    # -- aliases ---------------------------------------------------------------------------

    def test_runtime_aliases(self):
        cases = [
            ("alias-py312", "python3.12", "python-hello", "app.handler", "python3"),
            ("alias-node18", "nodejs18.x", "node-hello", "index.handler", "nodejs"),
            ("alias-node22", "nodejs22.x", "node-hello", "index.handler", "nodejs"),
            ("alias-nodejs", "nodejs", "node-hello", "index.handler", "nodejs"),
            ("alias-al2", "provided.al2", "provided-hello", "function.handler", "provided"),
        ]
        for name, runtime, ex, handler, reported in cases:
            with self.subTest(runtime=runtime):
                fn = self.d.deploy(name, dir_files(example(ex)), runtime, handler)
                self.assertEqual((fn["runtime"], fn["version"]), (runtime, 1))
                res = self.http_invoke(name, {"name": "Al"})
                self.assertEqual(res["count"], 1)
                self.assertEqual(res["runtime"], reported)

    # -- node module systems and handler styles ----------------------------------------------

    def test_node_esm_by_package_type_module(self):
        self.d.deploy("esm", dir_files(fixture("node-esm-typemodule")), "nodejs20.x", "index.handler")
        res = self.http_invoke("esm")
        self.assertEqual(res["kind"], "esm")
        self.assertEqual(res["typeofRequire"], "undefined")
        self.assertTrue(res["url"].startswith("file://") and res["url"].endswith("/index.js"), res)

    def test_node_commonjs(self):
        self.d.deploy("cjs", dir_files(fixture("node-cjs")), "nodejs20.x", "index.handler")
        self.assertEqual(self.http_invoke("cjs", {"a": 1}),
                         {"kind": "cjs", "typeofRequire": "function", "event": {"a": 1}})

    def test_node_callback_and_async_handlers(self):
        code = dir_files(fixture("node-callback"))
        code["async.mjs"] = File("export const handler = async (e) => ({async: true, got: e.n});\n")
        self.d.deploy("cb", code, "nodejs20.x", "index.handler")
        self.assertEqual(self.http_invoke("cb", {"n": 5}), {"viaCallback": 5})
        self.d.deploy("cb-fail", code, "nodejs20.x", "index.fails")
        doc = self.assert_fn_error(self.d.invoke("cb-fail"), "TypeError")
        self.assertEqual(doc["errorMessage"], "callback failure")
        self.d.deploy("async", code, "nodejs20.x", "async.handler")
        self.assertEqual(self.http_invoke("async", {"n": 7}), {"async": True, "got": 7})

    def test_python_function_sees_its_environment(self):
        code = {"env.py": "import os\n\ndef handler(event, context):\n"
                          "    return {k: os.environ.get(k) for k in event['keys']}\n"}
        self.d.deploy("py-env", code, "python3", "env.handler", environment={"GREETING": "hi"},
                      memory_mb=256)
        res = self.http_invoke("py-env", {"keys": ["GREETING", "AWS_LAMBDA_FUNCTION_NAME",
                                                   "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "_HANDLER"]})
        self.assertEqual(res, {"GREETING": "hi", "AWS_LAMBDA_FUNCTION_NAME": "py-env",
                               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "_HANDLER": "env.handler"})


if __name__ == "__main__":
    unittest.main()
