"""Function-side failures through the real daemon: each error class, and that the daemon recovers.

A failing function answers 200 with X-Nimbus-Function-Error and the Lambda error JSON; init
failures, crashes and bad entrypoints never wedge the daemon, and the next invocation after a
crash runs on a fresh instance.
Run: cd tests/e2e && python3 -m unittest -v test_errors
"""

import json
import threading
import time
import unittest

from nimbus_harness import File, NimbusTestCase, dir_files, fixture, tar_bytes, wait_until, zip_bytes

COUNTER_PY = """\
import os
import sys

calls = 0


def handler(event, context):
    global calls
    calls += 1
    print(f"call {calls} of pid {os.getpid()}", flush=True)
    if event.get("sys_exit"):
        sys.exit(event["sys_exit"])
    if event.get("os_exit") is not None:
        os._exit(event["os_exit"])
    if event.get("big"):
        return "x" * event["big"]
    return {"calls": calls}
"""

COUNTER_NODE = """\
let calls = 0;
export const handler = async (event) => {
  calls += 1;
  if (event.exit !== undefined) process.exit(event.exit);
  if (event.crash) setTimeout(() => { throw new Error('async crash'); }, 1);
  if (event.crash) await new Promise((r) => setTimeout(r, 1000));
  return { calls };
};
"""


# A custom runtime that serves one invocation and exits without asking for the next, as
# runtimes do after reporting a crash: the next invocation must go to a fresh instance.
ONE_SHOT_BOOTSTRAP = """\
#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
id=$(curl -sS -D - -o /dev/null "$api/invocation/next" | tr -d '\\r' |
     sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
printf '{"stream":"%s"}' "$AWS_LAMBDA_LOG_STREAM_NAME" | curl -sS -o /dev/null -X POST "$api/invocation/$id/error" \\
    -H 'Lambda-Runtime-Function-Error-Type: Runtime.OneShot' --data-binary @-
exit 0
"""


