/* graph/drv-qcow2.c: "qcow2", the QEMU copy-on-write image format on a
 * `file` child, with an optional `backing` child (graph/qcow2.h has the
 * layout of the code).
 *
 * Every request runs as a chain of sub-requests to the file or backing
 * node, one at a time (struct qcow2_seq), over the in-memory tables:
 * a read maps one run of clusters after the other; a write writes a run
 * in place, or into newly allocated clusters, copying the rest of a
 * partial cluster from where its data was (backing, compressed cluster)
 * first, and only then points the L2 entries at the new clusters, so a
 * read meanwhile still sees the old data.  Requests that change data
 * hold their guest clusters; an overlapping one waits for them, in
 * arrival order.  Flush writes the changed tables back in order
 * (qcow2-cache.c) and flushes the file.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "graph/qcow2.h"
#include "graph/drivers.h"

enum io_phase {
    IO_START,           /* not begun (or woken from the wait list) */
    IO_READ,            /* read engine: next run */
    IO_DECOMPRESS,      /* read engine: compressed bytes are in */
    IO_NEXT,            /* modify engine: next piece */
    IO_IN_PLACE,        /* modify: a write to allocated clusters */
    IO_NEW,             /* modify: a write to new clusters */
    IO_BS_BACKING,      /* block status asked the backing */
};

struct qcow2_io {
    struct qcow2_seq seq;           /* first: the step casts back */
    struct qcow2_state *s;
    struct ng_req *req;
    enum io_phase phase;
    uint64_t pos;                   /* bytes of req done */
    uint64_t c0, c1;                /* guest clusters held: [c0, c1) */
    struct qcow2_io *lock_next;

    /* The read engine's target: req's range, or the old contents of the
     * cluster a partial write copies (the bounce). */
    uint64_t rd_off, rd_len, rd_pos;
    struct ng_iov rd_iov;
    struct iovec rd_one;
    bool cow;                       /* reading for a copy */
    uint64_t dc_at, dc_len;         /* decompress: where in rd, how much */
    uint64_t dc_in;                 /* ... from this byte of the cluster */

    /* Write-zeroes in place: a view of one cluster of zero_buf.  Here,
     * not on the stack: the sub-request's view points into it until the
     * write completes, on a worker maybe, long after the step returned. */
    struct iovec zero_one;
    struct ng_iov zero_view;

    unsigned char *bounce;          /* cluster_size */
    unsigned char *cbuf;            /* compressed bytes */
    uint64_t new_gc, new_n, new_host;   /* IO_NEW: what to map */
};

static const struct ng_opt_desc qcow2_opts[] = {
    NG_OPT_CHILD("file", struct qcow2_state, file, NG_ROLE_FILE, true,
                 "the node holding the image"),
    NG_OPT_CHILD_NULLABLE("backing", struct qcow2_state, backing,
                          backing_null, NG_ROLE_BACKING,
                          "node whose data shows where the image has none; "
                          "null for none"),
    NG_OPT_CHILD("data-file", struct qcow2_state, data, NG_ROLE_FILE, false,
                 "the node holding the data of an image with an external "
                 "data file (default: the file the header names)"),
    NG_OPT_VALUE("cache-size", struct qcow2_state, opt_cache_size, false,
                 "most bytes of L2 tables and refcount blocks cached, "
                 "together (QEMU's rules split it)"),
    NG_OPT_VALUE("l2-cache-size", struct qcow2_state, opt_l2_cache_size,
                 false, "most bytes of L2 tables cached (default: enough "
                 "for the whole image, at most 32M)"),
    NG_OPT_VALUE("refcount-cache-size", struct qcow2_state,
                 opt_rc_cache_size, false, "most bytes of refcount blocks "
                 "cached (default: 4 clusters)"),
    NG_OPT_INT("cache-clean-interval", struct qcow2_state,
               cache_clean_interval, "600", "seconds after which unused "
               "cached tables are dropped; 0 for never"),
    NG_OPT_END,
};

/* ---- Small helpers ------------------------------------------------------ */

static uint64_t
min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Bytes of [off, off + len) the backing node has. */
static uint64_t
backing_span(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
    int64_t blen = ng_node_length(s->backing);

    if (blen < 0 || off >= (uint64_t)blen)
        return 0;
    return min64(len, (uint64_t)blen - off);
}

static void
submit_view(struct qcow2_io *io, struct ng_node *to, enum ng_op op,
            uint64_t off, uint64_t len, const struct ng_iov *v, uint64_t at)
{
    struct qcow2_seq *q = &io->seq;

    ng_req_init(&q->sub, op, off, len, q->flags);
    ng_iov_slice(v, at, &q->sub.iov);
    qcow2_seq_submit_prepared(q, to);
}

static bool unlock_and_complete(struct qcow2_io *io, int ret);

