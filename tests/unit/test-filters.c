/* tests/unit/test-filters.c: the filter drivers (throttle, copy-on-read,
 * detect-zeroes, blkdebug, delay, log) and the memory driver's backing
 * chain, end to end: a graph on a real libuv loop, requests through
 * BlockBackends, results, data, extents and timing checked.
 *
 * Each case draws its graph; "bb" is the BlockBackend the requests enter.
 * Timing checks use wide enough margins for a loaded machine but still
 * catch a filter that does not throttle or does not delay.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config/config.h"
#include "graph/value.h"
#include "graph/graph.h"
#include "filters/filters.h"
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

/* ---- Reconfiguring live nodes ------------------------------------------ */

static int
reconfigure(struct ng_node *n, const char *text, struct ng_error *err)
{
    struct ng_value *o = yaml(text);
    int r;

    CHECK(n->driver->reconfigure != NULL);
    r = n->driver->reconfigure(n, o, err);
    ng_value_free(o);
    return r;
}

static void
reconfigure_ok(struct ng_node *n, const char *text)
{
    struct ng_error err = { 0 };

    if (reconfigure(n, text, &err) == -1)
        fail("reconfiguring '%s' with %s: %s", n->name, text, err.msg);
}

static void
reconfigure_fails(struct ng_node *n, const char *text, const char *want)
{
    struct ng_error err = { 0 };

    if (reconfigure(n, text, &err) == 0)
        fail("reconfiguring '%s' with %s succeeded", n->name, text);
    if (strstr(err.msg, want) == NULL)
        fail("reconfiguring '%s': got '%s', expected '%s'", n->name,
             err.msg, want);
    printf("  refused as expected: %s\n", err.msg);
}

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
        req->buf = l->buf;
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
    CHECK(ng_graph_del_node(f.g, "ta", NULL) == 0);
    CHECK(ng_graph_del_node(f.g, "tb", NULL) == 0);
    CHECK(ng_throttle_group_find(f.g, "g1") != NULL);
    add(&f, "tc", yaml("{driver: throttle, file: mem-a, throttle-group: g1}"));
    CHECK(ng_throttle_group_undeclare(f.g, "g1", &err) == 0);
    CHECK(ng_throttle_group_find(f.g, "g1") != NULL);
    CHECK(ng_graph_del_node(f.g, "tc", NULL) == 0);
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

/* ---- memory with a backing node ----------------------------------------- */

#define ONLY_HOLE NG_EXTENT_HOLE    /* LOCAL_ONLY: the backing's */
#define ZERO NG_EXTENT_ZERO         /* allocated, reads as zeroes */

/*   bb -> top (memory, 1M, backing: base)
 *   base-bb -> base (memory, 1M)
 *   bb2 -> top2 (memory, 2M, backing: base): longer than its backing
 */
