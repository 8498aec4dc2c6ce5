#!/usr/bin/env python3
"""Event routing benchmark (not a test): `make bench-events`, or `bench/events.py [BUILD]`.

Three figures, each against a baseline measured in the same run:
  schedules  lateness of schedule firings with 10,000 schedules registered (9,000 dormant,
             1,000 at() schedules due over 20 s): the time from a firing's scheduled second to
             the function's start. Baseline: the same function invoked asynchronously through
             the admin API, from the POST to the function's start.
  fan-out    a topic with 10 function subscribers (the no-op C function): messages published,
             deliveries per second until every subscriber's queue is drained. Baseline: the
             same number of deliveries sent as async invocations directly.
  calls      a function calling another synchronously from inside its sandbox (the runtime's
             channel), p50/p99 per call. Baseline: the same call from outside, a client
             invoking the callee over HTTP (keep-alive) on the admin API.
Writes bench/RESULTS.md between the events markers (BENCH_RESULTS=- for none).
"""
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

from benchlib import Daemon, Settings, say as _say, write_results

_S = Settings(5)
BIN, BOOTSTRAP, RESULTS = _S.bin, _S.bootstrap, _S.results
MARK_BEGIN, MARK_END = "<!-- events-bench -->", "<!-- /events-bench -->"
DORMANT = int(os.environ.get("BENCH_DORMANT", "9000"))
FIRING = int(os.environ.get("BENCH_FIRING", "1000"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "1000"))
CALLS = int(os.environ.get("BENCH_CALLS", "2000"))
SENDERS = 16  # client threads publishing (or invoking), so group commits carry many

STAMP_PY = """import json, time
def handler(event, context):
    print(json.dumps({"stamp": time.time(), "event": event}))
    return None
"""


def say(msg):
    _say("bench-events", msg)


class Api:
    """One keep-alive connection to the admin API (http.client: no per-request connect)."""

    def __init__(self, d):
        self.d = d
        self.c = http.client.HTTPConnection(d.admin[len("http://"):], timeout=60)
        self.h = {"Authorization": "Bearer " + d.token, "Content-Type": "application/json"}

    def call(self, method, path, body=None, headers=None):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        try:
            self.c.request(method, path, data, {**self.h, **(headers or {})})
            r = self.c.getresponse()
        except (ConnectionError, http.client.HTTPException):
            # The server closes an idle keep-alive connection: once more on a new one.
            self.c.close()
            self.c.request(method, path, data, {**self.h, **(headers or {})})
            r = self.c.getresponse()
        out = r.read()
        if r.status >= 300:
            raise SystemExit(f"bench-events: {method} {path}: {r.status} {out[:200]!r}")
        return json.loads(out) if out else None


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def stamps(d, fn, n, timeout):
    """The function's printed {"stamp", "event"} lines, waiting until n are there."""
    deadline = time.monotonic() + timeout
    while True:
        req = http.client.HTTPConnection(d.admin[len("http://"):], timeout=60)
        req.request("GET", f"/v1/functions/{fn}/logs?limit={4 * n + 100}",
                    headers={"Authorization": "Bearer " + d.token})
        out = []
        for line in req.getresponse().read().decode().splitlines():
            rec = json.loads(line)
            if rec["stream"] == "stdout" and rec["line"].startswith('{"stamp"'):
                out.append(json.loads(rec["line"]))
        req.close()
        if len(out) >= n or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def deploy_dir(d, tmp, name, files, runtime, handler):
    path = os.path.join(tmp, name)
    os.makedirs(path, exist_ok=True)
    for fname, content in files.items():
        if isinstance(content, str) and os.path.isfile(content):
            shutil.copy(content, os.path.join(path, fname))
        else:
            with open(os.path.join(path, fname), "w") as f:
                f.write(content)
    d.cli("deploy", name, path, "--runtime", runtime, "--handler", handler, "--timeout", "30")


