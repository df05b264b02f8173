/* filters/backup.c: the backup job (QEMU's blockdev-backup).  In one
 * drained section it puts a copy-before-write filter above the source
 * (below nothing else: every parent of the source moves above it) and
 * takes the point in time: a job bitmap of what is still to save — all
 * of it (full, none) or the granules a user bitmap marks (incremental).
 * The copy engine saves those to the target in the background (none: only
 * the ranges clients are about to overwrite), the filter holds each
 * client write until its old data is saved.  At the end the filter comes
 * out again in a second drained section. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/cbw.h"
#include "graph/bitmap.h"
#include "graph/copy.h"

#define BACKUP_CHUNK    (256u << 10)    /* as mirror.c's, for the same
                                         * reason */
#define BACKUP_CHUNKS   16u

struct backup {
    struct ng_job *job;
    struct ng_graph *graph;
    struct ng_backup_params p;
    char *strings[5];               /* owned copies behind p's names */
    struct ng_node *source, *target, *filter;
    struct ng_bb *src_bb, *dst_bb;
    struct ng_bitmap *todo;         /* on source, not recording: not yet
                                     * saved */
    struct ng_bitmap *user;         /* incremental: the user's, busy */
    struct ng_bitmap *orig;         /* incremental: its bits at the start,
                                     * given back if the job fails */
    struct ng_copy *copy;
    ng_backup_started_fn *started;
    void *started_opaque;
    struct ng_job_hooks hooks;
    bool stopping;
    int stop_ret;
    char stop_msg[NG_ERROR_MSG_MAX];
};

/* ---- Checks ---------------------------------------------------------- */

static int
check_bitmap(struct ng_node *src, const struct ng_backup_params *p,
             struct ng_error *err)
{
    struct ng_bitmap *bm;

    if (p->sync != NG_BACKUP_SYNC_INCREMENTAL) {
        if (p->bitmap != NULL)
            return ng_error_set(err, EINVAL, "'bitmap' goes with sync "
                                "'incremental' only");
        return 0;
    }
    if (p->bitmap == NULL)
        return ng_error_set(err, EINVAL, "sync 'incremental' needs "
                            "'bitmap'");
    if ((bm = ng_bitmap_find(src, p->bitmap)) == NULL)
        return ng_error_set(err, ENOENT, "dirty bitmap '%s' not found on "
                            "node '%s'", p->bitmap, p->source);
    if (bm->busy)
        return ng_error_set(err, EBUSY, "dirty bitmap '%s' is in use by a "
                            "job", p->bitmap);
    return 0;
}

int
ng_backup_check(struct ng_graph *g, const struct ng_backup_params *p,
                struct ng_error *err)
{
    struct ng_node *src = ng_graph_find(g, p->source);
    struct ng_node *dst = ng_graph_find(g, p->target);

    if (ng_job_find(g, p->job_id) != NULL)
        return ng_error_set(err, EEXIST, "job '%s' already exists",
                            p->job_id);
    if (src == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->source);
    if (dst == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->target);
    if (src == dst)
        return ng_error_set(err, EINVAL, "source and target are both node "
                            "'%s'", p->source);
    if (dst->parents != NULL)
        return ng_error_set(err, EBUSY, "target node '%s' is in use by %s "
                            "'%s'", p->target, ng_edge_user_kind(dst->parents),
                            ng_edge_user_name(dst->parents));
    if (!(ng_node_caps(dst) & NG_CAP_WRITE))
        return ng_error_set(err, EROFS, "target node '%s' is read-only",
                            p->target);
    if (ng_node_length(src) != ng_node_length(dst))
        return ng_error_set(err, EINVAL, "target node '%s' is %" PRId64
                            " bytes, source node '%s' %" PRId64 "; they must "
                            "be the same size", p->target,
                            ng_node_length(dst), p->source,
                            ng_node_length(src));
    if (p->filter_node_name != NULL &&
        ng_graph_find(g, p->filter_node_name) != NULL)
        return ng_error_set(err, EEXIST, "node '%s' already exists",
                            p->filter_node_name);
    return check_bitmap(src, p, err);
}

/* ---- Freeing and ending ------------------------------------------------ */

/* graph_alive false: the graph went first (see struct ng_job_ops). */
static void
backup_free(struct backup *b, bool graph_alive)
{
    size_t i;

    if (b == NULL)
        return;
    if (graph_alive) {
        ng_bb_free(b->src_bb);
        ng_bb_free(b->dst_bb);
        ng_bitmap_remove(b->todo);
        ng_bitmap_remove(b->orig);
        if (b->user != NULL)
            b->user->busy = false;
    }
    ng_copy_free(b->copy);
    for (i = 0; i < 5; i++)
        free(b->strings[i]);
    free(b);
}

/* Out of the graph: BBs, our bitmaps; the user's bitmap back as it was
 * if the backup failed. */
