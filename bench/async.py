#!/usr/bin/env python3
"""Async events and queues benchmark (not a test): `make bench-async`, or `bench/async.py [BUILD]`.

In one run, on loopback, with wrk and BENCH_CONNS (64) connections:
  accept   POST /v1/functions/hello-c/invoke with X-Nimbus-Invocation-Type: Event: each 202
           comes only after the event is on disk (group commit). The dispatcher runs meanwhile,
           as it would in production.
  drain    after accepting, the time until the function's queue is empty: events/s processed
           end to end by the no-op C function (examples/c-hello).
  send     POST /v1/queues/bench/messages (durable, one message per request)
  receive  POST /v1/queues/bench/receive {"max":10} (messages per second)
Baseline in the same run: GET /healthz (the admin API's bare HTTP cost). Figures are medians of
BENCH_ROUNDS (3) rounds of BENCH_DURATION (5) s. Writes bench/RESULTS.md between the async
markers (BENCH_RESULTS=- for none).
"""
import os
import shutil
import statistics
import tempfile
import time

from benchlib import Daemon, Settings, run_wrk, say as _say, write_results

_S = Settings(5)
BIN, BOOTSTRAP, DURATION, ROUNDS = _S.bin, _S.bootstrap, _S.duration, _S.rounds
CONNS, THREADS, RESULTS = _S.conns, _S.threads, _S.results
MARK_BEGIN, MARK_END = "<!-- async-bench -->", "<!-- /async-bench -->"


def say(msg):
    _say("bench-async", msg)


def lua(tmp, name, method, body, headers):
    path = os.path.join(tmp, name + ".lua")
    with open(path, "w") as f:
        f.write(f'wrk.method = "{method}"\n')
        if body is not None:
            f.write(f"wrk.body = [[{body}]]\n")
        for k, v in headers.items():
            f.write(f'wrk.headers["{k}"] = "{v}"\n')
    return path


def depth(d):
    a = d.api("GET", "/v1/functions/hello-c")["stats"]["async"]
    return a["queued"] + a["in_flight"]


def main():
    if not shutil.which("wrk"):
        raise SystemExit("bench-async: wrk not found (make bench-async installs it)")
    tmp = tempfile.mkdtemp(prefix="nimbus-bench-async-")
    d = Daemon(BIN, tmp)
    runs = {"healthz": [], "accept": [], "drain": [], "send": [], "receive": []}
    try:
        fn = os.path.join(tmp, "c-hello")
        os.makedirs(fn)
        shutil.copy(BOOTSTRAP, os.path.join(fn, "bootstrap"))
        d.cli("deploy", "hello-c", fn, "--runtime", "provided.al2023", "--handler", "hello")
        d.api("PUT", "/v1/queues/bench", {"visibility_timeout_s": 43200})
        auth = {"Authorization": "Bearer " + d.token, "Content-Type": "application/json"}
        scripts = {
            "accept": lua(tmp, "accept", "POST", '{"name":"ada"}',
                          {**auth, "X-Nimbus-Invocation-Type": "Event"}),
            "send": lua(tmp, "send", "POST", '{"body":"hello queue"}', auth),
            "receive": lua(tmp, "receive", "POST", '{"max":10}', auth),
        }
        urls = {
            "healthz": d.admin + "/healthz",
            "accept": d.admin + "/v1/functions/hello-c/invoke",
            "send": d.admin + "/v1/queues/bench/messages",
            "receive": d.admin + "/v1/queues/bench/receive",
        }
        for rnd in range(ROUNDS):
            for name in ("healthz", "accept", "send", "receive"):
                say(f"round {rnd + 1}/{ROUNDS}: {name}")
                args = ["-s", scripts[name]] if name in scripts else []
                r = run_wrk(urls[name], args, DURATION, d.proc.pid, CONNS, THREADS)
                if name == "receive":
                    r["rps"] *= 10  # messages, 10 per request while the queue lasts
                runs[name].append(r)
                if name == "accept":
                    # The drain: from the end of the accept run until every event ran.
                    t0, left = time.monotonic(), depth(d)
                    processed = r["requests"]
                    while depth(d) > 0 and time.monotonic() - t0 < 300:
                        time.sleep(0.05)
                    el = time.monotonic() - t0
                    # Events processed during the accept run are counted in neither figure.
                    runs["drain"].append({"rps": left / el if el > 0 else 0, "left": left,
                                          "requests": processed, "p50": 0, "p99": 0, "bad": 0,
                                          "errors": 0, "cpu_us": 0})
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in runs.items()}
    rows = ["| target | per second | vs healthz | p50 ms | p99 ms | daemon CPU µs/req | non-2xx |",
            "|---|---|---|---|---|---|---|"]
    base = med["healthz"]["rps"]
    labels = {"healthz": "GET /healthz (requests)", "accept": "async invoke, durable (events)",
              "drain": "drain to the C function (events)", "send": "queue send, durable (messages)",
              "receive": "queue receive, 10 a request (messages)"}
    for n in ("healthz", "accept", "drain", "send", "receive"):
        m = med[n]
        lat = f"{m['p50']:.3f} | {m['p99']:.3f}" if n != "drain" else "- | -"
        cpu = f"{m['cpu_us']:.1f}" if n != "drain" else "-"
        rows.append(f"| {labels[n]} | {m['rps']:.0f} | {m['rps'] / base:.2f}x | {lat} | {cpu} | "
                    f"{int(m['bad'] + m['errors'])} |")
    cmd = "bench/async.py" + "".join(f" {v}={os.environ[v]}" for v in
                                     ("BENCH_DURATION", "BENCH_ROUNDS", "BENCH_CONNS")
                                     if v in os.environ)
    text = (f"Async events and queues, {time.strftime('%Y-%m-%d')}, `{cmd}`, {os.cpu_count()} "
            f"CPUs, {CONNS} connections, medians of {ROUNDS} rounds of {DURATION} s; the drain "
            f"is the events left after each accept run divided by the time to run them all "
            f"(median {med['drain']['left']:.0f} events):\n\n" + "\n".join(rows))
    print(text)
    write_results(RESULTS, MARK_BEGIN, MARK_END, "Async events and queues", text)


if __name__ == "__main__":
    main()
