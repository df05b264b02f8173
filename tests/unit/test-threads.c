/* tests/unit/test-threads.c: the driver contract's asynchronous open and
 * close, and worker pools per driver.
 *
 *   BB ── stall (test driver: blocking reads wait for a gate, 2 threads)
 *   BB ── disk  (file: its own pool)
 *        → a file write completes while every stall thread is stuck
 *   BB ── a, BB ── b  (stall-node: a pool each)
 *        → b reads while every thread of a is stuck
 *   BB ── stall  (reads that find the gate open: the pool learns its
 *                work is fast, and wakes no thread per read)
 *        → a read queued behind one that then sticks still gets the
 *          pool's second thread, from the stall check
 *
 *   ioopen ──file──> m   (test driver: open reads m, close flushes it)
 *
 *   BB ── ext   (test driver: each read finishes on a thread it starts
 *                itself, as librbd's completions do)
 *        → completions run on the loop thread, never inline, and keep
 *          the loop alive while pending
 *
 * The test drivers live in this program's own registry (tsetup). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "filters/filters.h"
#include "graph/drivers.h"
#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

/* ---- Test drivers --------------------------------------------------------- */

/* "stall" and "serial": 1 MiB leaves whose reads block on a worker. */
struct stall_state {
    sem_t gate;                     /* stall: one post lets one read go */
    atomic_uint running, max_running;
};

static int
stall_open(struct ng_node *node, struct ng_error *err)
{
    struct stall_state *s = ng_node_state(node);

    (void)err;
    return sem_init(&s->gate, 0, 0);
}

static void
stall_close(struct ng_node *node)
{
    struct stall_state *s = ng_node_state(node);

    sem_destroy(&s->gate);
}

static int
stall_refresh(struct ng_node *node, struct ng_node_facts *facts,
              struct ng_error *err)
{
    (void)node;
    (void)err;
    facts->size = MiB;
    return 0;
}

static void
count_in(struct stall_state *s)
{
    unsigned n = atomic_fetch_add(&s->running, 1) + 1, max;

    max = atomic_load(&s->max_running);
    while (n > max && !atomic_compare_exchange_weak(&s->max_running, &max, n))
        ;
}

/* Worker thread. */
static int
stall_work(struct ng_node *node, struct ng_req *req)
{
    struct stall_state *s = ng_node_state(node);

    count_in(s);
    while (sem_wait(&s->gate) == -1 && errno == EINTR)
        ;
    ng_iov_memset(&req->iov, 0, 0, req->length);
    atomic_fetch_sub(&s->running, 1);
    return 0;
}

static int
serial_work(struct ng_node *node, struct ng_req *req)
{
    struct stall_state *s = ng_node_state(node);
    struct timespec ts = { 0, 20 * 1000000 };

    count_in(s);
    nanosleep(&ts, NULL);
    ng_iov_memset(&req->iov, 0, 0, req->length);
    atomic_fetch_sub(&s->running, 1);
    return 0;
}

static void
stall_submit(struct ng_node *node, struct ng_req *req)
{
    ng_req_run_blocking(node, req, stall_work);
}

static void
serial_submit(struct ng_node *node, struct ng_req *req)
{
    ng_req_run_blocking(node, req, serial_work);
}

static const struct ng_driver test_stall = {
    .name         = "stall",
    .state_size   = sizeof(struct stall_state),
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope   = NG_POOL_PER_DRIVER,
    .threads      = 2,
    .open         = stall_open,
    .close        = stall_close,
    .submit       = stall_submit,
    .refresh      = stall_refresh,
};

/* The same with a pool per node: one node stuck, the next goes on. */
static const struct ng_driver test_stall_node = {
    .name         = "stall-node",
    .state_size   = sizeof(struct stall_state),
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope   = NG_POOL_PER_NODE,
    .threads      = 2,
    .open         = stall_open,
    .close        = stall_close,
    .submit       = stall_submit,
    .refresh      = stall_refresh,
};

