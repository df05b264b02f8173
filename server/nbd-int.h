/* server/nbd-int.h: what the NBD server's files share — the server,
 * export, connection and request objects, and the functions one file
 * calls in another.  Not for use outside server/nbd*.c.
 *
 * Life cycle in one picture:
 *
 *   listener --accept--> conn (handshake) --GO/EXPORT_NAME--> conn
 *   (transmission): header --> nbd_req --> ng_bb_submit --> done -->
 *   reply queued --> flushed by one write per loop iteration --> req
 *   released to the server's free list.
 *
 * Everything runs on the loop thread.
 */
#ifndef NG_NBD_INT_H
#define NG_NBD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "graph/graph.h"
#include "graph/strmap.h"
#include "config/config.h"
#include "server/nbd.h"
#include "server/tls.h"
#include "server/unix-path.h"

/* ---- Limits -------------------------------------------------------------- */

/* Largest READ or WRITE we serve (server.max-request; see nbd.h for
 * its default and range); advertised as the maximum block size.  A
 * client that never asks (NBD_OPT_EXPORT_NAME) may still send 40 MiB,
 * as nbd-server and nbdkit take. */
#define NBD_MIN_BLOCK           1
#define NBD_PREF_BLOCK          4096

/* A WRITE above max-request gets EINVAL after its payload has been read
 * and thrown away, so the connection stays usable; one above twice
 * max-request (at least NBD_MAX_DISCARD) is treated as a denial of
 * service and the client is dropped. */
#define NBD_MAX_DISCARD         (UINT32_C(64) << 20)

/* Receive buffer: every complete request header in it is parsed at
 * once.  Small enough that the part of a large WRITE payload that lands
 * here (and must be copied) stays small; large enough to hold the
 * biggest option we accept. */
#define NBD_RBUF_SIZE           (128u << 10)

/* A READ larger than this, with structured replies and without DF, is
 * streamed: read and sent in pieces of this size, one OFFSET_DATA chunk
 * each, through one buffer of this size. */
#define NBD_STREAM_PIECE        (UINT32_C(4) << 20)

/* Option data above this drops the client (no option we know needs
 * more than an export name, a few queries and the info list). */
#define NBD_MAX_OPTION_DATA     (64u << 10)

/* Per connection: stop reading requests while this many are in flight
 * or this many payload bytes are held, so a client cannot make us
 * buffer without bound. */
#define NBD_CONN_MAX_REQS       512
#define NBD_CONN_MAX_BYTES      (UINT64_C(256) << 20)

/* A client accepted on one of the last NBD_FD_RESERVE descriptors below
 * the fd limit is closed at once with a log line: left to it, libuv
 * would meet EMFILE and close clients without a word, and the daemon
 * needs a few descriptors (node files, control clients) of its own.
 * One line per NBD_FD_WARN_MS at most, with a count. */
#define NBD_FD_RESERVE              16
#define NBD_FD_WARN_MS              1000

/* A client gets this long to finish the handshake; at shutdown,
 * connections get this long to be answered before they are dropped. */
#define NBD_HANDSHAKE_TIMEOUT_MS    10000
#define NBD_SHUTDOWN_GRACE_MS       10000

/* At shutdown a connection goes on reading (new requests get
 * NBD_ESHUTDOWN) and is closed once it has nothing in flight and the
 * client has been quiet this long since its last request or our last
 * reply: a client that is still sending is answered, not cut off.  The
 * deadline timer checks this often while the server shuts down. */
#define NBD_SHUTDOWN_QUIET_MS       500
#define NBD_SHUTDOWN_TICK_MS        100

/* Send buffer asked for on Unix socket connections. */
#define NBD_UNIX_SNDBUF             (2 << 20)

/* TLS: once this much ciphertext waits for the socket, stop encrypting
 * replies until it is down to half. */
#define NBD_TLS_BACKLOG_MAX         (UINT64_C(1) << 20)

/* Buffers handed to one writev. */
#define NBD_IOV_BATCH           128

/* Dirty bitmaps one export may offer as qemu:dirty-bitmap:NAME. */
#define NBD_MAX_EXPORT_BITMAPS  NG_NBD_MAX_EXPORT_BITMAPS

