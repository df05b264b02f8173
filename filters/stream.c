/* filters/stream.c: the block-stream job (see stream.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/stream.h"
#include "graph/bitmap.h"
#include "graph/copy.h"
#include "graph/graph.h"

#define STREAM_GRAN         (64u << 10)
#define STREAM_CHUNK        (256u << 10)
#define STREAM_IN_FLIGHT    4u
#define STREAM_SCAN_EXTENTS 64u

struct stream {
    struct ng_job *job;
    struct ng_graph *graph;
    struct ng_stream_params p;
    char *strings[4];               /* owned copies for p */
    struct ng_node *top, *base;     /* the job's claims keep them */
    struct ng_node *filter;         /* the copy-on-read filter */
    struct ng_bb *bb;               /* on the filter, until the end */
    struct ng_bitmap *bitmap;       /* on top, not recording: what is
                                     * left to read */
    struct ng_bitmap *failed;       /* on top, not recording: what failed
                                     * under on-error "ignore", skipped */
    int ignored;                    /* the first such error, which the
                                     * job ends with */
    struct ng_copy *copy;
    struct ng_job_hooks hooks;
    struct ng_job_backing_change cut;   /* finalize's */
    ng_stream_started_fn *started;
    void *started_opaque;
    /* What the layers between top and base (or the chain's bottom)
     * hold, the one being walked and a BB on it for that. */
    struct ng_bitmap *needed;
    struct ng_node *mid;
    struct ng_bb *mid_bb;
    /* A walk over a layer's own allocation (before the first pass over
     * the layers between, after each pass over the top). */
    struct ng_req scan;
    struct ng_extent ext[STREAM_SCAN_EXTENTS];
    uint64_t scan_off, scan_end;
    struct ng_bb *walk_bb;
    bool walk_local;                /* NG_REQ_LOCAL_ONLY */
    void (*walk_extent)(struct stream *s, uint64_t off, uint64_t len,
                        uint32_t flags);
    void (*walk_end)(struct stream *s);
    bool scanning, scan_found;
    bool finish_waits;              /* the engine stopped during a scan */
    bool stopping;
    int stop_ret;
    char stop_msg[NG_ERROR_MSG_MAX];
};

/* ---- Checks ---------------------------------------------------------- */

static struct ng_node *
backing_of(struct ng_node *n)
{
    return ng_node_child_role(n, NG_ROLE_BACKING);
}

int
ng_stream_check(struct ng_graph *g, const struct ng_stream_params *p,
                struct ng_error *err)
{
    struct ng_node *top = ng_graph_find(g, p->top), *n;

    if (ng_job_find(g, p->job_id) != NULL)
        return ng_error_set(err, EEXIST, "job '%s' already exists",
                            p->job_id);
    if (top == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", p->top);
    if (backing_of(top) == NULL)
        return ng_error_set(err, EINVAL, "node '%s' has no backing node: "
                            "nothing to stream", p->top);
    if (top->read_only)
        return ng_error_set(err, EROFS, "node '%s' is read-only", p->top);
    if (p->base != NULL) {
        for (n = backing_of(top); n != NULL; n = backing_of(n))
            if (strcmp(n->name, p->base) == 0)
                break;
        if (n == NULL)
            return ng_error_set(err, EINVAL, "node '%s' is not in the "
                                "backing chain of node '%s'", p->base,
                                p->top);
    }
    if (p->filter_node_name != NULL &&
        ng_graph_find(g, p->filter_node_name) != NULL)
        return ng_error_set(err, EEXIST, "node '%s' already exists",
                            p->filter_node_name);
    return ng_node_check_set_backing(top, NULL, err);
}

void
ng_stream_foreach_intermediate(struct ng_graph *g, const char *top,
                               const char *base,
                               void (*fn)(void *opaque, const char *node),
                               void *opaque)
{
    struct ng_node *n = ng_graph_find(g, top);

    for (n = n != NULL ? backing_of(n) : NULL; n != NULL; n = backing_of(n)) {
        if (base != NULL && strcmp(n->name, base) == 0)
            return;
        fn(opaque, n->name);
    }
}

/* ---- Ending ------------------------------------------------------------ */

static void
finished(void *opaque, const struct ng_error *err)
{
    struct stream *s = opaque;

    s->filter = NULL;
    if (err != NULL && s->stop_ret == 0) {
        s->stop_ret = -err->code;
        snprintf(s->stop_msg, sizeof s->stop_msg, "%s", err->msg);
    }
    ng_job_done(s->job, s->stop_ret, s->stop_msg[0] ? s->stop_msg : NULL);
}

/* Drained: the filter comes out (it took nothing from any export, so
 * taking it out cannot either).  The chain stays until finalize: the
 * top holds all it needs from the layers between, so clients read the
 * same through it in pending, and their writes go to the top. */
static int
finish_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct stream *s = opaque;

