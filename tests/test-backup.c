/* tests/test-backup.c: blockdev-backup through the running daemon.
 *
 * - full, rate-limited, while a client overwrites and zeroes blocks: the
 *   target file ends as the source was when the job started, the export
 *   as the client left it; the copy-before-write filter sits above the
 *   source while the job runs and is gone after; a mirror of the source
 *   or taking the filter out meanwhile is refused naming the backup;
 * - incremental: a bitmap, ten written granules, a backup with that
 *   bitmap copies exactly those ten (its total-progress) and they equal
 *   the source; the bitmap then holds only what was written since;
 * - none: only what a client overwrites is saved, the old data. */
#include <config.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK    (64u << 20)
#define BLOCK   (64u << 10)
#define BLOCKS  (DISK / BLOCK)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  src: { driver: memory, size: 64M }\n"
    "  spare: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  vm1: { node: src, writable: true }\n";

static struct ng_test_qmp *q;
static struct ng_test_daemon *d;
static unsigned seeds[BLOCKS];          /* the export's, 0 = zeroes */

static void
expected(unsigned seed, unsigned b, char *buf)
{
    if (seed == 0)
        memset(buf, 0, BLOCK);
    else
        ng_test_fill_pattern(buf, BLOCK, (uint64_t)b * BLOCK, seed);
}

static void
write_block(struct nbd_handle *nbd, unsigned b, unsigned seed)
{
    static char buf[BLOCK];

    if (seed == 0) {
        if (nbd_zero(nbd, BLOCK, (uint64_t)b * BLOCK, 0) == -1)
            ng_test_fail_nbd("zero");
    } else {
        expected(seed, b, buf);
        if (nbd_pwrite(nbd, buf, BLOCK, (uint64_t)b * BLOCK, 0) == -1)
            ng_test_fail_nbd("pwrite");
    }
    seeds[b] = seed;
}

/* A zeroed file node `name` of the disk's size. */
static void
add_target(const char *name, char *path, size_t size)
{
    int fd;

    snprintf(path, size, "%s/%s.raw", d->dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || ftruncate(fd, DISK) == -1)
        ng_test_fail("create %s", path);
    close(fd);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "blockdev-add", "arguments", "driver", "file",
                               "node-name", name, "filename", path));
}

/* Is there a node called `name`? */
static bool
has_node(const char *name)
{
    json_t *nodes = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-named-block-nodes");
    json_t *n;
    size_t i;
    bool found = false;

    json_array_foreach(nodes, i, n)
        found |= strcmp(json_string_value(json_object_get(n, "node-name")),
                        name) == 0;
    json_decref(nodes);
    return found;
}

/* Block b of the file holds pattern `seed` (0: zeroes). */
static void
check_file_block(int fd, unsigned b, unsigned seed, const char *what)
{
    static char want[BLOCK], got[BLOCK];

    expected(seed, b, want);
    if (pread(fd, got, BLOCK, (off_t)b * BLOCK) != BLOCK)
        ng_test_fail("%s: short read", what);
    if (memcmp(want, got, BLOCK) != 0)
        ng_test_fail("%s: block %u is not pattern %u", what, b, seed);
}

static void
check_export(struct nbd_handle *nbd)
{
    static char want[BLOCK], got[BLOCK];
    unsigned b;

    for (b = 0; b < BLOCKS; b++) {
        expected(seeds[b], b, want);
        if (nbd_pread(nbd, got, BLOCK, (uint64_t)b * BLOCK, 0) == -1)
            ng_test_fail_nbd("pread");
        if (memcmp(want, got, BLOCK) != 0)
            ng_test_fail("export block %u differs", b);
    }
}

