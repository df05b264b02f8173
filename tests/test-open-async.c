/* tests/test-open-async.c: an open that takes 2 s (the delay filter's
 * open-delay, sleeping on a worker thread) holds up nobody: a client
 * reading another export all the while sees no request take long; the
 * blockdev-add answers once the open is over, its node-name is taken
 * meanwhile without the node showing; a start-up with a slow node waits
 * for it; and a failed open (below a slow inline child, or on a file
 * that does not exist) leaves query-named-block-nodes as it was; a
 * daemon stopped while an open runs waits for it and exits cleanly. */
#include <config.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define OPEN_MS 2000

/* "slow0" opens slowly at start-up: the export on it must work at once. */
static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "  mem1: { driver: memory, size: 1M }\n"
    "  slow0: { driver: delay, file: mem1, open-delay: 500ms }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n"
    "  slow: { node: slow0 }\n";

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A client reading 4 KiB at a time until told to stop. */
struct reader {
    struct nbd_handle *nbd;
    atomic_bool stop;
    double max_latency;             /* seconds */
    unsigned long reads;
};

static void *
reader_run(void *arg)
{
    struct reader *r = arg;
    static char buf[4096];
    uint64_t off = 0;

    while (!atomic_load(&r->stop)) {
        double t0 = now_s(), dt;

        if (nbd_pread(r->nbd, buf, sizeof buf, off, 0) == -1)
            ng_test_fail_nbd("pread on demo during the slow open");
        dt = now_s() - t0;
        if (dt > r->max_latency)
            r->max_latency = dt;
        r->reads++;
        off = (off + sizeof buf) % (64 << 20);
    }
    return NULL;
}

/* The node-names query-named-block-nodes lists, sorted, as one string. */
static char *
node_names(struct ng_test_qmp *qmp)
{
    json_t *list = ng_test_qmp_ok(qmp, "{s:s}", "execute",
                                  "query-named-block-nodes");
    char *names[64], *out;
    size_t i, n = 0, len = 1;
    json_t *e;

    json_array_foreach(list, i, e) {
        if (n < 64)
            names[n++] = strdup(json_string_value(json_object_get(
                                    e, "node-name")));
    }
    json_decref(list);
    for (i = 0; i < n; i++) {
        size_t j;

        for (j = i + 1; j < n; j++) {
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];

                names[i] = names[j];
                names[j] = t;
            }
        }
        len += strlen(names[i]) + 1;
    }
    out = calloc(1, len);
    for (i = 0; i < n; i++) {
        strcat(out, names[i]);
        strcat(out, " ");
        free(names[i]);
    }
    return out;
}

static void
expect_nodes(struct ng_test_qmp *qmp, const char *want, const char *when)
{
    char *got = node_names(qmp);

    if (strcmp(got, want) != 0)
        ng_test_fail("%s: nodes '%s', expected '%s'", when, got, want);
    free(got);
}

/* blockdev-add of a node whose open takes OPEN_MS while `r` reads. */
static void
slow_add_while_reading(const struct ng_test_daemon *d,
                       struct ng_test_qmp *qmp, struct reader *r)
{
    struct ng_test_qmp *other = ng_test_qmp_connect(d->control);
    pthread_t th;
    json_t *reply;
    double t0, took;
    char cmd[512];

    if (pthread_create(&th, NULL, reader_run, r) != 0)
        ng_test_fail("pthread_create");
    snprintf(cmd, sizeof cmd, "{\"execute\":\"blockdev-add\",\"arguments\":"
             "{\"driver\":\"delay\",\"node-name\":\"slow1\",\"open-delay\":"
             "\"%d\",\"file\":{\"driver\":\"memory\",\"node-name\":"
             "\"slow1file\",\"size\":\"1M\"}}}",
             OPEN_MS);
    t0 = now_s();
    ng_test_qmp_send(qmp, cmd);
    /* Meanwhile the daemon answers others: the node is not there yet,
     * and its name is taken (the NAC claim of the add). */
    expect_nodes(other, "mem0 mem1 slow0 ", "during the open");
    ng_test_qmp_fails(other, "slow1", "{s:s,s:{s:s,s:s,s:s}}",
                      "execute", "blockdev-add", "arguments",
                      "driver", "memory", "node-name", "slow1",
                      "size", "1M");
    reply = ng_test_qmp_raw(qmp, "");
    took = now_s() - t0;
    atomic_store(&r->stop, true);
    pthread_join(th, NULL);
    if (json_object_get(reply, "return") == NULL)
        ng_test_fail("blockdev-add of slow1 failed: %s",
                     json_dumps(reply, 0));
    json_decref(reply);
    printf("blockdev-add answered after %.2f s; %lu reads meanwhile, the "
           "slowest %.1f ms\n", took, r->reads, r->max_latency * 1000);
    if (took < OPEN_MS / 1000.0 * 0.95)
        ng_test_fail("blockdev-add answered before the open was over");
    /* A loop stalled by the open would have held one read >= 2 s. */
    if (r->max_latency >= 1.0)
        ng_test_fail("a read took %.2f s during the open",
                     r->max_latency);
    if (r->reads < 10)
        ng_test_fail("only %lu reads during a 2 s open", r->reads);
    expect_nodes(other, "mem0 mem1 slow0 slow1 slow1file ", "after the open");
    ng_test_qmp_close(other);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *qmp, *other;
    struct reader r = { 0 };
    char *before;
    double t0;

