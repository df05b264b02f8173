/* graph/mutate.c: changes to a live graph — filter insertion and removal,
 * run inside drained sections so clients see only a short pause. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

struct mutation {
    struct ng_graph *graph;
    ng_mutation_fn *fn;
    ng_mutation_done_fn *done;
    void *opaque;
    struct ng_drain *drain;
};

static void
mutation_drained(void *opaque)
{
    struct mutation *m = opaque;
    struct ng_error err = { 0 };
    int r = m->fn(m->graph, m->opaque, &err);

    ng_drain_end(m->drain);
    m->done(m->opaque, r == 0 ? NULL : &err);
    free(m);
}

int
ng_graph_mutate(struct ng_graph *g, struct ng_node *node, ng_mutation_fn *fn,
                ng_mutation_done_fn *done, void *opaque, struct ng_error *err)
{
    struct mutation *m = calloc(1, sizeof *m);

    if (m == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    m->graph = g;
    m->fn = fn;
    m->done = done;
    m->opaque = opaque;
    m->drain = ng_drain_begin(g, node, mutation_drained, m, err);
    if (m->drain == NULL) {
        free(m);
        return -1;
    }
    return 0;
}

/* The option through which a filter names its one child. */
static const struct ng_opt_desc *
filter_child_opt(const struct ng_driver *drv)
{
    const struct ng_opt_desc *d;

    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (d->type == NG_OPT_T_CHILD)
            return d;
    return NULL;
}

