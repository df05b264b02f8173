/* graph/nbdkit-api.c: the nbdkit_* functions nbdkit plugins call, with
 * the meaning nbdkit 1.32 gives them (nbdkit-plugin(3)), for plugins
 * loaded in process by graph/drv-nbdkit.c.  nbdgraphd exports every
 * nbdkit_* symbol (server/nbdgraphd.syms); a plugin that needs one this
 * file lacks fails to load, and the driver names the symbol.
 *
 * What differs from nbdkit, because a node is not a client connection:
 * nbdkit_export_name() is "" and nbdkit_is_tls() 0; the nbdkit_peer_*
 * functions fail with ENOTSUP; nbdkit_debug() prints only when
 * NBDGRAPH_NBDKIT_DEBUG is set; nbdkit_shutdown() stops the daemon as
 * SIGTERM does; passwords cannot be read from a terminal.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "graph/nbdkit-api.h"

/* The call a worker thread is making into a plugin, or NULL. */
static _Thread_local struct ng_nbdkit_call *nbdkit_cur_call;

void
ng_nbdkit_call_begin(struct ng_nbdkit_call *c)
{
    c->msg[0] = '\0';
    c->err = 0;
    nbdkit_cur_call = c;
}

void
ng_nbdkit_call_end(void)
{
    nbdkit_cur_call = NULL;
}

const char *
ng_nbdkit_plugindir(void)
{
#ifdef NBDKIT_PLUGINDIR
    return NBDKIT_PLUGINDIR;
#else
    return NULL;
#endif
}

struct nbdkit_extent_rec {
    uint64_t offset, length;
    uint32_t type;
};

void
ng_nbdkit_extents_init(struct nbdkit_extents *e, uint64_t start,
                       uint64_t end, struct ng_extent *out, uint32_t max)
{
    memset(e, 0, sizeof *e);
    e->start = e->next = start;
    e->end = end;
    e->out = out;
    e->max = max;
}

#ifdef HAVE_NBDKIT

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include <nbdkit-filter.h>

/* ---- Messages ------------------------------------------------------------ */

/* Our messages are one line: a language plugin's traceback is several. */
static void
one_line(char *msg)
{
    char *w = msg;

    for (const char *r = msg; *r != '\0'; r++) {
        char ch = (*r == '\n' || *r == '\r' || *r == '\t') ? ' ' : *r;

        if (ch != ' ' || (w > msg && w[-1] != ' '))
            *w++ = ch;
    }
    while (w > msg && w[-1] == ' ')
        w--;
    *w = '\0';
}

NBDKIT_DLL_PUBLIC void
nbdkit_verror(const char *fs, va_list args)
{
    struct ng_nbdkit_call *c = nbdkit_cur_call;
    int saved = errno;              /* plugins use %m after errors */

    if (c != NULL) {
        vsnprintf(c->msg, sizeof c->msg, fs, args);
        one_line(c->msg);
    } else {
        /* Outside any call we made: a plugin's own thread. */
        fputs("nbdkit plugin: error: ", stderr);
        vfprintf(stderr, fs, args);
        fputc('\n', stderr);
    }
    errno = saved;
}

NBDKIT_DLL_PUBLIC void
nbdkit_error(const char *fs, ...)
{
    va_list args;

    va_start(args, fs);
    nbdkit_verror(fs, args);
    va_end(args);
}

NBDKIT_DLL_PUBLIC void
nbdkit_vdebug(const char *fs, va_list args)
{
    int saved = errno;

    if (getenv("NBDGRAPH_NBDKIT_DEBUG") != NULL) {
        fputs("nbdkit plugin: debug: ", stderr);
        vfprintf(stderr, fs, args);
        fputc('\n', stderr);
    }
    errno = saved;
}

NBDKIT_DLL_PUBLIC void
nbdkit_debug(const char *fs, ...)
{
    va_list args;

    va_start(args, fs);
    nbdkit_vdebug(fs, args);
    va_end(args);
}

NBDKIT_DLL_PUBLIC void
nbdkit_set_error(int err)
{
    if (nbdkit_cur_call != NULL)
        nbdkit_cur_call->err = err;
}

/* ---- Parsing ------------------------------------------------------------- */

