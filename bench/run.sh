#!/usr/bin/env bash
# nimbus benchmark (not a test): `make bench`, or `bench/run.sh [BUILD_DIR]` (default: build).
#
# In one run, on loopback only, with wrk (CONNS connections, THREADS threads, --latency), against:
#   workerd    a hello worker in workerd (npm package, pinned in bench/package.json): the baseline
#   python3    nimbus, examples/python-hello (runtime python3, handler app.handler)
#   c          nimbus, examples/c-hello bootstrap (runtime provided.al2023)
#   healthz    nimbus, GET /healthz: the daemon's pure HTTP cost, no invocation
# Each target is first warmed up (so all its instances are started; every response is checked),
# then measured for DURATION seconds in each of ROUNDS interleaved rounds; each figure is the
# median over the rounds. Per target: requests/s, p50/p99 latency, errors, ratios to the workerd
# run of the same round, and CPU per request from /proc: the nimbus daemon's own (utime+stime)
# and its instances' (all its descendants), plus how busy wrk and the rest of the machine were.
# Prints a markdown table and writes it into bench/RESULTS.md between the bench markers (the
# rest of that file is kept). Every process it starts is stopped on exit (trap).
#
# Then, for the autoscaling issue: a connection sweep (BENCH_SWEEP_CONNS, default "1 16 64 256":
# each target warmed 2 s at that concurrency, then measured BENCH_SWEEP_DURATION s, default 5,
# once), nimbus's added latency at 1 connection (C hello p50 minus /healthz p50), a burst from
# zero (bench/burst.py: BENCH_BURST, default 200, requests at once to a freshly deployed
# function with no instance: time until all are answered, instances started, errors) and
# instance churn (bench/churn.py: BENCH_CHURN_CLIENTS clients, default 8, each invoking
# ?version=1 of its own function, whose instances then stop after every invocation: instance
# starts per second sustained over BENCH_CHURN_DURATION s, default 5).
#
# Environment: BENCH_DURATION (s per measured run, default 8), BENCH_ROUNDS (3), BENCH_WARMUP
# (s, default 5), BENCH_CONNS (64), BENCH_THREADS (wrk threads, default nproc), BENCH_RESULTS
# (file, default bench/RESULTS.md; "-" writes none), BENCH_KEEP=1 keeps the temporary directory
# (wrk outputs, daemon and workerd logs).
set -Eeuo pipefail

BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/nimbus
C_BOOTSTRAP=$BUILD/examples/c-hello/bootstrap
DURATION=${BENCH_DURATION:-8}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-5}
CONNS=${BENCH_CONNS:-64}
THREADS=${BENCH_THREADS:-$(nproc)}
RESULTS=${BENCH_RESULTS:-$HERE/RESULTS.md}
[ "$THREADS" -gt "$CONNS" ] && THREADS=$CONNS
COMMAND="bench/run.sh ${1:-build}"
SWEEP_CONNS=${BENCH_SWEEP_CONNS:-1 16 64 256}
SWEEP_DURATION=${BENCH_SWEEP_DURATION:-5}
BURST=${BENCH_BURST:-200}
CHURN_DURATION=${BENCH_CHURN_DURATION:-5}
for v in BENCH_DURATION BENCH_ROUNDS BENCH_WARMUP BENCH_CONNS BENCH_THREADS BENCH_SWEEP_CONNS \
    BENCH_SWEEP_DURATION BENCH_BURST BENCH_CHURN_DURATION BENCH_CHURN_CLIENTS; do
    [ -n "${!v:-}" ] && COMMAND="$v=${!v} $COMMAND"
done

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in wrk python3 curl npm; do
    command -v $tool >/dev/null 2>&1 || die "$tool not found (make bench installs it: scripts/deps.sh --bench)"
done
[ -x "$BIN" ] || die "$BIN not found: run make build"
[ -x "$C_BOOTSTRAP" ] || die "$C_BOOTSTRAP not found: run make build"