static void
backup_release_graph(struct backup *b)
{
    ng_bb_free(b->src_bb);
    ng_bb_free(b->dst_bb);
    b->src_bb = b->dst_bb = NULL;
    if (b->user != NULL) {
        if (b->stop_ret < 0)
            ng_bitmap_merge(b->user, b->orig, NULL);
        b->user->busy = false;
        b->user = NULL;
    }
    ng_bitmap_remove(b->todo);
    ng_bitmap_remove(b->orig);
    b->todo = b->orig = NULL;
}

static void
filter_removed(void *opaque, const struct ng_error *err)
{
    struct backup *b = opaque;

    if (err != NULL && b->stop_ret == 0) {
        b->stop_ret = -err->code;
        snprintf(b->stop_msg, sizeof b->stop_msg, "%s", err->msg);
    }
    b->filter = NULL;
    backup_release_graph(b);
    ng_job_done(b->job, b->stop_ret, b->stop_msg[0] ? b->stop_msg : NULL);
}

/* The engine is idle for good: the filter passes through, then goes. */
static void
copy_stopped(void *opaque)
{
    struct backup *b = opaque;

    ng_cbw_detach(b->filter);
    ng_graph_remove_job_filter(b->graph, b->filter, filter_removed, b);
}

static void
backup_stop(struct backup *b, int ret, const char *msg)
{
    if (b->stopping)
        return;
    b->stopping = true;
    b->stop_ret = ret;
    if (msg != NULL)
        snprintf(b->stop_msg, sizeof b->stop_msg, "%s", msg);
    ng_copy_stop(b->copy);
}

/* ---- Engine callbacks ----------------------------------------------- */

static void
copy_converged(void *opaque)
{
    backup_stop(opaque, 0, NULL);   /* everything saved */
}

/* As QEMU's backup: ignore leaves the range to save and tries it again,
 * stop pauses the job until job-resume; either way a client write that
 * waited for that range failed (filters/cbw.c). */
static void
copy_error(void *opaque, bool is_read, int err)
{
    struct backup *b = opaque;
    enum ng_job_error_action a = is_read ? b->p.on_source_error
                                         : b->p.on_target_error;
    char msg[200];

    switch (ng_job_io_error(b->job, a, is_read, err)) {
    case NG_JOB_ERROR_IGNORE:
        if (b->job->pause_count == 0)
            ng_copy_retry(b->copy);
        break;
    case NG_JOB_ERROR_STOP:
        break;                      /* paused; job-resume goes on */
    default:
        snprintf(msg, sizeof msg, "%s node '%s': %s",
                 is_read ? "reading source" : "writing target",
                 is_read ? b->source->name : b->target->name,
                 strerror(-err));
        backup_stop(b, err, msg);
        break;
    }
}

static const struct ng_copy_ops backup_copy_ops = {
    .converged = copy_converged,
    .error = copy_error,
    .stopped = copy_stopped,
};

/* ---- Job operations ------------------------------------------------- */

static void
op_start(struct ng_job *job)
{
    ng_copy_resume(((struct backup *)job->state)->copy);
}

static void
op_pause(struct ng_job *job)
{
    ng_copy_pause(((struct backup *)job->state)->copy);
}

static void
op_cancel(struct ng_job *job)
{
    backup_stop(job->state, -ECANCELED, NULL);
}

static void
op_set_speed(struct ng_job *job, uint64_t speed)
{
    ng_copy_set_speed(((struct backup *)job->state)->copy, speed);
}

static void
op_progress(struct ng_job *job, uint64_t *current, uint64_t *total)
{
    struct backup *b = job->state;

    if (b->todo != NULL)
        ng_copy_progress(b->copy, current, total);
    else
        ng_copy_final_progress(b->copy, current, total);
}

static void
op_free(struct ng_job *job)
{
    backup_free(job->state, job->graph != NULL);
}

static const struct ng_job_ops backup_ops = {
    .type = "backup",
    .start = op_start,
    .pause = op_pause,
    .resume = op_start,
    .cancel = op_cancel,
    .set_speed = op_set_speed,
    .progress = op_progress,
    .free = op_free,
};

/* ---- Start ------------------------------------------------------------ */

/* The point in time: what is still to save, and (incremental) the user
 * bitmap emptied to record what changes from now on. */
static int
take_bitmaps(struct backup *b, struct ng_error *err)
{
    uint32_t gran = NG_BITMAP_GRAN_DEFAULT;

    if (b->p.sync == NG_BACKUP_SYNC_INCREMENTAL) {
        b->user = ng_bitmap_find(b->source, b->p.bitmap);
        gran = b->user->granularity;
    }
    if ((b->todo = ng_bitmap_add(b->source, NULL, gran, err)) == NULL)
        return -1;
    b->todo->recording = false;
    b->todo->busy = true;
    if (b->user == NULL) {
        ng_bitmap_set_all(b->todo);
        return 0;
    }
    if ((b->orig = ng_bitmap_add(b->source, NULL, gran, err)) == NULL)
        return -1;
    b->orig->recording = false;
    ng_bitmap_merge(b->todo, b->user, NULL);
    ng_bitmap_merge(b->orig, b->user, NULL);
    ng_bitmap_clear_all(b->user);
    b->user->busy = true;
    return 0;
}

