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
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return -1;
}

void nb_err_clear(nb_err *err)
{
    err->status = 0;
    err->code = NULL;
    err->msg[0] = 0;
}
