/* tests/fuzz/nbd-fixture.c: see nbd-fixture.h. */
#include <config.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config/config.h"
#include "filters/filters.h"
#include "graph/graph.h"
#include "server/log.h"
#include "server/nbd.h"
#include "tests/fuzz/fuzz-util.h"
#include "tests/fuzz/nbd-fixture.h"

const char *const fuzz_nbd_export_names[FUZZ_NBD_EXPORTS] = {
    "disk", "ro", "img", "faulty", "zero",
};

/* Nodes and exports; %1$s is the temp dir. */
static const char fixture_config[] =
    "server:\n"
    "  listen: [ 'unix:%1$s/nbd.sock' ]\n"
    "nodes:\n"
    "  disk: { driver: memory, size: 1M }\n"
    "  ro: { driver: null-co, size: 1M, read-only: true }\n"
    "  img: { driver: file, filename: '%1$s/disk.img' }\n"
    "  faulty:\n"
    "    driver: blkdebug\n"
    "    image: { driver: memory, size: 1M }\n"
    "    inject-error:\n"
    "      - { iotype: read, offset: 64K, length: 4K, errno: EIO }\n"
    "      - { iotype: write, offset: 128K, length: 4K, errno: ENOSPC }\n"
    "      - { iotype: block-status, errno: EINVAL }\n"
    "  zero:\n"
    "    driver: detect-zeroes\n"
    "    mode: unmap\n"
    "    file: { driver: memory, size: 1M }\n"
    "exports:\n"
    "  disk: { node: disk, writable: true, description: 'a memory disk' }\n"
    "  ro: { node: ro }\n"
    "  img: { node: img, writable: true }\n"
    "  faulty: { node: faulty, writable: true }\n"
    "  zero: { node: zero, writable: true }\n";

/* The harness's daemon: libFuzzer's entry point has no context, so it
 * lives here, made on first use and kept for the process. */
struct fixture {
    uv_loop_t loop;
    struct ng_graph *graph;
    struct ng_nbd_server *srv;
    struct ng_config *cfg;
    char dir[256];
    char sock[300];
};

static struct fixture *the_fixture;

static void
make_image(const char *dir)
{
    char path[300];
    int fd;

    snprintf(path, sizeof path, "%s/disk.img", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1 || ftruncate(fd, 1 << 20) == -1)
        fuzz_die("cannot make %s", path);
    close(fd);
}

struct node_wait {
    bool done;
    bool ok;
};

static void
node_added(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct node_wait *w = opaque;

    w->done = true;
    w->ok = node != NULL;
    if (err != NULL)
        fprintf(stderr, "fuzz harness: %s\n", err->msg);
}

static bool
node_wait_done(void *opaque)
{
    return ((struct node_wait *)opaque)->done;
}

/* Opens may finish on a worker thread (the file driver's): wait. */
static void
add_node(struct fixture *f, const struct ng_node_cfg *nc)
{
    struct ng_error err = { 0 };
    struct node_wait w = { false, false };

    if (ng_graph_add_node(f->graph, nc->name, nc->opts, node_added, &w,
                          &err) == -1)
        fuzz_die("node '%s': %s", nc->name, err.msg);
    fuzz_run_until(&f->loop, node_wait_done, &w, "opening a node");
    if (!w.ok)
        fuzz_die("node '%s' did not open", nc->name);
}

static void
fixture_build(struct fixture *f)
{
    struct ng_error err = { 0 };
    char text[sizeof fixture_config + 1024];

    snprintf(text, sizeof text, fixture_config, f->dir);
    f->cfg = ng_config_load_string(text, "nbd fixture", &err);
    if (f->cfg == NULL)
        fuzz_die("fixture config: %s", err.msg);
    f->graph = ng_graph_new(&f->loop, ng_all_drivers);
    if (f->graph == NULL)
        fuzz_die("out of memory");
    for (size_t i = 0; i < f->cfg->n_nodes; i++)
        add_node(f, &f->cfg->nodes[i]);
    f->srv = ng_nbd_server_new(&f->loop, f->graph, &err);
    if (f->srv == NULL)
        fuzz_die("nbd server: %s", err.msg);
    for (size_t i = 0; i < f->cfg->n_exports; i++) {
        const struct ng_export_cfg *e = &f->cfg->exports[i];

        if (ng_nbd_server_add_export(f->srv, e->name, e->description,
                                     ng_graph_find(f->graph, e->node),
                                     e->writable, e->max_connections,
                                     &err) == -1)
            fuzz_die("export '%s': %s", e->name, err.msg);
    }
    if (ng_nbd_server_listen(f->srv, f->cfg->listen[0].text, &err) == -1)
        fuzz_die("listen: %s", err.msg);
    snprintf(f->sock, sizeof f->sock, "%s", f->cfg->listen[0].path);
}

static struct fixture *
fixture_get(void)
{
    struct fixture *f = the_fixture;

    if (f != NULL)
        return f;
    f = calloc(1, sizeof *f);
    if (f == NULL || uv_loop_init(&f->loop) != 0)
        fuzz_die("cannot create the loop");
    /* The server logs every client it drops; a fuzzer drops millions. */
    ng_log_set_level(NG_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    fuzz_make_tmpdir(f->dir, sizeof f->dir);
    make_image(f->dir);
    fixture_build(f);
    the_fixture = f;
    return f;
}

/* The session's connection is freed (it was accepted: the client saw
 * the greeting).  One the server never frees fails the run. */
static bool
connections_gone(void *opaque)
{
    const struct fixture *f = opaque;

    return ng_nbd_server_connections(f->srv) == 0;
}

void
fuzz_nbd_session(const struct fuzz_session *s)
{
    struct fixture *f = fixture_get();

    fuzz_unix_session(&f->loop, f->sock, s);
    fuzz_run_until(&f->loop, connections_gone, f, "freeing the connection");
}

bool
fuzz_nbd_in_transmission(void *opaque)
{
    const struct ng_nbd_export *e =
        ng_nbd_server_find_export(fixture_get()->srv, opaque);

    return e != NULL && ng_nbd_export_connections(e) > 0;
}
