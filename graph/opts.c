/* graph/opts.c: driver option tables -> node state, node creation and
 * removal, and the open-nothing option check the config loader uses. */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "graph/graph.h"
#include "graph/graph-internal.h"

/* Keys every node takes, whatever its driver. */
static const char *const generic_keys[] = {
    "driver", "node-name", "read-only", NULL
};

static const struct {
    const char *name;
    int value;
} errno_names[] = {
    { "EPERM", EPERM }, { "EIO", EIO }, { "ENOMEM", ENOMEM },
    { "EINVAL", EINVAL }, { "ENOSPC", ENOSPC }, { "EROFS", EROFS },
    { "ENOTSUP", ENOTSUP }, { "EOVERFLOW", EOVERFLOW },
    { "ESHUTDOWN", ESHUTDOWN }, { "EAGAIN", EAGAIN }, { "EACCES", EACCES },
    { "EFBIG", EFBIG }, { "ENOENT", ENOENT }, { "EBUSY", EBUSY },
};

/* How option parsing treats CHILD options. */
struct opts_ctx {
    struct ng_graph *graph;     /* NULL: check only, create nothing */
    const struct ng_driver *const *drivers;     /* registry (check mode) */
    struct ng_add *add;         /* the add creating nodes (open mode) */
    struct ng_node *node;       /* node being created (open mode) */
    ng_ref_cb *ref_cb;          /* check mode */
    void *opaque;
};

static bool
is_generic_key(const char *key)
{
    size_t i;

    for (i = 0; generic_keys[i] != NULL; i++)
        if (strcmp(key, generic_keys[i]) == 0)
            return true;
    return false;
}

