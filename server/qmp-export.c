/* server/qmp-export.c: QMP commands on exports, and query-nac. */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "nac/nac.h"
#include "server/exports.h"
#include "server/nbd.h"
#include "server/qmp-graph.h"
#include "server/qmp-util.h"
#include "server/reload.h"

void
ng_qmp_query_block_exports(struct ng_qmp_call *call, json_t *args)
{
    (void)args;
    ng_qmp_return(call, ng_exports_query(ng_qmp_ctx(call)));
}

static const char *
arg_string(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

/* BlockExportOptionsNbd's bitmaps: names of bitmaps on the export's
 * node (QEMU also takes {node, name}; that node must be it too). */
static int
export_bitmaps(json_t *args, const char **names, size_t *n,
               struct ng_error *err)
{
    json_t *list = json_object_get(args, "bitmaps"), *item;
    const char *node = json_string_value(json_object_get(args, "node-name"));
    size_t i;

    *n = 0;
    if (json_array_size(list) > NG_NBD_MAX_EXPORT_BITMAPS)
        return ng_error_set(err, EINVAL, "at most %d dirty bitmaps per "
                            "export", NG_NBD_MAX_EXPORT_BITMAPS);
    json_array_foreach(list, i, item) {
        const char *bnode = json_string_value(json_object_get(item, "node"));
        const char *name = json_is_string(item) ? json_string_value(item)
                           : json_string_value(json_object_get(item, "name"));

        if (name == NULL || (!json_is_string(item) && bnode == NULL))
            return ng_error_set(err, EINVAL, "'bitmaps' entries are names "
                                "or {node, name}");
        if (bnode != NULL && strcmp(bnode, node) != 0)
            return ng_error_set(err, EINVAL, "dirty bitmap '%s': only "
                                "bitmaps of the exported node '%s' can be "
                                "exported", name, node);
        names[(*n)++] = name;
    }
    return 0;
}

/* max-connections, with the config file's range and message
 * (config/config.c): 0 (the default) is no limit. */
static int
export_max_connections(json_t *args, unsigned *out, struct ng_error *err)
{
    json_t *j = json_object_get(args, "max-connections");
    json_int_t n = json_integer_value(j);   /* 0 when absent */

    if (n < 0 || n > 1000000)
        return ng_error_set(err, EINVAL, "'max-connections' must be "
                            "between 0 and 1000000");
    *out = (unsigned)n;
    return 0;
}

/* The export's allow: list, as the config file's (config/allow.c): set
 * before the loop runs again, so no client sees the export unrestricted.
 * Without the list, everyone may. */
static int
export_restrict(struct ng_control_ctx *ctx, const struct ng_export_spec *spec,
                const struct ng_value *allow, struct ng_error *err)
{
    struct ng_allow_rule *rules = NULL;
    size_t n = 0;
    int ret;

    if (allow == NULL)
        return 0;
    if (ng_allow_parse_list(allow, &rules, &n, err) == -1)
        return -1;
    ret = ng_nbd_server_set_export_allow(ctx->nbd, spec->name != NULL
                                         ? spec->name : spec->id, rules, n,
                                         err);
    ng_allow_free(rules, n);
    return ret;
}

/* A bad allow: list is refused before the export exists. */
static int
check_allow(const struct ng_value *allow, struct ng_error *err)
{
    struct ng_allow_rule *rules = NULL;
    size_t n = 0;

    if (allow == NULL || ng_allow_parse_list(allow, &rules, &n, err) == -1)
        return allow == NULL ? 0 : ng_error_prefix(err, "'allow'");
    ng_allow_free(rules, n);
    return 0;
}

void
ng_qmp_block_export_add(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    struct ng_export_spec spec = {
        .id = arg_string(args, "id"),
        .name = arg_string(args, "name"),
        .node = arg_string(args, "node-name"),
        .writable = json_is_true(json_object_get(args, "writable")),
        .description = arg_string(args, "description"),
        .allocation_depth = json_is_true(json_object_get(args,
                                                         "allocation-depth")),
    };
    struct ng_value *v = ng_value_from_json(args);
    struct ng_error err = { 0 };
    const char *bitmaps[NG_NBD_MAX_EXPORT_BITMAPS];
    char job[128];

    if (export_bitmaps(args, bitmaps, &spec.n_bitmaps, &err) == -1 ||
        export_max_connections(args, &spec.max_connections, &err) == -1) {
        ng_value_free(v);
        ng_qmp_error(call, NG_QMP_GENERIC, "%s", err.msg);
        return;
    }
    spec.bitmaps = bitmaps;
    if (v == NULL || ng_implicit_filters_parse(v, &spec.filters, &err) == -1 ||
        check_allow(ng_value_get(v, "allow"), &err) == -1) {
        ng_value_free(v);
        ng_qmp_error(call, NG_QMP_GENERIC, "%s",
                     v ? err.msg : "out of memory");
        return;
    }
    if (strcmp(arg_string(args, "type"), "nbd") != 0) {
        ng_value_free(v);
        ng_qmp_error(call, NG_QMP_GENERIC, "export type '%s' is not "
                     "supported (only 'nbd')", arg_string(args, "type"));
        return;
    }
    ng_qmp_job_id(ctx, args, "block-export-add-", job, sizeof job);
    if (ng_exports_add(ctx, &spec, job, ng_qmp_dry_run(args), &err) == -1) {
        ng_qmp_error_from(call, &err);
    } else if (!ng_qmp_dry_run(args) &&
               export_restrict(ctx, &spec, ng_value_get(v, "allow"),
                               &err) == -1) {
        /* Not served unrestricted: take it away again. */
        ng_exports_del(ctx, spec.id, true, job, false, NULL);
        ng_qmp_error_from(call, &err);
    } else {
        if (!ng_qmp_dry_run(args))
            ng_reload_note_export(ctx, spec.id, v);
        ng_qmp_return(call, NULL);
    }
    ng_value_free(v);
}

void
ng_qmp_block_export_del(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    const char *mode = arg_string(args, "mode");
    struct ng_error err = { 0 };
    char job[128];

    if (mode != NULL && strcmp(mode, "safe") != 0 &&
        strcmp(mode, "hard") != 0) {
        ng_qmp_error(call, NG_QMP_GENERIC, "mode must be 'safe' or 'hard', "
                     "not '%s'", mode);
        return;
    }
    ng_qmp_job_id(ctx, args, "block-export-del-", job, sizeof job);
    if (ng_exports_del(ctx, arg_string(args, "id"),
                       mode != NULL && strcmp(mode, "hard") == 0, job,
                       ng_qmp_dry_run(args), &err) == -1) {
        ng_qmp_error_from(call, &err);
    } else {
        if (!ng_qmp_dry_run(args))
            ng_reload_forget_export(ctx, arg_string(args, "id"));
        ng_qmp_return(call, NULL);
    }
}

static json_t *
actions_json(unsigned mask)
{
    const char *names[NG_NAC_N_ACTIONS];
    size_t i, n = ng_nac_mask_names(mask, names);
    json_t *list = json_array();

    for (i = 0; i < n; i++)
        json_array_append_new(list, json_string(names[i]));
    return list;
}

/* ng_nac_foreach visits per node in name order: group into one entry per
 * node-name. */
static int
add_holding(void *opaque, const struct ng_nac_holding *h)
{
    json_t *list = opaque, *last = json_array_get(list,
                                                  json_array_size(list) - 1);

    if (last == NULL ||
        strcmp(json_string_value(json_object_get(last, "node-name")),
               h->node) != 0) {
        last = json_pack("{s:s,s:[]}", "node-name", h->node, "holders");
        json_array_append_new(list, last);
    }
    json_array_append_new(json_object_get(last, "holders"),
                          json_pack("{s:s,s:s,s:o,s:o}", "id", h->id,
                                    "kind", h->kind,
                                    "require", actions_json(h->require),
                                    "allow", actions_json(h->allow)));
    return 0;
}

void
ng_qmp_query_nac(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    json_t *list = json_array();

    (void)args;
    if (ctx->nac != NULL && ng_nac_foreach(ctx->nac, add_holding, list) < 0) {
        json_decref(list);
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    ng_qmp_return(call, list);
}
