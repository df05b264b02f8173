/* config/plan.c: diff a new config against the live model into an ordered
 * plan of steps (plan.h).  Pure: nothing is opened, nothing runs.
 *
 * Order of the steps: add groups -> add nodes (children first) -> retune
 * nodes and groups -> add, retune or replace exports -> remove exports ->
 * remove nodes (parents first) -> remove groups.  So what a step needs
 * exists before it, and what it stops using goes after it.
 *
 * A filter the control channel spliced in (blockdev-insert-filter) sits
 * between a node and its users; a reference through it counts as a
 * reference to what is below, so a reload does not undo a splice, and a
 * prune takes the filter out (re-linking its users) rather than replacing
 * the export above it.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "config/plan.h"
#include "graph/graph.h"
#include "graph/size.h"
#include "filters/filters.h"

struct plan_ctx {
    const struct ng_config *cfg;
    const struct ng_live *live;
    bool prune;
    struct ng_plan *plan;
    bool *node_gone;            /* by live node index: removed by the plan */
    struct ng_strmap node_idx;  /* cfg's nodes, exports, groups by name */
    struct ng_strmap export_idx;
    struct ng_strmap group_idx;
};

static const char *const kind_names[] = {
    [NG_STEP_CREDS_LOAD] = "load-tls-creds",
    [NG_STEP_LISTEN_ADD] = "add-listen",
    [NG_STEP_LISTEN_RETUNE] = "retune-listen",
    [NG_STEP_SERVER_RETUNE] = "retune-server",
    [NG_STEP_LISTEN_DEL] = "remove-listen",
    [NG_STEP_GROUP_ADD] = "add-group",
    [NG_STEP_NODE_ADD] = "add-node",
    [NG_STEP_NODE_RETUNE] = "retune-node",
    [NG_STEP_BITMAP_ADD] = "add-bitmap",
    [NG_STEP_GROUP_RETUNE] = "retune-group",
    [NG_STEP_EXPORT_ADD] = "add-export",
    [NG_STEP_EXPORT_RETUNE] = "retune-export",
    [NG_STEP_EXPORT_LIMIT] = "retune-export",
    [NG_STEP_EXPORT_REPLACE] = "replace-export",
    [NG_STEP_EXPORT_DEL] = "remove-export",
    [NG_STEP_BITMAP_DEL] = "remove-bitmap",
    [NG_STEP_NODE_DEL] = "remove-node",
    [NG_STEP_GROUP_DEL] = "remove-group",
};

const char *
ng_step_kind_name(enum ng_step_kind kind)
{
    return kind_names[kind];
}

static int
oom(struct ng_error *err)
{
    return ng_error_set(err, ENOMEM, "out of memory");
}

/* ---- Building the plan ------------------------------------------------ */

/* A new step at the end; `object` and `change` copied.  NULL on ENOMEM. */
static struct ng_step *
step_add(struct ng_plan *plan, enum ng_step_kind kind, const char *object,
         const char *change)
{
    struct ng_step *s;

    if (plan->n_steps == plan->cap_steps) {
        size_t cap = plan->cap_steps ? 2 * plan->cap_steps : 16;

        if ((s = realloc(plan->steps, cap * sizeof *s)) == NULL)
            return NULL;
        plan->steps = s;
        plan->cap_steps = cap;
    }
    s = &plan->steps[plan->n_steps];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->object = strdup(object);
    s->change = strdup(change);
    s->exports = strdup("");
    plan->n_steps++;
    if (s->object == NULL || s->change == NULL || s->exports == NULL)
        return NULL;
    return s;
}

static int
kept_add(struct ng_plan *plan, const char *kind, const char *name)
{
    struct ng_not_in_file *k;

    if (plan->n_kept == plan->cap_kept) {
        size_t cap = plan->cap_kept ? 2 * plan->cap_kept : 16;

        if ((k = realloc(plan->kept, cap * sizeof *k)) == NULL)
            return -1;
        plan->kept = k;
        plan->cap_kept = cap;
    }
    k = &plan->kept[plan->n_kept];
    k->kind = kind;
    if ((k->name = strdup(name)) == NULL)
        return -1;
    plan->n_kept++;
    return 0;
}

void
ng_plan_free(struct ng_plan *plan)
{
    size_t i;

    if (plan == NULL)
        return;
    for (i = 0; i < plan->n_steps; i++) {
        struct ng_step *s = &plan->steps[i];

        free(s->object);
        free(s->target);
        ng_value_free(s->new_opts);
        ng_value_free(s->old_opts);
        free(s->change);
        free(s->exports);
    }
    for (i = 0; i < plan->n_kept; i++)
        free(plan->kept[i].name);
    free(plan->steps);
    free(plan->kept);
    free(plan->adopt_nodes);
    free(plan->adopt_exports);
    free(plan->adopt_groups);
    free(plan);
}

/* ---- Lookups in the new config ------------------------------------------ */

/* The config's nodes, exports and groups each start with their `char
 * *name`: plan_ctx maps each name to its entry (names are unique: the
 * loader refuses duplicates).  Returns -1 on ENOMEM. */
static int
index_by_name(struct ng_strmap *idx, const void *v, size_t n, size_t size)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const char *entry = (const char *)v + i * size;

        if (ng_strmap_put(idx, *(char *const *)entry, (void *)entry) == -1)
            return -1;
    }
    return 0;
}

static const void *
index_find(const struct ng_strmap *idx, const char *name)
{
    return ng_strmap_get(idx, name);
}

static const struct ng_node_cfg *
cfg_node(const struct plan_ctx *c, const char *name)
{
    return index_find(&c->node_idx, name);
}

static const struct ng_export_cfg *
cfg_export(const struct plan_ctx *c, const char *id)
{
    return index_find(&c->export_idx, id);
}

static const struct ng_group_cfg *
cfg_group(const struct plan_ctx *c, const char *name)
{
    return index_find(&c->group_idx, name);
}

/* ---- Options ------------------------------------------------------------ */

static const struct ng_driver *
driver_of(const struct ng_value *opts)
{
    const struct ng_value *v = ng_value_get(opts, "driver");

    if (v == NULL || v->kind != NG_VALUE_SCALAR)
        return NULL;
    return ng_driver_find(ng_all_drivers, v->text);
}

static const struct ng_opt_desc *
opt_desc(const struct ng_driver *drv, const char *key)
{
    const struct ng_opt_desc *d;

    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (strcmp(d->name, key) == 0)
            return d;
    return NULL;
}

/* A filter the control channel made and the file does not name: kept,
 * or (prune) taken out with its users re-linked to its child, so either
 * way a reference through it counts as a reference to its child. */
static bool
is_splice(const struct plan_ctx *c, const struct ng_live_node *n)
{
    const struct ng_driver *drv = driver_of(n->opts);

    return !n->from_file && drv != NULL &&
           (drv->is_filter || drv->multi_child_filter) &&
           cfg_node(c, n->name) == NULL;
}

