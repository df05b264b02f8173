/* tests/test-jobs.c: the job life cycle and dirty bitmaps through the
 * running daemon.
 *
 * - bad input is refused with a reason and starts nothing;
 * - a rate-limited mirror: job-complete before ready is refused, pause
 *   and resume move it through paused and back, set-speed lets it go;
 * - auto-finalize/auto-dismiss off: pending waits for job-finalize,
 *   concluded for job-dismiss; a cancelled one concludes with query-jobs'
 *   error "Operation canceled";
 * - cancel at 40 random points: the source reads as before, the target
 *   is never exported, and no claim of the job is left;
 * - two mirrors of different disks run together; a third of a disk
 *   already mirrored is refused naming the job;
 * - block-dirty-bitmap-add/-disable/-enable/-clear/-merge/-remove and the
 *   counts query-named-block-nodes shows. */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK (16u << 20)
#define BM_NODE "t1"                /* vm1's node after manual_finish */

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  d0: { driver: memory, size: 16M }\n"
    "  d1: { driver: memory, size: 16M }\n"
    "  t0: { driver: memory, size: 16M }\n"
    "  t1: { driver: memory, size: 16M }\n"
    "  t2: { driver: memory, size: 16M }\n"
    "  small: { driver: memory, size: 8M }\n"
    "  ro: { driver: memory, size: 16M, read-only: true }\n"
    "exports:\n"
    "  vm0: { node: d0, writable: true }\n"
    "  vm1: { node: d1, writable: true }\n";

static struct ng_test_qmp *q;

static void
expect_status(const char *id, const char *want)
{
    char got[32];

    if (strcmp(ng_test_qmp_job_status(q, id, got, sizeof got, NULL),
               want) != 0)
        ng_test_fail("job '%s' is '%s', not '%s'", id, got, want);
}

static void
ok(const char *cmd, const char *id)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", cmd,
                               "arguments", "id", id));
}

static void
mirror(const char *id, const char *dev, const char *target, json_int_t speed)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:I}}", "execute",
                               "blockdev-mirror", "arguments", "job-id", id,
                               "device", dev, "target", target, "sync",
                               "full", "speed", speed));
}

/* query-nac as compact text. */
static char *
nac_text(void)
{
    json_t *nac = ng_test_qmp_ok(q, "{s:s}", "execute", "query-nac");
    char *text = json_dumps(nac, JSON_COMPACT);

    json_decref(nac);
    return text;
}

static void
expect_no_holder(const char *id)
{
    char *text = nac_text();
    char want[64];

    snprintf(want, sizeof want, "\"id\":\"%s\"", id);
    if (strstr(text, want) != NULL)
        ng_test_fail("holder '%s' is still in query-nac: %s", id, text);
    free(text);
}

static void
bad_input(void)
{
    ng_test_qmp_fails(q, "node 'nope' not found",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-mirror",
                      "arguments", "device", "nope", "target", "t0", "sync",
                      "full");
    ng_test_qmp_fails(q, "must be the same size",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-mirror",
                      "arguments", "device", "d0", "target", "small", "sync",
                      "full");
    ng_test_qmp_fails(q, "target node 'd1' is in use by export 'vm1'",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-mirror",
                      "arguments", "device", "d0", "target", "d1", "sync",
                      "full");
    ng_test_qmp_fails(q, "target node 'ro' is read-only",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-mirror",
                      "arguments", "device", "d0", "target", "ro", "sync",
                      "full");
    ng_test_qmp_fails(q, "'speed' must not be negative",
                      "{s:s,s:{s:s,s:s,s:s,s:i}}", "execute",
                      "blockdev-mirror", "arguments", "device", "d0",
                      "target", "t0", "sync", "full", "speed", -1);
    ng_test_qmp_fails(q, "'sync' must be 'full', 'top' or 'none'",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-mirror",
                      "arguments", "device", "d0", "target", "t0", "sync",
                      "most");
    ng_test_qmp_fails(q, "granularity must be a power of two",
                      "{s:s,s:{s:s,s:s,s:s,s:i}}", "execute",
                      "blockdev-mirror", "arguments", "device", "d0",
                      "target", "t0", "sync", "full", "granularity", 1000);
    ng_test_qmp_fails(q, "job 'nope' not found", "{s:s,s:{s:s}}", "execute",
                      "job-cancel", "arguments", "id", "nope");
    expect_no_holder("d0");
    ng_test_qmp_fails(q, "", "{s:s,s:{s:s}}", "execute", "job-pause",
                      "arguments", "id", "d0");
}