def bench_schedules(d, tmp):
    deploy_dir(d, tmp, "stamp", {"app.py": STAMP_PY}, "python3", "app.handler")
    api = Api(d)
    per_s = FIRING // 20
    # Baseline first (it also warms the function's instances): the same shape of load, bursts
    # of per_s async invocations at the top of each second for 20 s, from the POST to the
    # function's start.
    # The first 3 s start the instances such bursts need; they are not counted.
    for sec in range(23):
        next_s = int(time.time()) + 1
        time.sleep(max(0, next_s - time.time()))
        for i in range(per_s):
            api.call("POST", "/v1/functions/stamp/invoke",
                     {"warm" if sec < 3 else "sent": time.time()},
                     {"X-Nimbus-Invocation-Type": "Event"})
    got = stamps(d, "stamp", 23 * per_s, 60)
    base_late = [(r["stamp"] - r["event"]["sent"]) * 1000 for r in got if "sent" in r["event"]]
    t0 = time.monotonic()
    for i in range(DORMANT):
        api.call("PUT", f"/v1/schedules/dormant-{i}",
                 {"expression": "at(2099-01-01T00:00:00)", "function": "stamp"})
    base = int(time.time()) + 8
    for i in range(20 * per_s):
        due = base + i % 20
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due))
        api.call("PUT", f"/v1/schedules/fire-{i}",
                 {"expression": f"at({at})", "function": "stamp", "payload": {"due": due}})
    reg_s = time.monotonic() - t0
    say(f"schedules: {DORMANT + 20 * per_s} registered in {reg_s:.1f} s")
    got = stamps(d, "stamp", 43 * per_s, 60)
    late = [(r["stamp"] - r["event"]["due"]) * 1000 for r in got if "due" in r["event"]]
    if len(late) < 20 * per_s:
        raise SystemExit(f"bench-events: only {len(late)} of {20 * per_s} firings arrived")
    return {"registered": DORMANT + 20 * per_s, "register_s": reg_s, "late": late,
            "baseline": base_late}


