/* contrib/nbdgraphctl.c: the admin CLI.  One QMP command per run on
 * nbdgraphd's control socket, shown as a table for people or as the
 * daemon's own JSON (--json) for scripts.
 *
 * Exit status: 0 done, 1 the daemon refused or the command failed,
 * 2 bad command line or no daemon to talk to.
 *
 * Plain blocking socket, every wait bounded by poll(): a daemon that
 * hangs must not hang the admin's shell (or a test) with it. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config/config.h"
#include "graph/size.h"

#define EXIT_CMD    1           /* refused by the daemon, or failed */
#define EXIT_USAGE  2           /* bad command line, or no daemon */

#define MAX_MSG     (64 * 1024 * 1024)  /* one line from the daemon */
#define MAX_DEPTH   32          /* graph tree; deeper means a cycle */

struct command;

/* Everything one run owns: options, the connection, its input buffer. */
struct ctl {
    const char *socket;         /* borrowed from argv or the environment */
    bool json;                  /* --json: print "return" as is */
    bool dry_run;               /* --dry-run: ask, change nothing */
    bool allow_implicit;        /* --explicit: may name implicit filters */
    int timeout_ms;             /* bound on each wait; -1 = none */
    bool timeout_set;           /* --timeout given */
    bool verbose;               /* --verbose: show the conversation */
    const struct command *cmd;  /* the subcommand running */
    int fd;                     /* -1 until connected */
    char *buf;                  /* received, not yet parsed; owned */
    size_t len, cap;
    json_int_t next_id;
    /* Events that arrive while waiting for a reply; NULL = dropped. */
    void (*on_event)(struct ctl *c, json_t *msg);
    void *event_opaque;
};

struct command {
    const char *name;
    int (*run)(struct ctl *c, int argc, char **argv);
    bool mutating;              /* takes --dry-run and --explicit */
    const char *synopsis;       /* arguments after the name */
    const char *summary;
};

/* ---- Messages and memory ----------------------------------------------- */

static void errorf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
errorf(const char *fmt, ...)
{
    va_list ap;

    fputs("nbdgraphctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* A CLI has nothing sensible to do without memory: say so and stop. */
static void *
check_alloc(void *p)
{
    if (p == NULL) {
        errorf("out of memory");
        exit(EXIT_CMD);
    }
    return p;
}

static char *
xstrdup(const char *s)
{
    return check_alloc(strdup(s));
}

/* ---- Time -------------------------------------------------------------- */

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The moment `ms` from now; -1 (never) when ms < 0. */
static int64_t
deadline_in(int ms)
{
    return ms < 0 ? -1 : now_ms() + ms;
}

/* poll()'s timeout until `deadline`: -1 none, 0 passed. */
static int
ms_left(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Wait for `events` on fd: 1 ready, 0 timed out, -1 error (errno). */
static int
wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd p = { .fd = fd, .events = events };
    int r;

    do
        r = poll(&p, 1, ms_left(deadline));
    while (r == -1 && errno == EINTR);
    return r;
}

static double
seconds(int ms)
{
    return ms / 1000.0;
}

/* ---- Reading lines ----------------------------------------------------- */

enum read_result { READ_OK, READ_TIMEOUT, READ_FAILED };

static bool
is_blank(const char *p, size_t n)
{
    while (n > 0 && strchr(" \t\r\n", *p) != NULL && *p != '\0') {
        p++;
        n--;
    }
    return n == 0;
}

/* Every QMP message is a JSON object; anything else (the NBD socket's
 * binary greeting, say) fails now instead of at the timeout. */
static bool
looks_like_qmp(const char *p, size_t n)
{
    while (n > 0 && strchr(" \t\r\n", *p) != NULL && *p != '\0') {
        p++;
        n--;
    }
    return n == 0 || *p == '{';
}

static void
consume(struct ctl *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* --verbose: one line of the conversation, without its line end. */
static void
trace(const char *dir, const char *text, size_t n)
{
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    fprintf(stderr, "nbdgraphctl: %s %.*s\n", dir, (int)n, text);
}

/* Parse the first complete line into *msg (caller owns), or leave it
 * NULL when there is none yet.  -1 on input that is not QMP (said). */
static int
take_line(struct ctl *c, json_t **msg)
{
    json_error_t jerr;
    char *nl;
    size_t n;

    *msg = NULL;
    while (c->len > 0 && (nl = memchr(c->buf, '\n', c->len)) != NULL) {
        n = (size_t)(nl - c->buf) + 1;
        if (is_blank(c->buf, n)) {
            consume(c, n);
            continue;
        }
        *msg = json_loadb(c->buf, n, 0, &jerr);
        if (c->verbose)
            trace("<", c->buf, n);
        consume(c, n);
        if (json_is_object(*msg))
            return 0;
        json_decref(*msg);
        *msg = NULL;
        errorf("%s: bad message from nbdgraphd: %s", c->socket, jerr.text);
        return -1;
    }
    if (!looks_like_qmp(c->buf, c->len)) {
        errorf("%s: not a QMP control socket", c->socket);
        return -1;
    }
    return 0;
}

static int
grow(struct ctl *c)
{
    size_t cap;

    if (c->cap - c->len >= 4096)
        return 0;
    cap = c->cap ? c->cap * 2 : 16384;
    if (cap > MAX_MSG)
        return -1;
    c->buf = check_alloc(realloc(c->buf, cap));
    c->cap = cap;
    return 0;
}

/* A daemon that went away (it stopped, or dropped us) is said so,
 * whichever end noticed first. */
static void
say_io_error(struct ctl *c, int err)
{
    if (err == EPIPE || err == ECONNRESET)
        errorf("%s: nbdgraphd closed the connection", c->socket);
    else
        errorf("%s: %s", c->socket, strerror(err));
}

static enum read_result
fill(struct ctl *c, int64_t deadline)
{
    ssize_t n;
    int r;

    if (grow(c) == -1) {
        errorf("%s: message from nbdgraphd too long", c->socket);
        return READ_FAILED;
    }
    r = wait_fd(c->fd, POLLIN, deadline);
    if (r == 0)
        return READ_TIMEOUT;
    n = r < 0 ? -1 : recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0 && errno == EINTR)
        return READ_OK;
    if (n <= 0) {
        say_io_error(c, n == 0 ? EPIPE : errno);
        return READ_FAILED;
    }
    c->len += (size_t)n;
    return READ_OK;
}

/* The next message, reply or event, into *msg (caller owns). */
static enum read_result
read_msg(struct ctl *c, int64_t deadline, json_t **msg)
{
    enum read_result r;

    for (;;) {
        if (take_line(c, msg) == -1)
            return READ_FAILED;
        if (*msg != NULL)
            return READ_OK;
        if ((r = fill(c, deadline)) != READ_OK)
            return r;
    }
}

/* ---- Sending and calling ----------------------------------------------- */

static int
send_all(struct ctl *c, const char *p, size_t n, int64_t deadline)
{
    ssize_t k;
    int r;

    while (n > 0) {
        r = wait_fd(c->fd, POLLOUT, deadline);
        if (r == 0) {
            errorf("%s: nbdgraphd does not read its input", c->socket);
            return -1;
        }
        /* MSG_NOSIGNAL: a daemon gone away is an error, not SIGPIPE. */
        k = r < 0 ? -1 : send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (k < 0) {
            say_io_error(c, errno);
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Send one message and its CRLF.  Borrows msg. */
static int
send_msg(struct ctl *c, json_t *msg, int64_t deadline)
{
    char *text = check_alloc(json_dumps(msg, JSON_COMPACT |
                                        JSON_PRESERVE_ORDER));
    int r;

    if (c->verbose)
        trace(">", text, strlen(text));
    r = send_all(c, text, strlen(text), deadline);
    free(text);
    return r == 0 ? send_all(c, "\r\n", 2, deadline) : -1;
}

/* A reply with no id answers us too: the daemon gives none to input it
 * could not parse, and we have one command in flight. */
static bool
is_reply_to(json_t *msg, json_t *id)
{
    json_t *mid = json_object_get(msg, "id");

    if (json_object_get(msg, "return") == NULL &&
        json_object_get(msg, "error") == NULL)
        return false;
    return mid == NULL || id == NULL || json_equal(mid, id);
}

static int
wait_reply(struct ctl *c, json_t *id, int64_t deadline, json_t **reply)
{
    enum read_result r;
    json_t *msg;

    for (;;) {
        r = read_msg(c, deadline, &msg);
        if (r == READ_TIMEOUT)
            errorf("%s: no reply from nbdgraphd within %g s", c->socket,
                   seconds(c->timeout_ms));
        if (r != READ_OK)
            return -1;
        if (is_reply_to(msg, id)) {
            *reply = msg;
            return 0;
        }
        if (c->on_event != NULL)
            c->on_event(c, msg);
        json_decref(msg);       /* an event: only `events` and `wait`
                                 * look at them */
    }
}

/* Send msg and wait for its reply (*reply, caller owns).  Steals msg.
 * -1 when the conversation failed (said); a QMP error is a reply. */
static int
call(struct ctl *c, json_t *msg, int64_t deadline, json_t **reply)
{
    json_t *id = json_incref(json_object_get(msg, "id"));
    int r = send_msg(c, msg, deadline);

    json_decref(msg);
    if (r == 0)
        r = wait_reply(c, id, deadline, reply);
    json_decref(id);
    return r;
}

static const char *
error_desc(json_t *reply)
{
    json_t *err = json_object_get(reply, "error");
    const char *desc = json_string_value(json_object_get(err, "desc"));

    if (err == NULL)
        return NULL;
    return desc != NULL ? desc : "unknown error";
}

/* ---- Connecting -------------------------------------------------------- */

static int
connect_socket(struct ctl *c)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen(c->socket) >= sizeof sun.sun_path) {
        errorf("control socket path too long: %s", c->socket);
        return -1;
    }
    strcpy(sun.sun_path, c->socket);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd == -1) {
        errorf("socket: %s", strerror(errno));
        return -1;
    }
    if (connect(c->fd, (struct sockaddr *)&sun, sizeof sun) == 0)
        return 0;
    errorf("cannot reach nbdgraphd at %s: %s (is it running? see --socket "
           "and NBDGRAPH_CONTROL)", c->socket, strerror(errno));
    return -1;
}

static int
read_greeting(struct ctl *c, int64_t deadline)
{
    enum read_result r;
    json_t *msg;
    bool qmp;

    r = read_msg(c, deadline, &msg);
    if (r == READ_TIMEOUT)
        errorf("%s: no greeting within %g s", c->socket,
               seconds(c->timeout_ms));
    if (r != READ_OK)
        return -1;
    qmp = json_is_object(json_object_get(msg, "QMP"));
    json_decref(msg);
    if (!qmp)
        errorf("%s: not a QMP control socket", c->socket);
    return qmp ? 0 : -1;
}

static int
negotiate(struct ctl *c, int64_t deadline)
{
    json_t *reply = NULL;
    const char *desc;

    if (call(c, json_pack("{s:s,s:I}", "execute", "qmp_capabilities",
                          "id", c->next_id++), deadline, &reply) == -1)
        return -1;
    desc = error_desc(reply);
    if (desc != NULL)
        errorf("%s: qmp_capabilities: %s", c->socket, desc);
    json_decref(reply);
    return desc != NULL ? -1 : 0;
}

/* Connect, read the greeting, leave capabilities negotiation.  Any
 * failure here means the command never ran: EXIT_USAGE. */
static int
ctl_open(struct ctl *c)
{
    int64_t deadline = deadline_in(c->timeout_ms);

    if (c->fd != -1)
        return 0;
    if (connect_socket(c) == 0 && read_greeting(c, deadline) == 0 &&
        negotiate(c, deadline) == 0)
        return 0;
    if (c->fd != -1)
        close(c->fd);
    c->fd = -1;
    return EXIT_USAGE;
}

static void
ctl_close(struct ctl *c)
{
    if (c->fd != -1)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* The daemon's messages name QMP arguments; where nbdgraphctl has an
 * option that sends one, say the option instead. */
static const struct {
    const char *qmp, *cli;
} cli_words[] = {
    { "pass \"explicit\": true", "pass --explicit" },
    { "use mode 'hard'", "use --hard" },
};

static void
say_refusal(const char *desc)
{
    const char *hit = NULL;
    size_t i;

    for (i = 0; i < sizeof cli_words / sizeof cli_words[0]; i++)
        if ((hit = strstr(desc, cli_words[i].qmp)) != NULL)
            break;
    if (hit == NULL)
        errorf("%s", desc);
    else
        errorf("%.*s%s%s", (int)(hit - desc), desc, cli_words[i].cli,
               hit + strlen(cli_words[i].qmp));
}

/* Run one command.  Steals args (NULL = none).  On 0, *ret holds the
 * "return" value (caller owns); else the error was said and the result
 * is the exit status. */
static int
ctl_execute(struct ctl *c, const char *name, json_t *args, json_t **ret)
{
    json_t *msg, *reply = NULL;
    const char *desc;
    int r;

    *ret = NULL;
    r = ctl_open(c);
    if (r != 0) {
        json_decref(args);
        return r;
    }
    msg = check_alloc(json_object());
    json_object_set_new(msg, "execute", json_string(name));
    json_object_set_new(msg, "arguments", args ? args : json_object());
    json_object_set_new(msg, "id", json_integer(c->next_id++));
    if (call(c, msg, deadline_in(c->timeout_ms), &reply) == -1)
        return EXIT_CMD;
    desc = error_desc(reply);
    if (desc != NULL)
        say_refusal(desc);
    else
        *ret = json_incref(json_object_get(reply, "return"));
    json_decref(reply);
    return desc != NULL ? EXIT_CMD : 0;
}

/* ---- Output helpers ---------------------------------------------------- */

static void
print_json(json_t *v)
{
    json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
               JSON_ENCODE_ANY);
    putchar('\n');
}

/* "64 MiB", or "1.5 GiB" when not a whole number of units. */
static void
format_size(json_int_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {
        "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
    };
    json_int_t unit = 1;
    size_t u = 0;

    while (u + 1 < sizeof units / sizeof units[0] && bytes / 1024 >= unit) {
        unit *= 1024;
        u++;
    }
    if (bytes % unit == 0)
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT " %s", bytes / unit,
                 units[u]);
    else
        snprintf(buf, size, "%.1f %s", (double)bytes / (double)unit,
                 units[u]);
}

/* One table cell for any JSON value (caller frees): "-" when missing or
 * empty, yes/no, numbers, lists joined by ','. */
static char *
cell_text(json_t *v)
{
    char *s = NULL;
    size_t n = 0, i;
    FILE *fp;
    json_t *item;

    if (v == NULL || json_is_null(v) ||
        (json_is_string(v) && json_string_length(v) == 0) ||
        (json_is_array(v) && json_array_size(v) == 0))
        return xstrdup("-");
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_boolean(v))
        return xstrdup(json_is_true(v) ? "yes" : "no");
    if (!json_is_array(v))
        return check_alloc(json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY));
    fp = check_alloc(open_memstream(&s, &n));
    json_array_foreach(v, i, item) {
        char *t = cell_text(item);

        fprintf(fp, "%s%s", i > 0 ? "," : "", t);
        free(t);
    }
    fclose(fp);
    return check_alloc(s);
}

