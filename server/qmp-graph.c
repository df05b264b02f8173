/* server/qmp-graph.c: QMP commands on nodes and the graph. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "graph/graph.h"
#include "graph/secret.h"
#include "filters/throttle.h"
#include "nac/nac.h"
#include "nac/policy.h"
#include "server/exports.h"
#include "server/log.h"
#include "server/qmp-graph.h"
#include "server/qmp-util.h"
#include "server/reload.h"

/* ---- Queries ------------------------------------------------------------ */

void
ng_qmp_query_version(struct ng_qmp_call *call, json_t *args)
{
    (void)args;
    ng_qmp_return(call, json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu",
                                  "major", 0, "minor", 1, "micro", 0,
                                  "package", PACKAGE_STRING));
}

void
ng_qmp_query_commands(struct ng_qmp_call *call, json_t *args)
{
    const struct ng_qmp_command *cmd;
    json_t *list = json_array();

    (void)args;
    json_array_append_new(list, json_pack("{s:s}", "name",
                                          "qmp_capabilities"));
    for (cmd = ng_qmp_commands; cmd->name != NULL; cmd++)
        json_array_append_new(list, json_pack("{s:s}", "name", cmd->name));
    ng_qmp_return(call, list);
}

static json_t *
node_children_json(struct ng_node *n)
{
    json_t *list = json_array();
    struct ng_edge *e;
    char label[64];

    /* QEMU's child names where the driver has them (quorum's
     * "children.N"), else the role. */
    for (e = n->children; e != NULL; e = e->next_child)
        json_array_append_new(list, json_pack("{s:s,s:s}", "child",
                                              ng_edge_label(n, e, label,
                                                            sizeof label),
                                              "node-name", e->child->name));
    return list;
}

static json_t *
node_json(struct ng_node *n)
{
    int64_t len = ng_node_length(n);
    json_t *j = json_pack("{s:s,s:s,s:b,s:b,s:b,s:{s:I},s:o}",
                          "node-name", n->name,
                          "drv", n->driver->name,
                          "ro", !(ng_node_caps(n) & NG_CAP_WRITE),
                          "implicit", n->implicit,
                          "filter", n->driver->is_filter,
                          "image", "virtual-size",
                          (json_int_t)(len > 0 ? len : 0),
                          "children", node_children_json(n));

    if (n->implicit_owner != NULL)
        json_object_set_new(j, "owner", json_string(n->implicit_owner));
    json_object_set_new(j, "dirty-bitmaps", ng_qmp_bitmaps_json(n));
    return j;
}

void
ng_qmp_query_named_block_nodes(struct ng_qmp_call *call, json_t *args)
{
    struct ng_graph *g = ng_qmp_ctx(call)->graph;
    json_t *list = json_array();
    struct ng_node *n;

    (void)args;
    for (n = g->nodes; n != NULL; n = n->next)
        json_array_append_new(list, node_json(n));
    ng_qmp_return(call, list);
}

static json_t *
graph_json(struct ng_graph *g)
{
    json_t *nodes = json_array(), *edges = json_array(), *bbs = json_array();
    struct ng_node *n;
    struct ng_edge *e;
    struct ng_bb *bb;

    for (n = g->nodes; n != NULL; n = n->next) {
        json_array_append_new(nodes, node_json(n));
        for (e = n->children; e != NULL; e = e->next_child)
            json_array_append_new(edges, json_pack(
                "{s:s,s:s,s:s}", "parent", n->name, "child", e->child->name,
                "role", ng_role_name(e->role)));
    }
    for (bb = g->bbs; bb != NULL; bb = bb->next) {
        struct ng_node *root = ng_bb_root(bb);

        json_array_append_new(bbs, json_pack("{s:s,s:s?,s:b}", "name",
                                             bb->name, "root",
                                             root ? root->name : NULL,
                                             "writable", bb->writable));
    }
    return json_pack("{s:o,s:o,s:o}", "nodes", nodes, "edges", edges,
                     "block-backends", bbs);
}

/* Graphviz: BBs as boxes on top, implicit filters dashed. */
static char *
graph_dot(struct ng_graph *g)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    struct ng_node *n;
    struct ng_edge *e;
    struct ng_bb *bb;

    if (fp == NULL)
        return NULL;
    fprintf(fp, "digraph nbdgraph {\n  rankdir=TB;\n");
    for (bb = g->bbs; bb != NULL; bb = bb->next) {
        fprintf(fp, "  \"bb:%s\" [shape=box,style=filled,fillcolor="
                "lightblue,label=\"BB %s%s\"];\n", bb->name, bb->name,
                bb->writable ? "" : " (ro)");
        if (ng_bb_root(bb) != NULL)
            fprintf(fp, "  \"bb:%s\" -> \"%s\";\n", bb->name,
                    ng_bb_root(bb)->name);
    }
    for (n = g->nodes; n != NULL; n = n->next) {
        fprintf(fp, "  \"%s\" [label=\"%s\\n%s\"%s];\n", n->name, n->name,
                n->driver->name, n->implicit ? ",style=dashed" : "");
        for (e = n->children; e != NULL; e = e->next_child)
            fprintf(fp, "  \"%s\" -> \"%s\" [label=\"%s\"];\n", n->name,
                    e->child->name, ng_role_name(e->role));
    }
    fprintf(fp, "}\n");
    fclose(fp);
    return text;
}

