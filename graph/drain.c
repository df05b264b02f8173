/* graph/drain.c: drained sections.
 *
 * A drained section stops new requests at the BBs above a node (they wait
 * in each BB's queue, in order), tells every node below those BBs through
 * its driver's drain_begin hook (so a throttle lets go of what it holds),
 * waits until the requests already inside have completed, and then calls
 * back from a libuv timer — outside every request's call stack, so the
 * callback may change the graph freely.  A BB made above the node while
 * the section is open joins it, as QEMU drains a new parent of a drained
 * node: a mirror keeps its source drained from its last copy to
 * finalize, and writes through an export added meanwhile must not go
 * past it to the source (the target would never see them).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

struct ng_drain {
    struct ng_graph *graph;
    struct ng_bb **bbs;         /* quiesced by this section; entries become
                                 * NULL when a BB is freed meanwhile */
    size_t n_bbs;
    struct ng_node **nodes;     /* in the trees of those BBs, children
                                 * before parents (drain_end's order);
                                 * NULL once a node is destroyed */
    size_t n_nodes, cap_nodes;
    struct ng_node *node;       /* the node drained above; NULL: all BBs,
                                 * unless `gone` */
    bool gone;                  /* that node was destroyed: BBs made now
                                 * stay out */
    ng_drained_fn *cb;
    void *opaque;
    bool fired;                 /* cb has run */
    struct ng_drain *next;      /* graph's list of open sections */
};

/* Does the tree below `from` contain `node`? */
static bool
tree_contains(struct ng_node *from, struct ng_node *node)
{
    struct ng_edge *e;

    if (from == node)
        return true;
    for (e = from->children; e != NULL; e = e->next_child)
        if (tree_contains(e->child, node))
            return true;
    return false;
}

static bool
bb_is_affected(struct ng_bb *bb, struct ng_node *node)
{
    struct ng_node *root = ng_bb_root(bb);

    if (bb->drain_exempt)
        return false;
    if (node == NULL)
        return true;
    return root != NULL && tree_contains(root, node);
}

static int
collect_bbs(struct ng_drain *d, struct ng_node *node)
{
    struct ng_bb *bb;
    size_t n = 0;

    for (bb = d->graph->bbs; bb != NULL; bb = bb->next)
        n += bb_is_affected(bb, node);
    d->bbs = calloc(n ? n : 1, sizeof *d->bbs);
    if (d->bbs == NULL)
        return -1;
    for (bb = d->graph->bbs; bb != NULL; bb = bb->next)
        if (bb_is_affected(bb, node))
            d->bbs[d->n_bbs++] = bb;
    return 0;
}

static bool
drain_has_node(const struct ng_drain *d, const struct ng_node *node)
{
    size_t i;

    for (i = 0; i < d->n_nodes; i++)
        if (d->nodes[i] == node)
            return true;
    return false;
}

/* Post-order from `node`: its children before it, each node once.  Read
 * backwards that is a topological order, parents before children, even
 * where nodes are shared. */
static int
collect_nodes_below(struct ng_drain *d, struct ng_node *node)
{
    struct ng_edge *e;
    struct ng_node **grown;

    if (drain_has_node(d, node))
        return 0;
    for (e = node->children; e != NULL; e = e->next_child)
        if (collect_nodes_below(d, e->child) == -1)
            return -1;
    if (d->n_nodes == d->cap_nodes) {
        d->cap_nodes = d->cap_nodes ? 2 * d->cap_nodes : 8;
        grown = realloc(d->nodes, d->cap_nodes * sizeof *d->nodes);
        if (grown == NULL)
            return -1;
        d->nodes = grown;
    }
    d->nodes[d->n_nodes++] = node;
    return 0;
}

static int
collect_nodes(struct ng_drain *d)
{
    size_t i;

    for (i = 0; i < d->n_bbs; i++)
        if (ng_bb_root(d->bbs[i]) != NULL &&
            collect_nodes_below(d, ng_bb_root(d->bbs[i])) == -1)
            return -1;
    return 0;
}

static void
drain_call_begin(struct ng_drain *d)
{
    size_t i;

    for (i = d->n_nodes; i-- > 0;)
        if (d->nodes[i]->driver->drain_begin != NULL)
            d->nodes[i]->driver->drain_begin(d->nodes[i]);
}

static void
drain_call_end(struct ng_drain *d)
{
    size_t i;

    for (i = 0; i < d->n_nodes; i++)
        if (d->nodes[i] != NULL && d->nodes[i]->driver->drain_end != NULL)
            d->nodes[i]->driver->drain_end(d->nodes[i]);
}

static bool
drain_is_quiet(const struct ng_drain *d)
{
    size_t i;

    for (i = 0; i < d->n_bbs; i++)
        if (d->bbs[i] != NULL && d->bbs[i]->in_flight > 0)
            return false;
    return true;
}

