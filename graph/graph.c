/* graph/graph.c: nodes, edges, BlockBackends and the one choke point
 * every request passes on its way to a driver. */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "graph/graph.h"
#include "graph/graph-internal.h"

/* ---- Edges ------------------------------------------------------------ */

const char *
ng_role_name(enum ng_role role)
{
    switch (role) {
    case NG_ROLE_FILE:      return "file";
    case NG_ROLE_BACKING:   return "backing";
    case NG_ROLE_FILTERED:  return "filtered";
    case NG_ROLE_CHILDREN:  return "children";
    case NG_ROLE_ROOT:      return "root";
    }
    return "unknown";
}

struct ng_edge *
ng_edge_attach(struct ng_node *parent, struct ng_bb *bb,
               struct ng_node *child, enum ng_role role)
{
    struct ng_edge *e = calloc(1, sizeof *e);
    struct ng_edge **tail;

    if (e == NULL)
        return NULL;
    e->parent = parent;
    e->bb = bb;
    e->child = child;
    e->role = role;
    if (parent != NULL) {
        /* Append: children keep the order they were declared in. */
        for (tail = &parent->children; *tail != NULL;
             tail = &(*tail)->next_child)
            ;
        *tail = e;
    }
    e->next_parent = child->parents;
    child->parents = e;
    return e;
}

static void
edge_unlink_from_child(struct ng_edge *e)
{
    struct ng_edge **p;

    for (p = &e->child->parents; *p != NULL; p = &(*p)->next_parent) {
        if (*p == e) {
            *p = e->next_parent;
            break;
        }
    }
    e->next_parent = NULL;
}

void
ng_edge_detach(struct ng_edge *e)
{
    struct ng_edge **p;

    edge_unlink_from_child(e);
    if (e->parent != NULL && e->parent->spliced_over == e)
        e->parent->spliced_over = NULL;
    if (e->parent != NULL) {
        for (p = &e->parent->children; *p != NULL; p = &(*p)->next_child) {
            if (*p == e) {
                *p = e->next_child;
                break;
            }
        }
    }
    free(e);
}

void
ng_edge_set_child(struct ng_edge *e, struct ng_node *child)
{
    edge_unlink_from_child(e);
    e->child = child;
    e->next_parent = child->parents;
    child->parents = e;
}

const char *
ng_edge_user_kind(const struct ng_edge *e)
{
    if (e->parent != NULL)
        return "node";
    return e->bb->job_id != NULL ? "job" : "export";
}

const char *
ng_edge_user_name(const struct ng_edge *e)
{
    if (e->parent != NULL)
        return e->parent->name;
    return e->bb->job_id != NULL ? e->bb->job_id : e->bb->name;
}

/* ---- Nodes ------------------------------------------------------------ */

struct ng_node *
ng_node_child(struct ng_node *node)
{
    return node->children != NULL ? node->children->child : NULL;
}

struct ng_node *
ng_node_child_role(struct ng_node *node, enum ng_role role)
{
    struct ng_edge *e;

    for (e = node->children; e != NULL; e = e->next_child)
        if (e->role == role)
            return e->child;
    return NULL;
}

struct ng_node *
ng_node_skip_filters(struct ng_node *node)
{
    while (node != NULL && node->driver->is_filter)
        node = ng_node_child_role(node, NG_ROLE_FILTERED);
    return node;
}

#define NG_CAPS_CHANGING_DATA \
    (NG_CAP_WRITE | NG_CAP_FUA | NG_CAP_TRIM | NG_CAP_ZERO | \
     NG_CAP_FAST_ZERO)

/* The caps a driver can offer given the ops it handles (see struct
 * ng_driver's ops). */
#define OPS_WITH_CAPS \
    (NG_OP_BIT(NG_OP_WRITE) | NG_OP_BIT(NG_OP_WRITE_ZEROES) | \
     NG_OP_BIT(NG_OP_TRIM) | NG_OP_BIT(NG_OP_CACHE) | \
     NG_OP_BIT(NG_OP_BLOCK_STATUS))

