"""The daemon's side of the native instance channel (docs/internals/channel.md), for tests.

RuntimePeer starts a runtime process the way the daemon does -- channel on fd 3, cwd = code dir,
Lambda environment -- and lets a test exchange frames with it:

    with RuntimePeer.python(code_dir, "app.handler") as peer:
        peer.expect_ready()
        reply = peer.invoke(b'{"name": "Ann"}')
        assert reply.type == FRAME_RESPONSE

The child's stdout and stderr go to files (read with peer.stdout() / peer.stderr()), so nothing
has to drain pipes while a test waits on the channel.
"""

import fcntl
import json
import os
import socket
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass

FRAME_READY = 1
FRAME_INVOKE = 2
FRAME_RESPONSE = 3
FRAME_ERROR = 4
FRAME_INIT_ERROR = 5
FRAME_FATAL_ERROR = 6
FRAME_NAMES = {1: "READY", 2: "INVOKE", 3: "RESPONSE", 4: "ERROR", 5: "INIT_ERROR", 6: "FATAL_ERROR"}
MAX_FRAME = 6 * 1024 * 1024 + 64 * 1024

PYTHON = "/usr/bin/python3"
NODE = "/usr/bin/node"


def nimbus_src():
    """Root of the source tree: $NIMBUS_SRC, else two directories above this file."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("NIMBUS_SRC") or os.path.dirname(os.path.dirname(here))


def pack_str(s):
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<H", len(raw)) + raw


def unpack_str(body, off):
    (n,) = struct.unpack_from("<H", body, off)
    off += 2
    if off + n > len(body):
        raise ValueError("string runs past end of frame")
    return body[off:off + n].decode("utf-8"), off + n


@dataclass
class Frame:
    type: int
    body: bytes


@dataclass
class Reply:
    """A decoded RESPONSE, ERROR or INIT_ERROR frame."""

    type: int
    request_id: str  # "" for INIT_ERROR
    error_type: str  # "" for RESPONSE
    payload: bytes  # result JSON or error JSON

    def json(self):
        return json.loads(self.payload)

    def __str__(self):
        return f"{FRAME_NAMES.get(self.type, self.type)} {self.error_type} {self.payload[:2000]!r}"


def decode_reply(frame):
    body = frame.body
    if frame.type == FRAME_RESPONSE:
        rid, off = unpack_str(body, 0)
        return Reply(frame.type, rid, "", body[off:])
    if frame.type in (FRAME_ERROR, FRAME_FATAL_ERROR):
        rid, off = unpack_str(body, 0)
        etype, off = unpack_str(body, off)
        return Reply(frame.type, rid, etype, body[off:])
    if frame.type == FRAME_INIT_ERROR:
        etype, off = unpack_str(body, 0)
        return Reply(frame.type, "", etype, body[off:])
    raise AssertionError(f"expected a reply frame, got {FRAME_NAMES.get(frame.type, frame.type)}")


def lambda_env(code_dir, handler, function_name="test-fn", memory_mb=128, extra=None):
    """The environment the daemon gives a channel runtime."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "NIMBUS_CHANNEL_FD": "3",
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": code_dir,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2025/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.update(extra or {})
    return env


