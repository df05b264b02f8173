/* graph/job.h: long-running block jobs and their life cycle, exactly as
 * QEMU's job state table (qapi/job.json, job.c):
 *
 *   created -> running <-> paused
 *   running -> ready <-> standby               (mirror: converged)
 *   running|ready -> waiting -> pending -> concluded -> null
 *   any live state -> aborting -> concluded -> null (cancel, error)
 *
 * A job type (mirror.c, ...) supplies struct ng_job_ops; this file runs
 * the states and the verbs (pause, resume, cancel, complete, finalize,
 * dismiss, set-speed), refuses a verb a state does not take, and tells
 * the owner (the control channel) of every change through
 * struct ng_job_hooks, so graph/ needs no JSON.  Jobs live in the graph
 * object registry as objects of type ng_job_type, found by ID.
 * Loop thread only.
 */
#ifndef NG_JOB_H
#define NG_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/error.h"

struct ng_graph;
struct ng_job;

enum ng_job_status {
    NG_JOB_UNDEFINED,
    NG_JOB_CREATED,
    NG_JOB_RUNNING,
    NG_JOB_PAUSED,
    NG_JOB_READY,
    NG_JOB_STANDBY,
    NG_JOB_WAITING,
    NG_JOB_PENDING,
    NG_JOB_ABORTING,
    NG_JOB_CONCLUDED,
    NG_JOB_NULL,
    NG_JOB__STATUS_COUNT
};

enum ng_job_verb {
    NG_JOB_VERB_CANCEL,
    NG_JOB_VERB_PAUSE,
    NG_JOB_VERB_RESUME,
    NG_JOB_VERB_SET_SPEED,
    NG_JOB_VERB_COMPLETE,
    NG_JOB_VERB_FINALIZE,
    NG_JOB_VERB_DISMISS,
    NG_JOB__VERB_COUNT
};

/* on-source-error / on-target-error / on-error, and (all but ENOSPC)
 * what the job does about one error: QEMU's BlockdevOnError and
 * BlockErrorAction. */
enum ng_job_error_action {
    NG_JOB_ERROR_REPORT,            /* the job fails with the error */
    NG_JOB_ERROR_IGNORE,            /* go on: the range stays to copy and
                                     * is retried (block-stream: skipped,
                                     * and the job fails at its end) */
    NG_JOB_ERROR_STOP,              /* pause with io-status set;
                                     * job-resume retries */
    NG_JOB_ERROR_ENOSPC,            /* a policy only: stop on ENOSPC,
                                     * report anything else */
};

/* query-block-jobs' io-status: "ok", or why a stop on error paused the
 * job. */
enum ng_job_iostatus {
    NG_JOB_IOSTATUS_OK,
    NG_JOB_IOSTATUS_FAILED,
    NG_JOB_IOSTATUS_NOSPACE,
};

const char *ng_job_status_name(enum ng_job_status s);
const char *ng_job_verb_name(enum ng_job_verb v);
const char *ng_job_error_action_name(enum ng_job_error_action a);
/* "report", "ignore", "stop", "enospc" (stop on ENOSPC, else report, as
 * QEMU); -1 for anything else. */
int ng_job_error_action_parse(const char *s);
const char *ng_job_iostatus_name(enum ng_job_iostatus s);

