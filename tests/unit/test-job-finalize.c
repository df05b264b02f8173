/* tests/unit/test-job-finalize.c: the job life cycle's asynchronous
 * finalize (ops->commit_async, ng_job_commit_done()), on a job type
 * made here whose change is "made" by a timer a little later:
 *   - the job stays pending while the change is under way; job-cancel
 *     and a second job-finalize are refused with the reason; then
 *     BLOCK_JOB_COMPLETED, concluded, and job-finalize's callback, in
 *     that order, abort not run;
 *   - a refused change fails the job with its reason (aborting, abort
 *     run, COMPLETED with the error);
 *   - a change that cannot even begin (ng_job_commit_done() inline)
 *     concludes inside ng_job_finalize();
 *   - auto-finalize and auto-dismiss: the job is gone once the change is
 *     made;
 *   - shutdown (ng_job_cancel_all) leaves an asynchronous finalize to end
 *     and counts it as winding down; the job goes when it ends;
 *   - a type with a synchronous commit calls back inside
 *     ng_job_finalize(), as before.
 * The refused change is not reachable through the daemon (the stream's
 * and commit's claims keep it from being refused), hence this test. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "graph/graph.h"
#include "graph/job.h"
#include "tests/unit/graph-fixture.h"

/* What a case sees, and how its job type behaves. */
struct watch {
    char log[512];                  /* "pending,COMPLETED,concluded,..." */
    int completed_ret;
    unsigned aborts, frees, finalized, commits;
    bool refuse;                    /* the change is refused */
    bool inline_done;               /* ... at once: no section begins */
    uv_timer_t timer;               /* makes the change */
    struct ng_job *job;
};

static void
note(struct watch *w, const char *what)
{
    strncat(w->log, what, sizeof w->log - strlen(w->log) - 2);
    strcat(w->log, ",");
}

static void
on_event(void *opaque, struct ng_job *job, enum ng_job_event ev,
         bool is_read, enum ng_job_error_action action)
{
    struct watch *w = opaque;

    (void)is_read, (void)action;
    if (ev == NG_JOB_EV_STATUS) {
        note(w, ng_job_status_name(job->status));
    } else if (ev == NG_JOB_EV_COMPLETED) {
        note(w, "COMPLETED");
        w->completed_ret = job->ret;
    } else if (ev == NG_JOB_EV_CANCELLED) {
        note(w, "CANCELLED");
    }
}

static void
on_gone(void *opaque, struct ng_job *job)
{
    (void)opaque, (void)job;
}

static void
change_made(uv_timer_t *t)
{
    struct watch *w = t->data;
    struct ng_error err = { 0 };

    if (w->refuse)
        ng_error_set(&err, EBUSY, "node 'x' will not take it");
    ng_job_commit_done(w->job, w->refuse ? &err : NULL);
}

static void
op_commit_async(struct ng_job *job)
{
    struct watch *w = job->state;
    struct ng_error err = { 0 };

    w->commits++;
    if (w->inline_done) {
        ng_error_set(&err, ENOMEM, "out of memory");
        ng_job_commit_done(job, &err);
        return;
    }
    CHECK(uv_timer_start(&w->timer, change_made, 20, 0) == 0);
}

static int
op_commit(struct ng_job *job, struct ng_error *err)
{
    struct watch *w = job->state;

    (void)err;
    w->commits++;
    return 0;
}

static void
op_abort(struct ng_job *job)
{
    ((struct watch *)job->state)->aborts++;
}

static void
op_free(struct ng_job *job)
{
    ((struct watch *)job->state)->frees++;
}

static void op_nothing(struct ng_job *job) { (void)job; }

static const struct ng_job_ops async_ops = {
    .type = "test",
    .start = op_nothing,
    .pause = op_nothing,
    .resume = op_nothing,
    .cancel = op_nothing,
    .commit_async = op_commit_async,
    .abort = op_abort,
    .free = op_free,
};

static const struct ng_job_ops sync_ops = {
    .type = "test",
    .start = op_nothing,
    .pause = op_nothing,
    .resume = op_nothing,
    .cancel = op_nothing,
    .commit = op_commit,
    .abort = op_abort,
    .free = op_free,
};

static void
finalized(void *opaque)
{
    struct watch *w = opaque;

    w->finalized++;
    note(w, "answered");
}

/* Job "j" of `ops`, started and done: pending (or on with auto). */
static void
job_pending(struct fixture *f, struct watch *w, const struct ng_job_ops *ops,
            bool auto_finalize)
{
    struct ng_job_hooks hooks = { .event = on_event, .gone = on_gone,
                                  .opaque = w };
    struct ng_error err = { 0 };

    CHECK(uv_timer_init(&f->loop, &w->timer) == 0);
    w->timer.data = w;
    w->job = ng_job_new(f->g, "j", "dev", ops, w, &hooks, auto_finalize,
                        auto_finalize, 0, &err);
    CHECK(w->job != NULL);
    ng_job_start(w->job);
    ng_job_done(w->job, 0, NULL);
}