static char *
field_text(json_t *obj, const char *key)
{
    return cell_text(json_object_get(obj, key));
}

/* obj[key] as a string, or "" when missing: never NULL, so it can go
 * straight to printf. */
static const char *
jtext(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s != NULL ? s : "";
}

static bool
jtrue(json_t *obj, const char *key)
{
    return json_is_true(json_object_get(obj, key));
}

/* ---- Tables ------------------------------------------------------------ */

struct table {
    size_t ncols, nrows, cap;   /* rows, including the header */
    char **cells;               /* row-major; each owned */
};

/* Add one row of t->ncols cells; takes ownership of each. */
static void
table_add(struct table *t, char **row)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = check_alloc(realloc(t->cells, t->cap * t->ncols *
                                       sizeof *t->cells));
    }
    memcpy(t->cells + t->nrows * t->ncols, row, t->ncols * sizeof *row);
    t->nrows++;
}

static void
table_header(struct table *t, const char *const *names)
{
    char *row[16];
    size_t i;

    for (i = 0; i < t->ncols && i < 16; i++)
        row[i] = xstrdup(names[i]);
    table_add(t, row);
}

/* Columns count characters, not bytes: UTF-8 names line up too. */
static size_t
text_width(const char *s)
{
    size_t w = 0;

    for (; *s != '\0'; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void
table_print(const struct table *t)
{
    size_t width[16] = { 0 }, r, i, w;
    const char *s;

    for (r = 0; r < t->nrows; r++)
        for (i = 0; i < t->ncols && i < 16; i++) {
            w = text_width(t->cells[r * t->ncols + i]);
            width[i] = w > width[i] ? w : width[i];
        }
    for (r = 0; r < t->nrows; r++) {
        for (i = 0; i < t->ncols; i++) {
            s = t->cells[r * t->ncols + i];
            if (i + 1 == t->ncols)
                printf("%s\n", s);      /* no trailing blanks */
            else
                printf("%s%*s", s, (int)(width[i] - text_width(s) + 2), "");
        }
    }
}

static void
table_free(struct table *t)
{
    size_t i;

    for (i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* Print the entries of array `entries` as a table of ncols columns under
 * `head`, each entry's rows added by add_rows(). */
static void
print_table(json_t *entries, const char *const *head, size_t ncols,
            void (*add_rows)(struct table *t, json_t *entry))
{
    struct table t = { .ncols = ncols };
    json_t *e;
    size_t i;

    table_header(&t, head);
    json_array_foreach(entries, i, e)
        add_rows(&t, e);
    table_print(&t);
    table_free(&t);
}

/* ---- Command-line helpers ---------------------------------------------- */

#define OPT_HELP { "help", no_argument, NULL, 'h' }
#define OPT_END  { NULL, 0, NULL, 0 }

static void
command_usage(const struct command *cmd, FILE *fp)
{
    fprintf(fp, "Usage: nbdgraphctl [OPTION]... %s%s%s\n%s\n", cmd->name,
            *cmd->synopsis ? " " : "", cmd->synopsis, cmd->summary);
}

static int usage_error(struct ctl *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
usage_error(struct ctl *c, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nbdgraphctl: %s: ", c->cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    command_usage(c->cmd, stderr);
    return EXIT_USAGE;
}

/* getopt_long over a command's own arguments (argv[0] is the command).
 * GNU getopt permutes, so options may follow KEY=VALUE arguments. */
static int
next_opt(int argc, char **argv, const struct option *opts)
{
    opterr = 0;                 /* we say it, naming the command */
    return getopt_long(argc, argv, ":h", opts, NULL);
}

/* The status for an option next_opt() returned that the command does not
 * handle itself: --help, or a usage error. */
static int
opt_status(struct ctl *c, int o, char **argv)
{
    if (o == 'h') {
        command_usage(c->cmd, stdout);
        return 0;
    }
    if (o == ':')
        return usage_error(c, "option '%s' needs an argument",
                           argv[optind - 1]);
    return usage_error(c, "unknown option '%s'", argv[optind - 1]);
}

/* Option parsing for commands without options of their own.  -1 to go
 * on, else the exit status. */
static int
no_opts(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = { OPT_HELP, OPT_END };
    int o;

    optind = 0;
    o = next_opt(argc, argv, opts);
    return o == -1 ? -1 : opt_status(c, o, argv);
}

static int
check_nargs(struct ctl *c, int n, int min, int max)
{
    if (n < min)
        return usage_error(c, "missing argument");
    if (max >= 0 && n > max)
        return usage_error(c, "unexpected argument");
    return 0;
}

/* A command without options of its own, of min to max arguments (max
 * -1: any number), from argv[optind] on.  -1 to go on, else the exit
 * status. */
static int
plain_args(struct ctl *c, int argc, char **argv, int min, int max)
{
    int r = no_opts(c, argc, argv);

    if (r == -1 && (r = check_nargs(c, argc - optind, min, max)) == 0)
        return -1;
    return r;
}

/* plain_args() for a command whose one option is --FLAG (no value),
 * which sets *set. */
static int
flag_args(struct ctl *c, int argc, char **argv, const char *flag, bool *set,
          int min, int max)
{
    const struct option opts[] = {
        { flag, no_argument, NULL, 'F' }, OPT_HELP, OPT_END,
    };
    int o;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        if (o != 'F')
            return opt_status(c, o, argv);
        *set = true;
    }
    o = check_nargs(c, argc - optind, min, max);
    return o != 0 ? o : -1;
}

/* Run a query; print the result with show(), or as JSON with --json.
 * Steals args. */
static int
run_query(struct ctl *c, const char *name, json_t *args,
          void (*show)(json_t *ret))
{
    json_t *ret;
    int r = ctl_execute(c, name, args, &ret);

    if (r == 0 && c->json)
        print_json(ret);
    else if (r == 0)
        show(ret);
    json_decref(ret);
    return r;
}

/* A query of no arguments, its command of none either. */
static int
plain_query(struct ctl *c, int argc, char **argv, const char *name,
            void (*show)(json_t *ret))
{
    int r = plain_args(c, argc, argv, 0, 0);

    return r != -1 ? r : run_query(c, name, NULL, show);
}

/* ---- Commands that change the graph ------------------------------------ */

/* Print nothing on success (as cp does), "{}" with --json, a verdict with
 * --dry-run.  Steals args. */
static int
run_change(struct ctl *c, const char *name, json_t *args)
{
    json_t *ret;
    int r;

    if (c->dry_run)
        json_object_set_new(args, "dry-run", json_true());
    if (c->allow_implicit)
        json_object_set_new(args, "explicit", json_true());
    r = ctl_execute(c, name, args, &ret);
    if (r == 0 && c->json)
        print_json(ret);
    else if (r == 0 && c->dry_run)
        printf("dry run: %s would succeed\n", name);
    json_decref(ret);
    return r;
}

/* VALUE of KEY=VALUE: integer, boolean, else string (new reference). */
static json_t *
parse_value(const char *s)
{
    const char *digits = *s == '-' ? s + 1 : s;
    char *end;
    long long n;

    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
        return json_boolean(*s == 't');
    if (*digits >= '0' && *digits <= '9') {
        errno = 0;
        n = strtoll(s, &end, 10);
        if (errno == 0 && *end == '\0')
            return json_integer(n);
    }
    return json_string(s);          /* "16M": the daemon parses sizes */
}

/* obj[a][b][c] = value for key "a.b.c", making the objects on the way.
 * Steals value.  -1 on a bad or repeated key (said). */
static int
set_dotted(struct ctl *c, json_t *obj, const char *key, json_t *value)
{
    char *path = xstrdup(key), *part = path, *dot;
    json_t *next;
    int r = 0;

    while (r == 0 && (dot = strchr(part, '.')) != NULL) {
        *dot = '\0';
        next = json_object_get(obj, part);
        if (*part == '\0' || (next != NULL && !json_is_object(next)))
            r = usage_error(c, "bad key '%s'", key);
        else if (next == NULL)
            json_object_set_new(obj, part, next = json_object());
        obj = next;
        part = dot + 1;
    }
    if (r == 0 && (*part == '\0' || json_object_get(obj, part) != NULL))
        r = usage_error(c, "bad or repeated key '%s'", key);
    if (r == 0)
        json_object_set(obj, part, value);
    json_decref(value);
    free(path);
    return r == 0 ? 0 : -1;
}

/* KEY=VALUE, or KEY:=JSON for what VALUE cannot spell (lists, null). */
static int
add_key_value(struct ctl *c, json_t *obj, const char *arg)
{
    const char *eq = strchr(arg, '=');
    bool raw = eq != NULL && eq > arg && eq[-1] == ':';
    char *key;
    json_t *value;
    int r;

    if (eq == NULL || eq == arg) {
        usage_error(c, "expected KEY=VALUE, not '%s'", arg);
        return -1;
    }
    key = check_alloc(strndup(arg, (size_t)(eq - arg - raw)));
    value = raw ? json_loads(eq + 1, JSON_DECODE_ANY, NULL)
                : parse_value(eq + 1);
    if (value == NULL) {
        usage_error(c, "'%s': not JSON", arg);
        r = -1;
    } else {
        r = set_dotted(c, obj, key, value);
    }
    free(key);
    return r;
}

static int
add_key_values(struct ctl *c, json_t *obj, int argc, char **argv)
{
    int i;

    for (i = 0; i < argc; i++)
        if (add_key_value(c, obj, argv[i]) == -1)
            return -1;
    return 0;
}

static int
cmd_add_node(struct ctl *c, int argc, char **argv)
{
    json_t *args;
    int r;

    if ((r = plain_args(c, argc, argv, 2, -1)) != -1)
        return r;
    args = json_pack("{s:s,s:s}", "node-name", argv[optind],
                     "driver", argv[optind + 1]);
    if (add_key_values(c, args, argc - optind - 2, argv + optind + 2) == -1) {
        json_decref(args);
        return EXIT_USAGE;
    }
    return run_change(c, "blockdev-add", args);
}

static int
cmd_del_node(struct ctl *c, int argc, char **argv)
{
    int r;

    if ((r = plain_args(c, argc, argv, 1, 1)) != -1)
        return r;
    return run_change(c, "blockdev-del",
                      json_pack("{s:s}", "node-name", argv[optind]));
}

/* NODE SIZE: SIZE in the config's grammar (512M, 1.5G, bytes). */
static int
cmd_resize(struct ctl *c, int argc, char **argv)
{
    const char *why;
    uint64_t size;
    int r;

    if ((r = plain_args(c, argc, argv, 2, 2)) != -1)
        return r;
    if (ng_parse_size_why(argv[optind + 1], &size, &why) == -1)
        return usage_error(c, "bad size '%s' (%s)", argv[optind + 1], why);
    return run_change(c, "block_resize",
                      json_pack("{s:s,s:I}", "node-name", argv[optind],
                                "size", (json_int_t)size));
}

/* --export ID...: appended to `exports`.  -1 to go on, else the exit
 * status. */
static int
export_opts(struct ctl *c, int argc, char **argv, json_t *exports)
{
    static const struct option opts[] = {
        { "export", required_argument, NULL, 'e' }, OPT_HELP, OPT_END,
    };
    int o;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        if (o != 'e')
            return opt_status(c, o, argv);
        json_array_append_new(exports, json_string(optarg));
    }
    return -1;
}

/* Is `key` a list index (decimal digits)?  Its value in *index. */
static bool
index_key(const char *key, size_t *index)
{
    char *end;

    if (*key < '0' || *key > '9')
        return false;
    errno = 0;
    *index = strtoul(key, &end, 10);
    return errno == 0 && *end == '\0';
}

/* QEMU's dotted list syntax: each member of `obj` that is an object
 * keyed first, first+1, ... (children.1=a children.2=b) becomes the
 * list [a, b].  -1 on indices with a gap (said). */
static int
lists_from_indices(struct ctl *c, json_t *obj, size_t first)
{
    const char *key, *k;
    json_t *value, *v, *list;
    size_t index;
    void *tmp;

    json_object_foreach_safe(obj, tmp, key, value) {
        bool all = json_is_object(value) && json_object_size(value) > 0;

        json_object_foreach(value, k, v)
            all = all && index_key(k, &index);
        if (!all)
            continue;
        list = check_alloc(json_array());
        for (index = first; index < first + json_object_size(value);
             index++) {
            char ik[32];

            snprintf(ik, sizeof ik, "%zu", index);
            if ((v = json_object_get(value, ik)) == NULL) {
                json_decref(list);
                usage_error(c, "'%s.N': the indices must run from %zu "
                            "without a gap", key, first);
                return -1;
            }
            json_array_append(list, v);
        }
        json_object_set_new(obj, key, list);
    }
    return 0;
}

/* blockdev-insert-filter's arguments from NODE DRIVER FILTER-NAME
 * [KEY=VALUE]... (pos[0..npos)); NULL on a usage error (said).  A list
 * of children given as children.1=R1 children.2=R2 starts at 1: NODE is
 * children.0. */
static json_t *
insert_filter_args(struct ctl *c, char **pos, int npos, json_t *exports)
{
    json_t *filter = json_pack("{s:s,s:s}", "driver", pos[1],
                               "node-name", pos[2]);
    json_t *args = json_pack("{s:s,s:O}", "node", pos[0], "filter", filter);

    if (json_array_size(exports) > 0)
        json_object_set(args, "exports", exports);
    if (add_key_values(c, filter, npos - 3, pos + 3) == -1 ||
        lists_from_indices(c, filter, 1) == -1) {
        json_decref(args);
        args = NULL;
    }
    json_decref(filter);
    return args;
}

static int
cmd_insert_filter(struct ctl *c, int argc, char **argv)
{
    json_t *exports = check_alloc(json_array()), *args;
    int r = export_opts(c, argc, argv, exports);

    if (r == -1 && (r = check_nargs(c, argc - optind, 3, -1)) == 0) {
        args = insert_filter_args(c, argv + optind, argc - optind, exports);
        r = args != NULL ? run_change(c, "blockdev-insert-filter", args)
                         : EXIT_USAGE;
    }
    json_decref(exports);
    return r;
}

/* NAME [keep=CHILD]: which child takes a multi-child filter's place. */
static int
cmd_remove_filter(struct ctl *c, int argc, char **argv)
{
    int r;
    json_t *args;

    if ((r = plain_args(c, argc, argv, 1, 2)) != -1)
        return r;
    args = json_pack("{s:s}", "node-name", argv[optind]);
    if (argc - optind == 2 && strncmp(argv[optind + 1], "keep=", 5) != 0) {
        json_decref(args);
        return usage_error(c, "expected keep=CHILD, not '%s'",
                           argv[optind + 1]);
    }
    if (argc - optind == 2 && add_key_value(c, args, argv[optind + 1]) == -1) {
        json_decref(args);
        return EXIT_USAGE;
    }
    return run_change(c, "blockdev-remove-filter", args);
}

static int
cmd_add_export(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "name", required_argument, NULL, 'n' },
        { "writable", no_argument, NULL, 'w' },
        { "description", required_argument, NULL, 'd' },
        { "throttle", required_argument, NULL, 'T' },
        { "throttle-group", required_argument, NULL, 'g' },
        { "copy-on-read", no_argument, NULL, 'c' },
        { "detect-zeroes", required_argument, NULL, 'z' },
        { "bitmap", required_argument, NULL, 'b' },
        { "allocation-depth", no_argument, NULL, 'a' },
        OPT_HELP, OPT_END,
    };
    json_t *args = json_object(), *limits = json_object();
    json_t *bitmaps = json_array();
    int o, r = -1;

    for (optind = 0; r == -1 && (o = next_opt(argc, argv, opts)) != -1;) {
        switch (o) {
        case 'n': json_object_set_new(args, "name", json_string(optarg));
                  break;
        case 'w': json_object_set_new(args, "writable", json_true()); break;
        case 'd': json_object_set_new(args, "description",
                                      json_string(optarg));
                  break;
        case 'T': if (add_key_value(c, limits, optarg) == -1)
                      r = EXIT_USAGE;
                  break;
        case 'g': json_object_set_new(args, "throttle-group",
                                      json_string(optarg));
                  break;
        case 'c': json_object_set_new(args, "copy-on-read", json_true());
                  break;
        case 'z': json_object_set_new(args, "detect-zeroes",
                                      json_string(optarg));
                  break;
        case 'b': json_array_append_new(bitmaps, json_string(optarg));
                  break;
        case 'a': json_object_set_new(args, "allocation-depth",
                                      json_true());
                  break;
        default:  r = opt_status(c, o, argv);
        }
    }
    if (r == -1)
        r = check_nargs(c, argc - optind, 2, 2);
    if (r != 0) {
        json_decref(args);
        json_decref(limits);
        json_decref(bitmaps);
        return r;
    }
    if (json_array_size(bitmaps) > 0)
        json_object_set(args, "bitmaps", bitmaps);
    json_decref(bitmaps);
    json_object_set_new(args, "type", json_string("nbd"));
    json_object_set_new(args, "id", json_string(argv[optind]));
    json_object_set_new(args, "node-name", json_string(argv[optind + 1]));
    if (json_object_size(limits) > 0)
        json_object_set(args, "throttle", limits);
    json_decref(limits);
    return run_change(c, "block-export-add", args);
}

/* True when the daemon has a node called `name`; -1 when it cannot say
 * (said). */
static int
node_exists(struct ctl *c, const char *name)
{
    json_t *nodes, *n;
    size_t i;
    int found = 0;

    if (ctl_execute(c, "query-named-block-nodes", NULL, &nodes) != 0)
        return -1;
    json_array_foreach(nodes, i, n)
        if (strcmp(jtext(n, "node-name"), name) == 0)
            found = 1;
    json_decref(nodes);
    return found;
}

/* Throttle limits of a node (blockdev-reconfigure) or, when no node has
 * that name, of a throttle group (throttle-group-set). */
static int
cmd_set_limits(struct ctl *c, int argc, char **argv)
{
    json_t *limits;
    int r, is_node;

    if ((r = plain_args(c, argc, argv, 2, -1)) != -1)
        return r;
    limits = json_object();
    if (add_key_values(c, limits, argc - optind - 1,
                       argv + optind + 1) == -1) {
        json_decref(limits);
        return EXIT_USAGE;
    }
    if ((is_node = node_exists(c, argv[optind])) == -1) {
        json_decref(limits);
        return EXIT_CMD;
    }
    if (is_node)
        return run_change(c, "blockdev-reconfigure",
                          json_pack("{s:s,s:{s:o}}", "node-name",
                                    argv[optind], "options", "limits",
                                    limits));
    return run_change(c, "throttle-group-set",
                      json_pack("{s:s,s:o}", "group", argv[optind],
                                "limits", limits));
}

static int
cmd_del_export(struct ctl *c, int argc, char **argv)
{
    bool hard = false;
    int o;

    if ((o = flag_args(c, argc, argv, "hard", &hard, 1, 1)) != -1)
        return o;
    return run_change(c, "block-export-del",
                      json_pack("{s:s,s:s}", "id", argv[optind],
                                "mode", hard ? "hard" : "safe"));
}

/* ---- Reload and dump-config ---------------------------------------------- */

static void
plan_row(struct table *t, json_t *s)
{
    char *row[6] = {
        field_text(s, "step"), field_text(s, "action"),
        field_text(s, "object"), field_text(s, "change"),
        field_text(s, "exports"), field_text(s, "clients"),
    };

    table_add(t, row);
}

static void
print_plan(json_t *ret)
{
    static const char *const head[] = {
        "STEP", "ACTION", "OBJECT", "CHANGE", "EXPORTS", "CLIENTS",
    };
    json_t *steps = json_object_get(ret, "steps"), *k;
    json_t *kept = json_object_get(ret, "not-in-file");
    size_t i;

    if (json_array_size(steps) > 0)
        print_table(steps, head, 6, plan_row);
    if (json_array_size(kept) > 0) {
        printf("not in the file (kept; --prune removes them):");
        json_array_foreach(kept, i, k)
            printf("%s %s '%s'", i ? "," : "", jtext(k, "kind"),
                   jtext(k, "name"));
        printf("\n");
    }
    printf("%s: %s%zu step(s)\n", jtext(ret, "plan-id"),
           jtrue(ret, "dry-run") ? "dry run, would apply " : "applied ",
           json_array_size(steps));
}

/* The file as the daemon will see it: absolute, since the daemon does not
 * run in our directory.  Caller frees. */
static char *
absolute_path(struct ctl *c, const char *file)
{
    char *path = realpath(file, NULL);

    if (path == NULL)
        fprintf(stderr, "nbdgraphctl: %s: %s: %s\n", c->cmd->name, file,
                strerror(errno));
    return path;
}

static int
cmd_reload(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "dry-run", no_argument, NULL, 'n' },
        { "prune", no_argument, NULL, 'p' }, OPT_HELP, OPT_END,
    };
    json_t *args = json_object();
    char *file = NULL;
    int o;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        if (o == 'n')
            c->dry_run = true;
        else if (o == 'p')
            json_object_set_new(args, "prune", json_true());
        else {
            json_decref(args);
            return opt_status(c, o, argv);
        }
    }
    if ((o = check_nargs(c, argc - optind, 0, 1)) != 0) {
        json_decref(args);
        return o;
    }
    if (argc > optind && (file = absolute_path(c, argv[optind])) == NULL) {
        json_decref(args);
        return EXIT_USAGE;
    }
    if (file != NULL)
        json_object_set_new(args, "file", json_string(file));
    free(file);
    if (c->dry_run)
        json_object_set_new(args, "dry-run", json_true());
    return run_query(c, "reload", args, print_plan);
}