/* 64 KiB/s: it stays running long enough to poke at. */
static void
life_cycle(void)
{
    mirror("slow", "d0", "t0", 65536);
    expect_status("slow", "running");
    ng_test_qmp_fails(q, "job 'slow' in state 'running' cannot accept "
                      "command verb 'complete'", "{s:s,s:{s:s}}", "execute",
                      "job-complete", "arguments", "id", "slow");
    ng_test_qmp_fails(q, "job 'slow' already exists",
                      "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "slow",
                      "device", "d1", "target", "t1", "sync", "full");
    ok("job-pause", "slow");
    expect_status("slow", "paused");
    ok("job-resume", "slow");
    expect_status("slow", "running");
    ng_test_qmp_fails(q, "job 'slow' is not paused", "{s:s,s:{s:s}}",
                      "execute", "job-resume", "arguments", "id", "slow");
    ng_test_qmp_fails(q, "must not be negative", "{s:s,s:{s:s,s:i}}",
                      "execute", "block-job-set-speed", "arguments",
                      "device", "slow", "speed", -5);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:i}}", "execute",
                               "block-job-set-speed", "arguments", "device",
                               "slow", "speed", 0));
    ng_test_qmp_wait_job(q, "slow", "ready", 20, NULL);
    ok("job-pause", "slow");
    expect_status("slow", "standby");
    ok("job-resume", "slow");
    expect_status("slow", "ready");
    ok("job-cancel", "slow");
    ng_test_qmp_wait_job(q, "slow", "gone", 20, NULL);
    expect_no_holder("slow");
}

/* Manual finalize and dismiss. */
static void
manual_finish(void)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:b,s:b}}",
                               "execute", "blockdev-mirror", "arguments",
                               "job-id", "man", "device", "d1", "target",
                               "t1", "sync", "full", "auto-finalize", 0,
                               "auto-dismiss", 0));
    ng_test_qmp_wait_job(q, "man", "ready", 20, NULL);
    ok("job-complete", "man");
    ng_test_qmp_wait_job(q, "man", "pending", 20, NULL);
    ng_test_qmp_fails(q, "cannot accept command verb 'dismiss'",
                      "{s:s,s:{s:s}}", "execute", "job-dismiss",
                      "arguments", "id", "man");
    ok("job-finalize", "man");
    expect_status("man", "concluded");
    ok("job-dismiss", "man");
    expect_status("man", "gone");
    expect_no_holder("man");
}

/* query-jobs' `error` of job id, "" when it has none. */
static void
job_error(const char *id, char *out, size_t size)
{
    json_t *list = ng_test_qmp_ok(q, "{s:s}", "execute", "query-jobs");
    json_t *j;
    size_t i;

    snprintf(out, size, "%s", "");
    json_array_foreach(list, i, j)
        if (strcmp(json_string_value(json_object_get(j, "id")), id) == 0 &&
            json_object_get(j, "error") != NULL)
            snprintf(out, size, "%s",
                     json_string_value(json_object_get(j, "error")));
    json_decref(list);
}

/* A cancelled job that stays for job-dismiss says why it ended, as
 * QEMU's does: a client that missed BLOCK_JOB_CANCELLED can still tell a
 * cancel from a completion. */
static void
manual_cancel(void)
{
    char why[256];

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:I,s:b}}",
                               "execute", "blockdev-mirror", "arguments",
                               "job-id", "mc", "device", "d1", "target",
                               "t1", "sync", "full", "speed",
                               (json_int_t)(1 << 20), "auto-dismiss", 0));
    ok("job-cancel", "mc");
    ng_test_qmp_wait_job(q, "mc", "concluded", 20, NULL);
    job_error("mc", why, sizeof why);
    if (strcmp(why, "Operation canceled") != 0)
        ng_test_fail("cancelled job's error is '%s'", why);
    ok("job-dismiss", "mc");
    expect_status("mc", "gone");
    expect_no_holder("mc");
}

