/* tests/test-nbd-extended.c: NBD extended headers (NBD_OPT_EXTENDED_HEADERS),
 * spoken byte by byte as the spec's doc/proto.md lays them out, since
 * Debian 12's libnbd and qemu predate them.  Negotiation (structured
 * replies cannot be asked for after it, NBD_OPT_EXPORT_NAME drops the
 * client); READ, WRITE, TRIM, WRITE_ZEROES, FLUSH with 32-byte request
 * headers and every reply an extended chunk echoing the request's
 * offset; a streamed READ in several OFFSET_DATA chunks; BLOCK_STATUS of
 * more than 4 GiB on a big sparse memory node, answered with
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT and 64-bit lengths; 64-bit effect
 * lengths for TRIM and WRITE_ZEROES; and the spec's answers to bad
 * requests: a compact header or a payload above max-request drops the
 * client, a WRITE without NBD_CMD_FLAG_PAYLOAD_LEN or a payload on a
 * command without one is NBD_EINVAL (the payload skipped), a READ above
 * max-request NBD_EOVERFLOW; WRITEs and two refused requests again in
 * one stream cut at awkward places. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/harness.h"

#define NBDMAGIC        UINT64_C(0x4e42444d41474943)
#define IHAVEOPT        UINT64_C(0x49484156454f5054)
#define REPLYMAGIC      UINT64_C(0x0003e889045565a9)
#define REQ_MAGIC       UINT32_C(0x25609513)
#define EXT_REQ_MAGIC   UINT32_C(0x21e41c71)
#define EXT_REPLY_MAGIC UINT32_C(0x6e8a278c)

#define OPT_EXPORT_NAME 1
#define OPT_GO          7
#define OPT_STRUCTURED  8
#define OPT_SET_META    10
#define OPT_EXTENDED    11
#define REP_ACK         1
#define REP_INFO        3
#define REP_META        4
#define REP_ERR_EXT_HEADER_REQD 0x8000000au

#define CMD_READ        0
#define CMD_WRITE       1
#define CMD_DISC        2
#define CMD_FLUSH       3
#define CMD_TRIM        4
#define CMD_WRITE_ZEROES 6
#define CMD_BLOCK_STATUS 7
#define FLAG_REQ_ONE    (1u << 3)
#define FLAG_PAYLOAD_LEN (1u << 5)

#define TYPE_NONE       0
#define TYPE_OFFSET_DATA 1
#define TYPE_BS_EXT     6
#define TYPE_ERROR      0x8001u
#define REPLY_DONE      1

#define EINVAL_NBD      22
#define EOVERFLOW_NBD   75

#define GiB             (UINT64_C(1) << 30)
#define BIG_SIZE        (16 * GiB)
#define MAX_REQUEST     (UINT64_C(64) << 20)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  disk: { driver: memory, size: 64M }\n"
    "  big: { driver: memory, size: 16G }\n"
    "exports:\n"
    "  demo: { node: disk, writable: true }\n"
    "  big: { node: big, writable: true }\n";

/* ---- Bytes on the wire --------------------------------------------------- */

/* The server must close the connection (whatever it sent before). */
static void
expect_dropped(int fd, const char *why)
{
    char c;

    while (ng_test_recv_all(fd, &c, 1, 10000))
        ;
    (void)why;
    close(fd);
}

/* ---- Handshake ----------------------------------------------------------- */

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

/* One option reply: its type; its data (up to cap) in data, length in
 * *len. */
static uint32_t
recv_option_reply(int fd, uint32_t opt, unsigned char *data, size_t cap,
                  uint32_t *len)
{
    unsigned char h[20];

    if (!ng_test_recv_all(fd, h, sizeof h, 10000))
        ng_test_fail("connection closed during option %" PRIu32, opt);
    if (ng_test_get64(h) != REPLYMAGIC || ng_test_get32(h + 8) != opt)
        ng_test_fail("bad reply header to option %" PRIu32, opt);
    *len = ng_test_get32(h + 16);
    if (*len > cap || (*len > 0 && !ng_test_recv_all(fd, data, *len, 10000)))
        ng_test_fail("option %" PRIu32 ": reply of %" PRIu32 " bytes",
                     opt, *len);
    return ng_test_get32(h + 12);
}

static uint32_t
simple_option(int fd, uint32_t opt)
{
    unsigned char data[512];
    uint32_t len;

    send_option(fd, opt, NULL, 0);
    return recv_option_reply(fd, opt, data, sizeof data, &len);
}

