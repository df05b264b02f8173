/* graph/drv-nbd.c: "nbd", a remote NBD server as a leaf, through libnbd.
 *
 * Only libnbd's asynchronous API is used, on the graph's loop: the
 * handle's socket is watched by a uv_poll_t, nbd_aio_notify_read/write
 * drive libnbd's state machine and nbd_aio_get_direction says what to
 * watch for next, so many requests are in flight at once and nothing
 * blocks the loop.  A host name is resolved with uv_getaddrinfo (on
 * libuv's thread pool) and the address handed to nbd_aio_connect,
 * because nbd_aio_connect_tcp would resolve it on the loop.
 *
 * libnbd calls a command's completion callback with the handle's lock
 * held, so it must not call libnbd on the same handle; but completing
 * one of our requests may well submit the next one inline (the copy
 * engine does).  So the callbacks only note the result on a "done"
 * list, and nbd_kick() finishes those requests after each libnbd call
 * returns.  For the same reason the node's own open and close
 * completions (ng_node_opened/closed, after which the state may be
 * gone) are only ever called at the very end of nbd_kick().
 *
 * Reconnect (QEMU's semantics): when the connection dies, the requests
 * it aborted and the ones that arrive afterwards wait while a new handle
 * connects, for at most "reconnect-delay" seconds; they are issued again
 * on the new connection, or fail with EIO once the delay is over.  From
 * then on requests fail at once, and connecting goes on in the
 * background, one attempt a second, so the node works again as soon as
 * the remote is back.  A new connection must offer what the first one
 * did (size, capabilities): the graph above was told.
 *
 * Two connections when the server allows multi-conn: the main one asks
 * for structured replies (block status needs them) and the data one
 * does not, so a read's reply costs libnbd two recv calls, not four
 * (header, chunk header, offset, data).  Block status goes on the main
 * one, everything else on the data one once it is up.  Multi-conn is
 * the server's promise that both see the same disk and that a flush on
 * either covers writes done on both.  Losing either is losing the node's
 * connection: both are dropped, and reconnect makes both anew.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <libnbd.h>

#include "graph/graph.h"
#include "graph/drivers.h"
#include "graph/tls-client.h"

/* A connection attempt that neither succeeds nor fails in this long is
 * given up (a host that drops our packets); also what bounds the one
 * attempt of an open with open-timeout 0. */
#define NBD_ATTEMPT_MS      (10 * 1000)
/* Between two attempts. */
#define NBD_RETRY_MS        1000
/* Requests larger than this are split by the core, whatever the remote
 * allows (libnbd and most servers refuse more than 32 or 64 MiB). */
#define NBD_MAX_TRANSFER    (32u << 20)
#define NBD_ERR_MAX         256

enum nbd_server_type { NBD_SERVER_UNIX, NBD_SERVER_INET };

static const char *const nbd_server_types[] = { "unix", "inet", NULL };

enum nbd_phase {
    NBD_OPENING,            /* first connection, open not answered yet */
    NBD_CONNECTED,          /* requests go straight to the handle */
    NBD_RECONNECTING,       /* lost: requests wait (reconnect-delay) */
    NBD_DISCONNECTED,       /* lost for longer: requests fail with EIO */
};

/* What the remote offered, read once the handshake is done. */
struct nbd_remote {
    int64_t size;
    uint32_t caps;                  /* NG_CAP_* */
    uint32_t min_block, pref_block, max_block;
};

struct nbd_io;
struct nbd_state;

/* One connection to the server: a libnbd handle and its socket's
 * watch. */
struct nbd_link {
    struct nbd_state *s;
    struct nbd_handle *h;           /* or NULL */
    bool ready;                     /* h finished its handshake */
    uv_poll_t *poll;                /* h's socket; separately allocated,
                                     * freed by its close callback */
    int poll_events;
    bool counted;                   /* replies counted, not FIONREAD'ed */
    uint64_t replied;               /* counted: reply bytes libnbd read */
};

struct nbd_state {
    /* Options. */
    int server_type;                /* "server.type" */
    char *path;                     /* "server.path" */
    char *host;                     /* "server.host" */
    char *port;                     /* "server.port" */
    char *export;                   /* "export" */
    int64_t reconnect_delay;        /* "reconnect-delay", seconds */
    int64_t open_timeout;           /* "open-timeout", seconds */
    char *tls_creds;                /* "tls-creds": a client creds id */
    char *tls_hostname;             /* "tls-hostname": refused (libnbd) */
    struct ng_tls_client_creds *tls;    /* a copy of them, or NULL */

    struct ng_node *node;
    enum nbd_phase phase;
    struct nbd_link main;           /* the connection (see the top) */
    struct nbd_link data;           /* the data connection, if any */
    uv_timer_t *attempt_timer;      /* bounds an attempt, spaces retries */
    uv_timer_t *deadline_timer;     /* open-timeout, reconnect-delay */
    bool deadline_passed;
    uv_getaddrinfo_t *resolving;    /* in flight, or NULL */
    struct addrinfo *addrs;         /* what the host resolved to, owned */
    const struct addrinfo *addr_next;   /* to try when this one fails */
    struct nbd_remote remote;       /* from the first connection */
    char last_err[NBD_ERR_MAX];     /* why the last attempt failed */
    char where[NBD_ERR_MAX];        /* "unix:PATH" or "HOST:PORT" */

    struct nbd_io *done_head, *done_tail;   /* libnbd answered these */
    struct nbd_io *wait_head, *wait_tail;   /* to issue once connected */
    struct nbd_io *sent;            /* issued on h, not answered */

    bool kicking;                   /* nbd_kick() on the stack */
    bool kick_again;
    bool open_done;                 /* answer the open (nbd_kick's end) */
    int open_ret;
    struct ng_error *open_err;      /* borrowed until ng_node_opened */
    bool close_pending;             /* close_async came while kicking */
};

/* One request at this node (its ng_req_ctx()). */
struct nbd_io {
    struct nbd_state *s;
    struct ng_req *req;
    struct nbd_io *next;            /* done or wait list */
    struct nbd_io *sent_prev, *sent_next;
    bool is_sent;
    bool on_counted;                /* sent on a counted link */
    int err;                        /* from libnbd, positive errno */
    void *bounce;                   /* when the view is not flat */
};

