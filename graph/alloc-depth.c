/* graph/alloc-depth.c: which layer of a backing chain holds each range
 * (qemu:allocation-depth): a BLOCK_STATUS with NG_REQ_ALLOC_DEPTH.
 *
 * The BB runs it (ng_bb_dispatch) instead of handing it to its root, so
 * it counts as one of the BB's requests in flight and a drained section
 * waits for it: the nodes it walks cannot change under it.  For each
 * run it asks the layers top down, NG_REQ_LOCAL_ONLY, one extent at a
 * time; filters are passed through and count for nothing.  The bottom
 * layer is asked without NG_REQ_LOCAL_ONLY when its driver can have a
 * backing node (memory, qcow2): there a hole is unallocated in the
 * whole chain, depth 0, as QEMU says for a qcow2 image; any other
 * bottom (a file) owns all its data.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

struct depth_walk {
    struct ng_req *req;             /* the caller's, filled as we go */
    struct ng_node *top;            /* first non-filter layer */
    struct ng_node *layer;          /* being asked */
    uint32_t depth;                 /* of `layer`: 1 = top */
    uint64_t pos, end;              /* what is left to describe */
    uint64_t run;                   /* the run at pos is at most this long:
                                     * the layers above are holes there */
    struct ng_req sub;
    struct ng_extent ext;
    int sub_ret;
    bool sub_done, in_submit;
};

static void walk_ask(struct depth_walk *w);

/* Can nodes of this driver have a backing node? */
static bool
driver_takes_backing(const struct ng_driver *drv)
{
    const struct ng_opt_desc *o;

    for (o = drv->opts; o != NULL && o->name != NULL; o++)
        if (o->type == NG_OPT_T_CHILD && o->role == NG_ROLE_BACKING)
            return true;
    return false;
}

/* Append [.., + len) at `depth`, merging with an equal neighbour. */
static bool
walk_emit(struct depth_walk *w, uint64_t len, uint32_t depth)
{
    struct ng_req *req = w->req;
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
    struct ng_extent *last = req->nr_extents > 0
                             ? &req->extents[req->nr_extents - 1] : NULL;

    if (last != NULL && last->flags == depth) {
        last->length += len;
    } else if (req->nr_extents < max) {
        req->extents[req->nr_extents].length = len;
        req->extents[req->nr_extents].flags = depth;
        req->nr_extents++;
    } else {
        return false;
    }
    w->pos += len;
    return w->pos < w->end;
}

static void
walk_finish(struct depth_walk *w, int ret)
{
    struct ng_req *req = w->req;

    if (ret == 0 && req->nr_extents == 0)
        ret = -EIO;
    free(w);
    ng_req_complete(req, ret);
}

/* Start the run at w->pos from the top layer. */
static void
walk_new_run(struct depth_walk *w)
{
    w->layer = w->top;
    w->depth = 1;
    w->run = w->end - w->pos;
}

/* Take in the answer of `layer`; true when another question follows,
 * false when the walk is over (the request completed). */
static bool
walk_absorb(struct depth_walk *w)
{
    struct ng_node *backing = ng_node_child_role(w->layer, NG_ROLE_BACKING);
    uint64_t len = w->run;
    bool hole = false;

    if (w->sub_ret < 0) {
        walk_finish(w, w->sub_ret);
        return false;
    }
    if (w->sub.nr_extents > 0) {
        if (w->ext.length > 0 && w->ext.length < len)
            len = w->ext.length;
        hole = (w->ext.flags & NG_EXTENT_HOLE) != 0;
    }
    if (hole && backing != NULL) {      /* look further down */
        w->layer = ng_node_skip_filters(backing);
        w->depth++;
        w->run = len;
        if (w->layer != NULL)
            return true;
        hole = true;
    }
    if (!walk_emit(w, len, hole ? 0 : w->depth)) {
        walk_finish(w, 0);
        return false;
    }
    walk_new_run(w);
    return true;
}

static void
walk_sub_done(struct ng_req *sub, int ret)
{
    struct depth_walk *w = sub->opaque;

    w->sub_ret = ret;
    w->sub_done = true;
    if (!w->in_submit && walk_absorb(w))
        walk_ask(w);
}

/* Ask w->layer about [pos, pos + run), and go on while the answers
 * come inline (a loop, not a recursion). */
static void
walk_ask(struct depth_walk *w)
{
    for (;;) {
        bool local = ng_node_child_role(w->layer, NG_ROLE_BACKING) != NULL ||
                     !driver_takes_backing(w->layer->driver);

        ng_req_init(&w->sub, NG_OP_BLOCK_STATUS, w->pos, w->run,
                    NG_REQ_REQ_ONE | (local ? NG_REQ_LOCAL_ONLY : 0));
        w->sub.extents = &w->ext;
        w->sub.max_extents = 1;
        w->sub.nr_extents = 0;
        w->sub.done = walk_sub_done;
        w->sub.opaque = w;
        w->sub_done = false;
        w->in_submit = true;
        ng_node_submit(w->layer, &w->sub);
        w->in_submit = false;
        if (!w->sub_done || !walk_absorb(w))
            return;
    }
}

void
ng_alloc_depth_start(struct ng_node *root, struct ng_req *req)
{
    struct depth_walk *w;

    req->nr_extents = 0;
    if (req->length == 0 || req->extents == NULL || req->max_extents == 0) {
        ng_req_complete(req, -EINVAL);
        return;
    }
    if ((w = calloc(1, sizeof *w)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    w->req = req;
    w->top = ng_node_skip_filters(root);
    w->pos = req->offset;
    w->end = req->offset + req->length;
    if (w->top == NULL) {
        walk_finish(w, -ENOMEDIUM);
        return;
    }
    walk_new_run(w);
    walk_ask(w);
}
