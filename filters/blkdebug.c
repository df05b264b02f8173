/* filters/blkdebug.c: "blkdebug", error injection after QEMU's blkdebug
 * driver, for tests of what sits above a failing disk.
 *
 * Each rule of "inject-error" names an I/O type (QEMU's BlkdebugIOType:
 * read, write, flush, discard, write-zeroes, block-status; we add cache),
 * a byte range and an errno.  A request of that type touching the range
 * fails with the errno without reaching the node below.  Instead of
 * QEMU's events and states a rule can wait: "after: N" lets the first N
 * matching requests through, "once" disarms it after one failure.  Rules
 * are tried in order; the first that fires decides.  A flush has no
 * range and matches any rule of its type.
 *
 * The child option is "image", as QEMU's.  reconfigure replaces the whole
 * rule list (counters start afresh).
 *
 * "drop-caps" lists capabilities (fua, trim, ...) the node does not offer
 * although its child does, for tests of what happens above a node that
 * does less (refresh takes them out of its facts; the choke point then
 * refuses or trivially answers those requests).  Fixed at open: a live
 * change could take from a connected client what it was told.
 *
 * "align" and "max-transfer" (QEMU's options of the same names) make the
 * node declare a request alignment and a largest request in its facts,
 * so the core splits and aligns what comes down to it (graph/split.c):
 * a way to run that machinery over any node.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "filters/filters.h"

struct blkdebug_rule {
    uint32_t ops;                   /* bit (1 << enum ng_op) per type */
    uint64_t offset, end;           /* [offset, end) */
    int err;                        /* positive errno */
    bool once, spent;
    uint64_t after;                 /* matching requests still to pass */
};

struct blkdebug_state {
    struct ng_node *image;          /* option "image" */
    struct ng_value *inject;        /* option "inject-error", or NULL */
    struct ng_value *drop_opt;      /* option "drop-caps", or NULL */
    uint32_t drop;                  /* NG_CAP_* from it */
    uint64_t align;                 /* option "align", 0 = the child's */
    uint64_t max_transfer;          /* option "max-transfer", 0 = the
                                     * child's */
    struct blkdebug_rule *rules;
    size_t nrules;
};

