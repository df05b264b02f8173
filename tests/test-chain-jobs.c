/* tests/test-chain-jobs.c: block-stream and block-commit on memory
 * chains under live clients.
 *
 * Export vm1 (with implicit throttle and detect-zeroes filters) starts
 * on `base`; a client fills half of it.  Two snapshots make the chain
 * base <- mid <- top below the filters, with writes in between.  Two
 * libnbd clients write (and zero) 64 KiB blocks of a pattern naming the
 * block and a seed, keeping their own record, while:
 *   - a slow stream is cancelled: the chain and data stay as they were,
 *     and while it runs a snapshot of its base and a second stream of
 *     its top are refused with the NAC sentence naming it;
 *   - block-stream top base-node=base copies mid's data up and drops
 *     mid (events in QEMU's order), leaving what only base has in base
 *     (new data written into base shows through top);
 *   - block-stream top (no base) copies the rest and cuts the chain.
 * Then two more snapshots make top <- c1 <- c2, and
 *   - block-commit c2 top-node=c1 base-node=top (intermediate) drops c1;
 *   - after a snapshot c2 <- c3, an active commit of c3 into c2 is
 *     cancelled (chain intact), then one reaches ready, a snapshot of
 *     its base is refused naming it, and job-complete pivots the export
 *     (implicit filters stay above) onto c2.
 * After each step the export equals the clients' record, the filters
 * are still above the active layer, and no client reconnected; at the
 * end a read-only export of `base` equals what was written before the
 * first snapshot.  Also: bad input refused with reasons. */
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
#define BASE_SEED       0x40000000u

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  base: { driver: memory, size: 32M }\n"
    "  mid: { driver: memory, size: 32M }\n"
    "  top: { driver: memory, size: 32M }\n"
    "  spare: { driver: memory, size: 32M }\n"
    "  c1: { driver: memory, size: 32M }\n"
    "  c2: { driver: memory, size: 32M }\n"
    "  c3: { driver: memory, size: 32M }\n"
    "exports:\n"
    "  vm1:\n"
    "    node: base\n"
    "    writable: true\n"
    "    throttle: { iops-total: 1000000 }\n"
    "    detect-zeroes: on\n";

/* Each block's last seed; 0 = zeroes.  Block b belongs to worker
 * b % WORKERS. */
static unsigned seeds[BLOCKS];
static unsigned in_base[BLOCKS];
/* Written after the first snapshot: not in the base alone. */
static bool above_base[BLOCKS];
static struct ng_test_blocks disk = { seeds, BLOCKS, BLOCK };

/* A client wrote block b: it is no longer the base's alone. */
static void
wrote_above_base(long b)
{
    above_base[b] = true;
}

static struct ng_test_writers *
start_writers(const char *uri)
{
    static const struct ng_test_writers_opts opts = {
        .pause_us = 200,            /* leave the jobs some of the loop */
        .wrote = wrote_above_base,
    };

    return ng_test_writers_start(&disk, uri, WORKERS, &opts);
}

/* Blocks [from, to) get a pattern of `seed_base`. */
static void
fill(const char *uri, unsigned from, unsigned to, unsigned seed_base)
{
    ng_test_blocks_fill(&disk, uri, from, to, seed_base);
    for (unsigned b = from; b < to; b++)
        above_base[b] = seed_base != BASE_SEED;
}

static void
qmp2(struct ng_test_qmp *q, const char *cmd, const char *k1,
     const char *v1, const char *k2, const char *v2)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute", cmd,
                               "arguments", k1, v1, k2, v2));
}

static size_t
job_count(struct ng_test_qmp *q)
{
    json_t *r = ng_test_qmp_ok(q, "{s:s}", "execute", "query-jobs");
    size_t n = json_array_size(r);

    json_decref(r);
    return n;
}

static void
wait_no_jobs(struct ng_test_qmp *q, const char *what)
{
    int i;

    for (i = 0; i < 3000; i++) {
        if (job_count(q) == 0)
            return;
        usleep(10000);
    }
    ng_test_fail("%s: a job is still there after 30 s", what);
}

