/* tests/unit/test-req.c: what the core does for drivers on the request
 * path: per-request contexts, the ops mask, and splitting and aligning
 * requests to a node's max_transfer and request_alignment.
 *
 * Two test drivers: "test-aligned", a RAM disk that declares an
 * alignment and a max transfer in its refresh hook and fails the test
 * on any request that does not keep to them (and checks the context the
 * core gives it), optionally answering on worker threads so requests
 * overlap for real; and "test-rw", a filter that lists only read and
 * write in its ops mask.  Data is checked against a model of the disk.
 *
 *     BB --> test-aligned (align, max-transfer)
 *     BB --> test-rw --> memory
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/drivers.h"
#include "tests/unit/graph-fixture.h"

/* ---- test-aligned -------------------------------------------------------- */

struct ta_state {
    uint64_t size, align, max;      /* options */
    bool async;                     /* option "async": worker threads */
    unsigned char *data;
    unsigned in_flight, max_in_flight;
    uint64_t seen[NG_OP__COUNT];    /* requests the driver got */
};

struct ta_ctx {
    unsigned magic;                 /* 0 when handed over */
};

static const struct ng_opt_desc ta_opts[] = {
    NG_OPT_SIZE("size", struct ta_state, size, NULL, "bytes"),
    NG_OPT_SIZE("align", struct ta_state, align, "1", "request alignment"),
    NG_OPT_SIZE("max-transfer", struct ta_state, max, "0",
                "bytes per request, 0 = no limit"),
    NG_OPT_BOOL("async", struct ta_state, async, "false",
                "answer on worker threads"),
    NG_OPT_END,
};

