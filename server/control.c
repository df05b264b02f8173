/* server/control.c: the QMP transport — listener, clients, framing,
 * negotiation, argument checking and events.  The commands themselves
 * live in server/qmp-*.c. */
#include <config.h>

#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "server/control.h"
#include "server/log.h"
#include "server/qmp-framer.h"
#include "server/unix-path.h"

/* One QMP message, at most, complete or not; a longer one is answered with
 * an error and skipped, and the connection goes on. */
#define CTL_MAX_MESSAGE (1024 * 1024)
#define CTL_MAX_MESSAGE_TEXT "1 MiB"
/* Back-pressure: a client whose unsent output exceeds this is not read
 * from until half of it has gone, so one that sends commands and never
 * reads its replies costs a bounded amount of memory. */
#define CTL_MAX_OUTPUT (1024 * 1024)
/* A client's commands run one at a time, in the order sent, as QEMU
 * runs in-band commands: the next is not read from its input until the
 * one before has answered (some answer later, after a drain), so a
 * pipelined query sees what the command before it did and the replies
 * come in order. */
#define CTL_MAX_CALLS 1
/* A client that does not read its events is dropped beyond this. */
#define CTL_MAX_EVENT_BACKLOG (16 * 1024 * 1024)
/* An input buffer this large is freed once empty. */
#define CTL_KEEP_BUFFER (64 * 1024)

struct ctl_client {
    struct ng_control *ctl;
    uv_pipe_t pipe;
    char *buf;                  /* input, owned: [start, scan) is the
                                 * message being framed, [scan, len) not
                                 * looked at yet */
    size_t start, scan, len, cap;
    struct ng_qmp_framer framer;
    bool skipping;              /* dropping a message over the limit */
    bool reading;               /* uv_read_start in effect */
    bool stalled;               /* not taking input (back-pressure) */
    bool parsing;               /* in parse_input: no re-entry */
    bool negotiated;
    bool closed;                /* uv_close called */
    unsigned refs;              /* 1 for the connection + 1 per open call */
    unsigned calls;             /* open calls */
    struct ctl_client *next;
};

struct ng_qmp_call {
    struct ctl_client *client;  /* holds a reference */
    json_t *id;                 /* owned, may be NULL */
    bool may_change;            /* not a query-* command */
};

struct ng_control {
    uv_loop_t *loop;
    struct ng_control_ctx *ctx;
    uv_pipe_t listener;
    bool listening;
    char *path;                 /* owned; removed at shutdown */
    struct ng_unix_file file;   /* what we bound at `path` */
    struct ctl_client *clients;
    unsigned closing;           /* handles whose close is pending */
    void (*shutdown_cb)(void *opaque);
    void *shutdown_opaque;
    bool shutting_down;
};

struct ctl_write {
    uv_write_t req;
    struct ctl_client *client;  /* alive: writes end before its close */
    char *text;                 /* owned */
};

static void parse_input(struct ctl_client *c);

/* ---- Output ----------------------------------------------------------- */

static size_t
unsent_output(struct ctl_client *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
}

static void
ctl_write_done(uv_write_t *req, int status)
{
    struct ctl_write *w = (struct ctl_write *)req;
    struct ctl_client *c = w->client;

    (void)status;               /* a gone client: nothing to do */
    free(w->text);
    free(w);
    /* Output drained (or a call answered, which wrote its reply): take
     * input again.  From here, at the top of the loop, never from inside
     * another command. */
    if (c->stalled && !c->closed)
        parse_input(c);
}

/* Send one JSON object followed by CRLF, as QEMU does.  Steals obj. */
static void
ctl_send(struct ctl_client *c, json_t *obj)
{
    struct ctl_write *w;
    uv_buf_t buf;
    char *dump = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t n;

    json_decref(obj);
    if (dump == NULL || c->closed) {
        free(dump);
        return;
    }
    w = calloc(1, sizeof *w);
    n = strlen(dump);
    if (w == NULL || (w->text = realloc(dump, n + 3)) == NULL) {
        free(dump);
        free(w);
        return;
    }
    memcpy(w->text + n, "\r\n", 3);
    w->client = c;
    buf = uv_buf_init(w->text, (unsigned)n + 2);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1,
                 ctl_write_done) != 0) {
        free(w->text);
        free(w);
    }
}

