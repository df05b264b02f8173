/* tests/test-splice.c: splice a filter in and out 200 times while
 * clients write and verify a rolling pattern as fast as they can.
 *
 * Afterwards: no I/O error, no disconnect, every byte verified, and the
 * graph exactly as before.  Also: the refusals of bad mutations change
 * nothing, and a filter can be spliced in for one export only.
 *
 * With NG_SPLICE_REPORT=1 it prints write latency p50/p99 without and
 * during splices (contrib/bench/splice-pause runs it that way). */
#include <config.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define EXPORT_SIZE     (64u << 20)
#define WORKERS         4
#define CHUNK           (64u << 10)
#define CHUNKS_EACH     (EXPORT_SIZE / CHUNK / WORKERS)
#define MAX_SAMPLES     (1u << 20)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n"
    "  demo-ro: { node: mem0 }\n";

struct shared {
    const char *uri;
    atomic_int phase;           /* 0 quiet, 1 splicing, 2 stop */
};

struct worker {
    struct shared *sh;
    unsigned index;
    unsigned seeds[CHUNKS_EACH];    /* last pattern written per chunk */
    unsigned long ops;
    double *lat[2];                 /* write latencies (µs) per phase */
    size_t n_lat[2];
    char error[256];
};

static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static uint64_t
chunk_offset(const struct worker *w, unsigned chunk)
{
    return ((uint64_t)w->index * CHUNKS_EACH + chunk) * CHUNK;
}

static void
record(struct worker *w, int phase, double us)
{
    if (phase < 2 && w->n_lat[phase] < MAX_SAMPLES)
        w->lat[phase][w->n_lat[phase]++] = us;
}

/* Write a new pattern into the next chunk, read it back, compare. */
static int
write_and_verify(struct worker *w, struct nbd_handle *nbd, unsigned chunk,
                 unsigned seed, char *out, char *in)
{
    uint64_t off = chunk_offset(w, chunk);
    int phase = atomic_load(&w->sh->phase);
    double t0 = now_us();
    long long bad;

    ng_test_fill_pattern(out, CHUNK, off, seed);
    if (nbd_pwrite(nbd, out, CHUNK, off, 0) == -1) {
        snprintf(w->error, sizeof w->error, "pwrite at %llu: %s",
                 (unsigned long long)off, nbd_get_error());
        return -1;
    }
    record(w, phase, now_us() - t0);
    w->seeds[chunk] = seed;
    if (nbd_pread(nbd, in, CHUNK, off, 0) == -1) {
        snprintf(w->error, sizeof w->error, "pread at %llu: %s",
                 (unsigned long long)off, nbd_get_error());
        return -1;
    }
    bad = ng_test_check_pattern(in, CHUNK, off, seed);
    if (bad >= 0) {
        snprintf(w->error, sizeof w->error, "data differs at %llu",
                 (unsigned long long)(off + (uint64_t)bad));
        return -1;
    }
    return 0;
}

static void *
worker_main(void *opaque)
{
    struct worker *w = opaque;
    struct nbd_handle *nbd = nbd_create();
    char *out = malloc(CHUNK), *in = malloc(CHUNK);
    unsigned chunk = 0, seed = w->index << 24;

    if (nbd == NULL || out == NULL || in == NULL ||
        nbd_connect_uri(nbd, w->sh->uri) == -1) {
        snprintf(w->error, sizeof w->error, "connect: %s", nbd_get_error());
        goto out;
    }
    while (atomic_load(&w->sh->phase) < 2) {
        if (write_and_verify(w, nbd, chunk, ++seed, out, in) == -1)
            break;
        w->ops++;
        chunk = (chunk + 1) % CHUNKS_EACH;
    }
    if (w->error[0] == '\0' && nbd_shutdown(nbd, 0) == -1)
        snprintf(w->error, sizeof w->error, "shutdown: %s",
                 nbd_get_error());
out:
    nbd_close(nbd);
    free(out);
    free(in);
    return NULL;
}