static const struct ng_opt_desc nbd_opts[] = {
    NG_OPT_ENUM("server.type", struct nbd_state, server_type, NULL,
                nbd_server_types, "how to reach the server: unix or inet"),
    NG_OPT_STRING("server.path", struct nbd_state, path, "",
                  "unix: path of the server's socket"),
    NG_OPT_STRING("server.host", struct nbd_state, host, "",
                  "inet: host name or address of the server"),
    NG_OPT_STRING("server.port", struct nbd_state, port, "10809",
                  "inet: port (number or service name)"),
    NG_OPT_STRING("export", struct nbd_state, export, "",
                  "name of the export on the server"),
    NG_OPT_INT("reconnect-delay", struct nbd_state, reconnect_delay, "0",
               "seconds requests wait for a lost connection to come back "
               "before they fail with EIO"),
    NG_OPT_INT("open-timeout", struct nbd_state, open_timeout, "0",
               "seconds the first connection is retried for (0: one try)"),
    NG_OPT_STRING("tls-creds", struct nbd_state, tls_creds, "",
                  "id of TLS credentials with endpoint client: the "
                  "connection then requires TLS"),
    NG_OPT_STRING("tls-hostname", struct nbd_state, tls_hostname, "",
                  "name to check the server's certificate against (not "
                  "available with libnbd 1.14: refused)"),
    NG_OPT_END,
};

static void nbd_kick(struct nbd_state *s);
static void nbd_attempt(struct nbd_state *s);
static void nbd_attempt_failed(struct nbd_state *s);
static void nbd_connect_next(struct nbd_state *s);
static void nbd_data_start(struct nbd_state *s);
static void nbd_on_dead(struct nbd_state *s);

/* ---- Handles ------------------------------------------------------------ */

static void
nbd_free_handle(uv_handle_t *h)
{
    free(h);
}

static void
nbd_close_uv(uv_handle_t *h)
{
    if (h != NULL)
        uv_close(h, nbd_free_handle);
}

static void
nbd_note_error(struct nbd_state *s, const char *what)
{
    const char *msg = nbd_get_error();
    size_t n = strlen(what);

    /* what, then libnbd's message, both cut to fit. */
    if (n > sizeof s->last_err - 1)
        n = sizeof s->last_err - 1;
    memcpy(s->last_err, what, n);
    snprintf(s->last_err + n, sizeof s->last_err - n, ": %s",
             msg != NULL ? msg : "unknown error");
}

/* Queue an io to be issued once connected (in order). */
static void
nbd_wait_push(struct nbd_state *s, struct nbd_io *io)
{
    io->next = NULL;
    if (s->wait_tail != NULL)
        s->wait_tail->next = io;
    else
        s->wait_head = io;
    s->wait_tail = io;
}

static void
nbd_sent_remove(struct nbd_state *s, struct nbd_io *io)
{
    if (!io->is_sent)
        return;
    if (io->sent_prev != NULL)
        io->sent_prev->sent_next = io->sent_next;
    else
        s->sent = io->sent_next;
    if (io->sent_next != NULL)
        io->sent_next->sent_prev = io->sent_prev;
    io->is_sent = false;
}

static void
nbd_free_addrs(struct nbd_state *s)
{
    if (s->addrs != NULL)
        uv_freeaddrinfo(s->addrs);
    s->addrs = NULL;
    s->addr_next = NULL;
}

/* Drop one connection: stop watching its socket first (nbd_close
 * closes it). */
static void
nbd_link_drop(struct nbd_link *l)
{
    if (l->poll != NULL) {
        uv_poll_stop(l->poll);
        nbd_close_uv((uv_handle_t *)l->poll);
        l->poll = NULL;
        l->poll_events = 0;
    }
    if (l->h != NULL) {
        nbd_close(l->h);
        l->h = NULL;
    }
    l->ready = false;
    l->counted = false;
}

/* Drop the connections.  Requests they never answered wait for the
 * next ones. */
static void
nbd_drop_handle(struct nbd_state *s)
{
    nbd_link_drop(&s->main);
    nbd_link_drop(&s->data);
    while (s->sent != NULL) {
        struct nbd_io *io = s->sent;

        nbd_sent_remove(s, io);
        nbd_wait_push(s, io);
    }
}

/* ---- Requests ----------------------------------------------------------- */

static int
nbd_io_done_cb(void *opaque, int *error)
{
    struct nbd_io *io = opaque;
    struct nbd_state *s = io->s;

    io->err = *error;
    /* A simple reply is its 16-byte header, then a read's data unless
     * it failed (nbd_read_replies() counts on it). */
    if (io->on_counted)
        s->data.replied += 16 + (io->req->op == NG_OP_READ && *error == 0
                                 ? io->req->length : 0);
    nbd_sent_remove(s, io);
    io->next = NULL;
    if (s->done_tail != NULL)
        s->done_tail->next = io;
    else
        s->done_head = io;
    s->done_tail = io;
    return 1;                       /* retire the command */
}

static int
nbd_io_extents_cb(void *opaque, const char *context, uint64_t offset,
                  uint32_t *entries, size_t n, int *error)
{
    struct nbd_io *io = opaque;
    struct ng_req *req = io->req;
    uint64_t covered = 0;

    (void)offset;
    (void)error;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        return 0;
    req->nr_extents = 0;
    for (size_t i = 0; i + 1 < n && req->nr_extents < req->max_extents;
         i += 2) {
        uint64_t len = entries[i];

        if (len == 0)
            break;
        if (len > req->length - covered)
            len = req->length - covered;
        req->extents[req->nr_extents].length = len;
        req->extents[req->nr_extents].flags =
            entries[i + 1] & (NG_EXTENT_HOLE | NG_EXTENT_ZERO);
        req->nr_extents++;
        covered += len;
        if (covered == req->length)
            break;
    }
    return 0;
}

