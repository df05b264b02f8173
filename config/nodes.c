/* config/nodes.c: the nodes: section.  Each node's options are checked
 * against its driver's option table (graph's ng_node_opts_check(), which
 * opens nothing); then node-names, references between nodes and cycles;
 * then the nodes are put children first, so the daemon can create them one
 * by one.
 *
 * File index: the position of a node under nodes:, 0-based.  An inline
 * child definition (a mapping where a child is expected) belongs to the
 * node under nodes: that holds it: it is created with that node, so a
 * reference to it is a reference to that node.
 */
#include <config.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/config-int.h"
#include "graph/graph.h"
#include "filters/filters.h"

/* QEMU's node-name limit is smaller; the graph takes up to this. */
#define NODE_NAME_MAX 127

/* A reference from a node under nodes: to a node-name. */
struct node_ref {
    char *name;                 /* owned copy */
    struct ng_loc loc;          /* where it is written */
    size_t from;                /* file index of the referring node */
    size_t to;                  /* file index of the node defining `name`
                                 * (set once all names are known) */
};

/* State while checking the nodes: section. */
struct nodes_ctx {
    struct ng_config *cfg;      /* the caller's */
    struct ng_value *nodes;     /* the nodes: mapping, in cfg->doc: its
                                 * values are taken out, keys stay */
    struct ng_names *names;     /* the caller's */
    struct ng_value **opts;     /* by file index: each node's options
                                 * without node-name; owned until moved
                                 * into cfg->nodes */
    struct node_ref *refs;      /* owned, in the order they were seen,
                                 * so sorted by `from` */
    size_t n_refs;
    size_t cap_refs;
    size_t *from_start;         /* by file index, n + 1 entries: refs from
                                 * node i are refs[from_start[i] ..
                                 * from_start[i + 1]); owned */
    size_t *to_start;           /* the same for refs to node i, in
                                 * to_refs[]; owned */
    size_t *to_refs;            /* indexes into refs, grouped by `to` */
    size_t current;             /* file index of the node being checked */
    bool oom;                   /* ref_cb could not record a reference */
};

/* ---- Names -------------------------------------------------------------- */

const struct ng_name *
ng_names_find(const struct ng_names *names, const char *name)
{
    uintptr_t pos = (uintptr_t)ng_strmap_get(&names->index, name);

    return pos != 0 ? &names->v[pos - 1] : NULL;
}

void
ng_names_free(struct ng_names *names)
{
    free(names->v);
    names->v = NULL;
    names->n = names->cap = 0;
    ng_strmap_clear(&names->index);
}

/* QEMU's rule, as the graph applies it: a letter, then letters, digits,
 * '-', '.', '_'.  Names starting otherwise are kept for the graph's own
 * ("#ng0" for inline children without a name). */
static bool
valid_node_name(const char *name)
{
    const char *p;

    if (!isalpha((unsigned char)name[0]) || strlen(name) > NODE_NAME_MAX)
        return false;
    for (p = name; *p != '\0'; p++)
        if (!isalnum((unsigned char)*p) && strchr("-._", *p) == NULL)
            return false;
    return true;
}

/* Record a node-name (borrowed from the document); unique, well formed. */
static int
add_name(struct ng_names *names, const char *name, const struct ng_loc *loc,
         size_t owner, bool is_inline, struct ng_error *err)
{
    const struct ng_name *old = ng_names_find(names, name);
    struct ng_name *v;

    if (!valid_node_name(name))
        return ng_value_error(err, loc, "invalid node name '%s' (a letter, "
                              "then up to %d letters, digits, '-', '.' or "
                              "'_')", name, NODE_NAME_MAX - 1);
    if (old != NULL)
        return ng_value_error(err, loc, "duplicate node name '%s' (also "
                              "at %u:%u)", name, old->loc.line,
                              old->loc.column);
    if (names->n == names->cap) {
        size_t cap = names->cap ? 2 * names->cap : 16;

        if ((v = realloc(names->v, cap * sizeof *v)) == NULL)
            return ng_config_oom(err);
        names->v = v;
        names->cap = cap;
    }
    if (ng_strmap_put(&names->index, name,
                      (void *)(uintptr_t)(names->n + 1)) == -1)
        return ng_config_oom(err);
    names->v[names->n++] = (struct ng_name){
        .name = name, .loc = *loc, .owner = owner, .is_inline = is_inline,
    };
    return 0;
}