static bool
name_listed(const char *name, const char *const *list, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* Does insert_filter move this parent edge of the node up to the filter:
 * every edge, or only those of the BBs listed? */
static bool
edge_moves(const struct ng_edge *e, const char *const *bbs, size_t n_bbs)
{
    return bbs == NULL || (e->bb != NULL && name_listed(e->bb->name, bbs,
                                                        n_bbs));
}

/* Each way down through the filter must still fit a request. */
static int
check_insert_depth(const struct ng_node *below, const struct ng_driver *drv,
                   const char *name, const char *const *bbs, size_t n_bbs,
                   struct ng_error *err)
{
    const struct ng_edge *e;

    if (below->parents == NULL)
        return ng_depth_check_splice(NULL, name, drv, below, err);
    for (e = below->parents; e != NULL; e = e->next_parent)
        if (edge_moves(e, bbs, n_bbs) &&
            ng_depth_check_splice(e, name, drv, below, err) == -1)
            return -1;
    return 0;
}

static bool
bb_is_parent(struct ng_node *node, const char *bb)
{
    struct ng_edge *e;

    for (e = node->parents; e != NULL; e = e->next_parent)
        if (e->bb != NULL && strcmp(e->bb->name, bb) == 0)
            return true;
    return false;
}

const struct ng_driver *
ng_filter_driver_check(struct ng_graph *g, const struct ng_value *opts,
                       struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(opts, "driver");
    const struct ng_driver *drv;
    const char *name;

    if (v == NULL) {
        ng_error_set(err, EINVAL, "filter: missing 'driver'");
        return NULL;
    }
    if ((name = ng_value_to_string(v, "driver", err)) == NULL)
        return NULL;
    drv = ng_driver_find(g->drivers, name);
    if (drv == NULL || !drv->is_filter || filter_child_opt(drv) == NULL) {
        ng_error_set(err, EINVAL, "'%s' is not a filter driver", name);
        return NULL;
    }
    if (ng_value_get(opts, filter_child_opt(drv)->name) != NULL) {
        ng_error_set(err, EINVAL, "filter: do not give '%s'; the filter "
                     "goes above the node named in 'node'",
                     filter_child_opt(drv)->name);
        return NULL;
    }
    return drv;
}

struct ng_value *
ng_filter_opts_with_child(const struct ng_driver *drv,
                          const struct ng_value *filter_opts,
                          const char *node)
{
    struct ng_value *opts = ng_value_copy(filter_opts);
    struct ng_value *ref = ng_value_new_scalar(node, filter_opts->loc);

    if (opts == NULL || ref == NULL) {
        ng_value_free(opts);
        ng_value_free(ref);
        return NULL;
    }
    if (ng_value_map_put(opts, filter_child_opt(drv)->name, ref->loc,
                         ref) == -1) {
        ng_value_free(opts);
        return NULL;
    }
    return opts;
}

int
ng_graph_check_insert_filter(struct ng_graph *g, const char *node,
                             const struct ng_value *filter_opts,
                             const char *const *bbs, size_t n_bbs,
                             struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(g, node);
    const struct ng_driver *drv;
    const struct ng_value *name;
    struct ng_value *opts;
    size_t i;
    int r;

    if (n == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", node);
    if (filter_opts == NULL || filter_opts->kind != NG_VALUE_MAP)
        return ng_error_set(err, EINVAL, "'filter' must be an object");
    if ((drv = ng_filter_driver_check(g, filter_opts, err)) == NULL)
        return -1;
    name = ng_value_get(filter_opts, "node-name");
    if (name == NULL)
        return ng_error_set(err, EINVAL, "filter: missing 'node-name'");
    if (name->kind == NG_VALUE_SCALAR && ng_graph_find(g, name->text))
        return ng_error_set(err, EEXIST, "node '%s' already exists",
                            name->text);
    for (i = 0; i < n_bbs; i++)
        if (!bb_is_parent(n, bbs[i]))
            return ng_error_set(err, EINVAL, "export '%s' is not a parent "
                                "of node '%s'", bbs[i], node);
    if (check_insert_depth(n, drv, name->kind == NG_VALUE_SCALAR ?
                           name->text : "(filter)", bbs, n_bbs, err) == -1)
        return -1;
    opts = ng_filter_opts_with_child(drv, filter_opts, node);
    if (opts == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    r = ng_node_opts_check(g->drivers, opts, NULL, NULL, err);
    ng_value_free(opts);
    return r;
}

struct ng_node *
ng_graph_insert_filter(struct ng_graph *g, const char *node,
                       const struct ng_value *filter_opts,
                       const char *const *bbs, size_t n_bbs,
                       struct ng_error *err)
{
    struct ng_node *below, *filter;
    struct ng_edge *e, *next;
    struct ng_value *opts;

    if (ng_graph_check_insert_filter(g, node, filter_opts, bbs, n_bbs,
                                     err) == -1)
        return NULL;
    below = ng_graph_find(g, node);
    opts = ng_filter_opts_with_child(ng_filter_driver_check(g, filter_opts,
                                                            NULL),
                                     filter_opts, node);
    if (opts == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    filter = ng_graph_add_node(g, NULL, opts, err);
    ng_value_free(opts);
    if (filter == NULL)
        return NULL;
    /* Move the chosen parent edges of `below` up to the filter; the
     * filter's own edge to `below` stays. */
    for (e = below->parents; e != NULL; e = next) {
        next = e->next_parent;
        if (e->parent != filter && edge_moves(e, bbs, n_bbs))
            ng_edge_set_child(e, filter);
    }
    if (ng_node_refresh_parents(filter, err) == -1)
        return NULL;
    return filter;
}

int
ng_graph_check_remove_filter(struct ng_graph *g, const char *name,
                             struct ng_error *err)
{
    struct ng_node *f = ng_graph_find(g, name);

    if (f == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", name);
    if (!f->driver->is_filter)
        return ng_error_set(err, EINVAL, "node '%s' is not a filter", name);
    if (ng_node_child(f) == NULL)
        return ng_error_set(err, EINVAL, "filter '%s' has no child", name);
    return 0;
}

int
ng_graph_remove_filter(struct ng_graph *g, const char *name,
                       struct ng_error *err)
{
    struct ng_node *f, *child;

    if (ng_graph_check_remove_filter(g, name, err) == -1)
        return -1;
    f = ng_graph_find(g, name);
    child = ng_node_child(f);
    while (f->parents != NULL)
        ng_edge_set_child(f->parents, child);
    ng_node_destroy(f);
    return ng_node_refresh_parents(child, err);
}
