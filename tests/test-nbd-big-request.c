/* tests/test-nbd-big-request.c: requests as large as other servers take.
 * A client that never learns our limits (NBD_OPT_EXPORT_NAME, libnbd's
 * own size checks off) reads and writes 40 MiB in one request; a GO
 * client is told the maximum (64 MiB by default, server.max-request when
 * set), and a request above a configured maximum gets EINVAL while the
 * connection stays usable.  With structured replies a large READ is
 * streamed in pieces through one small buffer: a 64 MiB READ of a fresh
 * memory disk raises the daemon's peak memory by far less than 64 MiB. */
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

/* Reads of 20 MiB .. 20 MiB + 4K fail: the fifth 4 MiB piece of a
 * streamed 40 MiB READ, after four data chunks have gone out. */
static const char config_fail[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 128M }\n"
    "  dbg: { driver: blkdebug, image: mem0, inject-error: [\n"
    "         { iotype: read, offset: 20M, length: 4K, errno: EIO } ] }\n"
    "exports:\n"
    "  demo: { node: dbg, writable: true }\n";

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

/* VmRSS or VmHWM (peak) of `pid`, in KiB. */
static long
mem_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t n = strlen(field);
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    if ((f = fopen(path, "r")) == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':' &&
            sscanf(line + n + 1, "%ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void
test_streamed(void)
{
    struct ng_test_daemon *d = ng_test_start(config_default, "demo");
    struct nbd_handle *nbd = connect_demo(d, false);
    size_t len = 64 * MIB;
    char *buf = malloc(len);
    long before, peak;

    if (buf == NULL)
        ng_test_fail("out of memory");
    if (nbd_get_structured_replies_negotiated(nbd) != 1)
        ng_test_fail("structured replies not negotiated");
    before = mem_kib(d->pid, "VmRSS");
    if (nbd_pread(nbd, buf, len, 0, 0) == -1)
        ng_test_fail_nbd("64 MiB pread");
    peak = mem_kib(d->pid, "VmHWM");
    printf("64 MiB READ: daemon RSS %ld KiB before, peak %ld KiB\n",
           before, peak);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != 0)
            ng_test_fail("fresh disk: byte %zu not zero", i);
    if (peak - before > 32 * 1024)
        ng_test_fail("64 MiB READ took %ld KiB more at its peak: not "
                     "streamed", peak - before);
    free(buf);
    nbd_close(nbd);
    ng_test_stop(d);
}

/* An error in the middle of a stream ends the reply with an error chunk:
 * the client gets EIO for the READ, and the connection goes on. */
static void
test_stream_error(void)
{
    struct ng_test_daemon *d = ng_test_start(config_fail, "demo");
    struct nbd_handle *nbd = connect_demo(d, false);
    char *buf = malloc(BIG);

    if (buf == NULL)
        ng_test_fail("out of memory");
    if (nbd_pread(nbd, buf, BIG, 0, 0) != -1 || nbd_get_errno() != EIO)
        ng_test_fail("40 MiB READ over a bad block: not EIO");
    if (nbd_pread(nbd, buf, BIG, 32 * MIB, 0) == -1)
        ng_test_fail_nbd("40 MiB READ after the failed one");
    free(buf);
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
    test_streamed();
    test_stream_error();
    test_default();
    test_configured();
    return 0;
}
