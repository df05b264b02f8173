/* server/log.c: see log.h. */
#include <config.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <syslog.h>

#include "server/log.h"

/* The only file-level state: the daemon's one log threshold and sink. */
static struct {
    enum ng_log_level level;
    bool syslog;
} log_state = { .level = NG_LOG_INFO };

void
ng_log_set_level(enum ng_log_level level)
{
    log_state.level = level;
}

void
ng_log_to_syslog(void)
{
    openlog("nbdgraphd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_state.syslog = true;
}

int
ng_log_enabled(enum ng_log_level level)
{
    return level <= log_state.level;
}

void
ng_log(enum ng_log_level level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    static const int priorities[] = { LOG_ERR, LOG_WARNING, LOG_INFO,
                                      LOG_DEBUG };
    va_list ap;

    if (!ng_log_enabled(level))
        return;
    va_start(ap, fmt);
    if (log_state.syslog) {
        vsyslog(priorities[level], fmt, ap);
    } else {
        fprintf(stderr, "nbdgraphd: %s: ", names[level]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}
