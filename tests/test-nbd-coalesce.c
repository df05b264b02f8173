/* tests/test-nbd-coalesce.c: however a client's byte stream is cut, the
 * requests in it are served right, and small WRITEs cost the daemon one
 * read per wake-up.
 *  - Split and coalesced: a stream of WRITEs (1 byte .. 200K, around the
 *    64K the daemon gathers in its receive buffer), READs of a known
 *    area, FLUSHes and WRITEs refused for going past the end (their
 *    payload read and thrown away) goes over a raw socket cut at
 *    awkward places -- headers split, a payload's tail with the next
 *    header, byte by byte -- each piece read by the daemon before the
 *    next is sent; then another such stream in one send.  Every reply is
 *    checked (error, READ data) and the written data read back with
 *    libnbd.
 *  - Reads per request: 4K WRITEs sent as [tail of payload i, header
 *    i+1, first 100 bytes of payload i+1], each piece read by the daemon
 *    before the next: its read syscalls (/proc/PID/io syscr) must be
 *    about one per piece.  The old code read a payload's tail on its own
 *    (exactly filling it), then the next header: two.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

#define NBDMAGIC        UINT64_C(0x4e42444d41474943)
#define IHAVEOPT        UINT64_C(0x49484156454f5054)
#define REQ_MAGIC       UINT32_C(0x25609513)
#define SIMPLE_MAGIC    UINT32_C(0x67446698)
#define EXPORT_SIZE     (UINT64_C(16) << 20)
#define REQ_SIZE        28
#define CMD_READ        0
#define CMD_WRITE       1
#define CMD_FLUSH       3
#define KNOWN_SEED      7u              /* the area READs look at */
#define KNOWN_SIZE      (UINT64_C(1) << 20)
#define MAX_REQS        256

/* ---- Raw protocol ------------------------------------------------------- */

/* Greeting, NBD_OPT_EXPORT_NAME with NO_ZEROES: compact requests, simple
 * replies. */
static int
raw_transmission(const struct ng_test_daemon *d)
{
    int fd = ng_test_raw_connect(d);
    unsigned char g[18], o[16 + 4], r[10];

    if (!ng_test_recv_all(fd, g, sizeof g, 10000) ||
        ng_test_get64(g) != NBDMAGIC || ng_test_get64(g + 8) != IHAVEOPT)
        ng_test_fail("bad greeting");
    ng_test_put32(o, 3);                    /* FIXED_NEWSTYLE, NO_ZEROES */
    ng_test_send_all(fd, o, 4);
    ng_test_put64(o, IHAVEOPT);
    ng_test_put32(o + 8, 1);                /* NBD_OPT_EXPORT_NAME */
    ng_test_put32(o + 12, 4);
    memcpy(o + 16, "demo", 4);
    ng_test_send_all(fd, o, sizeof o);
    if (!ng_test_recv_all(fd, r, sizeof r, 10000) ||
        ng_test_get64(r) != EXPORT_SIZE)
        ng_test_fail("EXPORT_NAME refused or size wrong");
    return fd;
}

/* ---- A stream of requests and what their replies must be --------------- */

struct expect {
    uint32_t error_nonzero;         /* 1: a refused request */
    uint32_t read_len;              /* READ: data that follows */
    uint64_t read_off;
};

struct stream {
    unsigned char *buf;
    size_t len, cap;
    unsigned nreqs;
    struct expect exp[MAX_REQS];
};

static void
stream_reserve(struct stream *s, size_t more)
{
    if (s->len + more <= s->cap)
        return;
    s->cap = (s->len + more) * 2;
    s->buf = realloc(s->buf, s->cap);
    if (s->buf == NULL)
        ng_test_fail("out of memory");
}

/* Append one request; the handle is its index.  A WRITE's payload is
 * the pattern of `seed` at `off`. */
