/* tests/test-nbd-garbage.c: the protocol spoken by hand over a raw
 * socket — the old NBD_OPT_EXPORT_NAME path, unknown options and
 * commands, oversized and refused writes whose payload must be skipped,
 * DISC with requests in flight — and clients that send garbage (bad
 * magic, unknown flags, insane lengths, truncated messages), each of
 * which must be dropped while a well-behaved client goes on working. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

#define NBDMAGIC        UINT64_C(0x4e42444d41474943)
#define IHAVEOPT        UINT64_C(0x49484156454f5054)
#define REPLYMAGIC      UINT64_C(0x0003e889045565a9)
#define REQ_MAGIC       UINT32_C(0x25609513)
#define SIMPLE_MAGIC    UINT32_C(0x67446698)
#define EXPORT_SIZE     (UINT64_C(64) << 20)

/* ---- Raw socket helpers ------------------------------------------------ */

static void
expect_dropped(int fd, const char *why)
{
    char buf[256];

    /* Anything already on its way may arrive first; then EOF. */
    while (ng_test_recv_all(fd, buf, 1, 10000))
        ;
    (void)why;
    close(fd);
}

/* Greeting, then client flags. */
static int
raw_start(const struct ng_test_daemon *d, uint32_t cflags)
{
    int fd = ng_test_raw_connect(d);
    unsigned char g[18], f[4];

    if (!ng_test_recv_all(fd, g, sizeof g, 10000) ||
        ng_test_get64(g) != NBDMAGIC || ng_test_get64(g + 8) != IHAVEOPT ||
        (g[17] & 3) != 3)
        ng_test_fail("bad greeting");
    ng_test_put32(f, cflags);
    ng_test_send_all(fd, f, sizeof f);
    return fd;
}

static void
send_option(int fd, uint32_t opt, const void *data, uint32_t len)
{
    unsigned char h[16];

    ng_test_put64(h, IHAVEOPT);
    ng_test_put32(h + 8, opt);
    ng_test_put32(h + 12, len);
    ng_test_send_all(fd, h, sizeof h);
    if (len > 0)
        ng_test_send_all(fd, data, len);
}

/* Read one option reply; returns its type, data (if any) in `data`. */
static uint32_t
recv_option_reply(int fd, uint32_t opt, char *data, size_t cap)
{
    unsigned char h[20];
    uint32_t len;

    if (!ng_test_recv_all(fd, h, sizeof h, 10000))
        ng_test_fail("connection closed during option %u", opt);
    if (ng_test_get64(h) != REPLYMAGIC || ng_test_get32(h + 8) != opt)
        ng_test_fail("bad option reply header");
    len = ng_test_get32(h + 16);
    if (len >= cap)
        ng_test_fail("option reply too long");
    if (len > 0 && !ng_test_recv_all(fd, data, len, 10000))
        ng_test_fail("truncated option reply");
    data[len] = '\0';
    return ng_test_get32(h + 12);
}

/* NBD_OPT_EXPORT_NAME with NO_ZEROES: size and flags, no padding. */
static int
raw_transmission(const struct ng_test_daemon *d, const char *name)
{
    int fd = raw_start(d, 3);
    unsigned char r[10];

    send_option(fd, 1, name, (uint32_t)strlen(name));
    if (!ng_test_recv_all(fd, r, sizeof r, 10000))
        ng_test_fail("EXPORT_NAME refused");
    if (ng_test_get64(r) != EXPORT_SIZE || !(r[9] & 1))
        ng_test_fail("EXPORT_NAME: size or flags wrong");
    return fd;
}

static void
make_request(unsigned char *q, uint16_t flags, uint16_t type,
             uint64_t handle, uint64_t offset, uint32_t len)
{
    ng_test_put32(q, REQ_MAGIC);
    q[4] = (unsigned char)(flags >> 8);
    q[5] = (unsigned char)flags;
    q[6] = (unsigned char)(type >> 8);
    q[7] = (unsigned char)type;
    ng_test_put64(q + 8, handle);
    ng_test_put64(q + 16, offset);
    ng_test_put32(q + 24, len);
}

static void
send_request(int fd, uint16_t flags, uint16_t type, uint64_t handle,
             uint64_t offset, uint32_t len)
{
    unsigned char q[28];

    make_request(q, flags, type, handle, offset, len);
    ng_test_send_all(fd, q, sizeof q);
}

/* One simple reply; returns its error, fails on a wrong handle. */
static uint32_t
recv_simple_reply(int fd, uint64_t handle)
{
    unsigned char r[16];

    if (!ng_test_recv_all(fd, r, sizeof r, 10000))
        ng_test_fail("connection closed awaiting reply %" PRIu64, handle);
    if (ng_test_get32(r) != SIMPLE_MAGIC || ng_test_get64(r + 8) != handle)
        ng_test_fail("bad simple reply (handle %" PRIu64 ")",
                     ng_test_get64(r + 8));
    return ng_test_get32(r + 4);
}

/* ---- The well-behaved paths ------------------------------------------- */

