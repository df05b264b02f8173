/* graph/job.c: the job life cycle (see job.h).  The two tables are
 * QEMU's job.c JobSTT and JobVerbTable, row for row. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/job.h"

/* Allowed transitions: from (row) -> to (column). */
static const bool transition_ok[NG_JOB__STATUS_COUNT][NG_JOB__STATUS_COUNT] = {
                     /* U, C, R, P, Y, S, W, D, X, E, N */
    [NG_JOB_UNDEFINED] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    [NG_JOB_CREATED]   = {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
    [NG_JOB_RUNNING]   = {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
    [NG_JOB_PAUSED]    = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    [NG_JOB_READY]     = {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
    [NG_JOB_STANDBY]   = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    [NG_JOB_WAITING]   = {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
    [NG_JOB_PENDING]   = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    [NG_JOB_ABORTING]  = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    [NG_JOB_CONCLUDED] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    [NG_JOB_NULL]      = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

/* Verbs each state takes. */
static const bool verb_ok[NG_JOB__VERB_COUNT][NG_JOB__STATUS_COUNT] = {
                              /* U, C, R, P, Y, S, W, D, X, E, N */
    [NG_JOB_VERB_CANCEL]    = {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    [NG_JOB_VERB_PAUSE]     = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [NG_JOB_VERB_RESUME]    = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [NG_JOB_VERB_SET_SPEED] = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [NG_JOB_VERB_COMPLETE]  = {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
    [NG_JOB_VERB_FINALIZE]  = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    [NG_JOB_VERB_DISMISS]   = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
};

const char *
ng_job_status_name(enum ng_job_status s)
{
    static const char *const names[NG_JOB__STATUS_COUNT] = {
        "undefined", "created", "running", "paused", "ready", "standby",
        "waiting", "pending", "aborting", "concluded", "null",
    };

    return (unsigned)s < NG_JOB__STATUS_COUNT ? names[s] : "undefined";
}

const char *
ng_job_verb_name(enum ng_job_verb v)
{
    static const char *const names[NG_JOB__VERB_COUNT] = {
        "cancel", "pause", "resume", "set-speed", "complete", "finalize",
        "dismiss",
    };

    return (unsigned)v < NG_JOB__VERB_COUNT ? names[v] : "unknown";
}

const char *
ng_job_error_action_name(enum ng_job_error_action a)
{
    switch (a) {
    case NG_JOB_ERROR_REPORT: return "report";
    case NG_JOB_ERROR_IGNORE: return "ignore";
    case NG_JOB_ERROR_STOP:   return "stop";
    case NG_JOB_ERROR_ENOSPC: return "enospc";
    }
    return "report";
}

const char *
ng_job_iostatus_name(enum ng_job_iostatus s)
{
    switch (s) {
    case NG_JOB_IOSTATUS_OK:      return "ok";
    case NG_JOB_IOSTATUS_FAILED:  return "failed";
    case NG_JOB_IOSTATUS_NOSPACE: return "nospace";
    }
    return "ok";
}

int
ng_job_error_action_parse(const char *s)
{
    if (strcmp(s, "report") == 0)
        return NG_JOB_ERROR_REPORT;
    if (strcmp(s, "ignore") == 0)
        return NG_JOB_ERROR_IGNORE;
    if (strcmp(s, "stop") == 0)
        return NG_JOB_ERROR_STOP;
    if (strcmp(s, "enospc") == 0)
        return NG_JOB_ERROR_ENOSPC;
    return -1;
}

static void transition(struct ng_job *job, enum ng_job_status to);

/* ---- Registry ----------------------------------------------------------- */

/* Dismissal frees the type's state first (ng_job_dismiss); a job still
 * registered when the graph goes is freed here with its nodes and BBs
 * already gone, so the type frees only memory then. */
static void
job_object_free(void *obj)
{
    struct ng_job *job = obj;

    if (job->state != NULL) {
        job->graph = NULL;          /* tells the type: memory only */
        job->ops->free(job);
    }
    free(job->id);
    free(job->device);
    free(job);
}

const struct ng_object_type ng_job_type = {
    .name = "job",
    .free = job_object_free,
};

struct ng_job *
ng_job_find(struct ng_graph *g, const char *id)
{
    return ng_graph_object_find(g, &ng_job_type, id);
}

struct ng_job *
ng_job_new(struct ng_graph *g, const char *id, const char *device,
           const struct ng_job_ops *ops, void *state,
           const struct ng_job_hooks *hooks, bool auto_finalize,
           bool auto_dismiss, uint64_t speed, struct ng_error *err)
{
    struct ng_job *job = calloc(1, sizeof *job);

    if (job == NULL || (job->id = strdup(id)) == NULL ||
        (job->device = strdup(device)) == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    job->graph = g;
    job->ops = ops;
    job->state = state;
    job->hooks = *hooks;
    job->auto_finalize = auto_finalize;
    job->auto_dismiss = auto_dismiss;
    job->speed = speed;
    if (ng_graph_object_add(g, &ng_job_type, id, job, err) == -1)
        goto fail;
    transition(job, NG_JOB_CREATED);
    return job;

fail:
    if (job != NULL) {
        free(job->id);
        free(job->device);
        free(job);
    }
    return NULL;
}

/* ---- States ----------------------------------------------------------- */

static void
emit(struct ng_job *job, enum ng_job_event ev)
{
    job->hooks.event(job->hooks.opaque, job, ev, false,
                     NG_JOB_ERROR_REPORT);
}

static void
transition(struct ng_job *job, enum ng_job_status to)
{
    if (!transition_ok[job->status][to])
        return;             /* a bug in a job type; keep the state sane */
    job->status = to;
    emit(job, NG_JOB_EV_STATUS);
}

static int
apply_verb(struct ng_job *job, enum ng_job_verb verb, struct ng_error *err)
{
    if (verb_ok[verb][job->status])
        return 0;
    return ng_error_set(err, EBUSY, "job '%s' in state '%s' cannot accept "
                        "command verb '%s'", job->id,
                        ng_job_status_name(job->status),
                        ng_job_verb_name(verb));
}

void
ng_job_start(struct ng_job *job)
{
    transition(job, NG_JOB_RUNNING);
    job->ops->start(job);
    if (job->pause_count > 0 && !job->done) {
        job->ops->pause(job);
        transition(job, NG_JOB_PAUSED);
    }
}

void
ng_job_ready(struct ng_job *job)
{
    if (job->status != NG_JOB_RUNNING || job->cancelled)
        return;
    transition(job, NG_JOB_READY);
    emit(job, NG_JOB_EV_READY);
}

static void
job_free_state(struct ng_job *job)
{
    job->hooks.gone(job->hooks.opaque, job);
    job->ops->free(job);
    job->state = NULL;
}

static void
conclude(struct ng_job *job)
{
    transition(job, NG_JOB_CONCLUDED);
    if (job->auto_dismiss) {
        transition(job, NG_JOB_NULL);
        job_free_state(job);
        ng_graph_object_del(job->graph, &ng_job_type, job->id, NULL);
    }
}

/* The job failed with ret (negative errno): query-jobs' `error` says
 * msg, or strerror's words when there is none. */
static void
set_failure(struct ng_job *job, int ret, const char *msg)
{
    job->ret = ret;
    snprintf(job->error, sizeof job->error, "%s",
             msg != NULL ? msg : strerror(-ret));
}

/* The change commit was to make was refused: the job fails with why,
 * as QEMU's does when .prepare fails (BLOCK_JOB_COMPLETED with the
 * error). */
static void
commit_failed(struct ng_job *job, const struct ng_error *err)
{
    set_failure(job, err->code > 0 ? -err->code : -EIO, err->msg);
    transition(job, NG_JOB_ABORTING);
}

/* After the commit (or none): abort a failed job, tell, conclude, then
 * answer whoever waits (the job may be gone by then). */
static void
finish_finalize(struct ng_job *job)
{
    void (*finalized)(void *) = job->finalized;
    void *opaque = job->finalized_opaque;

    job->finalized = NULL;
    if (job->ret != 0 && job->ops->abort != NULL)
        job->ops->abort(job);
    emit(job, job->cancelled ? NG_JOB_EV_CANCELLED : NG_JOB_EV_COMPLETED);
    conclude(job);
    if (finalized != NULL)
        finalized(opaque);
}

/* pending|aborting: commit or abort, tell, conclude.  An asynchronous
 * commit goes on in ng_job_commit_done(). */
static void
finalize(struct ng_job *job)
{
    struct ng_error err = { 0 };

    if (job->ret == 0 && job->ops->commit_async != NULL) {
        job->finalizing = true;
        job->ops->commit_async(job);
        return;
    }
    if (job->ret == 0 && job->ops->commit != NULL &&
        job->ops->commit(job, &err) == -1)
        commit_failed(job, &err);
    finish_finalize(job);
}

void
ng_job_commit_done(struct ng_job *job, const struct ng_error *err)
{
    if (!job->finalizing)
        return;             /* a bug in a job type; keep the state sane */
    job->finalizing = false;
    if (err != NULL)
        commit_failed(job, err);
    finish_finalize(job);
}

static int
backing_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct ng_job_backing_change *c = opaque;

    (void)g;
    return ng_node_set_backing(c->node, c->backing, 0, err);
}

static void
backing_changed(void *opaque, const struct ng_error *err)
{
    struct ng_job_backing_change *c = opaque;

    ng_job_commit_done(c->job, err);
}

void
ng_job_commit_backing(struct ng_job_backing_change *c, struct ng_job *job,
                      struct ng_node *node, struct ng_node *backing)
{
    struct ng_error err = { 0 };

    *c = (struct ng_job_backing_change){ job, node, backing };
    if (ng_graph_mutate(node->graph, node, backing_mutation,
                        backing_changed, c, &err) == -1)
        ng_job_commit_done(job, &err);
}

void
ng_job_done(struct ng_job *job, int ret, const char *msg)
{
    if (job->done)
        return;
    job->done = true;
    /* A type that was ending anyway when the cancel came changed nothing
     * a cancel would undo (had it, the cancel was refused; what it
     * changes at finalize, abort leaves undone): cancelled. */
    if (job->cancelled && ret == 0)
        ret = -ECANCELED;
    job->ret = ret;
    if (ret < 0)
        set_failure(job, ret, job->cancelled ? NULL : msg);
    /* A paused job is woken to wind down, as QEMU's is. */
    if (job->status == NG_JOB_PAUSED)
        transition(job, NG_JOB_RUNNING);
    if (job->status == NG_JOB_STANDBY)
        transition(job, NG_JOB_READY);
    if (ret < 0) {
        transition(job, NG_JOB_ABORTING);
        finalize(job);
        return;
    }
    transition(job, NG_JOB_WAITING);
    transition(job, NG_JOB_PENDING);
    if (job->auto_finalize)
        finalize(job);
}

enum ng_job_error_action
ng_job_io_error(struct ng_job *job, enum ng_job_error_action policy,
                bool is_read, int err)
{
    enum ng_job_error_action action = policy;

    if (policy == NG_JOB_ERROR_ENOSPC)
        action = err == -ENOSPC ? NG_JOB_ERROR_STOP : NG_JOB_ERROR_REPORT;
    job->hooks.event(job->hooks.opaque, job, NG_JOB_EV_ERROR, is_read,
                     action);
    if (action != NG_JOB_ERROR_STOP)
        return action;
    /* As QEMU's: a job the user paused already stays paused once. */
    if (!job->user_paused) {
        job->user_paused = true;
        if (job->pause_count++ == 0 &&
            (job->status == NG_JOB_RUNNING || job->status == NG_JOB_READY)) {
            job->ops->pause(job);
            transition(job, job->status == NG_JOB_RUNNING ? NG_JOB_PAUSED
                                                          : NG_JOB_STANDBY);
        }
    }
    if (job->iostatus == NG_JOB_IOSTATUS_OK)
        job->iostatus = err == -ENOSPC ? NG_JOB_IOSTATUS_NOSPACE
                                       : NG_JOB_IOSTATUS_FAILED;
    return action;
}

/* ---- Verbs ------------------------------------------------------------ */

int
ng_job_pause(struct ng_job *job, struct ng_error *err)
{
    if (apply_verb(job, NG_JOB_VERB_PAUSE, err) == -1)
        return -1;
    job->user_paused = true;
    if (job->pause_count++ > 0)
        return 0;
    if (job->status == NG_JOB_RUNNING) {
        job->ops->pause(job);
        transition(job, NG_JOB_PAUSED);
    } else if (job->status == NG_JOB_READY) {
        job->ops->pause(job);
        transition(job, NG_JOB_STANDBY);
    }
    return 0;
}

int
ng_job_resume(struct ng_job *job, struct ng_error *err)
{
    if (apply_verb(job, NG_JOB_VERB_RESUME, err) == -1)
        return -1;
    if (!job->user_paused)
        return ng_error_set(err, EINVAL, "job '%s' is not paused", job->id);
    job->user_paused = false;
    job->pause_count = 0;
    job->iostatus = NG_JOB_IOSTATUS_OK;
    if (job->status == NG_JOB_PAUSED) {
        transition(job, NG_JOB_RUNNING);
        job->ops->resume(job);
    } else if (job->status == NG_JOB_STANDBY) {
        transition(job, NG_JOB_READY);
        job->ops->resume(job);
    }
    return 0;
}

/* A cancelled job whose type still has to stop (copies in flight, a
 * filter to take out) is aborting from now on, woken as ng_job_done()
 * would wake it.  While it stays "ready" or "running", query-jobs (and
 * `nbdgraphctl wait`, which stops at "ready") would show a job still
 * holding its BBs and claims as one that is over, and a mirror to the
 * same target right after it was refused. */
static void
start_aborting(struct ng_job *job)
{
    if (job->status == NG_JOB_PAUSED)
        transition(job, NG_JOB_RUNNING);
    if (job->status == NG_JOB_STANDBY)
        transition(job, NG_JOB_READY);
    transition(job, NG_JOB_ABORTING);
}

/* A job cancelled before its work ended fails with ECANCELED, and says
 * so in query-jobs' `error` as QEMU's does ("Operation canceled"). */
static void
cancelled_ret(struct ng_job *job)
{
    set_failure(job, -ECANCELED, NULL);
}

int
ng_job_cancel(struct ng_job *job, struct ng_error *err)
{
    if (job->cancelled && job->status == NG_JOB_ABORTING)
        return 0;                   /* winding down already */
    if (apply_verb(job, NG_JOB_VERB_CANCEL, err) == -1)
        return -1;
    if (job->cancelled)
        return 0;
    /* QEMU's job-finalize makes the change before it returns, so no
     * cancel can come in between; here its drained section is on its
     * way, and the job ends as that section decides. */
    if (job->finalizing)
        return ng_error_set(err, EBUSY, "job '%s' is being finalized and "
                            "can no longer be cancelled", job->id);
    job->cancelled = true;
    if (job->status == NG_JOB_CREATED) {
        job->done = true;
        cancelled_ret(job);
        transition(job, NG_JOB_ABORTING);
        finalize(job);
    } else if (job->done) {
        /* waiting or pending: the work is over; throw it away */
        cancelled_ret(job);
        transition(job, NG_JOB_ABORTING);
        finalize(job);
    } else {
        start_aborting(job);
        job->ops->cancel(job);      /* then ng_job_done() */
    }
    return 0;
}

int
ng_job_cancel_soft(struct ng_job *job, struct ng_error *err)
{
    if (job->ops->soft_cancel == NULL || job->cancelled || job->done ||
        (job->status != NG_JOB_READY && job->status != NG_JOB_STANDBY))
        return ng_job_cancel(job, err);
    job->soft_cancelled = true;
    job->ops->soft_cancel(job);
    return 0;
}

int
ng_job_complete(struct ng_job *job, struct ng_error *err)
{
    if (apply_verb(job, NG_JOB_VERB_COMPLETE, err) == -1)
        return -1;
    if (job->cancelled || job->soft_cancelled ||
        job->ops->complete == NULL)
        return ng_error_set(err, EINVAL, "job '%s' cannot be completed",
                            job->id);
    return job->ops->complete(job, err);
}

int
ng_job_finalize(struct ng_job *job, void (*done)(void *opaque), void *opaque,
                struct ng_error *err)
{
    if (apply_verb(job, NG_JOB_VERB_FINALIZE, err) == -1)
        return -1;
    if (job->finalizing)
        return ng_error_set(err, EBUSY, "job '%s' is being finalized "
                            "already", job->id);
    job->finalized = done;
    job->finalized_opaque = opaque;
    finalize(job);
    return 0;
}

int
ng_job_dismiss(struct ng_job *job, struct ng_error *err)
{
    if (apply_verb(job, NG_JOB_VERB_DISMISS, err) == -1)
        return -1;
    transition(job, NG_JOB_NULL);
    job_free_state(job);
    return ng_graph_object_del(job->graph, &ng_job_type, job->id, err);
}

int
ng_job_set_speed(struct ng_job *job, int64_t speed, struct ng_error *err)
{
    if (apply_verb(job, NG_JOB_VERB_SET_SPEED, err) == -1)
        return -1;
    if (speed < 0)
        return ng_error_set(err, EINVAL, "speed must not be negative");
    job->speed = (uint64_t)speed;
    if (job->ops->set_speed != NULL)
        job->ops->set_speed(job, job->speed);
    return 0;
}

void
ng_job_progress(struct ng_job *job, uint64_t *current, uint64_t *total)
{
    *current = *total = 0;
    if (job->state != NULL && job->ops->progress != NULL)
        job->ops->progress(job, current, total);
}

/* ---- Shutdown ----------------------------------------------------------- */

struct job_list {
    struct ng_job **jobs;
    size_t n, cap;
};

static void
collect_job(void *opaque, const struct ng_object_type *type, const char *id,
            void *obj)
{
    struct job_list *l = opaque;

    (void)type;
    (void)id;
    if (l->n < l->cap)
        l->jobs[l->n++] = obj;
}

static void
count_job(void *opaque, const struct ng_object_type *type, const char *id,
          void *obj)
{
    (void)type;
    (void)id;
    (void)obj;
    ((struct job_list *)opaque)->cap++;
}

unsigned
ng_job_cancel_all(struct ng_graph *g)
{
    struct job_list l = { 0 };
    size_t i;

    /* Collect first: cancelling may dismiss, which changes the list. */
    ng_graph_object_foreach(g, &ng_job_type, count_job, &l);
    if (l.cap == 0 || (l.jobs = calloc(l.cap, sizeof *l.jobs)) == NULL)
        return 0;
    ng_graph_object_foreach(g, &ng_job_type, collect_job, &l);
    for (i = 0; i < l.n; i++) {
        struct ng_job *job = l.jobs[i];

        job->auto_dismiss = true;
        job->auto_finalize = true;
        if (job->status == NG_JOB_CONCLUDED)
            ng_job_dismiss(job, NULL);
        else if (!job->cancelled && !job->finalizing)
            ng_job_cancel(job, NULL);
    }
    free(l.jobs);
    l.cap = 0;
    ng_graph_object_foreach(g, &ng_job_type, count_job, &l);
    return (unsigned)l.cap;
}
