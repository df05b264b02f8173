/* graph/opts.c: driver option tables -> node state, node creation and
 * removal, and the open-nothing option check the config loader uses. */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char full[256], expected[512];
    size_t i;

    for (i = 0; i < map->n; i++) {
        const char *key = map->keys[i];
        const struct ng_value *v = map->items[i];

        snprintf(full, sizeof full, "%s%s%s", prefix ? prefix : "",
                 prefix ? "." : "", key);
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
        return parse_child(d, v, field, ctx, err);
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
    struct ng_value *v;
    int r;

    if (d->type == NG_OPT_T_CHILD || d->type == NG_OPT_T_VALUE) {
        if (d->required)
            return ng_value_error(err, loc, "missing required option '%s'",
                                  d->name);
        return 0;
    }
    if (d->def == NULL)
        return ng_value_error(err, loc, "missing required option '%s'",
                              d->name);
    v = ng_value_new_scalar(d->def, (struct ng_loc){ 0 });
    if (v == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    r = parse_field(d, v, state, ctx, err);
    ng_value_free(v);
    return r;
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
        child = ng_graph_add_node(ctx->graph, NULL, v, err);
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
    if (ng_edge_attach(ctx->node, NULL, child, d->role) == NULL) {
        if (child->inline_def && child->parents == NULL)
            ng_node_destroy(child);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    *out = child;
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
    if (ng_graph_find(g, name) != NULL) {
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

/* Undo a half-made node: its edges, its inline children, its fields. */
static void
node_discard(struct ng_node *node)
{
    struct ng_edge *e;

    while ((e = node->children) != NULL) {
        struct ng_node *child = e->child;

        ng_edge_detach(e);
        if (child->inline_def && child->parents == NULL)
            ng_node_destroy(child);
    }
    ng_node_free_req_pools(node);
    free_fields(node->driver, node->state);
    free(node->state);
    free(node->name);
    free(node);
}

struct ng_node *
ng_graph_add_node(struct ng_graph *g, const char *name,
                  const struct ng_value *opts, struct ng_error *err)
{
    const struct ng_driver *drv = lookup_driver(g->drivers, opts, err);
    struct opts_ctx ctx = { .graph = g, .drivers = g->drivers };
    struct ng_node *node;
    char anon[32];

    if (drv == NULL)
        return NULL;
    name = pick_node_name(g, name, opts, anon, sizeof anon, err);
    if (name == NULL)
        return NULL;
    node = node_alloc(g, drv, name);
    if (node == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    node->auto_named = name == anon;
    ctx.node = node;
    if (parse_options(drv, opts, node->state, &ctx, err) == -1)
        goto fail;
    if (drv->is_filter && ng_node_child(node) == NULL) {
        ng_value_error(err, &opts->loc, "filter '%s' needs a child", name);
        goto fail;
    }
    if (ng_depth_check_node(node, err) == -1) {
        ng_error_prefix(err, "node '%s'", name);
        goto fail;
    }
    if (drv->open != NULL && drv->open(node, err) == -1) {
        ng_error_prefix(err, "node '%s'", name);
        goto fail;
    }
    /* No parents yet: this fills the node's own facts only. */
    if (ng_node_refresh(node, err) == -1)
        goto fail_opened;
    if (ng_graph_link_node(g, node) == -1) {
        ng_error_set(err, ENOMEM, "out of memory");
        goto fail_opened;
    }
    return node;

fail_opened:
    if (drv->close != NULL)
        drv->close(node);
fail:
    node_discard(node);
    return NULL;
}

void
ng_node_destroy(struct ng_node *node)
{
    ng_graph_unlink_node(node->graph, node);
    ng_drain_forget_node(node->graph, node);
    if (node->driver->close != NULL)
        node->driver->close(node);
    free(node->implicit_owner);
    node_discard(node);
}

static const char *
user_name(const struct ng_edge *e)
{
    return e->parent != NULL ? e->parent->name : e->bb->name;
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
                            name, node->parents->parent ? "node" : "export",
                            user_name(node->parents));
    return 0;
}

int
ng_graph_del_node(struct ng_graph *g, const char *name, struct ng_error *err)
{
    if (ng_graph_check_del_node(g, name, err) == -1)
        return -1;
    ng_node_destroy(ng_graph_find(g, name));
    return 0;
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
