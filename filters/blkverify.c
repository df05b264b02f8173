/* filters/blkverify.c: "blkverify", QEMU's blkverify driver: check a
 * node (`test`) against a trusted one holding the same data (`raw`).
 *
 * Every read is served from `test` and read from `raw` too, both at
 * once; when both succeed the data are compared and a difference fails
 * the read with EIO and a warning naming the request's offset and length
 * and the first byte that differs; with `abort` the warning is followed
 * by abort(3), the whole daemon going down as QEMU does on a mismatch.
 * Writes, write-zeroes, flushes and cache requests go to both children;
 * the first error wins.  A trim goes to both as a write-zeroes that may
 * deallocate: a trim proper would leave the two children's contents
 * undefined, and every later read could differ; zeroes keep them equal
 * (and are what a trim may read back as).  So blkverify offers what the
 * node below offered, and can be spliced in above a disk whose clients
 * were told trim, write-zeroes and cache.
 *
 * The children's roles are QEMU's: `test` on a "filtered" edge, `raw` on
 * a "file" one; each role names one option, as the live config needs.
 * It is not a filter in the graph's sense (it has two children), so it
 * states its own facts: test's size, which raw's must equal (refused at
 * open otherwise), and the caps both children have; block status asks
 * both and answers what they agree on (filters/agree.h).  Each child's own
 * transfer limits are kept by the core at that child's choke point.
 *
 * The raw copy of a read goes to a buffer of the request's size,
 * allocated per read: this is a driver for checking, not for speed.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "filters/agree.h"
#include "filters/filters.h"

/* The caps passed on when both children have them; trim when both can
 * write zeroes. */
#define BV_CAPS (NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_FUA | NG_CAP_ZERO | \
                 NG_CAP_FAST_ZERO | NG_CAP_CACHE | NG_CAP_MULTI_CONN | \
                 NG_CAP_EXTENTS)

struct bv_state {
    struct ng_node *test;           /* option "test" */
    struct ng_node *raw;            /* option "raw" */
    bool abort;                     /* option "abort" */
};

/* One request in flight, the request's context (ng_req_ctx()). */
struct bv_ctx {
    struct ng_node *node;
    struct ng_req *req;
    struct ng_req test_sub, raw_sub;
    unsigned char *raw_buf;         /* reads: raw's copy; block status:
                                     * both children's extents */
    unsigned pending;               /* sub-requests not yet done */
    int ret;                        /* the first error */
};

static const struct ng_opt_desc bv_opts[] = {
    NG_OPT_CHILD("test", struct bv_state, test, NG_ROLE_FILTERED, true,
                 "the node checked; reads are served from it"),
    NG_OPT_CHILD("raw", struct bv_state, raw, NG_ROLE_FILE, true,
                 "the trusted node every read is compared with"),
    NG_OPT_BOOL("abort", struct bv_state, abort, "false",
                "on a mismatch, abort the daemon (as QEMU's blkverify "
                "ends QEMU) instead of failing the read"),
    NG_OPT_END,
};

static int
bv_check_sizes(struct ng_node *node, struct ng_error *err)
{
    const struct bv_state *s = ng_node_state(node);
    int64_t test = ng_node_length(s->test), raw = ng_node_length(s->raw);

    if (test != raw)
        return ng_error_set(err, EINVAL, "children differ in size: test "
                            "'%s' has %" PRId64 " bytes, raw '%s' %" PRId64,
                            s->test->name, test, s->raw->name, raw);
    return 0;
}

static int
bv_open(struct ng_node *node, struct ng_error *err)
{
    return bv_check_sizes(node, err);
}

static int
bv_refresh(struct ng_node *node, struct ng_node_facts *facts,
           struct ng_error *err)
{
    const struct bv_state *s = ng_node_state(node);

    if (bv_check_sizes(node, err) == -1)
        return -1;
    facts->size = ng_node_length(s->test);
    facts->caps = ng_node_caps(s->test) & ng_node_caps(s->raw) & BV_CAPS;
    if (facts->caps & NG_CAP_ZERO)
        facts->caps |= NG_CAP_TRIM;
    return 0;
}

/* QEMU's child names, "test" and "raw", for queries. */
static void
bv_child_label(struct ng_node *node, const struct ng_edge *e, char *buf,
               size_t size)
{
    (void)node;
    snprintf(buf, size, "%s", e->role == NG_ROLE_FILTERED ? "test" : "raw");
}