static uint32_t
nbd_cmd_flags(const struct ng_req *req)
{
    uint32_t f = 0;

    if (req->flags & NG_REQ_FUA)
        f |= LIBNBD_CMD_FLAG_FUA;
    if (req->op == NG_OP_WRITE_ZEROES) {
        if (!(req->flags & NG_REQ_MAY_TRIM))
            f |= LIBNBD_CMD_FLAG_NO_HOLE;
        if (req->flags & NG_REQ_FAST_ZERO)
            f |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    if (req->op == NG_OP_BLOCK_STATUS && (req->flags & NG_REQ_REQ_ONE))
        f |= LIBNBD_CMD_FLAG_REQ_ONE;
    return f;
}

/* The request's data as one buffer: the view's own when it is flat,
 * else a bounce buffer (copied in for a write).  NULL on ENOMEM. */
static void *
nbd_io_buf(struct nbd_io *io)
{
    struct ng_req *req = io->req;
    void *p = ng_iov_flat(&req->iov, req->length);

    if (p != NULL)
        return p;
    if (io->bounce == NULL) {
        io->bounce = malloc(req->length);
        if (io->bounce == NULL)
            return NULL;
        if (req->op == NG_OP_WRITE)
            ng_iov_to_buf(&req->iov, 0, io->bounce, req->length);
    }
    return io->bounce;
}

/* Which connection a request goes on: block status needs the main
 * one's structured replies; everything else takes the data connection
 * once it is up. */
static struct nbd_link *
nbd_io_link(struct nbd_state *s, const struct nbd_io *io)
{
    if (io->req->op != NG_OP_BLOCK_STATUS && s->data.ready)
        return &s->data;
    return &s->main;
}

/* Hand the request to libnbd on handle h (its buffer is ready:
 * nbd_io_buf()); returns its cookie, or -1 with libnbd's error. */
static int64_t
nbd_io_send(struct nbd_handle *h, struct nbd_io *io)
{
    struct ng_req *req = io->req;
    nbd_completion_callback cb = { .callback = nbd_io_done_cb,
                                   .user_data = io };
    uint32_t f = nbd_cmd_flags(req);
    void *buf;

    switch (req->op) {
    case NG_OP_READ:
    case NG_OP_WRITE:
        buf = nbd_io_buf(io);
        if (req->op == NG_OP_READ)
            return nbd_aio_pread(h, buf, req->length, req->offset, cb, f);
        return nbd_aio_pwrite(h, buf, req->length, req->offset, cb, f);
    case NG_OP_FLUSH:
        return nbd_aio_flush(h, cb, 0);
    case NG_OP_TRIM:
        return nbd_aio_trim(h, req->length, req->offset, cb, f);
    case NG_OP_WRITE_ZEROES:
        return nbd_aio_zero(h, req->length, req->offset, cb, f);
    case NG_OP_CACHE:
        return nbd_aio_cache(h, req->length, req->offset, cb, 0);
    case NG_OP_BLOCK_STATUS:
        req->nr_extents = 0;
        return nbd_aio_block_status(
            h, req->length, req->offset,
            (nbd_extent_callback){ .callback = nbd_io_extents_cb,
                                   .user_data = io },
            cb, f);
    default:                        /* not in our ops: never here */
        return -1;
    }
}

static void
nbd_io_complete(struct nbd_io *io, int ret)
{
    struct ng_req *req = io->req;

    if (ret == 0 && req->op == NG_OP_READ && io->bounce != NULL)
        ng_iov_from_buf(&req->iov, 0, io->bounce, req->length);
    if (ret == 0 && req->op == NG_OP_BLOCK_STATUS && req->nr_extents == 0)
        ret = -EIO;                 /* the server described nothing */
    free(io->bounce);
    io->bounce = NULL;
    ng_req_complete(req, ret);
}

/* Issue on the live connection; a connection found dead keeps the
 * request for the next one. */
static void
nbd_io_issue(struct nbd_state *s, struct nbd_io *io)
{
    struct nbd_link *l = nbd_io_link(s, io);
    struct nbd_handle *h = l->h;
    int err;

    if ((io->req->op == NG_OP_READ || io->req->op == NG_OP_WRITE) &&
        nbd_io_buf(io) == NULL) {
        nbd_io_complete(io, -ENOMEM);
        return;
    }
    io->on_counted = l->counted;
    if (nbd_io_send(h, io) >= 0) {
        /* Unless it was answered (aborted) already. */
        if (io->err == 0 && !io->is_sent && io->next == NULL &&
            s->done_tail != io) {
            io->is_sent = true;
            io->sent_prev = NULL;
            io->sent_next = s->sent;
            if (s->sent != NULL)
                s->sent->sent_prev = io;
            s->sent = io;
        }
        return;
    }
    err = nbd_get_errno();
    if (err == 0)
        err = EIO;
    if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
        nbd_wait_push(s, io);       /* nbd_kick() notices the death */
        return;
    }
    nbd_io_complete(io, -err);
}

/* A request libnbd answered: done, or failed by the server, or aborted
 * by a connection that died (then it waits for the next one). */
static void
nbd_io_finish(struct nbd_state *s, struct nbd_io *io)
{
    int err = io->err;

    io->err = 0;
    if (err == 0) {
        nbd_io_complete(io, 0);
        return;
    }
    if (s->phase == NBD_RECONNECTING) {
        nbd_wait_push(s, io);
        return;
    }
    nbd_io_complete(io, s->phase == NBD_DISCONNECTED ? -EIO : -err);
}