/* The filter's child: the one it was spliced in over, else the value of
 * its one child option. */
static const char *
filter_child(const struct ng_live_node *n)
{
    const struct ng_driver *drv = driver_of(n->opts);
    const struct ng_opt_desc *d;
    const struct ng_value *v;

    if (n->over != NULL)
        return n->over;
    for (d = drv->opts; d != NULL && d->name != NULL; d++) {
        if (d->type != NG_OPT_T_CHILD)
            continue;
        v = ng_value_get(n->opts, d->name);
        if (v != NULL && v->kind == NG_VALUE_SCALAR && !v->is_null)
            return v->text;
    }
    return NULL;
}

/* `name` with kept splices skipped.  Bounded by the node count. */
static const char *
resolve(const struct plan_ctx *c, const char *name)
{
    size_t hops;

    for (hops = 0; name != NULL && hops <= c->live->n_nodes; hops++) {
        const struct ng_live_node *n = ng_live_node(c->live, name);
        const char *child;

        if (n == NULL || !is_splice(c, n) ||
            (child = filter_child(n)) == NULL)
            break;
        name = child;
    }
    return name;
}

/* One option, as a value; the default when absent, NULL when it has
 * none.  *tmp holds a default built here (caller frees). */
static const struct ng_value *
opt_or_default(const struct ng_opt_desc *d, const struct ng_value *opts,
               const char *key, struct ng_value **tmp)
{
    const struct ng_value *v = ng_value_get(opts, key);

    *tmp = NULL;
    if (v != NULL || d == NULL || d->def == NULL)
        return v;
    *tmp = ng_value_new_scalar(d->def, (struct ng_loc){ 0 });
    return *tmp;
}

/* Equal as the driver reads them: sizes and bools by value, children
 * through kept splices, the rest as text. */
static bool
opt_equal(const struct plan_ctx *c, const struct ng_opt_desc *d,
          const struct ng_value *a, const struct ng_value *b)
{
    uint64_t sa, sb;
    bool ba, bb;

    if (a == NULL || b == NULL)
        return a == b;
    if (a->kind == NG_VALUE_SCALAR && b->kind == NG_VALUE_SCALAR &&
        !a->is_null && !b->is_null) {
        if (d != NULL && d->type == NG_OPT_T_SIZE &&
            ng_parse_size(a->text, &sa) == 0 &&
            ng_parse_size(b->text, &sb) == 0)
            return sa == sb;
        if ((d == NULL || d->type == NG_OPT_T_BOOL) &&
            ng_value_to_bool(a, "", &ba, NULL) == 0 &&
            ng_value_to_bool(b, "", &bb, NULL) == 0)
            return ba == bb;
        if (d != NULL && (d->type == NG_OPT_T_CHILD ||
                          d->type == NG_OPT_T_CHILDREN))
            return strcmp(resolve(c, a->text), resolve(c, b->text)) == 0;
    }
    /* A list of children (quorum's), item by item through kept splices. */
    if (d != NULL && d->type == NG_OPT_T_CHILDREN &&
        a->kind == NG_VALUE_LIST && b->kind == NG_VALUE_LIST) {
        if (a->n != b->n)
            return false;
        for (size_t i = 0; i < a->n; i++)
            if (!opt_equal(c, d, a->items[i], b->items[i]))
                return false;
        return true;
    }
    return ng_value_equal(a, b);
}

static bool
key_equal(const struct plan_ctx *c, const struct ng_driver *drv,
          const char *key, const struct ng_value *old,
          const struct ng_value *new)
{
    const struct ng_opt_desc *d = opt_desc(drv, key);
    struct ng_value *ta, *tb;
    const struct ng_value *a = opt_or_default(d, old, key, &ta);
    const struct ng_value *b = opt_or_default(d, new, key, &tb);
    bool eq;

    if (strcmp(key, "read-only") == 0) {
        bool ra = false, rb = false;

        if (a != NULL)
            ng_value_to_bool(a, key, &ra, NULL);
        if (b != NULL)
            ng_value_to_bool(b, key, &rb, NULL);
        eq = ra == rb;
    } else {
        eq = opt_equal(c, d, a, b);
    }
    ng_value_free(ta);
    ng_value_free(tb);
    return eq;
}

/* First key (of either map) whose value differs, from index *i on in the
 * union old-keys-then-new-keys; NULL when none is left. */
static const char *
next_changed_key(const struct plan_ctx *c, const struct ng_driver *drv,
                 const struct ng_value *old, const struct ng_value *new,
                 size_t *i)
{
    /* Most nodes of a big file are unchanged: the same options written
     * the same way differ in no key (defaults, children and read-only
     * compare equal to themselves), so skip the per-key comparison. */
    if (*i == 0 && ng_value_equal(old, new))
        return NULL;
    while (*i < old->n + new->n) {
        size_t k = (*i)++;
        const char *key = k < old->n ? old->keys[k] : new->keys[k - old->n];

        if (k >= old->n && ng_value_get(old, key) != NULL)
            continue;           /* compared with old's keys */
        if (strcmp(key, "bitmaps") == 0)
            continue;           /* not a driver option: plan_bitmaps() */
        if (!key_equal(c, drv, key, old, new))
            return key;
    }
    return NULL;
}

/* ---- Nodes ---------------------------------------------------------------- */

static int
refuse_node_change(const struct ng_node_cfg *nc, const char *key,
                   const char *why, struct ng_error *err)
{
    return ng_value_error(err, &nc->loc, "node '%s': option '%s' %s; give "
                          "the node a new name to replace it, or remove it "
                          "in one reload and add it back in the next",
                          nc->name, key, why);
}

/* The retune step for the changed keys of node `nc` (the driver changes
 * them live), or a refusal. */
static int
node_retune(struct plan_ctx *c, const struct ng_node_cfg *nc,
            const struct ng_live_node *ln, const struct ng_driver *drv,
            struct ng_error *err)
{
    struct ng_value *new_keys = NULL, *old_keys = NULL;
    const char *key, *first = NULL;
    struct ng_step *s;
    size_t i = 0;

    while ((key = next_changed_key(c, drv, ln->opts, nc->opts, &i)) != NULL) {
        const struct ng_opt_desc *d = opt_desc(drv, key);
        const struct ng_value *ov = ng_value_get(ln->opts, key);
        const struct ng_value *nv = ng_value_get(nc->opts, key);

        if (drv->reconfigure == NULL || d == NULL ||
            d->type == NG_OPT_T_CHILD) {
            ng_value_free(new_keys);
            ng_value_free(old_keys);
            return refuse_node_change(nc, key, "cannot change on a live "
                                      "node", err);
        }
        if (ov == NULL || nv == NULL) {
            ng_value_free(new_keys);
            ng_value_free(old_keys);
            return refuse_node_change(nc, key, ov == NULL
                                      ? "cannot be added to a live node"
                                      : "cannot be removed from a live node",
                                      err);
        }
        if (new_keys == NULL) {
            new_keys = ng_value_new_map((struct ng_loc){ 0 });
            old_keys = ng_value_new_map((struct ng_loc){ 0 });
            first = key;
        }
        if (new_keys == NULL || old_keys == NULL ||
            ng_value_map_put(new_keys, key, (struct ng_loc){ 0 },
                             ng_value_copy(nv)) == -1 ||
            ng_value_map_put(old_keys, key, (struct ng_loc){ 0 },
                             ng_value_copy(ov)) == -1) {
            ng_value_free(new_keys);
            ng_value_free(old_keys);
            return oom(err);
        }
    }
    if (new_keys == NULL)
        return 0;
    s = step_add(c->plan, NG_STEP_NODE_RETUNE, nc->name, first);
    if (s == NULL) {
        ng_value_free(new_keys);
        ng_value_free(old_keys);
        return oom(err);
    }
    s->loc = nc->loc;
    s->new_opts = new_keys;
    s->old_opts = old_keys;
    return 0;
}

