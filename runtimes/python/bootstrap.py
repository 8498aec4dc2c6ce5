"""nimbus python3 runtime shim.

Started by the daemon as `python3 -u -B bootstrap.py` with cwd = the function's code directory and
the channel socket on fd NIMBUS_CHANNEL_FD (see docs/internals/channel.md). It imports the handler
named by _HANDLER, sends READY, then answers INVOKE frames one at a time with RESPONSE or ERROR,
behaving like the AWS Lambda Python runtime as far as user code can tell.

Exit status: 0 when the daemon closes the channel, 1 after an INIT_ERROR or a protocol violation
by the daemon.
A handler calling sys.exit() ends the process with that status (the daemon reports
Runtime.ExitError for the invocation in flight, as Lambda does).

Only cheap stdlib modules are imported up front: every millisecond here is cold-start latency.
"""

import importlib
import json
import os
import struct
import sys
import time

FRAME_READY = 1
FRAME_INVOKE = 2
FRAME_RESPONSE = 3
FRAME_ERROR = 4
FRAME_INIT_ERROR = 5
FRAME_CALL = 7
FRAME_CALL_RESULT = 8

# Largest frame body the daemon accepts (type byte included); anything bigger kills the instance.
MAX_FRAME = 6 * 1024 * 1024 + 64 * 1024
# Lambda's limit for a synchronous response; above it the caller gets Function.ResponseSizeTooLarge.
MAX_RESPONSE = 6 * 1024 * 1024

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")


class ChannelClosed(Exception):
    """The daemon closed its end of the channel."""


class ProtocolError(Exception):
    """The daemon sent something the channel protocol does not allow."""


class Channel:
    """Blocking frame I/O on the channel fd with plain os.read/os.write (no socket module needed)."""

    def __init__(self, fd):
        self.fd = fd
        os.set_blocking(fd, True)
        # Keep the channel out of any process the user's code starts.
        os.set_inheritable(fd, False)

    def _read_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = os.readv(self.fd, [view[got:]])
            if k == 0:
                raise ChannelClosed()
            got += k
        return buf

    def read_frame(self):
        """Returns (type, body) with body a memoryview of the frame after its type byte."""
        try:
            (length,) = _U32.unpack(self._read_exact(4))
            if length == 0 or length > MAX_FRAME:
                raise ProtocolError(f"bad frame length {length}")
            frame = self._read_exact(length)
        except ConnectionError as e:
            raise ChannelClosed() from e
        return frame[0], memoryview(frame)[1:]

    def write_frame(self, ftype, *parts):
        body_len = 1 + sum(len(p) for p in parts)
        data = memoryview(b"".join((_U32.pack(body_len), bytes((ftype,)), *parts)))
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except ConnectionError as e:
            raise ChannelClosed() from e


def _pack_str(s, limit=0xFFFF):
    raw = s.encode("utf-8", "replace")[:limit]
    return _U16.pack(len(raw)) + raw


def _unpack_str(body, off):
    if off + 2 > len(body):
        raise ProtocolError("string header past end of frame")
    (n,) = _U16.unpack_from(body, off)
    off += 2
    if off + n > len(body):
        raise ProtocolError("string runs past end of frame")
    return str(body[off:off + n], "utf-8", "replace"), off + n


def _error_json(message, etype, trace, request_id=None):
    """The Lambda error document; shrunk if it would not fit in one frame."""
    doc = {"errorMessage": message, "errorType": etype}
    if request_id is not None:
        doc["requestId"] = request_id
    doc["stackTrace"] = trace
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8", "backslashreplace")
    if len(raw) > MAX_RESPONSE:
        doc["errorMessage"] = message[:4096] + " ... (truncated)"
        doc["stackTrace"] = trace[:50]
        raw = json.dumps(doc, ensure_ascii=False).encode("utf-8", "backslashreplace")
    return raw


def _format_trace(tb):
    """AWS-style stackTrace: one string per frame of user code."""
    import traceback  # only needed when something failed

    # This file's frames and the import machinery's (for failures while importing) are noise.
    noise = (__file__, importlib.__file__)
    frames = [f for f in traceback.extract_tb(tb)
              if f.filename not in noise and not f.filename.startswith("<frozen importlib")]
    return traceback.format_list(frames)


