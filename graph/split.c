/* graph/split.c: the core fits requests to a node's transfer limits.
 *
 * A driver states in its facts (struct ng_node_facts) the alignment its
 * requests need and how many bytes one request may carry; the choke point
 * sends whatever does not fit here, and the driver then only ever sees
 * requests that do (QEMU's bdrv_aligned_preadv/pwritev):
 *
 * - larger than max_transfer: split into pieces, at most SPLIT_PARALLEL
 *   of them in flight at once, each a view of the caller's buffer (no
 *   copy); the request completes when all are done, with the first
 *   error (no new piece starts after one);
 * - a read not aligned to request_alignment: the aligned range is read,
 *   the bytes outside the caller's range into a pad buffer, the rest
 *   straight into the caller's (a three-part scatter-gather view);
 * - a write or write-zeroes not aligned: read-modify-write of the head
 *   and tail blocks (read into the pad buffer, written back around the
 *   caller's data; write-zeroes zeroes the pad and keeps write-zeroes
 *   for the aligned middle);
 * - trim: shrunk to the aligned blocks it covers (advisory);
 * - cache: grown to whole blocks;
 * - block status: asked for the aligned range, at most max_transfer
 *   bytes of it, and the answer cut back to the caller's range.
 * A range that ends at the node's end may end there unaligned.
 *
 * Read-modify-write must not lose a write that lands between its read
 * and its write, so on a node with alignment > 1 every request that
 * changes data is tracked here while in flight (QEMU's "serialising
 * requests"): a read-modify-write waits for every older overlapping
 * request, and every request waits for an older overlapping
 * read-modify-write.  Waiting goes in arrival order, so neither side
 * starves.  Filters inherit their child's facts, so the topmost node
 * with the limits does the fitting and serialises what passes through
 * it; a write that reaches the aligned node below by another path (a
 * second parent) is tracked there but not serialised against this
 * node's read-modify-write (in QEMU, too, serialising is per node).
 * Nodes with alignment 1 and no max_transfer (every shipped node
 * without cache.direct or a limit option) never come here.
 *
 * Contexts (struct ng_split) and their pad buffers stay on a per-node
 * free list, so steady-state I/O allocates nothing.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

#define SPLIT_PARALLEL   4          /* pieces in flight per request */
#define SPLIT_INLINE_IOV 8          /* view elements without allocating */
#define SPLIT_MAX_SEGS   3          /* head block, middle, tail block */

/* A contiguous part of the work, cut into pieces of at most max bytes. */
struct split_seg {
    enum ng_op op;
    uint32_t flags;
    uint64_t off, len;
    struct ng_iov iov;
};

enum split_phase {
    SPLIT_PAD_READ,                 /* reading head/tail blocks for RMW */
    SPLIT_MAIN,                     /* the request itself */
};

struct ng_split {
    struct ng_node *node;
    struct ng_req *req;             /* the request from above */
    uint64_t align, max;            /* the node's, when it arrived */
    uint64_t size;

    /* Layout of an unaligned request. */
    uint64_t lo, hi;                /* the range, aligned out (trim: in) */
    uint64_t hb_end;                /* end of the head block */
    uint64_t tail_start;            /* start of a separate tail block */
    bool head_rmw, tail_rmw;        /* partial blocks to read first */

    /* Serialisation (tracked requests only). */
    bool tracked, serialising;
    struct ng_split *prev, *next;   /* node's tracked list, oldest first */
    struct ng_split *wait_head, *wait_tail;     /* waiting for us */
    struct ng_split *wait_next;

    /* Work. */
    enum split_phase phase;
    struct split_seg seg[SPLIT_MAX_SEGS];
    unsigned nseg, cur_seg;
    uint64_t cur_pos;               /* in seg[cur_seg] */
    struct ng_req sub[SPLIT_PARALLEL];
    unsigned busy;                  /* bit i: sub[i] in flight */
    unsigned in_flight;
    bool issuing;                   /* in split_issue(): no re-entry */
    int ret;                        /* first error */