static void
nbd_submit(struct ng_node *node, struct ng_req *req)
{
    struct nbd_state *s = ng_node_state(node);
    struct nbd_io *io = ng_req_ctx(node, req);

    if (io == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    io->s = s;
    io->req = req;
    switch (s->phase) {
    case NBD_CONNECTED:
        nbd_io_issue(s, io);
        nbd_kick(s);
        break;
    case NBD_RECONNECTING:
        nbd_wait_push(s, io);
        break;
    default:
        ng_req_complete(req, -EIO);
        break;
    }
}

/* Fail every waiting request (reconnect-delay is over). */
static void
nbd_fail_waiting(struct nbd_state *s)
{
    struct nbd_io *io;

    while ((io = s->wait_head) != NULL) {
        s->wait_head = io->next;
        if (s->wait_head == NULL)
            s->wait_tail = NULL;
        io->next = NULL;
        nbd_io_complete(io, -EIO);
    }
}

/* Issue every waiting request on the new connection, in order.  Those
 * that arrive meanwhile go straight to the handle (phase is CONNECTED);
 * the list is taken whole first so a death on the way re-queues them
 * behind the rest. */
static void
nbd_issue_waiting(struct nbd_state *s)
{
    struct nbd_io *io = s->wait_head;

    s->wait_head = s->wait_tail = NULL;
    while (io != NULL) {
        struct nbd_io *next = io->next;

        io->next = NULL;
        if (s->main.ready)
            nbd_io_issue(s, io);
        else
            nbd_wait_push(s, io);
        io = next;
    }
}

/* ---- Connecting --------------------------------------------------------- */

static int
nbd_remote_read(struct nbd_state *s, struct nbd_remote *r)
{
    struct nbd_handle *h = s->main.h;
    int64_t v;

    memset(r, 0, sizeof *r);
    if ((r->size = nbd_get_size(h)) < 0) {
        nbd_note_error(s, "cannot read the export's size");
        return -1;
    }
    if (nbd_is_read_only(h) == 0)
        r->caps |= NG_CAP_WRITE;
    if (nbd_can_flush(h) == 1)
        r->caps |= NG_CAP_FLUSH;
    if (nbd_can_fua(h) == 1)
        r->caps |= NG_CAP_FUA;
    if (nbd_can_trim(h) == 1)
        r->caps |= NG_CAP_TRIM;
    if (nbd_can_zero(h) == 1)
        r->caps |= NG_CAP_ZERO;
    if (nbd_can_fast_zero(h) == 1)
        r->caps |= NG_CAP_FAST_ZERO;
    if (nbd_can_cache(h) == 1)
        r->caps |= NG_CAP_CACHE;
    if (nbd_can_multi_conn(h) == 1)
        r->caps |= NG_CAP_MULTI_CONN;
    if (nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
        r->caps |= NG_CAP_EXTENTS;
    if ((v = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM)) > 0)
        r->min_block = (uint32_t)v;
    if ((v = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED)) > 0)
        r->pref_block = (uint32_t)v;
    if ((v = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM)) > 0)
        r->max_block = (uint32_t)(v < UINT32_MAX ? v : UINT32_MAX);
    return 0;
}

/* A new connection after a loss must offer what the first did. */
static int
nbd_remote_same(struct nbd_state *s, const struct nbd_remote *r)
{
    uint32_t lost = s->remote.caps & ~r->caps;

    if (r->size != s->remote.size) {
        snprintf(s->last_err, sizeof s->last_err, "the export's size "
                 "changed from %" PRId64 " to %" PRId64 " bytes",
                 s->remote.size, r->size);
        return -1;
    }
    if (lost != 0) {
        snprintf(s->last_err, sizeof s->last_err, "the export no longer "
                 "offers %s", ng_cap_name(lost & -lost));
        return -1;
    }
    return 0;
}

static void
nbd_stop_deadline(struct nbd_state *s)
{
    uv_timer_stop(s->deadline_timer);
    s->deadline_passed = false;
}

/* The handshake is done. */
static void
nbd_on_ready(struct nbd_state *s)
{
    struct nbd_remote r;

    uv_timer_stop(s->attempt_timer);
    nbd_free_addrs(s);
    if (nbd_remote_read(s, &r) == -1)
        goto bad;
    if (s->phase == NBD_OPENING) {
        if (!(r.caps & NG_CAP_WRITE) && !s->node->read_only) {
            snprintf(s->last_err, sizeof s->last_err, "the export is "
                     "read-only (give read-only: true)");
            goto bad;
        }
        s->remote = r;
        s->main.ready = true;
        s->phase = NBD_CONNECTED;
        /* From now on our handles serve requests that clients' handles
         * keep the loop alive for: they must not hold up the daemon's
         * shutdown, which waits for the loop to run out. */
        uv_unref((uv_handle_t *)s->main.poll);
        uv_unref((uv_handle_t *)s->attempt_timer);
        uv_unref((uv_handle_t *)s->deadline_timer);
        s->last_err[0] = '\0';
        nbd_stop_deadline(s);
        s->open_done = true;
        s->open_ret = 0;
        nbd_data_start(s);
        return;
    }
    if (nbd_remote_same(s, &r) == -1) {
        ng_node_warn(s->node, "reconnected, but %s: dropping it",
                     s->last_err);
        goto bad;
    }
    ng_node_warn(s->node, "connection to the server is back");
    s->last_err[0] = '\0';
    s->main.ready = true;
    s->phase = NBD_CONNECTED;
    nbd_stop_deadline(s);
    nbd_issue_waiting(s);
    nbd_data_start(s);
    return;
bad:
    /* Not a usable server: drop it like a failed attempt. */
    nbd_aio_disconnect(s->main.h, 0);
    nbd_drop_handle(s);
    nbd_attempt_failed(s);
}

static void
nbd_attempt_timer_cb(uv_timer_t *t)
{
    struct nbd_state *s = t->data;

    if (s->main.h != NULL || s->resolving != NULL) {
        /* Taking too long: give it up. */
        snprintf(s->last_err, sizeof s->last_err, "no answer from the "
                 "server within %d s", NBD_ATTEMPT_MS / 1000);
        if (s->resolving != NULL) {
            s->resolving->data = NULL;      /* its callback only frees */
            s->resolving = NULL;
        }
        nbd_drop_handle(s);
        nbd_attempt_failed(s);
    } else {
        nbd_attempt(s);
    }
    nbd_kick(s);
}

/* An attempt failed: try the host's next address, else try again
 * later, or give up the open. */
