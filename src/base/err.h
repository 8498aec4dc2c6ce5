/* nb_err: the one error convention of nimbus.
 *
 * A fallible call returns -1 (or NULL) and fills a caller-owned nb_err. The error carries a
 * stable machine code (the API's "code"), the HTTP status it maps to, and a human message. A
 * caller that adds context wraps the message with nb_err_prefix() instead of replacing it, so
 * the final message reads outer-to-inner ("deploy hello: unpack: entry '../x' escapes").
 * Hot paths that only need errno-style results return plain negative errno values instead.
 *
 * An nb_err is a plain value: no heap, safe to copy, any thread. */
#ifndef NB_ERR_H
#define NB_ERR_H

#include <stdarg.h>

#define NB_ERR_MSG_MAX 512

typedef struct nb_err {
    int status;       /* HTTP status the error maps to; 0 = no error */
    const char *code; /* static string, e.g. "invalid_value" */
    char msg[NB_ERR_MSG_MAX];
} nb_err;

/* Sets the error and returns -1 so callers can `return nb_err_set(...)`. */
int nb_err_set(nb_err *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same, appending ": strerror(errnum)". */
int nb_err_sys(nb_err *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends "what: " to the message; returns -1. */
int nb_err_prefix(nb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nb_err_clear(nb_err *err);

/* Common codes, so the set of codes stays small and documented in docs/api.md. */
#define NB_E_BAD_REQUEST       "bad_request"
#define NB_E_INVALID_JSON      "invalid_json"
#define NB_E_UNKNOWN_FIELD     "unknown_field"
#define NB_E_INVALID_VALUE     "invalid_value"
#define NB_E_INVALID_NAME      "invalid_name"
#define NB_E_INVALID_RUNTIME   "invalid_runtime"
#define NB_E_INVALID_ARCHIVE   "invalid_archive"
#define NB_E_HANDLER_NOT_FOUND "handler_not_found"
#define NB_E_NOT_FOUND         "not_found"
#define NB_E_METHOD            "method_not_allowed"
#define NB_E_UNAUTHORIZED      "unauthorized"
#define NB_E_TOO_LARGE         "payload_too_large"
#define NB_E_CONFLICT          "conflict"
#define NB_E_UNAVAILABLE       "unavailable"
#define NB_E_TOO_MANY          "too_many_requests"
#define NB_E_INTERNAL          "internal"

#endif
