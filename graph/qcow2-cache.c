/* graph/qcow2-cache.c: qcow2 metadata I/O through the file child: the
 * load of every table at open, and the write-back of changed ones.
 *
 * Write-back runs in rounds, one at a time.  A round takes a copy of
 * every dirty table at once (so requests may go on changing them) and
 * writes the copies in dependency order with a flush between the
 * layers: refcount blocks, then the refcount table, then (after a flush
 * that also puts the data clusters they point to on disk) the L2 tables,
 * then the L1 table, then a final flush.  A crash at any point leaves
 * refcounts at least as high as the references on disk: leaked clusters
 * at worst, never a cluster referenced twice or an L2 entry pointing at
 * data not yet written.  Refcount decrements go the other way: they are
 * applied to the in-memory refcounts only after the round that wrote the
 * tables no longer referencing the clusters, and reach the disk in the
 * next round.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/qcow2.h"

/* ---- Sequencer ---------------------------------------------------------- */

static void
seq_done(struct ng_req *sub, int ret)
{
    struct qcow2_seq *q = sub->opaque;

    q->ret = ret;
    if (q->busy)
        q->inline_done = true;
    else
        qcow2_seq_run(q);
}

void
qcow2_seq_run(struct qcow2_seq *q)
{
    for (;;) {
        q->busy = true;
        q->inline_done = false;
        if (!q->step(q))
            return;                 /* finished: q may be freed */
        q->busy = false;
        if (!q->inline_done)
            return;                 /* seq_done() resumes */
    }
}

void
qcow2_seq_submit_prepared(struct qcow2_seq *q, struct ng_node *to)
{
    q->sub.done = seq_done;
    q->sub.opaque = q;
    ng_node_submit(to, &q->sub);
}

void
qcow2_seq_submit(struct qcow2_seq *q, struct ng_node *to, enum ng_op op,
                 uint64_t off, uint64_t len, void *buf)
{
    ng_req_init(&q->sub, op, off, len, 0);
    if (buf != NULL)
        ng_req_set_buf(&q->sub, buf);
    qcow2_seq_submit_prepared(q, to);
}

/* ---- Load at open ------------------------------------------------------- */

enum load_phase {
    LOAD_HEAD, LOAD_CLUSTER0, LOAD_PARSE, LOAD_L1, LOAD_REFT, LOAD_RB,
    LOAD_L2, LOAD_DONE,
};

struct qcow2_loader {
    struct qcow2_seq seq;
    struct qcow2_state *s;
    enum load_phase phase;
    unsigned char *buf;
    size_t len;
    uint64_t idx;
    uint64_t meta_bytes;
    bool parsed;                    /* the header is parsed in full */
};

static const char *
load_fname(const struct qcow2_state *s)
{
    return ng_node_filename(s->file);
}

static bool
load_fail(struct qcow2_loader *ld, int ret, const char *what)
{
    struct qcow2_state *s = ld->s;

    if (what != NULL)
        ng_error_set(s->open_err, -ret, "'%s': cannot read the %s: %s",
                     load_fname(s), what, strerror(-ret));
    free(ld->buf);
    free(ld);
    qcow2_free_state(s);
    ng_node_opened(s->node, -1);
    return false;
}

static int
alloc_tables(struct qcow2_state *s)
{
    s->l1 = calloc(s->l1_size ? s->l1_size : 1, 8);
    s->l2 = calloc(s->l1_size ? s->l1_size : 1, sizeof *s->l2);
    s->l2_dirty = calloc(s->l1_size ? s->l1_size : 1, sizeof *s->l2_dirty);
    s->reft = calloc(s->reft_entries, 8);
    s->rb = calloc(s->reft_entries, sizeof *s->rb);
    s->rb_dirty = calloc(s->reft_entries, sizeof *s->rb_dirty);
    s->zero_buf = calloc(1, s->cluster_size);
    if (s->l1 == NULL || s->l2 == NULL || s->l2_dirty == NULL ||
        s->reft == NULL || s->rb == NULL || s->rb_dirty == NULL ||
        s->zero_buf == NULL)
        return ng_error_set(s->open_err, ENOMEM, "out of memory");
    return 0;
}

