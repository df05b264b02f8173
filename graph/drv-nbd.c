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
 * on the new connection, or fail with EIO once the delay is over (for
 * each request, counted from the first loss it saw: one that every new
 * connection dies of fails too).  From then on requests fail at once,
 * and connecting goes on in the background, one attempt a second, so
 * the node works again as soon as the remote is back.  A new
 * connection must offer what the first one did (size, capabilities):
 * the graph above was told.
 *
 * Two connections when the server allows multi-conn: the main one asks
 * for structured replies (block status needs them) and the data one
 * does not.  Block status goes on the main one, everything else on the
 * data one once it is up.  Multi-conn is the server's promise that both
 * see the same disk and that a flush on either covers writes done on
 * both.  Losing either is losing the node's connection: both are
 * dropped, and reconnect makes both anew.
 *
 * On the data connection, once libnbd has done its handshake, we speak
 * the transmission phase ourselves (the "wire" below; not with TLS,
 * whose session is libnbd's): simple replies are a 16-byte header and a
 * read's data, easy to frame.  libnbd sends each request with its own
 * send calls and reads each reply with two recv calls (header, data);
 * here the requests of one loop iteration go out in one writev, and one
 * recv into a buffer brings every reply that has arrived, whose data is
 * then copied to the requests' buffers (a large read's rest is read
 * straight into its own).  On two busy cores, each syscall saved is a
 * wake-up of the server's threads or ours saved, which is most of what
 * a request costs here.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

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

/* The transmission phase on the wire (the NBD protocol's values;
 * server/nbd-proto.h is a layer above us). */
#define NBD_WIRE_REQUEST_MAGIC  UINT32_C(0x25609513)
#define NBD_WIRE_REPLY_MAGIC    UINT32_C(0x67446698)
#define NBD_WIRE_REQUEST_SIZE   28
#define NBD_WIRE_REPLY_SIZE     16
#define NBD_WIRE_CMD_READ       0
#define NBD_WIRE_CMD_WRITE      1
#define NBD_WIRE_CMD_FLUSH      3
#define NBD_WIRE_CMD_TRIM       4
#define NBD_WIRE_CMD_CACHE      5
#define NBD_WIRE_CMD_WRITE_ZEROES 6
/* Replies are read into a buffer this large ... */
#define NBD_WIRE_RBUF           (256u << 10)
/* ... except the rest of a read's data when at least this much: it is
 * read straight into the request's buffer. */
#define NBD_WIRE_DIRECT_MIN     (64u << 10)
/* iovecs per writev (headers and write payloads). */
#define NBD_WIRE_IOV            64

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

/* Our own transmission phase on a connection libnbd opened (see the
 * top).  Requests are on the node's sent list from the moment they are
 * queued, so a connection's loss finds them all there. */
struct nbd_wire {
    bool on;
    bool dead;                      /* a send, recv or the server failed */
    bool blocked;                   /* the socket took no more: wait for
                                     * it to be writable */
    struct nbd_io *q_head, *q_tail; /* to send, in order */
    size_t q_sent;                  /* bytes of q_head already sent */
    struct nbd_io **slots;          /* sent whole, by the handle's low
                                     * 32 bits; NULL when free */
    uint32_t nslots;
    uint32_t next_free;             /* where to look for a free slot */
    uint32_t seq;                   /* the handles' high 32 bits */
    unsigned char *rbuf;            /* NBD_WIRE_RBUF bytes */
    size_t rpos, rlen;              /* parsed up to, filled up to */
    struct nbd_io *rcur;            /* a read whose data is coming */
    size_t rcur_got;                /* bytes of it so far */
};

/* One connection to the server: a libnbd handle and its socket's
 * watch. */