static void
test_export_name_path(const struct ng_test_daemon *d)
{
    int fd = raw_transmission(d, "demo");
    static char data[1 << 20];
    char buf[4096];

    /* WRITE 4096 bytes of 0x5a at 1 MiB, READ them back */
    memset(buf, 0x5a, sizeof buf);
    send_request(fd, 0, 1, 1, 1 << 20, sizeof buf);
    ng_test_send_all(fd, buf, sizeof buf);
    if (recv_simple_reply(fd, 1) != 0)
        ng_test_fail("raw write failed");
    memset(buf, 0, sizeof buf);
    send_request(fd, 0, 0, 2, 1 << 20, sizeof buf);
    if (recv_simple_reply(fd, 2) != 0 ||
        !ng_test_recv_all(fd, buf, sizeof buf, 10000) ||
        buf[0] != 0x5a || buf[4095] != 0x5a)
        ng_test_fail("raw read failed");
    /* an unknown command gets EINVAL, and the connection stays */
    send_request(fd, 0, 99, 3, 0, 4096);
    if (recv_simple_reply(fd, 3) != 22)
        ng_test_fail("unknown command: not EINVAL");
    /* a write above 64 MiB (max-request): payload skipped, EINVAL, the
     * connection stays */
    send_request(fd, 0, 1, 4, 0, (64u << 20) + 512);
    for (uint32_t left = (64u << 20) + 512; left > 0;) {
        uint32_t n = left < sizeof data ? left : sizeof data;

        ng_test_send_all(fd, data, n);
        left -= n;
    }
    if (recv_simple_reply(fd, 4) != 22)
        ng_test_fail("oversized write: not EINVAL");
    /* a write past the end: payload skipped, ENOSPC */
    send_request(fd, 0, 1, 5, EXPORT_SIZE, sizeof buf);
    ng_test_send_all(fd, buf, sizeof buf);
    if (recv_simple_reply(fd, 5) != 28)
        ng_test_fail("write past the end: not ENOSPC");
    /* a flush with an offset is malformed */
    send_request(fd, 0, 3, 6, 4096, 0);
    if (recv_simple_reply(fd, 6) != 22)
        ng_test_fail("flush with offset: not EINVAL");
    /* DISC with reads in flight: every read is answered first */
    for (uint64_t h = 10; h < 20; h++)
        send_request(fd, 0, 0, h, 1 << 20, sizeof buf);
    send_request(fd, 0, 2, 99, 0, 0);
    for (uint64_t h = 10; h < 20; h++) {
        if (recv_simple_reply(fd, h) != 0 ||
            !ng_test_recv_all(fd, buf, sizeof buf, 10000))
            ng_test_fail("read %" PRIu64 " before DISC not answered", h);
    }
    expect_dropped(fd, "after DISC");
}

/* Far more requests than the server keeps in flight (sent in one go, so
 * the socket takes them all), with no reply read until all are sent:
 * the server must stop taking requests rather than buffer without
 * bound, and still answer every one. */
static void
test_backpressure(const struct ng_test_daemon *d)
{
    enum { N = 2000, LEN = 65536 };
    static bool seen[N];
    static char data[LEN];
    static unsigned char reqs[N][28];
    int fd = raw_transmission(d, "demo");

    for (uint64_t h = 0; h < N; h++)
        make_request(reqs[h], 0, 0, h, (h % 512) * LEN, LEN);
    ng_test_send_all(fd, reqs, sizeof reqs);
    for (int i = 0; i < N; i++) {
        unsigned char r[16];
        uint64_t h;

        if (!ng_test_recv_all(fd, r, sizeof r, 10000) ||
            ng_test_get32(r) != SIMPLE_MAGIC || ng_test_get32(r + 4) != 0)
            ng_test_fail("backpressure: reply %d missing or failed", i);
        h = ng_test_get64(r + 8);
        if (h >= N || seen[h])
            ng_test_fail("backpressure: bad handle %" PRIu64, h);
        seen[h] = true;
        if (!ng_test_recv_all(fd, data, LEN, 10000))
            ng_test_fail("backpressure: reply %d truncated", i);
    }
    send_request(fd, 0, 2, 0, 0, 0);
    expect_dropped(fd, "after DISC");
}