static const struct ng_driver test_serial = {
    .name         = "serial",
    .state_size   = sizeof(struct stall_state),
    .thread_model = NG_THREADS_SERIALIZE_NODE,
    .pool_scope   = NG_POOL_PER_DRIVER,
    .threads      = 4,
    .open         = stall_open,
    .close        = stall_close,
    .submit       = serial_submit,
    .refresh      = stall_refresh,
};

/* "ioopen": above its "file" child; its open reads the child's first
 * sector and wants an 'X' there, its close flushes the child. */
struct ioopen_state {
    struct ng_node *file;           /* option "file" */
    struct ng_req req;
    char sector[512];
    struct ng_error *err;           /* the open's, until it completes */
};

static unsigned ioopen_closes;      /* completed closes, in the program */

static const struct ng_opt_desc ioopen_opts[] = {
    NG_OPT_CHILD("file", struct ioopen_state, file, NG_ROLE_FILE, true,
                 "the node below"),
    NG_OPT_END,
};

static void
ioopen_read_done(struct ng_req *req, int ret)
{
    struct ng_node *node = req->opaque;
    struct ioopen_state *s = ng_node_state(node);

    if (ret == 0 && s->sector[0] != 'X')
        ret = ng_error_set(s->err, EINVAL, "no magic in '%s'",
                           s->file->name);
    else if (ret < 0)
        ret = ng_error_set(s->err, -ret, "reading '%s' failed",
                           s->file->name);
    ng_node_opened(node, ret);
}

static void
ioopen_open(struct ng_node *node, struct ng_error *err)
{
    struct ioopen_state *s = ng_node_state(node);

    s->err = err;
    memset(&s->req, 0, sizeof s->req);
    ng_req_init(&s->req, NG_OP_READ, 0, sizeof s->sector, 0);
    ng_req_set_buf(&s->req, s->sector);
    s->req.done = ioopen_read_done;
    s->req.opaque = node;
    ng_node_submit(s->file, &s->req);
}

static void
ioopen_flush_done(struct ng_req *req, int ret)
{
    CHECK(ret == 0);
    ioopen_closes++;
    ng_node_closed(req->opaque);
}

static void
ioopen_close(struct ng_node *node)
{
    struct ioopen_state *s = ng_node_state(node);

    memset(&s->req, 0, sizeof s->req);
    ng_req_init(&s->req, NG_OP_FLUSH, 0, 0, 0);
    s->req.done = ioopen_flush_done;
    s->req.opaque = node;
    ng_node_submit(s->file, &s->req);
}

static int
ioopen_refresh(struct ng_node *node, struct ng_node_facts *facts,
               struct ng_error *err)
{
    struct ioopen_state *s = ng_node_state(node);

    (void)err;
    facts->size = ng_node_length(s->file);
    return 0;
}

static void
ioopen_submit(struct ng_node *node, struct ng_req *req)
{
    struct ioopen_state *s = ng_node_state(node);

    ng_node_submit(s->file, req);
}

static const struct ng_driver test_ioopen = {
    .name        = "ioopen",
    .state_size  = sizeof(struct ioopen_state),
    .opts        = ioopen_opts,
    .open_async  = ioopen_open,
    .close_async = ioopen_close,
    .submit      = ioopen_submit,
    .refresh     = ioopen_refresh,
};

/* "ext": a 1 MiB leaf whose reads finish on a thread of its own, handed
 * back with ng_node_begin_external()/ng_work_finish_external(). */
struct ext_ctx {
    struct ng_work work;
    struct ng_req *req;
};

static pthread_t ext_loop_thread;   /* the test's loop runs here */
static atomic_uint ext_off_loop;    /* completions seen elsewhere */

static int
ext_refresh(struct ng_node *node, struct ng_node_facts *facts,
            struct ng_error *err)
{
    (void)node;
    (void)err;
    facts->size = MiB;
    return 0;
}

/* The "library's" thread: late enough that uv_run would have returned
 * had nothing kept the loop alive. */