/* Inline child definitions inside `v` (some value of node `owner`'s
 * options): every mapping below the node's own that has a node-name.  The
 * option check has made sure that mappings appear only where the driver
 * takes a child or a nested option group, which has no node-name. */
static int
add_inline_names(struct ng_names *names, const struct ng_value *v,
                 size_t owner, struct ng_error *err)
{
    const struct ng_value *name = ng_value_get(v, "node-name");
    const char *s;
    size_t i;

    if (name != NULL) {
        if ((s = ng_value_to_string(name, "node-name", err)) == NULL ||
            add_name(names, s, &name->loc, owner, true, err) == -1)
            return -1;
    }
    for (i = 0; i < v->n; i++) {
        const struct ng_value *item = v->items[i];

        if (item->kind != NG_VALUE_SCALAR &&
            add_inline_names(names, item, owner, err) == -1)
            return -1;
    }
    return 0;
}

/* ---- Checking one node ------------------------------------------------ */

/* Called by ng_node_opts_check() for each child given by name. */
static void
record_ref(void *opaque, const char *ref, const struct ng_loc *loc)
{
    struct nodes_ctx *c = opaque;
    struct node_ref *r;

    if (c->oom)
        return;
    if (c->n_refs == c->cap_refs) {
        size_t cap = c->cap_refs ? 2 * c->cap_refs : 16;

        if ((r = realloc(c->refs, cap * sizeof *r)) == NULL) {
            c->oom = true;
            return;
        }
        c->refs = r;
        c->cap_refs = cap;
    }
    r = &c->refs[c->n_refs];
    if ((r->name = strdup(ref)) == NULL) {
        c->oom = true;
        return;
    }
    r->loc = *loc;
    r->from = c->current;
    r->to = SIZE_MAX;
    c->n_refs++;
}

/* Node i's mapping, taken out of the document (nothing reads the
 * nodes: section after this; copying 3,000 maps cost a reload more than
 * a tenth of its load), without its "node-name" key; caller frees. */
static struct ng_value *
take_without_name(struct ng_value *nodes, size_t i)
{
    struct ng_value *map = nodes->items[i];
    ptrdiff_t k = ng_value_index(map, "node-name");

    nodes->items[i] = NULL;
    if (k >= 0)
        ng_value_free(ng_value_map_take(map, (size_t)k));
    return map;
}

size_t
ng_node_bitmaps_count(const struct ng_value *opts)
{
    const struct ng_value *v = ng_value_get(opts, "bitmaps");

    return v != NULL && v->kind == NG_VALUE_LIST ? v->n : 0;
}

static const char *const node_bitmap_keys[] = {
    "name", "granularity", "disabled", NULL
};

int
ng_node_bitmap_get(const struct ng_value *opts, size_t i,
                   struct ng_node_bitmap_cfg *out, struct ng_error *err)
{
    const struct ng_value *e = ng_value_get(opts, "bitmaps")->items[i];
    const struct ng_value *v;
    uint64_t gran = 64 << 10;
    size_t k;

    if (e->kind != NG_VALUE_MAP)
        return ng_value_error(err, &e->loc, "'bitmaps' entries are "
                              "mappings { name, granularity, disabled }");
    for (k = 0; k < e->n; k++)
        for (size_t j = 0; ; j++) {
            if (node_bitmap_keys[j] == NULL)
                return ng_value_error(err, &e->key_locs[k], "unknown key "
                                      "'%s' in a dirty bitmap (known: name, "
                                      "granularity, disabled)", e->keys[k]);
            if (strcmp(e->keys[k], node_bitmap_keys[j]) == 0)
                break;
        }
    if ((v = ng_value_get(e, "name")) == NULL)
        return ng_value_error(err, &e->loc, "dirty bitmap: missing key "
                              "'name'");
    if ((out->name = ng_value_to_string(v, "name", err)) == NULL)
        return -1;
    if ((v = ng_value_get(e, "granularity")) != NULL &&
        ng_value_to_size(v, "granularity", &gran, err) == -1)
        return -1;
    if (gran < 512 || gran > (64u << 20) || (gran & (gran - 1)) != 0)
        return ng_value_error(err, v != NULL ? &v->loc : &e->loc,
                              "dirty bitmap '%s': granularity must be a "
                              "power of two from 512 to 64M", out->name);
    out->granularity = (uint32_t)gran;
    out->disabled = false;
    if ((v = ng_value_get(e, "disabled")) != NULL &&
        ng_value_to_bool(v, "disabled", &out->disabled, err) == -1)
        return -1;
    return 0;
}

