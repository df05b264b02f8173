/* tests/unit/test-layers.c: the order in which the graph calls a stack of
 * drivers (nbdkit's test-layers idea), and what a splice may take from a
 * BB whose clients were told something.
 *
 * The test hands its own driver registry to ng_graph_new(), holding none
 * of the daemon's drivers: "rec" is a filter and "rec-leaf" a leaf; both
 * write every call the graph makes into one log: open, refresh,
 * drain_begin/drain_end, each request on its way down and each completion
 * on its way up, and close.  The log is the one file-level
 * static: the drivers of several nodes must write into the same one. */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

/* ---- The log ------------------------------------------------------------ */

#define LOG_MAX 64

static struct {
    char line[LOG_MAX][48];
    unsigned n;
} log_;

static void
log_add(const char *fmt, ...)
{
    va_list ap;

    CHECK(log_.n < LOG_MAX);
    va_start(ap, fmt);
    vsnprintf(log_.line[log_.n++], sizeof log_.line[0], fmt, ap);
    va_end(ap);
}

static void
log_dump(const char *title)
{
    fprintf(stderr, "%s:\n", title);
    for (unsigned i = 0; i < log_.n; i++)
        fprintf(stderr, "  %s\n", log_.line[i]);
}

/* The log since the last check is exactly `want` (NULL-terminated). */
static void
expect_log(const char *step, const char *const *want)
{
    unsigned i;

    for (i = 0; want[i] != NULL; i++) {
        if (i >= log_.n || strcmp(log_.line[i], want[i]) != 0) {
            log_dump("log");
            fail("%s: entry %u is '%s', expected '%s'", step, i,
                 i < log_.n ? log_.line[i] : "(none)", want[i]);
        }
    }
    if (i != log_.n) {
        log_dump("log");
        fail("%s: %u entries, expected %u", step, log_.n, i);
    }
    log_.n = 0;
}

/* ---- The drivers --------------------------------------------------------- */

/* Both: "size" and "caps" replace what the node would have otherwise (the
 * child's, for the filter); -1 keeps it. */
struct rec_state {
    struct ng_node *file;           /* filter: option "file" */
    int64_t size;
    int64_t caps;
    struct ng_node *node;
};

