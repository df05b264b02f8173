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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Open the image (read-only or not) and exercise it; false when the
 * open failed. */
static bool
try_open(const char *path, bool ro)
{
    char text[512];
    struct ng_error err = { 0 };
    struct fuzz_wait w = { 0 };
    struct ng_value *opts;
    struct ng_graph *g;
    struct ng_bb *bb;
    uv_loop_t loop;

    snprintf(text, sizeof text, "{driver: qcow2, node-name: q, read-only: "
             "%s, file: {driver: file, locking: off, read-only: %s, "
             "filename: \"%s\"}}", ro ? "true" : "false",
             ro ? "true" : "false", path);
    if ((opts = ng_yaml_parse(text, strlen(text), "fuzz", &err)) == NULL)
        fuzz_die("options: %s", err.msg);
    uv_loop_init(&loop);
    g = ng_graph_new(&loop, ng_all_drivers);
    if (g == NULL)
        fuzz_die("out of memory");
    if (ng_graph_add_node(g, NULL, opts, added, &w, &err) == 0) {
        run_until(&loop, &w.done);
        if (w.node != NULL &&
            (bb = ng_bb_new(g, "fuzz", w.node, !ro, &err)) != NULL) {
            exercise(&loop, bb);
            ng_bb_free(bb);
        }
    }
    ng_value_free(opts);
    ng_graph_free(g);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        fuzz_die("a handle was left open");
    return w.node != NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[256];
    char path[300];
    FILE *fp;

    if (size > FUZZ_QCOW2_MAX_INPUT)
        return 0;
    if (dir[0] == '\0')
        fuzz_make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/img.qcow2", dir);
    if ((fp = fopen(path, "wb")) == NULL ||
        fwrite(data, 1, size, fp) != size || fclose(fp) != 0)
        fuzz_die("cannot write %s", path);
    /* Writable first; what only opens read-only (dirty, corrupt,
     * extended L2) is read then. */
    for (int ro = 0; ro < 2 && !try_open(path, ro != 0); ro++)
        ;
    return 0;
}
