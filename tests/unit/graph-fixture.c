/* tests/unit/graph-fixture.c: see graph-fixture.h. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "graph/value.h"
#include "config/yaml.h"
#include "graph/graph.h"
#include "filters/filters.h"
#include "tests/unit/graph-fixture.h"

void
fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ---- Fixture ------------------------------------------------------------ */

void
setup(struct fixture *f, const char *name)
{
    setup_drivers(f, name, ng_all_drivers);
}

void
setup_drivers(struct fixture *f, const char *name,
              const struct ng_driver *const *drivers)
{
    const char *t = getenv("TMPDIR");

    printf("%s\n", name);
    CHECK(uv_loop_init(&f->loop) == 0);
    f->g = ng_graph_new(&f->loop, drivers);
    CHECK(f->g != NULL);
    CHECK(uv_timer_init(&f->loop, &f->tick) == 0);
    /* Named after the program, so a dir left by a failed case says
     * which test left it. */
    snprintf(f->tmpdir, sizeof f->tmpdir, "%s/%s.XXXXXX",
             t != NULL && *t != '\0' ? t : "/tmp",
             program_invocation_short_name);
    CHECK(mkdtemp(f->tmpdir) != NULL);
}

void
teardown(struct fixture *f)
{
    char cmd[300];

    uv_close((uv_handle_t *)&f->tick, NULL);
    ng_graph_free(f->g);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&f->loop) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->tmpdir);
    CHECK(system(cmd) == 0);
}

static void
tick_cb(uv_timer_t *t)
{
    (void)t;
}

void
tick_start(struct fixture *f)
{
    uv_timer_start(&f->tick, tick_cb, 2, 2);
}

void
tick_stop(struct fixture *f)
{
    uv_timer_stop(&f->tick);
}

