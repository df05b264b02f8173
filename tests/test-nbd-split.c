/* tests/test-nbd-split.c: unaligned and oversized requests from an NBD
 * client reach an aligned node only as the core fits them, and the data
 * stays right.
 *
 *     export "disk" --> blkdebug (align 4K, max-transfer 64K)
 *                   --> log --> file disk.img (8 MiB + 1000 bytes)
 *
 * Random reads, writes, write-zeroes, trims and caches of random sizes at
 * random (mostly unaligned) offsets go through libnbd, one at a time and
 * then many at once (writes that share blocks but not bytes: lost data
 * if read-modify-write were not serialised); every read is checked
 * against a model of the disk.  The log node shows what the core sent
 * below blkdebug: every request aligned and at most 64K.  At the end,
 * with the daemon stopped, qemu-img compares the image with the model.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

#define SIZE     (UINT64_C(8) * 1024 * 1024 + 1000)
#define ALIGN    4096
#define MAX_XFER (64 * 1024)
#define MAX_LEN  (300 * 1024)       /* longest random request */

struct model {
    unsigned char *disk;            /* what the image must hold */
    unsigned char *known;           /* 0 after a trim: anything goes */
    unsigned char *buf;
    uint64_t st;                    /* random state */
};

static uint64_t
rnd(struct model *m)
{
    m->st ^= m->st << 13;
    m->st ^= m->st >> 7;
    m->st ^= m->st << 17;
    return m->st;
}

static void
rnd_range(struct model *m, uint64_t *off, uint64_t *len)
{
    *len = 1 + rnd(m) % MAX_LEN;
    *off = rnd(m) % (SIZE - *len + 1);
    if (rnd(m) % 8 == 0)            /* now and then up to the end */
        *off = SIZE - *len;
}

static void
check_read(struct nbd_handle *nbd, struct model *m, uint64_t off,
           uint64_t len)
{
    memset(m->buf, 0xee, len);
    if (nbd_pread(nbd, m->buf, len, off, 0) == -1)
        ng_test_fail_nbd("pread");
    for (uint64_t i = 0; i < len; i++)
        if (m->known[off + i] && m->buf[i] != m->disk[off + i])
            ng_test_fail("byte at %" PRIu64 " reads 0x%02x, the model has "
                         "0x%02x", off + i, m->buf[i], m->disk[off + i]);
}

static void
do_write(struct nbd_handle *nbd, struct model *m, uint64_t off,
         uint64_t len)
{
    ng_test_fill_pattern(m->disk + off, len, off, (unsigned)rnd(m));
    memset(m->known + off, 1, len);
    if (nbd_pwrite(nbd, m->disk + off, len, off, 0) == -1)
        ng_test_fail_nbd("pwrite");
}

static void
random_ops(struct nbd_handle *nbd, struct model *m, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        uint64_t off, len;

        rnd_range(m, &off, &len);
        switch (rnd(m) % 5) {
        case 0:
        case 1:
            do_write(nbd, m, off, len);
            break;
        case 2:
            memset(m->disk + off, 0, len);
            memset(m->known + off, 1, len);
            if (nbd_zero(nbd, len, off,
                         rnd(m) % 2 ? LIBNBD_CMD_FLAG_NO_HOLE : 0) == -1)
                ng_test_fail_nbd("zero");
            break;
        case 3:
            memset(m->known + off, 0, len);
            if (nbd_trim(nbd, len, off, 0) == -1)
                ng_test_fail_nbd("trim");
            break;
        default:
            if (nbd_cache(nbd, len, off, 0) == -1)
                ng_test_fail_nbd("cache");
            break;
        }
        check_read(nbd, m, off, len);
    }
}

/* Many writes and write-zeroes in flight at once, each sharing its
 * first and last block with its neighbours. */
static void
concurrent_ops(struct nbd_handle *nbd, struct model *m)
{
    enum { N = 64, LEN = 1000, BASE = 3 * ALIGN - 300 };
    int64_t cookies[N];

    for (unsigned i = 0; i < N; i++) {
        uint64_t off = BASE + (uint64_t)i * LEN;

        memset(m->known + off, 1, LEN);
        if (i % 4 == 3) {
            memset(m->disk + off, 0, LEN);
            cookies[i] = nbd_aio_zero(nbd, LEN, off, NBD_NULL_COMPLETION,
                                      0);
        } else {
            ng_test_fill_pattern(m->disk + off, LEN, off, 100 + i);
            cookies[i] = nbd_aio_pwrite(nbd, m->disk + off, LEN, off,
                                        NBD_NULL_COMPLETION, 0);
        }
        if (cookies[i] == -1)
            ng_test_fail_nbd("aio write");
    }
    while (nbd_aio_in_flight(nbd) > 0)
        if (nbd_poll(nbd, -1) == -1)
            ng_test_fail_nbd("poll");
    for (unsigned i = 0; i < N; i++)
        if (nbd_aio_command_completed(nbd, cookies[i]) != 1)
            ng_test_fail_nbd("aio write completed");
    check_read(nbd, m, 0, BASE + N * LEN + ALIGN);
}