static inline uint32_t
ops_caps(uint32_t ops)
{
    uint32_t caps = ~0u;

    /* Every op with a cap listed (every shipped driver), or none. */
    if (ops == 0 || (ops & OPS_WITH_CAPS) == OPS_WITH_CAPS)
        return caps;
    if (!(ops & NG_OP_BIT(NG_OP_WRITE)))
        caps &= ~NG_CAPS_CHANGING_DATA;
    if (!(ops & NG_OP_BIT(NG_OP_WRITE_ZEROES)))
        caps &= ~(NG_CAP_ZERO | NG_CAP_FAST_ZERO);
    if (!(ops & NG_OP_BIT(NG_OP_TRIM)))
        caps &= ~NG_CAP_TRIM;
    if (!(ops & NG_OP_BIT(NG_OP_CACHE)))
        caps &= ~NG_CAP_CACHE;
    if (!(ops & NG_OP_BIT(NG_OP_BLOCK_STATUS)))
        caps &= ~NG_CAP_EXTENTS;
    return caps;
}

/* This node's facts from its children's cached ones and its driver's
 * refresh hook (see struct ng_driver's refresh). */
static int
node_compute_facts(struct ng_node *node, struct ng_node_facts *f,
                   struct ng_error *err)
{
    const struct ng_driver *drv = node->driver;
    struct ng_node *child = ng_node_child(node);

    if (drv->is_filter && child != NULL) {
        *f = child->facts;
    } else {
        *f = (struct ng_node_facts){ .size = drv->is_filter ? -EINVAL : 0,
                                     .request_alignment = 1 };
    }
    f->has_backing = ng_node_child_role(node, NG_ROLE_BACKING) != NULL;
    if (drv->refresh != NULL && drv->refresh(node, f, err) == -1)
        return ng_error_prefix(err, "node '%s'", node->name);
    f->caps &= ops_caps(drv->ops);
    /* A read-only node anywhere on the way down makes the top read-only:
     * a filter inherits its child's masked caps. */
    if (node->read_only)
        f->caps &= ~NG_CAPS_CHANGING_DATA;
    return 0;
}

static bool
facts_equal(const struct ng_node_facts *a, const struct ng_node_facts *b)
{
    return a->size == b->size && a->caps == b->caps &&
           a->request_alignment == b->request_alignment &&
           a->max_transfer == b->max_transfer &&
           a->opt_transfer == b->opt_transfer &&
           a->has_backing == b->has_backing;
}

int
ng_node_refresh(struct ng_node *node, struct ng_error *err)
{
    struct ng_node_facts f;

    if (node_compute_facts(node, &f, err) == -1)
        return -1;
    /* Parents depend on us only through our facts: unchanged, they are
     * still right. */
    if (facts_equal(&f, &node->facts))
        return 0;
    node->facts = f;
    return ng_node_refresh_parents(node, err);
}

const char *
ng_node_filename(struct ng_node *node)
{
    struct ng_node *n;

    for (n = node; n != NULL; n = ng_node_child(n))
        if (n->driver->filename != NULL)
            return n->driver->filename(n);
    return node->name;
}

int
ng_node_grow_child(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    return ng_node_grow(ng_node_child(node), size, err);
}

int
ng_node_grow(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    int64_t len = ng_node_length(node);

    if (len >= 0 && size <= (uint64_t)len)
        return 0;
    if (node->read_only)
        return ng_error_set(err, EROFS, "node '%s' is read-only",
                            node->name);
    if (node->driver->grow == NULL)
        return ng_error_set(err, ENOSPC, "node '%s' (driver '%s') cannot "
                            "grow", node->name, node->driver->name);
    if (node->driver->grow(node, size, err) == -1)
        return -1;
    return ng_node_refresh(node, err);
}

/* The export (a BB no job owns) that reads `node`, through any number of
 * parents, or NULL. */
static const char *
node_export_above(const struct ng_node *node)
{
    const struct ng_edge *e;
    const char *name;

    for (e = node->parents; e != NULL; e = e->next_parent) {
        if (e->parent == NULL) {
            if (e->bb->job_id == NULL)
                return e->bb->name;
        } else if ((name = node_export_above(e->parent)) != NULL) {
            return name;
        }
    }
    return NULL;
}

/* A shrink takes data away: only from a node nobody reads (no parents,
 * so nothing in flight either, and no client was told its size). */
static int
resize_check_shrink(struct ng_node *node, int64_t len, uint64_t size,
                    struct ng_error *err)
{
    const char *export = node_export_above(node);

