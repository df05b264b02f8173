/* server/exports.c: see exports.h. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "graph/graph.h"
#include "nac/nac.h"
#include "nac/policy.h"
#include "server/exports.h"
#include "server/nbd.h"
#include "server/qmp-util.h"

int
ng_ctx_nac_claim(struct ng_control_ctx *ctx, const char *id,
                 const char *kind, const struct ng_nac_claim *claims,
                 size_t n, bool dry_run, struct ng_error *err)
{
    struct ng_nac_conflict why;
    char msg[NG_ERROR_MSG_MAX];
    int r;

    if (ctx->nac == NULL)
        return 0;
    r = dry_run ? ng_nac_check(ctx->nac, id, kind, claims, n, &why)
                : ng_nac_acquire(ctx->nac, id, kind, kind, claims, n, &why);
    if (r == 0)
        return 0;
    if (r == -1) {
        ng_nac_conflict_render(&why, msg, sizeof msg);
        return ng_error_set(err, EBUSY, "%s", msg);
    }
    if (r == -EEXIST)
        return ng_error_set(err, EEXIST, "ID '%s' is already in use", id);
    return ng_error_set(err, -r, "%s '%s': cannot claim nodes: %s", kind,
                        id, strerror(-r));
}

void
ng_ctx_nac_release(struct ng_control_ctx *ctx, const char *id)
{
    if (ctx->nac != NULL)
        ng_nac_release(ctx->nac, id);
}

void
ng_exports_follow_node(struct ng_control_ctx *ctx, const char *from,
                       const char *to)
{
    struct ng_export_entry *e;
    char *copy;

    for (e = ctx->exports; e != NULL; e = e->next) {
        struct ng_nac_claim claim = {
            .node = to,
            .require = e->writable ? NG_NAC_EXPORT_RW_REQUIRE
                                   : NG_NAC_EXPORT_RO_REQUIRE,
            .allow = e->writable ? NG_NAC_EXPORT_RW_ALLOW
                                 : NG_NAC_EXPORT_RO_ALLOW,
        };

        if (strcmp(e->node, from) != 0 || (copy = strdup(to)) == NULL)
            continue;
        /* The job that moved it released `to` first; nobody else may
         * hold it in a way that conflicts. */
        if (ctx->nac != NULL)
            ng_nac_replace(ctx->nac, e->id, &claim, 1, NULL);
        free(e->node);
        e->node = copy;
    }
}

struct ng_export_entry *
ng_exports_find(struct ng_control_ctx *ctx, const char *id)
{
    return ng_strmap_get(&ctx->export_ids, id);
}

/* Append to ctx->exports and its ID index; -1 on ENOMEM. */
static int
entry_link(struct ng_control_ctx *ctx, struct ng_export_entry *e)
{
    if (ng_strmap_put(&ctx->export_ids, e->id, e) == -1)
        return -1;
    if (ctx->exports_tail != NULL)
        ctx->exports_tail->next = e;
    else
        ctx->exports = e;
    ctx->exports_tail = e;
    return 0;
}

static void
entry_unlink(struct ng_control_ctx *ctx, struct ng_export_entry *e)
{
    struct ng_export_entry **p, *prev = NULL;

    for (p = &ctx->exports; *p != e; p = &(*p)->next)
        prev = *p;
    *p = e->next;
    if (ctx->exports_tail == e)
        ctx->exports_tail = prev;
    e->next = NULL;
    ng_strmap_del(&ctx->export_ids, e->id);
}

/* The bitmaps an export offers: on its node and free (the NBD server
 * checks the rest as it takes them). */
