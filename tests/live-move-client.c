/* tests/live-move-client.c: the guest of tests/test-live-move.sh.
 *
 *   live-move-client URI SIZE DIR
 *
 * Connects once to URI (libnbd) and, until DIR/stop exists, writes
 * 64 KiB blocks at pseudo-random places with a pattern that names the
 * write, keeping a record of what the disk must hold, and reads a block
 * back after every write to check it against the record.  Once DIR/stop
 * appears it does 200 more writes, reads the whole disk back, checks it
 * against the record, writes the record to DIR/record.img and exits 0.
 * Any I/O error or mismatch: a message and exit 1.  It touches
 * DIR/started after its first write and keeps the number of writes done
 * in DIR/count, so the test knows it is busy. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#define BLOCK        65536u
#define MAX_WRITES   1000000u       /* bounds the run whatever happens */
#define AFTER_STOP   200u

static void
die_nbd(const char *what)
{
    fprintf(stderr, "live-move-client: %s: %s\n", what, nbd_get_error());
    exit(1);
}

static void
note(const char *dir, const char *name, uint64_t value)
{
    char path[4096], tmp[4096];
    FILE *fp;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    fp = fopen(tmp, "w");
    if (fp == NULL || fprintf(fp, "%" PRIu64 "\n", value) < 0 ||
        fclose(fp) != 0 || rename(tmp, path) != 0) {
        perror(path);
        exit(1);
    }
}

static bool
exists(const char *dir, const char *name)
{
    char path[4096];

    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* xorshift: the same run every time is not needed, only spread. */
static uint64_t
next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void
fill(unsigned char *p, uint64_t n, uint64_t block)
{
    for (unsigned i = 0; i < BLOCK; i += 8) {
        uint64_t v = n * 0x9e3779b97f4a7c15ull + block + i;

        memcpy(p + i, &v, 8);
    }
}

int
main(int argc, char **argv)
{
    struct nbd_handle *nbd;
    unsigned char *record, *buf;
    uint64_t size, nblocks, rnd = 0x2545f4914f6cdd1dull, n, left = 0;
    bool stopping = false;
    char path[4096];
    FILE *fp;

    if (argc != 4) {
        fprintf(stderr, "usage: live-move-client URI SIZE DIR\n");
        return 2;
    }
    size = strtoull(argv[2], NULL, 0);
    nblocks = size / BLOCK;
    record = calloc(1, size);
    buf = malloc(size);
    if (record == NULL || buf == NULL || nblocks == 0) {
        fprintf(stderr, "live-move-client: bad size or out of memory\n");
        return 1;
    }
    nbd = nbd_create();
    if (nbd == NULL || nbd_connect_uri(nbd, argv[1]) == -1)
        die_nbd("connect");
    for (n = 1; n <= MAX_WRITES; n++) {
        uint64_t b = next_rand(&rnd) % nblocks;
        uint64_t check = next_rand(&rnd) % nblocks;

        fill(record + b * BLOCK, n, b);
        if (nbd_pwrite(nbd, record + b * BLOCK, BLOCK, b * BLOCK, 0) == -1)
            die_nbd("pwrite");
        if (nbd_pread(nbd, buf, BLOCK, check * BLOCK, 0) == -1)
            die_nbd("pread");
        if (memcmp(buf, record + check * BLOCK, BLOCK) != 0) {
            fprintf(stderr, "live-move-client: block %" PRIu64 " differs "
                    "after %" PRIu64 " writes\n", check, n);
            return 1;
        }
        if (n == 1)
            note(argv[3], "started", 1);
        if (n % 64 == 0)
            note(argv[3], "count", n);
        if (!stopping && exists(argv[3], "stop")) {
            stopping = true;
            left = AFTER_STOP;
        }
        if (stopping && left-- == 0)
            break;
    }
    if (nbd_flush(nbd, 0) == -1)
        die_nbd("flush");
    for (uint64_t off = 0; off < size; off += 1u << 20) {
        size_t len = size - off < (1u << 20) ? size - off : (1u << 20);

        if (nbd_pread(nbd, buf + off, len, off, 0) == -1)
            die_nbd("pread");
    }
    if (memcmp(buf, record, size) != 0) {
        fprintf(stderr, "live-move-client: the disk differs from the "
                "record at the end\n");
        return 1;
    }
    snprintf(path, sizeof path, "%s/record.img", argv[3]);
    fp = fopen(path, "w");
    if (fp == NULL || fwrite(record, 1, size, fp) != size || fclose(fp)) {
        perror(path);
        return 1;
    }
    printf("live-move-client: %" PRIu64 " writes, all verified\n", n);
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    free(record);
    free(buf);
    return 0;
}