def _exception_message(e):
    try:
        return str(e)
    except Exception:  # a user-defined __str__ that raises must not take the runtime down
        return "<exception str() failed>"


def _log_error(etype, message, trace):
    # Same text the Lambda Python runtime writes to the function's log for an unhandled error.
    lines = [f"[ERROR] {etype}: {message}"]
    if trace:
        lines.append("Traceback (most recent call last):")
        lines.extend(t.rstrip("\n") for t in trace)
    print("\n".join(lines), flush=True)


class InitError(Exception):
    def __init__(self, etype, message, trace=()):
        super().__init__(message)
        self.etype, self.message, self.trace = etype, message, list(trace)


def load_handler(spec):
    """Imports the module named by _HANDLER ("module.function", module may be a/b/c or a.b.c)."""
    modname, dot, fname = spec.rpartition(".")
    if not dot or not modname or not fname:
        raise InitError("Runtime.MalformedHandlerName",
                        f"Bad handler '{spec}': not enough values to unpack (expected 2, got 1)")
    modname = modname.replace("/", ".")
    try:
        module = importlib.import_module(modname)
    except SyntaxError as e:
        # The traceback of a SyntaxError is import machinery; the useful location is in e itself.
        trace = [f'  File "{e.filename}" Line {e.lineno}\n    {(e.text or "").strip()}\n']
        raise InitError("Runtime.UserCodeSyntaxError",
                        f"Syntax error in module '{modname}': {e}", trace) from None
    except ImportError as e:
        raise InitError("Runtime.ImportModuleError",
                        f"Unable to import module '{modname}': {e}",
                        _format_trace(e.__traceback__)) from None
    except Exception as e:
        raise InitError("Runtime.ImportModuleError",
                        f"Unable to import module '{modname}': {type(e).__name__}: {_exception_message(e)}",
                        _format_trace(e.__traceback__)) from None
    handler = getattr(module, fname, None)
    if handler is None:
        raise InitError("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    if not callable(handler):
        raise InitError("Runtime.HandlerNotFound", f"Handler '{fname}' on module '{modname}' is not callable")
    return handler


class Client:
    """context.client_context.client, as in Lambda (mobile SDK client information)."""

    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, d):
        for name in self.__slots__:
            setattr(self, name, d.get(name))


class ClientContext:
    __slots__ = ("custom", "env", "client")

    def __init__(self, d):
        self.custom = d.get("custom")
        self.env = d.get("env")
        client = d.get("client")
        self.client = Client(client) if isinstance(client, dict) else None


class LambdaContext:
    """The `context` argument; attribute names match the Lambda Python runtime."""

    # Per-process values, read once.
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 128)
    log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
    log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
    identity = None

    def __init__(self, request_id, arn, deadline_ms, client_context):
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self):
        return f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r})"


