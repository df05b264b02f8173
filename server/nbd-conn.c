/* server/nbd-conn.c: one client connection — reading, the transmission
 * phase, replies, closing.
 *
 * Receiving: while no WRITE payload is pending, libuv reads into the
 * connection's receive buffer and every complete request header in it
 * is handled at once.  A small WRITE (payload up to NBD_INLINE_PAYLOAD_MAX)
 * waits there, header unhandled, until its whole payload has come, and
 * uses it in place: one read per wake-up brings payloads and the headers
 * behind them, where reading a payload's tail on its own would cost a
 * second read (and libuv, whose read exactly filled the target, a third
 * that finds nothing).  A larger WRITE takes the part of its payload
 * that is already in the buffer (a memcpy of what the kernel happened
 * to give us) and has the rest read straight into its own buffer:
 * payload bytes are copied at most once between socket and backing.
 * Request headers
 * are compact (28 bytes) or, once NBD_OPT_EXTENDED_HEADERS was agreed,
 * extended (32 bytes, 64-bit lengths); replies are then extended chunks
 * only (32-byte headers), else simple replies or structured chunks.
 *
 * Sending: replies are queued on the connection and go out once per
 * loop iteration (the server's check and idle handles) in one writev,
 * tried synchronously first; whatever the socket does not take is handed
 * to uv_write.  A request object is released only when its whole reply has
 * left, so its buffer is never reused under a pending write.
 *
 * Ending: a graceful close (EOF, DISC, export removal) stops taking
 * requests, answers those in flight, then closes the handle; an abort
 * (protocol violation, socket error) closes the handle at once and
 * throws replies away.  Either way the connection is freed only when the
 * handle is closed and the graph has returned every request.  Server
 * shutdown goes on reading: requests in flight finish and are answered,
 * new ones get NBD_ESHUTDOWN (the spec's answer, after which the client
 * must disconnect), and the connection closes gracefully once it is idle
 * and the client quiet (nbd_conn_shutdown_check).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "server/log.h"
#include "server/nbd-int.h"
#include "server/nbd-proto.h"

static void conn_parse(struct nbd_conn *c);
static void conn_submit(struct nbd_conn *c, struct nbd_req *r);
static void conn_drop_rbuf_if_empty(struct nbd_conn *c);

/* ---- Freeing and closing ------------------------------------------------- */

static void
conn_free(struct nbd_conn *c)
{
    struct ng_nbd_export *exp = c->exp;
    uint32_t promised = c->promised;

    ng_log_debug("%s: connection closed", c->peer);
    nbd_hs_free(c);
    ng_tls_free(c->tls);
    if (c->rb != NULL)
        nbd_rbuf_unref(c->srv, c->rb);
    nbd_server_conn_gone(c->srv, c);
    free(c);
    if (exp != NULL) {
        ng_bb_unpromise(exp->bb, promised);
        nbd_export_conn_removed(exp);   /* may free the export */
    }
}

static void
conn_maybe_free(struct nbd_conn *c)
{
    if (c->handle_closed && c->nreqs == 0)
        conn_free(c);
}

static void
release_list(struct nbd_req **head, struct nbd_req **tail)
{
    while (*head != NULL) {
        struct nbd_req *r = *head;

        *head = r->next;
        nbd_req_put(r);
    }
    *tail = NULL;
}

/* Release the replies not sent yet, and those a failed uv_try_write or
 * uv_write left on the write queue.  While a uv_write is pending, its
 * callback releases the write queue instead: libuv calls it, with
 * UV_ECANCELED at the latest, before the handle's close callback. */
static void
release_unsent(struct nbd_conn *c)
{
    release_list(&c->rq_head, &c->rq_tail);
    if (!c->writing)
        release_list(&c->wq_head, &c->wq_tail);
}

static void
conn_closed_cb(uv_handle_t *h)
{
    struct nbd_conn *c = h->data;

    c->handle_closed = true;
    release_unsent(c);
    conn_maybe_free(c);
}

static void
conn_close_handle(struct nbd_conn *c)
{
    if (c->handle_closing)
        return;
    c->handle_closing = true;
    c->reading = false;
    uv_close(&c->h.handle, conn_closed_cb);
}

void
nbd_conn_maybe_close(struct nbd_conn *c)
{
    if (!c->closing || c->handle_closing)
        return;
    if (c->in_graph > 0 || c->rq_head != NULL || c->writing ||
        c->hs_writes > 0 || c->hs_len > 0)
        return;
    if (c->tls != NULL && !c->dead) {
        ng_tls_bye(c->tls);         /* the client learns it is the end */
        if (ng_tls_backlog(c->tls) > 0)
            return;                 /* nbd_conn_tls_written comes back */
    }
    conn_close_handle(c);
}

static void
drop_pending_payload(struct nbd_conn *c)
{
    if (c->payload_req != NULL) {
        nbd_req_put(c->payload_req);
        c->payload_req = NULL;
    }
    if (c->skip_reply != NULL) {
        nbd_req_put(c->skip_reply);
        c->skip_reply = NULL;
    }
    c->skip = 0;
}

void
nbd_conn_abort(struct nbd_conn *c)
{
    c->stop_parsing = true;
    c->closing = true;
    c->dead = true;
    c->hs_len = 0;
    drop_pending_payload(c);
    release_unsent(c);
    conn_close_handle(c);
}

bool
nbd_conn_write_failed(struct nbd_conn *c, int status)
{
    if (status == UV_ECANCELED)         /* the handle is closing */
        return true;
    if (status < 0) {
        ng_log_debug("%s: write: %s", c->peer, uv_strerror(status));
        nbd_conn_abort(c);
        return true;
    }
    return false;
}