# --- workerd, from the committed package.json + package-lock.json -----------------------------
case $(uname -m) in
x86_64) WPKG=workerd-linux-64 ;;
aarch64 | arm64) WPKG=workerd-linux-arm64 ;;
*) die "no prebuilt workerd for $(uname -m)" ;;
esac
WORKERD=$HERE/node_modules/@cloudflare/$WPKG/bin/workerd
WANT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dependencies"]["workerd"])' "$HERE/package.json")
HAVE=$(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["version"])
except Exception: print("")' "$HERE/node_modules/@cloudflare/$WPKG/package.json")
if [ ! -x "$WORKERD" ] || [ "$HAVE" != "$WANT" ]; then
    say "installing workerd $WANT into bench/node_modules (npm ci)"
    if ! (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >&2); then
        say "npm ci failed; trying npm install --no-save (the version stays pinned by package.json)"
        (cd "$HERE" && npm install --no-save --no-audit --no-fund --loglevel=error >&2) || die "npm install failed"
    fi
fi
[ -x "$WORKERD" ] || die "$WORKERD missing after npm ci"

# --- processes, and stopping them --------------------------------------------------------------
TMP=$(mktemp -d /tmp/nimbus-bench.XXXXXX)
NIMBUS_PID="" WORKERD_PID="" WRK_PID=""

stop_pid() { # PID SECONDS: TERM, wait, KILL
    local pid=$1 i=0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? left=""
    trap - EXIT INT TERM
    [ -n "$WRK_PID" ] && stop_pid "$WRK_PID" 1
    [ -n "$WORKERD_PID" ] && stop_pid "$WORKERD_PID" 5
    if [ -n "$NIMBUS_PID" ]; then
        left=$(python3 "$HERE/proc_cpu.py" pids "$NIMBUS_PID" 2>/dev/null || true)
        stop_pid "$NIMBUS_PID" 10
        for p in $left; do # instances the daemon did not stop (should be none)
            if kill -0 "$p" 2>/dev/null; then
                say "warning: instance process $p outlived the daemon; killing it"
                kill -KILL "$p" 2>/dev/null || true
            fi
        done
    fi
    if [ -n "${BENCH_KEEP:-}" ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'say "error: command failed at bench/run.sh line $LINENO"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL PID: until URL answers, or PID dies, or 15 s
    local i=0
    until curl -s -o /dev/null -m 1 "$1"; do
        kill -0 "$2" 2>/dev/null || return 1
        i=$((i + 1)); [ $i -gt 150 ] && return 1
        sleep 0.1
    done
}

# --- start nimbus and deploy the two functions -------------------------------------------------
DATA=$TMP/data
mkdir -p "$DATA" "$TMP/c-hello"
"$BIN" serve --listen 127.0.0.1:0 --data "$DATA" --drain-timeout 2 >"$TMP/nimbus.log" 2>&1 &
NIMBUS_PID=$!
i=0
until [ -s "$DATA/listen" ]; do
    kill -0 "$NIMBUS_PID" 2>/dev/null || { cat "$TMP/nimbus.log" >&2; die "nimbus did not start"; }
    i=$((i + 1)); [ $i -gt 150 ] && die "nimbus did not write $DATA/listen"
    sleep 0.1
done
NIMBUS_URL=http://$(cat "$DATA/listen")
export NIMBUS_TOKEN
NIMBUS_TOKEN=$(cat "$DATA/admin.token")
cp "$C_BOOTSTRAP" "$TMP/c-hello/bootstrap"
"$BIN" --data "$DATA" deploy hello "$ROOT/examples/python-hello" --runtime python3 --handler app.handler >&2
"$BIN" --data "$DATA" deploy hello-c "$TMP/c-hello" --runtime provided.al2023 --handler hello >&2

# --- start workerd -----------------------------------------------------------------------------
WPORT=$(free_port)
cp "$HERE/hello-worker.js" "$TMP/hello-worker.js"
cat >"$TMP/workerd.capnp" <<EOF
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .helloWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:$WPORT", http = (), service = "main") ],
);