/* Greeting, client flags FIXED_NEWSTYLE | NO_ZEROES, then
 * NBD_OPT_EXTENDED_HEADERS, which must be acknowledged. */
static int
eh_start(const struct ng_test_daemon *d)
{
    int fd = ng_test_raw_connect(d);
    unsigned char g[18], f[4];

    if (!ng_test_recv_all(fd, g, sizeof g, 10000) ||
        ng_test_get64(g) != NBDMAGIC || ng_test_get64(g + 8) != IHAVEOPT)
        ng_test_fail("bad greeting");
    ng_test_put32(f, 3);
    ng_test_send_all(fd, f, sizeof f);
    if (simple_option(fd, OPT_EXTENDED) != REP_ACK)
        ng_test_fail("NBD_OPT_EXTENDED_HEADERS not acknowledged");
    return fd;
}

/* SET_META_CONTEXT base:allocation on `name`: the context ID. */
static uint32_t
eh_select_allocation(int fd, const char *name)
{
    static const char q[] = "base:allocation";
    unsigned char buf[256], data[512];
    uint32_t nlen = (uint32_t)strlen(name), qlen = sizeof q - 1, len, id;
    size_t n = 0;

    ng_test_put32(buf, nlen);
    memcpy(buf + 4, name, nlen);
    n = 4 + nlen;
    ng_test_put32(buf + n, 1);
    ng_test_put32(buf + n + 4, qlen);
    memcpy(buf + n + 8, q, qlen);
    n += 8 + qlen;
    send_option(fd, OPT_SET_META, buf, (uint32_t)n);
    if (recv_option_reply(fd, OPT_SET_META, data, sizeof data, &len) !=
        REP_META || len != 4 + qlen || memcmp(data + 4, q, qlen) != 0)
        ng_test_fail("SET_META_CONTEXT: base:allocation not selected");
    id = ng_test_get32(data);
    if (recv_option_reply(fd, OPT_SET_META, data, sizeof data, &len) !=
        REP_ACK)
        ng_test_fail("SET_META_CONTEXT: no final ACK");
    return id;
}

/* NBD_OPT_GO on `name`: the export size from NBD_INFO_EXPORT. */
static uint64_t
eh_go(int fd, const char *name)
{
    unsigned char buf[256], data[512];
    uint32_t nlen = (uint32_t)strlen(name), len, type;
    uint64_t size = 0;

    ng_test_put32(buf, nlen);
    memcpy(buf + 4, name, nlen);
    ng_test_put16(buf + 4 + nlen, 0);
    send_option(fd, OPT_GO, buf, 6 + nlen);
    while ((type = recv_option_reply(fd, OPT_GO, data, sizeof data, &len)) ==
           REP_INFO)
        if (len == 12 && ng_test_get16(data) == 0)
            size = ng_test_get64(data + 2);
    if (type != REP_ACK)
        ng_test_fail("GO '%s': reply type 0x%" PRIx32, name, type);
    return size;
}

/* ---- Transmission ------------------------------------------------------- */

static void
send_ext_request(int fd, uint16_t flags, uint16_t type, uint64_t cookie,
                 uint64_t offset, uint64_t length)
{
    unsigned char q[32];

    ng_test_put32(q, EXT_REQ_MAGIC);
    ng_test_put16(q + 4, flags);
    ng_test_put16(q + 6, type);
    ng_test_put64(q + 8, cookie);
    ng_test_put64(q + 16, offset);
    ng_test_put64(q + 24, length);
    ng_test_send_all(fd, q, sizeof q);
}

struct reply {
    uint16_t flags, type;
    uint64_t cookie, offset, length;
    unsigned char *payload;         /* malloc'ed, `length` bytes */
};

/* One extended reply chunk; fails on anything else. */
static void
recv_ext_reply(int fd, struct reply *r)
{
    unsigned char h[32];

    if (!ng_test_recv_all(fd, h, sizeof h, 10000))
        ng_test_fail("connection closed awaiting a reply");
    if (ng_test_get32(h) != EXT_REPLY_MAGIC)
        ng_test_fail("reply magic 0x%08" PRIx32 ", not the extended one",
                     ng_test_get32(h));
    r->flags = ng_test_get16(h + 4);
    r->type = ng_test_get16(h + 6);
    r->cookie = ng_test_get64(h + 8);
    r->offset = ng_test_get64(h + 16);
    r->length = ng_test_get64(h + 24);
    if (r->length > MAX_REQUEST + 8)
        ng_test_fail("reply length %" PRIu64, r->length);
    r->payload = malloc(r->length + 1);
    if (r->payload == NULL ||
        (r->length > 0 && !ng_test_recv_all(fd, r->payload, r->length, 10000)))
        ng_test_fail("reply payload truncated");
}

