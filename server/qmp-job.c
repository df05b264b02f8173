/* server/qmp-job.c: QMP commands on dirty bitmaps and block jobs —
 * block-dirty-bitmap-*, blockdev-mirror, query-jobs, job-* and the older
 * block-job-* spellings, with QEMU's names and arguments — and the
 * job events.  Every job is a NAC holder (kind "job") from before it
 * touches anything until it is dismissed. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/cbw.h"
#include "graph/bitmap.h"
#include "graph/graph.h"
#include "graph/job.h"
#include "graph/mirror.h"
#include "nac/nac.h"
#include "nac/policy.h"
#include "server/exports.h"
#include "server/nbd.h"
#include "server/qmp-graph.h"
#include "server/qmp-util.h"

/* ---- Dirty bitmaps ------------------------------------------------------ */

json_t *
ng_qmp_bitmaps_json(struct ng_node *n)
{
    json_t *list = json_array();
    struct ng_bitmap *bm;

    for (bm = n->bitmaps; bm != NULL; bm = bm->next) {
        if (bm->name == NULL)
            continue;               /* a job's own */
        json_array_append_new(list, json_pack(
            "{s:s,s:I,s:I,s:b,s:b,s:b}", "name", bm->name,
            "granularity", (json_int_t)bm->granularity,
            "count", (json_int_t)ng_bitmap_dirty_bytes(bm),
            "recording", bm->recording, "busy", bm->busy,
            "persistent", false));
    }
    return list;
}

/* The bitmap `name` on node `node`, not busy unless `busy_ok`. */
static struct ng_bitmap *
find_bitmap(struct ng_control_ctx *ctx, const char *node, const char *name,
            bool busy_ok, struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(ctx->graph, node);
    struct ng_bitmap *bm;

    if (n == NULL) {
        ng_error_set(err, ENOENT, "node '%s' not found", node);
        return NULL;
    }
    bm = ng_bitmap_find(n, name);
    if (bm == NULL) {
        ng_error_set(err, ENOENT, "dirty bitmap '%s' not found on node '%s'",
                     name, node);
        return NULL;
    }
    if (bm->busy && !busy_ok) {
        ng_error_set(err, EBUSY, "dirty bitmap '%s' is in use by a job or an "
                     "export and cannot be changed", name);
        return NULL;
    }
    return bm;
}

static const char *
arg_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

void
ng_qmp_bitmap_add(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    const char *node = arg_str(args, "node"), *name = arg_str(args, "name");
    json_t *jg = json_object_get(args, "granularity");
    json_int_t gran = jg ? json_integer_value(jg) : NG_BITMAP_GRAN_DEFAULT;
    struct ng_error err = { 0 };
    struct ng_node *n = ng_graph_find(ctx->graph, node);
    struct ng_bitmap *bm;

    if (n == NULL) {
        ng_qmp_error(call, NG_QMP_GENERIC, "node '%s' not found", node);
        return;
    }
    if (json_is_true(json_object_get(args, "persistent"))) {
        ng_qmp_error(call, NG_QMP_GENERIC, "persistent dirty bitmaps are not "
                     "supported");
        return;
    }
    if (gran <= 0 || gran > NG_BITMAP_GRAN_MAX) {
        ng_qmp_error(call, NG_QMP_GENERIC, "granularity must be a power of "
                     "two from 512 to 64M, not %" JSON_INTEGER_FORMAT, gran);
        return;
    }
    bm = ng_bitmap_add(n, name, (uint32_t)gran, &err);
    if (bm == NULL) {
        ng_qmp_error_from(call, &err);
        return;
    }
    bm->recording = !json_is_true(json_object_get(args, "disabled"));
    ng_qmp_return(call, NULL);
}

/* remove, clear, enable, disable: find, then one change. */
static void
bitmap_command(struct ng_qmp_call *call, json_t *args,
               void (*change)(struct ng_bitmap *bm))
{
    struct ng_error err = { 0 };
    struct ng_bitmap *bm = find_bitmap(ng_qmp_ctx(call), arg_str(args, "node"),
                                       arg_str(args, "name"), false, &err);

    if (bm == NULL) {
        ng_qmp_error_from(call, &err);
        return;
    }
    change(bm);
    ng_qmp_return(call, NULL);
}

static void
bitmap_enable(struct ng_bitmap *bm)
{
    bm->recording = true;
}

static void
bitmap_disable(struct ng_bitmap *bm)
{
    bm->recording = false;
}

