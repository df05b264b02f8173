/* tests/test-nbd-big-request.c: requests as large as other servers take.
 * A client that never learns our limits (NBD_OPT_EXPORT_NAME, libnbd's
 * own size checks off) reads and writes 40 MiB in one request; a GO
 * client is told the maximum (64 MiB by default, server.max-request when
 * set), and a request above a configured maximum gets EINVAL while the
 * connection stays usable. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tests/harness.h"

#define MIB     (UINT64_C(1) << 20)
#define BIG     (40 * MIB)

static const char config_default[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 128M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n";

static const char config_8m[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  max-request: 8M\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 128M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n";

/* export_name_opt: connect as an old client does, with
 * NBD_OPT_EXPORT_NAME (libnbd uses it without fixed newstyle), so no
 * block size is ever negotiated. */
static struct nbd_handle *
connect_demo(const struct ng_test_daemon *d, bool export_name_opt)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, "demo") == -1 ||
        (export_name_opt && nbd_set_handshake_flags(nbd, 0) == -1) ||
        nbd_connect_unix(nbd, d->sock) == -1 ||
        nbd_set_strict_mode(nbd, 0) == -1)
        ng_test_fail_nbd("connect");
    return nbd;
}

static void
expect_max_block(struct nbd_handle *nbd, int64_t want)
{
    int64_t got = nbd_get_block_size(nbd, LIBNBD_SIZE_MAXIMUM);

    if (got != want)
        ng_test_fail("maximum block size %" PRId64 ", expected %" PRId64,
                     got, want);
}

static void
write_read_big(struct nbd_handle *nbd, unsigned seed)
{
    char *buf = malloc(BIG);

    if (buf == NULL)
        ng_test_fail("out of memory");
    ng_test_fill_pattern(buf, BIG, 8 * MIB, seed);
    if (nbd_pwrite(nbd, buf, BIG, 8 * MIB, 0) == -1)
        ng_test_fail_nbd("40 MiB pwrite");
    memset(buf, 0, BIG);
    if (nbd_pread(nbd, buf, BIG, 8 * MIB, 0) == -1)
        ng_test_fail_nbd("40 MiB pread");
    if (ng_test_check_pattern(buf, BIG, 8 * MIB, seed) >= 0)
        ng_test_fail("40 MiB read-back differs");
    free(buf);
}

static void
test_default(void)
{
    struct ng_test_daemon *d = ng_test_start(config_default, "demo");
    struct nbd_handle *nbd = connect_demo(d, true);

    write_read_big(nbd, 1);
    nbd_close(nbd);
    nbd = connect_demo(d, false);
    expect_max_block(nbd, 64 * MIB);
    write_read_big(nbd, 2);
    nbd_close(nbd);
    ng_test_stop(d);
}

static void
test_configured(void)
{
    struct ng_test_daemon *d = ng_test_start(config_8m, "demo");
    struct nbd_handle *nbd = connect_demo(d, false);
    char *buf = calloc(1, BIG);

    if (buf == NULL)
        ng_test_fail("out of memory");
    expect_max_block(nbd, 8 * MIB);
    if (nbd_pread(nbd, buf, 8 * MIB, 0, 0) == -1)
        ng_test_fail_nbd("8 MiB pread");
    if (nbd_pread(nbd, buf, BIG, 0, 0) != -1 || nbd_get_errno() != EINVAL)
        ng_test_fail("40 MiB read above max-request 8M: not EINVAL");
    if (nbd_pwrite(nbd, buf, BIG, 0, 0) != -1 || nbd_get_errno() != EINVAL)
        ng_test_fail("40 MiB write above max-request 8M: not EINVAL");
    if (nbd_pread(nbd, buf, 4096, 0, 0) == -1)
        ng_test_fail_nbd("read after the refusals");
    free(buf);
    nbd_close(nbd);
    ng_test_stop(d);
}

int
main(void)
{
    ng_test_timeout(120);
    test_default();
    test_configured();
    return 0;
}