/* The one chunk of a reply must have this cookie, the request's offset,
 * DONE and `type`. */
static void
expect_chunk(const struct reply *r, uint64_t cookie, uint64_t offset,
             uint16_t type, const char *what)
{
    if (r->cookie != cookie || r->offset != offset)
        ng_test_fail("%s: cookie %" PRIu64 " offset %" PRIu64 ", expected "
                     "%" PRIu64 " and %" PRIu64, what, r->cookie, r->offset,
                     cookie, offset);
    if (r->type != type || !(r->flags & REPLY_DONE))
        ng_test_fail("%s: chunk type 0x%x flags 0x%x, expected type 0x%x "
                     "with DONE", what, r->type, r->flags, type);
}

/* A request without payload answered by one chunk with no payload. */
static void
expect_done(int fd, uint16_t flags, uint16_t cmd, uint64_t cookie,
            uint64_t offset, uint64_t length, const char *what)
{
    struct reply r;

    send_ext_request(fd, flags, cmd, cookie, offset, length);
    recv_ext_reply(fd, &r);
    if (r.type == TYPE_ERROR && r.length >= 4)
        ng_test_fail("%s: error %" PRIu32, what, ng_test_get32(r.payload));
    expect_chunk(&r, cookie, offset, TYPE_NONE, what);
    if (r.length != 0)
        ng_test_fail("%s: NBD_REPLY_TYPE_NONE with a payload", what);
    free(r.payload);
}

/* An NBD_REPLY_TYPE_ERROR chunk with this error. */
static void
expect_error(int fd, uint64_t cookie, uint64_t offset, uint32_t error,
             const char *what)
{
    struct reply r;

    recv_ext_reply(fd, &r);
    expect_chunk(&r, cookie, offset, TYPE_ERROR, what);
    if (r.length < 6 || ng_test_get32(r.payload) != error)
        ng_test_fail("%s: error %" PRIu32 ", expected %" PRIu32, what,
                     r.length >= 4 ? ng_test_get32(r.payload) : 0, error);
    free(r.payload);
}

static void
ext_write(int fd, uint64_t cookie, uint64_t offset, const void *buf,
          uint32_t len)
{
    struct reply r;

    send_ext_request(fd, FLAG_PAYLOAD_LEN, CMD_WRITE, cookie, offset, len);
    ng_test_send_all(fd, buf, len);
    recv_ext_reply(fd, &r);
    expect_chunk(&r, cookie, offset, TYPE_NONE, "write");
    free(r.payload);
}

/* READ: OFFSET_DATA chunks, each with the request's offset in its
 * header and its own in the payload, DONE on the last, together
 * covering the request in order; returns how many there were. */
static unsigned
ext_read(int fd, uint64_t cookie, uint64_t offset, void *buf, uint32_t len)
{
    uint64_t got = 0;
    unsigned chunks = 0;

    send_ext_request(fd, 0, CMD_READ, cookie, offset, len);
    for (;;) {
        struct reply r;

        recv_ext_reply(fd, &r);
        chunks++;
        if (r.cookie != cookie || r.offset != offset ||
            r.type != TYPE_OFFSET_DATA || r.length < 9)
            ng_test_fail("read: chunk type 0x%x cookie %" PRIu64 " offset "
                         "%" PRIu64 " length %" PRIu64, r.type, r.cookie,
                         r.offset, r.length);
        if (ng_test_get64(r.payload) != offset + got ||
            got + (r.length - 8) > len)
            ng_test_fail("read: data chunk at %" PRIu64 " after %" PRIu64
                         " bytes", ng_test_get64(r.payload), got);
        memcpy((char *)buf + got, r.payload + 8, r.length - 8);
        got += r.length - 8;
        free(r.payload);
        if (r.flags & REPLY_DONE)
            break;
    }
    if (got != len)
        ng_test_fail("read: %" PRIu64 " of %" PRIu32 " bytes", got, len);
    return chunks;
}

/* BLOCK_STATUS: one NBD_REPLY_TYPE_BLOCK_STATUS_EXT chunk for context
 * `id`; its descriptors (length, state) into e[0..*n). */
