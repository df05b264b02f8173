/* server/qmp-graph.h: QMP command handlers on nodes and the graph. */
#ifndef NG_QMP_GRAPH_H
#define NG_QMP_GRAPH_H

#include "graph/job.h"
#include "server/control.h"

ng_qmp_handler ng_qmp_query_version;
ng_qmp_handler ng_qmp_query_commands;
ng_qmp_handler ng_qmp_query_named_block_nodes;
ng_qmp_handler ng_qmp_query_graph;
ng_qmp_handler ng_qmp_blockdev_add;
ng_qmp_handler ng_qmp_blockdev_del;
ng_qmp_handler ng_qmp_blockdev_insert_filter;
ng_qmp_handler ng_qmp_blockdev_remove_filter;
ng_qmp_handler ng_qmp_x_blockdev_change;
ng_qmp_handler ng_qmp_object_add;
ng_qmp_handler ng_qmp_object_del;
ng_qmp_handler ng_qmp_blockdev_reconfigure;
ng_qmp_handler ng_qmp_block_resize;
ng_qmp_handler ng_qmp_throttle_group_add;
ng_qmp_handler ng_qmp_throttle_group_set;
ng_qmp_handler ng_qmp_throttle_group_del;

/* server/qmp-export.c */
ng_qmp_handler ng_qmp_query_block_exports;
ng_qmp_handler ng_qmp_block_export_add;
ng_qmp_handler ng_qmp_block_export_del;
ng_qmp_handler ng_qmp_query_nac;

/* server/qmp-snapshot.c */
ng_qmp_handler ng_qmp_blockdev_snapshot;
ng_qmp_handler ng_qmp_blockdev_snapshot_sync;
ng_qmp_handler ng_qmp_block_stream;
ng_qmp_handler ng_qmp_block_commit;

/* server/qmp-job.c, for the chain jobs: the argument parsers and the
 * start (with the job hooks: events, NAC release, pivots) the job
 * commands share. */
int ng_qmp_error_action_arg(json_t *args, const char *key, int *out,
                            struct ng_error *err);
const char *ng_qmp_str_arg(json_t *args, const char *key);

/* The arguments every job command takes, as QEMU's: job-id (default:
 * `device`), speed (>= 0, default 0), auto-finalize and auto-dismiss
 * (default true).  -1 with *err (a negative speed). */
struct ng_qmp_job_args {
    const char *job_id;             /* borrowed from args or device */
    uint64_t speed;
    bool auto_finalize, auto_dismiss;
};
int ng_qmp_job_args(json_t *args, const char *device,
                    struct ng_qmp_job_args *out, struct ng_error *err);

/* A job's start function (ng_mirror_start() and the like, on their own
 * params): `started` runs once the job runs or failed; -1 with *err when
 * nothing started (started does not run then). */
typedef void ng_qmp_job_started_fn(void *opaque, const struct ng_error *err);
typedef int ng_qmp_job_start_fn(struct ng_graph *g, const void *params,
                                const struct ng_job_hooks *hooks,
                                ng_qmp_job_started_fn *started, void *opaque,
                                struct ng_error *err);

struct ng_nac_claim;
/* The end of every job command, its arguments parsed and checked: take
 * the job's NAC claims under its ID; on a dry run answer now; else start
 * the job, answering once it runs, or with the error (its claims
 * released) if it does not. */
void ng_qmp_job_run(struct ng_qmp_call *call, struct ng_control_ctx *ctx,
                    const char *job_id, const struct ng_nac_claim *claims,
                    size_t n_claims, bool dry, ng_qmp_job_start_fn *start,
                    const void *params);

struct ng_mirror_params;
/* ng_mirror_check(), and that the exports' dirty bitmaps on the source
 * can follow a pivot to the target. */
int ng_qmp_mirror_check(struct ng_control_ctx *ctx,
                        const struct ng_mirror_params *p,
                        struct ng_error *err);
/* ng_mirror_start() for ng_qmp_job_run(): a mirror or commit job. */
ng_qmp_job_start_fn ng_qmp_start_mirror;
/* The NAC claim a job takes on the filter node it puts in. */
struct ng_nac_claim ng_qmp_filter_claim(const char *filter);

/* server/qmp-job.c */
ng_qmp_handler ng_qmp_bitmap_add;
ng_qmp_handler ng_qmp_bitmap_remove;
ng_qmp_handler ng_qmp_bitmap_clear;
ng_qmp_handler ng_qmp_bitmap_enable;
ng_qmp_handler ng_qmp_bitmap_disable;
ng_qmp_handler ng_qmp_bitmap_merge;
ng_qmp_handler ng_qmp_blockdev_mirror;
ng_qmp_handler ng_qmp_blockdev_backup;
ng_qmp_handler ng_qmp_query_jobs;
ng_qmp_handler ng_qmp_query_block_jobs;
ng_qmp_handler ng_qmp_job_pause;
ng_qmp_handler ng_qmp_job_resume;
ng_qmp_handler ng_qmp_job_cancel;
ng_qmp_handler ng_qmp_job_complete;
ng_qmp_handler ng_qmp_job_finalize;
ng_qmp_handler ng_qmp_job_dismiss;
ng_qmp_handler ng_qmp_block_job_pause;
ng_qmp_handler ng_qmp_block_job_resume;
ng_qmp_handler ng_qmp_block_job_cancel;
ng_qmp_handler ng_qmp_block_job_complete;
ng_qmp_handler ng_qmp_block_job_set_speed;

/* A node's named dirty bitmaps for query-named-block-nodes.  New
 * reference. */
struct ng_node;
json_t *ng_qmp_bitmaps_json(struct ng_node *n);

#endif
