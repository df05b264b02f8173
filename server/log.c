/* server/log.c: see log.h. */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "server/log.h"

/* The only file-level state: the daemon's one log threshold. */
static enum ng_log_level log_level = NG_LOG_INFO;

void
ng_log_set_level(enum ng_log_level level)
{
    log_level = level;
}

int
ng_log_enabled(enum ng_log_level level)
{
    return level <= log_level;
}

void
ng_log(enum ng_log_level level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    va_list ap;

    if (!ng_log_enabled(level))
        return;
    va_start(ap, fmt);
    fprintf(stderr, "nbdgraphd: %s: ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