static void
test_memory_backing(void)
{
    struct fixture f;
    struct ng_node *top;
    struct ng_bb *bb, *base_bb, *bb2;
    struct ng_extent ext[16];
    unsigned char *buf = malloc(2 * MiB);

    CHECK(buf != NULL);
    setup(&f, "memory: backing node");
    add(&f, "base", yaml("{driver: memory, size: 1M}"));
    top = add(&f, "top", yaml("{driver: memory, size: 1M, backing: base}"));
    CHECK(ng_node_child_role(top, NG_ROLE_BACKING) == ng_graph_find(f.g, "base"));
    bb = bb_new(&f, "bb", top, true);
    base_bb = bb_new(&f, "base-bb", ng_graph_find(f.g, "base"), true);
    fill(buf, MiB, 0, 1);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);

    /* Reads come from the backing; the top has nothing of its own. */
    memset(buf, 0, MiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    CHECK(extents(&f, bb, 0, MiB, 0, ext, 16) == 1);
    check_extent(&ext[0], MiB, DATA);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 1);
    check_extent(&ext[0], MiB, ONLY_HOLE);

    /* A partial write copies its page up first. */
    fill(buf, 10000, 70000, 2);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 70000, 10000, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 64 * KiB, 0, buf), 0);
    check_filled(buf, 70000 - 64 * KiB, 64 * KiB, 1);
    check_filled(buf + 70000 - 64 * KiB, 10000, 70000, 2);
    check_filled(buf + 80000 - 64 * KiB, 128 * KiB - 80000, 80000, 1);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 3);
    check_extent(&ext[0], 64 * KiB, ONLY_HOLE);
    check_extent(&ext[1], 64 * KiB, DATA);
    check_extent(&ext[2], MiB - 128 * KiB, ONLY_HOLE);

    /* Zeroing a whole page must not let the backing show through. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 128 * KiB, 64 * KiB,
                 NG_REQ_MAY_TRIM, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 192 * KiB, 64 * KiB, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB, 128 * KiB, 0, buf), 0);
    check_zero(buf, 128 * KiB, 128 * KiB);
    /* Partly zeroing an unallocated page copies it up... */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 270000, 1000, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 256 * KiB, 64 * KiB, 0, buf), 0);
    check_filled(buf, 270000 - 256 * KiB, 256 * KiB, 1);
    check_zero(buf + 270000 - 256 * KiB, 1000, 270000);
    check_filled(buf + 271000 - 256 * KiB, 320 * KiB - 271000, 271000, 1);
    /* ... unless that could not be fast. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 400000, 1000,
                 NG_REQ_FAST_ZERO, NULL), -ENOTSUP);

    /* Block status: the top's pages, the backing's answer elsewhere.
     * Punch a hole in the backing to see it come through. */
    CHECK_RET(io(&f, base_bb, NG_OP_TRIM, 512 * KiB, 64 * KiB, 0, NULL), 0);
    CHECK(extents(&f, bb, 0, MiB, 0, ext, 16) == 5);
    check_extent(&ext[0], 128 * KiB, DATA);     /* backing, then top */
    check_extent(&ext[1], 128 * KiB, ZERO);     /* zeroed in the top */
    check_extent(&ext[2], 256 * KiB, DATA);     /* top page 4, backing */
    check_extent(&ext[3], 64 * KiB, HOLE);      /* the backing's hole */
    check_extent(&ext[4], 448 * KiB, DATA);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_REQ_ONE, ext, 16) == 1);
    check_extent(&ext[0], 128 * KiB, DATA);
    CHECK(extents(&f, bb, 140000, MiB - 140000, 0, ext, 2) == 2);
    check_extent(&ext[0], 256 * KiB - 140000, ZERO);
    check_extent(&ext[1], 256 * KiB, DATA);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 5);
    check_extent(&ext[2], 128 * KiB, ZERO);
    check_extent(&ext[3], 64 * KiB, DATA);
    check_extent(&ext[4], MiB - 320 * KiB, ONLY_HOLE);

    /* Past the backing's end the top reads zeroes. */
    add(&f, "top2", yaml("{driver: memory, size: 2M, backing: base}"));
    bb2 = bb_new(&f, "bb2", ng_graph_find(f.g, "top2"), true);
    memset(buf, 0xaa, 2 * MiB);
    CHECK_RET(io(&f, bb2, NG_OP_READ, MiB - 100, 200, 0, buf), 0);
    check_filled(buf, 100, MiB - 100, 1);
    check_zero(buf + 100, 100, MiB);
    CHECK(extents(&f, bb2, 512 * KiB, 1536 * KiB, 0, ext, 16) == 3);
    check_extent(&ext[0], 64 * KiB, HOLE);
    check_extent(&ext[1], 448 * KiB, DATA);
    check_extent(&ext[2], MiB, HOLE);
    fill(buf, 4096, MiB + 1000, 3);
    CHECK_RET(io(&f, bb2, NG_OP_WRITE, MiB + 1000, 4096, 0, buf), 0);
    CHECK_RET(io(&f, bb2, NG_OP_READ, MiB, 64 * KiB, 0, buf), 0);
    check_zero(buf, 1000, MiB);
    check_filled(buf + 1000, 4096, MiB + 1000, 3);
    check_zero(buf + 5096, 64 * KiB - 5096, MiB + 5096);
    teardown(&f);
    free(buf);
}