    ng_test_timeout(90);
    t0 = now_s();
    d = ng_test_start(config, "slow");
    if (now_s() - t0 < 0.45)
        ng_test_fail("the daemon listened before slow0 was open");
    /* The export on the slowly opened node serves. */
    r.nbd = nbd_create();
    if (r.nbd == NULL || nbd_connect_uri(r.nbd, d->uri) == -1)
        ng_test_fail_nbd("connect to slow");
    nbd_close(r.nbd);

    r.nbd = nbd_create();
    if (r.nbd == NULL || nbd_set_export_name(r.nbd, "demo") == -1 ||
        nbd_connect_unix(r.nbd, d->sock) == -1)
        ng_test_fail_nbd("connect to demo");
    qmp = ng_test_qmp_connect(d->control);
    slow_add_while_reading(d, qmp, &r);
    nbd_close(r.nbd);

    /* Failed opens leave nothing behind: a raw slice past the end of a
     * slow inline child fails once that child opened, and the child is
     * closed and removed; a file that does not exist fails at once. */
    before = node_names(qmp);
    t0 = now_s();
    ng_test_qmp_fails(qmp, "beyond the end of child 'badchild'",
                      "{s:s,s:{s:s,s:s,s:s,s:{s:s,s:s,s:s,s:{s:s,s:s}}}}",
                      "execute", "blockdev-add", "arguments",
                      "driver", "raw", "node-name", "bad0", "offset", "2M",
                      "file", "driver", "delay", "node-name", "badchild",
                      "open-delay", "300ms",
                      "file", "driver", "memory", "size", "1M");
    if (now_s() - t0 < 0.25)
        ng_test_fail("the raw node failed before its child opened");
    expect_nodes(qmp, before, "after a failed open above a slow child");
    ng_test_qmp_fails(qmp, "No such file",
                      "{s:s,s:{s:s,s:s,s:s,s:{s:s,s:s}}}",
                      "execute", "blockdev-add", "arguments",
                      "driver", "delay", "node-name", "bad1",
                      "open-delay", "300ms",
                      "file", "driver", "file", "filename",
                      "/nonexistent/nbdgraph-test.img");
    expect_nodes(qmp, before, "after a failed open on a missing file");
    ng_test_qmp_fails(qmp, "unknown node 'nosuch'",
                      "{s:s,s:{s:s,s:s,s:s,s:s}}",
                      "execute", "blockdev-add", "arguments",
                      "driver", "delay", "node-name", "bad2",
                      "open-delay", "300ms", "file", "nosuch");
    expect_nodes(qmp, before, "after a failed open on a missing child");
    free(before);

    /* blockdev-del answers once the node is closed; then it is gone. */
    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s}}", "execute",
                               "blockdev-del", "arguments",
                               "node-name", "slow1"));
    expect_nodes(qmp, "mem0 mem1 slow0 ", "after blockdev-del");

    /* Stopped while an open runs: the daemon waits for it, closes the
     * node and exits cleanly (ng_test_stop wants status 0).  The look
     * goes through another connection: this one's next command waits
     * for the add's answer (one command at a time per client). */
    ng_test_qmp_send(qmp, "{\"execute\":\"blockdev-add\",\"arguments\":"
                     "{\"driver\":\"delay\",\"node-name\":\"late\","
                     "\"open-delay\":\"500ms\",\"file\":\"mem1\"}}");
    other = ng_test_qmp_connect(d->control);
    expect_nodes(other, "mem0 mem1 slow0 ", "while 'late' opens");
    ng_test_qmp_close(other);
    ng_test_stop(d);
    ng_test_qmp_close(qmp);
    return 0;
}