void
ng_qmp_bitmap_remove(struct ng_qmp_call *call, json_t *args)
{
    bitmap_command(call, args, ng_bitmap_remove);
}

void
ng_qmp_bitmap_clear(struct ng_qmp_call *call, json_t *args)
{
    bitmap_command(call, args, ng_bitmap_clear_all);
}

void
ng_qmp_bitmap_enable(struct ng_qmp_call *call, json_t *args)
{
    bitmap_command(call, args, bitmap_enable);
}

void
ng_qmp_bitmap_disable(struct ng_qmp_call *call, json_t *args)
{
    bitmap_command(call, args, bitmap_disable);
}

/* One source of a merge: a name on `node`, or {"node":..,"name":..}. */
static struct ng_bitmap *
merge_source(struct ng_control_ctx *ctx, const char *node, json_t *item,
             struct ng_error *err)
{
    if (json_is_string(item))
        return find_bitmap(ctx, node, json_string_value(item), true, err);
    if (json_is_object(item) && arg_str(item, "node") != NULL &&
        arg_str(item, "name") != NULL)
        return find_bitmap(ctx, arg_str(item, "node"), arg_str(item, "name"),
                           true, err);
    ng_error_set(err, EINVAL, "'bitmaps' lists bitmap names or "
                 "{\"node\", \"name\"} objects");
    return NULL;
}

/* All sources are checked before the target changes. */
void
ng_qmp_bitmap_merge(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    const char *node = arg_str(args, "node");
    json_t *list = json_object_get(args, "bitmaps"), *item;
    struct ng_error err = { 0 };
    struct ng_bitmap *dst, *src;
    size_t i;

    dst = find_bitmap(ctx, node, arg_str(args, "target"), false, &err);
    if (dst == NULL)
        goto fail;
    json_array_foreach(list, i, item) {
        if ((src = merge_source(ctx, node, item, &err)) == NULL)
            goto fail;
        if (src->size != dst->size || src->granularity != dst->granularity) {
            ng_error_set(&err, EINVAL, "dirty bitmap '%s' differs from '%s' "
                         "in size or granularity", src->name, dst->name);
            goto fail;
        }
    }
    json_array_foreach(list, i, item)
        ng_bitmap_merge(dst, merge_source(ctx, node, item, NULL), NULL);
    ng_qmp_return(call, NULL);
    return;

fail:
    ng_qmp_error_from(call, &err);
}

/* ---- Job events --------------------------------------------------------- */

static json_t *
block_job_info(struct ng_job *job)
{
    uint64_t cur, total;

    ng_job_progress(job, &cur, &total);
    return json_pack("{s:s,s:s,s:I,s:I,s:I}", "type", job->ops->type,
                     "device", job->id, "len", (json_int_t)total,
                     "offset", (json_int_t)cur, "speed",
                     (json_int_t)job->speed);
}

static void
job_event(void *opaque, struct ng_job *job, enum ng_job_event ev,
          bool is_read, enum ng_job_error_action action)
{
    struct ng_control_ctx *ctx = opaque;
    json_t *data;

    if (ctx->control == NULL)
        return;
    switch (ev) {
    case NG_JOB_EV_STATUS:
        ng_control_emit(ctx->control, "JOB_STATUS_CHANGE", json_pack(
            "{s:s,s:s}", "id", job->id, "status",
            ng_job_status_name(job->status)));
        return;
    case NG_JOB_EV_READY:
        ng_control_emit(ctx->control, "BLOCK_JOB_READY", block_job_info(job));
        return;
    case NG_JOB_EV_COMPLETED:
        data = block_job_info(job);
        if (job->ret < 0)
            json_object_set_new(data, "error", json_string(job->error));
        ng_control_emit(ctx->control, "BLOCK_JOB_COMPLETED", data);
        return;
    case NG_JOB_EV_CANCELLED:
        ng_control_emit(ctx->control, "BLOCK_JOB_CANCELLED",
                        block_job_info(job));
        return;
    case NG_JOB_EV_ERROR:
        ng_control_emit(ctx->control, "BLOCK_JOB_ERROR", json_pack(
            "{s:s,s:s,s:s}", "device", job->id, "operation",
            is_read ? "read" : "write", "action",
            ng_job_error_action_name(action)));
        return;
    }
}

static void
job_gone(void *opaque, struct ng_job *job)
{
    ng_ctx_nac_release(opaque, job->id);
}

/* The job no longer touches anything; what used the source now uses the
 * target, and its claims follow. */