struct nbd_link {
    struct nbd_state *s;
    struct nbd_handle *h;           /* or NULL */
    bool ready;                     /* h finished its handshake */
    uv_poll_t *poll;                /* h's socket; separately allocated,
                                     * freed by its close callback */
    int poll_events;
    struct nbd_wire wire;
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
    uint64_t connected_at;          /* uv_now() of the last handshake */
    uv_timer_t *deadline_timer;     /* open-timeout, reconnect-delay */
    uv_check_t *flush_check;        /* sends the wire's queue after the */
    uv_idle_t *flush_idle;          /* poll phase, or keeps it from
                                     * blocking (server/nbd-conn.c does
                                     * the same with replies) */
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
    int err;                        /* from libnbd, positive errno */
    bool lost;                      /* a connection died under it, */
    uint64_t lost_at;               /* at this uv_now() */
    void *bounce;                   /* when the view is not flat */
    struct nbd_io *wire_next;       /* the wire's send queue */
    bool wire_queued;               /* on it: not sent whole yet */
    uint64_t handle;                /* on the wire */
    unsigned char hdr[NBD_WIRE_REQUEST_SIZE];
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
static void nbd_wire_stop(struct nbd_wire *w);

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
    nbd_wire_stop(&l->wire);
}

static void nbd_io_answered(struct nbd_state *s, struct nbd_io *io,
                            int err);

/* A connection died under io: may it wait for the next one?  Not once
 * reconnect-delay has passed since the first one did: a request that
 * every new connection dies of (a server that always answers it
 * badly) would be retried for ever, each new connection restarting
 * the node's delay.  Only called once open: the timers are there. */
static bool
nbd_io_may_wait(struct nbd_state *s, struct nbd_io *io)
{
    uint64_t now = uv_now(s->attempt_timer->loop);

    if (!io->lost) {
        io->lost = true;
        io->lost_at = now;
        return true;
    }
    return now - io->lost_at < (uint64_t)s->reconnect_delay * 1000;
}

/* Drop the connections.  Requests they never answered wait for the
 * next ones (or fail with EIO at nbd_kick(): nbd_io_may_wait()). */
static void
nbd_drop_handle(struct nbd_state *s)
{
    nbd_link_drop(&s->main);
    nbd_link_drop(&s->data);
    while (s->sent != NULL) {
        struct nbd_io *io = s->sent;

        io->wire_queued = false;
        if (!nbd_io_may_wait(s, io)) {
            nbd_io_answered(s, io, EIO);
            continue;
        }
        nbd_sent_remove(s, io);
        nbd_wait_push(s, io);
    }
}

/* ---- Requests ----------------------------------------------------------- */

/* The server answered io (err: 0 or a positive errno): nbd_kick()
 * finishes it. */
static void
nbd_io_answered(struct nbd_state *s, struct nbd_io *io, int err)
{
    io->err = err;
    nbd_sent_remove(s, io);
    io->next = NULL;
    if (s->done_tail != NULL)
        s->done_tail->next = io;
    else
        s->done_head = io;
    s->done_tail = io;
}

static int
nbd_io_done_cb(void *opaque, int *error)
{
    struct nbd_io *io = opaque;

    nbd_io_answered(io->s, io, *error);
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

/* ---- The wire: our own transmission phase (see the top) ----------------- */

static void nbd_wire_schedule(struct nbd_state *s);

/* The wire failed: nbd_data_check() then drops the node's connection. */
static void
nbd_wire_fail(struct nbd_link *l, const char *why)
{
    struct nbd_state *s = l->s;

    if (l->wire.dead)
        return;
    l->wire.dead = true;
    snprintf(s->last_err, sizeof s->last_err, "cannot talk to %.150s: "
             "%.80s", s->where, why);
}

static int
nbd_wire_start(struct nbd_link *l)
{
    struct nbd_wire *w = &l->wire;

    memset(w, 0, sizeof *w);
    w->rbuf = malloc(NBD_WIRE_RBUF);
    if (w->rbuf == NULL)
        return -1;
    w->on = true;
    return 0;
}

/* Forget the wire's state; its requests are on the node's sent list,
 * which nbd_drop_handle() empties. */
static void
nbd_wire_stop(struct nbd_wire *w)
{
    free(w->rbuf);
    free(w->slots);
    memset(w, 0, sizeof *w);
}

static void
nbd_put_be16(unsigned char *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, sizeof v);
}

static void
nbd_put_be32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, sizeof v);
}

static void
nbd_put_be64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, sizeof v);
}

static uint32_t
nbd_get_be32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof v);
    return be32toh(v);
}