static int
node_changed(struct plan_ctx *c, const struct ng_node_cfg *nc,
             const struct ng_live_node *ln, struct ng_error *err)
{
    const struct ng_driver *drv;

    /* Most nodes of a big file: written as before, nothing to do. */
    if (ng_value_equal(ln->opts, nc->opts))
        return 0;
    if ((drv = driver_of(nc->opts)) == NULL)
        return ng_value_error(err, &nc->loc, "node '%s': unknown driver",
                              nc->name);
    if (driver_of(ln->opts) != drv)
        return refuse_node_change(nc, "driver", "cannot change on a live "
                                  "node", err);
    if (ln->held_by != NULL && next_changed_key(c, drv, ln->opts, nc->opts,
                                                &(size_t){ 0 }) != NULL)
        return ng_value_error(err, &nc->loc, "node '%s' is in use by job "
                              "'%s'; wait for it to end or cancel it, then "
                              "reload", nc->name, ln->held_by);
    return node_retune(c, nc, ln, drv, err);
}

/* ---- Dirty bitmaps (a node's bitmaps:) ------------------------------------ */

/* The entry of `opts`'s bitmaps: named `name` into *out; false when
 * there is none. */
static bool
bitmap_find(const struct ng_value *opts, const char *name,
            struct ng_node_bitmap_cfg *out)
{
    size_t i, n = ng_node_bitmaps_count(opts);

    for (i = 0; i < n; i++)
        if (ng_node_bitmap_get(opts, i, out, NULL) == 0 &&
            strcmp(out->name, name) == 0)
            return true;
    return false;
}

/* { bitmaps: [ a copy of entry ] }, or NULL on ENOMEM. */
static struct ng_value *
one_bitmap(const struct ng_value *entry)
{
    struct ng_value *map = ng_value_new_map((struct ng_loc){ 0 });
    struct ng_value *list = ng_value_new_list((struct ng_loc){ 0 });
    struct ng_value *copy = ng_value_copy(entry);

    if (map == NULL || list == NULL || copy == NULL ||
        ng_value_list_append(list, copy) == -1) {
        ng_value_free(map);
        ng_value_free(list);
        return NULL;
    }
    if (ng_value_map_put(map, "bitmaps", (struct ng_loc){ 0 }, list) == -1) {
        ng_value_free(map);
        return NULL;
    }
    return map;
}

/* A bitmap of live node `ln` the file does not name, made by the
 * control channel: kept and listed as "not in the file" (as nodes made
 * live are) unless the reload prunes.  True when kept. */
static bool
bitmap_kept(struct plan_ctx *c, const struct ng_live_node *ln,
            const char *name, struct ng_error *err, int *rc)
{
    char what[NG_ERROR_MSG_MAX];

    *rc = 0;
    if (c->prune || !ng_live_node_bitmap_is_live(ln, name))
        return false;
    snprintf(what, sizeof what, "%s/%s", ln->name, name);
    if (kept_add(c->plan, "dirty bitmap", what) == -1)
        *rc = oom(err);
    return true;
}

/* The bitmaps `from` declares and `to` does not, as steps of `kind` on
 * node `node`: added (from the file) or removed (from the live model
 * `ln`, NULL for BITMAP_ADD). */
static int
bitmap_steps(struct plan_ctx *c, enum ng_step_kind kind, const char *node,
             const struct ng_live_node *ln, const struct ng_value *from,
             const struct ng_value *to, const struct ng_loc *loc,
             struct ng_error *err)
{
    int rc;

    size_t i, n = ng_node_bitmaps_count(from);
    struct ng_node_bitmap_cfg b, t;
    char change[NG_ERROR_MSG_MAX];
    struct ng_step *s;
    struct ng_value *one;

    for (i = 0; i < n; i++) {
        if (ng_node_bitmap_get(from, i, &b, NULL) == -1)
            continue;
        if (bitmap_find(to, b.name, &t)) {
            if (b.granularity != t.granularity || b.disabled != t.disabled)
                return ng_value_error(err, loc, "node '%s': dirty bitmap "
                                      "'%s' cannot change its granularity "
                                      "or disabled on a reload; give it a "
                                      "new name, or remove it in one reload "
                                      "and add it back in the next (or use "
                                      "block-dirty-bitmap-enable/-disable)",
                                      node, b.name);
            continue;
        }
        if (ln != NULL && bitmap_kept(c, ln, b.name, err, &rc)) {
            if (rc == -1)
                return -1;
            continue;
        }
        snprintf(change, sizeof change, "dirty bitmap '%s' %s", b.name,
                 kind == NG_STEP_BITMAP_ADD ? "added" : "removed");
        one = one_bitmap(ng_value_get(from, "bitmaps")->items[i]);
        if (one == NULL || (s = step_add(c->plan, kind, node,
                                         change)) == NULL) {
            ng_value_free(one);
            return oom(err);
        }
        if (kind == NG_STEP_BITMAP_ADD) {
            s->new_opts = one;
            s->loc = *loc;
        } else {
            s->old_opts = one;
        }
        if ((s->target = strdup(b.name)) == NULL)
            return oom(err);
    }
    return 0;
}

/* Bitmaps the file adds to nodes that stay, or (kind BITMAP_DEL) takes
 * from them. */
static int
plan_bitmaps(struct plan_ctx *c, enum ng_step_kind kind, struct ng_error *err)
{
    const struct ng_node_cfg *nc;
    const struct ng_live_node *ln;
    size_t i;

    /* Only nodes with bitmaps on the side they are taken from are looked
     * up on the other. */
    for (i = 0; kind == NG_STEP_BITMAP_ADD && i < c->cfg->n_nodes; i++) {
        nc = &c->cfg->nodes[i];
        if (ng_node_bitmaps_count(nc->opts) > 0 &&
            (ln = ng_live_node(c->live, nc->name)) != NULL &&
            bitmap_steps(c, kind, nc->name, NULL, nc->opts, ln->opts,
                         &nc->loc, err) == -1)
            return -1;
    }
    for (i = 0; kind == NG_STEP_BITMAP_DEL && i < c->live->n_nodes; i++) {
        ln = &c->live->nodes[i];
        if (ng_node_bitmaps_count(ln->opts) > 0 &&
            (nc = cfg_node(c, ln->name)) != NULL &&
            bitmap_steps(c, kind, nc->name, ln, ln->opts, nc->opts,
                         &nc->loc, err) == -1)
            return -1;
    }
    return 0;
}

