/* tests/test-nbd-data.c: data through the NBD server, with structured
 * replies on and off — a pattern written over the whole export and read
 * back, flush, FUA, DF, cache, trim, write-zeroes and the block status
 * map they leave. */
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

#define EXPORT_SIZE     (UINT64_C(64) << 20)
#define CHUNK           (1u << 20)
#define MIB             (UINT64_C(1) << 20)

static struct nbd_handle *
connect_demo(const struct ng_test_daemon *d, bool structured)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL)
        ng_test_fail_nbd("nbd_create");
    if (nbd_set_request_structured_replies(nbd, structured) == -1 ||
        (structured &&
         nbd_add_meta_context(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) ||
        nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    if (nbd_get_structured_replies_negotiated(nbd) != structured)
        ng_test_fail("structured replies: wanted %d", structured);
    if (nbd_get_size(nbd) != (int64_t)EXPORT_SIZE)
        ng_test_fail("export size %" PRId64, nbd_get_size(nbd));
    if (nbd_can_flush(nbd) != 1 || nbd_can_trim(nbd) != 1 ||
        nbd_can_zero(nbd) != 1 || nbd_can_fua(nbd) != 1 ||
        nbd_is_read_only(nbd) != 0)
        ng_test_fail("unexpected transmission flags");
    if (nbd_can_df(nbd) != structured)
        ng_test_fail("DF must follow structured replies");
    return nbd;
}

static void
write_pattern(struct nbd_handle *nbd, uint64_t off, uint64_t len,
              unsigned seed, uint32_t flags)
{
    char *buf = malloc(CHUNK);

    if (buf == NULL)
        ng_test_fail("out of memory");
    for (uint64_t done = 0; done < len; done += CHUNK) {
        size_t n = len - done < CHUNK ? (size_t)(len - done) : CHUNK;

        ng_test_fill_pattern(buf, n, off + done, seed);
        if (nbd_pwrite(nbd, buf, n, off + done, flags) == -1)
            ng_test_fail_nbd("pwrite");
    }
    free(buf);
}

static void
check_pattern(struct nbd_handle *nbd, uint64_t off, uint64_t len,
              unsigned seed, uint32_t flags)
{
    char *buf = malloc(CHUNK);
    long long bad;

    if (buf == NULL)
        ng_test_fail("out of memory");
    for (uint64_t done = 0; done < len; done += CHUNK) {
        size_t n = len - done < CHUNK ? (size_t)(len - done) : CHUNK;

        if (nbd_pread(nbd, buf, n, off + done, flags) == -1)
            ng_test_fail_nbd("pread");
        bad = ng_test_check_pattern(buf, n, off + done, seed);
        if (bad >= 0)
            ng_test_fail("pattern %u wrong at offset %" PRIu64, seed,
                         off + done + (uint64_t)bad);
    }
    free(buf);
}

static void
check_zeroes(struct nbd_handle *nbd, uint64_t off, uint64_t len)
{
    char *buf = malloc(len);

    if (buf == NULL)
        ng_test_fail("out of memory");
    if (nbd_pread(nbd, buf, len, off, 0) == -1)
        ng_test_fail_nbd("pread zeroes");
    for (uint64_t i = 0; i < len; i++) {
        if (buf[i] != 0)
            ng_test_fail("byte at %" PRIu64 " not zero", off + i);
    }
    free(buf);
}

/* Unaligned and odd sizes too: the server has a minimum block size of 1. */
static void
test_unaligned(struct nbd_handle *nbd, unsigned seed)
{
    write_pattern(nbd, 12345, 77777, seed, 0);
    check_pattern(nbd, 12345, 77777, seed, 0);
    write_pattern(nbd, EXPORT_SIZE - 1, 1, seed, 0);
    check_pattern(nbd, EXPORT_SIZE - 1, 1, seed, 0);
}

/* Many requests in flight on one connection, completed out of order. */
static void
test_pipelined(struct nbd_handle *nbd, unsigned seed)
{
    enum { N = 64, LEN = 4096 };
    static char bufs[N][LEN];
    int64_t cookies[N];

    for (int i = 0; i < N; i++) {
        uint64_t off = (uint64_t)((i * 7919) % 1024) * LEN + 32 * MIB;

        ng_test_fill_pattern(bufs[i], LEN, off, seed);
        cookies[i] = nbd_aio_pwrite(nbd, bufs[i], LEN, off,
                                    NBD_NULL_COMPLETION, 0);
        if (cookies[i] == -1)
            ng_test_fail_nbd("aio_pwrite");
    }
    for (int i = 0; i < N; i++) {
        while (nbd_aio_command_completed(nbd, cookies[i]) == 0) {
            if (nbd_poll(nbd, -1) == -1)
                ng_test_fail_nbd("poll");
        }
    }
    for (int i = 0; i < N; i++) {
        uint64_t off = (uint64_t)((i * 7919) % 1024) * LEN + 32 * MIB;

        memset(bufs[i], 0, LEN);
        cookies[i] = nbd_aio_pread(nbd, bufs[i], LEN, off,
                                   NBD_NULL_COMPLETION, 0);
        if (cookies[i] == -1)
            ng_test_fail_nbd("aio_pread");
    }
    for (int i = 0; i < N; i++) {
        uint64_t off = (uint64_t)((i * 7919) % 1024) * LEN + 32 * MIB;

        while (nbd_aio_command_completed(nbd, cookies[i]) == 0) {
            if (nbd_poll(nbd, -1) == -1)
                ng_test_fail_nbd("poll");
        }
        if (ng_test_check_pattern(bufs[i], LEN, off, seed) >= 0)
            ng_test_fail("pipelined read %d wrong", i);
    }
}

struct map {
    uint64_t start;             /* offset the query began at */
    uint64_t end;               /* covered so far */
    uint32_t flags_at[64];      /* per MiB of [0, 64 MiB) */
    int calls;
};

static int
extent_cb(void *opaque, const char *context, uint64_t offset,
          uint32_t *entries, size_t n, int *error)
{
    struct map *m = opaque;
    uint64_t pos = offset;

    (void)error;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        ng_test_fail("unexpected context %s", context);
    m->calls++;
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (entries[i] == 0)
            ng_test_fail("zero-length extent");
        for (uint64_t p = pos; p < pos + entries[i]; p += 4096) {
            if (p % MIB == 0 && p / MIB < 64)
                m->flags_at[p / MIB] = entries[i + 1];
        }
        pos += entries[i];
    }
    m->end = pos;
    return 0;
}

