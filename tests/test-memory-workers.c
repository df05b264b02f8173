/* tests/test-memory-workers.c: a memory node's big copies run on worker
 * threads (graph/drv-memory.c); pages taken out of its table meanwhile
 * must outlive them, and the data must come out right.
 *
 * libnbd clients, each on its own connection and its own regions of a
 * 32 MiB memory export (three clients), or of a memory overlay over
 * another memory node (two clients), race in rounds: a big write (256 KiB and more,
 * so it goes to a worker), sometimes a second one over it, trims of
 * whole pages in the middle of it (which free them), a write-zeroes,
 * small writes (inline) and a read of the whole region, all in flight at
 * once.  Meanwhile a mirror copies each export's node to another memory
 * node, its bulk reads and writes (NG_REQ_BACKGROUND) on the workers too
 * (the overlay's reads laid over what its backing node read).
 * Each byte a round read back must hold what one of the requests covering
 * it wrote (or, for the read in flight, what it held before): no other
 * export's old data, no garbage.  At the end the mirrors pivot the
 * exports onto their copies, which must equal the clients' record byte
 * for byte.
 * Under ASan a page freed under a worker's copy is a use-after-free. */
#include <config.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK            (32u << 20)
#define REGION          (2u << 20)
#define REGIONS         (DISK / REGION)
#define PAGE            (64u << 10)
#define BIG             (256u << 10)    /* drv-memory.c's worker write */
#define CLIENTS         5               /* 3 on vm, 2 on ov */
#define VM_CLIENTS      3
#define ROUNDS          40              /* per client, at most ... */
#define RACE_SECONDS    8               /* ... and not started after */
#define MAX_OPS         12

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  src: { driver: memory, size: 32M }\n"
    "  dst: { driver: memory, size: 32M }\n"
    "  base: { driver: memory, size: 32M }\n"
    "  ov: { driver: memory, size: 32M, backing: base }\n"
    "  ov-dst: { driver: memory, size: 32M }\n"
    "exports:\n"
    "  vm: { node: src, writable: true }\n"
    "  ov: { node: ov, writable: true }\n"
    "  base: { node: base, writable: true }\n";

/* What each disk holds, as the rounds read it back.  Region r of an
 * export belongs to its client r % (its clients), which alone touches
 * its bytes.  The overlay starts as its backing node was written. */
static unsigned char model_vm[DISK], model_ov[DISK];

enum op_kind { OP_WRITE, OP_TRIM, OP_ZERO };

struct op {
    enum op_kind kind;
    uint64_t off, len;
    unsigned char *buf;             /* OP_WRITE: its data */
    int64_t cookie;
};

struct client {
    unsigned index;                 /* among the export's clients */
    unsigned peers;                 /* the export's clients */
    const char *name;               /* the export's */
    char uri[512];
    unsigned char *model;
    time_t stop_at;
    unsigned rounds;
    unsigned rng;
    unsigned seed;
    unsigned char *read_buf, *check_buf;
    unsigned char *write_buf[2];
    pthread_t thread;
};

static unsigned
next_rand(unsigned *rng)
{
    *rng = *rng * 1103515245u + 12345u;
    return *rng >> 8;
}

/* Is `got` at absolute offset `abs` what one of the ops covering it left
 * there, or (with `old_ok`, or when none covers it) what it held? */
static bool
byte_allowed(const struct op *ops, unsigned n, const unsigned char *model,
             uint64_t abs, unsigned char got, bool old_ok)
{
    bool covered = false;

    for (unsigned i = 0; i < n; i++) {
        const struct op *o = &ops[i];

        if (abs < o->off || abs >= o->off + o->len)
            continue;
        covered = true;
        if (got == (o->kind == OP_WRITE ? o->buf[abs - o->off] : 0))
            return true;
    }
    return (old_ok || !covered) && got == model[abs];
}

static const unsigned char zeroes[REGION];

/* Does [a, b) of `got` (at `base`) equal, as one piece, what one of the
 * ops covering it left, or what it held?  The usual case; a mix of
 * overlapping writes needs the byte by byte look. */