static void
stream_add(struct stream *s, uint16_t cmd, uint64_t off, uint32_t len,
           unsigned seed, bool refused)
{
    unsigned char *q;
    struct expect *e = &s->exp[s->nreqs];

    if (s->nreqs == MAX_REQS)
        ng_test_fail("too many requests in a stream");
    stream_reserve(s, REQ_SIZE + (cmd == CMD_WRITE ? len : 0));
    q = s->buf + s->len;
    ng_test_put32(q, REQ_MAGIC);
    ng_test_put16(q + 4, 0);
    ng_test_put16(q + 6, cmd);
    ng_test_put64(q + 8, s->nreqs);
    ng_test_put64(q + 16, off);
    ng_test_put32(q + 24, len);
    s->len += REQ_SIZE;
    if (cmd == CMD_WRITE) {
        ng_test_fill_pattern(s->buf + s->len, len, off, seed);
        s->len += len;
    }
    e->error_nonzero = refused;
    e->read_len = cmd == CMD_READ ? len : 0;
    e->read_off = off;
    s->nreqs++;
}

/* WRITE sizes around the daemon's 64K inline limit and its 128K receive
 * buffer, READs of the known area, FLUSHes, refused WRITEs past the
 * end.  Writes go to [*next, ...) of the export, seed `seed`. */
static void
stream_mixed(struct stream *s, uint64_t *next, unsigned seed)
{
    static const uint32_t sizes[] = {
        1, 512, 4096, 4097, 28, 32, 65535, 65536, 65537, 131072, 200000,
        4096, 4096, 4096, 100,
    };

    for (unsigned round = 0; round < 3; round++) {
        for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            stream_add(s, CMD_WRITE, *next, sizes[i], seed, false);
            *next += sizes[i];
            if (i % 4 == 1)
                stream_add(s, CMD_READ, (i * 4096 + round * 1000) %
                           (KNOWN_SIZE - 8192), 1 + i * 500, 0, false);
            if (i % 6 == 2)
                stream_add(s, CMD_FLUSH, 0, 0, 0, false);
            if (i % 7 == 3)             /* ends past the export's end */
                stream_add(s, CMD_WRITE, EXPORT_SIZE - 100, 4096 + i, seed,
                           true);
        }
    }
}

/* Read every reply of s and check it. */
static void
check_replies(int fd, const struct stream *s)
{
    static unsigned char data[64 << 10];

    for (unsigned n = 0; n < s->nreqs; n++) {
        unsigned char r[16];
        uint64_t h;
        uint32_t err;
        const struct expect *e;

        if (!ng_test_recv_all(fd, r, sizeof r, 20000))
            ng_test_fail("connection closed after %u of %u replies", n,
                         s->nreqs);
        h = ng_test_get64(r + 8);
        if (ng_test_get32(r) != SIMPLE_MAGIC || h >= s->nreqs)
            ng_test_fail("bad reply (handle %" PRIu64 ")", h);
        e = &s->exp[h];
        err = ng_test_get32(r + 4);
        if ((err != 0) != (e->error_nonzero != 0))
            ng_test_fail("request %" PRIu64 ": error %u, expected %s", h, err,
                         e->error_nonzero ? "one" : "none");
        if (err != 0 || e->read_len == 0)
            continue;
        if (!ng_test_recv_all(fd, data, e->read_len, 20000))
            ng_test_fail("READ %" PRIu64 ": data cut short", h);
        if (ng_test_check_pattern(data, e->read_len, e->read_off,
                                  KNOWN_SEED) != -1)
            ng_test_fail("READ %" PRIu64 ": wrong data", h);
    }
}

/* The region [from, to) reads back as the pattern of `seed`. */
static void
verify_written(struct nbd_handle *nbd, uint64_t from, uint64_t to,
               unsigned seed)
{
    size_t len = (size_t)(to - from);
    unsigned char *buf = malloc(len);
    long long bad;

    if (buf == NULL)
        ng_test_fail("out of memory");
    if (nbd_pread(nbd, buf, len, from, 0) == -1)
        ng_test_fail_nbd("pread");
    bad = ng_test_check_pattern(buf, len, from, seed);
    if (bad != -1)
        ng_test_fail("byte %" PRIu64 " of the stream's writes is wrong",
                     from + (uint64_t)bad);
    free(buf);
}

/* ---- Tests --------------------------------------------------------------- */

/* Piece lengths: splits inside headers, at their ends, and whole
 * requests together. */
static size_t
next_cut(uint64_t *st)
{
    static const size_t lens[] = {
        1, 2, 3, 27, 28, 29, 60, 100, 4095, 4096, 4124, 4125, 65536,
        70000, 150000,
    };

    *st ^= *st << 13;
    *st ^= *st >> 7;
    *st ^= *st << 17;
    return lens[*st % (sizeof lens / sizeof lens[0])];
}