static void
nbd_attempt_failed(struct nbd_state *s)
{
    if (s->addr_next != NULL) {
        nbd_connect_next(s);
        return;
    }
    nbd_free_addrs(s);
    if (s->phase == NBD_OPENING &&
        (s->open_timeout <= 0 || s->deadline_passed)) {
        s->open_done = true;
        s->open_ret = -1;
        return;
    }
    uv_timer_start(s->attempt_timer, nbd_attempt_timer_cb, NBD_RETRY_MS, 0);
}

/* Bytes waiting on the handle's socket (0 when unknown). */
static int
nbd_pending_bytes(struct nbd_handle *h)
{
    int n = 0;

    if (ioctl(nbd_aio_get_fd(h), FIONREAD, &n) == -1)
        return 0;
    return n;
}

/* One notify_read reads at most one reply.  Read on while the socket
 * holds more: all the replies that arrived since the wake-up are then
 * answered in this loop iteration, which lets the server send them to
 * the client in one writev, and saves an epoll_wait each.  Never call
 * notify_read on an empty socket: libnbd 1.14 then stays in a reply
 * state and queues new commands without sending them until the socket
 * turns readable, which it never would with nothing in flight.  With
 * nothing in flight no reply can be waiting: no need to ask.
 *
 * How much is waiting: FIONREAD after each reply; on a counted link
 * (simple replies, whose sizes nbd_io_done_cb() knows, in clear text:
 * TLS adds bytes FIONREAD sees), FIONREAD once and then what each
 * reply took off it.  A reply read only in part completes
 * nothing: stop there (the socket is drained, or it stays readable).
 * Counting a reply begun before the FIONREAD whole only stops early. */
static int
nbd_read_replies(struct nbd_link *l)
{
    struct nbd_handle *h = l->h;
    int64_t left = -1;              /* bytes known to wait; -1 unknown */
    uint64_t before;

    do {
        before = l->replied;
        if (nbd_aio_notify_read(h) == -1)
            return -1;
        if (!l->counted || left < 0)
            left = nbd_pending_bytes(h);
        else if (l->replied == before)
            break;
        else
            left -= (int64_t)(l->replied - before);
    } while (nbd_aio_in_flight(h) > 0 &&
             (nbd_aio_get_direction(h) & LIBNBD_AIO_DIRECTION_READ) &&
             left > 0);
    return 0;
}

static void
nbd_poll_cb(uv_poll_t *p, int status, int events)
{
    struct nbd_link *l = p->data;
    struct nbd_state *s = l->s;
    struct nbd_handle *h = l->h;
    int r = 0;

    /* Only what libnbd waits for: it refuses a notification its state
     * does not expect (a read while connecting).  An error on the socket
     * (status < 0) goes to whichever it waits for, to find it. */
    if ((status < 0 || (events & UV_READABLE)) &&
        (nbd_aio_get_direction(h) & LIBNBD_AIO_DIRECTION_READ))
        r = nbd_read_replies(l);
    if (r == 0 && (status < 0 || (events & UV_WRITABLE)) &&
        (nbd_aio_get_direction(h) & LIBNBD_AIO_DIRECTION_WRITE))
        r = nbd_aio_notify_write(h);
    if (r == -1) {
        char what[NBD_ERR_MAX + 32];

        snprintf(what, sizeof what, "cannot talk to %s", s->where);
        nbd_note_error(s, what);
    }
    nbd_kick(s);
}

/* With tls-creds, TLS is required and libnbd reads the files named
 * (it does so at each connection: a renewed certificate is used at the
 * next reconnect). */
static int
nbd_set_tls_creds(struct nbd_state *s, struct nbd_handle *h)
{
    const struct ng_tls_client_creds *c = s->tls;
    char psk[PATH_MAX];

    if (c == NULL)
        return 0;
    if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) == -1)
        return -1;
    if (!c->psk)
        return nbd_set_tls_certificates(h, c->dir) == -1 ||
               nbd_set_tls_verify_peer(h, c->verify_peer) == -1 ? -1 : 0;
    /* Cannot be cut: ng_tls_client_creds_declare() checked the path. */
    snprintf(psk, sizeof psk, "%s/keys.psk", c->dir);
    return nbd_set_tls_psk_file(h, psk) == -1 ||
           nbd_set_tls_username(h, c->username) == -1 ? -1 : 0;
}

static struct nbd_handle *
nbd_new_handle(struct nbd_state *s)
{
    struct nbd_handle *h = nbd_create();

    if (h == NULL) {
        nbd_note_error(s, "cannot create a libnbd handle");
        return NULL;
    }
    /* Reads land in the request's own buffer, which the core never
     * shows anyone before the read succeeded: libnbd's memset of it
     * first is wasted. */
    if (nbd_set_export_name(h, s->export) == -1 ||
        nbd_set_pread_initialize(h, false) == -1 ||
        nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
        nbd_set_tls_creds(s, h) == -1) {
        nbd_note_error(s, "cannot set up the libnbd handle");
        nbd_close(h);
        return NULL;
    }
    return h;
}

/* Watch the socket of a connection's new handle. */
static int
nbd_watch(struct nbd_state *s, struct nbd_link *l)
{
    int fd = nbd_aio_get_fd(l->h);

    if (fd < 0) {
        nbd_note_error(s, "no socket");
        return -1;
    }
    l->s = s;
    l->poll = malloc(sizeof *l->poll);
    if (l->poll == NULL ||
        uv_poll_init(ng_node_loop(s->node), l->poll, fd) != 0) {
        free(l->poll);
        l->poll = NULL;
        snprintf(s->last_err, sizeof s->last_err, "cannot watch the "
                 "server's socket");
        return -1;
    }
    l->poll->data = l;
    l->poll_events = 0;
    if (s->phase != NBD_OPENING)
        uv_unref((uv_handle_t *)l->poll);
    return 0;
}

static void
nbd_connect_done(struct nbd_state *s, int r)
{
    char what[NBD_ERR_MAX + 32];

    if (r == -1) {
        snprintf(what, sizeof what, "cannot connect to %s", s->where);
        nbd_note_error(s, what);
        nbd_drop_handle(s);
    } else if (nbd_watch(s, &s->main) == -1) {
        nbd_drop_handle(s);
    }
    if (s->main.h == NULL)
        nbd_attempt_failed(s);
}