def bench_fanout(d, tmp):
    for i in range(10):
        deploy_dir(d, tmp, f"sub{i}", {"bootstrap": BOOTSTRAP}, "provided.al2023", "hello")
        os.chmod(os.path.join(tmp, f"sub{i}", "bootstrap"), 0o755)
    api = Api(d)
    api.call("POST", "/v1/topics", {"name": "bench"})
    for i in range(10):
        api.call("POST", "/v1/topics/bench/subscriptions", {"target": f"function:sub{i}"})

    def invocations():
        return sum(api.call("GET", f"/v1/functions/sub{i}")["stats"]["invocations"]
                   for i in range(10))

    def run(send):
        start_count = invocations()
        t0 = time.monotonic()
        threads = [threading.Thread(target=send, args=(k,)) for k in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = time.monotonic() - t0
        want = start_count + 10 * MESSAGES
        while invocations() < want:
            if time.monotonic() - t0 > 300:
                raise SystemExit("bench-events: deliveries did not finish in 300 s")
            time.sleep(0.05)
        return accepted, time.monotonic() - t0

    def publish(k):
        a = Api(d)
        for i in range(k, MESSAGES, SENDERS):
            a.call("POST", "/v1/topics/bench/publish", {"message": f"m{i}"})

    def direct(k):
        a = Api(d)
        for i in range(k, MESSAGES, SENDERS):
            for s in range(10):
                a.call("POST", f"/v1/functions/sub{s}/invoke", b'{"m":1}',
                       {"X-Nimbus-Invocation-Type": "Event"})

    direct_acc, direct_s = run(direct)
    pub_acc, pub_s = run(publish)
    return {"messages": MESSAGES, "publish_s": pub_s, "publish_accept_s": pub_acc,
            "direct_s": direct_s, "direct_accept_s": direct_acc}


CALLER_PY = """import json, time, nimbus
def handler(event, context):
    lat = []
    for i in range(event["n"]):
        t = time.perf_counter()
        nimbus.invoke("callee", {"i": i})
        lat.append((time.perf_counter() - t) * 1000)
    return lat
"""


def bench_calls(d, tmp):
    deploy_dir(d, tmp, "callee", {"bootstrap": BOOTSTRAP}, "provided.al2023", "hello")
    os.chmod(os.path.join(tmp, "callee", "bootstrap"), 0o755)
    deploy_dir(d, tmp, "caller", {"app.py": CALLER_PY}, "python3", "app.handler")
    api = Api(d)
    api.call("POST", "/v1/functions/callee/invoke", b"{}")  # warm
    api.call("POST", "/v1/functions/caller/invoke", {"n": 10})
    inside = api.call("POST", "/v1/functions/caller/invoke", {"n": CALLS})
    outside = []
    for i in range(CALLS):
        t = time.perf_counter()
        api.call("POST", "/v1/functions/callee/invoke", json.dumps({"i": i}).encode())
        outside.append((time.perf_counter() - t) * 1000)
    return {"inside": inside, "outside": outside}


def daemon(tmp, name):
    os.makedirs(os.path.join(tmp, name))
    return Daemon(BIN, os.path.join(tmp, name))


def main():
    parts = sys.argv[2].split(",") if len(sys.argv) > 2 else ["schedules", "fanout", "calls"]
    tmp = tempfile.mkdtemp(prefix="nimbus-bench-events-")
    rows = []
    try:
        if "calls" in parts:
            d = daemon(tmp, "calls")
            try:
                r = bench_calls(d, tmp)
            finally:
                d.stop()
            i, o = r["inside"], r["outside"]
            rows.append(f"| sync call, inside the sandbox (python -> C, {CALLS} calls) | "
                        f"{pct(i, 50):.3f} / {pct(i, 99):.3f} ms | {pct(o, 50) / pct(i, 50):.2f}x "
                        f"faster than HTTP |")
            rows.append(f"| sync call, outside over HTTP keep-alive (baseline) | "
                        f"{pct(o, 50):.3f} / {pct(o, 99):.3f} ms | 1 |")
            say(rows[-2] + "\n" + rows[-1])
        if "fanout" in parts:
            d = daemon(tmp, "fanout")
            try:
                r = bench_fanout(d, tmp)
            finally:
                d.stop()
            n = 10 * r["messages"]
            pub, direct = n / r["publish_s"], n / r["direct_s"]
            rows.append(f"| topic fan-out, {r['messages']} messages x 10 function subscribers | "
                        f"{pub:.0f} deliveries/s ({r['messages'] / r['publish_accept_s']:.0f} "
                        f"publishes/s accepted) | {pub / direct:.2f} |")
            rows.append(f"| the same {n} deliveries as direct async invokes (baseline) | "
                        f"{direct:.0f} deliveries/s | 1 |")
            say(rows[-2] + "\n" + rows[-1])
        if "schedules" in parts:
            d = daemon(tmp, "schedules")
            try:
                r = bench_schedules(d, tmp)
            finally:
                d.stop()
            late, base = r["late"], r["baseline"]
            rows.append(f"| schedule lateness, {r['registered']} registered, {len(late)} fired "
                        f"over 20 s | p50 {pct(late, 50):.1f} / p99 {pct(late, 99):.1f} / max "
                        f"{max(late):.1f} ms | p99 {pct(late, 99) / pct(base, 99):.2f}x |")
            rows.append(f"| async invoke, POST to function start (baseline) | p50 "
                        f"{pct(base, 50):.1f} / p99 {pct(base, 99):.1f} / max {max(base):.1f} ms "
                        f"| 1 |")
            rows.append(f"| registering the {r['registered']} schedules one PUT at a time | "
                        f"{r['register_s']:.1f} s | |")
            say("\n".join(rows[-3:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = ("| what | figure | vs baseline |\n|---|---|---|\n" + "\n".join(rows) +
             f"\n\n`bench/events.py` on {os.cpu_count()} CPUs, "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}.")
    print(table)
    write_results(RESULTS, MARK_BEGIN, MARK_END, "Event routing (bench/events.py)", table)


if __name__ == "__main__":
    main()
