/* config/live.c: the live model (plan.h) — sorted arrays of nodes,
 * exports and groups, the canonical export mapping, value equality. */
#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/plan.h"

/* ---- Sorted arrays ------------------------------------------------------ */

/* The three entry types start with their `char *name`, so one set of
 * helpers serves them all: `v` is the array, `size` an entry's size. */
static const char *
entry_name(const void *v, size_t size, size_t i)
{
    return *(char *const *)((const char *)v + i * size);
}

/* Index of `name`, or where it would go (*found false). */
static size_t
entry_search(const void *v, size_t n, size_t size, const char *name,
             bool *found)
{
    size_t lo = 0, hi = n;

    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(entry_name(v, size, mid), name);

        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A zeroed slot at index `at`, the array grown when full; NULL on
 * ENOMEM. */
static void *
entry_insert(void **v, size_t *n, size_t *cap, size_t size, size_t at)
{
    char *base;

    if (*n == *cap) {
        size_t ncap = *cap ? 2 * *cap : 16;
        void *p = realloc(*v, ncap * size);

        if (p == NULL)
            return NULL;
        *v = p;
        *cap = ncap;
    }
    base = *v;
    memmove(base + (at + 1) * size, base + at * size, (*n - at) * size);
    memset(base + at * size, 0, size);
    (*n)++;
    return base + at * size;
}

static void
entry_remove(void *v, size_t *n, size_t size, size_t at)
{
    char *base = v;

    memmove(base + at * size, base + (at + 1) * size, (*n - at - 1) * size);
    (*n)--;
}

/* ---- Lists of strings -------------------------------------------------- */

ptrdiff_t
ng_live_strlist_find(char *const *v, size_t n, const char *s)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return (ptrdiff_t)i;
    return -1;
}

int
ng_live_strlist_add(char ***v, size_t *n, const char *s)
{
    char **grown, *copy = strdup(s);

    if (copy == NULL)
        return -1;
    grown = realloc(*v, (*n + 1) * sizeof *grown);
    if (grown == NULL) {
        free(copy);
        return -1;
    }
    *v = grown;
    grown[(*n)++] = copy;
    return 0;
}

bool
ng_live_strlist_del(char **v, size_t *n, const char *s)
{
    ptrdiff_t i = ng_live_strlist_find(v, *n, s);

    if (i < 0)
        return false;
    free(v[i]);
    memmove(&v[i], &v[i + 1], (*n - (size_t)i - 1) * sizeof *v);
    (*n)--;
    return true;
}

/* ---- A node's dirty bitmaps ------------------------------------------ */

ptrdiff_t
ng_live_node_bitmap_index(const struct ng_live_node *n, const char *name)
{
    size_t i, count = ng_node_bitmaps_count(n->opts);
    struct ng_node_bitmap_cfg b;

    for (i = 0; i < count; i++)
        if (ng_node_bitmap_get(n->opts, i, &b, NULL) == 0 &&
            strcmp(b.name, name) == 0)
            return (ptrdiff_t)i;
    return -1;
}

int
ng_live_node_add_bitmap(struct ng_live_node *n, const struct ng_value *entry)
{
    const struct ng_value *name = ng_value_get(entry, "name");
    struct ng_value *list = ng_value_get(n->opts, "bitmaps"), *copy;
    ptrdiff_t k;

    if (name == NULL || ng_live_node_bitmap_index(n, name->text) >= 0)
        return 0;
    if (list == NULL || list->kind != NG_VALUE_LIST) {
        if ((list = ng_value_new_list((struct ng_loc){ 0 })) == NULL)
            return -1;
        if ((k = ng_value_index(n->opts, "bitmaps")) >= 0) {
            ng_value_free(n->opts->items[k]);   /* "bitmaps: ~" */
            n->opts->items[k] = list;
        } else if (ng_value_map_put(n->opts, "bitmaps", (struct ng_loc){ 0 },
                                    list) == -1) {
            return -1;
        }
    }
    copy = ng_value_copy(entry);
    return copy != NULL ? ng_value_list_append(list, copy) : -1;
}

void
ng_live_node_del_bitmap(struct ng_live_node *n, const char *name)
{
    struct ng_value *list = ng_value_get(n->opts, "bitmaps");
    ptrdiff_t i = ng_live_node_bitmap_index(n, name);

    ng_live_node_forget_live_bitmap(n, name);
    if (i < 0)
        return;
    ng_value_free(list->items[i]);
    memmove(list->items + i, list->items + i + 1,
            (list->n - (size_t)i - 1) * sizeof *list->items);
    list->n--;
}