    if (export != NULL)
        return ng_error_set(err, EBUSY, "node '%s' is under export '%s', "
                            "which tells its clients it is %" PRId64
                            " bytes: it cannot shrink to %" PRIu64,
                            node->name, export, len, size);
    if (node->parents != NULL)
        return ng_error_set(err, EBUSY, "node '%s' is in use by %s '%s': "
                            "it cannot shrink", node->name,
                            ng_edge_user_kind(node->parents),
                            ng_edge_user_name(node->parents));
    if (node->read_only)
        return ng_error_set(err, EROFS, "node '%s' is read-only",
                            node->name);
    if (node->driver->shrink == NULL)
        return ng_error_set(err, ENOTSUP, "node '%s' (driver '%s') cannot "
                            "shrink", node->name, node->driver->name);
    return 0;
}

int
ng_node_resize_check(struct ng_node *node, uint64_t size,
                     struct ng_error *err)
{
    int64_t len = ng_node_length(node);
    struct ng_node *n = node;

    if (len < 0)
        return ng_error_set(err, EIO, "node '%s' has no known size",
                            node->name);
    if (size == (uint64_t)len)
        return 0;
    if (size < (uint64_t)len)
        return resize_check_shrink(node, len, size, err);
    while (n->driver->grow == ng_node_grow_child && ng_node_child(n) != NULL)
        n = ng_node_child(n);
    if (n->driver->grow == NULL)
        return ng_error_set(err, ENOTSUP, "node '%s' (driver '%s') cannot be "
                            "resized", n->name, n->driver->name);
    return 0;
}

int
ng_node_resize(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    if (ng_node_resize_check(node, size, err) == -1)
        return -1;
    if (size >= (uint64_t)ng_node_length(node))
        return ng_node_grow(node, size, err);
    if (node->driver->shrink(node, size, err) == -1)
        return -1;
    return ng_node_refresh(node, err);
}

int
ng_node_refresh_parents(struct ng_node *node, struct ng_error *err)
{
    struct ng_edge *e;

    /* A parent still to open gets its facts when it opens. */
    for (e = node->parents; e != NULL; e = e->next_parent)
        if (e->parent != NULL && e->parent->opened &&
            ng_node_refresh(e->parent, err) == -1)
            return -1;
    return 0;
}

const struct ng_node_facts *
ng_node_facts(const struct ng_node *node)
{
    return &node->facts;
}

int64_t
ng_node_length(const struct ng_node *node)
{
    return node->facts.size;
}

uint32_t
ng_node_caps(const struct ng_node *node)
{
    return node->facts.caps;
}

uv_loop_t *
ng_node_loop(struct ng_node *node)
{
    return node->graph->loop;
}

void
ng_node_warn(struct ng_node *node, const char *fmt, ...)
{
    struct ng_graph *g = node->graph;
    char msg[512];
    int n = snprintf(msg, sizeof msg, "node '%s': ", node->name);
    va_list ap;

    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof msg)
        vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    if (g->warn != NULL)
        g->warn(g->warn_opaque, msg);
    else
        fprintf(stderr, "%s\n", msg);
}

void
ng_graph_emit(struct ng_graph *g, const char *event,
              const struct ng_event_field *fields, size_t n)
{
    if (g->event != NULL)
        g->event(g->event_opaque, event, fields, n);
}

/* What a driver may assume (see struct ng_driver's submit): refuse
 * everything else here, once, with the errno the NBD layer expects. */