/* Read one table cluster at `off` into a new buffer in *slot. */
static bool
load_cluster(struct qcow2_loader *ld, uint64_t off, unsigned char **slot,
             const char *what)
{
    struct qcow2_state *s = ld->s;

    if ((off & (s->cluster_size - 1)) != 0 || off >= s->file_size ||
        s->cluster_size > s->file_size - off) {
        ng_error_set(s->open_err, EINVAL, "'%s': %s at %" PRIu64 " is "
                     "unaligned or past the end of the file (%" PRIu64
                     " bytes)", load_fname(s), what, off, s->file_size);
        return load_fail(ld, -EINVAL, NULL);
    }
    ld->meta_bytes += s->cluster_size;
    if (ld->meta_bytes > QCOW2_MAX_META_BYTES) {
        ng_error_set(s->open_err, EFBIG, "'%s': more than %" PRIu64 " bytes "
                     "of metadata", load_fname(s), QCOW2_MAX_META_BYTES);
        return load_fail(ld, -EFBIG, NULL);
    }
    if ((*slot = malloc(s->cluster_size)) == NULL) {
        ng_error_set(s->open_err, ENOMEM, "out of memory");
        return load_fail(ld, -ENOMEM, NULL);
    }
    qcow2_seq_submit(&ld->seq, s->file, NG_OP_READ, off, s->cluster_size,
                     *slot);
    return true;
}

static bool load_finish(struct qcow2_loader *ld);

/* Read the next non-empty refcount block or L2 table (true), or finish
 * (false: ld is gone). */
static bool
load_next_table(struct qcow2_loader *ld)
{
    struct qcow2_state *s = ld->s;

    if (ld->phase == LOAD_RB) {
        for (; ld->idx < s->reft_entries; ld->idx++) {
            uint64_t off = be64toh(s->reft[ld->idx]) & QCOW2_REFT_OFFSET_MASK;

            if (off != 0)
                return load_cluster(ld, off, &s->rb[ld->idx++],
                                    "refcount block");
        }
        ld->phase = LOAD_L2;
        ld->idx = 0;
    }
    for (; ld->idx < s->l1_size; ld->idx++) {
        uint64_t off = be64toh(s->l1[ld->idx]) & QCOW2_OFFSET_MASK;

        if (off != 0)
            return load_cluster(ld, off, &s->l2[ld->idx++], "L2 table");
    }
    ld->phase = LOAD_DONE;
    return load_finish(ld);
}

static bool
load_finish(struct qcow2_loader *ld)
{
    struct qcow2_state *s = ld->s;

    if (qcow2_check_tables(s, load_fname(s), s->open_err) < 0 ||
        qcow2_open_finish(s, s->open_err) < 0)
        return load_fail(ld, -EINVAL, NULL);
    s->alloc_next = qcow2_used_end(s);
    if (s->alloc_next == 0) {
        ng_error_set(s->open_err, EINVAL, "'%s': the header cluster has "
                     "refcount 0", load_fname(s));
        return load_fail(ld, -EINVAL, NULL);
    }
    free(ld->buf);
    free(ld);
    ng_node_opened(s->node, 0);
    return false;
}

