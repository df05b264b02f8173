/* graph/req.c: request completion frames and blocking work on the node's pool. */
#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "graph/graph.h"

void
ng_req_init(struct ng_req *req, enum ng_op op, uint64_t offset,
            uint64_t length, uint32_t flags)
{
    req->op = op;
    req->offset = offset;
    req->length = length;
    req->flags = flags;
    req->nr_extents = 0;
    req->depth = 0;
    req->bb = NULL;
    req->queue_next = NULL;
    req->filter_next = NULL;
}

int
ng_req_push(struct ng_req *req, ng_req_cb *cb, void *opaque)
{
    if (req->depth >= NG_REQ_MAX_FRAMES)
        return -1;
    req->frames[req->depth].cb = cb;
    req->frames[req->depth].opaque = opaque;
    req->depth++;
    return 0;
}

void
ng_req_complete(struct ng_req *req, int ret)
{
    struct ng_req_frame *f;

    if (req->depth == 0) {
        req->done(req, ret);
        return;
    }
    f = &req->frames[--req->depth];
    f->cb(req, ret, f->opaque);
}

bool
ng_req_changes_data(const struct ng_req *req)
{
    return req->op == NG_OP_WRITE || req->op == NG_OP_TRIM ||
           req->op == NG_OP_WRITE_ZEROES;
}

const char *
ng_op_name(enum ng_op op)
{
    static const char *const names[NG_OP__COUNT] = {
        [NG_OP_READ] = "read",
        [NG_OP_WRITE] = "write",
        [NG_OP_FLUSH] = "flush",
        [NG_OP_TRIM] = "discard",
        [NG_OP_WRITE_ZEROES] = "write-zeroes",
        [NG_OP_BLOCK_STATUS] = "block-status",
        [NG_OP_CACHE] = "cache",
    };

    return (unsigned)op < NG_OP__COUNT ? names[op] : "unknown";
}

/* The request holding a work item (ng_req_run_blocking()). */
static struct ng_req *
work_req(struct ng_work *w)
{
    return (struct ng_req *)((char *)w - offsetof(struct ng_req, work));
}

static void
blocking_work(struct ng_work *w)
{
    struct ng_req *req = work_req(w);

    req->work_ret = req->work_fn(req->work_node, req);
}

static void
blocking_after(struct ng_work *w)
{
    struct ng_req *req = work_req(w);

    ng_req_complete(req, req->work_ret);
}

void
ng_req_run_blocking(struct ng_node *node, struct ng_req *req,
                    int (*fn)(struct ng_node *node, struct ng_req *req))
{
    req->work.fn = blocking_work;
    req->work.after = blocking_after;
    req->work_fn = fn;
    req->work_node = node;
    ng_node_queue_work(node, &req->work);
}