static int
plan_add_and_retune_nodes(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;
    struct ng_step *s;

    for (i = 0; i < c->cfg->n_nodes; i++) {
        const struct ng_node_cfg *nc = &c->cfg->nodes[i];
        const struct ng_live_node *ln = ng_live_node(c->live, nc->name);

        if (ln != NULL)
            continue;
        if ((s = step_add(c->plan, NG_STEP_NODE_ADD, nc->name,
                          "added")) == NULL ||
            (s->new_opts = ng_value_copy(nc->opts)) == NULL)
            return oom(err);
        s->loc = nc->loc;
    }
    for (i = 0; i < c->cfg->n_nodes; i++) {
        const struct ng_node_cfg *nc = &c->cfg->nodes[i];
        const struct ng_live_node *ln = ng_live_node(c->live, nc->name);

        if (ln != NULL && node_changed(c, nc, ln, err) == -1)
            return -1;
    }
    return 0;
}

/* ---- Groups --------------------------------------------------------------- */

static int
plan_groups(struct plan_ctx *c, enum ng_step_kind kind, struct ng_error *err)
{
    const struct ng_config *cfg = c->cfg;
    struct ng_step *s;
    size_t i;

    for (i = 0; kind != NG_STEP_GROUP_DEL && i < cfg->n_groups; i++) {
        const struct ng_group_cfg *gc = &cfg->groups[i];
        const struct ng_live_group *lg = ng_live_group(c->live, gc->name);

        if (kind == NG_STEP_GROUP_ADD ? lg != NULL
            : lg == NULL || ng_value_equal(lg->limits, gc->limits))
            continue;
        s = step_add(c->plan, kind, gc->name, kind == NG_STEP_GROUP_ADD
                     ? "added" : "limits");
        if (s == NULL || (s->new_opts = ng_value_copy(gc->limits)) == NULL ||
            (lg != NULL && (s->old_opts = ng_value_copy(lg->limits)) == NULL))
            return oom(err);
    }
    for (i = 0; kind == NG_STEP_GROUP_DEL && i < c->live->n_groups; i++) {
        const struct ng_live_group *lg = &c->live->groups[i];

        if (cfg_group(c, lg->name) != NULL)
            continue;
        if (!lg->from_file && !c->prune) {
            if (kept_add(c->plan, "throttle group", lg->name) == -1)
                return oom(err);
            continue;
        }
        s = step_add(c->plan, kind, lg->name, "removed");
        if (s == NULL || (s->old_opts = ng_value_copy(lg->limits)) == NULL)
            return oom(err);
    }
    return 0;
}

/* ---- Exports -------------------------------------------------------------- */

/* The exports (IDs) whose node is `node`, and their clients. */
static int
affected_exports(const struct plan_ctx *c, struct ng_step *s,
                 const char *node)
{
    char buf[NG_ERROR_MSG_MAX] = "";
    size_t i, used = 0;

    for (i = 0; i < c->live->n_exports; i++) {
        const struct ng_live_export *e = &c->live->exports[i];
        const struct ng_value *v = ng_value_get(e->opts, "node");

        if (v == NULL || strcmp(resolve(c, v->text), node) != 0)
            continue;
        if (used < sizeof buf)
            used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s",
                                     used ? ", " : "", e->id);
        s->clients += e->clients;
    }
    free(s->exports);
    s->exports = strdup(buf);
    return s->exports != NULL ? 0 : -1;
}

static const char *
canon_text(const struct ng_value *canon, const char *key)
{
    const struct ng_value *v = ng_value_get(canon, key);

    return v != NULL && v->kind == NG_VALUE_SCALAR ? v->text : NULL;
}

/* The implicit filter a changed key lives in, when it changes live:
 * throttle limits, the throttle group, the detect-zeroes mode. */
static int
export_live_key(const char *key, const struct ng_value *old,
                const struct ng_value *new, const char **driver,
                const char **opt)
{
    bool both = ng_value_get(old, key) != NULL &&
                ng_value_get(new, key) != NULL;

    *driver = *opt = NULL;
    if (!both)
        return -1;
    if (strcmp(key, "throttle") == 0) {
        *driver = "throttle";
        *opt = "limits";
    } else if (strcmp(key, "throttle-group") == 0) {
        *driver = "throttle";
        *opt = "throttle-group";
    } else if (strcmp(key, "detect-zeroes") == 0) {
        *driver = "detect-zeroes";
        *opt = "mode";
    }
    return *driver != NULL ? 0 : -1;
}

static int
export_retune_step(struct plan_ctx *c, const char *id, const char *key,
                   const struct ng_value *old, const struct ng_value *new,
                   unsigned clients, struct ng_loc loc, struct ng_error *err)
{
    const char *driver, *opt;
    struct ng_step *s;
    char target[256];

    export_live_key(key, old, new, &driver, &opt);
    snprintf(target, sizeof target, "%s.%s", id, driver);
    s = step_add(c->plan, NG_STEP_EXPORT_RETUNE, id, key);
    if (s != NULL)
        s->loc = loc;
    if (s == NULL || (s->target = strdup(target)) == NULL ||
        (s->new_opts = ng_value_new_map((struct ng_loc){ 0 })) == NULL ||
        (s->old_opts = ng_value_new_map((struct ng_loc){ 0 })) == NULL ||
        ng_value_map_put(s->new_opts, opt, (struct ng_loc){ 0 },
                         ng_value_copy(ng_value_get(new, key))) == -1 ||
        ng_value_map_put(s->old_opts, opt, (struct ng_loc){ 0 },
                         ng_value_copy(ng_value_get(old, key))) == -1)
        return oom(err);
    free(s->exports);
    s->exports = strdup(id);
    s->clients = clients;
    return s->exports != NULL ? 0 : oom(err);
}

/* max-connections (canonical: absent = no limit) as text, "0" = none. */
static const char *
max_connections_text(const struct ng_value *canon)
{
    const char *t = canon_text(canon, "max-connections");

    return t != NULL ? t : "0";
}