static void
test_options(const struct ng_test_daemon *d)
{
    int fd = raw_start(d, 1);
    char data[4200];
    uint32_t type;

    send_option(fd, 42, "xyz", 3);
    if (recv_option_reply(fd, 42, data, sizeof data) != 0x80000001)
        ng_test_fail("unknown option: not NBD_REP_ERR_UNSUP");
    send_option(fd, 5, NULL, 0);                /* STARTTLS */
    if (recv_option_reply(fd, 5, data, sizeof data) != 0x80000001)
        ng_test_fail("STARTTLS: not NBD_REP_ERR_UNSUP");
    send_option(fd, 3, "x", 1);                 /* LIST with data */
    if (recv_option_reply(fd, 3, data, sizeof data) != 0x80000003)
        ng_test_fail("LIST with data: not NBD_REP_ERR_INVALID");
    send_option(fd, 7, "\0\0\0\x09", 4);        /* GO, truncated */
    if (recv_option_reply(fd, 7, data, sizeof data) != 0x80000003)
        ng_test_fail("short GO: not NBD_REP_ERR_INVALID");
    send_option(fd, 7, "\0\0\0\x04nope\0\0", 10);
    if (recv_option_reply(fd, 7, data, sizeof data) != 0x80000006)
        ng_test_fail("GO unknown export: not NBD_REP_ERR_UNKNOWN");
    /* SET_META_CONTEXT before STRUCTURED_REPLY is invalid */
    send_option(fd, 10, "\0\0\0\0\0\0\0\0", 8);
    if (recv_option_reply(fd, 10, data, sizeof data) != 0x80000003)
        ng_test_fail("meta context without structured replies accepted");
    send_option(fd, 2, NULL, 0);                /* ABORT */
    type = recv_option_reply(fd, 2, data, sizeof data);
    if (type != 1)
        ng_test_fail("ABORT: not ACK");
    expect_dropped(fd, "after ABORT");
}

/* ---- Garbage ---------------------------------------------------------- */

static void
test_garbage(const struct ng_test_daemon *d)
{
    static const char junk[] = "GARBAGE GARBAGE GARBAGE GARBAGE";
    unsigned char big[16];
    int fd;

    /* junk instead of client flags: unknown flag bits */
    fd = raw_start(d, 0x47415242);
    expect_dropped(fd, "unknown client flags");

    /* junk instead of an option */
    fd = raw_start(d, 1);
    ng_test_send_all(fd, junk, sizeof junk);
    expect_dropped(fd, "bad option magic");

    /* an option claiming 1 GiB of data */
    fd = raw_start(d, 1);
    ng_test_put64(big, IHAVEOPT);
    ng_test_put32(big + 8, 6);
    ng_test_put32(big + 12, 1u << 30);
    ng_test_send_all(fd, big, sizeof big);
    expect_dropped(fd, "insane option length");

    /* EXPORT_NAME for an export that does not exist */
    fd = raw_start(d, 1);
    send_option(fd, 1, "nope", 4);
    expect_dropped(fd, "unknown export");

    /* truncated option, then the client goes away */
    fd = raw_start(d, 1);
    ng_test_send_all(fd, big, 7);
    close(fd);

    /* junk in the transmission phase */
    fd = raw_transmission(d, "demo");
    ng_test_send_all(fd, junk, sizeof junk);
    expect_dropped(fd, "bad request magic");

    /* a write claiming 1 GiB of payload */
    fd = raw_transmission(d, "demo");
    send_request(fd, 0, 1, 1, 0, 1u << 30);
    expect_dropped(fd, "insane write length");

    /* half a request header, then gone; and a write cut short */
    fd = raw_transmission(d, "demo");
    ng_test_send_all(fd, junk, 13);
    close(fd);
    fd = raw_transmission(d, "demo");
    send_request(fd, 0, 1, 1, 0, 65536);
    ng_test_send_all(fd, junk, sizeof junk);
    close(fd);

    /* connect and leave at once, many times */
    for (int i = 0; i < 50; i++)
        close(ng_test_raw_connect(d));
}

/* After all of that, a normal client still works (over Unix or TCP). */
static void
test_normal_client(const char *uri)
{
    struct nbd_handle *nbd = nbd_create();
    char out[65536], in[65536];

    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    ng_test_fill_pattern(out, sizeof out, 4 << 20, 7);
    if (nbd_pwrite(nbd, out, sizeof out, 4 << 20, 0) == -1 ||
        nbd_pread(nbd, in, sizeof in, 4 << 20, 0) == -1)
        ng_test_fail_nbd("pwrite/pread");
    if (memcmp(in, out, sizeof in) != 0)
        ng_test_fail("data read back differs");
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
}

/* Junk over TCP too, then a client over TCP. */
static void
test_tcp(int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char uri[128];

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sin, sizeof sin) == -1)
        ng_test_fail("tcp connect: %s", strerror(errno));
    ng_test_send_all(fd, "\xff\xff\xff\xff junk", 9);
    expect_dropped(fd, "junk over TCP");
    snprintf(uri, sizeof uri, "nbd://127.0.0.1:%d/demo", port);
    test_normal_client(uri);
}

int
main(void)
{
    struct ng_test_daemon *d;
    char yaml[512];
    int port;

    ng_test_timeout(120);
    port = ng_test_free_tcp_port();
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [ \"unix:@SOCK@\", \"tcp:127.0.0.1:%d\" ]\n"
             "nodes:\n"
             "  mem0: { driver: memory, size: 64M }\n"
             "exports:\n"
             "  demo: { node: mem0, writable: true }\n", port);
    d = ng_test_start(yaml, "demo");
    test_export_name_path(d);
    test_backpressure(d);
    test_options(d);
    test_garbage(d);
    test_normal_client(d->uri);
    test_tcp(port);
    ng_test_stop(d);
    return 0;
}
