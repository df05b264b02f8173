/* tests/unit/test-filter-delay.c: the delay filter: requests held for the
 * time asked, and delays changed on a live node.  Timing checks use wide
 * enough margins for a loaded machine but still catch a filter that does
 * not delay.
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

/* ---- delay -------------------------------------------------------------- */

/*   bb -> dly (delay) -> mem (memory, 1M) */
static void
test_delay(void)
{
    enum { N = 16 };
    struct fixture f;
    struct ng_node *dly;
    struct ng_bb *bb;
    struct ng_req reqs[N];
    struct io_result res[N];
    unsigned char buf[4096];
    uint64_t t0;

    setup(&f, "delay: requests held");
    add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    add_fails(&f, "x", yaml("{driver: delay, file: mem, delay-read: 5min}"),
              "'delay-read' must be a delay such as 250, 250ms or 1.5s");
    add_fails(&f, "x", yaml("{driver: delay, file: mem, delay-read: -1}"),
              "not '-1'");
    dly = add(&f, "dly", yaml("{driver: delay, file: mem, delay-read: 50, "
                              "delay-write: 0.04s, delay-zero: 30ms, "
                              "delay-flush: 20ms}"));
    bb = bb_new(&f, "bb", dly, true);

    /* Many at once: each held its own delay, not one after another. */
    for (int round = 0; round < 2; round++) {
        t0 = uv_hrtime();
        for (int i = 0; i < N; i++)
            io_start(bb, &reqs[i], &res[i], i % 2 ? NG_OP_WRITE : NG_OP_READ,
                     (uint64_t)i * 4096, 4096, 0, buf);
        for (int i = 0; i < N; i++) {
            io_wait(&f, &res[i]);
            CHECK_RET(res[i].ret, 0);
            CHECK(res[i].when - t0 >= (i % 2 ? 40 : 50) * MS);
        }
        printf("  %d requests in %.1f ms\n", N,
               (double)(uv_hrtime() - t0) / MS);
        CHECK(uv_hrtime() - t0 < 400 * MS);
    }
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 0, 4096, 0, NULL), 0);
    CHECK(uv_hrtime() - t0 >= 30 * MS);
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK(uv_hrtime() - t0 >= 20 * MS);
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 0, 4096, 0, NULL), 0);
    CHECK(uv_hrtime() - t0 < 20 * MS);

    /* Live: a new read delay, others kept. */
    reconfigure_fails(dly, "{delay-read: soon}", "'delay-read' must be");
    reconfigure_ok(dly, "{delay-read: 0, delay-trim: 1s}");
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 4096, 0, buf), 0);
    CHECK(uv_hrtime() - t0 < 20 * MS);
    t0 = uv_hrtime();
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, 4096, 0, buf), 0);
    CHECK(uv_hrtime() - t0 >= 40 * MS);
    teardown(&f);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_delay();
    printf("all delay tests passed\n");
    return 0;
}