bool
ng_live_node_bitmap_is_live(const struct ng_live_node *n, const char *name)
{
    return ng_live_strlist_find(n->live_bitmaps, n->n_live_bitmaps,
                                name) >= 0;
}

int
ng_live_node_note_live_bitmap(struct ng_live_node *n, const char *name)
{
    if (ng_live_node_bitmap_is_live(n, name))
        return 0;
    return ng_live_strlist_add(&n->live_bitmaps, &n->n_live_bitmaps, name);
}

void
ng_live_node_forget_live_bitmap(struct ng_live_node *n, const char *name)
{
    ng_live_strlist_del(n->live_bitmaps, &n->n_live_bitmaps, name);
}

static void
live_bitmaps_free(struct ng_live_node *n)
{
    size_t i;

    for (i = 0; i < n->n_live_bitmaps; i++)
        free(n->live_bitmaps[i]);
    free(n->live_bitmaps);
}

/* ---- Lookups ------------------------------------------------------------ */

static void
index_drop(struct ng_live_index *ix)
{
    ng_strmap_clear(&ix->map);
    ix->valid = false;
}

static void
index_build(struct ng_live_index *ix, const void *v, size_t n, size_t size)
{
    size_t i;

    if (ix->valid)
        return;
    for (i = 0; i < n; i++)
        if (ng_strmap_put(&ix->map, entry_name(v, size, i),
                          (void *)(uintptr_t)(i + 1)) == -1) {
            index_drop(ix);
            return;
        }
    ix->valid = true;
}

void
ng_live_reindex(struct ng_live *live)
{
    index_build(&live->node_index, live->nodes, live->n_nodes,
                sizeof *live->nodes);
    index_build(&live->export_index, live->exports, live->n_exports,
                sizeof *live->exports);
}

/* Position of `name` through the index when it is valid, else by
 * search; *found says whether it is there. */
static size_t
entry_find(const struct ng_live_index *ix, const void *v, size_t n,
           size_t size, const char *name, bool *found)
{
    uintptr_t pos;

    if (!ix->valid)
        return entry_search(v, n, size, name, found);
    pos = (uintptr_t)ng_strmap_get(&ix->map, name);
    *found = pos != 0;
    return pos != 0 ? pos - 1 : 0;
}

struct ng_live_node *
ng_live_node(const struct ng_live *live, const char *name)
{
    bool found;
    size_t i = entry_find(&live->node_index, live->nodes, live->n_nodes,
                          sizeof *live->nodes, name, &found);

    return found ? &live->nodes[i] : NULL;
}

struct ng_live_export *
ng_live_export(const struct ng_live *live, const char *id)
{
    bool found;
    size_t i = entry_find(&live->export_index, live->exports,
                          live->n_exports, sizeof *live->exports, id, &found);

    return found ? &live->exports[i] : NULL;
}

struct ng_live_group *
ng_live_group(const struct ng_live *live, const char *name)
{
    bool found;
    size_t i = entry_search(live->groups, live->n_groups,
                            sizeof *live->groups, name, &found);

    return found ? &live->groups[i] : NULL;
}

/* ---- Changes ------------------------------------------------------------ */

/* *slot becomes a copy of v (which may be *slot's own subtree). */
static int
replace_value(struct ng_value **slot, const struct ng_value *v)
{
    struct ng_value *copy = ng_value_copy(v);

    if (copy == NULL)
        return -1;
    ng_value_free(*slot);
    *slot = copy;
    return 0;
}

int
ng_live_set_node(struct ng_live *live, const char *name,
                 const struct ng_value *opts, bool from_file)
{
    bool found;
    size_t i = entry_search(live->nodes, live->n_nodes, sizeof *live->nodes,
                            name, &found);
    struct ng_live_node *n = found ? &live->nodes[i] : NULL;

    if (n == NULL) {
        index_drop(&live->node_index);
        n = entry_insert((void **)&live->nodes, &live->n_nodes,
                         &live->cap_nodes, sizeof *n, i);
        if (n == NULL)
            return -1;
        if ((n->name = strdup(name)) == NULL) {
            entry_remove(live->nodes, &live->n_nodes, sizeof *n, i);
            return -1;
        }
    }
    n->from_file = from_file;
    return replace_value(&n->opts, opts);
}