static uint64_t
nbd_get_be64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof v);
    return be64toh(v);
}

static int
nbd_wire_cmd(enum ng_op op)
{
    switch (op) {
    case NG_OP_READ:            return NBD_WIRE_CMD_READ;
    case NG_OP_WRITE:           return NBD_WIRE_CMD_WRITE;
    case NG_OP_FLUSH:           return NBD_WIRE_CMD_FLUSH;
    case NG_OP_TRIM:            return NBD_WIRE_CMD_TRIM;
    case NG_OP_CACHE:           return NBD_WIRE_CMD_CACHE;
    case NG_OP_WRITE_ZEROES:    return NBD_WIRE_CMD_WRITE_ZEROES;
    default:                    return -1;  /* block status: main link */
    }
}

/* A free slot for io; its handle names it.  -1 on ENOMEM. */
static int
nbd_wire_slot(struct nbd_wire *w, struct nbd_io *io)
{
    uint32_t i = w->next_free;

    while (i < w->nslots && w->slots[i] != NULL)
        i++;
    if (i == w->nslots) {
        uint32_t n = w->nslots ? w->nslots * 2 : 64;
        struct nbd_io **p = realloc(w->slots, n * sizeof *p);

        if (p == NULL)
            return -1;
        memset(p + w->nslots, 0, (n - w->nslots) * sizeof *p);
        w->slots = p;
        w->nslots = n;
    }
    w->slots[i] = io;
    w->next_free = i + 1;
    io->handle = (uint64_t)++w->seq << 32 | i;
    return 0;
}

/* Queue io (an op the wire carries) to go out with the others of this
 * loop iteration. */
static void
nbd_wire_queue(struct nbd_state *s, struct nbd_link *l, struct nbd_io *io)
{
    struct nbd_wire *w = &l->wire;
    struct ng_req *req = io->req;
    unsigned char *h = io->hdr;

    if (nbd_wire_slot(w, io) == -1) {
        nbd_io_complete(io, -ENOMEM);
        return;
    }
    nbd_put_be32(h, NBD_WIRE_REQUEST_MAGIC);
    nbd_put_be16(h + 4, (uint16_t)nbd_cmd_flags(req));
    nbd_put_be16(h + 6, (uint16_t)nbd_wire_cmd(req->op));
    nbd_put_be64(h + 8, io->handle);
    nbd_put_be64(h + 16, req->offset);
    nbd_put_be32(h + 24, (uint32_t)req->length);
    io->is_sent = true;             /* from now on, for nbd_drop_handle() */
    io->sent_prev = NULL;
    io->sent_next = s->sent;
    if (s->sent != NULL)
        s->sent->sent_prev = io;
    s->sent = io;
    io->wire_next = NULL;
    io->wire_queued = true;
    if (w->q_tail != NULL)
        w->q_tail->wire_next = io;
    else
        w->q_head = io;
    w->q_tail = io;
    nbd_wire_schedule(s);
}

/* Bytes io takes on the wire. */
static size_t
nbd_wire_out_len(const struct nbd_io *io)
{
    return NBD_WIRE_REQUEST_SIZE +
           (io->req->op == NG_OP_WRITE ? io->req->length : 0);
}

/* The iovecs of queued requests from q_head (less what was sent of it),
 * at most max; returns how many. */
static unsigned
nbd_wire_gather(const struct nbd_wire *w, struct iovec *iov, unsigned max)
{
    size_t skip = w->q_sent;
    unsigned n = 0;

    for (struct nbd_io *io = w->q_head; io != NULL && n < max;
         io = io->wire_next) {
        struct ng_req *req = io->req;

        if (skip < NBD_WIRE_REQUEST_SIZE) {
            iov[n].iov_base = io->hdr + skip;
            iov[n].iov_len = NBD_WIRE_REQUEST_SIZE - skip;
            n++;
            skip = 0;
        } else {
            skip -= NBD_WIRE_REQUEST_SIZE;
        }
        if (req->op == NG_OP_WRITE && n < max) {
            struct ng_iov rest;
            size_t covered;

            ng_iov_slice(&req->iov, skip, &rest);
            n += ng_iov_export(&rest, req->length - skip, iov + n, max - n,
                               &covered);
            if (covered < req->length - skip)
                break;              /* iov is full */
        }
        skip = 0;
    }
    return n;
}