static bool
conn_throttled(const struct nbd_conn *c)
{
    return c->nreqs >= NBD_CONN_MAX_REQS || c->nbytes >= NBD_CONN_MAX_BYTES;
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_tls_pump(struct nbd_conn *c);

/* Is there somewhere to put what arrives? */
static bool
conn_wants_input(const struct nbd_conn *c)
{
    return !c->stop_parsing && !c->handle_closing &&
           (c->payload_req != NULL || !conn_throttled(c));
}

/* Read while there is somewhere to put what arrives. */
static void
conn_update_reading(struct nbd_conn *c)
{
    bool want = conn_wants_input(c);
    int r;

    if (want != c->reading && !want) {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    } else if (want != c->reading) {
        r = uv_read_start(&c->h.stream, conn_alloc_cb, conn_read_cb);
        if (r < 0) {
            ng_log_warn("%s: read: %s", c->peer, uv_strerror(r));
            nbd_conn_abort(c);
            return;
        }
        c->reading = true;
    }
    /* TLS may hold bytes the socket will not announce again. */
    if (want && c->tls != NULL && ng_tls_has_input(c->tls))
        conn_tls_pump(c);
}

void
nbd_conn_close_gracefully(struct nbd_conn *c)
{
    c->stop_parsing = true;
    c->closing = true;
    drop_pending_payload(c);
    conn_update_reading(c);
    nbd_conn_maybe_close(c);
}

/* Nothing in flight either way: no request object (in the graph, queued,
 * being written, or waiting for its payload) and no partial request. */
bool
nbd_conn_idle(const struct nbd_conn *c)
{
    return c->nreqs == 0 && c->skip == 0 && c->rstart == c->rend &&
           !c->writing && c->hs_len == 0 && c->hs_writes == 0 &&
           (c->tls == NULL || ng_tls_backlog(c->tls) == 0);
}

void
nbd_conn_shutdown_check(struct nbd_conn *c, uint64_t now)
{
    if (c->closing || c->phase != NBD_PHASE_TRANSMISSION || !nbd_conn_idle(c) ||
        now - c->active_at < NBD_SHUTDOWN_QUIET_MS)
        return;
    ng_log_debug("%s: idle at shutdown; closing", c->peer);
    nbd_conn_close_gracefully(c);
}

/* After request objects were released: maybe take more requests, maybe
 * close, maybe free. */
static void
conn_after_release(struct nbd_conn *c)
{
    if (c->handle_closed) {
        conn_maybe_free(c);
        return;
    }
    if (!c->stop_parsing && !conn_throttled(c) && c->payload_req == NULL &&
        c->rend > c->rstart) {
        conn_parse(c);
        conn_drop_rbuf_if_empty(c);
    }
    conn_update_reading(c);
    nbd_conn_maybe_close(c);
}

/* ---- Receiving ----------------------------------------------------------- */

/* Read on in a shared receive buffer only with at least this much room. */
#define NBD_RBUF_MIN_ROOM (32u << 10)

/* A WRITE payload up to this size is gathered in the receive buffer
 * (see conn_partial_write); it leaves room there for the headers and
 * payloads behind it. */
#define NBD_INLINE_PAYLOAD_MAX (64u << 10)

static size_t conn_partial_write(const struct nbd_conn *c);

static int
conn_switch_rbuf(struct nbd_conn *c)
{
    struct nbd_rbuf *rb = nbd_rbuf_get(c->srv);
    size_t n = c->rend - c->rstart;

    if (rb == NULL)
        return -1;
    memcpy(rb->data, c->rbuf + c->rstart, n);
    nbd_rbuf_unref(c->srv, c->rb);
    c->rb = rb;
    c->rbuf = rb->data;
    c->rstart = 0;
    c->rend = n;
    return 0;
}

/* A connection holds a receive buffer only while bytes are unparsed:
 * an idle client costs its connection object, not NBD_RBUF_SIZE. */
static int
conn_take_rbuf(struct nbd_conn *c)
{
    c->rb = nbd_rbuf_get(c->srv);
    if (c->rb == NULL)
        return -1;
    c->rbuf = c->rb->data;
    c->rstart = c->rend = 0;
    return 0;
}

static void
conn_drop_rbuf_if_empty(struct nbd_conn *c)
{
    if (c->rb == NULL || c->rstart != c->rend)
        return;
    nbd_rbuf_unref(c->srv, c->rb);  /* requests using it keep theirs */
    c->rb = NULL;
    c->rbuf = NULL;
    c->rstart = c->rend = 0;
}

/* Where the next bytes of the NBD stream go: a WRITE's payload buffer,
 * or the receive buffer.  Length 0 when out of memory. */
static uv_buf_t
conn_read_target(struct nbd_conn *c)
{
    struct nbd_req *r = c->payload_req;

    if (r != NULL)      /* a payload is at most max-request */
        return uv_buf_init((char *)r->buf + c->payload_got,
                           (unsigned)(r->length - c->payload_got));
    if (c->rb == NULL && conn_take_rbuf(c) == -1)
        return uv_buf_init(NULL, 0);
    /* Requests still use parts of this buffer: read on behind them while
     * there is room, else move the unparsed tail to a fresh buffer. */
    if (c->rb->refs > 1) {
        if ((NBD_RBUF_SIZE - c->rend < NBD_RBUF_MIN_ROOM ||
             (NBD_RBUF_SIZE - c->rstart <
              NBD_EXT_REQUEST_SIZE + NBD_INLINE_PAYLOAD_MAX &&
              c->rstart + conn_partial_write(c) > NBD_RBUF_SIZE)) &&
            conn_switch_rbuf(c) == -1)
            return uv_buf_init(NULL, 0);
    } else if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    } else if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    return uv_buf_init((char *)c->rbuf + c->rend, NBD_RBUF_SIZE - c->rend);
}

/* With TLS, libuv reads ciphertext into the session's buffer and
 * conn_tls_pump() decrypts it to where conn_read_target() says. */
static void
conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct nbd_conn *c = h->data;

    /* Length 0 makes libuv report UV_ENOBUFS. */
    *buf = c->tls != NULL ? ng_tls_in_space(c->tls) : conn_read_target(c);
}

static void conn_got_bytes(struct nbd_conn *c, size_t n);

static void
conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct nbd_conn *c = s->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            ng_log_debug("%s: client closed its end", c->peer);
            nbd_conn_close_gracefully(c);
        } else {
            ng_log_debug("%s: read: %s", c->peer, uv_strerror((int)nread));
            nbd_conn_abort(c);
        }
        return;
    }
    nbd_server_poll_on(c->srv);
    if (c->tls != NULL) {
        ng_tls_in_added(c->tls, (size_t)nread);
        conn_tls_pump(c);
        return;
    }
    conn_got_bytes(c, (size_t)nread);
}

/* Decrypt what the session holds while there is room for it. */
static void
conn_tls_pump(struct nbd_conn *c)
{
    if (c->tls_pumping)
        return;
    c->tls_pumping = true;
    while (conn_wants_input(c)) {
        uv_buf_t b = conn_read_target(c);
        ssize_t n;

        if (b.len == 0) {
            ng_log_error("%s: out of memory; dropping client", c->peer);
            nbd_conn_abort(c);
            break;
        }
        n = ng_tls_recv(c->tls, b.base, b.len);
        if (n == NG_TLS_AGAIN) {
            if (c->payload_req == NULL)
                conn_drop_rbuf_if_empty(c);
            break;
        }
        if (n == 0) {
            ng_log_debug("%s: client closed TLS", c->peer);
            nbd_conn_close_gracefully(c);
            break;
        }
        if (n < 0) {
            nbd_conn_abort(c);
            break;
        }
        conn_got_bytes(c, (size_t)n);
    }
    c->tls_pumping = false;
    nbd_hs_flush(c);        /* handshake replies of what was decrypted */
}