static void
fill(struct nbd_handle *nbd, unsigned seed)
{
    static char buf[1 << 20];
    uint64_t off;

    for (off = 0; off < DISK; off += sizeof buf) {
        ng_test_fill_pattern(buf, sizeof buf, off, seed);
        if (nbd_pwrite(nbd, buf, sizeof buf, off, 0) == -1)
            ng_test_fail_nbd("fill");
    }
}

static void
check(struct nbd_handle *nbd, unsigned seed, const char *when)
{
    static char buf[1 << 20];
    uint64_t off;

    for (off = 0; off < DISK; off += sizeof buf) {
        if (nbd_pread(nbd, buf, sizeof buf, off, 0) == -1)
            ng_test_fail_nbd("check");
        if (ng_test_check_pattern(buf, sizeof buf, off, seed) >= 0)
            ng_test_fail("%s: the source changed near %llu", when,
                         (unsigned long long)off);
    }
}

/* Cancel after a random few milliseconds, rate limits random too, so
 * the job is caught running, ready or mid-chunk. */
static void
cancel_at_random(const char *uri)
{
    struct nbd_handle *nbd = nbd_create();
    unsigned i, rng = 12345;
    char id[32];

    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    fill(nbd, 77);
    for (i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "c%u", i);
        mirror(id, "d0", "t0", (rand_r(&rng) % 4) * (32 << 20));
        usleep(rand_r(&rng) % 30000);
        ok("job-cancel", id);
        ng_test_qmp_wait_job(q, id, "gone", 20, NULL);
        expect_no_holder(id);
    }
    check(nbd, 77, "after 40 cancels");
    nbd_close(nbd);
}

/* query-nac holds `want` (compact JSON). */
static void
expect_nac(const char *want)
{
    char *text = nac_text();

    if (strstr(text, want) == NULL)
        ng_test_fail("query-nac lacks %s: %s", want, text);
    free(text);
}

/* After manual_finish, vm1 serves t1 and d1 is free.  The claims are
 * nac/README.md's mirror rows. */
static void
two_mirrors(void)
{
    mirror("ma", "d0", "t0", 0);
    mirror("mb", "t1", "d1", 0);
    expect_nac("{\"id\":\"ma\",\"kind\":\"job\",\"require\":"
               "[\"read-data\",\"read-meta\",\"graph-mod\"],\"allow\":"
               "[\"read-data\",\"read-meta\",\"write-data\","
               "\"write-meta\"]}");
    expect_nac("{\"node-name\":\"t0\",\"holders\":[{\"id\":\"ma\","
               "\"kind\":\"job\",\"require\":[\"read-meta\","
               "\"write-data\"],\"allow\":[\"read-meta\"]}]}");
    expect_nac("{\"node-name\":\"d1\",\"holders\":[{\"id\":\"mb\"");
    ng_test_qmp_fails(q, "node 'd0': job 'mc' requires graph-mod, which "
                      "job 'ma' does not allow",
                      "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                      "blockdev-mirror", "arguments", "job-id", "mc",
                      "device", "d0", "target", "t2", "sync", "none");
    ng_test_qmp_wait_job(q, "ma", "ready", 20, NULL);
    ng_test_qmp_wait_job(q, "mb", "ready", 20, NULL);
    ok("job-cancel", "ma");
    ok("job-cancel", "mb");
    ng_test_qmp_wait_job(q, "ma", "gone", 20, NULL);
    ng_test_qmp_wait_job(q, "mb", "gone", 20, NULL);
}

/* The named bitmaps of `node` as "name:count:recording;..." */
static void
bitmaps_of(const char *node, char *out, size_t size)
{
    json_t *nodes = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-named-block-nodes");
    json_t *n, *b;
    size_t i, j, used = 0;

    out[0] = '\0';
    json_array_foreach(nodes, i, n) {
        if (strcmp(json_string_value(json_object_get(n, "node-name")),
                   node) != 0)
            continue;
        json_array_foreach(json_object_get(n, "dirty-bitmaps"), j, b)
            used += (size_t)snprintf(out + used, size - used, "%s:%lld:%d;",
                json_string_value(json_object_get(b, "name")),
                (long long)json_integer_value(json_object_get(b, "count")),
                json_is_true(json_object_get(b, "recording")));
    }
    json_decref(nodes);
}