static void
run_until_finalized(struct fixture *f, struct watch *w)
{
    uint64_t deadline = uv_hrtime() + 10000 * MS;

    while (w->finalized == 0 && w->frees == 0) {
        if (uv_hrtime() > deadline)
            fail("the finalize did not end within 10 s");
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

static void
close_timer(struct watch *w)
{
    uv_close((uv_handle_t *)&w->timer, NULL);
}

static void
case_async_ok(void)
{
    struct fixture f;
    struct watch w = { 0 };
    struct ng_error err = { 0 };

    setup(&f, "async commit: pending until made, verbs refused meanwhile");
    job_pending(&f, &w, &async_ops, false);
    CHECK(w.job->status == NG_JOB_PENDING);
    CHECK(ng_job_finalize(w.job, finalized, &w, &err) == 0);
    CHECK(w.job->status == NG_JOB_PENDING && w.finalized == 0);
    CHECK(ng_job_cancel(w.job, &err) == -1 && err.code == EBUSY);
    CHECK(strcmp(err.msg, "job 'j' is being finalized and can no longer "
                 "be cancelled") == 0);
    CHECK(ng_job_finalize(w.job, finalized, &w, &err) == -1);
    CHECK(strcmp(err.msg, "job 'j' is being finalized already") == 0);
    run_until_finalized(&f, &w);
    CHECK(strcmp(w.log, "created,running,waiting,pending,COMPLETED,"
                 "concluded,answered,") == 0);
    CHECK(w.completed_ret == 0 && w.aborts == 0 && w.commits == 1);
    CHECK(w.job->status == NG_JOB_CONCLUDED && w.finalized == 1);
    CHECK(ng_job_dismiss(w.job, NULL) == 0);
    CHECK(w.frees == 1);
    close_timer(&w);
    teardown(&f);
}

static void
case_async_refused(void)
{
    struct fixture f;
    struct watch w = { .refuse = true };
    struct ng_job *job;

    setup(&f, "async commit refused: the job fails with the reason");
    job_pending(&f, &w, &async_ops, false);
    job = w.job;
    CHECK(ng_job_finalize(job, finalized, &w, NULL) == 0);
    run_until_finalized(&f, &w);
    CHECK(strcmp(w.log, "created,running,waiting,pending,aborting,"
                 "COMPLETED,concluded,answered,") == 0);
    CHECK(w.completed_ret == -EBUSY && w.aborts == 1);
    CHECK(strcmp(job->error, "node 'x' will not take it") == 0);
    CHECK(!job->cancelled && job->status == NG_JOB_CONCLUDED);
    CHECK(ng_job_dismiss(job, NULL) == 0);
    close_timer(&w);
    teardown(&f);
}

static void
case_async_inline(void)
{
    struct fixture f;
    struct watch w = { .inline_done = true };

    setup(&f, "async commit that cannot begin: concluded inside finalize");
    job_pending(&f, &w, &async_ops, false);
    CHECK(ng_job_finalize(w.job, finalized, &w, NULL) == 0);
    CHECK(w.finalized == 1 && w.aborts == 1 && w.completed_ret == -ENOMEM);
    CHECK(w.job->status == NG_JOB_CONCLUDED);
    CHECK(strcmp(w.job->error, "out of memory") == 0);
    CHECK(ng_job_dismiss(w.job, NULL) == 0);
    close_timer(&w);
    teardown(&f);
}

static void
case_async_auto(void)
{
    struct fixture f;
    struct watch w = { 0 };

    setup(&f, "auto-finalize and auto-dismiss: gone once made");
    job_pending(&f, &w, &async_ops, true);
    CHECK(ng_job_find(f.g, "j") != NULL && w.frees == 0);
    run_until_finalized(&f, &w);
    CHECK(ng_job_find(f.g, "j") == NULL && w.frees == 1);
    CHECK(strcmp(w.log, "created,running,waiting,pending,COMPLETED,"
                 "concluded,null,") == 0);
    close_timer(&w);
    teardown(&f);
}

static void
case_async_shutdown(void)
{
    struct fixture f;
    struct watch w = { 0 };

    setup(&f, "shutdown during an async commit: left to end, then gone");
    job_pending(&f, &w, &async_ops, false);
    CHECK(ng_job_finalize(w.job, finalized, &w, NULL) == 0);
    CHECK(ng_job_cancel_all(f.g) == 1);
    CHECK(!w.job->cancelled);
    run_until_finalized(&f, &w);
    CHECK(ng_job_find(f.g, "j") == NULL && w.frees == 1);
    CHECK(w.completed_ret == 0 && w.aborts == 0 && w.finalized == 1);
    close_timer(&w);
    teardown(&f);
}

static void
case_sync(void)
{
    struct fixture f;
    struct watch w = { 0 };

    setup(&f, "sync commit: answered inside finalize");
    job_pending(&f, &w, &sync_ops, false);
    CHECK(ng_job_finalize(w.job, finalized, &w, NULL) == 0);
    CHECK(w.finalized == 1 && w.commits == 1 && w.aborts == 0);
    CHECK(strcmp(w.log, "created,running,waiting,pending,COMPLETED,"
                 "concluded,answered,") == 0);
    CHECK(ng_job_dismiss(w.job, NULL) == 0);
    close_timer(&w);
    teardown(&f);
}

int
main(void)
{
    case_async_ok();
    case_async_refused();
    case_async_inline();
    case_async_auto();
    case_async_shutdown();
    case_sync();
    return 0;
}