static json_t *
graph_of(struct ng_test_qmp *q)
{
    return ng_test_qmp_ok(q, "{s:s}", "execute", "query-graph");
}

static void
expect_graph(struct ng_test_qmp *q, json_t *want, const char *when)
{
    json_t *now = graph_of(q);

    if (!json_equal(now, want))
        ng_test_fail("graph changed %s:\n%s\nwas:\n%s", when,
                     json_dumps(now, JSON_INDENT(1)),
                     json_dumps(want, JSON_INDENT(1)));
    json_decref(now);
}

static void
splice_once(struct ng_test_qmp *q)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:{s:s,s:s}}}",
                               "execute", "blockdev-insert-filter",
                               "arguments", "node", "mem0", "filter",
                               "driver", "nofilter", "node-name", "f1"));
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}",
                               "execute", "blockdev-remove-filter",
                               "arguments", "node-name", "f1"));
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void
report_latency(struct worker *ws, int phase, const char *label)
{
    size_t n = 0, i, k;
    double *all;

    for (i = 0; i < WORKERS; i++)
        n += ws[i].n_lat[phase];
    all = malloc((n ? n : 1) * sizeof *all);
    for (i = 0, k = 0; i < WORKERS; i++) {
        memcpy(all + k, ws[i].lat[phase], ws[i].n_lat[phase] * sizeof *all);
        k += ws[i].n_lat[phase];
    }
    qsort(all, n, sizeof *all, cmp_double);
    if (n > 0)
        printf("splice-pause %s: writes=%zu p50_us=%.1f p99_us=%.1f "
               "max_us=%.1f\n", label, n, all[n / 2], all[n * 99 / 100],
               all[n - 1]);
    free(all);
}

/* Run the writers for `quiet_ms`, then while splicing `splices` times. */
static void
splice_under_load(struct ng_test_daemon *d, struct ng_test_qmp *q,
                  unsigned splices, unsigned quiet_ms)
{
    struct shared sh = { .uri = d->uri };
    struct worker *ws = calloc(WORKERS, sizeof *ws);
    pthread_t th[WORKERS];
    struct timespec quiet = { quiet_ms / 1000, (quiet_ms % 1000) * 1000000L };
    unsigned i;

    for (i = 0; i < WORKERS; i++) {
        ws[i].sh = &sh;
        ws[i].index = i;
        ws[i].lat[0] = malloc(MAX_SAMPLES * sizeof(double));
        ws[i].lat[1] = malloc(MAX_SAMPLES * sizeof(double));
        if (pthread_create(&th[i], NULL, worker_main, &ws[i]) != 0)
            ng_test_fail("pthread_create");
    }
    nanosleep(&quiet, NULL);
    atomic_store(&sh.phase, 1);
    for (i = 0; i < splices; i++)
        splice_once(q);
    atomic_store(&sh.phase, 2);
    for (i = 0; i < WORKERS; i++) {
        pthread_join(th[i], NULL);
        if (ws[i].error[0] != '\0')
            ng_test_fail("worker %u: %s", i, ws[i].error);
        if (ws[i].n_lat[1] == 0)
            ng_test_fail("worker %u did no I/O while splicing", i);
    }
    printf("%u splices under load; writes per worker:", splices);
    for (i = 0; i < WORKERS; i++)
        printf(" %lu", ws[i].ops);
    printf("\n");
    if (getenv("NG_SPLICE_REPORT") != NULL) {
        report_latency(ws, 0, "without-splices");
        report_latency(ws, 1, "during-splices");
    }
    /* Every chunk still holds the last pattern written to it. */
    struct nbd_handle *nbd = nbd_create();
    char *buf = malloc(CHUNK);

    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect for final check");
    for (i = 0; i < WORKERS; i++) {
        for (unsigned c = 0; c < CHUNKS_EACH; c++) {
            uint64_t off = chunk_offset(&ws[i], c);

            if (ws[i].seeds[c] == 0)
                continue;       /* never written */
            if (nbd_pread(nbd, buf, CHUNK, off, 0) == -1)
                ng_test_fail_nbd("final pread");
            if (ng_test_check_pattern(buf, CHUNK, off, ws[i].seeds[c]) >= 0)
                ng_test_fail("final check: chunk at %llu differs",
                             (unsigned long long)off);
        }
        free(ws[i].lat[0]);
        free(ws[i].lat[1]);
    }
    nbd_close(nbd);
    free(buf);
    free(ws);
}