static json_t *
qmp_error_object(const char *cls, const char *desc)
{
    return json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
}

static void
ctl_send_error(struct ctl_client *c, json_t *id, const char *cls,
               const char *desc)
{
    json_t *obj = qmp_error_object(cls, desc);

    if (id != NULL)
        json_object_set(obj, "id", id);
    ctl_send(c, obj);
}

/* ---- Clients ---------------------------------------------------------- */

static void
client_unref(struct ctl_client *c)
{
    if (--c->refs > 0)
        return;
    free(c->buf);
    free(c);
}

static void
client_closed(uv_handle_t *h)
{
    struct ctl_client *c = h->data;
    struct ng_control *ctl = c->ctl;

    ctl->closing--;
    client_unref(c);
    if (ctl->shutting_down && ctl->closing == 0 && ctl->shutdown_cb)
        ctl->shutdown_cb(ctl->shutdown_opaque);
}

static void
client_close(struct ctl_client *c)
{
    struct ctl_client **p;

    if (c->closed)
        return;
    c->closed = true;
    for (p = &c->ctl->clients; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    c->ctl->closing++;
    uv_close((uv_handle_t *)&c->pipe, client_closed);
}

struct ng_control_ctx *
ng_qmp_ctx(struct ng_qmp_call *call)
{
    return call->client->ctl->ctx;
}

static void
call_free(struct ng_qmp_call *call)
{
    json_decref(call->id);
    call->client->calls--;
    client_unref(call->client);
    free(call);
}

void
ng_qmp_return(struct ng_qmp_call *call, json_t *ret)
{
    json_t *obj = json_object();

    json_object_set_new(obj, "return", ret != NULL ? ret : json_object());
    if (call->id != NULL)
        json_object_set(obj, "id", call->id);
    if (call->may_change)
        call->client->ctl->ctx->changes_done++;
    ctl_send(call->client, obj);
    call_free(call);
}

void
ng_qmp_error(struct ng_qmp_call *call, const char *cls, const char *fmt, ...)
{
    char desc[NG_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    ctl_send_error(call->client, call->id, cls, desc);
    call_free(call);
}

void
ng_qmp_error_from(struct ng_qmp_call *call, const struct ng_error *err)
{
    ng_qmp_error(call, NG_QMP_GENERIC, "%s",
                 err->msg[0] ? err->msg : "unknown error");
}

/* ---- Commands ---------------------------------------------------------- */

static const struct ng_qmp_command *
find_command(const char *name)
{
    const struct ng_qmp_command *cmd;

    for (cmd = ng_qmp_commands; cmd->name != NULL; cmd++)
        if (strcmp(cmd->name, name) == 0)
            return cmd;
    return NULL;
}

static bool
arg_has_type(json_t *v, char type)
{
    switch (type) {
    case 's': return json_is_string(v);
    case 'b': return json_is_boolean(v);
    case 'i': return json_is_integer(v);
    case 'o': return json_is_object(v);
    case 'a': return json_is_array(v);
    default:  return true;
    }
}

static const char *
type_name(char type)
{
    switch (type) {
    case 's': return "string";
    case 'b': return "boolean";
    case 'i': return "integer";
    case 'o': return "object";
    case 'a': return "array";
    default:  return "any";
    }
}

/* QEMU's wording for argument errors. */
static int
check_args(const struct ng_qmp_command *cmd, json_t *args, char *why,
           size_t size)
{
    const struct ng_qmp_arg *a;
    const char *key;
    json_t *v;

    for (a = cmd->args; a != NULL && a->name != NULL; a++) {
        v = json_object_get(args, a->name);
        if (v == NULL && a->required) {
            snprintf(why, size, "Parameter '%s' is missing", a->name);
            return -1;
        }
        if (v != NULL && !arg_has_type(v, a->type)) {
            snprintf(why, size, "Invalid parameter type for '%s', "
                     "expected: %s", a->name, type_name(a->type));
            return -1;
        }
    }
    if (cmd->extra_args)
        return 0;
    json_object_foreach(args, key, v) {
        for (a = cmd->args; a != NULL && a->name != NULL; a++)
            if (strcmp(a->name, key) == 0)
                break;
        if (a == NULL || a->name == NULL) {
            snprintf(why, size, "Parameter '%s' is unexpected", key);
            return -1;
        }
    }
    return 0;
}

static int
check_envelope(json_t *msg, const char **name, json_t **args, char *why,
               size_t size)
{
    const char *key;
    json_t *v;

    json_object_foreach(msg, key, v) {
        if (strcmp(key, "execute") != 0 && strcmp(key, "arguments") != 0 &&
            strcmp(key, "id") != 0) {
            snprintf(why, size, "QMP input member '%s' is unexpected", key);
            return -1;
        }
    }
    v = json_object_get(msg, "execute");
    if (!json_is_string(v)) {
        snprintf(why, size, "QMP input lacks member 'execute'");
        return -1;
    }
    *name = json_string_value(v);
    *args = json_object_get(msg, "arguments");
    if (*args != NULL && !json_is_object(*args)) {
        snprintf(why, size, "QMP input member 'arguments' must be an object");
        return -1;
    }
    return 0;
}

static void
dispatch(struct ctl_client *c, const struct ng_qmp_command *cmd, json_t *id,
         json_t *args)
{
    struct ng_qmp_call *call = calloc(1, sizeof *call);

    if (call == NULL) {
        ctl_send_error(c, id, NG_QMP_GENERIC, "out of memory");
        return;
    }
    call->client = c;
    c->refs++;
    c->calls++;
    call->id = id != NULL ? json_incref(id) : NULL;
    call->may_change = strncmp(cmd->name, "query-", 6) != 0;
    cmd->handler(call, args);
}

static void
handle_message(struct ctl_client *c, json_t *msg)
{
    const struct ng_qmp_command *cmd;
    const char *name;
    json_t *args, *id = json_object_get(msg, "id");
    json_t *empty = NULL;
    char why[512];

    if (!json_is_object(msg)) {
        ctl_send_error(c, NULL, NG_QMP_GENERIC,
                       "QMP input must be a JSON object");
        return;
    }
    if (check_envelope(msg, &name, &args, why, sizeof why) == -1) {
        ctl_send_error(c, id, NG_QMP_GENERIC, why);
        return;
    }
    if (!c->negotiated && strcmp(name, "qmp_capabilities") != 0) {
        ctl_send_error(c, id, NG_QMP_NOT_FOUND, "Expecting capabilities "
                       "negotiation with 'qmp_capabilities'");
        return;
    }
    if (strcmp(name, "qmp_capabilities") == 0) {
        if (c->negotiated) {
            ctl_send_error(c, id, NG_QMP_NOT_FOUND, "Capabilities "
                           "negotiation is already complete, command "
                           "ignored");
            return;
        }
        c->negotiated = true;
        json_t *ok = json_pack("{s:{}}", "return");
        if (id != NULL)
            json_object_set(ok, "id", id);
        ctl_send(c, ok);
        return;
    }
    cmd = find_command(name);
    if (cmd == NULL) {
        snprintf(why, sizeof why, "The command %s has not been found", name);
        ctl_send_error(c, id, NG_QMP_NOT_FOUND, why);
        return;
    }
    if (args == NULL)
        args = empty = json_object();
    if (check_args(cmd, args, why, sizeof why) == -1)
        ctl_send_error(c, id, NG_QMP_GENERIC, why);
    else
        dispatch(c, cmd, id, args);
    json_decref(empty);
}

/* ---- Input framing ------------------------------------------------------ */

static void
handle_text(struct ctl_client *c, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *msg = json_loadb(text, len, 0, &jerr);
    char why[300];

    if (msg == NULL) {
        snprintf(why, sizeof why, "JSON parse error, %s", jerr.text);
        ctl_send_error(c, NULL, NG_QMP_GENERIC, why);
        return;
    }
    handle_message(c, msg);
    json_decref(msg);
}

static void
refuse_oversized(struct ctl_client *c)
{
    ctl_send_error(c, NULL, NG_QMP_GENERIC, "QMP message longer than "
                   CTL_MAX_MESSAGE_TEXT "; skipped");
}

/* Frame what is buffered: handle the next whole message and return true,
 * or return false when more input is needed.  A message over the limit
 * is refused as soon as it is (complete or not) and its bytes dropped as
 * they come, so it never sits in memory. */
static bool
frame_next(struct ctl_client *c)
{
    size_t used, msg_len = 0;
    bool end;

    if (c->scan == c->len)
        return false;
    used = ng_qmp_framer_feed(&c->framer, c->buf + c->scan, c->len - c->scan,
                              &end, &msg_len);
    c->scan += used;
    if (!end) {
        if (!c->skipping && c->framer.size > CTL_MAX_MESSAGE) {
            refuse_oversized(c);
            c->skipping = true;
        }
        if (c->skipping)
            c->len = c->scan = c->start;
        else
            c->start = c->scan - c->framer.size;    /* drop the blanks */
        return false;
    }
    if (c->skipping)
        c->skipping = false;    /* its tail: refused already */
    else if (msg_len > CTL_MAX_MESSAGE)
        refuse_oversized(c);
    else
        handle_text(c, c->buf + c->scan - msg_len, msg_len);
    c->start = c->scan;
    return true;
}

/* Back-pressure: whether to leave c's input alone for now.  Once stalled,
 * output must fall to half the bound, so a client that reads slowly is
 * not switched on and off for every reply. */
static bool
client_saturated(struct ctl_client *c)
{
    size_t bound = c->stalled ? CTL_MAX_OUTPUT / 2 : CTL_MAX_OUTPUT;

    return unsent_output(c) > bound || c->calls >= CTL_MAX_CALLS;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void
set_reading(struct ctl_client *c, bool on)
{
    if (on == c->reading || c->closed)
        return;
    if (on && uv_read_start((uv_stream_t *)&c->pipe, client_alloc,
                            client_read) != 0) {
        client_close(c);
        return;
    }
    if (!on)
        uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = on;
}

/* Handle buffered messages until input runs out or c is saturated; read
 * more only when it is not.  Each byte is framed once, so the cost is
 * linear in the input however it is split. */
static void
parse_input(struct ctl_client *c)
{
    if (c->parsing)
        return;                 /* a command answered inline: the loop
                                 * below goes on */
    c->parsing = true;
    while (!c->closed) {
        c->stalled = client_saturated(c);
        if (c->stalled || !frame_next(c))
            break;
    }
    c->parsing = false;
    set_reading(c, !c->stalled);
}

/* Room for the next read: move the framed message down when that frees
 * at least as much as it copies (so copying stays linear), else grow. */
static int
make_room(struct ctl_client *c)
{
    size_t keep = c->len - c->start, cap;
    char *p;

    if (keep == 0) {
        c->start = c->scan = c->len = 0;
        if (c->cap > CTL_KEEP_BUFFER) {
            free(c->buf);       /* after a large message */
            c->buf = NULL;
            c->cap = 0;
        }
    } else if (c->start > 0 && c->start >= keep) {
        memmove(c->buf, c->buf + c->start, keep);
        c->scan -= c->start;
        c->len = keep;
        c->start = 0;
    }
    if (c->cap - c->len >= 4096)
        return 0;
    cap = c->cap ? c->cap * 2 : 8192;
    if ((p = realloc(c->buf, cap)) == NULL)
        return -1;
    c->buf = p;
    c->cap = cap;
    return 0;
}

static void
client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ctl_client *c = h->data;

    (void)suggested;
    if (make_room(c) == -1) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void
client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct ctl_client *c = s->data;

    (void)buf;
    if (n < 0) {
        client_close(c);
        return;
    }
    c->len += (size_t)n;
    parse_input(c);
}

static void
send_greeting(struct ctl_client *c)
{
    json_t *g = json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}",
                          "QMP", "version", "qemu", "major", 0,
                          "minor", 1, "micro", 0,
                          "package", PACKAGE_STRING, "capabilities");

    ctl_send(c, g);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct ng_control *ctl = server->data;
    struct ctl_client *c;

    if (status != 0)
        return;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->ctl = ctl;
    c->refs = 1;
    uv_pipe_init(ctl->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = ctl->clients;
    ctl->clients = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        client_close(c);
        return;
    }
    set_reading(c, true);
    send_greeting(c);
}