/* ---- copy-on-read ------------------------------------------------------- */

/*   bb -> cor (copy-on-read) -> top (memory, 4M, backing: base)
 *   base-bb -> base (memory, 4M)
 *   top-bb -> top
 */
static void
test_copy_on_read(void)
{
    struct fixture f;
    struct ng_node *top, *plain;
    struct ng_bb *bb, *base_bb, *top_bb, *pbb;
    struct ng_extent ext[16];
    unsigned char *buf = malloc(MiB);
    uint64_t writes;

    CHECK(buf != NULL);
    setup(&f, "copy-on-read: reads populate the top layer");
    add(&f, "base", yaml("{driver: memory, size: 4M}"));
    top = add(&f, "top", yaml("{driver: memory, size: 4M, backing: base}"));
    add(&f, "cor", yaml("{driver: copy-on-read, file: top}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "cor"), true);
    base_bb = bb_new(&f, "base-bb", ng_graph_find(f.g, "base"), true);
    top_bb = bb_new(&f, "top-bb", top, true);
    fill(buf, MiB, 0, 1);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);

    /* Read through the filter: the data is the backing's and is now in
     * the top (whole pages, thanks to the top's own copy-up). */
    memset(buf, 0, MiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    CHECK(extents(&f, top_bb, 0, 4 * MiB, NG_REQ_LOCAL_ONLY, ext, 16)
          == 3);
    check_extent(&ext[0], 64 * KiB, ONLY_HOLE);
    check_extent(&ext[1], 256 * KiB, DATA);
    CHECK(extents(&f, top_bb, 100000, 200000, NG_REQ_LOCAL_ONLY, ext, 16)
          == 1);
    check_extent(&ext[0], 200000, DATA);

    /* The backing changes; what the top copied does not. */
    fill(buf, MiB, 0, 2);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    CHECK_RET(io(&f, top_bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    /* Beyond the copied pages the backing's new data shows. */
    CHECK_RET(io(&f, top_bb, NG_OP_READ, 320 * KiB, 1000, 0, buf), 0);
    check_filled(buf, 1000, 320 * KiB, 2);

    /* A read already served by the top copies nothing. */
    writes = top->stats[NG_OP_WRITE];
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 256 * KiB, 0, buf), 0);
    CHECK(top->stats[NG_OP_WRITE] == writes);
    /* A mixed read copies only what is missing, from its own buffer. */
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 512 * KiB, 0, buf), 0);
    check_filled(buf, 64 * KiB, 0, 2);
    check_filled(buf + 64 * KiB, 256 * KiB, 64 * KiB, 1);
    check_filled(buf + 320 * KiB, 192 * KiB, 320 * KiB, 2);
    CHECK(top->stats[NG_OP_WRITE] == writes + 2);
    CHECK(extents(&f, top_bb, 0, 4 * MiB, NG_REQ_LOCAL_ONLY, ext, 16)
          == 2);
    check_extent(&ext[0], 512 * KiB, DATA);

    /* Writes pass through. */
    fill(buf, 4096, 2 * MiB, 3);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 2 * MiB, 4096, 0, buf), 0);
    CHECK_RET(io(&f, top_bb, NG_OP_READ, 2 * MiB, 4096, 0, buf), 0);
    check_filled(buf, 4096, 2 * MiB, 3);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);

    /* No backing: correct reads, and nothing is ever written.
     *   pbb -> cor2 (copy-on-read) -> plain (memory, 1M) */
    plain = add(&f, "plain", yaml("{driver: memory, size: 1M}"));
    add(&f, "cor2", yaml("{driver: copy-on-read, file: plain}"));
    pbb = bb_new(&f, "pbb", ng_graph_find(f.g, "cor2"), true);
    CHECK_RET(io(&f, pbb, NG_OP_READ, 0, MiB, 0, buf), 0);
    check_zero(buf, MiB, 0);
    CHECK(plain->stats[NG_OP_WRITE] == 0);
    CHECK(extents(&f, pbb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 1);
    check_extent(&ext[0], MiB, DATA);
    teardown(&f);
    free(buf);
}

