/* tests/unit/test-drivers.c: the leaf and format drivers (memory, also
 * with a backing node, null-co, file, raw) end to end: a graph on a real
 * libuv loop, requests through a BlockBackend, data and extents checked
 * against what was written.
 *
 * Each case draws its graph; "bb" is the BlockBackend the requests enter.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph/value.h"
#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

/* Submit n writes at once, then run the loop until all are done. */
static void
io_parallel_writes(struct fixture *f, struct ng_bb *bb, size_t n,
                   const uint64_t *offs, uint64_t len, void *const *bufs)
{
    struct ng_req reqs[n];
    struct io_result res[n];

    for (size_t i = 0; i < n; i++)
        io_start(bb, &reqs[i], &res[i], NG_OP_WRITE, offs[i], len, 0,
                 bufs[i]);
    for (size_t i = 0; i < n; i++) {
        io_wait(f, &res[i]);
        CHECK_RET(res[i].ret, 0);
    }
}

/* A file of `size` bytes in the fixture's temp dir. */
static void
make_file(struct fixture *f, const char *name, uint64_t size, char *path,
          size_t path_size)
{
    int fd;

    snprintf(path, path_size, "%s/%s", f->tmpdir, name);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)size) == 0);
    close(fd);
}

/* ---- memory ------------------------------------------------------------- */

/*   bb -> mem (memory, 4M, 64 KiB pages)  */
static void
test_memory(void)
{
    struct fixture f;
    struct ng_node *mem;
    struct ng_bb *bb;
    struct ng_extent ext[8];
    unsigned char *buf = malloc(MiB);

    CHECK(buf != NULL);
    setup(&f, "memory: data, trim, write-zeroes, block status");
    add_fails(&f, "nosize", opts("driver", "memory", NULL),
              "missing required option 'size'");
    mem = add(&f, "mem", opts("driver", "memory", "size", "4M", NULL));
    CHECK(ng_node_length(mem) == (int64_t)(4 * MiB));
    CHECK(ng_node_caps(mem) & NG_CAP_MULTI_CONN);
    bb = bb_new(&f, "bb", mem, true);

    /* Fresh: zeroes, one hole. */
    memset(buf, 0xaa, 64 * KiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, 64 * KiB, 0, buf), 0);
    check_zero(buf, 64 * KiB, 0);
    CHECK(extents(&f, bb, 0, 4 * MiB, 0, ext, 8) == 1);
    check_extent(&ext[0], 4 * MiB, HOLE);

    /* A write across pages 1..4, unaligned at both ends. */
    fill(buf, 200000, 100000, 1);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 100000, 200000, NG_REQ_FUA, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 320 * KiB, 0, buf), 0);
    check_zero(buf, 100000 - 64 * KiB, 64 * KiB);
    check_filled(buf + (100000 - 64 * KiB), 200000, 100000, 1);
    check_zero(buf + (300000 - 64 * KiB), 384 * KiB - 300000, 300000);

    /* Allocated pages 1..4 show as one data extent; the query starts
     * mid-page and ends mid-page. */
    CHECK(extents(&f, bb, 1000, 4 * MiB - 2000, 0, ext, 8) == 3);
    check_extent(&ext[0], 64 * KiB - 1000, HOLE);
    check_extent(&ext[1], 256 * KiB, DATA);
    check_extent(&ext[2], 4 * MiB - 320 * KiB - 1000, HOLE);
    CHECK(extents(&f, bb, 0, 4 * MiB, NG_REQ_REQ_ONE, ext, 8) == 1);
    check_extent(&ext[0], 64 * KiB, HOLE);
    CHECK(extents(&f, bb, 0, 4 * MiB, 0, ext, 2) == 2);
    check_extent(&ext[1], 256 * KiB, DATA);

    /* Trim pages 2..3 whole and parts of 1 and 4. */
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 120000, 150000, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 20000, 100000, 1);
    check_zero(buf + 20000, 150000, 120000);
    check_filled(buf + 170000, 30000, 270000, 1);
    CHECK(extents(&f, bb, 0, 4 * MiB, 0, ext, 8) == 5);
    check_extent(&ext[1], 64 * KiB, DATA);
    check_extent(&ext[2], 128 * KiB, HOLE);
    check_extent(&ext[3], 64 * KiB, DATA);

    /* Write-zeroes, with and without MAY_TRIM, FAST_ZERO too. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 100000, 10, NG_REQ_FAST_ZERO,
                 NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 256 * KiB, 64 * KiB,
                 NG_REQ_MAY_TRIM, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_zero(buf, 10, 100000);
    check_filled(buf + 10, 19990, 100010, 1);
    check_zero(buf + 20000, 180000, 120000);
    CHECK(extents(&f, bb, 0, 4 * MiB, 0, ext, 8) == 3);
    check_extent(&ext[1], 64 * KiB, DATA);

    /* Without MAY_TRIM (NBD's NO_HOLE) the zeroed range stays allocated,
     * even where nothing was written before. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 2 * MiB, 128 * KiB, 0, NULL),
              0);
    CHECK(extents(&f, bb, 2 * MiB, 128 * KiB, 0, ext, 8) == 1);
    check_extent(&ext[0], 128 * KiB, DATA);
    CHECK_RET(io(&f, bb, NG_OP_READ, 2 * MiB, 128 * KiB, 0, buf), 0);
    check_zero(buf, 128 * KiB, 2 * MiB);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 2 * MiB, 128 * KiB, 0, NULL), 0);

    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_CACHE, 0, MiB, 0, NULL), 0);
    /* Past the end: refused before the driver. */
    CHECK_RET(io(&f, bb, NG_OP_READ, 4 * MiB - 512, 1024, 0, buf), -EINVAL);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4 * MiB, 1, 0, buf), -ENOSPC);

    /*   bb2 -> odd (memory, 100000 bytes: the last page is short)  */
    {
        struct ng_node *odd = add(&f, "odd", opts("driver", "memory",
                                                  "size", "100000", NULL));
        struct ng_bb *bb2 = bb_new(&f, "bb2", odd, true);

        fill(buf, 100000, 0, 2);
        CHECK_RET(io(&f, bb2, NG_OP_WRITE, 0, 100000, 0, buf), 0);
        CHECK(extents(&f, bb2, 0, 100000, 0, ext, 8) == 1);
        check_extent(&ext[0], 100000, DATA);
        /* Covering the short page to the disk's end frees it. */
        CHECK_RET(io(&f, bb2, NG_OP_TRIM, 64 * KiB, 100000 - 64 * KiB, 0,
                     NULL), 0);
        CHECK(extents(&f, bb2, 0, 100000, 0, ext, 8) == 2);
        check_extent(&ext[0], 64 * KiB, DATA);
        check_extent(&ext[1], 100000 - 64 * KiB, HOLE);
        CHECK_RET(io(&f, bb2, NG_OP_READ, 0, 100000, 0, buf), 0);
        check_filled(buf, 64 * KiB, 0, 2);
        check_zero(buf + 64 * KiB, 100000 - 64 * KiB, 64 * KiB);
    }
    teardown(&f);
    free(buf);
}