static void
nbd_resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    struct nbd_state *s = req->data;

    free(req);
    if (s == NULL) {                /* given up meanwhile */
        uv_freeaddrinfo(ai);
        return;
    }
    s->resolving = NULL;
    if (status != 0 || ai == NULL) {
        snprintf(s->last_err, sizeof s->last_err, "cannot resolve "
                 "'%s': %s", s->host, uv_strerror(status));
        s->last_err[sizeof s->last_err - 1] = '\0';
        nbd_drop_handle(s);
        nbd_attempt_failed(s);
        uv_freeaddrinfo(ai);
    } else {
        s->addrs = ai;
        s->addr_next = ai;
        nbd_connect_next(s);
    }
    nbd_kick(s);
}

/* Connect to the next address the host resolved to, on a new handle
 * unless this is the first (nbd_attempt made one).  Each address gets
 * NBD_ATTEMPT_MS. */
static void
nbd_connect_next(struct nbd_state *s)
{
    const struct addrinfo *a = s->addr_next;

    s->addr_next = a->ai_next;
    if (s->main.h == NULL && (s->main.h = nbd_new_handle(s)) == NULL) {
        nbd_attempt_failed(s);
        return;
    }
    uv_timer_start(s->attempt_timer, nbd_attempt_timer_cb, NBD_ATTEMPT_MS,
                   0);
    nbd_connect_done(s, nbd_aio_connect(s->main.h, a->ai_addr, a->ai_addrlen));
}

/* libnbd 1.14 checks a server's certificate only against a host name
 * it resolved itself (nbd_aio_connect_tcp): never on a Unix socket, nor
 * for an address we hand it.  So with x509 credentials that verify the
 * peer, libnbd resolves server.host, on the loop: the price of a check
 * that happens at all. */
static bool
nbd_tls_checks_name(const struct nbd_state *s)
{
    return s->tls != NULL && !s->tls->psk && s->tls->verify_peer;
}

/* Start one connection attempt (a new handle). */
static void
nbd_attempt(struct nbd_state *s)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM };

    if ((s->main.h = nbd_new_handle(s)) == NULL) {
        nbd_attempt_failed(s);
        return;
    }
    uv_timer_start(s->attempt_timer, nbd_attempt_timer_cb, NBD_ATTEMPT_MS,
                   0);
    if (s->server_type == NBD_SERVER_UNIX) {
        nbd_connect_done(s, nbd_aio_connect_unix(s->main.h, s->path));
        return;
    }
    if (nbd_tls_checks_name(s)) {
        nbd_connect_done(s, nbd_aio_connect_tcp(s->main.h, s->host, s->port));
        return;
    }
    s->resolving = malloc(sizeof *s->resolving);
    if (s->resolving == NULL) {
        snprintf(s->last_err, sizeof s->last_err, "out of memory");
        nbd_drop_handle(s);
        nbd_attempt_failed(s);
        return;
    }
    s->resolving->data = s;
    if (uv_getaddrinfo(ng_node_loop(s->node), s->resolving, nbd_resolved_cb,
                       s->host, s->port, &hints) != 0) {
        free(s->resolving);
        s->resolving = NULL;
        snprintf(s->last_err, sizeof s->last_err, "cannot resolve '%s'",
                 s->host);
        nbd_drop_handle(s);
        nbd_attempt_failed(s);
    }
}

/* The data connection (see the top): a second handle that asks for
 * no structured replies, so that libnbd reads a reply in one header and
 * its data (two recv calls, not four).  Only when the server promises
 * that all connections see one disk (multi-conn) and the main one
 * negotiated structured replies (else it reads simple ones already).
 * Called once the main one is up; requests use the main one until this
 * one is, and a server that refuses it leaves them there. */
static void
nbd_data_start(struct nbd_state *s)
{
    struct nbd_link *l = &s->data;
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int r;

    if (!(s->remote.caps & NG_CAP_MULTI_CONN) ||
        nbd_get_structured_replies_negotiated(s->main.h) != 1)
        return;
    if ((l->h = nbd_new_handle(s)) == NULL)
        goto fail;
    if (nbd_set_request_structured_replies(l->h, false) == -1)
        goto fail;
    l->counted = s->tls == NULL;
    if (s->server_type == NBD_SERVER_UNIX)
        r = nbd_aio_connect_unix(l->h, s->path);
    else if (nbd_tls_checks_name(s))
        r = nbd_aio_connect_tcp(l->h, s->host, s->port);
    else if (getpeername(nbd_aio_get_fd(s->main.h),
                         (struct sockaddr *)&peer, &len) == 0)
        r = nbd_aio_connect(l->h, (struct sockaddr *)&peer, len);
    else
        r = -1;
    if (r == -1 || nbd_watch(s, l) == -1)
        goto fail;
    return;
fail:
    ng_node_warn(s->node, "no second connection to %s; all requests go "
                 "on one", s->where);
    nbd_link_drop(l);
    s->last_err[0] = '\0';         /* the main connection is fine */
}

/* After each libnbd call: is the data connection up, or gone?  Once it
 * served requests, its loss is the node's (every request is retried on
 * new connections); before, only a warning. */
static void
nbd_data_check(struct nbd_state *s)
{
    struct nbd_link *l = &s->data;

    if (l->h == NULL)
        return;
    if (nbd_aio_is_dead(l->h) || nbd_aio_is_closed(l->h)) {
        if (l->ready) {
            nbd_on_dead(s);
            return;
        }
        ng_node_warn(s->node, "the server dropped the second connection; "
                     "all requests go on one");
        nbd_link_drop(l);
        return;
    }
    if (l->ready || !nbd_aio_is_ready(l->h))
        return;
    /* The same export, or nothing: a server behind a balancer might
     * hand out another. */
    if (nbd_get_size(l->h) != s->remote.size ||
        (nbd_is_read_only(l->h) != 0 && (s->remote.caps & NG_CAP_WRITE)) ||
        nbd_get_structured_replies_negotiated(l->h) != 0) {
        ng_node_warn(s->node, "the second connection offers another "
                     "export; all requests go on one");
        nbd_aio_disconnect(l->h, 0);
        nbd_link_drop(l);
        return;
    }
    l->ready = true;
}

