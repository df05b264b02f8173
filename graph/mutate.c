/* graph/mutate.c: changes to a live graph — filter insertion and removal,
 * run inside drained sections so clients see only a short pause.  Each
 * refreshes the facts above the spot it changed and holds every BB's new
 * size and caps against what its clients were told; a change that would
 * take something away is undone, leaving the graph exactly as it was. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
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
is_child_opt(const struct ng_opt_desc *d)
{
    return d->type == NG_OPT_T_CHILD || d->type == NG_OPT_T_CHILDREN;
}

/* The child option the node below a splice goes into: the first one
 * `opts` leaves out, or a list of children (which it joins in front);
 * NULL when every one is given. */
static const struct ng_opt_desc *
splice_slot(const struct ng_driver *drv, const struct ng_value *opts)
{
    const struct ng_opt_desc *d;

    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (d->type == NG_OPT_T_CHILDREN ||
            (d->type == NG_OPT_T_CHILD && ng_value_get(opts, d->name) == NULL))
            return d;
    return NULL;
}

/* "'test' and 'raw'": the driver's child options, for a message. */
static void
child_opt_names(const struct ng_driver *drv, char *buf, size_t size)
{
    const struct ng_opt_desc *d;
    size_t used = 0;

    buf[0] = '\0';
    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (is_child_opt(d) && used < size)
            used += (size_t)snprintf(buf + used, size - used, "%s'%s'",
                                     used ? " and " : "", d->name);
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

static size_t other_children(const struct ng_driver *drv,
                             const struct ng_value *filter_opts,
                             const char **names, size_t max);

static bool reaches(const struct ng_node *from, const struct ng_node *target);

/* A multi-child filter's other children must not be the node below nor
 * above it: the parents that move would make a loop through them. */
static int
check_insert_others_loop(struct ng_graph *g, const struct ng_node *below,
                         const struct ng_driver *drv,
                         const struct ng_value *filter_opts, const char *name,
                         struct ng_error *err)
{
    const char *others[16];
    size_t n = other_children(drv, filter_opts, others, 16);

    for (size_t i = 0; i < n && i < 16; i++) {
        const struct ng_node *other = ng_graph_find(g, others[i]);

        if (other == below)
            return ng_error_set(err, EINVAL, "filter: node '%s' is the node "
                                "the filter goes above; name another child",
                                others[i]);
        if (other != NULL && reaches(other, below))
            return ng_error_set(err, ELOOP, "node '%s' cannot be a child of "
                                "'%s': '%s' is below it", others[i], name,
                                below->name);
    }
    return 0;
}

/* The same for a multi-child filter's other children, which get the
 * moving parents above them too. */
static int
check_insert_depth_others(struct ng_graph *g, const struct ng_node *below,
                          const struct ng_driver *drv,
                          const struct ng_value *filter_opts,
                          const char *name, const char *const *bbs,
                          size_t n_bbs, struct ng_error *err)
{
    const char *others[16];
    size_t n = other_children(drv, filter_opts, others, 16);
    const struct ng_edge *e;

    for (size_t i = 0; i < n && i < 16; i++) {
        const struct ng_node *other = ng_graph_find(g, others[i]);

        if (other == NULL)
            continue;           /* the open names it */
        if (below->parents == NULL &&
            ng_depth_check_splice(NULL, name, drv, other, err) == -1)
            return -1;
        for (e = below->parents; e != NULL; e = e->next_parent)
            if (edge_moves(e, bbs, n_bbs) &&
                ng_depth_check_splice(e, name, drv, other, err) == -1)
                return -1;
    }
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

/* May a node of this driver be spliced in and out? */
static bool
driver_splices(const struct ng_driver *drv)
{
    return (drv->is_filter && filter_child_opt(drv) != NULL) ||
           drv->multi_child_filter;
}

const struct ng_driver *
ng_filter_driver_check(struct ng_graph *g, const struct ng_value *opts,
                       struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(opts, "driver");
    const struct ng_driver *drv;
    const char *name;
    char names[128];

    if (v == NULL) {
        ng_error_set(err, EINVAL, "filter: missing 'driver'");
        return NULL;
    }
    if ((name = ng_value_to_string(v, "driver", err)) == NULL)
        return NULL;
    drv = ng_driver_find(g->drivers, name);
    if (drv == NULL || !driver_splices(drv)) {
        ng_error_set(err, EINVAL, "'%s' is not a filter driver", name);
        return NULL;
    }
    if (drv->is_filter &&
        ng_value_get(opts, filter_child_opt(drv)->name) != NULL) {
        ng_error_set(err, EINVAL, "filter: do not give '%s'; the filter "
                     "goes above the node named in 'node'",
                     filter_child_opt(drv)->name);
        return NULL;
    }
    if (splice_slot(drv, opts) == NULL) {
        child_opt_names(drv, names, sizeof names);
        ng_error_set(err, EINVAL, "filter: do not give both %s; the node "
                     "named in 'node' is one of them", names);
        return NULL;
    }
    return drv;
}

/* `list` (NULL: none) with `first` in front, as a new list. */
static struct ng_value *
list_with_first(const struct ng_value *list, struct ng_value *first,
                struct ng_loc loc)
{
    struct ng_value *out = ng_value_new_list(list ? list->loc : loc);

    if (out == NULL || ng_value_list_append(out, first) == -1) {
        if (out == NULL)
            ng_value_free(first);
        ng_value_free(out);
        return NULL;
    }
    for (size_t i = 0; list != NULL && i < list->n; i++) {
        struct ng_value *item = ng_value_copy(list->items[i]);

        if (item == NULL || ng_value_list_append(out, item) == -1) {
            ng_value_free(out);
            return NULL;
        }
    }
    return out;
}

struct ng_value *
ng_filter_opts_with_child(const struct ng_driver *drv,
                          const struct ng_value *filter_opts,
                          const char *node)
{
    const struct ng_opt_desc *slot = splice_slot(drv, filter_opts);
    const struct ng_value *given = ng_value_get(filter_opts, slot->name);
    struct ng_value *opts = ng_value_copy(filter_opts);
    struct ng_value *ref = ng_value_new_scalar(node, filter_opts->loc);
    ptrdiff_t i;

    if (opts == NULL || ref == NULL) {
        ng_value_free(opts);
        ng_value_free(ref);
        return NULL;
    }
    if (slot->type == NG_OPT_T_CHILDREN) {
        /* A list given as something else is left for the open to refuse,
         * with its location. */
        if (given != NULL && given->kind != NG_VALUE_LIST) {
            ng_value_free(ref);
            return opts;
        }
        if ((ref = list_with_first(given, ref, filter_opts->loc)) == NULL) {
            ng_value_free(opts);
            return NULL;
        }
        if ((i = ng_value_index(opts, slot->name)) >= 0) {
            ng_value_free(opts->items[i]);
            opts->items[i] = ref;
            return opts;
        }
    }
    if (ng_value_map_put(opts, slot->name, ref->loc, ref) == -1) {
        ng_value_free(opts);
        return NULL;
    }
    return opts;
}

/* Append the node name `v` (a reference, not an inline definition). */
static void
add_ref(const struct ng_value *v, const char **names, size_t max, size_t *n)
{
    if (v->kind != NG_VALUE_SCALAR || v->is_null)
        return;
    if (*n < max)
        names[*n] = v->text;
    (*n)++;
}

static size_t
other_children(const struct ng_driver *drv, const struct ng_value *filter_opts,
               const char **names, size_t max)
{
    const struct ng_opt_desc *d;
    const struct ng_value *v;
    size_t n = 0;

    for (d = drv->opts; d != NULL && d->name != NULL; d++) {
        if (!is_child_opt(d) || (v = ng_value_get(filter_opts,
                                                  d->name)) == NULL)
            continue;
        if (v->kind != NG_VALUE_LIST)
            add_ref(v, names, max, &n);
        for (size_t i = 0; v->kind == NG_VALUE_LIST && i < v->n; i++)
            add_ref(v->items[i], names, max, &n);
    }
    return n;
}

size_t
ng_graph_filter_other_children(struct ng_graph *g,
                               const struct ng_value *filter_opts,
                               const char **names, size_t max)
{
    const struct ng_driver *drv = ng_filter_driver_check(g, filter_opts,
                                                         NULL);

    return drv != NULL ? other_children(drv, filter_opts, names, max) : 0;
}

struct ng_value *
ng_graph_filter_opts(struct ng_graph *g, const char *node,
                     const struct ng_value *filter_opts)
{
    const struct ng_driver *drv = ng_filter_driver_check(g, filter_opts,
                                                         NULL);

    return drv != NULL ? ng_filter_opts_with_child(drv, filter_opts, node)
                       : NULL;
}

/* ---- Keeping what clients were told -------------------------------------- */

/* What every BB offered before a change, to hold the result against. */
struct bbs_before {
    struct ng_bb **bbs;
    int64_t *size;
    uint32_t *caps;
    size_t n;
};

static int
bbs_before_take(struct ng_graph *g, struct bbs_before *b,
                struct ng_error *err)
{
    struct ng_bb *bb;
    size_t n = 0;

    for (bb = g->bbs; bb != NULL; bb = bb->next)
        n++;
    b->n = 0;
    b->bbs = calloc(n ? n : 1, sizeof *b->bbs);
    b->size = calloc(n ? n : 1, sizeof *b->size);
    b->caps = calloc(n ? n : 1, sizeof *b->caps);
    if (b->bbs == NULL || b->size == NULL || b->caps == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (bb = g->bbs; bb != NULL; bb = bb->next, b->n++) {
        b->bbs[b->n] = bb;
        b->size[b->n] = ng_bb_length(bb);
        b->caps[b->n] = ng_bb_caps(bb);
    }
    return 0;
}

static void
bbs_before_free(struct bbs_before *b)
{
    free(b->bbs);
    free(b->size);
    free(b->caps);
}

/* After the change, with facts refreshed: refuse it if it takes from a
 * BB what its clients were told, unless forced. */
static int
bbs_check(const struct bbs_before *b, unsigned flags, struct ng_error *err)
{
    size_t i;

    if (flags & NG_MUTATE_FORCE)
        return 0;
    for (i = 0; i < b->n; i++)
        if (ng_bb_check_promise(b->bbs[i], b->size[i], b->caps[i],
                                err) == -1)
            return -1;
    return 0;
}

/* A node's parent edges as they were, so that a refused change can put
 * them back exactly, order included. */
struct parents_saved {
    struct ng_node *node;
    struct ng_edge **edges;
    size_t n;
};

static int
parents_save(struct ng_node *node, struct parents_saved *ps,
             struct ng_error *err)
{
    struct ng_edge *e;
    size_t n = 0;

    for (e = node->parents; e != NULL; e = e->next_parent)
        n++;
    ps->node = node;
    ps->n = 0;
    ps->edges = calloc(n ? n : 1, sizeof *ps->edges);
    if (ps->edges == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (e = node->parents; e != NULL; e = e->next_parent)
        ps->edges[ps->n++] = e;
    return 0;
}

/* Point the saved edges at the node again. */
static void
parents_relink(const struct parents_saved *ps)
{
    size_t i;

    for (i = 0; i < ps->n; i++)
        if (ps->edges[i]->child != ps->node)
            ng_edge_set_child(ps->edges[i], ps->node);
}

/* The node's parent list in the saved order; it must hold exactly the
 * saved edges again. */
static void
parents_reorder(const struct parents_saved *ps)
{
    size_t i;

    ps->node->parents = ps->n > 0 ? ps->edges[0] : NULL;
    for (i = 0; i < ps->n; i++)
        ps->edges[i]->next_parent = i + 1 < ps->n ? ps->edges[i + 1] : NULL;
}

/* Refresh the parent nodes of the saved edges: those whose child moved. */
static int
parents_refresh(const struct parents_saved *ps, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < ps->n; i++)
        if (ps->edges[i]->parent != NULL &&
            ng_node_refresh(ps->edges[i]->parent, err) == -1)
            return -1;
    return 0;
}

/* ---- Filters ------------------------------------------------------------- */

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
                           name->text : "(filter)", bbs, n_bbs, err) == -1 ||
        check_insert_others_loop(g, n, drv, filter_opts,
                                 name->kind == NG_VALUE_SCALAR ?
                                 name->text : "(filter)", err) == -1 ||
        check_insert_depth_others(g, n, drv, filter_opts,
                                  name->kind == NG_VALUE_SCALAR ?
                                  name->text : "(filter)", bbs, n_bbs,
                                  err) == -1)
        return -1;
    opts = ng_filter_opts_with_child(drv, filter_opts, node);
    if (opts == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    r = ng_node_opts_check(g->drivers, opts, NULL, NULL, err);
    ng_value_free(opts);
    return r;
}

/* Move the chosen parent edges of `below` up to `filter`; the filter's
 * own edge to `below` stays. */
static void
move_parents_to(struct ng_node *below, struct ng_node *filter,
                const char *const *bbs, size_t n_bbs)
{
    struct ng_edge *e, *next;

    for (e = below->parents; e != NULL; e = next) {
        next = e->next_parent;
        if (e->parent != filter && edge_moves(e, bbs, n_bbs))
            ng_edge_set_child(e, filter);
    }
}

static struct ng_node *
insert_filter(struct ng_graph *g, struct ng_node *below,
              const struct ng_value *opts, const char *const *bbs,
              size_t n_bbs, unsigned flags, const struct bbs_before *before,
              const struct parents_saved *saved, struct ng_error *err)
{
    /* Inside a drained section: a filter that opens slowly is refused. */
    struct ng_node *filter = ng_graph_add_node_now(g, NULL, opts, err);

    if (filter == NULL)
        return NULL;
    /* What a removal puts back, unless told otherwise. */
    filter->spliced_live = true;
    for (struct ng_edge *e = filter->children; e != NULL; e = e->next_child)
        if (e->child == below && filter->spliced_over == NULL)
            filter->spliced_over = e;
    move_parents_to(below, filter, bbs, n_bbs);
    if (ng_node_refresh_parents(filter, err) == 0 &&
        bbs_check(before, flags, err) == 0)
        return filter;
    /* Refused: as it was, down to the order of below's parents. */
    parents_relink(saved);
    ng_node_destroy(filter);
    parents_reorder(saved);
    ng_node_refresh_parents(below, NULL);
    return NULL;
}

struct ng_node *
ng_graph_insert_filter(struct ng_graph *g, const char *node,
                       const struct ng_value *filter_opts,
                       const char *const *bbs, size_t n_bbs, unsigned flags,
                       struct ng_error *err)
{
    struct bbs_before before = { 0 };
    struct parents_saved saved = { 0 };
    struct ng_node *below, *filter = NULL;
    struct ng_value *opts;

    if (ng_graph_check_insert_filter(g, node, filter_opts, bbs, n_bbs,
                                     err) == -1)
        return NULL;
    below = ng_graph_find(g, node);
    opts = ng_filter_opts_with_child(ng_filter_driver_check(g, filter_opts,
                                                            NULL),
                                     filter_opts, node);
    if (opts == NULL)
        ng_error_set(err, ENOMEM, "out of memory");
    else if (bbs_before_take(g, &before, err) == 0 &&
             parents_save(below, &saved, err) == 0)
        filter = insert_filter(g, below, opts, bbs, n_bbs, flags, &before,
                               &saved, err);
    ng_value_free(opts);
    bbs_before_free(&before);
    free(saved.edges);
    return filter;
}

const char *
ng_edge_label(struct ng_node *node, const struct ng_edge *e, char *buf,
              size_t size)
{
    if (node->driver->child_label != NULL)
        node->driver->child_label(node, e, buf, size);
    else
        snprintf(buf, size, "%s", ng_role_name(e->role));
    return buf;
}

/* Is `name` what the user may call the child on edge e: its label, its
 * child option's name (blkverify's "raw") or its node-name? */
static bool
edge_called(struct ng_node *f, const struct ng_edge *e, const char *name)
{
    const struct ng_opt_desc *d;
    char label[64];

    if (strcmp(name, e->child->name) == 0 ||
        strcmp(name, ng_edge_label(f, e, label, sizeof label)) == 0)
        return true;
    for (d = f->driver->opts; d != NULL && d->name != NULL; d++)
        if (d->type == NG_OPT_T_CHILD && d->role == e->role &&
            strcmp(d->name, name) == 0)
            return true;
    return false;
}

/* The child a removal of f puts in its place (see
 * ng_graph_remove_filter_keep()). */
static struct ng_node *
kept_child(struct ng_node *f, const char *keep, struct ng_error *err)
{
    struct ng_edge *e;

    if (keep == NULL && f->spliced_over != NULL)
        return f->spliced_over->child;
    if (keep == NULL && f->spliced_live && f->driver->multi_child_filter)
        return ng_error_set(err, ENOENT, "filter '%s' no longer has the "
                            "child it was inserted over; name the child to "
                            "keep with 'keep'", f->name), NULL;
    if (keep == NULL)
        return ng_node_child(f);
    for (e = f->children; e != NULL; e = e->next_child)
        if (edge_called(f, e, keep))
            return e->child;
    return ng_error_set(err, ENOENT, "filter '%s' has no child '%s'",
                        f->name, keep), NULL;
}

int
ng_graph_check_remove_filter(struct ng_graph *g, const char *name,
                             struct ng_error *err)
{
    return ng_graph_check_remove_filter_keep(g, name, NULL, err);
}

int
ng_graph_check_remove_filter_keep(struct ng_graph *g, const char *name,
                                  const char *keep, struct ng_error *err)
{
    struct ng_node *f = ng_graph_find(g, name);
    struct ng_edge *e;

    if (f == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", name);
    if (!f->driver->is_filter && !f->driver->multi_child_filter)
        return ng_error_set(err, EINVAL, "node '%s' is not a filter", name);
    if (ng_node_child(f) == NULL)
        return ng_error_set(err, EINVAL, "filter '%s' has no child", name);
    if (kept_child(f, keep, err) == NULL)
        return -1;
    /* An open may be doing I/O through it, which no drain waits for. */
    for (e = f->parents; e != NULL; e = e->next_parent)
        if (e->parent != NULL && e->parent->adding != NULL)
            return ng_error_set(err, EBUSY, "filter '%s' is in use by node "
                                "'%s', which is still opening", name,
                                e->parent->name);
    return 0;
}

int
ng_graph_remove_filter(struct ng_graph *g, const char *name, unsigned flags,
                       struct ng_error *err)
{
    return ng_graph_remove_filter_keep(g, name, NULL, flags, err);
}

struct ng_value *
ng_job_filter_opts(const char *driver, const char *name)
{
    struct ng_loc nowhere = { 0 };
    struct ng_value *m = ng_value_new_map(nowhere);
    struct ng_value *drv = ng_value_new_scalar(driver, nowhere);
    struct ng_value *nn = ng_value_new_scalar(name, nowhere);

    if (m == NULL || drv == NULL || nn == NULL ||
        ng_value_map_put(m, "driver", nowhere, drv) == -1) {
        ng_value_free(m);
        ng_value_free(drv);
        ng_value_free(nn);
        return NULL;
    }
    if (ng_value_map_put(m, "node-name", nowhere, nn) == -1) {
        ng_value_free(m);
        ng_value_free(nn);
        return NULL;
    }
    return m;
}

struct job_filter_removal {
    struct ng_node *filter;
    ng_mutation_done_fn *done;
    void *opaque;
};

static int
remove_job_filter(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct job_filter_removal *r = opaque;

    return ng_graph_remove_filter(g, r->filter->name, NG_MUTATE_FORCE, err);
}

static void
job_filter_removed(void *opaque, const struct ng_error *err)
{
    struct job_filter_removal r = *(struct job_filter_removal *)opaque;

    free(opaque);
    r.done(r.opaque, err);
}

void
ng_graph_remove_job_filter(struct ng_graph *g, struct ng_node *filter,
                           ng_mutation_done_fn *done, void *opaque)
{
    struct job_filter_removal *r = malloc(sizeof *r);
    struct ng_error err = { 0 };

    if (r == NULL) {
        ng_error_set(&err, ENOMEM, "out of memory");
        done(opaque, &err);
        return;
    }
    *r = (struct job_filter_removal){ filter, done, opaque };
    if (ng_graph_mutate(g, filter, remove_job_filter, job_filter_removed, r,
                        &err) == -1) {
        free(r);
        done(opaque, &err);
    }
}

int
ng_graph_remove_filter_keep(struct ng_graph *g, const char *name,
                            const char *keep, unsigned flags,
                            struct ng_error *err)
{
    struct bbs_before before = { 0 };
    struct parents_saved saved_f = { 0 }, saved_child = { 0 };
    struct ng_node *f, *child;
    int r = -1;

    if (ng_graph_check_remove_filter_keep(g, name, keep, err) == -1)
        return -1;
    f = ng_graph_find(g, name);
    child = kept_child(f, keep, err);
    if (bbs_before_take(g, &before, err) == 0 &&
        parents_save(f, &saved_f, err) == 0 &&
        parents_save(child, &saved_child, err) == 0) {
        while (f->parents != NULL)
            ng_edge_set_child(f->parents, child);
        r = parents_refresh(&saved_f, err);
        if (r == 0)
            r = bbs_check(&before, flags, err);
        if (r == 0) {
            /* Its other children lose a parent and stay. */
            ng_node_destroy(f);
        } else {    /* refused: as it was */
            parents_relink(&saved_f);
            parents_reorder(&saved_f);
            parents_reorder(&saved_child);
            parents_refresh(&saved_f, NULL);
        }
    }
    bbs_before_free(&before);
    free(saved_f.edges);
    free(saved_child.edges);
    return r;
}

/* ---- Replacing a node (mirror's pivot) --------------------------------- */

static bool
edge_not_kept(const struct ng_edge *e, const void *keep)
{
    return e->bb == NULL || e->bb != keep;
}

int
ng_graph_replace_node(struct ng_graph *g, struct ng_node *from,
                      struct ng_node *to, const struct ng_bb *keep,
                      unsigned flags, struct ng_error *err)
{
    return ng_graph_replace_node_if(g, from, to, edge_not_kept, keep, flags,
                                    err);
}

int
ng_graph_replace_node_if(struct ng_graph *g, struct ng_node *from,
                         struct ng_node *to,
                         bool (*moves)(const struct ng_edge *e,
                                       const void *arg),
                         const void *arg, unsigned flags,
                         struct ng_error *err)
{
    struct bbs_before before = { 0 };
    struct parents_saved saved = { 0 };
    struct ng_edge *e, *next;
    int r = -1;

    if (bbs_before_take(g, &before, err) == 0 &&
        parents_save(from, &saved, err) == 0) {
        for (e = from->parents; e != NULL; e = next) {
            next = e->next_parent;
            if (moves(e, arg))
                ng_edge_set_child(e, to);
        }
        r = 0;
        if (ng_node_refresh_parents(to, err) == -1 ||
            bbs_check(&before, flags, err) == -1) {
            /* Refused: as it was, down to the order of from's parents. */
            parents_relink(&saved);
            parents_reorder(&saved);
            ng_node_refresh_parents(from, NULL);
            r = -1;
        }
    }
    free(saved.edges);
    bbs_before_free(&before);
    return r;
}

/* ---- A node's backing child (snapshot, stream, commit) ------------------ */

/* The driver's CHILD option of role "backing", or NULL. */
static const struct ng_opt_desc *
backing_opt(const struct ng_driver *drv)
{
    const struct ng_opt_desc *d;

    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (d->type == NG_OPT_T_CHILD && d->role == NG_ROLE_BACKING)
            return d;
    return NULL;
}

static struct ng_edge *
backing_edge(struct ng_node *node)
{
    struct ng_edge *e;

    for (e = node->children; e != NULL; e = e->next_child)
        if (e->role == NG_ROLE_BACKING)
            return e;
    return NULL;
}

/* Is `target` `from` or somewhere below it? */
static bool
reaches(const struct ng_node *from, const struct ng_node *target)
{
    const struct ng_edge *e;

    if (from == target)
        return true;
    for (e = from->children; e != NULL; e = e->next_child)
        if (reaches(e->child, target))
            return true;
    return false;
}

int
ng_node_check_set_backing(struct ng_node *node, struct ng_node *backing,
                          struct ng_error *err)
{
    if (node->driver->set_backing == NULL && backing_opt(node->driver) == NULL)
        return ng_error_set(err, ENOTSUP, "node '%s' (driver '%s') cannot "
                            "take a backing node", node->name,
                            node->driver->name);
    if (backing == NULL)
        return 0;
    if (reaches(backing, node))
        return ng_error_set(err, ELOOP, "node '%s' as the backing of node "
                            "'%s' would make a loop", backing->name,
                            node->name);
    return ng_depth_check_child(node, backing, err);
}

/* Point the edge (or a new one, or none) and the driver at `backing`.
 * *edge is the node's backing edge before and after. */
static int
backing_point(struct ng_node *node, struct ng_edge **edge,
              struct ng_node *backing, struct ng_error *err)
{
    const struct ng_opt_desc *d = backing_opt(node->driver);

    if (*edge != NULL && backing != NULL) {
        ng_edge_set_child(*edge, backing);
    } else if (*edge != NULL) {
        ng_edge_detach(*edge);
        *edge = NULL;
    } else if (backing != NULL) {
        *edge = ng_edge_attach(node, NULL, backing, NG_ROLE_BACKING);
        if (*edge == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
    }
    if (d != NULL)
        *(struct ng_node **)((char *)node->state + d->offset) = backing;
    if (node->driver->set_backing != NULL &&
        node->driver->set_backing(node, backing, err) == -1)
        return ng_error_prefix(err, "node '%s'", node->name);
    return 0;
}

int
ng_node_set_backing(struct ng_node *node, struct ng_node *backing,
                    unsigned flags, struct ng_error *err)
{
    struct bbs_before before = { 0 };
    struct ng_edge *edge = backing_edge(node);
    struct ng_node *old = edge != NULL ? edge->child : NULL;
    int r = -1;

    if (ng_node_check_set_backing(node, backing, err) == -1)
        return -1;
    if (backing == old)
        return 0;
    if (bbs_before_take(node->graph, &before, err) == 0) {
        r = backing_point(node, &edge, backing, err);
        if (r == 0)
            r = ng_node_refresh(node, err);
        if (r == 0)
            r = bbs_check(&before, flags, err);
        if (r == -1) {              /* refused: the old backing back */
            backing_point(node, &edge, old, NULL);
            ng_node_refresh(node, NULL);
        }
    }
    bbs_before_free(&before);
    if (r == 0 && old != NULL && old->inline_def && old->parents == NULL)
        ng_node_destroy(old);
    return r;
}

/* ---- x-blockdev-change: a child more or less ----------------------------- */

/* Is `target` `node` or below it? */
static bool
node_reaches(const struct ng_node *node, const struct ng_node *target)
{
    const struct ng_edge *e;

    if (node == target)
        return true;
    for (e = node->children; e != NULL; e = e->next_child)
        if (node_reaches(e->child, target))
            return true;
    return false;
}

/* The parent, with the hooks; and exactly one of child and node. */
static struct ng_node *
change_child_parent(struct ng_graph *g, const char *parent, const char *child,
                    const char *node, struct ng_error *err)
{
    struct ng_node *p = parent != NULL ? ng_graph_find(g, parent) : NULL;

    if (parent == NULL || p == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found",
                            parent != NULL ? parent : ""), NULL;
    if ((child == NULL) == (node == NULL))
        return ng_error_set(err, EINVAL, "give exactly one of 'child' (to "
                            "remove) and 'node' (to add)"), NULL;
    if (p->driver->add_child == NULL || p->driver->del_child == NULL)
        return ng_error_set(err, ENOTSUP, "node '%s' (driver %s) does not "
                            "support adding or removing children", parent,
                            p->driver->name), NULL;
    return p;
}

/* `node` may become a child of p: it exists, makes no cycle, and the
 * driver would take it. */
static struct ng_node *
change_child_new(struct ng_graph *g, struct ng_node *p, const char *node,
                 struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(g, node);

    if (n == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", node), NULL;
    if (node_reaches(n, p))
        return ng_error_set(err, EINVAL, "node '%s' cannot be a child of "
                            "'%s': '%s' is below it", node, p->name,
                            p->name), NULL;
    if (p->driver->add_child(p, n, true, err) == -1)
        return NULL;
    return n;
}

int
ng_graph_check_change_child(struct ng_graph *g, const char *parent,
                            const char *child, const char *node,
                            struct ng_error *err)
{
    struct ng_node *p = change_child_parent(g, parent, child, node, err);

    if (p == NULL)
        return -1;
    if (node != NULL)
        return change_child_new(g, p, node, err) != NULL ? 0 : -1;
    return p->driver->del_child(p, child, true, err) != NULL ? 0 : -1;
}

/* The edge from p to n in the children role. */
static struct ng_edge *
children_edge(struct ng_node *p, struct ng_node *n)
{
    struct ng_edge *e;

    for (e = p->children; e != NULL; e = e->next_child)
        if (e->child == n && e->role == NG_ROLE_CHILDREN)
            return e;
    return NULL;
}

/* Take n out again after a refused add: state, edge, facts. */
static void
add_child_undo(struct ng_node *p, struct ng_node *n, struct ng_edge *e)
{
    struct ng_error ignored = { 0 };

    if (p->driver->del_child(p, n->name, false, &ignored) != NULL)
        ng_edge_detach(e);
    ng_node_refresh(p, &ignored);
}

static int
add_child(struct ng_graph *g, struct ng_node *p, struct ng_node *n,
          struct ng_error *err)
{
    struct bbs_before before = { 0 };
    struct ng_chain chain = { .n = 0 };
    struct ng_edge *e;
    unsigned layers;
    int r = -1;

    if (bbs_before_take(g, &before, err) == -1)
        goto out;
    if ((e = ng_edge_attach(p, NULL, n, NG_ROLE_CHILDREN)) == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    layers = ng_depth_above(e, &chain);     /* the chain top first */
    layers += ng_depth_below(n, &chain);
    if (ng_depth_check(&chain, layers, err) == -1 ||
        p->driver->add_child(p, n, false, err) == -1) {
        ng_edge_detach(e);
        goto out;
    }
    if (ng_node_refresh(p, err) == -1 || bbs_check(&before, 0, err) == -1) {
        add_child_undo(p, n, e);
        goto out;
    }
    r = 0;
out:
    bbs_before_free(&before);
    return r;
}

/* Fewer children can only keep or add caps (quorum offers those all
 * its children have) at the same size: nothing a client was told goes. */
static int
del_child(struct ng_node *p, const char *child, struct ng_error *err)
{
    struct ng_node *n = p->driver->del_child(p, child, false, err);
    struct ng_edge *e;

    if (n == NULL)
        return -1;
    if ((e = children_edge(p, n)) != NULL)
        ng_edge_detach(e);
    return ng_node_refresh(p, err);
}

int
ng_graph_change_child(struct ng_graph *g, const char *parent,
                      const char *child, const char *node,
                      struct ng_error *err)
{
    struct ng_node *p = change_child_parent(g, parent, child, node, err);
    struct ng_node *n;

    if (p == NULL)
        return -1;
    if (node == NULL)
        return del_child(p, child, err);
    if ((n = change_child_new(g, p, node, err)) == NULL)
        return -1;
    return add_child(g, p, n, err);
}