static void
print_yaml(json_t *ret)
{
    fputs(jtext(ret, "yaml"), stdout);
}

static int
cmd_dump_config(struct ctl *c, int argc, char **argv)
{
    int r = plain_args(c, argc, argv, 0, 0);

    return r != -1 ? r : run_query(c, "query-config", json_object(),
                                   print_yaml);
}

/* ---- Queries shown as tables ------------------------------------------- */

/* "file=disk0,backing=base" */
static char *
children_text(json_t *children)
{
    char *s = NULL;
    size_t n = 0, i;
    FILE *fp;
    json_t *e;

    if (json_array_size(children) == 0)
        return xstrdup("-");
    fp = check_alloc(open_memstream(&s, &n));
    json_array_foreach(children, i, e)
        fprintf(fp, "%s%s=%s", i > 0 ? "," : "",
                json_string_value(json_object_get(e, "child")),
                json_string_value(json_object_get(e, "node-name")));
    fclose(fp);
    return check_alloc(s);
}

static char *
size_text(json_t *node)
{
    json_t *v = json_object_get(json_object_get(node, "image"),
                                "virtual-size");
    char buf[32];

    if (!json_is_integer(v))
        return xstrdup("-");
    format_size(json_integer_value(v), buf, sizeof buf);
    return xstrdup(buf);
}