int
ng_live_set_export(struct ng_live *live, const char *id,
                   const struct ng_value *opts, bool from_file)
{
    bool found;
    size_t i = entry_search(live->exports, live->n_exports,
                            sizeof *live->exports, id, &found);
    struct ng_live_export *e = found ? &live->exports[i] : NULL;

    if (e == NULL) {
        index_drop(&live->export_index);
        e = entry_insert((void **)&live->exports, &live->n_exports,
                         &live->cap_exports, sizeof *e, i);
        if (e == NULL)
            return -1;
        if ((e->id = strdup(id)) == NULL) {
            entry_remove(live->exports, &live->n_exports, sizeof *e, i);
            return -1;
        }
    }
    e->from_file = from_file;
    return replace_value(&e->opts, opts);
}

int
ng_live_set_group(struct ng_live *live, const char *name,
                  const struct ng_value *limits, bool from_file)
{
    bool found;
    size_t i = entry_search(live->groups, live->n_groups,
                            sizeof *live->groups, name, &found);
    struct ng_live_group *g = found ? &live->groups[i] : NULL;
    struct ng_value *empty = NULL;
    int r;

    if (g == NULL) {
        g = entry_insert((void **)&live->groups, &live->n_groups,
                         &live->cap_groups, sizeof *g, i);
        if (g == NULL)
            return -1;
        if ((g->name = strdup(name)) == NULL) {
            entry_remove(live->groups, &live->n_groups, sizeof *g, i);
            return -1;
        }
    }
    g->from_file = from_file;
    if (limits == NULL &&
        (limits = empty = ng_value_new_map((struct ng_loc){ 0 })) == NULL)
        return -1;
    r = replace_value(&g->limits, limits);
    ng_value_free(empty);
    return r;
}

void
ng_live_del_node(struct ng_live *live, const char *name)
{
    bool found;
    size_t i = entry_search(live->nodes, live->n_nodes, sizeof *live->nodes,
                            name, &found);

    if (!found)
        return;
    free(live->nodes[i].name);
    ng_value_free(live->nodes[i].opts);
    free(live->nodes[i].held_by);
    free(live->nodes[i].over);
    live_bitmaps_free(&live->nodes[i]);
    index_drop(&live->node_index);
    entry_remove(live->nodes, &live->n_nodes, sizeof *live->nodes, i);
}

void
ng_live_del_export(struct ng_live *live, const char *id)
{
    bool found;
    size_t i = entry_search(live->exports, live->n_exports,
                            sizeof *live->exports, id, &found);

    if (!found)
        return;
    free(live->exports[i].id);
    ng_value_free(live->exports[i].opts);
    index_drop(&live->export_index);
    entry_remove(live->exports, &live->n_exports, sizeof *live->exports, i);
}

void
ng_live_del_group(struct ng_live *live, const char *name)
{
    bool found;
    size_t i = entry_search(live->groups, live->n_groups,
                            sizeof *live->groups, name, &found);

    if (!found)
        return;
    free(live->groups[i].name);
    ng_value_free(live->groups[i].limits);
    entry_remove(live->groups, &live->n_groups, sizeof *live->groups, i);
}

/* ---- Canonical export mapping -------------------------------------------- */

static int
put_scalar(struct ng_value *map, const char *key, const char *text)
{
    struct ng_loc nowhere = { 0 };

    return ng_value_map_put(map, key, nowhere,
                            ng_value_new_scalar(text, nowhere));
}

static int
put_copy(struct ng_value *map, const char *key, const struct ng_value *v)
{
    struct ng_loc nowhere = { 0 };

    return ng_value_map_put(map, key, nowhere, ng_value_copy(v));
}

/* The bool at `key`, false when absent or not a bool. */
static bool
get_bool(const struct ng_value *map, const char *key)
{
    const struct ng_value *v = ng_value_get(map, key);
    bool b = false;

    return v != NULL && ng_value_to_bool(v, key, &b, NULL) == 0 && b;
}

static const char *
get_text(const struct ng_value *map, const char *key)
{
    const struct ng_value *v = ng_value_get(map, key);

    return v != NULL && v->kind == NG_VALUE_SCALAR && !v->is_null ? v->text
                                                                  : NULL;
}

