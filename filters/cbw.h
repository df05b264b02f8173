/* filters/cbw.h: the copy-before-write filter (filters/cbw.c) and the
 * backup job that puts it in (filters/backup.c). */
#ifndef NG_CBW_H
#define NG_CBW_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/graph.h"
#include "graph/job.h"

struct ng_copy;

/* Writes through `node` (a copy-before-write filter) now wait for
 * `copy` to have saved their range; NULL-safe to detach once the engine
 * has stopped. */
void ng_cbw_attach(struct ng_node *node, struct ng_copy *copy);
void ng_cbw_detach(struct ng_node *node);
bool ng_cbw_is(const struct ng_node *node);

enum ng_backup_sync {
    NG_BACKUP_SYNC_FULL,            /* copy everything */
    NG_BACKUP_SYNC_NONE,            /* copy only what is overwritten */
    NG_BACKUP_SYNC_INCREMENTAL,     /* what `bitmap` says */
};

struct ng_backup_params {
    const char *job_id;
    const char *source, *target;    /* node-names */
    enum ng_backup_sync sync;
    const char *bitmap;             /* incremental: a bitmap of source */
    const char *filter_node_name;   /* NULL: "cbw-<job-id>" */
    uint64_t speed;
    enum ng_job_error_action on_source_error, on_target_error;
    bool auto_finalize, auto_dismiss;
};

/* The checks ng_backup_start() makes, starting nothing. */
int ng_backup_check(struct ng_graph *g, const struct ng_backup_params *p,
                    struct ng_error *err);

/* Create the job and put the filter above the source in a drained
 * section; `started` runs (never inline) with NULL once the job runs, or
 * with the error (the job is gone then).  -1 with *err when nothing
 * started (started does not run). */
typedef void ng_backup_started_fn(void *opaque, const struct ng_error *err);
int ng_backup_start(struct ng_graph *g, const struct ng_backup_params *p,
                    const struct ng_job_hooks *hooks,
                    ng_backup_started_fn *started, void *opaque,
                    struct ng_error *err);

#endif