const helloWorker :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "hello-worker.js") ],
  compatibilityDate = "2024-09-23",
);
EOF
"$WORKERD" serve "$TMP/workerd.capnp" >"$TMP/workerd.log" 2>&1 &
WORKERD_PID=$!
WORKERD_URL=http://127.0.0.1:$WPORT
wait_http "$WORKERD_URL/" "$WORKERD_PID" || { cat "$TMP/workerd.log" >&2; die "workerd did not start"; }

# --- measuring ---------------------------------------------------------------------------------
to_ms() { # "1.23ms" / "456.78us" / "1.02s" / "1.5m" -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

reaped_ticks() { # this shell's cutime+cstime, read without forking
    local line f
    read -r line </proc/$$/stat
    read -r -a f <<<"${line##*) }" # f[N - 3] is field N of proc(5)
    echo $((f[13] + f[14]))
}

busy_ticks() { # machine-wide non-idle CPU ticks since boot, from /proc/stat, without forking
    local _cpu user nice sys _idle _iowait irq softirq steal _rest
    read -r _cpu user nice sys _idle _iowait irq softirq steal _rest </proc/stat
    echo $((user + nice + sys + irq + softirq + steal))
}

WRK_CPU=0 # seconds of CPU the last run_wrk took
run_wrk() { # OUT DURATION URL [wrk args...]: wrk in the background so the trap can stop it
    local out=$1 dur=$2 url=$3 t0
    shift 3
    t0=$(reaped_ticks)
    wrk -t "$THREADS" -c "$CONNS" -d "${dur}s" "$@" "$url" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || true
    WRK_PID=""
    WRK_CPU=$(awk -v a="$t0" -v b="$(reaped_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
}

declare -A M     # M[label,round,metric]: one measured run
declare -A NOTE  # what went wrong, per label
LABELS=(workerd python3 c healthz)
declare -A URL=(
    [workerd]="$WORKERD_URL/"
    [python3]="$NIMBUS_URL/v1/functions/hello/invoke"
    [c]="$NIMBUS_URL/v1/functions/hello-c/invoke"
    [healthz]="$NIMBUS_URL/healthz"
)
declare -A PID_OF=([workerd]=$WORKERD_PID [python3]=$NIMBUS_PID [c]=$NIMBUS_PID [healthz]=$NIMBUS_PID)
declare -A METHOD=([workerd]=POST [python3]=POST [c]=POST [healthz]=GET)
for l in "${LABELS[@]}"; do NOTE[$l]=""; done
note() { NOTE[$1]="${NOTE[$1]:+${NOTE[$1]}; }$2"; }

# warm LABEL: the same load for WARMUP seconds (2 for /healthz); every POST response is checked
warm() {
    local l=$1 out=$TMP/$1.warm check secs=$WARMUP
    if [ "${METHOD[$l]}" = POST ]; then
        say "$l: warm-up ${secs}s"
        run_wrk "$out" "$secs" "${URL[$l]}" -s "$HERE/post_check.lua"
        check=$(grep '^check:' "$out" || echo "check: no result")
        case $check in *" bad=0 "*) ;; *) note "$l" "warm-up: ${check#check: }" ;; esac
    else
        secs=2
        say "$l: warm-up ${secs}s"
        run_wrk "$out" "$secs" "${URL[$l]}"
    fi
}

