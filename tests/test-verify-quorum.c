/* tests/test-verify-quorum.c: blkverify and quorum through the real
 * daemon.
 *
 * blkverify: two file nodes with the same data under a blkverify export: reads give
 * the data, writes reach both files.  Then the raw child's file is
 * changed behind the daemon's back: a read over the changed byte fails
 * with EIO and the daemon logs the request's range and the byte, reads
 * elsewhere still work.  A blkverify whose children differ in size is
 * refused at blockdev-add, saying why.
 *
 * quorum: three memory replicas, one behind blkdebug failing reads in
 * [1M, 2M) and writes in [2M, 2M + 64K), one (qc) also exported on its
 * own so the test can change its data behind the quorum's back.  Reads
 * where one child fails or where qc is wrong give the right data, the
 * bad child is logged by name, and rewrite-corrupted repairs qc; a write
 * that one child fails still succeeds; where the two readable children
 * disagree, no two agree and the read fails with EIO.  fifo fails over
 * to the next child.  Each bad child is a QUORUM_REPORT_BAD event (QEMU's
 * data: type, node-name, sectors, error when it failed) to a control
 * client, the read without a majority a QUORUM_FAILURE.  Too few children for the threshold are refused.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define DISK_SIZE (1 << 20)
#define SEED 7
#define CORRUPT_AT 100000           /* in the second 64 KiB */
#define Q_SIZE (4 << 20)
#define Q_SEED 11
#define MiB (1 << 20)

static char dir[256];

static void
make_file(const char *name, size_t size, bool pattern)
{
    char path[300];
    unsigned char *buf = calloc(1, size);
    int fd;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (buf == NULL)
        ng_test_fail("out of memory");
    if (pattern)
        ng_test_fill_pattern(buf, size, 0, SEED);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || pwrite(fd, buf, size, 0) != (ssize_t)size || close(fd))
        ng_test_fail("%s: cannot create", path);
    free(buf);
}

static void
file_rw(const char *name, void *buf, size_t len, off_t off, bool write)
{
    char path[300];
    int fd;
    ssize_t r;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((fd = open(path, O_RDWR)) == -1)
        ng_test_fail("%s: %s", path, strerror(errno));
    r = write ? pwrite(fd, buf, len, off) : pread(fd, buf, len, off);
    if (r != (ssize_t)len || close(fd) == -1)
        ng_test_fail("%s: short %s", path, write ? "write" : "read");
}

