/* graph/depth.c: how deep a request goes, so the graph can refuse a tree
 * deeper than a request can serve.
 *
 * A request carries a fixed stack of NG_REQ_MAX_FRAMES completion frames:
 * its BB pushes one, the choke point one per node it enters, and a driver
 * that keeps state on the request (struct ng_driver's `frames`) more.  A
 * deeper path would fail every request through it at run time, so node
 * creation, BB creation and filter insertion check it instead.  The count
 * is conservative: every child edge counts as the same request passing
 * on, although some drivers (memory's backing reads) start fresh ones.
 *
 * A node that no BB uses yet still counts one layer above it for the
 * export (or job) it is made for: a tree that leaves no room for that
 * could never serve a request.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

/* What names the layer above a node that no BB uses yet. */
#define DEPTH_FUTURE_BB "(export)"

/* Chains longer than this are cut in messages: "a -> b -> ... -> z". */
#define DEPTH_TEXT_HEAD 3
#define DEPTH_TEXT_TAIL 2

/* `drv` is NULL for the BB at the top. */
static void
chain_add(struct ng_chain *c, const char *name, const struct ng_driver *drv)
{
    if (c->n < NG_CHAIN_MAX)
        c->links[c->n++] = (struct ng_chain_link){ name, drv };
}

static void
chain_append(struct ng_chain *c, const struct ng_chain *more)
{
    for (size_t i = 0; i < more->n; i++)
        chain_add(c, more->links[i].name, more->links[i].drv);
}

static unsigned
node_layers(const struct ng_node *n)
{
    return 1 + n->driver->frames;
}

unsigned
ng_depth_below(const struct ng_node *node, struct ng_chain *chain)
{
    struct ng_chain best = { .n = 0 }, sub;
    unsigned deepest = 0, d;
    const struct ng_edge *e;

    for (e = node->children; e != NULL; e = e->next_child) {
        sub.n = 0;
        d = ng_depth_below(e->child, &sub);
        if (d > deepest) {
            deepest = d;
            best = sub;
        }
    }
    chain_add(chain, node->name, node->driver);
    chain_append(chain, &best);
    return node_layers(node) + deepest;
}

/* Layers above `node`: the deepest way down to it from a BB (or from the
 * BB to come, for a node without parents), `node` itself not counted.
 * The chain gets that way, top first. */
static unsigned
depth_above_node(const struct ng_node *node, struct ng_chain *chain)
{
    struct ng_chain best = { .n = 0 }, sub;
    unsigned deepest = 0, d;
    const struct ng_edge *e;

    if (node->parents == NULL) {
        chain_add(chain, DEPTH_FUTURE_BB, NULL);
        return 1;
    }
    for (e = node->parents; e != NULL; e = e->next_parent) {
        sub.n = 0;
        d = ng_depth_above(e, &sub);
        if (d > deepest) {
            deepest = d;
            best = sub;
        }
    }
    chain_append(chain, &best);
    return deepest;
}

unsigned
ng_depth_above(const struct ng_edge *e, struct ng_chain *chain)
{
    unsigned d;

    if (e->parent == NULL) {
        chain_add(chain, e->bb->name, NULL);
        return 1;
    }
    d = depth_above_node(e->parent, chain);
    chain_add(chain, e->parent->name, e->parent->driver);
    return d + node_layers(e->parent);
}

/* "raw or log": the drivers in the chain whose nodes take more than one
 * layer, each once. */
static void
heavy_drivers(const struct ng_chain *c, char *buf, size_t size)
{
    const char *names[NG_CHAIN_MAX];
    size_t n = 0, used = 0, i, j;

    for (i = 0; i < c->n; i++) {
        const struct ng_driver *drv = c->links[i].drv;

        if (drv == NULL || drv->frames == 0)
            continue;
        for (j = 0; j < n && strcmp(names[j], drv->name) != 0; j++)
            ;
        if (j == n)
            names[n++] = drv->name;
    }
    buf[0] = '\0';
    for (i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                 i == 0 ? "" : i + 1 < n ? ", " : " or ",
                                 names[i]);
}

/* "a -> b -> c -> ... -> y -> z" */
static void
chain_text(const struct ng_chain *c, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < c->n && used < size; i++) {
        if (c->n > DEPTH_TEXT_HEAD + DEPTH_TEXT_TAIL + 1 &&
            i >= DEPTH_TEXT_HEAD && i < c->n - DEPTH_TEXT_TAIL) {
            if (i == DEPTH_TEXT_HEAD)
                used += (size_t)snprintf(buf + used, size - used,
                                         " -> ...");
            continue;
        }
        used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                 i ? " -> " : "", c->links[i].name);
    }
}

int
ng_depth_check(const struct ng_chain *chain, unsigned layers,
               struct ng_error *err)
{
    char text[NG_ERROR_MSG_MAX / 2], heavy[128], why[192];

    if (layers <= NG_REQ_MAX_FRAMES)
        return 0;
    chain_text(chain, text, sizeof text);
    heavy_drivers(chain, heavy, sizeof heavy);
    if (heavy[0] != '\0')
        snprintf(why, sizeof why, "one for the export, one per node, two "
                 "per %s node", heavy);
    else
        snprintf(why, sizeof why, "one for the export and one per node");
    return ng_error_set(err, ELOOP, "chain %s is %u layers deep; a request "
                        "passes at most %u (%s)", text, layers,
                        NG_REQ_MAX_FRAMES, why);
}

int
ng_depth_check_node(const struct ng_node *node, struct ng_error *err)
{
    struct ng_chain chain = { .n = 0 };
    unsigned layers;

    chain_add(&chain, DEPTH_FUTURE_BB, NULL);
    layers = 1 + ng_depth_below(node, &chain);
    return ng_depth_check(&chain, layers, err);
}

int
ng_depth_check_bb(const char *bb, const struct ng_node *root,
                  struct ng_error *err)
{
    struct ng_chain chain = { .n = 0 };
    unsigned layers;

    chain_add(&chain, bb, NULL);
    layers = 1 + ng_depth_below(root, &chain);
    return ng_depth_check(&chain, layers, err);
}

int
ng_depth_check_splice(const struct ng_edge *e, const char *name,
                      const struct ng_driver *drv, const struct ng_node *below,
                      struct ng_error *err)
{
    struct ng_chain chain = { .n = 0 };
    unsigned layers;

    if (e != NULL) {
        layers = ng_depth_above(e, &chain);
    } else {
        chain_add(&chain, DEPTH_FUTURE_BB, NULL);
        layers = 1;
    }
    chain_add(&chain, name, drv);
    layers += 1 + drv->frames + ng_depth_below(below, &chain);
    return ng_depth_check(&chain, layers, err);
}

int
ng_depth_check_child(const struct ng_node *node, const struct ng_node *child,
                     struct ng_error *err)
{
    struct ng_chain chain = { .n = 0 };
    unsigned layers;

    layers = depth_above_node(node, &chain);
    chain_add(&chain, node->name, node->driver);
    layers += node_layers(node) + ng_depth_below(child, &chain);
    return ng_depth_check(&chain, layers, err);
}