static const struct ng_opt_desc rec_opts[] = {
    NG_OPT_CHILD("file", struct rec_state, file, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_INT("size", struct rec_state, size, "-1", "size, -1: child's"),
    NG_OPT_INT("caps", struct rec_state, caps, "-1", "NG_CAP_* mask, -1: "
               "child's"),
    NG_OPT_END,
};

static const struct ng_opt_desc rec_leaf_opts[] = {
    NG_OPT_INT("size", struct rec_state, size, "1048576", "size"),
    NG_OPT_INT("caps", struct rec_state, caps, "-1", "NG_CAP_* mask, -1: "
               "all"),
    NG_OPT_END,
};

static int
rec_open(struct ng_node *node, struct ng_error *err)
{
    struct rec_state *s = ng_node_state(node);

    (void)err;
    s->node = node;
    log_add("open %s", node->name);
    return 0;
}

static void
rec_close(struct ng_node *node)
{
    log_add("close %s", node->name);
}

static int
rec_refresh(struct ng_node *node, struct ng_node_facts *facts,
            struct ng_error *err)
{
    const struct rec_state *s = ng_node_state(node);

    (void)err;
    log_add("refresh %s", node->name);
    if (!node->driver->is_filter && s->caps == -1)
        facts->caps = NG_CAPS_LEAF_ALL;
    if (s->size != -1)
        facts->size = s->size;
    if (s->caps != -1)
        facts->caps = (uint32_t)s->caps;
    return 0;
}

static void
rec_drain_begin(struct ng_node *node)
{
    log_add("drain_begin %s", node->name);
}

static void
rec_drain_end(struct ng_node *node)
{
    log_add("drain_end %s", node->name);
}

static void
rec_completed(struct ng_req *req, int ret, void *opaque)
{
    const struct rec_state *s = opaque;

    log_add("complete %s %s", s->node->name, ng_op_name(req->op));
    ng_req_complete(req, ret);
}

static void
rec_submit(struct ng_node *node, struct ng_req *req)
{
    struct rec_state *s = ng_node_state(node);

    log_add("submit %s %s", node->name, ng_op_name(req->op));
    CHECK(ng_req_push(req, rec_completed, s) == 0);
    ng_node_forward(node, req);
}

static void
rec_leaf_submit(struct ng_node *node, struct ng_req *req)
{
    log_add("submit %s %s", node->name, ng_op_name(req->op));
    if (req->op == NG_OP_READ)
        ng_iov_memset(&req->iov, 0, 0, req->length);
    ng_req_complete(req, 0);
}

static const struct ng_driver rec_filter = {
    .name        = "rec",
    .help        = "records every call (test)",
    .is_filter   = true,
    .state_size  = sizeof(struct rec_state),
    .opts        = rec_opts,
    .open        = rec_open,
    .close       = rec_close,
    .submit      = rec_submit,
    .refresh     = rec_refresh,
    .drain_begin = rec_drain_begin,
    .drain_end   = rec_drain_end,
};

static const struct ng_driver rec_leaf = {
    .name        = "rec-leaf",
    .help        = "records every call, reads zeroes (test)",
    .state_size  = sizeof(struct rec_state),
    .opts        = rec_leaf_opts,
    .open        = rec_open,
    .close       = rec_close,
    .submit      = rec_leaf_submit,
    .refresh     = rec_refresh,
    .drain_begin = rec_drain_begin,
    .drain_end   = rec_drain_end,
};

/* The registry the test's graphs are made with. */
static const struct ng_driver *const rec_drivers[] = {
    &rec_filter,
    &rec_leaf,
    NULL,
};

/* ---- Mutations, run to the end ------------------------------------------ */

struct change {
    const char *insert_above;       /* insert: the node below the filter */
    struct ng_value *filter;        /* insert: its options (owned) */
    const char *remove;             /* remove: the filter */
    unsigned flags;
    bool done;
    int ret;
    char msg[NG_ERROR_MSG_MAX];
    struct ng_bb *bb;               /* a read queued once drained */
    struct io_result *queued;
    struct ng_req *queued_req;
    void *queued_buf;
};

static int
change_fn(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct change *c = opaque;

    if (c->insert_above != NULL)
        return ng_graph_insert_filter(g, c->insert_above, c->filter, NULL,
                                      0, c->flags, err) != NULL ? 0 : -1;
    return ng_graph_remove_filter(g, c->remove, c->flags, err);
}

static void
change_done(void *opaque, const struct ng_error *err)
{
    struct change *c = opaque;

    c->done = true;
    c->ret = err == NULL ? 0 : -1;
    snprintf(c->msg, sizeof c->msg, "%s", err ? err->msg : "");
}

/* Run one change through ng_graph_mutate() (drained above `at`); with
 * c->bb set, a read is submitted right after the section began, so it
 * waits in the BB's queue. */
static void
run_change(struct fixture *f, struct change *c, const char *at)
{
    struct ng_error err = { 0 };

    CHECK(ng_graph_mutate(f->g, ng_graph_find(f->g, at), change_fn,
                          change_done, c, &err) == 0);
    if (c->bb != NULL)
        io_start(c->bb, c->queued_req, c->queued, NG_OP_READ, 0, 4096, 0,
                 c->queued_buf);
    /* The graph's drain timer does not keep the loop alive. */
    tick_start(f);
    while (!c->done)
        uv_run(&f->loop, UV_RUN_ONCE);
    tick_stop(f);
    ng_value_free(c->filter);
    c->filter = NULL;
}

/* The same, for cases that check results rather than the log. */
static void
run_quiet(struct fixture *f, struct change *c, const char *at)
{
    run_change(f, c, at);
    log_.n = 0;
}

static struct change
insert(const char *above, const char *name, const char *extra)
{
    char text[256];

    snprintf(text, sizeof text, "{driver: rec, node-name: %s%s%s}", name,
             extra ? ", " : "", extra ? extra : "");
    return (struct change){ .insert_above = above, .filter = yaml(text) };
}

/* ---- The order of calls -------------------------------------------------- */

/*   bb -> a -> b -> c -> leaf    (rec, rec, rec, rec-leaf)
 * then x spliced in between b and c, and taken out again. */
static void
test_order(void)
{
    struct fixture f;
    struct ng_bb *bb;
    struct ng_req req;
    struct io_result queued;
    char buf[4096];
    struct change c;

    setup_drivers(&f, "layers: order of open, refresh, drain, requests, "
                  "close", rec_drivers);
    add(&f, "a", yaml("{driver: rec, file: {driver: rec, node-name: b, "
                      "file: {driver: rec, node-name: c, file: {driver: "
                      "rec-leaf, node-name: leaf}}}}"));
    /* Inline children open first, each refreshed right after its open. */
    expect_log("open", (const char *const[]){
        "open leaf", "refresh leaf", "open c", "refresh c",
        "open b", "refresh b", "open a", "refresh a", NULL });
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "a"), true);
    CHECK(ng_bb_length(bb) == 1048576);
    CHECK(ng_bb_caps(bb) == NG_CAPS_LEAF_ALL);

    /* A request goes down and comes back up; no facts are computed on
     * the way (the request path only reads the cache). */
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, sizeof buf, NG_REQ_FUA, buf), 0);
    expect_log("requests", (const char *const[]){
        "submit a read", "submit b read", "submit c read",
        "submit leaf read",
        "complete c read", "complete b read", "complete a read",
        "submit a write", "submit b write", "submit c write",
        "submit leaf write",
        "complete c write", "complete b write", "complete a write",
        NULL });

    /* Splice x in above c: drain top-down, the new node opens and
     * refreshes, its parent b is refreshed (unchanged, so a is not),
     * drain ends bottom-up (x, made meanwhile, gets neither), then the
     * read that waited at the BB goes down through x. */
    c = insert("c", "x", NULL);
    c.bb = bb;
    c.queued = &queued;
    c.queued_req = &req;
    c.queued_buf = buf;
    run_change(&f, &c, "c");
    CHECK_RET(c.ret, 0);
    io_wait(&f, &queued);
    CHECK_RET(queued.ret, 0);
    expect_log("insert", (const char *const[]){
        "drain_begin a", "drain_begin b", "drain_begin c",
        "drain_begin leaf",
        "open x", "refresh x", "refresh b",
        "drain_end leaf", "drain_end c", "drain_end b", "drain_end a",
        "submit a read", "submit b read", "submit x read", "submit c read",
        "submit leaf read",
        "complete c read", "complete x read", "complete b read",
        "complete a read", NULL });

    /* Take x out: x is drained with the rest; destroyed in the section,
     * it is closed and gets no drain_end. */
    c = (struct change){ .remove = "x" };
    run_change(&f, &c, "x");
    CHECK_RET(c.ret, 0);
    expect_log("remove", (const char *const[]){
        "drain_begin a", "drain_begin b", "drain_begin x", "drain_begin c",
        "drain_begin leaf",
        "refresh b", "close x",
        "drain_end leaf", "drain_end c", "drain_end b", "drain_end a",
        NULL });

    /* A size change far down reaches every layer above it, bottom up. */
    c = insert("leaf", "grow", "size: 2097152");
    run_change(&f, &c, "leaf");
    CHECK_RET(c.ret, 0);
    CHECK(ng_bb_length(bb) == 2097152);
    expect_log("growing insert", (const char *const[]){
        "drain_begin a", "drain_begin b", "drain_begin c",
        "drain_begin leaf",
        "open grow", "refresh grow", "refresh c", "refresh b", "refresh a",
        "drain_end leaf", "drain_end c", "drain_end b", "drain_end a",
        NULL });

    ng_bb_free(bb);
    teardown(&f);
    expect_log("close", (const char *const[]){
        "close a", "close b", "close c", "close grow", "close leaf", NULL });
}