/* A table operation failed with r: -EAGAIN means it needs a table that
 * is not in memory, so wait for it (true: the step returns and runs
 * again once it is in); anything else fails the request. */
static bool
wait_or_fail(struct qcow2_io *io, int r)
{
    struct qcow2_state *s = io->s;

    if (r == -EAGAIN &&
        !qcow2_cache_ready(s, s->need_cache, s->need_idx, &io->seq))
        return true;
    /* Ready after -EAGAIN would loop: cannot happen, but fail safe. */
    return unlock_and_complete(io, r == -EAGAIN ? -EIO : r);
}

/* Host data [host, host + len) for guest `off`: a cluster-aligned place
 * (at the same offset into its cluster) inside the file holding the data
 * (the image, or its data file); else the image is marked corrupt
 * (qcow2-corrupt.c). */
static bool
data_ok(struct qcow2_state *s, uint64_t off, uint64_t host, uint64_t len)
{
    uint64_t in = off & (s->cluster_size - 1);
    uint64_t size = s->data != NULL ? s->data_size : s->file_size;

    if ((host & (s->cluster_size - 1)) == in && host <= size &&
        len <= size - host)
        return true;
    qcow2_signal_corruption(s, (int64_t)(host - in), (int64_t)len,
                            "data cluster for guest offset %" PRIu64
                            " at %" PRIu64 " is unaligned or past the end "
                            "of the %s (%" PRIu64 " bytes)", off, host - in,
                            s->data != NULL ? "data file" : "file", size);
    return false;
}

/* Data for guest `off` may be written to [host, host + len): the place
 * is sane and holds no metadata; else the image is marked corrupt. */
static bool
write_ok(struct qcow2_state *s, uint64_t off, uint64_t host, uint64_t len)
{
    const char *what;

    if (!data_ok(s, off, host, len))
        return false;
    /* An external data file holds no metadata: the tables are all in
     * the image file. */
    if (s->data != NULL || (what = qcow2_meta_overlap(s, host, len)) == NULL)
        return true;
    qcow2_signal_corruption(s, (int64_t)host, (int64_t)len, "a write to "
                            "guest offset %" PRIu64 " would overwrite %s",
                            off, what);
    return false;
}

static void
flush_done(void *opaque, int ret)
{
    ng_req_complete(opaque, ret);
}

/* ---- Read engine -------------------------------------------------------- */

static int
decompress(const struct qcow2_state *s, const unsigned char *in, size_t inlen,
           unsigned char *out)
{
    z_stream z = { 0 };
    int r;

    if (inflateInit2(&z, -12) != Z_OK)
        return -ENOMEM;
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)inlen;
    z.next_out = out;
    z.avail_out = (uInt)s->cluster_size;
    r = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    /* As QEMU: a stream that fills the cluster is good, ended or not. */
    if ((r != Z_STREAM_END && r != Z_BUF_ERROR) || z.avail_out != 0)
        return -EIO;
    return 0;
}

/* Run the read engine; false once the target range is done (then the
 * caller continues) or the request was completed with an error (then
 * *failed). */
static bool
read_engine(struct qcow2_io *io, bool *failed)
{
    struct qcow2_state *s = io->s;
    struct qcow2_map m;

    *failed = false;
    if (io->phase == IO_DECOMPRESS) {
        int r = decompress(s, io->cbuf, io->dc_len, io->bounce);

        if (r < 0) {
            ng_node_warn(s->node, "cannot decompress a compressed cluster");
            *failed = true;
            return unlock_and_complete(io, r);
        }
        if (!io->cow)
            ng_iov_from_buf(&io->rd_iov, io->dc_at, io->bounce + io->dc_in,
                            io->rd_pos - io->dc_at);
        io->phase = IO_READ;
    }
    while (io->rd_pos < io->rd_len) {
        uint64_t at = io->rd_pos, off = io->rd_off + at;

        if (!qcow2_l2_ready(s, off, &io->seq))
            return true;            /* resumed once the table is in */
        qcow2_map(s, off, io->rd_len - at, &m);
        io->rd_pos += m.len;
        switch (m.kind) {
        case QCOW2_UNLOADED:        /* not reached: the table is ready */
            *failed = true;
            return unlock_and_complete(io, -EIO);
        case QCOW2_ZERO:
            ng_iov_memset(&io->rd_iov, at, 0, m.len);
            continue;
        case QCOW2_UNALLOC: {
            uint64_t span = s->backing ? backing_span(s, off, m.len) : 0;

            ng_iov_memset(&io->rd_iov, at + span, 0, m.len - span);
            if (span == 0)
                continue;
            submit_view(io, s->backing, NG_OP_READ, off, span, &io->rd_iov,
                        at);
            return true;
        }
        case QCOW2_DATA:
            if (!data_ok(s, off, m.host, m.len)) {
                *failed = true;
                return unlock_and_complete(io, -EIO);
            }
            submit_view(io, s->dfile, NG_OP_READ, m.host, m.len, &io->rd_iov,
                        at);
            return true;
        case QCOW2_COMPRESSED: {
            uint64_t csize = m.csize;

            if (m.host >= s->file_size) {
                qcow2_signal_corruption(s, (int64_t)m.host, (int64_t)csize,
                                        "compressed cluster for guest "
                                        "offset %" PRIu64 " lies past the "
                                        "end of the file", off);
                *failed = true;
                return unlock_and_complete(io, -EIO);
            }
            csize = min64(csize, s->file_size - m.host);
            if (io->cbuf == NULL &&
                (io->cbuf = malloc(s->cluster_size + 512)) == NULL) {
                *failed = true;
                return unlock_and_complete(io, -ENOMEM);
            }
            if (io->bounce == NULL &&
                (io->bounce = malloc(s->cluster_size)) == NULL) {
                *failed = true;
                return unlock_and_complete(io, -ENOMEM);
            }
            csize = min64(csize, s->cluster_size + 512);
            /* A copy reads whole clusters into the bounce, which is
             * where the cluster decompresses to: nothing to place. */
            io->dc_at = at;
            io->dc_in = off & (s->cluster_size - 1);
            io->dc_len = csize;
            io->phase = IO_DECOMPRESS;
            qcow2_seq_submit(&io->seq, s->file, NG_OP_READ, m.host, csize,
                             io->cbuf);
            return true;
        }
        }
    }
    return false;
}