static int
canon_filters(struct ng_value *out, const struct ng_value *map)
{
    const struct ng_value *v;
    const char *s;

    if ((v = ng_value_get(map, "throttle")) != NULL &&
        put_copy(out, "throttle", v) == -1)
        return -1;
    if ((s = get_text(map, "throttle-group")) != NULL &&
        put_scalar(out, "throttle-group", s) == -1)
        return -1;
    if (get_bool(map, "copy-on-read") &&
        put_scalar(out, "copy-on-read", "true") == -1)
        return -1;
    s = get_text(map, "detect-zeroes");
    if (s != NULL && strcmp(s, "off") != 0 &&
        put_scalar(out, "detect-zeroes", s) == -1)
        return -1;
    return 0;
}

/* In decimal, as reload's export spec reads it back (the file may say
 * 0x10, which loading checked); 0 is no limit, as leaving it out is. */
static int
canon_max_connections(struct ng_value *out, const struct ng_value *map)
{
    const char *s = get_text(map, "max-connections");
    char text[24];
    long long n;

    if (s == NULL || (n = strtoll(s, NULL, 0)) <= 0)
        return 0;
    snprintf(text, sizeof text, "%lld", n);
    return put_scalar(out, "max-connections", text);
}

/* bitmaps: as a list of names (an entry {node, name} names a bitmap of
 * the export's node: checked where it was given). */
static int
canon_bitmaps(struct ng_value *out, const struct ng_value *map)
{
    const struct ng_value *v = ng_value_get(map, "bitmaps");
    struct ng_value *list;
    size_t i;

    if (v == NULL || v->kind != NG_VALUE_LIST || v->n == 0)
        return 0;
    if ((list = ng_value_new_list((struct ng_loc){ 0 })) == NULL)
        return -1;
    for (i = 0; i < v->n; i++) {
        const struct ng_value *item = v->items[i];
        const char *name = item->kind == NG_VALUE_MAP ? get_text(item, "name")
                           : item->is_null ? NULL : item->text;
        struct ng_value *s;

        if (name == NULL)
            continue;
        if ((s = ng_value_new_scalar(name, (struct ng_loc){ 0 })) == NULL ||
            ng_value_list_append(list, s) == -1) {
            ng_value_free(list);
            return -1;
        }
    }
    return ng_value_map_put(out, "bitmaps", (struct ng_loc){ 0 }, list);
}

struct ng_value *
ng_export_canon(const char *id, const struct ng_value *map)
{
    struct ng_value *out = ng_value_new_map((struct ng_loc){ 0 });
    const char *node = get_text(map, "node");
    const char *name = get_text(map, "name");
    const char *desc = get_text(map, "description");

    if (node == NULL)
        node = get_text(map, "node-name");
    if (out == NULL ||
        (node != NULL && put_scalar(out, "node", node) == -1) ||
        (name != NULL && strcmp(name, id) != 0 &&
         put_scalar(out, "name", name) == -1) ||
        put_scalar(out, "writable", get_bool(map, "writable") ? "true"
                                                              : "false") == -1 ||
        (desc != NULL && put_scalar(out, "description", desc) == -1) ||
        (get_bool(map, "allocation-depth") &&
         put_scalar(out, "allocation-depth", "true") == -1) ||
        canon_filters(out, map) == -1 ||
        canon_max_connections(out, map) == -1 ||
        canon_bitmaps(out, map) == -1 ||
        (ng_value_get(map, "allow") != NULL &&
         put_copy(out, "allow", ng_value_get(map, "allow")) == -1)) {
        ng_value_free(out);
        return NULL;
    }
    return out;
}

bool
ng_value_equal(const struct ng_value *a, const struct ng_value *b)
{
    size_t i;

    if (a == NULL || b == NULL)
        return a == b;
    if (a->kind != b->kind || a->n != b->n)
        return false;
    if (a->kind == NG_VALUE_SCALAR)
        return a->is_null == b->is_null && strcmp(a->text, b->text) == 0;
    for (i = 0; i < a->n; i++) {
        const struct ng_value *bi = a->kind == NG_VALUE_MAP
            ? ng_value_get(b, a->keys[i]) : b->items[i];

        if (!ng_value_equal(a->items[i], bi))
            return false;
    }
    return true;
}

/* ---- From a config ---------------------------------------------------- */

