/* graph/mirror.c: the mirror job (see mirror.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "graph/copy.h"
#include "graph/graph.h"
#include "graph/mirror.h"
#include "graph/value.h"

#define MIRROR_BUF_DEFAULT      (16u << 20)
#define MIRROR_CHUNKS           16u
/* Bigger chunks copy no faster on a fast target, and a chunk that
 * completes inline (a memory source read, a write to a file on tmpfs)
 * holds the loop for its whole length: a 256 KiB one for ~200 us on a
 * busy machine, while clients wait. */
#define MIRROR_CHUNK_MAX        (64u << 10)
/* sync "top": the source's own layer is read this much at a time. */
#define MIRROR_SCAN_EXTENTS     64u
#define MIRROR_SCAN_MAX         (UINT64_C(1) << 30)

struct mirror {
    struct ng_job *job;
    struct ng_graph *graph;
    struct ng_node *source, *target;    /* the job's claims keep them */
    struct ng_bb *src_bb, *dst_bb;      /* owned until the engine stops */
    struct ng_bitmap *bitmap;           /* on source, owned likewise */
    struct ng_copy *copy;
    struct ng_mirror_params p;
    char *source_name, *target_name;    /* owned copies for p */
    bool completing;                    /* job-complete was asked */
    bool in_place;                      /* ... as a soft cancel: the
                                         * same end, but no pivot */
    bool settled;                       /* the last bits are copied in
                                         * the section, which stays open
                                         * for finalize: commit moves,
                                         * abort ends it, nothing moved */
    struct ng_drain *drain;             /* the pivot's section, or NULL */
    bool drain_fired;                   /* ... and clients are quiet */
    bool stopping;                      /* the engine is stopping */
    bool stop_deferred;                 /* stop once the drain fires */
    int stop_ret;                       /* what ng_job_done gets */
    char stop_msg[NG_ERROR_MSG_MAX];
    struct ng_req flush;                /* the target's, once settled */
    /* sync "top": what the source's own layer holds goes into the
     * bitmap before the engine starts; a commit: what the layers above
     * the base hold (their allocation depth is 1 .. base_depth - 1). */
    bool scanning;
    uint32_t base_depth;                /* the base's; 0: not a commit */
    bool scan_in_submit, scan_inline_done;
    bool paused;                        /* job-pause'd, not resumed */
    bool stop_after_scan;               /* mirror_stop() came meanwhile */
    uint64_t scan_pos;
    int scan_ret;
    struct ng_req scan;
    struct ng_extent scan_ext[MIRROR_SCAN_EXTENTS];
    struct ng_node *overlay;            /* intermediate commit's */
    struct ng_job_backing_change repoint;   /* its finalize */
    char *overlay_name;
    struct ng_node *filter;             /* mirror_top, or NULL */
    char *filter_name;
    char *job_id;                       /* until the job has its own */
    struct ng_job_hooks hooks;          /* until the job has them */
    ng_mirror_started_fn *started;
    void *started_opaque;
};

static void mirror_try_pivot(struct mirror *m);
static void mirror_settle(struct mirror *m);
static void start_failed(struct mirror *m, const struct ng_error *err);

/* ---- Checks ---------------------------------------------------------- */

