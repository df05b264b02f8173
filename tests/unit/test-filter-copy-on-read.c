/* tests/unit/test-filter-copy-on-read.c: the copy-on-read filter over a
 * memory node with a backing node: data, extents and what gets copied up,
 * also with copies and writes in flight together.
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

/* ---- copy-on-read ------------------------------------------------------- */

/*   bb -> cor (copy-on-read) -> top (memory, 4M, backing: base)
 *   base-bb -> base (memory, 4M)
 *   top-bb -> top
 */
static void
test_copy_on_read(void)
{
    struct fixture f;
    struct ng_node *top, *plain;
    struct ng_bb *bb, *base_bb, *top_bb, *pbb;
    struct ng_extent ext[16];
    unsigned char *buf = malloc(MiB);
    uint64_t writes;

    CHECK(buf != NULL);
    setup(&f, "copy-on-read: reads populate the top layer");
    add(&f, "base", yaml("{driver: memory, size: 4M}"));
    top = add(&f, "top", yaml("{driver: memory, size: 4M, backing: base}"));
    add(&f, "cor", yaml("{driver: copy-on-read, file: top}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "cor"), true);
    base_bb = bb_new(&f, "base-bb", ng_graph_find(f.g, "base"), true);
    top_bb = bb_new(&f, "top-bb", top, true);
    fill(buf, MiB, 0, 1);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);

    /* Read through the filter: the data is the backing's and is now in
     * the top (whole pages, thanks to the top's own copy-up). */
    memset(buf, 0, MiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    CHECK(extents(&f, top_bb, 0, 4 * MiB, NG_REQ_LOCAL_ONLY, ext, 16)
          == 3);
    check_extent(&ext[0], 64 * KiB, ONLY_HOLE);
    check_extent(&ext[1], 256 * KiB, DATA);
    CHECK(extents(&f, top_bb, 100000, 200000, NG_REQ_LOCAL_ONLY, ext, 16)
          == 1);
    check_extent(&ext[0], 200000, DATA);

    /* The backing changes; what the top copied does not. */
    fill(buf, MiB, 0, 2);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    CHECK_RET(io(&f, top_bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    /* Beyond the copied pages the backing's new data shows. */
    CHECK_RET(io(&f, top_bb, NG_OP_READ, 320 * KiB, 1000, 0, buf), 0);
    check_filled(buf, 1000, 320 * KiB, 2);

    /* A read already served by the top copies nothing. */
    writes = top->stats[NG_OP_WRITE];
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 256 * KiB, 0, buf), 0);
    CHECK(top->stats[NG_OP_WRITE] == writes);
    /* A mixed read copies only what is missing, from its own buffer. */
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 512 * KiB, 0, buf), 0);
    check_filled(buf, 64 * KiB, 0, 2);
    check_filled(buf + 64 * KiB, 256 * KiB, 64 * KiB, 1);
    check_filled(buf + 320 * KiB, 192 * KiB, 320 * KiB, 2);
    CHECK(top->stats[NG_OP_WRITE] == writes + 2);
    CHECK(extents(&f, top_bb, 0, 4 * MiB, NG_REQ_LOCAL_ONLY, ext, 16)
          == 2);
    check_extent(&ext[0], 512 * KiB, DATA);

    /* Writes pass through. */
    fill(buf, 4096, 2 * MiB, 3);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 2 * MiB, 4096, 0, buf), 0);
    CHECK_RET(io(&f, top_bb, NG_OP_READ, 2 * MiB, 4096, 0, buf), 0);
    check_filled(buf, 4096, 2 * MiB, 3);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);

    /* No backing: correct reads, and nothing is ever written.
     *   pbb -> cor2 (copy-on-read) -> plain (memory, 1M) */
    plain = add(&f, "plain", yaml("{driver: memory, size: 1M}"));
    add(&f, "cor2", yaml("{driver: copy-on-read, file: plain}"));
    pbb = bb_new(&f, "pbb", ng_graph_find(f.g, "cor2"), true);
    CHECK_RET(io(&f, pbb, NG_OP_READ, 0, MiB, 0, buf), 0);
    check_zero(buf, MiB, 0);
    CHECK(plain->stats[NG_OP_WRITE] == 0);
    CHECK(extents(&f, pbb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 1);
    check_extent(&ext[0], MiB, DATA);
    teardown(&f);
    free(buf);
}