static bool
load_step(struct qcow2_seq *q)
{
    struct qcow2_loader *ld = (struct qcow2_loader *)q;
    struct qcow2_state *s = ld->s;
    static const char *const what[] = {
        [LOAD_HEAD] = "header", [LOAD_CLUSTER0] = "header", [LOAD_L1] =
        "L1 table", [LOAD_REFT] = "refcount table", [LOAD_RB] =
        "refcount block", [LOAD_L2] = "L2 table",
    };

    if (q->ret < 0)
        return load_fail(ld, q->ret, what[ld->phase]);
    switch (ld->phase) {
    case LOAD_HEAD:
        ld->len = s->file_size < 512 ? s->file_size : 512;
        if ((ld->buf = malloc(512)) == NULL) {
            ng_error_set(s->open_err, ENOMEM, "out of memory");
            return load_fail(ld, -ENOMEM, NULL);
        }
        ld->phase = LOAD_CLUSTER0;
        qcow2_seq_submit(q, s->file, NG_OP_READ, 0, ld->len, ld->buf);
        return true;
    case LOAD_CLUSTER0:
        if (qcow2_parse_header(s, ld->buf, ld->len, load_fname(s),
                               s->open_err) < 0)
            return load_fail(ld, -EINVAL, NULL);
        ld->phase = LOAD_PARSE;
        if (ld->len >= s->cluster_size || ld->len >= s->file_size) {
            ld->parsed = true;      /* all of it was there */
            return load_step(q);
        }
        free(ld->buf);
        ld->len = s->file_size < s->cluster_size ? s->file_size
                                                 : s->cluster_size;
        if ((ld->buf = malloc(ld->len)) == NULL) {
            ng_error_set(s->open_err, ENOMEM, "out of memory");
            return load_fail(ld, -ENOMEM, NULL);
        }
        qcow2_seq_submit(q, s->file, NG_OP_READ, 0, ld->len, ld->buf);
        return true;
    case LOAD_PARSE:
        if ((!ld->parsed &&
             qcow2_parse_header(s, ld->buf, ld->len, load_fname(s),
                                s->open_err) < 0) || alloc_tables(s) < 0)
            return load_fail(ld, -EINVAL, NULL);
        ld->phase = LOAD_L1;
        if (s->l1_size == 0)
            return load_step(q);
        qcow2_seq_submit(q, s->file, NG_OP_READ, s->l1_offset,
                         (uint64_t)s->l1_size * 8, s->l1);
        return true;
    case LOAD_L1:
        ld->phase = LOAD_REFT;
        qcow2_seq_submit(q, s->file, NG_OP_READ, s->reft_offset,
                         s->reft_entries * 8, s->reft);
        return true;
    case LOAD_REFT:
        ld->phase = LOAD_RB;
        ld->idx = 0;
        /* fall through */
    case LOAD_RB:
    case LOAD_L2:
        return load_next_table(ld);
    case LOAD_DONE:
        break;
    }
    return load_finish(ld);         /* not reached */
}

void
qcow2_load(struct qcow2_state *s)
{
    struct qcow2_loader *ld = calloc(1, sizeof *ld);

    if (ld == NULL) {
        ng_error_set(s->open_err, ENOMEM, "out of memory");
        ng_node_opened(s->node, -1);
        return;
    }
    ld->s = s;
    ld->seq.step = load_step;
    qcow2_seq_run(&ld->seq);
}

/* ---- Write-back --------------------------------------------------------- */

enum wb_kind { WB_RB, WB_REFT, WB_HEADER, WB_L2, WB_L1, WB_FLUSH };

struct wb_item {
    enum wb_kind kind;
    uint64_t idx;                   /* table index (RB, L2) */
    uint64_t off, len;
    unsigned char *copy;
};

struct wb_waiter {
    void (*cb)(void *opaque, int ret);
    void *opaque;
    struct wb_waiter *next;
};

struct qcow2_wb {
    struct qcow2_seq seq;
    struct qcow2_state *s;
    bool running;
    struct wb_waiter *round, *next_round;   /* waiters, in order */
    struct wb_item *items;
    size_t n_items, cap_items, at;
    struct qcow2_unref *unrefs;     /* taken at the round's start */
    size_t n_unrefs;
    int ret;
};

bool
qcow2_wb_dirty(const struct qcow2_state *s)
{
    if (s->l1_dirty || s->reft_dirty || s->header_dirty || s->n_unrefs > 0)
        return true;
    for (uint64_t i = 0; i < s->l1_size; i++)
        if (s->l2_dirty[i])
            return true;
    for (uint64_t i = 0; i < s->reft_entries; i++)
        if (s->rb_dirty[i])
            return true;
    return false;
}

