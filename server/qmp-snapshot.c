/* server/qmp-snapshot.c: backing chains over QMP, as QEMU's commands.
 * blockdev-snapshot (node, overlay): the overlay goes in between `node`
 * and everything above it (exports, their implicit filters), in one
 * drained section, under a NAC claim on both nodes held while it runs;
 * the exports' claims follow to the overlay, which is what they write
 * now.  blockdev-snapshot-sync: the same with an overlay it makes (a new
 * qcow2 file, or an existing one) and opens first.  block-stream and
 * block-commit: jobs that shorten a chain again,
 * NAC holders (kind "job") from before they touch anything until they
 * are dismissed. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/stream.h"
#include "graph/drivers.h"
#include "graph/graph.h"
#include "graph/mirror.h"
#include "nac/policy.h"
#include "server/exports.h"
#include "server/qmp-graph.h"
#include "server/qmp-util.h"
#include "server/reload.h"

/* A snapshot's answer waits for a flush of the overlay: its header may
 * name a new backing now (graph/qcow2-backing.c), and the answer says it
 * is on disk. */
struct flush_answer {
    struct ng_req req;
    struct ng_qmp_call *call;
    struct ng_node *node;
};

static void
flush_answered(struct ng_req *req, int ret)
{
    struct flush_answer *fa = req->opaque;

    /* The graph changed all the same: say so, and log the rest. */
    if (ret < 0)
        ng_node_warn(fa->node, "cannot flush the new overlay: %s",
                     strerror(-ret));
    ng_qmp_return(fa->call, NULL);
    free(fa);
}

static void
answer_after_flush(struct ng_qmp_call *call, struct ng_node *node)
{
    struct flush_answer *fa;

    if (node == NULL || !(ng_node_caps(node) & NG_CAP_FLUSH) ||
        (fa = calloc(1, sizeof *fa)) == NULL) {
        ng_qmp_return(call, NULL);
        return;
    }
    fa->call = call;
    fa->node = node;
    ng_req_init(&fa->req, NG_OP_FLUSH, 0, 0, 0);
    fa->req.done = flush_answered;
    fa->req.opaque = fa;
    ng_node_submit(node, &fa->req);
}

struct snapshot_op {
    struct ng_qmp_call *call;
    struct ng_control_ctx *ctx;
    char *node, *overlay;
    char job[128];
    bool claimed;
};

static void
snapshot_op_free(struct snapshot_op *op)
{
    if (op->claimed)
        ng_ctx_nac_release(op->ctx, op->job);
    free(op->node);
    free(op->overlay);
    free(op);
}

static int
snapshot_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct snapshot_op *op = opaque;

    return ng_graph_snapshot(g, op->node, op->overlay, 0, err);
}

static void
snapshot_done(void *opaque, const struct ng_error *err)
{
    struct snapshot_op *op = opaque;

    if (err != NULL) {
        ng_qmp_error_from(op->call, err);
    } else {
        ng_ctx_nac_release(op->ctx, op->job);
        op->claimed = false;
        ng_exports_follow_node(op->ctx, op->node, op->overlay);
        ng_qmp_graph_changed(op->ctx, "snapshot", op->job,
                             json_pack("{s:s,s:s}", "node-name", op->node,
                                       "overlay", op->overlay));
        answer_after_flush(op->call, ng_graph_find(op->ctx->graph,
                                                   op->overlay));
    }
    snapshot_op_free(op);
}

/* Implicit filters belong to their export's config (DESIGN.md): the
 * snapshot goes below them, so naming one is a mistake. */
static int
check_nodes(struct ng_graph *g, const char *node, const char *overlay,
            struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(g, node);

    if (n != NULL && n->implicit)
        return ng_error_set(err, EINVAL, "node '%s' is an implicit filter "
                            "of export '%s'; snapshot the node below it",
                            node, n->implicit_owner ? n->implicit_owner
                                                    : "?");
    return ng_graph_check_snapshot(g, node, overlay, err);
}

static int
snapshot_claim(struct snapshot_op *op, bool dry, struct ng_error *err)
{
    struct ng_nac_claim claims[2] = {
        { op->node, NG_NAC_SPLICE_REQUIRE, NG_NAC_SPLICE_ALLOW },
        { op->overlay, NG_NAC_SPLICE_REQUIRE, NG_NAC_SPLICE_ALLOW },
    };

    if (ng_ctx_nac_claim(op->ctx, op->job, "command", claims, 2, dry,
                         err) == -1)
        return -1;
    op->claimed = !dry;
    return 0;
}

