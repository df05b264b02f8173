/* filters/copy-on-read.c: "copy-on-read", QEMU's copy-on-read filter.
 *
 * A read first asks the node below which parts of the range its own
 * layer lacks (block status with NG_REQ_LOCAL_ONLY: HOLE = the data comes
 * from the backing node).  If there are any, the read goes down as usual
 * and, once it has the data, the filter writes those parts into the node
 * below before completing it, straight from the read's buffer; the next
 * read is then served by the top layer alone.  A node without a backing
 * node reports nothing missing, so nothing is ever copied there.  A copy
 * that fails is not a client's problem: the data it got is right, and
 * the next read tries again.  But a read made only to copy up
 * (NG_REQ_PREFETCH: block-stream's) fails with the copy's error, or the
 * job would count a range it never copied as done and go round again
 * for ever.
 *
 * The copy must not overwrite newer data.  Every range in flight through
 * the filter is tracked (struct cor_track): a write, write-zeroes or trim
 * that overlaps a read that may copy waits until the copy is done
 * (queued through ng_req.filter_next), and a read that overlaps a write
 * in flight does not copy at all.  Writes that reach the node below
 * without passing through this filter are not serialised (as in QEMU,
 * where that takes the whole node's request tracking).
 *
 * A tracking context is the request's own (ng_req_ctx()): the core keeps
 * them on a free list, so steady-state I/O allocates nothing.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "graph/graph.h"
#include "filters/filters.h"

/* Extents of one block status answer; a read whose range is more
 * fragmented than this copies the first parts now, the rest next time. */
#define COR_MAX_EXTENTS 16

struct cor_track {
    struct ng_node *node;
    struct ng_req *req;             /* the request being tracked */
    uint64_t off, len;
    bool copying;                   /* a read that may copy up */
    struct ng_req *wait_head, *wait_tail;   /* writes waiting for it */
    struct ng_req sub;              /* block status, then the copies */
    struct ng_extent ext[COR_MAX_EXTENTS];
    uint32_t n_ext;                 /* extents in the answer */
    uint32_t next_ext;              /* copy cursor */
    uint64_t ext_off;
    struct cor_track *prev, *next;  /* in flight */
};

struct cor_state {
    struct ng_node *file;           /* option "file" */
    struct cor_track *active;       /* ranges in flight */
};

static const struct ng_opt_desc cor_opts[] = {
    NG_OPT_CHILD("file", struct cor_state, file, NG_ROLE_FILTERED, true,
                 "the node below, whose backing data is copied into it"),
    NG_OPT_END,
};

static void cor_write(struct ng_node *node, struct ng_req *req);

/* ---- Tracking ----------------------------------------------------------- */

static bool
cor_overlaps(const struct cor_track *t, const struct ng_req *req)
{
    return req->offset < t->off + t->len && t->off < req->offset + req->length;
}

/* The first tracked range overlapping req that is (or is not) a read
 * that copies. */
static struct cor_track *
cor_find(struct cor_state *s, const struct ng_req *req, bool copying)
{
    struct cor_track *t;

    for (t = s->active; t != NULL; t = t->next)
        if (t->copying == copying && cor_overlaps(t, req))
            return t;
    return NULL;
}

static struct cor_track *
cor_track(struct ng_node *node, struct ng_req *req, bool copying)
{
    struct cor_state *s = ng_node_state(node);
    struct cor_track *t = ng_req_ctx(node, req);

    if (t == NULL)
        return NULL;
    t->node = node;
    t->req = req;
    t->off = req->offset;
    t->len = req->length;
    t->copying = copying;
    t->wait_head = t->wait_tail = NULL;
    t->prev = NULL;
    t->next = s->active;
    if (s->active != NULL)
        s->active->prev = t;
    s->active = t;
    return t;
}

/* Stop tracking (the core takes the context back when the request
 * completes); writes that waited for the range go on (or wait for
 * another copy).  They were submitted to us already, so they re-enter
 * past the choke point. */
static void
cor_untrack(struct cor_track *t)
{
    struct ng_node *node = t->node;
    struct cor_state *s = ng_node_state(node);
    struct ng_req *req = t->wait_head;

    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        s->active = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    while (req != NULL) {
        struct ng_req *next = req->filter_next;

        req->filter_next = NULL;
        cor_write(node, req);
        req = next;
    }
}

/* ---- Writes ------------------------------------------------------------- */

static void
cor_write_done(struct ng_req *req, int ret, void *opaque)
{
    cor_untrack(opaque);
    ng_req_complete(req, ret);
}

/* Write, write-zeroes, trim: wait for overlapping copies, then go down
 * tracked, so that reads starting meanwhile do not copy over them. */
