#!/bin/sh
# Installs the Debian packages nimbus needs to build, test and run. Safe to run repeatedly:
# it only calls apt-get when something is missing. Not root: prints the command and fails.
set -eu
PKGS="cmake make gcc clang pkg-config libuv1-dev libh2o-dev libssl-dev libsqlite3-dev \
libjansson-dev libarchive-dev libcurl4-openssl-dev libseccomp-dev python3 nodejs npm curl ca-certificates tzdata"
# npm: the web console's assets (console/) are bundled at build time from pinned npm packages.
case "${1:-}" in
--bench) PKGS="$PKGS wrk openssl" ;;
# The tests install the real aws-lambda-ric from npm; its native addon builds with autotools.
# prometheus brings promtool, which checks the GET /metrics page (test_metrics.py).
# chromium: the web console is tested in a real headless browser (test_console.py).
--test) PKGS="$PKGS g++ autoconf automake libtool openssl prometheus chromium" ;;
esac
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# nodejs may come from another repository under the same name; any node on PATH will do.
case " $missing " in *" nodejs "*) command -v node >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ nodejs//');; esac
case " $missing " in *" npm "*) command -v npm >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ npm//');; esac
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "nimbus: missing packages; run: sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "nimbus: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
