/* tests/test-nbd-errors.c: requests the server must refuse, sent by a
 * libnbd whose own checks are switched off (strict mode 0), with
 * structured replies on and off.  Each refusal carries the spec's error
 * and leaves the connection usable. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tests/harness.h"

#define SIZE    (UINT64_C(64) << 20)
#define MIB     (UINT64_C(1) << 20)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  max-request: 32M\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "  mem1: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n"
    "  ro: { node: mem1, writable: false }\n";

static struct nbd_handle *
connect_lax(const struct ng_test_daemon *d, const char *export,
            bool structured, bool meta)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512];

    snprintf(uri, sizeof uri, "nbd+unix:///%s?socket=%s", export, d->sock);
    if (nbd == NULL ||
        nbd_set_request_structured_replies(nbd, structured) == -1 ||
        (meta &&
         nbd_add_meta_context(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) ||
        nbd_connect_uri(nbd, uri) == -1 ||
        nbd_set_strict_mode(nbd, 0) == -1)
        ng_test_fail_nbd("connect");
    return nbd;
}

static void
expect_errno(int r, int want, const char *what)
{
    if (r != -1)
        ng_test_fail("%s succeeded; expected errno %d", what, want);
    if (nbd_get_errno() != want)
        ng_test_fail("%s: errno %d (%s), expected %d", what,
                     nbd_get_errno(), nbd_get_error(), want);
}

/* The connection still serves after a refusal. */
static void
expect_alive(struct nbd_handle *nbd, const char *after)
{
    char buf[4096];

    if (nbd_pread(nbd, buf, sizeof buf, 0, 0) == -1)
        ng_test_fail("connection unusable after %s: %s", after,
                     nbd_get_error());
}

static int
ignore_extents(void *opaque, const char *ctx, uint64_t off,
               uint32_t *entries, size_t n, int *error)
{
    (void)opaque; (void)ctx; (void)off; (void)entries; (void)n; (void)error;
    return 0;
}

static void
test_writable(const struct ng_test_daemon *d, bool structured)
{
    struct nbd_handle *nbd = connect_lax(d, "demo", structured, false);
    size_t big = 32 * MIB + 4096;
    char *buf = calloc(1, big);

    if (buf == NULL)
        ng_test_fail("out of memory");
    expect_errno(nbd_pread(nbd, buf, 8192, SIZE - 4096, 0), EINVAL,
                 "read past the end");
    expect_alive(nbd, "read past the end");
    expect_errno(nbd_pread(nbd, buf, 4096, SIZE + MIB, 0), EINVAL,
                 "read beyond the end");
    expect_errno(nbd_pwrite(nbd, buf, 8192, SIZE - 4096, 0), ENOSPC,
                 "write past the end");
    expect_alive(nbd, "write past the end");
    expect_errno(nbd_zero(nbd, 8192, SIZE - 4096, 0), ENOSPC,
                 "write zeroes past the end");
    expect_errno(nbd_trim(nbd, 8192, SIZE - 4096, 0), EINVAL,
                 "trim past the end");
    expect_errno(nbd_cache(nbd, 8192, SIZE - 4096, 0), EINVAL,
                 "cache past the end");
    /* above the 32 MiB maximum block size (max-request: libnbd itself
     * refuses anything above 64 MiB, the default) */
    expect_errno(nbd_pread(nbd, buf, big, 0, 0), EINVAL, "oversized read");
    expect_alive(nbd, "oversized read");
    expect_errno(nbd_pwrite(nbd, buf, big, 0, 0), EINVAL, "oversized write");
    expect_alive(nbd, "oversized write");
    /* zero length, and flags the command does not take */
    expect_errno(nbd_pread(nbd, buf, 0, 0, 0), EINVAL, "zero-length read");
    expect_errno(nbd_pread(nbd, buf, 4096, 0, LIBNBD_CMD_FLAG_REQ_ONE),
                 EINVAL, "read with REQ_ONE");
    expect_errno(nbd_pwrite(nbd, buf, 4096, 0, LIBNBD_CMD_FLAG_NO_HOLE),
                 EINVAL, "write with NO_HOLE");
    if (!structured)
        expect_errno(nbd_pread(nbd, buf, 4096, 0, LIBNBD_CMD_FLAG_DF),
                     EINVAL, "DF without structured replies");
    /* block status without a negotiated metadata context */
    expect_errno(nbd_block_status(nbd, 4096, 0,
                                  (nbd_extent_callback) {
                                      .callback = ignore_extents },
                                  0),
                 EINVAL, "block status without a context");
    expect_alive(nbd, "all the refusals");
    free(buf);
    nbd_close(nbd);
}

static void
test_read_only(const struct ng_test_daemon *d, bool structured)
{
    struct nbd_handle *nbd = connect_lax(d, "ro", structured, structured);
    char buf[4096] = { 0 };

    if (nbd_is_read_only(nbd) != 1)
        ng_test_fail("ro export not read-only");
    expect_errno(nbd_pwrite(nbd, buf, sizeof buf, 0, 0), EPERM,
                 "write to a read-only export");
    expect_errno(nbd_trim(nbd, sizeof buf, 0, 0), EPERM,
                 "trim on a read-only export");
    expect_errno(nbd_zero(nbd, sizeof buf, 0, 0), EPERM,
                 "write zeroes on a read-only export");
    expect_errno(nbd_pwrite(nbd, buf, sizeof buf, SIZE, 0), EPERM,
                 "write past the end of a read-only export");
    expect_alive(nbd, "read-only refusals");
    nbd_close(nbd);
}

int
main(void)
{
    struct ng_test_daemon *d;

    ng_test_timeout(60);
    d = ng_test_start(config, "demo");
    test_writable(d, true);
    test_writable(d, false);
    test_read_only(d, true);
    test_read_only(d, false);
    ng_test_stop(d);
    return 0;
}