static void
job_pivoted(void *opaque, struct ng_job *job, const char *from,
            const char *to)
{
    struct ng_control_ctx *ctx = opaque;

    if (ctx->nac != NULL)
        ng_nac_replace(ctx->nac, job->id, NULL, 0, NULL);
    ng_exports_follow_node(ctx, from, to);
    if (ctx->nbd != NULL)
        ng_nbd_server_follow_bitmaps(ctx->nbd, from, to);
    ng_qmp_graph_changed(ctx, "node-replaced", job->id,
                         json_pack("{s:s,s:s}", "node-name", from,
                                   "replacement", to));
}

static struct ng_job_hooks
job_hooks(struct ng_control_ctx *ctx)
{
    return (struct ng_job_hooks){ .event = job_event, .gone = job_gone,
                                  .pivoted = job_pivoted, .opaque = ctx };
}

/* ---- Starting a job ----------------------------------------------------- */

/* A job command waiting for its job to start (a filter goes in first). */
struct job_call {
    struct ng_qmp_call *call;
    struct ng_control_ctx *ctx;
    char job_id[NG_NAC_NAME_MAX];
};

/* The job runs (err NULL) or is gone: answer, and release the claims of
 * a job that never ran. */
static void
job_started(void *opaque, const struct ng_error *err)
{
    struct job_call *jc = opaque;

    if (err != NULL) {
        ng_ctx_nac_release(jc->ctx, jc->job_id);
        ng_qmp_error_from(jc->call, err);
    } else {
        ng_qmp_return(jc->call, NULL);
    }
    free(jc);
}

void
ng_qmp_job_run(struct ng_qmp_call *call, struct ng_control_ctx *ctx,
               const char *job_id, const struct ng_nac_claim *claims,
               size_t n_claims, bool dry, ng_qmp_job_start_fn *start,
               const void *params)
{
    struct ng_job_hooks hooks = job_hooks(ctx);
    struct ng_error err = { 0 };
    struct job_call *jc;

    if (ng_ctx_nac_claim(ctx, job_id, "job", claims, n_claims, dry,
                         &err) == -1) {
        ng_qmp_error_from(call, &err);
        return;
    }
    if (dry) {
        ng_qmp_return(call, NULL);
        return;
    }
    if ((jc = calloc(1, sizeof *jc)) == NULL) {
        ng_error_set(&err, ENOMEM, "out of memory");
    } else {
        jc->call = call;
        jc->ctx = ctx;
        snprintf(jc->job_id, sizeof jc->job_id, "%s", job_id);
        if (start(ctx->graph, params, &hooks, job_started, jc, &err) == 0)
            return;                 /* job_started answers */
        free(jc);
    }
    ng_ctx_nac_release(ctx, job_id);
    ng_qmp_error_from(call, &err);
}

int
ng_qmp_start_mirror(struct ng_graph *g, const void *params,
                    const struct ng_job_hooks *hooks,
                    ng_qmp_job_started_fn *started, void *opaque,
                    struct ng_error *err)
{
    return ng_mirror_start(g, params, hooks, started, opaque, err);
}

static int
start_backup(struct ng_graph *g, const void *params,
             const struct ng_job_hooks *hooks, ng_qmp_job_started_fn *started,
             void *opaque, struct ng_error *err)
{
    return ng_backup_start(g, params, hooks, started, opaque, err);
}

/* ---- blockdev-mirror ---------------------------------------------------- */

/* An optional error-action argument; -1 with *err. */
static int
error_action_arg(json_t *args, const char *key, int *out,
                 struct ng_error *err)
{
    const char *s = arg_str(args, key);

    *out = NG_JOB_ERROR_REPORT;
    if (s == NULL)
        return 0;
    if ((*out = ng_job_error_action_parse(s)) < 0)
        return ng_error_set(err, EINVAL, "'%s' must be 'report', 'ignore', "
                            "'stop' or 'enospc', not '%s'", key, s);
    return 0;
}

static int
sync_arg(json_t *args, enum ng_mirror_sync *out, struct ng_error *err)
{
    const char *s = arg_str(args, "sync");

    if (strcmp(s, "full") == 0)
        *out = NG_MIRROR_SYNC_FULL;
    else if (strcmp(s, "top") == 0)
        *out = NG_MIRROR_SYNC_TOP;
    else if (strcmp(s, "none") == 0)
        *out = NG_MIRROR_SYNC_NONE;
    else
        return ng_error_set(err, EINVAL, "'sync' must be 'full', 'top' or "
                            "'none', not '%s'", s);
    return 0;
}