/* ---- null-co ------------------------------------------------------------ */

/*   bb -> nul (null-co, default 1G)  */
static void
test_null(void)
{
    struct fixture f;
    struct ng_node *nul;
    struct ng_bb *bb;
    struct ng_extent ext[4];
    unsigned char buf[4096];

    setup(&f, "null-co: zeroes, discarded writes, one hole");
    nul = add(&f, "nul", opts("driver", "null-co", "read-zeroes", "false",
                              NULL));
    CHECK(ng_node_length(nul) == (int64_t)(1024 * MiB));
    bb = bb_new(&f, "bb", nul, true);
    fill(buf, sizeof buf, 0, 3);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, sizeof buf, NG_REQ_FUA, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_zero(buf, sizeof buf, 0);
    CHECK(extents(&f, bb, 512, 1024 * MiB - 512, 0, ext, 4) == 1);
    check_extent(&ext[0], 1024 * MiB - 512, HOLE);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 0, MiB, NG_REQ_FAST_ZERO,
                 NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 0, MiB, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    add(&f, "small", opts("driver", "null-co", "size", "64K", NULL));
    CHECK(ng_node_length(ng_graph_find(f.g, "small")) == 64 * KiB);
    teardown(&f);
}

/* ---- file ------------------------------------------------------------- */

/* Direct look at the file: is `off` in a hole? */
static bool
file_hole_at(const char *path, uint64_t off)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t hole;

    CHECK(fd >= 0);
    hole = lseek(fd, (off_t)off, SEEK_HOLE);
    close(fd);
    return hole == (off_t)off;
}

