#!/usr/bin/env python3
"""Cold-start cost of the sandbox (a benchmark, not a test): `make bench-cold`, or
`bench/coldstart.py [BUILD_DIR]` (default build). Needs root for the sandbox.

Two daemons run side by side on loopback, identical but for NIMBUS_SANDBOX:
  sandbox  the full sandbox (namespaces, pivot_root, uid drop, seccomp, cgroup slot)
  plain    NIMBUS_SANDBOX=off: a plain fork+exec of the same runtime, nothing else
Each gets N copies of the python3 and the C hello (examples/), so every first invocation of a
copy is a cold start: request sent -> response read, over a kept-alive HTTP connection. The
two daemons are measured alternately, copy by copy, so machine noise hits both alike; the
figure that matters is the ratio sandbox/plain of the same run.
Then starts per second: S more copies per daemon invoked once each by C concurrent clients
(every invocation a cold start), wall time for all of them.

Environment: COLD_N (copies measured one by one, default 40), COLD_S (copies for the
starts/s run, default 120), COLD_C (concurrent clients, default 8), BENCH_RESULTS (file,
default bench/RESULTS.md; "-" writes none).
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
BIN = os.path.join(BUILD, "nimbus")
N = int(os.environ.get("COLD_N", "40"))
S = int(os.environ.get("COLD_S", "120"))
C = int(os.environ.get("COLD_C", "8"))
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(HERE, "RESULTS.md"))
BEGIN, END = "<!-- cold:begin (written by bench/coldstart.py) -->", "<!-- cold:end -->"


class Daemon:
    def __init__(self, name, tmp, sandbox):
        self.name = name
        self.data = os.path.join(tmp, name)
        env = dict(os.environ, NIMBUS_LOG_LEVEL="warn")
        if not sandbox:
            env["NIMBUS_SANDBOX"] = "off"
        self.log = open(os.path.join(tmp, name + ".log"), "w")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data",
                                      self.data, "--drain-timeout", "1"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        listen = os.path.join(self.data, "listen")
        for _ in range(200):
            if os.path.exists(listen) and open(listen).read().strip():
                break
            time.sleep(0.05)
        host, port = open(listen).read().strip().rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.token = open(os.path.join(self.data, "admin.token")).read().strip()

    def cli(self, *args):
        subprocess.run([BIN, "--data", self.data, *args], check=True, stdout=subprocess.DEVNULL)

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def invoke(self, conn, fn):
        t0 = time.perf_counter()
        conn.request("POST", f"/v1/functions/{fn}/invoke", body=b'{"name":"ada"}',
                     headers={"Authorization": "Bearer " + self.token})
        r = conn.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200 or r.getheader("X-Nimbus-Function-Error"):
            raise RuntimeError(f"{self.name} {fn}: {r.status} {body[:200]!r}")
        return dt

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def deploy_copies(d, prefix, count, c_dir):
    for i in range(count):
        d.cli("deploy", f"{prefix}py{i}", os.path.join(ROOT, "examples", "python-hello"),
              "--runtime", "python3", "--handler", "app.handler")
        d.cli("deploy", f"{prefix}c{i}", c_dir, "--runtime", "provided.al2023", "--handler", "x")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"coldstart: {BIN} not found: run make build")
    tmp = tempfile.mkdtemp(prefix="nimbus-cold-")
    c_dir = os.path.join(tmp, "c-hello")
    os.makedirs(c_dir)
    shutil.copy(os.path.join(BUILD, "examples", "c-hello", "bootstrap"), c_dir)
    daemons = [Daemon("sandbox", tmp, True), Daemon("plain", tmp, False)]
    try:
        doctor = subprocess.run([BIN, "doctor"], capture_output=True, text=True).stdout
        for d in daemons:
            deploy_copies(d, "m", N, c_dir)
            deploy_copies(d, "s", S // 2, c_dir)
        # One by one, alternating daemons, so both see the same machine.
        lat = {(d.name, rt): [] for d in daemons for rt in ("py", "c")}
        conns = {d.name: d.conn() for d in daemons}
        for i in range(N):
            for rt in ("py", "c"):
                for d in daemons if i % 2 == 0 else reversed(daemons):
                    lat[(d.name, rt)].append(d.invoke(conns[d.name], f"m{rt}{i}") * 1000)
        # Starts per second: every invocation a cold start, C clients at once.
        rate = {}
        for d in daemons:
            fns = [f"s{rt}{i}" for i in range(S // 2) for rt in ("py", "c")]

            def one(fn, d=d):
                c = d.conn()
                try:
                    return d.invoke(c, fn)
                finally:
                    c.close()

            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(C) as ex:
                list(ex.map(one, fns))
            rate[d.name] = len(fns) / (time.perf_counter() - t0)
    finally:
        for d in daemons:
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for rt, label in (("c", "C hello (provided.al2023)"), ("py", "python3 hello")):
        s, p = lat[("sandbox", rt)], lat[("plain", rt)]
        rows.append(f"| {label} | {statistics.median(s):.2f} | {pct(s, 90):.2f} | "
                    f"{statistics.median(p):.2f} | {pct(p, 90):.2f} | "
                    f"{statistics.median(s) - statistics.median(p):+.2f} | "
                    f"{statistics.median(s) / statistics.median(p):.2f} |")
    uname = os.uname()
    out = [BEGIN, f"## Cold starts, latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
           "",
           f"- Command: `bench/coldstart.py` (or `make bench-cold`); {N} copies of each function "
           f"per daemon measured one by one, alternating daemons; {os.cpu_count()} CPUs; "
           f"Linux {uname.release}",
           "- Cold start = request sent to response read on a kept-alive connection, first "
           "invocation of a function copy (no instance anywhere), so it includes the daemon's "
           "spawn, the runtime's start and init, and the invocation itself.",
           "",
           "| function | sandbox p50 ms | sandbox p90 ms | plain fork+exec p50 ms | "
           "plain p90 ms | sandbox cost p50 ms | ratio p50 |",
           "|---|---:|---:|---:|---:|---:|---:|", *rows, "",
           f"- Instance starts per second ({S} cold invocations, half python3 half C, {C} "
           f"concurrent clients): sandbox {rate['sandbox']:.0f}/s, plain {rate['plain']:.0f}/s "
           f"(ratio {rate['sandbox'] / rate['plain']:.2f}).",
           "- Sandbox layers in use (`nimbus doctor`):", "", "```", doctor.rstrip(), "```", END]
    text = "\n".join(out)
    print(text)
    if RESULTS != "-":
        old = open(RESULTS).read() if os.path.exists(RESULTS) else ""
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
        else:
            new = old.rstrip() + "\n\n" + text + "\n"
        with open(RESULTS, "w") as f:
            f.write(new)


if __name__ == "__main__":
    main()