/* Walk the whole export with block status and record each MiB's flags. */
static void
read_map(struct nbd_handle *nbd, struct map *m, uint32_t flags)
{
    uint64_t off = 0;

    memset(m, 0, sizeof *m);
    while (off < EXPORT_SIZE) {
        m->start = off;
        m->end = off;
        if (nbd_block_status(nbd, EXPORT_SIZE - off, off,
                             (nbd_extent_callback) { .callback = extent_cb,
                                                     .user_data = m },
                             flags) == -1)
            ng_test_fail_nbd("block_status");
        if (m->end <= off)
            ng_test_fail("block status made no progress at %" PRIu64, off);
        if ((flags & LIBNBD_CMD_FLAG_REQ_ONE) && m->end > EXPORT_SIZE)
            ng_test_fail("REQ_ONE extent beyond the request");
        off = m->end;
    }
}

static void
test_trim_zero_map(struct nbd_handle *nbd, bool structured, unsigned seed)
{
    struct map m;

    write_pattern(nbd, 0, 16 * MIB, seed, 0);
    /* trim [4M, 6M), zero [8M, 9M) allowing holes, [10M, 11M) without */
    if (nbd_trim(nbd, 2 * MIB, 4 * MIB, 0) == -1)
        ng_test_fail_nbd("trim");
    if (nbd_zero(nbd, MIB, 8 * MIB, 0) == -1)
        ng_test_fail_nbd("zero");
    if (nbd_zero(nbd, MIB, 10 * MIB, LIBNBD_CMD_FLAG_NO_HOLE) == -1)
        ng_test_fail_nbd("zero no-hole");
    if (nbd_zero(nbd, 4096, 12 * MIB + 4096, LIBNBD_CMD_FLAG_FUA) == -1)
        ng_test_fail_nbd("zero fua");
    if (nbd_can_fast_zero(nbd) == 1 &&
        nbd_zero(nbd, MIB, 14 * MIB, LIBNBD_CMD_FLAG_FAST_ZERO) == -1 &&
        nbd_get_errno() != ENOTSUP)
        ng_test_fail_nbd("fast zero");
    check_zeroes(nbd, 4 * MIB, 2 * MIB);
    check_zeroes(nbd, 8 * MIB, MIB);
    check_zeroes(nbd, 10 * MIB, MIB);
    check_zeroes(nbd, 12 * MIB + 4096, 4096);
    check_pattern(nbd, 0, 4 * MIB, seed, 0);
    check_pattern(nbd, 6 * MIB, 2 * MIB, seed, 0);
    check_pattern(nbd, 12 * MIB, 4096, seed, 0);
    if (!structured)
        return;
    read_map(nbd, &m, 0);
    if (m.flags_at[0] != 0 || m.flags_at[3] != 0 || m.flags_at[6] != 0)
        ng_test_fail("written data reported as a hole");
    if (m.flags_at[4] != (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO) ||
        m.flags_at[5] != (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO))
        ng_test_fail("trimmed range not a hole (flags %u)", m.flags_at[4]);
    if (!(m.flags_at[8] & LIBNBD_STATE_ZERO))
        ng_test_fail("zeroed range not reported as zero");
    read_map(nbd, &m, LIBNBD_CMD_FLAG_REQ_ONE);
    if (m.flags_at[4] != (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO))
        ng_test_fail("REQ_ONE map differs");
}

