/* server/qmp-snapshot.c: blockdev-snapshot (node, overlay), as QEMU's:
 * the overlay goes in between `node` and everything above it (exports,
 * their implicit filters), in one drained section, under a NAC claim on
 * both nodes held while it runs; the exports' claims follow to the
 * overlay, which is what they write now. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "nac/policy.h"
#include "server/exports.h"
#include "server/qmp-graph.h"
#include "server/qmp-util.h"

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
        ng_qmp_return(op->call, NULL);
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
