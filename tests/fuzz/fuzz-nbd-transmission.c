/* tests/fuzz/fuzz-nbd-transmission.c: the NBD transmission parser
 * (server/nbd-conn.c).  The first input byte picks a handshake that the
 * harness performs correctly; the rest is sent as requests.
 *
 *   bits 0-2  export: fuzz_nbd_export_names[n % FUZZ_NBD_EXPORTS]; with
 *             bit 7, an n of FUZZ_NBD_EXPORTS or more also makes the
 *             hang-up a reset
 *   bit 3     NBD_OPT_STRUCTURED_REPLY first
 *   bit 4     NBD_OPT_SET_META_CONTEXT base:allocation (block status)
 *   bit 5     enter with NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO;
 *             with bit 3, NBD_OPT_EXTENDED_HEADERS instead of
 *             STRUCTURED_REPLY and still NBD_OPT_GO (a client with
 *             extended headers must not use EXPORT_NAME), so the
 *             requests are 32-byte extended ones
 *   bit 6     client flag NO_ZEROES
 *   bit 7     hang up once everything is sent (FUZZ_END_HANG_UP, or
 *             FUZZ_END_RESET, above)
 */
#include <config.h>

#include <stdbool.h>
#include <string.h>

#include "server/nbd-proto.h"
#include "tests/fuzz/fuzz-util.h"
#include "tests/fuzz/nbd-fixture.h"

#define META "base:allocation"

struct handshake {
    uint8_t buf[256];
    size_t len;
    const char *export;
};

static uint8_t *
hs_room(struct handshake *h, size_t n)
{
    uint8_t *p = h->buf + h->len;

    if (h->len + n > sizeof h->buf)
        fuzz_die("handshake buffer too small");
    h->len += n;
    return p;
}

/* An option header; its data follows through hs_room. */
static void
hs_option(struct handshake *h, uint32_t opt, uint32_t len)
{
    uint8_t *p = hs_room(h, NBD_OPT_HDR_SIZE);

    nbd_put64(p, NBD_OPT_MAGIC);
    nbd_put32(p + 8, opt);
    nbd_put32(p + 12, len);
}

static void
hs_build(struct handshake *h, uint8_t sel)
{
    const char *name = fuzz_nbd_export_names[(sel & 7) % FUZZ_NBD_EXPORTS];
    uint32_t nlen = (uint32_t)strlen(name), mlen = (uint32_t)strlen(META);
    bool extended = (sel & 8) && (sel & 32);
    uint8_t *p;

    h->len = 0;
    h->export = name;
    nbd_put32(hs_room(h, 4), NBD_FLAG_C_FIXED_NEWSTYLE |
                             ((sel & 64) ? NBD_FLAG_C_NO_ZEROES : 0));
    if (extended)
        hs_option(h, NBD_OPT_EXTENDED_HEADERS, 0);
    else if (sel & 8)
        hs_option(h, NBD_OPT_STRUCTURED_REPLY, 0);
    if (sel & 16) {
        /* export name, one query */
        hs_option(h, NBD_OPT_SET_META_CONTEXT, 4 + nlen + 4 + 4 + mlen);
        p = hs_room(h, 4 + nlen + 4 + 4 + mlen);
        nbd_put32(p, nlen);
        memcpy(p + 4, name, nlen);
        nbd_put32(p + 4 + nlen, 1);
        nbd_put32(p + 8 + nlen, mlen);
        memcpy(p + 12 + nlen, META, mlen);
    }
    if ((sel & 32) && !extended) {
        hs_option(h, NBD_OPT_EXPORT_NAME, nlen);
        memcpy(hs_room(h, nlen), name, nlen);
    } else {
        /* export name, no info requests */
        hs_option(h, NBD_OPT_GO, 4 + nlen + 2);
        p = hs_room(h, 4 + nlen + 2);
        nbd_put32(p, nlen);
        memcpy(p + 4, name, nlen);
        nbd_put16(p + 4 + nlen, 0);
    }
}

static enum fuzz_end
session_end(uint8_t sel)
{
    if (!(sel & 128))
        return FUZZ_END_READ_ALL;
    return (sel & 7) >= FUZZ_NBD_EXPORTS ? FUZZ_END_RESET : FUZZ_END_HANG_UP;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct handshake h;
    struct fuzz_session s;

    if (size == 0)
        return -1;              /* not worth keeping in the corpus */
    hs_build(&h, data[0]);
    s = (struct fuzz_session){
        .head = h.buf, .head_len = h.len,
        .head_done = fuzz_nbd_in_transmission, .opaque = (void *)h.export,
        .data = data + 1, .len = size - 1, .end = session_end(data[0]),
    };
    fuzz_nbd_session(&s);
    return 0;
}