/* Copies race with writes: a copy must never land on newer data.
 *
 *   bb -> cor (copy-on-read) -> dly (delay, write 50ms) -> top
 *   top (memory, 1M, backing: slow) ; slow (delay, read 100ms) -> base
 *   base-bb -> base (memory, 1M)
 *
 * Times are chosen so that without the filter's tracking the old data
 * would land last: 50 ms margins either way.
 */
static void
test_copy_on_read_races(void)
{
    struct fixture f;
    struct ng_bb *bb, *base_bb;
    struct ng_req rr, wr;
    struct io_result rres, wres;
    unsigned char *rbuf = malloc(256 * KiB), *wbuf = malloc(256 * KiB);

    CHECK(rbuf != NULL && wbuf != NULL);
    setup(&f, "copy-on-read: copies and writes in flight together");
    add(&f, "base", yaml("{driver: memory, size: 1M}"));
    add(&f, "slow", yaml("{driver: delay, delay-read: 100ms, file: base}"));
    add(&f, "top", yaml("{driver: memory, size: 1M, backing: slow}"));
    add(&f, "dly", yaml("{driver: delay, delay-write: 50, file: top}"));
    add(&f, "cor", yaml("{driver: copy-on-read, file: dly}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "cor"), true);
    base_bb = bb_new(&f, "base-bb", ng_graph_find(f.g, "base"), true);
    fill(wbuf, 256 * KiB, 0, 1);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, 256 * KiB, 0, wbuf), 0);

    /* A write arriving while a read's data is on its way up (t = 60 ms
     * of 100) waits for the read's copy (which lands at 150) rather
     * than landing first (at 110) and being overwritten. */
    fill(wbuf, 64 * KiB, 64 * KiB, 2);
    io_start(bb, &rr, &rres, NG_OP_READ, 0, 128 * KiB, 0, rbuf);
    wait_ms(&f, 60);
    CHECK(!rres.done);
    io_start(bb, &wr, &wres, NG_OP_WRITE, 64 * KiB, 64 * KiB, 0, wbuf);
    io_wait(&f, &rres);
    io_wait(&f, &wres);
    CHECK_RET(rres.ret, 0);
    CHECK_RET(wres.ret, 0);
    CHECK(rres.seq < wres.seq);
    check_filled(rbuf, 128 * KiB, 0, 1);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 128 * KiB, 0, rbuf), 0);
    check_filled(rbuf, 64 * KiB, 0, 1);
    check_filled(rbuf + 64 * KiB, 64 * KiB, 64 * KiB, 2);

    /* A read arriving while a write is held below the filter must not
     * copy: its old data would land after the write. */
    reconfigure_ok(ng_graph_find(f.g, "slow"), "{delay-read: 0}");
    fill(wbuf, 64 * KiB, 128 * KiB, 3);
    io_start(bb, &wr, &wres, NG_OP_WRITE, 128 * KiB, 64 * KiB, 0, wbuf);
    io_start(bb, &rr, &rres, NG_OP_READ, 128 * KiB, 128 * KiB, 0, rbuf);
    io_wait(&f, &rres);
    io_wait(&f, &wres);
    CHECK_RET(rres.ret, 0);
    CHECK_RET(wres.ret, 0);
    check_filled(rbuf, 128 * KiB, 128 * KiB, 1);
    wait_ms(&f, 100);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB, 128 * KiB, 0, rbuf), 0);
    check_filled(rbuf, 64 * KiB, 128 * KiB, 3);
    check_filled(rbuf + 64 * KiB, 64 * KiB, 192 * KiB, 1);
    teardown(&f);
    free(rbuf);
    free(wbuf);
}

/* ---- detect-zeroes ------------------------------------------------------ */

/* How many lines of the file contain all of the given words. */
static unsigned
count_lines(const char *path, const char *w1, const char *w2)
{
    FILE *fp = fopen(path, "r");
    char line[1024];
    unsigned n = 0;

    CHECK(fp != NULL);
    while (fgets(line, sizeof line, fp) != NULL)
        n += strstr(line, w1) != NULL && (w2 == NULL ||
                                          strstr(line, w2) != NULL);
    fclose(fp);
    return n;
}