/* ---- Events ------------------------------------------------------------ */

void
ng_control_emit(struct ng_control *ctl, const char *event, json_t *data)
{
    struct ctl_client *c;
    struct timeval tv;

    gettimeofday(&tv, NULL);
    for (c = ctl != NULL ? ctl->clients : NULL; c != NULL; c = c->next) {
        if (!c->negotiated)
            continue;
        if (unsent_output(c) > CTL_MAX_EVENT_BACKLOG) {
            ng_log_info("control client does not read its events: "
                        "disconnected");
            client_close(c);
            continue;
        }
        ctl_send(c, json_pack("{s:s,s:O,s:{s:I,s:I}}", "event", event,
                              "data", data ? data : json_object(),
                              "timestamp", "seconds", (json_int_t)tv.tv_sec,
                              "microseconds", (json_int_t)tv.tv_usec));
    }
    json_decref(data);
}

/* ---- Lifetime ----------------------------------------------------------- */

struct ng_control *
ng_control_new(uv_loop_t *loop, struct ng_control_ctx *ctx,
               struct ng_error *err)
{
    struct ng_control *ctl = calloc(1, sizeof *ctl);

    if (ctl == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    ctl->loop = loop;
    ctl->ctx = ctx;
    ctx->control = ctl;
    return ctl;
}

int
ng_control_listen(struct ng_control *ctl, const char *path,
                  struct ng_error *err)
{
    mode_t old;
    int r;