NBDKIT_DLL_PUBLIC int64_t
nbdkit_parse_size(const char *str)
{
    uint64_t scale = 1;
    intmax_t n;
    char *end;
    int shift = 0;

    errno = 0;
    n = strtoimax(str, &end, 10);
    if (end == str) {
        nbdkit_error("could not parse size string (%s)", str);
        return -1;
    }
    if (n < 0) {
        nbdkit_error("size cannot be negative (%s)", str);
        return -1;
    }
    if (errno != 0 || n > INT64_MAX) {
        nbdkit_error("size (%s) exceeds maximum value", str);
        return -1;
    }
    /* nbdkit's suffixes: one letter, powers of 1024, or s for 512. */
    switch (*end) {
    case '\0': case 'b': case 'B': shift = 0; break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    case 'p': case 'P': shift = 50; break;
    case 'e': case 'E': shift = 60; break;
    case 's': case 'S': shift = 9; break;
    default: shift = -1; break;
    }
    if (shift < 0 || (*end != '\0' && end[1] != '\0')) {
        nbdkit_error("could not parse size: unknown suffix '%s'", end);
        return -1;
    }
    scale <<= shift;
    if ((uint64_t)n > (uint64_t)INT64_MAX / scale) {
        nbdkit_error("overflow computing size (%s)", str);
        return -1;
    }
    return (int64_t)((uint64_t)n * scale);
}

NBDKIT_DLL_PUBLIC int
nbdkit_parse_bool(const char *str)
{
    static const char *const yes[] = { "1", "true", "t", "yes", "y", "on" };
    static const char *const no[] = { "0", "false", "f", "no", "n", "off" };

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(str, yes[i]) == 0)
            return 1;
        if (strcasecmp(str, no[i]) == 0)
            return 0;
    }
    nbdkit_error("could not decipher boolean (%s)", str);
    return -1;
}

/* The common end of the integer parsers: errno from strto*, where the
 * number ended. */
static int
parse_check(const char *what, const char *str, const char *end)
{
    if (errno != 0) {
        nbdkit_error("%s: could not parse number: \"%s\": %m", what, str);
        return -1;
    }
    if (end == str) {
        nbdkit_error("%s: empty string where we expected a number", what);
        return -1;
    }
    if (*end != '\0') {
        nbdkit_error("%s: could not parse number: \"%s\": trailing garbage",
                     what, str);
        return -1;
    }
    return 0;
}

static int
parse_signed(const char *what, const char *str, long long min,
             long long max, long long *out)
{
    char *end;

    errno = 0;
    *out = strtoll(str, &end, 0);
    if (errno == 0 && end != str && (*out < min || *out > max))
        errno = ERANGE;
    return parse_check(what, str, end);
}

static int
parse_unsigned(const char *what, const char *str, unsigned long long max,
               unsigned long long *out)
{
    const char *p = str;
    char *end;

    while (*p == ' ' || (*p >= '\t' && *p <= '\r'))
        p++;
    if (*p == '-') {
        nbdkit_error("%s: negative numbers are not allowed", what);
        return -1;
    }
    errno = 0;
    *out = strtoull(p, &end, 0);
    if (errno == 0 && end != p && *out > max)
        errno = ERANGE;
    return parse_check(what, p, end);
}

#define NBDKIT_PARSE_SIGNED(fn, type, min, max)                         \
    NBDKIT_DLL_PUBLIC int                                               \
    fn(const char *what, const char *str, type *rp)                     \
    {                                                                   \
        long long r;                                                    \
                                                                        \
        if (parse_signed(what, str, (min), (max), &r) == -1)            \
            return -1;                                                  \
        if (rp != NULL)                                                 \
            *rp = (type)r;                                              \
        return 0;                                                       \
    }
#define NBDKIT_PARSE_UNSIGNED(fn, type, max)                            \
    NBDKIT_DLL_PUBLIC int                                               \
    fn(const char *what, const char *str, type *rp)                     \
    {                                                                   \
        unsigned long long r;                                           \
                                                                        \
        if (parse_unsigned(what, str, (max), &r) == -1)                 \
            return -1;                                                  \
        if (rp != NULL)                                                 \
            *rp = (type)r;                                              \
        return 0;                                                       \
    }

