"""Shared helpers of the end-to-end tests: a real `nimbus serve` on a free port and a temp dir.

Environment (set by ctest, see tests/CMakeLists.txt; defaults work from a plain checkout):
  NIMBUS_BIN    the nimbus binary            (default SRC/build/nimbus)
  NIMBUS_BUILD  the build directory          (default SRC/build)
  NIMBUS_SRC    the source directory         (default two levels up from this file)
  NIMBUS_E2E_LOG_LEVEL  daemon log level     (default info)
  NIMBUS_E2E_KEEP=1     keep temp dirs after the tests

Everything is Python stdlib. A test class typically does

    class T(NimbusTestCase):
        @classmethod
        def setUpClass(cls):
            cls.d = cls.start_daemon()

        def test_x(self):
            fn = self.d.deploy("hello", dir_files(example("python-hello")), "python3", "app.handler")
            r = self.d.invoke("hello", {"name": "Ann"})

and when a test fails, the daemon's log lines written during that test are printed on stderr.
"""

import contextlib
import ctypes
import fcntl
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import urllib.parse
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("NIMBUS_SRC") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("NIMBUS_BUILD") or os.path.join(SRC, "build")
BIN = os.environ.get("NIMBUS_BIN") or os.path.join(BUILD, "nimbus")
EXAMPLES = os.path.join(SRC, "examples")
FIXTURES = os.path.join(HERE, "fixtures")
MIB = 1 << 20

def npm_cache_install(spec, find):
    """Installs the npm package spec ("name@version") into BUILD/npm-cache unless find() already
    finds an install: (what find returns, None), or (None, why not). Under the cache's lock,
    which test_ric.py takes too, so concurrent tests never install at once."""
    cache = os.path.join(BUILD, "npm-cache")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()
        if found:
            return found, None
        pkg = os.path.join(cache, "package.json")
        if not os.path.exists(pkg):  # so npm installs here, not in some parent project
            with open(pkg, "w") as f:
                json.dump({"name": "nimbus-e2e-npm-cache", "private": True}, f)
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", spec], cwd=cache,
                           capture_output=True, text=True, timeout=240)
        found = find()
        if p.returncode != 0 or not found:
            return None, f"npm install {spec} failed ({p.returncode}):\n{p.stderr[-3000:]}"
        return found, None


# Variables the CLI would otherwise pick up from the developer's shell.
_CLIENT_ENV_DROP = ("NIMBUS_URL", "NIMBUS_TOKEN", "NIMBUS_DATA", "NIMBUS_LISTEN")

_all_daemons = []


def example(name):
    return os.path.join(EXAMPLES, name)


def fixture(name):
    return os.path.join(FIXTURES, name)


def client_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV_DROP}
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# archives, built in memory


class File:
    """Archive member content with an explicit mode (default 0644)."""

    def __init__(self, data, mode=0o644):
        self.data = data.encode() if isinstance(data, str) else data
        self.mode = mode


def _member(v):
    return v if isinstance(v, File) else File(v)


def dir_files(path):
    """A directory's regular files as {relative name: File} with their exec bits."""
    out = {}
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            rel = os.path.relpath(full, path)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            with open(full, "rb") as fh:
                out[rel] = File(fh.read(), 0o755 if st.st_mode & 0o100 else 0o644)
    return out


def zip_bytes(files, compression=zipfile.ZIP_DEFLATED):
    """{name: bytes|str|File} -> zip bytes (unix modes kept)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, v in files.items():
            m = _member(v)
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.create_system = 3
            zi.external_attr = (stat.S_IFREG | m.mode) << 16
            zi.compress_type = compression
            z.writestr(zi, m.data)
    return buf.getvalue()


def tar_info(name, type=tarfile.REGTYPE, mode=0o644, size=0, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.mode = mode
    ti.size = size
    ti.linkname = linkname
    ti.mtime = 1577836800
    return ti


def symlink(name, target):
    return tar_info(name, tarfile.SYMTYPE, 0o777, linkname=target)


def hardlink(name, target):
    return tar_info(name, tarfile.LNKTYPE, 0o644, linkname=target)


def tar_bytes(files=None, extra=(), gz=True):
    """{name: bytes|str|File} plus extra TarInfo entries (links, devices, ...) -> tar(.gz)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, v in (files or {}).items():
            m = _member(v)
            t.addfile(tar_info(name, mode=m.mode, size=len(m.data)), io.BytesIO(m.data))
        for ti in extra:
            t.addfile(ti)
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