/* Extents asked of the graph for one BLOCK_STATUS: base:allocation's,
 * then qemu:allocation-depth's, each NBD_MAX_EXTENTS at most, first in
 * its buffer; then the reply: one chunk (header, context ID,
 * descriptors) per selected metadata context, back to back. */
#define NBD_MAX_EXTENTS         128
#define NBD_BS_DEPTH_OFFSET     NBD_MAX_EXTENTS
#define NBD_BS_WIRE_OFFSET      (2 * NBD_MAX_EXTENTS * sizeof(struct ng_extent))
/* The larger of NBD_REPLY_TYPE_BLOCK_STATUS (20-byte header, context
 * ID, 8-byte descriptors) and NBD_REPLY_TYPE_BLOCK_STATUS_EXT (32-byte
 * header, context ID and count, 16-byte descriptors). */
#define NBD_BS_CHUNK_MAX        (32 + 8 + 16 * NBD_MAX_EXTENTS)
#define NBD_BS_BUF_SIZE         (NBD_BS_WIRE_OFFSET + \
                                 (2 + NBD_MAX_EXPORT_BITMAPS) * \
                                 NBD_BS_CHUNK_MAX)

/* Metadata context IDs: base:allocation, qemu:allocation-depth, then
 * the export's bitmaps in the order of its list (bitmap i has
 * NBD_META_ID_BITMAP0 + i). */
#define NBD_META_ID_ALLOCATION  1
#define NBD_META_ID_DEPTH       2
#define NBD_META_ID_BITMAP0     3

/* Buffer pool: power-of-two classes from 4 KiB to NG_MAX_REQUEST_MAX;
 * free buffers are kept up to NBD_POOL_BUDGET bytes in all. */
#define NBD_POOL_MIN_SHIFT      12
#define NBD_POOL_CLASSES        17      /* 4 KiB .. 256 MiB */
#define NBD_POOL_BUDGET         (UINT64_C(128) << 20)

/* ---- Objects ------------------------------------------------------------- */

/* A receive buffer.  Small WRITEs whose payload arrived whole in it use
 * it in place (no copy before the driver's one), so it is shared: the
 * connection holds one reference while reading into it and each such
 * request one more. */
struct nbd_rbuf {
    unsigned refs;
    struct nbd_rbuf *next_free;     /* server's free list */
    uint8_t data[];                 /* NBD_RBUF_SIZE bytes */
};

struct nbd_conn;

union nbd_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

struct nbd_pool {
    void *free[NBD_POOL_CLASSES];   /* singly linked through the first
                                     * pointer of each free buffer */
    uint64_t cached;                /* bytes on the free lists */
};

struct nbd_listener {
    struct ng_nbd_server *srv;
    union nbd_handle h;
    char *addr;                     /* as given: "unix:/x.sock" */
    char *path;                     /* Unix socket file we made, or NULL */
    struct ng_unix_file file;       /* its identity, so shutdown removes
                                     * only our own file */
    enum ng_tls_mode tls_mode;
    const struct ng_tls_creds *tls_creds;   /* borrowed from the graph's
                                             * objects; NULL when off */
    struct nbd_listener *next;
};

struct ng_nbd_export {
    struct ng_nbd_server *srv;
    struct ng_nbd_export *next;     /* server's list, in config order */
    char *name;
    char *description;              /* NULL = none */
    struct ng_bb *bb;               /* owned */
    bool writable;
    bool removed;                   /* off the list; freed when the last
                                     * connection closes */
    struct ng_allow_rule *allow;    /* owned; who may see it */
    size_t n_allow;
    bool restricted;                /* allow: was given (even empty) */
    unsigned nconns;                /* connections in transmission */
    unsigned max_conns;             /* of those at most, 0 = no limit */
    char *bitmap_node;              /* node the bitmaps live on, or NULL */
    char *bitmaps[NBD_MAX_EXPORT_BITMAPS];  /* offered as
                                             * qemu:dirty-bitmap:NAME;
                                             * marked busy while here */
    unsigned n_bitmaps;
    bool allocation_depth;          /* offers qemu:allocation-depth */
};