/* Each bad mutation is refused with a clear error and changes nothing. */
static void
refusals(struct ng_test_qmp *q, json_t *before)
{
    ng_test_qmp_fails(q, "node 'mem0' is in use", "{s:s,s:{s:s}}",
                      "execute", "blockdev-del", "arguments",
                      "node-name", "mem0");
    ng_test_qmp_fails(q, "node 'mem0' is not a filter", "{s:s,s:{s:s}}",
                      "execute", "blockdev-remove-filter", "arguments",
                      "node-name", "mem0");
    ng_test_qmp_fails(q, "node 'nope' not found",
                      "{s:s,s:{s:s,s:{s:s,s:s}}}",
                      "execute", "blockdev-insert-filter", "arguments",
                      "node", "nope", "filter", "driver", "nofilter",
                      "node-name", "f9");
    ng_test_qmp_fails(q, "node 'mem0' already exists",
                      "{s:s,s:{s:s,s:s,s:s}}", "execute", "blockdev-add",
                      "arguments", "driver", "memory", "node-name", "mem0",
                      "size", "1M");
    ng_test_qmp_fails(q, "node 'mem0' already exists",
                      "{s:s,s:{s:s,s:{s:s,s:s}}}",
                      "execute", "blockdev-insert-filter", "arguments",
                      "node", "mem0", "filter", "driver", "nofilter",
                      "node-name", "mem0");
    ng_test_qmp_fails(q, "'memory' is not a filter driver",
                      "{s:s,s:{s:s,s:{s:s,s:s}}}",
                      "execute", "blockdev-insert-filter", "arguments",
                      "node", "mem0", "filter", "driver", "memory",
                      "node-name", "f9");
    expect_graph(q, before, "after refused mutations");
}

/* A filter spliced in for export demo only leaves demo-ro on mem0. */
static void
splice_for_one_export(struct ng_test_qmp *q, json_t *before)
{
    json_t *g, *bbs, *bb;
    size_t i;

    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:{s:s,s:s},s:[s]}}",
                               "execute", "blockdev-insert-filter",
                               "arguments", "node", "mem0", "filter",
                               "driver", "nofilter", "node-name", "f2",
                               "exports", "demo"));
    g = graph_of(q);
    bbs = json_object_get(g, "block-backends");
    json_array_foreach(bbs, i, bb) {
        const char *name = json_string_value(json_object_get(bb, "name"));
        const char *root = json_string_value(json_object_get(bb, "root"));
        const char *want = strcmp(name, "demo") == 0 ? "f2" : "mem0";

        if (strcmp(root, want) != 0)
            ng_test_fail("export %s: root %s, expected %s", name, root,
                         want);
    }
    json_decref(g);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "blockdev-remove-filter", "arguments",
                               "node-name", "f2"));
    expect_graph(q, before, "after a one-export splice");
}

int
main(void)
{
    const char *env = getenv("NG_SPLICES");
    unsigned splices = env ? (unsigned)atoi(env) : 200;
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    json_t *before;

    ng_test_timeout(300);
    d = ng_test_start(config, "demo");
    q = ng_test_qmp_connect(d->control);
    before = graph_of(q);
    splice_under_load(d, q, splices, 1000);
    expect_graph(q, before, "after splicing");
    if (ng_test_qmp_events(q) < 2 * splices)
        ng_test_fail("expected %u GRAPH_CHANGED events, saw %u",
                     2 * splices, ng_test_qmp_events(q));
    refusals(q, before);
    splice_for_one_export(q, before);
    json_decref(before);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    printf("splice tests passed\n");
    return 0;
}