/* A non-negative integer argument, `def` when absent. */
static int
size_arg(json_t *args, const char *key, uint64_t def, uint64_t *out,
         struct ng_error *err)
{
    json_t *j = json_object_get(args, key);

    *out = def;
    if (j == NULL)
        return 0;
    if (json_integer_value(j) < 0)
        return ng_error_set(err, EINVAL, "'%s' must not be negative", key);
    *out = (uint64_t)json_integer_value(j);
    return 0;
}

static bool
bool_arg(json_t *args, const char *key, bool def)
{
    json_t *j = json_object_get(args, key);

    return j != NULL ? json_is_true(j) : def;
}

int
ng_qmp_job_args(json_t *args, const char *device, struct ng_qmp_job_args *out,
                struct ng_error *err)
{
    out->job_id = arg_str(args, "job-id");
    if (out->job_id == NULL)
        out->job_id = device;       /* QEMU: the device name */
    out->auto_finalize = bool_arg(args, "auto-finalize", true);
    out->auto_dismiss = bool_arg(args, "auto-dismiss", true);
    return size_arg(args, "speed", 0, &out->speed, err);
}

static int
mirror_params(json_t *args, struct ng_mirror_params *p, struct ng_error *err)
{
    const char *mode = arg_str(args, "copy-mode");
    struct ng_qmp_job_args ja;
    uint64_t gran;
    int src_act, dst_act;

    if (mode != NULL && strcmp(mode, "background") != 0 &&
        strcmp(mode, "write-blocking") != 0)
        return ng_error_set(err, EINVAL, "'copy-mode' must be 'background' "
                            "or 'write-blocking', not '%s'", mode);
    p->write_blocking = mode != NULL && strcmp(mode, "write-blocking") == 0;
    p->filter_node_name = arg_str(args, "filter-node-name");
    p->source = arg_str(args, "device");
    p->target = arg_str(args, "target");
    if (sync_arg(args, &p->sync, err) == -1 ||
        size_arg(args, "granularity", 0, &gran, err) == -1 ||
        size_arg(args, "buf-size", 0, &p->buf_size, err) == -1 ||
        ng_qmp_job_args(args, p->source, &ja, err) == -1 ||
        error_action_arg(args, "on-source-error", &src_act, err) == -1 ||
        error_action_arg(args, "on-target-error", &dst_act, err) == -1)
        return -1;
    if (gran > NG_BITMAP_GRAN_MAX)
        return ng_error_set(err, EINVAL, "granularity must be a power of two "
                            "from 512 to 64M");
    p->granularity = (uint32_t)gran;
    p->on_source_error = src_act;
    p->on_target_error = dst_act;
    p->job_id = ja.job_id;
    p->speed = ja.speed;
    p->auto_finalize = ja.auto_finalize;
    p->auto_dismiss = ja.auto_dismiss;
    return 0;
}

int
ng_qmp_mirror_check(struct ng_control_ctx *ctx,
                    const struct ng_mirror_params *p, struct ng_error *err)
{
    if (ng_mirror_check(ctx->graph, p, err) == -1)
        return -1;
    /* An intermediate commit moves no export. */
    if (ctx->nbd != NULL && (!p->commit || p->overlay == NULL))
        return ng_nbd_server_check_follow_bitmaps(ctx->nbd, p->source,
                                                  p->target, err);
    return 0;
}

/* The claim on a job's filter node: it stays where the job put it (a
 * reload that prunes what the control channel made must not take it
 * out). */
struct ng_nac_claim
ng_qmp_filter_claim(const char *filter)
{
    return (struct ng_nac_claim){ filter, 0, NG_NAC_ALL & ~NG_NAC_GRAPH_MOD };
}

void
ng_qmp_blockdev_mirror(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    struct ng_mirror_params p = { 0 };
    struct ng_error err = { 0 };
    struct ng_nac_claim claims[3];
    char filter[NG_NAC_NAME_MAX];

    if (mirror_params(args, &p, &err) == -1)
        goto fail;
    if (p.write_blocking && p.filter_node_name == NULL) {
        snprintf(filter, sizeof filter, "mirror-top-%s", p.job_id);
        p.filter_node_name = filter;
    }
    if (ng_qmp_mirror_check(ctx, &p, &err) == -1)
        goto fail;
    claims[0] = (struct ng_nac_claim){ p.source,
                                       NG_NAC_MIRROR_SOURCE_REQUIRE,
                                       NG_NAC_MIRROR_SOURCE_ALLOW };
    claims[1] = (struct ng_nac_claim){ p.target,
                                       NG_NAC_MIRROR_TARGET_REQUIRE,
                                       NG_NAC_MIRROR_TARGET_ALLOW };
    if (p.filter_node_name != NULL)
        claims[2] = ng_qmp_filter_claim(p.filter_node_name);
    ng_qmp_job_run(call, ctx, p.job_id, claims,
                   p.filter_node_name != NULL ? 3 : 2, ng_qmp_dry_run(args),
                   ng_qmp_start_mirror, &p);
    return;

fail:
    ng_qmp_error_from(call, &err);
}