static void
node_row(struct table *t, json_t *n)
{
    char *row[] = {
        field_text(n, "node-name"), field_text(n, "drv"), size_text(n),
        field_text(n, "ro"), field_text(n, "implicit"),
        children_text(json_object_get(n, "children")),
    };

    table_add(t, row);
}

static void
show_nodes(json_t *ret)
{
    static const char *const head[] = {
        "NAME", "DRIVER", "SIZE", "RO", "IMPLICIT", "CHILDREN",
    };

    print_table(ret, head, 6, node_row);
}

static int
cmd_nodes(struct ctl *c, int argc, char **argv)
{
    return plain_query(c, argc, argv, "query-named-block-nodes", show_nodes);
}

static void
export_row(struct table *t, json_t *e)
{
    char *row[] = {
        field_text(e, "id"), field_text(e, "name"),
        field_text(e, "node-name"), field_text(e, "writable"),
        field_text(e, "connections"), field_text(e, "description"),
    };

    table_add(t, row);
}

static void
show_exports(json_t *ret)
{
    static const char *const head[] = {
        "ID", "NAME", "NODE", "WRITABLE", "CONNECTIONS", "DESCRIPTION",
    };

    print_table(ret, head, 6, export_row);
}

static int
cmd_exports(struct ctl *c, int argc, char **argv)
{
    return plain_query(c, argc, argv, "query-block-exports", show_exports);
}