int
qcow2_wb_init(struct qcow2_state *s)
{
    if ((s->wb = calloc(1, sizeof *s->wb)) == NULL)
        return -1;
    s->wb->s = s;
    return 0;
}

static void
wb_items_clear(struct qcow2_wb *wb)
{
    for (size_t i = 0; i < wb->n_items; i++)
        free(wb->items[i].copy);
    wb->n_items = wb->at = 0;
    free(wb->unrefs);
    wb->unrefs = NULL;
    wb->n_unrefs = 0;
}

void
qcow2_wb_free(struct qcow2_state *s)
{
    if (s->wb == NULL)
        return;
    wb_items_clear(s->wb);
    free(s->wb->items);
    free(s->wb);
    s->wb = NULL;
}

static int
wb_add(struct qcow2_wb *wb, enum wb_kind kind, uint64_t idx, uint64_t off,
       const void *src, uint64_t len)
{
    struct wb_item *it;

    if (wb->n_items == wb->cap_items) {
        size_t cap = wb->cap_items ? wb->cap_items * 2 : 16;
        void *p = realloc(wb->items, cap * sizeof *wb->items);

        if (p == NULL)
            return -ENOMEM;
        wb->items = p;
        wb->cap_items = cap;
    }
    it = &wb->items[wb->n_items];
    *it = (struct wb_item){ .kind = kind, .idx = idx, .off = off,
                            .len = len };
    if (src != NULL) {
        if ((it->copy = malloc(len)) == NULL)
            return -ENOMEM;
        memcpy(it->copy, src, len);
    }
    wb->n_items++;
    return 0;
}

/* Copy every dirty table, in write order, with the flushes between. */
static int
wb_snapshot(struct qcow2_wb *wb)
{
    struct qcow2_state *s = wb->s;
    size_t before;
    bool flushed = false;
    int r = 0;

    for (uint64_t i = 0; i < s->reft_entries && r == 0; i++)
        if (s->rb_dirty[i])
            r = wb_add(wb, WB_RB, i, be64toh(s->reft[i]) &
                       QCOW2_REFT_OFFSET_MASK, s->rb[i], s->cluster_size);
    if (r == 0 && wb->n_items > 0) {
        r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
        flushed = true;
    }
    if (r == 0 && s->reft_dirty) {
        r = wb_add(wb, WB_REFT, 0, s->reft_offset, s->reft,
                   s->reft_entries * 8);
        if (r == 0)
            r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
        flushed = true;
    }
    if (r == 0 && s->header_dirty && s->hdr_raw != NULL) {
        /* The whole header: backing name, feature bits, refcount table
         * (qcow2-backing.c). */
        unsigned char *h = NULL;
        size_t len = 0;

        r = qcow2_header_build(s, &h, &len);
        if (r == 0)
            r = wb_add(wb, WB_HEADER, 0, 0, h, len);
        free(h);
        if (r == 0)
            r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
    } else if (r == 0 && s->header_dirty) {
        /* refcount_table_offset and refcount_table_clusters */
        unsigned char h[12];
        uint64_t off = htobe64(s->reft_offset);
        uint32_t n = htobe32((uint32_t)(s->reft_entries * 8 /
                                        s->cluster_size));

        memcpy(h, &off, 8);
        memcpy(h + 8, &n, 4);
        r = wb_add(wb, WB_HEADER, 0, 48, h, sizeof h);
        if (r == 0)
            r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
    }
    before = wb->n_items;
    for (uint64_t i = 0; i < s->l1_size && r == 0; i++) {
        if (!s->l2_dirty[i])
            continue;
        if (!flushed) {             /* the data the entries point to */
            r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
            flushed = true;
        }
        if (r == 0)
            r = wb_add(wb, WB_L2, i, be64toh(s->l1[i]) & QCOW2_OFFSET_MASK,
                       s->l2[i], s->cluster_size);
    }
    if (r == 0 && s->l1_dirty) {
        if (wb->n_items > before)
            r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
        if (r == 0)
            r = wb_add(wb, WB_L1, 0, s->l1_offset, s->l1,
                       (uint64_t)s->l1_size * 8);
    }
    if (r == 0)
        r = wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
    if (r < 0)
        return r;
    /* Only now, all or nothing: the tables are clean. */
    for (size_t i = 0; i < wb->n_items; i++) {
        const struct wb_item *it = &wb->items[i];

        if (it->kind == WB_RB)
            s->rb_dirty[it->idx] = false;
        else if (it->kind == WB_L2)
            s->l2_dirty[it->idx] = false;
    }
    s->reft_dirty = s->l1_dirty = s->header_dirty = false;
    wb->unrefs = s->unrefs;
    wb->n_unrefs = s->n_unrefs;
    s->unrefs = NULL;
    s->n_unrefs = s->cap_unrefs = 0;
    return 0;
}