static void
stream_fails(struct ng_test_qmp *q, const char *device, const char *base,
             const char *want)
{
    if (base != NULL)
        ng_test_qmp_fails(q, want, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                          "block-stream", "arguments", "job-id", "bad",
                          "device", device, "base-node", base);
    else
        ng_test_qmp_fails(q, want, "{s:s,s:{s:s,s:s}}", "execute",
                          "block-stream", "arguments", "job-id", "bad",
                          "device", device);
}

static void
bad_input(struct ng_test_qmp *q)
{
    stream_fails(q, "nope", NULL, "node 'nope' not found");
    stream_fails(q, "spare", NULL, "node 'spare' has no backing node: "
                 "nothing to stream");
    stream_fails(q, "top", "spare", "node 'spare' is not in the backing "
                 "chain of node 'top'");
    stream_fails(q, "top", "top", "node 'top' is not in the backing chain "
                 "of node 'top'");
    ng_test_qmp_fails(q, "'on-error' must be", "{s:s,s:{s:s,s:s}}",
                      "execute", "block-stream", "arguments", "device",
                      "top", "on-error", "maybe");
}

/* A slow stream: conflicting commands refused naming it; cancelled, it
 * leaves the chain as it was. */
static void
cancel_and_refusals(struct ng_test_qmp *q)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:i}}", "execute",
                               "block-stream", "arguments", "job-id", "s9",
                               "device", "top", "base-node", "base",
                               "speed", 65536));
    stream_fails(q, "top", NULL, "node 'top': job 'bad' requires "
                 "write-meta, which job 's9' does not allow");
    ng_test_qmp_fails(q, "node 'base': command 'snap9' requires graph-mod, "
                      "which job 's9' does not allow",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute",
                      "blockdev-snapshot", "arguments", "node", "base",
                      "overlay", "spare", "job-id", "snap9");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "stream-s9");
    usleep(200000);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-cancel",
                               "arguments", "id", "s9"));
    wait_no_jobs(q, "cancel");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "top");
    ng_test_qmp_expect_child(q, "top", "backing", "mid");
    ng_test_qmp_expect_child(q, "mid", "backing", "base");
}

/* JOB_STATUS_CHANGE of `id` as `want`, BLOCK_JOB_COMPLETED of `type`
 * with no error. */
static void
check_events(struct ng_test_qmp *ev, const char *id, const char *type,
             const char *want)
{
    char statuses[512] = "";
    bool completed = false;
    json_t *e;

    while (strstr(statuses, "null,") == NULL &&
           (e = ng_test_qmp_next_event(ev, 5000)) != NULL) {
        const char *name = json_string_value(json_object_get(e, "event"));
        json_t *data = json_object_get(e, "data");
        const char *jid = json_string_value(json_object_get(data, "id"));
        const char *dev = json_string_value(json_object_get(data,
                                                            "device"));

        if (strcmp(name, "JOB_STATUS_CHANGE") == 0 && jid != NULL &&
            strcmp(jid, id) == 0) {
            strcat(statuses, json_string_value(json_object_get(data,
                                                               "status")));
            strcat(statuses, ",");
        }
        if (strcmp(name, "BLOCK_JOB_COMPLETED") == 0 && dev != NULL &&
            strcmp(dev, id) == 0) {
            completed = json_object_get(data, "error") == NULL;
            if (strcmp(json_string_value(json_object_get(data, "type")),
                       type) != 0)
                ng_test_fail("BLOCK_JOB_COMPLETED type is not '%s'", type);
        }
        json_decref(e);
    }
    if (strcmp(statuses, want) != 0)
        ng_test_fail("job %s statuses were %s", id, statuses);
    if (!completed)
        ng_test_fail("no BLOCK_JOB_COMPLETED without error for %s", id);
}