/* query-nac groups holders by node: one row per (node, holder). */
static void
nac_rows(struct table *t, json_t *entry)
{
    json_t *h;
    size_t i;

    json_array_foreach(json_object_get(entry, "holders"), i, h) {
        char *row[] = {
            field_text(entry, "node-name"), field_text(h, "id"),
            field_text(h, "kind"), field_text(h, "require"),
            field_text(h, "allow"),
        };
        table_add(t, row);
    }
}

static void
show_nac(json_t *ret)
{
    static const char *const head[] = {
        "NODE", "HOLDER", "KIND", "REQUIRE", "ALLOW",
    };

    print_table(ret, head, 5, nac_rows);
}

static int
cmd_nac(struct ctl *c, int argc, char **argv)
{
    return plain_query(c, argc, argv, "query-nac", show_nac);
}

/* ---- graph: a tree per export ------------------------------------------ */

struct tree {
    json_t *by_name;            /* node-name -> node (borrowed), owned */
    char prefix[MAX_DEPTH * 8]; /* "│  " per level: 5 bytes */
    size_t plen;
};

/* "(memory, 64 MiB)": filters have their child's size, so leave it out. */
static void
print_node_label(json_t *n)
{
    char size[32] = "";
    json_t *vs = json_object_get(json_object_get(n, "image"),
                                 "virtual-size");

    if (!jtrue(n, "filter") && json_is_integer(vs)) {
        strcpy(size, ", ");
        format_size(json_integer_value(vs), size + 2, sizeof size - 2);
    }
    printf("%s (%s%s%s%s)\n", jtext(n, "node-name"), jtext(n, "drv"), size,
           jtrue(n, "implicit") ? ", implicit" : "",
           jtrue(n, "ro") ? ", read-only" : "");
}

/* `role` is "" for an export's root and for nodes shown on their own. */
static void print_subtree(struct tree *t, const char *name, const char *role,
                          bool last);

static void
print_children(struct tree *t, json_t *n, bool last)
{
    json_t *children = json_object_get(n, "children"), *e;
    size_t plen = t->plen, i;

    if (plen + 8 >= sizeof t->prefix) {
        printf("%s   └─ ...\n", t->prefix);
        return;
    }
    strcpy(t->prefix + plen, last ? "   " : "│  ");
    t->plen += strlen(t->prefix + plen);
    json_array_foreach(children, i, e)
        print_subtree(t, jtext(e, "node-name"), jtext(e, "child"),
                      i + 1 == json_array_size(children));
    t->prefix[plen] = '\0';
    t->plen = plen;
}

static void
print_subtree(struct tree *t, const char *name, const char *role, bool last)
{
    json_t *n = json_object_get(t->by_name, name);

    printf("%s%s%s%s", t->prefix, last ? "└─ " : "├─ ", role,
           *role ? ": " : "");
    if (n == NULL) {
        printf("%s (unknown node)\n", name);
        return;
    }
    print_node_label(n);
    print_children(t, n, last);
}

/* Nodes no edge and no export points at: shown on their own. */
static json_t *
top_nodes(json_t *graph)
{
    json_t *used = json_object(), *top = json_array(), *v;
    const char *key;
    size_t i;

    json_array_foreach(json_object_get(graph, "edges"), i, v)
        json_object_set_new(used, jtext(v, "child"), json_true());
    json_array_foreach(json_object_get(graph, "block-backends"), i, v)
        json_object_set_new(used, jtext(v, "root"), json_true());
    json_array_foreach(json_object_get(graph, "nodes"), i, v) {
        key = json_string_value(json_object_get(v, "node-name"));
        if (key != NULL && json_object_get(used, key) == NULL)
            json_array_append_new(top, json_string(key));
    }
    json_decref(used);
    return top;
}

static void
print_export(struct tree *t, json_t *bb)
{
    const char *root = json_string_value(json_object_get(bb, "root"));

    printf("export %s (%s)\n", jtext(bb, "name"),
           jtrue(bb, "writable") ? "writable" : "read-only");
    if (root == NULL)
        printf("└─ (no medium)\n");
    else
        print_subtree(t, root, "", true);
}

static void
show_tree(json_t *graph)
{
    struct tree t = { .by_name = json_object() };
    json_t *v, *top = top_nodes(graph);
    size_t i;

    json_array_foreach(json_object_get(graph, "nodes"), i, v)
        json_object_set(t.by_name, jtext(v, "node-name"), v);
    json_array_foreach(json_object_get(graph, "block-backends"), i, v)
        print_export(&t, v);
    if (json_array_size(top) > 0)
        printf("not exported\n");
    json_array_foreach(top, i, v)
        print_subtree(&t, json_string_value(v), "",
                      i + 1 == json_array_size(top));
    json_decref(top);
    json_decref(t.by_name);
}

/* The daemon writes the Graphviz text; pass it on untouched so that
 * `nbdgraphctl graph --dot | dot -Tsvg` works. */
static void
show_dot(json_t *ret)
{
    fputs(jtext(ret, "dot"), stdout);
}

static int
cmd_graph(struct ctl *c, int argc, char **argv)
{
    bool dot = false;
    int o;

    if ((o = flag_args(c, argc, argv, "dot", &dot, 0, 0)) != -1)
        return o;
    if (dot)
        return run_query(c, "query-graph",
                         json_pack("{s:s}", "format", "dot"), show_dot);
    return run_query(c, "query-graph", NULL, show_tree);
}

/* ---- events and qmp ---------------------------------------------------- */

/* Seconds as milliseconds for poll(); 0 means wait forever (-1). */
static int
parse_seconds(const char *s, int *ms)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(d >= 0) || isinf(d))
        return -1;
    *ms = d == 0 ? -1 : d * 1000 >= INT_MAX ? INT_MAX : (int)(d * 1000);
    return 0;
}

static int
print_events(struct ctl *c, long count, int timeout_ms)
{
    int64_t deadline = deadline_in(timeout_ms);
    enum read_result r = READ_OK;
    json_t *msg;
    long got = 0;

    while (count < 0 || got < count) {
        r = read_msg(c, deadline, &msg);
        if (r != READ_OK)
            break;
        if (json_object_get(msg, "event") != NULL) {
            json_dumpf(msg, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
            putchar('\n');
            fflush(stdout);     /* one line as it comes, also in a pipe */
            got++;
        }
        json_decref(msg);
    }
    if (r == READ_FAILED)
        return EXIT_CMD;
    if (count >= 0 && got < count) {
        errorf("%ld of %ld events within %g s", got, count,
               seconds(timeout_ms));
        return EXIT_CMD;
    }
    return 0;
}

static int
cmd_events(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "count", required_argument, NULL, 'c' },
        { "timeout", required_argument, NULL, 't' },
        OPT_HELP, OPT_END,
    };
    int timeout_ms = c->timeout_set ? c->timeout_ms : -1, o;
    long count = -1;
    char *end;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        if (o == 'c') {
            count = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || count <= 0)
                return usage_error(c, "bad count '%s'", optarg);
        } else if (o == 't') {
            if (parse_seconds(optarg, &timeout_ms) == -1)
                return usage_error(c, "bad timeout '%s'", optarg);
        } else {
            return opt_status(c, o, argv);
        }
    }
    if ((o = check_nargs(c, argc - optind, 0, 0)) != 0)
        return o;
    if ((o = ctl_open(c)) != 0)
        return o;
    return print_events(c, count, timeout_ms);
}

/* Send a message as given and print the whole reply.  An id is added if
 * there is none (and dropped again) so the reply can be told from
 * events. */
static int
cmd_qmp(struct ctl *c, int argc, char **argv)
{
    json_t *msg, *reply = NULL;
    json_error_t jerr;
    bool own_id;
    int r;

    if ((r = plain_args(c, argc, argv, 1, 1)) != -1)
        return r;
    msg = json_loads(argv[optind], 0, &jerr);
    if (!json_is_object(msg)) {
        json_decref(msg);
        return usage_error(c, "not a JSON object%s%s", msg ? "" : ": ",
                           msg ? "" : jerr.text);
    }
    own_id = json_object_get(msg, "id") == NULL;
    if (own_id)
        json_object_set_new(msg, "id", json_integer(c->next_id++));
    if ((r = ctl_open(c)) != 0) {
        json_decref(msg);
        return r;
    }
    if (call(c, msg, deadline_in(c->timeout_ms), &reply) == -1)
        return EXIT_CMD;
    if (own_id)
        json_object_del(reply, "id");
    print_json(reply);
    r = error_desc(reply) != NULL ? EXIT_CMD : 0;
    json_decref(reply);
    return r;
}

/* ---- Block jobs ---------------------------------------------------------- */

/* A size argument for --speed: digits with an optional K/M/G suffix. */
static int
parse_speed(const char *s, json_int_t *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0)
        return -1;
    switch (*end) {
    case 'K': case 'k': v *= 1024; end++; break;
    case 'M': case 'm': v *= 1024 * 1024; end++; break;
    case 'G': case 'g': v *= 1024.0 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end != '\0')
        return -1;
    *out = (json_int_t)v;
    return 0;
}