/*   bb -> dz (detect-zeroes, unmap) -> lg (log) -> mem (memory, 1M) */
static void
test_detect_zeroes(void)
{
    struct fixture f;
    struct ng_node *dz, *mem;
    struct ng_bb *bb;
    struct ng_extent ext[8];
    unsigned char *buf = calloc(1, 256 * KiB);
    char path[512], text[600];

    CHECK(buf != NULL);
    setup(&f, "detect-zeroes: zero writes become write-zeroes");
    snprintf(path, sizeof path, "%s/dz.log", f.tmpdir);
    mem = add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    snprintf(text, sizeof text, "{driver: log, file: mem, logfile: '%s'}",
             path);
    add(&f, "lg", yaml(text));
    add_fails(&f, "x", yaml("{driver: detect-zeroes, file: lg, mode: maybe}"),
              "'mode' must be one of off, on, unmap, not 'maybe'");
    dz = add(&f, "dz", yaml("{driver: detect-zeroes, file: lg, mode: unmap}"));
    bb = bb_new(&f, "bb", dz, true);

    fill(buf, 256 * KiB, 0, 1);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 256 * KiB, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 1);

    /* Zeroes over pages 1 and 2: a hole, and io() checked the request
     * came back as a write with its own flags. */
    memset(buf, 0, 256 * KiB);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 64 * KiB, 128 * KiB, NG_REQ_FUA,
                 buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 1);
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 1);
    CHECK(extents(&f, bb, 0, MiB, 0, ext, 8) == 4);
    check_extent(&ext[0], 64 * KiB, DATA);
    check_extent(&ext[1], 128 * KiB, HOLE);
    check_extent(&ext[2], 64 * KiB, DATA);
    check_extent(&ext[3], MiB - 256 * KiB, HOLE);
    memset(buf, 0xaa, 256 * KiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 256 * KiB, 0, buf), 0);
    check_filled(buf, 64 * KiB, 0, 1);
    check_zero(buf + 64 * KiB, 128 * KiB, 64 * KiB);
    check_filled(buf + 192 * KiB, 64 * KiB, 192 * KiB, 1);

    /* One non-zero byte, even the last one, keeps it a write. */
    memset(buf, 0, 256 * KiB);
    buf[256 * KiB - 1] = 1;
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 256 * KiB, 0, buf), 0);
    buf[256 * KiB - 1] = 0;
    buf[5] = 1;
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 10, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 3);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 3, 0, buf), 0);   /* short */
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 2);

    /* "on" does not let the leaf trim; "off" leaves writes alone. */
    reconfigure_fails(dz, "{mode: sometimes}", "'mode' must be one of");
    reconfigure_ok(dz, "{mode: 'on'}");
    memset(buf, 0, 4096);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, 4096, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 3);
    reconfigure_ok(dz, "{mode: 'off'}");
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, 4096, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 3);
    CHECK(mem->stats[NG_OP_WRITE] == 4);

    CHECK(count_lines(path, "write-zeroes offset=0x10000 length=0x20000 "
                      "flags=fua,may_trim", NULL) == 1);
    CHECK(count_lines(path, "write-zeroes offset=0x1000 length=0x1000 "
                      "flags=none", NULL) == 1);
    teardown(&f);
    free(buf);
}

/* ---- blkdebug ----------------------------------------------------------- */