struct ng_nbd_server {
    uv_loop_t *loop;                /* borrowed */
    struct ng_graph *graph;         /* borrowed */
    struct nbd_listener *listeners;
    struct ng_nbd_export *exports;
    struct ng_nbd_export *exports_tail;     /* last on `exports` */
    struct ng_strmap export_index;  /* name -> export on `exports` */
    struct ng_nbd_export *removed;  /* removed, waiting for connections */
    struct nbd_conn *conns;
    struct nbd_conn *dirty;         /* connections with replies to flush */
    uv_check_t flush_check;         /* flush `dirty` after the poll phase */
    uv_idle_t flush_idle;           /* ... or before it (nbd-conn.c) */
    uv_timer_t timer;               /* handshake and shutdown deadlines */
    uv_idle_t poll_idle;            /* active: the loop polls, no sleep */
    uint64_t poll_ns;               /* poll-max-ns; 0 = never */
    uint64_t poll_until;            /* uv_hrtime() the polling ends at */
    uint64_t poll_check_ms;         /* uv_now() of the next look at
                                     * whether the loop's core is shared */
    long poll_nivcsw;               /* the loop thread's involuntary
                                     * context switches at the last look */
    uint64_t poll_shared_until;     /* uv_now() before which it does
                                     * not poll: the core was shared */
    struct nbd_req *free_reqs;
    struct nbd_rbuf *free_rbufs;
    unsigned n_free_rbufs;
    struct nbd_pool pool;
    uint32_t max_request;           /* largest READ/WRITE payload */
    unsigned max_conns;             /* 0 = no limit */
    uint64_t idle_timeout_ms;       /* 0 = none */
    unsigned nconns;
    uint64_t fd_limit;              /* soft RLIMIT_NOFILE at start, 0 = none */
    uint64_t fd_warned_at;          /* uv_now() of the last fd-limit line */
    unsigned fd_refused;            /* clients refused since that line */
    bool shutting_down;
    uint64_t shutdown_at;           /* uv_now() when it began */
    bool handles_closing;           /* flush_check, flush_idle, timer,
                                     * poll_idle */
    unsigned handles_open;
    bool free_pending;              /* ng_nbd_server_free() ran first */
    void (*shutdown_cb)(void *opaque);
    void *shutdown_opaque;
    void (*export_gone)(void *opaque, const char *name);
    void *export_gone_opaque;
};

/* One request and its reply.  Pooled per server: steady-state I/O
 * allocates nothing. */
struct nbd_req {
    struct ng_req req;              /* what the graph sees */
    struct nbd_conn *conn;
    struct nbd_req *next;           /* free list or reply queue */
    uint8_t handle[8];              /* the client's, echoed raw */
    uint16_t cmd;
    uint16_t flags;                 /* NBD_CMD_FLAG_*, without PAYLOAD_LEN */
    uint64_t offset;
    uint64_t length;                /* 64 bits with extended headers (an
                                     * effect length; payloads stay below
                                     * max-request) */
    uint64_t piece_off, piece_len;  /* the part in the graph or in the
                                     * reply: all of it unless streamed */
    bool stream_more;               /* a streamed READ's reply is queued
                                     * and pieces remain */
    bool bs_depth;                  /* BLOCK_STATUS: the graph is asked
                                     * for the allocation depth now */
    uint32_t bs_alloc_n, bs_depth_n;    /* extents the graph gave */
    uint8_t *buf;                   /* pooled payload buffer, a WRITE's
                                     * payload inside `rb`, or NULL */
    unsigned buf_class;
    struct nbd_rbuf *rb;            /* holds a reference when buf points
                                     * into a receive buffer */
    const uint8_t *payload;         /* sent after hdr: in buf, or NULL */
    uint32_t payload_len;
    uint32_t hdr_len;
    uint8_t hdr[40];                /* the reply header, built in place:
                                     * at most an extended chunk header
                                     * and a READ's 8-byte offset */
};

enum nbd_phase {
    NBD_PHASE_HANDSHAKE,
    NBD_PHASE_TRANSMISSION,
};

enum nbd_hs_state {
    NBD_HS_CLIENT_FLAGS,            /* waiting for the 32-bit client flags */
    NBD_HS_OPTIONS,                 /* option haggling */
};

struct nbd_conn {
    struct ng_nbd_server *srv;
    union nbd_handle h;
    struct nbd_conn *prev, *next;   /* server's list */
    char peer[64];                  /* for log messages */
    enum nbd_phase phase;
    uint64_t since;                 /* uv_now() at accept */
    uint64_t active_at;             /* uv_now() when bytes last came in
                                     * or the last replies went out */