static void *
ext_thread(void *arg)
{
    struct ext_ctx *c = arg;
    struct timespec ts = { .tv_nsec = 50 * 1000 * 1000 };

    nanosleep(&ts, NULL);
    ng_iov_memset(&c->req->iov, 0, 0xab, (size_t)c->req->length);
    ng_work_finish_external(&c->work);
    return NULL;
}

static void
ext_after(struct ng_work *w)
{
    struct ext_ctx *c = (struct ext_ctx *)w;

    if (!pthread_equal(pthread_self(), ext_loop_thread))
        atomic_fetch_add(&ext_off_loop, 1);
    ng_req_complete(c->req, 0);
}

static void
ext_submit(struct ng_node *node, struct ng_req *req)
{
    struct ext_ctx *c = ng_req_ctx(node, req);
    pthread_t t;

    CHECK(c != NULL);
    c->req = req;
    c->work.after = ext_after;
    ng_node_begin_external(node, &c->work);
    CHECK(pthread_create(&t, NULL, ext_thread, c) == 0);
    CHECK(pthread_detach(t) == 0);
}

static const struct ng_driver test_ext = {
    .name         = "ext",
    .state_size   = sizeof(int),
    .req_ctx_size = sizeof(struct ext_ctx),
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope   = NG_POOL_PER_NODE,
    .submit       = ext_submit,
    .refresh      = ext_refresh,
    .ops          = NG_OP_BIT(NG_OP_READ),
};

/* ---- This program's driver registry ------------------------------------ */

static const struct ng_driver *const test_drivers[] = {
    &ng_driver_file, &ng_driver_memory, &ng_driver_raw, &ng_filter_delay,
    &ng_filter_nofilter,
    &test_stall, &test_stall_node, &test_serial, &test_ioopen, &test_ext,
    NULL,
};

/* ---- Cases ----------------------------------------------------------------- */

static void
tsetup(struct fixture *f, const char *name)
{
    setup_drivers(f, name, test_drivers);
}

static unsigned
count_nodes(struct fixture *f)
{
    unsigned n = 0;

    for (struct ng_node *node = f->g->nodes; node != NULL; node = node->next)
        n++;
    return n;
}