/* max-connections changes on the export itself, given or not before. */
static int
export_limit_step(struct plan_ctx *c, const char *id,
                  const struct ng_value *old, const struct ng_value *new,
                  unsigned clients, struct ng_loc loc, struct ng_error *err)
{
    char change[64];
    struct ng_step *s;

    /* As retune-server says it: "max-connections 3 -> 1" (0: none). */
    snprintf(change, sizeof change, "max-connections %s -> %s",
             max_connections_text(old), max_connections_text(new));
    s = step_add(c->plan, NG_STEP_EXPORT_LIMIT, id, change);
    if (s != NULL)
        s->loc = loc;
    if (s == NULL ||
        (s->new_opts = ng_value_new_map((struct ng_loc){ 0 })) == NULL ||
        (s->old_opts = ng_value_new_map((struct ng_loc){ 0 })) == NULL ||
        ng_value_map_put(s->new_opts, "max-connections", (struct ng_loc){ 0 },
                         ng_value_new_scalar(max_connections_text(new),
                                             (struct ng_loc){ 0 })) == -1 ||
        ng_value_map_put(s->old_opts, "max-connections", (struct ng_loc){ 0 },
                         ng_value_new_scalar(max_connections_text(old),
                                             (struct ng_loc){ 0 })) == -1)
        return oom(err);
    free(s->exports);
    s->exports = strdup(id);
    s->clients = clients;
    return s->exports != NULL ? 0 : oom(err);
}

/* A changed `key` of an export that a step changes live. */
static bool
export_key_live(const char *key, const struct ng_value *old,
                const struct ng_value *new)
{
    const char *driver, *opt;

    return strcmp(key, "max-connections") == 0 ||
           export_live_key(key, old, new, &driver, &opt) == 0;
}

/* `key` differs between the live export and the file's. */
static bool
export_key_differs(const struct plan_ctx *c, const char *key,
                   const struct ng_value *old, const struct ng_value *new)
{
    if (strcmp(key, "node") == 0) {
        const char *a = canon_text(old, key), *b = canon_text(new, key);

        return a == NULL || b == NULL ||
               strcmp(resolve(c, a), b) != 0;
    }
    return !ng_value_equal(ng_value_get(old, key), ng_value_get(new, key));
}

static int
export_changed(struct plan_ctx *c, const struct ng_export_cfg *ec,
               const struct ng_live_export *le, const struct ng_value *new,
               struct ng_error *err)
{
    static const char *const keys[] = {
        "node", "name", "writable", "description", "throttle",
        "throttle-group", "copy-on-read", "detect-zeroes", "allow",
        "allocation-depth", "bitmaps", "max-connections", NULL,
    };
    const char *replace_key = NULL, *node;
    struct ng_step *s;
    size_t i;

    /* The common case in a big file: written as before, on a node no
     * splice moved (then "node" compares through resolve()). */
    if (ng_value_equal(le->opts, new) &&
        (node = canon_text(le->opts, "node")) != NULL &&
        resolve(c, node) == node)
        return 0;
    for (i = 0; keys[i] != NULL && replace_key == NULL; i++)
        if (export_key_differs(c, keys[i], le->opts, new) &&
            !export_key_live(keys[i], le->opts, new))
            replace_key = keys[i];
    if (replace_key == NULL) {
        for (i = 0; keys[i] != NULL; i++) {
            if (!export_key_differs(c, keys[i], le->opts, new))
                continue;
            if ((strcmp(keys[i], "max-connections") == 0
                 ? export_limit_step(c, ec->name, le->opts, new,
                                     le->clients, ec->loc, err)
                 : export_retune_step(c, ec->name, keys[i], le->opts, new,
                                      le->clients, ec->loc, err)) == -1)
                return -1;
        }
        return 0;
    }
    if (le->clients > 0)
        return ng_value_error(err, &ec->loc, "export '%s': changing '%s' "
                              "removes the export and adds it again, which "
                              "would disconnect its %u client(s); disconnect "
                              "them first, then reload", ec->name,
                              replace_key, le->clients);
    s = step_add(c->plan, NG_STEP_EXPORT_REPLACE, ec->name, replace_key);
    if (s != NULL)
        s->loc = ec->loc;
    if (s == NULL || (s->new_opts = ng_value_copy(new)) == NULL ||
        (s->old_opts = ng_value_copy(le->opts)) == NULL)
        return oom(err);
    free(s->exports);
    return (s->exports = strdup(ec->name)) != NULL ? 0 : oom(err);
}

static int
plan_add_and_change_exports(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < c->cfg->n_exports; i++) {
        const struct ng_export_cfg *ec = &c->cfg->exports[i];
        const struct ng_live_export *le = ng_live_export(c->live, ec->name);
        struct ng_step *s;
        int r = 0;

        if (le != NULL) {
            r = export_changed(c, ec, le, ec->canon, err);
        } else if ((s = step_add(c->plan, NG_STEP_EXPORT_ADD, ec->name,
                                 "added")) == NULL ||
                   (s->new_opts = ng_value_copy(ec->canon)) == NULL) {
            r = oom(err);
        } else {
            s->loc = ec->loc;
            free(s->exports);
            if ((s->exports = strdup(ec->name)) == NULL)
                r = oom(err);
        }
        if (r == -1)
            return -1;
    }
    return 0;
}

static int
plan_del_exports(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;
    struct ng_step *s;

    for (i = 0; i < c->live->n_exports; i++) {
        const struct ng_live_export *le = &c->live->exports[i];

        if (cfg_export(c, le->id) != NULL)
            continue;
        if (!le->from_file && !c->prune) {
            if (kept_add(c->plan, "export", le->id) == -1)
                return oom(err);
            continue;
        }
        if (le->clients > 0)
            return ng_error_set(err, EBUSY, "%s: export '%s' has %u "
                                "client(s) connected and removing it would "
                                "disconnect them; disconnect them first, "
                                "then reload", c->cfg->file, le->id,
                                le->clients);
        s = step_add(c->plan, NG_STEP_EXPORT_DEL, le->id, "removed");
        if (s == NULL || (s->old_opts = ng_value_copy(le->opts)) == NULL)
            return oom(err);
        free(s->exports);
        if ((s->exports = strdup(le->id)) == NULL)
            return oom(err);
    }
    return 0;
}

/* ---- Removing nodes ------------------------------------------------------- */

/* Live nodes the plan removes: from the file and no longer in it, or made
 * by the control channel when pruning. */
static int
mark_gone_nodes(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < c->live->n_nodes; i++) {
        const struct ng_live_node *ln = &c->live->nodes[i];

        if (cfg_node(c, ln->name) != NULL)
            continue;
        if (!ln->from_file && !c->prune) {
            if (kept_add(c->plan, "node", ln->name) == -1)
                return oom(err);
            continue;
        }
        if (ln->held_by != NULL)
            return ng_error_set(err, EBUSY, "%s: node '%s' is in use by "
                                "job '%s'; wait for it to end or cancel it, "
                                "then reload", c->cfg->file, ln->name,
                                ln->held_by);
        c->node_gone[i] = true;
    }
    return 0;
}

struct ref_check {
    const struct plan_ctx *c;
    const char *user;           /* the node whose options name refs */
    const char *gone;           /* first gone node it names, or NULL */
};

static void
check_ref(void *opaque, const char *ref, const struct ng_loc *loc)
{
    struct ref_check *rc = opaque;
    const struct ng_live *live = rc->c->live;
    const struct ng_live_node *n = ng_live_node(live, ref);

    (void)loc;
    if (rc->gone == NULL && n != NULL && rc->c->node_gone[n - live->nodes])
        rc->gone = n->name;
}