/* ---- Locking ------------------------------------------------------------ */

static bool
overlaps(const struct qcow2_io *a, const struct qcow2_io *b)
{
    return a->c0 < b->c1 && b->c0 < a->c1;
}

static bool
lock_conflict(const struct qcow2_state *s, const struct qcow2_io *io,
              const struct qcow2_io *stop)
{
    for (const struct qcow2_io *o = s->locked; o != NULL; o = o->lock_next)
        if (overlaps(o, io))
            return true;
    /* Earlier waiters first. */
    for (const struct qcow2_io *o = s->waiting; o != stop && o != NULL;
         o = o->lock_next)
        if (overlaps(o, io))
            return true;
    return false;
}

static void
list_remove(struct qcow2_io **head, struct qcow2_io *io)
{
    for (; *head != NULL; head = &(*head)->lock_next)
        if (*head == io) {
            *head = io->lock_next;
            io->lock_next = NULL;
            return;
        }
}

/* Start the waiters that no longer conflict, in order. */
static void
wake_waiters(struct qcow2_state *s)
{
    struct qcow2_io *io = s->waiting;

    while (io != NULL) {
        struct qcow2_io *next = io->lock_next;

        if (!lock_conflict(s, io, io)) {
            list_remove(&s->waiting, io);
            io->lock_next = s->locked;
            s->locked = io;
            qcow2_seq_run(&io->seq);
            io = s->waiting;        /* the lists may have changed */
            continue;
        }
        io = next;
    }
}

static bool
unlock_and_complete(struct qcow2_io *io, int ret)
{
    struct qcow2_state *s = io->s;
    struct ng_req *req = io->req;
    bool held = io->c1 > io->c0;

    free(io->bounce);
    free(io->cbuf);
    io->bounce = io->cbuf = NULL;
    if (held)
        list_remove(&s->locked, io);
    /* FUA: the data and the tables pointing to it on disk first. */
    if (ret == 0 && (req->flags & NG_REQ_FUA))
        qcow2_wb_flush(s, req->flags, flush_done, req);
    else
        ng_req_complete(req, ret);  /* io is gone */
    if (held)
        wake_waiters(s);
    return false;
}

/* ---- Reads -------------------------------------------------------------- */

static bool
read_step(struct qcow2_seq *q)
{
    struct qcow2_io *io = (struct qcow2_io *)q;
    bool failed;

    if (q->ret < 0)
        return unlock_and_complete(io, q->ret);
    if (read_engine(io, &failed))
        return true;
    if (failed)
        return false;
    return unlock_and_complete(io, 0);
}

/* ---- Writes, write-zeroes, trim ----------------------------------------- */

/* The L2 entry of guest cluster gc (its table exists). */
static uint64_t
l2_get(const struct qcow2_state *s, uint64_t gc)
{
    const unsigned char *t = qcow2_table(&s->l2c, gc / s->l2_entries);

    return t == NULL ? 0 : qcow2_get64(t, gc % s->l2_entries);
}

/* Set the entry, queueing the decrement of what it pointed to unless
 * `keep` says the host cluster stays (preallocated zero). */