static void
file_pread(const char *path, void *buf, size_t len, uint64_t off)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    CHECK(fd >= 0);
    CHECK(pread(fd, buf, len, (off_t)off) == (ssize_t)len);
    close(fd);
}

/*   bb -> disk (file, 8M sparse temp file)  */
static void
test_file(void)
{
    struct fixture f;
    struct ng_node *disk;
    struct ng_bb *bb;
    struct ng_extent ext[8];
    unsigned char *buf = malloc(2 * MiB), *raw = malloc(MiB);
    char path[512], missing[512];
    uint32_t n;
    int r;

    CHECK(buf != NULL && raw != NULL);
    setup(&f, "file: data, flush, trim, write-zeroes, block status");
    make_file(&f, "disk.img", 8 * MiB, path, sizeof path);
    snprintf(missing, sizeof missing, "%s/missing.img", f.tmpdir);
    add_fails(&f, "nofile", opts("driver", "file", "filename", missing,
                                 NULL), "missing.img");
    add_fails(&f, "native", opts("driver", "file", "filename", path,
                                 "aio", "native", NULL), "aio");
    add_fails(&f, "dir", opts("driver", "file", "filename", f.tmpdir,
                              "read-only", "on", NULL),
              "not a regular file");
    disk = add(&f, "disk", opts("driver", "file", "filename", path,
                                "aio", "threads", NULL));
    CHECK(ng_node_length(disk) == (int64_t)(8 * MiB));
    bb = bb_new(&f, "bb", disk, true);

    /* Sparse file: all hole. */
    CHECK(extents(&f, bb, 0, 8 * MiB, 0, ext, 8) == 1);
    check_extent(&ext[0], 8 * MiB, HOLE);

    /* Data reaches the file. */
    fill(buf, MiB, MiB, 4);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, MiB, MiB, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 3 * MiB + 5, 1000, NG_REQ_FUA,
                 buf + 5), 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    file_pread(path, raw, MiB, MiB);
    check_filled(raw, MiB, MiB, 4);
    memset(buf, 0xaa, 2 * MiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, MiB - 10, MiB + 20, 0, buf), 0);
    check_zero(buf, 10, MiB - 10);
    check_filled(buf + 10, MiB, MiB, 4);
    check_zero(buf + 10 + MiB, 10, 2 * MiB);
    CHECK_RET(io(&f, bb, NG_OP_CACHE, 0, 2 * MiB, 0, NULL), 0);

    /* Block status: hole, data, hole, data (one block at 3M), hole. */
    n = extents(&f, bb, 0, 8 * MiB, 0, ext, 8);
    CHECK(n == 5);
    check_extent(&ext[0], MiB, HOLE);
    check_extent(&ext[1], MiB, DATA);
    CHECK(ext[2].flags == HOLE && ext[3].flags == DATA &&
          ext[4].flags == HOLE);
    CHECK(extents(&f, bb, 0, 8 * MiB, NG_REQ_REQ_ONE, ext, 8) == 1);
    check_extent(&ext[0], MiB, HOLE);
    CHECK(extents(&f, bb, MiB + 4096, 8 * MiB - MiB - 4096, 0, ext, 2)
          == 2);
    check_extent(&ext[0], MiB - 4096, DATA);

    /* Trim punches a hole; reads give zeroes. */
    CHECK_RET(io(&f, bb, NG_OP_TRIM, MiB, 512 * KiB, 0, NULL), 0);
    CHECK(file_hole_at(path, MiB));
    CHECK(extents(&f, bb, MiB, MiB, 0, ext, 8) == 2);
    check_extent(&ext[0], 512 * KiB, HOLE);
    check_extent(&ext[1], 512 * KiB, DATA);
    CHECK_RET(io(&f, bb, NG_OP_READ, MiB, MiB, 0, buf), 0);
    check_zero(buf, 512 * KiB, MiB);
    check_filled(buf + 512 * KiB, 512 * KiB, MiB + 512 * KiB, 4);

    /* Write-zeroes, keeping allocation, then unaligned, then may-trim. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, MiB + 512 * KiB, 128 * KiB, 0,
                 NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, MiB + 700 * KiB + 3, 1000,
                 NG_REQ_FUA, NULL), 0);
    r = io(&f, bb, NG_OP_WRITE_ZEROES, MiB + 896 * KiB, 128 * KiB,
           NG_REQ_MAY_TRIM | NG_REQ_FAST_ZERO, NULL);
    CHECK(r == 0 || r == -ENOTSUP);
    if (r == -ENOTSUP) {
        printf("  fast zero not supported here\n");
        CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, MiB + 896 * KiB,
                     128 * KiB, NG_REQ_MAY_TRIM, NULL), 0);
    }
    CHECK_RET(io(&f, bb, NG_OP_READ, MiB, MiB, 0, buf), 0);
    check_zero(buf, 640 * KiB, MiB);
    check_filled(buf + 640 * KiB, 60 * KiB + 3, MiB + 640 * KiB, 4);
    check_zero(buf + 700 * KiB + 3, 1000, MiB + 700 * KiB + 3);
    check_filled(buf + 700 * KiB + 1003, 196 * KiB - 1003,
                 MiB + 700 * KiB + 1003, 4);
    check_zero(buf + 896 * KiB, 128 * KiB, MiB + 896 * KiB);
    file_pread(path, raw, 128 * KiB, MiB + 896 * KiB);
    check_zero(raw, 128 * KiB, MiB + 896 * KiB);

    /* Locking: a second writer on the same file is refused, whether it
     * is this process or another (OFD locks are per open file); a user
     * that opts out gets in. */
    add_fails(&f, "disk2", opts("driver", "file", "filename", path, NULL),
              "lock");
    add_fails(&f, "disk3", opts("driver", "file", "filename", path,
                                "read-only", "true", NULL), "lock");
    add(&f, "disk4", opts("driver", "file", "filename", path,
                          "locking", "off", NULL));
    teardown(&f);

    /* Once closed, the locks are gone. */
    setup(&f, "file: locks go with the node");
    make_file(&f, "disk.img", MiB, path, sizeof path);
    add(&f, "a", opts("driver", "file", "filename", path,
                      "read-only", "on", NULL));
    add(&f, "b", opts("driver", "file", "filename", path,
                      "read-only", "on", NULL));   /* readers share */
    add_fails(&f, "c", opts("driver", "file", "filename", path, NULL),
              "lock");
    CHECK(ng_graph_del_node(f.g, "a", NULL, NULL, NULL) == 0);
    CHECK(ng_graph_del_node(f.g, "b", NULL, NULL, NULL) == 0);
    add(&f, "c", opts("driver", "file", "filename", path, NULL));
    teardown(&f);
    free(buf);
    free(raw);
}