void
ng_qmp_blockdev_snapshot(struct ng_qmp_call *call, json_t *args)
{
    const char *node = json_string_value(json_object_get(args, "node"));
    const char *overlay = json_string_value(json_object_get(args,
                                                            "overlay"));
    struct snapshot_op *op = calloc(1, sizeof *op);
    struct ng_error err = { 0 };
    bool dry = ng_qmp_dry_run(args);

    if (op == NULL || (op->node = strdup(node)) == NULL ||
        (op->overlay = strdup(overlay)) == NULL) {
        ng_error_set(&err, ENOMEM, "out of memory");
        goto fail;
    }
    op->call = call;
    op->ctx = ng_qmp_ctx(call);
    ng_qmp_job_id(op->ctx, args, "snapshot-", op->job, sizeof op->job);
    if (check_nodes(op->ctx->graph, node, overlay, &err) == -1 ||
        snapshot_claim(op, dry, &err) == -1)
        goto fail;
    if (dry) {
        ng_qmp_return(call, NULL);
        snapshot_op_free(op);
        return;
    }
    if (ng_graph_mutate(op->ctx->graph, ng_graph_find(op->ctx->graph, node),
                        snapshot_mutation, snapshot_done, op, &err) == 0)
        return;                     /* snapshot_done answers */
fail:
    ng_qmp_error_from(call, &err);
    if (op != NULL)
        snapshot_op_free(op);
}

/* ---- blockdev-snapshot-sync --------------------------------------------- */

/* QEMU's steps: make (mode absolute-paths) or find (existing) the file on
 * a worker thread, open it as a qcow2 node without its backing (the
 * async open path), then blockdev-snapshot's mutation with it.  The NAC
 * claim on both names holds from the start to the answer; a failure at
 * any step removes the node and a file we made, leaving the graph as it
 * was. */
struct sync_op {
    struct ng_qmp_call *call;
    struct ng_control_ctx *ctx;
    char *node, *overlay, *file;
    char job[128];
    bool claimed;
    bool existing;                  /* mode "existing" */
    bool created;                   /* we made `file`: unlink on failure */
    uint64_t size;                  /* the node's, for a new image */
    char backing[1024];             /* the header's name for the node */
    const char *backing_fmt;        /* static, NULL: name none */
    uv_work_t work;
    struct ng_error err;            /* the failure being unwound */
    struct ng_value *opts;          /* the overlay's, for the reload
                                     * model; owned */
};

static void
sync_op_free(struct sync_op *op)
{
    if (op->claimed)
        ng_ctx_nac_release(op->ctx, op->job);
    ng_value_free(op->opts);
    free(op->node);
    free(op->overlay);
    free(op->file);
    free(op);
}

static void
sync_fail_answer(struct sync_op *op)
{
    struct ng_error e = op->err;

    if (op->created && unlink(op->file) != 0)
        ng_error_set(&e, op->err.code, "%s (and '%s' could not be removed: "
                     "%s)", op->err.msg, op->file, strerror(errno));
    ng_qmp_error_from(op->call, &e);
    sync_op_free(op);
}

static void
sync_overlay_removed(void *opaque)
{
    sync_fail_answer(opaque);
}

/* Unwind after the overlay node was added: remove it, then answer. */
static void
sync_fail_with_node(struct sync_op *op)
{
    if (ng_graph_del_node(op->ctx->graph, op->overlay, sync_overlay_removed,
                          op, NULL) == 0)
        return;
    sync_fail_answer(op);
}

static int
sync_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct sync_op *op = opaque;

    return ng_graph_snapshot(g, op->node, op->overlay, 0, err);
}