/* Offset in the view of the first byte that differs from raw, or -1. */
static int64_t
bv_first_difference(const struct ng_iov *v, const unsigned char *raw,
                    uint64_t len)
{
    uint64_t off = 0;

    while (off < len) {
        unsigned char *p;
        size_t n = ng_iov_piece(v, off, (void **)&p);

        if (n == 0)
            break;
        if (n > len - off)
            n = len - off;
        if (memcmp(p, raw + off, n) != 0) {
            size_t i = 0;

            while (p[i] == raw[off + i])
                i++;
            return (int64_t)(off + i);
        }
        off += n;
    }
    return -1;
}

static void
bv_finish(struct bv_ctx *c)
{
    struct ng_req *req = c->req;
    int ret = c->ret;

    if (ret == 0 && req->op == NG_OP_BLOCK_STATUS) {
        struct ng_req *subs[2] = { &c->test_sub, &c->raw_sub };

        /* What both say (filters/agree.h): a hole only where raw has
         * one too, so a client skipping holes never misses raw's data. */
        req->nr_extents = 0;
        ng_extents_agree(req, subs, 2);
    } else if (ret == 0 && req->op == NG_OP_READ) {
        int64_t at = bv_first_difference(&req->iov, c->raw_buf, req->length);

        if (at >= 0) {
            const struct bv_state *s = ng_node_state(c->node);

            ng_node_warn(c->node, "blkverify: read offset=%" PRIu64
                         " length=%" PRIu64 ": contents mismatch at "
                         "offset %" PRIu64 "%s", req->offset, req->length,
                         req->offset + (uint64_t)at,
                         s->abort ? ": aborting" : "");
            /* A core dump of the moment the two differed, for whoever
             * checks a driver; nothing may go on serving wrong data. */
            if (s->abort)
                abort();
            ret = -EIO;
        }
    }
    free(c->raw_buf);
    ng_req_complete(req, ret);
}

static void
bv_sub_done(struct ng_req *sub, int ret)
{
    struct bv_ctx *c = sub->opaque;

    if (ret < 0 && c->ret == 0)
        c->ret = ret;
    if (--c->pending == 0)
        bv_finish(c);
}

/* The request, as it is, for one child (a trim as zeroes that may
 * deallocate); reads from raw go to raw_buf. */
static void
bv_sub_init(struct bv_ctx *c, struct ng_req *sub, bool to_raw_buf)
{
    struct ng_req *req = c->req;

    if (req->op == NG_OP_TRIM)
        ng_req_init(sub, NG_OP_WRITE_ZEROES, req->offset, req->length,
                    (req->flags & NG_REQ_FUA) | NG_REQ_MAY_TRIM);
    else
        ng_req_init(sub, req->op, req->offset, req->length, req->flags);
    if (req->op == NG_OP_BLOCK_STATUS) {
        sub->extents = (struct ng_extent *)(void *)c->raw_buf +
                       (to_raw_buf ? req->max_extents : 0);
        sub->max_extents = req->max_extents;
    } else if (to_raw_buf) {
        ng_req_set_buf(sub, c->raw_buf);
    } else {
        sub->iov = req->iov;
    }
    sub->done = bv_sub_done;
    sub->opaque = c;
}

static void
bv_submit(struct ng_node *node, struct ng_req *req)
{
    const struct bv_state *s = ng_node_state(node);
    struct bv_ctx *c = ng_req_ctx(node, req);
    bool read = req->op == NG_OP_READ;
    bool bs = req->op == NG_OP_BLOCK_STATUS;

    if (c == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    c->raw_buf = read ? malloc(req->length ? req->length : 1)
               : bs ? calloc(2 * (size_t)req->max_extents,
                             sizeof(struct ng_extent))
               : NULL;
    if ((read || bs) && c->raw_buf == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    c->node = node;
    c->req = req;
    c->ret = 0;
    c->pending = 2;             /* before either may complete inline */
    bv_sub_init(c, &c->test_sub, false);
    bv_sub_init(c, &c->raw_sub, read || bs);
    ng_node_submit(s->test, &c->test_sub);
    ng_node_submit(s->raw, &c->raw_sub);
}

const struct ng_driver ng_filter_blkverify = {
    .name       = "blkverify",
    .help       = "serve reads from `test`, failing those that differ "
                  "from `raw`; write both",
    .multi_child_filter = true,
    .state_size = sizeof(struct bv_state),
    .req_ctx_size = sizeof(struct bv_ctx),
    .opts       = bv_opts,
    .open       = bv_open,
    .refresh    = bv_refresh,
    .submit     = bv_submit,
    .child_label = bv_child_label,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_TRIM) | NG_OP_BIT(NG_OP_CACHE) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS),
};