/* A node the plan keeps (a control-channel one, not pruned) or an export
 * it keeps must not name one it removes. */
static int
check_gone_unused(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < c->live->n_nodes; i++) {
        const struct ng_live_node *ln = &c->live->nodes[i];
        struct ref_check rc = { .c = c, .user = ln->name };

        if (c->node_gone[i] || cfg_node(c, ln->name) != NULL)
            continue;
        ng_node_opts_check(ng_all_drivers, ln->opts, check_ref, &rc, NULL);
        if (rc.gone != NULL)
            return ng_error_set(err, EBUSY, "%s: node '%s' is not in the "
                                "file but node '%s' (not in the file either) "
                                "uses it; reload with prune to remove both, "
                                "or remove '%s' first", c->cfg->file,
                                rc.gone, ln->name, ln->name);
    }
    for (i = 0; i < c->live->n_exports; i++) {
        const struct ng_live_export *le = &c->live->exports[i];
        const char *node = canon_text(le->opts, "node");
        const struct ng_live_node *n = node ? ng_live_node(c->live, node)
                                            : NULL;

        if (n == NULL || !c->node_gone[n - c->live->nodes] ||
            cfg_export(c, le->id) != NULL || le->from_file || c->prune)
            continue;
        return ng_error_set(err, EBUSY, "%s: node '%s' is not in the file "
                            "but export '%s' (not in the file either) uses "
                            "it; reload with prune to remove both, or "
                            "remove the export first", c->cfg->file,
                            n->name, le->id);
    }
    return 0;
}

/* References between gone nodes: edge k goes from user[k] to used[k]
 * (live node indexes). */
struct gone_refs {
    const struct plan_ctx *c;
    size_t from;
    size_t *user, *used;
    size_t n, cap;
    bool oom;
};

static void
record_gone_ref(void *opaque, const char *ref, const struct ng_loc *loc)
{
    struct gone_refs *g = opaque;
    const struct ng_live *live = g->c->live;
    const struct ng_live_node *n = ng_live_node(live, ref);
    size_t *u, *d;

    (void)loc;
    if (n == NULL || !g->c->node_gone[n - live->nodes] || g->oom)
        return;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 16;

        u = realloc(g->user, cap * sizeof *u);
        if (u != NULL)
            g->user = u;
        d = u != NULL ? realloc(g->used, cap * sizeof *d) : NULL;
        if (d == NULL) {
            g->oom = true;
            return;
        }
        g->used = d;
        g->cap = cap;
    }
    g->user[g->n] = g->from;
    g->used[g->n++] = (size_t)(n - live->nodes);
}

/* Parents before children (Kahn): a gone node is removed once every gone
 * node naming it is. */
static int
emit_del_steps(struct plan_ctx *c, struct gone_refs *g, size_t *users)
{
    size_t n = c->live->n_nodes, left = 0, i, k;
    bool progress = true;
    struct ng_step *s;

    for (i = 0; i < n; i++)
        left += c->node_gone[i];
    while (left > 0 && progress) {
        progress = false;
        for (i = 0; i < n; i++) {
            const struct ng_live_node *ln = &c->live->nodes[i];

            if (!c->node_gone[i] || users[i] != 0)
                continue;
            s = step_add(c->plan, NG_STEP_NODE_DEL, ln->name, "removed");
            if (s == NULL || (s->old_opts = ng_value_copy(ln->opts)) == NULL)
                return -1;
            users[i] = SIZE_MAX;            /* emitted */
            for (k = 0; k < g->n; k++)
                if (g->user[k] == i)
                    users[g->used[k]]--;
            progress = true;
            left--;
        }
    }
    return 0;
}

static int
plan_del_nodes(struct plan_ctx *c, struct ng_error *err)
{
    size_t n = c->live->n_nodes, i, k;
    struct gone_refs g = { .c = c };
    size_t *users = calloc(n ? n : 1, sizeof *users);
    int r = 0;

    if (users == NULL)
        return oom(err);
    for (i = 0; i < n && !g.oom; i++) {
        if (!c->node_gone[i])
            continue;
        g.from = i;
        ng_node_opts_check(ng_all_drivers, c->live->nodes[i].opts,
                           record_gone_ref, &g, NULL);
    }
    for (k = 0; k < g.n; k++)
        users[g.used[k]]++;
    if (g.oom || emit_del_steps(c, &g, users) == -1)
        r = oom(err);
    free(users);
    free(g.user);
    free(g.used);
    return r;
}

/* ---- server: -------------------------------------------------------------- */

const struct ng_listen_cfg *
ng_config_find_listen(const struct ng_config *cfg, const char *text)
{
    size_t i;

    for (i = 0; cfg != NULL && i < cfg->n_listen; i++)
        if (strcmp(cfg->listen[i].text, text) == 0)
            return &cfg->listen[i];
    return NULL;
}

const struct ng_tls_creds_cfg *
ng_config_find_tls_creds(const struct ng_config *cfg, const char *name)
{
    size_t i;

    for (i = 0; cfg != NULL && name != NULL && i < cfg->n_tls_creds; i++)
        if (strcmp(cfg->tls_creds[i].name, name) == 0)
            return &cfg->tls_creds[i];
    return NULL;
}

static bool
creds_same(const struct ng_tls_creds_cfg *a, const struct ng_tls_creds_cfg *b)
{
    return a != NULL && b != NULL && a->psk == b->psk &&
           a->verify_peer == b->verify_peer && a->client == b->client &&
           strcmp(a->dir, b->dir) == 0 &&
           (a->username == NULL) == (b->username == NULL) &&
           (a->username == NULL || strcmp(a->username, b->username) == 0);
}

static bool
str_same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static const char *
tls_mode_name(enum ng_tls_mode mode)
{
    return mode == NG_TLS_REQUIRE ? "require"
           : mode == NG_TLS_ALLOW ? "allow" : "off";
}

/* The control socket carries this reload; moving it is a restart. */
static int
check_control(const struct plan_ctx *c, struct ng_error *err)
{
    const struct ng_config *cfg = c->cfg, *old = c->live->server;

    if (!str_same(c->live->control, cfg->control))
        return ng_value_error(err, cfg->control != NULL ? &cfg->control_loc
                                                        : &cfg->doc->loc,
                              "server: 'control' cannot change on reload "
                              "(this reload came through it); restart "
                              "nbdgraphd to move it");
    if (old != NULL && !str_same(old->control_group, cfg->control_group))
        return ng_value_error(err, cfg->control_group != NULL
                              ? &cfg->control_group_loc : &cfg->doc->loc,
                              "server: 'control-group' cannot change on "
                              "reload (the control socket is made once); "
                              "restart nbdgraphd, or chgrp the socket");
    return 0;
}