/* A node's bitmaps: a list of good entries, names unique. */
static int
check_bitmaps(const char *file, const char *node, const struct ng_value *opts,
              struct ng_error *err)
{
    const struct ng_value *list = ng_value_get(opts, "bitmaps");
    struct ng_node_bitmap_cfg b, prev;
    size_t i, j;

    if (list == NULL || (list->kind == NG_VALUE_SCALAR && list->is_null))
        return 0;
    if (list->kind != NG_VALUE_LIST)
        return ng_value_error(err, &list->loc, "node '%s': 'bitmaps' must "
                              "be a list", node);
    for (i = 0; i < list->n; i++) {
        if (ng_node_bitmap_get(opts, i, &b, err) == -1)
            return ng_config_error_prefix(err, file, "node '%s'", node);
        for (j = 0; j < i; j++)
            if (ng_node_bitmap_get(opts, j, &prev, NULL) == 0 &&
                strcmp(prev.name, b.name) == 0)
                return ng_value_error(err, &list->items[i]->loc, "node '%s': "
                                      "dirty bitmap '%s' declared twice",
                                      node, b.name);
    }
    return 0;
}

struct ng_value *
ng_node_opts_for_graph(const struct ng_value *opts)
{
    struct ng_value *copy = ng_value_copy(opts);
    ptrdiff_t i = ng_value_index(copy, "bitmaps");

    if (copy != NULL && i >= 0)
        ng_value_free(ng_value_map_take(copy, (size_t)i));
    return copy;
}

/* The key under nodes: is the name; a node-name as well must agree. */
static int
check_own_name(const char *name, const struct ng_value *map,
               const char *file, struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(map, "node-name");
    const char *s;

    if (v == NULL)
        return 0;
    if ((s = ng_value_to_string(v, "node-name", err)) == NULL)
        return ng_config_error_prefix(err, file, "node '%s'", name);
    if (strcmp(s, name) != 0)
        return ng_value_error(err, &v->loc, "node '%s': node-name '%s' "
                              "differs from its key", name, s);
    return 0;
}

static int
check_node(struct nodes_ctx *c, size_t i, struct ng_error *err)
{
    const char *name = c->nodes->keys[i];
    const struct ng_value *map = c->nodes->items[i];
    const char *file = c->cfg->file;
    struct ng_value *graph_opts;
    size_t j;
    int rc;

    if (ng_config_expect_map(map, err, "node '%s'", name) == -1 ||
        check_own_name(name, map, file, err) == -1)
        return -1;
    map = c->opts[i] = take_without_name(c->nodes, i);
    if (check_bitmaps(file, name, c->opts[i], err) == -1)
        return -1;
    /* A copy without bitmaps: only when there is one (3,000 nodes). */
    graph_opts = ng_value_get(c->opts[i], "bitmaps") == NULL ? NULL
                 : ng_node_opts_for_graph(c->opts[i]);
    if (graph_opts == NULL && ng_value_get(c->opts[i], "bitmaps") != NULL)
        return ng_config_oom(err);
    c->current = i;
    rc = ng_node_opts_check(ng_all_drivers, graph_opts != NULL ? graph_opts
                                                                : c->opts[i],
                            record_ref, c, err);
    ng_value_free(graph_opts);
    if (rc == -1)
        return ng_config_error_prefix(err, file, "node '%s'", name);
    if (c->oom)
        return ng_config_oom(err);
    for (j = 0; j < map->n; j++)
        if (map->items[j]->kind != NG_VALUE_SCALAR &&
            add_inline_names(c->names, map->items[j], i, err) == -1)
            return ng_config_error_prefix(err, file, "node '%s'", name);
    return 0;
}

/* ---- References and order --------------------------------------------- */

static int
resolve_refs(struct nodes_ctx *c, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < c->n_refs; i++) {
        struct node_ref *r = &c->refs[i];
        const struct ng_name *def = ng_names_find(c->names, r->name);
        const char *from = c->nodes->keys[r->from];

        if (def == NULL)
            return ng_value_error(err, &r->loc, "node '%s': unknown node "
                                  "'%s'", from, r->name);
        if (def->is_inline && def->owner == r->from)
            return ng_value_error(err, &r->loc, "node '%s': '%s' is "
                                  "defined inside this node and cannot be "
                                  "referenced from it", from, r->name);
        r->to = def->owner;
    }
    return 0;
}

