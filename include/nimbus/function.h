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

/* Reports that initialisation failed, before or instead of nimbus_run, so the caller of the
 * function sees error_type/message rather than a bare exit. The program should exit
 * afterwards. Returns 0 or a negative errno value. */
int nimbus_init_error(const char *error_type, const char *message);

#ifdef __cplusplus
}
#endif

#endif
