/* filters/stream.h: the block-stream job (QEMU's).  It fills the top
 * node of a backing chain with what it reads from the layers below, down
 * to `base` (all of them when base is NULL), then makes `base` the top's
 * backing: the layers in between drop out of the chain.
 *
 * A copy-on-read filter goes above the top for the job's lifetime, below
 * every parent of the top (exports' implicit filters stay above it), and
 * the copy engine only reads through it (pull mode): the filter copies
 * what the top lacks into it and keeps client writes from being
 * overwritten by older data from below.  When a pass is done, a scan of
 * the top's own allocation (NG_REQ_LOCAL_ONLY) finds what a racing client
 * write made the filter skip, and the engine goes again until the top
 * lacks nothing; then, in a drained section, the filter comes out and
 * the job goes to pending with the chain as it was (the top holds all
 * it needs, so clients read and write it freely meanwhile).  Finalize
 * (the job's commit_async) cuts the backing in a drained section of its
 * own, as QEMU's stream_prepare.  Cancelling, in pending too, leaves the
 * chain as it was (the data copied up stays: it reads the same).
 *
 * A walk over the own allocation of each layer between top and base
 * (NG_REQ_LOCAL_ONLY) first says which granules to read: the base's data
 * stays in the base, except inside a granule that a layer above it has
 * partly (the filter copies all the top lacks of what it reads).  Without
 * a base, the chain's bottom is asked what it reads instead, and what
 * reads as zeroes is not copied: a range unallocated in the whole chain
 * stays unallocated in the top, as with QEMU. */
#ifndef NG_STREAM_H
#define NG_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/job.h"

struct ng_stream_params {
    const char *job_id;
    const char *top;                /* node-names: receives the data */
    const char *base;               /* kept below the top; NULL = none */
    const char *filter_node_name;   /* NULL: "stream-<job-id>" */
    uint64_t speed;
    enum ng_job_error_action on_error;
    bool auto_finalize, auto_dismiss;
};

/* The checks ng_stream_start() makes, starting nothing: the job ID is
 * free, the top exists, is writable and has a backing node, the base
 * (when given) is in the top's backing chain below it, the filter's name
 * is free. */
int ng_stream_check(struct ng_graph *g, const struct ng_stream_params *p,
                    struct ng_error *err);

/* The nodes strictly between top and base (base NULL: every node below
 * the top in its backing chain), top down; fn is called for each. */
void ng_stream_foreach_intermediate(struct ng_graph *g, const char *top,
                                    const char *base,
                                    void (*fn)(void *opaque,
                                               const char *node),
                                    void *opaque);

/* Put the filter in (a drained section) and start the job; `started`
 * runs, never inline, with NULL once it runs or with the error (nothing
 * is left then).  -1 with *err when nothing started (started does not
 * run). */
typedef void ng_stream_started_fn(void *opaque, const struct ng_error *err);
int ng_stream_start(struct ng_graph *g, const struct ng_stream_params *p,
                    const struct ng_job_hooks *hooks,
                    ng_stream_started_fn *started, void *opaque,
                    struct ng_error *err);

#endif
