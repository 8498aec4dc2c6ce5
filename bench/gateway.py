#!/usr/bin/env python3
"""API gateway benchmark (not a test): `make bench-gateway`, or `bench/gateway.py [BUILD_DIR]`.

In one run, on loopback, the C hello function (examples/c-hello) is called with wrk through:

  invoke   the admin API's POST /v1/functions/hello-c/invoke: the invocation without the gateway
  none     a gateway route with no auth
  full     a route with an API key whose usage plan has a rate and a quota, an API throttle and
           CORS (every request carries an allowed Origin and gets the CORS headers back)
  jwt      a route behind the API's JWT authorizer (HS256, a required scope), one token reused
           as a client would
  jwt-rs   the same with an RS256 key (verified once per loop, then from the token cache)

Each target is warmed up, then measured BENCH_DURATION seconds (default 6) in each of
BENCH_ROUNDS (3) interleaved rounds with BENCH_CONNS (64) connections; each figure is the median
over the rounds. Per target: requests/s, p50/p99, non-2xx answers, and the daemon's own CPU per
request (utime+stime of the nimbus process, all threads, not its instances) from /proc. The cost
of a feature set is its CPU per request minus the `none` route's, measured in the same run.
Writes the table into bench/RESULTS.md between the gateway markers (BENCH_RESULTS=- for none).
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from benchlib import HERE, Daemon, Settings, run_wrk, say as _say, write_results

_S = Settings(6)
BIN, BOOTSTRAP, DURATION, ROUNDS = _S.bin, _S.bootstrap, _S.duration, _S.rounds
CONNS, THREADS, RESULTS = _S.conns, _S.threads, _S.results
MARK_BEGIN, MARK_END = "<!-- gateway-bench -->", "<!-- /gateway-bench -->"


def say(msg):
    _say("bench-gateway", msg)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def setup(d, tmp):
    fn = os.path.join(tmp, "c-hello")
    os.makedirs(fn)
    shutil.copy(BOOTSTRAP, os.path.join(fn, "bootstrap"))
    d.cli("deploy", "hello-c", fn, "--runtime", "provided.al2023", "--handler", "hello")
    d.api("PUT", "/v1/apis/bnone", {"base_path": "/none"})
    d.api("POST", "/v1/apis/bnone/routes", {"method": "GET", "path": "/hello", "function": "hello-c"})
    big = {"rate": 1000000, "burst": 1000000}
    d.api("PUT", "/v1/plans/bench", {**big, "quota": {"limit": 1000000000, "period": "month"}})
    d.api("PUT", "/v1/apis/bfull", {"base_path": "/full", "throttle": big,
                                    "cors": {"origins": ["https://app.example"],
                                             "headers": ["x-api-key"]}})
    d.api("POST", "/v1/apis/bfull/routes",
          {"method": "GET", "path": "/hello", "function": "hello-c", "auth": "key"})
    key = d.api("POST", "/v1/keys", {"name": "bench", "plan": "bench"})["key"]
    secret = "bench-secret-bench-secret-bench-secret"
    d.api("PUT", "/v1/apis/bjwt", {"base_path": "/jwt", "jwt": {
        "issuer": "bench", "audiences": ["api"], "algorithms": ["HS256"],
        "keys": [{"secret": secret}]}})
    d.api("POST", "/v1/apis/bjwt/routes", {"method": "GET", "path": "/hello", "function": "hello-c",
                                           "auth": "jwt", "scopes": "read"})
    claims = {"iss": "bench", "aud": "api", "sub": "bench-user", "scope": "read",
              "exp": int(time.time()) + 86400}
    signing = (b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." +
               b64url(json.dumps(claims).encode()))
    hs = signing + "." + b64url(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())
    rsa = os.path.join(tmp, "rsa.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", rsa], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", rsa, "-pubout"], check=True,
                         capture_output=True).stdout.decode()
    d.api("PUT", "/v1/apis/bjwtrs", {"base_path": "/jwtrs", "jwt": {
        "issuer": "bench", "audiences": ["api"], "algorithms": ["RS256"], "keys": [{"pem": pub}]}})
    d.api("POST", "/v1/apis/bjwtrs/routes", {"method": "GET", "path": "/hello",
                                             "function": "hello-c", "auth": "jwt", "scopes": "read"})
    signing = (b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." +
               b64url(json.dumps(claims).encode()))
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", rsa], input=signing.encode(),
                         check=True, capture_output=True).stdout
    rs = signing + "." + b64url(sig)
    return {
        "invoke": (d.admin + "/v1/functions/hello-c/invoke",
                   ["-s", os.path.join(HERE, "post.lua"), "-H", "Authorization: Bearer " + d.token]),
        "none": (d.gw + "/none/hello", []),
        "full": (d.gw + "/full/hello", ["-H", "x-api-key: " + key, "-H", "Origin: https://app.example"]),
        "jwt": (d.gw + "/jwt/hello", ["-H", "Authorization: Bearer " + hs]),
        "jwt-rs": (d.gw + "/jwtrs/hello", ["-H", "Authorization: Bearer " + rs]),
    }


def main():
    for tool in ("wrk", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"bench-gateway: {tool} not found (make bench-gateway installs it)")
    tmp = tempfile.mkdtemp(prefix="nimbus-bench-gw-")
    d = Daemon(BIN, tmp)
    try:
        targets = setup(d, tmp)
        for name, (url, args) in targets.items():
            say(f"{name}: warm-up")
            w = run_wrk(url, args, 2, d.proc.pid, CONNS, THREADS)
            if w["bad"] or w["errors"]:
                say(f"warning: {name} warm-up had {w['bad']} non-2xx and {w['errors']} socket errors")
        runs = {n: [] for n in targets}
        for rnd in range(ROUNDS):
            for name, (url, args) in targets.items():
                say(f"round {rnd + 1}/{ROUNDS}: {name}")
                runs[name].append(run_wrk(url, args, DURATION, d.proc.pid, CONNS, THREADS))
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    base = med["none"]
    rows = ["| target | requests/s | vs none | p50 ms | p99 ms | daemon CPU µs/req | cost vs none µs/req | non-2xx |",
            "|---|---|---|---|---|---|---|---|"]
    for n, m in med.items():
        rows.append(f"| {n} | {m['rps']:.0f} | {m['rps'] / base['rps']:.2f}x | {m['p50']:.3f} | "
                    f"{m['p99']:.3f} | {m['cpu_us']:.1f} | {m['cpu_us'] - base['cpu_us']:+.1f} | "
                    f"{int(m['bad'] + m['errors'])} |")
    cmd = "bench/gateway.py" + "".join(f" {v}={os.environ[v]}" for v in
                                       ("BENCH_DURATION", "BENCH_ROUNDS", "BENCH_CONNS")
                                       if v in os.environ)
    text = (f"Gateway, {time.strftime('%Y-%m-%d')}, `{cmd}`, {os.cpu_count()} CPUs, "
            f"{CONNS} connections, medians of {ROUNDS} rounds of {DURATION} s (C hello function):\n\n"
            + "\n".join(rows))
    print(text)
    write_results(RESULTS, MARK_BEGIN, MARK_END, "API gateway", text)


if __name__ == "__main__":
    main()
