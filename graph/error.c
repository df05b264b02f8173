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
    char prefix[NG_ERROR_MSG_MAX];
    size_t plen, mlen;
    va_list ap;

    if (err == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    strcat(prefix, ": ");
    plen = strlen(prefix);
    mlen = strlen(err->msg);
    if (plen >= sizeof err->msg)
        plen = sizeof err->msg - 1;
    if (plen + mlen >= sizeof err->msg)
        mlen = sizeof err->msg - 1 - plen;
    memmove(err->msg + plen, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen + mlen] = '\0';
    return -1;
}
