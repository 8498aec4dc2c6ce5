#!/usr/bin/env python3
"""Metering cost benchmark (not a test): `make bench-metering`, or `bench/metering.py [BUILD]`.

Warm C hello (examples/c-hello) invoked synchronously through the admin API with wrk
(BENCH_CONNS connections), on two daemons: one metering every invocation (the default) and one
started with NIMBUS_METERING=off. Rounds alternate between them (BENCH_ROUNDS, BENCH_DURATION s
each), so drift on the machine hits both; the figures are medians, and the cost is the median of
each round's on/off ratio (a round's two runs are back to back, so they saw the same machine).
The aim: metering costs under 2% of throughput. Writes bench/RESULTS.md between the metering markers (BENCH_RESULTS=- for none).
"""
import os
import shutil
import statistics
import tempfile

from benchlib import Daemon, Settings, run_wrk, say as _say, write_results

_S = Settings(6)
BIN, BOOTSTRAP, DURATION, ROUNDS = _S.bin, _S.bootstrap, _S.duration, _S.rounds
CONNS, THREADS, RESULTS = _S.conns, _S.threads, _S.results
MARK_BEGIN, MARK_END = "<!-- metering-bench -->", "<!-- /metering-bench -->"


def say(msg):
    _say("bench-metering", msg)


def main():
    if not shutil.which("wrk"):
        raise SystemExit("bench-metering: wrk not found (make bench-metering installs it)")
    tmp = tempfile.mkdtemp(prefix="nimbus-bench-metering-")
    daemons = {}
    try:
        fn = os.path.join(tmp, "c-hello")
        os.makedirs(fn)
        shutil.copy(BOOTSTRAP, os.path.join(fn, "bootstrap"))
        for name, env in (("on", {}), ("off", {"NIMBUS_METERING": "off"})):
            os.makedirs(os.path.join(tmp, name))
            d = daemons[name] = Daemon(BIN, os.path.join(tmp, name), env)
            d.cli("deploy", "hello-c", fn, "--runtime", "provided.al2023", "--handler", "hello")
        script = os.path.join(tmp, "invoke.lua")
        runs = {"on": [], "off": []}
        for r in range(ROUNDS):
            for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                d = daemons[name]
                with open(script, "w") as f:
                    f.write('wrk.method = "POST"\nwrk.body = [[{"name":"ada"}]]\n'
                            f'wrk.headers["Authorization"] = "Bearer {d.token}"\n')
                res = run_wrk(d.admin + "/v1/functions/hello-c/invoke", ["-s", script],
                              DURATION, d.proc.pid, CONNS, THREADS)
                if res["bad"] or res["errors"]:
                    raise SystemExit(f"bench-metering: {name}: {res['bad']} non-2xx, "
                                     f"{res['errors']} socket errors")
                runs[name].append(res)
                say(f"round {r + 1} {name}: {res['rps']:.0f} req/s, p99 {res['p99']:.2f} ms, "
                    f"daemon {res['cpu_us']:.1f} us/req")
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("rps", "p50", "p99", "cpu_us")}
           for k, v in runs.items()}
    cost = (1 - statistics.median(on["rps"] / off["rps"]
                                  for on, off in zip(runs["on"], runs["off"]))) * 100
    rows = [f"| metering {k} | {m['rps']:.0f} | {m['p50']:.2f} / {m['p99']:.2f} | "
            f"{m['cpu_us']:.1f} |" for k, m in (("off", med["off"]), ("on", med["on"]))]
    table = ("| daemon | req/s | p50 / p99 ms | daemon CPU µs/req |\n|---|---|---|---|\n" +
             "\n".join(rows) +
             f"\n\nMetering costs {cost:.1f}% of throughput (the median of the rounds' on/off "
             f"ratios; negative: within noise). "
             f"Medians of {ROUNDS} alternating rounds of {DURATION} s, {CONNS} connections, "
             f"{os.cpu_count()} CPUs.")
    print(table)
    write_results(RESULTS, MARK_BEGIN, MARK_END, "Metering cost (bench/metering.py)", table)


if __name__ == "__main__":
    main()
