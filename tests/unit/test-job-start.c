/* tests/unit/test-job-start.c: a block-stream or blockdev-backup whose
 * job cannot be made after its filter went in takes the filter out again
 * and leaves the graph as it was (a backup's incremental bitmap with its
 * bits).
 *
 * ng_job_new() fails only on out of memory or when the job ID is taken;
 * QMP's NAC claims keep a second job of the same ID from starting, so
 * here two start calls race for one ID, each with a filter of its own
 * name: both pass the checks, one makes the job, the other's filter is
 * in when ng_job_new() refuses the ID.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "filters/cbw.h"
#include "filters/stream.h"
#include "graph/bitmap.h"
#include "graph/graph.h"
#include "graph/job.h"
#include "graph/value.h"
#include "tests/unit/graph-fixture.h"

struct start_result {
    bool done;
    int code;                       /* 0: the job runs */
    char msg[NG_ERROR_MSG_MAX];
};

static void
started(void *opaque, const struct ng_error *err)
{
    struct start_result *r = opaque;

    r->done = true;
    r->code = err != NULL ? err->code : 0;
    snprintf(r->msg, sizeof r->msg, "%s", err != NULL ? err->msg : "");
}

static void
job_event(void *opaque, struct ng_job *job, enum ng_job_event ev,
          bool is_read, enum ng_job_error_action action)
{
    (void)opaque, (void)job, (void)ev, (void)is_read, (void)action;
}

static void
job_gone(void *opaque, struct ng_job *job)
{
    (void)opaque, (void)job;
}

static void
run_until(struct fixture *f, bool (*cond)(struct fixture *, void *),
          void *arg)
{
    uint64_t deadline = uv_hrtime() + 30000 * MS;

    tick_start(f);
    while (!cond(f, arg)) {
        if (uv_hrtime() > deadline)
            fail("timed out after 30 s");
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    tick_stop(f);
}

static bool
both_started(struct fixture *f, void *arg)
{
    struct start_result *r = arg;

    (void)f;
    return r[0].done && r[1].done;
}

static bool
job_gone_now(struct fixture *f, void *arg)
{
    return ng_job_find(f->g, arg) == NULL;
}

/* Exactly one of the two starts succeeded, the other found the ID
 * taken; the index of the one that runs. */
static int
one_started(const struct start_result *r)
{
    int won = r[0].code == 0 ? 0 : 1;

    CHECK((r[0].code == 0) != (r[1].code == 0));
    fprintf(stderr, "  the other start: %s\n", r[!won].msg);
    CHECK(strstr(r[!won].msg, "already exists") != NULL);
    return won;
}

/*   bb -> top (memory, 1M, backing: base) -> base (memory, 1M, data) */
static void
test_stream(void)
{
    struct fixture f;
    struct ng_job_hooks hooks = { .event = job_event, .gone = job_gone };
    struct ng_stream_params p = {
        .job_id = "j", .top = "top", .filter_node_name = "f1",
        .speed = 1,                 /* one chunk, then it waits */
        .on_error = NG_JOB_ERROR_REPORT,
        .auto_finalize = true, .auto_dismiss = true,
    };
    struct start_result r[2] = { { 0 } };
    struct ng_error err = { 0 };
    struct ng_node *top, *base;
    struct ng_bb *bb;
    unsigned char *buf = malloc(MiB);
    int won;

    CHECK(buf != NULL);
    setup(&f, "stream: a job that cannot be made takes its filter out");
    base = add(&f, "base", yaml("{driver: memory, size: 1M}"));
    top = add(&f, "top", yaml("{driver: memory, size: 1M, backing: base}"));
    bb = bb_new(&f, "base-bb", base, true);
    fill(buf, MiB, 0, 1);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);
    ng_bb_free(bb);
    bb = bb_new(&f, "bb", top, true);

    CHECK(ng_stream_start(f.g, &p, &hooks, started, &r[0], &err) == 0);
    p.filter_node_name = "f2";
    CHECK(ng_stream_start(f.g, &p, &hooks, started, &r[1], &err) == 0);
    run_until(&f, both_started, r);
    won = one_started(r);
    /* The running job's filter is in; the other's is out again. */
    CHECK(ng_graph_find(f.g, won == 0 ? "f1" : "f2") != NULL);
    CHECK(ng_graph_find(f.g, won == 0 ? "f2" : "f1") == NULL);
    CHECK(ng_node_child_role(top, NG_ROLE_BACKING) == base);

    /* The job that runs still reads the backing's data. */
    memset(buf, 0, MiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, MiB, 0, buf), 0);
    check_filled(buf, MiB, 0, 1);

    CHECK(ng_job_cancel(ng_job_find(f.g, "j"), &err) == 0);
    run_until(&f, job_gone_now, "j");
    CHECK(ng_graph_find(f.g, "f1") == NULL);
    CHECK(ng_graph_find(f.g, "f2") == NULL);
    CHECK(ng_node_child_role(top, NG_ROLE_BACKING) == base);
    ng_bb_free(bb);
    wait_ms(&f, 10);                /* the engines' handles close */
    teardown(&f);
    free(buf);
}