static void
stream(struct ng_test_qmp *q, const char *id, const char *base)
{
    if (base != NULL)
        json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                                   "block-stream", "arguments", "job-id",
                                   id, "device", "top", "base-node", base));
    else
        json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute",
                                   "block-stream", "arguments", "job-id",
                                   id, "device", "top"));
    wait_no_jobs(q, id);
}


/* A stream to a base copies up only what lay above the base: blocks
 * that only the base had still read from it, so new data written into
 * the base (through an export of its own, for this check) shows through
 * the top.  The record follows. */
static void
base_stays_below(struct ng_test_daemon *d, struct ng_test_qmp *q)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512], *buf = malloc(BLOCK);
    unsigned b, n = 0;

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:b}}", "execute",
                               "block-export-add", "arguments", "type",
                               "nbd", "id", "bw", "node-name", "base",
                               "writable", 1));
    snprintf(uri, sizeof uri, "nbd+unix:///bw?socket=%s", d->sock);
    if (nbd == NULL || buf == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect bw");
    for (b = 0; b < BLOCKS; b++) {
        if (above_base[b])
            continue;
        seeds[b] = in_base[b] = 0x70000000u + b;
        ng_test_fill_pattern(buf, BLOCK, (uint64_t)b * BLOCK, seeds[b]);
        if (nbd_pwrite(nbd, buf, BLOCK, (uint64_t)b * BLOCK, 0) == -1)
            ng_test_fail_nbd("write base");
        n++;
    }
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    free(buf);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "block-export-del", "arguments", "id", "bw"));
    if (n == 0)
        ng_test_fail("no block was left to the base alone");
    printf("%u blocks only in the base\n", n);
    ng_test_blocks_verify(&disk, d->uri, seeds, "the top over a changed base");
}

static void
commit_fails(struct ng_test_qmp *q, const char *device, const char *top,
             const char *base, const char *want)
{
    json_t *args = json_pack("{s:s,s:s}", "job-id", "bad", "device", device);

    if (top != NULL)
        json_object_set_new(args, "top-node", json_string(top));
    if (base != NULL)
        json_object_set_new(args, "base-node", json_string(base));
    ng_test_qmp_fails(q, want, "{s:s,s:o}", "execute", "block-commit",
                      "arguments", args);
}

static void
commit_bad_input(struct ng_test_qmp *q)
{
    commit_fails(q, "nope", NULL, NULL, "node 'nope' not found");
    commit_fails(q, "spare", NULL, NULL, "node 'spare' has no backing "
                 "node: nothing to commit");
    commit_fails(q, "c2", "spare", NULL, "node 'spare' is not in the "
                 "backing chain of node 'c2'");
    commit_fails(q, "c2", "c1", "c2", "node 'c2' is not in the backing "
                 "chain of node 'c1'");
    commit_fails(q, "c2", "top", "top", "top and base are both node "
                 "'top'");
}

static void
commit_intermediate(struct ng_test_qmp *q, struct ng_test_qmp *ev)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                               "block-commit", "arguments", "job-id", "c0",
                               "device", "c2", "top-node", "c1",
                               "base-node", "top"));
    wait_no_jobs(q, "c0");
    ng_test_qmp_expect_child(q, "c2", "backing", "top");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "c2");
    check_events(ev, "c0", "commit",
                 "created,running,waiting,pending,concluded,null,");
}

static void
commit_active_cancel(struct ng_test_qmp *q)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:i}}", "execute",
                               "block-commit", "arguments", "job-id", "c8",
                               "device", "c3", "speed", 65536));
    usleep(200000);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-cancel",
                               "arguments", "id", "c8"));
    wait_no_jobs(q, "c8");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "c3");
    ng_test_qmp_expect_child(q, "c3", "backing", "c2");
}

