#!/bin/sh
# `make run`: starts nimbus on its embedded store, deploys the examples, then stays in the
# foreground until Ctrl-C (which drains and stops the daemon cleanly).
set -eu
BIN=${1:-build/nimbus}
LISTEN=${2:-127.0.0.1:8080}
DATA=${3:-./nimbus-data}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(dirname "$BIN")

mkdir -p "$DATA"
rm -f "$DATA/listen"
"$BIN" serve --listen "$LISTEN" --gateway-listen "${NIMBUS_GATEWAY_LISTEN:-127.0.0.1:8000}" \
    --data "$DATA" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID; exit 0' INT TERM

i=0
until [ -s "$DATA/listen" ]; do
    i=$((i + 1))
    if ! kill -0 $PID 2>/dev/null || [ $i -gt 100 ]; then
        echo "nimbus: the daemon did not start (see the log above)" >&2
        exit 1
    fi
    sleep 0.1
done

nb() { "$BIN" --data "$DATA" "$@"; }
nb deploy hello "$ROOT/examples/python-hello" --runtime python3 --handler app.handler
nb deploy hello-node "$ROOT/examples/node-hello" --runtime nodejs20.x --handler index.handler
nb deploy hello-shell "$ROOT/examples/provided-hello" --runtime provided --handler function.handler
C_DIR="$BUILD/examples/c-hello"
nb deploy hello-c "$C_DIR" --runtime provided.al2023 --handler hello
# The examples behind the API gateway too. A route left from an earlier run is a conflict: fine.
nb api create examples --base-path /examples >/dev/null
for r in "GET /python hello" "GET /node hello-node" "GET /shell hello-shell" "GET /c hello-c"; do
    set -- $r
    nb route add examples "$1" "$2" "$3" >/dev/null 2>&1 || true
done

cat <<TOUR

nimbus is running on http://$(cat "$DATA/listen") with data in $DATA. Try, in another shell:

  $BIN invoke hello '{"name":"ada"}'
  curl -H "Authorization: Bearer \$(cat $DATA/admin.token)" \\
       -X POST http://$(cat "$DATA/listen")/v1/functions/hello/invoke -d '{"name":"ada"}'
  $BIN ls ; $BIN get hello ; $BIN logs hello --follow
  curl http://$(cat "$DATA/gateway.listen")/examples/python      # through the API gateway
  $BIN api get examples ; $BIN api logs examples

The web console: http://$(cat "$DATA/listen")/console/ (log in with the token in $DATA/admin.token)

Ctrl-C stops it.
TOUR
wait $PID