static void
full_backup(struct nbd_handle *nbd)
{
    char path[512];
    unsigned b, n, rng = 42;
    int fd;

    for (b = 0; b < BLOCKS; b++)
        write_block(nbd, b, 1);
    add_target("t0", path, sizeof path);
    /* 16 MiB/s: about four seconds, long enough to overwrite under it. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:i}}", "execute",
                               "blockdev-backup", "arguments", "job-id",
                               "bk0", "device", "src", "target", "t0",
                               "sync", "full", "speed", 16 << 20));
    if (!has_node("cbw-bk0"))
        ng_test_fail("no copy-before-write filter while bk0 runs");
    ng_test_qmp_fails(q, "requires graph-mod, which job 'bk0' does not "
                      "allow", "{s:s,s:{s:s}}", "execute",
                      "blockdev-remove-filter", "arguments", "node-name",
                      "cbw-bk0");
    ng_test_qmp_fails(q, "node 'src': job 'm0' requires graph-mod, which "
                      "job 'bk0' does not allow",
                      "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "m0",
                      "device", "src", "target", "spare", "sync", "full");
    for (n = 0; n < 400; n++) {
        b = rand_r(&rng) % BLOCKS;
        write_block(nbd, b, n % 5 == 0 ? 0 : 100 + n);
    }
    ng_test_qmp_wait_job(q, "bk0", "gone", 30, NULL);
    if (has_node("cbw-bk0"))
        ng_test_fail("the filter is still there after bk0");
    fd = open(path, O_RDONLY);
    for (b = 0; b < BLOCKS; b++)
        check_file_block(fd, b, 1, "full backup");
    close(fd);
    check_export(nbd);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "blockdev-del",
                               "arguments", "node-name", "t0"));
}

static long long
bitmap_count(const char *name)
{
    json_t *nodes = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-named-block-nodes");
    json_t *n, *bm;
    size_t i, j;
    long long count = -1;

    json_array_foreach(nodes, i, n)
        json_array_foreach(json_object_get(n, "dirty-bitmaps"), j, bm)
            if (strcmp(json_string_value(json_object_get(bm, "name")),
                       name) == 0)
                count = json_integer_value(json_object_get(bm, "count"));
    json_decref(nodes);
    return count;
}

static void
incremental(struct nbd_handle *nbd)
{
    static const unsigned dirty[10] = { 0, 3, 4, 100, 511, 512, 700, 900,
                                        1000, 1023 };
    char path[512];
    long long total = -1;
    unsigned i, b;
    int fd;

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute",
                               "block-dirty-bitmap-add", "arguments", "node",
                               "src", "name", "b0"));
    for (i = 0; i < 10; i++)
        write_block(nbd, dirty[i], 5000 + i);
    if (bitmap_count("b0") != 10 * BLOCK)
        ng_test_fail("b0 counts %lld bytes, not ten blocks",
                     bitmap_count("b0"));
    add_target("t1", path, sizeof path);
    ng_test_qmp_fails(q, "sync 'incremental' needs 'bitmap'",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-backup",
                      "arguments", "device", "src", "target", "t1", "sync",
                      "incremental");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:s,s:b}}",
                               "execute", "blockdev-backup", "arguments",
                               "job-id", "inc", "device", "src", "target",
                               "t1", "sync", "incremental", "bitmap", "b0",
                               "auto-dismiss", 0));
    ng_test_qmp_wait_job(q, "inc", "concluded", 30, &total);
    if (total != 10 * BLOCK)
        ng_test_fail("incremental backup copied %lld bytes, not ten blocks",
                     total);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-dismiss",
                               "arguments", "id", "inc"));
    if (bitmap_count("b0") != 0)
        ng_test_fail("b0 counts %lld after the backup", bitmap_count("b0"));
    write_block(nbd, 7, 6000);
    if (bitmap_count("b0") != BLOCK)
        ng_test_fail("b0 does not record after the backup");
    fd = open(path, O_RDONLY);
    for (b = 0, i = 0; b < BLOCKS; b++) {
        bool copied = i < 10 && dirty[i] == b;

        check_file_block(fd, b, copied ? 5000 + i : 0, "incremental");
        i += copied;
    }
    close(fd);
}

static void
sync_none(struct nbd_handle *nbd)
{
    char path[512];
    unsigned old = seeds[200];
    int fd;

    add_target("t2", path, sizeof path);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                               "blockdev-backup", "arguments", "job-id", "bn",
                               "device", "src", "target", "t2", "sync",
                               "none"));
    write_block(nbd, 200, 7000);
    write_block(nbd, 200, 7001);    /* saved once, the first time */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-cancel",
                               "arguments", "id", "bn"));
    ng_test_qmp_wait_job(q, "bn", "gone", 30, NULL);
    fd = open(path, O_RDONLY);
    check_file_block(fd, 200, old, "sync none, overwritten");
    check_file_block(fd, 201, 0, "sync none, untouched");
    close(fd);
    check_export(nbd);
}

int
main(void)
{
    struct nbd_handle *nbd;

    ng_test_timeout(100);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    nbd = nbd_create();
    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    full_backup(nbd);
    incremental(nbd);
    sync_none(nbd);
    nbd_close(nbd);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