/* A failed round: what it took is dirty again. */
static void
wb_redirty(struct qcow2_wb *wb)
{
    struct qcow2_state *s = wb->s;

    for (size_t i = 0; i < wb->n_items; i++) {
        const struct wb_item *it = &wb->items[i];

        if (it->kind == WB_RB)
            s->rb_dirty[it->idx] = true;
        else if (it->kind == WB_L2)
            s->l2_dirty[it->idx] = true;
        else if (it->kind == WB_REFT)
            s->reft_dirty = true;
        else if (it->kind == WB_HEADER)
            s->header_dirty = true;
        else if (it->kind == WB_L1)
            s->l1_dirty = true;
    }
    for (size_t i = 0; i < wb->n_unrefs; i++)
        qcow2_unref(s, wb->unrefs[i].host, wb->unrefs[i].len);
}

static void wb_start(struct qcow2_wb *wb);

static bool
wb_step(struct qcow2_seq *q)
{
    struct qcow2_wb *wb = (struct qcow2_wb *)q;
    struct qcow2_state *s = wb->s;
    struct wb_waiter *w;
    int ret;

    if (q->ret < 0 && wb->ret == 0)
        wb->ret = q->ret;
    if (wb->ret == 0 && wb->at < wb->n_items) {
        const struct wb_item *it = &wb->items[wb->at++];

        if (it->kind == WB_FLUSH)
            qcow2_seq_submit(q, s->file, NG_OP_FLUSH, 0, 0, NULL);
        else
            qcow2_seq_submit(q, s->file, NG_OP_WRITE, it->off, it->len,
                             it->copy);
        return true;
    }
    if (wb->ret < 0)
        wb_redirty(wb);
    else
        qcow2_unref_apply(s, wb->unrefs, wb->n_unrefs);
    wb_items_clear(wb);
    w = wb->round;
    ret = wb->ret;
    wb->round = NULL;
    wb->running = false;
    /* The next round first: a waiter (close) may free everything, so
     * nothing here may touch wb once they run. */
    if (wb->next_round != NULL)
        wb_start(wb);
    while (w != NULL) {
        struct wb_waiter *next = w->next;

        w->cb(w->opaque, ret);
        free(w);
        w = next;
    }
    return false;
}

static void
wb_start(struct qcow2_wb *wb)
{
    int r;

    wb->running = true;
    wb->round = wb->next_round;
    wb->next_round = NULL;
    wb->ret = 0;
    wb->seq.ret = 0;
    wb->seq.step = wb_step;
    if ((r = wb_snapshot(wb)) < 0) {
        wb_items_clear(wb);
        wb->ret = r;
    }
    qcow2_seq_run(&wb->seq);
}

void
qcow2_wb_flush(struct qcow2_state *s, void (*cb)(void *opaque, int ret),
               void *opaque)
{
    struct qcow2_wb *wb = s->wb;
    struct wb_waiter *w = malloc(sizeof *w), **p;

    if (w == NULL) {
        cb(opaque, -ENOMEM);
        return;
    }
    w->cb = cb;
    w->opaque = opaque;
    w->next = NULL;
    /* In order: a header update's waiter runs before a later close's,
     * which may free everything. */
    for (p = &wb->next_round; *p != NULL; p = &(*p)->next)
        ;
    *p = w;
    if (!wb->running)
        wb_start(wb);
}
