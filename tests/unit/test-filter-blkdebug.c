/* tests/unit/test-filter-blkdebug.c: the blkdebug filter: errors injected
 * by rule, and rules changed on a live node.
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

/* ---- blkdebug ----------------------------------------------------------- */

/*   bb -> dbg (blkdebug) -> mem (memory, 1M) */
static void
test_blkdebug(void)
{
    struct fixture f;
    struct ng_node *dbg;
    struct ng_bb *bb;
    struct ng_extent ext[4];
    struct ng_req req;
    unsigned char buf[4096];
    int fails;

    setup(&f, "blkdebug: injected errors");
    add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "[{iotype: read}, {iotype: reed}]}"),
              "test:1:72: 'iotype' must be one of read, write");
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "[{iotype: read, erno: EIO}]}"),
              "test:1:62: unknown 'inject-error' key 'erno'");
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "[{errno: EWHAT}]}"),
              "'errno' must be an errno name");
    add_fails(&f, "x", yaml("{driver: blkdebug, image: mem, inject-error: "
                            "{iotype: read}}"),
              "'inject-error' must be a list of rules");
    dbg = add(&f, "dbg", yaml("{driver: blkdebug, image: mem, inject-error: ["
                              "{iotype: read, offset: 64K, length: 64K, "
                              "errno: EIO}, "
                              "{iotype: write, offset: 0, length: 4096, "
                              "errno: ENOSPC, once: true}, "
                              "{iotype: flush, errno: 28, after: 2}, "
                              "{iotype: block-status, offset: 512K}, "
                              "{iotype: discard, sector: 10, errno: EPERM}]}"));
    bb = bb_new(&f, "bb", dbg, true);
    memset(buf, 1, sizeof buf);

    /* Reads touching [64K, 128K) fail; outside they succeed. */
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 512, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_READ, 60 * KiB, 8 * KiB, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB - 1, 1, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB, 4096, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 60 * KiB, 4 * KiB, 0, buf), 0);
    CHECK(ng_graph_find(f.g, "mem")->stats[NG_OP_READ] == 2);
    /* Writes other than reads' range are fine; the once rule fires once. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 64 * KiB, 4096, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4000, 4096, 0, buf), -ENOSPC);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4000, 4096, 0, buf), 0);
    /* Flush: two pass, then ENOSPC (given as a number) every time. */
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), -ENOSPC);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), -ENOSPC);
    /* Block status from 512K to the end, EIO by default. */
    memset(&req, 0, sizeof req);
    ng_req_init(&req, NG_OP_BLOCK_STATUS, MiB - 4096, 4096, 0);
    req.extents = ext;
    req.max_extents = 4;
    CHECK_RET(io_req(&f, bb, &req), -EIO);
    CHECK(extents(&f, bb, 0, 512 * KiB, 0, ext, 4) >= 1);
    /* QEMU's sector: the 512 bytes at 5120. */
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 5000, 200, 0, NULL), -EPERM);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 5632, 512, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 5120, 512, 0, NULL), 0);

    /* New rules, live: reads are fine now, writes fail after one. */
    reconfigure_fails(dbg, "{inject-error: [{offset: -1}]}",
                      "test:1:26: 'offset'");
    reconfigure_fails(dbg, "{image: mem2}", "option 'image' cannot be "
                      "changed on a live node");
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 512, 0, buf), -EIO);
    reconfigure_ok(dbg, "{image: mem, inject-error: [{iotype: write, "
                        "errno: EROFS, after: 1, once: true}]}");
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 512, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf), -EROFS);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf), 0);
    /* The default iotypes: all but block status and cache. */
    reconfigure_ok(dbg, "{inject-error: [{}]}");
    fails = 0;
    fails += io(&f, bb, NG_OP_READ, 0, 512, 0, buf) == -EIO;
    fails += io(&f, bb, NG_OP_WRITE, 0, 512, 0, buf) == -EIO;
    fails += io(&f, bb, NG_OP_WRITE_ZEROES, 0, 512, 0, NULL) == -EIO;
    fails += io(&f, bb, NG_OP_TRIM, 0, 512, 0, NULL) == -EIO;
    fails += io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL) == -EIO;
    CHECK(fails == 5);
    CHECK_RET(io(&f, bb, NG_OP_CACHE, 0, 512, 0, NULL), 0);
    reconfigure_ok(dbg, "{inject-error: []}");
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 512, 0, buf), 0);
    teardown(&f);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_blkdebug();
    printf("all blkdebug tests passed\n");
    return 0;
}