static bool
segment_whole(const struct op *ops, unsigned n, const unsigned char *model,
              uint64_t base, const unsigned char *got, uint64_t a,
              uint64_t b, bool old_ok)
{
    bool covered = false;

    for (unsigned i = 0; i < n; i++) {
        const struct op *o = &ops[i];
        const unsigned char *want;

        if (a < o->off || a >= o->off + o->len)
            continue;
        covered = true;
        want = o->kind == OP_WRITE ? o->buf + (a - o->off) : zeroes;
        if (memcmp(got + (a - base), want, b - a) == 0)
            return true;
    }
    return (old_ok || !covered) &&
           memcmp(got + (a - base), model + a, b - a) == 0;
}

static int
cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

    return a < b ? -1 : a > b;
}

/* Every byte of the region as byte_allowed() says, piece by piece
 * between the ops' edges (inside a piece the same ops cover it all). */
static void
check_region(const struct client *c, const struct op *ops, unsigned n,
             uint64_t base, const unsigned char *got, bool old_ok,
             const char *what)
{
    uint64_t edge[2 * MAX_OPS + 2];
    unsigned n_edges = 0;

    edge[n_edges++] = base;
    edge[n_edges++] = base + REGION;
    for (unsigned i = 0; i < n; i++) {
        edge[n_edges++] = ops[i].off;
        edge[n_edges++] = ops[i].off + ops[i].len;
    }
    qsort(edge, n_edges, sizeof *edge, cmp_u64);
    for (unsigned e = 0; e + 1 < n_edges; e++) {
        uint64_t a = edge[e], b = edge[e + 1];

        if (a == b ||
            segment_whole(ops, n, c->model, base, got, a, b, old_ok))
            continue;
        for (uint64_t i = a; i < b; i++)
            if (!byte_allowed(ops, n, c->model, i, got[i - base], old_ok))
                ng_test_fail("%s client %u round %u: %s: byte at %llu is "
                             "0x%02x, which none of the round's requests "
                             "left there (held 0x%02x)", c->name, c->index,
                             c->rounds, what, (unsigned long long)i,
                             got[i - base], c->model[i]);
    }
}

static void
add_op(struct op *ops, unsigned *n, enum op_kind kind, uint64_t off,
       uint64_t len, unsigned char *buf)
{
    ops[*n] = (struct op){ kind, off, len, buf, 0 };
    (*n)++;
}

/* A big write somewhere in the region, from a random offset inside a
 * page, into buf (REGION bytes). */
static void
add_big_write(struct client *c, struct op *ops, unsigned *n, uint64_t base,
              unsigned char *buf)
{
    uint64_t off = base + next_rand(&c->rng) % PAGE;
    uint64_t room = base + REGION - off;
    uint64_t len = BIG + next_rand(&c->rng) % (room - BIG + 1);

    ng_test_fill_pattern(buf, len, off, ++c->seed);
    add_op(ops, n, OP_WRITE, off, len, buf);
}

/* One round's requests; the first is a big write, so the trims that
 * follow it on the connection reach the loop while it copies. */
static unsigned
plan_round(struct client *c, struct op *ops, uint64_t base,
           unsigned char *small)
{
    unsigned n = 0, k;

    add_big_write(c, ops, &n, base, c->write_buf[0]);
    for (k = 1 + next_rand(&c->rng) % 3; k > 0; k--) {
        uint64_t page = next_rand(&c->rng) % (REGION / PAGE);
        uint64_t pages = 1 + next_rand(&c->rng) % 4;

        if (page + pages > REGION / PAGE)
            pages = REGION / PAGE - page;
        add_op(ops, &n, OP_TRIM, base + page * PAGE, pages * PAGE, NULL);
    }
    if (next_rand(&c->rng) % 2)
        add_big_write(c, ops, &n, base, c->write_buf[1]);
    {
        uint64_t len = 4096 + next_rand(&c->rng) % BIG;
        uint64_t off = base + next_rand(&c->rng) % (REGION - len);

        add_op(ops, &n, OP_ZERO, off, len, NULL);
    }
    for (k = 0; k < 2; k++) {
        uint64_t off = base + next_rand(&c->rng) % (REGION - 4096);
        unsigned char *buf = small + k * 4096;

        ng_test_fill_pattern(buf, 4096, off, ++c->seed);
        add_op(ops, &n, OP_WRITE, off, 4096, buf);
    }
    return n;
}

