#include "base/err.h"

#include <stdio.h>
#include <string.h>

int nb_err_set(nb_err *err, int status, const char *code, const char *fmt, ...)
{
    if (!err) return -1;
    err->status = status;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int nb_err_sys(nb_err *err, int errnum, const char *fmt, ...)
{
    if (!err) return -1;
    err->status = 500;
    err->code = NB_E_INTERNAL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(errnum));
    return -1;
}

int nb_err_prefix(nb_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    char prefix[NB_ERR_MSG_MAX], old[NB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation is fine: the innermost detail is the least important part to keep. */
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(err->msg, prefix, n);
    if (n + 2 < sizeof err->msg) {
        memcpy(err->msg + n, ": ", 2);
        size_t room = sizeof err->msg - n - 3;
        size_t olen = strnlen(old, room);
        memcpy(err->msg + n + 2, old, olen);
        n += 2 + olen;
    }
    err->msg[n < sizeof err->msg ? n : sizeof err->msg - 1] = 0;
    return -1;
}

void nb_err_clear(nb_err *err)
{
    err->status = 0;
    err->code = NULL;
    err->msg[0] = 0;
}