static int
ta_open(struct ng_node *node, struct ng_error *err)
{
    struct ta_state *s = ng_node_state(node);

    if ((s->data = calloc(1, s->size)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    return 0;
}

static void
ta_close(struct ng_node *node)
{
    struct ta_state *s = ng_node_state(node);

    free(s->data);
}

static int
ta_refresh(struct ng_node *node, struct ng_node_facts *facts,
           struct ng_error *err)
{
    const struct ta_state *s = ng_node_state(node);

    (void)err;
    facts->size = (int64_t)s->size;
    facts->caps = NG_CAPS_LEAF_ALL;
    facts->request_alignment = (uint32_t)s->align;
    facts->max_transfer = (uint32_t)s->max;
    return 0;
}

/* Per block: all zero = a hole, else data; merged. */
static void
ta_block_status(struct ta_state *s, struct ng_req *req)
{
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
    uint64_t off = req->offset, end = off + req->length;

    req->nr_extents = 0;
    while (off < end) {
        uint64_t n = s->align - off % s->align;
        uint32_t flags = HOLE;

        if (n > end - off)
            n = end - off;
        for (uint64_t i = 0; i < n; i++)
            if (s->data[off + i] != 0)
                flags = DATA;
        if (req->nr_extents > 0 &&
            req->extents[req->nr_extents - 1].flags == flags) {
            req->extents[req->nr_extents - 1].length += n;
        } else if (req->nr_extents == max) {
            return;
        } else {
            req->extents[req->nr_extents++] =
                (struct ng_extent){ .length = n, .flags = flags };
        }
        off += n;
    }
}

/* Loop thread or worker thread: touches only the data. */
static int
ta_work(struct ng_node *node, struct ng_req *req)
{
    struct ta_state *s = ng_node_state(node);
    unsigned char *p = s->data + req->offset;

    switch (req->op) {
    case NG_OP_READ:
        ng_iov_from_buf(&req->iov, 0, p, req->length);
        break;
    case NG_OP_WRITE:
        ng_iov_to_buf(&req->iov, 0, p, req->length);
        break;
    case NG_OP_TRIM:                /* zeroes, so the model can tell */
    case NG_OP_WRITE_ZEROES:
        memset(p, 0, req->length);
        break;
    case NG_OP_BLOCK_STATUS:
        ta_block_status(s, req);
        break;
    default:
        break;
    }
    return 0;
}

static void
ta_done(struct ng_req *req, int ret, void *opaque)
{
    struct ta_state *s = opaque;

    s->in_flight--;
    ng_req_complete(req, ret);
}

static void
ta_submit(struct ng_node *node, struct ng_req *req)
{
    struct ta_state *s = ng_node_state(node);
    struct ta_ctx *c = ng_req_ctx(node, req);
    uint64_t end = req->offset + req->length;

    /* The context: zeroed for every request, the same block each call. */
    CHECK(c != NULL && c->magic == 0);
    c->magic = 0x5a;
    CHECK(ng_req_ctx(node, req) == c);
    if (req->op != NG_OP_FLUSH) {
        if (req->offset % s->align != 0 ||
            (end % s->align != 0 && end != s->size) ||
            (s->max != 0 && req->length > s->max) || end > s->size)
            fail("driver got %s [%" PRIu64 ", +%" PRIu64 ") on a node "
                 "with alignment %" PRIu64 ", max transfer %" PRIu64
                 ", size %" PRIu64, ng_op_name(req->op), req->offset,
                 req->length, s->align, s->max, s->size);
    }
    s->seen[req->op]++;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    CHECK(ng_req_push(req, ta_done, s) == 0);
    if (s->async)
        ng_req_run_blocking(node, req, ta_work);
    else
        ng_req_complete(req, ta_work(node, req));
}

static const struct ng_driver test_aligned = {
    .name         = "test-aligned",
    .state_size   = sizeof(struct ta_state),
    .req_ctx_size = sizeof(struct ta_ctx),
    .opts         = ta_opts,
    .open         = ta_open,
    .close        = ta_close,
    .submit       = ta_submit,
    .ops          = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                    NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                    NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                    NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
    .refresh      = ta_refresh,
};

/* ---- test-rw ------------------------------------------------------------- */

struct rw_state {
    struct ng_node *file;
};

static const struct ng_opt_desc rw_opts[] = {
    NG_OPT_CHILD("file", struct rw_state, file, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_END,
};

static void
rw_submit(struct ng_node *node, struct ng_req *req)
{
    CHECK(req->op == NG_OP_READ || req->op == NG_OP_WRITE);
    ng_node_forward(node, req);
}

static const struct ng_driver test_rw = {
    .name       = "test-rw",
    .is_filter  = true,
    .state_size = sizeof(struct rw_state),
    .opts       = rw_opts,
    .submit     = rw_submit,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE),
};

/* This test's driver registry. */
static const struct ng_driver *const test_drivers[] = {
    &ng_driver_memory,
    &test_aligned,
    &test_rw,
    NULL,
};

/* ---- The model ----------------------------------------------------------- */

struct model {
    struct fixture f;
    struct ng_node *node;
    struct ta_state *s;
    struct ng_bb *bb;
    unsigned char *disk;            /* what the node must hold */
    unsigned char *buf;
    uint64_t size;
    unsigned seed;
};

static void
model_setup(struct model *m, const char *name, const char *node_yaml)
{
    setup_drivers(&m->f, name, test_drivers);
    m->node = add(&m->f, "disk", yaml(node_yaml));
    m->s = ng_node_state(m->node);
    m->size = m->s->size;
    m->bb = bb_new(&m->f, "bb", m->node, true);
    m->disk = calloc(1, m->size);
    m->buf = malloc(m->size);
    CHECK(m->disk != NULL && m->buf != NULL);
    m->seed = 1;
}

static void
model_teardown(struct model *m)
{
    free(m->disk);
    free(m->buf);
    teardown(&m->f);
}

/* Read [off, +len) through the BB and compare with the model. */
static void
model_check(struct model *m, uint64_t off, uint64_t len)
{
    memset(m->buf, 0xee, len);
    CHECK_RET(io(&m->f, m->bb, NG_OP_READ, off, len, 0, m->buf), 0);
    for (uint64_t i = 0; i < len; i++)
        if (m->buf[i] != m->disk[off + i])
            fail("byte at %" PRIu64 " reads 0x%02x, the model has 0x%02x",
                 off + i, m->buf[i], m->disk[off + i]);
}

static void
model_write(struct model *m, uint64_t off, uint64_t len)
{
    fill(m->disk + off, len, off, m->seed++);
    memcpy(m->buf, m->disk + off, len);
    CHECK_RET(io(&m->f, m->bb, NG_OP_WRITE, off, len, 0, m->buf), 0);
}

static void
model_zero(struct model *m, uint64_t off, uint64_t len, uint32_t flags)
{
    memset(m->disk + off, 0, len);
    CHECK_RET(io(&m->f, m->bb, NG_OP_WRITE_ZEROES, off, len, flags, NULL),
              0);
}

/* The driver zeroes what it is asked to trim: the whole blocks. */
static void
model_trim(struct model *m, uint64_t off, uint64_t len)
{
    uint64_t a = m->s->align, end = off + len;
    uint64_t lo = (off + a - 1) / a * a;
    uint64_t hi = end == m->size ? end : end / a * a;

    if (lo < hi)
        memset(m->disk + lo, 0, hi - lo);
    CHECK_RET(io(&m->f, m->bb, NG_OP_TRIM, off, len, 0, NULL), 0);
}

/* Every extent that says zero must be zero in the model. */
static void
model_check_extents(struct model *m, uint64_t off, uint64_t len)
{
    struct ng_extent ext[64];
    uint32_t n = extents(&m->f, m->bb, off, len, 0, ext, 64);
    uint64_t pos = off;

    for (uint32_t i = 0; i < n; i++) {
        if (ext[i].flags & NG_EXTENT_ZERO)
            check_zero(m->disk + pos, ext[i].length, pos);
        pos += ext[i].length;
    }
    if (m->s->max != 0)
        CHECK(pos - off <= m->s->max);
}

/* xorshift: the same run every time. */
static uint64_t
rnd(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* A random range of up to max_len bytes inside the disk. */
static void
rnd_range(struct model *m, uint64_t *st, uint64_t max_len, uint64_t *off,
          uint64_t *len)
{
    *len = 1 + rnd(st) % max_len;
    if (*len > m->size)
        *len = m->size;
    *off = rnd(st) % (m->size - *len + 1);
    /* Now and then right up to the end. */
    if (rnd(st) % 8 == 0)
        *off = m->size - *len;
}

/* Random unaligned requests of random sizes, one at a time, each read
 * back against the model. */
static void
model_random(struct model *m, unsigned n, uint64_t max_len)
{
    uint64_t st = 0x9e3779b97f4a7c15ull;

    for (unsigned i = 0; i < n; i++) {
        uint64_t off, len;

        rnd_range(m, &st, max_len, &off, &len);
        switch (rnd(&st) % 6) {
        case 0:
        case 1:
            model_write(m, off, len);
            break;
        case 2:
            model_zero(m, off, len, rnd(&st) % 2 ? NG_REQ_MAY_TRIM : 0);
            break;
        case 3:
            model_trim(m, off, len);
            break;
        case 4:
            model_check_extents(m, off, len);
            break;
        default:
            CHECK_RET(io(&m->f, m->bb, NG_OP_CACHE, off, len, 0, NULL), 0);
            break;
        }
        model_check(m, off, len);
    }
    model_check(m, 0, m->size);
}

/* ---- Cases --------------------------------------------------------------- */

static void
test_ops_mask(void)
{
    struct fixture f;
    struct ng_node *mem, *rw;
    struct ng_bb *bb;
    struct ng_extent ext[4];
    unsigned char buf[4096];
    uint32_t caps;

    setup_drivers(&f, "ops mask: a filter listing read and write only",
                  test_drivers);
    mem = add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    rw = add(&f, "rw", yaml("{driver: test-rw, file: mem}"));
    bb = bb_new(&f, "bb", rw, true);
    /* What it cannot do is not advertised. */
    caps = ng_bb_caps(bb);
    CHECK(caps & NG_CAP_WRITE);
    CHECK(!(caps & (NG_CAP_ZERO | NG_CAP_FAST_ZERO | NG_CAP_TRIM |
                    NG_CAP_CACHE | NG_CAP_EXTENTS)));
    fill(buf, sizeof buf, 0, 1);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, sizeof buf, 0, buf), 0);
    memset(buf, 0, sizeof buf);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_filled(buf, sizeof buf, 0, 1);
    /* Refused, or answered without the filter or what is below it. */
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), -ENOTSUP);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 0, 4096, 0, NULL), -ENOTSUP);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 0, 4096, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_CACHE, 0, 4096, 0, NULL), 0);
    CHECK(extents(&f, bb, 0, 8192, 0, ext, 4) == 1);
    check_extent(&ext[0], 8192, DATA);
    CHECK(mem->stats[NG_OP_FLUSH] == 0 && mem->stats[NG_OP_TRIM] == 0 &&
          mem->stats[NG_OP_CACHE] == 0 && mem->stats[NG_OP_BLOCK_STATUS] == 0 &&
          mem->stats[NG_OP_WRITE_ZEROES] == 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_filled(buf, sizeof buf, 0, 1);
    teardown(&f);
}