    /* Kept across uses. */
    unsigned char *pad;             /* head block, then tail block */
    size_t pad_cap;
    struct iovec iov_inline[SPLIT_INLINE_IOV];
    struct iovec *iov_heap;
    unsigned iov_heap_cap;
    struct ng_split *next_free;
};

static inline uint64_t
align_down(uint64_t v, uint64_t a)
{
    return v & ~(a - 1);
}

static inline uint64_t
align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* Aligned as the driver needs: offset, and end unless it is the node's. */
static inline bool
range_aligned(uint64_t off, uint64_t end, uint64_t a, uint64_t size)
{
    return (off & (a - 1)) == 0 && ((end & (a - 1)) == 0 || end == size);
}

bool
ng_split_needed(const struct ng_node_facts *f, const struct ng_req *req)
{
    uint64_t a = f->request_alignment;

    if (req->op == NG_OP_FLUSH)
        return false;
    if (a > 1 && ng_req_changes_data(req))
        return true;                /* tracked for read-modify-write */
    if (f->max_transfer != 0 && req->length > f->max_transfer)
        return true;
    return a > 1 && !range_aligned(req->offset, req->offset + req->length, a,
                                   (uint64_t)f->size);
}

/* ---- Contexts ----------------------------------------------------------- */

static struct ng_split *
split_get(struct ng_node *node)
{
    struct ng_split *sp = node->split_free;

    if (sp != NULL) {
        node->split_free = sp->next_free;
    } else if ((sp = calloc(1, sizeof *sp)) == NULL) {
        return NULL;
    }
    sp->node = node;
    sp->tracked = sp->serialising = false;
    sp->prev = sp->next = NULL;
    sp->wait_head = sp->wait_tail = sp->wait_next = NULL;
    sp->head_rmw = sp->tail_rmw = false;
    sp->phase = SPLIT_PAD_READ;     /* until split_plan_main() */
    sp->nseg = sp->cur_seg = 0;
    sp->cur_pos = 0;
    sp->busy = 0;
    sp->in_flight = 0;
    sp->issuing = false;
    sp->ret = 0;
    return sp;
}

static void
split_put(struct ng_split *sp)
{
    struct ng_node *node = sp->node;

    sp->next_free = node->split_free;
    node->split_free = sp;
}

void
ng_split_free_pool(struct ng_node *node)
{
    struct ng_split *sp;

    while ((sp = node->split_free) != NULL) {
        node->split_free = sp->next_free;
        free(sp->pad);
        free(sp->iov_heap);
        free(sp);
    }
}

/* A pad buffer of two blocks; kept with the context. */
static int
split_pad(struct ng_split *sp)
{
    size_t need = (size_t)(2 * sp->align);
    size_t mem_align = sp->align < 4096 ? (size_t)sp->align : 4096;
    void *p;

    if (sp->pad_cap >= need)
        return 0;
    if (mem_align < sizeof(void *))
        mem_align = sizeof(void *);
    if (posix_memalign(&p, mem_align, need) != 0)
        return -ENOMEM;
    free(sp->pad);
    sp->pad = p;
    sp->pad_cap = need;
    return 0;
}

/* Room for n view elements. */
static struct iovec *
split_iov_array(struct ng_split *sp, unsigned n)
{
    struct iovec *p;

    if (n <= SPLIT_INLINE_IOV)
        return sp->iov_inline;
    if (sp->iov_heap_cap >= n)
        return sp->iov_heap;
    if ((p = realloc(sp->iov_heap, n * sizeof *p)) == NULL)
        return NULL;
    sp->iov_heap = p;
    sp->iov_heap_cap = n;
    return p;
}

/* Elements of v that hold its first len bytes. */
static unsigned
iov_count(const struct ng_iov *v, uint64_t len)
{
    uint64_t done = 0;
    unsigned n = 0;

    for (unsigned i = 0; i < v->niov && done < len; i++) {
        done += v->iov[i].iov_len - (i == 0 ? v->skip : 0);
        n++;
    }
    return n;
}

/* The view [pre bytes at pre_p] + caller's data + [post bytes at
 * post_p]; -ENOMEM when the caller's view is too fragmented to copy. */