/* mirror and backup: DEVICE TARGET, --job-id, --sync, --speed,
 * --filter-node-name, for backup --bitmap and for mirror --copy-mode. */
static int
start_job(struct ctl *c, int argc, char **argv, const char *qmp,
          const char *def_sync, bool takes_bitmap)
{
    static const struct option opts[] = {
        { "job-id", required_argument, NULL, 'i' },
        { "sync", required_argument, NULL, 's' },
        { "speed", required_argument, NULL, 'S' },
        { "bitmap", required_argument, NULL, 'b' },
        { "filter-node-name", required_argument, NULL, 'f' },
        { "copy-mode", required_argument, NULL, 'm' },
        OPT_HELP, OPT_END,
    };
    const char *id = NULL, *sync = def_sync, *bitmap = NULL;
    const char *filter = NULL, *mode = NULL;
    json_int_t speed = 0;
    json_t *args;
    int o;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        switch (o) {
        case 'i': id = optarg; break;
        case 's': sync = optarg; break;
        case 'S':
            if (parse_speed(optarg, &speed) == -1)
                return usage_error(c, "bad speed '%s'", optarg);
            break;
        case 'b':
            if (!takes_bitmap)
                return usage_error(c, "unknown option '--bitmap'");
            bitmap = optarg;
            break;
        case 'f': filter = optarg; break;
        case 'm':
            if (takes_bitmap)
                return usage_error(c, "unknown option '--copy-mode'");
            mode = optarg;
            break;
        default:  return opt_status(c, o, argv);
        }
    }
    if ((o = check_nargs(c, argc - optind, 2, 2)) != 0)
        return o;
    args = json_pack("{s:s,s:s,s:s}", "device", argv[optind], "target",
                     argv[optind + 1], "sync", sync);
    if (id != NULL)
        json_object_set_new(args, "job-id", json_string(id));
    if (speed > 0)
        json_object_set_new(args, "speed", json_integer(speed));
    if (bitmap != NULL)
        json_object_set_new(args, "bitmap", json_string(bitmap));
    if (filter != NULL)
        json_object_set_new(args, "filter-node-name", json_string(filter));
    if (mode != NULL)
        json_object_set_new(args, "copy-mode", json_string(mode));
    return run_change(c, qmp, args);
}

static int
cmd_mirror(struct ctl *c, int argc, char **argv)
{
    return start_job(c, argc, argv, "blockdev-mirror", "full", false);
}

static int
cmd_backup(struct ctl *c, int argc, char **argv)
{
    return start_job(c, argc, argv, "blockdev-backup", "full", true);
}

/* snapshot NODE OVERLAY: blockdev-snapshot; with --file PATH,
 * blockdev-snapshot-sync (OVERLAY, optional, names the new node;
 * --existing opens PATH instead of creating it). */
static int
cmd_snapshot(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "file", required_argument, NULL, 'f' },
        { "existing", no_argument, NULL, 'e' },
        OPT_HELP, OPT_END,
    };
    const char *file = NULL;
    bool existing = false;
    json_t *args;
    int o;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        switch (o) {
        case 'f': file = optarg; break;
        case 'e': existing = true; break;
        default:  return opt_status(c, o, argv);
        }
    }
    if (file == NULL) {
        if (existing)
            return usage_error(c, "--existing needs --file");
        if ((o = check_nargs(c, argc - optind, 2, 2)) != 0)
            return o;
        return run_change(c, "blockdev-snapshot",
                          json_pack("{s:s,s:s}", "node", argv[optind],
                                    "overlay", argv[optind + 1]));
    }
    if ((o = check_nargs(c, argc - optind, 1, 2)) != 0)
        return o;
    args = json_pack("{s:s,s:s,s:s,s:s}", "node-name", argv[optind],
                     "snapshot-file", file, "format", "qcow2", "mode",
                     existing ? "existing" : "absolute-paths");
    if (argc - optind == 2)
        json_object_set_new(args, "snapshot-node-name",
                            json_string(argv[optind + 1]));
    return run_change(c, "blockdev-snapshot-sync", args);
}

/* stream and commit: DEVICE, --job-id, --base, --speed,
 * --filter-node-name, and for commit --top. */
static int
start_chain_job(struct ctl *c, int argc, char **argv, const char *qmp,
                bool takes_top)
{
    static const struct option opts[] = {
        { "job-id", required_argument, NULL, 'i' },
        { "base", required_argument, NULL, 'b' },
        { "top", required_argument, NULL, 't' },
        { "speed", required_argument, NULL, 'S' },
        { "filter-node-name", required_argument, NULL, 'f' },
        OPT_HELP, OPT_END,
    };
    const char *id = NULL, *base = NULL, *top = NULL, *filter = NULL;
    json_int_t speed = 0;
    json_t *args;
    int o;

    for (optind = 0; (o = next_opt(argc, argv, opts)) != -1;) {
        switch (o) {
        case 'i': id = optarg; break;
        case 'b': base = optarg; break;
        case 't':
            if (!takes_top)
                return usage_error(c, "unknown option '--top'");
            top = optarg;
            break;
        case 'f': filter = optarg; break;
        case 'S':
            if (parse_speed(optarg, &speed) == -1)
                return usage_error(c, "bad speed '%s'", optarg);
            break;
        default:  return opt_status(c, o, argv);
        }
    }
    if ((o = check_nargs(c, argc - optind, 1, 1)) != 0)
        return o;
    args = json_pack("{s:s}", "device", argv[optind]);
    if (id != NULL)
        json_object_set_new(args, "job-id", json_string(id));
    if (base != NULL)
        json_object_set_new(args, "base-node", json_string(base));
    if (top != NULL)
        json_object_set_new(args, "top-node", json_string(top));
    if (filter != NULL)
        json_object_set_new(args, "filter-node-name", json_string(filter));
    if (speed > 0)
        json_object_set_new(args, "speed", json_integer(speed));
    return run_change(c, qmp, args);
}

static int
cmd_stream(struct ctl *c, int argc, char **argv)
{
    return start_chain_job(c, argc, argv, "block-stream", false);
}

static int
cmd_commit(struct ctl *c, int argc, char **argv)
{
    return start_chain_job(c, argc, argv, "block-commit", true);
}

static char *
percent_text(json_t *j)
{
    json_int_t cur = json_integer_value(json_object_get(j,
                                                        "current-progress"));
    json_int_t total = json_integer_value(json_object_get(j,
                                                          "total-progress"));
    char buf[32];

    snprintf(buf, sizeof buf, "%.1f%%",
             total > 0 ? 100.0 * (double)cur / (double)total : 100.0);
    return xstrdup(buf);
}

static void
job_row(struct table *t, json_t *j)
{
    const char *err = json_string_value(json_object_get(j, "error"));
    char cur[32], total[32];
    char *row[7];

    format_size(json_integer_value(json_object_get(j, "current-progress")),
                cur, sizeof cur);
    format_size(json_integer_value(json_object_get(j, "total-progress")),
                total, sizeof total);
    row[0] = xstrdup(json_string_value(json_object_get(j, "id")));
    row[1] = xstrdup(json_string_value(json_object_get(j, "type")));
    row[2] = xstrdup(json_string_value(json_object_get(j, "status")));
    row[3] = percent_text(j);
    row[4] = xstrdup(cur);
    row[5] = xstrdup(total);
    row[6] = xstrdup(err != NULL ? err : "-");
    table_add(t, row);
}

static void
show_jobs(json_t *ret)
{
    static const char *const head[] = {
        "ID", "TYPE", "STATUS", "DONE", "COPIED", "TOTAL", "ERROR",
    };

    print_table(ret, head, 7, job_row);
}

static int
cmd_jobs(struct ctl *c, int argc, char **argv)
{
    return plain_query(c, argc, argv, "query-jobs", show_jobs);
}

/* job pause|resume|cancel|complete|finalize|dismiss ID */
static int
cmd_job(struct ctl *c, int argc, char **argv)
{
    static const char *const verbs[] = {
        "pause", "resume", "cancel", "complete", "finalize", "dismiss",
        NULL,
    };
    char qmp[32];
    size_t i;
    int r;

    if ((r = plain_args(c, argc, argv, 2, 2)) != -1)
        return r;
    for (i = 0; verbs[i] != NULL; i++)
        if (strcmp(verbs[i], argv[optind]) == 0)
            break;
    if (verbs[i] == NULL)
        return usage_error(c, "unknown verb '%s' (pause, resume, cancel, "
                           "complete, finalize or dismiss)", argv[optind]);
    snprintf(qmp, sizeof qmp, "job-%s", verbs[i]);
    return run_change(c, qmp, json_pack("{s:s}", "id", argv[optind + 1]));
}

/* How a job's wait ended, as `wait` prints it. */
enum wait_outcome {
    WAIT_UNKNOWN,               /* gone before its end was seen */
    WAIT_READY,                 /* a mirror or active commit in sync */
    WAIT_PENDING,               /* done, waiting for job-finalize */
    WAIT_COMPLETED,
    WAIT_CANCELLED,
    WAIT_FAILED,                /* `why` says why */
    WAIT_STOPPED,               /* paused on an I/O error (on-error
                                 * stop): `why` has the io-status */
};

static const char *const wait_outcome_names[] = {
    [WAIT_UNKNOWN] = "unknown", [WAIT_READY] = "ready",
    [WAIT_PENDING] = "pending", [WAIT_COMPLETED] = "completed",
    [WAIT_CANCELLED] = "cancelled", [WAIT_FAILED] = "failed",
    [WAIT_STOPPED] = "stopped",
};

/* What `wait` learns from events and query-jobs about its job. */
struct wait_state {
    const char *id;
    enum wait_outcome outcome;
    char why[256];
    bool news;                  /* an event about the job since the look */
};

