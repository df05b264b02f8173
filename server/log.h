/* server/log.h: logging to stderr (foreground, and while starting) or,
 * once a daemon has left its terminal, to syslog (facility daemon,
 * ident "nbdgraphd"); --log picks one, or "journal": the journal's
 * native protocol (libsystemd's sd_journal_send: MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER and the CODE_FILE/CODE_LINE/CODE_FUNC of the call).
 * Messages are one line each, without a trailing newline. */
#ifndef NG_LOG_H
#define NG_LOG_H

enum ng_log_level {
    NG_LOG_ERROR,
    NG_LOG_WARN,
    NG_LOG_INFO,
    NG_LOG_DEBUG,
};

/* Highest level printed; -v raises it to DEBUG. */
void ng_log_set_level(enum ng_log_level level);
int ng_log_enabled(enum ng_log_level level);
enum ng_log_sink {
    NG_LOG_SINK_STDERR,
    NG_LOG_SINK_SYSLOG,
    NG_LOG_SINK_JOURNAL,
};

/* From now on, log to `sink`.  -1 (and nothing changes) for the journal
 * in a build without libsystemd. */
int ng_log_to(enum ng_log_sink sink);
/* "stderr", "syslog", "journal"; -1 for anything else. */
int ng_log_sink_parse(const char *name, enum ng_log_sink *out);
/* One message; `file`, `line` and `func` say where it comes from (the
 * journal records them).  Use the macros below. */
void ng_log_at(enum ng_log_level level, const char *file, int line,
               const char *func, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define ng_log(level, ...) \
    ng_log_at((level), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define ng_log_error(...) ng_log(NG_LOG_ERROR, __VA_ARGS__)
#define ng_log_warn(...)  ng_log(NG_LOG_WARN, __VA_ARGS__)
#define ng_log_info(...)  ng_log(NG_LOG_INFO, __VA_ARGS__)
#define ng_log_debug(...) \
    do { if (ng_log_enabled(NG_LOG_DEBUG)) ng_log(NG_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