/* Wait for r, for at most `ms`: false if it did not come. */
static bool
io_wait_for(struct fixture *f, struct io_result *r, unsigned ms)
{
    uint64_t end = uv_hrtime() + ms * MS;

    tick_start(f);
    while (!r->done && uv_hrtime() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    tick_stop(f);
    return r->done;
}

#define N_STALL 32

/* A slow driver's stuck threads do not hold up the file driver. */
static void
test_pools_apart(void)
{
    struct fixture f;
    struct ng_node *stall, *disk;
    struct ng_bb *bb_stall, *bb_disk;
    static struct ng_req reqs[N_STALL], wreq;
    static struct io_result res[N_STALL], wres;
    static char bufs[N_STALL][4096], wbuf[4096];
    struct stall_state *s;
    char path[] = "test-threads-disk.XXXXXX";
    int fd, i;

    tsetup(&f, "pools: a stuck driver does not starve the file driver");
    /* Here, not on a tmpfs TMPDIR: there the file driver never uses a
     * thread at all. */
    CHECK((fd = mkstemp(path)) != -1);
    CHECK(ftruncate(fd, MiB) == 0);
    close(fd);
    stall = add(&f, "stall", yaml("{driver: stall}"));
    disk = add(&f, "disk", opts("driver", "file", "filename", path, NULL));
    bb_stall = bb_new(&f, "bb-stall", stall, false);
    bb_disk = bb_new(&f, "bb-disk", disk, true);
    s = ng_node_state(stall);
    for (i = 0; i < N_STALL; i++)
        io_start(bb_stall, &reqs[i], &res[i], NG_OP_READ, 4096 * i, 4096, 0,
                 bufs[i]);
    /* Writes always take a thread (no page-cache shortcut). */
    memset(wbuf, 0x5a, sizeof wbuf);
    io_start(bb_disk, &wreq, &wres, NG_OP_WRITE, 0, 4096, 0, wbuf);
    if (!io_wait_for(&f, &wres, 10000))
        fail("the file write waited for the stuck driver's threads");
    CHECK_RET(wres.ret, 0);
    for (i = 0; i < N_STALL; i++)
        CHECK(!res[i].done);
    printf("  file write done in its own pool; %u stall threads busy\n",
           atomic_load(&s->running));
    CHECK(atomic_load(&s->max_running) <= test_stall.threads);
    for (i = 0; i < N_STALL; i++)
        CHECK(sem_post(&s->gate) == 0);
    for (i = 0; i < N_STALL; i++) {
        io_wait(&f, &res[i]);
        CHECK_RET(res[i].ret, 0);
    }
    teardown(&f);
    unlink(path);
}

/* Fast work is left to the thread already running it (graph/threads.c);
 * a read queued behind one that then sticks must still get a thread of
 * its own, from the pool's stall check, not wait for the stuck one. */
static void
test_stuck_fast_work(void)
{
    struct fixture f;
    struct ng_node *stall;
    struct ng_bb *bb;
    static struct ng_req reqs[2];
    static struct io_result res[2];
    static char bufs[2][4096];
    struct stall_state *s;
    int i;

    tsetup(&f, "pools: a read queued behind stuck fast work gets a thread");
    stall = add(&f, "stall", yaml("{driver: stall}"));
    bb = bb_new(&f, "bb", stall, false);
    s = ng_node_state(stall);
    /* Reads that find the gate open take microseconds: fast work. */
    for (i = 0; i < 64; i++) {
        CHECK(sem_post(&s->gate) == 0);
        CHECK_RET(io(&f, bb, NG_OP_READ, 0, 4096, 0, bufs[0]), 0);
    }
    CHECK(atomic_load(&s->max_running) == 1);
    /* Two reads that stick: both must be inside the driver at once. */
    for (i = 0; i < 2; i++)
        io_start(bb, &reqs[i], &res[i], NG_OP_READ, 4096 * i, 4096, 0,
                 bufs[i]);
    for (i = 0; i < 500 && atomic_load(&s->running) < 2; i++)
        wait_ms(&f, 10);
    if (atomic_load(&s->running) < 2)
        fail("the second read waited behind the stuck first one");
    printf("  the second read got a thread %d ms after the first stuck\n",
           i * 10);
    for (i = 0; i < 2; i++)
        CHECK(sem_post(&s->gate) == 0);
    for (i = 0; i < 2; i++) {
        io_wait(&f, &res[i]);
        CHECK_RET(res[i].ret, 0);
    }
    teardown(&f);
}

/* NG_POOL_PER_NODE: a node whose threads are all stuck does not hold up
 * another node of the same driver. */
static void
test_pool_per_node(void)
{
    struct fixture f;
    struct ng_node *a, *b;
    struct ng_bb *bb_a, *bb_b;
    static struct ng_req reqs[8], breq;
    static struct io_result res[8], bres;
    static char bufs[8][512], bbuf[512];
    struct stall_state *sa, *sb;
    int i;

    tsetup(&f, "pools: per node, one stuck node does not starve another");
    a = add(&f, "a", yaml("{driver: stall-node}"));
    b = add(&f, "b", yaml("{driver: stall-node}"));
    bb_a = bb_new(&f, "bb-a", a, false);
    bb_b = bb_new(&f, "bb-b", b, false);
    sa = ng_node_state(a);
    sb = ng_node_state(b);
    for (i = 0; i < 8; i++)
        io_start(bb_a, &reqs[i], &res[i], NG_OP_READ, 512 * i, 512, 0,
                 bufs[i]);
    CHECK(sem_post(&sb->gate) == 0);        /* b's one read may go */
    io_start(bb_b, &breq, &bres, NG_OP_READ, 0, 512, 0, bbuf);
    if (!io_wait_for(&f, &bres, 10000))
        fail("node b waited for node a's threads");
    CHECK_RET(bres.ret, 0);
    for (i = 0; i < 8; i++)
        CHECK(!res[i].done);
    for (i = 0; i < 8; i++)
        CHECK(sem_post(&sa->gate) == 0);
    for (i = 0; i < 8; i++) {
        io_wait(&f, &res[i]);
        CHECK_RET(res[i].ret, 0);
    }
    teardown(&f);
}

/* NG_THREADS_SERIALIZE_NODE: one request of a node in a thread at once,
 * although the pool has more. */
static void
test_serialize(void)
{
    struct fixture f;
    struct ng_node *n;
    struct ng_bb *bb;
    static struct ng_req reqs[6];
    static struct io_result res[6];
    static char bufs[6][512];
    int i;

    tsetup(&f, "pools: SERIALIZE_NODE runs one request of a node at a time");
    n = add(&f, "serial", yaml("{driver: serial}"));
    bb = bb_new(&f, "bb", n, false);
    for (i = 0; i < 6; i++)
        io_start(bb, &reqs[i], &res[i], NG_OP_READ, 512 * i, 512, 0,
                 bufs[i]);
    for (i = 0; i < 6; i++) {
        io_wait(&f, &res[i]);
        CHECK_RET(res[i].ret, 0);
    }
    for (i = 1; i < 6; i++)
        CHECK(res[i].seq == res[i - 1].seq + 1);   /* in order */
    CHECK(atomic_load(&((struct stall_state *)ng_node_state(n))
                          ->max_running) == 1);
    teardown(&f);
}

static void
count_done(void *opaque)
{
    (*(unsigned *)opaque)++;
}

/* An open and a close that do I/O through the child. */
static void
test_open_io(void)
{
    struct fixture f;
    struct ng_node *m, *top;
    struct ng_bb *bb;
    struct ng_error err = { 0 };
    struct ng_value *o;
    char buf[512];
    unsigned before, deleted = 0, closes;

    tsetup(&f, "open/close: I/O through the child while opening, closing");
    m = add(&f, "m", yaml("{driver: memory, size: 1M}"));
    bb = bb_new(&f, "w", m, true);
    memset(buf, 'X', sizeof buf);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, sizeof buf, 0, buf), 0);
    ng_bb_free(bb);

    top = add(&f, "top", yaml("{driver: ioopen, file: m}"));
    bb = bb_new(&f, "r", top, false);
    memset(buf, 0, sizeof buf);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    CHECK(buf[0] == 'X');
    ng_bb_free(bb);

    /* Failing open: the inline child it opened is closed and gone. */
    before = count_nodes(&f);
    o = yaml("{driver: ioopen, file: {driver: memory, node-name: zero, "
             "size: 1M}}");
    CHECK(add_try(&f, "bad", o, &err) == NULL);
    ng_value_free(o);
    printf("  refused as expected: %s\n", err.msg);
    CHECK(strstr(err.msg, "node 'bad': no magic in 'zero'") != NULL);
    CHECK(count_nodes(&f) == before);
    CHECK(ng_graph_find(f.g, "zero") == NULL);
    add(&f, "zero", yaml("{driver: memory, size: 1M}"));   /* name free */

    /* Wrong options after an inline child was made (raw parses "file"
     * before "offset"): nothing opened, nothing left. */
    add_fails(&f, "bad2", yaml("{driver: raw, offset: lots, file: "
                               "{driver: ioopen, node-name: mid, file: "
                               "{driver: memory, size: 1M}}}"), "offset");
    CHECK(count_nodes(&f) == before + 1);
    CHECK(ng_graph_find(f.g, "mid") == NULL);

    /* The child stays in use while its parent closes; the removal ends
     * after the close's flush. */
    closes = ioopen_closes;
    CHECK(ng_graph_del_node(f.g, "m", NULL, NULL, &err) == -1);
    CHECK(ng_graph_del_node(f.g, "top", count_done, &deleted, &err) == 0);
    CHECK(ng_graph_find(f.g, "top") == NULL);
    while (deleted == 0)
        CHECK(uv_run(&f.loop, UV_RUN_ONCE) != 0 || deleted == 1);
    CHECK(ioopen_closes == closes + 1);

    /* The graph closes what is left, asynchronously, parents first. */
    add(&f, "top2", yaml("{driver: ioopen, file: m}"));
    teardown(&f);
    CHECK(ioopen_closes == closes + 2);
}