static void
cor_write(struct ng_node *node, struct ng_req *req)
{
    struct cor_state *s = ng_node_state(node);
    struct cor_track *t = cor_find(s, req, true);

    if (t != NULL) {
        req->filter_next = NULL;
        if (t->wait_tail != NULL)
            t->wait_tail->filter_next = req;
        else
            t->wait_head = req;
        t->wait_tail = req;
        return;
    }
    if ((t = cor_track(node, req, false)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    if (ng_req_push(req, cor_write_done, t) < 0) {
        cor_untrack(t);
        ng_req_complete(req, -ELOOP);
        return;
    }
    ng_node_forward(node, req);
}

/* ---- Reads -------------------------------------------------------------- */

/* The copies are done (or failed): the read completes. */
static void
cor_read_finish(struct cor_track *t, int ret)
{
    struct ng_req *req = t->req;

    cor_untrack(t);
    ng_req_complete(req, ret);
}

static void cor_copy_next(struct cor_track *t);

static void
cor_copy_done(struct ng_req *sub, int ret)
{
    struct cor_track *t = sub->opaque;

    if (ret < 0 && (t->req->flags & NG_REQ_PREFETCH)) {
        cor_read_finish(t, ret);    /* see the top of the file */
        return;
    }
    t->ext_off += sub->length;
    t->next_ext++;
    cor_copy_next(t);
}

/* Write the next missing extent into the node below, from the read's own
 * buffer. */
static void
cor_copy_next(struct cor_track *t)
{
    struct cor_state *s = ng_node_state(t->node);
    struct ng_req *req = t->req;

    while (t->next_ext < t->n_ext) {
        const struct ng_extent *e = &t->ext[t->next_ext];

        if (e->flags & NG_EXTENT_HOLE) {
            uint64_t off = t->ext_off;

            /* Made for the read: a job's bulk copy (block-stream) stays
             * off the loop (NG_REQ_INHERITED). */
            ng_req_init(&t->sub, NG_OP_WRITE, off, e->length,
                        req->flags & NG_REQ_INHERITED);
            ng_iov_slice(&req->iov, off - req->offset, &t->sub.iov);
            t->sub.done = cor_copy_done;
            t->sub.opaque = t;
            ng_node_submit(s->file, &t->sub);
            return;
        }
        t->ext_off += e->length;
        t->next_ext++;
    }
    cor_read_finish(t, 0);
}

static void
cor_read_done(struct ng_req *req, int ret, void *opaque)
{
    struct cor_track *t = opaque;

    if (ret < 0) {
        cor_read_finish(t, ret);
        return;
    }
    t->next_ext = 0;
    t->ext_off = req->offset;
    cor_copy_next(t);
}

/* What the layer below lacks is known: read, then copy, or just read. */
static void
cor_status_done(struct ng_req *sub, int ret)
{
    struct cor_track *t = sub->opaque;
    struct ng_node *node = t->node;
    struct ng_req *req = t->req;
    bool missing = false;

    if (ret < 0 && (req->flags & NG_REQ_PREFETCH)) {
        cor_read_finish(t, ret);    /* nothing was copied: say so */
        return;
    }
    t->n_ext = ret == 0 ? sub->nr_extents : 0;
    for (uint32_t i = 0; i < t->n_ext; i++)
        missing |= (t->ext[i].flags & NG_EXTENT_HOLE) != 0;
    if (!missing || ng_req_push(req, cor_read_done, t) < 0) {
        cor_untrack(t);
        ng_node_forward(node, req);
        return;
    }
    ng_node_forward(node, req);
}

static void
cor_read(struct ng_node *node, struct ng_req *req)
{
    struct cor_state *s = ng_node_state(node);
    struct cor_track *t;

    /* A read that cannot copy is still a correct read: nowhere to write
     * to, a write in flight that the copy could overwrite, no memory to
     * track it. */
    if (!(ng_node_caps(s->file) & NG_CAP_WRITE) ||
        cor_find(s, req, false) != NULL ||
        (t = cor_track(node, req, true)) == NULL) {
        ng_node_forward(node, req);
        return;
    }
    ng_req_init(&t->sub, NG_OP_BLOCK_STATUS, req->offset, req->length,
                NG_REQ_LOCAL_ONLY | (req->flags & NG_REQ_INHERITED));
    t->sub.extents = t->ext;
    t->sub.max_extents = COR_MAX_EXTENTS;
    t->sub.done = cor_status_done;
    t->sub.opaque = t;
    ng_node_submit(s->file, &t->sub);
}

static void
cor_submit(struct ng_node *node, struct ng_req *req)
{
    switch (req->op) {
    case NG_OP_READ:
        cor_read(node, req);
        break;
    case NG_OP_WRITE:
    case NG_OP_WRITE_ZEROES:
    case NG_OP_TRIM:
        cor_write(node, req);
        break;
    default:                        /* flush, block status, cache */
        ng_node_forward(node, req);
        break;
    }
}

const struct ng_driver ng_filter_copy_on_read = {
    .name       = "copy-on-read",
    .help       = "copy data read from a backing node into the node above it",
    .is_filter  = true,
    .frames     = 1,                /* cor_read_done, cor_write_done */
    .state_size = sizeof(struct cor_state),
    .req_ctx_size = sizeof(struct cor_track),
    .opts       = cor_opts,
    .submit     = cor_submit,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
