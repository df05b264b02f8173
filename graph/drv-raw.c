/* graph/drv-raw.c: "raw", the format driver for raw images: the child's
 * bytes as they are, optionally a window of them (QEMU's raw "offset" and
 * "size" options, for a partition inside a disk image).
 *
 * Not a filter: its child is a protocol node on the "file" edge, as in
 * QEMU.  A request is shifted by `offset` on the way down and shifted
 * back on the way up by a completion frame, so nothing is allocated.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>

#include "graph/graph.h"
#include "graph/drivers.h"

struct raw_state {
    struct ng_node *file;           /* option "file": the child */
    uint64_t offset;                /* option "offset", bytes */
    struct ng_value *size_opt;      /* option "size", NULL when absent */
    bool has_size;
    uint64_t size;                  /* from size_opt when has_size */
};

static const struct ng_opt_desc raw_opts[] = {
    NG_OPT_CHILD("file", struct raw_state, file, NG_ROLE_FILE, true,
                 "the node holding the image"),
    NG_OPT_SIZE("offset", struct raw_state, offset, "0",
                "where the image starts in the child, bytes"),
    /* A size option has no "absent"; take the raw value instead. */
    NG_OPT_VALUE("size", struct raw_state, size_opt, false,
                 "size of the image (default: to the end of the child)"),
    NG_OPT_END,
};

static int
raw_open(struct ng_node *node, struct ng_error *err)
{
    struct raw_state *s = ng_node_state(node);
    int64_t child_len = ng_node_length(s->file);

    if (child_len < 0)
        return ng_error_set(err, (int)-child_len,
                            "cannot get the size of child '%s'",
                            s->file->name);
    if (s->offset > (uint64_t)child_len)
        return ng_error_set(err, EINVAL,
                            "offset %" PRIu64 " is beyond the end of "
                            "child '%s' (%" PRId64 " bytes)",
                            s->offset, s->file->name, child_len);
    if (s->size_opt != NULL) {
        if (ng_value_to_size(s->size_opt, "size", &s->size, err) < 0)
            return -1;
        if (s->size > (uint64_t)child_len - s->offset)
            return ng_error_set(err, EINVAL,
                                "offset %" PRIu64 " plus size %" PRIu64
                                " exceeds the size of child '%s' (%"
                                PRId64 " bytes)", s->offset, s->size,
                                s->file->name, child_len);
        s->has_size = true;
    }
    return 0;
}

/* Completion frame: give the submitter its request back as it sent it. */
static void
raw_unshift(struct ng_req *req, int ret, void *opaque)
{
    const struct raw_state *s = ng_node_state(opaque);

    req->offset -= s->offset;
    ng_req_complete(req, ret);
}

static void
raw_submit(struct ng_node *node, struct ng_req *req)
{
    const struct raw_state *s = ng_node_state(node);

    /* Flush has no range; with no offset nothing needs undoing. */
    if (s->offset == 0 || req->op == NG_OP_FLUSH) {
        ng_node_submit(s->file, req);
        return;
    }
    if (ng_req_push(req, raw_unshift, node) < 0) {
        /* The graph is deeper than the frame stack: a configuration
         * problem, not a passing shortage, so waiting would not help. */
        ng_req_complete(req, -ELOOP);      /* as the choke point does */
        return;
    }
    /* Block status extents are relative to req->offset: no change. */
    req->offset += s->offset;
    ng_node_submit(s->file, req);
}

/* A window of the child: its caps and limits, our size. */
static int
raw_refresh(struct ng_node *node, struct ng_node_facts *facts,
            struct ng_error *err)
{
    const struct raw_state *s = ng_node_state(node);
    const struct ng_node_facts *child = ng_node_facts(s->file);

    (void)err;
    facts->caps = child->caps;
    /* The child's alignment holds for us only if the window starts on
     * it; otherwise the child's choke point sees every request shifted. */
    if (s->offset % child->request_alignment == 0)
        facts->request_alignment = child->request_alignment;
    facts->max_transfer = child->max_transfer;
    facts->opt_transfer = child->opt_transfer;
    if (s->has_size)
        facts->size = (int64_t)s->size;
    else if (child->size < 0)
        facts->size = child->size;
    else    /* as QEMU: without a size the image follows the child's end */
        facts->size = (uint64_t)child->size > s->offset
                      ? child->size - (int64_t)s->offset : 0;
    return 0;
}

/* block_resize: the image follows its child's end, so grow the child;
 * a fixed "size" window stays as it is, as in QEMU. */
static int
raw_grow(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    const struct raw_state *s = ng_node_state(node);

    if (s->has_size)
        return ng_error_set(err, ENOTSUP, "node '%s' has a fixed size "
                            "(option 'size'): it cannot be resized",
                            node->name);
    if (size > UINT64_MAX - s->offset)
        return ng_error_set(err, EFBIG, "node '%s': offset %" PRIu64
                            " plus size %" PRIu64 " is too large",
                            node->name, s->offset, size);
    return ng_node_grow(s->file, s->offset + size, err);
}

const struct ng_driver ng_driver_raw = {
    .name       = "raw",
    .help       = "raw image format, optionally a window of its child",
    .is_filter  = false,
    .frames     = 1,                /* raw_unshift */
    .state_size = sizeof(struct raw_state),
    .opts       = raw_opts,
    .open       = raw_open,
    .submit     = raw_submit,
    .refresh    = raw_refresh,
    .grow       = raw_grow,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