static int
check_bitmaps(struct ng_node *node, const struct ng_export_spec *spec,
              struct ng_error *err)
{
    if (spec->n_bitmaps > NG_NBD_MAX_EXPORT_BITMAPS)
        return ng_error_set(err, EINVAL, "export '%s': at most %d dirty "
                            "bitmaps", spec->id, NG_NBD_MAX_EXPORT_BITMAPS);
    for (size_t i = 0; i < spec->n_bitmaps; i++) {
        struct ng_bitmap *bm = ng_bitmap_find(node, spec->bitmaps[i]);

        /* No "export 'ID'" here: the config's and reload's messages
         * put it in front, with where the export is. */
        for (size_t j = 0; j < i; j++)
            if (strcmp(spec->bitmaps[j], spec->bitmaps[i]) == 0)
                return ng_error_set(err, EINVAL, "dirty bitmap '%s' is "
                                    "listed twice", spec->bitmaps[i]);
        if (bm == NULL)
            return ng_error_set(err, ENOENT, "dirty bitmap '%s' not found "
                                "on node '%s'", spec->bitmaps[i],
                                spec->node);
        if (bm->busy)
            return ng_error_set(err, EBUSY, "dirty bitmap '%s' is in use by "
                                "a job or another export",
                                spec->bitmaps[i]);
    }
    return 0;
}

static int
check_spec(struct ng_control_ctx *ctx, const struct ng_export_spec *spec,
           struct ng_error *err)
{
    const char *name = spec->name ? spec->name : spec->id;
    struct ng_node *node = ng_graph_find(ctx->graph, spec->node);

