/* tests/unit/test-filter-detect-zeroes.c: the detect-zeroes filter: zero
 * writes become write-zeroes, as a log node below it sees them.
 *
 * Each case draws its graph; "bb" is the BlockBackend the requests enter.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "graph/value.h"
#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

/* ---- detect-zeroes ------------------------------------------------------ */

/*   bb -> dz (detect-zeroes, unmap) -> lg (log) -> mem (memory, 1M) */
static void
test_detect_zeroes(void)
{
    struct fixture f;
    struct ng_node *dz, *mem;
    struct ng_bb *bb;
    struct ng_extent ext[8];
    unsigned char *buf = calloc(1, 256 * KiB);
    char path[512], text[600];

    CHECK(buf != NULL);
    setup(&f, "detect-zeroes: zero writes become write-zeroes");
    snprintf(path, sizeof path, "%s/dz.log", f.tmpdir);
    mem = add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    snprintf(text, sizeof text, "{driver: log, file: mem, logfile: '%s'}",
             path);
    add(&f, "lg", yaml(text));
    add_fails(&f, "x", yaml("{driver: detect-zeroes, file: lg, mode: maybe}"),
              "'mode' must be one of off, on, unmap, not 'maybe'");
    dz = add(&f, "dz", yaml("{driver: detect-zeroes, file: lg, mode: unmap}"));
    bb = bb_new(&f, "bb", dz, true);

    fill(buf, 256 * KiB, 0, 1);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 256 * KiB, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 1);

    /* Zeroes over pages 1 and 2: a hole, and io() checked the request
     * came back as a write with its own flags. */
    memset(buf, 0, 256 * KiB);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 64 * KiB, 128 * KiB, NG_REQ_FUA,
                 buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 1);
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 1);
    CHECK(extents(&f, bb, 0, MiB, 0, ext, 8) == 4);
    check_extent(&ext[0], 64 * KiB, DATA);
    check_extent(&ext[1], 128 * KiB, HOLE);
    check_extent(&ext[2], 64 * KiB, DATA);
    check_extent(&ext[3], MiB - 256 * KiB, HOLE);
    memset(buf, 0xaa, 256 * KiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 256 * KiB, 0, buf), 0);
    check_filled(buf, 64 * KiB, 0, 1);
    check_zero(buf + 64 * KiB, 128 * KiB, 64 * KiB);
    check_filled(buf + 192 * KiB, 64 * KiB, 192 * KiB, 1);

    /* One non-zero byte, even the last one, keeps it a write. */
    memset(buf, 0, 256 * KiB);
    buf[256 * KiB - 1] = 1;
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 256 * KiB, 0, buf), 0);
    buf[256 * KiB - 1] = 0;
    buf[5] = 1;
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 10, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 3);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 3, 0, buf), 0);   /* short */
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 2);

    /* "on" does not let the leaf trim; "off" leaves writes alone. */
    reconfigure_fails(dz, "{mode: sometimes}", "'mode' must be one of");
    reconfigure_ok(dz, "{mode: 'on'}");
    memset(buf, 0, 4096);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, 4096, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 3);
    reconfigure_ok(dz, "{mode: 'off'}");
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, 4096, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE_ZEROES] == 3);
    CHECK(mem->stats[NG_OP_WRITE] == 4);

    CHECK(count_lines(path, "write-zeroes offset=0x10000 length=0x20000 "
                      "flags=fua,may_trim", NULL) == 1);
    CHECK(count_lines(path, "write-zeroes offset=0x1000 length=0x1000 "
                      "flags=none", NULL) == 1);
    teardown(&f);
    free(buf);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_detect_zeroes();
    printf("all detect zeroes tests passed\n");
    return 0;
}