static void
sync_done(void *opaque, const struct ng_error *err)
{
    struct sync_op *op = opaque;

    if (err != NULL) {
        op->err = *err;
        sync_fail_with_node(op);
        return;
    }
    ng_ctx_nac_release(op->ctx, op->job);
    op->claimed = false;
    ng_reload_note_node(op->ctx, op->overlay, op->opts);
    ng_exports_follow_node(op->ctx, op->node, op->overlay);
    ng_qmp_graph_changed(op->ctx, "snapshot", op->job,
                         json_pack("{s:s,s:s,s:s}", "node-name", op->node,
                                   "overlay", op->overlay,
                                   "snapshot-file", op->file));
    answer_after_flush(op->call, ng_graph_find(op->ctx->graph, op->overlay));
    sync_op_free(op);
}

static void
sync_added(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct sync_op *op = opaque;
    struct ng_graph *g = op->ctx->graph;

    if (node == NULL) {
        op->err = *err;
        sync_fail_answer(op);
        return;
    }
    if (op->overlay == NULL && (op->overlay = strdup(node->name)) == NULL) {
        ng_error_set(&op->err, ENOMEM, "out of memory");
        /* Unnamed: nothing else can know it; remove it by its name. */
        if (ng_graph_del_node(g, node->name, sync_overlay_removed, op,
                              NULL) != 0)
            sync_fail_answer(op);
        return;
    }
    if (check_nodes(g, op->node, op->overlay, &op->err) == -1 ||
        ng_graph_mutate(g, ng_graph_find(g, op->node), sync_mutation,
                        sync_done, op, &op->err) == -1)
        sync_fail_with_node(op);
}

/* The overlay's options: a qcow2 node on the file, its backing left to
 * the snapshot (QEMU's BDRV_O_NO_BACKING). */
static int
sync_open(struct sync_op *op)
{
    json_t *j = json_pack("{s:s,s:{s:s,s:s},s:n}", "driver", "qcow2", "file",
                          "driver", "file", "filename", op->file,
                          "backing");

    if (j != NULL && op->overlay != NULL)
        json_object_set_new(j, "node-name", json_string(op->overlay));
    op->opts = j != NULL ? ng_value_from_json(j) : NULL;
    json_decref(j);
    if (op->opts == NULL)
        return ng_error_set(&op->err, ENOMEM, "out of memory");
    return ng_graph_add_node(op->ctx->graph, NULL, op->opts, sync_added, op,
                             &op->err);
}

/* Worker thread: make the image (absolute-paths) or see that it is
 * there (existing).  A file already there is not overwritten: QEMU
 * would, but a file of the graph's own could be among them. */
static void
sync_file_work(uv_work_t *w)
{
    struct sync_op *op = w->data;
    int fd;

    if (op->existing) {
        if (access(op->file, R_OK | W_OK) != 0)
            ng_error_set(&op->err, errno, "cannot open '%s': %s", op->file,
                         strerror(errno));
        return;
    }
    fd = open(op->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        ng_error_set(&op->err, errno, "cannot create '%s': %s%s", op->file,
                     strerror(errno), errno == EEXIST ? " (mode 'existing' "
                     "opens a file that is there)" : "");
        return;
    }
    close(fd);
    op->created = true;
    ng_qcow2_create(op->file, op->size, 65536,
                    op->backing_fmt ? op->backing : NULL, op->backing_fmt,
                    &op->err);
}

static void
sync_file_done(uv_work_t *w, int status)
{
    struct sync_op *op = w->data;

    if (status != 0 && op->err.code == 0)
        ng_error_set(&op->err, ECANCELED, "cancelled");
    if (op->err.code != 0 || sync_open(op) == -1)
        sync_fail_answer(op);
}

/* Arguments as QEMU's BlockdevSnapshotSync: the node by "device" or
 * "node-name", "format" only qcow2, "mode" absolute-paths (default) or
 * existing. */