/*   bb -> dbg (blkdebug) -> mem (memory, 1M) */
static void
test_blkdebug(void)
{
    struct fixture f;
    struct ng_node *dbg;
    struct ng_bb *bb;
    struct ng_extent ext[4];
    struct ng_req req;
    unsigned char buf[4096];
    int fails;

    setup(&f, "blkdebug: injected errors");
    add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "[{iotype: read}, {iotype: reed}]}"),
              "test:1:72: 'iotype' must be one of read, write");
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "[{iotype: read, erno: EIO}]}"),
              "test:1:62: unknown 'inject-error' key 'erno'");
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "[{errno: EWHAT}]}"),
              "'errno' must be an errno name");
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "{iotype: read}}"),
              "'inject-error' must be a list of rules");
    dbg = add(&f, "dbg", yaml("{driver: blkdebug, image: mem, inject-error: ["
                              "{iotype: read, offset: 64K, length: 64K, "
                              "errno: EIO}, "
                              "{iotype: write, offset: 0, length: 4096, "
                              "errno: ENOSPC, once: true}, "
                              "{iotype: flush, errno: 28, after: 2}, "
                              "{iotype: block-status, offset: 512K}, "
                              "{iotype: discard, sector: 10, errno: EPERM}]}"));
    bb = bb_new(&f, "bb", dbg, true);
    memset(buf, 1, sizeof buf);

    /* Reads touching [64K, 128K) fail; outside they succeed. */
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 512, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_READ, 60 * KiB, 8 * KiB, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB - 1, 1, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB, 4096, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 60 * KiB, 4 * KiB, 0, buf), 0);
    CHECK(ng_graph_find(f.g, "mem")->stats[NG_OP_READ] == 2);
    /* Writes other than reads' range are fine; the once rule fires once. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 64 * KiB, 4096, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4000, 4096, 0, buf), -ENOSPC);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4000, 4096, 0, buf), 0);
    /* Flush: two pass, then ENOSPC (given as a number) every time. */
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), -ENOSPC);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), -ENOSPC);
    /* Block status from 512K to the end, EIO by default. */
    memset(&req, 0, sizeof req);
    ng_req_init(&req, NG_OP_BLOCK_STATUS, MiB - 4096, 4096, 0);
    req.extents = ext;
    req.max_extents = 4;
    CHECK_RET(io_req(&f, bb, &req), -EIO);
    CHECK(extents(&f, bb, 0, 512 * KiB, 0, ext, 4) >= 1);
    /* QEMU's sector: the 512 bytes at 5120. */
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 5000, 200, 0, NULL), -EPERM);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 5632, 512, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 5120, 512, 0, NULL), 0);

    /* New rules, live: reads are fine now, writes fail after one. */
    reconfigure_fails(dbg, "{inject-error: [{offset: -1}]}",
                      "test:1:26: 'offset'");
    reconfigure_fails(dbg, "{image: mem2}", "option 'image' cannot be "
                      "changed on a live node");
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 512, 0, buf), -EIO);
    reconfigure_ok(dbg, "{image: mem, inject-error: [{iotype: write, "
                        "errno: EROFS, after: 1, once: true}]}");
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 512, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf), -EROFS);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf), 0);
    /* The default iotypes: all but block status and cache. */
    reconfigure_ok(dbg, "{inject-error: [{}]}");
    fails = 0;
    fails += io(&f, bb, NG_OP_READ, 0, 512, 0, buf) == -EIO;
    fails += io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf) == -EIO;
    fails += io(&f, bb, NG_OP_WRITE_ZEROES, 0, 512, 0, NULL) == -EIO;
    fails += io(&f, bb, NG_OP_TRIM, 0, 512, 0, NULL) == -EIO;
    fails += io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL) == -EIO;
    CHECK(fails == 5);
    CHECK_RET(io(&f, bb, NG_OP_CACHE, 0, 512, 0, NULL), 0);
    reconfigure_ok(dbg, "{inject-error: []}");
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 512, 0, buf), 0);
    teardown(&f);
}

/* ---- delay -------------------------------------------------------------- */