static int
split_wrap_iov(struct ng_split *sp, void *pre_p, size_t pre, void *post_p,
               size_t post, struct ng_iov *out)
{
    struct ng_req *req = sp->req;
    unsigned n = iov_count(&req->iov, req->length);
    struct iovec *a = split_iov_array(sp, n + 2);
    unsigned k = 0;
    size_t covered;

    if (a == NULL)
        return -ENOMEM;
    if (pre > 0)
        a[k++] = (struct iovec){ pre_p, pre };
    k += ng_iov_export(&req->iov, (size_t)req->length, a + k, n, &covered);
    if (covered < req->length)
        return -EIO;                /* a view shorter than the request */
    if (post > 0)
        a[k++] = (struct iovec){ post_p, post };
    *out = (struct ng_iov){ .iov = a, .niov = k, .skip = 0 };
    return 0;
}

static void
split_add_seg(struct ng_split *sp, enum ng_op op, uint32_t flags,
              uint64_t off, uint64_t len, const struct ng_iov *iov)
{
    struct split_seg *s = &sp->seg[sp->nseg++];

    s->op = op;
    s->flags = flags;
    s->off = off;
    s->len = len;
    if (iov != NULL)
        s->iov = *iov;
    else
        s->iov = (struct ng_iov){ .iov = NULL, .niov = 0, .skip = 0 };
}

/* ---- Pieces ----------------------------------------------------------- */

static void split_issue(struct ng_split *sp);

static void
split_piece_done(struct ng_req *sub, int ret)
{
    struct ng_split *sp = sub->opaque;

    sp->busy &= ~(1u << (sub - sp->sub));
    sp->in_flight--;
    if (ret < 0 && sp->ret == 0)
        sp->ret = ret;
    split_issue(sp);
}

/* Start the next piece of the current segments in sub[slot]. */
static void
split_start_piece(struct ng_split *sp, unsigned slot)
{
    struct split_seg *s = &sp->seg[sp->cur_seg];
    struct ng_req *sub = &sp->sub[slot];
    uint64_t n = s->len - sp->cur_pos;

    if (sp->max != 0 && n > sp->max)
        n = sp->max;
    ng_req_init(sub, s->op, s->off + sp->cur_pos, n, s->flags);
    if (s->iov.niov > 0)
        ng_iov_slice(&s->iov, sp->cur_pos, &sub->iov);
    if (s->op == NG_OP_BLOCK_STATUS) {
        sub->extents = sp->req->extents;
        sub->max_extents = sp->req->max_extents;
    }
    sub->done = split_piece_done;
    sub->opaque = sp;
    sp->cur_pos += n;
    if (sp->cur_pos == s->len) {
        sp->cur_seg++;
        sp->cur_pos = 0;
    }
    sp->busy |= 1u << slot;
    sp->in_flight++;
    ng_node_call_driver(sp->node, sub);
}

static void split_phase_done(struct ng_split *sp);

/* Keep up to SPLIT_PARALLEL pieces in flight.  A piece that completes
 * inline lands here again while we are still issuing: the loop carries
 * on instead of recursing. */
static void
split_issue(struct ng_split *sp)
{
    if (sp->issuing)
        return;
    sp->issuing = true;
    while (sp->ret == 0 && sp->cur_seg < sp->nseg &&
           sp->in_flight < SPLIT_PARALLEL) {
        unsigned slot = 0;

        while (sp->busy & (1u << slot))
            slot++;
        split_start_piece(sp, slot);
    }
    sp->issuing = false;
    if (sp->in_flight == 0 && (sp->ret != 0 || sp->cur_seg == sp->nseg))
        split_phase_done(sp);
}

/* ---- Serialisation ------------------------------------------------------ */

static bool
split_overlaps(const struct ng_split *a, const struct ng_split *b)
{
    return a->lo < b->hi && b->lo < a->hi;
}

/* Queue sp behind the oldest tracked request it must wait for; false
 * when there is none. */