static void
commit_active(struct ng_test_qmp *q)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "block-commit", "arguments", "job-id", "c1",
                               "device", "c3", "base-node", "c2"));
    ng_test_qmp_wait_job(q, "c1", "ready", 30, NULL);
    ng_test_qmp_fails(q, "node 'c2': command 'snap8' requires graph-mod, "
                      "which job 'c1' does not allow",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute",
                      "blockdev-snapshot", "arguments", "node", "c2",
                      "overlay", "spare", "job-id", "snap8");
    usleep(200000);                 /* in sync while clients write */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-complete",
                               "arguments", "id", "c1"));
    wait_no_jobs(q, "c1");
    ng_test_qmp_expect_child(q, "vm1.throttle", "filtered",
                             "vm1.detect-zeroes");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "c2");
    ng_test_qmp_expect_child(q, "c2", "backing", "top");
}

static void
run_commits(struct ng_test_daemon *d, struct ng_test_qmp *q,
            struct ng_test_qmp *ev)
{
    struct ng_test_writers *w;

    qmp2(q, "blockdev-snapshot", "node", "top", "overlay", "c1");
    fill(d->uri, BLOCKS / 8, BLOCKS / 3, 0x60000000u);
    qmp2(q, "blockdev-snapshot", "node", "c1", "overlay", "c2");
    commit_bad_input(q);
    w = start_writers(d->uri);
    commit_intermediate(q, ev);
    ng_test_writers_stop(w);
    ng_test_blocks_verify(&disk, d->uri, seeds,
                          "after the intermediate commit");
    printf("intermediate commit done\n");
    fflush(stdout);

    qmp2(q, "blockdev-snapshot", "node", "c2", "overlay", "c3");
    w = start_writers(d->uri);
    commit_active_cancel(q);
    commit_active(q);
    usleep(200000);                 /* the clients go on, on c2 */
    ng_test_writers_stop(w);
    ng_test_blocks_verify(&disk, d->uri, seeds, "after the active commit");
    printf("active commit done\n");
    fflush(stdout);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q, *ev;
    struct ng_test_writers *w;
    char uri[512];

    ng_test_timeout(120);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    ev = ng_test_qmp_connect(d->control);
    fill(d->uri, 0, BLOCKS / 2, BASE_SEED);
    memcpy(in_base, seeds, sizeof seeds);
    qmp2(q, "blockdev-snapshot", "node", "base", "overlay", "mid");
    fill(d->uri, BLOCKS / 4, BLOCKS * 3 / 4, 0x50000000u);
    qmp2(q, "blockdev-snapshot", "node", "mid", "overlay", "top");
    bad_input(q);

    w = start_writers(d->uri);
    cancel_and_refusals(q);
    ng_test_writers_stop(w);
    ng_test_blocks_verify(&disk, d->uri, seeds, "after the cancelled stream");
    printf("cancel: chain intact\n");
    fflush(stdout);

    w = start_writers(d->uri);
    stream(q, "s0", "base");
    ng_test_qmp_expect_child(q, "top", "backing", "base");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "top");
    ng_test_writers_stop(w);
    check_events(ev, "s0", "stream",
                 "created,running,waiting,pending,concluded,null,");
    ng_test_blocks_verify(&disk, d->uri, seeds, "after stream to base");
    base_stays_below(d, q);
    printf("stream to base done\n");
    fflush(stdout);

    w = start_writers(d->uri);
    stream(q, "s1", NULL);
    ng_test_qmp_expect_child(q, "top", "backing", NULL);
    ng_test_qmp_expect_child(q, "vm1.throttle", "filtered",
                             "vm1.detect-zeroes");
    ng_test_qmp_expect_child(q, "vm1.detect-zeroes", "filtered", "top");
    ng_test_writers_stop(w);
    ng_test_blocks_verify(&disk, d->uri, seeds,
                          "after the stream that cut the chain");
    run_commits(d, q, ev);

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "block-export-add", "arguments", "type",
                               "nbd", "id", "old", "node-name", "base"));
    snprintf(uri, sizeof uri, "nbd+unix:///old?socket=%s", d->sock);
    ng_test_blocks_verify(&disk, uri, in_base, "base after the streams");
    ng_test_qmp_close(ev);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
