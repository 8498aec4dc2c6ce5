"""The python3 and nodejs runtime shims, driven directly over the native channel (no daemon).

Each test starts a shim the way the daemon does (chanpeer.RuntimePeer: fd 3, cwd, Lambda env)
against the examples or the functions under fixtures/, and checks the frames it sends back.
Run: cd tests/e2e && python3 -m unittest -v test_runtimes_channel
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chanpeer import (  # noqa: E402
    FRAME_ERROR, FRAME_FATAL_ERROR, FRAME_NAMES, FRAME_RESPONSE, NODE, PYTHON, RuntimePeer,
    decode_reply, nimbus_src)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
EXAMPLES = os.path.join(nimbus_src(), "examples")
MIB = 1024 * 1024


class ShimTests:
    """Behaviour both shims must share. Subclasses fill in the runtime-specific names."""

    spawn = None  # RuntimePeer.python or RuntimePeer.node
    runtime = ""  # the "runtime" field of the hello example's result
    example = ""  # hello example directory and handler
    example_handler = ""
    basic = ""  # fixture directory with many handlers, and their names in it
    handlers = {}
    prefix = ""  # name prefix of the single-purpose fixture directories (py-syntax, ...)
    error_class = ""  # class name of the error fixtures' "boom" throws
    helper_file = ""  # source file the "boom" error is raised in
    fixture_module = ""  # module part of the handler in the init-failure fixtures
    memory_value = None  # context's memory limit for the default 128 MB (int in Python, str in Node)
    context_fields = {}  # names the context fixtures report each context value under

    # -- helpers ---------------------------------------------------------------------------------

    def start(self, code_dir, handler, **kw):
        peer = type(self).spawn(code_dir, handler, **kw).start()
        self.addCleanup(peer.cleanup)
        return peer

    def ready(self, code_dir, handler, **kw):
        peer = self.start(code_dir, handler, **kw)
        peer.expect_ready()
        return peer

    def basic_peer(self, name):
        return self.ready(os.path.join(FIXTURES, self.basic), self.handlers[name])

    def init_failure(self, code_dir, handler):
        """Starts a runtime that must fail init: returns the INIT_ERROR's error JSON."""
        peer = self.start(code_dir, handler)
        reply = peer.expect_init_error()
        self.assertEqual(peer.wait(), 1, "runtime must exit 1 after INIT_ERROR")
        doc = reply.json()
        self.assertEqual(doc["errorType"], reply.error_type)
        self.assertIsInstance(doc["errorMessage"], str)
        self.assertIsInstance(doc["stackTrace"], list)
        return doc

    def assert_response(self, reply):
        self.assertEqual(reply.type, FRAME_RESPONSE, f"expected RESPONSE, got {reply}")
        return reply.json()

    def assert_error(self, reply, error_type, frame_type=FRAME_ERROR):
        self.assertEqual(reply.type, frame_type, f"expected {FRAME_NAMES[frame_type]}, got {reply}")
        self.assertEqual(reply.error_type, error_type)
        doc = reply.json()
        self.assertEqual(doc["errorType"], error_type)
        self.assertIsInstance(doc["stackTrace"], list)
        self.assertTrue(all(isinstance(line, str) for line in doc["stackTrace"]))
        return doc

    # -- the hello example -----------------------------------------------------------------------

    def test_example_ready_then_result(self):
        peer = self.ready(os.path.join(EXAMPLES, self.example), self.example_handler)
        result = self.assert_response(peer.invoke({"name": "Ann"}))
        self.assertEqual(result, {"message": "Hello, Ann!", "count": 1, "runtime": self.runtime})
        # The print happened before the answer was sent, so it is already in the log: not buffered.
        self.assertIn("hello called 1 times", peer.stdout())

    def test_example_warm_instance_keeps_module_state(self):
        peer = self.ready(os.path.join(EXAMPLES, self.example), self.example_handler)
        counts = [self.assert_response(peer.invoke({"name": "x"}))["count"] for _ in range(3)]
        self.assertEqual(counts, [1, 2, 3])
        # A non-object event is fine too.
        result = self.assert_response(peer.invoke("just a string"))
        self.assertEqual(result, {"message": "Hello, world!", "count": 4, "runtime": self.runtime})
        log = peer.stdout()
        self.assertLess(log.index("hello called 3 times"), log.index("hello called 4 times"))

    # -- handler failures ------------------------------------------------------------------------

    def test_handler_exception_is_error_frame_and_instance_survives(self):
        peer = self.basic_peer("boom")
        doc = self.assert_error(peer.invoke({"message": "bad input"}), self.error_class)
        self.assertEqual(doc["errorMessage"], "bad input")
        trace = "\n".join(doc["stackTrace"])
        self.assertIn(self.helper_file, trace)
        self.assertIn("explode", trace)
        # Same process, next invocation works and fails on its own terms.
        doc = self.assert_error(peer.invoke({"message": "again"}), self.error_class)
        self.assertEqual(doc["errorMessage"], "again")

    def test_invalid_json_event_is_unmarshal_error(self):
        peer = self.basic_peer("echo")
        self.assert_error(peer.invoke(b"{not json"), "Runtime.UnmarshalError")
        self.assertEqual(self.assert_response(peer.invoke({"ok": 1})), {"ok": 1})

    def test_unserializable_result_is_marshal_error(self):
        peer = self.basic_peer("unserializable")
        self.assert_error(peer.invoke({}), "Runtime.MarshalError")

    def test_oversized_result_is_reported_not_sent(self):
        peer = self.basic_peer("big")
        doc = self.assert_error(peer.invoke({"size": 7 * MIB}), "Function.ResponseSizeTooLarge")
        self.assertIn("6291456", doc["errorMessage"])
        # Just under the limit goes through whole.
        result = self.assert_response(peer.invoke({"size": 6 * MIB - 2}))
        self.assertEqual(len(result), 6 * MIB - 2)

    # -- init failures ---------------------------------------------------------------------------

    def test_missing_module_is_import_module_error(self):
        doc = self.init_failure(os.path.join(FIXTURES, self.basic), "nosuch.handler")
        self.assertEqual(doc["errorType"], "Runtime.ImportModuleError")
        self.assertIn("nosuch", doc["errorMessage"])

    def test_missing_dependency_is_import_module_error(self):
        doc = self.init_failure(os.path.join(FIXTURES, self.prefix + "importerror"),
                                   self.fixture_module + ".handler")
        self.assertEqual(doc["errorType"], "Runtime.ImportModuleError")
        self.assertRegex(doc["errorMessage"], "nimbus[_-]no[_-]such")

    def test_module_raising_at_import_is_import_module_error(self):
        doc = self.init_failure(os.path.join(FIXTURES, self.prefix + "initraise"),
                                   self.fixture_module + ".handler")
        self.assertEqual(doc["errorType"], "Runtime.ImportModuleError")
        self.assertIn("config missing", doc["errorMessage"])
        self.assertIn("initraise", "\n".join(doc["stackTrace"]))

    def test_syntax_error_is_user_code_syntax_error(self):
        doc = self.init_failure(os.path.join(FIXTURES, self.prefix + "syntax"),
                                self.fixture_module + ".handler")
        self.assertEqual(doc["errorType"], "Runtime.UserCodeSyntaxError")
        self.assertIn("syntax", "\n".join(doc["stackTrace"]).lower())

    def test_missing_handler_is_handler_not_found(self):
        module = self.handlers["echo"].split(".")[0]
        doc = self.init_failure(os.path.join(FIXTURES, self.basic), module + ".nope")
        self.assertEqual(doc["errorType"], "Runtime.HandlerNotFound")
        self.assertIn("nope", doc["errorMessage"])

    def test_non_callable_handler_is_handler_not_found(self):
        doc = self.init_failure(os.path.join(FIXTURES, self.basic), self.handlers["not_callable"])
        self.assertEqual(doc["errorType"], "Runtime.HandlerNotFound")

    def test_handler_without_dot_is_malformed(self):
        doc = self.init_failure(os.path.join(FIXTURES, self.basic), "app")
        self.assertEqual(doc["errorType"], "Runtime.MalformedHandlerName")

    # -- context and environment -----------------------------------------------------------------

    def context_of(self, peer, **kw):
        return self.assert_response(peer.invoke({}, **kw))

    def test_context_fields(self):
        peer = self.basic_peer("context")
        deadline = int(time.time() * 1000) + 5000
        arn = "arn:aws:lambda:us-east-1:000000000000:function:test-fn:7"
        rid = "11111111-2222-3333-4444-555555555555"
        cc = json.dumps({"custom": {"k": "v"}, "client": {"app_title": "T"}})
        ctx = self.context_of(peer, request_id=rid, arn=arn, deadline_ms=deadline,
                              trace_id="Root=1-abc;Sampled=1", client_context=cc)
        f = self.context_fields
        self.assertEqual(ctx[f["request_id"]], rid)
        self.assertEqual(ctx[f["arn"]], arn)
        self.assertEqual(ctx[f["function_name"]], "test-fn")
        self.assertEqual(ctx[f["function_version"]], "$LATEST")
        self.assertEqual(ctx[f["memory"]], self.memory_value)
        self.assertEqual(ctx[f["log_group"]], "/aws/lambda/test-fn")
        self.assertTrue(ctx[f["log_stream"]].endswith("0123456789abcdef0123456789abcdef"))
        self.assertGreater(ctx[f["remaining"]], 3000)
        self.assertLessEqual(ctx[f["remaining"]], 5000)
        self.assertEqual(ctx[f["trace"]], "Root=1-abc;Sampled=1")
        self.assertIsNone(ctx[f["channel_fd_env"]], "NIMBUS_CHANNEL_FD must be hidden from user code")
        self.assertEqual(os.path.realpath(ctx["cwd"]), os.path.realpath(os.path.join(FIXTURES, self.basic)))
        self.check_runtime_context(ctx)  # client context and language-specific fields

        # Per-invocation values do not leak into the next invocation.
        ctx = self.context_of(peer, deadline_ms=int(time.time() * 1000) - 1000)
        self.assertEqual(ctx[f["remaining"]], 0, "remaining time is never negative")
        self.assertIsNone(ctx[f["trace"]])
        self.assertNotEqual(ctx[f["request_id"]], rid)

    def test_unicode_and_large_event_round_trip(self):
        peer = self.basic_peer("echo")
        event = {"text": "héllo wörld ☃ 😀 日本語 \u0000 \"quoted\"", "blob": "ü" * (MIB // 2),
                 "n": [1, 2.5, None, True]}
        raw = json.dumps(event, ensure_ascii=False).encode("utf-8")
        self.assertGreater(len(raw), MIB)
        self.assertEqual(self.assert_response(peer.invoke(raw)), event)
        # And again on the warm instance, to catch framing that loses bytes between frames.
        self.assertEqual(self.assert_response(peer.invoke(raw)), event)

    def test_empty_event_is_empty_object_and_null_is_null(self):
        peer = self.basic_peer("echo")
        self.assertEqual(self.assert_response(peer.invoke(b"")), {})
        self.assertIsNone(self.assert_response(peer.invoke(b"null")))

    # -- channel lifecycle -----------------------------------------------------------------------

    def test_channel_eof_exits_zero(self):
        peer = self.basic_peer("echo")
        self.assert_response(peer.invoke({}))
        self.assertEqual(peer.close(), 0)

    def test_protocol_violation_exits_nonzero(self):
        peer = self.basic_peer("echo")
        peer.send_frame(9, b"junk")
        self.assertTrue(peer.at_eof(), "runtime must drop the channel")
        self.assertEqual(peer.wait(), 1)
        self.assertIn("protocol", peer.stderr())


class PythonShimTests(ShimTests, unittest.TestCase):
    spawn = RuntimePeer.python
    runtime = "python3"
    example, example_handler = "python-hello", "app.handler"
    basic = "py-basic"
    prefix = "py-"
    fixture_module = "app"
    handlers = {"echo": "app.echo", "context": "app.context_info", "boom": "app.boom", "big": "app.big",
                "unserializable": "app.unserializable", "not_callable": "app.not_callable"}
    error_class = "CustomError"
    helper_file = "helper.py"
    memory_value = 128
    context_fields = {"request_id": "aws_request_id", "arn": "invoked_function_arn",
                      "function_name": "function_name", "function_version": "function_version",
                      "memory": "memory_limit_in_mb", "log_group": "log_group_name",
                      "log_stream": "log_stream_name", "remaining": "remaining_ms", "trace": "trace_id",
                      "channel_fd_env": "channel_fd_env"}

    @classmethod
    def setUpClass(cls):
        if not os.access(PYTHON, os.X_OK):
            raise unittest.SkipTest(f"{PYTHON} not found")

    def check_runtime_context(self, ctx):
        self.assertEqual(ctx["sys_path0"], os.path.join(FIXTURES, self.basic), "task root must come first")
        self.assertEqual(ctx["client_custom"], {"k": "v"})
        self.assertEqual(ctx["client_app_title"], "T")
        self.assertIsNone(ctx["identity"])

    def test_error_carries_request_id_and_user_frames_only(self):
        peer = self.basic_peer("boom")
        rid = peer.send_invoke({})
        doc = self.assert_error(decode_reply(peer.read_frame()), "CustomError")
        self.assertEqual(doc["requestId"], rid)
        self.assertEqual(len(doc["stackTrace"]), 2, doc["stackTrace"])
        self.assertRegex(doc["stackTrace"][0], r'File ".*/app\.py", line \d+, in boom')
        self.assertRegex(doc["stackTrace"][1], r'File ".*/helper\.py", line \d+, in explode')
        self.assertIn("[ERROR] CustomError: boom", peer.stdout())

    def test_handler_in_subdirectory_by_path_and_by_dots(self):
        for handler in ("src/pkg/mod.handler", "src.pkg.mod.handler"):
            with self.subTest(handler=handler):
                peer = self.ready(os.path.join(FIXTURES, "py-nested"), handler)
                self.assertEqual(self.assert_response(peer.invoke({})), {"module": "src.pkg.mod"})

    def test_logging_uses_lambda_format(self):
        peer = self.ready(os.path.join(FIXTURES, "py-basic"), "app.log_and_return")
        rid = "req-logging-1"
        self.assertEqual(self.assert_response(peer.invoke({"n": 7}, request_id=rid)), 7)
        self.assertRegex(peer.stdout(),
                         r"(?m)^\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
                         r"\treq-logging-1\twarned 7$")
        self.assertIn("printed 7\n", peer.stdout())

    def test_decimal_result_is_a_number(self):
        peer = self.ready(os.path.join(FIXTURES, "py-basic"), "app.decimal_result")
        result = self.assert_response(peer.invoke({}))
        self.assertEqual(result, {"whole": 3, "fraction": 1.5})
        self.assertIsInstance(result["whole"], int)

    def test_sys_exit_in_handler_ends_process_without_answer(self):
        peer = self.ready(os.path.join(FIXTURES, "py-basic"), "app.exit_now")
        peer.send_invoke({})
        self.assertTrue(peer.at_eof())
        self.assertEqual(peer.wait(), 3)


class NodeShimTests(ShimTests, unittest.TestCase):
    spawn = RuntimePeer.node
    runtime = "nodejs"
    example, example_handler = "node-hello", "index.handler"
    basic = "node-basic"
    prefix = "node-"
    fixture_module = "index"
    handlers = {"echo": "index.echo", "context": "index.contextInfo", "boom": "index.boom",
                "big": "index.big", "unserializable": "index.bigint", "not_callable": "index.notAFunction"}
    error_class = "ValidationError"
    helper_file = "index.mjs"
    memory_value = "128"
    context_fields = {"request_id": "awsRequestId", "arn": "invokedFunctionArn",
                      "function_name": "functionName", "function_version": "functionVersion",
                      "memory": "memoryLimitInMB", "log_group": "logGroupName",
                      "log_stream": "logStreamName", "remaining": "remainingMs", "trace": "traceId",
                      "channel_fd_env": "channelFdEnv"}

    @classmethod
    def setUpClass(cls):
        if not os.access(NODE, os.X_OK):
            raise unittest.SkipTest(f"{NODE} not found")

    def check_runtime_context(self, ctx):
        self.assertEqual(ctx["clientContext"], {"custom": {"k": "v"}, "client": {"app_title": "T"}})
        self.assertIs(ctx["callbackWaitsForEmptyEventLoop"], True)

    def test_error_has_trace_and_stack_trace(self):
        peer = self.basic_peer("boom")
        doc = self.assert_error(peer.invoke({}), "ValidationError")
        self.assertEqual(doc["trace"], doc["stackTrace"])
        self.assertEqual(doc["stackTrace"][0], "ValidationError: boom")
        self.assertRegex(doc["stackTrace"][1], r"at explode \(.*/node-basic/index\.mjs:\d+:\d+\)")

    def test_thrown_non_error_value(self):
        peer = self.ready(os.path.join(FIXTURES, "node-basic"), "index.throwString")
        doc = self.assert_error(peer.invoke({}), "string")
        self.assertEqual(doc["errorMessage"], "plain string")
        self.assertEqual(doc["stackTrace"], [])

    def test_commonjs_exports(self):
        peer = self.ready(os.path.join(FIXTURES, "node-cjs"), "index.handler")
        result = self.assert_response(peer.invoke({"a": 1}))
        self.assertEqual(result, {"kind": "cjs", "typeofRequire": "function", "event": {"a": 1}})

    def test_cjs_extension_is_found(self):
        peer = self.ready(os.path.join(FIXTURES, "node-cjs"), "other.handler")
        self.assertEqual(self.assert_response(peer.invoke({})), {"kind": "cjs-ext"})

    def test_js_is_esm_under_type_module(self):
        peer = self.ready(os.path.join(FIXTURES, "node-esm-typemodule"), "index.handler")
        result = self.assert_response(peer.invoke({}))
        self.assertEqual(result["kind"], "esm")
        self.assertEqual(result["typeofRequire"], "undefined")
        self.assertTrue(result["url"].endswith("/node-esm-typemodule/index.js"))

    def test_nested_export_path(self):
        peer = self.ready(os.path.join(FIXTURES, "node-basic"), "index.nested.deeper.handler")
        self.assertEqual(self.assert_response(peer.invoke({})), "nested ok")

    def test_callback_handler(self):
        peer = self.ready(os.path.join(FIXTURES, "node-callback"), "index.handler")
        self.assertEqual(self.assert_response(peer.invoke({"n": 1})), {"viaCallback": 1})
        self.assertEqual(self.assert_response(peer.invoke({"n": 2})), {"viaCallback": 2})

    def test_callback_error(self):
        peer = self.ready(os.path.join(FIXTURES, "node-callback"), "index.fails")
        doc = self.assert_error(peer.invoke({}), "TypeError")
        self.assertEqual(doc["errorMessage"], "callback failure")

    def test_legacy_context_succeed_and_fail(self):
        peer = self.ready(os.path.join(FIXTURES, "node-callback"), "index.succeed")
        self.assertEqual(self.assert_response(peer.invoke({})), "legacy succeed")
        peer = self.ready(os.path.join(FIXTURES, "node-callback"), "index.fail")
        doc = self.assert_error(peer.invoke({}), "Error")
        self.assertEqual(doc["errorMessage"], "legacy fail")

    def test_callback_waits_for_empty_event_loop_unless_told_not_to(self):
        peer = self.ready(os.path.join(FIXTURES, "node-callback"), "index.waits")
        t0 = time.monotonic()
        self.assertEqual(self.assert_response(peer.invoke({"wait": True})), "done")
        self.assertGreaterEqual(time.monotonic() - t0, 0.45, "answer must wait for the 500 ms timer")
        t0 = time.monotonic()
        self.assertEqual(self.assert_response(peer.invoke({"wait": False})), "done")
        self.assertLess(time.monotonic() - t0, 0.4, "answer must not wait for the timer")

    def test_handler_that_never_answers_returns_null(self):
        peer = self.ready(os.path.join(FIXTURES, "node-basic"), "index.neverAnswers")
        self.assertIsNone(self.assert_response(peer.invoke({})))
        self.assertIsNone(self.assert_response(peer.invoke({})))

    def test_uncaught_exception_fails_invocation_then_exits(self):
        peer = self.ready(os.path.join(FIXTURES, "node-basic"), "index.uncaught")
        doc = self.assert_error(peer.invoke({}), "Error", FRAME_FATAL_ERROR)
        self.assertEqual(doc["errorMessage"], "from a timer")
        self.assertEqual(peer.wait(), 1)

    def test_unhandled_rejection_fails_invocation_then_exits(self):
        peer = self.ready(os.path.join(FIXTURES, "node-basic"), "index.unhandledRejection")
        doc = self.assert_error(peer.invoke({}), "Runtime.UnhandledPromiseRejection", FRAME_FATAL_ERROR)
        self.assertIn("nobody catches me", doc["errorMessage"])
        self.assertEqual(peer.wait(), 1)

    def test_console_uses_lambda_text_format(self):
        peer = self.ready(os.path.join(FIXTURES, "node-basic"), "index.logLevels")
        rid = "req-console-1"
        self.assertEqual(self.assert_response(peer.invoke({}, request_id=rid)), "ok")
        ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        out, err = peer.stdout(), peer.stderr()
        self.assertRegex(out, rf"(?m)^{ts}\treq-console-1\tINFO\tlog 1$")
        self.assertRegex(out, rf"(?m)^{ts}\treq-console-1\tINFO\tinfo {{ a: 1 }}$")
        self.assertRegex(err, rf"(?m)^{ts}\treq-console-1\tWARN\twarn$")
        self.assertRegex(err, rf"(?m)^{ts}\treq-console-1\tERROR\terror$")
        self.assertNotIn("warn", out)


if __name__ == "__main__":
    unittest.main()