def _json_default(o):
    # Lambda serialises Decimal (e.g. from DynamoDB) as a number. Only look for it if the user's
    # code loaded the decimal module; importing it here would cost every cold start.
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(o, decimal.Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _marshal(result):
    # Strict JSON (allow_nan=False): the daemon and its callers expect JSON text, and NaN is not.
    # Unicode is sent as-is (as Lambda's Python 3.12+ runtimes do); strings with lone surrogates
    # cannot be UTF-8, so they fall back to \u escapes.
    try:
        return json.dumps(result, ensure_ascii=False, allow_nan=False, default=_json_default).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(result, allow_nan=False, default=_json_default).encode("ascii")


def _setup_logging():
    """Give the root logger Lambda's text format, with the request id of the running invocation."""
    import logging

    class RequestIdFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _current_request_id or ""
            return True

    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logging.getLogger().addHandler(handler)


_current_request_id = None


class _Calls:
    """CALL frames from user code (the `nimbus` module, runtimes/python/nimbus.py) and their
    CALL_RESULTs. Several threads of one invocation may call at once: each writes its frame
    under `lock`, then takes turns reading frames until its own answer has arrived (the daemon
    sends nothing else while an invocation runs)."""

    def __init__(self, chan):
        import threading  # already loaded by logging

        self.chan = chan
        self.lock = threading.Lock()
        self.read_lock = threading.Lock()
        self.results = {}
        self.next_id = 0

    def call(self, op, target, attrs, body):
        if _current_request_id is None:
            raise RuntimeError("nimbus calls work only while a handler runs")
        with self.lock:
            self.next_id = (self.next_id + 1) & 0xFFFFFFFF
            cid = self.next_id
            self.chan.write_frame(FRAME_CALL, _U32.pack(cid), _pack_str(op), _pack_str(target),
                                  _pack_str(attrs), body)
        while True:
            with self.read_lock:
                if cid in self.results:
                    return self.results.pop(cid)
                ftype, fbody = self.chan.read_frame()
                if ftype != FRAME_CALL_RESULT or len(fbody) < 6:
                    raise ProtocolError(f"unexpected frame type {ftype} during a call")
                (rid,) = _U32.unpack_from(fbody, 0)
                (status,) = _U16.unpack_from(fbody, 4)
                code, off = _unpack_str(fbody, 6)
                self.results[rid] = (status, code, bytes(fbody[off:]))


_calls = None


def _nimbus_call(op, target, attrs, body):
    """What the nimbus module calls: (status, error_code, body bytes)."""
    return _calls.call(op, target, attrs, body)


def invoke(chan, handler, body):
    """Runs one INVOKE and answers it with exactly one RESPONSE or ERROR frame."""
    global _current_request_id
    if len(body) < 8:
        raise ProtocolError("INVOKE frame too short")
    (deadline_ms,) = _U64.unpack_from(body, 0)
    request_id, off = _unpack_str(body, 8)
    arn, off = _unpack_str(body, off)
    trace_id, off = _unpack_str(body, off)
    client_context_text, off = _unpack_str(body, off)
    payload = body[off:]

    _current_request_id = request_id
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    rid = _pack_str(request_id)

    def fail(etype, message, trace):
        _log_error(etype, message, trace)
        doc = _error_json(message, etype, trace, request_id)
        chan.write_frame(FRAME_ERROR, rid, _pack_str(etype, 1024), doc)

    try:
        event = json.loads(payload.tobytes()) if len(payload) else {}
        client_context = None
        if client_context_text:
            parsed = json.loads(client_context_text)
            client_context = ClientContext(parsed) if isinstance(parsed, dict) else None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        fail("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}", [])
        return

    context = LambdaContext(request_id, arn, deadline_ms, client_context)
    try:
        result = handler(event, context)
    except Exception as e:
        fail(type(e).__name__, _exception_message(e), _format_trace(e.__traceback__))
        return

    try:
        raw = _marshal(result)
    except (TypeError, ValueError, RecursionError) as e:
        fail("Runtime.MarshalError", f"Unable to marshal response: {e}", [])
        return
    if len(raw) > MAX_RESPONSE:
        fail("Function.ResponseSizeTooLarge",
             f"Response payload size ({len(raw)} bytes) exceeded maximum allowed payload size "
             f"({MAX_RESPONSE} bytes).", [])
        return
    chan.write_frame(FRAME_RESPONSE, rid, raw)


def main():
    chan = Channel(int(os.environ.pop("NIMBUS_CHANNEL_FD", "3")))
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # sys.path[0] is this file's directory; user code must see its own directory there instead.
    sys.path[0] = task_root
    # Last, so a module of the function's own wins: `import nimbus` finds runtimes/python/nimbus.py.
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    global _calls
    _calls = _Calls(chan)

    _setup_logging()
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except InitError as e:
        _log_error(e.etype, e.message, e.trace)
        try:
            chan.write_frame(FRAME_INIT_ERROR, _pack_str(e.etype), _error_json(e.message, e.etype, e.trace))
        except ChannelClosed:
            pass
        return 1

    try:
        chan.write_frame(FRAME_READY)
        while True:
            ftype, body = chan.read_frame()
            if ftype != FRAME_INVOKE:
                raise ProtocolError(f"unexpected frame type {ftype}")
            invoke(chan, handler, body)
    except ChannelClosed:
        return 0
    except ProtocolError as e:
        print(f"nimbus runtime: channel protocol error: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