void
ng_qmp_query_graph(struct ng_qmp_call *call, json_t *args)
{
    struct ng_graph *g = ng_qmp_ctx(call)->graph;
    const char *format = json_string_value(json_object_get(args, "format"));
    char *dot;

    if (format == NULL || strcmp(format, "json") == 0) {
        ng_qmp_return(call, graph_json(g));
        return;
    }
    if (strcmp(format, "dot") != 0) {
        ng_qmp_error(call, NG_QMP_GENERIC, "format must be 'json' or 'dot', "
                     "not '%s'", format);
        return;
    }
    dot = graph_dot(g);
    ng_qmp_return(call, json_pack("{s:s}", "dot", dot ? dot : ""));
    free(dot);
}

/* Implicit filters belong to their export's config: a command naming one
 * must say "explicit": true (DESIGN.md, "implicit filter"). */
static int
check_not_implicit(struct ng_control_ctx *ctx, json_t *args,
                   const char *name, struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(ctx->graph, name);

    if (n == NULL || !n->implicit ||
        json_is_true(json_object_get(args, "explicit")))
        return 0;
    return ng_error_set(err, EPERM, "node '%s' is an implicit filter of "
                        "export '%s'; pass \"explicit\": true to change it",
                        name, n->implicit_owner ? n->implicit_owner : "?");
}

/* ---- Immediate jobs: blockdev-add, blockdev-del, blockdev-reconfigure -- */

struct job_pending;

/* A command that changes the graph at once, without a drain.  Every such
 * command is a job: an ID, checks, a NAC claim on its node held while it
 * mutates, then a GRAPH_CHANGED event naming the node. */
struct immediate_job {
    const char *prefix;         /* generated job IDs are "<prefix>N" */
    const char *change;         /* GRAPH_CHANGED's "change" */
    const char *node;           /* what it claims; the event's node-name */
    unsigned require, allow;    /* its NAC claim */
    /* Claims on more nodes than `node`, taken instead when n_claims > 0
     * (filled by check, so also on a dry run). */
    const struct ng_nac_claim *claims;
    size_t n_claims;
    /* Before claiming, also on a dry run; NULL = none.  args borrowed. */
    int (*check)(struct ng_control_ctx *ctx, json_t *args, void *opaque,
                 struct ng_error *err);
    /* Claimed and not a dry run: either mutate, at once, or start, for
     * a change that may take a while (a node's open or close): it calls
     * job_finish(p, ...) once the change is over, maybe before it
     * returns 0; on -1 it never does. */
    int (*mutate)(struct ng_control_ctx *ctx, void *opaque,
                  struct ng_error *err);
    int (*start)(struct ng_control_ctx *ctx, void *opaque,
                 struct job_pending *p, struct ng_error *err);
    void *opaque;               /* for check, mutate and start, borrowed */
};

/* A started job until its change is over: it holds the NAC claim. */
struct job_pending {
    struct ng_qmp_call *call;
    char id[128];
    const char *change;         /* static */
    char *node;                 /* owned */
};

/* The end of a started job: release its claim, announce it, answer. */
static void
job_finish(struct job_pending *p, const struct ng_error *err)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(p->call);

    ng_ctx_nac_release(ctx, p->id);
    if (err != NULL) {
        ng_qmp_error_from(p->call, err);
    } else {
        ng_qmp_graph_changed(ctx, p->change, p->id,
                             json_pack("{s:s}", "node-name", p->node));
        ng_qmp_return(p->call, NULL);
    }
    free(p->node);
    free(p);
}

/* Claimed as `id`: start the job's change.  On -1 the claim is still
 * held and nothing answered. */
static int
start_immediate_job(struct ng_qmp_call *call, const char *id,
                    const struct immediate_job *job, struct ng_error *err)
{
    struct job_pending *p = calloc(1, sizeof *p);

    if (p == NULL ||
        (p->node = strdup(job->node != NULL ? job->node : "")) == NULL) {
        free(p);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    p->call = call;
    p->change = job->change;
    snprintf(p->id, sizeof p->id, "%s", id);
    if (job->start(ng_qmp_ctx(call), job->opaque, p, err) == -1) {
        free(p->node);
        free(p);
        return -1;
    }
    return 0;
}

/* Run `job` for `call` and answer it. */
static void
run_immediate_job(struct ng_qmp_call *call, json_t *args,
                  const struct immediate_job *job)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    struct ng_nac_claim claim = { job->node, job->require, job->allow };
    bool dry = ng_qmp_dry_run(args);
    struct ng_error err = { 0 };
    char id[128];
    int r;

    ng_qmp_job_id(ctx, args, job->prefix, id, sizeof id);
    r = job->check != NULL ? job->check(ctx, args, job->opaque, &err) : 0;
    if (r == 0 && job->n_claims > 0)
        r = ng_ctx_nac_claim(ctx, id, "command", job->claims, job->n_claims,
                             dry, &err);
    else if (r == 0)
        r = ng_ctx_nac_claim(ctx, id, "command", &claim, 1, dry, &err);
    if (r == 0 && !dry && job->start != NULL) {
        if (start_immediate_job(call, id, job, &err) == 0)
            return;             /* job_finish() answers */
        ng_ctx_nac_release(ctx, id);
        r = -1;
    } else if (r == 0 && !dry) {
        r = job->mutate(ctx, job->opaque, &err);
        ng_ctx_nac_release(ctx, id);
    }
    if (r == -1) {
        ng_qmp_error_from(call, &err);
        return;
    }
    if (!dry)
        ng_qmp_graph_changed(ctx, job->change, id,
                             json_pack("{s:s}", "node-name", job->node));
    ng_qmp_return(call, NULL);
}

