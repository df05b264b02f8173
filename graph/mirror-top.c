/* graph/mirror-top.c: "mirror_top", the mirror job's filter (QEMU's
 * mirror_top / commit_top).  blockdev-mirror and block-commit put one
 * above their source when asked for a filter-node-name or for copy-mode
 * write-blocking, and take it out when the job ends.
 *
 * In write-blocking mode (a job attached with ng_mirror_top_attach())
 * each write, write-zeroes or trim takes a lock on its range in the
 * job's copy engine (no background chunk runs over it), goes to the
 * source, then the same op goes to the target, and only then completes:
 * the range is in sync once the client hears back, so the job converges
 * however fast clients write.  Granules the write covers only partly
 * that are still dirty are left to the background copy (the engine
 * trims the range, as QEMU's do_sync_target_write does).  A target
 * write that fails does not fail the client's write (the source has the
 * data): its range goes back to the background copy, whose errors follow
 * on-target-error.
 *
 * Without a job attached it passes everything through. */
#include <config.h>

#include <errno.h>

#include "graph/copy.h"
#include "graph/drivers.h"
#include "graph/mirror.h"

struct mt_state {
    struct ng_node *child;          /* option "file" */
    struct ng_copy *copy;           /* the job's engine, or NULL */
    struct ng_bb *target;           /* the job's target BB */
};

/* One write in flight, the request's context (ng_req_ctx()). */
struct mt_op {
    struct ng_copy_lock lock;
    struct ng_node *node;
    struct ng_req *req;
    struct ng_req sub;              /* the same op on the target */
};

static const struct ng_opt_desc mt_opts[] = {
    NG_OPT_CHILD("file", struct mt_state, child, NG_ROLE_FILTERED, true,
                 "the node a mirror or commit job copies from"),
    NG_OPT_END,
};

static void
mt_finish(struct mt_op *op, bool copied, int ret)
{
    struct mt_state *s = ng_node_state(op->node);
    struct ng_req *req = op->req;

    ng_copy_unlock(s->copy, &op->lock, copied);
    ng_req_complete(req, ret);
}

static void
mt_target_done(struct ng_req *sub, int ret)
{
    mt_finish(sub->opaque, ret == 0, 0);
}

/* The op a target without req's own cap gets instead, or -1: the range
 * is left to the background copy then. */
static int
target_op(const struct ng_req *req, uint32_t caps, uint32_t *flags)
{
    *flags = 0;
    switch (req->op) {
    case NG_OP_WRITE:
        return NG_OP_WRITE;
    case NG_OP_WRITE_ZEROES:
        if (!(caps & NG_CAP_ZERO))
            return -1;
        if (caps & NG_CAP_TRIM)
            *flags = req->flags & NG_REQ_MAY_TRIM;
        return NG_OP_WRITE_ZEROES;
    case NG_OP_TRIM:
        return caps & NG_CAP_TRIM ? NG_OP_TRIM : -1;
    default:
        return -1;
    }
}

/* The source has it: the same op on the target, for what the lock says
 * is worth copying. */
static void
mt_source_done(struct ng_req *req, int ret, void *opaque)
{
    struct mt_op *op = opaque;
    struct mt_state *s = ng_node_state(op->node);
    uint32_t flags;
    int top;

    (void)req;
    if (ret < 0) {
        mt_finish(op, false, ret);
        return;
    }
    top = target_op(op->req, ng_bb_caps(s->target), &flags);
    if (op->lock.copy_length == 0 || top < 0) {
        mt_finish(op, false, 0);
        return;
    }
    ng_req_init(&op->sub, (enum ng_op)top, op->lock.copy_offset,
                op->lock.copy_length, flags);
    if (top == NG_OP_WRITE)
        ng_iov_slice(&op->req->iov, op->lock.copy_offset - op->req->offset,
                     &op->sub.iov);
    op->sub.done = mt_target_done;
    op->sub.opaque = op;
    ng_bb_submit(s->target, &op->sub);
}

/* Granted (ret 0): to the source, and back through mt_source_done. */
static void
mt_locked(struct ng_copy_lock *l, int ret)
{
    struct mt_op *op = l->opaque;

    if (ret < 0) {                  /* the job stops: pass it through */
        ng_node_forward(op->node, op->req);
        return;
    }
    if (ng_req_push(op->req, mt_source_done, op) < 0) {
        mt_finish(op, false, -ELOOP);
        return;
    }
    ng_node_forward(op->node, op->req);
}

static void
mt_submit(struct ng_node *node, struct ng_req *req)
{
    struct mt_state *s = ng_node_state(node);
    struct mt_op *op;
    int r;

    if (s->copy == NULL || !ng_req_changes_data(req) ||
        (op = ng_req_ctx(node, req)) == NULL) {
        ng_node_forward(node, req);
        return;
    }
    op->node = node;
    op->req = req;
    op->lock = (struct ng_copy_lock){ .offset = req->offset,
                                      .length = req->length,
                                      .granted = mt_locked, .opaque = op };
    r = ng_copy_lock(s->copy, &op->lock);
    if (r == 1)
        mt_locked(&op->lock, 0);
    else if (r < 0)
        ng_node_forward(node, req);
}

void
ng_mirror_top_attach(struct ng_node *node, struct ng_copy *copy,
                     struct ng_bb *target)
{
    struct mt_state *s = ng_node_state(node);

    s->copy = copy;
    s->target = target;
}

void
ng_mirror_top_detach(struct ng_node *node)
{
    ng_mirror_top_attach(node, NULL, NULL);
}

const struct ng_driver ng_filter_mirror_top = {
    .name         = "mirror_top",
    .help         = "the mirror and commit jobs' filter: with copy-mode "
                    "write-blocking, writes reach the target before they "
                    "complete (the jobs put it in)",
    .is_filter    = true,
    .state_size   = sizeof(struct mt_state),
    .req_ctx_size = sizeof(struct mt_op),
    .opts         = mt_opts,
    .submit       = mt_submit,
};