/* Start the daemon with its stderr in DIR/daemon.log. */
static struct ng_test_daemon *
start_logged(const char *yaml)
{
    char path[300];
    struct ng_test_daemon *d;
    int saved = dup(2), fd;

    snprintf(path, sizeof path, "%s/daemon.log", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (saved == -1 || fd == -1 || dup2(fd, 2) == -1)
        ng_test_fail("%s: %s", path, strerror(errno));
    close(fd);
    d = ng_test_start(yaml, "bv");
    dup2(saved, 2);
    close(saved);
    return d;
}

static bool
log_has(const char *want)
{
    char path[300], text[16384];
    FILE *fp;
    size_t n;

    snprintf(path, sizeof path, "%s/daemon.log", dir);
    if ((fp = fopen(path, "r")) == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    return strstr(text, want) != NULL;
}

static void
expect_seed(struct nbd_handle *nbd, uint64_t off, size_t len, unsigned seed)
{
    static unsigned char buf[65536];
    long long bad;

    if (nbd_pread(nbd, buf, len, off, 0) == -1)
        ng_test_fail_nbd("read of good data");
    if ((bad = ng_test_check_pattern(buf, len, off, seed)) >= 0)
        ng_test_fail("read at %llu: wrong byte at %llu",
                     (unsigned long long)off, (unsigned long long)off + bad);
}

static void
expect_read(struct nbd_handle *nbd, uint64_t off, size_t len)
{
    expect_seed(nbd, off, len, SEED);
}

static void
test_equal_and_writes(struct nbd_handle *nbd)
{
    unsigned char w[4096], back[4096];

    expect_read(nbd, 0, 65536);
    expect_read(nbd, DISK_SIZE - 4096, 4096);
    memset(w, 0xa5, sizeof w);
    if (nbd_pwrite(nbd, w, sizeof w, 8192, 0) == -1 ||
        nbd_pread(nbd, back, sizeof back, 8192, 0) == -1)
        ng_test_fail_nbd("write and read back");
    file_rw("raw.img", back, sizeof back, 8192, false);
    if (memcmp(w, back, sizeof w) != 0)
        ng_test_fail("the write did not reach the raw child");
    file_rw("test.img", back, sizeof back, 8192, false);
    if (memcmp(w, back, sizeof w) != 0)
        ng_test_fail("the write did not reach the test child");
    /* Put the pattern back for what follows. */
    ng_test_fill_pattern(w, sizeof w, 8192, SEED);
    if (nbd_pwrite(nbd, w, sizeof w, 8192, 0) == -1)
        ng_test_fail_nbd("restoring write");
    printf("equal children read fine; writes reach both\n");
}

static void
test_mismatch(struct nbd_handle *nbd)
{
    unsigned char b = 0, buf[65536];
    char want[128];

    file_rw("raw.img", &b, 1, CORRUPT_AT, false);
    b ^= 0xff;
    file_rw("raw.img", &b, 1, CORRUPT_AT, true);
    if (nbd_pread(nbd, buf, sizeof buf, 65536, 0) != -1 ||
        nbd_get_errno() != EIO)
        ng_test_fail("read over the changed byte: want EIO, got %s",
                     nbd_get_error() ? nbd_get_error() : "success");
    expect_read(nbd, 0, 65536);
    expect_read(nbd, 131072, 65536);
    snprintf(want, sizeof want, "node 'bv': blkverify: read offset=65536 "
             "length=65536: contents mismatch at offset %d", CORRUPT_AT);
    if (!log_has(want))
        ng_test_fail("the daemon's log lacks \"%s\"", want);
    printf("a changed raw child fails the read with EIO and a log line\n");
}

/* The live config names each child under its own option. */
static void
test_dump(struct ng_test_qmp *q)
{
    json_t *ret = ng_test_qmp_ok(q, "{s:s}", "execute", "query-config");
    const char *yaml = json_string_value(json_object_get(ret, "yaml"));

    if (yaml == NULL || strstr(yaml, "raw: rf") == NULL ||
        strstr(yaml, "test: tf") == NULL)
        ng_test_fail("query-config lost blkverify's children:\n%s",
                     yaml ? yaml : "(none)");
    json_decref(ret);
    printf("query-config keeps test and raw apart\n");
}

static void
test_size_refused(struct ng_test_qmp *q)
{
    ng_test_qmp_fails(q, "children differ in size: test 'tf' has 1048576 "
                      "bytes, raw 'small' 524288",
                      "{s:s,s:{s:s,s:s,s:s,s:s}}", "execute", "blockdev-add",
                      "arguments", "driver", "blkverify", "node-name", "bv2",
                      "test", "tf", "raw", "small");
    printf("children of different sizes are refused\n");
}

/* ---- quorum --------------------------------------------------------------- */

static struct nbd_handle *
connect_export(struct ng_test_daemon *d, const char *name)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512];

    snprintf(uri, sizeof uri, "nbd+unix:///%s?socket=%s", name, d->sock);
    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd(name);
    return nbd;
}

static void
expect_log(const char *want)
{
    if (!log_has(want))
        ng_test_fail("the daemon's log lacks \"%s\"", want);
}

static void
write_seed(struct nbd_handle *nbd, uint64_t off, size_t len, unsigned seed)
{
    unsigned char *buf = malloc(len);

    if (buf == NULL)
        ng_test_fail("out of memory");
    ng_test_fill_pattern(buf, len, off, seed);
    if (nbd_pwrite(nbd, buf, len, off, 0) == -1)
        ng_test_fail_nbd("write of a pattern");
    free(buf);
}

