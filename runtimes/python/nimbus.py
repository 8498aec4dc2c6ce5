"""nimbus: what a python3 function may ask of the platform while its handler runs.

    import nimbus
    result = nimbus.invoke("resize", {"key": "a.png"})        # another function, synchronously
    request_id = nimbus.invoke_async("audit", {"who": "ada"})  # queued, retried on failure
    nimbus.send("orders", '{"id": 7}', attributes={"src": "web"})
    nimbus.publish("news", "hello", attributes={"lang": "en"}, subject="greeting")
    nimbus.emit({"type": "com.example.created", "data": {"id": 7}})

Calls travel over the runtime's private channel (no network needed) and are made as the calling
function: only functions, queues and topics of its own namespace are reachable. Each call carries
the caller's request id and the chain's trace; a chain deeper than the daemon's limit (16 by
default) fails with CallError("call_depth_exceeded"). See docs/internals/calls.md.

Payloads: bytes and str are sent as they are; anything else is JSON-encoded.
"""

import json
import sys

_MAX_BODY = 6 * 1024 * 1024  # the platform's payload cap; a frame adds at most 64 KiB to it

__all__ = ["invoke", "invoke_async", "send", "publish", "emit", "CallError", "FunctionError"]


class CallError(Exception):
    """The platform refused or could not carry out the call (code: "not_found", "forbidden",
    "too_many_requests", "call_depth_exceeded", ...; status: the HTTP-like status)."""

    def __init__(self, code, message, status=None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


class FunctionError(Exception):
    """The invoked function failed; error_type/error_message are its Lambda error fields and
    payload the whole error document."""

    def __init__(self, error_type, error_message, payload=None):
        super().__init__(f"{error_type}: {error_message}")
        self.error_type, self.error_message, self.payload = error_type, error_message, payload


def _bytes(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _call(op, target, attrs, body):
    call = getattr(sys.modules.get("__main__"), "_nimbus_call", None)
    if call is None:
        raise CallError("not_on_nimbus", "not running inside a nimbus python3 runtime")
    attrs_text = json.dumps(attrs) if attrs else ""
    # The channel's limits, checked here: a frame over them would end the instance instead.
    if len(body) > _MAX_BODY:
        raise CallError("payload_too_large", f"a call's payload is at most {_MAX_BODY} bytes", 413)
    if len(attrs_text.encode()) > 0xFFFF or len(target.encode()) > 0xFFFF:
        raise CallError("payload_too_large", "attributes or name over 64 KiB", 413)
    status, code, raw = call(op, target, attrs_text, body)
    if status >= 400:
        message = raw.decode("utf-8", "replace")
        try:
            err = json.loads(raw)["error"]
            code, message = err.get("code") or code, err.get("message") or message
        except (ValueError, KeyError, TypeError):
            pass
        raise CallError(code or "error", message, status)
    return code, raw


def _field(raw, name):
    try:
        return json.loads(raw)[name]
    except (ValueError, KeyError, TypeError):
        return None


def invoke(name, payload=None):
    """Invokes function `name` of this namespace and returns its decoded result."""
    code, raw = _call("invoke", name, None, _bytes({} if payload is None else payload))
    if code:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"errorMessage": raw.decode("utf-8", "replace")}
        if not isinstance(doc, dict):
            doc = {"errorMessage": str(doc)}
        raise FunctionError(doc.get("errorType") or code, doc.get("errorMessage") or "", doc)
    return json.loads(raw) if raw else None


def invoke_async(name, payload=None):
    """Queues an invocation of `name`; returns its request id once the event is durable."""
    return _field(_call("invoke_async", name, None, _bytes({} if payload is None else payload))[1],
                  "requestId")


def send(queue, body, attributes=None):
    """Sends a message to queue `queue`; attributes: {name: string}. Returns the message id."""
    return _field(_call("send", queue, attributes, _bytes(body))[1], "messageId")


def publish(topic, message, attributes=None, subject=None):
    """Publishes to topic `topic`. attributes: {name: str | number | [str] | {"Type","Value"}}.
    Returns the message id."""
    attrs = {}
    if attributes:
        attrs["attributes"] = attributes
    if subject is not None:
        attrs["subject"] = subject
    return _field(_call("publish", topic, attrs, _bytes(message))[1], "messageId")


def emit(event):
    """Emits one CloudEvent (a dict in structured form) to this namespace's event bus; source,
    id, time and specversion are filled in when absent. Returns the event's id."""
    return _field(_call("emit", "", None, _bytes(event))[1], "id")