/* ---- blockdev-backup ---------------------------------------------------- */

static int
backup_params(json_t *args, struct ng_backup_params *p, struct ng_error *err)
{
    const char *sync = arg_str(args, "sync");
    struct ng_qmp_job_args ja;
    int src_act, dst_act;

    p->source = arg_str(args, "device");
    p->target = arg_str(args, "target");
    p->bitmap = arg_str(args, "bitmap");
    p->filter_node_name = arg_str(args, "filter-node-name");
    if (strcmp(sync, "full") == 0)
        p->sync = NG_BACKUP_SYNC_FULL;
    else if (strcmp(sync, "none") == 0)
        p->sync = NG_BACKUP_SYNC_NONE;
    else if (strcmp(sync, "incremental") == 0)
        p->sync = NG_BACKUP_SYNC_INCREMENTAL;
    else
        return ng_error_set(err, EINVAL, "'sync' must be 'full', 'none' or "
                            "'incremental', not '%s'", sync);
    if (ng_qmp_job_args(args, p->source, &ja, err) == -1 ||
        error_action_arg(args, "on-source-error", &src_act, err) == -1 ||
        error_action_arg(args, "on-target-error", &dst_act, err) == -1)
        return -1;
    p->on_source_error = src_act;
    p->on_target_error = dst_act;
    p->job_id = ja.job_id;
    p->speed = ja.speed;
    p->auto_finalize = ja.auto_finalize;
    p->auto_dismiss = ja.auto_dismiss;
    return 0;
}

void
ng_qmp_blockdev_backup(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    struct ng_backup_params p = { 0 };
    struct ng_error err = { 0 };
    struct ng_nac_claim claims[3];
    char filter[NG_NAC_NAME_MAX];

    if (backup_params(args, &p, &err) == -1)
        goto fail;
    if (p.filter_node_name == NULL) {
        snprintf(filter, sizeof filter, "cbw-%s", p.job_id);
        p.filter_node_name = filter;
    }
    if (ng_backup_check(ctx->graph, &p, &err) == -1)
        goto fail;
    claims[0] = (struct ng_nac_claim){ p.source,
                                       NG_NAC_BACKUP_SOURCE_REQUIRE,
                                       NG_NAC_BACKUP_SOURCE_ALLOW };
    claims[1] = (struct ng_nac_claim){ p.target,
                                       NG_NAC_BACKUP_TARGET_REQUIRE,
                                       NG_NAC_BACKUP_TARGET_ALLOW };
    claims[2] = ng_qmp_filter_claim(p.filter_node_name);
    ng_qmp_job_run(call, ctx, p.job_id, claims, 3, ng_qmp_dry_run(args),
                   start_backup, &p);
    return;

fail:
    ng_qmp_error_from(call, &err);
}

/* ---- Job verbs and queries ---------------------------------------------- */

/* The job named by `key` ("id" for job-*, "device" for block-job-*). */
static struct ng_job *
job_arg(struct ng_qmp_call *call, json_t *args, const char *key)
{
    const char *id = arg_str(args, key);
    struct ng_job *job = ng_job_find(ng_qmp_ctx(call)->graph, id);

    if (job == NULL)
        ng_qmp_error(call, NG_QMP_DEVICE_NOT_FOUND, "job '%s' not found", id);
    return job;
}

static void
job_verb(struct ng_qmp_call *call, json_t *args, const char *key,
         int (*verb)(struct ng_job *, struct ng_error *))
{
    struct ng_job *job = job_arg(call, args, key);
    struct ng_error err = { 0 };

    if (job == NULL)
        return;
    if (verb(job, &err) == -1)
        ng_qmp_error_from(call, &err);
    else
        ng_qmp_return(call, NULL);
}

void
ng_qmp_job_pause(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "id", ng_job_pause);
}

void
ng_qmp_job_resume(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "id", ng_job_resume);
}