NBDKIT_PARSE_SIGNED(nbdkit_parse_int, int, INT_MIN, INT_MAX)
NBDKIT_PARSE_SIGNED(nbdkit_parse_int8_t, int8_t, INT8_MIN, INT8_MAX)
NBDKIT_PARSE_SIGNED(nbdkit_parse_int16_t, int16_t, INT16_MIN, INT16_MAX)
NBDKIT_PARSE_SIGNED(nbdkit_parse_int32_t, int32_t, INT32_MIN, INT32_MAX)
NBDKIT_PARSE_SIGNED(nbdkit_parse_int64_t, int64_t, INT64_MIN, INT64_MAX)
NBDKIT_PARSE_UNSIGNED(nbdkit_parse_unsigned, unsigned, UINT_MAX)
NBDKIT_PARSE_UNSIGNED(nbdkit_parse_uint8_t, uint8_t, UINT8_MAX)
NBDKIT_PARSE_UNSIGNED(nbdkit_parse_uint16_t, uint16_t, UINT16_MAX)
NBDKIT_PARSE_UNSIGNED(nbdkit_parse_uint32_t, uint32_t, UINT32_MAX)
NBDKIT_PARSE_UNSIGNED(nbdkit_parse_uint64_t, uint64_t, UINT64_MAX)

/* ---- Paths and passwords ------------------------------------------------- */

NBDKIT_DLL_PUBLIC char *
nbdkit_absolute_path(const char *path)
{
    char *cwd, *ret;

    if (path == NULL || *path == '\0') {
        nbdkit_error("cannot convert null or empty path to an absolute path");
        return NULL;
    }
    if (*path == '/') {
        if ((ret = strdup(path)) == NULL)
            nbdkit_error("strdup: %m");
        return ret;
    }
    if ((cwd = getcwd(NULL, 0)) == NULL) {
        nbdkit_error("getcwd: %m");
        return NULL;
    }
    if (asprintf(&ret, "%s/%s", cwd, path) == -1) {
        nbdkit_error("asprintf: %m");
        ret = NULL;
    }
    free(cwd);
    return ret;
}

NBDKIT_DLL_PUBLIC char *
nbdkit_realpath(const char *path)
{
    char *ret;

    if (path == NULL || *path == '\0') {
        nbdkit_error("cannot resolve a null or empty path");
        return NULL;
    }
    if ((ret = realpath(path, NULL)) == NULL)
        nbdkit_error("realpath: %s: %m", path);
    return ret;
}

/* The first line of fd (closed here), without its newline. */
static int
read_password_fd(const char *what, int fd, char **password)
{
    FILE *fp = fdopen(fd, "r");
    size_t cap = 0;
    ssize_t r;

    if (fp == NULL) {
        nbdkit_error("fdopen %s: %m", what);
        close(fd);
        return -1;
    }
    errno = 0;
    r = getline(password, &cap, fp);
    if (r == -1 && errno != 0) {
        nbdkit_error("could not read password from %s: %m", what);
        fclose(fp);
        free(*password);
        *password = NULL;
        return -1;
    }
    fclose(fp);
    if (r == -1) {                  /* empty file: an empty password */
        free(*password);
        if ((*password = strdup("")) == NULL) {
            nbdkit_error("strdup: %m");
            return -1;
        }
    } else if (r > 0 && (*password)[r - 1] == '\n') {
        (*password)[r - 1] = '\0';
    }
    return 0;
}

NBDKIT_DLL_PUBLIC int
nbdkit_stdio_safe(void)
{
    return 0;                       /* a daemon's stdin is nobody's tty */
}

NBDKIT_DLL_PUBLIC int
nbdkit_read_password(const char *value, char **password)
{
    int fd;

    *password = NULL;
    if (strcmp(value, "-") == 0) {
        nbdkit_error("nbdgraphd cannot read a password from stdin: use "
                     "+FILE or -FD");
        return -1;
    }
    if (value[0] == '-') {
        if (nbdkit_parse_int("password file descriptor", value + 1,
                             &fd) == -1)
            return -1;
        if (fd <= STDERR_FILENO) {
            nbdkit_error("cannot use password -FD for stdin/stdout/stderr");
            return -1;
        }
        return read_password_fd(value + 1, fd, password);
    }
    if (value[0] == '+') {
        if ((fd = open(value + 1, O_RDONLY | O_CLOEXEC)) == -1) {
            nbdkit_error("open %s: %m", value + 1);
            return -1;
        }
        return read_password_fd(value + 1, fd, password);
    }
    if ((*password = strdup(value)) == NULL) {
        nbdkit_error("strdup: %m");
        return -1;
    }
    return 0;
}

/* ---- The connection a node stands for ------------------------------------ */

NBDKIT_DLL_PUBLIC const char *
nbdkit_export_name(void)
{
    return "";                      /* the default export */
}

NBDKIT_DLL_PUBLIC int
nbdkit_is_tls(void)
{
    return 0;
}

