/* nimbus/function.h: write a function in C.
 *
 * A function is a program (named `bootstrap`, runtime `provided`) whose main() calls
 * nimbus_run(handler, user). nimbus_run talks to the platform and calls the handler once per
 * invocation until the platform goes away. The same binary runs on nimbus (over the private
 * channel, see docs/internals/sdk.md) and on AWS Lambda (over the HTTP Runtime API).
 *
 * Contract:
 * - Threads: single-threaded. One invocation at a time; the handler runs on the thread that
 *   called nimbus_run. Call nimbus_response_* only on that thread, from inside the handler.
 * - Ownership: the event bytes, the context and every string in it belong to the SDK and stay
 *   valid only until the handler returns; copy what you keep. The event is followed by a NUL
 *   byte (not counted in len), so text events may be read as C strings. Context strings are
 *   never NULL ("" when unknown).
 * - Answers: nimbus_response_set() copies the result (sent as is; it should be JSON text).
 *   nimbus_response_error() makes the invocation fail with a Lambda-style error object. The
 *   last call wins. A handler that calls neither answers `null`. A result over the platform's
 *   6 MiB cap turns into the error "Function.ResponseSizeTooLarge".
 * - Output: stdout and stderr are the function's log; the SDK flushes both after each
 *   handler call so lines land in the right invocation's log.
 * - A crash or exit() inside the handler ends the instance; the platform fails the invocation
 *   with "Runtime.ExitError" and starts a fresh instance for the next one. */
#ifndef NIMBUS_FUNCTION_H
#define NIMBUS_FUNCTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nimbus_context {
    const char *request_id;
    const char *function_name;    /* AWS_LAMBDA_FUNCTION_NAME */
    const char *function_version; /* AWS_LAMBDA_FUNCTION_VERSION, e.g. "$LATEST" */
    const char *invoked_function_arn;
    int memory_limit_mb;        /* AWS_LAMBDA_FUNCTION_MEMORY_SIZE; 0 when unknown */
    int64_t deadline_ms;        /* Unix epoch milliseconds; 0 when the platform sent none */
    const char *trace_id;       /* also exported as _X_AMZN_TRACE_ID during the call */
    const char *client_context; /* JSON text, "" when absent */
    const char *log_group_name;
    const char *log_stream_name;
} nimbus_context;

/* Milliseconds left before the platform times the invocation out (negative once past it);
 * INT64_MAX when the deadline is unknown. */
int64_t nimbus_remaining_ms(const nimbus_context *ctx);

typedef struct nimbus_response nimbus_response;

/* Sets the result: copies len bytes of body (JSON text). */
void nimbus_response_set(nimbus_response *resp, const void *body, size_t len);

/* Fails the invocation. The SDK builds {"errorMessage":..,"errorType":..,"stackTrace":[]}
 * with both strings JSON-escaped. error_type is a short name such as "HelloError" (NULL means
 * "Error"); it also travels as a header, so bytes outside printable ASCII become '_' and it is
 * cut at 255 bytes. message may be NULL. */
void nimbus_response_error(nimbus_response *resp, const char *error_type, const char *message);

/* Called once per invocation. event/len are the raw payload (normally JSON). */
typedef void (*nimbus_handler)(const void *event, size_t len, const nimbus_context *ctx,
                               nimbus_response *resp, void *user);

/* The runtime loop. Tells the platform that init is done, then serves invocations one by one.
 * Returns 0 when the platform closed the channel between invocations (a normal shutdown), or
 * a negative errno value after a fatal transport error, printed to stderr. Call it once. */
int nimbus_run(nimbus_handler handler, void *user);

/* ---- Calls to the platform (nimbus only; docs/internals/calls.md) ----
 *
 * From inside the handler, a function may invoke another function of its namespace
 * (synchronously or not), send to a queue, publish to a topic and emit a CloudEvent. Each call
 * blocks the handler until the platform answers; it runs as the calling function, carries its
 * request id and trace, and counts toward the callee's limits. On AWS Lambda the calls fail with
 * -ENOTSUP ("not on nimbus").
 *
 * Return value: 0 when the operation succeeded; 1 when the platform answered that it did not
 * (out says how); a negative errno when it could not be asked: -EINVAL (bad arguments, or not
 * inside a handler), -ENOTSUP (not on nimbus), -EMSGSIZE (the payload passes the 6 MiB frame),
 * else a transport failure (the invocation is then lost anyway).
 * out is always initialised; free it with nimbus_result_free. */
typedef struct nimbus_result {
    int status; /* 200 (invoke) or 202 (the others) when done; 4xx/5xx: the platform refused */
    /* "" when done. "Unhandled"/"Handled" (with status 200): the invoked function failed and
     * body is its error JSON. Otherwise the platform's code: "not_found", "forbidden",
     * "too_many_requests", "call_depth_exceeded", "invalid_value", ... */
    char error_code[64];
    char *body; /* NUL-terminated (not counted in len): the result, an id object such as
                   {"messageId":"..."}, or {"error":{"code","message"}} */
    size_t len;
} nimbus_result;

/* Invokes function `function` and waits for its result. */
int nimbus_invoke(const char *function, const void *payload, size_t len, nimbus_result *out);
/* Queues an invocation (retried on failure as any async event); body {"requestId":"..."}. */
int nimbus_invoke_async(const char *function, const void *payload, size_t len, nimbus_result *out);
/* Sends a message to queue `queue`; attributes_json: NULL or a one-line JSON object of
 * strings. Body {"messageId":"..."}. */
int nimbus_send(const char *queue, const void *body, size_t len, const char *attributes_json,
                nimbus_result *out);
/* Publishes to topic `topic`; options_json: NULL or one line of
 * {"attributes": {name: string | number | [strings] | {"Type","Value"}}, "subject": "..."}. */
int nimbus_publish(const char *topic, const void *message, size_t len, const char *options_json,
                   nimbus_result *out);
/* Emits one CloudEvent (structured JSON text) to the namespace's event bus; source, id, time
 * and specversion are filled in when absent. Body {"id":"..."}. */
int nimbus_emit(const char *event_json, nimbus_result *out);
void nimbus_result_free(nimbus_result *r);

/* Reports that initialisation failed, before or instead of nimbus_run, so the caller of the
 * function sees error_type/message rather than a bare exit. The program should exit
 * afterwards. Returns 0 or a negative errno value. */
int nimbus_init_error(const char *error_type, const char *message);

#ifdef __cplusplus
}
#endif

#endif
