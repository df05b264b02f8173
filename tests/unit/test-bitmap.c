/* tests/unit/test-bitmap.c: dirty bitmaps (graph/bitmap.c).
 *
 *   mem (16 TiB memory node): a 64 KiB bitmap
 *   odd (100000 bytes): 64 KiB and 512 B bitmaps
 *   BB --> small (64 MiB): a 512 B bitmap recording, one disabled
 *
 * Ranges widen to whole granules and stop at the end; the search for the
 * next dirty or clean granule crosses word boundaries; counts follow set,
 * reset and merge; the choke point marks writes, trims and write-zeroes
 * that succeed, and nothing else; a disabled bitmap records nothing. */
#include <config.h>

#include <errno.h>
#include <stdio.h>

#include "graph/bitmap.h"
#include "tests/unit/graph-fixture.h"

#define TiB (1024ull * 1024 * 1024 * 1024)

static void
test_ranges(struct fixture *f, struct ng_node *mem)
{
    struct ng_error err;
    struct ng_bitmap *bm = ng_bitmap_add(mem, "b", 65536, &err);

    (void)f;
    CHECK(bm != NULL);
    CHECK(bm->nbits == 16 * TiB / 65536);
    ng_bitmap_set(bm, 100, 1);                  /* granule 0 */
    ng_bitmap_set(bm, 65535, 2);                /* granules 0 and 1 */
    CHECK(bm->count == 2);
    CHECK(ng_bitmap_dirty_bytes(bm) == 131072);
    CHECK(ng_bitmap_next_dirty(bm, 0) == 0);
    CHECK(ng_bitmap_next_clean(bm, 0) == 131072);
    /* Far out, across many empty words. */
    ng_bitmap_set(bm, 8 * TiB + 64 * 65536, 65536);
    CHECK(ng_bitmap_next_dirty(bm, 131072) == 8 * TiB + 64 * 65536);
    CHECK(ng_bitmap_next_dirty(bm, 8 * TiB + 65 * 65536) == 16 * TiB);
    /* The last granule, then everything. */
    ng_bitmap_set(bm, 16 * TiB - 1, 100);       /* cut at the end */
    CHECK(ng_bitmap_get(bm, 16 * TiB - 1));
    CHECK(bm->count == 4);
    ng_bitmap_reset(bm, 0, 65536);
    CHECK(!ng_bitmap_get(bm, 0) && ng_bitmap_get(bm, 65536));
    CHECK(bm->count == 3);
    ng_bitmap_clear_all(bm);
    CHECK(bm->count == 0 && ng_bitmap_next_dirty(bm, 0) == 16 * TiB);
    CHECK(ng_bitmap_add(mem, "b", 65536, &err) == NULL && err.code == EEXIST);
    CHECK(ng_bitmap_add(mem, "c", 1000, &err) == NULL && err.code == EINVAL);
    CHECK(ng_bitmap_add(mem, "c", 256, &err) == NULL && err.code == EINVAL);
    CHECK(ng_bitmap_add(mem, "c", 128u << 20, &err) == NULL &&
          err.code == EINVAL);
    ng_bitmap_remove(bm);
    CHECK(mem->bitmaps == NULL);
}

/* A node whose size is not a multiple of the granularity. */
static void
test_tail(struct fixture *f)
{
    struct ng_node *n = add(f, "odd", opts("driver", "memory", "size",
                                           "100000", NULL));
    struct ng_bitmap *a = ng_bitmap_add(n, "a", 65536, NULL);
    struct ng_bitmap *b = ng_bitmap_add(n, "b", 65536, NULL);
    struct ng_bitmap *c = ng_bitmap_add(n, "c", 512, NULL);

    CHECK(a != NULL && b != NULL && c != NULL && a->nbits == 2);
    ng_bitmap_set_all(a);
    CHECK(a->count == 2 && ng_bitmap_dirty_bytes(a) == 100000);
    CHECK(ng_bitmap_next_clean(a, 0) == 100000);
    ng_bitmap_set(b, 0, 1);
    CHECK(ng_bitmap_merge(b, a, NULL) == 0 && b->count == 2);
    CHECK(ng_bitmap_merge(b, c, NULL) == -1);
    ng_bitmap_set_all(c);
    CHECK(c->count == (100000 + 511) / 512);
    ng_bitmap_reset(c, 512 * 63, 512 * 2);      /* across a word edge */
    CHECK(ng_bitmap_next_clean(c, 0) == 512 * 63);
    CHECK(ng_bitmap_next_dirty(c, 512 * 63) == 512 * 65);
}

static void
test_choke_point(struct fixture *f)
{
    struct ng_node *mem = add(f, "small", opts("driver", "memory", "size",
                                               "64M", NULL));
    struct ng_bitmap *bm = ng_bitmap_add(mem, "w", 512, NULL);
    struct ng_bitmap *off = ng_bitmap_add(mem, "off", 512, NULL);
    struct ng_bb *bb = bb_new(f, "bb", mem, true);
    static char buf[4096];

    CHECK(bm != NULL && off != NULL);
    off->recording = false;
    CHECK_RET(io(f, bb, NG_OP_WRITE, 1024, 4096, 0, buf), 0);
    CHECK_RET(io(f, bb, NG_OP_WRITE_ZEROES, 1 << 20, 512, 0, NULL), 0);
    CHECK_RET(io(f, bb, NG_OP_TRIM, 2 << 20, 1024, 0, NULL), 0);
    CHECK_RET(io(f, bb, NG_OP_READ, 3 << 20, 4096, 0, buf), 0);
    CHECK_RET(io(f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    /* Past the end: refused, so not marked. */
    CHECK(io(f, bb, NG_OP_WRITE, 64 << 20, 512, 0, buf) < 0);
    CHECK(bm->count == 8 + 1 + 2);
    CHECK(ng_bitmap_get(bm, 1024) && !ng_bitmap_get(bm, 512));
    CHECK(!ng_bitmap_get(bm, 3 << 20));
    CHECK(off->count == 0);
    ng_bb_free(bb);
}

int
main(void)
{
    struct fixture f;
    struct ng_node *mem;

    setup(&f, "bitmap ranges, search, counts, choke point");
    mem = add(&f, "mem", opts("driver", "memory", "size", "16T", NULL));
    test_ranges(&f, mem);
    test_tail(&f);
    test_choke_point(&f);
    teardown(&f);
    return 0;
}