/* Credentials that are new or defined differently: read again. */
static int
plan_creds(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < c->cfg->n_tls_creds; i++) {
        const struct ng_tls_creds_cfg *tc = &c->cfg->tls_creds[i];
        const struct ng_tls_creds_cfg *old =
            ng_config_find_tls_creds(c->live->server, tc->name);
        struct ng_step *s;

        if (creds_same(tc, old))
            continue;
        s = step_add(c->plan, NG_STEP_CREDS_LOAD, tc->name,
                     old == NULL ? "added" : "changed: read again; new "
                     "clients get the new ones");
        if (s == NULL)
            return oom(err);
        s->loc = tc->loc;
    }
    return 0;
}

/* New addresses, and TLS changes of kept ones. */
static int
plan_listen_add(struct plan_ctx *c, struct ng_error *err)
{
    char change[256];
    size_t i;

    for (i = 0; i < c->cfg->n_listen; i++) {
        const struct ng_listen_cfg *l = &c->cfg->listen[i];
        const struct ng_listen_cfg *old =
            ng_config_find_listen(c->live->server, l->text);
        enum ng_step_kind kind = NG_STEP_LISTEN_ADD;
        struct ng_step *s;

        if (old == NULL) {
            snprintf(change, sizeof change, "added (tls: %s)",
                     tls_mode_name(l->tls));
        } else if (old->tls != l->tls ||
                   !str_same(old->tls_creds, l->tls_creds)) {
            kind = NG_STEP_LISTEN_RETUNE;
            snprintf(change, sizeof change, "tls: %s -> %s, for new "
                     "clients", tls_mode_name(old->tls),
                     tls_mode_name(l->tls));
        } else {
            continue;   /* reloaded credentials reach it by the swap */
        }
        if ((s = step_add(c->plan, kind, l->text, change)) == NULL)
            return oom(err);
        s->loc = l->loc;
    }
    return 0;
}

static void
append_limit(char *buf, size_t size, const char *key, uint64_t old,
             uint64_t new)
{
    size_t used = strlen(buf);

    if (old != new)
        snprintf(buf + used, size - used, "%s%s %" PRIu64 " -> %" PRIu64,
                 used ? ", " : "", key, old, new);
}

/* The server's limits; 0 (not set) is the default of each. */
static int
plan_limits(struct plan_ctx *c, struct ng_error *err)
{
    const struct ng_config *cfg = c->cfg, *old = c->live->server;
    char change[256] = "";

    if (old == NULL)
        return 0;
    append_limit(change, sizeof change, "max-connections",
                 old->max_connections, cfg->max_connections);
    append_limit(change, sizeof change, "idle-timeout",
                 old->idle_timeout, cfg->idle_timeout);
    append_limit(change, sizeof change, "max-request", old->max_request,
                 cfg->max_request);
    append_limit(change, sizeof change, "poll-max-ns", old->poll_max_ns,
                 cfg->poll_max_ns);
    if (change[0] != '\0' &&
        step_add(c->plan, NG_STEP_SERVER_RETUNE, "server", change) == NULL)
        return oom(err);
    return 0;
}

/* Addresses the file no longer names: last, once all else is in. */
static int
plan_listen_del(struct plan_ctx *c, struct ng_error *err)
{
    const struct ng_config *old = c->live->server;
    size_t i;

    for (i = 0; old != NULL && i < old->n_listen; i++)
        if (ng_config_find_listen(c->cfg, old->listen[i].text) == NULL &&
            step_add(c->plan, NG_STEP_LISTEN_DEL, old->listen[i].text,
                     "removed (its clients stay connected)") == NULL)
            return oom(err);
    return 0;
}

/* ---- What the file takes over ---------------------------------------------- */

/* The model's entries that are not (wholly) the file's and that the file
 * names, found on the planning worker so that the loop's turn applying
 * the plan walks only these, not the whole file.  Entries the plan adds
 * are the file's already; those it removes are not found after it. */
static int
plan_adopt(struct plan_ctx *c, struct ng_error *err)
{
    const struct ng_live *live = c->live;
    struct ng_plan *p = c->plan;
    const struct ng_node_cfg *nc;
    size_t i;

    p->adopt_nodes = calloc(live->n_nodes + 1, sizeof *p->adopt_nodes);
    p->adopt_exports = calloc(live->n_exports + 1,
                              sizeof *p->adopt_exports);
    p->adopt_groups = calloc(live->n_groups + 1, sizeof *p->adopt_groups);
    if (p->adopt_nodes == NULL || p->adopt_exports == NULL ||
        p->adopt_groups == NULL)
        return oom(err);
    for (i = 0; i < live->n_nodes; i++) {
        const struct ng_live_node *ln = &live->nodes[i];

        if ((!ln->from_file || ln->n_live_bitmaps > 0) &&
            (nc = cfg_node(c, ln->name)) != NULL)
            p->adopt_nodes[p->n_adopt_nodes++] = nc;
    }
    for (i = 0; i < live->n_exports; i++)
        if (!live->exports[i].from_file &&
            cfg_export(c, live->exports[i].id) != NULL)
            p->adopt_exports[p->n_adopt_exports++] =
                cfg_export(c, live->exports[i].id)->name;
    for (i = 0; i < live->n_groups; i++)
        if (!live->groups[i].from_file &&
            cfg_group(c, live->groups[i].name) != NULL)
            p->adopt_groups[p->n_adopt_groups++] =
                cfg_group(c, live->groups[i].name)->name;
    return 0;
}

/* ---- The whole plan -------------------------------------------------------- */

static int
fill_affected(struct plan_ctx *c, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < c->plan->n_steps; i++) {
        struct ng_step *s = &c->plan->steps[i];

        if ((s->kind == NG_STEP_NODE_RETUNE || s->kind == NG_STEP_NODE_DEL ||
             s->kind == NG_STEP_BITMAP_ADD || s->kind == NG_STEP_BITMAP_DEL) &&
            affected_exports(c, s, s->object) == -1)
            return oom(err);
    }
    return 0;
}

static int
plan_build(struct plan_ctx *c, struct ng_error *err)
{
    bool server = c->live->server != NULL;

    if (check_control(c, err) == -1 ||
        (server && plan_creds(c, err) == -1) ||
        (server && plan_listen_add(c, err) == -1) ||
        (server && plan_limits(c, err) == -1) ||
        mark_gone_nodes(c, err) == -1 ||
        check_gone_unused(c, err) == -1 ||
        plan_groups(c, NG_STEP_GROUP_ADD, err) == -1 ||
        plan_add_and_retune_nodes(c, err) == -1 ||
        plan_bitmaps(c, NG_STEP_BITMAP_ADD, err) == -1 ||
        plan_groups(c, NG_STEP_GROUP_RETUNE, err) == -1 ||
        plan_add_and_change_exports(c, err) == -1 ||
        plan_del_exports(c, err) == -1 ||
        plan_bitmaps(c, NG_STEP_BITMAP_DEL, err) == -1 ||
        plan_del_nodes(c, err) == -1 ||
        plan_groups(c, NG_STEP_GROUP_DEL, err) == -1 ||
        (server && plan_listen_del(c, err) == -1) ||
        plan_adopt(c, err) == -1)
        return -1;
    return fill_affected(c, err);
}