NBDKIT_DLL_PUBLIC int
nbdkit_peer_name(struct sockaddr *addr, socklen_t *addrlen)
{
    (void)addr;
    (void)addrlen;
    nbdkit_error("a node has no peer: nbdkit_peer_name is not supported");
    errno = ENOTSUP;
    return -1;
}

static int64_t
no_peer(const char *what)
{
    nbdkit_error("a node has no peer: %s is not supported", what);
    errno = ENOTSUP;
    return -1;
}

NBDKIT_DLL_PUBLIC int64_t
nbdkit_peer_pid(void)
{
    return no_peer("nbdkit_peer_pid");
}

NBDKIT_DLL_PUBLIC int64_t
nbdkit_peer_uid(void)
{
    return no_peer("nbdkit_peer_uid");
}

NBDKIT_DLL_PUBLIC int64_t
nbdkit_peer_gid(void)
{
    return no_peer("nbdkit_peer_gid");
}

NBDKIT_DLL_PUBLIC void
nbdkit_shutdown(void)
{
    /* nbdkit's meaning: the server exits as on a signal.  Ours shuts down
     * cleanly on SIGTERM, and kill() is safe from any thread. */
    kill(getpid(), SIGTERM);
}

NBDKIT_DLL_PUBLIC int
nbdkit_nanosleep(unsigned sec, unsigned nsec)
{
    struct timespec ts;

    if (sec >= INT_MAX - nsec / 1000000000) {
        nbdkit_error("sleep request is too long");
        errno = EINVAL;
        return -1;
    }
    ts.tv_sec = (time_t)(sec + nsec / 1000000000);
    ts.tv_nsec = nsec % 1000000000;
    while (nanosleep(&ts, &ts) == -1)
        if (errno != EINTR) {
            nbdkit_error("nanosleep: %m");
            return -1;
        }
    return 0;
}

/* ---- Interned strings ---------------------------------------------------- */

/* nbdkit frees them when the connection or the server ends; a plugin's
 * load lasts as long as the daemon here, and a few config strings are
 * all plugins intern, so they are never freed. */
NBDKIT_DLL_PUBLIC const char *
nbdkit_strndup_intern(const char *str, size_t n)
{
    char *s = strndup(str, n);

    if (s == NULL)
        nbdkit_error("strndup: %m");
    return s;
}

NBDKIT_DLL_PUBLIC const char *
nbdkit_strdup_intern(const char *str)
{
    return nbdkit_strndup_intern(str, strlen(str));
}

NBDKIT_DLL_PUBLIC const char *
nbdkit_vprintf_intern(const char *fs, va_list args)
{
    char *s;

    if (vasprintf(&s, fs, args) == -1) {
        nbdkit_error("vasprintf: %m");
        return NULL;
    }
    return s;
}

NBDKIT_DLL_PUBLIC const char *
nbdkit_printf_intern(const char *fs, ...)
{
    va_list args;
    const char *s;

    va_start(args, fs);
    s = nbdkit_vprintf_intern(fs, args);
    va_end(args);
    return s;
}

/* ---- Extents ------------------------------------------------------------- */

/* Store [offset, + length) of `type` (already clipped): merged into the
 * last one when it has the same type. */
static int
extents_store(struct nbdkit_extents *e, uint64_t offset, uint64_t length,
              uint32_t type)
{
    if (e->out != NULL) {
        if (e->n > 0 && e->last_type == type) {
            e->out[e->n - 1].length += length;
        } else if (e->n < e->max) {
            e->out[e->n++] = (struct ng_extent){ length, type };
        } else {
            e->next = e->end;       /* full: the rest is not wanted */
            return 0;
        }
    } else if (e->own_n > 0 && e->last_type == type) {
        e->own[e->own_n - 1].length += length;
    } else {
        if (e->own_n == e->own_cap) {
            size_t cap = e->own_cap ? 2 * e->own_cap : 16;
            struct nbdkit_extent_rec *p = realloc(e->own, cap * sizeof *p);

            if (p == NULL) {
                nbdkit_error("realloc: %m");
                return -1;
            }
            e->own = p;
            e->own_cap = cap;
        }
        e->own[e->own_n++] = (struct nbdkit_extent_rec){
            offset, length, type };
    }
    e->last_type = type;
    e->next = offset + length;
    return 0;
}

