#!/bin/sh
# Runs every libFuzzer target of a fuzz build for SECONDS each, in parallel, over a scratch copy
# of its seed corpus (fuzz/corpus/<target>/ is never modified). Fails if any target crashes,
# leaks, times out on an input or exits non-zero; the input that did it is kept in
# BUILD/fuzz-artifacts/ -- add it to fuzz/corpus/<target>/ once fixed, so ctest replays it.
#
# usage: scripts/fuzz.sh BUILD_DIR [SECONDS] [TARGET...]   (make fuzz: build-fuzz, 30 s)
set -eu

build=${1:?usage: scripts/fuzz.sh BUILD_DIR [SECONDS] [TARGET...]}
secs=${2:-30}
[ $# -ge 2 ] && shift 2 || shift $#
src=$(cd "$(dirname "$0")/.." && pwd)
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
build=$(cd "$build" && pwd)
artifacts=$(cd "$artifacts" && pwd)

if [ $# -gt 0 ]; then
    targets=$*
else
    targets=$(cd "$src/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

pids=""
for t in $targets; do
    bin="$build/fuzz/$t"
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin missing (configure with -DNIMBUS_FUZZ=ON and clang)" >&2
        exit 1
    fi
    rm -f "$artifacts/$t"-*
    mkdir -p "$work/$t/corpus"
    [ -d "$src/fuzz/corpus/$t" ] && cp -R "$src/fuzz/corpus/$t/." "$work/$t/corpus/"
    echo "fuzz: $t for ${secs}s"
    # -timeout: one input running over 10 s is a hang; -rss_limit_mb: a leak or bomb.
    (
        cd "$work/$t"
        rc=0
        "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$artifacts/$t-" corpus >"$work/$t/log" 2>&1 || rc=$?
        echo "$rc" >"$work/$t/rc"
    ) &
    pids="$pids $!"
done
for p in $pids; do wait "$p" || true; done

failed=0
for t in $targets; do
    rc=$(cat "$work/$t/rc" 2>/dev/null || echo 99)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -n 1)
    if [ "$rc" = 0 ]; then
        echo "fuzz: $t ok (${runs:-?} runs, ${cov:-cov: ?})"
    else
        failed=1
        echo "fuzz: $t FAILED (exit $rc); last lines of its log:" >&2
        tail -n 40 "$work/$t/log" >&2
        ls "$artifacts"/"$t"-* 2>/dev/null | sed 's/^/fuzz:   input: /' >&2 || true
    fi
done
exit $failed