static void
test_split(void)
{
    struct model m;
    uint64_t before;

    model_setup(&m, "split: max-transfer 64K, no alignment",
                "{driver: test-aligned, size: 4M, max-transfer: 64K}");
    before = m.s->seen[NG_OP_READ];
    model_check(&m, 0, 4 * MiB);
    CHECK(m.s->seen[NG_OP_READ] - before == 64);
    before = m.s->seen[NG_OP_WRITE];
    model_write(&m, 100, 1 * MiB);
    CHECK(m.s->seen[NG_OP_WRITE] - before == 16);
    model_check(&m, 0, 2 * MiB);
    model_random(&m, 300, 512 * KiB);
    model_teardown(&m);
}

static void
test_align(const char *name, const char *node_yaml)
{
    struct model m;

    model_setup(&m, name, node_yaml);
    /* One byte, one block's worth across a boundary, head and tail. */
    model_write(&m, 5, 1);
    model_check(&m, 0, 8192);
    model_write(&m, 4000, 200);
    model_check(&m, 0, 8192);
    model_zero(&m, 4090, 10000, 0);
    model_check(&m, 0, 20000);
    model_write(&m, m.size - 3, 3);
    model_check(&m, m.size - 10000, 10000);
    model_check_extents(&m, 1, 20000);
    model_random(&m, 400, 300 * KiB);
    model_teardown(&m);
}