void
ng_qmp_job_cancel(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "id", ng_job_cancel);
}

void
ng_qmp_job_complete(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "id", ng_job_complete);
}

static void
job_finalized(void *opaque)
{
    ng_qmp_return(opaque, NULL);
}

/* Answered once the job concluded, as QEMU's (whose finalize is
 * synchronous): after its BLOCK_JOB_COMPLETED, also when the change
 * takes a drained section of its own (a stream's cut chain). */
void
ng_qmp_job_finalize(struct ng_qmp_call *call, json_t *args)
{
    struct ng_job *job = job_arg(call, args, "id");
    struct ng_error err = { 0 };

    if (job != NULL &&
        ng_job_finalize(job, job_finalized, call, &err) == -1)
        ng_qmp_error_from(call, &err);
}

void
ng_qmp_job_dismiss(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "id", ng_job_dismiss);
}

void
ng_qmp_block_job_pause(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "device", ng_job_pause);
}

void
ng_qmp_block_job_resume(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "device", ng_job_resume);
}

/* Without "force", a ready mirror finishes in place (QEMU's soft
 * cancel); job-cancel is always a forced one, as QEMU's. */
void
ng_qmp_block_job_cancel(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "device",
             json_is_true(json_object_get(args, "force")) ? ng_job_cancel
                                                          : ng_job_cancel_soft);
}

void
ng_qmp_block_job_complete(struct ng_qmp_call *call, json_t *args)
{
    job_verb(call, args, "device", ng_job_complete);
}

void
ng_qmp_block_job_set_speed(struct ng_qmp_call *call, json_t *args)
{
    struct ng_job *job = job_arg(call, args, "device");
    struct ng_error err = { 0 };

    if (job == NULL)
        return;
    if (ng_job_set_speed(job, json_integer_value(json_object_get(args,
                                                                 "speed")),
                         &err) == -1)
        ng_qmp_error_from(call, &err);
    else
        ng_qmp_return(call, NULL);
}

static void
add_job_info(void *opaque, const struct ng_object_type *type, const char *id,
             void *obj)
{
    struct ng_job *job = obj;
    uint64_t cur, total;
    json_t *j;

    (void)type;
    (void)id;
    ng_job_progress(job, &cur, &total);
    j = json_pack("{s:s,s:s,s:s,s:I,s:I}", "id", job->id, "type",
                  job->ops->type, "status", ng_job_status_name(job->status),
                  "current-progress", (json_int_t)cur, "total-progress",
                  (json_int_t)total);
    if (job->ret < 0)           /* a cancelled one too, as in QEMU */
        json_object_set_new(j, "error", json_string(job->error));
    json_array_append_new(opaque, j);
}

static void
add_block_job_info(void *opaque, const struct ng_object_type *type,
                   const char *id, void *obj)
{
    struct ng_job *job = obj;
    json_t *j;

    (void)type;
    (void)id;
    j = block_job_info(job);
    json_object_update_new(j, json_pack(
        "{s:s,s:b,s:b,s:b,s:b,s:b,s:s}", "status",
        ng_job_status_name(job->status), "busy", false, "paused",
        job->pause_count > 0, "ready",
        job->status == NG_JOB_READY || job->status == NG_JOB_STANDBY,
        "auto-finalize", job->auto_finalize, "auto-dismiss",
        job->auto_dismiss, "io-status",
        ng_job_iostatus_name(job->iostatus)));
    json_array_append_new(opaque, j);
}

/* Answer with a list of every job, as `add` describes each. */
static void
list_jobs(struct ng_qmp_call *call, ng_object_fn *add)
{
    json_t *list = json_array();

    ng_graph_object_foreach(ng_qmp_ctx(call)->graph, &ng_job_type, add,
                            list);
    ng_qmp_return(call, list);
}

void
ng_qmp_query_jobs(struct ng_qmp_call *call, json_t *args)
{
    (void)args;
    list_jobs(call, add_job_info);
}

void
ng_qmp_query_block_jobs(struct ng_qmp_call *call, json_t *args)
{
    (void)args;
    list_jobs(call, add_block_job_info);
}

/* ---- For the chain jobs (server/qmp-snapshot.c) ------------------------- */

int
ng_qmp_error_action_arg(json_t *args, const char *key, int *out,
                        struct ng_error *err)
{
    return error_action_arg(args, key, out, err);
}

const char *
ng_qmp_str_arg(json_t *args, const char *key)
{
    return arg_str(args, key);
}