/* Send what is queued, as far as the socket takes it. */
static void
nbd_wire_flush(struct nbd_link *l)
{
    struct nbd_wire *w = &l->wire;
    int fd = nbd_aio_get_fd(l->h);

    while (w->q_head != NULL && !w->blocked && !w->dead) {
        struct iovec iov[NBD_WIRE_IOV];
        unsigned n = nbd_wire_gather(w, iov, NBD_WIRE_IOV);
        size_t want = 0;
        ssize_t r;

        for (unsigned i = 0; i < n; i++)
            want += iov[i].iov_len;
        r = writev(fd, iov, (int)n);
        if (r == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                w->blocked = true;
            else if (errno != EINTR)
                nbd_wire_fail(l, strerror(errno));
            return;
        }
        if ((size_t)r < want)
            w->blocked = true;      /* full; poll for writable */
        /* Sent whole: off the queue (they stay on the sent list). */
        while (w->q_head != NULL &&
               nbd_wire_out_len(w->q_head) - w->q_sent <= (size_t)r) {
            r -= (ssize_t)(nbd_wire_out_len(w->q_head) - w->q_sent);
            w->q_head->wire_queued = false;
            w->q_sent = 0;
            w->q_head = w->q_head->wire_next;
        }
        if (w->q_head == NULL)
            w->q_tail = NULL;
        else
            w->q_sent += (size_t)r;
    }
}

static void
nbd_wire_flush_now(struct nbd_state *s)
{
    uv_check_stop(s->flush_check);
    uv_idle_stop(s->flush_idle);
    if (s->data.wire.on)
        nbd_wire_flush(&s->data);
    nbd_kick(s);                    /* a failure, or writable to watch */
}

static void
nbd_flush_check_cb(uv_check_t *c)
{
    nbd_wire_flush_now(c->data);
}

static void
nbd_flush_idle_cb(uv_idle_t *i)
{
    nbd_wire_flush_now(i->data);
}

static void
nbd_wire_schedule(struct nbd_state *s)
{
    if (uv_is_active((uv_handle_t *)s->flush_check))
        return;
    uv_check_start(s->flush_check, nbd_flush_check_cb);
    uv_idle_start(s->flush_idle, nbd_flush_idle_cb);
}

/* NBD's error values are Linux's errnos; libnbd's mapping. */
static int
nbd_wire_errno(uint32_t e)
{
    switch (e) {
    case 1: return EPERM;
    case 5: return EIO;
    case 12: return ENOMEM;
    case 22: return EINVAL;
    case 28: return ENOSPC;
    case 75: return EOVERFLOW;
    case 95: return ENOTSUP;
    case 108: return ESHUTDOWN;
    default: return EINVAL;
    }
}

/* The request a reply's handle names, taken off its slot; NULL with
 * *why when it names none we sent whole.  A reply to one still going
 * out (a hostile server that read its header) must not finish it: we
 * are sending from its buffer. */
static struct nbd_io *
nbd_wire_take(struct nbd_wire *w, uint64_t handle, const char **why)
{
    uint32_t i = (uint32_t)handle;
    struct nbd_io *io;

    *why = "a reply to no request";
    if (i >= w->nslots || (io = w->slots[i]) == NULL || io->handle != handle)
        return NULL;
    *why = "a reply to a request not sent whole";
    if (io->wire_queued)
        return NULL;
    w->slots[i] = NULL;
    if (i < w->next_free)
        w->next_free = i;
    return io;
}

/* Data for the read in rcur: up to len bytes from p. */
static void
nbd_wire_fill(struct nbd_link *l, const unsigned char *p, size_t len)
{
    struct nbd_wire *w = &l->wire;
    struct ng_req *req = w->rcur->req;

    if (len > req->length - w->rcur_got)
        len = req->length - w->rcur_got;
    ng_iov_from_buf(&req->iov, w->rcur_got, p, len);
    w->rcur_got += len;
    w->rpos += len;
    if (w->rcur_got == req->length) {
        nbd_io_answered(l->s, w->rcur, 0);
        w->rcur = NULL;
    }
}

