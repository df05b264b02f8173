/* graph/mirror.h: the mirror job (QEMU's blockdev-mirror).  A job bitmap on the source tracks what is still to copy:
 * all of it for sync "full", what the source's own layer holds for
 * "top", nothing for "none" (only what clients write from now on).
 * The copy engine copies it to the target; the choke point marks
 * client writes on the source meanwhile, so once the bitmap is
 * clean the job is ready and keeps the target in sync.  job-complete
 * drains the source, and when nothing is left to copy flushes the
 * target and ends the job's work with the source still drained; at
 * finalize (the job's commit op) every parent of the source (export
 * BBs, implicit filters, overlays) moves to the target in that one
 * drained section, clients never reconnecting; a cancel in pending (the
 * abort op) ends the section with nothing moved, as QEMU's
 * mirror_exit_common.
 *
 * With a filter-node-name or copy-mode write-blocking, a "mirror_top"
 * filter (graph/mirror-top.c) goes above the source first, in a drained
 * section, under that name (default "mirror-top-<job-id>", for commit
 * "commit-top-<job-id>"), and comes out once the job has stopped (inside
 * the pivot's section, before the pivot at finalize), before its
 * completion is told.  In write-blocking mode the filter writes each
 * client write to the target too before completing it.  Without either, no filter goes in: the
 * choke point marks the job's bitmap on the source.
 *
 * block-commit runs on the same job: a copy of a chain's top into its
 * base (see struct ng_mirror_params' `commit`). */
#ifndef NG_MIRROR_H
#define NG_MIRROR_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/job.h"

enum ng_mirror_sync {
    NG_MIRROR_SYNC_FULL,
    NG_MIRROR_SYNC_TOP,             /* what the source's own layer holds
                                     * (NG_REQ_LOCAL_ONLY); the target
                                     * must have the same backing node.
                                     * Without one: full */
    NG_MIRROR_SYNC_NONE,
};

struct ng_mirror_params {
    const char *job_id;
    const char *source;             /* node-names */
    const char *target;
    enum ng_mirror_sync sync;
    uint32_t granularity;           /* 0 = NG_BITMAP_GRAN_DEFAULT */
    uint64_t buf_size;              /* bytes in flight; 0 = 16 MiB */
    uint64_t speed;                 /* bytes/s; 0 = no limit */
    enum ng_job_error_action on_source_error;
    enum ng_job_error_action on_target_error;
    bool auto_finalize, auto_dismiss;
    /* block-commit: the job is a commit of `source` (its top) into
     * `target` (its base, below it in its backing chain; may be used).
     * With `overlay` (the node whose backing `source` is) it is an
     * intermediate commit: once the copy converged the job ends without
     * a ready phase and without draining anyone, and at finalize the
     * overlay's backing becomes the base in a drained section of its
     * own (the job's commit_async).  Without, an active commit: ready,
     * then job-complete and finalize pivot as a mirror's do. */
    bool commit;
    const char *overlay;
    const char *filter_node_name;   /* NULL: none unless write_blocking */
    bool write_blocking;            /* copy-mode write-blocking */
};

/* The checks ng_mirror_start() makes, starting nothing. */
int ng_mirror_check(struct ng_graph *g, const struct ng_mirror_params *p,
                    struct ng_error *err);
/* Create and start the job; `started` runs with NULL once it runs, or
 * with the error (nothing is left then).  Without a filter it runs
 * inline; with one, once the filter is in (never inline).  -1 with *err
 * when nothing started (started does not run). */
typedef void ng_mirror_started_fn(void *opaque, const struct ng_error *err);
int ng_mirror_start(struct ng_graph *g, const struct ng_mirror_params *p,
                    const struct ng_job_hooks *hooks,
                    ng_mirror_started_fn *started, void *opaque,
                    struct ng_error *err);

/* The filter's side (graph/mirror-top.c): writes through `node` (a
 * mirror_top filter) now go to the source and then through `target` in
 * `copy`'s locks (write-blocking).  Detach once the engine stopped. */
struct ng_copy;
struct ng_bb;
void ng_mirror_top_attach(struct ng_node *node, struct ng_copy *copy,
                          struct ng_bb *target);
void ng_mirror_top_detach(struct ng_node *node);

#endif