/* The choke point refuses writes to a read-only node; the driver opened
 * the file O_RDONLY, so even a bug there could not write.
 *
 *   ro-bb -> ro (file, read-only)
 */
static void
test_file_read_only(void)
{
    struct fixture f;
    struct ng_node *ro;
    struct ng_bb *bb;
    struct ng_error err = { 0 };
    unsigned char buf[4096];
    char path[512];
    int r;

    setup(&f, "file: read-only node refuses writes");
    make_file(&f, "ro.img", MiB, path, sizeof path);
    CHECK(chmod(path, 0400) == 0);
    ro = add(&f, "ro", opts("driver", "file", "filename", path,
                            "read-only", "true", NULL));
    CHECK(!(ng_node_caps(ro) & NG_CAP_WRITE));
    CHECK(ng_bb_new(f.g, "rw-bb", ro, true, &err) == NULL);
    printf("  refused as expected: %s\n", err.msg);
    bb = bb_new(&f, "ro-bb", ro, false);
    fill(buf, sizeof buf, 0, 5);
    r = io(&f, bb, NG_OP_WRITE, 0, sizeof buf, 0, buf);
    CHECK(r == -EPERM || r == -EROFS);
    r = io(&f, bb, NG_OP_WRITE_ZEROES, 0, sizeof buf, 0, NULL);
    CHECK(r == -EPERM || r == -EROFS);
    r = io(&f, bb, NG_OP_TRIM, 0, sizeof buf, 0, NULL);
    CHECK(r == -EPERM || r == -EROFS);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_zero(buf, sizeof buf, 0);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    teardown(&f);
}

