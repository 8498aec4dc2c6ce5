#!/usr/bin/env python3
"""Metering cost benchmark (not a test): `make bench-metering`, or `bench/metering.py [BUILD]`.

Warm C hello (examples/c-hello) invoked synchronously through the admin API with wrk, on two
daemons: one metering every invocation (the default) and one started with NIMBUS_METERING=off.

Both daemons are loaded at the same time, each by its own wrk (one thread, half of BENCH_CONNS
connections), for BENCH_ROUNDS rounds of BENCH_DURATION s. On this kind of 2-CPU machine two
back-to-back runs of the same daemon differ by up to 15%, and whichever of two alternating runs
goes second was favoured, so runs one after the other could not resolve a 2% difference. Loaded
together, both see the same machine at every instant and the scheduler shares the CPUs between
them: the daemon that needs more CPU per invocation serves fewer. The cost is 1 - the median of
the rounds' on/off throughput ratios.

A second, steadier figure: the CPU metering's own thread (nb-usage, the writer) uses per
invocation, against the whole machine's busy CPU per invocation (/proc/stat, both daemons'
invocations): the share of the machine metering's batched writes take. The recording itself,
a struct copy under a mutex on the invocation's loop, is not separable here (a profile puts it
near 0.1% of the daemon's samples).

Writes bench/RESULTS.md between the metering markers (BENCH_RESULTS=- for none).
"""
import os
import re
import shutil
import statistics
import subprocess
import tempfile

from benchlib import TCK, Daemon, Settings, say as _say, write_results

_S = Settings(6)
BIN, BOOTSTRAP, DURATION = _S.bin, _S.bootstrap, _S.duration
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
CONNS, RESULTS = _S.conns, _S.results
MARK_BEGIN, MARK_END = "<!-- metering-bench -->", "<!-- /metering-bench -->"


def say(msg):
    _say("bench-metering", msg)


def thread_ticks(pid):
    """CPU ticks per thread name of a process."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[comm] = out.get(comm, 0) + int(rest[11]) + int(rest[12])
    return out


def machine_busy():
    """Busy CPU ticks of the whole machine (all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def round_of(daemons, scripts, secs):
    url = "/v1/functions/hello-c/invoke"
    t0 = {n: thread_ticks(d.proc.pid) for n, d in daemons.items()}
    m0 = machine_busy()
    procs = {n: subprocess.Popen(["wrk", "-t", "1", "-c", str(max(CONNS // 2, 1)), "-d", f"{secs}s",
                                  "--latency", "-s", scripts[n], daemons[n].admin + url],
                                 stdout=subprocess.PIPE, text=True)
             for n in daemons}
    outs = {n: p.communicate()[0] for n, p in procs.items()}
    busy = machine_busy() - m0
    res = {}
    for n, out in outs.items():
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if bad or errs:
            raise SystemExit(f"bench-metering: {n}: non-2xx or socket errors:\n{out}")
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        t1 = thread_ticks(daemons[n].proc.pid)
        cpu = {k: (v - t0[n].get(k, 0)) / TCK * 1e6 / max(reqs, 1) for k, v in t1.items()}
        res[n] = {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
                  "requests": reqs, "daemon_us": sum(cpu.values()),
                  "writer_us": cpu.get("nb-usage", 0.0)}
    total = sum(r["requests"] for r in res.values())
    res["machine_us"] = busy / TCK * 1e6 / max(total, 1)
    return res


def main():
    if not shutil.which("wrk"):
        raise SystemExit("bench-metering: wrk not found (make bench-metering installs it)")
    tmp = tempfile.mkdtemp(prefix="nimbus-bench-metering-")
    daemons, scripts, rounds = {}, {}, []
    try:
        fn = os.path.join(tmp, "c-hello")
        os.makedirs(fn)
        shutil.copy(BOOTSTRAP, os.path.join(fn, "bootstrap"))
        for name, env in (("on", {}), ("off", {"NIMBUS_METERING": "off"})):
            os.makedirs(os.path.join(tmp, name))
            d = daemons[name] = Daemon(BIN, os.path.join(tmp, name), env)
            d.cli("deploy", "hello-c", fn, "--runtime", "provided.al2023", "--handler", "hello")
            scripts[name] = os.path.join(tmp, f"{name}.lua")
            with open(scripts[name], "w") as f:
                f.write('wrk.method = "POST"\nwrk.body = [[{"name":"ada"}]]\n'
                        f'wrk.headers["Authorization"] = "Bearer {d.token}"\n')
        round_of(daemons, scripts, 3)  # warm-up: instances started on both
        for r in range(ROUNDS):
            x = round_of(daemons, scripts, DURATION)
            rounds.append(x)
            say(f"round {r + 1}: on {x['on']['rps']:.0f} req/s ({x['on']['daemon_us']:.1f} µs/req, "
                f"writer {x['on']['writer_us']:.2f}), off {x['off']['rps']:.0f} req/s "
                f"({x['off']['daemon_us']:.1f} µs/req), ratio {x['on']['rps'] / x['off']['rps']:.3f}")
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = sorted(x["on"]["rps"] / x["off"]["rps"] for x in rounds)
    cost = (1 - statistics.median(ratios)) * 100
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    med = {n: {k: statistics.median(x[n][k] for x in rounds) for k in ("rps", "daemon_us")}
           for n in ("on", "off")}
    writer = statistics.median(x["on"]["writer_us"] for x in rounds)
    machine = statistics.median(x["machine_us"] for x in rounds)
    rows = [f"| metering {n} | {med[n]['rps']:.0f} | {med[n]['daemon_us']:.1f} |"
            for n in ("off", "on")]
    table = ("| daemon (loaded together) | req/s | daemon CPU µs/req |\n|---|---|---|\n" +
             "\n".join(rows) +
             f"\n\nMetering costs **{cost:.1f}%** of throughput: 1 - the median on/off ratio "
             f"of {ROUNDS} rounds of {DURATION} s (ratios' quartiles {q[0]:.3f} / {q[1]:.3f} / "
             f"{q[2]:.3f}; a negative cost is noise). Its writer thread uses {writer:.2f} µs per "
             f"invocation, {writer / machine * 100:.2f}% of the machine's {machine:.1f} busy CPU µs "
             f"per invocation. {CONNS // 2} connections per daemon, {os.cpu_count()} CPUs.")
    print(table)
    write_results(RESULTS, MARK_BEGIN, MARK_END, "Metering cost (bench/metering.py)", table)


if __name__ == "__main__":
    main()