/* `n` bytes of the NBD stream arrived where conn_read_target() said. */
static void
conn_got_bytes(struct nbd_conn *c, size_t nread)
{
    c->active_at = uv_now(c->srv->loop);
    if (c->payload_req != NULL) {
        struct nbd_req *r = c->payload_req;

        c->payload_got += (uint32_t)nread;
        if (c->payload_got < r->length)
            return;
        c->payload_req = NULL;
        conn_submit(c, r);
    } else {
        c->rend += nread;
    }
    conn_parse(c);
    conn_drop_rbuf_if_empty(c);
    conn_update_reading(c);
}

/* ---- Replies ------------------------------------------------------------- */

static void
conn_queue_reply(struct nbd_conn *c, struct nbd_req *r)
{
    r->next = NULL;
    if (c->rq_tail != NULL)
        c->rq_tail->next = r;
    else
        c->rq_head = r;
    c->rq_tail = r;
    nbd_mark_dirty(c);
}

static void
reply_simple(struct nbd_req *r, uint32_t error)
{
    nbd_put32(r->hdr, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(r->hdr + 4, error);
    memcpy(r->hdr + 8, r->handle, 8);
    r->hdr_len = NBD_SIMPLE_REPLY_SIZE;
}

/* Write the header of one reply chunk at `p`: structured (20 bytes) or,
 * with extended headers, extended (32 bytes: the request's offset, as
 * the spec asks even of OFFSET_DATA, and a 64-bit length).  Returns its
 * size; the payload follows. */
static uint32_t
chunk_header(uint8_t *p, const struct nbd_req *r, uint16_t flags,
             uint16_t type, uint64_t length)
{
    nbd_put16(p + 4, flags);
    nbd_put16(p + 6, type);
    memcpy(p + 8, r->handle, 8);
    if (r->conn->extended) {
        nbd_put32(p, NBD_EXTENDED_REPLY_MAGIC);
        nbd_put64(p + 16, r->offset);
        nbd_put64(p + 24, length);
        return NBD_EXT_CHUNK_HDR_SIZE;
    }
    nbd_put32(p, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put32(p + 16, (uint32_t)length);
    return NBD_CHUNK_HDR_SIZE;
}

/* Patch the payload length of a chunk chunk_header() wrote. */
static void
chunk_set_length(uint8_t *p, const struct nbd_req *r, uint64_t length)
{
    if (r->conn->extended)
        nbd_put64(p + 24, length);
    else
        nbd_put32(p + 16, (uint32_t)length);
}

/* A structured reply is one chunk, so it carries DONE (and a READ with
 * DF gets what it asked for) -- except the pieces of a streamed READ
 * before its last (reply_read clears the flag there). */
static void
reply_chunk_header(struct nbd_req *r, uint16_t type, uint32_t length)
{
    r->hdr_len = chunk_header(r->hdr, r, NBD_REPLY_FLAG_DONE, type, length);
}

/* Success without data: a simple reply is allowed even with structured
 * replies, and shorter; with extended headers only chunks are. */
static void
reply_no_data(struct nbd_req *r)
{
    if (r->conn->extended)
        reply_chunk_header(r, NBD_REPLY_TYPE_NONE, 0);
    else
        reply_simple(r, NBD_SUCCESS);
}

static void
reply_prepare_error(struct nbd_req *r, uint32_t error)
{
    r->payload = NULL;
    r->payload_len = 0;
    r->stream_more = false;         /* an error chunk ends a stream */
    if (r->conn->structured) {
        /* error, then a zero message length */
        reply_chunk_header(r, NBD_REPLY_TYPE_ERROR, 6);
        nbd_put32(r->hdr + r->hdr_len, error);
        nbd_put16(r->hdr + r->hdr_len + 4, 0);
        r->hdr_len += 6;
    } else {
        reply_simple(r, error);
    }
}

static void
reply_error(struct nbd_req *r, uint32_t error)
{
    reply_prepare_error(r, error);
    conn_queue_reply(r->conn, r);
}

/* A streamed READ's pieces are chunks of one reply: DONE on the last. */
static void
reply_read(struct nbd_req *r)
{
    if (r->conn->structured) {
        reply_chunk_header(r, NBD_REPLY_TYPE_OFFSET_DATA,
                           8 + (uint32_t)r->piece_len);
        nbd_put64(r->hdr + r->hdr_len, r->offset + r->piece_off);
        r->hdr_len += 8;
        r->stream_more = r->piece_off + r->piece_len < r->length;
        if (r->stream_more)
            nbd_put16(r->hdr + 4, 0);
    } else {
        reply_simple(r, NBD_SUCCESS);
    }
    r->payload = r->buf;
    r->payload_len = (uint32_t)r->piece_len;
}

static uint32_t
nbd_state_flags(uint32_t extent_flags)
{
    return ((extent_flags & NG_EXTENT_HOLE) ? NBD_STATE_HOLE : 0) |
           ((extent_flags & NG_EXTENT_ZERO) ? NBD_STATE_ZERO : 0);
}

/* One NBD_REPLY_TYPE_BLOCK_STATUS chunk (or, with extended headers,
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT: 64-bit lengths and states, and a
 * descriptor count) being built in a request's buffer: equal neighbours
 * merged, at most `max` descriptors. */
struct bs_chunk {
    uint8_t *p;                     /* chunk start (its header) */
    uint8_t *d;                     /* its first descriptor */
    bool ext;
    uint32_t n, max;
    uint64_t last_len;
    uint32_t last_state;
};

static void
bs_begin(struct bs_chunk *k, uint8_t *p, const struct nbd_req *r,
         uint32_t context_id)
{
    bool ext = r->conn->extended;
    uint32_t h = chunk_header(p, r, 0, ext ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                                           : NBD_REPLY_TYPE_BLOCK_STATUS, 0);

    k->p = p;
    k->ext = ext;
    k->d = p + h + (ext ? 8 : 4);   /* context ID (and count) first */
    k->n = 0;
    k->max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS;
    k->last_len = k->last_state = 0;
    nbd_put32(p + h, context_id);
}

static size_t
bs_desc_size(const struct bs_chunk *k)
{
    return k->ext ? 16 : 8;
}

/* Write descriptor i.  Without extended headers lengths fit in 32 bits:
 * they never sum to more than the request's 32-bit length. */
static void
bs_put_desc(struct bs_chunk *k, uint32_t i, uint64_t len, uint32_t state)
{
    uint8_t *d = k->d + bs_desc_size(k) * i;

    if (k->ext) {
        nbd_put64(d, len);
        nbd_put64(d + 8, state);    /* 32-bit contexts: high half zero */
    } else {
        nbd_put32(d, (uint32_t)len);
        nbd_put32(d + 4, state);
    }
}

/* Add `len` bytes of `state`; false once the chunk is full. */
static bool
bs_add(struct bs_chunk *k, uint64_t len, uint32_t state)
{
    if (k->n > 0 && state == k->last_state) {
        k->last_len += len;
        return true;
    }
    if (k->n == k->max)
        return false;
    if (k->n > 0)
        bs_put_desc(k, k->n - 1, k->last_len, k->last_state);
    k->n++;
    k->last_len = len;
    k->last_state = state;
    return true;
}

/* Close the chunk (one descriptor at least: `fallback` bytes of state
 * 0); returns its size on the wire. */
static uint32_t
bs_end(struct bs_chunk *k, const struct nbd_req *r, uint64_t fallback)
{
    uint32_t hdr = k->ext ? NBD_EXT_CHUNK_HDR_SIZE : NBD_CHUNK_HDR_SIZE;
    uint32_t payload;

    if (k->n == 0)
        bs_add(k, fallback, 0);
    bs_put_desc(k, k->n - 1, k->last_len, k->last_state);
    if (k->ext)
        nbd_put32(k->d - 4, k->n);  /* the descriptor count */
    payload = (uint32_t)(k->d - k->p) - hdr +
              (uint32_t)bs_desc_size(k) * k->n;
    chunk_set_length(k->p, r, payload);
    return hdr + payload;
}

/* A chunk from the graph's extents e[0..n), clipped to the request:
 * their flags as base:allocation's states, or (raw) as they are.
 * Nothing usable says "all data" (base:allocation) or "depth 0". */
static uint32_t
bs_from_extents(struct nbd_req *r, uint8_t *p, uint32_t context_id,
                const struct ng_extent *e, uint32_t n, bool raw)
{
    uint64_t left = r->length;
    struct bs_chunk k;

    bs_begin(&k, p, r, context_id);
    for (uint32_t i = 0; i < n && left > 0; i++) {
        uint64_t len = e[i].length < left ? e[i].length : left;

        if (len == 0)
            continue;
        if (!bs_add(&k, len, raw ? e[i].flags : nbd_state_flags(e[i].flags)))
            break;
        left -= len;
    }
    return bs_end(&k, r, r->length);
}

/* base:allocation from the graph's extents. */
static uint32_t
bs_allocation(struct nbd_req *r, uint8_t *p)
{
    return bs_from_extents(r, p, NBD_META_ID_ALLOCATION,
                           (const struct ng_extent *)(void *)r->buf,
                           r->bs_alloc_n, false);
}

/* qemu:allocation-depth: the graph's extents carry the depth. */
static uint32_t
bs_depth(struct nbd_req *r, uint8_t *p)
{
    return bs_from_extents(r, p, NBD_META_ID_DEPTH,
                           (const struct ng_extent *)(void *)r->buf +
                           NBD_BS_DEPTH_OFFSET, r->bs_depth_n, true);
}

/* qemu:dirty-bitmap:NAME: NBD_STATE_DIRTY where the bitmap is set, as
 * qemu-nbd answers.  Beyond the bitmap's end (it never is shorter than
 * its node) clean. */
static uint32_t
bs_bitmap(struct nbd_req *r, uint8_t *p, uint32_t context_id,
          const struct ng_bitmap *bm)
{
    uint64_t pos = r->offset, end = r->offset + r->length;
    struct bs_chunk k;

    bs_begin(&k, p, r, context_id);
    while (pos < end) {
        bool dirty = pos < bm->size && ng_bitmap_get(bm, pos);
        uint64_t next = pos >= bm->size ? end
                        : dirty ? ng_bitmap_next_clean(bm, pos)
                                : ng_bitmap_next_dirty(bm, pos);

        if (next > end || next <= pos)
            next = end;
        if (!bs_add(&k, next - pos, dirty ? NBD_STATE_DIRTY : 0))
            break;
        pos = next;
    }
    return bs_end(&k, r, r->length);
}

/* One chunk per selected context, in ID order, DONE on the last; the
 * first chunk's header goes in r->hdr, the rest is the payload.
 * False when a selected bitmap has gone. */
static bool
reply_block_status(struct nbd_req *r)
{
    const struct nbd_conn *c = r->conn;
    uint8_t *out = r->buf + NBD_BS_WIRE_OFFSET, *last = out;
    uint32_t total = 0;

    if (c->meta_allocation) {
        last = out + total;
        total += bs_allocation(r, last);
    }
    if (c->meta_depth) {
        last = out + total;
        total += bs_depth(r, last);
    }
    for (unsigned i = 0; i < c->exp->n_bitmaps; i++) {
        struct ng_bitmap *bm;

        if (!(c->meta_bitmaps & (UINT32_C(1) << i)))
            continue;
        if ((bm = nbd_export_bitmap(c->exp, i)) == NULL)
            return false;
        last = out + total;
        total += bs_bitmap(r, last, NBD_META_ID_BITMAP0 + i, bm);
    }
    if (total == 0)                 /* the selection names nothing here */
        return false;
    nbd_put16(last + 4, NBD_REPLY_FLAG_DONE);
    r->hdr_len = c->extended ? NBD_EXT_CHUNK_HDR_SIZE : NBD_CHUNK_HDR_SIZE;
    memcpy(r->hdr, out, r->hdr_len);
    r->payload = out + r->hdr_len;
    r->payload_len = total - r->hdr_len;
    return true;
}

static void
reply_success(struct nbd_req *r)
{
    r->payload = NULL;
    r->payload_len = 0;
    switch (r->cmd) {
    case NBD_CMD_READ:
        reply_read(r);
        break;
    case NBD_CMD_BLOCK_STATUS:
        if (!reply_block_status(r))
            reply_prepare_error(r, NBD_EIO);
        break;
    default:
        reply_no_data(r);
        break;
    }
    conn_queue_reply(r->conn, r);
}

/* errno from the graph to the protocol's error values.  EOVERFLOW and
 * ENOTSUP may only reach clients where the spec documents them. */
static uint32_t
nbd_error_from_errno(int err, const struct nbd_req *r)
{
    switch (err) {
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return r->cmd == NBD_CMD_READ && (r->flags & NBD_CMD_FLAG_DF)
               ? NBD_EOVERFLOW : NBD_EINVAL;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return r->cmd == NBD_CMD_WRITE_ZEROES &&
               (r->flags & NBD_CMD_FLAG_FAST_ZERO) ? NBD_ENOTSUP : NBD_EINVAL;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

static uint32_t request_ng_flags(uint16_t cmd, uint16_t flags);
static void conn_bs_extents(struct nbd_req *r);
static void conn_req_done(struct ng_req *q, int ret);

/* A BLOCK_STATUS's graph request is done: keep its extents and, after
 * base:allocation, ask for the allocation depth when that is selected
 * too.  True when the request went back to the graph. */
static bool
conn_bs_next(struct nbd_conn *c, struct nbd_req *r)
{
    struct ng_req *q = &r->req;

    if (r->bs_depth) {
        r->bs_depth_n = q->nr_extents;
        return false;
    }
    r->bs_alloc_n = q->nr_extents;
    if (!c->meta_depth)
        return false;
    r->bs_depth = true;
    ng_req_init(q, NG_OP_BLOCK_STATUS, r->offset, r->length,
                request_ng_flags(r->cmd, r->flags));
    q->nr_extents = 0;
    q->done = conn_req_done;
    q->opaque = r;
    conn_bs_extents(r);
    c->in_graph++;
    ng_bb_submit(c->exp->bb, q);
    return true;
}

static void
conn_req_done(struct ng_req *q, int ret)
{
    struct nbd_req *r = q->opaque;
    struct nbd_conn *c = r->conn;

    c->in_graph--;
    if (c->dead) {
        nbd_req_put(r);
        conn_after_release(c);
        return;
    }
    if (ret < 0) {
        reply_error(r, nbd_error_from_errno(-ret, r));
        return;
    }
    if (r->cmd == NBD_CMD_BLOCK_STATUS && conn_bs_next(c, r))
        return;
    reply_success(r);
}

/* ---- Sending ------------------------------------------------------------- */

static void conn_submit_next_piece(struct nbd_conn *c, struct nbd_req *r);

/* A reply has left: release its request, or read a streamed READ's
 * next piece into the same buffer. */
static void
reply_sent(struct nbd_conn *c, struct nbd_req *r)
{
    if (r->stream_more && !c->dead)
        conn_submit_next_piece(c, r);
    else
        nbd_req_put(r);
}

/* Release the replies at the head of the write queue that `sent` bytes
 * cover completely; returns the bytes of a partly sent one. */
static size_t
release_sent(struct nbd_conn *c, size_t sent)
{
    while (c->wq_head != NULL) {
        struct nbd_req *r = c->wq_head;
        size_t size = r->hdr_len + (size_t)r->payload_len;

        if (sent < size)
            return sent;
        sent -= size;
        c->wq_head = r->next;
        reply_sent(c, r);
    }
    c->wq_tail = NULL;
    return 0;
}

static void
conn_write_cb(uv_write_t *w, int status)
{
    struct nbd_conn *c = w->data;

    c->writing = false;
    if (status == 0)
        release_sent(c, SIZE_MAX);      /* all of it went */
    else
        release_list(&c->wq_head, &c->wq_tail);
    if (nbd_conn_write_failed(c, status))
        return;
    c->active_at = uv_now(c->srv->loop);
    nbd_conn_flush(c);
    conn_after_release(c);
}

/* Move up to NBD_IOV_BATCH buffers' worth of replies to the write queue
 * and describe them in c->iov; returns the number of buffers. */
static unsigned
collect_replies(struct nbd_conn *c)
{
    unsigned n = 0;

    while (c->rq_head != NULL && n + 2 <= NBD_IOV_BATCH) {
        struct nbd_req *r = c->rq_head;

        c->rq_head = r->next;
        r->next = NULL;
        if (c->wq_tail != NULL)
            c->wq_tail->next = r;
        else
            c->wq_head = r;
        c->wq_tail = r;
        c->iov[n++] = uv_buf_init((char *)r->hdr, r->hdr_len);
        if (r->payload_len > 0)
            c->iov[n++] = uv_buf_init((char *)r->payload, r->payload_len);
    }
    if (c->rq_head == NULL)
        c->rq_tail = NULL;
    return n;
}

/* Skip `sent` bytes of iov[0..n); returns the index of the first buffer
 * with bytes left (trimmed in place). */
static unsigned
iov_advance(uv_buf_t *iov, unsigned n, size_t sent)
{
    unsigned i = 0;

    while (i < n && sent >= iov[i].len) {
        sent -= iov[i].len;
        i++;
    }
    if (i < n) {
        iov[i].base += sent;
        iov[i].len -= sent;
    }
    return i;
}

/* TLS: a batch is encrypted whole (and its replies released); past
 * NBD_TLS_BACKLOG_MAX of ciphertext waiting, `writing` holds further
 * batches until nbd_conn_tls_written sees it drain.  -1: dropped. */
static int
conn_flush_tls(struct nbd_conn *c, unsigned n)
{
    if (ng_tls_send(c->tls, c->iov, n) < 0) {
        nbd_conn_abort(c);
        return -1;
    }
    release_sent(c, SIZE_MAX);
    if (ng_tls_backlog(c->tls) > NBD_TLS_BACKLOG_MAX)
        c->writing = true;
    return 0;
}

static void
conn_tls_written(void *opaque, int status)
{
    struct nbd_conn *c = opaque;

    if (nbd_conn_write_failed(c, status))
        return;
    if (c->writing && ng_tls_backlog(c->tls) <= NBD_TLS_BACKLOG_MAX / 2) {
        c->writing = false;
        c->active_at = uv_now(c->srv->loop);
        nbd_conn_flush(c);
        conn_after_release(c);
        return;
    }
    nbd_conn_maybe_close(c);
}

int
nbd_conn_start_tls(struct nbd_conn *c)
{
    nbd_hs_flush(c);                /* the ACK, in the clear */
    if (c->dead)
        return -1;
    c->tls = ng_tls_new(c->tls_creds, &c->h.stream, c->peer,
                        conn_tls_written, c);
    if (c->tls == NULL) {
        nbd_conn_abort(c);
        return -1;
    }
    /* A client should wait for the ACK; what it sent anyway is TLS. */
    if (ng_tls_in_put(c->tls, c->rbuf + c->rstart, c->rend - c->rstart)) {
        ng_log_warn("%s: too much data after STARTTLS; dropping client",
                    c->peer);
        nbd_conn_abort(c);
        return -1;
    }
    c->rstart = c->rend;
    return 0;
}

void
nbd_conn_flush(struct nbd_conn *c)
{
    bool released = false;

    while (!c->writing && !c->dead && c->rq_head != NULL) {
        unsigned n = collect_replies(c), first;
        int sent;

        if (c->tls != NULL) {
            if (conn_flush_tls(c, n) < 0)
                return;
            released = true;
            continue;
        }
        sent = uv_try_write(&c->h.stream, c->iov, n);

        if (sent == UV_EAGAIN)
            sent = 0;
        if (sent < 0) {
            ng_log_debug("%s: write: %s", c->peer, uv_strerror(sent));
            nbd_conn_abort(c);
            return;
        }
        released = true;
        if (release_sent(c, (size_t)sent) == 0 && c->wq_head == NULL)
            continue;
        first = iov_advance(c->iov, n, (size_t)sent);
        c->wreq.data = c;
        sent = uv_write(&c->wreq, &c->h.stream, c->iov + first, n - first,
                        conn_write_cb);
        if (sent < 0) {
            ng_log_debug("%s: write: %s", c->peer, uv_strerror(sent));
            nbd_conn_abort(c);
            return;
        }
        c->writing = true;
    }
    if (released) {
        c->active_at = uv_now(c->srv->loop);
        conn_after_release(c);
    }
}

/* ---- Flushing once per loop iteration ------------------------------------ */

/* Replies completed during one loop iteration go out together: one
 * writev per connection.  Most complete in the poll phase (our read
 * callbacks, thread-pool completions); the check handle, which runs
 * right after it, sends them.  Some complete in a timer callback (a
 * throttle releasing requests, the end of a drained section): the idle
 * handle, which also keeps the coming poll from blocking, sends those
 * before the loop would go to sleep on them. */
static void
flush_dirty(struct ng_nbd_server *srv)
{
    while (srv->dirty != NULL) {
        struct nbd_conn *c = srv->dirty;

        srv->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        nbd_conn_flush(c);
    }
    uv_check_stop(&srv->flush_check);
    uv_idle_stop(&srv->flush_idle);
}

static void
flush_check_cb(uv_check_t *check)
{
    flush_dirty(check->data);
}

static void
flush_idle_cb(uv_idle_t *idle)
{
    flush_dirty(idle->data);
}

void
nbd_mark_dirty(struct nbd_conn *c)
{
    struct ng_nbd_server *srv = c->srv;

    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = srv->dirty;
    srv->dirty = c;
    if (!srv->handles_closing) {
        uv_check_start(&srv->flush_check, flush_check_cb);
        uv_idle_start(&srv->flush_idle, flush_idle_cb);
    }
}

void
nbd_unmark_dirty(struct ng_nbd_server *srv, struct nbd_conn *c)
{
    struct nbd_conn **pp = &srv->dirty;

    if (!c->dirty)
        return;
    while (*pp != c)
        pp = &(*pp)->dirty_next;
    *pp = c->dirty_next;
    c->dirty = false;
    c->dirty_next = NULL;
}

/* ---- Transmission: requests ---------------------------------------------- */

static bool
cmd_changes_data(uint16_t cmd)
{
    return cmd == NBD_CMD_WRITE || cmd == NBD_CMD_TRIM ||
           cmd == NBD_CMD_WRITE_ZEROES;
}

/* The checks the spec asks of the server, in the order that gives each
 * case the error the spec names.  Returns an NBD error or 0. */
static uint32_t
request_check(const struct nbd_conn *c, uint16_t cmd, uint16_t flags,
              uint64_t offset, uint64_t length)
{
    uint16_t allowed = NBD_CMD_FLAG_FUA, needs = 0;

    switch (cmd) {
    case NBD_CMD_READ:
        allowed |= NBD_CMD_FLAG_DF;
        break;
    case NBD_CMD_WRITE:
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_FLUSH:
        needs = NBD_FLAG_SEND_FLUSH;
        break;
    case NBD_CMD_TRIM:
        needs = NBD_FLAG_SEND_TRIM;
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        needs = NBD_FLAG_SEND_WRITE_ZEROES;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    default:
        return NBD_EINVAL;
    }
    if (cmd_changes_data(cmd) && (c->tflags & NBD_FLAG_READ_ONLY))
        return NBD_EPERM;
    if (!(c->tflags & NBD_FLAG_SEND_FUA))
        allowed &= (uint16_t)~NBD_CMD_FLAG_FUA;
    if (!(c->tflags & NBD_FLAG_SEND_DF))
        allowed &= (uint16_t)~NBD_CMD_FLAG_DF;
    if (!(c->tflags & NBD_FLAG_SEND_FAST_ZERO))
        allowed &= (uint16_t)~NBD_CMD_FLAG_FAST_ZERO;
    if ((flags & ~allowed) != 0 || (c->tflags & needs) != needs)
        return NBD_EINVAL;
    if (cmd == NBD_CMD_BLOCK_STATUS && !c->meta_allocation &&
        !c->meta_depth && c->meta_bitmaps == 0)
        return NBD_EINVAL;
    if (cmd == NBD_CMD_FLUSH)
        return offset == 0 && length == 0 ? 0 : NBD_EINVAL;
    if (length == 0)
        return NBD_EINVAL;
    /* With extended headers a READ's length is an effect length, which
     * the spec lets us refuse as too large with EOVERFLOW. */
    if ((cmd == NBD_CMD_READ || cmd == NBD_CMD_WRITE) &&
        length > c->srv->max_request)
        return c->extended && cmd == NBD_CMD_READ ? NBD_EOVERFLOW
                                                  : NBD_EINVAL;
    if (offset > c->size || length > c->size - offset)
        return cmd == NBD_CMD_WRITE || cmd == NBD_CMD_WRITE_ZEROES
               ? NBD_ENOSPC : NBD_EINVAL;
    return 0;
}

/* See NBD_STREAM_PIECE.  DF asks for the data in one chunk. */
static bool
request_streams(const struct nbd_conn *c, uint16_t cmd, uint16_t flags,
                uint64_t length)
{
    return cmd == NBD_CMD_READ && c->structured &&
           !(flags & NBD_CMD_FLAG_DF) && length > NBD_STREAM_PIECE;
}

/* For a request that passed request_check(): a READ or WRITE is at most
 * max-request. */
static uint32_t
request_buf_len(uint16_t cmd, uint64_t length)
{
    switch (cmd) {
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
        return (uint32_t)length;
    case NBD_CMD_BLOCK_STATUS:
        return NBD_BS_BUF_SIZE;
    default:
        return 0;
    }
}

static enum ng_op
request_op(uint16_t cmd)
{
    switch (cmd) {
    case NBD_CMD_READ:          return NG_OP_READ;
    case NBD_CMD_WRITE:         return NG_OP_WRITE;
    case NBD_CMD_FLUSH:         return NG_OP_FLUSH;
    case NBD_CMD_TRIM:          return NG_OP_TRIM;
    case NBD_CMD_CACHE:         return NG_OP_CACHE;
    case NBD_CMD_WRITE_ZEROES:  return NG_OP_WRITE_ZEROES;
    default:                    return NG_OP_BLOCK_STATUS;
    }
}

static uint32_t
request_ng_flags(uint16_t cmd, uint16_t flags)
{
    uint32_t f = 0;

    /* FUA is accepted on every command but only means something where
     * data is written. */
    if ((flags & NBD_CMD_FLAG_FUA) && cmd_changes_data(cmd))
        f |= NG_REQ_FUA;
    if (cmd == NBD_CMD_WRITE_ZEROES) {
        if (!(flags & NBD_CMD_FLAG_NO_HOLE))
            f |= NG_REQ_MAY_TRIM;
        if (flags & NBD_CMD_FLAG_FAST_ZERO)
            f |= NG_REQ_FAST_ZERO;
    }
    if (cmd == NBD_CMD_BLOCK_STATUS && (flags & NBD_CMD_FLAG_REQ_ONE))
        f |= NG_REQ_REQ_ONE;
    return f;
}

/* Where a BLOCK_STATUS's graph request puts its extents: the
 * allocation-depth ones after base:allocation's. */
static void
conn_bs_extents(struct nbd_req *r)
{
    struct ng_req *q = &r->req;

    q->extents = (struct ng_extent *)(void *)r->buf +
                 (r->bs_depth ? NBD_BS_DEPTH_OFFSET : 0);
    q->max_extents = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS;
    if (r->bs_depth)
        q->flags |= NG_REQ_ALLOC_DEPTH;
}

static void
conn_submit(struct nbd_conn *c, struct nbd_req *r)
{
    struct ng_req *q = &r->req;

    ng_req_init(q, request_op(r->cmd), r->offset + r->piece_off,
                r->piece_len, request_ng_flags(r->cmd, r->flags));
    ng_req_set_buf(q, r->buf);
    q->extents = NULL;
    q->max_extents = 0;
    q->nr_extents = 0;
    q->done = conn_req_done;
    q->opaque = r;
    if (r->cmd == NBD_CMD_BLOCK_STATUS) {
        r->bs_alloc_n = r->bs_depth_n = 0;
        r->bs_depth = !c->meta_allocation;
        if (r->bs_depth && !c->meta_depth) {
            reply_success(r);       /* bitmaps only: the graph has
                                     * nothing to say */
            return;
        }
        conn_bs_extents(r);
    }
    c->in_graph++;
    ng_bb_submit(c->exp->bb, q);
}

static void
conn_submit_next_piece(struct nbd_conn *c, struct nbd_req *r)
{
    uint32_t left;

    r->stream_more = false;
    r->piece_off += r->piece_len;
    left = r->length - r->piece_off;
    r->piece_len = left < NBD_STREAM_PIECE ? left : NBD_STREAM_PIECE;
    conn_submit(c, r);
}

/* A WRITE takes what of its payload is buffered; the rest is read
 * straight into its buffer (see conn_alloc_cb). */
static void
conn_take_payload(struct nbd_conn *c, struct nbd_req *r)
{
    size_t avail = c->rend - c->rstart;
    size_t n = avail < r->length ? avail : r->length;

    memcpy(r->buf, c->rbuf + c->rstart, n);
    c->rstart += n;
    if (n == r->length) {
        conn_submit(c, r);
        return;
    }
    c->payload_req = r;
    c->payload_got = (uint32_t)n;
}

/* A WRITE whose whole payload is already in the receive buffer is used
 * there, so the payload is copied once only, by the driver. */
static bool
payload_buffered(const struct nbd_conn *c, uint16_t cmd, uint64_t length)
{
    return cmd == NBD_CMD_WRITE && length > 0 &&
           c->rend - c->rstart >= length;
}

static void
conn_payload_in_place(struct nbd_conn *c, struct nbd_req *r)
{
    r->buf = c->rbuf + c->rstart;
    r->rb = c->rb;
    c->rb->refs++;
    c->nbytes += r->length;
    c->rstart += r->length;
    conn_submit(c, r);
}

/* The largest refused WRITE whose payload we read and throw away. */
static uint64_t
max_discard(const struct nbd_conn *c)
{
    uint64_t twice = 2 * (uint64_t)c->srv->max_request;

    return twice > NBD_MAX_DISCARD ? twice : NBD_MAX_DISCARD;
}

/* A request header as it came: compact (28 bytes, a payload only for
 * WRITE) or extended (32 bytes, a 64-bit length that is the payload's
 * when NBD_CMD_FLAG_PAYLOAD_LEN is set, else the effect length). */
struct wire_req {
    uint16_t flags, cmd;
    uint64_t offset, length;
    bool has_payload;
    bool magic_ok;                  /* the magic negotiated */
};

/* Returns w->magic_ok. */
static inline bool
request_decode(const struct nbd_conn *c, const uint8_t *p,
               struct wire_req *w)
{
    w->flags = nbd_get16(p + 4);
    w->cmd = nbd_get16(p + 6);
    w->offset = nbd_get64(p + 16);
    if (!c->extended) {
        w->length = nbd_get32(p + 24);
        w->has_payload = w->cmd == NBD_CMD_WRITE;
        w->magic_ok = nbd_get32(p) == NBD_REQUEST_MAGIC;
        return w->magic_ok;
    }
    w->length = nbd_get64(p + 24);
    w->has_payload = (w->flags & NBD_CMD_FLAG_PAYLOAD_LEN) != 0;
    w->flags &= (uint16_t)~NBD_CMD_FLAG_PAYLOAD_LEN;
    w->magic_ok = nbd_get32(p) == NBD_EXTENDED_REQUEST_MAGIC;
    return w->magic_ok;
}

/* Extended headers: a WRITE must say it has a payload (without the flag
 * there is none to read, so the framing holds), and no other command
 * takes one (it is read and thrown away first). */
static uint32_t
request_check_payload(const struct nbd_conn *c, const struct wire_req *w)
{
    if (!c->extended)
        return 0;
    return (w->cmd == NBD_CMD_WRITE) == w->has_payload ? 0 : NBD_EINVAL;
}

/* A payload we would not even read and throw away: with extended
 * headers one above max-request (the spec asks for a hard disconnect),
 * otherwise a refused WRITE above max_discard(). */
static bool
request_payload_too_big(const struct nbd_conn *c, const struct wire_req *w,
                        uint32_t error)
{
    if (!w->has_payload)
        return false;
    if (c->extended)
        return w->length > c->srv->max_request;
    return error != 0 && w->length > max_discard(c);
}

/* The request whose header `p` conn_parse() decoded into `w`. */
static void
conn_handle_request(struct nbd_conn *c, const uint8_t *p,
                    const struct wire_req *w)
{
    struct nbd_req *r;
    uint32_t error;
    bool streams;

    if (!w->magic_ok) {
        ng_log_warn("%s: bad request magic; dropping client", c->peer);
        nbd_conn_abort(c);
        return;
    }
    if (w->cmd == NBD_CMD_DISC) {
        ng_log_debug("%s: client disconnects", c->peer);
        nbd_conn_close_gracefully(c);
        return;
    }
    error = request_check_payload(c, w);
    if (error == 0)
        error = request_check(c, w->cmd, w->flags, w->offset, w->length);
    if (error == 0 && c->srv->shutting_down)
        error = NBD_ESHUTDOWN;      /* a WRITE's payload is read and
                                     * dropped first, as for any error */
    if (request_payload_too_big(c, w, error)) {
        ng_log_warn("%s: request with a payload of %" PRIu64 " bytes "
                    "refused; dropping client", c->peer, w->length);
        nbd_conn_abort(c);
        return;
    }
    streams = error == 0 && request_streams(c, w->cmd, w->flags, w->length);
    r = nbd_req_get(c, error != 0 || payload_buffered(c, w->cmd, w->length)
                       ? 0 : streams ? NBD_STREAM_PIECE
                       : request_buf_len(w->cmd, w->length));
    if (r == NULL && error == 0) {
        error = NBD_ENOMEM;
        r = nbd_req_get(c, 0);
    }
    if (r == NULL) {
        ng_log_error("%s: out of memory; dropping client", c->peer);
        nbd_conn_abort(c);
        return;
    }
    memcpy(r->handle, p + 8, 8);
    r->cmd = w->cmd;
    r->flags = w->flags;
    r->offset = w->offset;
    r->length = w->length;
    r->piece_off = 0;
    r->piece_len = streams ? NBD_STREAM_PIECE : w->length;
    r->stream_more = false;
    if (error != 0 && w->has_payload && w->length > 0) {
        c->skip = w->length;        /* read and thrown away, then answered */
        c->skip_reply = r;
        reply_prepare_error(r, error);
    } else if (error != 0) {
        reply_error(r, error);
    } else if (w->cmd == NBD_CMD_WRITE && r->buf == NULL) {
        conn_payload_in_place(c, r);
    } else if (w->cmd == NBD_CMD_WRITE) {
        conn_take_payload(c, r);
    } else {
        conn_submit(c, r);
    }
}

/* ---- Parsing ------------------------------------------------------------- */

/* The size of the request at rstart, header `w` (`hdr` bytes), when it
 * is a small WRITE (at most NBD_INLINE_PAYLOAD_MAX and max-request)
 * whose payload has not all come: it is handled only once the rest is
 * in the receive buffer too.  0 otherwise -- a bad magic, a DISC, any
 * other command and a refused large payload are handled as soon as
 * their header is there. */
static size_t
write_waiting(const struct nbd_conn *c, const struct wire_req *w, size_t hdr)
{
    if (w->cmd != NBD_CMD_WRITE || !w->has_payload || !w->magic_ok ||
        w->length > NBD_INLINE_PAYLOAD_MAX ||
        w->length > c->srv->max_request ||
        c->rend - c->rstart >= hdr + w->length)
        return 0;
    return hdr + (size_t)w->length;
}

/* write_waiting() for whatever is at rstart. */
static size_t
conn_partial_write(const struct nbd_conn *c)
{
    size_t hdr = c->extended ? NBD_EXT_REQUEST_SIZE : NBD_REQUEST_SIZE;
    struct wire_req w;

    if (c->phase != NBD_PHASE_TRANSMISSION || c->payload_req != NULL ||
        c->skip > 0 || c->rend - c->rstart < hdr)
        return 0;
    request_decode(c, c->rbuf + c->rstart, &w);
    return write_waiting(c, &w, hdr);
}

/* Throw away payload of a refused WRITE; false while more is to come. */
static bool
conn_skip(struct nbd_conn *c)
{
    size_t avail = c->rend - c->rstart;
    size_t n = c->skip < avail ? (size_t)c->skip : avail;

    c->rstart += n;
    c->skip -= n;
    if (c->skip > 0)
        return false;
    if (c->skip_reply != NULL) {
        conn_queue_reply(c, c->skip_reply);
        c->skip_reply = NULL;
    }
    return true;
}

static void
conn_parse(struct nbd_conn *c)
{
    struct wire_req w;
    const uint8_t *p;
    size_t hdr;

    if (c->parsing)
        return;
    c->parsing = true;
    while (!c->stop_parsing && c->payload_req == NULL) {
        if (c->skip > 0 && !conn_skip(c))
            break;
        if (c->phase == NBD_PHASE_HANDSHAKE) {
            if (c->rend == c->rstart || nbd_hs_parse(c) <= 0)
                break;
            continue;
        }
        hdr = c->extended ? NBD_EXT_REQUEST_SIZE : NBD_REQUEST_SIZE;
        if (conn_throttled(c) || c->rend - c->rstart < hdr)
            break;
        p = c->rbuf + c->rstart;
        request_decode(c, p, &w);
        if (write_waiting(c, &w, hdr) > 0)
            break;
        c->rstart += hdr;
        conn_handle_request(c, p, &w);
    }
    c->parsing = false;
    nbd_hs_flush(c);
    nbd_conn_maybe_close(c);
}

/* ---- Starting ------------------------------------------------------------ */

void
nbd_conn_start(struct nbd_conn *c)
{
    ng_log_debug("%s: new connection", c->peer);
    nbd_hs_greet(c);
    nbd_hs_flush(c);
    conn_update_reading(c);
}

/* The NG_CAP_* a client told `tflags` counts on: graph changes must not
 * take them away while it is connected.  Block status counts when the
 * client chose base:allocation and the graph gave real extents. */
static uint32_t
tflags_promised_caps(const struct nbd_conn *c, uint16_t tflags,
                     uint32_t bb_caps)
{
    static const struct { uint16_t flag; uint32_t cap; } told[] = {
        { NBD_FLAG_SEND_FLUSH, NG_CAP_FLUSH },
        { NBD_FLAG_SEND_FUA, NG_CAP_FUA },
        { NBD_FLAG_SEND_TRIM, NG_CAP_TRIM },
        { NBD_FLAG_SEND_WRITE_ZEROES, NG_CAP_ZERO },
        { NBD_FLAG_SEND_FAST_ZERO, NG_CAP_FAST_ZERO },
        { NBD_FLAG_SEND_CACHE, NG_CAP_CACHE },
    };
    uint32_t caps = 0;
    size_t i;

    for (i = 0; i < sizeof told / sizeof told[0]; i++)
        if (tflags & told[i].flag)
            caps |= told[i].cap;
    /* A read-only export says multi-conn whatever the graph offers. */
    if (!(tflags & NBD_FLAG_READ_ONLY))
        caps |= NG_CAP_WRITE | ((tflags & NBD_FLAG_CAN_MULTI_CONN)
                                ? NG_CAP_MULTI_CONN : 0);
    if (c->meta_allocation)
        caps |= NG_CAP_EXTENTS;
    return caps & bb_caps;
}

void
nbd_conn_enter_transmission(struct nbd_conn *c, struct ng_nbd_export *exp,
                            uint64_t size, uint16_t tflags)
{
    c->phase = NBD_PHASE_TRANSMISSION;
    c->exp = exp;
    c->size = size;
    c->tflags = tflags;
    c->promised = tflags_promised_caps(c, tflags, ng_bb_caps(exp->bb));
    ng_bb_promise(exp->bb, size, c->promised);
    nbd_export_conn_added(exp);
    ng_log_debug("%s: export '%s', %" PRIu64 " bytes, flags 0x%x%s",
                 c->peer, exp->name, size, tflags,
                 c->extended ? ", extended headers"
                 : c->structured ? ", structured replies" : "");
}