static void
scribble(struct nbd_handle *nbd, uint64_t off)
{
    unsigned char buf[4096];

    memset(buf, 0x5a, sizeof buf);
    if (nbd_pwrite(nbd, buf, sizeof buf, off, 0) == -1)
        ng_test_fail_nbd("write behind the quorum's back");
}

/* Wait (bounded) for `event` with these data; other events are skipped.
 * error: the "error" member wanted, or NULL for none. */
static void
expect_event(struct ng_test_qmp *ev, const char *event, const char *node_key,
             const char *node, int64_t sector, int64_t count,
             const char *type, const char *error)
{
    json_t *e;

    while ((e = ng_test_qmp_next_event(ev, 10000)) != NULL) {
        json_t *data = json_object_get(e, "data");
        const char *name = json_string_value(json_object_get(e, "event"));
        const char *n = json_string_value(json_object_get(data, node_key));
        const char *t = json_string_value(json_object_get(data, "type"));
        const char *err = json_string_value(json_object_get(data, "error"));
        bool match = name != NULL && strcmp(name, event) == 0 &&
            n != NULL && strcmp(n, node) == 0 &&
            json_integer_value(json_object_get(data, "sector-num")) ==
                sector &&
            json_integer_value(json_object_get(data, "sectors-count")) ==
                count &&
            (type == NULL ? t == NULL : t != NULL && strcmp(t, type) == 0) &&
            (error == NULL ? err == NULL
                           : err != NULL && strcmp(err, error) == 0);

        json_decref(e);
        if (match)
            return;
    }
    ng_test_fail("no %s event for %s '%s' sectors %lld+%lld", event,
                 node_key, node, (long long)sector, (long long)count);
}

static void
test_quorum(struct ng_test_daemon *d, struct ng_test_qmp *ev)
{
    struct nbd_handle *qv = connect_export(d, "qv");
    struct nbd_handle *qf = connect_export(d, "qf");
    struct nbd_handle *qc = connect_export(d, "qc");
    unsigned char buf[65536];

    for (uint64_t off = 0; off < Q_SIZE; off += 65536)
        write_seed(qv, off, 65536, Q_SEED);

    /* qb fails this read: qa and qc outvote it. */
    expect_seed(qv, MiB, 65536, Q_SEED);
    expect_log("node 'qv': quorum: child 'qb' read offset=1048576 "
               "length=65536: Input/output error");
    expect_event(ev, "QUORUM_REPORT_BAD", "node-name", "qb", 2048, 128,
                 "read", "Input/output error");

    /* qc is wrong here: qa and qb outvote it, and it is repaired. */
    scribble(qc, 3 * MiB + 4096);
    expect_seed(qv, 3 * MiB, 65536, Q_SEED);
    expect_log("node 'qv': quorum: child 'qc' read offset=3145728 "
               "length=65536: contents differ from the majority");
    expect_event(ev, "QUORUM_REPORT_BAD", "node-name", "qc", 6144, 128,
                 "read", NULL);
    expect_seed(qc, 3 * MiB, 65536, Q_SEED);

    /* qb fails this write: two of three is the threshold. */
    write_seed(qv, 2 * MiB, 65536, Q_SEED + 1);
    expect_log("node 'qv': quorum: child 'qb' write offset=2097152 "
               "length=65536");
    expect_event(ev, "QUORUM_REPORT_BAD", "node-name", "qb", 4096, 128,
                 "write", "Input/output error");
    expect_seed(qc, 2 * MiB, 65536, Q_SEED + 1);

    /* fifo: qb fails, qa answers. */
    expect_seed(qf, MiB, 65536, Q_SEED);
    expect_log("node 'qf': quorum: child 'qb' read offset=1048576");
    expect_event(ev, "QUORUM_REPORT_BAD", "node-name", "qb", 2048, 128,
                 "read", "Input/output error");

    /* qb fails and qc is wrong: no two agree. */
    scribble(qc, MiB + 65536);
    if (nbd_pread(qv, buf, sizeof buf, MiB + 65536, 0) != -1 ||
        nbd_get_errno() != EIO)
        ng_test_fail("read without a majority: want EIO, got %s",
                     nbd_get_error() ? nbd_get_error() : "success");
    expect_log("node 'qv': quorum: read offset=1114112 length=65536: "
               "no 2 children agree");
    expect_event(ev, "QUORUM_FAILURE", "reference", "qv", 2176, 128, NULL,
                 NULL);
    nbd_close(qv);
    nbd_close(qf);
    nbd_close(qc);
    printf("quorum outvotes a failing and a wrong child, repairs it, "
           "fails over with fifo; QUORUM_REPORT_BAD and QUORUM_FAILURE "
           "events\n");
}