/*   bb -> dly (delay) -> mem (memory, 1M) */
static void
test_delay(void)
{
    enum { N = 16 };
    struct fixture f;
    struct ng_node *dly;
    struct ng_bb *bb;
    struct ng_req reqs[N];
    struct io_result res[N];
    unsigned char buf[4096];
    uint64_t t0;

    setup(&f, "delay: requests held");
    add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    add_fails(&f, "x", yaml("{driver: delay, file: mem, delay-read: 5min}"),
              "'delay-read' must be a delay such as 250, 250ms or 1.5s");
    add_fails(&f, "x", yaml("{driver: delay, file: mem, delay-read: -1}"),
              "not '-1'");
    dly = add(&f, "dly", yaml("{driver: delay, file: mem, delay-read: 50, "
                              "delay-write: 0.04s, delay-zero: 30ms, "
                              "delay-flush: 20ms}"));
    bb = bb_new(&f, "bb", dly, true);

    /* Many at once: each held its own delay, not one after another. */
    for (int round = 0; round < 2; round++) {
        t0 = uv_hrtime();
        for (int i = 0; i < N; i++)
            io_start(bb, &reqs[i], &res[i], i % 2 ? NG_OP_WRITE : NG_OP_READ,
                     (uint64_t)i * 4096, 4096, 0, buf);
        for (int i = 0; i < N; i++) {
            io_wait(&f, &res[i]);
            CHECK_RET(res[i].ret, 0);
            CHECK(res[i].when - t0 >= (i % 2 ? 40 : 50) * MS);
        }
        printf("  %d requests in %.1f ms\n", N,
               (double)(uv_hrtime() - t0) / MS);
        CHECK(uv_hrtime() - t0 < 400 * MS);
    }
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 0, 4096, 0, NULL), 0);
    CHECK(uv_hrtime() - t0 >= 30 * MS);
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK(uv_hrtime() - t0 >= 20 * MS);
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 0, 4096, 0, NULL), 0);
    CHECK(uv_hrtime() - t0 < 20 * MS);

    /* Live: a new read delay, others kept. */
    reconfigure_fails(dly, "{delay-read: soon}", "'delay-read' must be");
    reconfigure_ok(dly, "{delay-read: 0, delay-trim: 1s}");
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 4096, 0, buf), 0);
    CHECK(uv_hrtime() - t0 < 20 * MS);
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 4096, 0, buf), 0);
    CHECK(uv_hrtime() - t0 >= 40 * MS);
    teardown(&f);
}

/* ---- log ---------------------------------------------------------------- */

/*   bb -> lg (log) -> dbg (blkdebug: reads at 1M fail) -> mem (2M) */
static void
test_log(void)
{
    struct fixture f;
    struct ng_bb *bb;
    unsigned char buf[4096] = { 0 };
    char path[512], text[600];

    setup(&f, "log: a line per request and per completion");
    snprintf(path, sizeof path, "%s/sub/x.log", f.tmpdir);
    snprintf(text, sizeof text, "{driver: log, file: mem, logfile: '%s'}",
             path);
    add(&f, "mem", yaml("{driver: memory, size: 2M}"));
    add_fails(&f, "x", yaml(text), "cannot open log file");
    add(&f, "dbg", yaml("{driver: blkdebug, image: mem, inject-error: "
                        "[{iotype: read, offset: 1M}]}"));
    snprintf(path, sizeof path, "%s/x.log", f.tmpdir);
    snprintf(text, sizeof text, "{driver: log, file: dbg, logfile: '%s'}",
             path);
    add(&f, "lg", yaml(text));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "lg"), true);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, 4096, NG_REQ_FUA, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, MiB, 512, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK(count_lines(path, "node=lg open file=dbg size=2097152", NULL)
          == 1);
    CHECK(count_lines(path, "node=lg id=1 write offset=0x1000 "
                      "length=0x1000 flags=fua ...", NULL) == 1);
    CHECK(count_lines(path, "node=lg id=1 write return=0 elapsed_us=",
                      NULL) == 1);
    CHECK(count_lines(path, "id=2 read offset=0x100000 length=0x200 "
                      "flags=none", NULL) == 1);
    CHECK(count_lines(path, "id=2 read return=-5 (Input/output error) "
                      "elapsed_us=", NULL) == 1);
    CHECK(count_lines(path, "id=3 flush", "return=0") == 1);
    CHECK(count_lines(path, "node=lg ", NULL) == 7);
    /* Closing the node closes the file, with a last line. */
    ng_bb_free(bb);
    CHECK(ng_graph_del_node(f.g, "lg", NULL) == 0);
    CHECK(count_lines(path, "node=lg close requests=3", NULL) == 1);

    /* logappend keeps what was there. */
    snprintf(text, sizeof text, "{driver: log, file: dbg, logfile: '%s', "
             "logappend: true}", path);
    add(&f, "lg", yaml(text));
    CHECK(count_lines(path, "node=lg open", NULL) == 2);
    teardown(&f);
}