static void
add_cb(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct ng_node **out = opaque;

    CHECK(err == NULL && node != NULL);
    *out = node;
}

/* A slow open (delay's open-delay) is not in the graph until it is
 * done, but its name is taken. */
static void
test_slow_open(void)
{
    struct fixture f;
    struct ng_node *d = NULL;
    struct ng_error err = { 0 };
    struct ng_value *o;
    uint64_t t0;

    tsetup(&f, "open: a slow open joins the graph when it is done");
    add(&f, "m", yaml("{driver: memory, size: 1M}"));
    add(&f, "nf", yaml("{driver: nofilter, file: m}"));
    o = yaml("{driver: delay, file: nf, open-delay: 200ms}");
    t0 = uv_hrtime();
    CHECK(ng_graph_add_node(f.g, "d", o, add_cb, &d, &err) == 0);
    CHECK(d == NULL && ng_graph_find(f.g, "d") == NULL);
    add_fails(&f, "d", yaml("{driver: memory, size: 1M}"),
              "node 'd' already exists");
    /* Its child stays put while it opens. */
    CHECK(ng_graph_del_node(f.g, "nf", NULL, NULL, &err) == -1);
    CHECK(ng_graph_check_remove_filter(f.g, "nf", &err) == -1);
    printf("  refused as expected: %s\n", err.msg);
    CHECK(err.code == EBUSY);
    while (d == NULL)
        uv_run(&f.loop, UV_RUN_ONCE);
    CHECK(uv_hrtime() - t0 >= 200 * MS);
    CHECK(ng_graph_find(f.g, "d") == d);

    /* Where nobody can wait, a slow open is refused, then closed. */
    CHECK(ng_graph_add_node_now(f.g, "d2", o, &err) == NULL);
    printf("  refused as expected: %s\n", err.msg);
    CHECK(err.code == EAGAIN);
    wait_ms(&f, 400);
    CHECK(ng_graph_find(f.g, "d2") == NULL);
    add(&f, "d2", yaml("{driver: memory, size: 1M}"));     /* name free */

    /* Freed while an open runs: the graph waits for it. */
    CHECK(ng_graph_add_node(f.g, "d3", o, add_cb, NULL, &err) == 0);
    ng_value_free(o);
    teardown(&f);
}

