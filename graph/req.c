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
    req->iov = (struct ng_iov){ .iov = NULL, .niov = 0, .skip = 0 };
}

void
ng_req_set_buf(struct ng_req *req, void *buf)
{
    req->one.iov_base = buf;
    req->one.iov_len = (size_t)req->length;
    req->iov = (struct ng_iov){ .iov = &req->one, .niov = 1, .skip = 0 };
}

/* ---- Scatter-gather views ------------------------------------------- */

void
ng_iov_slice(const struct ng_iov *v, uint64_t off, struct ng_iov *out)
{
    const struct iovec *iov = v->iov;
    unsigned n = v->niov;
    uint64_t pos = off + v->skip;

    /* Drop the elements wholly before `off`, so that skip stays short
     * and the next walk starts where the data is. */
    while (n > 0 && pos >= iov->iov_len) {
        pos -= iov->iov_len;
        iov++;
        n--;
    }
    out->iov = iov;
    out->niov = n;
    out->skip = (size_t)pos;
}

size_t
ng_iov_piece(const struct ng_iov *v, uint64_t off, void **p)
{
    struct ng_iov at;

    ng_iov_slice(v, off, &at);
    if (at.niov == 0) {
        *p = NULL;
        return 0;
    }
    *p = (unsigned char *)at.iov->iov_base + at.skip;
    return at.iov->iov_len - at.skip;
}

/* Call fn on each contiguous piece of [off, off + len). */
static void
iov_walk(const struct ng_iov *v, uint64_t off, size_t len,
         void (*fn)(void *piece, size_t n, size_t done, void *opaque),
         void *opaque)
{
    struct ng_iov at;
    size_t done = 0;

    ng_iov_slice(v, off, &at);
    for (unsigned i = 0; i < at.niov && done < len; i++) {
        size_t skip = i == 0 ? at.skip : 0;
        size_t n = at.iov[i].iov_len - skip;

        if (n > len - done)
            n = len - done;
        fn((unsigned char *)at.iov[i].iov_base + skip, n, done, opaque);
        done += n;
    }
}

static void
iov_copy_out(void *piece, size_t n, size_t done, void *dst)
{
    memcpy((unsigned char *)dst + done, piece, n);
}

static void
iov_copy_in(void *piece, size_t n, size_t done, void *src)
{
    memcpy(piece, (const unsigned char *)src + done, n);
}

static void
iov_fill(void *piece, size_t n, size_t done, void *c)
{
    (void)done;
    memset(piece, *(int *)c, n);
}

void
ng_iov_copy_out(const struct ng_iov *v, uint64_t off, void *dst, size_t len)
{
    iov_walk(v, off, len, iov_copy_out, dst);
}

void
ng_iov_copy_in(const struct ng_iov *v, uint64_t off, const void *src,
               size_t len)
{
    iov_walk(v, off, len, iov_copy_in, (void *)src);
}

void
ng_iov_fill(const struct ng_iov *v, uint64_t off, int c, size_t len)
{
    iov_walk(v, off, len, iov_fill, &c);
}

unsigned
ng_iov_export(const struct ng_iov *v, size_t len, struct iovec *out,
              unsigned max, size_t *covered)
{
    size_t done = 0;
    unsigned n = 0;

    for (unsigned i = 0; i < v->niov && n < max && done < len; i++) {
        size_t skip = i == 0 ? v->skip : 0;
        size_t l = v->iov[i].iov_len - skip;

        if (l == 0)
            continue;
        if (l > len - done)
            l = len - done;
        out[n].iov_base = (unsigned char *)v->iov[i].iov_base + skip;
        out[n].iov_len = l;
        done += l;
        n++;
    }
    *covered = done;
    return n;
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

bool
ng_req_add_extent(struct ng_req *req, uint32_t max, uint64_t len,
                  uint32_t flags)
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
    req->nr_extents = nr + 1;
    return true;
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
    if (req->flags & NG_REQ_BACKGROUND)
        ng_node_queue_background_work(node, &req->work);
    else
        ng_node_queue_work(node, &req->work);
}