void
wait_ms(struct fixture *f, unsigned ms)
{
    uint64_t end = uv_hrtime() + ms * MS;

    tick_start(f);
    while (uv_hrtime() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    tick_stop(f);
}

/* ---- Node options ------------------------------------------------------- */

struct ng_value *
map_new(void)
{
    struct ng_value *m = ng_value_new_map((struct ng_loc){ 0 });

    CHECK(m != NULL);
    return m;
}

void
map_put(struct ng_value *m, const char *key, const char *text)
{
    CHECK(ng_value_map_put(m, key, (struct ng_loc){ 0 },
                           ng_value_new_scalar(text,
                                               (struct ng_loc){ 0 })) == 0);
}

void
map_put_map(struct ng_value *m, const char *key, struct ng_value *sub)
{
    CHECK(ng_value_map_put(m, key, (struct ng_loc){ 0 }, sub) == 0);
}

struct ng_value *
opts(const char *key, ...)
{
    struct ng_value *m = map_new();
    va_list ap;

    va_start(ap, key);
    for (; key != NULL; key = va_arg(ap, const char *))
        map_put(m, key, va_arg(ap, const char *));
    va_end(ap);
    return m;
}

struct ng_value *
yaml(const char *text)
{
    struct ng_error err = { 0 };
    struct ng_value *v = ng_yaml_parse(text, strlen(text), "test", &err);

    if (v == NULL)
        fail("bad test YAML '%s': %s", text, err.msg);
    return v;
}

/* ---- Nodes and BlockBackends -------------------------------------------- */

struct add_wait {
    bool done;
    struct ng_node *node;
    struct ng_error *err;
};

static void
add_done(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct add_wait *w = opaque;

    CHECK(!w->done);                /* exactly once */
    w->done = true;
    w->node = node;
    if (node == NULL)
        *w->err = *err;
}

struct ng_node *
add_try(struct fixture *f, const char *name, const struct ng_value *o,
        struct ng_error *err)
{
    struct add_wait w = { .err = err };

    if (ng_graph_add_node(f->g, name, o, add_done, &w, err) == -1)
        return NULL;
    while (!w.done)
        CHECK(uv_run(&f->loop, UV_RUN_ONCE) != 0 || w.done);
    return w.node;
}

struct ng_node *
add(struct fixture *f, const char *name, struct ng_value *o)
{
    struct ng_error err = { 0 };
    struct ng_node *n = add_try(f, name, o, &err);

    ng_value_free(o);
    if (n == NULL)
        fail("adding node '%s': %s", name, err.msg);
    return n;
}

void
add_fails(struct fixture *f, const char *name, struct ng_value *o,
          const char *want)
{
    struct ng_error err = { 0 };
    struct ng_node *n = add_try(f, name, o, &err);

    ng_value_free(o);
    if (n != NULL)
        fail("adding node '%s' succeeded, expected '%s'", name, want);
    if (strstr(err.msg, want) == NULL)
        fail("adding node '%s': got '%s', expected '%s'", name, err.msg,
             want);
    printf("  refused as expected: %s\n", err.msg);
}

struct ng_bb *
bb_new(struct fixture *f, const char *name, struct ng_node *root,
       bool writable)
{
    struct ng_error err = { 0 };
    struct ng_bb *bb = ng_bb_new(f->g, name, root, writable, &err);

    if (bb == NULL)
        fail("creating BB '%s': %s", name, err.msg);
    return bb;
}

/* ---- Doing I/O ---------------------------------------------------------- */

/* Completion order across requests. */
static unsigned io_seq;

static void
io_done(struct ng_req *req, int ret)
{
    struct io_result *r = req->opaque;

    CHECK(!r->done);                /* exactly once */
    r->done = true;
    r->ret = ret;
    r->when = uv_hrtime();
    r->seq = ++io_seq;
}

static void
io_submit(struct ng_bb *bb, struct ng_req *req, struct io_result *r)
{
    req->done = io_done;
    req->opaque = r;
    *r = (struct io_result){ 0 };
    ng_bb_submit(bb, req);
}

void
io_start(struct ng_bb *bb, struct ng_req *req, struct io_result *r,
         enum ng_op op, uint64_t off, uint64_t len, uint32_t flags,
         void *buf)
{
    memset(req, 0, sizeof *req);
    ng_req_init(req, op, off, len, flags);
    ng_req_set_buf(req, buf);
    io_submit(bb, req, r);
}

void
io_wait(struct fixture *f, struct io_result *r)
{
    while (!r->done)
        uv_run(&f->loop, UV_RUN_ONCE);
}

int
io_req(struct fixture *f, struct ng_bb *bb, struct ng_req *req)
{
    const enum ng_op op = req->op;
    const uint64_t off = req->offset, len = req->length;
    const uint32_t flags = req->flags;
    const struct ng_iov iov = req->iov;
    struct io_result r;

    io_submit(bb, req, &r);
    io_wait(f, &r);
    CHECK(req->op == op && req->offset == off && req->length == len &&
          req->flags == flags && req->iov.iov == iov.iov &&
          req->iov.niov == iov.niov && req->iov.skip == iov.skip);
    return r.ret;
}

int
io(struct fixture *f, struct ng_bb *bb, enum ng_op op, uint64_t off,
   uint64_t len, uint32_t flags, void *buf)
{
    struct ng_req req;

    memset(&req, 0, sizeof req);
    ng_req_init(&req, op, off, len, flags);
    ng_req_set_buf(&req, buf);
    return io_req(f, bb, &req);
}

uint32_t
extents(struct fixture *f, struct ng_bb *bb, uint64_t off, uint64_t len,
        uint32_t flags, struct ng_extent *ext, uint32_t max)
{
    struct ng_req req;
    uint64_t sum = 0;

    memset(&req, 0, sizeof req);
    ng_req_init(&req, NG_OP_BLOCK_STATUS, off, len, flags);
    req.extents = ext;
    req.max_extents = max;
    CHECK_RET(io_req(f, bb, &req), 0);
    CHECK(req.nr_extents >= 1 && req.nr_extents <= max);
    for (uint32_t i = 0; i < req.nr_extents; i++) {
        CHECK(ext[i].length > 0);
        sum += ext[i].length;
    }
    CHECK(sum <= len);
    return req.nr_extents;
}

void
check_extent(const struct ng_extent *e, uint64_t len, uint32_t flags)
{
    if (e->length != len || e->flags != flags)
        fail("extent (%" PRIu64 ", flags %u), expected (%" PRIu64
             ", flags %u)", e->length, e->flags, len, flags);
}

/* ---- Data --------------------------------------------------------------- */

/* A multiplicative hash of the position: from one byte to the next it
 * moves by 187 or 188 (mod 256), so neighbours always differ. */
static unsigned char
pattern(uint64_t pos, unsigned seed)
{
    return (unsigned char)((pos * 2654435761u >> 13) + seed * 7 + 1);
}

void
fill(unsigned char *buf, size_t len, uint64_t off, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern(off + i, seed);
}

void
check_filled(const unsigned char *buf, size_t len, uint64_t off,
             unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern(off + i, seed))
            fail("byte at %" PRIu64 " is 0x%02x, expected 0x%02x (seed %u)",
                 off + i, buf[i], pattern(off + i, seed), seed);
}

void
check_zero(const unsigned char *buf, size_t len, uint64_t off)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != 0)
            fail("byte at %" PRIu64 " is 0x%02x, expected zero", off + i,
                 buf[i]);
}

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

void
reconfigure_ok(struct ng_node *n, const char *text)
{
    struct ng_error err = { 0 };

    if (reconfigure(n, text, &err) == -1)
        fail("reconfiguring '%s' with %s: %s", n->name, text, err.msg);
}

void
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

/* ---- Files -------------------------------------------------------------- */

unsigned
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