    /* Receiving. */
    struct nbd_rbuf *rb;            /* receive buffer, one reference */
    uint8_t *rbuf;                  /* rb->data */
    size_t rstart, rend;            /* unparsed bytes */
    uint64_t skip;                  /* payload bytes to throw away */
    struct nbd_req *skip_reply;     /* the refused WRITE they belong to:
                                     * answered once they are gone, as a
                                     * client may not expect a reply to a
                                     * request it is still sending */
    struct nbd_req *payload_req;    /* WRITE whose payload we read
                                     * straight into its buffer */
    uint32_t payload_got;
    bool reading;                   /* uv_read_start active */
    bool parsing;                   /* inside conn_parse(): no nesting */
    bool stop_parsing;              /* DISC, EOF, shutdown: take no more */

    /* TLS, set at accept from the listener. */
    enum ng_tls_mode tls_mode;
    const struct ng_tls_creds *tls_creds;   /* borrowed */
    struct ng_tls *tls;             /* owned once STARTTLS is acked */
    bool tls_pumping;               /* inside conn_tls_pump() */

    /* Handshake. */
    enum nbd_hs_state hs_state;
    bool no_zeroes;
    bool structured;                /* replies may be chunks: after
                                     * STRUCTURED_REPLY or
                                     * EXTENDED_HEADERS */
    bool extended;                  /* EXTENDED_HEADERS: 32-byte requests,
                                     * every reply an extended chunk */
    bool meta_allocation;           /* base:allocation selected */
    bool meta_depth;                /* qemu:allocation-depth selected */
    uint32_t meta_bitmaps;          /* bit i: the export's bitmap i */
    char *meta_export;              /* export the selection was for */
    uint8_t *hs_out;                /* replies not yet written, owned */
    size_t hs_len, hs_cap;

    /* Transmission. */
    struct ng_nbd_export *exp;
    uint64_t size;                  /* as told to the client */
    uint16_t tflags;                /* as told to the client */
    uint32_t promised;              /* NG_CAP_* behind tflags, promised
                                     * on exp->bb (ng_bb_promise()) */
    unsigned nreqs;                 /* request objects owned */
    uint64_t nbytes;                /* payload bytes they hold */
    unsigned in_graph;              /* of those, inside ng_bb_submit */

    /* Sending. */
    struct nbd_req *rq_head, *rq_tail;  /* replies to send */
    struct nbd_req *wq_head, *wq_tail;  /* replies in the pending write */
    uv_write_t wreq;
    bool writing;                   /* wreq pending */
    unsigned hs_writes;             /* handshake writes pending */
    bool dirty;                     /* on srv->dirty */
    struct nbd_conn *dirty_next;
    uv_buf_t iov[NBD_IOV_BATCH];

    /* Ending. */
    bool closing;                   /* close once idle */
    bool dead;                      /* socket unusable: discard replies */
    bool handle_closing;            /* uv_close called */
    bool handle_closed;
};

/* ---- nbd.c: the server object ------------------------------------------ */

/* Called by a connection when it is gone. */
void nbd_server_conn_gone(struct ng_nbd_server *srv, struct nbd_conn *c);
/* A client's bytes came in: poll for poll-max-ns from now (nbd.c). */
void nbd_server_poll_on(struct ng_nbd_server *srv);
/* Make sure the deadline timer runs (a connection is in handshake). */
void nbd_server_watch_deadlines(struct ng_nbd_server *srv);

/* ---- nbd-listen.c: listeners -------------------------------------------- */

/* Close every listener (their Unix socket files are removed). */
void nbd_listeners_close(struct ng_nbd_server *srv);

/* ---- nbd-export.c: the export registry ---------------------------------- */

/* Find an export by its exact name ("" only finds an export named ""). */
struct ng_nbd_export *nbd_export_find(struct ng_nbd_server *srv,
                                      const char *name);
/* True when one more client would pass the export's max-connections. */
bool nbd_export_full(const struct ng_nbd_export *exp);
void nbd_export_conn_added(struct ng_nbd_export *exp);
void nbd_export_conn_removed(struct ng_nbd_export *exp);
/* Transmission flags and size a client would get for `exp` now. */
uint16_t nbd_export_tflags(const struct ng_nbd_export *exp, bool structured);
uint64_t nbd_export_size(const struct ng_nbd_export *exp);
/* The export's bitmap i (< n_bitmaps), or NULL when it has gone with
 * its node (a mirror moved the export away and the old node was
 * deleted). */