    return ng_graph_remove_filter(g, s->filter->name, NG_MUTATE_FORCE, err);
}

/* ---- Finalize: the cut ---------------------------------------------------- */

/* The job's result, as QEMU's stream_prepare: the top's backing becomes
 * the base (a qcow2 top's header names it), in a drained section of its
 * own; a cancel in pending had nothing to undo. */
static void
stream_op_commit_async(struct ng_job *job)
{
    struct stream *s = job->state;

    ng_job_commit_backing(&s->cut, job, s->top, s->base);
}

/* The engine is idle for good, and no scan is in flight. */
static void
stream_finish(struct stream *s)
{
    struct ng_error err = { 0 };

    ng_bb_free(s->bb);
    ng_bb_free(s->mid_bb);
    s->bb = s->mid_bb = NULL;
    ng_bitmap_remove(s->bitmap);
    ng_bitmap_remove(s->needed);
    ng_bitmap_remove(s->failed);
    s->bitmap = s->needed = s->failed = NULL;
    if (ng_graph_mutate(s->graph, s->top, finish_mutation, finished, s,
                        &err) == -1)
        finished(s, &err);
}

static void
copy_stopped(void *opaque)
{
    struct stream *s = opaque;

    if (s->scanning)
        s->finish_waits = true;     /* walk_step finishes */
    else
        stream_finish(s);
}

static void
stream_stop(struct stream *s, int ret, const char *msg)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->stop_ret = ret;
    if (msg != NULL)
        snprintf(s->stop_msg, sizeof s->stop_msg, "%s", msg);
    ng_copy_stop(s->copy);
}

/* ---- Walks over a layer's own allocation -------------------------------- */

/* Block status (NG_REQ_LOCAL_ONLY when s->walk_local) of the node under
 * s->walk_bb, from 0 to the top's end or the node's, whichever comes
 * first, one request after the other; walk_extent sees each extent,
 * walk_end runs at the end. */
static void walk_step(struct stream *s);

static void
walk_done(struct ng_req *req, int ret)
{
    struct stream *s = req->opaque;
    uint32_t i;

    if (ret < 0)
        stream_stop(s, ret, "block status in the chain failed");
    for (i = 0; ret == 0 && i < req->nr_extents; i++) {
        s->walk_extent(s, s->scan_off, req->extents[i].length,
                       req->extents[i].flags);
        s->scan_off += req->extents[i].length;
    }
    walk_step(s);
}

static void
walk_step(struct stream *s)
{
    uint64_t size = s->scan_end;

    if (s->stopping) {
        s->scanning = false;
        if (s->finish_waits)
            stream_finish(s);
        return;
    }
    if (s->scan_off >= size) {
        s->scanning = false;
        s->walk_end(s);
        return;
    }
    ng_req_init(&s->scan, NG_OP_BLOCK_STATUS, s->scan_off,
                size - s->scan_off, s->walk_local ? NG_REQ_LOCAL_ONLY : 0);
    s->scan.extents = s->ext;
    s->scan.max_extents = STREAM_SCAN_EXTENTS;
    s->scan.done = walk_done;
    s->scan.opaque = s;
    ng_bb_submit(s->walk_bb, &s->scan);
}

static void
walk_start(struct stream *s, struct ng_bb *bb, bool local,
           void (*extent)(struct stream *, uint64_t, uint64_t, uint32_t),
           void (*end)(struct stream *))
{
    int64_t top_len = ng_node_length(s->top), len = ng_bb_length(bb);

    s->scanning = true;
    s->scan_off = 0;
    /* A shorter backing node reads as zeroes past its end. */
    s->scan_end = (uint64_t)(len >= 0 && len < top_len ? len : top_len);
    s->walk_bb = bb;
    s->walk_local = local;
    s->walk_extent = extent;
    s->walk_end = end;
    walk_step(s);
}

