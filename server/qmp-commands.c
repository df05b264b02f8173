/* server/qmp-commands.c: the table of every QMP command.  QEMU's names
 * and argument names where QEMU has the command; our own otherwise.
 * Every mutating command takes "dry-run" (answer whether it would be
 * allowed, change nothing) and an optional "job-id" naming it in NAC and
 * in GRAPH_CHANGED events. */
#include <config.h>

#include <stddef.h>

#include "server/control.h"
#include "server/qmp-graph.h"
#include "server/reload.h"

#define MUTATING_ARGS \
    { "dry-run", 'b', false }, \
    { "job-id", 's', false }, \
    { "explicit", 'b', false }

static const struct ng_qmp_arg no_args[] = { { NULL, 0, false } };

static const struct ng_qmp_arg blockdev_add_args[] = {
    { "driver", 's', true },
    { "node-name", 's', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg blockdev_del_args[] = {
    { "node-name", 's', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg insert_filter_args[] = {
    { "node", 's', true },
    { "filter", 'o', true },
    { "exports", 'a', false },
    { "force", 'b', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg remove_filter_args[] = {
    { "node-name", 's', true },
    { "keep", 's', false },
    { "force", 'b', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg change_child_args[] = {
    { "parent", 's', true },
    { "child", 's', false },
    { "node", 's', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg reconfigure_args[] = {
    { "node-name", 's', true },
    { "options", 'o', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

/* QEMU's block_resize: exactly one of device and node-name. */
static const struct ng_qmp_arg resize_args[] = {
    { "device", 's', false },
    { "node-name", 's', false },
    { "size", 'i', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg group_limits_args[] = {
    { "group", 's', true },
    { "limits", 'o', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg object_add_args[] = {
    { "qom-type", 's', true },
    { "id", 's', true },
    { "data", 's', false },
    { "file", 's', false },
    { "format", 's', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg object_del_args[] = {
    { "id", 's', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg group_del_args[] = {
    { "group", 's', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg query_graph_args[] = {
    { "format", 's', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg query_nodes_args[] = {
    { "flat", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg export_add_args[] = {
    { "type", 's', true },
    { "id", 's', true },
    { "node-name", 's', true },
    { "name", 's', false },
    { "writable", 'b', false },
    { "description", 's', false },
    { "throttle", 'o', false },
    { "throttle-group", 's', false },
    { "copy-on-read", 'b', false },
    { "detect-zeroes", 's', false },
    { "bitmaps", 'a', false },
    { "allocation-depth", 'b', false },
    { "allow", 'a', false },
    { "max-connections", 'i', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg reload_args[] = {
    { "file", 's', false },
    { "prune", 'b', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg export_del_args[] = {
    { "id", 's', true },
    { "mode", 's', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg bitmap_add_args[] = {
    { "node", 's', true },
    { "name", 's', true },
    { "granularity", 'i', false },
    { "disabled", 'b', false },
    { "persistent", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg bitmap_args[] = {
    { "node", 's', true },
    { "name", 's', true },
    { NULL, 0, false },
};

static const struct ng_qmp_arg bitmap_merge_args[] = {
    { "node", 's', true },
    { "target", 's', true },
    { "bitmaps", 'a', true },
    { NULL, 0, false },
};

static const struct ng_qmp_arg snapshot_args[] = {
    { "node", 's', true },
    { "overlay", 's', true },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg snapshot_sync_args[] = {
    { "device", 's', false },
    { "node-name", 's', false },
    { "snapshot-file", 's', true },
    { "snapshot-node-name", 's', false },
    { "format", 's', false },
    { "mode", 's', false },
    MUTATING_ARGS,
    { NULL, 0, false },
};

static const struct ng_qmp_arg stream_args[] = {
    { "job-id", 's', false },
    { "device", 's', true },
    { "base", 's', false },
    { "base-node", 's', false },
    { "backing-file", 's', false },
    { "speed", 'i', false },
    { "on-error", 's', false },
    { "filter-node-name", 's', false },
    { "auto-finalize", 'b', false },
    { "auto-dismiss", 'b', false },
    { "dry-run", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg commit_args[] = {
    { "job-id", 's', false },
    { "device", 's', true },
    { "base", 's', false },
    { "base-node", 's', false },
    { "top", 's', false },
    { "top-node", 's', false },
    { "backing-file", 's', false },
    { "speed", 'i', false },
    { "on-error", 's', false },
    { "filter-node-name", 's', false },
    { "auto-finalize", 'b', false },
    { "auto-dismiss", 'b', false },
    { "dry-run", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg mirror_args[] = {
    { "job-id", 's', false },
    { "device", 's', true },
    { "target", 's', true },
    { "sync", 's', true },
    { "granularity", 'i', false },
    { "buf-size", 'i', false },
    { "speed", 'i', false },
    { "on-source-error", 's', false },
    { "on-target-error", 's', false },
    { "copy-mode", 's', false },
    { "filter-node-name", 's', false },
    { "auto-finalize", 'b', false },
    { "auto-dismiss", 'b', false },
    { "dry-run", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg backup_args[] = {
    { "job-id", 's', false },
    { "device", 's', true },
    { "target", 's', true },
    { "sync", 's', true },
    { "bitmap", 's', false },
    { "filter-node-name", 's', false },
    { "speed", 'i', false },
    { "on-source-error", 's', false },
    { "on-target-error", 's', false },
    { "auto-finalize", 'b', false },
    { "auto-dismiss", 'b', false },
    { "dry-run", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg job_id_args[] = {
    { "id", 's', true },
    { NULL, 0, false },
};

/* block-job-cancel's "force": see ng_qmp_block_job_cancel(). */
static const struct ng_qmp_arg block_job_args[] = {
    { "device", 's', true },
    { "force", 'b', false },
    { NULL, 0, false },
};

static const struct ng_qmp_arg set_speed_args[] = {
    { "device", 's', true },
    { "speed", 'i', true },
    { NULL, 0, false },
};

const struct ng_qmp_command ng_qmp_commands[] = {
    { "query-version", ng_qmp_query_version, no_args, false },
    { "query-commands", ng_qmp_query_commands, no_args, false },
    { "query-named-block-nodes", ng_qmp_query_named_block_nodes,
      query_nodes_args, false },
    { "query-graph", ng_qmp_query_graph, query_graph_args, false },
    { "query-block-exports", ng_qmp_query_block_exports, no_args, false },
    { "blockdev-add", ng_qmp_blockdev_add, blockdev_add_args, true },
    { "blockdev-del", ng_qmp_blockdev_del, blockdev_del_args, false },
    { "blockdev-insert-filter", ng_qmp_blockdev_insert_filter,
      insert_filter_args, false },
    { "blockdev-remove-filter", ng_qmp_blockdev_remove_filter,
      remove_filter_args, false },
    { "blockdev-reconfigure", ng_qmp_blockdev_reconfigure, reconfigure_args,
      false },
    { "x-blockdev-change", ng_qmp_x_blockdev_change, change_child_args,
      false },
    { "block_resize", ng_qmp_block_resize, resize_args, false },
    { "throttle-group-add", ng_qmp_throttle_group_add, group_limits_args,
      false },
    { "throttle-group-set", ng_qmp_throttle_group_set, group_limits_args,
      false },
    { "throttle-group-del", ng_qmp_throttle_group_del, group_del_args,
      false },
    { "object-add", ng_qmp_object_add, object_add_args, false },
    { "object-del", ng_qmp_object_del, object_del_args, false },
    { "block-export-add", ng_qmp_block_export_add, export_add_args, false },
    { "block-export-del", ng_qmp_block_export_del, export_del_args, false },
    { "query-nac", ng_qmp_query_nac, no_args, false },
    { "reload", ng_qmp_reload, reload_args, false },
    { "query-config", ng_qmp_query_config, no_args, false },
    { "block-dirty-bitmap-add", ng_qmp_bitmap_add, bitmap_add_args, false },
    { "block-dirty-bitmap-remove", ng_qmp_bitmap_remove, bitmap_args,
      false },
    { "block-dirty-bitmap-clear", ng_qmp_bitmap_clear, bitmap_args, false },
    { "block-dirty-bitmap-enable", ng_qmp_bitmap_enable, bitmap_args,
      false },
    { "block-dirty-bitmap-disable", ng_qmp_bitmap_disable, bitmap_args,
      false },
    { "block-dirty-bitmap-merge", ng_qmp_bitmap_merge, bitmap_merge_args,
      false },
    { "blockdev-snapshot", ng_qmp_blockdev_snapshot, snapshot_args, false },
    { "blockdev-snapshot-sync", ng_qmp_blockdev_snapshot_sync,
      snapshot_sync_args, false },
    { "block-stream", ng_qmp_block_stream, stream_args, false },
    { "block-commit", ng_qmp_block_commit, commit_args, false },
    { "blockdev-mirror", ng_qmp_blockdev_mirror, mirror_args, false },
    { "blockdev-backup", ng_qmp_blockdev_backup, backup_args, false },
    { "query-jobs", ng_qmp_query_jobs, no_args, false },
    { "query-block-jobs", ng_qmp_query_block_jobs, no_args, false },
    { "job-pause", ng_qmp_job_pause, job_id_args, false },
    { "job-resume", ng_qmp_job_resume, job_id_args, false },
    { "job-cancel", ng_qmp_job_cancel, job_id_args, false },
    { "job-complete", ng_qmp_job_complete, job_id_args, false },
    { "job-finalize", ng_qmp_job_finalize, job_id_args, false },
    { "job-dismiss", ng_qmp_job_dismiss, job_id_args, false },
    { "block-job-pause", ng_qmp_block_job_pause, block_job_args, false },
    { "block-job-resume", ng_qmp_block_job_resume, block_job_args, false },
    { "block-job-cancel", ng_qmp_block_job_cancel, block_job_args, false },
    { "block-job-complete", ng_qmp_block_job_complete, block_job_args,
      false },
    { "block-job-set-speed", ng_qmp_block_job_set_speed, set_speed_args,
      false },
    { NULL, NULL, NULL, false },
};