struct ng_job_ops {
    const char *type;               /* "mirror": query-jobs' "type" */
    /* Begin working.  Later the type calls ng_job_ready() (if it has a
     * ready phase) and ng_job_done() exactly once. */
    void (*start)(struct ng_job *job);
    void (*pause)(struct ng_job *job);
    void (*resume)(struct ng_job *job);
    /* Stop working; then ng_job_done(job, -ECANCELED).  A type that was
     * ending anyway may end with 0 (the job then counts as cancelled
     * all the same), but must not change the graph for good after this:
     * a change that is the job's result is made at finalize (commit or
     * commit_async), and abort runs instead of it. */
    void (*cancel)(struct ng_job *job);
    /* block-job-cancel without force on a ready job (QEMU's soft
     * cancel of a ready mirror): finish as complete would, but move
     * nothing (a mirror's target ends as a point-in-time copy of the
     * source), then ng_job_done(job, 0): BLOCK_JOB_COMPLETED.  NULL: a
     * soft cancel is a cancel. */
    void (*soft_cancel)(struct ng_job *job);
    /* job-complete in ready/standby: finish (mirror: the last bits
     * copied in a drained section, the pivot left to commit), then
     * ng_job_done().  -1 with *err: refused, nothing changed.  NULL: the
     * type cannot be completed by the user. */
    int (*complete)(struct ng_job *job, struct ng_error *err);
    void (*set_speed)(struct ng_job *job, uint64_t speed);
    void (*progress)(struct ng_job *job, uint64_t *current,
                     uint64_t *total);
    /* Finalize (QEMU's .prepare/.commit and .abort): the job succeeded
     * and makes its change to the graph now (mirror: the pivot, in the
     * drained section its run left open), or it failed or was cancelled
     * (also in pending) and abort undoes what the run prepared (mirror:
     * the section ends, nothing moved).  commit returns -1 with *err
     * when the change is refused, the graph as it was: the job then
     * fails with that error and abort runs.  Both may be NULL.  Then
     * clean, and at dismissal free. */
    int (*commit)(struct ng_job *job, struct ng_error *err);
    /* Instead of commit, for a type whose change needs a drained
     * section of its own, begun at finalize (block-stream's cut chain,
     * an intermediate commit's new backing): begin it, and once the
     * change is made (err NULL) or refused (the graph as it was) call
     * ng_job_commit_done() exactly once; inline too, when the section
     * cannot even begin.  Meanwhile the job stays `pending` (QEMU shows
     * no other state) and refuses job-cancel and a second job-finalize;
     * a refusal fails the job and abort runs, as for commit. */
    void (*commit_async)(struct ng_job *job);
    void (*abort)(struct ng_job *job);
    /* Free the type's state.  job->graph is NULL when the graph is being
     * freed around a job nobody dismissed: its nodes and BBs are gone
     * already, free memory only. */
    void (*free)(struct ng_job *job);
};

enum ng_job_event {
    NG_JOB_EV_STATUS,               /* JOB_STATUS_CHANGE */
    NG_JOB_EV_READY,                /* BLOCK_JOB_READY */
    NG_JOB_EV_COMPLETED,            /* BLOCK_JOB_COMPLETED (error set on
                                     * failure) */
    NG_JOB_EV_CANCELLED,            /* BLOCK_JOB_CANCELLED */
    NG_JOB_EV_ERROR,                /* BLOCK_JOB_ERROR */
};

struct ng_job_hooks {
    /* An event for `job`.  ERROR: is_read and action say what failed
     * and what the job does about it. */
    void (*event)(void *opaque, struct ng_job *job, enum ng_job_event ev,
                  bool is_read, enum ng_job_error_action action);
    /* The job reached null and is about to be freed (release claims). */
    void (*gone)(void *opaque, struct ng_job *job);
    /* Inside a drained section, at finalize, the job moved every parent
     * of node `from` to node `to` (mirror's pivot): claims naming `from`
     * for what now uses `to` must follow.  May be NULL. */
    void (*pivoted)(void *opaque, struct ng_job *job, const char *from,
                    const char *to);
    void *opaque;
};

struct ng_job {
    struct ng_graph *graph;
    char *id;                       /* owned */
    char *device;                   /* owned: BLOCK_JOB_*'s "device" */
    const struct ng_job_ops *ops;
    void *state;                    /* the type's, freed by ops->free */
    struct ng_job_hooks hooks;
    enum ng_job_status status;
    unsigned pause_count;
    bool user_paused;
    bool cancelled;
    bool soft_cancelled;            /* ops->soft_cancel runs */
    bool auto_finalize, auto_dismiss;
    bool done;                      /* ng_job_done() was called */
    bool finalizing;                /* ops->commit_async runs: no cancel,
                                     * no second finalize */
    /* Who waits for the job to conclude (job-finalize's answer), or
     * NULL. */
    void (*finalized)(void *opaque);
    void *finalized_opaque;
    enum ng_job_iostatus iostatus;  /* set by a stop on error, reset by
                                     * job-resume */
    int ret;                        /* 0 or negative errno, once done */
    char error[NG_ERROR_MSG_MAX];   /* message when ret < 0 and not
                                     * cancelled */
    uint64_t speed;
};