static void
wait_for(struct nbd_handle *h, int64_t cookie, const char *what)
{
    int r;

    while ((r = nbd_aio_command_completed(h, cookie)) == 0)
        if (nbd_poll(h, -1) == -1)
            ng_test_fail_nbd("poll");
    if (r == -1)
        ng_test_fail_nbd(what);
}

static void
run_round(struct client *c, struct nbd_handle *h)
{
    struct op ops[MAX_OPS];
    unsigned char small[2 * 4096];
    unsigned region = c->index +
                      c->peers * (next_rand(&c->rng) % (REGIONS / c->peers));
    uint64_t base = (uint64_t)region * REGION;
    unsigned n = plan_round(c, ops, base, small), i;
    int64_t read_cookie = 0;

    for (i = 0; i < n; i++) {
        struct op *o = &ops[i];

        if (o->kind == OP_WRITE)
            o->cookie = nbd_aio_pwrite(h, o->buf, o->len, o->off,
                                       NBD_NULL_COMPLETION, 0);
        else if (o->kind == OP_TRIM)
            o->cookie = nbd_aio_trim(h, o->len, o->off,
                                     NBD_NULL_COMPLETION, 0);
        else
            o->cookie = nbd_aio_zero(h, o->len, o->off,
                                     NBD_NULL_COMPLETION, 0);
        if (o->cookie == -1)
            ng_test_fail_nbd("aio request");
        if (i == 1) {                   /* a read in the middle of it */
            read_cookie = nbd_aio_pread(h, c->read_buf, REGION, base,
                                        NBD_NULL_COMPLETION, 0);
            if (read_cookie == -1)
                ng_test_fail_nbd("aio_pread");
        }
    }
    for (i = 0; i < n; i++)
        wait_for(h, ops[i].cookie, "a round's request");
    wait_for(h, read_cookie, "the round's read");
    check_region(c, ops, n, base, c->read_buf, true, "read in flight");
    if (nbd_pread(h, c->check_buf, REGION, base, 0) == -1)
        ng_test_fail_nbd("pread after the round");
    check_region(c, ops, n, base, c->check_buf, false, "read after");
    memcpy(c->model + base, c->check_buf, REGION);
}

static void *
client_run(void *arg)
{
    struct client *c = arg;
    struct nbd_handle *h = nbd_create();

    if (h == NULL || nbd_connect_uri(h, c->uri) == -1)
        ng_test_fail_nbd("connect");
    while (c->rounds < ROUNDS && time(NULL) < c->stop_at) {
        run_round(c, h);
        c->rounds++;
    }
    nbd_shutdown(h, 0);
    nbd_close(h);
    return NULL;
}

/* Half the disk written first, in 1 MiB writes, so rounds meet pages
 * that exist as well as holes. */
static void
fill(const char *uri, unsigned char *model)
{
    struct nbd_handle *h = nbd_create();
    unsigned char *buf = malloc(1u << 20);

    if (h == NULL || buf == NULL || nbd_connect_uri(h, uri) == -1)
        ng_test_fail_nbd("connect");
    for (uint64_t off = 0; off < DISK; off += 2u << 20) {
        ng_test_fill_pattern(buf, 1u << 20, off, 7);
        if (nbd_pwrite(h, buf, 1u << 20, off, 0) == -1)
            ng_test_fail_nbd("fill");
        memcpy(model + off, buf, 1u << 20);
    }
    nbd_shutdown(h, 0);
    nbd_close(h);
    free(buf);
}