/* ---- Before the first pass: what lies above the base -------------------- */

/* Only what a layer between top and base has is copied up (the base's
 * own data stays in the base): `needed` collects those layers'
 * allocation, one layer after the other.  A layer with a backing node is
 * asked for its own allocation (a hole there is data from further down).
 * Without a base, the chain's bottom has none: it is asked for what it
 * reads, and what reads as zeroes stays out, since the top reads zeroes
 * there too once its backing is cut.  So a range unallocated in the
 * whole chain stays unallocated in the top, as with QEMU's stream (which
 * copies what the chain has allocated), and a sparse top stays sparse. */
static void
mid_extent(struct stream *s, uint64_t off, uint64_t len, uint32_t flags)
{
    if (!(flags & (s->walk_local ? NG_EXTENT_HOLE : NG_EXTENT_ZERO)))
        ng_bitmap_set(s->needed, off, len);
}

static void mid_walk_next(struct stream *s);

static void
mid_end(struct stream *s)
{
    ng_bb_free(s->mid_bb);
    s->mid_bb = NULL;
    s->mid = ng_node_child_role(s->mid, NG_ROLE_BACKING);
    mid_walk_next(s);
}

static void
mid_walk_next(struct stream *s)
{
    struct ng_error err = { 0 };
    char name[NG_ERROR_MSG_MAX / 2];

    if (s->stopping)
        return;
    if (s->mid == NULL || s->mid == s->base) {
        ng_bitmap_merge(s->bitmap, s->needed, NULL);
        if (s->job->pause_count == 0)
            ng_copy_resume(s->copy);
        return;
    }
    snprintf(name, sizeof name, "#job:%s", s->p.job_id);
    s->mid_bb = ng_bb_new(s->graph, name, s->mid, false, &err);
    if (s->mid_bb == NULL) {
        stream_stop(s, -err.code, err.msg);
        return;
    }
    s->mid_bb->job_id = s->job->id;
    walk_start(s, s->mid_bb, backing_of(s->mid) != NULL, mid_extent,
               mid_end);
}

/* ---- After a pass: what the top still lacks ------------------------------ */

/* [x, y) goes back into the bitmap, but for what failed under "ignore"
 * (skipped for good, as QEMU's stream skips it). */
static void
refill(struct stream *s, uint64_t x, uint64_t y)
{
    uint64_t a, b;

    if (s->failed == NULL) {
        ng_bitmap_set(s->bitmap, x, y - x);
        s->scan_found = true;
        return;
    }
    for (a = ng_bitmap_next_clean(s->failed, x); a < y;
         a = ng_bitmap_next_clean(s->failed, b)) {
        b = ng_bitmap_next_dirty(s->failed, a);
        if (b > y)
            b = y;
        ng_bitmap_set(s->bitmap, a, b - a);
        s->scan_found = true;
    }
}

/* A hole in the top's own layer that should have been filled (where
 * `needed` says) goes back into the bitmap: a racing client write made
 * the filter skip it. */
static void
top_extent(struct stream *s, uint64_t off, uint64_t len, uint32_t flags)
{
    uint64_t end = off + len, x, y;

    if (!(flags & NG_EXTENT_HOLE))
        return;
    for (x = ng_bitmap_next_dirty(s->needed, off); x < end;
         x = ng_bitmap_next_dirty(s->needed, y)) {
        y = ng_bitmap_next_clean(s->needed, x);
        if (y > end)
            y = end;
        refill(s, x > off ? x : off, y);
    }
}

/* The top lacks nothing more that can be copied: done, or (errors
 * ignored) failed with the first of them, the chain left as it was, as
 * QEMU's "Do not remove the backing file if an error was there but
 * ignored". */
static void
top_end(struct stream *s)
{
    char msg[NG_ERROR_MSG_MAX];

    if (s->scan_found) {
        ng_copy_kick(s->copy);      /* another pass over what is left */
    } else if (s->ignored < 0) {
        snprintf(msg, sizeof msg, "streaming into node '%s': %s (ignored "
                 "on the way; the chain is left as it was)", s->top->name,
                 strerror(-s->ignored));
        stream_stop(s, s->ignored, msg);
    } else {
        stream_stop(s, 0, NULL);
    }
}

/* ---- Engine callbacks ------------------------------------------------- */