static int
sync_args(struct sync_op *op, json_t *args, struct ng_error *err)
{
    const char *device = ng_qmp_str_arg(args, "device");
    const char *node = ng_qmp_str_arg(args, "node-name");
    const char *overlay = ng_qmp_str_arg(args, "snapshot-node-name");
    const char *format = ng_qmp_str_arg(args, "format");
    const char *mode = ng_qmp_str_arg(args, "mode");
    const char *file = ng_qmp_str_arg(args, "snapshot-file");

    if ((device == NULL) == (node == NULL))
        return ng_error_set(err, EINVAL, "give exactly one of 'device' and "
                            "'node-name'");
    if (format != NULL && strcmp(format, "qcow2") != 0)
        return ng_error_set(err, ENOTSUP, "format '%s' is not supported: "
                            "blockdev-snapshot-sync makes qcow2 overlays "
                            "only", format);
    if (mode != NULL && strcmp(mode, "absolute-paths") != 0 &&
        strcmp(mode, "existing") != 0)
        return ng_error_set(err, EINVAL, "mode '%s' is not one of "
                            "'absolute-paths' and 'existing'", mode);
    if (file == NULL || file[0] == '\0')
        return ng_error_set(err, EINVAL, "'snapshot-file' must name a "
                            "file");
    op->existing = mode != NULL && strcmp(mode, "existing") == 0;
    if ((op->node = strdup(device != NULL ? device : node)) == NULL ||
        (op->file = strdup(file)) == NULL ||
        (overlay != NULL && (op->overlay = strdup(overlay)) == NULL))
        return ng_error_set(err, ENOMEM, "out of memory");
    return 0;
}