/* Answer what the buffer holds whole; stop at the first part. */
static void
nbd_wire_parse(struct nbd_link *l)
{
    struct nbd_wire *w = &l->wire;

    while (!w->dead) {
        const unsigned char *p = w->rbuf + w->rpos;
        size_t avail = w->rlen - w->rpos;
        struct nbd_io *io;
        const char *why;
        uint32_t err;

        if (w->rcur != NULL) {
            if (avail == 0)
                break;
            nbd_wire_fill(l, p, avail);
            continue;
        }
        if (avail < NBD_WIRE_REPLY_SIZE)
            break;
        if (nbd_get_be32(p) != NBD_WIRE_REPLY_MAGIC) {
            nbd_wire_fail(l, "not a simple reply");
            break;
        }
        io = nbd_wire_take(w, nbd_get_be64(p + 8), &why);
        if (io == NULL) {
            nbd_wire_fail(l, why);
            break;
        }
        err = nbd_get_be32(p + 4);
        w->rpos += NBD_WIRE_REPLY_SIZE;
        if (err == 0 && io->req->op == NG_OP_READ && io->req->length > 0) {
            w->rcur = io;
            w->rcur_got = 0;
        } else {
            nbd_io_answered(l->s, io, err ? nbd_wire_errno(err) : 0);
        }
    }
    if (w->rpos == w->rlen)
        w->rpos = w->rlen = 0;
}

/* One read from the socket: into the buffer, or the rest of a large
 * read straight into its own.  1 when it got all it asked for (more may
 * wait), 0 when the socket is drained, -1 when the wire failed. */
static int
nbd_wire_recv(struct nbd_link *l)
{
    struct nbd_wire *w = &l->wire;
    int fd = nbd_aio_get_fd(l->h);
    struct iovec iov[NBD_WIRE_IOV];
    bool direct = w->rcur != NULL &&
        w->rcur->req->length - w->rcur_got >= NBD_WIRE_DIRECT_MIN;
    size_t want;
    ssize_t r;
    unsigned n;

    if (direct) {
        struct ng_req *req = w->rcur->req;
        struct ng_iov rest;

        ng_iov_slice(&req->iov, w->rcur_got, &rest);
        n = ng_iov_export(&rest, req->length - w->rcur_got, iov,
                          NBD_WIRE_IOV, &want);
    } else {
        if (w->rpos > 0) {          /* room for a whole reply at the end */
            memmove(w->rbuf, w->rbuf + w->rpos, w->rlen - w->rpos);
            w->rlen -= w->rpos;
            w->rpos = 0;
        }
        iov[0].iov_base = w->rbuf + w->rlen;
        iov[0].iov_len = want = NBD_WIRE_RBUF - w->rlen;
        n = 1;
    }
    r = readv(fd, iov, (int)n);
    if (r == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        nbd_wire_fail(l, strerror(errno));
        return -1;
    }
    if (r == 0) {
        nbd_wire_fail(l, "the server closed the connection");
        return -1;
    }
    if (direct) {
        w->rcur_got += (size_t)r;
        if (w->rcur_got == w->rcur->req->length) {
            nbd_io_answered(l->s, w->rcur, 0);
            w->rcur = NULL;
        }
    } else {
        w->rlen += (size_t)r;
        nbd_wire_parse(l);
    }
    return (size_t)r == want && !w->dead ? 1 : 0;
}

static void
nbd_wire_poll_cb(struct nbd_link *l, int status, int events)
{
    struct nbd_wire *w = &l->wire;

    if (status < 0) {
        nbd_wire_fail(l, uv_strerror(status));
        return;
    }
    if (events & UV_READABLE)
        while (nbd_wire_recv(l) == 1)
            ;
    if ((events & UV_WRITABLE) && !w->dead) {
        w->blocked = false;
        nbd_wire_flush(l);
    }
}

/* What the wire's socket is to be watched for: replies always (and a
 * closed connection), room to send when it was full. */