static int
l2_set(struct qcow2_state *s, uint64_t gc, uint64_t e, bool keep)
{
    uint64_t old = l2_get(s, gc), l1i = gc / s->l2_entries;
    unsigned char *t = qcow2_table(&s->l2c, l1i);
    int r = 0;

    if (t == NULL)
        return -EIO;                /* callers load it first */
    if (old & QCOW2_OFLAG_COMPRESSED) {
        uint64_t x = 62 - (s->cluster_bits - 8);
        uint64_t coff = old & (((uint64_t)1 << x) - 1);
        uint64_t nsect = ((old & ~(3ull << 62)) >> x) + 1;

        r = qcow2_unref(s, coff & ~(uint64_t)511, nsect * 512);
    } else if ((old & QCOW2_OFFSET_MASK) != 0 && !keep && s->data == NULL) {
        /* (Clusters of a data file have no refcounts.) */
        r = qcow2_unref(s, old & QCOW2_OFFSET_MASK, s->cluster_size);
    }
    if (r < 0)
        return r;
    qcow2_set64(t, gc % s->l2_entries, e);
    s->l2c.slot[l1i].dirty = true;
    return 0;
}

/* Mark a whole cluster zero (write-zeroes) or discarded (trim), v3. */
static int
zero_cluster(struct qcow2_state *s, const struct ng_req *req, uint64_t gc)
{
    uint64_t old = l2_get(s, gc), host = old & QCOW2_OFFSET_MASK;
    bool allocated = host != 0 || (s->data != NULL &&
                                   (old & QCOW2_OFLAG_COPIED));
    bool keep = req->op == NG_OP_WRITE_ZEROES &&
                !(req->flags & NG_REQ_MAY_TRIM) &&
                !(old & QCOW2_OFLAG_COMPRESSED) && allocated;
    int r = 0;

    if (req->op == NG_OP_TRIM && s->backing == NULL &&
        qcow2_table(&s->l2c, gc / s->l2_entries) == NULL)
        return 0;                   /* no table (it is ready): zeroes */
    if (s->version < 3 && s->backing != NULL)
        return 0;       /* no zero flag: a trim may leave the data */
    if (qcow2_l2_for(s, gc, &r) == NULL)
        return r;
    if (req->op == NG_OP_TRIM && s->backing == NULL)
        return l2_set(s, gc, 0, false);
    return l2_set(s, gc, keep ? host | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO
                              : QCOW2_OFLAG_ZERO, keep);
}

/* Point n guest clusters from gc at the new host clusters. */
static int
map_new(struct qcow2_state *s, uint64_t gc, uint64_t n, uint64_t host)
{
    for (uint64_t i = 0; i < n; i++) {
        int r = l2_set(s, gc + i, (host + (i << s->cluster_bits)) |
                       QCOW2_OFLAG_COPIED, false);

        if (r < 0)
            return r;
    }
    return 0;
}

/* The data source of a modification: the request's, or zeroes. */
static const struct ng_iov *
source(struct qcow2_io *io)
{
    if (io->req->op == NG_OP_WRITE)
        return &io->req->iov;
    io->zero_one.iov_base = io->s->zero_buf;
    io->zero_one.iov_len = io->s->cluster_size;
    io->zero_view = (struct ng_iov){ .iov = &io->zero_one, .niov = 1 };
    return &io->zero_view;
}

/* A run of full clusters from gc that need new ones (at most n). */
static uint64_t
count_new(const struct qcow2_state *s, uint64_t gc, uint64_t n)
{
    uint64_t k = 0, in_table = s->l2_entries - gc % s->l2_entries;
    struct qcow2_map m;

    /* Only the table that is ready (and map_new sets one at a time). */
    if (n > in_table)
        n = in_table;
    for (; k < n; k++) {
        qcow2_map(s, (gc + k) << s->cluster_bits, s->cluster_size, &m);
        if (m.kind == QCOW2_DATA)
            break;
    }
    return k;
}

/* Host clusters for n guest clusters from gc (at most n, *got): new ones
 * in the image, or in a data file the same offsets as the guest's (as
 * QEMU places them; they have no refcounts).  UINT64_MAX with *ret on
 * failure. */
static uint64_t
alloc_data(struct qcow2_state *s, uint64_t gc, uint64_t n, uint64_t *got,
           int *ret)
{
    uint64_t host;

    if (s->data == NULL) {
        host = qcow2_alloc(s, n, got, ret);
        return host == 0 ? UINT64_MAX : host;
    }
    if ((*ret = qcow2_data_grow(s, (gc + n) << s->cluster_bits)) < 0)
        return UINT64_MAX;
    *got = n;
    return gc << s->cluster_bits;
}

