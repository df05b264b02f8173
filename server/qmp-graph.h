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

/* server/qmp-job.c, for the chain jobs: the job hooks (events, NAC
 * release, pivots) and the argument parsers the job commands share. */
struct ng_job_hooks ng_qmp_job_hooks(struct ng_control_ctx *ctx);
int ng_qmp_error_action_arg(json_t *args, const char *key, int *out,
                            struct ng_error *err);
int ng_qmp_size_arg(json_t *args, const char *key, uint64_t def,
                    uint64_t *out, struct ng_error *err);
const char *ng_qmp_str_arg(json_t *args, const char *key);
bool ng_qmp_bool_arg(json_t *args, const char *key, bool def);

/* A job command whose job starts later (a filter goes in first): the
 * call is answered when it has, and the job's NAC claims are released
 * if the start failed.  Pass ng_qmp_job_started and the object to the
 * job's start function; it frees the object.  NULL: out of memory. */
struct ng_qmp_job_call;
struct ng_qmp_job_call *ng_qmp_job_call_new(struct ng_qmp_call *call,
                                            struct ng_control_ctx *ctx,
                                            const char *job_id);
void ng_qmp_job_started(void *opaque, const struct ng_error *err);

struct ng_mirror_params;
struct ng_nac_claim;
/* ng_mirror_check(), and that the exports' dirty bitmaps on the source
 * can follow a pivot to the target. */
int ng_qmp_mirror_check(struct ng_control_ctx *ctx,
                        const struct ng_mirror_params *p,
                        struct ng_error *err);
/* Start a mirror or commit job (graph/mirror.h) whose NAC claims are
 * taken, and answer the call once it runs or failed. */
void ng_qmp_mirror_start(struct ng_qmp_call *call, struct ng_control_ctx *ctx,
                         const struct ng_mirror_params *p);
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