static bool
split_must_wait(struct ng_split *sp)
{
    struct ng_split *o;

    for (o = sp->node->split_head; o != NULL && o != sp; o = o->next) {
        if (split_overlaps(o, sp) && (o->serialising || sp->serialising)) {
            sp->wait_next = NULL;
            if (o->wait_tail != NULL)
                o->wait_tail->wait_next = sp;
            else
                o->wait_head = sp;
            o->wait_tail = sp;
            return true;
        }
    }
    return false;
}

static void
split_track(struct ng_split *sp)
{
    struct ng_node *node = sp->node;

    sp->tracked = true;
    sp->next = NULL;
    sp->prev = node->split_tail;
    if (node->split_tail != NULL)
        node->split_tail->next = sp;
    else
        node->split_head = sp;
    node->split_tail = sp;
}

/* Leave the list; returns who waited for us (each then checks again). */
static struct ng_split *
split_untrack(struct ng_split *sp)
{
    struct ng_node *node = sp->node;

    if (!sp->tracked)
        return NULL;
    if (sp->prev != NULL)
        sp->prev->next = sp->next;
    else
        node->split_head = sp->next;
    if (sp->next != NULL)
        sp->next->prev = sp->prev;
    else
        node->split_tail = sp->prev;
    sp->tracked = false;
    return sp->wait_head;
}

static void split_run(struct ng_split *sp);

static void
split_wake(struct ng_split *w)
{
    while (w != NULL) {
        struct ng_split *next = w->wait_next;

        if (!split_must_wait(w))
            split_run(w);
        w = next;
    }
}

/* ---- Plans -------------------------------------------------------------- */

/* Where the partial head and tail blocks of [off, end) lie. */
static void
split_layout(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    uint64_t a = sp->align, off = req->offset, end = off + req->length;

    sp->lo = align_down(off, a);
    sp->hi = align_up(end, a);
    if (sp->hi > sp->size)
        sp->hi = sp->size;
    sp->hb_end = sp->lo + a < sp->hi ? sp->lo + a : sp->hi;
    sp->head_rmw = off > sp->lo || end < sp->hb_end;
    sp->tail_start = align_down(end, a);
    /* A tail block of its own; when head and tail share a block, the
     * head block holds both. */
    sp->tail_rmw = end < sp->hi && sp->tail_start >= sp->hb_end;
}

/* Read the partial blocks a read-modify-write needs into the pad. */
static void
split_plan_pad_reads(struct ng_split *sp)
{
    struct ng_iov v;
    struct iovec *e = sp->iov_inline;

    sp->phase = SPLIT_PAD_READ;
    if (sp->head_rmw) {
        e[0] = (struct iovec){ sp->pad, (size_t)(sp->hb_end - sp->lo) };
        v = (struct ng_iov){ .iov = &e[0], .niov = 1, .skip = 0 };
        split_add_seg(sp, NG_OP_READ, 0, sp->lo, sp->hb_end - sp->lo, &v);
    }
    if (sp->tail_rmw) {
        e[1] = (struct iovec){ sp->pad + sp->align,
                               (size_t)(sp->hi - sp->tail_start) };
        v = (struct ng_iov){ .iov = &e[1], .niov = 1, .skip = 0 };
        split_add_seg(sp, NG_OP_READ, 0, sp->tail_start,
                      sp->hi - sp->tail_start, &v);
    }
}

/* Where the bytes after the caller's range, up to hi, sit in the pad. */
static unsigned char *
split_pad_after(struct ng_split *sp, uint64_t end)
{
    if (sp->tail_rmw)
        return sp->pad + sp->align + (end - sp->tail_start);
    return sp->pad + (end - sp->lo);
}

/* A write over [lo, hi): pad head, the caller's data, pad tail. */
static int
split_plan_write(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    uint64_t end = req->offset + req->length;
    struct ng_iov v;
    int r = split_wrap_iov(sp, sp->pad, (size_t)(req->offset - sp->lo),
                           split_pad_after(sp, end), (size_t)(sp->hi - end),
                           &v);

    if (r < 0)
        return r;
    split_add_seg(sp, NG_OP_WRITE, req->flags & NG_REQ_FUA, sp->lo,
                  sp->hi - sp->lo, &v);
    return 0;
}