static void
ext_block_status(int fd, uint16_t flags, uint64_t cookie, uint64_t offset,
                 uint64_t length, uint32_t id, uint64_t (*e)[2], uint32_t *n,
                 uint32_t max)
{
    struct reply r;

    send_ext_request(fd, flags, CMD_BLOCK_STATUS, cookie, offset, length);
    recv_ext_reply(fd, &r);
    expect_chunk(&r, cookie, offset, TYPE_BS_EXT, "block status");
    if (r.length < 8 + 16 || (r.length - 8) % 16 != 0 ||
        ng_test_get32(r.payload) != id ||
        ng_test_get32(r.payload + 4) != (r.length - 8) / 16)
        ng_test_fail("block status: payload of %" PRIu64 " bytes, context "
                     "%" PRIu32 ", count %" PRIu32, r.length,
                     ng_test_get32(r.payload), ng_test_get32(r.payload + 4));
    *n = ng_test_get32(r.payload + 4);
    if (*n > max)
        ng_test_fail("block status: %" PRIu32 " descriptors", *n);
    for (uint32_t i = 0; i < *n; i++) {
        e[i][0] = ng_test_get64(r.payload + 8 + 16 * i);
        e[i][1] = ng_test_get64(r.payload + 16 + 16 * i);
    }
    free(r.payload);
}

/* ---- Cases --------------------------------------------------------------- */

static void
test_negotiation(const struct ng_test_daemon *d)
{
    int fd = eh_start(d);

    /* no downgrade to structured replies once extended headers are on */
    if (simple_option(fd, OPT_STRUCTURED) != REP_ERR_EXT_HEADER_REQD)
        ng_test_fail("STRUCTURED_REPLY after EXTENDED_HEADERS: not "
                     "NBD_REP_ERR_EXT_HEADER_REQD");
    /* a client that negotiated them MUST NOT use EXPORT_NAME */
    send_option(fd, OPT_EXPORT_NAME, "demo", 4);
    expect_dropped(fd, "EXPORT_NAME after EXTENDED_HEADERS");
}

static void
test_data(const struct ng_test_daemon *d)
{
    static unsigned char out[8 << 20], in[8 << 20];
    int fd = eh_start(d);

    if (eh_go(fd, "demo") != (64u << 20))
        ng_test_fail("demo: wrong size");
    ng_test_fill_pattern(out, 65536, 1 << 20, 1);
    ext_write(fd, 1, 1 << 20, out, 65536);
    ext_read(fd, 2, 1 << 20, in, 65536);
    if (memcmp(in, out, 65536) != 0)
        ng_test_fail("data read back differs");
    expect_done(fd, 0, CMD_TRIM, 3, 1 << 20, 4096, "trim");
    expect_done(fd, 0, CMD_WRITE_ZEROES, 4, (1 << 20) + 4096, 4096,
                "write zeroes");
    expect_done(fd, 0, CMD_FLUSH, 5, 0, 0, "flush");
    ext_read(fd, 6, 1 << 20, in, 65536);
    for (int i = 0; i < 8192; i++)
        if (in[i] != 0)
            ng_test_fail("trimmed/zeroed byte %d reads 0x%02x", i, in[i]);
    if (memcmp(in + 8192, out + 8192, 65536 - 8192) != 0)
        ng_test_fail("data after the zeroed range differs");
    /* 8 MiB: streamed in several chunks, all with the request's offset */
    ng_test_fill_pattern(out, sizeof out, 16 << 20, 2);
    ext_write(fd, 7, 16 << 20, out, sizeof out);
    if (ext_read(fd, 8, 16 << 20, in, sizeof in) < 2)
        ng_test_fail("8 MiB read not streamed in pieces");
    if (memcmp(in, out, sizeof in) != 0)
        ng_test_fail("8 MiB read back differs");
    send_ext_request(fd, 0, CMD_DISC, 9, 0, 0);
    expect_dropped(fd, "after DISC");
}