/* Index the references by the node they come from and the node they
 * go to, so ordering the nodes touches each reference a few times
 * instead of scanning all of them for every node. */
static int
index_refs(struct nodes_ctx *c, struct ng_error *err)
{
    size_t n = c->nodes->n, i;

    c->from_start = calloc(n + 1, sizeof *c->from_start);
    c->to_start = calloc(n + 2, sizeof *c->to_start);
    c->to_refs = calloc(c->n_refs ? c->n_refs : 1, sizeof *c->to_refs);
    if (c->from_start == NULL || c->to_start == NULL || c->to_refs == NULL)
        return ng_config_oom(err);
    /* Counts first, then running sums: the start of each group. */
    for (i = 0; i < c->n_refs; i++) {
        c->from_start[c->refs[i].from + 1]++;
        c->to_start[c->refs[i].to + 2]++;
    }
    for (i = 1; i <= n; i++) {
        c->from_start[i] += c->from_start[i - 1];
        c->to_start[i + 1] += c->to_start[i];
    }
    /* to_start[i + 1] is the next free place of group i while filling;
     * afterwards it is the end of group i, that is the start of i + 1. */
    for (i = 0; i < c->n_refs; i++)
        c->to_refs[c->to_start[c->refs[i].to + 1]++] = i;
    return 0;
}

/* First reference from node `from` to a node not yet placed. */
static const struct node_ref *
pending_ref(const struct nodes_ctx *c, size_t from, const bool *placed)
{
    size_t i;

    for (i = c->from_start[from]; i < c->from_start[from + 1]; i++)
        if (!placed[c->refs[i].to])
            return &c->refs[i];
    return NULL;
}

/* "a -> b -> a" for the cycle path[0..len), starting at path[first]. */
static void
cycle_text(const struct nodes_ctx *c, const size_t *path, size_t len,
           size_t first, char *buf, size_t size)
{
    size_t used = 0, k;

    buf[0] = '\0';
    for (k = 0; k <= len && used < size; k++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                 k ? " -> " : "",
                                 c->nodes->keys[path[(first + k) % len]]);
}

/* Walk from node `cur` along first pending references until a node
 * repeats; path[] and via[] get the nodes and references taken, pos[] (all
 * SIZE_MAX on entry) each node's place in path.  Returns the place of the
 * node that repeated: the cycle is path[that..len). */
static size_t
walk_to_cycle(const struct nodes_ctx *c, const bool *placed, size_t cur,
              size_t *path, const struct node_ref **via, size_t *pos,
              size_t *len)
{
    *len = 0;
    while (pos[cur] == SIZE_MAX) {
        pos[cur] = *len;
        path[*len] = cur;
        via[*len] = pending_ref(c, cur, placed);
        cur = via[(*len)++]->to;
    }
    return pos[cur];
}

/* Nothing is left that could be placed: every node not placed waits for
 * another one not placed.  Follow the first such reference from the first
 * such node until a node repeats, and name that cycle, starting at its
 * member that comes first in the file. */
static int
cycle_error(const struct nodes_ctx *c, const bool *placed,
            struct ng_error *err)
{
    size_t n = c->nodes->n, len, start, first, k;
    size_t *path = calloc(n, sizeof *path);
    size_t *pos = malloc(n * sizeof *pos);
    const struct node_ref **via = calloc(n, sizeof *via);
    char text[NG_ERROR_MSG_MAX / 2];

    if (path == NULL || pos == NULL || via == NULL) {
        free(path);
        free(pos);
        free(via);
        return ng_config_oom(err);
    }
    for (k = 0; k < n; k++)
        pos[k] = SIZE_MAX;
    for (k = 0; placed[k]; k++)
        ;
    start = walk_to_cycle(c, placed, k, path, via, pos, &len);
    for (first = start, k = start + 1; k < len; k++)
        if (path[k] < path[first])
            first = k;
    cycle_text(c, path + start, len - start, first - start, text,
               sizeof text);
    ng_value_error(err, &via[first]->loc, "node cycle: %s", text);
    free(path);
    free(pos);
    free(via);
    return -1;
}

/* A binary min-heap of file indexes: the nodes ready to be placed. */
struct ready_heap {
    size_t *v;
    size_t n;
};

static void
heap_push(struct ready_heap *h, size_t x)
{
    size_t i = h->n++;

    for (; i > 0 && h->v[(i - 1) / 2] > x; i = (i - 1) / 2)
        h->v[i] = h->v[(i - 1) / 2];
    h->v[i] = x;
}