static bool
is_power_of_two(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* sync "top" copies only the source's own layer: the target must read
 * the rest from the same backing node, as QEMU's blockdev-mirror
 * expects of a target the user made. */
static int
check_top(struct ng_node *src, struct ng_node *dst,
          const struct ng_mirror_params *p, struct ng_error *err)
{
    struct ng_node *backing = ng_node_child_role(src, NG_ROLE_BACKING);

    if (p->sync != NG_MIRROR_SYNC_TOP || backing == NULL)
        return 0;
    if (ng_node_child_role(dst, NG_ROLE_BACKING) != backing)
        return ng_error_set(err, EINVAL, "sync 'top': target node '%s' must "
                            "have the source's backing node '%s' as its "
                            "backing", p->target, backing->name);
    return 0;
}

static int
check_nodes(struct ng_graph *g, const struct ng_mirror_params *p,
            struct ng_error *err)
{
    struct ng_node *src = ng_graph_find(g, p->source);
    struct ng_node *dst = ng_graph_find(g, p->target);

    if (src == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->source);
    if (dst == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->target);
    if (src == dst)
        return ng_error_set(err, EINVAL, "source and target are both node "
                            "'%s'", p->source);
    if (dst->parents != NULL)
        return ng_error_set(err, EBUSY, "target node '%s' is in use by %s "
                            "'%s'", p->target,
                            ng_edge_user_kind(dst->parents),
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
    return check_top(src, dst, p, err);
}

static struct ng_node *
backing_of(struct ng_node *n)
{
    return ng_node_child_role(n, NG_ROLE_BACKING);
}

/* Commit: base below top in its chain, the overlay (if any) right above
 * top; the base may be in use (it is, as a backing node). */
static int
check_commit_nodes(struct ng_graph *g, const struct ng_mirror_params *p,
                   struct ng_error *err)
{
    struct ng_node *top = ng_graph_find(g, p->source);
    struct ng_node *base = ng_graph_find(g, p->target), *n;

    if (top == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->source);
    if (base == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->target);
    for (n = backing_of(top); n != NULL && n != base; n = backing_of(n))
        ;
    if (n == NULL)
        return ng_error_set(err, EINVAL, "node '%s' is not in the backing "
                            "chain of node '%s'", p->target, p->source);
    if (!(ng_node_caps(base) & NG_CAP_WRITE))
        return ng_error_set(err, EROFS, "base node '%s' is read-only",
                            p->target);
    if (ng_node_length(base) < ng_node_length(top))
        return ng_error_set(err, EINVAL, "base node '%s' is %" PRId64
                            " bytes, smaller than top node '%s' (%" PRId64
                            ")", p->target, ng_node_length(base), p->source,
                            ng_node_length(top));
    if (p->overlay == NULL)
        return 0;
    n = ng_graph_find(g, p->overlay);
    if (n == NULL || backing_of(n) != top)
        return ng_error_set(err, EINVAL, "node '%s' is not the overlay of "
                            "node '%s'", p->overlay, p->source);
    return ng_node_check_set_backing(n, base, err);
}

int
ng_mirror_check(struct ng_graph *g, const struct ng_mirror_params *p,
                struct ng_error *err)
{
    uint32_t gran = p->granularity ? p->granularity
                                   : NG_BITMAP_GRAN_DEFAULT;

    if (ng_graph_object_find(g, &ng_job_type, p->job_id) != NULL)
        return ng_error_set(err, EEXIST, "job '%s' already exists",
                            p->job_id);
    if (!is_power_of_two(gran) || gran < NG_BITMAP_GRAN_MIN ||
        gran > NG_BITMAP_GRAN_MAX)
        return ng_error_set(err, EINVAL, "granularity must be a power of two "
                            "from 512 to 64M, not %" PRIu32, gran);
    if (p->buf_size != 0 && p->buf_size < gran)
        return ng_error_set(err, EINVAL, "buf-size %" PRIu64 " is smaller "
                            "than the granularity %" PRIu32, p->buf_size,
                            gran);
    if (p->buf_size > (1ull << 30))
        return ng_error_set(err, EINVAL, "buf-size %" PRIu64 " is more than "
                            "1G", p->buf_size);
    if (p->write_blocking && p->filter_node_name == NULL)
        return ng_error_set(err, EINVAL, "copy-mode 'write-blocking' needs "
                            "a filter node name");
    if (p->filter_node_name != NULL &&
        ng_graph_find(g, p->filter_node_name) != NULL)
        return ng_error_set(err, EEXIST, "filter-node-name '%s': node '%s' "
                            "already exists", p->filter_node_name,
                            p->filter_node_name);
    if (p->commit)
        return check_commit_nodes(g, p, err);
    return check_nodes(g, p, err);
}

/* ---- Stopping ----------------------------------------------------------- */

static void
tell_done(struct mirror *m)
{
    ng_job_done(m->job, m->stop_ret, m->stop_msg[0] ? m->stop_msg : NULL);
}

static void
filter_removed(void *opaque, const struct ng_error *err)
{
    struct mirror *m = opaque;

    m->filter = NULL;
    if (err != NULL && m->stop_ret == 0) {
        m->stop_ret = -err->code;
        snprintf(m->stop_msg, sizeof m->stop_msg, "%s", err->msg);
    }
    tell_done(m);
}

/* The engine is idle for good: drop the BBs and the bitmap so nothing of
 * the job stays in the graph, take the filter out, then tell the job how
 * it ended. */
static void
mirror_finish(struct mirror *m)
{
    if (m->filter != NULL)
        ng_mirror_top_detach(m->filter);
    ng_bb_free(m->src_bb);
    ng_bb_free(m->dst_bb);
    m->src_bb = m->dst_bb = NULL;
    ng_bitmap_remove(m->bitmap);
    m->bitmap = NULL;
    if (m->filter == NULL)
        tell_done(m);
    else
        ng_graph_remove_job_filter(m->graph, m->filter, filter_removed, m);
}

static void
flush_done(struct ng_req *req, int ret)
{
    struct mirror *m = req->opaque;

    if (ret < 0 && m->stop_ret == 0) {
        m->stop_ret = ret;
        snprintf(m->stop_msg, sizeof m->stop_msg, "flushing target node "
                 "'%s': %s", m->target->name, strerror(-ret));
    }
    mirror_finish(m);
}

static void
copy_stopped(void *opaque)
{
    struct mirror *m = opaque;

    if (m->settled && m->stop_ret == 0) {
        /* Before the job is done, as QEMU's mirror_run flushes in its
         * drained section: the clients wait for it (and for finalize),
         * but the loop does not, so it goes off the loop with what it
         * takes along (a qcow2 target's write-back of its tables,
         * NG_REQ_INHERITED). */
        ng_req_init(&m->flush, NG_OP_FLUSH, 0, 0, NG_REQ_BACKGROUND);
        m->flush.done = flush_done;
        m->flush.opaque = m;
        ng_bb_submit(m->dst_bb, &m->flush);
        return;
    }
    mirror_finish(m);
}

static void
end_section(struct mirror *m)
{
    if (m->drain != NULL) {
        ng_drain_end(m->drain);
        m->drain = NULL;
    }
}

/* Stop the engine; the job ends with ret once it is idle.  A drain that
 * has not fired yet owns a pointer to m, so wait for it.  The section
 * ends now, unless the job settled in it: then finalize ends it. */
static void
mirror_stop(struct mirror *m, int ret, const char *msg)
{
    if (m->stopping || m->stop_deferred || m->stop_after_scan)
        return;
    m->stop_ret = ret;
    if (msg != NULL)
        snprintf(m->stop_msg, sizeof m->stop_msg, "%s", msg);
    if (m->scanning) {              /* its request uses our BB */
        m->stop_after_scan = true;
        return;
    }
    if (m->drain != NULL && !m->drain_fired) {
        m->stop_deferred = true;
        return;
    }
    if (!m->settled)
        end_section(m);
    m->stopping = true;
    ng_copy_stop(m->copy);
}

/* ---- Engine callbacks ------------------------------------------------- */

static void
copy_converged(void *opaque)
{
    struct mirror *m = opaque;

    if (m->overlay != NULL) {
        /* An intermediate commit: no ready phase and no drain.  Nobody
         * else writes the top (the job's claims), so once converged it
         * stays so: the job settles now, and its finalize points the
         * overlay at the base in a section of its own, clients running
         * meanwhile (QEMU's commit_run drains nothing either). */
        mirror_settle(m);
        return;
    }
    if (m->job->status == NG_JOB_RUNNING)
        ng_job_ready(m->job);
    if (m->drain != NULL && m->drain_fired)
        mirror_settle(m);           /* the last bits, copied drained */
    else if (m->completing)
        mirror_try_pivot(m);
}

/* on-source-error / on-target-error (block-commit: on-error), as QEMU's
 * mirror: ignore leaves the range dirty, so it is copied again (and the
 * job gets ready only once it was); stop pauses the job until
 * job-resume. */
static void
copy_error(void *opaque, bool is_read, int err)
{
    struct mirror *m = opaque;
    enum ng_job_error_action a = is_read ? m->p.on_source_error
                                         : m->p.on_target_error;
    char msg[200];

    switch (ng_job_io_error(m->job, a, is_read, err)) {
    case NG_JOB_ERROR_IGNORE:
        if (m->job->pause_count == 0)
            ng_copy_retry(m->copy);
        break;
    case NG_JOB_ERROR_STOP:
        break;                      /* paused; job-resume goes on */
    default:
        snprintf(msg, sizeof msg, "%s node '%s': %s",
                 is_read ? "reading source" : "writing target",
                 is_read ? m->source->name : m->target->name,
                 strerror(-err));
        mirror_stop(m, err, msg);
        break;
    }
}

static const struct ng_copy_ops mirror_copy_ops = {
    .converged = copy_converged,
    .error = copy_error,
    .stopped = copy_stopped,
};

/* ---- Pivot ---------------------------------------------------------------- */

/* Inside the drained section, nothing left to copy: the target is in
 * sync with the source.  The engine stops (the target is flushed, the
 * job's BBs, bitmap and filter go) with the section kept open, clients
 * waiting in it; the job is done then, and its commit moves the parents
 * at finalize (QEMU's mirror_exit_common at .prepare), its abort (a
 * cancel in pending, a failure) ends the section with nothing moved. */
static void
mirror_settle(struct mirror *m)
{
    m->settled = true;
    mirror_stop(m, 0, NULL);
}

/* Clients are quiet.  What they wrote before the drain took hold is
 * copied now, inside the section (the job's own source BB is not
 * drained), then the job settles from copy_converged. */
static void
pivot_drained(void *opaque)
{
    struct mirror *m = opaque;

    m->drain_fired = true;
    if (m->stop_deferred) {
        m->stop_deferred = false;
        mirror_stop(m, m->stop_ret, NULL);
        return;
    }
    if (ng_copy_is_converged(m->copy))
        mirror_settle(m);
    else
        ng_copy_resume(m->copy);
}

/* Hold the engine still and drain every client above the source; the
 * job settles inside that section, and finalize pivots in it. */
static void
mirror_try_pivot(struct mirror *m)
{
    if (m->drain != NULL || m->settled || m->stopping ||
        !ng_copy_is_converged(m->copy))
        return;
    ng_copy_pause(m->copy);
    /* Our own reads must go on inside the section. */
    m->src_bb->drain_exempt = true;
    m->drain = ng_drain_begin(m->graph, m->source, pivot_drained, m, NULL);
    m->src_bb->drain_exempt = false;
    if (m->drain == NULL)
        mirror_stop(m, -ENOMEM, "out of memory draining for the pivot");
}

/* ---- sync "top": the source's own layer ------------------------------ */

static void scan_next(struct mirror *m);

static void
scan_finished(struct mirror *m, int ret)
{
    char msg[200];

    m->scanning = false;
    if (m->stop_after_scan) {
        m->stop_after_scan = false;
        mirror_stop(m, m->stop_ret, NULL);
    } else if (ret < 0) {
        snprintf(msg, sizeof msg, m->base_depth > 0
                 ? "reading what node '%s' and the layers down to the base "
                   "hold: %s"
                 : "reading what source node '%s' holds itself: %s",
                 m->source->name, strerror(-ret));
        mirror_stop(m, ret, msg);
    } else if (!m->paused) {
        ng_copy_resume(m->copy);
    }
}

/* Does an extent with these flags go into the bitmap?  sync "top": the
 * source's own layer holds it.  A commit: a layer above the base does
 * (depth 0, unallocated in the whole chain, and the base's own data or
 * what lies below it stay as they are), as QEMU's commit copies only
 * what bdrv_is_allocated_above() finds between top and base. */
static bool
scan_wanted(const struct mirror *m, uint32_t flags)
{
    if (m->base_depth > 0)
        return flags >= 1 && flags < m->base_depth;
    return !(flags & NG_EXTENT_HOLE);
}

/* Mark what the answer says the source holds; false when the scan is
 * over (finished or failed). */
static bool
scan_absorb(struct mirror *m)
{
    uint64_t pos = m->scan.offset;

    if (m->scan_ret == 0 && m->scan.nr_extents == 0)
        m->scan_ret = -EIO;
    if (m->scan_ret < 0) {
        scan_finished(m, m->scan_ret);
        return false;
    }
    for (uint32_t i = 0; i < m->scan.nr_extents; i++) {
        if (scan_wanted(m, m->scan_ext[i].flags))
            ng_bitmap_set(m->bitmap, pos, m->scan_ext[i].length);
        pos += m->scan_ext[i].length;
    }
    m->scan_pos = pos;
    if (pos >= (uint64_t)ng_node_length(m->source)) {
        scan_finished(m, 0);
        return false;
    }
    return true;
}

static void
scan_done(struct ng_req *req, int ret)
{
    struct mirror *m = req->opaque;

    m->scan_ret = ret;
    if (m->scan_in_submit) {
        m->scan_inline_done = true;
        return;
    }
    if (scan_absorb(m))
        scan_next(m);
}

/* Ask the source's own layer (NG_REQ_LOCAL_ONLY; a commit: the chain's
 * allocation depth) from scan_pos on; a loop while the answers come
 * inline. */
static void
scan_next(struct mirror *m)
{
    do {
        uint64_t left = (uint64_t)ng_node_length(m->source) - m->scan_pos;

        ng_req_init(&m->scan, NG_OP_BLOCK_STATUS, m->scan_pos,
                    left < MIRROR_SCAN_MAX ? left : MIRROR_SCAN_MAX,
                    m->base_depth > 0 ? NG_REQ_ALLOC_DEPTH
                                      : NG_REQ_LOCAL_ONLY);
        m->scan.extents = m->scan_ext;
        m->scan.max_extents = MIRROR_SCAN_EXTENTS;
        m->scan.nr_extents = 0;
        m->scan.done = scan_done;
        m->scan.opaque = m;
        m->scan_inline_done = false;
        m->scan_in_submit = true;
        ng_bb_submit(m->src_bb, &m->scan);
        m->scan_in_submit = false;
    } while (m->scan_inline_done && scan_absorb(m));
}

/* ---- Job operations ------------------------------------------------- */

static void
mirror_op_start(struct ng_job *job)
{
    struct mirror *m = job->state;

    if (ng_node_length(m->source) > 0 &&
        (m->base_depth > 0 ||
         (m->p.sync == NG_MIRROR_SYNC_TOP &&
          ng_node_child_role(m->source, NG_ROLE_BACKING) != NULL))) {
        m->scanning = true;
        scan_next(m);
        return;
    }
    ng_copy_resume(m->copy);
}

static void
mirror_op_pause(struct ng_job *job)
{
    struct mirror *m = job->state;

    m->paused = true;
    ng_copy_pause(m->copy);
}

static void
mirror_op_resume(struct ng_job *job)
{
    struct mirror *m = job->state;

    m->paused = false;
    if (!m->scanning && (m->drain == NULL || m->drain_fired))
        ng_copy_resume(m->copy);
}

static void
mirror_op_cancel(struct ng_job *job)
{
    mirror_stop(job->state, -ECANCELED, NULL);
}

static int
mirror_op_complete(struct ng_job *job, struct ng_error *err)
{
    struct mirror *m = job->state;

    (void)err;
    m->completing = true;
    mirror_try_pivot(m);
    return 0;
}

/* block-job-cancel without force on a ready mirror, as QEMU's: the
 * last dirty granules are copied in a drained section as for a pivot,
 * then the job ends completed with the target a point-in-time copy,
 * nothing moved. */
static void
mirror_op_soft_cancel(struct ng_job *job)
{
    struct mirror *m = job->state;

    if (m->completing)
        return;                     /* job-complete came first: it pivots,
                                     * and the job says so */
    m->in_place = true;
    m->completing = true;
    mirror_try_pivot(m);
}

/* Finalize of a settled job, inside the section its run left open:
 * a soft cancel moves nothing; else every parent of the source (export
 * BBs, implicit filters, overlays) goes to the target, unless that takes
 * from an export what its clients were told (a smaller cap set).  -1
 * with *err: refused, nothing moved. */
static int
mirror_move(struct mirror *m, struct ng_error *err)
{
    struct ng_job *job = m->job;

    if (m->in_place)
        return 0;
    if (ng_graph_replace_node(m->graph, m->source, m->target, NULL, 0,
                              err) == -1)
        return -1;
    if (job->hooks.pivoted != NULL)
        job->hooks.pivoted(job->hooks.opaque, job, m->source->name,
                           m->target->name);
    return 0;
}

/* A refused move fails the job; its abort ends the section then. */
static int
mirror_op_commit(struct ng_job *job, struct ng_error *err)
{
    if (mirror_move(job->state, err) == -1)
        return -1;
    end_section(job->state);
    return 0;
}

/* Cancelled (in pending too) or failed: clients go on on the source. */
static void
mirror_op_abort(struct ng_job *job)
{
    end_section(job->state);
}

/* ---- Intermediate commit's finalize ---------------------------------- */

/* The overlay's backing becomes the base (a qcow2 overlay's header
 * names it), the layers from top down to just above the base dropping
 * out, in a drained section over the overlay; a cancel in pending
 * leaves the chain (the base holds the top's data too, which reads the
 * same through the chain). */
static void
commit_op_commit_async(struct ng_job *job)
{
    struct mirror *m = job->state;

    ng_job_commit_backing(&m->repoint, job, m->overlay, m->target);
}

static void
mirror_op_set_speed(struct ng_job *job, uint64_t speed)
{
    ng_copy_set_speed(((struct mirror *)job->state)->copy, speed);
}

static void
mirror_op_progress(struct ng_job *job, uint64_t *current, uint64_t *total)
{
    struct mirror *m = job->state;

    if (m->bitmap != NULL)
        ng_copy_progress(m->copy, current, total);
    else                            /* stopped: as far as it got */
        ng_copy_final_progress(m->copy, current, total);
}

/* graph_alive false: the graph is being freed, its BBs and nodes (with
 * their bitmaps) are gone already. */
static void
mirror_free(struct mirror *m, bool graph_alive)
{
    if (m == NULL)
        return;
    if (graph_alive) {
        ng_bb_free(m->src_bb);
        ng_bb_free(m->dst_bb);
        ng_bitmap_remove(m->bitmap);
    }
    ng_copy_free(m->copy);
    free(m->overlay_name);
    free(m->filter_name);
    free(m->job_id);
    free(m->source_name);
    free(m->target_name);
    free(m);
}

static void
mirror_op_free(struct ng_job *job)
{
    mirror_free(job->state, job->graph != NULL);
}

static const struct ng_job_ops mirror_ops = {
    .type = "mirror",
    .start = mirror_op_start,
    .pause = mirror_op_pause,
    .resume = mirror_op_resume,
    .cancel = mirror_op_cancel,
    .soft_cancel = mirror_op_soft_cancel,
    .complete = mirror_op_complete,
    .set_speed = mirror_op_set_speed,
    .progress = mirror_op_progress,
    .commit = mirror_op_commit,
    .abort = mirror_op_abort,
    .free = mirror_op_free,
};

/* block-commit's: an active commit as a mirror; an intermediate one
 * completes by itself. */
static const struct ng_job_ops commit_active_ops = {
    .type = "commit",
    .start = mirror_op_start,
    .pause = mirror_op_pause,
    .resume = mirror_op_resume,
    .cancel = mirror_op_cancel,
    .soft_cancel = mirror_op_soft_cancel,
    .complete = mirror_op_complete,
    .set_speed = mirror_op_set_speed,
    .progress = mirror_op_progress,
    .commit = mirror_op_commit,
    .abort = mirror_op_abort,
    .free = mirror_op_free,
};

static const struct ng_job_ops commit_ops = {
    .type = "commit",
    .start = mirror_op_start,
    .pause = mirror_op_pause,
    .resume = mirror_op_resume,
    .cancel = mirror_op_cancel,
    .set_speed = mirror_op_set_speed,
    .progress = mirror_op_progress,
    .commit_async = commit_op_commit_async,
    .free = mirror_op_free,
};

/* ---- Start -------------------------------------------------------------- */

static uint32_t
chunk_size(uint64_t buf_size, uint32_t gran)
{
    uint64_t chunk = buf_size / MIRROR_CHUNKS;

    if (chunk > MIRROR_CHUNK_MAX)
        chunk = MIRROR_CHUNK_MAX;
    chunk = chunk / gran * gran;
    return chunk < gran ? gran : (uint32_t)chunk;
}

/* The base's allocation depth seen from top (NG_REQ_ALLOC_DEPTH: 1 is
 * the top layer, filters count for nothing); check_commit_nodes made
 * sure the base is in top's chain. */
static uint32_t
commit_base_depth(struct ng_node *top, struct ng_node *base)
{
    struct ng_node *n = ng_node_skip_filters(top);
    struct ng_node *b = ng_node_skip_filters(base);
    uint32_t depth = 1;

    while (n != NULL && n != b) {
        n = ng_node_skip_filters(backing_of(n));
        depth++;
    }
    return depth;
}

/* The job's BBs, bitmap and engine.  -1 with *err; what was made stays
 * in m for mirror_op_free. */
static int
mirror_setup(struct mirror *m, struct ng_error *err)
{
    char name[NG_ERROR_MSG_MAX / 2];
    uint32_t gran = m->p.granularity ? m->p.granularity
                                     : NG_BITMAP_GRAN_DEFAULT;
    uint64_t buf = m->p.buf_size ? m->p.buf_size : MIRROR_BUF_DEFAULT;
    struct ng_copy_params cp;

    /* Not the job ID itself: an export of that name finds its BB by
     * name. */
    snprintf(name, sizeof name, "#job:%s", m->p.job_id);
    m->src_bb = ng_bb_new(m->graph, name, m->source, false, err);
    if (m->src_bb == NULL)
        return -1;
    m->dst_bb = ng_bb_new(m->graph, name, m->target, true, err);
    if (m->dst_bb == NULL)
        return -1;
    m->bitmap = ng_bitmap_add(m->source, NULL, gran, err);
    if (m->bitmap == NULL)
        return -1;
    m->bitmap->busy = true;
    /* sync "top" of an overlay: only what its own layer holds (see
     * mirror_op_start); without a backing node that is everything.  A
     * commit scans too. */
    if (m->p.commit)
        m->base_depth = commit_base_depth(m->source, m->target);
    else if (m->p.sync == NG_MIRROR_SYNC_FULL ||
        (m->p.sync == NG_MIRROR_SYNC_TOP &&
         ng_node_child_role(m->source, NG_ROLE_BACKING) == NULL))
        ng_bitmap_set_all(m->bitmap);
    cp = (struct ng_copy_params){
        .source = m->src_bb, .target = m->dst_bb, .bitmap = m->bitmap,
        .chunk = chunk_size(buf, gran),
        .max_in_flight = buf / chunk_size(buf, gran) < MIRROR_CHUNKS
                         ? (unsigned)(buf / chunk_size(buf, gran))
                         : MIRROR_CHUNKS,
        .zero_span = buf,   /* a hole of the whole buffer: one request */
        .speed = m->p.speed,
    };
    m->copy = ng_copy_new(m->graph->loop, &cp, &mirror_copy_ops, m, err);
    return m->copy != NULL ? 0 : -1;
}

/* The job itself, on what mirror_setup made; started tells how it went.
 * On failure the start is undone: filter out, m freed. */
static void
mirror_launch(struct mirror *m)
{
    struct ng_error err = { 0 };
    const struct ng_mirror_params *p = &m->p;
    struct ng_job *job;

    job = ng_job_new(m->graph, p->job_id, p->source,
                     !p->commit ? &mirror_ops : p->overlay != NULL
                     ? &commit_ops : &commit_active_ops, m, &m->hooks,
                     p->auto_finalize, p->auto_dismiss, p->speed, &err);
    if (job == NULL) {
        start_failed(m, &err);
        return;
    }
    m->job = job;
    m->p.job_id = job->id;
    m->src_bb->job_id = m->dst_bb->job_id = job->id;
    if (m->filter != NULL && m->p.write_blocking)
        ng_mirror_top_attach(m->filter, m->copy, m->dst_bb);
    ng_job_start(job);
    m->started(m->started_opaque, NULL);
}

/* ---- The filter going in -------------------------------------------- */

static int
insert_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct mirror *m = opaque;
    struct ng_value *opts = ng_job_filter_opts("mirror_top",
                                               m->filter_name);

    if (opts == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    m->filter = ng_graph_insert_filter(g, m->source->name, opts, NULL, 0, 0,
                                       err);
    ng_value_free(opts);
    return m->filter != NULL ? 0 : -1;
}

/* The setup failed after the filter went in: out again, then tell. */
static void
undone(void *opaque, const struct ng_error *err)
{
    struct mirror *m = opaque;
    struct ng_error why = { 0 };

    (void)err;
    ng_error_set(&why, -m->stop_ret, "%s", m->stop_msg);
    m->started(m->started_opaque, &why);
    mirror_free(m, true);
}

static void
inserted(void *opaque, const struct ng_error *err)
{
    struct mirror *m = opaque;
    struct ng_error serr = { 0 };

    if (err != NULL) {
        m->filter = NULL;
        m->started(m->started_opaque, err);
        mirror_free(m, true);
        return;
    }
    /* The job's BBs go on the source now, below the filter. */
    if (mirror_setup(m, &serr) == 0)
        mirror_launch(m);
    else
        start_failed(m, &serr);
}

/* Setting up or registering the job failed: drop what was made, take a
 * filter that went in out again (so the graph is as before), then tell
 * and free m. */
static void
start_failed(struct mirror *m, const struct ng_error *err)
{
    if (m->filter == NULL) {
        m->started(m->started_opaque, err);
        mirror_free(m, true);
        return;
    }
    ng_bb_free(m->src_bb);
    ng_bb_free(m->dst_bb);
    m->src_bb = m->dst_bb = NULL;
    m->stop_ret = -err->code;
    snprintf(m->stop_msg, sizeof m->stop_msg, "%s", err->msg);
    ng_graph_remove_job_filter(m->graph, m->filter, undone, m);
}

/* ---- Start -------------------------------------------------------------- */

static int
copy_names(struct mirror *m, const struct ng_mirror_params *p)
{
    m->p.job_id = m->job_id = strdup(p->job_id);
    m->source_name = strdup(p->source);
    m->target_name = strdup(p->target);
    m->p.source = m->source_name;
    m->p.target = m->target_name;
    if (p->overlay != NULL)
        m->p.overlay = m->overlay_name = strdup(p->overlay);
    if (p->filter_node_name != NULL)
        m->p.filter_node_name = m->filter_name = strdup(p->filter_node_name);
    return m->job_id == NULL || m->source_name == NULL ||
           m->target_name == NULL ||
           (p->overlay != NULL && m->overlay_name == NULL) ||
           (p->filter_node_name != NULL && m->filter_name == NULL) ? -1 : 0;
}

int
ng_mirror_start(struct ng_graph *g, const struct ng_mirror_params *p,
                const struct ng_job_hooks *hooks,
                ng_mirror_started_fn *started, void *opaque,
                struct ng_error *err)
{
    struct mirror *m;

    if (ng_mirror_check(g, p, err) == -1)
        return -1;
    m = calloc(1, sizeof *m);
    if (m == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    m->graph = g;
    m->p = *p;
    m->hooks = *hooks;
    m->started = started;
    m->started_opaque = opaque;
    m->source = ng_graph_find(g, p->source);
    m->target = ng_graph_find(g, p->target);
    if (p->overlay != NULL)
        m->overlay = ng_graph_find(g, p->overlay);
    if (copy_names(m, p) == -1) {
        mirror_free(m, true);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    if (m->filter_name != NULL) {
        if (ng_graph_mutate(g, m->source, insert_mutation, inserted, m,
                            err) == -1) {
            mirror_free(m, true);
            return -1;
        }
        return 0;
    }
    if (mirror_setup(m, err) == -1) {
        mirror_free(m, true);
        return -1;
    }
    mirror_launch(m);
    return 0;
}
