/* tests/test-mirror.c: mirror a 256 MiB export to a file while clients
 * write, complete, and go on writing without reconnecting.
 *
 * Four libnbd clients write (and now and then zero) 64 KiB blocks of a
 * pattern that names the block and a seed, keeping their own record of
 * each block's last seed.  blockdev-mirror copies the export's node to a
 * file node; once ready, job-complete pivots the export (and its implicit
 * detect-zeroes filter, which stays above) onto the file.  The clients
 * carry on; at the end the export and the file itself both equal the
 * clients' record byte for byte.  Also: while the job runs the
 * conflicting commands are refused with the NAC sentence naming it, the
 * job's events come in QEMU's order, and afterwards the export's claim
 * sits on the new node. */
#include <config.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK_SIZE       (256u << 20)
#define BLOCK           (64u << 10)
#define BLOCKS          (DISK_SIZE / BLOCK)
#define WORKERS         4

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  src: { driver: memory, size: 256M }\n"
    "exports:\n"
    "  vm1: { node: src, writable: true, detect-zeroes: on }\n";

/* Each block's last seed; 0 = zeroes.  Block b belongs to worker
 * b % WORKERS, so only its owner writes the entry. */
static unsigned seeds[BLOCKS];
static struct ng_test_blocks disk = { seeds, BLOCKS, BLOCK };

static void
refusals_while_running(struct ng_test_qmp *q)
{
    ng_test_qmp_fails(q, "node 'src': job 'm9' requires graph-mod, which "
                      "job 'm0' does not allow",
                      "{s:s,s:{s:s,s:s,s:s,s:s,s:b}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "m9",
                      "device", "src", "target", "spare", "sync", "full",
                      "dry-run", 1);
    ng_test_qmp_fails(q, "job 'm0'", "{s:s,s:{s:s}}", "execute",
                      "blockdev-del", "arguments", "node-name", "dst");
    ng_test_qmp_fails(q, "node 'dst': export 'peek' requires read-data, "
                      "which job 'm0' does not allow",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "block-export-add",
                      "arguments", "type", "nbd", "id", "peek",
                      "node-name", "dst");
    ng_test_qmp_fails(q, "cannot accept command verb 'finalize'",
                      "{s:s,s:{s:s}}", "execute", "job-finalize",
                      "arguments", "id", "m0");
}

/* The statuses JOB_STATUS_CHANGE gave for m0 come in QEMU's order, and
 * BLOCK_JOB_READY and _COMPLETED (without an error) came. */
static void
check_events(struct ng_test_qmp *ev)
{
    char statuses[512] = "";
    bool ready = false, completed = false;
    json_t *e;

    /* Up to the last status: a wait past the final event would block on
     * the line end that follows it (the client reads unbuffered). */
    while (strstr(statuses, "null,") == NULL &&
           (e = ng_test_qmp_next_event(ev, 5000)) != NULL) {
        const char *name = json_string_value(json_object_get(e, "event"));
        json_t *data = json_object_get(e, "data");

        if (strcmp(name, "JOB_STATUS_CHANGE") == 0) {
            strcat(statuses, json_string_value(json_object_get(data,
                                                               "status")));
            strcat(statuses, ",");
        }
        ready |= strcmp(name, "BLOCK_JOB_READY") == 0;
        completed |= strcmp(name, "BLOCK_JOB_COMPLETED") == 0 &&
                     json_object_get(data, "error") == NULL;
        json_decref(e);
    }
    if (strcmp(statuses, "created,running,ready,waiting,pending,concluded,"
               "null,") != 0)
        ng_test_fail("job statuses were %s", statuses);
    if (!ready || !completed)
        ng_test_fail("BLOCK_JOB_READY %d, BLOCK_JOB_COMPLETED %d", ready,
                     completed);
}

/* The export and the file both hold what the clients last wrote. */
static void
verify(const char *uri, const char *path)
{
    char *want = malloc(BLOCK), *got = malloc(BLOCK);
    int fd = open(path, O_RDONLY);

    ng_test_blocks_verify(&disk, uri, seeds, "export");
    if (want == NULL || got == NULL || fd == -1)
        ng_test_fail("open %s", path);
    for (unsigned b = 0; b < BLOCKS; b++) {
        ng_test_block_expected(&disk, seeds, b, want);
        if (pread(fd, got, BLOCK, (off_t)b * BLOCK) != BLOCK)
            ng_test_fail("short read of %s", path);
        if (memcmp(got, want, BLOCK) != 0)
            ng_test_fail("target file block %u differs from the record", b);
    }
    close(fd);
    free(want);
    free(got);
}

static void
check_graph_after(struct ng_test_qmp *q)
{
    json_t *nodes = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-named-block-nodes");
    json_t *n, *nac;
    const char *child = NULL;
    size_t i;
    char *text;

    json_array_foreach(nodes, i, n)
        if (strcmp(json_string_value(json_object_get(n, "node-name")),
                   "vm1.detect-zeroes") == 0)
            child = json_string_value(json_object_get(json_array_get(
                json_object_get(n, "children"), 0), "node-name"));
    if (child == NULL || strcmp(child, "dst") != 0)
        ng_test_fail("vm1.detect-zeroes sits on '%s', not 'dst'",
                     child ? child : "(nothing)");
    json_decref(nodes);
    nac = ng_test_qmp_ok(q, "{s:s}", "execute", "query-nac");
    text = json_dumps(nac, JSON_COMPACT);
    if (strstr(text, "\"m0\"") != NULL ||
        strstr(text, "{\"node-name\":\"dst\",\"holders\":[{\"id\":\"vm1\"")
        == NULL)
        ng_test_fail("after the pivot query-nac says %s", text);
    free(text);
    json_decref(nac);
}

static void
run_mirror(struct ng_test_daemon *d, struct ng_test_qmp *q)
{
    json_t *r;

    r = ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                       "blockdev-mirror", "arguments", "job-id", "m0",
                       "device", "src", "target", "dst", "sync", "full");
    json_decref(r);
    refusals_while_running(q);
    printf("mirror started, conflicts refused\n");
    fflush(stdout);
    ng_test_qmp_wait_job(q, "m0", "ready", 20, NULL);
    printf("mirror ready\n");
    fflush(stdout);
    usleep(200000);                 /* in sync while clients write */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-complete",
                               "arguments", "id", "m0"));
    ng_test_qmp_wait_job(q, "m0", "gone", 20, NULL);
    (void)d;
}

static void
add_target(struct ng_test_daemon *d, struct ng_test_qmp *q, char *path,
           size_t size, const char *name)
{
    int fd;

    snprintf(path, size, "%s/%s.raw", d->dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || ftruncate(fd, DISK_SIZE) == -1)
        ng_test_fail("create %s", path);
    close(fd);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "blockdev-add", "arguments", "driver", "file",
                               "node-name", name, "filename", path));
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q, *ev;
    struct ng_test_writers *w;
    char path[512], spare[512];

    ng_test_timeout(60);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    ev = ng_test_qmp_connect(d->control);
    add_target(d, q, path, sizeof path, "dst");
    add_target(d, q, spare, sizeof spare, "spare");
    /* Half the disk holds data before the mirror starts. */
    ng_test_blocks_fill(&disk, d->uri, 0, BLOCKS / 2, 0x40000000u);
    w = ng_test_writers_start(&disk, d->uri, WORKERS, NULL);
    usleep(100000);
    run_mirror(d, q);
    usleep(300000);                 /* the clients go on, on the target */
    ng_test_writers_stop(w);
    verify(d->uri, path);
    check_graph_after(q);
    check_events(ev);
    ng_test_qmp_close(ev);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