static int
node_check_request(const struct ng_node_facts *f, const struct ng_req *req)
{
    int64_t len = f->size;
    uint32_t caps = f->caps;

    if ((unsigned)req->op >= NG_OP__COUNT)
        return -EINVAL;
    if (req->op == NG_OP_FLUSH)
        return 0;
    if (len < 0)
        return (int)len;
    if (req->offset > (uint64_t)len || req->length > (uint64_t)len - req->offset)
        return ng_req_changes_data(req) ? -ENOSPC : -EINVAL;
    if ((req->flags & NG_REQ_FAST_ZERO) && req->op != NG_OP_WRITE_ZEROES)
        return -EINVAL;
    if ((req->flags & NG_REQ_LOCAL_ONLY) && req->op != NG_OP_BLOCK_STATUS)
        return -EINVAL;
    if (req->op == NG_OP_BLOCK_STATUS &&
        (req->extents == NULL || req->max_extents == 0 || req->length == 0))
        return -EINVAL;
    if (!ng_req_changes_data(req))
        return 0;
    if (!(caps & NG_CAP_WRITE))
        return -EPERM;
    if ((req->flags & NG_REQ_FUA) && !(caps & NG_CAP_FUA))
        return -ENOTSUP;
    if (req->op == NG_OP_WRITE_ZEROES && !(caps & NG_CAP_ZERO))
        return -ENOTSUP;
    if ((req->flags & NG_REQ_FAST_ZERO) && !(caps & NG_CAP_FAST_ZERO))
        return -ENOTSUP;
    return 0;
}

/* Requests a node cannot do but that have a correct trivial answer. */
static bool
node_answer_trivially(struct ng_node *node, const struct ng_node_facts *f,
                      struct ng_req *req)
{
    uint32_t caps = f->caps;

    if (req->op != NG_OP_FLUSH && req->op != NG_OP_TRIM &&
        req->op != NG_OP_CACHE && req->op != NG_OP_BLOCK_STATUS)
        return false;
    switch (req->op) {
    case NG_OP_FLUSH:
        if (caps & NG_CAP_FLUSH)
            return false;
        break;
    case NG_OP_TRIM:            /* advisory: doing nothing is correct */
        if (caps & NG_CAP_TRIM)
            return false;
        break;
    case NG_OP_CACHE:
        if (caps & NG_CAP_CACHE)
            return false;
        break;
    default:                    /* block status: all data */
        /* A layer without a backing node owns all of its data, whatever
         * its driver would call a hole: see NG_REQ_LOCAL_ONLY. */
        if ((caps & NG_CAP_EXTENTS) &&
            !((req->flags & NG_REQ_LOCAL_ONLY) && !node->driver->is_filter &&
              !node->facts.has_backing))
            return false;
        req->extents[0].length = req->length;
        req->extents[0].flags = 0;
        req->nr_extents = 1;
        break;
    }
    ng_req_complete(req, 0);
    return true;
}

static void
node_request_done(struct ng_req *req, int ret, void *opaque)
{
    struct ng_node *node = opaque;

    node->in_flight--;
    ng_bitmap_mark_request(node, req, ret);
    if (ret > 0)                /* a driver bug; never let it reach a client
                                 * as success */
        ret = -EIO;
    ng_req_complete(req, ret);
}

/* ---- Per-request driver contexts ------------------------------------- */

struct ng_req_ctx {
    struct ng_node *node;
    struct ng_req_ctx *next_free;
    max_align_t data[];             /* req_ctx_size bytes */
};

/* node_request_done for a request that was given a context: the context
 * goes back first, as the completion may start the next request. */
static void
node_request_done_ctx(struct ng_req *req, int ret, void *opaque)
{
    struct ng_req_ctx *c = opaque;
    struct ng_node *node = c->node;

    c->next_free = node->req_ctx_free;
    node->req_ctx_free = c;
    node_request_done(req, ret, node);
}

static struct ng_req_ctx *
req_ctx_get(struct ng_node *node)
{
    size_t size = node->driver->req_ctx_size;
    struct ng_req_ctx *c = node->req_ctx_free;

    if (c != NULL)
        node->req_ctx_free = c->next_free;
    else if ((c = malloc(sizeof *c + size)) == NULL)
        return NULL;
    c->node = node;
    memset(c->data, 0, size);
    return c;
}

/* Given on first use: the choke point's frame for this node turns into
 * one that also carries the context, so requests whose driver needs none
 * (most of them) cost nothing. */
void *
ng_req_ctx(struct ng_node *node, struct ng_req *req)
{
    for (unsigned i = req->depth; i-- > 0;) {
        struct ng_req_frame *f = &req->frames[i];
        struct ng_req_ctx *c;

        if (f->cb == node_request_done_ctx &&
            ((struct ng_req_ctx *)f->opaque)->node == node)
            return ((struct ng_req_ctx *)f->opaque)->data;
        if (f->cb == node_request_done && f->opaque == node) {
            if (node->driver->req_ctx_size == 0 ||
                (c = req_ctx_get(node)) == NULL)
                return NULL;
            f->cb = node_request_done_ctx;
            f->opaque = c;
            return c->data;
        }
    }
    return NULL;                    /* not held by this node: a bug */
}

