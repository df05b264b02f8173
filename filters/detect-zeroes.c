/* filters/detect-zeroes.c: "detect-zeroes", QEMU's detect-zeroes option
 * as a filter node (the implicit filter an export's "detect-zeroes: unmap"
 * creates).
 *
 * A write whose buffer is all zeroes goes down as write-zeroes, so the
 * leaf can store it cheaply: "on" keeps the space allocated, "unmap" adds
 * NG_REQ_MAY_TRIM so the leaf may punch a hole.  A completion frame puts
 * the op and flags back, so the submitter gets its request as it sent it.
 * Nothing else changes: a node below without write-zeroes gets the write
 * as it is.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "graph/graph.h"
#include "filters/filters.h"

enum { DZ_OFF, DZ_ON, DZ_UNMAP };

/* QEMU's BlockdevDetectZeroesOptions. */
static const char *const dz_modes[] = { "off", "on", "unmap", NULL };

struct dz_state {
    struct ng_node *file;           /* option "file" */
    int mode;                       /* option "mode": DZ_* */
};

static const struct ng_opt_desc dz_opts[] = {
    NG_OPT_CHILD("file", struct dz_state, file, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_ENUM("mode", struct dz_state, mode, "on", dz_modes,
                "off, on (zero writes become write-zeroes) or unmap (and "
                "may deallocate)"),
    NG_OPT_END,
};

static const char *const dz_live_opts[] = { "mode", NULL };

/* All zeroes?  The first 16 bytes by hand, then each byte against the
 * one 16 before it with memcmp(), which compares a vector at a time and
 * stops at the first difference: equal all along means zero all along. */
static bool
dz_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t head = len < 16 ? len : 16;

    for (size_t i = 0; i < head; i++)
        if (p[i] != 0)
            return false;
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

static bool
dz_iov_is_zero(const struct ng_iov *v, uint64_t len)
{
    uint64_t off = 0;

    while (off < len) {
        void *p;
        size_t n = ng_iov_piece(v, off, &p);

        if (n == 0)
            return false;           /* a view shorter than the request */
        if (n > len - off)
            n = (size_t)(len - off);
        if (!dz_is_zero(p, n))
            return false;
        off += n;
    }
    return true;
}

/* Completion frame: the submitter's write, as it was. */
static void
dz_restore(struct ng_req *req, int ret, void *opaque)
{
    req->op = NG_OP_WRITE;
    req->flags = (uint32_t)(uintptr_t)opaque;
    ng_req_complete(req, ret);
}

static void
dz_submit(struct ng_node *node, struct ng_req *req)
{
    const struct dz_state *s = ng_node_state(node);

    if (req->op != NG_OP_WRITE || s->mode == DZ_OFF ||
        !(ng_node_caps(s->file) & NG_CAP_ZERO) ||
        !dz_iov_is_zero(&req->iov, req->length) ||
        ng_req_push(req, dz_restore, (void *)(uintptr_t)req->flags) < 0) {
        ng_node_forward(node, req);
        return;
    }
    req->op = NG_OP_WRITE_ZEROES;
    if (s->mode == DZ_UNMAP)
        req->flags |= NG_REQ_MAY_TRIM;
    ng_node_forward(node, req);
}

static int
dz_reconfigure(struct ng_node *node, const struct ng_value *opts,
               struct ng_error *err)
{
    struct dz_state *s = ng_node_state(node);
    const struct ng_value *v = ng_value_get(opts, "mode");
    const char *mode;

    if (ng_node_reconfigure_check(node, opts, dz_live_opts, err) == -1)
        return -1;
    if (v == NULL)
        return 0;
    if ((mode = ng_value_to_string(v, "mode", err)) == NULL)
        return -1;
    for (int i = 0; dz_modes[i] != NULL; i++) {
        if (strcmp(mode, dz_modes[i]) == 0) {
            s->mode = i;
            return 0;
        }
    }
    return ng_value_error(err, &v->loc, "'mode' must be one of off, on, "
                          "unmap, not '%s'", mode);
}

const struct ng_driver ng_filter_detect_zeroes = {
    .name        = "detect-zeroes",
    .help        = "turn writes of zeroes into write-zeroes (or holes)",
    .is_filter   = true,
    .grow        = ng_node_grow_child,
    .frames      = 1,               /* dz_restore */
    .state_size  = sizeof(struct dz_state),
    .opts        = dz_opts,
    .submit      = dz_submit,
    .ops         = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                   NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                   NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                   NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
    .reconfigure = dz_reconfigure,
};