    if (ctl->listening)
        return ng_error_set(err, EBUSY, "control channel already listens");
    /* Only a stale socket is replaced: a live one is another daemon's
     * only way to be managed, and anything else is not ours to delete. */
    if (ng_unix_path_prepare(path, err) == -1)
        return -1;
    if ((ctl->path = strdup(path)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    uv_pipe_init(ctl->loop, &ctl->listener, 0);
    ctl->listener.data = ctl;
    ctl->listening = true;
    old = umask(0077);          /* owner only: the control socket is root
                                 * of all power over the graph */
    r = uv_pipe_bind(&ctl->listener, path);
    umask(old);
    if (r == 0) {
        ng_unix_path_remember(path, &ctl->file);
        r = uv_listen((uv_stream_t *)&ctl->listener, 16, on_connection);
    }
    if (r != 0)
        return ng_error_set(err, -r, "control socket %s: %s", path,
                            uv_strerror(r));
    chmod(path, 0600);
    ng_log_info("control channel on %s", path);
    return 0;
}

int
ng_control_share_with_group(struct ng_control *ctl, const char *group,
                            struct ng_error *err)
{
    struct group *gr;

    errno = 0;
    gr = getgrnam(group);
    if (gr == NULL)
        return ng_error_set(err, errno ? errno : ENOENT, "control-group "
                            "'%s': %s", group,
                            errno ? strerror(errno) : "no such group");
    /* chown first: a moment of 0660 with the old group would let that
     * group in. */
    if (chown(ctl->path, (uid_t)-1, gr->gr_gid) == -1 ||
        chmod(ctl->path, 0660) == -1)
        return ng_error_set(err, errno, "control socket %s: %s", ctl->path,
                            strerror(errno));
    ng_log_info("control channel %s open to group %s", ctl->path, group);
    return 0;
}

static void
listener_closed(uv_handle_t *h)
{
    struct ng_control *ctl = h->data;

    ctl->closing--;
    if (ctl->closing == 0 && ctl->shutdown_cb)
        ctl->shutdown_cb(ctl->shutdown_opaque);
}

void
ng_control_shutdown(struct ng_control *ctl, void (*cb)(void *opaque),
                    void *opaque)
{
    ctl->shutting_down = true;
    ctl->shutdown_cb = cb;
    ctl->shutdown_opaque = opaque;
    ctl->closing++;             /* held until every close below is issued */
    if (ctl->listening) {
        ctl->listening = false;
        ng_unix_path_unlink_own(ctl->path, &ctl->file);
        ctl->closing++;
        uv_close((uv_handle_t *)&ctl->listener, listener_closed);
    }
    while (ctl->clients != NULL)
        client_close(ctl->clients);
    if (--ctl->closing == 0 && cb != NULL)
        cb(opaque);
}

void
ng_control_free(struct ng_control *ctl)
{
    if (ctl == NULL)
        return;
    free(ctl->path);
    free(ctl);
}