/* Full clusters that need new ones: write straight from the request. */
static bool
write_new_run(struct qcow2_io *io, uint64_t gc, uint64_t k)
{
    struct qcow2_state *s = io->s;
    uint64_t host, got;
    int r = 0;

    if (qcow2_l2_for(s, gc, &r) == NULL ||
        (host = alloc_data(s, gc, k, &got, &r)) == UINT64_MAX)
        return wait_or_fail(io, r);
    if (!write_ok(s, gc << s->cluster_bits, host, got << s->cluster_bits))
        return unlock_and_complete(io, -EIO);
    io->new_gc = gc;
    io->new_n = got;
    io->new_host = host;
    io->phase = IO_NEW;
    submit_view(io, s->dfile, NG_OP_WRITE, host, got << s->cluster_bits,
                &io->req->iov, io->pos);
    io->pos += got << s->cluster_bits;
    return true;
}

/* A partial cluster that needs a new one: read its old contents into
 * the bounce first (the read engine, as for a client read); the caller
 * runs the engine. */
static void
cow_begin(struct qcow2_io *io, uint64_t gc)
{
    struct qcow2_state *s = io->s;
    uint64_t start = gc << s->cluster_bits;

    io->cow = true;
    io->rd_off = start;
    io->rd_len = min64(s->cluster_size, s->size - start);
    io->rd_pos = 0;
    memset(io->bounce + io->rd_len, 0, s->cluster_size - io->rd_len);
    io->rd_one = (struct iovec){ .iov_base = io->bounce,
                                 .iov_len = s->cluster_size };
    io->rd_iov = (struct ng_iov){ .iov = &io->rd_one, .niov = 1 };
    io->phase = IO_READ;
}

/* The old contents are in the bounce: lay the new data over them and
 * write the whole cluster to a new one. */
static bool
cow_write(struct qcow2_io *io)
{
    struct qcow2_state *s = io->s;
    struct ng_req *req = io->req;
    uint64_t off = req->offset + io->pos, gc = off >> s->cluster_bits;
    uint64_t in = off & (s->cluster_size - 1);
    uint64_t n = min64(s->cluster_size - in, req->length - io->pos);
    uint64_t host, got;
    int r = 0;

    if (req->op == NG_OP_WRITE)
        ng_iov_to_buf(&req->iov, io->pos, io->bounce + in, n);
    else
        memset(io->bounce + in, 0, n);
    /* On -EAGAIN, the read engine finds nothing left and we come back. */
    if (qcow2_l2_for(s, gc, &r) == NULL ||
        (host = alloc_data(s, gc, 1, &got, &r)) == UINT64_MAX)
        return wait_or_fail(io, r);
    io->cow = false;
    if (!write_ok(s, gc << s->cluster_bits, host, s->cluster_size))
        return unlock_and_complete(io, -EIO);
    io->new_gc = gc;
    io->new_n = 1;
    io->new_host = host;
    io->phase = IO_NEW;
    io->pos += n;
    qcow2_seq_submit(&io->seq, s->dfile, NG_OP_WRITE, host, s->cluster_size,
                     io->bounce);
    return true;
}

enum next { NEXT_SUBMITTED, NEXT_GONE, NEXT_COW };

/* Decide and issue the next piece. */
static enum next
modify_next(struct qcow2_io *io)
{
    struct qcow2_state *s = io->s;
    struct ng_req *req = io->req;

    while (io->pos < req->length) {
        uint64_t off = req->offset + io->pos, left = req->length - io->pos;
        uint64_t gc = off >> s->cluster_bits;
        uint64_t in = off & (s->cluster_size - 1);
        uint64_t clen = min64(left, s->cluster_size - in);
        bool full = in == 0 && (clen == s->cluster_size ||
                                off + clen == s->size);
        struct qcow2_map m;
        int r;

        if (!qcow2_l2_ready(s, off, &io->seq))
            return NEXT_SUBMITTED;  /* resumed once the table is in */
        /* With data_file_raw, the data file stays a raw image of the
         * disk: zeroes and trims write zeroes there (QEMU passes a trim
         * down, which reads as zeroes on a file). */
        if (req->op != NG_OP_WRITE && full && !s->data_raw) {
            if ((r = zero_cluster(s, req, gc)) < 0)
                return wait_or_fail(io, r) ? NEXT_SUBMITTED : NEXT_GONE;
            io->pos += clen;
            continue;
        }
        if (req->op == NG_OP_TRIM && !s->data_raw) {   /* partial */
            io->pos += clen;
            continue;
        }
        qcow2_map(s, off, left, &m);
        if (m.kind == QCOW2_DATA) {
            const struct ng_iov *src = source(io);

            /* Zeroes come from one cluster of zero_buf. */
            if (req->op != NG_OP_WRITE)
                m.len = min64(m.len, clen);
            if (!write_ok(s, off, m.host, m.len)) {
                unlock_and_complete(io, -EIO);
                return NEXT_GONE;
            }
            io->phase = IO_IN_PLACE;
            submit_view(io, s->dfile, NG_OP_WRITE, m.host, m.len, src,
                        req->op == NG_OP_WRITE ? io->pos : 0);
            io->pos += m.len;
            return NEXT_SUBMITTED;
        }
        if (in == 0 && left >= s->cluster_size && req->op == NG_OP_WRITE) {
            uint64_t k = count_new(s, gc, left >> s->cluster_bits);

            if (k > 0)
                return write_new_run(io, gc, k) ? NEXT_SUBMITTED : NEXT_GONE;
        }
        if (io->bounce == NULL &&
            (io->bounce = malloc(s->cluster_size)) == NULL) {
            unlock_and_complete(io, -ENOMEM);
            return NEXT_GONE;
        }
        cow_begin(io, gc);
        return NEXT_COW;
    }
    unlock_and_complete(io, 0);
    return NEXT_GONE;
}

