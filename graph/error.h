/* graph/error.h: errors on the control path (config, graph changes, NAC,
 * jobs, QMP).  The data path never uses this: it completes requests with
 * 0 or a negative errno.
 *
 * Convention (as QEMU's qapi/error.h): a function that can fail takes a
 * `struct ng_error *err` as its last parameter, returns -1/NULL/false on
 * failure and fills *err when err is not NULL.
 */
#ifndef NG_ERROR_H
#define NG_ERROR_H

#include <stdarg.h>

/* Every control-path frame carries one, so keep it small.  The longest
 * message a test expects (tests/configs/bad/bad-group-limit.err: an
 * unknown throttle limit, listing the known ones) is 226 bytes with its
 * file:line:column, which leaves room for a long config path.  Longer
 * messages are cut, never overrun. */
#define NG_ERROR_MSG_MAX 512

struct ng_error {
    int code;                       /* positive errno, 0 = no error */
    char msg[NG_ERROR_MSG_MAX];     /* one phrase, lower case, no period */
};

/* Fill *err (when err != NULL) and return -1. */
int ng_error_set(struct ng_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int ng_error_setv(struct ng_error *err, int code, const char *fmt,
                  va_list ap);

/* Put "prefix: " in front of an existing message; returns -1. */
int ng_error_prefix(struct ng_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void
ng_error_clear(struct ng_error *err)
{
    if (err != NULL) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

#endif