/* The node as the new image's header names it, and its size. */
static int
sync_check(struct sync_op *op, struct ng_error *err)
{
    struct ng_graph *g = op->ctx->graph;
    struct ng_node *n = ng_graph_find(g, op->node);

    /* The overlay is a qcow2 node on a file node; a graph without them
     * (the QMP fuzzer's) must not make files either. */
    if (ng_driver_find(g->drivers, "qcow2") == NULL ||
        ng_driver_find(g->drivers, "file") == NULL)
        return ng_error_set(err, ENOTSUP, "this daemon has no qcow2 or "
                            "file driver for the overlay");
    if (n == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", op->node);
    if (n->implicit)
        return check_nodes(g, op->node, op->node, err);
    if (op->overlay != NULL && ng_graph_find(g, op->overlay) != NULL)
        return ng_error_set(err, EEXIST, "node '%s' already exists",
                            op->overlay);
    op->size = (uint64_t)ng_node_length(n);
    if (!ng_qcow2_backing_ref(n, op->backing, sizeof op->backing,
                              &op->backing_fmt))
        op->backing_fmt = NULL;     /* not a file: the header names none */
    return 0;
}

static int
sync_claim(struct sync_op *op, bool dry, struct ng_error *err)
{
    struct ng_nac_claim claims[2] = {
        { op->node, NG_NAC_SPLICE_REQUIRE, NG_NAC_SPLICE_ALLOW },
        { op->overlay, NG_NAC_SPLICE_REQUIRE, NG_NAC_SPLICE_ALLOW },
    };

    if (ng_ctx_nac_claim(op->ctx, op->job, "command", claims,
                         op->overlay != NULL ? 2 : 1, dry, err) == -1)
        return -1;
    op->claimed = !dry;
    return 0;
}

void
ng_qmp_blockdev_snapshot_sync(struct ng_qmp_call *call, json_t *args)
{
    struct sync_op *op = calloc(1, sizeof *op);
    struct ng_error err = { 0 };
    bool dry = ng_qmp_dry_run(args);

    if (op == NULL) {
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    op->call = call;
    op->ctx = ng_qmp_ctx(call);
    ng_qmp_job_id(op->ctx, args, "snapshot-", op->job, sizeof op->job);
    if (sync_args(op, args, &err) == -1 || sync_check(op, &err) == -1 ||
        sync_claim(op, dry, &err) == -1)
        goto fail;
    if (dry) {
        ng_qmp_return(call, NULL);
        sync_op_free(op);
        return;
    }
    op->work.data = op;
    if (uv_queue_work(op->ctx->graph->loop, &op->work, sync_file_work,
                      sync_file_done) == 0)
        return;                     /* the steps above answer */
    ng_error_set(&err, ENOMEM, "cannot start the file's creation");
fail:
    ng_qmp_error_from(call, &err);
    sync_op_free(op);
}

/* ---- Claims of the chain jobs ------------------------------------------- */

#define CHAIN_CLAIMS_MAX 64

struct claim_list {
    struct ng_nac_claim c[CHAIN_CLAIMS_MAX];
    size_t n;
    bool overflow;
};

static void
claim_add(struct claim_list *l, const char *node, unsigned require,
          unsigned allow)
{
    if (l->n == CHAIN_CLAIMS_MAX) {
        l->overflow = true;
        return;
    }
    l->c[l->n++] = (struct ng_nac_claim){ node, require, allow };
}

static void
claim_mid(void *opaque, const char *node)
{
    claim_add(opaque, node, NG_NAC_CHAIN_MID_REQUIRE,
              NG_NAC_CHAIN_MID_ALLOW);
}

/* Take the claims and start the job (ng_qmp_job_run()), or answer that
 * the chain is too long for them. */
static void
claim_list_run(struct ng_qmp_call *call, const char *job_id,
               const struct claim_list *l, json_t *args,
               ng_qmp_job_start_fn *start, const void *params)
{
    if (l->overflow)
        ng_qmp_error(call, NG_QMP_GENERIC, "backing chain longer than %d "
                     "nodes", CHAIN_CLAIMS_MAX);
    else
        ng_qmp_job_run(call, ng_qmp_ctx(call), job_id, l->c, l->n,
                       ng_qmp_dry_run(args), start, params);
}

/* ---- block-stream ------------------------------------------------------- */

static int
stream_params(json_t *args, struct ng_stream_params *p,
              struct ng_error *err)
{
    const char *base = ng_qmp_str_arg(args, "base");
    struct ng_qmp_job_args ja;
    int act;

    p->top = ng_qmp_str_arg(args, "device");
    p->base = ng_qmp_str_arg(args, "base-node");
    /* "base" is a file name in QEMU; here nodes have no file names of
     * their own, so it names the base node too. */
    if (p->base != NULL && base != NULL && strcmp(base, p->base) != 0)
        return ng_error_set(err, EINVAL, "'base' and 'base-node' name "
                            "different nodes");
    if (p->base == NULL)
        p->base = base;
    p->filter_node_name = ng_qmp_str_arg(args, "filter-node-name");
    if (ng_qmp_job_args(args, p->top, &ja, err) == -1 ||
        ng_qmp_error_action_arg(args, "on-error", &act, err) == -1)
        return -1;
    p->on_error = act;
    p->job_id = ja.job_id;
    p->speed = ja.speed;
    p->auto_finalize = ja.auto_finalize;
    p->auto_dismiss = ja.auto_dismiss;
    return 0;
}

static int
start_stream(struct ng_graph *g, const void *params,
             const struct ng_job_hooks *hooks, ng_qmp_job_started_fn *started,
             void *opaque, struct ng_error *err)
{
    return ng_stream_start(g, params, hooks, started, opaque, err);
}

void
ng_qmp_block_stream(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    struct ng_stream_params p = { 0 };
    struct ng_error err = { 0 };
    struct claim_list l = { .n = 0 };
    char filter[NG_NAC_NAME_MAX];

    if (stream_params(args, &p, &err) == -1)
        goto fail;
    if (p.filter_node_name == NULL) {
        snprintf(filter, sizeof filter, "stream-%s", p.job_id);
        p.filter_node_name = filter;
    }
    if (ng_stream_check(ctx->graph, &p, &err) == -1)
        goto fail;
    claim_add(&l, p.top, NG_NAC_STREAM_TOP_REQUIRE,
              NG_NAC_STREAM_TOP_ALLOW);
    ng_stream_foreach_intermediate(ctx->graph, p.top, p.base, claim_mid, &l);
    if (p.base != NULL)
        claim_add(&l, p.base, NG_NAC_STREAM_BASE_REQUIRE,
                  NG_NAC_STREAM_BASE_ALLOW);
    /* Its filter stays where the job put it until the job takes it out. */
    claim_add(&l, p.filter_node_name, 0, NG_NAC_ALL & ~NG_NAC_GRAPH_MOD);
    claim_list_run(call, p.job_id, &l, args, start_stream, &p);
    return;

fail:
    ng_qmp_error_from(call, &err);
}

/* ---- block-commit ------------------------------------------------------- */

static struct ng_node *
backing_of(struct ng_node *n)
{
    return ng_node_child_role(n, NG_ROLE_BACKING);
}

/* "X-node", or QEMU's older "X" (a file name there; a node-name here). */
static int
node_arg(json_t *args, const char *key, const char *node_key,
         const char **out, struct ng_error *err)
{
    const char *a = ng_qmp_str_arg(args, node_key), *b = ng_qmp_str_arg(args, key);

    if (a != NULL && b != NULL && strcmp(a, b) != 0)
        return ng_error_set(err, EINVAL, "'%s' and '%s' name different "
                            "nodes", key, node_key);
    *out = a != NULL ? a : b;
    return 0;
}

/* Top (default: the device), base (default: the chain's bottom) and the
 * overlay above top (none when top is the device: active commit). */
static int
commit_nodes(struct ng_graph *g, json_t *args, struct ng_mirror_params *p,
             struct ng_error *err)
{
    const char *device = ng_qmp_str_arg(args, "device");
    struct ng_node *d = ng_graph_find(g, device), *n;

    if (d == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", device);
    if (backing_of(d) == NULL)
        return ng_error_set(err, EINVAL, "node '%s' has no backing node: "
                            "nothing to commit", device);
    if (node_arg(args, "top", "top-node", &p->source, err) == -1 ||
        node_arg(args, "base", "base-node", &p->target, err) == -1)
        return -1;
    if (p->source == NULL || strcmp(p->source, device) == 0) {
        p->source = device;
    } else {
        for (n = d; n != NULL && backing_of(n) != NULL &&
             strcmp(backing_of(n)->name, p->source) != 0; n = backing_of(n))
            ;
        if (n == NULL || backing_of(n) == NULL)
            return ng_error_set(err, EINVAL, "node '%s' is not in the "
                                "backing chain of node '%s'", p->source,
                                device);
        p->overlay = n->name;
    }
    if (p->target == NULL) {
        for (n = ng_graph_find(g, p->source); backing_of(n) != NULL;
             n = backing_of(n))
            ;
        p->target = n->name;
    }
    if (strcmp(p->target, p->source) == 0)
        return ng_error_set(err, EINVAL, "top and base are both node "
                            "'%s'", p->source);
    return 0;
}

static int
commit_params(struct ng_graph *g, json_t *args, struct ng_mirror_params *p,
              struct ng_error *err)
{
    struct ng_qmp_job_args ja;
    int act;

    p->filter_node_name = ng_qmp_str_arg(args, "filter-node-name");
    if (commit_nodes(g, args, p, err) == -1)
        return -1;
    p->commit = true;
    p->sync = NG_MIRROR_SYNC_FULL;
    if (ng_qmp_job_args(args, ng_qmp_str_arg(args, "device"), &ja,
                        err) == -1 ||
        ng_qmp_error_action_arg(args, "on-error", &act, err) == -1)
        return -1;
    p->on_source_error = p->on_target_error = act;
    p->job_id = ja.job_id;
    p->speed = ja.speed;
    p->auto_finalize = ja.auto_finalize;
    p->auto_dismiss = ja.auto_dismiss;
    return 0;
}

static void
commit_claims(struct ng_graph *g, const struct ng_mirror_params *p,
              struct claim_list *l)
{
    if (p->overlay != NULL) {
        claim_add(l, p->overlay, NG_NAC_COMMIT_OVERLAY_REQUIRE,
                  NG_NAC_COMMIT_OVERLAY_ALLOW);
        claim_add(l, p->source, NG_NAC_COMMIT_TOP_REQUIRE,
                  NG_NAC_COMMIT_TOP_ALLOW);
    } else {
        claim_add(l, p->source, NG_NAC_COMMIT_TOP_REQUIRE,
                  NG_NAC_COMMIT_ACTIVE_TOP_ALLOW);
    }
    ng_stream_foreach_intermediate(g, p->source, p->target, claim_mid, l);
    claim_add(l, p->target, NG_NAC_COMMIT_BASE_REQUIRE,
              NG_NAC_COMMIT_BASE_ALLOW);
    if (p->filter_node_name != NULL) {
        struct ng_nac_claim f = ng_qmp_filter_claim(p->filter_node_name);

        claim_add(l, f.node, f.require, f.allow);
    }
}

void
ng_qmp_block_commit(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    struct ng_mirror_params p = { 0 };
    struct ng_error err = { 0 };
    struct claim_list l = { .n = 0 };

    if (commit_params(ctx->graph, args, &p, &err) == -1 ||
        ng_qmp_mirror_check(ctx, &p, &err) == -1) {
        ng_qmp_error_from(call, &err);
        return;
    }
    commit_claims(ctx->graph, &p, &l);
    claim_list_run(call, p.job_id, &l, args, ng_qmp_start_mirror, &p);
}