NBDKIT_DLL_PUBLIC int
nbdkit_add_extent(struct nbdkit_extents *e, uint64_t offset,
                  uint64_t length, uint32_t type)
{
    uint64_t end = offset + length;

    if (length == 0)
        return 0;
    if (end < offset) {
        nbdkit_error("nbdkit_add_extent: extent overflows");
        errno = EINVAL;
        return -1;
    }
    if (e->next >= e->end || end <= e->start)
        return 0;                   /* beyond what was asked, or before */
    if (offset > e->next || (e->next > e->start && offset != e->next)) {
        nbdkit_error("nbdkit_add_extent: extents must be added in "
                     "ascending order and must be contiguous");
        errno = EINVAL;
        return -1;
    }
    if (offset < e->start)
        offset = e->start;
    if (end > e->end)
        end = e->end;
    return extents_store(e, offset, end - offset,
                         type & (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO));
}

NBDKIT_DLL_PUBLIC struct nbdkit_extents *
nbdkit_extents_new(uint64_t start, uint64_t end)
{
    struct nbdkit_extents *e;

    if (start > end || end > INT64_MAX) {
        nbdkit_error("nbdkit_extents_new: start (%" PRIu64 ") or end (%"
                     PRIu64 ") out of range", start, end);
        errno = ERANGE;
        return NULL;
    }
    if ((e = malloc(sizeof *e)) == NULL) {
        nbdkit_error("nbdkit_extents_new: malloc: %m");
        return NULL;
    }
    ng_nbdkit_extents_init(e, start, end, NULL, 0);
    return e;
}

NBDKIT_DLL_PUBLIC void
nbdkit_extents_free(struct nbdkit_extents *e)
{
    if (e == NULL)
        return;
    free(e->own);
    free(e);
}

NBDKIT_DLL_PUBLIC size_t
nbdkit_extents_count(const struct nbdkit_extents *e)
{
    return e->out != NULL ? e->n : e->own_n;
}

NBDKIT_DLL_PUBLIC struct nbdkit_extent
nbdkit_get_extent(const struct nbdkit_extents *e, size_t i)
{
    struct nbdkit_extent x = { 0 };
    uint64_t off = e->start;

    if (e->out == NULL) {
        x.offset = e->own[i].offset;
        x.length = e->own[i].length;
        x.type = e->own[i].type;
        return x;
    }
    for (size_t j = 0; j < i; j++)
        off += e->out[j].length;
    x.offset = off;
    x.length = e->out[i].length;
    x.type = e->out[i].flags;
    return x;
}

/* ---- Export lists -------------------------------------------------------- */

/* A node never lists exports (it stands for one client of the default
 * export), but plugins that can call these must still load. */

struct nbdkit_exports {
    struct nbdkit_export *v;
    size_t n, cap;
    bool use_default;
};

NBDKIT_DLL_PUBLIC struct nbdkit_exports *
nbdkit_exports_new(void)
{
    struct nbdkit_exports *x = calloc(1, sizeof *x);

    if (x == NULL)
        nbdkit_error("nbdkit_exports_new: calloc: %m");
    return x;
}

NBDKIT_DLL_PUBLIC void
nbdkit_exports_free(struct nbdkit_exports *x)
{
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->n; i++) {
        free(x->v[i].name);
        free(x->v[i].description);
    }
    free(x->v);
    free(x);
}

NBDKIT_DLL_PUBLIC size_t
nbdkit_exports_count(const struct nbdkit_exports *x)
{
    return x->n;
}

/* nbdkit-filter.h declares it returning a const struct: so must we. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-qualifiers"
NBDKIT_DLL_PUBLIC const struct nbdkit_export
nbdkit_get_export(const struct nbdkit_exports *x, size_t i)
{
    return x->v[i];
}
#pragma GCC diagnostic pop

NBDKIT_DLL_PUBLIC int
nbdkit_add_export(struct nbdkit_exports *x, const char *name,
                  const char *description)
{
    struct nbdkit_export ex = { NULL, NULL };

    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 8;
        struct nbdkit_export *v = realloc(x->v, cap * sizeof *v);

        if (v == NULL) {
            nbdkit_error("nbdkit_add_export: realloc: %m");
            return -1;
        }
        x->v = v;
        x->cap = cap;
    }
    if ((ex.name = strdup(name)) == NULL ||
        (description != NULL &&
         (ex.description = strdup(description)) == NULL)) {
        free(ex.name);
        nbdkit_error("nbdkit_add_export: strdup: %m");
        return -1;
    }
    x->v[x->n++] = ex;
    return 0;
}

NBDKIT_DLL_PUBLIC int
nbdkit_use_default_export(struct nbdkit_exports *x)
{
    x->use_default = true;
    return 0;
}

#endif /* HAVE_NBDKIT */