/* ---- Promises ----------------------------------------------------------- */

/* The edges of the graph as text, to compare before and after. */
static void
graph_text(struct ng_graph *g, char *out, size_t size)
{
    size_t len = 0;

    out[0] = '\0';
    for (struct ng_node *n = g->nodes; n != NULL; n = n->next) {
        len += (size_t)snprintf(out + len, size - len, "%s:", n->name);
        for (struct ng_edge *e = n->parents; e != NULL; e = e->next_parent)
            len += (size_t)snprintf(out + len, size - len, " %s",
                                    e->parent ? e->parent->name
                                              : e->bb->name);
        len += (size_t)snprintf(out + len, size - len, ";");
        CHECK(len < size);
    }
}

static void
expect_refused(struct fixture *f, struct change *c, const char *at,
               const char *want)
{
    char before[512], after[512];

    graph_text(f->g, before, sizeof before);
    run_quiet(f, c, at);
    CHECK_RET(c->ret, -1);
    if (strcmp(c->msg, want) != 0)
        fail("refused with '%s', expected '%s'", c->msg, want);
    graph_text(f->g, after, sizeof after);
    if (strcmp(before, after) != 0)
        fail("a refused change changed the graph:\n%s\nwas\n%s", after,
             before);
}

/*   p -> leaf (1 MiB)   and   q -> emu -> plain (no FUA; emu adds it)
 * both BBs told FUA; leaf also has a node parent, so the order of its
 * parents must survive a refusal. */
