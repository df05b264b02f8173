/* tests/test-snapshot.c: blockdev-snapshot under live clients.
 *
 * Two libnbd clients write (and now and then zero) 64 KiB blocks of a
 * pattern naming the block and a seed, keeping their own record.  While
 * they write, blockdev-snapshot puts overlay ov1 below the export's
 * implicit filters (throttle, detect-zeroes), which must stay above it.
 * Then the clients hold still (connected), the record is copied, ov2
 * goes on top of ov1, and the clients write on.  At the end the export
 * equals the record, a read-only export of ov1 equals the copy taken at
 * the second snapshot (the layer below did not change), and no client
 * ever reconnected, and another overlay sharing the base still sits on
 * it.  Also: bad
 * input refused with reasons, and a snapshot of a node a mirror job
 * holds refused naming the job. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK_SIZE       (32u << 20)
#define BLOCK           (64u << 10)
#define BLOCKS          (DISK_SIZE / BLOCK)
#define WORKERS         2

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  disk0: { driver: memory, size: 32M }\n"
    "  ov1: { driver: memory, size: 32M }\n"
    "  ov2: { driver: memory, size: 32M }\n"
    "  small: { driver: memory, size: 16M }\n"
    "  other: { driver: memory, size: 32M }\n"
    "  spare: { driver: memory, size: 32M }\n"
    "  spare2: { driver: memory, size: 32M }\n"
    "  backed: { driver: memory, size: 32M, backing: other }\n"
    "  nul: { driver: null-co, size: 32M }\n"
    "  used: { driver: memory, size: 32M }\n"
    "  shared: { driver: memory, size: 32M, backing: disk0 }\n"
    "exports:\n"
    "  vm1:\n"
    "    node: disk0\n"
    "    writable: true\n"
    "    throttle: { iops-total: 1000000 }\n"
    "    detect-zeroes: on\n"
    "  peek: { node: used }\n";

/* Each block's last seed; 0 = zeroes.  Block b belongs to worker
 * b % WORKERS. */
static unsigned seeds[BLOCKS];
static unsigned at_snapshot[BLOCKS];
static struct ng_test_blocks disk = { seeds, BLOCKS, BLOCK };

static void
snapshot(struct ng_test_qmp *q, const char *node, const char *overlay)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute",
                               "blockdev-snapshot", "arguments", "node",
                               node, "overlay", overlay));
}

static void
snapshot_fails(struct ng_test_qmp *q, const char *node, const char *overlay,
               const char *want)
{
    ng_test_qmp_fails(q, want, "{s:s,s:{s:s,s:s}}", "execute",
                      "blockdev-snapshot", "arguments", "node", node,
                      "overlay", overlay);
}

static void
bad_input(struct ng_test_qmp *q)
{
    snapshot_fails(q, "nope", "ov1", "node 'nope' not found");
    snapshot_fails(q, "disk0", "nope", "overlay node 'nope' not found");
    snapshot_fails(q, "disk0", "disk0", "cannot be its own overlay");
    snapshot_fails(q, "disk0", "backed", "overlay node 'backed' already "
                   "has a backing node ('other')");
    snapshot_fails(q, "disk0", "used", "overlay node 'used' is in use by "
                   "export 'peek'");
    snapshot_fails(q, "disk0", "small", "is smaller than node 'disk0'");
    snapshot_fails(q, "disk0", "nul", "node 'nul' (driver 'null-co') "
                   "cannot take a backing node");
    snapshot_fails(q, "vm1.throttle", "ov1", "node 'vm1.throttle' is an "
                   "implicit filter of export 'vm1'");
    /* A node that is another's backing is in use. */
    snapshot_fails(q, "backed", "other", "overlay node 'other' is in use "
                   "by node 'backed'");
}

/* A mirror of `other` holds it: a snapshot of it is refused naming the
 * job; once the job is cancelled the chain is as it was. */
static void
nac_refusal(struct ng_test_qmp *q)
{
    json_t *r;
    int i;

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:i}}",
                               "execute", "blockdev-mirror", "arguments",
                               "job-id", "m0", "device", "other", "target",
                               "spare", "sync", "full", "speed", 4096));
    ng_test_qmp_fails(q, "node 'other': command 'snapshot-x' requires "
                      "graph-mod, which job 'm0' does not allow",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute",
                      "blockdev-snapshot", "arguments", "node", "other",
                      "overlay", "spare2", "job-id", "snapshot-x");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-cancel",
                               "arguments", "id", "m0"));
    for (i = 0; i < 500; i++) {
        r = ng_test_qmp_ok(q, "{s:s}", "execute", "query-jobs");
        if (json_array_size(r) == 0) {
            json_decref(r);
            return;
        }
        json_decref(r);
        usleep(10000);
    }
    ng_test_fail("mirror m0 still there 5 s after job-cancel");
}

static void
check_chain(struct ng_test_qmp *q)
{
    json_t *nac;
    char *text;

    ng_test_qmp_expect_child(q, "vm1.throttle", "filtered",
                             "vm1.detect-zeroes");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "ov2");
    ng_test_qmp_expect_child(q, "ov2", "backing", "ov1");
    ng_test_qmp_expect_child(q, "ov1", "backing", "disk0");
    /* Another overlay of disk0 keeps it: it must not see ov1's data. */
    ng_test_qmp_expect_child(q, "shared", "backing", "disk0");
    nac = ng_test_qmp_ok(q, "{s:s}", "execute", "query-nac");
    text = json_dumps(nac, JSON_COMPACT);
    if (strstr(text, "{\"node-name\":\"ov2\",\"holders\":[{\"id\":\"vm1\"")
        == NULL)
        ng_test_fail("after the snapshots query-nac says %s", text);
    free(text);
    json_decref(nac);
}

/* ov2 has only blocks written after the second snapshot allocated. */
static void
check_top_layer(struct ng_test_daemon *d, struct ng_test_qmp *q)
{
    char uri[512];

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "block-export-add", "arguments", "type",
                               "nbd", "id", "old", "node-name", "ov1"));
    snprintf(uri, sizeof uri, "nbd+unix:///old?socket=%s", d->sock);
    ng_test_blocks_verify(&disk, uri, at_snapshot,
                          "ov1 after the second snapshot");
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct ng_test_writers *w;

    ng_test_timeout(60);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    bad_input(q);
    nac_refusal(q);
    ng_test_blocks_fill(&disk, d->uri, 0, BLOCKS / 2, 0x40000000u);
    w = ng_test_writers_start(&disk, d->uri, WORKERS, NULL);
    usleep(100000);
    snapshot(q, "disk0", "ov1");    /* under writes */
    usleep(200000);
    ng_test_writers_hold(w);
    memcpy(at_snapshot, seeds, sizeof seeds);
    snapshot(q, "ov1", "ov2");      /* clients connected, quiet */
    ng_test_writers_release(w);
    usleep(300000);
    ng_test_writers_stop(w);
    ng_test_blocks_verify(&disk, d->uri, seeds, "export vm1");
    check_chain(q);
    check_top_layer(d, q);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