static void
copy_converged(void *opaque)
{
    struct stream *s = opaque;

    if (s->scanning || s->stopping)
        return;
    s->scan_found = false;
    walk_start(s, s->bb, true, top_extent, top_end);
}

/* on-error, as QEMU's stream (which reports every error as a read's):
 * stop pauses the job, the range stays to copy; ignore skips the range
 * (the engine put it in s->failed) and the job fails at its end; report
 * fails it now. */
static void
copy_error(void *opaque, bool is_read, int err)
{
    struct stream *s = opaque;
    char msg[NG_ERROR_MSG_MAX];

    (void)is_read;
    switch (ng_job_io_error(s->job, s->p.on_error, true, err)) {
    case NG_JOB_ERROR_IGNORE:
        if (s->ignored == 0)
            s->ignored = err;
        if (s->job->pause_count == 0)
            ng_copy_resume(s->copy);
        break;
    case NG_JOB_ERROR_STOP:
        break;                      /* paused; job-resume goes on */
    default:
        snprintf(msg, sizeof msg, "streaming into node '%s': %s",
                 s->top->name, strerror(-err));
        stream_stop(s, err, msg);
        break;
    }
}

static const struct ng_copy_ops stream_copy_ops = {
    .converged = copy_converged,
    .error = copy_error,
    .stopped = copy_stopped,
};

/* ---- Job operations ------------------------------------------------- */

static void
stream_op_start(struct ng_job *job)
{
    struct stream *s = job->state;

    s->mid = ng_node_child_role(s->top, NG_ROLE_BACKING);
    mid_walk_next(s);               /* then the first pass */
}

static void
stream_op_pause(struct ng_job *job)
{
    ng_copy_pause(((struct stream *)job->state)->copy);
}

static void
stream_op_resume(struct ng_job *job)
{
    ng_copy_resume(((struct stream *)job->state)->copy);
}

static void
stream_op_cancel(struct ng_job *job)
{
    stream_stop(job->state, -ECANCELED, NULL);
}

static void
stream_op_set_speed(struct ng_job *job, uint64_t speed)
{
    ng_copy_set_speed(((struct stream *)job->state)->copy, speed);
}

static void
stream_op_progress(struct ng_job *job, uint64_t *current, uint64_t *total)
{
    struct stream *s = job->state;

    if (s->bitmap != NULL)
        ng_copy_progress(s->copy, current, total);
    else
        ng_copy_final_progress(s->copy, current, total);
}

static void
stream_free(struct stream *s, bool graph_alive)
{
    size_t i;

    if (s == NULL)
        return;
    if (graph_alive) {
        ng_bb_free(s->bb);
        ng_bb_free(s->mid_bb);
        ng_bitmap_remove(s->bitmap);
        ng_bitmap_remove(s->needed);
        ng_bitmap_remove(s->failed);
    }
    ng_copy_free(s->copy);
    for (i = 0; i < 4; i++)
        free(s->strings[i]);
    free(s);
}

static void
stream_op_free(struct ng_job *job)
{
    stream_free(job->state, job->graph != NULL);
}

static const struct ng_job_ops stream_ops = {
    .type = "stream",
    .start = stream_op_start,
    .pause = stream_op_pause,
    .resume = stream_op_resume,
    .cancel = stream_op_cancel,
    .set_speed = stream_op_set_speed,
    .progress = stream_op_progress,
    .commit_async = stream_op_commit_async,
    .free = stream_op_free,
};

/* ---- Start -------------------------------------------------------------- */

static int
insert_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct stream *s = opaque;
    struct ng_value *opts = ng_job_filter_opts("copy-on-read",
                                               s->p.filter_node_name);

    if (opts == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    s->filter = ng_graph_insert_filter(g, s->top->name, opts, NULL, 0, 0,
                                       err);
    ng_value_free(opts);
    return s->filter != NULL ? 0 : -1;
}