/* Whether msg names the job under `key` ("id" or "device"). */
static bool
event_names(json_t *msg, const char *key, const char *id)
{
    const char *v = json_string_value(json_object_get(
        json_object_get(msg, "data"), key));

    return v != NULL && strcmp(v, id) == 0;
}

/* Note what an event says of the job: its outcome, and that its state
 * changed (a look is due).  BLOCK_JOB_ERROR wakes no look: a stop on
 * error also changes the status, and "ignore" may send many. */
static void
wait_event(struct ctl *c, json_t *msg)
{
    struct wait_state *w = c->event_opaque;
    const char *ev = json_string_value(json_object_get(msg, "event"));
    const char *err = json_string_value(json_object_get(
        json_object_get(msg, "data"), "error"));

    if (ev == NULL)
        return;
    if (strcmp(ev, "JOB_STATUS_CHANGE") == 0 && event_names(msg, "id", w->id))
        w->news = true;
    if (!event_names(msg, "device", w->id))
        return;
    if (strcmp(ev, "BLOCK_JOB_COMPLETED") == 0) {
        w->outcome = err != NULL ? WAIT_FAILED : WAIT_COMPLETED;
        snprintf(w->why, sizeof w->why, "%s", err ? err : "");
        w->news = true;
    } else if (strcmp(ev, "BLOCK_JOB_CANCELLED") == 0) {
        w->outcome = WAIT_CANCELLED;
        w->news = true;
    } else if (strcmp(ev, "BLOCK_JOB_READY") == 0) {
        w->news = true;
    }
}

/* One progress line: a bar on a terminal (redrawn), plain otherwise. */
static void
show_progress(json_t *j, bool tty, double rate)
{
    json_int_t cur = json_integer_value(json_object_get(j,
                                                        "current-progress"));
    json_int_t total = json_integer_value(json_object_get(j,
                                                          "total-progress"));
    double frac = total > 0 ? (double)cur / (double)total : 1.0;
    char a[32], b[32], r[32], bar[41];
    int i, fill = (int)(frac * 40);

    format_size(cur, a, sizeof a);
    format_size(total, b, sizeof b);
    format_size((json_int_t)rate, r, sizeof r);
    for (i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    if (tty)
        printf("\r[%s] %5.1f%% %s / %s %s/s ETA %.0f s  %s   ", bar,
               frac * 100, a, b, r,
               rate > 0 ? (double)(total - cur) / rate : 0.0,
               json_string_value(json_object_get(j, "status")));
    else
        printf("%s %.1f%% %s / %s\n",
               json_string_value(json_object_get(j, "status")), frac * 100,
               a, b);
    fflush(stdout);
}

/* query-jobs' entry for id (new reference), or NULL once it is gone;
 * -1 when the query failed. */
static int
find_job(struct ctl *c, const char *id, json_t **job)
{
    json_t *ret, *j;
    size_t i;
    int r = ctl_execute(c, "query-jobs", NULL, &ret);

    *job = NULL;
    if (r != 0)
        return -1;
    json_array_foreach(ret, i, j)
        if (strcmp(json_string_value(json_object_get(j, "id")), id) == 0)
            *job = json_incref(j);
    json_decref(ret);
    return 0;
}

/* A paused job's io-status (query-block-jobs) into `why`: true when a
 * stop on an I/O error paused it, not the user. */
static bool
stopped_on_error(struct ctl *c, const char *id, char *why, size_t n)
{
    json_t *ret, *j;
    const char *st = NULL;
    bool stopped;
    size_t i;

    if (ctl_execute(c, "query-block-jobs", NULL, &ret) != 0)
        return false;
    json_array_foreach(ret, i, j)
        if (strcmp(json_string_value(json_object_get(j, "device")), id) == 0)
            st = json_string_value(json_object_get(j, "io-status"));
    stopped = st != NULL && strcmp(st, "ok") != 0;
    if (stopped)
        snprintf(why, n, "%s", st);     /* before ret (and st) go */
    json_decref(ret);
    return stopped;
}

/* The job has finished its work: concluded (or gone), or pending waiting
 * for job-finalize, or ready and --complete was not given. */
static bool
wait_over(json_t *job, bool complete)
{
    const char *st = json_string_value(json_object_get(job, "status"));

    return strcmp(st, "concluded") == 0 || strcmp(st, "pending") == 0 ||
           (!complete && strcmp(st, "ready") == 0);
}

/* The outcome of a job whose wait is over (wait_over()), unless an event
 * told it already. */
static void
wait_outcome_of(struct wait_state *w, json_t *job)
{
    const char *st = json_string_value(json_object_get(job, "status"));
    const char *err = json_string_value(json_object_get(job, "error"));

    if (err != NULL && strcmp(err, strerror(ECANCELED)) == 0) {
        w->outcome = WAIT_CANCELLED;  /* the daemon's word for a cancel */
    } else if (err != NULL) {
        w->outcome = WAIT_FAILED;
        snprintf(w->why, sizeof w->why, "%s", err);
    } else if (w->outcome != WAIT_UNKNOWN) {
        return;
    } else if (strcmp(st, "ready") == 0) {
        w->outcome = WAIT_READY;
    } else if (strcmp(st, "pending") == 0) {
        w->outcome = WAIT_PENDING;
    } else {
        w->outcome = WAIT_COMPLETED;
    }
}

/* BLOCK_JOB_COMPLETED or _CANCELLED came: the daemon sends it as the
 * job concludes, in the same turn that lets go of its nodes, so any
 * command sent after it finds them free.  No look is needed (and the
 * daemon may be on its way out: SIGTERM cancels every job). */
static bool
outcome_told(const struct wait_state *w)
{
    return w->outcome == WAIT_COMPLETED || w->outcome == WAIT_CANCELLED ||
           w->outcome == WAIT_FAILED;
}

/* Until `deadline` (the next look) or an event about the job, whichever
 * comes first.  Events go through wait_event here as they do while a
 * reply is awaited, so none is lost between looks.  -1 when the
 * connection failed (said). */
static int
wait_for_news(struct ctl *c, struct wait_state *w, int64_t deadline)
{
    enum read_result r;
    json_t *msg;

    while (!w->news) {
        r = read_msg(c, deadline, &msg);
        if (r == READ_TIMEOUT)
            return 0;
        if (r != READ_OK)
            return -1;
        wait_event(c, msg);         /* a stray reply names no job */
        json_decref(msg);
    }
    return 0;
}

/* The rate since the last look, and the progress line or bar. */
struct wait_progress {
    bool tty;
    int64_t last_ms, last_plain;
    json_int_t last_cur;
    double rate;
};

static void
wait_show(struct ctl *c, struct wait_progress *p, json_t *job)
{
    int64_t now = now_ms();

    if (now > p->last_ms) {
        json_int_t cur = json_integer_value(json_object_get(
            job, "current-progress"));

        p->rate = (double)(cur - p->last_cur) * 1000.0 /
                  (double)(now - p->last_ms);
        p->last_cur = cur;
        p->last_ms = now;
    }
    if (!c->json && (p->tty || now - p->last_plain >= 1000)) {
        show_progress(job, p->tty, p->rate);
        p->last_plain = now;
    }
}

/* Look at the job (query-jobs) when an event says it changed, and at
 * least every 100 ms on a terminal (the bar) or every second otherwise
 * (the progress line; events drive the rest), until its work is over
 * or it is gone.  With --timeout, give up after that long. */
static int
wait_loop(struct ctl *c, struct wait_state *w, bool complete)
{
    struct wait_progress p = {
        .tty = isatty(STDOUT_FILENO) && !c->json, .last_ms = now_ms(),
    };
    int64_t give_up = c->timeout_set ? deadline_in(c->timeout_ms) : -1;
    int64_t next;
    bool completing = false;
    const char *st;
    json_t *job, *ret;

    for (;;) {
        if (find_job(c, w->id, &job) == -1)
            return EXIT_CMD;
        w->news = false;            /* the look saw what came before it */
        if (job == NULL)
            break;
        st = json_string_value(json_object_get(job, "status"));
        if (complete && !completing && strcmp(st, "ready") == 0) {
            if (ctl_execute(c, "job-complete", json_pack("{s:s}", "id",
                                                         w->id), &ret) != 0)
                goto fail;
            json_decref(ret);
            completing = true;
        }
        wait_show(c, &p, job);
        /* Stopped on an I/O error: nothing happens until job-resume, so
         * say so rather than wait for ever. */
        if ((strcmp(st, "paused") == 0 || strcmp(st, "standby") == 0) &&
            stopped_on_error(c, w->id, w->why, sizeof w->why)) {
            w->outcome = WAIT_STOPPED;
            json_decref(job);
            break;
        }
        if (wait_over(job, complete)) {
            wait_outcome_of(w, job);
            json_decref(job);
            break;
        }
        if (give_up >= 0 && now_ms() >= give_up) {
            errorf("job '%s' still %s after %g s", w->id, st,
                   seconds(c->timeout_ms));
            goto fail;
        }
        json_decref(job);
        next = deadline_in(p.tty ? 100 : 1000);
        if (give_up >= 0 && give_up < next)
            next = give_up;
        if (wait_for_news(c, w, next) == -1)
            return EXIT_CMD;
        if (outcome_told(w))
            break;
    }
    if (p.tty)
        putchar('\n');
    return 0;

fail:
    json_decref(job);
    if (p.tty)
        putchar('\n');
    return EXIT_CMD;
}

/* Say how the wait ended; 0 when the job did its work (completed, or
 * ready or pending for the next verb). */
static int
wait_report(struct ctl *c, const struct wait_state *w)
{
    bool ok = w->outcome == WAIT_READY || w->outcome == WAIT_PENDING ||
              w->outcome == WAIT_COMPLETED;
    const char *name = wait_outcome_names[w->outcome];

    if (c->json)
        printf("{\"id\": \"%s\", \"outcome\": \"%s\", "
               "\"completed\": %s}\n", w->id, name,
               w->outcome == WAIT_COMPLETED ? "true" : "false");
    else if (ok)
        printf("job '%s' %s\n", w->id, name);
    if (w->outcome == WAIT_FAILED)
        errorf("job '%s' failed: %s", w->id, w->why);
    else if (w->outcome == WAIT_CANCELLED)
        errorf("job '%s' cancelled", w->id);
    else if (w->outcome == WAIT_STOPPED)
        errorf("job '%s' stopped on an I/O error (io-status %s); "
               "'job resume %s' tries again", w->id, w->why, w->id);
    else if (w->outcome == WAIT_UNKNOWN)
        errorf("job '%s' is gone; its outcome was not seen", w->id);
    return ok ? 0 : EXIT_CMD;
}

/* wait ID [--complete]: follow a job until its work is over. */
static int
cmd_wait(struct ctl *c, int argc, char **argv)
{
    struct wait_state w = { 0 };
    bool complete = false;
    int o;

    if ((o = flag_args(c, argc, argv, "complete", &complete, 1, 1)) != -1)
        return o;
    w.id = argv[optind];
    c->on_event = wait_event;
    c->event_opaque = &w;
    if (!c->timeout_set)
        c->timeout_ms = -1;         /* a job may take long */
    if ((o = wait_loop(c, &w, complete)) != 0)
        return o;
    return wait_report(c, &w);
}



/* ---- main -------------------------------------------------------------- */

static const struct command commands[] = {
    { "nodes", cmd_nodes, false, "",
      "list the block nodes" },
    { "exports", cmd_exports, false, "",
      "list the NBD exports (query-block-exports)" },
    { "graph", cmd_graph, false, "[--dot]",
      "each export's chain of nodes, or Graphviz text" },
    { "add-node", cmd_add_node, true, "NAME DRIVER [KEY=VALUE]...",
      "add a node (blockdev-add)" },
    { "del-node", cmd_del_node, true, "NAME",
      "delete an unused node (blockdev-del)" },
    { "insert-filter", cmd_insert_filter, true,
      "NODE DRIVER FILTER-NAME [KEY=VALUE]... [--export ID]...",
      "put a filter above NODE (blockdev-insert-filter)" },
    { "remove-filter", cmd_remove_filter, true, "NAME [keep=CHILD]",
      "take a filter out (blockdev-remove-filter)" },
    { "add-export", cmd_add_export, true,
      "ID NODE [--name NAME] [--writable] [--description TEXT] "
      "[--throttle KEY=VALUE]... [--throttle-group GROUP] [--copy-on-read] "
      "[--detect-zeroes MODE] [--bitmap NAME]... [--allocation-depth]",
      "export NODE over NBD (block-export-add)" },
    { "del-export", cmd_del_export, true, "ID [--hard]",
      "remove an export (block-export-del)" },
    { "set-limits", cmd_set_limits, true, "NODE|GROUP KEY=VALUE...",
      "change throttle limits live (blockdev-reconfigure, "
      "throttle-group-set)" },
    { "resize", cmd_resize, true, "NODE SIZE",
      "grow NODE live to SIZE (512M, 1.5G) (block_resize)" },
    { "reload", cmd_reload, true, "[--dry-run] [--prune] [FILE]",
      "apply the config file live as one transaction" },
    { "dump-config", cmd_dump_config, false, "",
      "print the running graph as a config file" },
    { "nac", cmd_nac, false, "",
      "list Node Access Control claims (query-nac)" },
    { "mirror", cmd_mirror, true,
      "DEVICE TARGET [--job-id ID] [--sync full|top|none] [--speed N] "
      "[--copy-mode background|write-blocking] [--filter-node-name NAME]",
      "copy DEVICE to TARGET and keep it in sync (blockdev-mirror)" },
    { "backup", cmd_backup, true,
      "DEVICE TARGET [--job-id ID] [--sync full|none|incremental] "
      "[--bitmap NAME] [--speed N] [--filter-node-name NAME]",
      "copy DEVICE as it is now to TARGET (blockdev-backup)" },
    { "snapshot", cmd_snapshot, true,
      "NODE OVERLAY | NODE [OVERLAY] --file PATH [--existing]",
      "put OVERLAY above NODE, below its exports (blockdev-snapshot); "
      "--file: a qcow2 image at PATH (blockdev-snapshot-sync)" },
    { "stream", cmd_stream, true,
      "DEVICE [--base NODE] [--job-id ID] [--speed N] "
      "[--filter-node-name NAME]",
      "copy DEVICE's backing chain down to NODE into it, then drop those "
      "layers (block-stream)" },
    { "commit", cmd_commit, true,
      "DEVICE [--top NODE] [--base NODE] [--job-id ID] [--speed N] "
      "[--filter-node-name NAME]",
      "copy a chain's top into its base and drop what lay between; "
      "active when TOP is DEVICE (block-commit)" },
    { "jobs", cmd_jobs, false, "",
      "list block jobs with their progress (query-jobs)" },
    { "job", cmd_job, true,
      "pause|resume|cancel|complete|finalize|dismiss ID",
      "act on a job (job-pause, ...)" },
    { "wait", cmd_wait, false, "ID [--complete]",
      "follow a job until its work is done (with --complete, complete it "
      "once ready); a progress bar on a terminal" },
    { "events", cmd_events, false, "[--count N] [--timeout S]",
      "print events as JSON lines, as they come" },
    { "qmp", cmd_qmp, false, "JSON",
      "send one raw QMP command, print the whole reply" },
    { NULL, NULL, false, NULL, NULL },
};

static void
usage(FILE *fp)
{
    const struct command *cmd;
    char head[128];

    fprintf(fp,
"Usage: nbdgraphctl [OPTION]... COMMAND [ARG]...\n"
"Query and change a running nbdgraphd through its control socket.\n"
"\n"
"Options:\n"
"  -s, --socket PATH   control socket (default: $NBDGRAPH_CONTROL, else\n"
"                      %s)\n"
"  -j, --json          print the daemon's JSON result instead of a table\n"
"  -n, --dry-run       check a change without making it\n"
"  -x, --explicit      allow a change to name an implicit filter (one an\n"
"                      export's config made)\n"
"  -t, --timeout S     wait at most S seconds for the daemon (default 30,\n"
"                      0 = forever)\n"
"  -v, --verbose       show each message to and from the daemon on\n"
"                      standard error\n"
"  -h, --help          show this help; COMMAND --help shows one command\n"
"  -V, --version       show the version\n"
"\n"
"Commands:\n", NG_DEFAULT_CONTROL);
    for (cmd = commands; cmd->name != NULL; cmd++) {
        snprintf(head, sizeof head, "%s %s", cmd->name, cmd->synopsis);
        if (strlen(head) > 24)
            fprintf(fp, "  %s\n  %-24s  %s\n", head, "", cmd->summary);
        else
            fprintf(fp, "  %-24s  %s\n", head, cmd->summary);
    }
    fprintf(fp,
"\n"
"KEY=VALUE: VALUE is an integer, true, false, or else a string; a dotted\n"
"KEY (cache.direct=true) makes nested objects; KEY:=JSON takes any JSON.\n"
"Exit status: 0 done, 1 the daemon refused, 2 usage or no daemon.\n");
}

/* -1 to go on to the command, else the exit status. */
static int
parse_global(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, 'j' },
        { "dry-run", no_argument, NULL, 'n' },
        { "explicit", no_argument, NULL, 'x' },
        { "timeout", required_argument, NULL, 't' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        OPT_END,
    };
    int o;

    /* "+": stop at the command; its options are its own. */
    while ((o = getopt_long(argc, argv, "+s:jnxt:vhV", opts, NULL)) != -1) {
        switch (o) {
        case 's': c->socket = optarg; break;
        case 'j': c->json = true; break;
        case 'n': c->dry_run = true; break;
        case 'x': c->allow_implicit = true; break;
        case 't':
            if (parse_seconds(optarg, &c->timeout_ms) == -1) {
                errorf("bad timeout '%s'", optarg);
                return EXIT_USAGE;
            }
            c->timeout_set = true;
            break;
        case 'v': c->verbose = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("nbdgraphctl %s\n", PACKAGE_VERSION); return 0;
        default:  usage(stderr); return EXIT_USAGE;
        }
    }
    return -1;
}