extern const struct ng_object_type ng_job_type;

/* Register a job in `created`.  `id` must be free.  `state` becomes the
 * job's (freed by ops->free).  NULL with *err: `state` stays the
 * caller's, to unwind what it made (a filter it put in, say). */
struct ng_job *ng_job_new(struct ng_graph *g, const char *id,
                          const char *device, const struct ng_job_ops *ops,
                          void *state, const struct ng_job_hooks *hooks,
                          bool auto_finalize, bool auto_dismiss,
                          uint64_t speed, struct ng_error *err);
struct ng_job *ng_job_find(struct ng_graph *g, const char *id);

/* created -> running, ops->start. */
void ng_job_start(struct ng_job *job);

/* The verbs; -1 with *err when the state does not take it. */
int ng_job_pause(struct ng_job *job, struct ng_error *err);
int ng_job_resume(struct ng_job *job, struct ng_error *err);
/* Taken in every state QEMU takes it, pending included (a mirror then
 * ends with nothing moved, a stream with its chain as it was); refused
 * while an asynchronous finalize runs (ops->commit_async). */
int ng_job_cancel(struct ng_job *job, struct ng_error *err);
/* block-job-cancel without force: ops->soft_cancel for a ready job of a
 * type that has one, else ng_job_cancel(). */
int ng_job_cancel_soft(struct ng_job *job, struct ng_error *err);
int ng_job_complete(struct ng_job *job, struct ng_error *err);
/* job-finalize; then `done(opaque)` (may be NULL) once the job has
 * concluded (its BLOCK_JOB_COMPLETED or _CANCELLED sent; the job may be
 * gone then): inline for a type whose commit is synchronous, later for
 * one with commit_async.  -1 with *err when the job does not take the
 * verb now (done does not run then). */
int ng_job_finalize(struct ng_job *job, void (*done)(void *opaque),
                    void *opaque, struct ng_error *err);
int ng_job_dismiss(struct ng_job *job, struct ng_error *err);
int ng_job_set_speed(struct ng_job *job, int64_t speed,
                     struct ng_error *err);

/* For job types with commit_async: the change is made (err NULL) or
 * was refused with *err, the graph as it was.  The job concludes now
 * (it may be freed before this returns). */
void ng_job_commit_done(struct ng_job *job, const struct ng_error *err);
/* For commit_async: `node`'s backing becomes `backing` in a drained
 * section over `node` (ng_node_set_backing()), then
 * ng_job_commit_done() with how that went.  `c` is the caller's (in its
 * job state) and must live until then. */
struct ng_job_backing_change {
    struct ng_job *job;
    struct ng_node *node, *backing;
};
void ng_job_commit_backing(struct ng_job_backing_change *c,
                           struct ng_job *job, struct ng_node *node,
                           struct ng_node *backing);
/* For job types: the work converged (running -> ready). */
void ng_job_ready(struct ng_job *job);
/* For job types: the work is over with ret (0, -ECANCELED, -errno);
 * `msg` (may be NULL) says what failed. */
void ng_job_done(struct ng_job *job, int ret, const char *msg);
/* For job types: an I/O error `err` (negative errno) under `policy`.
 * Returns what to do (report, ignore or stop; QEMU's
 * block_job_error_action), after emitting BLOCK_JOB_ERROR with it; for
 * stop the job is paused as if the user had paused it (ops->pause runs,
 * unless it was paused already) and io-status says why. */
enum ng_job_error_action ng_job_io_error(struct ng_job *job,
                                         enum ng_job_error_action policy,
                                         bool is_read, int err);

void ng_job_progress(struct ng_job *job, uint64_t *current,
                     uint64_t *total);

/* Cancel every job (daemon shutdown), pending ones too, as QEMU's exit
 * does (a mirror does not pivot, a stream leaves its chain); one whose
 * asynchronous finalize runs is left to conclude, jobs that have stopped
 * are dismissed.  Returns how many are still winding down. */
unsigned ng_job_cancel_all(struct ng_graph *g);

#endif
