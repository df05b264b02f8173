/* tests/fuzz/fuzz-qcow2.c: the qcow2 driver (graph/drv-qcow2.c) on
 * mutated images.  The input is the image file; it is opened writable on
 * a real file node and, when the open succeeds, read, written (new and
 * partial clusters, zeroes, trims), asked for block status and flushed
 * through a BlockBackend, then closed, which writes the metadata back.
 * A bad image must be refused or fail requests with an errno: never a
 * crash, a leak or a hang.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config/yaml.h"
#include "filters/filters.h"
#include "graph/graph.h"
#include "tests/fuzz/fuzz-util.h"

/* Bounds the metadata an input can make the driver load. */
#define FUZZ_QCOW2_MAX_INPUT (128 * 1024)

struct fuzz_wait {
    bool done;
    int ret;
    struct ng_node *node;
};

static void
added(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct fuzz_wait *w = opaque;

    (void)err;
    w->done = true;
    w->node = node;
}

static void
req_done(struct ng_req *req, int ret)
{
    struct fuzz_wait *w = req->opaque;

    w->done = true;
    w->ret = ret;
}

static void
run_until(uv_loop_t *loop, const bool *done)
{
    while (!*done)
        if (uv_run(loop, UV_RUN_ONCE) == 0 && !*done)
            fuzz_die("the loop ran dry before a callback");
}

static void
one_request(uv_loop_t *loop, struct ng_bb *bb, enum ng_op op, uint64_t off,
            uint64_t len, uint32_t flags, unsigned char *buf)
{
    struct ng_extent ext[8];
    struct fuzz_wait w = { 0 };
    struct ng_req req;
    int64_t size = ng_bb_length(bb);

    if (op != NG_OP_FLUSH && (size < 0 || off >= (uint64_t)size))
        return;
    if (op != NG_OP_FLUSH && len > (uint64_t)size - off)
        len = (uint64_t)size - off;
    ng_req_init(&req, op, off, len, flags);
    if (buf != NULL)
        ng_req_set_buf(&req, buf);
    req.extents = ext;
    req.max_extents = 8;
    req.done = req_done;
    req.opaque = &w;
    ng_bb_submit(bb, &req);
    run_until(loop, &w.done);
}

static void
exercise(uv_loop_t *loop, struct ng_bb *bb)
{
    static unsigned char buf[256 * 1024];

    memset(buf, 0xa5, sizeof buf);
    one_request(loop, bb, NG_OP_READ, 0, sizeof buf, 0, buf);
    one_request(loop, bb, NG_OP_BLOCK_STATUS, 0, 1 << 30, 0, NULL);
    one_request(loop, bb, NG_OP_BLOCK_STATUS, 0, 1 << 30,
                NG_REQ_LOCAL_ONLY, NULL);
    one_request(loop, bb, NG_OP_WRITE, 4096, 4096, 0, buf);
    one_request(loop, bb, NG_OP_WRITE, 70000, 140000, 0, buf);
    one_request(loop, bb, NG_OP_WRITE_ZEROES, 65536, 65536,
                NG_REQ_MAY_TRIM, NULL);
    one_request(loop, bb, NG_OP_WRITE_ZEROES, 1000, 3000, 0, NULL);
    one_request(loop, bb, NG_OP_TRIM, 0, 131072, 0, NULL);
    one_request(loop, bb, NG_OP_FLUSH, 0, 0, 0, NULL);
    one_request(loop, bb, NG_OP_READ, 0, sizeof buf, 0, buf);
}

/* What lives from the first input to exit: one loop and one graph (so
 * the file driver's worker threads, per driver in the graph, are made
 * once), and the image file, rewritten in place for each input.  Each
 * input adds its qcow2 node (with an inline file node under it) and
 * removes both again, so what an input allocates it frees: libFuzzer's
 * per-input leak check stays meaningful, and at exit the graph and loop
 * are torn down in full, so LSan sees whatever outlived its input. */