static void
test_big_block_status(const struct ng_test_daemon *d)
{
    static unsigned char buf[65536];
    uint64_t e[128][2], sum = 0;
    uint32_t n, id;
    int fd = eh_start(d);

    id = eh_select_allocation(fd, "big");
    if (eh_go(fd, "big") != BIG_SIZE)
        ng_test_fail("big: wrong size");
    /* all sparse: one descriptor of 12 GiB, hole and zero */
    ext_block_status(fd, 0, 1, 0, 12 * GiB, id, e, &n, 128);
    if (n != 1 || e[0][0] != 12 * GiB || e[0][1] != 3)
        ng_test_fail("sparse 12 GiB: %" PRIu32 " descriptors, first %" PRIu64
                     " bytes state %" PRIu64, n, e[0][0], e[0][1]);
    /* data at 5 GiB: hole, data, hole; lengths past 32 bits */
    memset(buf, 0x5a, sizeof buf);
    ext_write(fd, 2, 5 * GiB, buf, sizeof buf);
    ext_block_status(fd, 0, 3, 0, 12 * GiB, id, e, &n, 128);
    for (uint32_t i = 0; i < n; i++)
        sum += e[i][0];
    if (n != 3 || e[0][0] != 5 * GiB || e[0][1] != 3 ||
        e[1][0] != sizeof buf || e[1][1] != 0 || sum != 12 * GiB)
        ng_test_fail("12 GiB with data at 5 GiB: %" PRIu32 " descriptors, "
                     "first %" PRIu64 "/%" PRIu64 ", sum %" PRIu64, n,
                     e[0][0], e[0][1], sum);
    /* REQ_ONE: one descriptor, not longer than asked */
    ext_block_status(fd, FLAG_REQ_ONE, 4, 6 * GiB, 8 * GiB, id, e, &n, 128);
    if (n != 1 || e[0][0] != 8 * GiB || e[0][1] != 3)
        ng_test_fail("REQ_ONE from 6 GiB: %" PRIu32 " descriptors, %" PRIu64
                     " bytes", n, e[0][0]);
    /* 64-bit effect lengths: zero and trim 8 GiB in one request each */
    expect_done(fd, 0, CMD_WRITE_ZEROES, 5, 4 * GiB, 8 * GiB,
                "write zeroes of 8 GiB");
    expect_done(fd, 0, CMD_TRIM, 6, 0, 16 * GiB, "trim of 16 GiB");
    ext_block_status(fd, 0, 7, 0, 16 * GiB, id, e, &n, 128);
    if (n != 1 || e[0][0] != 16 * GiB || e[0][1] != 3)
        ng_test_fail("after trimming everything: %" PRIu32 " descriptors",
                     n);
    /* past the end: the spec's EINVAL, in an extended error chunk */
    send_ext_request(fd, 0, CMD_BLOCK_STATUS, 8, 8 * GiB, 9 * GiB);
    expect_error(fd, 8, 8 * GiB, EINVAL_NBD, "block status past the end");
    send_ext_request(fd, 0, CMD_DISC, 9, 0, 0);
    expect_dropped(fd, "after DISC");
}

static void
test_bad_requests(const struct ng_test_daemon *d)
{
    static unsigned char buf[4096];
    unsigned char q[32];
    int fd = eh_start(d);

    eh_go(fd, "demo");
    /* a WRITE without PAYLOAD_LEN has no payload: EINVAL, and the
     * connection goes on */
    send_ext_request(fd, 0, CMD_WRITE, 1, 0, 4096);
    expect_error(fd, 1, 0, EINVAL_NBD, "write without PAYLOAD_LEN");
    /* a payload on TRIM: read, thrown away, EINVAL */
    send_ext_request(fd, FLAG_PAYLOAD_LEN, CMD_TRIM, 2, 0, sizeof buf);
    ng_test_send_all(fd, buf, sizeof buf);
    expect_error(fd, 2, 0, EINVAL_NBD, "trim with a payload");
    /* a READ above max-request: EOVERFLOW */
    send_ext_request(fd, 0, CMD_READ, 3, 0, MAX_REQUEST + 4096);
    expect_error(fd, 3, 0, EOVERFLOW_NBD, "read above max-request");
    /* a READ past the end */
    send_ext_request(fd, 0, CMD_READ, 4, 64u << 20, 4096);
    expect_error(fd, 4, 64u << 20, EINVAL_NBD, "read past the end");
    ext_read(fd, 5, 0, buf, sizeof buf);        /* still fine */
    /* a compact header once extended ones are agreed: bad magic (the
     * server judges 32 bytes, so the next 4 go with it) */
    memset(q, 0, sizeof q);
    ng_test_put32(q, REQ_MAGIC);
    ng_test_put32(q + 24, 512);
    ng_test_send_all(fd, q, sizeof q);
    expect_dropped(fd, "compact request header");

    /* a payload above max-request: hard disconnect, as the spec asks */
    fd = eh_start(d);
    eh_go(fd, "demo");
    send_ext_request(fd, FLAG_PAYLOAD_LEN, CMD_WRITE, 1, 0, MAX_REQUEST + 1);
    expect_dropped(fd, "payload above max-request");
    fd = eh_start(d);
    eh_go(fd, "demo");
    send_ext_request(fd, FLAG_PAYLOAD_LEN, CMD_BLOCK_STATUS, 1, 0,
                     UINT64_C(1) << 40);
    expect_dropped(fd, "payload of 1 TiB");
}