/* Copies race with writes: a copy must never land on newer data.
 *
 *   bb -> cor (copy-on-read) -> dly (delay, write 50ms) -> top
 *   top (memory, 1M, backing: slow) ; slow (delay, read 100ms) -> base
 *   base-bb -> base (memory, 1M)
 *
 * Times are chosen so that without the filter's tracking the old data
 * would land last: 50 ms margins either way.
 */
static void
test_copy_on_read_races(void)
{
    struct fixture f;
    struct ng_bb *bb, *base_bb;
    struct ng_req rr, wr;
    struct io_result rres, wres;
    unsigned char *rbuf = malloc(256 * KiB), *wbuf = malloc(256 * KiB);

    CHECK(rbuf != NULL && wbuf != NULL);
    setup(&f, "copy-on-read: copies and writes in flight together");
    add(&f, "base", yaml("{driver: memory, size: 1M}"));
    add(&f, "slow", yaml("{driver: delay, delay-read: 100ms, file: base}"));
    add(&f, "top", yaml("{driver: memory, size: 1M, backing: slow}"));
    add(&f, "dly", yaml("{driver: delay, delay-write: 50, file: top}"));
    add(&f, "cor", yaml("{driver: copy-on-read, file: dly}"));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "cor"), true);
    base_bb = bb_new(&f, "base-bb", ng_graph_find(f.g, "base"), true);
    fill(wbuf, 256 * KiB, 0, 1);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, 256 * KiB, 0, wbuf), 0);

    /* A write arriving while a read's data is on its way up (t = 60 ms
     * of 100) waits for the read's copy (which lands at 150) rather
     * than landing first (at 110) and being overwritten. */
    fill(wbuf, 64 * KiB, 64 * KiB, 2);
    io_start(bb, &rr, &rres, NG_OP_READ, 0, 128 * KiB, 0, rbuf);
    wait_ms(&f, 60);
    CHECK(!rres.done);
    io_start(bb, &wr, &wres, NG_OP_WRITE, 64 * KiB, 64 * KiB, 0, wbuf);
    io_wait(&f, &rres);
    io_wait(&f, &wres);
    CHECK_RET(rres.ret, 0);
    CHECK_RET(wres.ret, 0);
    CHECK(rres.seq < wres.seq);
    check_filled(rbuf, 128 * KiB, 0, 1);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 128 * KiB, 0, rbuf), 0);
    check_filled(rbuf, 64 * KiB, 0, 1);
    check_filled(rbuf + 64 * KiB, 64 * KiB, 64 * KiB, 2);

    /* A read arriving while a write is held below the filter must not
     * copy: its old data would land after the write. */
    reconfigure_ok(ng_graph_find(f.g, "slow"), "{delay-read: 0}");
    fill(wbuf, 64 * KiB, 128 * KiB, 3);
    io_start(bb, &wr, &wres, NG_OP_WRITE, 128 * KiB, 64 * KiB, 0, wbuf);
    io_start(bb, &rr, &rres, NG_OP_READ, 128 * KiB, 128 * KiB, 0, rbuf);
    io_wait(&f, &rres);
    io_wait(&f, &wres);
    CHECK_RET(rres.ret, 0);
    CHECK_RET(wres.ret, 0);
    check_filled(rbuf, 128 * KiB, 128 * KiB, 1);
    wait_ms(&f, 100);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB, 128 * KiB, 0, rbuf), 0);
    check_filled(rbuf, 64 * KiB, 128 * KiB, 3);
    check_filled(rbuf + 64 * KiB, 64 * KiB, 192 * KiB, 1);
    teardown(&f);
    free(rbuf);
    free(wbuf);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_copy_on_read();
    test_copy_on_read_races();
    printf("all copy on read tests passed\n");
    return 0;
}