# measure LABEL ROUND: one measured run with CPU sampling
measure() {
    local l=$1 r=$2 pid=${PID_OF[$1]} out=$TMP/$1.$2.wrk non2xx sock sys0 sys1 own desc inst
    python3 "$HERE/proc_cpu.py" snap "$pid" >"$TMP/$l.$r.cpu0"
    sys0=$(busy_ticks)
    if [ "${METHOD[$l]}" = POST ]; then
        run_wrk "$out" "$DURATION" "${URL[$l]}" --latency -s "$HERE/post.lua"
    else
        run_wrk "$out" "$DURATION" "${URL[$l]}" --latency
    fi
    sys1=$(busy_ticks)
    python3 "$HERE/proc_cpu.py" snap "$pid" >"$TMP/$l.$r.cpu1"
    kill -0 "$pid" 2>/dev/null || note "$l" "PROCESS $pid DIED during round $r"
    M[$l,$r,rps]=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    M[$l,$r,reqs]=$(awk '/ requests in / {print $1}' "$out")
    M[$l,$r,p50]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    M[$l,$r,p99]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sock=$(awk '/Socket errors:/ {gsub(/[^0-9 ]/, " "); s = 0; for (i = 1; i <= NF; i++) s += $i; print s}' "$out")
    M[$l,$r,errs]=$((${non2xx:-0} + ${sock:-0}))
    [ -n "$non2xx" ] && note "$l" "round $r: $non2xx non-2xx"
    [ -n "$sock" ] && note "$l" "round $r: socket errors: $(grep 'Socket errors:' "$out" | sed 's/^ *Socket errors: *//')"
    read -r own desc inst _ < <(python3 "$HERE/proc_cpu.py" diff "$TMP/$l.$r.cpu0" "$TMP/$l.$r.cpu1" "${M[$l,$r,reqs]:-0}")
    M[$l,$r,own]=$own M[$l,$r,desc]=$desc M[$l,$r,inst]=$inst
    M[$l,$r,sys]=$(awk -v a="$sys0" -v b="$sys1" -v hz="$HZ" -v d="$DURATION" 'BEGIN { printf "%.2f", (b - a) / hz / d }')
    M[$l,$r,wrk]=$(awk -v c="$WRK_CPU" -v d="$DURATION" 'BEGIN { printf "%.2f", c / d }')
    say "$l round $r: ${M[$l,$r,rps]} req/s, p50 ${M[$l,$r,p50]} ms, p99 ${M[$l,$r,p99]} ms, errors ${M[$l,$r,errs]}"
}

HZ=$(getconf CLK_TCK)
START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for l in "${LABELS[@]}"; do warm "$l"; done
for r in $(seq 1 "$ROUNDS"); do
    say "round $r of $ROUNDS (${DURATION}s per target)"
    # each round starts at another target, so a burst of noise does not always hit the same one
    for i in "${!LABELS[@]}"; do
        measure "${LABELS[$(((i + r - 1) % ${#LABELS[@]}))]}" "$r"
    done
done
# --- connection sweep: each target at each concurrency, measured once -------------------------
declare -A S # S[label,conns,metric]
sweep_one() { # LABEL CONNS
    local l=$1 c=$2 t=$THREADS out=$TMP/sweep.$1.$2 non2xx sock args=()
    [ "$t" -gt "$c" ] && t=$c
    [ "${METHOD[$l]}" = POST ] && args=(-s "$HERE/post.lua")
    wrk -t "$t" -c "$c" -d 2s "${args[@]}" "${URL[$l]}" >/dev/null 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || true
    wrk -t "$t" -c "$c" -d "${SWEEP_DURATION}s" --latency "${args[@]}" "${URL[$l]}" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || true
    WRK_PID=""
    S[$l,$c,rps]=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    S[$l,$c,p50]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    S[$l,$c,p99]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sock=$(awk '/Socket errors:/ {gsub(/[^0-9 ]/, " "); s = 0; for (i = 1; i <= NF; i++) s += $i; print s}' "$out")
    S[$l,$c,errs]=$((${non2xx:-0} + ${sock:-0}))
    say "sweep $l c=$c: ${S[$l,$c,rps]} req/s, p50 ${S[$l,$c,p50]} ms, p99 ${S[$l,$c,p99]} ms, errors ${S[$l,$c,errs]}"
}
for c in $SWEEP_CONNS; do
    for l in "${LABELS[@]}"; do sweep_one "$l" "$c"; done
done

