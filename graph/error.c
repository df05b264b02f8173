/* graph/error.c: see error.h. */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "graph/error.h"

int
ng_error_setv(struct ng_error *err, int code, const char *fmt, va_list ap)
{
    if (err != NULL) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return -1;
}

int
ng_error_set(struct ng_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ng_error_setv(err, code, fmt, ap);
    va_end(ap);
    return -1;
}

int
ng_error_prefix(struct ng_error *err, const char *fmt, ...)
{
    char prefix[NG_ERROR_MSG_MAX], old[NG_ERROR_MSG_MAX];
    va_list ap;

    if (err == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return -1;
}