/* blockdev-add's arguments minus our own keys, as node options. */
static struct ng_value *
node_opts_from_args(json_t *args)
{
    json_t *copy = json_deep_copy(args);
    struct ng_value *v;

    json_object_del(copy, "dry-run");
    json_object_del(copy, "job-id");
    v = ng_value_from_json(copy);
    json_decref(copy);
    return v;
}

static int
add_check(struct ng_control_ctx *ctx, json_t *args, void *opts,
          struct ng_error *err)
{
    const char *name = json_string_value(json_object_get(args, "node-name"));

    if (ng_graph_find(ctx->graph, name) != NULL)
        return ng_error_set(err, EEXIST, "node '%s' already exists", name);
    return ng_node_opts_check(ctx->graph->drivers, opts, NULL, NULL, err);
}

/* A blockdev-add waiting for its open. */
struct add_wait {
    struct job_pending *p;
    struct ng_value *opts;      /* owned copy, for the reload model */
};

static void
add_done(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct add_wait *w = opaque;

    if (node != NULL)
        ng_reload_note_node(ng_qmp_ctx(w->p->call), node->name, w->opts);
    job_finish(w->p, node != NULL ? NULL : err);
    ng_value_free(w->opts);
    free(w);
}

/* The answer waits for the open. */
static int
add_start(struct ng_control_ctx *ctx, void *opts, struct job_pending *p,
          struct ng_error *err)
{
    struct add_wait *w = calloc(1, sizeof *w);