# --- burst from zero and instance churn --------------------------------------------------------
fn_stat() { # NAME KEY: a field of the function's stats
    curl -s -H "Authorization: Bearer $NIMBUS_TOKEN" "$NIMBUS_URL/v1/functions/$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"][sys.argv[1]])' "$2"
}
declare -A B # B[kind,metric]
for kind in python3 c; do
    if [ $kind = python3 ]; then
        "$BIN" --data "$DATA" deploy burst-py "$ROOT/examples/python-hello" --runtime python3 --handler app.handler >&2
        name=burst-py
    else
        "$BIN" --data "$DATA" deploy burst-c "$TMP/c-hello" --runtime provided.al2023 --handler hello >&2
        name=burst-c
    fi
    say "burst from zero: $BURST requests at once to $name"
    python3 "$HERE/burst.py" "$NIMBUS_URL" "$NIMBUS_TOKEN" "$name" "$BURST" >"$TMP/burst.$kind.json"
    B[$kind,json]=$(cat "$TMP/burst.$kind.json")
    B[$kind,starts]=$(fn_stat "$name" instance_starts)
    say "burst $kind: ${B[$kind,json]} instances started: ${B[$kind,starts]}"
done
declare -A CH
CHURN_CLIENTS=${BENCH_CHURN_CLIENTS:-8}
for kind in python3 c; do
    if [ $kind = python3 ]; then
        src=$ROOT/examples/python-hello rt=python3 h=app.handler pre=churn-py
    else
        src=$TMP/c-hello rt=provided.al2023 h=hello pre=churn-c
    fi
    names=()
    for i in $(seq 1 "$CHURN_CLIENTS"); do
        "$BIN" --data "$DATA" deploy $pre-$i "$src" --runtime $rt --handler $h >/dev/null
        "$BIN" --data "$DATA" deploy $pre-$i "$src" --description v2 >/dev/null
        names+=("$pre-$i")
    done
    s0=0
    for n in "${names[@]}"; do s0=$((s0 + $(fn_stat "$n" instance_starts))); done
    say "churn $kind: $CHURN_CLIENTS clients for ${CHURN_DURATION}s"
    python3 "$HERE/churn.py" "$NIMBUS_URL" "$NIMBUS_TOKEN" "$CHURN_DURATION" "${names[@]}" >"$TMP/churn.$kind.json"
    s1=0
    for n in "${names[@]}"; do s1=$((s1 + $(fn_stat "$n" instance_starts))); done
    read -r inv errs secs < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["invocations"], j["errors"], j["seconds"])' "$TMP/churn.$kind.json")
    CH[$kind,starts]=$((s1 - s0))
    CH[$kind,rate]=$(awk -v n=$((s1 - s0)) -v d="$secs" 'BEGIN { printf "%.0f", n / d }')
    CH[$kind,rps]=$(awk -v n="$inv" -v d="$secs" 'BEGIN { printf "%.0f", n / d }')
    CH[$kind,errs]=$errs
    say "churn $kind: ${CH[$kind,rate]} instance starts/s (${CH[$kind,starts]} in ${secs}s, $inv invocations), errors $errs"
done

ELAPSED=$(($(date +%s) - START))
DAEMON_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$NIMBUS_PID/status" 2>/dev/null || echo "?")
WORKERD_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$WORKERD_PID/status" 2>/dev/null || echo "?")

# --- per target: the median over the rounds ----------------------------------------------------
median() { # values... ("n/a" and empty ones skipped) -> the median, or n/a
    printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g |
        awk '{ v[n++] = $1 } END { if (!n) print "n/a"; else if (n % 2) print v[(n - 1) / 2];
                                   else print (v[n / 2 - 1] + v[n / 2]) / 2 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "n/a" && a != "" && b + 0 > 0) printf "%.4f", a / b; else print "n/a" }'; }
