/* server/log.c: see log.h. */
#include <config.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "server/log.h"

/* The only file-level state: the daemon's one log threshold and sink. */
static struct {
    enum ng_log_level level;
    enum ng_log_sink sink;
} log_state = { .level = NG_LOG_INFO, .sink = NG_LOG_SINK_STDERR };

void
ng_log_set_level(enum ng_log_level level)
{
    log_state.level = level;
}

void
ng_log_to(enum ng_log_sink sink)
{
    if (sink == NG_LOG_SINK_SYSLOG && log_state.sink != sink)
        openlog("nbdgraphd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_state.sink = sink;
}

int
ng_log_sink_parse(const char *name, enum ng_log_sink *out)
{
    static const char *const names[] = { "stderr", "syslog", "journal" };

    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum ng_log_sink)i;
            return 0;
        }
    }
    return -1;
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
    if (log_state.sink == NG_LOG_SINK_SYSLOG) {
        vsyslog(priorities[level], fmt, ap);
    } else if (log_state.sink == NG_LOG_SINK_JOURNAL) {
        /* journald reads the "<N>" prefix on a unit's stderr as the
         * priority (sd-daemon(3)); the unit names the program. */
        fprintf(stderr, "<%d>", priorities[level]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    } else {
        fprintf(stderr, "nbdgraphd: %s: ", names[level]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}