    if (w == NULL || (w->opts = ng_value_copy(opts)) == NULL) {
        free(w);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    w->p = p;
    if (ng_graph_add_node(ctx->graph, NULL, opts, add_done, w, err) == -1) {
        ng_value_free(w->opts);
        free(w);
        return -1;
    }
    return 0;
}

void
ng_qmp_blockdev_add(struct ng_qmp_call *call, json_t *args)
{
    struct ng_value *opts = node_opts_from_args(args);
    struct immediate_job job = {
        .prefix = "blockdev-add-", .change = "node-added",
        .node = json_string_value(json_object_get(args, "node-name")),
        .require = NG_NAC_EXCLUSIVE_REQUIRE, .allow = NG_NAC_EXCLUSIVE_ALLOW,
        .check = add_check, .start = add_start, .opaque = opts,
    };

    if (opts == NULL) {
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    run_immediate_job(call, args, &job);
    ng_value_free(opts);
}

static int
del_check(struct ng_control_ctx *ctx, json_t *args, void *name,
          struct ng_error *err)
{
    if (check_not_implicit(ctx, args, name, err) == -1)
        return -1;
    return ng_graph_check_del_node(ctx->graph, name, err);
}

static void
del_done(void *p)
{
    struct job_pending *pending = p;

    ng_reload_forget_node(ng_qmp_ctx(pending->call), pending->node);
    job_finish(pending, NULL);
}

/* The answer waits for the close. */
static int
del_start(struct ng_control_ctx *ctx, void *name, struct job_pending *p,
          struct ng_error *err)
{
    return ng_graph_del_node(ctx->graph, name, del_done, p, err);
}

void
ng_qmp_blockdev_del(struct ng_qmp_call *call, json_t *args)
{
    const char *name = json_string_value(json_object_get(args, "node-name"));
    struct immediate_job job = {
        .prefix = "blockdev-del-", .change = "node-removed", .node = name,
        .require = NG_NAC_EXCLUSIVE_REQUIRE, .allow = NG_NAC_EXCLUSIVE_ALLOW,
        .check = del_check, .start = del_start, .opaque = (void *)name,
    };

    run_immediate_job(call, args, &job);
}

struct reconfigure {
    const char *name;
    struct ng_value *opts;      /* owned */
};

static int
reconfigure_check(struct ng_control_ctx *ctx, json_t *args, void *opaque,
                  struct ng_error *err)
{
    struct reconfigure *rc = opaque;

    if (ng_graph_find(ctx->graph, rc->name) == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", rc->name);
    return check_not_implicit(ctx, args, rc->name, err);
}

static int
reconfigure_mutate(struct ng_control_ctx *ctx, void *opaque,
                   struct ng_error *err)
{
    struct reconfigure *rc = opaque;

    if (ng_node_reconfigure(ng_graph_find(ctx->graph, rc->name), rc->opts,
                            err) == -1)
        return -1;
    ng_reload_note_reconfigure(ctx, rc->name, rc->opts);
    return 0;
}

/* An implicit filter's options come from its export's config, so
 * changing them needs "explicit": true like any command naming one. */
void
ng_qmp_blockdev_reconfigure(struct ng_qmp_call *call, json_t *args)
{
    struct reconfigure rc = {
        .name = json_string_value(json_object_get(args, "node-name")),
        .opts = ng_value_from_json(json_object_get(args, "options")),
    };
    /* Registers the command under NAC without blocking anyone: options
     * that change live change no data. */
    struct immediate_job job = {
        .prefix = "reconfigure-", .change = "node-reconfigured",
        .node = rc.name, .require = 0, .allow = NG_NAC_ALL,
        .check = reconfigure_check, .mutate = reconfigure_mutate,
        .opaque = &rc,
    };

    if (rc.opts == NULL) {
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    run_immediate_job(call, args, &job);
    ng_value_free(rc.opts);
}

/* ---- block_resize --------------------------------------------------------- */

struct resize {
    struct immediate_job *job;  /* its node and claims, set by the check */
    struct ng_node *node;
    uint64_t size;
    struct ng_nac_claim *claims;    /* owned */
    size_t n_claims;
};

/* Claim `n` for a resize unless claimed already.  -1 on ENOMEM. */
static int
resize_claim(struct resize *rs, struct ng_node *n)
{
    struct ng_nac_claim *p;

    for (size_t i = 0; i < rs->n_claims; i++)
        if (strcmp(rs->claims[i].node, n->name) == 0)
            return 0;
    if ((p = realloc(rs->claims, (rs->n_claims + 1) * sizeof *p)) == NULL)
        return -1;
    rs->claims = p;
    rs->claims[rs->n_claims++] = (struct ng_nac_claim){
        n->name, NG_NAC_RESIZE_REQUIRE, NG_NAC_RESIZE_ALLOW,
    };
    return 0;
}

/* The node and the filters above it, whose size follows it, and so on
 * up: a job's bitmap or copy range was sized by any of them. */
static int
resize_claim_up(struct resize *rs, struct ng_node *n)
{
    if (resize_claim(rs, n) == -1)
        return -1;
    for (struct ng_edge *e = n->parents; e != NULL; e = e->next_parent)
        if (e->parent != NULL && e->parent->driver->is_filter &&
            resize_claim_up(rs, e->parent) == -1)
            return -1;
    return 0;
}

/* Every node whose size the resize changes: down the filters that pass
 * it on to the node that grows, and up from each through filters. */
static int
resize_claims(struct resize *rs, struct ng_error *err)
{
    for (struct ng_node *n = rs->node; n != NULL;
         n = n->driver->grow == ng_node_grow_child ? ng_node_child(n) : NULL)
        if (resize_claim_up(rs, n) == -1)
            return ng_error_set(err, ENOMEM, "out of memory");
    rs->job->claims = rs->claims;
    rs->job->n_claims = rs->n_claims;
    return 0;
}

/* QEMU's `device` is a BlockBackend: here an export, by ID or NBD name,
 * which resizes the export's node.  As in the other commands here, a
 * node-name is taken too. */
static struct ng_node *
resize_device(struct ng_control_ctx *ctx, const char *device)
{
    struct ng_export_entry *e = ng_exports_find(ctx, device);

    for (struct ng_export_entry *i = ctx->exports; e == NULL && i != NULL;
         i = i->next)
        if (strcmp(i->name, device) == 0)
            e = i;
    return ng_graph_find(ctx->graph, e != NULL ? e->node : device);
}

static int
resize_check(struct ng_control_ctx *ctx, json_t *args, void *opaque,
             struct ng_error *err)
{
    struct resize *rs = opaque;
    const char *device = ng_qmp_str_arg(args, "device");
    const char *name = ng_qmp_str_arg(args, "node-name");
    json_int_t size = json_integer_value(json_object_get(args, "size"));

    if ((device == NULL) == (name == NULL))
        return ng_error_set(err, EINVAL, "give exactly one of 'device' and "
                            "'node-name'");
    if (size <= 0)
        return ng_error_set(err, EINVAL, "Parameter 'size' expects a >0 "
                            "size");
    rs->size = (uint64_t)size;
    rs->node = device != NULL ? resize_device(ctx, device)
                              : ng_graph_find(ctx->graph, name);
    if (rs->node == NULL && device != NULL)
        return ng_error_set(err, ENOENT, "no export or node '%s'", device);
    if (rs->node == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", name);
    rs->job->node = rs->node->name;
    if (check_not_implicit(ctx, args, rs->node->name, err) == -1 ||
        ng_node_resize_check(rs->node, rs->size, err) == -1)
        return -1;
    return resize_claims(rs, err);
}

static int
resize_mutate(struct ng_control_ctx *ctx, void *opaque, struct ng_error *err)
{
    struct resize *rs = opaque;

    (void)ctx;
    return ng_node_resize(rs->node, rs->size, err);
}

/* QEMU's block_resize: grows a node live (clients connected before keep
 * the size they were told; new ones are told the new size), or shrinks
 * one nothing uses (ng_node_resize()). */
void
ng_qmp_block_resize(struct ng_qmp_call *call, json_t *args)
{
    struct resize rs = { 0 };
    struct immediate_job job = {
        .prefix = "block-resize-", .change = "node-resized",
        .check = resize_check, .mutate = resize_mutate, .opaque = &rs,
    };

    rs.job = &job;
    run_immediate_job(call, args, &job);
    free(rs.claims);
}

/* ---- Filters: insert and remove inside a drained section ---------------- */

struct filter_op {
    struct ng_qmp_call *call;
    struct ng_control_ctx *ctx;
    char job[128];
    char *node;                 /* insert: node below; remove: the filter */
    char *filter_name;          /* insert: the new filter's node-name */
    struct ng_value *filter;    /* insert: filter options */
    char *keep;                 /* remove: the child to keep, or NULL */
    char **bbs;                 /* insert: only these exports' BBs (by NBD
                                 * name), or NULL */
    size_t n_bbs;
    unsigned mutate_flags;      /* NG_MUTATE_FORCE for "force": true */
    bool claimed;               /* holds NAC claims as `job` */
};

static void
filter_op_free(struct filter_op *op)
{
    size_t i;

    if (op->claimed)
        ng_ctx_nac_release(op->ctx, op->job);
    for (i = 0; i < op->n_bbs; i++)
        free(op->bbs[i]);
    free(op->bbs);
    ng_value_free(op->filter);
    free(op->filter_name);
    free(op->keep);
    free(op->node);
    free(op);
}

/* "exports" names exports by ID, as block-export-del does; the graph
 * knows their BlockBackends by NBD name. */
static int
filter_op_bbs(struct filter_op *op, json_t *exports, struct ng_error *err)
{
    struct ng_export_entry *e;
    json_t *item;
    size_t i;

    if (exports == NULL)
        return 0;
    op->bbs = calloc(json_array_size(exports) + 1, sizeof *op->bbs);
    if (op->bbs == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    json_array_foreach(exports, i, item) {
        if (!json_is_string(item))
            return ng_error_set(err, EINVAL, "'exports' must list export "
                                "IDs");
        if ((e = ng_exports_find(op->ctx, json_string_value(item))) == NULL)
            return ng_error_set(err, ENOENT, "export ID '%s' not found",
                                json_string_value(item));
        if ((op->bbs[op->n_bbs] = strdup(e->name)) == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
        op->n_bbs++;
    }
    return 0;
}

static int
insert_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct filter_op *op = opaque;

    return ng_graph_insert_filter(g, op->node, op->filter,
                                  (const char *const *)op->bbs, op->n_bbs,
                                  op->mutate_flags, err) != NULL ? 0 : -1;
}

/* The filter's options with its children as the graph has them, so
 * that query-config and reload see the splice: a multi-child filter's
 * other children are in no other place. */
static void
note_inserted(struct filter_op *op)
{
    struct ng_value *opts = ng_graph_filter_opts(op->ctx->graph, op->node,
                                                 op->filter);

    ng_reload_note_node(op->ctx, op->filter_name,
                        opts != NULL ? opts : op->filter);
    ng_value_free(opts);
}

static void
insert_done(void *opaque, const struct ng_error *err)
{
    struct filter_op *op = opaque;

    if (err != NULL) {
        ng_qmp_error_from(op->call, err);
    } else {
        note_inserted(op);
        ng_qmp_graph_changed(op->ctx, "filter-inserted", op->job,
                             json_pack("{s:s,s:s}", "node-name",
                                       op->filter_name, "above", op->node));
        ng_qmp_return(op->call, NULL);
    }
    filter_op_free(op);
}

/* Splice claims on `node` (the one that moves), held until the op is
 * freed; with dry_run only checked. */
static int
filter_op_claim(struct filter_op *op, const char *node, bool dry_run,
                struct ng_error *err)
{
    struct ng_nac_claim claim = { node, NG_NAC_SPLICE_REQUIRE,
                                  NG_NAC_SPLICE_ALLOW };

    if (ng_ctx_nac_claim(op->ctx, op->job, "command", &claim, 1, dry_run,
                         err) == -1)
        return -1;
    op->claimed = !dry_run;
    return 0;
}

/* An insert's claims: splice claims on `node` and on the other children
 * the options name (a multi-child filter's: each gets a new parent, as
 * x-blockdev-change's added node does). */
static int
insert_claim(struct filter_op *op, const char *node, bool dry_run,
             struct ng_error *err)
{
    const char *others[16];
    size_t n = ng_graph_filter_other_children(op->ctx->graph, op->filter,
                                              others, 16);
    struct ng_nac_claim claims[17];

    if (n > 16)
        return ng_error_set(err, EINVAL, "filter: %zu children; at most 16 "
                            "besides '%s'", n, node);
    claims[0] = (struct ng_nac_claim){ node, NG_NAC_SPLICE_REQUIRE,
                                       NG_NAC_SPLICE_ALLOW };
    for (size_t i = 0; i < n; i++)
        claims[i + 1] = (struct ng_nac_claim){ others[i],
                                               NG_NAC_SPLICE_REQUIRE,
                                               NG_NAC_SPLICE_ALLOW };
    if (ng_ctx_nac_claim(op->ctx, op->job, "command", claims, n + 1,
                         dry_run, err) == -1)
        return -1;
    op->claimed = !dry_run;
    return 0;
}

static struct filter_op *
filter_op_new(struct ng_qmp_call *call, json_t *args, const char *node,
              const char *prefix)
{
    struct filter_op *op = calloc(1, sizeof *op);

    if (op == NULL)
        return NULL;
    op->call = call;
    op->ctx = ng_qmp_ctx(call);
    op->node = strdup(node);
    /* Even if connected clients were told what the new graph would not
     * offer: their requests that need it then fail. */
    if (json_is_true(json_object_get(args, "force")))
        op->mutate_flags |= NG_MUTATE_FORCE;
    ng_qmp_job_id(op->ctx, args, prefix, op->job, sizeof op->job);
    return op;
}

/* Answer the command with `err` and drop the op (and its claims). */
static void
filter_op_fail(struct filter_op *op, const struct ng_error *err)
{
    ng_qmp_error_from(op->call, err);
    filter_op_free(op);
}

/* The end of insert and remove, once `op` is checked and claimed: a dry
 * run answers now; otherwise the graph is drained above `node` for
 * `mutation`, and `done` answers.  Takes op. */
static void
filter_op_run(struct filter_op *op, json_t *args, const char *node,
              ng_mutation_fn *mutation, ng_mutation_done_fn *done)
{
    struct ng_graph *g = op->ctx->graph;
    struct ng_error err = { 0 };

    if (ng_qmp_dry_run(args)) {
        ng_qmp_return(op->call, NULL);
        filter_op_free(op);
    } else if (ng_graph_mutate(g, ng_graph_find(g, node), mutation, done, op,
                               &err) == -1) {
        filter_op_fail(op, &err);
    }
}

void
ng_qmp_blockdev_insert_filter(struct ng_qmp_call *call, json_t *args)
{
    const char *node = json_string_value(json_object_get(args, "node"));
    struct filter_op *op = filter_op_new(call, args, node,
                                         "insert-filter-");
    struct ng_error err = { 0 };
    const char *fname;

    if (op == NULL) {
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    op->filter = ng_value_from_json(json_object_get(args, "filter"));
    fname = json_string_value(json_object_get(json_object_get(args, "filter"),
                                              "node-name"));
    op->filter_name = strdup(fname ? fname : "");
    if (check_not_implicit(op->ctx, args, node, &err) == -1 ||
        filter_op_bbs(op, json_object_get(args, "exports"), &err) == -1 ||
        ng_graph_check_insert_filter(op->ctx->graph, node, op->filter,
                                     (const char *const *)op->bbs,
                                     op->n_bbs, &err) == -1 ||
        insert_claim(op, node, ng_qmp_dry_run(args), &err) == -1)
        filter_op_fail(op, &err);
    else
        filter_op_run(op, args, node, insert_mutation, insert_done);
}

static int
remove_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct filter_op *op = opaque;

    return ng_graph_remove_filter_keep(g, op->node, op->keep,
                                       op->mutate_flags, err);
}

static void
remove_done(void *opaque, const struct ng_error *err)
{
    struct filter_op *op = opaque;

    if (err != NULL) {
        ng_qmp_error_from(op->call, err);
    } else {
        ng_reload_forget_node(op->ctx, op->node);
        ng_qmp_graph_changed(op->ctx, "filter-removed", op->job,
                             json_pack("{s:s}", "node-name", op->node));
        ng_qmp_return(op->call, NULL);
    }
    filter_op_free(op);
}

void
ng_qmp_blockdev_remove_filter(struct ng_qmp_call *call, json_t *args)
{
    const char *name = json_string_value(json_object_get(args, "node-name"));
    struct filter_op *op = filter_op_new(call, args, name,
                                         "remove-filter-");
    struct ng_error err = { 0 };

    const char *keep = json_string_value(json_object_get(args, "keep"));

    if (op == NULL || (keep != NULL && (op->keep = strdup(keep)) == NULL)) {
        if (op != NULL)
            filter_op_free(op);
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    if (check_not_implicit(op->ctx, args, name, &err) == -1 ||
        ng_graph_check_remove_filter_keep(op->ctx->graph, name, keep,
                                          &err) == -1 ||
        filter_op_claim(op, name, ng_qmp_dry_run(args), &err) == -1)
        filter_op_fail(op, &err);
    else
        filter_op_run(op, args, name, remove_mutation, remove_done);
}

/* ---- x-blockdev-change: a quorum child more or less ----------------------- */

struct change_child {
    struct filter_op *op;           /* node: the parent */
    char *child, *new_node;         /* exactly one, owned */
    ptrdiff_t removed_at;           /* the removed child's place among the
                                     * parent's children, before */
};

static void
change_child_free(struct change_child *cc)
{
    if (cc->op != NULL)
        filter_op_free(cc->op);
    free(cc->child);
    free(cc->new_node);
    free(cc);
}

/* Where `n` is among p's children (role children), or -1. */
static ptrdiff_t
children_index(struct ng_node *p, const struct ng_node *n)
{
    const struct ng_edge *e;
    ptrdiff_t i = 0;

    for (e = p->children; e != NULL; e = e->next_child) {
        if (e->role != NG_ROLE_CHILDREN)
            continue;
        if (e->child == n)
            return i;
        i++;
    }
    return -1;
}

static size_t
children_count(struct ng_node *p)
{
    const struct ng_edge *e;
    size_t n = 0;

    for (e = p->children; e != NULL; e = e->next_child)
        n += e->role == NG_ROLE_CHILDREN;
    return n;
}

static int
change_child_mutation(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct change_child *cc = opaque;
    struct ng_node *p = ng_graph_find(g, cc->op->node), *gone;

    /* Which item of the model's list goes with it (change_child_note). */
    cc->removed_at = -1;
    if (cc->child != NULL && p != NULL && p->driver->del_child != NULL &&
        (gone = p->driver->del_child(p, cc->child, true, NULL)) != NULL)
        cc->removed_at = children_index(p, gone);
    return ng_graph_change_child(g, cc->op->node, cc->child, cc->new_node,
                                 err);
}

/* The entry of the model's children list for the child now at `j`: a
 * named child by its name; one defined inline (no name a config could
 * use) by its old definition, the item at the same place before the
 * change (after the removed one: one further).  NULL if the model does
 * not line up with the graph. */
static struct ng_value *
change_child_item(const struct ng_value *old, const struct ng_node *child,
                  size_t j, ptrdiff_t removed_at)
{
    size_t i = removed_at >= 0 && (ptrdiff_t)j >= removed_at ? j + 1 : j;

    if (!child->auto_named && !child->inline_def)
        return ng_value_new_scalar(child->name, (struct ng_loc){ 0 });
    if (old == NULL || old->kind != NG_VALUE_LIST || i >= old->n ||
        old->items[i]->kind != NG_VALUE_MAP)
        return NULL;
    return ng_value_copy(old->items[i]);
}

/* The quorum's current children, as its "children" option, so that
 * query-config and reload see the change: by node-name, and a child
 * defined inline by its definition. */
static void
change_child_note(struct ng_control_ctx *ctx, const char *parent,
                  ptrdiff_t removed_at)
{
    struct ng_node *p = ng_graph_find(ctx->graph, parent);
    const struct ng_value *model = ng_reload_node_opts(ctx, parent);
    const struct ng_value *old = model ? ng_value_get(model, "children")
                                       : NULL;
    size_t before = children_count(p) + (removed_at >= 0 ? 1 : 0) -
                    (removed_at >= 0 ? 0 : 1);
    struct ng_loc none = { 0 };
    struct ng_value *opts = ng_value_new_map(none);
    struct ng_value *list = ng_value_new_list(none), *item;
    const struct ng_edge *e;
    size_t j = 0;

    if (opts == NULL || list == NULL)
        goto oom;
    for (e = p->children; e != NULL; e = e->next_child) {
        if (e->role != NG_ROLE_CHILDREN)
            continue;
        item = old != NULL && old->kind == NG_VALUE_LIST && old->n == before
               ? change_child_item(old, e->child, j, removed_at)
               : change_child_item(NULL, e->child, j, removed_at);
        if (item == NULL && (e->child->auto_named || e->child->inline_def)) {
            ng_log_warn("reload: quorum '%s': no definition of its inline "
                        "child '%s' in the model; its config entry keeps "
                        "its old children", parent, e->child->name);
            goto out;
        }
        if (item == NULL || ng_value_list_append(list, item) == -1)
            goto oom;
        j++;
    }
    if (ng_value_map_put(opts, "children", none, list) == -1) {
        list = NULL;                /* taken, and freed */
        goto oom;
    }
    list = NULL;
    ng_reload_note_reconfigure(ctx, parent, opts);
    goto out;
oom:
    ng_log_warn("reload: out of memory recording node '%s'", parent);
out:
    ng_value_free(list);
    ng_value_free(opts);
}

static void
change_child_done(void *opaque, const struct ng_error *err)
{
    struct change_child *cc = opaque;
    struct filter_op *op = cc->op;

    if (err != NULL) {
        ng_qmp_error_from(op->call, err);
    } else {
        change_child_note(op->ctx, op->node, cc->removed_at);
        ng_qmp_graph_changed(op->ctx, cc->child != NULL ? "child-removed"
                                                        : "child-added",
                             op->job, json_pack("{s:s,s:s}", "node-name",
                                                op->node, cc->child != NULL
                                                ? "child" : "node",
                                                cc->child != NULL
                                                ? cc->child : cc->new_node));
        ng_qmp_return(op->call, NULL);
    }
    change_child_free(cc);
}

/* Splice claims (as a filter insert) on the parent, whose children
 * change, and on an added node, which gets a parent. */
static int
change_child_claim(struct change_child *cc, bool dry_run,
                   struct ng_error *err)
{
    struct ng_nac_claim claims[2] = {
        { cc->op->node, NG_NAC_SPLICE_REQUIRE, NG_NAC_SPLICE_ALLOW },
        { cc->new_node, NG_NAC_SPLICE_REQUIRE, NG_NAC_SPLICE_ALLOW },
    };

    if (ng_ctx_nac_claim(cc->op->ctx, cc->op->job, "command", claims,
                         cc->new_node != NULL ? 2 : 1, dry_run, err) == -1)
        return -1;
    cc->op->claimed = !dry_run;
    return 0;
}

/* QEMU's x-blockdev-change: "parent" and either "child" (its name,
 * "children.N", to remove) or "node" (to add), inside a drained section
 * over the parent. */
void
ng_qmp_x_blockdev_change(struct ng_qmp_call *call, json_t *args)
{
    const char *parent = json_string_value(json_object_get(args, "parent"));
    const char *child = json_string_value(json_object_get(args, "child"));
    const char *node = json_string_value(json_object_get(args, "node"));
    struct change_child *cc = calloc(1, sizeof *cc);
    struct ng_error err = { 0 };

    if (cc == NULL ||
        (cc->op = filter_op_new(call, args, parent, "change-child-")) == NULL ||
        cc->op->node == NULL ||
        (child != NULL && (cc->child = strdup(child)) == NULL) ||
        (node != NULL && (cc->new_node = strdup(node)) == NULL)) {
        if (cc != NULL)
            change_child_free(cc);
        ng_qmp_error(call, NG_QMP_GENERIC, "out of memory");
        return;
    }
    if (check_not_implicit(cc->op->ctx, args, parent, &err) == -1 ||
        ng_graph_check_change_child(cc->op->ctx->graph, parent, child, node,
                                    &err) == -1 ||
        change_child_claim(cc, ng_qmp_dry_run(args), &err) == -1) {
        ng_qmp_error_from(call, &err);
        change_child_free(cc);
    } else if (ng_qmp_dry_run(args)) {
        ng_qmp_return(call, NULL);
        change_child_free(cc);
    } else if (ng_graph_mutate(cc->op->ctx->graph,
                               ng_graph_find(cc->op->ctx->graph, parent),
                               change_child_mutation, change_child_done, cc,
                               &err) == -1) {
        ng_qmp_error_from(call, &err);
        change_child_free(cc);
    }
}

/* ---- Throttle groups ------------------------------------------------------ */

static int
group_del(struct ng_graph *g, const char *name, const struct ng_value *v,
          struct ng_error *err)
{
    (void)v;
    return ng_throttle_group_undeclare(g, name, err);
}

/* throttle-group-add / -set / -del share this shape. */
static void
throttle_group_command(struct ng_qmp_call *call, json_t *args,
                       int (*fn)(struct ng_graph *, const char *,
                                 const struct ng_value *, struct ng_error *))
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    const char *group = json_string_value(json_object_get(args, "group"));
    json_t *jl = json_object_get(args, "limits");
    struct ng_value *limits = jl ? ng_value_from_json(jl) : NULL;
    struct ng_error err = { 0 };
    int r;

    r = ng_qmp_dry_run(args)
        ? (limits ? ng_throttle_limits_check(limits, &err) : 0)
        : fn(ctx->graph, group, limits, &err);
    if (r == 0 && !ng_qmp_dry_run(args)) {
        if (fn == group_del)
            ng_reload_forget_group(ctx, group);
        else if (fn == ng_throttle_group_declare || limits != NULL)
            ng_reload_note_group(ctx, group, limits);
    }
    ng_value_free(limits);
    if (r == -1)
        ng_qmp_error_from(call, &err);
    else
        ng_qmp_return(call, NULL);
}

void
ng_qmp_throttle_group_add(struct ng_qmp_call *call, json_t *args)
{
    throttle_group_command(call, args, ng_throttle_group_declare);
}

void
ng_qmp_throttle_group_set(struct ng_qmp_call *call, json_t *args)
{
    throttle_group_command(call, args, ng_throttle_group_set_limits);
}

void
ng_qmp_throttle_group_del(struct ng_qmp_call *call, json_t *args)
{
    throttle_group_command(call, args, group_del);
}

/* ---- object-add / object-del: secrets --------------------------------- */

/* QEMU's secret object: "data" (raw, or base64 with "format") or "file".
 * The value is never echoed in an error. */
static int
secret_add(struct ng_graph *g, json_t *args, bool dry_run,
           struct ng_error *err)
{
    const char *id = json_string_value(json_object_get(args, "id"));
    const char *data = json_string_value(json_object_get(args, "data"));
    const char *file = json_string_value(json_object_get(args, "file"));
    const char *format = json_string_value(json_object_get(args, "format"));
    gnutls_datum_t in, out = { NULL, 0 };
    int r;

    if ((data == NULL) == (file == NULL))
        return ng_error_set(err, EINVAL, "secret '%s': give exactly one of "
                            "'data' and 'file'", id);
    if (format != NULL && strcmp(format, "raw") != 0 &&
        strcmp(format, "base64") != 0)
        return ng_error_set(err, EINVAL, "secret '%s': format must be 'raw' "
                            "or 'base64', not '%s'", id, format);
    if (ng_secret_find(g, id) != NULL)
        return ng_error_set(err, EEXIST, "secret '%s' already exists", id);
    if (dry_run)
        return 0;
    if (file != NULL)
        return ng_secret_declare_file(g, id, file, err);
    if (format == NULL || strcmp(format, "raw") == 0)
        return ng_secret_declare(g, id, data, strlen(data), err);
    in.data = (unsigned char *)data;
    in.size = (unsigned)strlen(data);
    if (gnutls_base64_decode2(&in, &out) < 0)
        return ng_error_set(err, EINVAL, "secret '%s': 'data' is not valid "
                            "base64", id);
    r = ng_secret_declare(g, id, out.data, out.size, err);
    explicit_bzero(out.data, out.size);
    gnutls_free(out.data);
    return r;
}

void
ng_qmp_object_add(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    const char *type = json_string_value(json_object_get(args, "qom-type"));
    struct ng_error err = { 0 };

    if (strcmp(type, "secret") != 0)
        ng_error_set(&err, ENOTSUP, "qom-type '%s' is not supported (only "
                     "secret)", type);
    else if (secret_add(ctx->graph, args, ng_qmp_dry_run(args), &err) == 0) {
        ng_qmp_return(call, NULL);
        return;
    }
    ng_qmp_error_from(call, &err);
}

/* Only secrets are objects object-add makes; a luks node copied its
 * password at open, so one may go while nodes use it, as in QEMU. */
void
ng_qmp_object_del(struct ng_qmp_call *call, json_t *args)
{
    struct ng_control_ctx *ctx = ng_qmp_ctx(call);
    const char *id = json_string_value(json_object_get(args, "id"));
    struct ng_error err = { 0 };

    if (ng_secret_find(ctx->graph, id) == NULL)
        ng_error_set(&err, ENOENT, "object '%s' not found", id);
    else if (ng_qmp_dry_run(args) ||
             ng_graph_object_del(ctx->graph, &ng_secret_type, id,
                                 &err) == 0) {
        ng_qmp_return(call, NULL);
        return;
    }
    ng_qmp_error_from(call, &err);
}