struct ng_plan *
ng_plan_compute(const struct ng_config *cfg, const struct ng_live *live,
                bool prune, struct ng_error *err)
{
    struct plan_ctx c = { .cfg = cfg, .live = live, .prune = prune };

    c.plan = calloc(1, sizeof *c.plan);
    c.node_gone = calloc(live->n_nodes ? live->n_nodes : 1,
                         sizeof *c.node_gone);
    if (c.plan == NULL || c.node_gone == NULL ||
        index_by_name(&c.node_idx, cfg->nodes, cfg->n_nodes,
                      sizeof *cfg->nodes) == -1 ||
        index_by_name(&c.export_idx, cfg->exports, cfg->n_exports,
                      sizeof *cfg->exports) == -1 ||
        index_by_name(&c.group_idx, cfg->groups, cfg->n_groups,
                      sizeof *cfg->groups) == -1) {
        oom(err);
        ng_plan_free(c.plan);
        c.plan = NULL;
    } else if (plan_build(&c, err) == -1) {
        ng_plan_free(c.plan);
        c.plan = NULL;
    }
    free(c.node_gone);
    ng_strmap_clear(&c.node_idx);
    ng_strmap_clear(&c.export_idx);
    ng_strmap_clear(&c.group_idx);
    return c.plan;
}

/* ---- The live model after a step -------------------------------------------- */

/* Merge `keys` into a copy of `opts`. */
static struct ng_value *
merged(const struct ng_value *opts, const struct ng_value *keys)
{
    struct ng_value *out = ng_value_new_map((struct ng_loc){ 0 });
    size_t i;

    for (i = 0; out != NULL && i < opts->n; i++) {
        const struct ng_value *v = ng_value_get(keys, opts->keys[i]);

        if (ng_value_map_put(out, opts->keys[i], (struct ng_loc){ 0 },
                             ng_value_copy(v ? v : opts->items[i])) == -1)
            return NULL;
    }
    return out;
}

/* An export's canonical key for an implicit filter's live option. */
static const char *
export_key_for(const char *target, const char *opt)
{
    const char *dot = strrchr(target, '.');

    if (dot != NULL && strcmp(dot + 1, "detect-zeroes") == 0)
        return "detect-zeroes";
    return strcmp(opt, "limits") == 0 ? "throttle" : opt;
}

static int
apply_export_retune(struct ng_live *live, const struct ng_step *s)
{
    struct ng_live_export *e = ng_live_export(live, s->object);
    struct ng_value *keys, *opts;
    int r;

    if (e == NULL)
        return 0;
    keys = ng_value_new_map((struct ng_loc){ 0 });
    if (keys == NULL ||
        ng_value_map_put(keys, export_key_for(s->target,
                                              s->new_opts->keys[0]),
                         (struct ng_loc){ 0 },
                         ng_value_copy(s->new_opts->items[0])) == -1) {
        ng_value_free(keys);
        return -1;
    }
    opts = merged(e->opts, keys);
    r = opts != NULL ? ng_live_set_export(live, s->object, opts, e->from_file)
                     : -1;
    ng_value_free(opts);
    ng_value_free(keys);
    return r;
}

/* The export's max-connections as the canonical form has it: the
 * number, or no key for no limit. */
static int
apply_export_limit(struct ng_live *live, const struct ng_step *s)
{
    struct ng_live_export *e = ng_live_export(live, s->object);
    const char *n = canon_text(s->new_opts, "max-connections");
    struct ng_value *opts;
    ptrdiff_t k;
    int r;

    if (e == NULL || n == NULL)
        return 0;
    if ((opts = ng_value_copy(e->opts)) == NULL)
        return -1;
    if ((k = ng_value_index(opts, "max-connections")) >= 0)
        ng_value_free(ng_value_map_take(opts, (size_t)k));
    r = strcmp(n, "0") == 0 ? 0
        : ng_value_map_put(opts, "max-connections", (struct ng_loc){ 0 },
                           ng_value_new_scalar(n, (struct ng_loc){ 0 }));
    if (r == 0)
        r = ng_live_set_export(live, s->object, opts, e->from_file);
    ng_value_free(opts);
    return r;
}

/* The live node's bitmaps: gain (add) or lose the entry of step `s`. */
static int
apply_bitmap(struct ng_live *live, const struct ng_step *s, bool add)
{
    struct ng_live_node *n = ng_live_node(live, s->object);

    if (n == NULL)
        return 0;
    if (!add) {
        ng_live_node_del_bitmap(n, s->target);
        return 0;
    }
    return ng_live_node_add_bitmap(n,
                                   ng_value_get(s->new_opts,
                                                "bitmaps")->items[0]);
}

int
ng_live_apply_step(struct ng_live *live, const struct ng_step *s)
{
    struct ng_live_node *n;
    struct ng_value *opts;
    int r;

    switch (s->kind) {
    case NG_STEP_GROUP_ADD:
    case NG_STEP_GROUP_RETUNE:
        return ng_live_set_group(live, s->object, s->new_opts, true);
    case NG_STEP_NODE_ADD:
        return ng_live_set_node(live, s->object, s->new_opts, true);
    case NG_STEP_NODE_RETUNE:
        if ((n = ng_live_node(live, s->object)) == NULL)
            return 0;
        if ((opts = merged(n->opts, s->new_opts)) == NULL)
            return -1;
        r = ng_live_set_node(live, s->object, opts, n->from_file);
        ng_value_free(opts);
        return r;
    case NG_STEP_EXPORT_ADD:
    case NG_STEP_EXPORT_REPLACE:
        return ng_live_set_export(live, s->object, s->new_opts, true);
    case NG_STEP_EXPORT_RETUNE:
        return apply_export_retune(live, s);
    case NG_STEP_EXPORT_LIMIT:
        return apply_export_limit(live, s);
    case NG_STEP_BITMAP_ADD:
        return apply_bitmap(live, s, true);
    case NG_STEP_BITMAP_DEL:
        return apply_bitmap(live, s, false);
    case NG_STEP_EXPORT_DEL:
        ng_live_del_export(live, s->object);
        return 0;
    case NG_STEP_NODE_DEL:
        ng_live_del_node(live, s->object);
        return 0;
    case NG_STEP_GROUP_DEL:
        ng_live_del_group(live, s->object);
        return 0;
    case NG_STEP_LISTEN_ADD:
        return ng_live_strlist_add(&live->listen, &live->n_listen,
                                   s->object);
    case NG_STEP_LISTEN_DEL:
        ng_live_strlist_del(live->listen, &live->n_listen, s->object);
        return 0;
    case NG_STEP_CREDS_LOAD:
    case NG_STEP_LISTEN_RETUNE:
    case NG_STEP_SERVER_RETUNE:
        return 0;       /* the caller moves live->server to the new file */
    }
    return 0;
}