declare -A V # V[label,metric]: medians; ratios are per round (same-round workerd), then the median
for l in "${LABELS[@]}"; do
    for m in rps p50 p99 own desc inst sys wrk; do
        vals=()
        for r in $(seq 1 "$ROUNDS"); do vals+=("${M[$l,$r,$m]:-n/a}"); done
        V[$l,$m]=$(median "${vals[@]}")
    done
    errs=0 rmin="" rmax=""
    for r in $(seq 1 "$ROUNDS"); do
        errs=$((errs + ${M[$l,$r,errs]:-0}))
        x=${M[$l,$r,rps]:-0}
        rmin=$(awk -v a="$rmin" -v b="$x" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')
        rmax=$(awk -v a="$rmax" -v b="$x" 'BEGIN { print (a == "" || b + 0 > a + 0) ? b : a }')
    done
    V[$l,errs]=$errs V[$l,rmin]=$rmin V[$l,rmax]=$rmax
    for m in rps p50 p99; do
        vals=()
        for r in $(seq 1 "$ROUNDS"); do vals+=("$(div "${M[$l,$r,$m]:-n/a}" "${M[workerd,$r,$m]:-0}")"); done
        V[$l,x$m]=$(median "${vals[@]}")
    done
done

# --- report ------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[ -n "$CPU_MODEL" ] || CPU_MODEL=$(awk -F': *' '/^(Hardware|cpu model|uarch)/ {print $2; exit}' /proc/cpuinfo)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || REV="$REV (with uncommitted changes)"
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 {print $1, $2}')
WORKERD_VERSION=$( ("$WORKERD" --version 2>&1 || true) | head -1 | sed 's/^workerd //')
PY_VERSION=$(python3 --version 2>&1)

f1() { awk -v x="$1" 'BEGIN { if (x == "n/a" || x == "") print "n/a"; else printf "%.1f", x }'; }
f2() { awk -v x="$1" 'BEGIN { if (x == "n/a" || x == "") print "n/a"; else printf "%.2f", x }'; }
f0() { awk -v x="$1" 'BEGIN { if (x == "n/a" || x == "") print "n/a"; else printf "%.0f", x }'; }
busy() { # CPUs the server side kept busy: (daemon + instances) CPU per request x requests/s
    awk -v o="${V[$1,own]}" -v d="${V[$1,desc]}" -v r="${V[$1,rps]}" \
        'BEGIN { if (o == "n/a") print "n/a"; else printf "%.2f", (o + (d == "n/a" ? 0 : d)) * r / 1e6 }'
}
cores() { awk -v o="$1" -v r="$2" 'BEGIN { if (o == "n/a") print "n/a"; else printf "%.2f", o * r / 1e6 }'; }
other() { # machine-wide busy CPUs minus the server's and wrk's: everything else (noise)
    awk -v a="${V[$1,sys]}" -v b="$(busy "$1")" -v w="${V[$1,wrk]}" \
        'BEGIN { if (b == "n/a") print "n/a"; else { x = a - b - w; if (x < 0) x = 0; printf "%.2f", x } }'
}

TABLE=$TMP/table.md
{
    echo "| target | req/s | req/s range | p50 ms | p99 ms | errors | req/s vs workerd | p50 vs workerd | p99 vs workerd | daemon CPU µs/req | instances CPU µs/req | busy instances | server CPUs busy | wrk CPUs busy | other CPUs busy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for l in "${LABELS[@]}"; do
        own=$(f1 "${V[$l,own]}") desc=$(f1 "${V[$l,desc]}") inst=$(f0 "${V[$l,inst]}")
        case $l in
        workerd) name="workerd hello (baseline)"; own="$own (workerd process)"; desc="-"; inst="1 process" ;;
        python3) name="nimbus python3 hello" ;;
        c) name="nimbus C hello (provided.al2023)" ;;
        healthz) name="nimbus GET /healthz (no invoke)"; inst="-" ;;
        esac
        printf '| %s | %s | %s–%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
            "$(f0 "${V[$l,rps]}")" "$(f0 "${V[$l,rmin]}")" "$(f0 "${V[$l,rmax]}")" \
            "$(f2 "${V[$l,p50]}")" "$(f2 "${V[$l,p99]}")" "${V[$l,errs]}" \
            "$(f2 "${V[$l,xrps]}")" "$(f2 "${V[$l,xp50]}")" "$(f2 "${V[$l,xp99]}")" \
            "$own" "$desc" "$inst" "$(busy "$l")" "$(f2 "${V[$l,wrk]}")" "$(other "$l")"
    done
} >"$TABLE"

