/* server/exports.c: see exports.h. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

static struct ng_export_entry *
find_entry(struct ng_control_ctx *ctx, const char *id)
{
    struct ng_export_entry *e;

    for (e = ctx->exports; e != NULL; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

static int
check_spec(struct ng_control_ctx *ctx, const struct ng_export_spec *spec,
           struct ng_error *err)
{
    const char *name = spec->name ? spec->name : spec->id;
    struct ng_node *node = ng_graph_find(ctx->graph, spec->node);

    if (spec->id[0] == '\0')
        return ng_error_set(err, EINVAL, "export ID must not be empty");
    if (find_entry(ctx, spec->id) != NULL)
        return ng_error_set(err, EEXIST, "export '%s' already exists",
                            spec->id);
    if (ng_nbd_server_find_export(ctx->nbd, name) != NULL && name[0])
        return ng_error_set(err, EEXIST, "NBD export name '%s' is taken",
                            name);
    if (node == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", spec->node);
    if (spec->writable && !(ng_node_caps(node) & NG_CAP_WRITE))
        return ng_error_set(err, EROFS, "node '%s' is read-only, so export "
                            "'%s' cannot be writable", spec->node, spec->id);
    return 0;
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
    struct ng_export_entry *e, **tail;

    if (check_spec(ctx, spec, err) == -1 ||
        ng_ctx_nac_claim(ctx, spec->id, "export", &claim, 1, dry_run,
                         err) == -1)
        return -1;
    if (dry_run)
        return 0;
    e = entry_new(spec);
    if (e == NULL) {
        ng_ctx_nac_release(ctx, spec->id);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    if (ng_nbd_server_add_export(ctx->nbd, e->name, spec->description,
                                 ng_graph_find(ctx->graph, spec->node),
                                 spec->writable, err) == -1) {
        ng_ctx_nac_release(ctx, spec->id);
        entry_free(e);
        return -1;
    }
    for (tail = &ctx->exports; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = e;
    ng_qmp_graph_changed(ctx, "export-added", job,
                         json_pack("{s:s,s:s}", "export", e->id,
                                   "node-name", e->node));
    return 0;
}

int
ng_exports_del(struct ng_control_ctx *ctx, const char *id, bool hard,
               const char *job, bool dry_run, struct ng_error *err)
{
    struct ng_export_entry *e = find_entry(ctx, id), **p;
    const struct ng_nbd_export *exp;

    if (e == NULL)
        return ng_error_set(err, ENOENT, "export '%s' not found", id);
    exp = ng_nbd_server_find_export(ctx->nbd, e->name);
    if (!hard && exp != NULL && ng_nbd_export_connections(exp) > 0)
        return ng_error_set(err, EBUSY, "export '%s' has %u client(s) "
                            "connected; use mode 'hard' to disconnect them",
                            id, ng_nbd_export_connections(exp));
    if (dry_run)
        return 0;
    if (ng_nbd_server_del_export(ctx->nbd, e->name, hard, err) == -1)
        return -1;
    ng_ctx_nac_release(ctx, e->id);
    ng_qmp_graph_changed(ctx, "export-removed", job,
                         json_pack("{s:s,s:s}", "export", e->id,
                                   "node-name", e->node));
    for (p = &ctx->exports; *p != e; p = &(*p)->next)
        ;
    *p = e->next;
    entry_free(e);
    return 0;
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
}