static void
verify_all(const char *uri, const unsigned char *model, const char *what)
{
    struct nbd_handle *h = nbd_create();
    unsigned char *buf = malloc(REGION);

    if (h == NULL || buf == NULL || nbd_connect_uri(h, uri) == -1)
        ng_test_fail_nbd("connect");
    for (uint64_t off = 0; off < DISK; off += REGION) {
        if (nbd_pread(h, buf, REGION, off, 0) == -1)
            ng_test_fail_nbd("pread");
        for (uint64_t i = 0; i < REGION; i++)
            if (buf[i] != model[off + i])
                ng_test_fail("%s: byte at %llu is 0x%02x, the record says "
                             "0x%02x", what, (unsigned long long)(off + i),
                             buf[i], model[off + i]);
    }
    nbd_shutdown(h, 0);
    nbd_close(h);
    free(buf);
}

static void
start_mirror(struct ng_test_qmp *q, const char *job, const char *from,
             const char *to)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute",
                               "blockdev-mirror", "arguments", "job-id",
                               job, "device", from, "target", to, "sync",
                               "full"));
}

static void
pivot(struct ng_test_qmp *q, const char *job)
{
    ng_test_qmp_wait_job(q, job, "ready", 60, NULL);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-complete",
                               "arguments", "id", job));
    ng_test_qmp_wait_job(q, job, "gone", 60, NULL);
}

static void
uri_of(const struct ng_test_daemon *d, const char *name, char *out,
       size_t size)
{
    snprintf(out, size, "nbd+unix:///%s?socket=%s", name, d->sock);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct client clients[CLIENTS];
    char uri_ov[512], uri_base[512];
    unsigned total = 0, i;

    ng_test_timeout(240);
    d = ng_test_start(config, "vm");
    q = ng_test_qmp_connect(d->control);
    uri_of(d, "ov", uri_ov, sizeof uri_ov);
    uri_of(d, "base", uri_base, sizeof uri_base);
    fill(d->uri, model_vm);
    /* The overlay's backing, written before the overlay ever is. */
    fill(uri_base, model_ov);
    start_mirror(q, "m0", "src", "dst");
    start_mirror(q, "m1", "ov", "ov-dst");
    for (i = 0; i < CLIENTS; i++) {
        struct client *c = &clients[i];
        bool vm = i < VM_CLIENTS;

        *c = (struct client){ .index = vm ? i : i - VM_CLIENTS,
                              .peers = vm ? VM_CLIENTS
                                          : CLIENTS - VM_CLIENTS,
                              .name = vm ? "vm" : "ov",
                              .model = vm ? model_vm : model_ov,
                              .stop_at = time(NULL) + RACE_SECONDS,
                              .rng = 0x9e3779b9u * (i + 1),
                              .seed = (i + 1) << 24 };
        snprintf(c->uri, sizeof c->uri, "%s", vm ? d->uri : uri_ov);
        c->read_buf = malloc(REGION);
        c->check_buf = malloc(REGION);
        c->write_buf[0] = malloc(REGION);
        c->write_buf[1] = malloc(REGION);
        if (c->read_buf == NULL || c->check_buf == NULL ||
            c->write_buf[0] == NULL || c->write_buf[1] == NULL)
            ng_test_fail("out of memory");
        if (pthread_create(&c->thread, NULL, client_run, c) != 0)
            ng_test_fail("pthread_create");
    }
    for (i = 0; i < CLIENTS; i++) {
        pthread_join(clients[i].thread, NULL);
        total += clients[i].rounds;
        free(clients[i].read_buf);
        free(clients[i].check_buf);
        free(clients[i].write_buf[0]);
        free(clients[i].write_buf[1]);
    }
    printf("%u rounds, every byte as one of its requests left it\n", total);
    fflush(stdout);
    verify_all(d->uri, model_vm, "vm, quiet");
    verify_all(uri_ov, model_ov, "ov, quiet");
    /* The copies' bulk reads of the sources and writes of the targets
     * ran on the workers too: the targets must be the same disks. */
    pivot(q, "m0");
    pivot(q, "m1");
    verify_all(d->uri, model_vm, "vm's mirror copy, after the pivot");
    verify_all(uri_ov, model_ov, "ov's mirror copy, after the pivot");
    printf("the mirrors' copies equal the record\n");
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
