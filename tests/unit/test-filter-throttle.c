/* tests/unit/test-filter-throttle.c: the throttle filter and throttle
 * groups, end to end: a graph on a real libuv loop, loads through
 * BlockBackends, rates checked.  Timing checks use wide enough margins for
 * a loaded machine but still catch a filter that does not throttle.
 *
 * Each case draws its graph; "bb" is the BlockBackend the requests enter.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "graph/value.h"
#include "graph/graph.h"
#include "filters/throttle.h"
#include "tests/unit/graph-fixture.h"

/* A rate must be within pct percent of want. */
#define CHECK_RATE(got, want, pct) \
    do { \
        double got_ = (got), want_ = (want); \
        if (got_ < want_ * (1 - (pct) / 100.0) || \
            got_ > want_ * (1 + (pct) / 100.0)) \
            fail("%s:%d: %s = %.1f, expected %.1f +- %d%%", __FILE__, \
                 __LINE__, #got, got_, want_, (pct)); \
    } while (0)

/* ---- A load generator --------------------------------------------------- */

#define LOAD_MAX_DEPTH 64

/* Keeps `depth` requests in flight through one BB, resubmitting each as
 * it completes (from the test's loop, not from inside the completion, as
 * an NBD server would), offsets walking through the first `span` bytes. */
struct load {
    struct ng_bb *bb;
    enum ng_op op;
    uint64_t len, span, next_off;
    unsigned depth, inflight;
    uint64_t completed, errors;
    bool stop;
    unsigned char *buf;
    struct ng_req reqs[LOAD_MAX_DEPTH];
    struct ng_req *ready[LOAD_MAX_DEPTH];
    unsigned nready;
};

static void
load_done(struct ng_req *req, int ret)
{
    struct load *l = req->opaque;

    l->inflight--;
    l->completed++;
    if (ret < 0)
        l->errors++;
    l->ready[l->nready++] = req;
}

static void
load_init(struct load *l, struct ng_bb *bb, enum ng_op op, uint64_t len,
          uint64_t span, unsigned depth)
{
    memset(l, 0, sizeof *l);
    CHECK(depth <= LOAD_MAX_DEPTH);
    l->bb = bb;
    l->op = op;
    l->len = len;
    l->span = span;
    l->depth = depth;
    l->buf = malloc(len);
    CHECK(l->buf != NULL);
    fill(l->buf, len, 0, 9);
    for (unsigned i = 0; i < depth; i++)
        l->ready[l->nready++] = &l->reqs[i];
}

/* Submit what is ready; returns true if anything was. */
static bool
load_pump(struct load *l)
{
    bool any = false;

    while (!l->stop && l->nready > 0) {
        struct ng_req *req = l->ready[--l->nready];

        memset(req, 0, sizeof *req);
        ng_req_init(req, l->op, l->next_off, l->len, 0);
        ng_req_set_buf(req, l->buf);
        req->done = load_done;
        req->opaque = l;
        l->next_off = (l->next_off + l->len) % l->span;
        l->inflight++;
        any = true;
        ng_bb_submit(l->bb, req);
    }
    return any;
}

/* Run the loads until `deadline` (uv_hrtime()). */
static void
load_run(struct fixture *f, struct load **loads, size_t n,
         uint64_t deadline)
{
    tick_start(f);
    while (uv_hrtime() < deadline) {
        bool any = false;

        for (size_t i = 0; i < n; i++)
            any |= load_pump(loads[i]);
        uv_run(&f->loop, any ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    }
    tick_stop(f);
}

/* Stop submitting and wait for what is in flight. */
static void
load_finish(struct fixture *f, struct load *l)
{
    l->stop = true;
    while (l->inflight > 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    CHECK(l->errors == 0);
    free(l->buf);
    l->buf = NULL;
}

/* Requests per second between two samples. */
struct sample {
    uint64_t t, n;
};

static struct sample
sample(const struct load *l)
{
    return (struct sample){ uv_hrtime(), l->completed };
}

static double
rate(struct sample a, struct sample b)
{
    return (double)(b.n - a.n) * 1e9 / (double)(b.t - a.t);
}

/* ---- throttle ----------------------------------------------------------- */

/*   bb -> thr (throttle, iops-total 1000) -> mem (memory, 64M)
 *
 * 32 reads in flight; after the initial burst (a tenth of a second's
 * worth) the rate is the limit. */
static void
test_throttle_iops(void)
{
    struct fixture f;
    struct ng_bb *bb;
    struct load l, *ls[] = { &l };
    struct sample s0, s1;
    uint64_t t0;

    setup(&f, "throttle: iops-total 1000 with 32 requests in flight");
    add(&f, "mem", yaml("{driver: memory, size: 64M}"));
    add(&f, "thr", yaml("{driver: throttle, file: mem, "
                        "limits: {iops-total: 1000}}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "thr"), true);
    load_init(&l, bb, NG_OP_READ, 4 * KiB, 64 * MiB, 32);
    t0 = uv_hrtime();
    load_run(&f, ls, 1, t0 + 20 * MS);
    /* The burst: about 100 at once, not 1000. */
    CHECK(l.completed >= 90 && l.completed <= 160);
    load_run(&f, ls, 1, t0 + 500 * MS);
    s0 = sample(&l);
    load_run(&f, ls, 1, t0 + 3000 * MS);
    s1 = sample(&l);
    printf("  %.1f IOPS over %.2f s (%.1f from the start)\n", rate(s0, s1),
           (double)(s1.t - s0.t) / 1e9,
           rate((struct sample){ t0, 0 }, s1));
    CHECK_RATE(rate(s0, s1), 1000, 5);
    load_finish(&f, &l);
    teardown(&f);
}

/*   bb -> thr (throttle, bps-total 8M) -> mem (memory, 64M)
 *   bb2 -> thr2 (throttle, iops-total 1000, iops-size 4K) -> mem
 */
static void
test_throttle_bps(void)
{
    struct fixture f;
    struct ng_bb *bb, *bb2;
    struct load l, l2, *ls[] = { &l }, *ls2[] = { &l2 };
    struct sample s0, s1;
    uint64_t t0;

    setup(&f, "throttle: bps-total 8M; iops-size");
    add(&f, "mem", yaml("{driver: memory, size: 64M}"));
    add(&f, "thr", yaml("{driver: throttle, file: mem, "
                        "limits: {bps-total: 8M}}"));
    add(&f, "thr2", yaml("{driver: throttle, file: mem, "
                         "limits: {iops-total: 1000, iops-size: 4K}}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "thr"), true);
    bb2 = bb_new(&f, "bb2", ng_graph_find(f.g, "thr2"), true);

    /* 8 KiB writes at 8 MiB/s: 1024 a second. */
    load_init(&l, bb, NG_OP_WRITE, 8 * KiB, 64 * MiB, 32);
    t0 = uv_hrtime();
    load_run(&f, ls, 1, t0 + 300 * MS);
    s0 = sample(&l);
    load_run(&f, ls, 1, t0 + 1300 * MS);
    s1 = sample(&l);
    printf("  %.0f bytes/s\n", rate(s0, s1) * 8 * KiB);
    CHECK_RATE(rate(s0, s1) * 8 * KiB, 8 * MiB, 5);
    load_finish(&f, &l);

    /* 16 KiB reads count as 4 operations of 4 KiB: 250 a second. */
    load_init(&l2, bb2, NG_OP_READ, 16 * KiB, 64 * MiB, 32);
    t0 = uv_hrtime();
    load_run(&f, ls2, 1, t0 + 200 * MS);
    s0 = sample(&l2);
    load_run(&f, ls2, 1, t0 + 1000 * MS);
    s1 = sample(&l2);
    printf("  %.1f requests/s of 16K with iops-size 4K\n", rate(s0, s1));
    CHECK_RATE(rate(s0, s1), 250, 8);
    load_finish(&f, &l2);
    teardown(&f);
}

/*   bb -> thr (throttle, iops-total 200, -max 800) -> mem
 *   bb2 -> thr2 (throttle, iops-total 10, -max 200, -max-length 2) -> mem
 */
static void
test_throttle_burst(void)
{
    struct fixture f;
    struct ng_bb *bb, *bb2;
    struct load l, l2, *ls[] = { &l }, *ls2[] = { &l2 };
    struct sample s0, s1;
    uint64_t t0;

    setup(&f, "throttle: bursts");
    add(&f, "mem", yaml("{driver: memory, size: 64M}"));
    add(&f, "thr", yaml("{driver: throttle, file: mem, limits: "
                        "{iops-total: 200, iops-total-max: 800}}"));
    add(&f, "thr2", yaml("{driver: throttle, file: mem, limits: "
                         "{iops-total: 10, iops-total-max: 200, "
                         "iops-total-max-length: 2}}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "thr"), true);
    bb2 = bb_new(&f, "bb2", ng_graph_find(f.g, "thr2"), true);

    /* A burst of max * length (800) at once, then the average. */
    load_init(&l, bb, NG_OP_READ, 4 * KiB, 64 * MiB, 32);
    t0 = uv_hrtime();
    load_run(&f, ls, 1, t0 + 100 * MS);
    printf("  %" PRIu64 " requests in the first 100 ms\n", l.completed);
    CHECK(l.completed >= 790 && l.completed <= 850);
    load_run(&f, ls, 1, t0 + 400 * MS);
    s0 = sample(&l);
    load_run(&f, ls, 1, t0 + 1200 * MS);
    s1 = sample(&l);
    printf("  then %.1f IOPS\n", rate(s0, s1));
    CHECK_RATE(rate(s0, s1), 200, 10);
    load_finish(&f, &l);

    /* A burst longer than a second goes no faster than max: about 200 a
     * second, after a first tenth of a second's worth (20). */
    load_init(&l2, bb2, NG_OP_READ, 4 * KiB, 64 * MiB, 32);
    t0 = uv_hrtime();
    load_run(&f, ls2, 1, t0 + 500 * MS);
    printf("  %" PRIu64 " requests in 500 ms at burst rate 200\n",
           l2.completed);
    CHECK(l2.completed >= 105 && l2.completed <= 135);
    load_finish(&f, &l2);
    teardown(&f);
}

/*   bb -> thr (throttle, iops-total 20, later 5000, ...) -> mem
 *
 * Live changes with requests waiting: none lost, FIFO order kept. */
static void
test_throttle_reconfigure(void)
{
    enum { N = 40 };
    struct fixture f;
    struct ng_node *thr;
    struct ng_bb *bb;
    struct ng_req reqs[N];
    struct io_result res[N];
    unsigned char buf[4096];
    unsigned done = 0;

    setup(&f, "throttle: reconfigure with requests waiting");
    add(&f, "mem", yaml("{driver: memory, size: 4M}"));
    thr = add(&f, "thr", yaml("{driver: throttle, file: mem, "
                              "limits: {iops-total: 20}}"));
    bb = bb_new(&f, "bb", thr, true);
    for (int i = 0; i < N; i++)
        io_start(bb, &reqs[i], &res[i], i % 2 ? NG_OP_WRITE : NG_OP_READ,
                 (uint64_t)i * 4096, 4096, 0, buf);
    wait_ms(&f, 50);
    for (int i = 0; i < N; i++)
        done += res[i].done;
    printf("  %u of %d done before the change\n", done, N);
    CHECK(done >= 2 && done <= 6);

    /* Bad changes are refused and change nothing. */
    reconfigure_fails(thr, "{limits: {iops-total-max: 5}}",
                      "'iops-total-max' needs 'iops-total'");
    reconfigure_fails(thr, "{limits: {iops: 5}}",
                      "test:1:11: unknown throttle limit 'iops'");
    reconfigure_fails(thr, "{file: other}", "option 'file' cannot be "
                      "changed on a live node");
    reconfigure_ok(thr, "{driver: throttle, file: mem}");

    /* Slower still: they keep waiting. */
    reconfigure_ok(thr, "{limits: {iops-total: 1}}");
    wait_ms(&f, 50);
    /* Move to a new shared group with a high limit: all go. */
    reconfigure_ok(thr, "{throttle-group: fast, "
                        "limits: {iops-total: 5000}}");
    CHECK(ng_throttle_group_find(f.g, "fast") != NULL);
    for (int i = 0; i < N; i++)
        io_wait(&f, &res[i]);
    for (int i = 0; i < N; i++) {
        CHECK_RET(res[i].ret, 0);
        CHECK(reqs[i].op == (i % 2 ? NG_OP_WRITE : NG_OP_READ));
        /* Reads and writes each kept their order. */
        if (i >= 2)
            CHECK(res[i].seq > res[i - 2].seq);
    }
    /* Back to a private group; "fast" goes with its last user. */
    reconfigure_ok(thr, "{throttle-group: '', limits: {iops-total: 100}}");
    CHECK(ng_throttle_group_find(f.g, "fast") == NULL);
    teardown(&f);
}

/*   bb-a -> ta (throttle, group g1) -> mem-a
 *   bb-b -> tb (throttle, group g1) -> mem-b
 *
 * Together they get the group's rate, each a fair share. */
static void
test_throttle_group(void)
{
    struct fixture f;
    struct ng_bb *bba, *bbb;
    struct load la, lb, *ls[] = { &la, &lb };
    struct sample a0, a1, b0, b1;
    struct ng_error err = { 0 };
    struct ng_value *lim;
    double ra, rb;
    uint64_t t0;

    setup(&f, "throttle: a group shared by two nodes");
    add(&f, "mem-a", yaml("{driver: memory, size: 64M}"));
    add(&f, "mem-b", yaml("{driver: memory, size: 64M}"));
    add_fails(&f, "tx", yaml("{driver: throttle, file: mem-a, "
                             "throttle-group: g1}"),
              "unknown throttle group 'g1'");
    add(&f, "ta", yaml("{driver: throttle, file: mem-a, throttle-group: g1, "
                       "limits: {iops-total: 600}}"));
    add_fails(&f, "tx", yaml("{driver: throttle, file: mem-a, throttle-group: "
                             "g1, limits: {iops-total: 5}}"), "other limits");
    add(&f, "tb", yaml("{driver: throttle, file: mem-b, throttle-group: g1}"));
    bba = bb_new(&f, "bb-a", ng_graph_find(f.g, "ta"), true);
    bbb = bb_new(&f, "bb-b", ng_graph_find(f.g, "tb"), true);
    load_init(&la, bba, NG_OP_READ, 4 * KiB, 64 * MiB, 16);
    load_init(&lb, bbb, NG_OP_WRITE, 4 * KiB, 64 * MiB, 16);
    t0 = uv_hrtime();
    load_run(&f, ls, 2, t0 + 300 * MS);
    a0 = sample(&la);
    b0 = sample(&lb);
    load_run(&f, ls, 2, t0 + 1500 * MS);
    a1 = sample(&la);
    b1 = sample(&lb);
    ra = rate(a0, a1);
    rb = rate(b0, b1);
    printf("  %.1f + %.1f = %.1f IOPS\n", ra, rb, ra + rb);
    CHECK_RATE(ra + rb, 600, 5);
    CHECK(ra > 0.4 * (ra + rb) && rb > 0.4 * (ra + rb));

    /* Declaring adopts the group; its limits change for both at once. */
    lim = yaml("{iops-total: 10}");
    CHECK(ng_throttle_group_declare(f.g, "g1", lim, &err) == 0);
    CHECK(ng_throttle_group_declare(f.g, "g1", lim, &err) == -1);
    printf("  refused as expected: %s\n", err.msg);
    CHECK(ng_throttle_group_set_limits(f.g, "nope", lim, &err) == -1);
    ng_value_free(lim);
    t0 = uv_hrtime();
    a0 = sample(&la);
    b0 = sample(&lb);
    load_run(&f, ls, 2, t0 + 300 * MS);
    CHECK(la.completed - a0.n + lb.completed - b0.n <= 6);
    lim = yaml("{iops-total: 100000}");
    CHECK(ng_throttle_group_set_limits(f.g, "g1", lim, &err) == 0);
    ng_value_free(lim);
    load_finish(&f, &la);
    load_finish(&f, &lb);

    /* The group outlives its nodes while declared, and no longer. */
    ng_bb_free(bba);
    ng_bb_free(bbb);
    CHECK(ng_graph_del_node(f.g, "ta", NULL, NULL, NULL) == 0);
    CHECK(ng_graph_del_node(f.g, "tb", NULL, NULL, NULL) == 0);
    CHECK(ng_throttle_group_find(f.g, "g1") != NULL);
    add(&f, "tc", yaml("{driver: throttle, file: mem-a, throttle-group: g1}"));
    CHECK(ng_throttle_group_undeclare(f.g, "g1", &err) == 0);
    CHECK(ng_throttle_group_find(f.g, "g1") != NULL);
    CHECK(ng_graph_del_node(f.g, "tc", NULL, NULL, NULL) == 0);
    CHECK(ng_throttle_group_find(f.g, "g1") == NULL);
    CHECK(ng_throttle_group_undeclare(f.g, "g1", &err) == -1);

    /* A declared group nobody uses is freed with the graph. */
    CHECK(ng_throttle_group_declare(f.g, "g2", NULL, &err) == 0);
    teardown(&f);
}

static void
test_throttle_options(void)
{
    struct fixture f;

    setup(&f, "throttle: option errors");
    add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    add_fails(&f, "t", yaml("{driver: throttle, file: mem}"),
              "give 'throttle-group' or 'limits'");
    add_fails(&f, "t", yaml("{driver: throttle, file: mem, limits: "
                            "{bps-total: 1M, bps-read: 1M}}"),
              "'bps-total' cannot be combined with 'bps-read' or "
              "'bps-write'");
    add_fails(&f, "t", yaml("{driver: throttle, file: mem, limits: "
                            "{iops-read: 100, iops-read-max: 50}}"),
              "'iops-read-max' must be at least 'iops-read'");
    add_fails(&f, "t", yaml("{driver: throttle, file: mem, limits: "
                            "{iops-write: 100, iops-write-max-length: 5}}"),
              "'iops-write-max-length' needs 'iops-write-max'");
    add_fails(&f, "t", yaml("{driver: throttle, file: mem, limits: "
                            "{bps-write: lots}}"), "test:1:51: 'bps-write'");
    add_fails(&f, "t", yaml("{driver: throttle, file: mem, limits: 5}"),
              "'limits' must be a mapping");
    add_fails(&f, "t", yaml("{driver: throttle, file: mem, throttle-group: "
                            "'9x', limits: {iops-total: 1}}"),
              "invalid throttle group name '9x'");
    /* Everything QEMU's ThrottleLimits has. */
    add(&f, "t", yaml("{driver: throttle, file: mem, limits: {"
                      "iops-read: 1000, iops-read-max: 2000, "
                      "iops-read-max-length: 3, iops-write: 10, "
                      "iops-write-max: 20, iops-write-max-length: 1, "
                      "bps-read: 1M, bps-read-max: 2M, bps-read-max-length: 2, "
                      "bps-write: 100K, bps-write-max: 200K, "
                      "bps-write-max-length: 4, iops-size: 8K}}"));
    add(&f, "t2", yaml("{driver: throttle, file: mem, limits: {"
                       "iops-total: 1, iops-total-max: 2, "
                       "iops-total-max-length: 3, bps-total: 4, "
                       "bps-total-max: 5, bps-total-max-length: 6}}"));
    teardown(&f);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_throttle_options();
    test_throttle_reconfigure();
    test_throttle_iops();
    test_throttle_bps();
    test_throttle_burst();
    test_throttle_group();
    printf("all throttle tests passed\n");
    return 0;
}