/* Work a library finishes on its own threads comes back on the loop,
 * never inline, and the loop stays alive until it has: one uv_run() in
 * default mode returns only once every request completed. */
static void
test_external(void)
{
    struct fixture f;
    struct ng_node *n;
    struct ng_bb *bb;
    static struct ng_req reqs[4];
    static struct io_result res[4];
    static unsigned char bufs[4][512];
    int i, j;

    tsetup(&f, "pools: completions from a library's own threads");
    n = add(&f, "ext", yaml("{driver: ext}"));
    bb = bb_new(&f, "bb", n, false);
    ext_loop_thread = pthread_self();
    for (i = 0; i < 4; i++) {
        io_start(bb, &reqs[i], &res[i], NG_OP_READ, 512 * i, 512, 0,
                 bufs[i]);
        CHECK(!res[i].done);
    }
    uv_run(&f.loop, UV_RUN_DEFAULT);
    for (i = 0; i < 4; i++) {
        CHECK(res[i].done);
        CHECK_RET(res[i].ret, 0);
        for (j = 0; j < 512; j++)
            CHECK(bufs[i][j] == 0xab);
    }
    CHECK(atomic_load(&ext_off_loop) == 0);
    teardown(&f);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_pools_apart();
    test_pool_per_node();
    test_stuck_fast_work();
    test_serialize();
    test_open_io();
    test_slow_open();
    test_external();
    printf("all thread and open tests passed\n");
    return 0;
}