/* ---- docs/filters.md -------------------------------------------------- */

static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *text;
    long len;

    if (fp == NULL)
        fail("cannot open %s", path);
    CHECK(fseek(fp, 0, SEEK_END) == 0 && (len = ftell(fp)) >= 0);
    rewind(fp);
    text = malloc((size_t)len + 1);
    CHECK(text != NULL && fread(text, 1, (size_t)len, fp) == (size_t)len);
    text[len] = '\0';
    fclose(fp);
    return text;
}

/* Build the nodes of one example (a "nodes:" section) through the config
 * loader; a log's file goes to the fixture's temp dir. */
static void
docs_example(const char *yaml_text, size_t len)
{
    static const char head[] = "server:\n  listen: [ 'unix:/tmp/x.sock' ]\n";
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_config *cfg;
    char *text = malloc(sizeof head + len), logfile[512];

    CHECK(text != NULL);
    memcpy(text, head, sizeof head - 1);
    memcpy(text + sizeof head - 1, yaml_text, len);
    text[sizeof head - 1 + len] = '\0';
    cfg = ng_config_load_string(text, "docs/filters.md example", &err);
    if (cfg == NULL)
        fail("docs/filters.md example does not load: %s\n%s", err.msg,
             yaml_text);
    setup(&f, "  an example");
    snprintf(logfile, sizeof logfile, "%s/example.log", f.tmpdir);
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        struct ng_value *o = ng_value_copy(cfg->nodes[i].opts);
        ptrdiff_t k;

        CHECK(o != NULL);
        if ((k = ng_value_index(o, "logfile")) >= 0) {
            ng_value_free(o->items[k]);
            o->items[k] = ng_value_new_scalar(logfile, (struct ng_loc){ 0 });
            CHECK(o->items[k] != NULL);
        }
        if (ng_graph_add_node(f.g, cfg->nodes[i].name, o, &err) == NULL)
            fail("docs/filters.md example, node '%s': %s",
                 cfg->nodes[i].name, err.msg);
        ng_value_free(o);
    }
    teardown(&f);
    ng_config_free(cfg);
    free(text);
}

/* The docs name every filter and every option of its table, and their
 * examples work. */
static void
test_docs(void)
{
    char *text = slurp(TOP_SRCDIR "/docs/filters.md"), *p, *end;
    char want[128];
    unsigned examples = 0;

    printf("docs/filters.md: every filter and option, examples work\n");
    for (const struct ng_driver *const *d = ng_filter_drivers; *d; d++) {
        if (strcmp((*d)->name, "nofilter") == 0)
            continue;
        snprintf(want, sizeof want, "\n## %s\n", (*d)->name);
        if (strstr(text, want) == NULL)
            fail("docs/filters.md has no section '## %s'", (*d)->name);
        for (const struct ng_opt_desc *o = (*d)->opts; o->name; o++) {
            snprintf(want, sizeof want, "`%s`", o->name);
            if (strstr(text, want) == NULL)
                fail("docs/filters.md does not mention option %s of %s",
                     want, (*d)->name);
            CHECK(o->help != NULL && o->help[0] != '\0');
        }
    }
    for (p = text; (p = strstr(p, "```yaml\n")) != NULL; p = end) {
        p += strlen("```yaml\n");
        end = strstr(p, "```");
        CHECK(end != NULL);
        docs_example(p, (size_t)(end - p));
        examples++;
    }
    CHECK(examples >= 6);
    free(text);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_docs();
    test_memory_backing();
    test_copy_on_read();
    test_copy_on_read_races();
    test_detect_zeroes();
    test_blkdebug();
    test_delay();
    test_log();
    test_throttle_options();
    test_throttle_reconfigure();
    test_throttle_iops();
    test_throttle_bps();
    test_throttle_burst();
    test_throttle_group();
    printf("all filter tests passed\n");
    return 0;
}
