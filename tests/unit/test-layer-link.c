/* tests/unit/test-layer-link.c: a layer links with only the layers below
 * it.  Built once per layer (graph/, filters/, config/ local.mk), each
 * time with every object of that layer and the ones below forced in
 * (--whole-archive) and nothing above.  A call from a lower layer up into
 * a higher one then fails to link, whether or not anything else would
 * have pulled the caller in: the check that static link order alone
 * cannot make.
 *
 * Run, it shows the layer works on its own: a graph from a registry of
 * graph/'s own leaves (or of every driver, above graph/), one write and
 * read through a BB.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "graph/graph.h"
#include "graph/value.h"

/* LAYER: the folder under test, "graph" unless the build says otherwise;
 * above graph/ the registry is every driver (filters/filters.c). */
#ifndef LAYER
#define LAYER "graph"
#endif
#ifdef LINK_ALL_DRIVERS
#include "filters/filters.h"
#define REGISTRY ng_all_drivers
#else
#include "graph/drivers.h"
static const struct ng_driver *const leaves_only[] = {
    &ng_driver_memory,
    &ng_driver_null_co,
    NULL,
};
#define REGISTRY leaves_only
#endif

static void
die(const char *what, const struct ng_error *err)
{
    fprintf(stderr, "test-layer-link (%s): %s%s%s\n", LAYER, what,
            err != NULL ? ": " : "", err != NULL ? err->msg : "");
    exit(1);
}

static struct ng_value *
memory_opts(void)
{
    struct ng_loc nowhere = { 0 };
    struct ng_value *m = ng_value_new_map(nowhere);

    if (m == NULL ||
        ng_value_map_put(m, "driver", nowhere,
                         ng_value_new_scalar("memory", nowhere)) == -1 ||
        ng_value_map_put(m, "size", nowhere,
                         ng_value_new_scalar("1M", nowhere)) == -1)
        die("out of memory", NULL);
    return m;
}

struct io {
    struct ng_req req;
    bool done;
    int ret;
};

static void
io_done(struct ng_req *req, int ret)
{
    struct io *io = req->opaque;

    io->done = true;
    io->ret = ret;
}

static void
io_run(uv_loop_t *loop, struct ng_bb *bb, enum ng_op op, void *buf,
       size_t len)
{
    struct io io = { .done = false };

    ng_req_init(&io.req, op, 4096, len, 0);
    ng_req_set_buf(&io.req, buf);
    io.req.done = io_done;
    io.req.opaque = &io;
    ng_bb_submit(bb, &io.req);
    while (!io.done)
        uv_run(loop, UV_RUN_ONCE);
    if (io.ret != 0)
        die(ng_op_name(op), NULL);
}

int
main(void)
{
    uv_loop_t loop;
    struct ng_error err = { 0 };
    struct ng_graph *g;
    struct ng_value *opts = memory_opts();
    struct ng_node *mem;
    struct ng_bb *bb;
    char out[512], in[512];

    alarm(30);
    if (uv_loop_init(&loop) != 0 ||
        (g = ng_graph_new(&loop, REGISTRY)) == NULL)
        die("making the graph", NULL);
    if ((mem = ng_graph_add_node_now(g, "mem", opts, &err)) == NULL)
        die("adding a memory node", &err);
    ng_value_free(opts);
    if ((bb = ng_bb_new(g, "bb", mem, true, &err)) == NULL)
        die("making a BB", &err);
    memset(out, 0x5a, sizeof out);
    io_run(&loop, bb, NG_OP_WRITE, out, sizeof out);
    io_run(&loop, bb, NG_OP_READ, in, sizeof in);
    if (memcmp(in, out, sizeof in) != 0)
        die("read back differs", NULL);
    ng_graph_free(g);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        die("a handle is left on the loop", NULL);
    printf("%s/ links and runs with only the layers below it\n", LAYER);
    return 0;
}