/* Give up the open's attempt under way, or the retry ahead: it fails
 * with last_err at nbd_kick's end. */
static void
nbd_give_up_open(struct nbd_state *s)
{
    uv_timer_stop(s->attempt_timer);
    uv_timer_stop(s->deadline_timer);
    if (s->resolving != NULL) {
        /* Its callback only frees; uv_cancel spares the loop's exit a
         * lookup that has not started yet. */
        uv_cancel((uv_req_t *)s->resolving);
        s->resolving->data = NULL;
        s->resolving = NULL;
    }
    nbd_drop_handle(s);
    s->open_done = true;
    s->open_ret = -1;
}

static void
nbd_deadline_cb(uv_timer_t *t)
{
    struct nbd_state *s = t->data;

    s->deadline_passed = true;
    if (s->phase == NBD_RECONNECTING) {
        ng_node_warn(s->node, "server still unreachable after %" PRId64
                     " s (%s): failing requests until it is back",
                     s->reconnect_delay, s->last_err);
        s->phase = NBD_DISCONNECTED;
        nbd_fail_waiting(s);
    } else if (s->phase == NBD_OPENING) {
        if (s->main.h != NULL)
            snprintf(s->last_err, sizeof s->last_err, "no connection "
                     "within open-timeout %" PRId64 " s", s->open_timeout);
        nbd_give_up_open(s);
    }
    nbd_kick(s);
}

/* The connection died: requests wait for the next one, at most
 * reconnect-delay seconds. */
static void
nbd_on_dead(struct nbd_state *s)
{
    bool was_open = s->phase == NBD_CONNECTED;

    nbd_drop_handle(s);
    if (!was_open) {
        nbd_attempt_failed(s);
        return;
    }
    ng_node_warn(s->node, "lost the connection to the server (%s)",
                 s->last_err[0] ? s->last_err : "closed");
    s->phase = NBD_RECONNECTING;
    if (s->reconnect_delay > 0)
        uv_timer_start(s->deadline_timer, nbd_deadline_cb,
                       (uint64_t)s->reconnect_delay * 1000, 0);
    else
        nbd_deadline_cb(s->deadline_timer); /* re-enters nbd_kick: fine */
    nbd_attempt(s);
}

/* A connection's poll handle watches what libnbd waits for. */
static void
nbd_update_poll(struct nbd_link *l)
{
    unsigned dir;
    int want = 0;

    if (l->h == NULL || l->poll == NULL)
        return;
    dir = nbd_aio_get_direction(l->h);
    if (dir & LIBNBD_AIO_DIRECTION_READ)
        want |= UV_READABLE;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        want |= UV_WRITABLE;
    if (want == l->poll_events)
        return;
    l->poll_events = want;
    if (want == 0)
        uv_poll_stop(l->poll);
    else
        uv_poll_start(l->poll, want, nbd_poll_cb);
}

static void nbd_teardown(struct nbd_state *s);

/* After every libnbd call: notice a finished handshake or a dead
 * connection, finish what libnbd answered, watch the socket for what
 * comes next; then, last, answer the node's open or close. */
static void
nbd_kick(struct nbd_state *s)
{
    struct ng_node *node = s->node;
    struct ng_error *err;
    int ret;

    if (s->kicking) {
        s->kick_again = true;
        return;
    }
    s->kicking = true;
    do {
        s->kick_again = false;
        if (s->main.h != NULL && !s->main.ready && nbd_aio_is_ready(s->main.h))
            nbd_on_ready(s);
        if (s->main.h != NULL &&
            (nbd_aio_is_dead(s->main.h) || nbd_aio_is_closed(s->main.h)))
            nbd_on_dead(s);
        nbd_data_check(s);
        while (s->done_head != NULL) {
            struct nbd_io *io = s->done_head;

            s->done_head = io->next;
            if (s->done_head == NULL)
                s->done_tail = NULL;
            io->next = NULL;
            nbd_io_finish(s, io);
        }
        if (s->phase == NBD_CONNECTED && s->main.ready && s->wait_head)
            nbd_issue_waiting(s);
        nbd_update_poll(&s->main);
        nbd_update_poll(&s->data);
    } while (s->kick_again || s->done_head != NULL);
    s->kicking = false;

    if (s->open_done) {
        s->open_done = false;
        ret = s->open_ret;
        err = s->open_err;
        if (ret == -1) {
            ng_error_set(err, ECONNREFUSED, "%s", s->last_err);
            nbd_teardown(s);
        }
        ng_node_opened(node, ret);  /* s may be gone now */
        return;
    }
    if (s->close_pending) {
        s->close_pending = false;
        nbd_teardown(s);
        ng_node_closed(node);       /* s is gone now */
    }
}

/* ---- Open and close ----------------------------------------------------- */

/* A copy of the tls-creds the node names: the object may be replaced
 * or go while the node lives. */
