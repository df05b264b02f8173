/* graph/mirror.h: the mirror job (QEMU's blockdev-mirror, background
 * copy mode).  A job bitmap on the source tracks what is still to copy:
 * all of it for sync "full", what the source's own layer holds for
 * "top", nothing for "none" (only what clients write from now on).
 * The copy engine copies it to the target; the choke point marks
 * client writes on the source meanwhile, so once the bitmap is
 * clean the job is ready and keeps the target in sync.  job-complete
 * drains the source, and when nothing is left to copy moves every parent
 * of the source (export BBs, implicit filters, overlays) to the target
 * in that one drained section: clients never reconnect.
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
     * intermediate commit: once the copy converged, in a drained section,
     * the overlay's backing becomes the base, and the job ends without a
     * ready phase.  Without, an active commit: ready, then job-complete
     * pivots as a mirror does. */
    bool commit;
    const char *overlay;
};

/* The checks ng_mirror_start() makes, starting nothing. */
int ng_mirror_check(struct ng_graph *g, const struct ng_mirror_params *p,
                    struct ng_error *err);
/* Create and start the job.  NULL with *err (nothing created). */
struct ng_job *ng_mirror_start(struct ng_graph *g,
                               const struct ng_mirror_params *p,
                               const struct ng_job_hooks *hooks,
                               struct ng_error *err);

#endif