static void
test_promises(void)
{
    struct fixture f;
    struct ng_bb *p, *q;
    struct change c;
    uint32_t no_fua = NG_CAPS_LEAF_ALL & ~NG_CAP_FUA;
    char text[128];

    setup_drivers(&f, "layers: splices keep what clients were told",
                  rec_drivers);
    add(&f, "leaf", yaml("{driver: rec-leaf}"));
    add(&f, "user", yaml("{driver: rec, file: leaf}"));
    p = bb_new(&f, "p", ng_graph_find(f.g, "leaf"), true);
    snprintf(text, sizeof text, "{driver: rec-leaf, caps: %u}", no_fua);
    add(&f, "plain", yaml(text));
    snprintf(text, sizeof text, "{driver: rec, file: plain, caps: %u}",
             NG_CAPS_LEAF_ALL);
    add(&f, "emu", yaml(text));
    q = bb_new(&f, "q", ng_graph_find(f.g, "emu"), true);
    log_.n = 0;
    ng_bb_promise(p, 1048576, NG_CAP_WRITE | NG_CAP_FUA);
    ng_bb_promise(q, 1048576, NG_CAP_FUA);

    c = insert("leaf", "small", "size: 524288");
    expect_refused(&f, &c, "leaf", "export 'p' has 1 client(s) that were "
                   "told its size is 1048576 bytes; the new graph would "
                   "make it 524288");
    snprintf(text, sizeof text, "caps: %u", no_fua);
    c = insert("leaf", "nofua", text);
    expect_refused(&f, &c, "leaf", "export 'p' has 1 client(s) that were "
                   "told FUA; the new graph would not offer it");
    c = (struct change){ .remove = "emu" };
    expect_refused(&f, &c, "emu", "export 'q' has 1 client(s) that were "
                   "told FUA; the new graph would not offer it");
    CHECK(ng_bb_root(q) == ng_graph_find(f.g, "emu"));
    CHECK(ng_bb_caps(q) & NG_CAP_FUA);

    /* Growing is fine, and so is shrinking back to what was told. */
    c = insert("leaf", "big", "size: 2097152");
    run_quiet(&f, &c, "leaf");
    CHECK_RET(c.ret, 0);
    c = (struct change){ .remove = "big" };
    run_quiet(&f, &c, "big");
    CHECK_RET(c.ret, 0);

    /* Forced, it goes; after that the same cap is not counted again. */
    c = (struct change){ .remove = "emu", .flags = NG_MUTATE_FORCE };
    run_quiet(&f, &c, "emu");
    CHECK_RET(c.ret, 0);
    CHECK(!(ng_bb_caps(q) & NG_CAP_FUA));
    c = insert("plain", "again", NULL);
    run_quiet(&f, &c, "plain");
    CHECK_RET(c.ret, 0);

    /* The client goes: nothing holds the size any more. */
    ng_bb_unpromise(p, NG_CAP_WRITE | NG_CAP_FUA);
    c = insert("leaf", "small", "size: 524288");
    run_quiet(&f, &c, "leaf");
    CHECK_RET(c.ret, 0);
    CHECK(ng_bb_length(p) == 524288);

    ng_bb_free(p);
    ng_bb_free(q);
    teardown(&f);
    log_.n = 0;
}

int
main(void)
{
    test_order();
    test_promises();
    return 0;
}