struct fixture {
    uv_loop_t loop;
    struct ng_graph *graph;
    char dir[256];
    char path[300];
    int fd;                     /* the image file, O_RDWR */
    struct ng_value *opts[2];   /* qcow2 over it: writable, read-only */
};

static struct fixture *the_fixture;

static struct ng_value *
image_opts(const char *path, bool ro)
{
    char text[512];
    struct ng_error err = { 0 };
    struct ng_value *opts;

    snprintf(text, sizeof text, "{driver: qcow2, node-name: q, read-only: "
             "%s, file: {driver: file, locking: off, read-only: %s, "
             "filename: \"%s\"}}", ro ? "true" : "false",
             ro ? "true" : "false", path);
    if ((opts = ng_yaml_parse(text, strlen(text), "fuzz", &err)) == NULL)
        fuzz_die("options: %s", err.msg);
    return opts;
}

static void
fixture_free(void)
{
    struct fixture *f = the_fixture;

    ng_graph_free(f->graph);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&f->loop) != 0)
        fuzz_die("a handle was left open");
    ng_value_free(f->opts[0]);
    ng_value_free(f->opts[1]);
    close(f->fd);
    free(f);
    the_fixture = NULL;
}

static struct fixture *
fixture_get(void)
{
    struct fixture *f = the_fixture;

    if (f != NULL)
        return f;
    if ((f = calloc(1, sizeof *f)) == NULL || uv_loop_init(&f->loop) != 0)
        fuzz_die("cannot create the loop");
    if ((f->graph = ng_graph_new(&f->loop, ng_all_drivers)) == NULL)
        fuzz_die("out of memory");
    fuzz_make_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/img.qcow2", f->dir);
    if ((f->fd = open(f->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
        fuzz_die("%s: %s", f->path, strerror(errno));
    f->opts[0] = image_opts(f->path, false);
    f->opts[1] = image_opts(f->path, true);
    the_fixture = f;
    atexit(fixture_free);       /* before the temp dir's removal runs */
    return f;
}

/* The input, as the whole file. */
static void
write_image(struct fixture *f, const uint8_t *data, size_t size)
{
    if (ftruncate(f->fd, 0) == -1 ||
        (size > 0 && pwrite(f->fd, data, size, 0) != (ssize_t)size))
        fuzz_die("cannot write %s: %s", f->path, strerror(errno));
}

static void
removed(void *opaque)
{
    *(bool *)opaque = true;
}

/* Open the image (read-only or not) and exercise it, then remove it;
 * false when the open failed. */
static bool
try_open(struct fixture *f, bool ro)
{
    struct ng_error err = { 0 };
    struct fuzz_wait w = { 0 };
    struct ng_bb *bb;
    bool gone = false;

    /* An image refused at once (a backing file not found) is -1. */
    if (ng_graph_add_node(f->graph, NULL, f->opts[ro], added, &w,
                          &err) == -1)
        return false;
    run_until(&f->loop, &w.done);
    if (w.node == NULL)
        return false;
    if ((bb = ng_bb_new(f->graph, "fuzz", w.node, !ro, &err)) != NULL) {
        exercise(&f->loop, bb);
        ng_bb_free(bb);
    }
    if (ng_graph_del_node(f->graph, "q", removed, &gone, &err) == -1)
        fuzz_die("cannot remove the image: %s", err.msg);
    run_until(&f->loop, &gone);
    /* What the removal left to the loop (handles closing): so the input
     * frees all it allocated before it returns. */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* Backing nodes the image opened went with it: the next input finds
     * the graph as the first one did. */
    if (f->graph->nodes != NULL || f->graph->bbs != NULL)
        fuzz_die("the image's removal left nodes in the graph");
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture *f;

    if (size > FUZZ_QCOW2_MAX_INPUT)
        return 0;
    f = fixture_get();
    write_image(f, data, size);
    /* Writable first; what only opens read-only (dirty, corrupt,
     * extended L2) is read then. */
    for (int ro = 0; ro < 2 && !try_open(f, ro != 0); ro++)
        ;
    return 0;
}
