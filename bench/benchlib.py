"""Helpers shared by the Python benchmarks (bench/gateway.py, bench/async.py): a daemon in a
temporary data dir, wrk runs parsed into figures, the daemon's CPU from /proc, and writing a
table between markers of bench/RESULTS.md."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TCK = os.sysconf("SC_CLK_TCK")


class Settings:
    """The benchmarks' common knobs: the build dir (argv[1]) and BENCH_* environment."""

    def __init__(self, default_duration):
        self.build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
        self.bin = os.path.join(self.build, "nimbus")
        self.bootstrap = os.path.join(self.build, "examples", "c-hello", "bootstrap")
        self.duration = int(os.environ.get("BENCH_DURATION", str(default_duration)))
        self.rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
        self.conns = int(os.environ.get("BENCH_CONNS", "64"))
        self.threads = min(int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 2))),
                           self.conns)
        self.results = os.environ.get("BENCH_RESULTS", os.path.join(HERE, "RESULTS.md"))


def say(name, msg):
    print(f"{name}: {msg}", file=sys.stderr, flush=True)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def to_ms(v):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", v)
    n = float(m.group(1))
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[m.group(2)]


class Daemon:
    def __init__(self, binary, tmp, env=None):
        self.bin = binary
        self.data = os.path.join(tmp, "data")
        self.log = open(os.path.join(tmp, "nimbus.log"), "wb")
        self.proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--gateway-listen",
                                      "127.0.0.1:0", "--data", self.data, "--drain-timeout", "2"],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(self.data, "listen")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: nimbus did not start (see its log)")
            time.sleep(0.05)
        time.sleep(0.05)
        with open(os.path.join(self.data, "listen")) as f:
            self.admin = "http://" + f.read().strip()
        with open(os.path.join(self.data, "gateway.listen")) as f:
            self.gw = "http://" + f.read().strip()
        with open(os.path.join(self.data, "admin.token")) as f:
            self.token = f.read().strip()

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + self.token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def cli(self, *args):
        subprocess.run([self.bin, "--data", self.data, *args], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_wrk(url, args, secs, pid, conns, threads):
    """One wrk run: requests/s, p50/p99 ms, non-2xx, socket errors, daemon CPU us/request."""
    t0 = cpu_ticks(pid)
    p = subprocess.run(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs}s", "--latency",
                        *args, url], capture_output=True, text=True)
    cpu = (cpu_ticks(pid) - t0) / TCK
    out = p.stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "requests": reqs, "p50": to_ms(lat["50"]), "p99": to_ms(lat["99"]),
            "bad": int(bad.group(1)) if bad else 0,
            "errors": sum(map(int, errs.groups())) if errs else 0,
            "cpu_us": cpu * 1e6 / max(reqs, 1)}


def write_results(path, begin, end, heading, text):
    """Puts text between the begin/end markers of path (a new section under heading if absent)."""
    if path == "-":
        return
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(new)
