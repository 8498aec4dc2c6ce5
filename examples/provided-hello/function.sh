# The function behind _HANDLER "function.handler". The bootstrap sources this file once per
# instance, so `count` survives between warm invocations. `handler` gets the event JSON as $1,
# prints the response JSON on stdout and logs on stderr; a non-zero return fails the call.
count=0

handler() {
    count=$((count + 1))
    echo "shell handler called $count times" >&2
    case $1 in
    *'"fail":true'* | *'"fail": true'*) return 1 ;;
    esac
    printf '{"message":"Hello from a shell bootstrap!","count":%d,"runtime":"provided"}\n' "$count"
}