/* Writes that share blocks but not bytes, all in flight at once on a
 * driver that answers from worker threads: without serialising the
 * read-modify-writes, one would write back another's block as it was
 * before, and data would be lost. */
static void
test_concurrent_rmw(void)
{
    enum { N = 96, LEN = 1000 };
    struct model m;
    struct ng_req reqs[N];
    struct io_result res[N];
    unsigned char *bufs[N];

    model_setup(&m, "align: concurrent unaligned writes sharing blocks",
                "{driver: test-aligned, size: 1M, align: 4K, "
                "max-transfer: 8K, async: true}");
    for (unsigned i = 0; i < N; i++) {
        uint64_t off = 100 + (uint64_t)i * LEN;

        CHECK((bufs[i] = malloc(LEN)) != NULL);
        fill(m.disk + off, LEN, off, 10 + i);
        memcpy(bufs[i], m.disk + off, LEN);
    }
    for (unsigned i = 0; i < N; i++) {
        uint64_t off = 100 + (uint64_t)i * LEN;

        /* Every fourth one is write-zeroes, also read-modify-write. */
        if (i % 4 == 3) {
            memset(m.disk + off, 0, LEN);
            io_start(m.bb, &reqs[i], &res[i], NG_OP_WRITE_ZEROES, off, LEN,
                     0, NULL);
        } else {
            io_start(m.bb, &reqs[i], &res[i], NG_OP_WRITE, off, LEN, 0,
                     bufs[i]);
        }
    }
    for (unsigned i = 0; i < N; i++) {
        io_wait(&m.f, &res[i]);
        CHECK_RET(res[i].ret, 0);
        free(bufs[i]);
    }
    model_check(&m, 0, 128 * KiB);
    /* Pieces of one request go in parallel, a bounded number at once. */
    m.s->max_in_flight = 0;
    model_check(&m, 0, 1 * MiB);
    CHECK(m.s->max_in_flight >= 1 && m.s->max_in_flight <= 4);
    model_random(&m, 200, 100 * KiB);
    model_teardown(&m);
}

int
main(void)
{
    test_ops_mask();
    test_split();
    test_align("align: 4K, max-transfer 64K",
               "{driver: test-aligned, size: 4M, align: 4K, "
               "max-transfer: 64K}");
    test_align("align: 512, max-transfer 8K, size not a multiple",
               "{driver: test-aligned, size: 1049810, align: 512, "
               "max-transfer: 8K}");
    test_align("align: 64K, no max-transfer, worker threads",
               "{driver: test-aligned, size: 2M, align: 64K, async: true}");
    test_concurrent_rmw();
    printf("ok\n");
    return 0;
}