static void
expect_bitmaps(const char *want, const char *when)
{
    char got[256];

    bitmaps_of(BM_NODE, got, sizeof got);
    if (strcmp(got, want) != 0)
        ng_test_fail("%s: " BM_NODE "'s bitmaps are '%s', not '%s'", when, got, want);
}

static void
bitmap_cmd(const char *cmd, const char *name)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute", cmd,
                               "arguments", "node", BM_NODE, "name", name));
}

static void
bitmaps(const char *uri)
{
    struct nbd_handle *nbd = nbd_create();
    static char buf[4096];

    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    bitmap_cmd("block-dirty-bitmap-add", "b0");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:i}}", "execute",
                               "block-dirty-bitmap-add", "arguments", "node",
                               BM_NODE, "name", "b1", "granularity", 4096));
    ng_test_qmp_fails(q, "bitmap 'b0' already exists on node '" BM_NODE "'",
                      "{s:s,s:{s:s,s:s}}", "execute",
                      "block-dirty-bitmap-add", "arguments", "node", BM_NODE,
                      "name", "b0");
    ng_test_qmp_fails(q, "granularity must be a power of two",
                      "{s:s,s:{s:s,s:s,s:i}}", "execute",
                      "block-dirty-bitmap-add", "arguments", "node", BM_NODE,
                      "name", "bx", "granularity", 256);
    /* 4 KiB at 1 MiB + 100: one 64 KiB granule of b0, two of b1. */
    if (nbd_pwrite(nbd, buf, sizeof buf, (1 << 20) + 100, 0) == -1 ||
        nbd_zero(nbd, 65536, 8 << 20, 0) == -1)
        ng_test_fail_nbd("write");
    expect_bitmaps("b1:73728:1;b0:131072:1;", "after a write and a zero");
    bitmap_cmd("block-dirty-bitmap-disable", "b1");
    if (nbd_trim(nbd, 65536, 4 << 20, 0) == -1)
        ng_test_fail_nbd("trim");
    expect_bitmaps("b1:73728:0;b0:196608:1;", "after a trim, b1 disabled");
    bitmap_cmd("block-dirty-bitmap-enable", "b1");
    bitmap_cmd("block-dirty-bitmap-clear", "b0");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:[s]}}", "execute",
                               "block-dirty-bitmap-merge", "arguments",
                               "node", BM_NODE, "target", "b1", "bitmaps",
                               "b1"));
    ng_test_qmp_fails(q, "differs from 'b0' in size or granularity",
                      "{s:s,s:{s:s,s:s,s:[s]}}", "execute",
                      "block-dirty-bitmap-merge", "arguments", "node", BM_NODE,
                      "target", "b0", "bitmaps", "b1");
    expect_bitmaps("b1:73728:1;b0:0:1;", "after clear and merge");
    bitmap_cmd("block-dirty-bitmap-remove", "b0");
    bitmap_cmd("block-dirty-bitmap-remove", "b1");
    ng_test_qmp_fails(q, "dirty bitmap 'b0' not found on node '" BM_NODE "'",
                      "{s:s,s:{s:s,s:s}}", "execute",
                      "block-dirty-bitmap-remove", "arguments", "node", BM_NODE,
                      "name", "b0");
    expect_bitmaps("", "after remove");
    nbd_close(nbd);
}

int
main(void)
{
    struct ng_test_daemon *d;
    char uri1[512];

    ng_test_timeout(100);
    d = ng_test_start(config, "vm0");
    snprintf(uri1, sizeof uri1, "nbd+unix:///vm1?socket=%s", d->sock);
    q = ng_test_qmp_connect(d->control);
    bad_input();
    life_cycle();
    manual_cancel();
    manual_finish();
    two_mirrors();
    cancel_at_random(d->uri);
    bitmaps(uri1);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