static bool
modify_step(struct qcow2_seq *q)
{
    struct qcow2_io *io = (struct qcow2_io *)q;
    struct qcow2_state *s = io->s;
    bool failed;
    int r;

    if (q->ret < 0)
        return unlock_and_complete(io, q->ret);
    for (;;) {
        switch (io->phase) {
        case IO_READ:
        case IO_DECOMPRESS:
            if (read_engine(io, &failed))
                return true;
            if (failed)
                return false;
            return cow_write(io);
        case IO_NEW:
            /* The data is in: now the mapping may show it (its table
             * may have left the cache meanwhile). */
            if (!qcow2_l2_ready(s, io->new_gc << s->cluster_bits, q))
                return true;
            if ((r = map_new(s, io->new_gc, io->new_n, io->new_host)) < 0)
                return unlock_and_complete(io, r);
            break;
        case IO_START:
            if (s->corrupt)
                return unlock_and_complete(io, -EIO);
            break;
        default:
            break;
        }
        io->phase = IO_NEXT;
        switch (modify_next(io)) {
        case NEXT_SUBMITTED:
            return true;
        case NEXT_GONE:
            return false;
        case NEXT_COW:
            continue;
        }
    }
}

/* ---- Block status ------------------------------------------------------- */

static bool
extent_add(struct ng_req *req, uint32_t max, uint64_t len, uint32_t flags)
{
    struct ng_extent *e = req->extents;
    uint32_t nr = req->nr_extents;

    if (nr > 0 && e[nr - 1].flags == flags) {
        e[nr - 1].length += len;
        return true;
    }
    if (nr == max)
        return false;
    e[nr].length = len;
    e[nr].flags = flags;
    req->nr_extents++;
    return true;
}

/* This layer's extents up to the first run the backing must describe,
 * which (when first) is asked of the backing; a short answer is fine. */
static bool
bs_step(struct qcow2_seq *q)
{
    struct qcow2_io *io = (struct qcow2_io *)q;
    struct qcow2_state *s = io->s;
    struct ng_req *req = io->req;
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
    bool local = (req->flags & NG_REQ_LOCAL_ONLY) || s->backing == NULL;
    uint64_t off = req->offset, end = req->offset + req->length;
    struct qcow2_map m;

    if (q->ret < 0)                 /* the backing's, or a table load */
        return unlock_and_complete(io, q->ret);
    if (io->phase == IO_BS_BACKING) {
        req->nr_extents = q->sub.nr_extents;
        return unlock_and_complete(io, 0);
    }
    req->nr_extents = 0;
    while (off < end) {
        uint32_t flags;

        qcow2_map(s, off, end - off, &m);
        if (m.kind == QCOW2_UNLOADED) {
            /* A short answer, or (from scratch) once it is in. */
            if (req->nr_extents > 0)
                break;
            if (!qcow2_l2_ready(s, off, q))
                return true;
            continue;
        }
        if (m.kind == QCOW2_UNALLOC && !local) {
            uint64_t span = backing_span(s, off, m.len);

            if (req->nr_extents > 0)
                break;
            if (span == 0) {
                extent_add(req, max, m.len, NG_EXTENT_HOLE | NG_EXTENT_ZERO);
                off += m.len;
                continue;
            }
            ng_req_init(&q->sub, NG_OP_BLOCK_STATUS, off, span,
                        req->flags & NG_REQ_REQ_ONE);
            q->sub.extents = req->extents;
            q->sub.max_extents = max;
            io->phase = IO_BS_BACKING;
            qcow2_seq_submit_prepared(q, s->backing);
            return true;
        }
        flags = m.kind == QCOW2_ZERO ? NG_EXTENT_ZERO :
                m.kind != QCOW2_UNALLOC ? 0 :
                s->backing != NULL ? NG_EXTENT_HOLE :
                NG_EXTENT_HOLE | NG_EXTENT_ZERO;
        if (!extent_add(req, max, m.len, flags))
            break;
        off += m.len;
    }
    return unlock_and_complete(io, 0);
}

/* ---- Submit ------------------------------------------------------------- */