void
ng_node_free_req_pools(struct ng_node *node)
{
    struct ng_req_ctx *c;

    ng_split_free_pool(node);
    while ((c = node->req_ctx_free) != NULL) {
        node->req_ctx_free = c->next_free;
        free(c);
    }
}

/* Inline in the choke point: one call less per layer. */
static inline void
node_call_driver(struct ng_node *node, struct ng_req *req)
{
    if (ng_req_push(req, node_request_done, node) == -1) {
        ng_req_complete(req, -ELOOP);
        return;
    }
    node->in_flight++;
    if (node->driver->submit_inline != NULL &&
        !(req->flags & NG_REQ_BACKGROUND) &&
        node->driver->submit_inline(node, req))
        return;
    if (node->driver->submit != NULL)
        node->driver->submit(node, req);
    else
        ng_node_forward(node, req);
}

void
ng_node_submit(struct ng_node *node, struct ng_req *req)
{
    const struct ng_node_facts *f = ng_node_facts(node);
    int r = node_check_request(f, req);

    if (r < 0) {
        ng_req_complete(req, r);
        return;
    }
    /* Nothing to do for an empty range; drivers never see one. */
    if (req->length == 0 && req->op != NG_OP_FLUSH) {
        ng_req_complete(req, 0);
        return;
    }
    if (node_answer_trivially(node, f, req))
        return;
    /* An op the driver does not list (caps took away the rest). */
    if (node->driver->ops != 0 &&
        !(node->driver->ops & NG_OP_BIT(req->op))) {
        ng_req_complete(req, -ENOTSUP);
        return;
    }
    node->stats[req->op]++;
    /* Too large or unaligned for the driver: the core fits it
     * (graph/split.c).  Nodes without limits never go there. */
    if ((f->request_alignment > 1 || f->max_transfer != 0) &&
        ng_split_needed(f, req)) {
        ng_split_submit(node, f, req);
        return;
    }
    node_call_driver(node, req);
}

void
ng_node_call_driver(struct ng_node *node, struct ng_req *req)
{
    node_call_driver(node, req);
}

void
ng_node_forward(struct ng_node *node, struct ng_req *req)
{
    struct ng_node *child = ng_node_child(node);

    if (child == NULL) {
        ng_req_complete(req, -EIO);
        return;
    }
    ng_node_submit(child, req);
}

/* ---- BlockBackends ---------------------------------------------------- */

struct ng_node *
ng_bb_root(struct ng_bb *bb)
{
    return bb->root != NULL ? bb->root->child : NULL;
}

int64_t
ng_bb_length(struct ng_bb *bb)
{
    struct ng_node *root = ng_bb_root(bb);

    return root != NULL ? ng_node_length(root) : 0;
}

uint32_t
ng_bb_caps(struct ng_bb *bb)
{
    struct ng_node *root = ng_bb_root(bb);
    uint32_t caps = root != NULL ? ng_node_caps(root) : 0;

    if (!bb->writable)
        caps &= ~NG_CAPS_CHANGING_DATA;
    return caps;
}

/* Enter a new BB in the graph's list and name index.  -1 on ENOMEM. */
static int
bb_link(struct ng_graph *g, struct ng_bb *bb)
{
    bb->older_same_name = ng_strmap_get(&g->bb_index, bb->name);
    if (ng_strmap_put(&g->bb_index, bb->name, bb) == -1)
        return -1;
    bb->next = g->bbs;
    if (g->bbs != NULL)
        g->bbs->prev = bb;
    g->bbs = bb;
    return 0;
}

static void
bb_unlink(struct ng_bb *bb)
{
    struct ng_graph *g = bb->graph;
    struct ng_bb **p = NULL;
    struct ng_bb *newest = ng_strmap_get(&g->bb_index, bb->name);

    if (newest == bb) {
        if (bb->older_same_name != NULL)
            ng_strmap_put(&g->bb_index, bb->older_same_name->name,
                          bb->older_same_name);   /* replaces: no ENOMEM */
        else
            ng_strmap_del(&g->bb_index, bb->name);
    } else {
        for (p = &newest->older_same_name; *p != bb;
             p = &(*p)->older_same_name)
            ;
        *p = bb->older_same_name;
    }
    if (bb->prev != NULL)
        bb->prev->next = bb->next;
    else
        g->bbs = bb->next;
    if (bb->next != NULL)
        bb->next->prev = bb->prev;
}