static const struct ng_opt_desc *
find_opt(const struct ng_driver *drv, const char *name)
{
    const struct ng_opt_desc *d;

    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

/* True when some option lives under "prefix." (e.g. "cache" for
 * "cache.direct"), so a nested mapping under that key is allowed. */
static bool
has_opt_prefix(const struct ng_driver *drv, const char *prefix)
{
    const struct ng_opt_desc *d;
    size_t len = strlen(prefix);

    for (d = drv->opts; d != NULL && d->name != NULL; d++)
        if (strncmp(d->name, prefix, len) == 0 && d->name[len] == '.')
            return true;
    return false;
}

/* Find "a.b.c" as a key, or as nested mappings a: {b: {c: ...}}. */
static const struct ng_value *
opts_lookup(const struct ng_value *map, const char *name)
{
    const struct ng_value *v = ng_value_get(map, name);
    const char *dot;
    char head[128];

    if (v != NULL || (dot = strchr(name, '.')) == NULL)
        return v;
    if ((size_t)(dot - name) >= sizeof head)
        return NULL;
    memcpy(head, name, (size_t)(dot - name));
    head[dot - name] = '\0';
    v = ng_value_get(map, head);
    if (v == NULL || v->kind != NG_VALUE_MAP)
        return NULL;
    return opts_lookup(v, dot + 1);
}

static void
list_options(const struct ng_driver *drv, char *buf, size_t size)
{
    const struct ng_opt_desc *d;
    size_t used = 0;

    buf[0] = '\0';
    for (d = drv->opts; d != NULL && d->name != NULL && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                 used ? ", " : "", d->name);
    if (used == 0)
        snprintf(buf, size, "none");
}

static int
check_keys(const struct ng_driver *drv, const struct ng_value *map,
           const char *prefix, struct ng_error *err)
{
    char buf[256], expected[512];
    size_t i;

    for (i = 0; i < map->n; i++) {
        const char *key = map->keys[i], *full = key;
        const struct ng_value *v = map->items[i];

        /* Formatted only below the top: a config of 3,000 nodes checks
         * some 10,000 keys. */
        if (prefix != NULL) {
            snprintf(buf, sizeof buf, "%s.%s", prefix, key);
            full = buf;
        }
        if (prefix == NULL && is_generic_key(key))
            continue;
        if (find_opt(drv, full) != NULL)
            continue;
        if (v->kind == NG_VALUE_MAP && has_opt_prefix(drv, full)) {
            if (check_keys(drv, v, full, err) == -1)
                return -1;
            continue;
        }
        list_options(drv, expected, sizeof expected);
        return ng_value_error(err, &map->key_locs[i],
                              "unknown option '%s' for driver '%s' "
                              "(expected %s)", full, drv->name, expected);
    }
    return 0;
}

int
ng_value_to_errno(const struct ng_value *v, const char *what, int *out,
                  struct ng_error *err)
{
    size_t i;
    int64_t n;

    if (v->kind == NG_VALUE_SCALAR && !v->is_null) {
        for (i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++) {
            if (strcasecmp(v->text, errno_names[i].name) == 0) {
                *out = errno_names[i].value;
                return 0;
            }
        }
    }
    if (ng_value_to_int64(v, what, &n, NULL) == 0 && n > 0 && n < 4096) {
        *out = (int)n;
        return 0;
    }
    return ng_value_error(err, &v->loc, "'%s' must be an errno name such "
                          "as EIO or ENOSPC", what);
}

static int
parse_enum(const struct ng_opt_desc *d, const struct ng_value *v, int *out,
           struct ng_error *err)
{
    const char *s = ng_value_to_string(v, d->name, err);
    char expected[256];
    size_t used = 0;
    int i;

    if (s == NULL)
        return -1;
    for (i = 0; d->choices[i] != NULL; i++) {
        if (strcmp(s, d->choices[i]) == 0) {
            *out = i;
            return 0;
        }
        if (used < sizeof expected)
            used += (size_t)snprintf(expected + used, sizeof expected - used,
                                     "%s%s", i ? ", " : "", d->choices[i]);
    }
    return ng_value_error(err, &v->loc, "'%s' must be one of %s, not '%s'",
                          d->name, expected, s);
}

static int parse_child(const struct ng_opt_desc *d, const struct ng_value *v,
                       struct ng_node **out, struct opts_ctx *ctx,
                       struct ng_error *err);
static int parse_children(const struct ng_opt_desc *d,
                          const struct ng_value *v, struct ng_children *out,
                          struct opts_ctx *ctx, struct ng_error *err);

/* Store one option in the state.  `v` may be a default built from text. */
static int
parse_field(const struct ng_opt_desc *d, const struct ng_value *v,
            char *state, struct opts_ctx *ctx, struct ng_error *err)
{
    void *field = state + d->offset;
    const char *s;

    switch (d->type) {
    case NG_OPT_T_STRING:
        if ((s = ng_value_to_string(v, d->name, err)) == NULL)
            return -1;
        if ((*(char **)field = strdup(s)) == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
        return 0;
    case NG_OPT_T_SIZE:
        return ng_value_to_size(v, d->name, field, err);
    case NG_OPT_T_INT:
        return ng_value_to_int64(v, d->name, field, err);
    case NG_OPT_T_BOOL:
        return ng_value_to_bool(v, d->name, field, err);
    case NG_OPT_T_ERRNO:
        return ng_value_to_errno(v, d->name, field, err);
    case NG_OPT_T_ENUM:
        return parse_enum(d, v, field, err);
    case NG_OPT_T_CHILD:
        if (d->nullable && v->kind == NG_VALUE_SCALAR && v->is_null) {
            *(bool *)(state + d->null_offset) = true;
            return 0;
        }
        return parse_child(d, v, field, ctx, err);
    case NG_OPT_T_CHILDREN:
        return parse_children(d, v, field, ctx, err);
    case NG_OPT_T_VALUE:
        if ((*(struct ng_value **)field = ng_value_copy(v)) == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
        return 0;
    }
    return ng_error_set(err, EINVAL, "option '%s' has an unknown type",
                        d->name);
}

static int
parse_default(const struct ng_opt_desc *d, char *state,
              struct opts_ctx *ctx, const struct ng_loc *loc,
              struct ng_error *err)
{
    /* Scalar types only read the text (strings copy it): a value on the
     * stack, as a reload checks every default of 3,000 nodes. */
    struct ng_value v = { .kind = NG_VALUE_SCALAR, .text = (char *)d->def };

    if (d->type == NG_OPT_T_CHILD || d->type == NG_OPT_T_CHILDREN ||
        d->type == NG_OPT_T_VALUE) {
        if (d->required)
            return ng_value_error(err, loc, "missing required option '%s'",
                                  d->name);
        return 0;
    }
    if (d->def == NULL)
        return ng_value_error(err, loc, "missing required option '%s'",
                              d->name);
    return parse_field(d, &v, state, ctx, err);
}

/* Free what parse_field allocated in a state. */
static void
free_fields(const struct ng_driver *drv, char *state)
{
    const struct ng_opt_desc *d;

    for (d = drv->opts; d != NULL && d->name != NULL; d++) {
        void *field = state + d->offset;

        if (d->type == NG_OPT_T_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (d->type == NG_OPT_T_VALUE) {
            ng_value_free(*(struct ng_value **)field);
            *(struct ng_value **)field = NULL;
        } else if (d->type == NG_OPT_T_CHILDREN) {
            free(((struct ng_children *)field)->nodes);
            *(struct ng_children *)field = (struct ng_children){ 0 };
        }
    }
}

static const struct ng_driver *
lookup_driver(const struct ng_driver *const *drivers,
              const struct ng_value *opts, struct ng_error *err)
{
    const struct ng_value *v;
    const struct ng_driver *drv;
    const char *name;

    if (opts == NULL || opts->kind != NG_VALUE_MAP) {
        ng_value_error(err, opts ? &opts->loc : NULL,
                       "node options must be a mapping");
        return NULL;
    }
    v = ng_value_get(opts, "driver");
    if (v == NULL) {
        ng_value_error(err, &opts->loc, "missing required option 'driver'");
        return NULL;
    }
    if ((name = ng_value_to_string(v, "driver", err)) == NULL)
        return NULL;
    drv = ng_driver_find(drivers, name);
    if (drv == NULL)
        ng_value_error(err, &v->loc, "unknown driver '%s'", name);
    return drv;
}

static size_t
opt_field_size(enum ng_opt_type type)
{
    switch (type) {
    case NG_OPT_T_STRING: return sizeof(char *);
    case NG_OPT_T_SIZE:   return sizeof(uint64_t);
    case NG_OPT_T_INT:    return sizeof(int64_t);
    case NG_OPT_T_BOOL:   return sizeof(bool);
    case NG_OPT_T_CHILD:  return sizeof(struct ng_node *);
    case NG_OPT_T_VALUE:  return sizeof(struct ng_value *);
    case NG_OPT_T_CHILDREN: return sizeof(struct ng_children);
    default:              return sizeof(int);
    }
}

/* Parse every option of `opts` into `state` (state_size bytes, zeroed). */
static int
parse_options(const struct ng_driver *drv, const struct ng_value *opts,
              char *state, struct opts_ctx *ctx, struct ng_error *err)
{
    const struct ng_opt_desc *d;
    const struct ng_value *v;

    if (check_keys(drv, opts, NULL, err) == -1)
        return -1;
    v = ng_value_get(opts, "read-only");
    if (v != NULL) {
        bool ro;

        if (ng_value_to_bool(v, "read-only", &ro, err) == -1)
            return -1;
        if (ctx->node != NULL)
            ctx->node->read_only = ro;
    }
    for (d = drv->opts; d != NULL && d->name != NULL; d++) {
        /* A driver whose table points outside its state is a bug; refuse
         * it here rather than write past the allocation. */
        if (d->offset + opt_field_size(d->type) > drv->state_size)
            return ng_error_set(err, EINVAL, "driver '%s': option '%s' lies "
                                "outside its state", drv->name, d->name);
        v = opts_lookup(opts, d->name);
        if ((v != NULL ? parse_field(d, v, state, ctx, err)
                       : parse_default(d, state, ctx, &opts->loc, err)) == -1)
            return -1;
    }
    return 0;
}

int
ng_node_opts_check(const struct ng_driver *const *drivers,
                   const struct ng_value *opts, ng_ref_cb *ref_cb,
                   void *opaque, struct ng_error *err)
{
    const struct ng_driver *drv = lookup_driver(drivers, opts, err);
    struct opts_ctx ctx = { .drivers = drivers, .ref_cb = ref_cb,
                            .opaque = opaque };
    char *state;
    int r;

    if (drv == NULL)
        return -1;
    state = calloc(1, drv->state_size ? drv->state_size : 1);
    if (state == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    r = parse_options(drv, opts, state, &ctx, err);
    free_fields(drv, state);
    free(state);
    return r;
}

/* QEMU's rule: a letter, then letters, digits, '-', '.', '_'. */
static bool
valid_node_name(const char *name)
{
    const char *p;

    if (!isalpha((unsigned char)name[0]))
        return false;
    for (p = name; *p != '\0'; p++)
        if (!isalnum((unsigned char)*p) && strchr("-._", *p) == NULL)
            return false;
    return strlen(name) < 128;
}

/* ---- Adding nodes: create them all, then open them one by one ---------- */

/* One ng_graph_add_node() in flight. */
struct ng_add {
    struct ng_graph *graph;
    struct ng_node **nodes;     /* created, children before parents; the
                                 * last one is the node asked for */
    size_t n, cap;
    size_t n_open;              /* nodes[0, n_open) are open */
    bool waiting;               /* an open has not completed yet */
    bool stepping;              /* add_step() is on the stack */
    bool failed;
    bool abandoned;             /* nobody waits (ng_graph_add_node_now) */
    bool cancel_sent;           /* the waiting open was told to give up */
    ng_node_added_fn *cb;
    void *opaque;
    struct ng_error err;        /* why an open failed */
    struct ng_add *next;        /* g->adds */
};

/* One removal in flight: nodes close one at a time, each after its
 * parents (they may still do I/O through it while they close). */
struct ng_remove {
    struct ng_graph *graph;
    struct ng_node **todo;      /* a stack of nodes left to close */
    size_t n, cap;
    struct ng_node *closing;    /* its close has not completed yet */
    bool stepping;
    ng_graph_done_fn *cb;
    void *opaque;
};

static void graph_free_step(struct ng_graph *g);

/* Out of the graph's list and index, unless it never got there (a node
 * of an add that failed). */
static void
graph_unlink_node(struct ng_graph *g, struct ng_node *node)
{
    if (node->adding == NULL)
        ng_graph_unlink_node(g, node);
}

static int
push_node(struct ng_node ***list, size_t *n, size_t *cap,
          struct ng_node *node)
{
    if (*n == *cap) {
        size_t cap2 = *cap ? *cap * 2 : 8;
        struct ng_node **l = realloc(*list, cap2 * sizeof *l);

        if (l == NULL)
            return -1;
        *list = l;
        *cap = cap2;
    }
    (*list)[(*n)++] = node;
    return 0;
}

/* A name in the graph, or one an add in flight has taken. */
static bool
name_taken(struct ng_graph *g, const char *name)
{
    struct ng_add *a;
    size_t i;

    if (ng_graph_find(g, name) != NULL)
        return true;
    for (a = g->adds; a != NULL; a = a->next)
        for (i = 0; i < a->n; i++)
            if (strcmp(a->nodes[i]->name, name) == 0)
                return true;
    return false;
}

/* Free a node that is closed or never opened. */
static void
node_free(struct ng_node *node)
{
    ng_node_free_req_pools(node);
    free_fields(node->driver, node->state);
    free(node->state);
    free(node->implicit_owner);
    ng_bitmap_remove_all(node);
    free(node->name);
    free(node);
}

/* ---- Removal ------------------------------------------------------------ */

static void
remove_step(struct ng_remove *r)
{
    struct ng_graph *g = r->graph;
    struct ng_node *node;

    if (r->stepping)
        return;
    r->stepping = true;
    while (r->closing == NULL && r->n > 0) {
        node = r->todo[--r->n];
        r->closing = node;
        node->removing = r;
        graph_unlink_node(g, node);
        ng_drain_forget_node(g, node);
        if (node->driver->close_async != NULL) {
            node->driver->close_async(node);
        } else {
            if (node->driver->close != NULL)
                node->driver->close(node);
            ng_node_closed(node);
        }
    }
    r->stepping = false;
    if (r->closing != NULL || r->n > 0)
        return;
    if (r->cb != NULL)
        r->cb(r->opaque);
    free(r->todo);
    free(r);
    g->removing--;
    graph_free_step(g);
}

void
ng_node_closed(struct ng_node *node)
{
    struct ng_remove *r = node->removing;
    struct ng_edge *e;

    r->closing = NULL;
    ng_node_pool_detach(node);
    while ((e = node->children) != NULL) {
        struct ng_node *child = e->child;

        ng_edge_detach(e);
        /* Out of memory here leaves the child in the graph, unused: the
         * removal still completes. */
        if (child->inline_def && child->parents == NULL)
            push_node(&r->todo, &r->n, &r->cap, child);
    }
    node_free(node);
    remove_step(r);
}

/* Close and free `node` (open, no parents) and then the inline children
 * it leaves unused; cb (may be NULL) runs once all are gone. */
static void
node_remove(struct ng_node *node, ng_graph_done_fn *cb, void *opaque)
{
    struct ng_remove *r = calloc(1, sizeof *r);

    if (r == NULL || push_node(&r->todo, &r->n, &r->cap, node) == -1) {
        /* Cannot track it: close it now, children stay unused. */
        free(r);
        graph_unlink_node(node->graph, node);
        while (node->children != NULL)
            ng_edge_detach(node->children);
        if (node->driver->close != NULL)
            node->driver->close(node);
        ng_node_pool_detach(node);
        node_free(node);
        if (cb != NULL)
            cb(opaque);
        return;
    }
    r->graph = node->graph;
    r->cb = cb;
    r->opaque = opaque;
    r->graph->removing++;
    remove_step(r);
}

void
ng_node_destroy(struct ng_node *node)
{
    node_remove(node, NULL, NULL);
}

/* ---- Creation ----------------------------------------------------------- */

static struct ng_node *node_create(struct ng_add *a, const char *name,
                                   const struct ng_value *opts,
                                   struct ng_error *err);

static int
parse_child(const struct ng_opt_desc *d, const struct ng_value *v,
            struct ng_node **out, struct opts_ctx *ctx, struct ng_error *err)
{
    struct ng_node *child;
    const char *ref;

    if (v->kind == NG_VALUE_MAP) {
        if (ctx->graph == NULL)
            return ng_node_opts_check(ctx->drivers, v, ctx->ref_cb,
                                      ctx->opaque, err);
        /* Created, not open yet: it opens before its parent does. */
        child = node_create(ctx->add, NULL, v, err);
        if (child == NULL)
            return -1;
        child->inline_def = true;
    } else {
        if ((ref = ng_value_to_string(v, d->name, err)) == NULL)
            return -1;
        if (ctx->graph == NULL) {
            if (ctx->ref_cb != NULL)
                ctx->ref_cb(ctx->opaque, ref, &v->loc);
            return 0;
        }
        child = ng_graph_find(ctx->graph, ref);
        if (child == NULL)
            return ng_value_error(err, &v->loc, "unknown node '%s'", ref);
    }
    if (ng_edge_attach(ctx->node, NULL, child, d->role) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    *out = child;
    return 0;
}

/* A list of children: each item as a CHILD option's value; the edges
 * made so far go with the node when a later item fails. */
static int
parse_children(const struct ng_opt_desc *d, const struct ng_value *v,
               struct ng_children *out, struct opts_ctx *ctx,
               struct ng_error *err)
{
    size_t i;

    if (v->kind != NG_VALUE_LIST)
        return ng_value_error(err, &v->loc, "'%s' must be a list of nodes",
                              d->name);
    if (v->n > 0 && (out->nodes = calloc(v->n, sizeof *out->nodes)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (i = 0; i < v->n; i++) {
        if (parse_child(d, v->items[i], &out->nodes[i], ctx, err) == -1)
            return -1;
        out->n++;
    }
    return 0;
}

static const char *
pick_node_name(struct ng_graph *g, const char *name,
               const struct ng_value *opts, char *buf, size_t size,
               struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(opts, "node-name");

    if (name == NULL && v != NULL) {
        if ((name = ng_value_to_string(v, "node-name", err)) == NULL)
            return NULL;
    }
    if (name == NULL) {
        snprintf(buf, size, "#ng%u", g->anon_counter++);
        return buf;
    }
    if (!valid_node_name(name)) {
        ng_value_error(err, v ? &v->loc : &opts->loc, "invalid node-name "
                       "'%s' (a letter, then letters, digits, '-', '.', "
                       "'_')", name);
        return NULL;
    }
    if (name_taken(g, name)) {
        ng_value_error(err, v ? &v->loc : &opts->loc,
                       "node '%s' already exists", name);
        return NULL;
    }
    return name;
}

static struct ng_node *
node_alloc(struct ng_graph *g, const struct ng_driver *drv, const char *name)
{
    struct ng_node *node = calloc(1, sizeof *node);

    if (node == NULL)
        return NULL;
    node->graph = g;
    node->driver = drv;
    node->name = strdup(name);
    node->state = calloc(1, drv->state_size ? drv->state_size : 1);
    if (node->name == NULL || node->state == NULL) {
        free(node->name);
        free(node->state);
        free(node);
        return NULL;
    }
    return node;
}

/* Move nodes[i] to the end: a node follows the children created while
 * its options were parsed. */
static void
add_move_last(struct ng_add *a, size_t i)
{
    struct ng_node *node = a->nodes[i];

    memmove(&a->nodes[i], &a->nodes[i + 1],
            (a->n - i - 1) * sizeof a->nodes[0]);
    a->nodes[a->n - 1] = node;
}

static struct ng_node *node_create_from(struct ng_add *a, const char *name,
                                        const struct ng_value *opts,
                                        struct ng_error *err);

/* Create `node` and, recursively, its inline children, none of them
 * open, all in a->nodes (where a failed add frees them); from the
 * options the driver's expand_opts hook makes, when it has one. */
static struct ng_node *
node_create(struct ng_add *a, const char *name, const struct ng_value *opts,
            struct ng_error *err)
{
    const struct ng_driver *drv = lookup_driver(a->graph->drivers, opts,
                                                err);
    struct ng_value *expanded = NULL;
    struct ng_node *node;

    if (drv == NULL)
        return NULL;
    if (drv->expand_opts != NULL &&
        drv->expand_opts(a->graph, opts, (unsigned)a->n, &expanded,
                         err) == -1)
        return NULL;
    node = node_create_from(a, name, expanded ? expanded : opts, err);
    ng_value_free(expanded);
    return node;
}

static struct ng_node *
node_create_from(struct ng_add *a, const char *name,
                 const struct ng_value *opts, struct ng_error *err)
{
    const struct ng_driver *drv = lookup_driver(a->graph->drivers, opts,
                                                err);
    struct opts_ctx ctx = { .graph = a->graph, .drivers = a->graph->drivers,
                            .add = a };
    struct ng_node *node;
    char anon[32];
    size_t at;

    if (drv == NULL)
        return NULL;
    name = pick_node_name(a->graph, name, opts, anon, sizeof anon, err);
    if (name == NULL)
        return NULL;
    node = node_alloc(a->graph, drv, name);
    if (node == NULL || push_node(&a->nodes, &a->n, &a->cap, node) == -1) {
        if (node != NULL)
            node_free(node);
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    /* In the list already, so that its name counts as taken. */
    at = a->n - 1;
    node->auto_named = name == anon;
    node->adding = a;
    ctx.node = node;
    if (parse_options(drv, opts, node->state, &ctx, err) == -1)
        return NULL;
    if (drv->is_filter && ng_node_child(node) == NULL) {
        ng_value_error(err, &opts->loc, "filter '%s' needs a child", name);
        return NULL;
    }
    /* Before it opens: room for a BB above it? */
    if (ng_depth_check_node(node, err) == -1) {
        ng_error_prefix(err, "node '%s'", name);
        return NULL;
    }
    add_move_last(a, at);
    return node;
}

/* ---- Opening ------------------------------------------------------------ */

static void add_step(struct ng_add *a);

static void
add_unlink(struct ng_add *a)
{
    struct ng_add **p;

    for (p = &a->graph->adds; *p != NULL; p = &(*p)->next) {
        if (*p == a) {
            *p = a->next;
            break;
        }
    }
}

static void
add_free(struct ng_add *a)
{
    struct ng_graph *g = a->graph;

    add_unlink(a);
    free(a->nodes);
    free(a);
    graph_free_step(g);
}

static void
add_discarded(void *opaque)
{
    struct ng_add *a = opaque;

    if (!a->abandoned && !a->graph->freeing)
        a->cb(a->opaque, NULL, &a->err);
    add_free(a);
}

/* Undo a failed (or unwanted) add: free the nodes that never opened,
 * then close the opened ones, which are all inline children, each after
 * its parents. */
static void
add_discard(struct ng_add *a)
{
    struct ng_remove *r = calloc(1, sizeof *r);
    size_t i;

    /* Every edge first: when options were wrong, a parent may come
     * before its children in the list, and detaching touches both. */
    for (i = a->n_open; i < a->n; i++)
        while (a->nodes[i]->children != NULL)
            ng_edge_detach(a->nodes[i]->children);
    for (i = a->n_open; i < a->n; i++)
        node_free(a->nodes[i]);
    a->n = a->n_open;
    if (r == NULL) {
        /* Cannot track a removal: close what opened now, parents (later
         * in the list) first, synchronous closes only. */
        for (i = a->n_open; i-- > 0; ) {
            struct ng_node *node = a->nodes[i];

            if (node->driver->close != NULL)
                node->driver->close(node);
            while (node->children != NULL)
                ng_edge_detach(node->children);
            ng_node_pool_detach(node);
            node_free(node);
        }
        add_discarded(a);
        return;
    }
    r->graph = a->graph;
    r->cb = add_discarded;
    r->opaque = a;
    for (i = 0; i < a->n_open; i++)
        if (a->nodes[i]->parents == NULL)
            push_node(&r->todo, &r->n, &r->cap, a->nodes[i]);
    a->graph->removing++;
    remove_step(r);
}

static void
add_finish(struct ng_add *a)
{
    struct ng_graph *g = a->graph;
    size_t i;

    if (!a->failed && (a->abandoned || g->freeing)) {
        a->failed = true;
        ng_error_set(&a->err, ESHUTDOWN, "node '%s': nobody waits for it",
                     a->nodes[a->n - 1]->name);
    }
    if (a->failed) {
        add_discard(a);
        return;
    }
    for (i = 0; i < a->n; i++)
        if (ng_graph_link_node(g, a->nodes[i]) == -1)
            break;
    if (i < a->n) {
        while (i-- > 0)
            ng_graph_unlink_node(g, a->nodes[i]);
        a->failed = true;
        ng_error_set(&a->err, ENOMEM, "out of memory");
        add_discard(a);
        return;
    }
    for (i = 0; i < a->n; i++)
        a->nodes[i]->adding = NULL;
    a->cb(a->opaque, a->nodes[a->n - 1], NULL);
    add_free(a);
}

/* Tell the open a waits for to give up (once: a driver may answer
 * later). */
static void
add_cancel_open(struct ng_add *a)
{
    struct ng_node *node = a->nodes[a->n_open];

    a->cancel_sent = true;
    if (node->driver->cancel_open != NULL)
        node->driver->cancel_open(node);
}

static void
node_open_start(struct ng_add *a, struct ng_node *node)
{
    const struct ng_driver *drv = node->driver;

    a->waiting = true;
    a->cancel_sent = false;
    if (ng_node_pool_attach(node, &a->err) == -1)
        ng_node_opened(node, -1);
    else if (drv->open_async != NULL)
        drv->open_async(node, &a->err);
    else
        ng_node_opened(node, drv->open != NULL ? drv->open(node, &a->err)
                                               : 0);
    /* add_step() is on the stack: a is still there. */
    if (a->waiting && a->graph->opens_cancelled)
        add_cancel_open(a);
}

void
ng_graph_cancel_opens(struct ng_graph *g)
{
    struct ng_add *a;

    g->opens_cancelled = true;
    /* A cancel may answer inline and free its add, or start the next
     * node's open (cancelled in node_open_start): walk again each time. */
    do {
        for (a = g->adds; a != NULL; a = a->next)
            if (a->waiting && !a->cancel_sent)
                break;
        if (a != NULL)
            add_cancel_open(a);
    } while (a != NULL);
}

void
ng_node_opened(struct ng_node *node, int ret)
{
    struct ng_add *a = node->adding;

    a->waiting = false;
    if (ret < 0) {
        a->failed = true;
        ng_node_pool_detach(node);
        ng_error_prefix(&a->err, "node '%s'", node->name);
        add_step(a);
        return;
    }
    node->opened = true;
    a->n_open++;                    /* closed by add_discard() on failure */
    /* Its parents are not open yet: this fills the node's own facts. */
    if (ng_node_refresh(node, &a->err) == -1)
        a->failed = true;
    add_step(a);
}

/* Open the next node until one goes asynchronous; then its completion
 * (ng_node_opened) comes back here.  A loop, not recursion, for the
 * opens that complete inline. */
static void
add_step(struct ng_add *a)
{
    if (a->stepping)
        return;
    a->stepping = true;
    while (!a->waiting && !a->failed && a->n_open < a->n)
        node_open_start(a, a->nodes[a->n_open]);
    a->stepping = false;
    if (!a->waiting)
        add_finish(a);
}

/* ng_graph_add_node(); *handle is the add while its opens run. */
static int
graph_add(struct ng_graph *g, const char *name, const struct ng_value *opts,
          ng_node_added_fn *cb, void *opaque, struct ng_add **handle,
          struct ng_error *err)
{
    struct ng_add *a = calloc(1, sizeof *a);

    if (a == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    a->graph = g;
    a->cb = cb;
    a->opaque = opaque;
    a->next = g->adds;
    g->adds = a;
    if (node_create(a, name, opts, err) == NULL) {
        /* Nothing opened: this frees, without a callback. */
        a->abandoned = true;
        a->failed = true;
        add_discard(a);
        return -1;
    }
    if (handle != NULL)
        *handle = a;
    add_step(a);
    return 0;
}

int
ng_graph_add_node(struct ng_graph *g, const char *name,
                  const struct ng_value *opts, ng_node_added_fn *cb,
                  void *opaque, struct ng_error *err)
{
    return graph_add(g, name, opts, cb, opaque, NULL, err);
}

struct add_now {
    bool done;
    struct ng_node *node;
    struct ng_error *err;
};

static void
add_now_done(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct add_now *st = opaque;

    st->done = true;
    st->node = node;
    if (err != NULL && st->err != NULL)
        *st->err = *err;
}

struct ng_node *
ng_graph_add_node_now(struct ng_graph *g, const char *name,
                      const struct ng_value *opts, struct ng_error *err)
{
    struct add_now st = { .err = err };
    struct ng_add *a = NULL;

    if (graph_add(g, name, opts, add_now_done, &st, &a, err) == -1)
        return NULL;
    if (st.done)
        return st.node;
    /* The open went on: let it finish on its own, then close it. */
    a->abandoned = true;
    ng_error_set(err, EAGAIN, "node '%s': its driver opens "
                 "asynchronously, which is not possible here",
                 a->nodes[a->n - 1]->name);
    return NULL;
}

int
ng_graph_check_del_node(struct ng_graph *g, const char *name,
                        struct ng_error *err)
{
    struct ng_node *node = ng_graph_find(g, name);

    if (node == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", name);
    if (node->parents != NULL)
        return ng_error_set(err, EBUSY, "node '%s' is in use by %s '%s'",
                            name, ng_edge_user_kind(node->parents),
                            ng_edge_user_name(node->parents));
    return 0;
}

int
ng_graph_del_node(struct ng_graph *g, const char *name,
                  ng_graph_done_fn *cb, void *opaque, struct ng_error *err)
{
    if (ng_graph_check_del_node(g, name, err) == -1)
        return -1;
    node_remove(ng_graph_find(g, name), cb, opaque);
    return 0;
}

/* ng_graph_free(): remove the nodes top down, one removal at a time,
 * once no add is in flight; then free the rest. */
static void
graph_free_step(struct ng_graph *g)
{
    struct ng_node *n;

    if (!g->freeing || g->free_stepping)
        return;
    g->free_stepping = true;
    while (g->removing == 0) {
        for (n = g->nodes; n != NULL && n->parents != NULL; n = n->next)
            ;
        if (n == NULL)
            break;      /* a cycle cannot happen; don't spin if it does */
        node_remove(n, NULL, NULL);
    }
    g->free_stepping = false;
    if (g->removing == 0 && g->adds == NULL) {
        g->freeing = false;         /* once */
        ng_graph_free_finish(g);
    }
}

void
ng_graph_free_nodes(struct ng_graph *g)
{
    g->freeing = true;              /* first: no add callback from now */
    ng_graph_cancel_opens(g);       /* they would hold the free back */
    graph_free_step(g);
}

/* A child option whose value names the child already attached with the
 * option's role. */
static bool
names_current_child(struct ng_node *node, const struct ng_opt_desc *d,
                    const struct ng_value *v)
{
    struct ng_node *child = ng_node_child_role(node, d->role);

    return child != NULL && v->kind == NG_VALUE_SCALAR && !v->is_null &&
           strcmp(v->text, child->name) == 0;
}

int
ng_node_reconfigure_check(struct ng_node *node, const struct ng_value *opts,
                          const char *const *live, struct ng_error *err)
{
    size_t i, j;

    if (opts == NULL || opts->kind != NG_VALUE_MAP)
        return ng_value_error(err, opts ? &opts->loc : NULL,
                              "node '%s': options must be a mapping",
                              node->name);
    for (i = 0; i < opts->n; i++) {
        const char *key = opts->keys[i];
        const struct ng_value *v = opts->items[i];
        const struct ng_opt_desc *d = find_opt(node->driver, key);
        bool ok = false;

        for (j = 0; live != NULL && live[j] != NULL && !ok; j++)
            ok = strcmp(key, live[j]) == 0;
        if (!ok && v->kind == NG_VALUE_SCALAR && !v->is_null) {
            if (strcmp(key, "driver") == 0)
                ok = strcmp(v->text, node->driver->name) == 0;
            else if (strcmp(key, "node-name") == 0)
                ok = strcmp(v->text, node->name) == 0;
            else if (d != NULL && d->type == NG_OPT_T_CHILD)
                ok = names_current_child(node, d, v);
        }
        if (!ok)
            return ng_value_error(err, &opts->key_locs[i],
                                  "node '%s': option '%s' cannot be changed "
                                  "on a live node", node->name, key);
    }
    return 0;
}

int
ng_node_reconfigure(struct ng_node *node, const struct ng_value *opts,
                    struct ng_error *err)
{
    if (node->driver->reconfigure == NULL)
        return ng_error_set(err, ENOTSUP, "node '%s': driver '%s' has no "
                            "options that change live", node->name,
                            node->driver->name);
    if (opts == NULL || opts->kind != NG_VALUE_MAP)
        return ng_error_set(err, EINVAL, "'options' must be an object");
    if (node->driver->reconfigure(node, opts, err) == -1)
        return ng_error_prefix(err, "node '%s'", node->name);
    return ng_node_refresh(node, err);
}