static const struct command *
find_command(const char *name)
{
    const struct command *cmd;

    for (cmd = commands; cmd->name != NULL; cmd++)
        if (strcmp(cmd->name, name) == 0)
            return cmd;
    return NULL;
}

static const char *
default_socket(void)
{
    const char *env = getenv("NBDGRAPH_CONTROL");

    return env != NULL && *env != '\0' ? env : NG_DEFAULT_CONTROL;
}

static int
run_command(struct ctl *c, int argc, char **argv)
{
    if (argc < 1) {
        errorf("no command given");
        usage(stderr);
        return EXIT_USAGE;
    }
    c->cmd = find_command(argv[0]);
    if (c->cmd == NULL) {
        errorf("unknown command '%s' (try --help)", argv[0]);
        return EXIT_USAGE;
    }
    if ((c->dry_run || c->allow_implicit) && !c->cmd->mutating) {
        errorf("%s: --%s is only for commands that change the graph",
               argv[0], c->dry_run ? "dry-run" : "explicit");
        return EXIT_USAGE;
    }
    return c->cmd->run(c, argc, argv);
}

int
main(int argc, char **argv)
{
    struct ctl c = {
        .socket = default_socket(),
        .timeout_ms = 30 * 1000,
        .fd = -1,
        .next_id = 1,
    };
    int r = parse_global(&c, argc, argv);

    if (r == -1)
        r = run_command(&c, argc - optind, argv + optind);
    ctl_close(&c);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        errorf("writing output: %s", strerror(errno));
        r = r != 0 ? r : EXIT_CMD;
    }
    return r;
}