overhead() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "n/a" && b != "n/a") printf "%.1f", a - b; else print "n/a" }'; }
total() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "n/a" && b != "n/a") printf "%.1f", a + b; else print "n/a" }'; }
SUMMARY=$TMP/summary.md
{
    echo "- Invoke overhead of the daemon over plain HTTP (daemon CPU per invoke minus per /healthz):" \
        "python3 $(overhead "${V[python3,own]}" "${V[healthz,own]}") µs, C $(overhead "${V[c,own]}" "${V[healthz,own]}") µs."
    echo "- Total server CPU per request: workerd $(f1 "${V[workerd,own]}") µs;" \
        "nimbus python3 $(total "${V[python3,own]}" "${V[python3,desc]}") µs" \
        "(daemon $(f1 "${V[python3,own]}") + instances $(f1 "${V[python3,desc]}"));" \
        "nimbus C $(total "${V[c,own]}" "${V[c,desc]}") µs" \
        "(daemon $(f1 "${V[c,own]}") + instances $(f1 "${V[c,desc]}"))."
    echo "- The nimbus daemon process (${DAEMON_THREADS} thread(s)) kept" \
        "$(cores "${V[python3,own]}" "${V[python3,rps]}") CPU busy for python3," \
        "$(cores "${V[c,own]}" "${V[c,rps]}") for C, $(cores "${V[healthz,own]}" "${V[healthz,rps]}") for /healthz;" \
        "workerd $(cores "${V[workerd,own]}" "${V[workerd,rps]}") (${WORKERD_THREADS} threads)."
    printf -- '- req/s per round (%s):' "$(printf '%s ' "${LABELS[@]}" | sed 's/ $//; s/ /, /g')"
    for r in $(seq 1 "$ROUNDS"); do
        printf ' round %s:' "$r"
        for l in "${LABELS[@]}"; do printf ' %s' "$(f0 "${M[$l,$r,rps]:-n/a}")"; done
        [ "$r" -lt "$ROUNDS" ] && printf ';'
    done
    echo
    for l in "${LABELS[@]}"; do
        [ -n "${NOTE[$l]}" ] && echo "- **$l**: ${NOTE[$l]}"
    done
    true
} >"$SUMMARY"

SCALE=$TMP/scale.md
{
    echo "### Connection sweep (each target warmed 2 s at that concurrency, then one ${SWEEP_DURATION} s run)"
    echo
    echo "| connections | target | req/s | p50 ms | p99 ms | errors | req/s vs workerd |"
    echo "|---:|---|---:|---:|---:|---:|---:|"
    for c in $SWEEP_CONNS; do
        for l in "${LABELS[@]}"; do
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$l" "$(f0 "${S[$l,$c,rps]:-n/a}")" \
                "$(f2 "${S[$l,$c,p50]:-n/a}")" "$(f2 "${S[$l,$c,p99]:-n/a}")" "${S[$l,$c,errs]:-n/a}" \
                "$(f2 "$(div "${S[$l,$c,rps]:-n/a}" "${S[workerd,$c,rps]:-0}")")"
        done
    done
    echo
    c1=$(echo "$SWEEP_CONNS" | awk '{print $1}')
    echo "- nimbus's added latency at $c1 connection(s): C hello p50 $(f2 "${S[c,$c1,p50]:-n/a}") ms minus" \
        "/healthz p50 $(f2 "${S[healthz,$c1,p50]:-n/a}") ms =" \
        "$(awk -v a="${S[c,$c1,p50]:-n/a}" -v b="${S[healthz,$c1,p50]:-n/a}" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%.0f", (a - b) * 1000 }') µs" \
        "(the invoke path: scheduler, channel to the instance and back, the C handler itself, logs)."
    echo
    echo "### Burst from zero ($BURST requests at once, each on its own connection, to a function just deployed, no instance)"
    echo
    echo "| function | answered OK | errors | time until all answered s | p50 ms | p99 ms | instances started |"
    echo "|---|---:|---|---:|---:|---:|---:|"
    for kind in python3 c; do
        python3 - "$kind" "${B[$kind,json]}" "${B[$kind,starts]}" <<'PYEOF'