/* Extended WRITEs around the daemon's 64K inline limit, a FLUSH with a
 * payload (EINVAL, the payload thrown away) and a WRITE without
 * PAYLOAD_LEN (EINVAL, no payload) in one stream, sent cut at awkward
 * places (inside headers, a payload's tail with the next header), the
 * daemon reading each piece before the next; the replies and the data
 * read back must be right. */
static void
test_cut_stream(const struct ng_test_daemon *d)
{
    static const uint32_t sizes[] = { 1, 4096, 65535, 65536, 65537, 100000,
                                      32 };
    static const size_t cuts[] = { 1, 5, 31, 32, 33, 4000, 70000 };
    static unsigned char stream[400 << 10], in[100000];
    enum { N = sizeof sizes / sizeof sizes[0] };
    uint64_t off[N], at = 2 << 20;
    bool refused[N + 2] = { false };
    size_t len = 0, pos = 0;
    unsigned ci = 0;
    int fd = eh_start(d);

    eh_go(fd, "demo");
    for (unsigned i = 0; i < N; i++) {
        unsigned char *q = stream + len;

        ng_test_put32(q, EXT_REQ_MAGIC);
        ng_test_put16(q + 4, FLAG_PAYLOAD_LEN);
        ng_test_put16(q + 6, CMD_WRITE);
        ng_test_put64(q + 8, i);
        ng_test_put64(q + 16, at);
        ng_test_put64(q + 24, sizes[i]);
        ng_test_fill_pattern(q + 32, sizes[i], at, 3);
        len += 32 + sizes[i];
        off[i] = at;
        at += sizes[i];
        if (i == 1 || i == 3) {     /* cookies N, N + 1: refused */
            q = stream + len;
            ng_test_put32(q, EXT_REQ_MAGIC);
            ng_test_put16(q + 4, i == 1 ? FLAG_PAYLOAD_LEN : 0);
            ng_test_put16(q + 6, i == 1 ? CMD_FLUSH : CMD_WRITE);
            ng_test_put64(q + 8, i == 1 ? N : N + 1);
            ng_test_put64(q + 16, 0);
            ng_test_put64(q + 24, i == 1 ? 10 : 4096);
            memset(q + 32, 0xaa, 10);
            len += 32 + (i == 1 ? 10 : 0);
            refused[i == 1 ? N : N + 1] = true;
        }
    }
    while (pos < len) {
        size_t n = cuts[ci++ % (sizeof cuts / sizeof cuts[0])];

        n = n < len - pos ? n : len - pos;
        ng_test_send_all(fd, stream + pos, n);
        ng_test_wait_consumed(fd);
        pos += n;
    }
    for (unsigned n = 0; n < N + 2; n++) {
        struct reply r;

        recv_ext_reply(fd, &r);
        if (r.cookie >= N + 2)
            ng_test_fail("cut stream: reply to cookie %" PRIu64, r.cookie);
        if (refused[r.cookie])
            expect_chunk(&r, r.cookie, 0, TYPE_ERROR, "cut stream: refused");
        else
            expect_chunk(&r, r.cookie, off[r.cookie], TYPE_NONE,
                         "cut stream: write");
        free(r.payload);
    }
    for (unsigned i = 0; i < N; i++) {
        ext_read(fd, 100 + i, off[i], in, sizes[i]);
        if (ng_test_check_pattern(in, sizes[i], off[i], 3) != -1)
            ng_test_fail("cut stream: WRITE %u (%" PRIu32 " bytes) reads "
                         "back wrong", i, sizes[i]);
    }
    close(fd);
}

int
main(void)
{
    struct ng_test_daemon *d;

    ng_test_timeout(60);
    d = ng_test_start(config, "demo");
    test_negotiation(d);
    test_data(d);
    test_big_block_status(d);
    test_bad_requests(d);
    test_cut_stream(d);
    ng_test_stop(d);
    return 0;
}