static void
test_quorum_refused(struct ng_test_qmp *q)
{
    ng_test_qmp_fails(q, "'vote-threshold' must be 1 to the number of "
                      "children (2), not 3",
                      "{s:s,s:{s:s,s:s,s:[s,s],s:i}}", "execute",
                      "blockdev-add", "arguments", "driver", "quorum",
                      "node-name", "q3", "children", "qa", "qc",
                      "vote-threshold", 3);
    ng_test_qmp_fails(q, "'children' must list 2 to 8 nodes, not 1",
                      "{s:s,s:{s:s,s:s,s:[s],s:i}}", "execute",
                      "blockdev-add", "arguments", "driver", "quorum",
                      "node-name", "q1", "children", "qa",
                      "vote-threshold", 1);
    printf("quorum with too few children is refused\n");
}

int
main(void)
{
    const char *tmp = getenv("TMPDIR");
    struct ng_test_daemon *d;
    struct ng_test_qmp *q, *ev;
    struct nbd_handle *nbd;
    char yaml[4096], cmd[300];

    ng_test_timeout(120);
    snprintf(dir, sizeof dir, "%s/ngbv.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL)
        ng_test_fail("mkdtemp: %s", strerror(errno));
    make_file("test.img", DISK_SIZE, true);
    make_file("raw.img", DISK_SIZE, true);
    make_file("small.img", DISK_SIZE / 2, false);
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [ \"unix:@SOCK@\" ]\n"
             "  control: \"@CONTROL@\"\n"
             "nodes:\n"
             "  tf: { driver: file, filename: \"%s/test.img\" }\n"
             "  rf: { driver: file, filename: \"%s/raw.img\" }\n"
             "  small: { driver: file, filename: \"%s/small.img\" }\n"
             "  bv: { driver: blkverify, test: tf, raw: rf }\n"
             "  qa: { driver: memory, size: 4M }\n"
             "  qb0: { driver: memory, size: 4M }\n"
             "  qb: { driver: blkdebug, image: qb0, inject-error: [\n"
             "        { iotype: read, offset: 1M, length: 1M, errno: EIO },\n"
             "        { iotype: write, offset: 2M, length: 64K,\n"
             "          errno: EIO } ] }\n"
             "  qc: { driver: memory, size: 4M }\n"
             "  qv: { driver: quorum, children: [ qa, qb, qc ],\n"
             "        vote-threshold: 2, rewrite-corrupted: true }\n"
             "  qf: { driver: quorum, children: [ qb, qa, qc ],\n"
             "        vote-threshold: 2, read-pattern: fifo }\n"
             "exports:\n"
             "  bv: { node: bv, writable: true }\n"
             "  qv: { node: qv, writable: true }\n"
             "  qf: { node: qf }\n"
             "  qc: { node: qc, writable: true }\n", dir, dir, dir);
    d = start_logged(yaml);
    q = ng_test_qmp_connect(d->control);
    if ((nbd = nbd_create()) == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    test_equal_and_writes(nbd);
    test_mismatch(nbd);
    test_size_refused(q);
    test_dump(q);
    ev = ng_test_qmp_connect(d->control);
    test_quorum(d, ev);
    ng_test_qmp_close(ev);
    test_quorum_refused(q);
    nbd_close(nbd);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
    return 0;
}