const char *
ng_cap_name(uint32_t cap)
{
    static const char *const names[NG_CAP__BITS] = {
        "WRITE", "FLUSH", "FUA", "TRIM", "WRITE_ZEROES", "FAST_ZERO",
        "CACHE", "BLOCK_STATUS", "MULTI_CONN",
    };
    unsigned bit;

    for (bit = 0; bit < NG_CAP__BITS; bit++)
        if (cap == 1u << bit)
            return names[bit];
    return "unknown";
}

void
ng_bb_promise(struct ng_bb *bb, uint64_t size, uint32_t caps)
{
    unsigned bit;

    bb->promise_clients++;
    if (size > bb->promise_size)
        bb->promise_size = size;
    for (bit = 0; bit < NG_CAP__BITS; bit++)
        if (caps & (1u << bit))
            bb->promise_told[bit]++;
}

void
ng_bb_unpromise(struct ng_bb *bb, uint32_t caps)
{
    unsigned bit;

    for (bit = 0; bit < NG_CAP__BITS; bit++)
        if ((caps & (1u << bit)) && bb->promise_told[bit] > 0)
            bb->promise_told[bit]--;
    if (bb->promise_clients > 0 && --bb->promise_clients == 0)
        bb->promise_size = 0;
}

int
ng_bb_check_promise(struct ng_bb *bb, int64_t old_size, uint32_t old_caps,
                    struct ng_error *err)
{
    int64_t size = ng_bb_length(bb);
    uint32_t lost = old_caps & ~ng_bb_caps(bb);
    unsigned bit;

    if (bb->promise_clients == 0)
        return 0;
    if (size < old_size && (size < 0 || (uint64_t)size < bb->promise_size))
        return ng_error_set(err, EBUSY, "export '%s' has %u client(s) that "
                            "were told its size is %" PRIu64 " bytes; the "
                            "new graph would make it %" PRId64, bb->name,
                            bb->promise_clients, bb->promise_size, size);
    for (bit = 0; bit < NG_CAP__BITS; bit++)
        if ((lost & (1u << bit)) && bb->promise_told[bit] > 0)
            return ng_error_set(err, EBUSY, "export '%s' has %u client(s) "
                                "that were told %s; the new graph would "
                                "not offer it", bb->name,
                                bb->promise_told[bit],
                                ng_cap_name(1u << bit));
    return 0;
}

struct ng_bb *
ng_bb_new(struct ng_graph *g, const char *name, struct ng_node *root,
          bool writable, struct ng_error *err)
{
    struct ng_bb *bb;

    if (writable && root != NULL && !(ng_node_caps(root) & NG_CAP_WRITE)) {
        ng_error_set(err, EROFS, "node '%s' is read-only", root->name);
        return NULL;
    }
    if (root != NULL && ng_depth_check_bb(name, root, err) == -1)
        return NULL;
    bb = calloc(1, sizeof *bb);
    if (bb == NULL || (bb->name = strdup(name)) == NULL)
        goto oom;
    bb->graph = g;
    bb->writable = writable;
    if (root != NULL &&
        (bb->root = ng_edge_attach(NULL, bb, root, NG_ROLE_ROOT)) == NULL)
        goto oom;
    if (ng_drain_adopt_bb(g, bb) == -1 || bb_link(g, bb) == -1)
        goto oom;
    return bb;

oom:
    if (bb != NULL)
        ng_drain_forget_bb(g, bb);
    if (bb != NULL && bb->root != NULL)
        ng_edge_detach(bb->root);
    if (bb != NULL)
        free(bb->name);
    free(bb);
    ng_error_set(err, ENOMEM, "out of memory");
    return NULL;
}