static size_t
heap_pop(struct ready_heap *h)
{
    size_t top = h->v[0], last = h->v[--h->n], i = 0, child;

    while ((child = 2 * i + 1) < h->n) {
        if (child + 1 < h->n && h->v[child + 1] < h->v[child])
            child++;
        if (last <= h->v[child])
            break;
        h->v[i] = h->v[child];
        i = child;
    }
    h->v[i] = last;
    return top;
}

/* order[0..n) = file indexes, children first; among nodes that could go
 * next, the one that comes first in the file, so a file already in
 * dependency order keeps its order. */
static int
order_nodes(const struct nodes_ctx *c, size_t *order, struct ng_error *err)
{
    size_t n = c->nodes->n, done = 0, i, k;
    size_t *waits = calloc(n ? n : 1, sizeof *waits);  /* refs not placed */
    bool *placed = calloc(n ? n : 1, sizeof *placed);
    struct ready_heap ready = { .v = calloc(n ? n : 1, sizeof *ready.v) };
    int r = 0;

    if (waits == NULL || placed == NULL || ready.v == NULL)
        r = ng_config_oom(err);
    for (k = 0; r == 0 && k < c->n_refs; k++)
        waits[c->refs[k].from]++;
    for (i = 0; r == 0 && i < n; i++)
        if (waits[i] == 0)
            heap_push(&ready, i);
    while (r == 0 && ready.n > 0) {
        i = heap_pop(&ready);
        placed[i] = true;
        order[done++] = i;
        for (k = c->to_start[i]; k < c->to_start[i + 1]; k++)
            if (--waits[c->refs[c->to_refs[k]].from] == 0)
                heap_push(&ready, c->refs[c->to_refs[k]].from);
    }
    if (r == 0 && done < n)
        r = cycle_error(c, placed, err);
    free(waits);
    free(placed);
    free(ready.v);
    return r;
}

/* Move the options into cfg->nodes in the order found. */
static int
fill_model(struct nodes_ctx *c, const size_t *order, struct ng_error *err)
{
    struct ng_config *cfg = c->cfg;
    size_t n = c->nodes->n, k;

    cfg->nodes = calloc(n ? n : 1, sizeof *cfg->nodes);
    if (cfg->nodes == NULL)
        return ng_config_oom(err);
    for (k = 0; k < n; k++) {
        struct ng_node_cfg *nc = &cfg->nodes[cfg->n_nodes++];
        size_t i = order[k];

        nc->loc = c->nodes->key_locs[i];
        nc->opts = c->opts[i];
        c->opts[i] = NULL;
        if ((nc->name = strdup(c->nodes->keys[i])) == NULL)
            return ng_config_oom(err);
    }
    return 0;
}

static int
check_nodes(struct nodes_ctx *c, struct ng_error *err)
{
    size_t n = c->nodes->n, i;
    size_t *order;
    int r;

    for (i = 0; i < n; i++)
        if (add_name(c->names, c->nodes->keys[i], &c->nodes->key_locs[i],
                     i, false, err) == -1)
            return -1;
    for (i = 0; i < n; i++)
        if (check_node(c, i, err) == -1)
            return -1;
    if (resolve_refs(c, err) == -1 || index_refs(c, err) == -1)
        return -1;
    if ((order = calloc(n ? n : 1, sizeof *order)) == NULL)
        return ng_config_oom(err);
    r = order_nodes(c, order, err);
    if (r == 0)
        r = fill_model(c, order, err);
    free(order);
    return r;
}

int
ng_config_load_nodes(struct ng_config *cfg, struct ng_value *nodes,
                     struct ng_names *names, struct ng_error *err)
{
    struct nodes_ctx c = { .cfg = cfg, .nodes = nodes, .names = names };
    size_t i;
    int r;

    if (nodes == NULL || (nodes->kind == NG_VALUE_SCALAR && nodes->is_null))
        return 0;
    if (ng_config_expect_map(nodes, err, "'nodes'") == -1)
        return -1;
    c.opts = calloc(nodes->n ? nodes->n : 1, sizeof *c.opts);
    if (c.opts == NULL)
        return ng_config_oom(err);
    r = check_nodes(&c, err);
    for (i = 0; i < nodes->n; i++)
        ng_value_free(c.opts[i]);
    free(c.opts);
    for (i = 0; i < c.n_refs; i++)
        free(c.refs[i].name);
    free(c.refs);
    free(c.from_start);
    free(c.to_start);
    free(c.to_refs);
    return r;
}