static void
test_split_and_coalesced(const struct ng_test_daemon *d,
                         struct nbd_handle *nbd)
{
    struct stream *cut = calloc(1, sizeof *cut);
    struct stream *whole = calloc(1, sizeof *whole);
    uint64_t next = KNOWN_SIZE, mid, st = 0x9e3779b97f4a7c15u;
    int fd = raw_transmission(d);

    if (cut == NULL || whole == NULL)
        ng_test_fail("out of memory");
    stream_mixed(cut, &next, 11);
    mid = next;
    stream_mixed(whole, &next, 12);

    for (size_t pos = 0; pos < cut->len;) {
        size_t n = next_cut(&st);

        if (n > cut->len - pos)
            n = cut->len - pos;
        ng_test_send_all(fd, cut->buf + pos, n);
        ng_test_wait_consumed(fd);
        pos += n;
    }
    check_replies(fd, cut);

    ng_test_send_all(fd, whole->buf, whole->len);
    check_replies(fd, whole);

    verify_written(nbd, KNOWN_SIZE, mid, 11);
    verify_written(nbd, mid, next, 12);
    printf("split: %u requests in %zu bytes cut up, %u in one send\n",
           cut->nreqs, cut->len, whole->nreqs);
    close(fd);
    free(cut->buf);
    free(whole->buf);
    free(cut);
    free(whole);
}

/* The daemon's read syscalls so far (all threads). */
static unsigned long long
daemon_reads(const struct ng_test_daemon *d)
{
    char path[64], line[128];
    unsigned long long n = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/io", (int)d->pid);
    f = fopen(path, "r");
    if (f == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "syscr: %llu", &n) == 1)
            break;
    fclose(f);
    return n;
}

#define COUNT_WRITES 200
#define COUNT_LEN    4096
#define COUNT_HEAD   100                /* payload bytes sent with a header */

static void
test_reads_per_request(const struct ng_test_daemon *d,
                       struct nbd_handle *nbd)
{
    struct stream *s = calloc(1, sizeof *s);
    uint64_t base = EXPORT_SIZE / 2;
    unsigned long long before, after;
    size_t each = REQ_SIZE + COUNT_LEN, pos = 0;
    int fd = raw_transmission(d);
    double per;

    if (s == NULL)
        ng_test_fail("out of memory");
    for (unsigned i = 0; i < COUNT_WRITES; i++)
        stream_add(s, CMD_WRITE, base + (uint64_t)i * COUNT_LEN, COUNT_LEN,
                   13, false);
    before = daemon_reads(d);
    /* One piece per request: the tail of the last one's payload, then
     * this one's header and the head of its payload. */
    for (unsigned i = 0; i <= COUNT_WRITES; i++) {
        size_t end = i < COUNT_WRITES ? i * each + REQ_SIZE + COUNT_HEAD
                                      : s->len;

        ng_test_send_all(fd, s->buf + pos, end - pos);
        ng_test_wait_consumed(fd);
        pos = end;
    }
    after = daemon_reads(d);
    check_replies(fd, s);
    verify_written(nbd, base, base + (uint64_t)COUNT_WRITES * COUNT_LEN, 13);
    per = (double)(after - before) / (COUNT_WRITES + 1);
    printf("reads: %llu read syscalls for %u pieces (%.2f each)\n",
           after - before, COUNT_WRITES + 1, per);
    if (per > 1.5)
        ng_test_fail("%.2f read syscalls per piece; one is enough", per);
    close(fd);
    free(s->buf);
    free(s);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct nbd_handle *nbd;
    unsigned char *known = malloc(KNOWN_SIZE);

    ng_test_timeout(120);
    d = ng_test_start(ng_test_memory_config("16M"), "demo");
    nbd = nbd_create();
    if (known == NULL || nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    ng_test_fill_pattern(known, KNOWN_SIZE, 0, KNOWN_SEED);
    if (nbd_pwrite(nbd, known, KNOWN_SIZE, 0, 0) == -1)
        ng_test_fail_nbd("pwrite");
    free(known);

    test_split_and_coalesced(d, nbd);
    test_reads_per_request(d, nbd);

    nbd_close(nbd);
    ng_test_stop(d);
    return 0;
}