    if (spec->id[0] == '\0')
        return ng_error_set(err, EINVAL, "export ID must not be empty");
    if (ng_exports_find(ctx, spec->id) != NULL)
        return ng_error_set(err, EEXIST, "export '%s' already exists",
                            spec->id);
    if (ng_nbd_server_find_export(ctx->nbd, name) != NULL)
        return ng_error_set(err, EEXIST, "NBD export name '%s' is taken",
                            name);
    if (node == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", spec->node);
    if (spec->writable && !(ng_node_caps(node) & NG_CAP_WRITE))
        return ng_error_set(err, EROFS, "node '%s' is read-only, so export "
                            "'%s' cannot be writable", spec->node, spec->id);
    return check_bitmaps(node, spec, err);
}

/* ---- Implicit filters ---------------------------------------------------- */

/* Options of one implicit filter: "driver" and its one option `key`
 * (taking `value`), or none when key is NULL.  NULL on ENOMEM. */
static struct ng_value *
implicit_opts(const char *driver, const char *key, struct ng_value *value)
{
    struct ng_loc nowhere = { 0 };
    struct ng_value *m = ng_value_new_map(nowhere);

    if (m == NULL ||
        ng_value_map_put(m, "driver", nowhere,
                         ng_value_new_scalar(driver, nowhere)) == -1 ||
        (key != NULL && value == NULL)) {
        ng_value_free(m);
        ng_value_free(value);
        return NULL;
    }
    if (key != NULL && ng_value_map_put(m, key, nowhere, value) == -1) {
        ng_value_free(m);
        return NULL;
    }
    return m;
}

/* The implicit filters the spec asks for, top to bottom, in DESIGN.md's
 * fixed order (BB -> throttle -> copy-on-read -> detect-zeroes -> node),
 * as option maps for ng_graph_stack_implicit().  Returns how many, or -1
 * on ENOMEM; the caller frees out[0..n). */
static int
implicit_layers(const struct ng_implicit_filters *f, struct ng_value *out[3])
{
    struct ng_loc nowhere = { 0 };
    int n = 0;

    if (f->throttle != NULL)
        out[n++] = implicit_opts("throttle", "limits",
                                 ng_value_copy(f->throttle));
    else if (f->throttle_group != NULL)
        out[n++] = implicit_opts("throttle", "throttle-group",
                                 ng_value_new_scalar(f->throttle_group,
                                                     nowhere));
    if (f->copy_on_read)
        out[n++] = implicit_opts("copy-on-read", NULL, NULL);
    if (f->detect_zeroes != NULL)
        out[n++] = implicit_opts("detect-zeroes", "mode",
                                 ng_value_new_scalar(f->detect_zeroes,
                                                     nowhere));
    for (int i = 0; i < n; i++) {
        if (out[i] == NULL) {
            for (i = 0; i < n; i++)
                ng_value_free(out[i]);
            return -1;
        }
    }
    return n;
}

/* Build the spec's implicit filters above its node (or, dry_run, check
 * them); returns the top (the node itself when none is asked for). */
static struct ng_node *
build_implicit(struct ng_control_ctx *ctx, const struct ng_export_spec *spec,
               bool dry_run, struct ng_error *err)
{
    struct ng_value *layers[3];
    const struct ng_value *const *l = (const struct ng_value *const *)layers;
    int i, n = implicit_layers(&spec->filters, layers);
    struct ng_node *top;

    if (n < 0) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (dry_run)
        top = ng_graph_check_stack_implicit(ctx->graph, spec->node, spec->id,
                                            l, n, err) == 0
            ? ng_graph_find(ctx->graph, spec->node) : NULL;
    else
        top = ng_graph_stack_implicit(ctx->graph, spec->node, spec->id, l, n,
                                      err);
    for (i = 0; i < n; i++)
        ng_value_free(layers[i]);
    return top;
}

static struct ng_export_entry *
entry_new(const struct ng_export_spec *spec)
{
    struct ng_export_entry *e = calloc(1, sizeof *e);

    if (e == NULL)
        return NULL;
    e->id = strdup(spec->id);
    e->name = strdup(spec->name ? spec->name : spec->id);
    e->node = strdup(spec->node);
    e->writable = spec->writable;
    if (e->id == NULL || e->name == NULL || e->node == NULL) {
        free(e->id);
        free(e->name);
        free(e->node);
        free(e);
        return NULL;
    }
    return e;
}

static void
entry_free(struct ng_export_entry *e)
{
    free(e->id);
    free(e->name);
    free(e->node);
    free(e);
}

int
ng_exports_add(struct ng_control_ctx *ctx, const struct ng_export_spec *spec,
               const char *job, bool dry_run, struct ng_error *err)
{
    struct ng_nac_claim claim = {
        .node = spec->node,
        .require = spec->writable ? NG_NAC_EXPORT_RW_REQUIRE
                                  : NG_NAC_EXPORT_RO_REQUIRE,
        .allow = spec->writable ? NG_NAC_EXPORT_RW_ALLOW
                                : NG_NAC_EXPORT_RO_ALLOW,
    };
    struct ng_export_entry *e;
    struct ng_node *top;

    if (check_spec(ctx, spec, err) == -1 ||
        ng_ctx_nac_claim(ctx, spec->id, "export", &claim, 1, dry_run,
                         err) == -1)
        return -1;
    top = build_implicit(ctx, spec, dry_run, err);
    if (top == NULL || dry_run) {
        if (!dry_run)
            ng_ctx_nac_release(ctx, spec->id);
        return top != NULL ? 0 : -1;
    }
    e = entry_new(spec);
    if (e != NULL)
        e->has_implicit = top != ng_graph_find(ctx->graph, spec->node);
    if (e == NULL || entry_link(ctx, e) == -1) {
        ng_error_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    if (ng_nbd_server_add_export(ctx->nbd, e->name, spec->description, top,
                                 spec->writable, spec->max_connections,
                                 err) == -1) {
        entry_unlink(ctx, e);
        goto fail;
    }
    if ((spec->n_bitmaps > 0 &&
         ng_nbd_server_set_export_bitmaps(ctx->nbd, e->name, spec->node,
                                          spec->bitmaps, spec->n_bitmaps,
                                          err) == -1) ||
        ng_nbd_server_set_export_allocation_depth(ctx->nbd, e->name,
                                                  spec->allocation_depth,
                                                  err) == -1) {
        ng_nbd_server_del_export(ctx->nbd, e->name, true, NULL);
        entry_unlink(ctx, e);
        goto fail;
    }
    ng_qmp_graph_changed(ctx, "export-added", job,
                         json_pack("{s:s,s:s}", "export", e->id,
                                   "node-name", e->node));
    return 0;

fail:
    ng_graph_unstack_implicit(ctx->graph, spec->id);
    ng_ctx_nac_release(ctx, spec->id);
    if (e != NULL)
        entry_free(e);
    return -1;
}

/* The export's BB is gone: drop its implicit filters and its claims. */
static void
export_finish(struct ng_control_ctx *ctx, struct ng_export_entry *e)
{
    /* The walk looks at every node of the graph: a big graph's exports
     * without filters skip it. */
    if (e->has_implicit)
        ng_graph_unstack_implicit(ctx->graph, e->id);
    ng_ctx_nac_release(ctx, e->id);
    entry_free(e);
}

int
ng_exports_del(struct ng_control_ctx *ctx, const char *id, bool hard,
               const char *job, bool dry_run, struct ng_error *err)
{
    struct ng_export_entry *e = ng_exports_find(ctx, id);
    const struct ng_nbd_export *exp;
    unsigned conns;

    if (e == NULL)
        return ng_error_set(err, ENOENT, "export '%s' not found", id);
    exp = ng_nbd_server_find_export(ctx->nbd, e->name);
    conns = exp != NULL ? ng_nbd_export_connections(exp) : 0;
    if (!hard && conns > 0)
        return ng_error_set(err, EBUSY, "export '%s' has %u client(s) "
                            "connected; use mode 'hard' to disconnect them",
                            id, conns);
    if (dry_run)
        return 0;
    if (ng_nbd_server_del_export(ctx->nbd, e->name, hard, err) == -1)
        return -1;
    ng_qmp_graph_changed(ctx, "export-removed", job,
                         json_pack("{s:s,s:s}", "export", e->id,
                                   "node-name", e->node));
    entry_unlink(ctx, e);
    if (conns > 0) {
        /* Its clients still drain: keep the claims and the implicit
         * filters until the NBD server says it is gone. */
        e->next = ctx->removing;
        ctx->removing = e;
        return 0;
    }
    export_finish(ctx, e);
    return 0;
}

void
ng_exports_gone(void *opaque, const char *name)
{
    struct ng_control_ctx *ctx = opaque;
    struct ng_export_entry **p, *e;

    for (p = &ctx->removing; (e = *p) != NULL; p = &e->next) {
        if (strcmp(e->name, name) == 0) {
            *p = e->next;
            export_finish(ctx, e);
            return;
        }
    }
}

json_t *
ng_exports_query(struct ng_control_ctx *ctx)
{
    json_t *list = json_array();
    struct ng_export_entry *e;

    for (e = ctx->exports; e != NULL; e = e->next) {
        const struct ng_nbd_export *exp =
            ng_nbd_server_find_export(ctx->nbd, e->name);
        const char *desc = exp ? ng_nbd_export_description(exp) : NULL;

        json_array_append_new(list, json_pack(
            "{s:s,s:s,s:s,s:s,s:b,s:b,s:i,s:s*}",
            "id", e->id, "type", "nbd", "name", e->name,
            "node-name", e->node, "writable", e->writable,
            "shutting-down", false,
            "connections", exp ? (int)ng_nbd_export_connections(exp) : 0,
            "description", desc));
    }
    return list;
}

void
ng_exports_free_all(struct ng_control_ctx *ctx)
{
    struct ng_export_entry *e;

    while ((e = ctx->exports) != NULL) {
        ctx->exports = e->next;
        ng_ctx_nac_release(ctx, e->id);
        entry_free(e);
    }
    ctx->exports_tail = NULL;
    ng_strmap_clear(&ctx->export_ids);
    while ((e = ctx->removing) != NULL) {
        ctx->removing = e->next;
        ng_ctx_nac_release(ctx, e->id);
        entry_free(e);
    }
}