static int
nbd_wire_events(const struct nbd_wire *w)
{
    if (w->dead)
        return 0;
    return UV_READABLE | (w->blocked ? UV_WRITABLE : 0);
}

/* Issue on the live connection; a connection found dead keeps the
 * request for the next one. */
static void
nbd_io_issue(struct nbd_state *s, struct nbd_io *io)
{
    struct nbd_link *l = nbd_io_link(s, io);
    struct nbd_handle *h = l->h;
    int err;

    if (l->wire.on) {
        nbd_wire_queue(s, l, io);
        return;
    }
    if ((io->req->op == NG_OP_READ || io->req->op == NG_OP_WRITE) &&
        nbd_io_buf(io) == NULL) {
        nbd_io_complete(io, -ENOMEM);
        return;
    }
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
        if (nbd_io_may_wait(s, io))
            nbd_wait_push(s, io);
        else
            nbd_io_complete(io, -EIO);
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
    s->connected_at = uv_now(s->attempt_timer->loop);  /* if usable */
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
 * holds more (FIONREAD after each): all the replies that arrived since
 * the wake-up are then answered in this loop iteration, which lets the
 * server send them to the client in one writev, and saves an
 * epoll_wait each.  Never call notify_read on an empty socket: libnbd
 * 1.14 then stays in a reply state and queues new commands without
 * sending them until the socket turns readable, which it never would
 * with nothing in flight.  With nothing in flight no reply can be
 * waiting: no need to ask. */
static int
nbd_read_replies(struct nbd_link *l)
{
    struct nbd_handle *h = l->h;

    do {
        if (nbd_aio_notify_read(h) == -1)
            return -1;
    } while (nbd_aio_in_flight(h) > 0 &&
             (nbd_aio_get_direction(h) & LIBNBD_AIO_DIRECTION_READ) &&
             nbd_pending_bytes(h) > 0);
    return 0;
}

static void
nbd_poll_cb(uv_poll_t *p, int status, int events)
{
    struct nbd_link *l = p->data;
    struct nbd_state *s = l->s;
    struct nbd_handle *h = l->h;
    int r = 0;

    if (l->wire.on) {
        nbd_wire_poll_cb(l, status, events);
        nbd_kick(s);
        return;
    }
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
    if (l->wire.dead) {
        nbd_on_dead(s);
        return;
    }
    if (l->wire.on)
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
    /* libnbd is done with the socket: it read the handshake's replies
     * exactly, and nothing is in flight on it. */
    if (s->tls == NULL && nbd_wire_start(l) == -1)
        ng_node_warn(s->node, "out of memory: the second connection "
                     "goes through libnbd");
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
    /* One that died soon after it came up (a server that drops every
     * connection, or a request that kills each one): the next attempt
     * waits as after a failed one, not a storm of reconnects. */
    if (uv_now(s->attempt_timer->loop) - s->connected_at < NBD_RETRY_MS)
        nbd_attempt_failed(s);
    else
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
    if (l->wire.on) {
        want = nbd_wire_events(&l->wire);
    } else {
        dir = nbd_aio_get_direction(l->h);
        if (dir & LIBNBD_AIO_DIRECTION_READ)
            want |= UV_READABLE;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE)
            want |= UV_WRITABLE;
    }
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
    nbd_close_uv((uv_handle_t *)s->flush_check);
    nbd_close_uv((uv_handle_t *)s->flush_idle);
    s->attempt_timer = s->deadline_timer = NULL;
    s->flush_check = NULL;
    s->flush_idle = NULL;
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
    if ((s->flush_check = malloc(sizeof *s->flush_check)) != NULL) {
        uv_check_init(ng_node_loop(node), s->flush_check);
        s->flush_check->data = s;
        uv_unref((uv_handle_t *)s->flush_check);
    }
    if ((s->flush_idle = malloc(sizeof *s->flush_idle)) != NULL) {
        uv_idle_init(ng_node_loop(node), s->flush_idle);
        s->flush_idle->data = s;
        uv_unref((uv_handle_t *)s->flush_idle);
    }
    if (s->attempt_timer == NULL || s->deadline_timer == NULL ||
        s->flush_check == NULL || s->flush_idle == NULL) {
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