class FunctionErrors(NimbusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_daemon()

    def assert_healthy(self):
        t = time.monotonic()
        r = self.d.api("GET", "/healthz", token=None, timeout=5)
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))
        self.assertLess(time.monotonic() - t, 1.0)

    def assert_trace(self, doc):
        self.assertIsInstance(doc.get("stackTrace"), list, doc)
        self.assertTrue(all(isinstance(s, str) for s in doc["stackTrace"]), doc)

    # -- handler errors ------------------------------------------------------------------------

    def test_python_exception_is_function_error_with_class_and_trace(self):
        self.d.deploy("py-boom", dir_files(fixture("py-basic")), "python3", "app.boom")
        r = self.d.invoke("py-boom", {"message": "bad input"})
        doc = self.assert_fn_error(r, "CustomError")
        self.assertEqual(doc["errorMessage"], "bad input")
        self.assert_trace(doc)
        trace = "\n".join(doc["stackTrace"])
        self.assertIn("helper.py", trace)
        self.assertIn("explode", trace)
        self.assertEqual(r.headers["x-nimbus-executed-version"], "1")
        # The instance survives a handled exception: the next call runs on the same one.
        r2 = self.d.invoke("py-boom", {"message": "again"})
        self.assertEqual(self.assert_fn_error(r2, "CustomError")["errorMessage"], "again")
        rids = (r.headers["x-nimbus-request-id"], r2.headers["x-nimbus-request-id"])
        instances = {rec["instance"] for rec in self.d.logs("py-boom") if rec.get("request_id") in rids}
        self.assertEqual(len(instances), 1, instances)

    def test_node_exception_is_function_error_with_class_and_trace(self):
        self.d.deploy("node-boom", dir_files(fixture("node-basic")), "nodejs20.x", "index.boom")
        doc = self.assert_fn_error(self.d.invoke("node-boom", {"message": "nope"}), "ValidationError")
        self.assertEqual(doc["errorMessage"], "nope")
        self.assert_trace(doc)
        self.assertIn("explode", "\n".join(doc["stackTrace"]))

    def test_cli_invoke_exits_1_and_prints_the_error_body(self):
        self.d.deploy("cli-boom", dir_files(fixture("py-basic")), "python3", "app.boom")
        p = self.d.cli("invoke", "cli-boom", '{"message": "from the cli"}')
        self.assertEqual(p.returncode, 1, p)
        doc = json.loads(p.stdout)
        self.assertEqual((doc["errorType"], doc["errorMessage"]), ("CustomError", "from the cli"))
        # Success on the same CLI path exits 0.
        self.d.deploy("cli-ok", dir_files(fixture("py-basic")), "python3", "app.echo")
        p = self.d.cli("invoke", "cli-ok", '{"x": 1}')
        self.assertEqual((p.returncode, json.loads(p.stdout)), (0, {"x": 1}), p)

    # -- init errors ---------------------------------------------------------------------------

    def check_init_error(self, name, code, runtime, handler, error_type, message_part=None):
        self.d.deploy(name, code, runtime, handler)
        t = time.monotonic()
        doc = self.assert_fn_error(self.d.invoke(name), error_type)
        self.assertLess(time.monotonic() - t, 5, "an init failure must be answered at once")
        self.assert_trace(doc)
        if message_part:
            self.assertIn(message_part, doc["errorMessage"])
        # Not cached as a broken state: the next call tries again and fails the same way.
        self.assert_fn_error(self.d.invoke(name), error_type)
        self.assert_healthy()
        return doc

    def test_python_import_error(self):
        self.check_init_error("py-import", dir_files(fixture("py-importerror")), "python3",
                              "app.handler", "Runtime.ImportModuleError", "nimbus_no_such_dependency")

    def test_python_syntax_error(self):
        self.check_init_error("py-syntax", dir_files(fixture("py-syntax")), "python3",
                              "app.handler", "Runtime.UserCodeSyntaxError")

    def test_python_missing_handler_function(self):
        self.check_init_error("py-nohandler", dir_files(fixture("py-basic")), "python3",
                              "app.no_such_function", "Runtime.HandlerNotFound", "no_such_function")

    def test_python_module_raising_at_import(self):
        self.check_init_error("py-initraise", dir_files(fixture("py-initraise")), "python3",
                              "app.handler", "Runtime.ImportModuleError", "config missing")

    def test_node_import_error(self):
        self.check_init_error("node-import", dir_files(fixture("node-importerror")), "nodejs20.x",
                              "index.handler", "Runtime.ImportModuleError")

    def test_node_syntax_error(self):
        self.check_init_error("node-syntax", dir_files(fixture("node-syntax")), "nodejs20.x",
                              "index.handler", "Runtime.UserCodeSyntaxError")

    def test_node_missing_handler_export(self):
        self.check_init_error("node-nohandler", dir_files(fixture("node-basic")), "nodejs20.x",
                              "index.noSuchExport", "Runtime.HandlerNotFound")

    def test_bootstrap_that_exits_immediately(self):
        for name, script in (("exit3", "#!/bin/sh\necho leaving >&2\nexit 3\n"),
                             ("exit0", "#!/bin/sh\nexit 0\n")):
            with self.subTest(name):
                code = {"bootstrap": File(script, 0o755)}
                doc = self.check_init_error(name, code, "provided", "x", "Runtime.ExitError")
                if name == "exit3":
                    self.assertIn("3", doc["errorMessage"])

    def test_bootstrap_without_exec_permission(self):
        code = {"bootstrap": File("#!/bin/sh\nexit 0\n", 0o644)}
        for packer in ("tar", "zip"):
            with self.subTest(packer):
                archive = tar_bytes(code) if packer == "tar" else zip_bytes(code)
                self.check_init_error("noexec-" + packer, archive, "provided.al2023", "x",
                                      "Runtime.InvalidEntrypoint")

    def test_bootstrap_speaking_garbage_on_the_channel(self):
        # A zero-length frame on fd 3 is a protocol error: the instance is killed.
        code = {"bootstrap": File("#!/bin/sh\nprintf '\\000\\000\\000\\000' >&3\nexec sleep 30\n", 0o755)}
        self.check_init_error("garbage", code, "provided", "x", "Runtime.InvalidProtocol")

    # -- crashes mid-invocation ------------------------------------------------------------------

    def test_sys_exit_and_os_exit_mid_invocation(self):
        self.d.deploy("py-exit", {"app.py": COUNTER_PY}, "python3", "app.handler")
        for event in ({"sys_exit": 3}, {"os_exit": 0}, {"os_exit": 7}):
            with self.subTest(event=event):
                self.assertEqual(self.assert_ok(self.d.invoke("py-exit"))["calls"], 1)
                self.assertEqual(self.assert_ok(self.d.invoke("py-exit"))["calls"], 2)
                t = time.monotonic()
                doc = self.assert_fn_error(self.d.invoke("py-exit", event), "Runtime.ExitError")
                self.assertLess(time.monotonic() - t, 3)
                self.assertIn("exit", doc["errorMessage"].lower())
                # The next invocation runs on a fresh instance: module state starts over.
                self.assertEqual(self.assert_ok(self.d.invoke("py-exit"))["calls"], 1)
                # Reset for the next subtest: crash it once more on purpose.
                self.assert_fn_error(self.d.invoke("py-exit", {"os_exit": 1}), "Runtime.ExitError")
        self.assert_healthy()

    def test_node_process_exit_mid_invocation(self):
        self.d.deploy("node-exit", {"index.mjs": COUNTER_NODE}, "nodejs20.x", "index.handler")
        self.assertEqual(self.assert_ok(self.d.invoke("node-exit"))["calls"], 1)
        self.assertEqual(self.assert_ok(self.d.invoke("node-exit"))["calls"], 2)
        doc = self.assert_fn_error(self.d.invoke("node-exit", {"exit": 2}), "Runtime.ExitError")
        self.assertIn("exit status 2", doc["errorMessage"])
        self.assertEqual(self.assert_ok(self.d.invoke("node-exit"))["calls"], 1)
        self.assertEqual(self.assert_ok(self.d.invoke("node-exit"))["calls"], 2)

    def test_node_uncaught_async_exception_fails_the_invocation_and_recovers(self):
        self.d.deploy("node-crash", {"index.mjs": COUNTER_NODE}, "nodejs20.x", "index.handler")
        self.assertEqual(self.assert_ok(self.d.invoke("node-crash"))["calls"], 1)
        doc = self.assert_fn_error(self.d.invoke("node-crash", {"crash": True}), "Error")
        self.assertEqual(doc["errorMessage"], "async crash")
        self.assert_trace(doc)
        # The runtime exits after reporting the crash (as Lambda's does) and says so with a
        # FATAL_ERROR frame, so the very next call, made at once, goes to a fresh instance.
        self.assertEqual(self.assert_ok(self.d.invoke("node-crash"))["calls"], 1)

    def test_runtime_exiting_after_its_answer_does_not_fail_the_next_call(self):
        self.d.deploy("one-shot", {"bootstrap": File(ONE_SHOT_BOOTSTRAP, 0o755)}, "provided", "x")
        streams = set()
        for i in range(5):
            with self.subTest(call=i):
                r = self.d.invoke("one-shot")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get("x-nimbus-function-error"), "Handled", r)
                streams.add(r.json()["stream"])  # the log stream name is random per instance
        self.assertEqual(len(streams), 5, "each call must have run on its own instance")

    def test_oversized_response(self):
        self.d.deploy("py-big", {"app.py": COUNTER_PY}, "python3", "app.handler")
        doc = self.assert_fn_error(self.d.invoke("py-big", {"big": 7 << 20}), "Function.ResponseSizeTooLarge")
        self.assertIn("6291456", doc["errorMessage"])
        r = self.d.invoke("py-big", {"big": 1 << 20})
        self.assertEqual(len(self.assert_ok(r)), 1 << 20)

    def test_concurrent_crashes_do_not_wedge_the_daemon(self):
        self.d.deploy("py-crashy", {"app.py": COUNTER_PY}, "python3", "app.handler")
        results = [None] * 8

        def call(i):
            event = {"os_exit": 1} if i % 2 else {}
            results[i] = self.d.invoke("py-crashy", event, timeout=20)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(results))]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        self.assertLess(time.monotonic() - t, 15)
        for i, r in enumerate(results):
            self.assertIsNotNone(r, f"invocation {i} got no answer")
            if i % 2:
                self.assert_fn_error(r, "Runtime.ExitError")
            else:
                self.assertIn("calls", self.assert_ok(r))
        self.assert_healthy()
        self.assertGreaterEqual(self.assert_ok(self.d.invoke("py-crashy"))["calls"], 1)

    def test_concurrent_init_failures_all_get_an_answer(self):
        self.d.deploy("py-import-many", dir_files(fixture("py-importerror")), "python3", "app.handler")
        self.d.deploy("exit-many", {"bootstrap": File("#!/bin/sh\nexit 1\n", 0o755)}, "provided", "x")
        for name, error_type in (("py-import-many", "Runtime.ImportModuleError"),
                                 ("exit-many", "Runtime.ExitError")):
            with self.subTest(name):
                results = [None] * 6
                threads = [threading.Thread(target=lambda i=i: results.__setitem__(
                    i, self.d.invoke(name, timeout=20))) for i in range(len(results))]
                t = time.monotonic()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join(30)
                self.assertLess(time.monotonic() - t, 10)
                for r in results:
                    self.assertIsNotNone(r)
                    self.assert_fn_error(r, error_type)
        self.assert_healthy()


if __name__ == "__main__":
    unittest.main()
