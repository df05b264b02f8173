/* tests/test-graph-limits.c: what the graph refuses because it could not
 * serve it, through QMP on the real daemon.
 *
 * Depth: a request holds NG_REQ_MAX_FRAMES (16) completion frames, one
 * for the export and one per node (two for copy-on-read, raw, ...).  The
 * export "deep" sits on a 15-node chain, 16 layers: it must work, and a
 * filter spliced in anywhere below it, or a node added on top, must be
 * refused without touching it.  On "shallow" (14 nodes) a nofilter still
 * fits, a copy-on-read does not.
 *
 * Memory size: blockdev-add of a memory node of 7E gives a clear error
 * (under ASan it used to abort in calloc), and a 1T one works at its end.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DEEP_NODES    15            /* m0 f1 .. f14 */
#define SHALLOW_NODES 14            /* s0 t1 .. t13 */
#define IO_SIZE       (64u << 10)

/* The config: two chains of nofilter nodes on memory disks. */
static char *
make_config(void)
{
    size_t size = 8192, used;
    char *text = malloc(size);
    unsigned i;

    if (text == NULL)
        ng_test_fail("out of memory");
    used = (size_t)snprintf(text, size,
                            "server:\n"
                            "  listen: [ \"unix:@SOCK@\" ]\n"
                            "  control: \"@CONTROL@\"\n"
                            "nodes:\n"
                            "  m0: { driver: memory, size: 4M }\n"
                            "  s0: { driver: memory, size: 4M }\n");
    for (i = 1; i < DEEP_NODES; i++)
        used += (size_t)snprintf(text + used, size - used,
                                 "  f%u: { driver: nofilter, file: %s%u }\n",
                                 i, i == 1 ? "m" : "f", i - 1);
    for (i = 1; i < SHALLOW_NODES; i++)
        used += (size_t)snprintf(text + used, size - used,
                                 "  t%u: { driver: nofilter, file: %s%u }\n",
                                 i, i == 1 ? "s" : "t", i - 1);
    snprintf(text + used, size - used,
             "exports:\n"
             "  deep: { node: f%u, writable: true }\n"
             "  shallow: { node: t%u, writable: true }\n",
             DEEP_NODES - 1, SHALLOW_NODES - 1);
    return text;
}

/* Write a pattern at `offset` through `nbd` and read it back. */
static void
check_io(struct nbd_handle *nbd, uint64_t offset, unsigned seed,
         const char *what)
{
    static char out[IO_SIZE], in[IO_SIZE];

    ng_test_fill_pattern(out, sizeof out, offset, seed);
    if (nbd_pwrite(nbd, out, sizeof out, offset, 0) == -1 ||
        nbd_pread(nbd, in, sizeof in, offset, 0) == -1) {
        fprintf(stderr, "test-graph-limits: I/O %s\n", what);
        ng_test_fail_nbd("pwrite/pread");
    }
    if (ng_test_check_pattern(in, sizeof in, offset, seed) != -1)
        ng_test_fail("%s: data read back differs", what);
}

static struct nbd_handle *
connect_export(const struct ng_test_daemon *d, const char *name)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, name) == -1 ||
        nbd_connect_unix(nbd, d->sock) == -1)
        ng_test_fail_nbd("connect");
    return nbd;
}

static void
insert_fails(struct ng_test_qmp *q, const char *node, const char *driver,
             const char *want)
{
    ng_test_qmp_fails(q, want, "{s:s,s:{s:s,s:{s:s,s:s}}}",
                      "execute", "blockdev-insert-filter", "arguments",
                      "node", node, "filter", "driver", driver,
                      "node-name", "x1");
}

static void
depth_limits(const struct ng_test_daemon *d, struct ng_test_qmp *q)
{
    struct nbd_handle *deep = connect_export(d, "deep");
    struct nbd_handle *again, *shallow;

    check_io(deep, 0, 1, "through 16 layers");
    insert_fails(q, "f14", "nofilter", "chain deep -> x1 -> f14 -> ... -> "
                 "f1 -> m0 is 17 layers deep; a request passes at most 16");
    insert_fails(q, "m0", "nofilter", "chain deep -> f14 -> f13 -> ... -> "
                 "x1 -> m0 is 17 layers deep");
    ng_test_qmp_fails(q, "node 'top': chain (export) -> top -> f14 -> ... "
                      "-> f1 -> m0 is 17 layers deep",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-add",
                      "arguments", "driver", "nofilter", "node-name", "top",
                      "file", "f14");
    /* Refused means untouched: the old connection and a new one work. */
    check_io(deep, IO_SIZE, 2, "on deep after the refusals");
    again = connect_export(d, "deep");
    check_io(again, 2 * IO_SIZE, 3, "on a new connection to deep");
    nbd_close(again);

    /* Two layers for copy-on-read do not fit on 15; one for nofilter
     * does, and then I/O goes through all 16. */
    shallow = connect_export(d, "shallow");
    insert_fails(q, "t13", "copy-on-read", "chain shallow -> x1 -> t13 -> "
                 "... -> t1 -> s0 is 17 layers deep; a request passes at "
                 "most 16 (one for the export, one per node, two per "
                 "copy-on-read node)");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:{s:s,s:s}}}",
                               "execute", "blockdev-insert-filter",
                               "arguments", "node", "t13", "filter",
                               "driver", "nofilter", "node-name", "x1"));
    check_io(shallow, 0, 4, "through a filter spliced in at 16 layers");
    nbd_close(shallow);
    check_io(deep, 3 * IO_SIZE, 5, "on deep at the end");
    nbd_close(deep);
}

static void
memory_sizes(const struct ng_test_daemon *d, struct ng_test_qmp *q)
{
    const uint64_t tib = (uint64_t)1 << 40;
    struct nbd_handle *big;

    ng_test_qmp_fails(q, "node 'huge': size 8070450532247928832 is too "
                      "large for a memory disk (at most 16T)",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-add",
                      "arguments", "driver", "memory", "node-name", "huge",
                      "size", "7E");
    ng_test_qmp_fails(q, "too large for a memory disk",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-add",
                      "arguments", "driver", "memory", "node-name", "huge",
                      "size", "17T");
    /* The name is still free, and a big sparse disk works at its end. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "blockdev-add", "arguments", "driver",
                               "memory", "node-name", "huge", "size", "1T"));
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:b}}", "execute",
                               "block-export-add", "arguments", "type",
                               "nbd", "id", "huge", "node-name", "huge",
                               "writable", 1));
    big = connect_export(d, "huge");
    if (nbd_get_size(big) != (int64_t)tib)
        ng_test_fail("export huge is %" PRId64 " bytes, not 1 TiB",
                     nbd_get_size(big));
    check_io(big, tib - IO_SIZE, 6, "at the end of a 1 TiB memory disk");
    nbd_close(big);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    char *config = make_config();

    ng_test_timeout(120);
    d = ng_test_start(config, "deep");
    q = ng_test_qmp_connect(d->control);
    depth_limits(d, q);
    memory_sizes(d, q);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    free(config);
    printf("graph limit checks passed\n");
    return 0;
}
