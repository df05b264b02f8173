/* tests/test-splice-throttle.c: a splice next to a throttle limited to
 * 1 IOPS, with 32 reads waiting in it, does not wait at that rate.
 *
 * The throttle's drain hooks let what it holds go as the drained section
 * begins, so blockdev-insert-filter below it and above it each return
 * quickly (asserted: under 2 s; without drain hooks it takes about 31 s)
 * and every queued read completes with the data written before.  Prints
 * the measured times. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define READS       32
#define READ_LEN    4096u
#define STRIDE      (64u << 10)
#define SEED        7u
#define BOUND_S     2.0

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  disk0: { driver: memory, size: 16M }\n"
    "exports:\n"
    "  vm1:\n"
    "    node: disk0\n"
    "    writable: true\n"
    "    throttle: { iops-total: 100000 }\n";

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static void
write_data(struct nbd_handle *nbd)
{
    size_t len = (size_t)READS * STRIDE;
    char *buf = malloc(len);

    ng_test_fill_pattern(buf, len, 0, SEED);
    if (nbd_pwrite(nbd, buf, len, 0, 0) == -1)
        ng_test_fail_nbd("pwrite");
    free(buf);
}

static void
set_iops(struct ng_test_qmp *q, int iops)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:b,s:{s:{s:i}}}}",
                               "execute", "blockdev-reconfigure",
                               "arguments", "node-name", "vm1.throttle",
                               "explicit", 1, "options", "limits",
                               "iops-total", iops));
}

/* Queue READS reads and give the server time to take them all in: at
 * 1 IOPS all but the first wait in the throttle. */
static void
queue_reads(struct nbd_handle *nbd, char bufs[][READ_LEN],
            int64_t cookies[])
{
    unsigned i;

    for (i = 0; i < READS; i++) {
        cookies[i] = nbd_aio_pread(nbd, bufs[i], READ_LEN,
                                   (uint64_t)i * STRIDE,
                                   NBD_NULL_COMPLETION, 0);
        if (cookies[i] == -1)
            ng_test_fail_nbd("aio_pread");
    }
    while (nbd_aio_peek_command_completed(nbd) == 0 &&
           nbd_aio_in_flight(nbd) == READS)
        if (nbd_poll(nbd, 100) == -1)
            ng_test_fail_nbd("poll");
    sleep_ms(200);
}

/* Every read completes, with the data written. */
static void
collect_reads(struct nbd_handle *nbd, char bufs[][READ_LEN],
              const int64_t cookies[], const char *when)
{
    unsigned i;

    while (nbd_aio_in_flight(nbd) > 0)
        if (nbd_poll(nbd, 1000) == -1)
            ng_test_fail_nbd("poll");
    for (i = 0; i < READS; i++) {
        uint64_t off = (uint64_t)i * STRIDE;

        if (nbd_aio_command_completed(nbd, cookies[i]) != 1)
            ng_test_fail("%s: read %u at %llu failed: %s", when, i,
                         (unsigned long long)off, nbd_get_error());
        if (ng_test_check_pattern(bufs[i], READ_LEN, off, SEED) >= 0)
            ng_test_fail("%s: read %u at %llu returned wrong data", when,
                         i, (unsigned long long)off);
    }
}

static double
splice(struct ng_test_qmp *q, const char *node, const char *filter)
{
    double t0 = now_s();

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:b,s:{s:s,s:s}}}",
                               "execute", "blockdev-insert-filter",
                               "arguments", "node", node, "explicit", 1,
                               "filter", "driver", "nofilter",
                               "node-name", filter));
    return now_s() - t0;
}

/* The node right below `parent` in the graph is `child`. */
static void
expect_edge(struct ng_test_qmp *q, const char *parent, const char *child)
{
    json_t *g = ng_test_qmp_ok(q, "{s:s}", "execute", "query-graph");
    json_t *e;
    size_t i;
    int found = 0;

    json_array_foreach(json_object_get(g, "edges"), i, e)
        found |= strcmp(json_string_value(json_object_get(e, "parent")),
                        parent) == 0 &&
                 strcmp(json_string_value(json_object_get(e, "child")),
                        child) == 0;
    json_decref(g);
    if (!found)
        ng_test_fail("no edge %s -> %s after the splice", parent, child);
}

static void
round_trip(struct ng_test_qmp *q, struct nbd_handle *nbd, const char *where,
           const char *node, const char *filter)
{
    static char bufs[READS][READ_LEN];
    int64_t cookies[READS];
    double took;

    memset(bufs, 0, sizeof bufs);
    queue_reads(nbd, bufs, cookies);
    took = splice(q, node, filter);
    printf("splice %s a 1 IOPS throttle with %u reads queued: %.1f ms\n",
           where, READS, took * 1e3);
    if (took >= BOUND_S)
        ng_test_fail("splice %s the throttle took %.1f s (bound %.0f s)",
                     where, took, BOUND_S);
    collect_reads(nbd, bufs, cookies, where);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct nbd_handle *nbd;

    ng_test_timeout(120);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    nbd = nbd_create();
    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    write_data(nbd);
    set_iops(q, 1);

    round_trip(q, nbd, "below", "disk0", "f-below");
    expect_edge(q, "vm1.throttle", "f-below");
    expect_edge(q, "f-below", "disk0");
    round_trip(q, nbd, "above", "vm1.throttle", "f-above");
    expect_edge(q, "f-above", "vm1.throttle");

    if (nbd_shutdown(nbd, 0) == -1)
        ng_test_fail_nbd("shutdown");
    nbd_close(nbd);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