import json, sys
k, j, starts = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
errs = ", ".join(f"{v} {w}" for w, v in j["errors"].items()) or "0"
print(f"| {k} hello | {j['ok']}/{j['n']} | {errs} | {j['seconds']:.2f} | {j['p50_ms']} | {j['p99_ms']} | {starts} |")
PYEOF
    done
    echo
    echo "### Instance churn ($CHURN_CLIENTS clients, each invoking ?version=1 of its own function at version 2 back to back for ${CHURN_DURATION} s: every invocation starts an instance, which stops after it)"
    echo
    echo "| function | instance starts/s | invocations/s | errors |"
    echo "|---|---:|---:|---:|"
    for kind in python3 c; do
        echo "| $kind hello | ${CH[$kind,rate]} | ${CH[$kind,rps]} | ${CH[$kind,errs]} |"
    done
} >"$SCALE"

DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
SECTION=$TMP/section.md
{
    echo "<!-- bench:begin (written by bench/run.sh; edit outside the markers) -->"
    echo "## Latest run: $DATE"
    echo
    echo "- Command: \`$COMMAND\` (or \`make bench\`), ${ELAPSED} s of load in total"
    echo "- Machine: $(nproc) CPUs, $CPU_MODEL; Linux $(uname -r); load average before: $LOAD_BEFORE"
    echo "- Load: $WRK_VERSION, \`-t $THREADS -c $CONNS -d ${DURATION}s --latency\` on loopback; first a ${WARMUP} s warm-up" \
        "per target (2 s for /healthz) whose responses were all checked; then $ROUNDS rounds over the four targets" \
        "(each round starting at the next target); every number is the median over the rounds, ratios are to the" \
        "workerd run of the same round; POST body \`{\"name\":\"ada\"}\`"
    echo "- nimbus $REV; $PY_VERSION; workerd $WORKERD_VERSION (npm workerd@$WANT)"
    echo "- CPU columns: utime+stime from /proc over a measured run divided by the requests it served;" \
        "\"instances\" is every descendant of the daemon; busy instances: the daemon's children that used CPU during the run;" \
        "server CPUs busy: (daemon + instances) CPU per second of the run; wrk CPUs busy: the load generator's;" \
        "other CPUs busy: the rest of the machine (other processes, kernel) during the run, from /proc/stat: noise."
    echo "  wrk runs on the same CPUs, so every target shares them with the load generator."
    echo
    cat "$TABLE"
    echo
    cat "$SUMMARY"
    echo
    cat "$SCALE"
    echo "<!-- bench:end -->"
} >"$SECTION"

echo
cat "$TABLE"
echo
cat "$SUMMARY"
echo
cat "$SCALE"

if [ "$RESULTS" != "-" ]; then
    if [ -f "$RESULTS" ] && grep -q '^<!-- bench:begin' "$RESULTS"; then
        python3 - "$RESULTS" "$SECTION" <<'EOF'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
text = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->\n?", lambda m: section, text, count=1, flags=re.S)
open(path, "w").write(text)
EOF
    else
        {
            [ -f "$RESULTS" ] && cat "$RESULTS" && echo
            [ -f "$RESULTS" ] || printf '# nimbus benchmark results\n\n'
            cat "$SECTION"
        } >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
    fi
    say "results written to $RESULTS"
fi
if grep -q 'DIED' "$SUMMARY"; then
    tail -n 40 "$TMP/nimbus.log" >&2
fi
