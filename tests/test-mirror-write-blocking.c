/* tests/test-mirror-write-blocking.c: blockdev-mirror copy-mode
 * write-blocking converges while clients write faster than the job's
 * background copy; a background mirror in the same setup does not.
 *
 * Two libnbd clients write 4 KiB blocks (1 in 8 write-zeroes) at random
 * places of an 8 MiB memory export as fast as they can, keeping a record
 * of each block's last seed; every job runs at speed 2 MiB/s, so a full
 * pass of the background copy takes 4 s.
 *   1. A background mirror is still not ready after 8 s (and the clients
 *      wrote faster than the copy meanwhile); it is cancelled.
 *   2. The same with copy-mode write-blocking and a filter-node-name:
 *      the filter shows in query-named-block-nodes (driver mirror_top)
 *      while the job runs, the job reaches ready, job-complete pivots
 *      with the clients still writing, the filter is gone afterwards, and
 *      the export (now on the target) equals the clients' record.
 * Also: a filter-node-name that names an existing node, an unknown
 * copy-mode, and write-blocking without a free default name are refused
 * with the reason. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK_SIZE       (8u << 20)
#define BLOCK           4096u
#define BLOCKS          (DISK_SIZE / BLOCK)
#define WORKERS         2
#define SPEED           (2u << 20)
#define BACKGROUND_S    8           /* two full passes' time */

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  src: { driver: memory, size: 8M }\n"
    "exports:\n"
    "  vm1: { node: src, writable: true }\n";

/* Each block's last seed; 0 = zeroes (see struct ng_test_blocks). */
static unsigned seeds[BLOCKS];
static struct ng_test_blocks disk = { seeds, BLOCKS, BLOCK };

/* The driver of node `name` in query-named-block-nodes, or NULL. */
static char *
node_driver(struct ng_test_qmp *q, const char *name)
{
    json_t *nodes = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-named-block-nodes");
    json_t *n;
    char *drv = NULL;
    size_t i;

    json_array_foreach(nodes, i, n)
        if (strcmp(json_string_value(json_object_get(n, "node-name")),
                   name) == 0)
            drv = strdup(json_string_value(json_object_get(n, "drv")));
    json_decref(nodes);
    return drv;
}

static void
mirror(struct ng_test_qmp *q, const char *id, const char *mode,
       const char *filter)
{
    json_t *args = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s}", "job-id", id,
                             "device", "src", "target", "dst", "sync", "full",
                             "speed", SPEED, "copy-mode", mode);

    if (filter != NULL)
        json_object_set_new(args, "filter-node-name", json_string(filter));
    json_decref(ng_test_qmp_ok(q, "{s:s,s:o}", "execute", "blockdev-mirror",
                               "arguments", args));
}

static void
refusals(struct ng_test_qmp *q)
{
    ng_test_qmp_fails(q, "filter-node-name 'src': node 'src' already exists",
                      "{s:s,s:{s:s,s:s,s:s,s:s,s:s}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "x",
                      "device", "src", "target", "dst", "sync", "full",
                      "filter-node-name", "src");
    ng_test_qmp_fails(q, "'copy-mode' must be 'background' or "
                      "'write-blocking', not 'sideways'",
                      "{s:s,s:{s:s,s:s,s:s,s:s,s:s}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "x",
                      "device", "src", "target", "dst", "sync", "full",
                      "copy-mode", "sideways");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:i}}", "execute",
                               "blockdev-add", "arguments", "driver",
                               "memory", "node-name", "mirror-top-x",
                               "size", 4096));
    ng_test_qmp_fails(q, "filter-node-name 'mirror-top-x': node "
                      "'mirror-top-x' already exists",
                      "{s:s,s:{s:s,s:s,s:s,s:s,s:s}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "x",
                      "device", "src", "target", "dst", "sync", "full",
                      "copy-mode", "write-blocking");
    if (node_driver(q, "x") != NULL)
        ng_test_fail("a refused mirror left a node behind");
}

/* Background copy: the clients outrun it.  It must still be running
 * (not ready) after BACKGROUND_S s, during which the clients wrote more
 * than the copy could. */
static void
background_does_not_converge(struct ng_test_qmp *q, struct ng_test_writers *w)
{
    unsigned long ops0, ops1;
    char got[32];
    double rate;

    mirror(q, "bg", "background", NULL);
    ops0 = ng_test_writers_ops(w);
    sleep(BACKGROUND_S);
    ops1 = ng_test_writers_ops(w);
    rate = (double)(ops1 - ops0) * BLOCK / BACKGROUND_S;
    printf("background: clients wrote %.1f MiB/s, copy at %.1f MiB/s, "
           "job '%s'\n", rate / (1 << 20), (double)SPEED / (1 << 20),
           ng_test_qmp_job_status(q, "bg", got, sizeof got, NULL));
    if (rate < SPEED)
        ng_test_fail("the clients wrote slower than the copy: this shows "
                     "nothing");
    if (strcmp(got, "running") != 0)
        ng_test_fail("background mirror is '%s' after %d s of clients "
                     "outrunning it", got, BACKGROUND_S);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-cancel",
                               "arguments", "id", "bg"));
    ng_test_qmp_wait_job(q, "bg", "gone", 30, NULL);
}

static void
write_blocking_converges(struct ng_test_qmp *q, struct ng_test_writers *w)
{
    struct timespec t0, t1;
    unsigned long ops0;
    char *drv;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    ops0 = ng_test_writers_ops(w);
    mirror(q, "wb", "write-blocking", "wbf");
    drv = node_driver(q, "wbf");
    if (drv == NULL || strcmp(drv, "mirror_top") != 0)
        ng_test_fail("filter node 'wbf' is %s while the job runs",
                     drv ? drv : "missing");
    free(drv);
    ng_test_qmp_wait_job(q, "wb", "ready", 40, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("write-blocking: ready after %.1f s, clients wrote %lu blocks "
           "meanwhile\n", (double)(t1.tv_sec - t0.tv_sec) +
           (t1.tv_nsec - t0.tv_nsec) / 1e9, ng_test_writers_ops(w) - ops0);
    usleep(300000);                 /* stays in sync while clients write */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-complete",
                               "arguments", "id", "wb"));
    ng_test_qmp_wait_job(q, "wb", "gone", 30, NULL);
    if ((drv = node_driver(q, "wbf")) != NULL)
        ng_test_fail("filter node 'wbf' (%s) is still there after the job",
                     drv);
}

static void
check_on_target(struct ng_test_qmp *q)
{
    json_t *r = ng_test_qmp_ok(q, "{s:s}", "execute", "query-block-exports");
    char *text = json_dumps(r, JSON_COMPACT);

    if (strstr(text, "\"node-name\":\"dst\"") == NULL)
        ng_test_fail("after the pivot the export is %s", text);
    free(text);
    json_decref(r);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct ng_test_writers *w;

    ng_test_timeout(120);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:i}}", "execute",
                               "blockdev-add", "arguments", "driver",
                               "memory", "node-name", "dst",
                               "size", DISK_SIZE));
    refusals(q);
    w = ng_test_writers_start(&disk, d->uri, WORKERS, NULL);
    background_does_not_converge(q, w);
    write_blocking_converges(q, w);
    usleep(300000);                 /* the clients go on, on the target */
    ng_test_writers_stop(w);
    ng_test_blocks_verify(&disk, d->uri, seeds, "export (on the target)");
    check_on_target(q);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
