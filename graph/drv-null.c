/* graph/drv-null.c: "null-co", QEMU's null block driver: a disk of a
 * given size that reads as zeroes and forgets what is written.  Useful to
 * measure the server and the graph without a backing store.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/drivers.h"

struct null_state {
    uint64_t size;                  /* option "size", bytes */
    bool read_zeroes;               /* option "read-zeroes" */
};

static const struct ng_opt_desc null_opts[] = {
    NG_OPT_SIZE("size", struct null_state, size, "1G",
                "virtual size of the disk"),
    NG_OPT_BOOL("read-zeroes", struct null_state, read_zeroes, "true",
                "accepted for QEMU compatibility; reads always return "
                "zeroes"),
    NG_OPT_END,
};

static int
null_open(struct ng_node *node, struct ng_error *err)
{
    const struct null_state *s = ng_node_state(node);

    if (s->size > INT64_MAX)
        return ng_error_set(err, EINVAL, "size %" PRIu64 " is too large",
                            s->size);
    return 0;
}

static void
null_submit(struct ng_node *node, struct ng_req *req)
{
    (void)node;
    switch (req->op) {
    case NG_OP_READ:
        /* Even with read-zeroes=false: QEMU then leaves the buffer as it
         * was, but ours may hold another client's data. */
        ng_iov_memset(&req->iov, 0, 0, req->length);
        break;
    case NG_OP_BLOCK_STATUS:
        req->extents[0].length = req->length;
        req->extents[0].flags = NG_EXTENT_HOLE | NG_EXTENT_ZERO;
        req->nr_extents = 1;
        break;
    case NG_OP_WRITE:
    case NG_OP_FLUSH:
    case NG_OP_TRIM:
    case NG_OP_WRITE_ZEROES:
    case NG_OP_CACHE:
        break;
    default:
        ng_req_complete(req, -EINVAL);
        return;
    }
    ng_req_complete(req, 0);
}

static int
null_refresh(struct ng_node *node, struct ng_node_facts *facts,
             struct ng_error *err)
{
    const struct null_state *s = ng_node_state(node);

    (void)err;
    facts->size = (int64_t)s->size;
    facts->caps = NG_CAPS_LEAF_ALL;
    return 0;
}

const struct ng_driver ng_driver_null_co = {
    .name       = "null-co",
    .help       = "reads zeroes, discards writes (QEMU's null-co)",
    .is_filter  = false,
    .state_size = sizeof(struct null_state),
    .opts       = null_opts,
    .open       = null_open,
    .submit     = null_submit,
    .refresh    = null_refresh,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
