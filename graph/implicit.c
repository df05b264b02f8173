/* graph/implicit.c: an export's chain of implicit filters (see graph.h),
 * built in one place so that nothing above the graph walks its nodes. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

/* "<owner>.<driver>" into name[size]; NULL with *err set. */
static const char *
layer_name(struct ng_graph *g, const char *owner,
           const struct ng_value *layer, char *name, size_t size,
           struct ng_error *err)
{
    const struct ng_driver *drv = ng_filter_driver_check(g, layer, err);

    if (drv == NULL)
        return NULL;
    snprintf(name, size, "%s.%s", owner, drv->name);
    if (ng_graph_find(g, name) != NULL) {
        ng_error_set(err, EEXIST, "node '%s' already exists", name);
        return NULL;
    }
    return name;
}

int
ng_graph_check_stack_implicit(struct ng_graph *g, const char *node,
                              const char *owner,
                              const struct ng_value *const *layers, size_t n,
                              struct ng_error *err)
{
    char name[256];
    struct ng_value *opts;
    size_t i;
    int r;

    if (ng_graph_find(g, node) == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", node);
    for (i = n; i-- > 0;) {
        if (layer_name(g, owner, layers[i], name, sizeof name, err) == NULL)
            return -1;
        opts = ng_filter_opts_with_child(ng_filter_driver_check(g, layers[i],
                                                                NULL),
                                         layers[i], node);
        if (opts == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
        r = ng_node_opts_check(g->drivers, opts, NULL, NULL, err);
        ng_value_free(opts);
        if (r == -1)
            return -1;
    }
    return 0;
}

/* One layer above `below`, tagged implicit; NULL with *err set. */
static struct ng_node *
stack_one(struct ng_graph *g, struct ng_node *below, const char *owner,
          const struct ng_value *layer, struct ng_error *err)
{
    char name[256];
    struct ng_value *opts;
    struct ng_node *n;

    if (layer_name(g, owner, layer, name, sizeof name, err) == NULL)
        return NULL;
    opts = ng_filter_opts_with_child(ng_filter_driver_check(g, layer, NULL),
                                     layer, below->name);
    if (opts == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    /* Implicit filters open at once; a slow one is refused (EAGAIN). */
    n = ng_graph_add_node_now(g, name, opts, err);
    ng_value_free(opts);
    if (n == NULL)
        return NULL;
    n->implicit = true;
    if ((n->implicit_owner = strdup(owner)) == NULL) {
        ng_graph_del_node(g, n->name, NULL, NULL, NULL);
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    return n;
}

struct ng_node *
ng_graph_stack_implicit(struct ng_graph *g, const char *node,
                        const char *owner,
                        const struct ng_value *const *layers, size_t n,
                        struct ng_error *err)
{
    struct ng_node *top = ng_graph_find(g, node);
    size_t i;

    if (top == NULL) {
        ng_error_set(err, ENOENT, "node '%s' not found", node);
        return NULL;
    }
    for (i = n; i-- > 0 && top != NULL;)
        top = stack_one(g, top, owner, layers[i], err);
    if (top == NULL)
        ng_graph_unstack_implicit(g, owner);
    return top;
}

void
ng_graph_unstack_implicit(struct ng_graph *g, const char *owner)
{
    struct ng_node *n;
    bool again = true;

    /* Top down: each pass removes one node nobody uses, which may free
     * the layer below it. */
    while (again) {
        again = false;
        for (n = g->nodes; n != NULL; n = n->next) {
            if (n->implicit && n->parents == NULL &&
                n->implicit_owner != NULL &&
                strcmp(n->implicit_owner, owner) == 0) {
                ng_graph_del_node(g, n->name, NULL, NULL, NULL);
                again = true;
                break;
            }
        }
    }
}