class RuntimePeer:
    def __init__(self, argv, code_dir, handler, env_extra=None, memory_mb=128, timeout=15.0):
        self.argv = argv
        self.code_dir = os.path.abspath(code_dir)
        self.env = lambda_env(self.code_dir, handler, memory_mb=memory_mb, extra=env_extra)
        self.timeout = timeout
        self.pid = None
        self.returncode = None
        self._sock = None
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()

    @classmethod
    def python(cls, code_dir, handler, **kw):
        shim = os.path.join(nimbus_src(), "runtimes", "python", "bootstrap.py")
        kw.setdefault("env_extra", {}).setdefault("AWS_EXECUTION_ENV", "AWS_Lambda_python3.11")
        return cls([PYTHON, "-u", "-B", shim], code_dir, handler, **kw)

    @classmethod
    def node(cls, code_dir, handler, **kw):
        shim = os.path.join(nimbus_src(), "runtimes", "node", "bootstrap.mjs")
        kw.setdefault("env_extra", {}).setdefault("AWS_EXECUTION_ENV", "AWS_Lambda_nodejs20.x")
        return cls([NODE, shim], code_dir, handler, **kw)

    # -- process ---------------------------------------------------------------------------------

    def start(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Move every fd the child needs above 10 first (close-on-exec), so the dup2s onto 0-3 in
        # the child cannot clobber one another whatever numbers the kernel handed out.
        high = [fcntl.fcntl(f.fileno(), fcntl.F_DUPFD_CLOEXEC, 10) for f in (theirs, self._out, self._err)]
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, high[1], 1),
                   (os.POSIX_SPAWN_DUP2, high[2], 2), (os.POSIX_SPAWN_DUP2, high[0], 3)]
        # posix_spawn has no chdir action here; env(1) -C sets the code dir as cwd, then execs.
        argv = ["/usr/bin/env", "-C", self.code_dir, *self.argv]
        try:
            self.pid = os.posix_spawn(argv[0], argv, self.env, file_actions=actions)
        finally:
            for f in high + [devnull]:
                os.close(f)
            theirs.close()
        ours.settimeout(self.timeout)
        self._sock = ours
        return self

    def wait(self, timeout=None):
        """Waits for the child to exit; returns its exit status (negative = killed by signal)."""
        if self.returncode is not None:
            return self.returncode
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                return self.returncode
            if time.monotonic() > deadline:
                raise TimeoutError(f"runtime pid {self.pid} did not exit")
            time.sleep(0.01)

    def close(self):
        """Closes the channel (the runtime should then exit 0), killing the child if it lingers."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.pid is not None and self.returncode is None:
            try:
                self.wait(5)
            except TimeoutError:
                os.kill(self.pid, 9)
                self.wait(5)
        return self.returncode

    def cleanup(self):
        """close(), then drop the captured output."""
        self.close()
        self._out.close()
        self._err.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def _read_file(self, f):
        # pread: the child shares this file's offset, so seeking here would redirect its writes.
        fd = f.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def stdout(self):
        return self._read_file(self._out)

    def stderr(self):
        return self._read_file(self._err)

    # -- frames ----------------------------------------------------------------------------------

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"channel closed by runtime; stderr:\n{self.stderr()}")
            buf += chunk
        return bytes(buf)

    def read_frame(self):
        (length,) = struct.unpack("<I", self._recv_exact(4))
        if length == 0 or length > MAX_FRAME:
            raise AssertionError(f"runtime sent a frame of bad length {length}")
        body = self._recv_exact(length)
        return Frame(body[0], body[1:])

    def at_eof(self, timeout=None):
        """True if the runtime closes the channel without sending anything more."""
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            return self._sock.recv(1) == b""
        finally:
            self._sock.settimeout(self.timeout)

    def send_frame(self, ftype, body=b""):
        self._sock.sendall(struct.pack("<IB", len(body) + 1, ftype) + body)

    def expect_ready(self):
        frame = self.read_frame()
        if frame.type != FRAME_READY:
            detail = decode_reply(frame) if frame.type == FRAME_INIT_ERROR else frame
            raise AssertionError(f"expected READY, got {detail}; stderr:\n{self.stderr()}")
        if frame.body:
            raise AssertionError("READY frame has a body")

    def expect_init_error(self):
        reply = decode_reply(self.read_frame())
        if reply.type != FRAME_INIT_ERROR:
            raise AssertionError(f"expected INIT_ERROR, got {reply}")
        return reply

    def send_invoke(self, event, request_id=None, deadline_ms=None, arn=None, trace_id="", client_context=""):
        """Sends an INVOKE; event is bytes (sent as-is) or any other value (sent as JSON)."""
        if not isinstance(event, (bytes, bytearray)):
            event = json.dumps(event).encode("utf-8")
        request_id = request_id or str(uuid.uuid4())
        if deadline_ms is None:
            deadline_ms = int(time.time() * 1000) + 30000
        arn = arn or f"arn:aws:lambda:us-east-1:000000000000:function:{self.env['AWS_LAMBDA_FUNCTION_NAME']}"
        body = (struct.pack("<Q", deadline_ms) + pack_str(request_id) + pack_str(arn) + pack_str(trace_id)
                + pack_str(client_context) + bytes(event))
        self.send_frame(FRAME_INVOKE, body)
        return request_id

    def invoke(self, event, **kw):
        """Sends an INVOKE and returns the RESPONSE or ERROR reply, checking its request id."""
        request_id = self.send_invoke(event, **kw)
        reply = decode_reply(self.read_frame())
        if reply.type not in (FRAME_RESPONSE, FRAME_ERROR, FRAME_FATAL_ERROR):
            raise AssertionError(f"expected RESPONSE or ERROR, got {reply}")
        if reply.request_id != request_id:
            raise AssertionError(f"reply for request {reply.request_id!r}, expected {request_id!r}")
        return reply
