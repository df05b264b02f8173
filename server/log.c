/* server/log.c: see log.h. */
#include <config.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-journal.h>
#endif

#include "server/log.h"

/* The only file-level state: the daemon's one log threshold and sink. */
static struct {
    enum ng_log_level level;
    enum ng_log_sink sink;
    bool no_journal;        /* --log=journal, but journald's socket was
                             * not there (libsystemd then drops messages
                             * without a word): stderr with "<N>" */
} log_state = { .level = NG_LOG_INFO, .sink = NG_LOG_SINK_STDERR };

/* Where libsystemd sends native journal messages. */
#define JOURNAL_SOCKET "/run/systemd/journal/socket"

void
ng_log_set_level(enum ng_log_level level)
{
    log_state.level = level;
}

int
ng_log_to(enum ng_log_sink sink)
{
#ifndef HAVE_LIBSYSTEMD
    if (sink == NG_LOG_SINK_JOURNAL)
        return -1;
#endif
    if (sink == NG_LOG_SINK_SYSLOG && log_state.sink != sink)
        openlog("nbdgraphd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    if (sink == NG_LOG_SINK_JOURNAL)
        log_state.no_journal = access(JOURNAL_SOCKET, W_OK) != 0;
    log_state.sink = sink;
    return 0;
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

#ifdef HAVE_LIBSYSTEMD
/* The journal's native protocol; where journald is not there (a
 * container), the line goes to stderr with the "<N>" prefix journald
 * would read from a unit's stderr, so nothing is lost. */
static void
log_journal(int priority, const char *file, int line, const char *func,
            const char *msg)
{
    char code_file[512], code_line[32];

    snprintf(code_file, sizeof code_file, "CODE_FILE=%s", file);
    snprintf(code_line, sizeof code_line, "CODE_LINE=%d", line);
    if (log_state.no_journal ||
        sd_journal_send_with_location(code_file, code_line, func,
                                      "MESSAGE=%s", msg,
                                      "PRIORITY=%d", priority,
                                      "SYSLOG_IDENTIFIER=nbdgraphd",
                                      NULL) < 0)
        fprintf(stderr, "<%d>%s\n", priority, msg);
}
#endif

void
ng_log_at(enum ng_log_level level, const char *file, int line,
          const char *func, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    static const int priorities[] = { LOG_ERR, LOG_WARNING, LOG_INFO,
                                      LOG_DEBUG };
    char msg[4096];
    va_list ap;

    if (!ng_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    switch (log_state.sink) {
    case NG_LOG_SINK_SYSLOG:
        syslog(priorities[level], "%s", msg);
        break;
    case NG_LOG_SINK_JOURNAL:
#ifdef HAVE_LIBSYSTEMD
        log_journal(priorities[level], file, line, func, msg);
        break;
#endif
    case NG_LOG_SINK_STDERR:
        (void)file;
        (void)line;
        (void)func;
        fprintf(stderr, "nbdgraphd: %s: %s\n", names[level], msg);
        break;
    }
}