static const struct ng_opt_desc blkdebug_opts[] = {
    NG_OPT_CHILD("image", struct blkdebug_state, image, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_VALUE("inject-error", struct blkdebug_state, inject, false,
                 "list of rules {iotype, offset, length, errno, once, "
                 "after}: matching requests fail with errno"),
    NG_OPT_VALUE("drop-caps", struct blkdebug_state, drop_opt, false,
                 "list of capabilities not to offer although the child "
                 "does: write, flush, fua, trim, write-zeroes, fast-zero, "
                 "cache, block-status, multi-conn"),
    NG_OPT_SIZE("align", struct blkdebug_state, align, "0",
                "request alignment, a power of two (0: the image's)"),
    NG_OPT_SIZE("max-transfer", struct blkdebug_state, max_transfer, "0",
                "largest request, a multiple of the alignment (0: the "
                "image's)"),
    NG_OPT_END,
};

static const char *const blkdebug_live_opts[] = { "inject-error", NULL };

/* QEMU's default when a rule names no iotype. */
#define BLKDEBUG_DEFAULT_OPS \
    ((1u << NG_OP_READ) | (1u << NG_OP_WRITE) | (1u << NG_OP_WRITE_ZEROES) | \
     (1u << NG_OP_TRIM) | (1u << NG_OP_FLUSH))

static int
blkdebug_parse_iotype(const struct ng_value *v, uint32_t *ops,
                      struct ng_error *err)
{
    const char *name = ng_value_to_string(v, "iotype", err);

    if (name == NULL)
        return -1;
    for (int op = 0; op < NG_OP__COUNT; op++) {
        if (strcmp(name, ng_op_name((enum ng_op)op)) == 0) {
            *ops = 1u << op;
            return 0;
        }
    }
    return ng_value_error(err, &v->loc, "'iotype' must be one of read, "
                          "write, flush, discard, write-zeroes, "
                          "block-status, cache, not '%s'", name);
}

static int
blkdebug_parse_rule(const struct ng_value *v, struct blkdebug_rule *r,
                    struct ng_error *err)
{
    uint64_t length = UINT64_MAX, sector = 0;

    if (v->kind != NG_VALUE_MAP)
        return ng_value_error(err, &v->loc, "an 'inject-error' rule must "
                              "be a mapping such as {iotype: read, "
                              "errno: EIO}");
    *r = (struct blkdebug_rule){ .ops = BLKDEBUG_DEFAULT_OPS, .err = EIO };
    for (size_t i = 0; i < v->n; i++) {
        const char *key = v->keys[i];
        const struct ng_value *item = v->items[i];
        int ret;

        if (strcmp(key, "iotype") == 0)
            ret = blkdebug_parse_iotype(item, &r->ops, err);
        else if (strcmp(key, "offset") == 0)
            ret = ng_value_to_size(item, key, &r->offset, err);
        else if (strcmp(key, "length") == 0)
            ret = ng_value_to_size(item, key, &length, err);
        else if (strcmp(key, "errno") == 0)
            ret = ng_value_to_errno(item, key, &r->err, err);
        else if (strcmp(key, "once") == 0)
            ret = ng_value_to_bool(item, key, &r->once, err);
        else if (strcmp(key, "after") == 0)
            ret = ng_value_to_size(item, key, &r->after, err);
        else if (strcmp(key, "sector") == 0) {
            /* QEMU's spelling for "the 512-byte sector at". */
            ret = ng_value_to_size(item, key, &sector, err);
            if (ret == 0 && sector > UINT64_MAX / 512)
                ret = ng_value_error(err, &item->loc, "'sector' is too "
                                     "large");
            r->offset = sector * 512;
            length = 512;
        } else
            return ng_value_error(err, &v->key_locs[i], "unknown "
                                  "'inject-error' key '%s' (expected "
                                  "iotype, offset, length, errno, once, "
                                  "after or sector)", key);
        if (ret == -1)
            return -1;
    }
    if (length == 0)
        return ng_value_error(err, &v->loc, "'length' must not be 0");
    r->end = length > UINT64_MAX - r->offset ? UINT64_MAX :
             r->offset + length;
    return 0;
}

/* A rule list (NULL = none) -> a new array; caller frees. */
static int
blkdebug_parse_rules(const struct ng_value *v, struct blkdebug_rule **out,
                     size_t *n, struct ng_error *err)
{
    struct blkdebug_rule *rules;

    *out = NULL;
    *n = 0;
    if (v == NULL || (v->kind == NG_VALUE_SCALAR && v->is_null))
        return 0;
    if (v->kind != NG_VALUE_LIST)
        return ng_value_error(err, &v->loc, "'inject-error' must be a list "
                              "of rules");
    if (v->n == 0)
        return 0;
    if ((rules = calloc(v->n, sizeof *rules)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < v->n; i++) {
        if (blkdebug_parse_rule(v->items[i], &rules[i], err) == -1) {
            free(rules);
            return -1;
        }
    }
    *out = rules;
    *n = v->n;
    return 0;
}

/* "fua" -> NG_CAP_FUA: ng_cap_name() in lower case, '-' for '_'; 0 if
 * none. */
static uint32_t
blkdebug_cap_from_name(const char *name)
{
    for (unsigned bit = 0; bit < NG_CAP__BITS; bit++) {
        const char *cap = ng_cap_name(1u << bit);
        char want[32];
        size_t i;

        for (i = 0; cap[i] != '\0' && i + 1 < sizeof want; i++)
            want[i] = cap[i] == '_' ? '-'
                                    : (char)tolower((unsigned char)cap[i]);
        want[i] = '\0';
        if (strcmp(want, name) == 0)
            return 1u << bit;
    }
    return 0;
}

static int
blkdebug_parse_drop(const struct ng_value *v, uint32_t *out,
                    struct ng_error *err)
{
    *out = 0;
    if (v == NULL || (v->kind == NG_VALUE_SCALAR && v->is_null))
        return 0;
    if (v->kind != NG_VALUE_LIST)
        return ng_value_error(err, &v->loc, "'drop-caps' must be a list "
                              "such as [fua, trim]");
    for (size_t i = 0; i < v->n; i++) {
        const char *name = ng_value_to_string(v->items[i], "drop-caps",
                                              err);
        uint32_t cap = name != NULL ? blkdebug_cap_from_name(name) : 0;

        if (name == NULL)
            return -1;
        if (cap == 0)
            return ng_value_error(err, &v->items[i]->loc, "unknown "
                                  "capability '%s' in 'drop-caps' "
                                  "(expected write, flush, fua, trim, "
                                  "write-zeroes, fast-zero, cache, "
                                  "block-status or multi-conn)", name);
        *out |= cap;
    }
    return 0;
}

/* The limits, as QEMU checks them: the alignment a power of two, the
 * max transfer a multiple of the alignment in force. */
static int
blkdebug_check_limits(struct blkdebug_state *s, struct ng_error *err)
{
    uint64_t align = s->align;
    uint32_t child_align = ng_node_facts(s->image)->request_alignment;

    if (align >= INT_MAX || s->max_transfer >= INT_MAX)
        return ng_error_set(err, EINVAL, "%s %" PRIu64 " is too large "
                            "(2G or more)",
                            align >= INT_MAX ? "align" : "max-transfer",
                            align >= INT_MAX ? align : s->max_transfer);
    if ((align & (align - 1)) != 0)
        return ng_error_set(err, EINVAL, "align %" PRIu64 " is not a "
                            "power of two", align);
    if (align < child_align)
        align = child_align;
    if (s->max_transfer % align != 0)
        return ng_error_set(err, EINVAL, "max-transfer %" PRIu64 " is not "
                            "a multiple of the alignment %" PRIu64,
                            s->max_transfer, align);
    return 0;
}

static int
blkdebug_open(struct ng_node *node, struct ng_error *err)
{
    struct blkdebug_state *s = ng_node_state(node);

    if (blkdebug_parse_drop(s->drop_opt, &s->drop, err) == -1 ||
        blkdebug_check_limits(s, err) == -1)
        return -1;
    return blkdebug_parse_rules(s->inject, &s->rules, &s->nrules, err);
}

/* Fewer caps; stricter limits than the image only: a larger alignment,
 * a smaller max transfer. */
static int
blkdebug_refresh(struct ng_node *node, struct ng_node_facts *facts,
                 struct ng_error *err)
{
    const struct blkdebug_state *s = ng_node_state(node);

    (void)err;
    facts->caps &= ~s->drop;
    if (s->align > facts->request_alignment)
        facts->request_alignment = (uint32_t)s->align;
    if (s->max_transfer != 0 &&
        (facts->max_transfer == 0 || s->max_transfer < facts->max_transfer))
        facts->max_transfer = (uint32_t)s->max_transfer;
    return 0;
}

static void
blkdebug_close(struct ng_node *node)
{
    struct blkdebug_state *s = ng_node_state(node);

    free(s->rules);
    s->rules = NULL;
    s->nrules = 0;
}

static bool
blkdebug_matches(const struct blkdebug_rule *r, const struct ng_req *req)
{
    if (r->spent || !(r->ops & (1u << req->op)))
        return false;
    if (req->op == NG_OP_FLUSH)
        return true;
    return req->offset < r->end && r->offset < req->offset + req->length;
}

static void
blkdebug_submit(struct ng_node *node, struct ng_req *req)
{
    struct blkdebug_state *s = ng_node_state(node);

    for (size_t i = 0; i < s->nrules; i++) {
        struct blkdebug_rule *r = &s->rules[i];

        if (!blkdebug_matches(r, req))
            continue;
        if (r->after > 0) {
            r->after--;
            continue;
        }
        if (r->once)
            r->spent = true;
        ng_req_complete(req, -r->err);
        return;
    }
    ng_node_forward(node, req);
}

static int
blkdebug_reconfigure(struct ng_node *node, const struct ng_value *opts,
                     struct ng_error *err)
{
    struct blkdebug_state *s = ng_node_state(node);
    const struct ng_value *v = ng_value_get(opts, "inject-error");
    struct blkdebug_rule *rules;
    struct ng_value *copy = NULL;
    size_t n;

    if (ng_node_reconfigure_check(node, opts, blkdebug_live_opts, err) == -1)
        return -1;
    if (v == NULL)
        return 0;
    if (blkdebug_parse_rules(v, &rules, &n, err) == -1)
        return -1;
    if ((copy = ng_value_copy(v)) == NULL) {
        free(rules);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    free(s->rules);
    s->rules = rules;
    s->nrules = n;
    ng_value_free(s->inject);
    s->inject = copy;
    return 0;
}

const struct ng_driver ng_filter_blkdebug = {
    .name        = "blkdebug",
    .help        = "fail chosen requests with chosen errors (testing)",
    .is_filter   = true,
    .grow        = ng_node_grow_child,
    .state_size  = sizeof(struct blkdebug_state),
    .opts        = blkdebug_opts,
    .open        = blkdebug_open,
    .close       = blkdebug_close,
    .submit      = blkdebug_submit,
    .refresh     = blkdebug_refresh,
    .ops         = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                   NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                   NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                   NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
    .reconfigure = blkdebug_reconfigure,
};