void
ng_bb_free(struct ng_bb *bb)
{
    struct ng_req *req;

    if (bb == NULL)
        return;
    ng_drain_forget_bb(bb->graph, bb);
    /* Requests still queued by a drain never reached the graph. */
    while ((req = bb->queue_head) != NULL) {
        bb->queue_head = req->queue_next;
        ng_req_complete(req, -ESHUTDOWN);
    }
    if (bb->root != NULL)
        ng_edge_detach(bb->root);
    bb_unlink(bb);
    free(bb->name);
    free(bb);
}

static void
bb_request_done(struct ng_req *req, int ret, void *opaque)
{
    struct ng_bb *bb = opaque;

    bb->in_flight--;
    if (bb->in_flight == 0 && bb->quiesce > 0)
        ng_drain_kick(bb->graph);
    ng_req_complete(req, ret);
}

void
ng_bb_dispatch(struct ng_bb *bb, struct ng_req *req)
{
    struct ng_node *root = ng_bb_root(bb);

    if (root == NULL) {
        ng_req_complete(req, -ENOMEDIUM);
        return;
    }
    if (!bb->writable && ng_req_changes_data(req)) {
        ng_req_complete(req, -EPERM);
        return;
    }
    if (ng_req_push(req, bb_request_done, bb) == -1) {
        ng_req_complete(req, -ELOOP);
        return;
    }
    req->bb = bb;
    bb->in_flight++;
    if (bb->job_id == NULL)
        bb->graph->client_request_ms = uv_now(bb->graph->loop);
    if ((req->flags & NG_REQ_ALLOC_DEPTH) && req->op == NG_OP_BLOCK_STATUS)
        ng_alloc_depth_start(root, req);
    else
        ng_node_submit(root, req);
}

void
ng_bb_submit(struct ng_bb *bb, struct ng_req *req)
{
    req->depth = 0;
    req->queue_next = NULL;
    if (bb->quiesce > 0) {
        if (bb->queue_tail != NULL)
            bb->queue_tail->queue_next = req;
        else
            bb->queue_head = req;
        bb->queue_tail = req;
        return;
    }
    ng_bb_dispatch(bb, req);
}

/* ---- The graph -------------------------------------------------------- */

struct ng_graph *
ng_graph_new(uv_loop_t *loop, const struct ng_driver *const *drivers)
{
    struct ng_graph *g = calloc(1, sizeof *g);

    if (g == NULL)
        return NULL;
    g->loop = loop;
    g->drivers = drivers;
    if (uv_timer_init(loop, &g->drain_timer) != 0) {
        free(g);
        return NULL;
    }
    g->drain_timer.data = g;
    /* The timer only runs when a drain waits: never keep the loop alive. */
    uv_unref((uv_handle_t *)&g->drain_timer);
    return g;
}

struct ng_node *
ng_graph_find(struct ng_graph *g, const char *name)
{
    return ng_strmap_get(&g->node_index, name);
}

struct ng_bb *
ng_graph_find_bb(struct ng_graph *g, const char *name)
{
    return ng_strmap_get(&g->bb_index, name);
}

int
ng_graph_link_node(struct ng_graph *g, struct ng_node *node)
{
    if (ng_strmap_put(&g->node_index, node->name, node) == -1)
        return -1;
    node->prev = NULL;
    node->next = g->nodes;
    if (g->nodes != NULL)
        g->nodes->prev = node;
    g->nodes = node;
    return 0;
}

void
ng_graph_unlink_node(struct ng_graph *g, struct ng_node *node)
{
    ng_strmap_del(&g->node_index, node->name);
    if (node->prev != NULL)
        node->prev->next = node->next;
    else
        g->nodes = node->next;
    if (node->next != NULL)
        node->next->prev = node->prev;
    node->next = node->prev = NULL;
}

static void
graph_free_handle(uv_handle_t *h)
{
    free(h->data);
}

void
ng_graph_free(struct ng_graph *g)
{
    if (g == NULL)
        return;
    while (g->bbs != NULL)
        ng_bb_free(g->bbs);
    /* Nodes may close asynchronously: ng_graph_free_finish() follows. */
    ng_graph_free_nodes(g);
}

void
ng_graph_free_finish(struct ng_graph *g)
{
    ng_graph_objects_free(g);
    ng_strmap_clear(&g->node_index);
    ng_strmap_clear(&g->bb_index);
    ng_graph_pools_free(g);
    uv_close((uv_handle_t *)&g->drain_timer, graph_free_handle);
}