/* Write-zeroes: the partial blocks, zeroed in the pad, are written; the
 * aligned middle stays write-zeroes. */
static void
split_plan_zero(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    uint64_t off = req->offset, end = off + req->length;
    uint64_t mid_start = off, mid_end = end;
    uint32_t fua = req->flags & NG_REQ_FUA;
    struct iovec *e = sp->iov_inline;
    struct ng_iov v;

    if (sp->head_rmw) {
        uint64_t z_end = end < sp->hb_end ? end : sp->hb_end;

        memset(sp->pad + (off - sp->lo), 0, (size_t)(z_end - off));
        e[0] = (struct iovec){ sp->pad, (size_t)(sp->hb_end - sp->lo) };
        v = (struct ng_iov){ .iov = &e[0], .niov = 1, .skip = 0 };
        split_add_seg(sp, NG_OP_WRITE, fua, sp->lo, sp->hb_end - sp->lo,
                      &v);
        mid_start = sp->hb_end;
    }
    if (sp->tail_rmw) {
        memset(sp->pad + sp->align, 0, (size_t)(end - sp->tail_start));
        mid_end = sp->tail_start;
    }
    if (mid_end > mid_start)
        split_add_seg(sp, NG_OP_WRITE_ZEROES, req->flags, mid_start,
                      mid_end - mid_start, NULL);
    if (sp->tail_rmw) {
        e[1] = (struct iovec){ sp->pad + sp->align,
                               (size_t)(sp->hi - sp->tail_start) };
        v = (struct ng_iov){ .iov = &e[1], .niov = 1, .skip = 0 };
        split_add_seg(sp, NG_OP_WRITE, fua, sp->tail_start,
                      sp->hi - sp->tail_start, &v);
    }
}

/* A read over [lo, hi): what lies outside the caller's range goes to
 * the pad and is thrown away. */
static int
split_plan_read(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    uint64_t end = req->offset + req->length;
    struct ng_iov v;
    int r = split_wrap_iov(sp, sp->pad, (size_t)(req->offset - sp->lo),
                           sp->pad + sp->align, (size_t)(sp->hi - end), &v);

    if (r < 0)
        return r;
    split_add_seg(sp, NG_OP_READ, req->flags, sp->lo, sp->hi - sp->lo, &v);
    return 0;
}

/* The request as it is, only cut into pieces. */
static void
split_plan_as_is(struct ng_split *sp)
{
    struct ng_req *req = sp->req;

    split_add_seg(sp, req->op, req->flags, req->offset, req->length,
                  &req->iov);
}

/* The segments of the request itself, once the pad holds what RMW
 * needs. */
static int
split_plan_main(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    bool aligned = sp->align == 1 ||
                   range_aligned(req->offset, req->offset + req->length,
                                 sp->align, sp->size);

    sp->phase = SPLIT_MAIN;
    sp->nseg = sp->cur_seg = 0;
    sp->cur_pos = 0;
    if (req->op == NG_OP_BLOCK_STATUS) {
        /* One piece into the caller's array, whole blocks, at most
         * max_transfer bytes: a short answer is an answer. */
        uint64_t len = sp->hi - sp->lo;

        if (sp->max != 0 && len > sp->max)
            len = sp->max;
        split_add_seg(sp, req->op, req->flags, sp->lo, len, NULL);
        return 0;
    }
    if (aligned) {
        split_plan_as_is(sp);
        return 0;
    }
    switch (req->op) {
    case NG_OP_READ:
        return split_plan_read(sp);
    case NG_OP_WRITE:
        return split_plan_write(sp);
    case NG_OP_WRITE_ZEROES:
        split_plan_zero(sp);
        return 0;
    case NG_OP_TRIM:                /* advisory: the whole blocks only */
        split_add_seg(sp, NG_OP_TRIM, req->flags, sp->lo, sp->hi - sp->lo,
                      NULL);
        return 0;
    default:                        /* cache: whole blocks */
        split_add_seg(sp, req->op, req->flags, sp->lo, sp->hi - sp->lo,
                      NULL);
        return 0;
    }
}