# ---------------------------------------------------------------------------------------------
# HTTP


class Resp:
    """An HTTP answer: unpacks as (status, headers, body); headers have lower-case names."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        body = self.body[:600].decode("utf-8", "replace")
        return f"<Resp {self.status} {body!r}>"


def http_request(host, port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# the daemon


class DaemonError(Exception):
    pass


def _die_with_parent():
    """In the daemon's child before exec: SIGTERM it when the test process dies (a test killed
    by ctest's timeout must not leave a daemon behind)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Daemon:
    """One `nimbus serve` on 127.0.0.1:0 with its data dir under a temp dir."""

    def __init__(self, tmp=None, data=None, args=(), env=None):
        self.owns_tmp = tmp is None
        self.tmp = tmp or tempfile.mkdtemp(prefix="nimbus-e2e-")
        self.data = data or os.path.join(self.tmp, "data")
        self.args = list(args)
        self.env = env or {}
        self.log_path = os.path.join(self.tmp, "daemon.log")
        self.proc = None
        self.host = self.port = self.token = None
        _all_daemons.append(self)

    # -- process ---------------------------------------------------------------------------

    def spawn(self):
        """Starts `serve` without waiting for it (see start())."""
        for f in ("listen", "gateway.listen"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.data, f))
        env = client_env({"NIMBUS_LOG_LEVEL": os.environ.get("NIMBUS_E2E_LOG_LEVEL", "info")})
        # One event loop unless a test asks for more (--loops) or NIMBUS_E2E_LOOPS says so: the
        # suite's tests count instances and warm reuse, which with several loops depend on
        # which loop each connection lands on (test_multiloop.py covers that case).
        env.setdefault("NIMBUS_LOOPS", os.environ.get("NIMBUS_E2E_LOOPS", "1"))
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"---- {time.strftime('%H:%M:%S')} start serve (test harness)\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [BIN, "serve", "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
                 "--data", self.data, *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent)
        return self.proc

    def start(self, timeout=20):
        self.spawn()
        self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout=20):
        listen = os.path.join(self.data, "listen")
        deadline = time.monotonic() + timeout
        text = ""
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise DaemonError(f"nimbus serve exited with {rc} while starting:\n{self.log_text()}")
            with contextlib.suppress(FileNotFoundError):
                with open(listen) as f:
                    text = f.read()
            if text.endswith("\n"):
                break
            if time.monotonic() > deadline:
                raise DaemonError(f"nimbus serve wrote no {listen} in {timeout}s:\n{self.log_text()}")
            time.sleep(0.01)
        self.host, port = text.strip().rsplit(":", 1)
        self.host = self.host.strip("[]")
        self.port = int(port)
        # Written before "listen", so it is complete by now.
        with open(os.path.join(self.data, "gateway.listen")) as f:
            self.gw_port = int(f.read().strip().rsplit(":", 1)[1])
        with open(os.path.join(self.data, "admin.token")) as f:
            self.token = f.read().strip()
        r = self.api("GET", "/healthz", token=None, timeout=5)
        if r.status != 200:
            raise DaemonError(f"/healthz answered {r}")

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signals the daemon and waits for it; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise DaemonError(f"nimbus serve did not stop within {timeout}s of {sig!r}")
        return self.proc.returncode

    def close(self):
        """Stops the daemon (forcefully if it will not stop) and removes the temp dir."""
        try:
            if self.running():
                with contextlib.suppress(DaemonError):
                    self.stop(timeout=20)
        finally:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self in _all_daemons:
                _all_daemons.remove(self)
            if self.owns_tmp and os.environ.get("NIMBUS_E2E_KEEP") != "1":
                shutil.rmtree(self.tmp, ignore_errors=True)

    def log_text(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    # -- admin API ---------------------------------------------------------------------------

    def api(self, method, path, body=None, token=True, headers=None, timeout=30):
        """Raw request. body: bytes/str sent as is, or a dict/list sent as JSON.
        token: True = the admin token, None = no Authorization header, str = that token."""
        hdrs = dict(headers or {})
        if token is True:
            hdrs["Authorization"] = "Bearer " + self.token
        elif isinstance(token, str):
            hdrs["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        return http_request(self.host, self.port, method, path, body, hdrs, timeout)

    def upload(self, archive):
        r = self.api("POST", "/v1/code", archive, headers={"Content-Type": "application/octet-stream"})
        if r.status not in (200, 201):
            raise AssertionError(f"POST /v1/code: {r}")
        return r.json()

    def put(self, name, cfg):
        return self.api("PUT", "/v1/functions/" + urllib.parse.quote(name, safe=""), cfg)

    def deploy(self, name, code, runtime=None, handler=None, **cfg):
        """Uploads code ({name: File} -> tar.gz, or archive bytes) and PUTs the function;
        returns the function object. Extra keyword args become config fields."""
        archive = code if isinstance(code, (bytes, bytearray)) else tar_bytes(code)
        sha = self.upload(bytes(archive))["sha256"]
        body = {"code_sha256": sha}
        if runtime is not None:
            body["runtime"] = runtime
        if handler is not None:
            body["handler"] = handler
        body.update(cfg)
        r = self.put(name, body)
        if r.status not in (200, 201):
            raise AssertionError(f"PUT {name}: {r}")
        return r.json()

    def invoke(self, name, event=None, version=None, raw=None, timeout=30):
        path = f"/v1/functions/{urllib.parse.quote(name, safe='')}/invoke"
        if version is not None:
            path += f"?version={version}"
        body = raw if raw is not None else json.dumps({} if event is None else event).encode()
        return self.api("POST", path, body, headers={"Content-Type": "application/json"}, timeout=timeout)

    def functions(self):
        r = self.api("GET", "/v1/functions")
        assert r.status == 200, r
        return r.json()["functions"]

    def logs(self, name, query=""):
        r = self.api("GET", f"/v1/functions/{name}/logs{('?' + query) if query else ''}")
        assert r.status == 200, r
        return [json.loads(line) for line in r.body.decode().splitlines() if line.strip()]

    def gw(self, method, path, body=None, headers=None, timeout=30):
        """A request to the API gateway's listener."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        return http_request(self.host, self.gw_port, method, path, body, headers, timeout)

    # -- CLI -------------------------------------------------------------------------------

    def gcli(self, *args, input=None, timeout=60):
        """Runs `nimbus --data DATA ARGS...` (global flags first: for grouped commands such as
        `nimbus api create`)."""
        return subprocess.run([BIN, "--data", self.data, *args], input=input, capture_output=True,
                              text=True, timeout=timeout, env=client_env())

    def cli_args(self, cmd, *args):
        return [BIN, cmd, "--data", self.data, *args]

    def cli(self, cmd, *args, input=None, timeout=60, env=None):
        """Runs `nimbus CMD --data DATA ARGS...`; returns CompletedProcess (text)."""
        return subprocess.run(self.cli_args(cmd, *args), input=input, capture_output=True,
                              text=True, timeout=timeout, env=client_env(env))

    def cli_popen(self, cmd, *args, env=None):
        return subprocess.Popen(self.cli_args(cmd, *args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=client_env(env))


def stop_process(proc, timeout=10):
    """Kills a helper process started by a test and closes its pipes."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f:
            f.close()


def shutdown_socket(sock):
    """Shuts a socket down (waking a thread blocked reading it); errors ignored."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def run_cli(*args, input=None, timeout=60, env=None):
    """Runs the nimbus binary with exactly these arguments (no --data added)."""
    return subprocess.run([BIN, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=client_env(env))


# ---------------------------------------------------------------------------------------------
# odds and ends


class SilentServer:
    """A listening TCP socket nobody answers on: after a CLI run, connected() tells whether the
    CLI opened a connection (i.e. sent a request) at all."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def connected(self):
        r, _, _ = select.select([self.sock], [], [], 0.05)
        if not r:
            return False
        with contextlib.suppress(BlockingIOError):
            c, _ = self.sock.accept()
            c.close()
            return True
        return False

    def close(self):
        self.sock.close()


def processes_matching(needle):
    """[(pid, cmdline)] of live processes whose command line contains needle (zombies have
    an empty cmdline and so never match)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if needle in cmd:
            out.append((int(pid), cmd))
    return out


def wait_until(pred, timeout=5.0, interval=0.02):
    """Polls pred() until it is truthy or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


class LineReader:
    """Reads lines of a pipe on a thread so a test can wait for one with a timeout."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.done = False
        self.t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.t.start()

    def _run(self, stream):
        try:
            for raw in iter(stream.readline, b""):
                with self.cond:
                    self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                    self.cond.notify_all()
        except (OSError, ValueError, AttributeError):
            pass  # the test closed the stream under us: that is the end of it
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def wait_for(self, pred, timeout):
        """The first line satisfying pred, or None after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.done:
                    return None
                self.cond.wait(left)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# the sandbox seen from the host (test_sandbox_*)

# src/sandbox/sandbox.h: from NB_SBX_UID_BASE, NB_SBX_UID_BLOCKS daemons of NB_SBX_UID_COUNT each.
SANDBOX_UIDS = range(900000000, 900000000 + 64 * 4096)
CGROUP_FS = "/sys/fs/cgroup"


def sandbox_layers(*cmd):
    """Runs `nimbus doctor` (or `nimbus CMD...`): (exit status, {layer: status}, stdout, pid)."""
    p = subprocess.Popen([BIN, *(cmd or ("doctor",))], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=client_env())
    out, _ = p.communicate(timeout=60)
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    return p.returncode, {r[0]: r[1] for r in rows if len(r) >= 2}, out, p.pid


def host_processes():
    """Every process as {pid, start, ppid, uid, state, name, pidns, cgroup}: start is its start
    time (pid and start name a process for good), pidns the /proc/PID/ns/pid link text, cgroup
    the /proc/PID/cgroup text. Processes that vanish while read are left out."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                st = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            with open(f"/proc/{name}/stat") as f:
                start = int(f.read().rsplit(")", 1)[1].split()[19])
            with open(f"/proc/{name}/cgroup") as f:
                cg = f.read()
        except OSError:
            continue
        try:
            ns = os.readlink(f"/proc/{name}/ns/pid")
        except OSError:
            ns = None
        out.append({"pid": int(name), "start": start, "ppid": int(st["PPid"]),
                    "uid": int(st["Uid"].split()[0]), "state": st["State"].strip()[:1],
                    "name": st["Name"].strip(), "pidns": ns, "cgroup": cg})
    return out


def describe_processes(procs):
    """One short line per process of host_processes() for failure messages."""
    def groups(p):
        return ",".join(g.split(":", 2)[2] for g in p["cgroup"].splitlines() if "/nimbus-" in g)
    return "\n".join(f"  pid {p['pid']} {p['name']} uid={p['uid']} state={p['state']} "
                     f"ppid={p['ppid']} {p['pidns']} {groups(p)[:200]}" for p in procs)


def cgroup_dirs(name, root=CGROUP_FS, max_depth=6, max_dirs=50000):
    """Directories called `name` under the cgroup hierarchies (a bounded walk that does not
    descend into nimbus-* groups, which hold only slots)."""
    found, todo, seen = [], [(root, 0)], 0
    while todo and seen < max_dirs:
        path, depth = todo.pop()
        try:
            entries = [e for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for e in entries:
            seen += 1
            if e.name == name:
                found.append(e.path)
            elif depth < max_depth and not e.name.startswith("nimbus-"):
                todo.append((e.path, depth + 1))
    return sorted(found)


def mounts_under(path):
    """Mount points at or below path in this process's mount namespace."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


class NimbusTestCase(unittest.TestCase):
    """Prints the log of every daemon of this process written during a failed test."""

    maxDiff = 4000

    @classmethod
    def start_daemon(cls, **kw):
        d = Daemon(**kw)
        cls.addClassCleanup(d.close)
        try:
            d.start()
        except Exception:
            sys.stderr.write(d.log_text())
            raise
        return d

    def new_daemon(self, **kw):
        """A daemon owned by this test (stopped and removed at its end), not started."""
        d = Daemon(**kw)
        self.addCleanup(d.close)
        return d

    def run(self, result=None):
        if result is None:
            return super().run(result)
        offsets = {id(d): d.log_size() for d in _all_daemons}
        before = len(result.failures) + len(result.errors)
        daemons = list(_all_daemons)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for d in daemons + [d for d in _all_daemons if d not in daemons]:
                text = d.log_text(offsets.get(id(d), 0))
                lines = text.splitlines()[-200:]
                sys.stderr.write(f"\n==== daemon log ({d.log_path}) during {self.id()} ====\n")
                sys.stderr.write("\n".join(lines) + "\n==== end of daemon log ====\n")
        return out

    # -- assertions shared by the files --------------------------------------------------------

    def assert_api_error(self, r, status, code):
        """r is an error answer with this status and {"error":{"code","message"}}."""
        self.assertEqual(r.status, status, r)
        doc = r.json()
        self.assertEqual(set(doc), {"error"}, doc)
        self.assertEqual(doc["error"]["code"], code, doc)
        self.assertIsInstance(doc["error"]["message"], str)
        self.assertTrue(doc["error"]["message"], doc)
        self.assertTrue(r.headers.get("x-nimbus-request-id"), r.headers)
        return doc["error"]["message"]

    def assert_ok(self, r, status=200):
        self.assertEqual(r.status, status, r)
        self.assertNotIn("x-nimbus-function-error", r.headers, r)
        return r.json()

    def assert_fn_error(self, r, error_type, kind=None):
        """An invocation answered 200 with X-Nimbus-Function-Error and the Lambda error JSON."""
        self.assertEqual(r.status, 200, r)
        self.assertIn("x-nimbus-function-error", r.headers, r)
        if kind:
            self.assertEqual(r.headers["x-nimbus-function-error"], kind, r)
        else:
            self.assertIn(r.headers["x-nimbus-function-error"], ("Handled", "Unhandled"))
        doc = r.json()
        self.assertEqual(doc.get("errorType"), error_type, doc)
        self.assertIsInstance(doc.get("errorMessage"), str, doc)
        return doc


def sandbox_unavailable(reason):
    """A skip, or a failure where the machine must run every sandbox test (CI sets
    NIMBUS_TEST_REQUIRE_SANDBOX=1 in .ci/run)."""
    if os.environ.get("NIMBUS_TEST_REQUIRE_SANDBOX") == "1":
        raise AssertionError(f"NIMBUS_TEST_REQUIRE_SANDBOX=1 but {reason}")
    raise unittest.SkipTest(reason)


class SandboxTestCase(NimbusTestCase):
    """Base of the sandbox tests: one daemon per class with a hello function; skipped unless
    root and `nimbus doctor` reports namespaces, root, user and seccomp (`layers` has its rows).

    Other daemons on the host run instances too, so a process is taken for one of this
    daemon's when it is in the daemon's cgroup tree (tag: "nimbus-<pid>", read from its log),
    or belongs to an instance a test tracked (a process seen in it, or its uid with its pid
    namespace or no nimbus cgroup at all), or, with cgroups, has a sandbox uid and no nimbus
    cgroup at all (it got out of its group)."""

    @classmethod
    def start_sandbox_daemon(cls, **kw):
        if os.geteuid() != 0:
            sandbox_unavailable("the sandbox needs root (namespaces, pivot_root, uid drop)")
        _, cls.layers, table, _ = sandbox_layers()
        missing = [x for x in ("namespaces", "root", "user", "seccomp")
                   if cls.layers.get(x) != "ok"]
        if missing:
            sandbox_unavailable(f"nimbus doctor reports {', '.join(missing)} missing:\n{table}")
        cls.tracked = []
        cls.d = cls.start_daemon(**kw)
        m = re.search(r"cgroups: cgroup v\d: .*? under ([^\s;]+)", cls.d.log_text())
        cls.cg_tag = os.path.basename(m.group(1)) if m else f"nimbus-{cls.d.proc.pid}"
        m = re.search(r"sandbox: user: .* \(from (\d+)\)", cls.d.log_text())
        first = int(m.group(1)) if m else SANDBOX_UIDS.start
        cls.uid_block = range(first, first + 4096)  # this daemon's uids
        cls.d.deploy("hello", dir_files(example("python-hello")), "python3", "app.handler")
        return cls.d

    def require_cgroups(self):
        if self.layers.get("cgroups") != "ok":
            sandbox_unavailable("nimbus doctor: cgroups missing")

    # -- instances and their processes -------------------------------------------------------

    @classmethod
    def track(cls, who):
        """Records a live instance from a hostile function's whoami answer (uid, pidns) with the
        host processes it has now; returns the record and those processes."""
        procs = [p for p in host_processes() if p["pidns"] == who["pidns"]]
        inst = {"uid": who["uid"], "pidns": who["pidns"],
                "members": {(p["pid"], p["start"]) for p in procs}}
        cls.tracked.append(inst)
        return inst, procs

    @classmethod
    def in_tree(cls, proc):
        return re.search(rf"/{re.escape(cls.cg_tag)}(/|$)", proc["cgroup"], re.M) is not None

    @classmethod
    def escaped(cls, proc):
        """A sandbox uid outside every nimbus cgroup (meaningful only with cgroups)."""
        return "/nimbus-" not in proc["cgroup"] and cls.layers.get("cgroups") == "ok"

    @classmethod
    def leftovers_of(cls, inst, procs=None):
        """Processes of a tracked instance still there (zombies included)."""
        return [p for p in (procs if procs is not None else host_processes())
                if (p["pid"], p["start"]) in inst["members"] or (p["uid"] == inst["uid"] and (
                    p["pidns"] == inst["pidns"] or cls.in_tree(p) or cls.escaped(p)))]

    def assert_instance_gone(self, inst, timeout=10):
        left = wait_until(lambda: not self.leftovers_of(inst), timeout)
        self.assertTrue(left, "processes of a gone instance survive:\n"
                        + describe_processes(self.leftovers_of(inst)))

    @classmethod
    def own_processes(cls):
        procs = host_processes()
        return [p for p in procs if p["pid"] != cls.d.proc.pid and (
            cls.in_tree(p) or (p["uid"] in SANDBOX_UIDS and cls.escaped(p))
            or any(cls.leftovers_of(i, [p]) for i in cls.tracked))]

    @classmethod
    def stray_slots(cls):
        """[(slot group, pids)] of slots holding processes but no instance init (a child of the
        daemon): what is left of an instance that is gone."""
        stray, ppid = [], {p["pid"]: p["ppid"] for p in host_processes()}
        for base in cgroup_dirs(cls.cg_tag):
            with contextlib.suppress(OSError):
                for e in os.scandir(base):
                    if not (e.is_dir() and re.fullmatch(r"s\d+", e.name)):
                        continue
                    with contextlib.suppress(OSError):
                        with open(os.path.join(e.path, "cgroup.procs")) as f:
                            pids = [int(x) for x in f.read().split()]
                        if pids and cls.d.proc.pid not in {ppid.get(p) for p in pids}:
                            stray.append((e.path, pids))
        return stray

    def assert_serving(self):
        """The platform goes on: hello answers, and (with cgroups) no slot group holds processes
        of an instance that is gone."""
        r = self.d.invoke("hello", {"name": "again"}, timeout=20)
        self.assertEqual(self.assert_ok(r)["message"], "Hello, again!")
        if self.layers.get("cgroups") == "ok":
            self.assertTrue(wait_until(lambda: not self.stray_slots(), 10),
                            f"slot groups of gone instances hold processes: {self.stray_slots()}")

    @classmethod
    def assert_nothing_left(cls):
        """Deletes every function, stops the daemon and checks that none of its processes,
        mounts or cgroup groups is left. For tearDownClass."""
        d = cls.d
        for fn in d.functions():
            d.api("DELETE", "/v1/functions/" + urllib.parse.quote(fn["name"], safe=""))
        problems = []

        def busy():  # what is left but the daemon's idle children (pre-spawned shells)
            return [p for p in cls.own_processes()
                    if p["ppid"] != d.proc.pid or p["state"] == "Z"]
        if not wait_until(lambda: not busy(), 15):
            problems.append("instance processes after deleting every function:\n"
                            + describe_processes(busy()))
        if cls.layers.get("cgroups") == "ok" and not wait_until(lambda: not cls.stray_slots(), 10):
            problems.append(f"slot groups with processes: {cls.stray_slots()}")
        rc = d.stop()
        if rc != 0:
            problems.append(f"nimbus serve exited with {rc}")
        if not wait_until(lambda: not cls.own_processes(), 10):
            problems.append("processes after the daemon stopped:\n"
                            + describe_processes(cls.own_processes()))
        problems += [f"mount left: {m}" for m in mounts_under(d.data)]
        problems += [f"cgroup group left: {g}" for g in cgroup_dirs(cls.cg_tag)]
        if problems:
            raise AssertionError("left behind:\n" + "\n".join(map(str, problems)))