/*   bb -> dio (file, cache.direct=on, size 1M + 100: unaligned tail)  */
static void
test_file_direct(void)
{
    struct fixture f;
    struct ng_value *o, *cache;
    struct ng_node *dio;
    struct ng_bb *bb;
    struct ng_error err = { 0 };
    const uint64_t size = MiB + 100;
    unsigned char *model = calloc(1, size), *buf = malloc(size + 1);
    char path[512];
    struct stat st;

    CHECK(model != NULL && buf != NULL);
    setup(&f, "file: cache.direct with unaligned requests");
    make_file(&f, "dio.img", size, path, sizeof path);
    o = opts("driver", "file", "filename", path, NULL);
    cache = map_new();
    map_put(cache, "direct", "on");
    map_put_map(o, "cache", cache);
    dio = add_try(&f, "dio", o, &err);
    ng_value_free(o);
    if (dio == NULL && err.code == EINVAL) {
        printf("  SKIP: no O_DIRECT here: %s\n", err.msg);
        teardown(&f);
        free(model);
        free(buf);
        return;
    }
    if (dio == NULL)
        fail("adding node 'dio': %s", err.msg);
    bb = bb_new(&f, "bb", dio, true);

    /* Unaligned offset, length and buffer (buf + 1). */
    fill(model + 1000, 3000, 1000, 6);
    memcpy(buf + 1, model + 1000, 3000);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 1000, 3000, 0, buf + 1), 0);
    /* Aligned range from a misaligned buffer. */
    fill(model + 8192, 8192, 8192, 7);
    memcpy(buf + 1, model + 8192, 8192);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 8192, 8192, 0, buf + 1), 0);
    /* Two unaligned writes inside one block. */
    fill(model + 20001, 10, 20001, 8);
    fill(model + 20100, 10, 20100, 9);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 20001, 10, 0, model + 20001), 0);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 20100, 10, NG_REQ_FUA,
                 model + 20100), 0);
    /* Many at once into one block: read-modify-write must not lose any
     * (they run on several worker threads). */
    for (int round = 0; round < 20; round++) {
        uint64_t offs[8];
        void *bufs[8];

        for (int i = 0; i < 8; i++) {
            offs[i] = 40960 + 7 + (uint64_t)i * 60;
            fill(model + offs[i], 50, offs[i], (unsigned)(round + i));
            bufs[i] = model + offs[i];
        }
        io_parallel_writes(&f, bb, 8, offs, 50, bufs);
        CHECK_RET(io(&f, bb, NG_OP_READ, 40960, 512, 0, buf), 0);
        CHECK(memcmp(buf, model + 40960, 512) == 0);
    }
    /* The unaligned tail of the file, which must not grow. */
    fill(model + size - 300, 300, size - 300, 10);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, size - 300, 300, 0,
                 model + size - 300), 0);
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size);
    /* Unaligned write-zeroes through the fallback or fallocate. */
    memset(model + 1500, 0, 777);
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 1500, 777, 0, NULL), 0);

    memset(buf, 0xaa, size + 1);
    CHECK_RET(io(&f, bb, NG_OP_READ, 777, size - 777, 0, buf + 1), 0);
    CHECK(memcmp(buf + 1, model + 777, size - 777) == 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 0, size, 0, buf), 0);
    CHECK(memcmp(buf, model, size) == 0);
    file_pread(path, buf, size, 0);
    CHECK(memcmp(buf, model, size) == 0);
    teardown(&f);
    free(model);
    free(buf);
}

/* ---- raw ---------------------------------------------------------------- */

/*   raw-bb -> win (raw, offset 64K, size 128K) -> base (memory, 1M)
 *   base-bb -> base
 */