static int
make_engine(struct backup *b, struct ng_error *err)
{
    char name[160];
    uint32_t chunk = BACKUP_CHUNK;
    struct ng_copy_params cp;

    snprintf(name, sizeof name, "#job:%s", b->p.job_id);
    if ((b->src_bb = ng_bb_new(b->graph, name, b->source, false, err)) ==
        NULL ||
        (b->dst_bb = ng_bb_new(b->graph, name, b->target, true, err)) ==
        NULL)
        return -1;
    if (chunk < b->todo->granularity)
        chunk = b->todo->granularity;
    cp = (struct ng_copy_params){
        .source = b->src_bb, .target = b->dst_bb, .bitmap = b->todo,
        .chunk = chunk, .max_in_flight = BACKUP_CHUNKS, .speed = b->p.speed,
        .on_demand = b->p.sync == NG_BACKUP_SYNC_NONE,
    };
    b->copy = ng_copy_new(b->graph->loop, &cp, &backup_copy_ops, b, err);
    return b->copy != NULL ? 0 : -1;
}

/* Drained: filter in, point in time taken, engine ready.  All or
 * nothing. */
static int
insert_filter(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct backup *b = opaque;
    struct ng_value *o = ng_job_filter_opts("copy-before-write",
                                            b->p.filter_node_name);

    if (o == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    b->filter = ng_graph_insert_filter(g, b->p.source, o, NULL, 0, 0, err);
    ng_value_free(o);
    if (b->filter == NULL)
        return -1;
    if (take_bitmaps(b, err) == -1 || make_engine(b, err) == -1) {
        backup_release_graph(b);
        ng_graph_remove_filter(g, b->filter->name, NG_MUTATE_FORCE, NULL);
        b->filter = NULL;
        return -1;
    }
    ng_cbw_attach(b->filter, b->copy);
    return 0;
}

/* The filter went in but the job could not be registered: out again, so
 * the graph is as before, then tell and free b. */
static void
start_undone(void *opaque, const struct ng_error *err)
{
    struct backup *b = opaque;
    struct ng_error why = { 0 };

    (void)err;
    b->filter = NULL;
    backup_release_graph(b);
    ng_error_set(&why, -b->stop_ret, "%s", b->stop_msg);
    b->started(b->started_opaque, &why);
    backup_free(b, true);
}

static void
start_failed(struct backup *b, const struct ng_error *err)
{
    b->stop_ret = -err->code;
    snprintf(b->stop_msg, sizeof b->stop_msg, "%s", err->msg);
    ng_graph_remove_job_filter(b->graph, b->filter, start_undone, b);
}

static void
filter_inserted(void *opaque, const struct ng_error *err)
{
    struct backup *b = opaque;
    struct ng_error jerr = { 0 };
    ng_backup_started_fn *started = b->started;
    void *started_opaque = b->started_opaque;

    if (err != NULL) {
        started(started_opaque, err);
        backup_free(b, true);
        return;
    }
    ng_cbw_detach(b->filter);       /* passes through until the job is in */
    b->job = ng_job_new(b->graph, b->p.job_id, b->p.job_id, &backup_ops, b,
                        &b->hooks, b->p.auto_finalize, b->p.auto_dismiss,
                        b->p.speed, &jerr);
    if (b->job == NULL) {
        start_failed(b, &jerr);
        return;
    }
    ng_cbw_attach(b->filter, b->copy);
    b->src_bb->job_id = b->dst_bb->job_id = b->job->id;
    ng_job_start(b->job);
    started(started_opaque, NULL);
}

/* Own copies of the caller's strings. */
static int
copy_params(struct backup *b, const struct ng_backup_params *p)
{
    char gen[160];
    const char **fields[5] = { &b->p.job_id, &b->p.source, &b->p.target,
                               &b->p.bitmap, &b->p.filter_node_name };
    size_t i;

    b->p = *p;
    if (b->p.filter_node_name == NULL) {
        snprintf(gen, sizeof gen, "cbw-%s", p->job_id);
        b->p.filter_node_name = gen;
    }
    for (i = 0; i < 5; i++) {
        if (*fields[i] == NULL)
            continue;
        if ((b->strings[i] = strdup(*fields[i])) == NULL)
            return -1;
        *fields[i] = b->strings[i];
    }
    return 0;
}

int
ng_backup_start(struct ng_graph *g, const struct ng_backup_params *p,
                const struct ng_job_hooks *hooks,
                ng_backup_started_fn *started, void *opaque,
                struct ng_error *err)
{
    struct backup *b;

    if (ng_backup_check(g, p, err) == -1)
        return -1;
    b = calloc(1, sizeof *b);
    if (b == NULL || copy_params(b, p) == -1) {
        backup_free(b, true);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    b->graph = g;
    b->hooks = *hooks;
    b->started = started;
    b->started_opaque = opaque;
    b->source = ng_graph_find(g, p->source);
    b->target = ng_graph_find(g, p->target);
    if (ng_graph_mutate(g, b->source, insert_filter, filter_inserted, b,
                        err) == -1) {
        backup_free(b, true);
        return -1;
    }
    return 0;
}