/* ---- Completion --------------------------------------------------------- */

/* Block status was asked for [lo, ...): drop what lies before the
 * caller's offset and past its end. */
static void
split_fix_extents(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    struct ng_extent *e = req->extents;
    uint32_t nr = sp->sub[0].nr_extents, first = 0, i;
    uint64_t head = req->offset - sp->seg[0].off, sum = 0;

    while (first < nr && e[first].length <= head) {
        head -= e[first].length;
        first++;
    }
    if (first == nr) {              /* the answer stopped in the head */
        e[0] = (struct ng_extent){ .length = req->length, .flags = 0 };
        req->nr_extents = 1;
        return;
    }
    e[first].length -= head;
    for (i = first; i < nr && sum < req->length; i++) {
        if (e[i].length > req->length - sum)
            e[i].length = req->length - sum;
        sum += e[i].length;
    }
    memmove(e, e + first, (i - first) * sizeof *e);
    req->nr_extents = i - first;
}

static void
split_finish(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    struct ng_node *node = sp->node;
    struct ng_split *waiters = split_untrack(sp);
    int ret = sp->ret;

    if (ret == 0 && req->op == NG_OP_BLOCK_STATUS)
        split_fix_extents(sp);
    node->in_flight--;
    split_put(sp);
    split_wake(waiters);
    ng_req_complete(req, ret);
}

static void
split_phase_done(struct ng_split *sp)
{
    int r;

    if (sp->ret != 0 || sp->phase == SPLIT_MAIN) {
        split_finish(sp);
        return;
    }
    if ((r = split_plan_main(sp)) < 0) {
        sp->ret = r;
        split_finish(sp);
        return;
    }
    split_issue(sp);
}

/* Admitted: read what RMW needs, or go straight to the request. */
static void
split_run(struct ng_split *sp)
{
    if (sp->head_rmw || sp->tail_rmw) {
        split_plan_pad_reads(sp);
        split_issue(sp);
        return;
    }
    split_phase_done(sp);
}

/* ---- Entry -------------------------------------------------------------- */

/* Trim keeps the whole blocks it covers; false when there are none. */
static bool
split_shrink_trim(struct ng_split *sp)
{
    struct ng_req *req = sp->req;
    uint64_t end = req->offset + req->length;

    sp->lo = align_up(req->offset, sp->align);
    sp->hi = end == sp->size ? end : align_down(end, sp->align);
    return sp->lo < sp->hi;
}

void
ng_split_submit(struct ng_node *node, const struct ng_node_facts *f,
                struct ng_req *req)
{
    struct ng_split *sp = split_get(node);

    if (sp == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    sp->req = req;
    sp->size = (uint64_t)f->size;
    sp->align = f->request_alignment > 1 ? f->request_alignment : 1;
    /* Pieces must stay aligned: a limit below one block, or not a
     * multiple of one, is taken as the multiple below (one block at
     * least). */
    sp->max = align_down(f->max_transfer, sp->align);
    if (f->max_transfer != 0 && sp->max == 0)
        sp->max = sp->align;
    node->in_flight++;
    if (req->op == NG_OP_TRIM && sp->align > 1) {
        if (!split_shrink_trim(sp)) {
            sp->ret = 0;
            split_finish(sp);
            return;
        }
    } else {
        split_layout(sp);
    }
    if (req->op != NG_OP_WRITE && req->op != NG_OP_WRITE_ZEROES)
        sp->head_rmw = sp->tail_rmw = false;
    if (sp->head_rmw || sp->tail_rmw ||
        (req->op == NG_OP_READ && sp->align > 1)) {
        int r = split_pad(sp);

        if (r < 0) {
            sp->ret = r;
            split_finish(sp);
            return;
        }
    }
    if (sp->align > 1 && ng_req_changes_data(req)) {
        sp->serialising = sp->head_rmw || sp->tail_rmw;
        split_track(sp);
        if (split_must_wait(sp))
            return;
    }
    split_run(sp);
}