static int
cmp_entry(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The config's nodes, exports and groups, appended in the file's order
 * and sorted once: a config of 100k nodes must not cost 100k sorted
 * inserts. */
static int
live_fill_entries(struct ng_live *live, const struct ng_config *cfg)
{
    size_t i;

    live->cap_nodes = cfg->n_nodes;
    live->cap_exports = cfg->n_exports;
    live->cap_groups = cfg->n_groups;
    live->nodes = calloc(cfg->n_nodes + 1, sizeof *live->nodes);
    live->exports = calloc(cfg->n_exports + 1, sizeof *live->exports);
    live->groups = calloc(cfg->n_groups + 1, sizeof *live->groups);
    if (live->nodes == NULL || live->exports == NULL || live->groups == NULL)
        return -1;
    /* What the command line made is not in the file: a reload keeps it
     * unless it prunes. */
    for (i = 0; i < cfg->n_nodes; i++) {
        struct ng_live_node *n = &live->nodes[live->n_nodes++];

        n->from_file = !ng_config_loc_is_cli(&cfg->nodes[i].loc);
        if ((n->name = strdup(cfg->nodes[i].name)) == NULL ||
            (n->opts = ng_value_copy(cfg->nodes[i].opts)) == NULL)
            return -1;
    }
    for (i = 0; i < cfg->n_exports; i++) {
        const struct ng_export_cfg *ec = &cfg->exports[i];
        struct ng_live_export *e = &live->exports[live->n_exports++];

        e->from_file = !ng_config_loc_is_cli(&ec->loc);
        /* The loader made the canonical form already: a copy of it. */
        if ((e->id = strdup(ec->name)) == NULL ||
            (e->opts = ec->canon != NULL ? ng_value_copy(ec->canon)
                       : ng_export_canon(ec->name, ec->extra)) == NULL)
            return -1;
    }
    for (i = 0; i < cfg->n_groups; i++) {
        struct ng_live_group *g = &live->groups[live->n_groups++];

        g->from_file = true;
        if ((g->name = strdup(cfg->groups[i].name)) == NULL ||
            (g->limits = ng_value_copy(cfg->groups[i].limits)) == NULL)
            return -1;
    }
    qsort(live->nodes, live->n_nodes, sizeof *live->nodes, cmp_entry);
    qsort(live->exports, live->n_exports, sizeof *live->exports, cmp_entry);
    qsort(live->groups, live->n_groups, sizeof *live->groups, cmp_entry);
    return 0;
}

static int
live_fill(struct ng_live *live, const struct ng_config *cfg)
{
    size_t i;

    if (live_fill_entries(live, cfg) == -1)
        return -1;
    live->listen = calloc(cfg->n_listen + 1, sizeof *live->listen);
    if (live->listen == NULL)
        return -1;
    for (i = 0; i < cfg->n_listen; i++, live->n_listen++)
        if ((live->listen[i] = strdup(cfg->listen[i].text)) == NULL)
            return -1;
    if (cfg->control != NULL && (live->control = strdup(cfg->control)) == NULL)
        return -1;
    return 0;
}

struct ng_live *
ng_live_from_config(const struct ng_config *cfg)
{
    struct ng_live *live = calloc(1, sizeof *live);

    if (live == NULL || live_fill(live, cfg) == -1) {
        ng_live_free(live);
        return NULL;
    }
    ng_live_reindex(live);
    return live;
}

void
ng_live_free(struct ng_live *live)
{
    size_t i;

    if (live == NULL)
        return;
    for (i = 0; i < live->n_nodes; i++) {
        free(live->nodes[i].name);
        ng_value_free(live->nodes[i].opts);
        free(live->nodes[i].held_by);
        free(live->nodes[i].over);
        live_bitmaps_free(&live->nodes[i]);
    }
    for (i = 0; i < live->n_exports; i++) {
        free(live->exports[i].id);
        ng_value_free(live->exports[i].opts);
    }
    for (i = 0; i < live->n_groups; i++) {
        free(live->groups[i].name);
        ng_value_free(live->groups[i].limits);
    }
    index_drop(&live->node_index);
    index_drop(&live->export_index);
    free(live->nodes);
    free(live->exports);
    free(live->groups);
    for (i = 0; i < live->n_listen; i++)
        free(live->listen[i]);
    free(live->listen);
    free(live->control);
    free(live);
}