static int
nbd_copy_tls_creds(struct nbd_state *s, struct ng_error *err)
{
    const struct ng_tls_client_creds *c;

    if (s->tls_hostname[0] != '\0')
        return ng_error_set(err, ENOTSUP, "tls-hostname is not "
                            "supported: this libnbd cannot check the "
                            "server's certificate against a name on a "
                            "connection it did not resolve itself");
    if (s->tls_creds[0] == '\0')
        return 0;
    c = ng_tls_client_creds_find(s->node->graph, s->tls_creds);
    if (c == NULL)
        return ng_error_set(err, ENOENT, "tls-creds '%s': no such client "
                            "credentials (declare them under tls-creds: "
                            "with endpoint: client)", s->tls_creds);
    s->tls = calloc(1, sizeof *s->tls);
    if (s->tls == NULL || (s->tls->dir = strdup(c->dir)) == NULL ||
        (s->tls->username = strdup(c->username)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    s->tls->psk = c->psk;
    s->tls->verify_peer = c->verify_peer;
    if (nbd_tls_checks_name(s) && s->server_type == NBD_SERVER_UNIX)
        return ng_error_set(err, ENOTSUP, "tls-creds '%s': libnbd cannot "
                            "check the server's certificate on a Unix "
                            "socket; give the credentials verify-peer: "
                            "false (encryption only) or use PSK",
                            s->tls_creds);
    return 0;
}

static int
nbd_check_opts(struct nbd_state *s, struct ng_error *err)
{
    if (nbd_copy_tls_creds(s, err) == -1)
        return -1;
    if (s->server_type == NBD_SERVER_UNIX) {
        if (s->path[0] == '\0')
            return ng_error_set(err, EINVAL, "server.type unix needs "
                                "server.path");
        if (s->host[0] != '\0')
            return ng_error_set(err, EINVAL, "server.host is for "
                                "server.type inet, not unix");
    } else {
        if (s->host[0] == '\0')
            return ng_error_set(err, EINVAL, "server.type inet needs "
                                "server.host");
        if (s->path[0] != '\0')
            return ng_error_set(err, EINVAL, "server.path is for "
                                "server.type unix, not inet");
    }
    if (s->reconnect_delay < 0 || s->reconnect_delay > 3600)
        return ng_error_set(err, EINVAL, "reconnect-delay must be 0 to "
                            "3600 seconds");
    if (s->open_timeout < 0 || s->open_timeout > 3600)
        return ng_error_set(err, EINVAL, "open-timeout must be 0 to 3600 "
                            "seconds");
    return 0;
}

static uv_timer_t *
nbd_new_timer(struct nbd_state *s)
{
    uv_timer_t *t = malloc(sizeof *t);

    if (t == NULL)
        return NULL;
    uv_timer_init(ng_node_loop(s->node), t);    /* cannot fail */
    t->data = s;
    return t;
}

/* Free everything but the state itself. */
static void
nbd_teardown(struct nbd_state *s)
{
    nbd_drop_handle(s);
    if (s->resolving != NULL) {
        s->resolving->data = NULL;
        s->resolving = NULL;
    }
    nbd_free_addrs(s);
    nbd_close_uv((uv_handle_t *)s->attempt_timer);
    nbd_close_uv((uv_handle_t *)s->deadline_timer);
    s->attempt_timer = s->deadline_timer = NULL;
    if (s->tls != NULL) {
        free(s->tls->dir);
        free(s->tls->username);
        free(s->tls);
        s->tls = NULL;
    }
    /* Nothing is in flight from above at close, and a failed open had
     * no requests: the lists are empty. */
}

static void
nbd_open_async(struct ng_node *node, struct ng_error *err)
{
    struct nbd_state *s = ng_node_state(node);

    s->node = node;
    s->phase = NBD_OPENING;
    s->open_err = err;
    if (nbd_check_opts(s, err) == -1) {
        nbd_teardown(s);
        ng_node_opened(node, -1);
        return;
    }
    if (s->server_type == NBD_SERVER_UNIX)
        snprintf(s->where, sizeof s->where, "unix:%s", s->path);
    else
        snprintf(s->where, sizeof s->where, "%s:%s", s->host, s->port);
    s->attempt_timer = nbd_new_timer(s);
    s->deadline_timer = nbd_new_timer(s);
    if (s->attempt_timer == NULL || s->deadline_timer == NULL) {
        nbd_teardown(s);
        ng_error_set(err, ENOMEM, "out of memory");
        ng_node_opened(node, -1);
        return;
    }
    if (s->open_timeout > 0)
        uv_timer_start(s->deadline_timer, nbd_deadline_cb,
                       (uint64_t)s->open_timeout * 1000, 0);
    nbd_attempt(s);                 /* answers the open at nbd_kick's end */
    nbd_kick(s);
}

static void
nbd_close_async(struct ng_node *node)
{
    struct nbd_state *s = ng_node_state(node);

    if (s->main.h != NULL && s->main.ready)
        nbd_aio_disconnect(s->main.h, 0);   /* polite NBD_CMD_DISC */
    if (s->data.h != NULL && s->data.ready)
        nbd_aio_disconnect(s->data.h, 0);
    if (s->kicking) {
        s->close_pending = true;
        return;
    }
    nbd_teardown(s);
    ng_node_closed(node);
}

/* The daemon stops: not a second more for the server. */
static void
nbd_cancel_open(struct ng_node *node)
{
    struct nbd_state *s = ng_node_state(node);

    if (s->phase != NBD_OPENING || s->open_done)
        return;
    snprintf(s->last_err, sizeof s->last_err, "%.200s: open given up: the "
             "daemon stops", s->where);
    nbd_give_up_open(s);
    nbd_kick(s);
}

static int
nbd_refresh(struct ng_node *node, struct ng_node_facts *facts,
            struct ng_error *err)
{
    const struct nbd_state *s = ng_node_state(node);
    const struct nbd_remote *r = &s->remote;
    uint32_t align = 1, max = NBD_MAX_TRANSFER;

    (void)err;
    if (r->min_block > 1 && (r->min_block & (r->min_block - 1)) == 0 &&
        r->min_block <= 65536)
        align = r->min_block;
    if (r->max_block > 0 && r->max_block < max)
        max = r->max_block;
    max -= max % align;
    if (max == 0)
        max = align;
    facts->size = r->size;
    facts->caps = r->caps;
    facts->request_alignment = align;
    facts->max_transfer = max;
    facts->opt_transfer = r->pref_block <= max ? r->pref_block : 0;
    return 0;
}

const struct ng_driver ng_driver_nbd = {
    .name       = "nbd",
    .help       = "remote NBD server (libnbd)",
    .is_filter  = false,
    .state_size = sizeof(struct nbd_state),
    .opts       = nbd_opts,
    .req_ctx_size = sizeof(struct nbd_io),
    .thread_model = NG_THREADS_NONE,
    .open_async = nbd_open_async,
    .cancel_open = nbd_cancel_open,
    .close_async = nbd_close_async,
    .submit     = nbd_submit,
    .refresh    = nbd_refresh,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