/*   src (memory, 1M, data; bitmaps b0 and b1 dirty all over)
 *   t1, t2 (memory, 1M): the two backups' targets */
static void
test_backup(void)
{
    struct fixture f;
    struct ng_job_hooks hooks = { .event = job_event, .gone = job_gone };
    struct ng_backup_params p = {
        .job_id = "k", .source = "src", .target = "t1",
        .sync = NG_BACKUP_SYNC_INCREMENTAL, .bitmap = "b0",
        .filter_node_name = "g1",
        .speed = 1,                 /* one chunk, then it waits */
        .on_source_error = NG_JOB_ERROR_REPORT,
        .on_target_error = NG_JOB_ERROR_REPORT,
        .auto_finalize = true, .auto_dismiss = true,
    };
    static const char *const filters[2] = { "g1", "g2" };
    static const char *const bitmaps[2] = { "b0", "b1" };
    struct start_result r[2] = { { 0 } };
    struct ng_error err = { 0 };
    struct ng_bitmap *bm[2];
    struct ng_node *src;
    struct ng_bb *bb;
    unsigned char *buf = malloc(MiB);
    int won, i;

    CHECK(buf != NULL);
    setup(&f, "backup: a job that cannot be made takes its filter out and "
          "gives its bitmap back");
    src = add(&f, "src", yaml("{driver: memory, size: 1M}"));
    add(&f, "t1", yaml("{driver: memory, size: 1M}"));
    add(&f, "t2", yaml("{driver: memory, size: 1M}"));
    for (i = 0; i < 2; i++)
        CHECK((bm[i] = ng_bitmap_add(src, bitmaps[i], 64 * KiB, &err))
              != NULL);
    bb = bb_new(&f, "bb", src, true);
    fill(buf, MiB, 0, 2);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);

    CHECK(ng_backup_start(f.g, &p, &hooks, started, &r[0], &err) == 0);
    p.target = "t2";
    p.bitmap = "b1";
    p.filter_node_name = "g2";
    CHECK(ng_backup_start(f.g, &p, &hooks, started, &r[1], &err) == 0);
    run_until(&f, both_started, r);
    won = one_started(r);
    CHECK(ng_graph_find(f.g, filters[won]) != NULL);
    CHECK(ng_graph_find(f.g, filters[!won]) == NULL);
    CHECK(bm[won]->busy);
    CHECK(!bm[!won]->busy);
    CHECK(ng_bitmap_dirty_bytes(bm[!won]) == MiB);

    /* Cancelled, the job gives its bitmap back too. */
    CHECK(ng_job_cancel(ng_job_find(f.g, "k"), &err) == 0);
    run_until(&f, job_gone_now, "k");
    CHECK(ng_graph_find(f.g, "g1") == NULL);
    CHECK(ng_graph_find(f.g, "g2") == NULL);
    CHECK(!bm[won]->busy);
    CHECK(ng_bitmap_dirty_bytes(bm[won]) == MiB);
    ng_bb_free(bb);
    wait_ms(&f, 10);                /* the engines' handles close */
    teardown(&f);
    free(buf);
}

int
main(void)
{
    test_stream();
    test_backup();
    return 0;
}