/* The job's BB, bitmap and engine.  -1 with *err. */
static int
stream_setup(struct stream *s, struct ng_error *err)
{
    char name[NG_ERROR_MSG_MAX / 2];
    struct ng_copy_params cp;

    snprintf(name, sizeof name, "#job:%s", s->p.job_id);
    s->bb = ng_bb_new(s->graph, name, s->filter, false, err);
    if (s->bb == NULL)
        return -1;
    s->bitmap = ng_bitmap_add(s->top, NULL, STREAM_GRAN, err);
    if (s->bitmap == NULL)
        return -1;
    s->bitmap->busy = true;
    s->bitmap->recording = false;   /* client writes need no copy */
    s->needed = ng_bitmap_add(s->top, NULL, STREAM_GRAN, err);
    if (s->needed == NULL)
        return -1;
    s->needed->busy = true;
    s->needed->recording = false;
    if (s->p.on_error == NG_JOB_ERROR_IGNORE) {
        s->failed = ng_bitmap_add(s->top, NULL, STREAM_GRAN, err);
        if (s->failed == NULL)
            return -1;
        s->failed->busy = true;
        s->failed->recording = false;
    }
    cp = (struct ng_copy_params){
        .source = s->bb, .target = NULL, .bitmap = s->bitmap,
        .chunk = STREAM_CHUNK, .max_in_flight = STREAM_IN_FLIGHT,
        .speed = s->p.speed, .failed = s->failed,
    };
    s->copy = ng_copy_new(s->graph->loop, &cp, &stream_copy_ops, s, err);
    return s->copy != NULL ? 0 : -1;
}

static void
undone(void *opaque, const struct ng_error *err)
{
    struct stream *s = opaque;
    struct ng_error why = { 0 };

    (void)err;
    ng_error_set(&why, -s->stop_ret, "%s", s->stop_msg);
    s->started(s->started_opaque, &why);
    stream_free(s, true);
}

/* Drop what the start made and take the filter out again. */
static void
start_failed(struct stream *s, const struct ng_error *err)
{
    ng_bb_free(s->bb);
    s->bb = NULL;
    ng_bitmap_remove(s->bitmap);
    s->bitmap = NULL;
    s->stop_ret = -err->code;
    snprintf(s->stop_msg, sizeof s->stop_msg, "%s", err->msg);
    ng_graph_remove_job_filter(s->graph, s->filter, undone, s);
}

static void
inserted(void *opaque, const struct ng_error *err)
{
    struct stream *s = opaque;
    struct ng_error jerr = { 0 };

    if (err != NULL) {
        s->started(s->started_opaque, err);
        stream_free(s, true);
        return;
    }
    if (stream_setup(s, &jerr) == -1) {
        start_failed(s, &jerr);
        return;
    }
    s->job = ng_job_new(s->graph, s->p.job_id, s->p.top, &stream_ops, s,
                        &s->hooks, s->p.auto_finalize, s->p.auto_dismiss,
                        s->p.speed, &jerr);
    if (s->job == NULL) {
        start_failed(s, &jerr);
        return;
    }
    s->bb->job_id = s->job->id;
    ng_job_start(s->job);
    s->started(s->started_opaque, NULL);
}

static int
copy_params(struct stream *s, const struct ng_stream_params *p)
{
    char gen[160];
    const char **fields[4] = { &s->p.job_id, &s->p.top, &s->p.base,
                               &s->p.filter_node_name };
    size_t i;

    s->p = *p;
    if (s->p.filter_node_name == NULL) {
        snprintf(gen, sizeof gen, "stream-%s", p->job_id);
        s->p.filter_node_name = gen;
    }
    for (i = 0; i < 4; i++) {
        if (*fields[i] == NULL)
            continue;
        if ((s->strings[i] = strdup(*fields[i])) == NULL)
            return -1;
        *fields[i] = s->strings[i];
    }
    return 0;
}

int
ng_stream_start(struct ng_graph *g, const struct ng_stream_params *p,
                const struct ng_job_hooks *hooks,
                ng_stream_started_fn *started, void *opaque,
                struct ng_error *err)
{
    struct stream *s;

    if (ng_stream_check(g, p, err) == -1)
        return -1;
    s = calloc(1, sizeof *s);
    if (s == NULL || copy_params(s, p) == -1) {
        stream_free(s, true);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    s->graph = g;
    s->hooks = *hooks;
    s->started = started;
    s->started_opaque = opaque;
    s->top = ng_graph_find(g, p->top);
    s->base = p->base != NULL ? ng_graph_find(g, p->base) : NULL;
    if (ng_graph_mutate(g, s->top, insert_mutation, inserted, s,
                        err) == -1) {
        stream_free(s, true);
        return -1;
    }
    return 0;
}