static void
test_raw(void)
{
    struct fixture f;
    struct ng_node *base, *win;
    struct ng_bb *rbb, *bbb;
    struct ng_extent ext[8];
    struct ng_value *o;
    unsigned char buf[8192];

    setup(&f, "raw: offset and size slice the child");
    base = add(&f, "base", opts("driver", "memory", "size", "1M", NULL));
    add_fails(&f, "toobig", opts("driver", "raw", "file", "base",
                                 "offset", "1M", "size", "1", NULL),
              "exceeds the size of child 'base'");
    add_fails(&f, "beyond", opts("driver", "raw", "file", "base",
                                 "offset", "2M", NULL),
              "beyond the end of child 'base'");
    add_fails(&f, "nofile", opts("driver", "raw", NULL),
              "missing required option 'file'");
    win = add(&f, "win", opts("driver", "raw", "file", "base",
                              "offset", "64K", "size", "128K", NULL));
    CHECK(ng_node_length(win) == (int64_t)(128 * KiB));
    CHECK(ng_node_caps(win) == ng_node_caps(base));
    rbb = bb_new(&f, "raw-bb", win, true);
    bbb = bb_new(&f, "base-bb", base, false);

    /* Written at 0 through raw, found at 64K in the child. */
    fill(buf, 4096, 0, 11);
    CHECK_RET(io(&f, rbb, NG_OP_WRITE, 0, 4096, 0, buf), 0);
    memset(buf, 0, sizeof buf);
    CHECK_RET(io(&f, bbb, NG_OP_READ, 64 * KiB, 4096, 0, buf), 0);
    check_filled(buf, 4096, 0, 11);
    CHECK_RET(io(&f, bbb, NG_OP_READ, 60 * KiB, 4096, 0, buf), 0);
    check_zero(buf, 4096, 60 * KiB);
    CHECK_RET(io(&f, rbb, NG_OP_READ, 0, 4096, 0, buf), 0);
    check_filled(buf, 4096, 0, 11);

    /* Extents are relative to the raw node's offset. */
    CHECK(extents(&f, rbb, 0, 128 * KiB, 0, ext, 8) == 2);
    check_extent(&ext[0], 64 * KiB, DATA);
    check_extent(&ext[1], 64 * KiB, HOLE);

    /* Past the window: refused, even though the child is larger. */
    CHECK_RET(io(&f, rbb, NG_OP_WRITE, 128 * KiB - 1024, 4096, 0, buf),
              -ENOSPC);
    CHECK_RET(io(&f, rbb, NG_OP_READ, 128 * KiB, 1, 0, buf), -EINVAL);
    CHECK_RET(io(&f, rbb, NG_OP_TRIM, 0, 4096, 0, NULL), 0);
    CHECK_RET(io(&f, bbb, NG_OP_READ, 64 * KiB, 4096, 0, buf), 0);
    check_zero(buf, 4096, 64 * KiB);
    CHECK_RET(io(&f, rbb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);

    /* Without a size: to the end of the child.  Inline child too. */
    add(&f, "tail", opts("driver", "raw", "file", "base", "offset", "1000",
                         NULL));
    CHECK(ng_node_length(ng_graph_find(f.g, "tail")) ==
          (int64_t)(MiB - 1000));
    o = opts("driver", "raw", NULL);
    map_put_map(o, "file", opts("driver", "null-co", "size", "4M", NULL));
    CHECK(ng_node_length(add(&f, "inl", o)) == (int64_t)(4 * MiB));
    teardown(&f);
}

/* ---- memory with a backing node ----------------------------------------- */

/*   bb -> top (memory, 1M, backing: base)
 *   base-bb -> base (memory, 1M)
 *   bb2 -> top2 (memory, 2M, backing: base): longer than its backing
 */
static void
test_memory_backing(void)
{
    struct fixture f;
    struct ng_node *top;
    struct ng_bb *bb, *base_bb, *bb2;
    struct ng_extent ext[16];
    unsigned char *buf = malloc(2 * MiB);

    CHECK(buf != NULL);
    setup(&f, "memory: backing node");
    add(&f, "base", yaml("{driver: memory, size: 1M}"));
    top = add(&f, "top", yaml("{driver: memory, size: 1M, backing: base}"));
    CHECK(ng_node_child_role(top, NG_ROLE_BACKING) ==
          ng_graph_find(f.g, "base"));
    bb = bb_new(&f, "bb", top, true);
    base_bb = bb_new(&f, "base-bb", ng_graph_find(f.g, "base"), true);
    fill(buf, MiB, 0, 1);
    CHECK_RET(io(&f, base_bb, NG_OP_WRITE, 0, MiB, 0, buf), 0);

    /* Reads come from the backing; the top has nothing of its own. */
    memset(buf, 0, MiB);
    CHECK_RET(io(&f, bb, NG_OP_READ, 100000, 200000, 0, buf), 0);
    check_filled(buf, 200000, 100000, 1);
    CHECK(extents(&f, bb, 0, MiB, 0, ext, 16) == 1);
    check_extent(&ext[0], MiB, DATA);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 1);
    check_extent(&ext[0], MiB, ONLY_HOLE);

    /* A partial write copies its page up first. */
    fill(buf, 10000, 70000, 2);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 70000, 10000, 0, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 64 * KiB, 64 * KiB, 0, buf), 0);
    check_filled(buf, 70000 - 64 * KiB, 64 * KiB, 1);
    check_filled(buf + 70000 - 64 * KiB, 10000, 70000, 2);
    check_filled(buf + 80000 - 64 * KiB, 128 * KiB - 80000, 80000, 1);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 3);
    check_extent(&ext[0], 64 * KiB, ONLY_HOLE);
    check_extent(&ext[1], 64 * KiB, DATA);
    check_extent(&ext[2], MiB - 128 * KiB, ONLY_HOLE);

    /* Zeroing a whole page must not let the backing show through. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 128 * KiB, 64 * KiB,
                 NG_REQ_MAY_TRIM, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_TRIM, 192 * KiB, 64 * KiB, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 128 * KiB, 128 * KiB, 0, buf), 0);
    check_zero(buf, 128 * KiB, 128 * KiB);
    /* Partly zeroing an unallocated page copies it up... */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 270000, 1000, 0, NULL), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, 256 * KiB, 64 * KiB, 0, buf), 0);
    check_filled(buf, 270000 - 256 * KiB, 256 * KiB, 1);
    check_zero(buf + 270000 - 256 * KiB, 1000, 270000);
    check_filled(buf + 271000 - 256 * KiB, 320 * KiB - 271000, 271000, 1);
    /* ... unless that could not be fast. */
    CHECK_RET(io(&f, bb, NG_OP_WRITE_ZEROES, 400000, 1000,
                 NG_REQ_FAST_ZERO, NULL), -ENOTSUP);

    /* Block status: the top's pages, the backing's answer elsewhere.
     * Punch a hole in the backing to see it come through. */
    CHECK_RET(io(&f, base_bb, NG_OP_TRIM, 512 * KiB, 64 * KiB, 0, NULL), 0);
    CHECK(extents(&f, bb, 0, MiB, 0, ext, 16) == 5);
    check_extent(&ext[0], 128 * KiB, DATA);     /* backing, then top */
    check_extent(&ext[1], 128 * KiB, ZERO);     /* zeroed in the top */
    check_extent(&ext[2], 256 * KiB, DATA);     /* top page 4, backing */
    check_extent(&ext[3], 64 * KiB, HOLE);      /* the backing's hole */
    check_extent(&ext[4], 448 * KiB, DATA);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_REQ_ONE, ext, 16) == 1);
    check_extent(&ext[0], 128 * KiB, DATA);
    CHECK(extents(&f, bb, 140000, MiB - 140000, 0, ext, 2) == 2);
    check_extent(&ext[0], 256 * KiB - 140000, ZERO);
    check_extent(&ext[1], 256 * KiB, DATA);
    CHECK(extents(&f, bb, 0, MiB, NG_REQ_LOCAL_ONLY, ext, 16) == 5);
    check_extent(&ext[2], 128 * KiB, ZERO);
    check_extent(&ext[3], 64 * KiB, DATA);
    check_extent(&ext[4], MiB - 320 * KiB, ONLY_HOLE);

    /* Past the backing's end the top reads zeroes. */
    add(&f, "top2", yaml("{driver: memory, size: 2M, backing: base}"));
    bb2 = bb_new(&f, "bb2", ng_graph_find(f.g, "top2"), true);
    memset(buf, 0xaa, 2 * MiB);
    CHECK_RET(io(&f, bb2, NG_OP_READ, MiB - 100, 200, 0, buf), 0);
    check_filled(buf, 100, MiB - 100, 1);
    check_zero(buf + 100, 100, MiB);
    CHECK(extents(&f, bb2, 512 * KiB, 1536 * KiB, 0, ext, 16) == 3);
    check_extent(&ext[0], 64 * KiB, HOLE);
    check_extent(&ext[1], 448 * KiB, DATA);
    check_extent(&ext[2], MiB, HOLE);
    fill(buf, 4096, MiB + 1000, 3);
    CHECK_RET(io(&f, bb2, NG_OP_WRITE, MiB + 1000, 4096, 0, buf), 0);
    CHECK_RET(io(&f, bb2, NG_OP_READ, MiB, 64 * KiB, 0, buf), 0);
    check_zero(buf, 1000, MiB);
    check_filled(buf + 1000, 4096, MiB + 1000, 3);
    check_zero(buf + 5096, 64 * KiB - 5096, MiB + 5096);
    teardown(&f);
    free(buf);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_memory();
    test_memory_backing();
    test_null();
    test_file();
    test_file_read_only();
    test_file_direct();
    test_raw();
    printf("all driver tests passed\n");
    return 0;
}