struct ng_bitmap *nbd_export_bitmap(const struct ng_nbd_export *exp,
                                    unsigned i);
/* Free every export, listed or removed (at server free). */
void nbd_exports_free(struct ng_nbd_server *srv);

/* ---- nbd-pool.c: request objects and buffers ---------------------------- */

/* Request objects and payload buffers.  nbd_req_get returns NULL on
 * ENOMEM; len 0 means no buffer. */
struct nbd_req *nbd_req_get(struct nbd_conn *c, uint32_t len);
void nbd_req_put(struct nbd_req *r);
/* Receive buffers: a new one (one reference) or NULL; drop a reference. */
struct nbd_rbuf *nbd_rbuf_get(struct ng_nbd_server *srv);
void nbd_rbuf_unref(struct ng_nbd_server *srv, struct nbd_rbuf *rb);
/* Free what the free lists hold (at server free). */
void nbd_pools_free(struct ng_nbd_server *srv);

/* ---- nbd-conn.c: connections --------------------------------------------- */

/* Take an accepted client (handle initialised by the caller, on the
 * server's list).  Sends the greeting and starts reading. */
void nbd_conn_start(struct nbd_conn *c);
/* Send every queued reply that the socket will take. */
void nbd_conn_flush(struct nbd_conn *c);
/* Ask for `c` to be flushed at the end of this loop iteration; take it
 * off that list again (it is going away). */
void nbd_mark_dirty(struct nbd_conn *c);
void nbd_unmark_dirty(struct ng_nbd_server *srv, struct nbd_conn *c);
/* Close the handle if the connection is closing and has nothing left to
 * send or wait for. */
void nbd_conn_maybe_close(struct nbd_conn *c);
/* Stop taking requests; answer those in flight, then close. */
void nbd_conn_close_gracefully(struct nbd_conn *c);
/* Hard disconnect: close now, discard replies, free once the graph has
 * returned every request. */
void nbd_conn_abort(struct nbd_conn *c);
/* Nothing in flight either way: no request object and no partial
 * request or reply. */
bool nbd_conn_idle(const struct nbd_conn *c);
/* While the server shuts down (its requests are answered with
 * NBD_ESHUTDOWN): close gracefully once nothing is in flight and the
 * client has been quiet for NBD_SHUTDOWN_QUIET_MS. */
void nbd_conn_shutdown_check(struct nbd_conn *c, uint64_t now);
/* For a uv_write callback, after it has released what it wrote: true
 * when the write did not go through and the callback must stop there.  A
 * cancelled write means the handle is already closing; any other error
 * drops the client (nbd_conn_abort). */
bool nbd_conn_write_failed(struct nbd_conn *c, int status);
/* Switch to TLS after the STARTTLS reply has been queued: the reply goes
 * out in the clear, the bytes after it are the TLS handshake.  -1 when
 * the connection was dropped. */
int nbd_conn_start_tls(struct nbd_conn *c);
/* Enter transmission on `exp` (after GO or EXPORT_NAME). */
void nbd_conn_enter_transmission(struct nbd_conn *c,
                                 struct ng_nbd_export *exp, uint64_t size,
                                 uint16_t tflags);

/* ---- nbd-handshake.c: option haggling ------------------------------------ */

/* The 18-byte greeting, queued with nbd_hs_send(). */
void nbd_hs_greet(struct nbd_conn *c);

/* May this client see `exp`?  Logs a refusal with the client's
 * identity. */
bool nbd_hs_export_allowed(struct nbd_conn *c,
                           const struct ng_nbd_export *exp, bool quiet);

/* Parse one handshake message from rbuf[rstart..rend).  Returns 1 when
 * one was consumed, 0 when more bytes are needed, -1 when the
 * connection was dropped or is closing. */
int nbd_hs_parse(struct nbd_conn *c);
/* Queue raw handshake bytes; nbd_hs_flush() writes them. */
int nbd_hs_send(struct nbd_conn *c, const void *data, size_t len);
void nbd_hs_flush(struct nbd_conn *c);
void nbd_hs_free(struct nbd_conn *c);

#endif
