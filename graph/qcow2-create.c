/* graph/qcow2-create.c: ng_qcow2_create(), an empty qcow2 v3 image (for
 * blockdev-snapshot-sync's new overlay).
 *
 * Layout: cluster 0 the header (with the backing format extension and
 * the backing file name), cluster 1 the refcount table, cluster 2 its
 * one refcount block (16-bit), then the L1 table.  Every L1 entry is
 * empty, so the image reads as its backing file, or zeroes.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/drivers.h"
#include "graph/qcow2.h"

#define CREATE_HEADER_LEN 112       /* v3 with the compression type */

static void
put32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void
put64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

/* The header cluster; false when the names do not fit in it. */
static bool
build_header(unsigned char *h, uint64_t cs, unsigned bits, uint64_t size,
             uint64_t l1_size, const char *backing, const char *fmt)
{
    size_t off = CREATE_HEADER_LEN;
    size_t blen = backing ? strlen(backing) : 0;
    size_t flen = fmt ? strlen(fmt) : 0;

    put32(h, QCOW2_MAGIC);
    put32(h + 4, 3);
    put32(h + 20, bits);
    put64(h + 24, size);
    put32(h + 36, (uint32_t)l1_size);
    put64(h + 40, 3 * cs);                  /* L1 */
    put64(h + 48, cs);                      /* refcount table */
    put32(h + 56, 1);
    put32(h + 96, 4);                       /* 16-bit refcounts */
    put32(h + 100, CREATE_HEADER_LEN);
    if (fmt != NULL) {
        if (off + 8 + ((flen + 7) & ~(size_t)7) > cs)
            return false;
        put32(h + off, QCOW2_EXT_BACKING_FMT);
        put32(h + off + 4, (uint32_t)flen);
        memcpy(h + off + 8, fmt, flen);
        off += 8 + ((flen + 7) & ~(size_t)7);
    }
    off += 8;                               /* end of extensions */
    if (backing != NULL) {
        if (blen == 0 || blen > 1023 || off + blen > cs)
            return false;
        put64(h + 8, off);
        put32(h + 16, (uint32_t)blen);
        memcpy(h + off, backing, blen);
    }
    return true;
}

int
ng_qcow2_create(const char *path, uint64_t size, uint64_t cluster_size,
                const char *backing_file, const char *backing_fmt,
                struct ng_error *err)
{
    unsigned bits = 0;
    uint64_t cs = cluster_size, l2_span, l1_size, l1_clusters, total;
    unsigned char *buf;
    ssize_t n = 0;
    int fd, r = 0;

    while (bits < 64 && ((uint64_t)1 << bits) < cs)
        bits++;
    if (((uint64_t)1 << bits) != cs || bits < QCOW2_MIN_CLUSTER_BITS ||
        bits > QCOW2_MAX_CLUSTER_BITS)
        return ng_error_set(err, EINVAL, "cluster size %" PRIu64 " must be "
                            "a power of two from 512 to 2M", cs);
    l2_span = cs / 8 * cs;
    l1_size = size / l2_span + (size % l2_span != 0);
    l1_clusters = l1_size * 8 / cs + (l1_size * 8 % cs != 0);
    if (l1_clusters == 0)
        l1_clusters = 1;
    total = 3 + l1_clusters;
    /* One refcount block (cs / 2 entries) covers the whole image. */
    if (total > cs / 2 || size > ((uint64_t)1 << 56))
        return ng_error_set(err, EFBIG, "a %" PRIu64 "-byte image is too "
                            "large for %" PRIu64 "-byte clusters", size, cs);
    if ((buf = calloc(total, cs)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    if (!build_header(buf, cs, bits, size, l1_size, backing_file,
                      backing_fmt)) {
        free(buf);
        return ng_error_set(err, EINVAL, "the backing file name or format "
                            "does not fit in the header");
    }
    put64(buf + cs, 2 * cs);                /* refcount table -> block */
    for (uint64_t c = 0; c < total; c++) {
        uint16_t one = htobe16(1);

        memcpy(buf + 2 * cs + c * 2, &one, 2);
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        r = ng_error_set(err, errno, "cannot create '%s': %s", path,
                         strerror(errno));
    else if ((n = pwrite(fd, buf, total * cs, 0)) != (ssize_t)(total * cs) ||
             fsync(fd) < 0)
        r = ng_error_set(err, n >= 0 && n < (ssize_t)(total * cs) ? EIO
                         : errno, "cannot write '%s': %s", path,
                         strerror(n >= 0 && n < (ssize_t)(total * cs) ? EIO
                                  : errno));
    if (fd >= 0 && close(fd) < 0 && r == 0)
        r = ng_error_set(err, errno, "cannot write '%s': %s", path,
                         strerror(errno));
    free(buf);
    return r;
}