/* Fire every section whose BBs have gone quiet.  A callback may begin or
 * end sections, so restart the walk after each one. */
static void
drain_timer_cb(uv_timer_t *t)
{
    struct ng_graph *g = t->data;
    struct ng_drain *d;

again:
    for (d = g->drains; d != NULL; d = d->next) {
        if (!d->fired && drain_is_quiet(d)) {
            d->fired = true;
            d->cb(d->opaque);
            goto again;
        }
    }
}

void
ng_drain_kick(struct ng_graph *g)
{
    uv_timer_start(&g->drain_timer, drain_timer_cb, 0, 0);
}

struct ng_drain *
ng_drain_begin(struct ng_graph *g, struct ng_node *node, ng_drained_fn *cb,
               void *opaque, struct ng_error *err)
{
    struct ng_drain *d = calloc(1, sizeof *d);
    size_t i;

    if (d == NULL)
        goto nomem;
    d->graph = g;
    d->node = node;
    d->cb = cb;
    d->opaque = opaque;
    if (collect_bbs(d, node) == -1 || collect_nodes(d) == -1)
        goto nomem;
    for (i = 0; i < d->n_bbs; i++)
        d->bbs[i]->quiesce++;
    d->next = g->drains;
    g->drains = d;
    /* After the BBs stopped admitting: what a driver lets go now is the
     * last it sees until drain_end. */
    drain_call_begin(d);
    ng_drain_kick(g);
    return d;

nomem:
    if (d != NULL) {
        free(d->bbs);
        free(d->nodes);
    }
    free(d);
    ng_error_set(err, ENOMEM, "out of memory");
    return NULL;
}

static void
bb_release(struct ng_bb *bb)
{
    struct ng_req *req, *next;

    if (--bb->quiesce > 0)
        return;
    req = bb->queue_head;
    bb->queue_head = bb->queue_tail = NULL;
    for (; req != NULL; req = next) {
        next = req->queue_next;
        req->queue_next = NULL;
        ng_bb_dispatch(bb, req);
    }
}

void
ng_drain_end(struct ng_drain *d)
{
    struct ng_drain **p;
    size_t i;

    for (p = &d->graph->drains; *p != NULL; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            break;
        }
    }
    /* Drivers first, so that what the BBs resubmit meets them undrained
     * (a throttle counts it again). */
    drain_call_end(d);
    for (i = 0; i < d->n_bbs; i++)
        if (d->bbs[i] != NULL)
            bb_release(d->bbs[i]);
    free(d->bbs);
    free(d->nodes);
    free(d);
}

void
ng_drain_forget_bb(struct ng_graph *g, struct ng_bb *bb)
{
    struct ng_drain *d;
    size_t i;

    for (d = g->drains; d != NULL; d = d->next)
        for (i = 0; i < d->n_bbs; i++)
            if (d->bbs[i] == bb)
                d->bbs[i] = NULL;
    ng_drain_kick(g);
}

void
ng_drain_forget_node(struct ng_graph *g, struct ng_node *node)
{
    struct ng_drain *d;
    size_t i;

    for (d = g->drains; d != NULL; d = d->next) {
        for (i = 0; i < d->n_nodes; i++)
            if (d->nodes[i] == node)
                d->nodes[i] = NULL;
        if (d->node == node) {
            d->node = NULL;
            d->gone = true;
        }
    }
}

/* bb joins section d: quiesced like the BBs it began with, and the nodes
 * of its tree that d did not hold yet get drain_begin (parents first). */
static int
drain_adopt(struct ng_drain *d, struct ng_bb *bb)
{
    struct ng_bb **grown = realloc(d->bbs, (d->n_bbs + 1) * sizeof *d->bbs);
    size_t old_nodes = d->n_nodes, i;

    if (grown == NULL)
        return -1;
    d->bbs = grown;
    d->bbs[d->n_bbs++] = bb;
    bb->quiesce++;
    if (collect_nodes_below(d, ng_bb_root(bb)) == -1)
        return -1;
    for (i = d->n_nodes; i-- > old_nodes;)
        if (d->nodes[i]->driver->drain_begin != NULL)
            d->nodes[i]->driver->drain_begin(d->nodes[i]);
    return 0;
}

int
ng_drain_adopt_bb(struct ng_graph *g, struct ng_bb *bb)
{
    struct ng_drain *d;

    if (ng_bb_root(bb) == NULL)
        return 0;
    for (d = g->drains; d != NULL; d = d->next)
        if (!d->gone && bb_is_affected(bb, d->node) &&
            drain_adopt(d, bb) == -1)
            return -1;
    return 0;
}