/* Take the request's guest clusters, or join the wait list. */
static bool
lock_or_wait(struct qcow2_state *s, struct qcow2_io *io)
{
    const struct ng_req *req = io->req;

    io->c0 = req->offset >> s->cluster_bits;
    io->c1 = ((req->offset + req->length - 1) >> s->cluster_bits) + 1;
    if (lock_conflict(s, io, NULL)) {
        struct qcow2_io **p = &s->waiting;

        while (*p != NULL)
            p = &(*p)->lock_next;
        *p = io;
        return false;
    }
    io->lock_next = s->locked;
    s->locked = io;
    return true;
}

static void
qcow2_submit(struct ng_node *node, struct ng_req *req)
{
    struct qcow2_state *s = ng_node_state(node);
    struct qcow2_io *io;

    if (req->op == NG_OP_FLUSH) {
        qcow2_wb_flush(s, req->flags, flush_done, req);
        return;
    }
    if (req->length == 0) {
        ng_req_complete(req, 0);
        return;
    }
    if (req->op == NG_OP_WRITE_ZEROES && (req->flags & NG_REQ_FAST_ZERO) &&
        (s->data_raw ||
         (((req->offset | req->length) & (s->cluster_size - 1)) != 0 &&
          req->offset + req->length != s->size))) {
        ng_req_complete(req, -ENOTSUP);     /* partial clusters: slow */
        return;
    }
    if ((io = ng_req_ctx(node, req)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    io->s = s;
    io->req = req;
    io->seq.ret = 0;
    io->seq.flags = req->flags & NG_REQ_INHERITED;
    switch (req->op) {
    case NG_OP_READ:
        io->seq.step = read_step;
        io->rd_off = req->offset;
        io->rd_len = req->length;
        io->rd_iov = req->iov;
        io->phase = IO_READ;
        break;
    case NG_OP_BLOCK_STATUS:
        io->seq.step = bs_step;
        break;
    default:
        io->seq.step = modify_step;
        if (s->corrupt) {
            ng_req_complete(req, -EIO);
            return;
        }
        if (!lock_or_wait(s, io))
            return;                 /* wake_waiters() runs it */
        break;
    }
    qcow2_seq_run(&io->seq);
}

/* ---- Open, close, facts ------------------------------------------------- */

int
qcow2_open_finish(struct qcow2_state *s, struct ng_error *err)
{
    const char *fname = ng_node_filename(s->file);

    if (s->writable && s->nb_snapshots > 0)
        return ng_error_set(err, EROFS, "'%s': images with internal "
                            "snapshots are supported read-only", fname);
    if ((s->incompat & QCOW2_INCOMPAT_DATA_FILE) && s->data == NULL)
        return ng_error_set(err, ENOTSUP, "'%s' has its data in external "
                            "data file '%s', which is found by name only "
                            "for an image on a file node: give 'data-file: "
                            "NODE'", fname, s->data_file_name
                            ? s->data_file_name : "(unnamed)");
    if (!(s->incompat & QCOW2_INCOMPAT_DATA_FILE) && s->data != NULL)
        return ng_error_set(err, EINVAL, "'%s': 'data-file' is given, but "
                            "the image has no external data file", fname);
    if (s->backing_name != NULL && s->backing == NULL && !s->backing_null)
        return ng_error_set(err, ENOTSUP, "'%s' has backing file '%s', "
                            "which is found by name only for an image on "
                            "a file node: give 'backing: NODE' or "
                            "'backing: null'", fname, s->backing_name);
    return 0;
}

static void
qcow2_open_async(struct ng_node *node, struct ng_error *err)
{
    struct qcow2_state *s = ng_node_state(node);
    int64_t flen = ng_node_length(s->file);

    s->node = node;
    s->open_err = err;
    s->writable = !node->read_only;
    if (flen < 0) {
        ng_error_set(err, (int)-flen, "cannot get the size of child '%s'",
                     s->file->name);
        ng_node_opened(node, -1);
        return;
    }
    s->file_size = (uint64_t)flen;
    s->dfile = s->file;
    if (s->data != NULL) {
        int64_t dlen = ng_node_length(s->data);

        if (dlen < 0) {
            ng_error_set(err, (int)-dlen, "cannot get the size of child "
                         "'%s'", s->data->name);
            ng_node_opened(node, -1);
            return;
        }
        s->data_size = (uint64_t)dlen;
        s->dfile = s->data;
    }
    if (qcow2_wb_init(s) < 0) {
        ng_error_set(err, ENOMEM, "out of memory");
        ng_node_opened(node, -1);
        return;
    }
    qcow2_load(s);
}

void
qcow2_free_state(struct qcow2_state *s)
{
    qcow2_clean_timer_stop(s);
    qcow2_cache_free(&s->l2c);
    qcow2_cache_free(&s->rbc);
    free(s->l1);
    free(s->reft);
    free(s->unrefs);
    free(s->zero_buf);
    free(s->backing_name);
    free(s->backing_fmt);
    free(s->data_file_name);
    free(s->hdr_raw);
    free(s->hdr_exts);
    qcow2_wb_free(s);
    memset(&s->version, 0, sizeof *s - offsetof(struct qcow2_state, version));
}

static void close_wb_done(void *opaque, int ret);

static void
close_flush(struct qcow2_state *s)
{
    /* A round a full cache started may still be writing; a header
     * update is a write-back round no request waits for: close waits
     * for either behind one more round. */
    if (!qcow2_wb_running(s) &&
        (!s->writable || s->l1 == NULL ||
         (!qcow2_wb_dirty(s) && s->hdr_writes == 0))) {
        struct ng_node *node = s->node;

        qcow2_free_state(s);
        ng_node_closed(node);
        return;
    }
    qcow2_wb_flush(s, 0, close_wb_done, s);
}

static void
close_wb_done(void *opaque, int ret)
{
    struct qcow2_state *s = opaque;

    if (ret < 0) {
        ng_node_warn(s->node, "cannot write the image's metadata back: %s; "
                     "it may have leaked clusters", strerror(-ret));
        s->writable = false;
    }
    close_flush(s);
}

static void
qcow2_close_async(struct ng_node *node)
{
    struct qcow2_state *s = ng_node_state(node);

    s->node = node;
    close_flush(s);
}

static int
qcow2_refresh(struct ng_node *node, struct ng_node_facts *facts,
              struct ng_error *err)
{
    const struct qcow2_state *s = ng_node_state(node);

    (void)err;
    facts->size = (int64_t)s->size;
    facts->caps = NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_EXTENTS |
                  NG_CAP_MULTI_CONN | NG_CAP_TRIM | NG_CAP_FUA;
    /* v2 has no zero flag: write-zeroes would have to write. */
    if (s->version >= 3)
        facts->caps |= NG_CAP_ZERO | NG_CAP_FAST_ZERO;
    facts->opt_transfer = (uint32_t)s->cluster_size;
    return 0;
}

/* Why `s` cannot grow to `size` bytes as QEMU's qcow2_co_truncate()
 * would, or NULL. */
static const char *
grow_refusal(const struct qcow2_state *s, uint64_t size)
{
    if (!s->writable || s->hdr_raw == NULL)
        return "its header cannot be rewritten";
    if (s->corrupt)
        return "it is marked corrupt";
    if (s->data != NULL)
        return "it has an external data file";
    if (size % 512 != 0)
        return "the new size must be a multiple of 512";
    if (size > ((uint64_t)1 << 56))
        return "the new size is too large";
    /* The old last cluster's bytes past the end were never zeroed. */
    if (s->size % s->cluster_size != 0)
        return "its size is not a whole number of clusters";
    if (s->backing != NULL && ng_node_length(s->backing) > (int64_t)s->size)
        return "its backing node is longer: growing it would show the "
               "backing's data";
    return NULL;
}

/* block_resize: a bigger virtual size in the header, the L1 table grown
 * (and moved) to map it, as qemu-img resize does.  The new tables and the
 * header go out through the write-back at once, in order: the L1 table,
 * a flush, then the header naming it and the new size; the old L1's
 * clusters are freed after that. */
static int
qcow2_grow(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    struct qcow2_state *s = ng_node_state(node);
    const char *fname = ng_node_filename(s->file), *why;
    uint64_t span = (uint64_t)1 << s->l2_span_bits;
    int r;

    s->node = node;
    if ((why = grow_refusal(s, size)) != NULL)
        return ng_error_set(err, ENOTSUP, "cannot resize '%s' to %" PRIu64
                            " bytes: %s", fname, size, why);
    if ((r = qcow2_grow_l1(s, size / span + (size % span != 0))) < 0)
        return ng_error_set(err, -r, "cannot grow the L1 table of '%s' "
                            "for %" PRIu64 " bytes: %s%s", fname, size,
                            strerror(-r), r == -EAGAIN ? " (a refcount "
                            "block is not in memory; try again)" : "");
    s->size = size;
    qcow2_header_update(s);
    return 0;
}

const struct ng_driver ng_driver_qcow2 = {
    .name       = "qcow2",
    .help       = "QEMU copy-on-write image format (v2 and v3)",
    .is_filter  = false,
    .state_size = sizeof(struct qcow2_state),
    .req_ctx_size = sizeof(struct qcow2_io),
    .opts       = qcow2_opts,
    .open_async = qcow2_open_async,
    .close_async = qcow2_close_async,
    .submit     = qcow2_submit,
    .refresh    = qcow2_refresh,
    .grow       = qcow2_grow,
    .expand_opts = qcow2_expand_opts,
    .set_backing = qcow2_set_backing,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS),
};