static int
count_chunk(void *opaque, const void *subbuf, size_t count, uint64_t offset,
            unsigned status, int *error)
{
    int *chunks = opaque;

    (void)subbuf; (void)count; (void)offset; (void)error;
    if (status != LIBNBD_READ_DATA)
        ng_test_fail("DF read: chunk of type %u", status);
    (*chunks)++;
    return 0;
}

/* DF: the whole read in one data chunk. */
static void
test_df(struct nbd_handle *nbd, unsigned seed)
{
    static char buf[1 << 20];
    int chunks = 0;

    if (nbd_pread_structured(nbd, buf, sizeof buf, 5 << 20,
                             (nbd_chunk_callback) { .callback = count_chunk,
                                                    .user_data = &chunks },
                             LIBNBD_CMD_FLAG_DF) == -1)
        ng_test_fail_nbd("pread_structured DF");
    if (chunks != 1)
        ng_test_fail("DF read in %d chunks", chunks);
    if (ng_test_check_pattern(buf, sizeof buf, 5 << 20, seed) >= 0)
        ng_test_fail("DF read: wrong data");
}

static void
run(const struct ng_test_daemon *d, bool structured, unsigned seed)
{
    struct nbd_handle *nbd = connect_demo(d, structured);

    write_pattern(nbd, 0, EXPORT_SIZE, seed, 0);
    if (nbd_flush(nbd, 0) == -1)
        ng_test_fail_nbd("flush");
    check_pattern(nbd, 0, EXPORT_SIZE, seed, 0);
    if (structured)
        test_df(nbd, seed);
    write_pattern(nbd, 3 * MIB, 2 * MIB, seed + 1, LIBNBD_CMD_FLAG_FUA);
    check_pattern(nbd, 3 * MIB, 2 * MIB, seed + 1, 0);
    if (nbd_can_cache(nbd) == 1 && nbd_cache(nbd, 8 * MIB, 0, 0) == -1)
        ng_test_fail_nbd("cache");
    test_unaligned(nbd, seed + 2);
    test_pipelined(nbd, seed + 3);
    /* 32 MiB in one request */
    {
        char *big = malloc(32 * MIB);

        if (big == NULL)
            ng_test_fail("out of memory");
        ng_test_fill_pattern(big, 32 * MIB, 16 * MIB, seed + 4);
        if (nbd_pwrite(nbd, big, 32 * MIB, 16 * MIB, 0) == -1)
            ng_test_fail_nbd("pwrite 32 MiB");
        memset(big, 0, 32 * MIB);
        if (nbd_pread(nbd, big, 32 * MIB, 16 * MIB, 0) == -1)
            ng_test_fail_nbd("pread 32 MiB");
        if (ng_test_check_pattern(big, 32 * MIB, 16 * MIB, seed + 4) >= 0)
            ng_test_fail("32 MiB read-back differs");
        free(big);
    }
    test_trim_zero_map(nbd, structured, seed + 5);
    if (nbd_shutdown(nbd, 0) == -1)
        ng_test_fail_nbd("shutdown");
    nbd_close(nbd);
}

/* The file driver completes on worker threads, so replies come back
 * later and out of order: the same tests over a file export. */
static void
run_on_file(void)
{
    struct ng_test_daemon *d;
    char path[128], yaml[512];
    FILE *fp;

    snprintf(path, sizeof path, "/tmp/ngtest-nbd-data-%ld.img",
             (long)getpid());
    fp = fopen(path, "w");
    if (fp == NULL || ftruncate(fileno(fp), (off_t)EXPORT_SIZE) == -1)
        ng_test_fail("%s: cannot create", path);
    fclose(fp);
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [ \"unix:@SOCK@\" ]\n"
             "nodes:\n"
             "  f0: { driver: file, filename: \"%s\" }\n"
             "exports:\n"
             "  demo: { node: f0, writable: true }\n", path);
    d = ng_test_start(yaml, "demo");
    run(d, true, 21);
    run(d, false, 31);
    ng_test_stop(d);
    unlink(path);
}

int
main(void)
{
    struct ng_test_daemon *d;

    ng_test_timeout(240);
    d = ng_test_start(ng_test_memory_config("64M"), "demo");
    run(d, true, 1);
    run(d, false, 11);
    ng_test_stop(d);
    run_on_file();
    return 0;
}