/* Write whatever a trim left unknown, so the whole model is exact. */
static void
make_known(struct nbd_handle *nbd, struct model *m)
{
    uint64_t off = 0;

    while (off < SIZE) {
        uint64_t end = off;

        if (m->known[off]) {
            off++;
            continue;
        }
        while (end < SIZE && !m->known[end] && end - off < MAX_LEN)
            end++;
        do_write(nbd, m, off, end - off);
        off = end;
    }
    for (off = 0; off < SIZE; off += MAX_LEN)
        check_read(nbd, m, off, SIZE - off < MAX_LEN ? SIZE - off : MAX_LEN);
}

/* Every request the log node saw (below blkdebug) keeps to the limits. */
static void
check_log(const char *path)
{
    FILE *fp = fopen(path, "r");
    char line[512];
    unsigned long n = 0;

    if (fp == NULL)
        ng_test_fail("open %s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, fp) != NULL) {
        const char *p = strstr(line, " offset=0x");
        uint64_t off, len;

        if (p == NULL)
            continue;
        if (sscanf(p, " offset=0x%" SCNx64 " length=0x%" SCNx64, &off,
                   &len) != 2)
            ng_test_fail("unparsable log line: %s", line);
        if (off % ALIGN != 0 || (len % ALIGN != 0 && off + len != SIZE) ||
            len > MAX_XFER)
            ng_test_fail("below the aligned node: %s", line);
        n++;
    }
    fclose(fp);
    if (n < 1000)
        ng_test_fail("only %lu requests logged", n);
    printf("%lu requests below the aligned node, all aligned\n", n);
}

static void
write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "w");

    if (fp == NULL || fwrite(data, 1, len, fp) != len || fclose(fp) != 0)
        ng_test_fail("writing %s: %s", path, strerror(errno));
}

int
main(void)
{
    char dir[] = "/tmp/nbdgraph-split.XXXXXX";
    char img[300], log[300], model[300], cmd[1000], yaml[2048];
    struct model m = { .st = 0x2545f4914f6cdd1dull };
    struct ng_test_daemon *d;
    struct nbd_handle *nbd;
    int fd;

    if (system("qemu-img --version >/dev/null 2>&1") != 0) {
        printf("SKIP: qemu-img not found\n");
        return 77;
    }
    ng_test_timeout(300);
    if (mkdtemp(dir) == NULL)
        ng_test_fail("mkdtemp: %s", strerror(errno));
    snprintf(img, sizeof img, "%s/disk.img", dir);
    snprintf(log, sizeof log, "%s/log.txt", dir);
    snprintf(model, sizeof model, "%s/model.img", dir);
    if ((fd = open(img, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)) == -1 ||
        ftruncate(fd, (off_t)SIZE) == -1 || close(fd) == -1)
        ng_test_fail("creating %s: %s", img, strerror(errno));
    m.disk = calloc(1, SIZE);
    m.known = malloc(SIZE);
    m.buf = malloc(MAX_LEN + 64 * ALIGN);
    if (m.disk == NULL || m.known == NULL || m.buf == NULL)
        ng_test_fail("out of memory");
    memset(m.known, 1, SIZE);

    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [\"unix:@SOCK@\"]\n"
             "nodes:\n"
             "  img: { driver: file, filename: \"%s\" }\n"
             "  lg: { driver: log, file: img, logfile: \"%s\" }\n"
             "  strict:\n"
             "    driver: blkdebug\n"
             "    image: lg\n"
             "    align: %d\n"
             "    max-transfer: %d\n"
             "exports:\n"
             "  disk: { node: strict, writable: true }\n",
             img, log, ALIGN, MAX_XFER);
    d = ng_test_start(yaml, "disk");
    if ((nbd = nbd_create()) == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    if (nbd_get_size(nbd) != (int64_t)SIZE)
        ng_test_fail("export size %" PRId64, nbd_get_size(nbd));

    random_ops(nbd, &m, 600);
    concurrent_ops(nbd, &m);
    random_ops(nbd, &m, 200);
    concurrent_ops(nbd, &m);
    make_known(nbd, &m);
    if (nbd_flush(nbd, 0) == -1)
        ng_test_fail_nbd("flush");
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    ng_test_stop(d);

    check_log(log);
    write_file(model, m.disk, SIZE);
    snprintf(cmd, sizeof cmd, "qemu-img compare -q -f raw -F raw '%s' '%s'",
             model, img);
    if (system(cmd) != 0)
        ng_test_fail("qemu-img compare: the image differs from the model");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        ng_test_fail("removing %s", dir);
    free(m.disk);
    free(m.known);
    free(m.buf);
    printf("ok\n");
    return 0;
}
