/* graph/qcow2-meta.c: the qcow2 header and tables: parsing, the checks
 * that refuse a bad image at open (or a bad table when it is loaded)
 * with the file name and what is wrong, and the mapping of guest offsets
 * (see graph/qcow2.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/qcow2.h"

static uint32_t
get32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t
get64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return be64toh(v);
}

static char *
dup_bytes(const unsigned char *p, size_t n)
{
    char *s = malloc(n + 1);

    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* The header extensions from `off` to the end of the first cluster. */
static int
parse_extensions(struct qcow2_state *s, const unsigned char *buf, size_t len,
                 size_t off, const char *fname, struct ng_error *err)
{
    while (off + 8 <= len) {
        uint32_t type = get32(buf + off), elen = get32(buf + off + 4);

        off += 8;
        if (type == QCOW2_EXT_END)
            return 0;
        if (elen > len - off)
            return ng_error_set(err, EINVAL, "'%s': qcow2 header extension "
                                "0x%08x runs past the first cluster",
                                fname, type);
        if (type == QCOW2_EXT_BACKING_FMT && s->backing_fmt == NULL &&
            (s->backing_fmt = dup_bytes(buf + off, elen)) == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
        if (type == QCOW2_EXT_DATA_FILE && s->data_file_name == NULL &&
            (s->data_file_name = dup_bytes(buf + off, elen)) == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
        off += ((uint64_t)elen + 7) & ~(uint64_t)7;
    }
    return ng_error_set(err, EINVAL, "'%s': qcow2 header extensions are not "
                        "terminated", fname);
}

/* Features we cannot serve, and the bits QEMU refuses a writer for. */
static int
check_features(struct qcow2_state *s, const char *fname, struct ng_error *err)
{
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;

    if (unknown != 0)
        return ng_error_set(err, ENOTSUP, "'%s': unsupported qcow2 "
                            "incompatible feature bits 0x%" PRIx64, fname,
                            unknown);
    if (s->incompat & QCOW2_INCOMPAT_COMPRESS)
        return ng_error_set(err, ENOTSUP, "'%s': only zlib compression is "
                            "supported", fname);
    if (!s->writable)
        return 0;
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
        return ng_error_set(err, EROFS, "'%s': the image is marked corrupt; "
                            "open it read-only, or repair it with "
                            "'qemu-img check -r all'", fname);
    if (s->incompat & QCOW2_INCOMPAT_DIRTY)
        return ng_error_set(err, EROFS, "'%s': the image is dirty (lazy "
                            "refcounts, not written back); open it "
                            "read-only, or repair it with 'qemu-img check "
                            "-r all'", fname);
    if (s->extl2)
        return ng_error_set(err, EROFS, "'%s': images with extended L2 "
                            "entries are supported read-only", fname);
    return 0;
}

/* Offsets and sizes of the tables, against the file's size. */
static int
check_geometry(struct qcow2_state *s, const char *fname, struct ng_error *err)
{
    uint64_t need_l1, l2_span, reft_bytes;

    s->l2_entry_size = s->extl2 ? 16 : 8;
    s->l2_entries = s->cluster_size / s->l2_entry_size;
    s->l2_span_bits = s->cluster_bits * 2 - (s->extl2 ? 4 : 3);
    s->sc_size = s->extl2 ? s->cluster_size / 32 : s->cluster_size;
    l2_span = s->l2_entries * s->cluster_size;
    need_l1 = s->size / l2_span + (s->size % l2_span != 0);
    if (s->size > ((uint64_t)1 << 56))
        return ng_error_set(err, EFBIG, "'%s': virtual size %" PRIu64
                            " is too large", fname, s->size);
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return ng_error_set(err, EFBIG, "'%s': L1 table of %" PRIu32
                            " entries is too large", fname, s->l1_size);
    if (s->l1_size < need_l1)
        return ng_error_set(err, EINVAL, "'%s': L1 table of %" PRIu32
                            " entries is too small for virtual size %"
                            PRIu64, fname, s->l1_size, s->size);
    if (s->l1_size > 0 && ((s->l1_offset & (s->cluster_size - 1)) != 0 ||
                           s->l1_offset > s->file_size ||
                           (uint64_t)s->l1_size * 8 >
                           s->file_size - s->l1_offset))
        return ng_error_set(err, EINVAL, "'%s': L1 table at %" PRIu64
                            " is unaligned or past the end of the file "
                            "(%" PRIu64 " bytes)", fname, s->l1_offset,
                            s->file_size);
    reft_bytes = s->reft_entries * 8;
    if (reft_bytes == 0 || reft_bytes > QCOW2_MAX_REFT_BYTES)
        return ng_error_set(err, EINVAL, "'%s': bad refcount table size "
                            "(%" PRIu64 " bytes)", fname, reft_bytes);
    if ((s->reft_offset & (s->cluster_size - 1)) != 0 ||
        s->reft_offset > s->file_size ||
        reft_bytes > s->file_size - s->reft_offset)
        return ng_error_set(err, EINVAL, "'%s': refcount table at %" PRIu64
                            " is unaligned or past the end of the file "
                            "(%" PRIu64 " bytes)", fname, s->reft_offset,
                            s->file_size);
    s->rb_entries = s->cluster_size * 8 >> s->refcount_order;
    return 0;
}

int
qcow2_parse_header(struct qcow2_state *s, const unsigned char *buf,
                   size_t len, const char *fname, struct ng_error *err)
{
    uint64_t backing_off;
    uint32_t backing_len;

    if (len < QCOW2_V2_HEADER_LEN || get32(buf) != QCOW2_MAGIC)
        return ng_error_set(err, EINVAL, "'%s' is not a qcow2 image (bad "
                            "magic)", fname);
    s->version = get32(buf + 4);
    if (s->version != 2 && s->version != 3)
        return ng_error_set(err, ENOTSUP, "'%s': unsupported qcow2 version "
                            "%" PRIu32, fname, s->version);
    s->cluster_bits = get32(buf + 20);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        s->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return ng_error_set(err, EINVAL, "'%s': bad cluster size 2^%"
                            PRIu32 " (512 B to 2 MiB)", fname,
                            s->cluster_bits);
    s->cluster_size = (uint64_t)1 << s->cluster_bits;
    if (get32(buf + 32) != 0)
        return ng_error_set(err, ENOTSUP, "'%s': encrypted qcow2 images "
                            "are not supported", fname);
    backing_off = get64(buf + 8);
    backing_len = get32(buf + 16);
    s->size = get64(buf + 24);
    s->l1_size = get32(buf + 36);
    s->l1_offset = get64(buf + 40);
    s->reft_offset = get64(buf + 48);
    s->reft_entries = (uint64_t)get32(buf + 56) * s->cluster_size / 8;
    s->nb_snapshots = get32(buf + 60);
    s->refcount_order = 4;
    s->header_len = QCOW2_V2_HEADER_LEN;
    if (s->version == 3) {
        if (len < QCOW2_V3_HEADER_LEN)
            return ng_error_set(err, EINVAL, "'%s': truncated qcow2 "
                                "header", fname);
        s->incompat = get64(buf + 72);
        s->compat = get64(buf + 80);
        s->autoclear = get64(buf + 88);
        s->refcount_order = get32(buf + 96);
        s->header_len = get32(buf + 100);
        if (s->refcount_order > 6)
            return ng_error_set(err, EINVAL, "'%s': bad refcount order %"
                                PRIu32, fname, s->refcount_order);
        if (s->header_len < QCOW2_V3_HEADER_LEN || s->header_len > len)
            return ng_error_set(err, EINVAL, "'%s': bad qcow2 header "
                                "length %" PRIu32, fname, s->header_len);
        if (s->header_len > 104 && buf[104] != 0)
            return ng_error_set(err, ENOTSUP, "'%s': only zlib compression "
                                "is supported", fname);
    }
    s->extl2 = (s->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
    s->data_raw = (s->incompat & QCOW2_INCOMPAT_DATA_FILE) &&
                  (s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
    if (len < s->cluster_size && len < s->file_size)
        return 0;                   /* the caller reads the whole cluster */
    if (check_features(s, fname, err) < 0 ||
        parse_extensions(s, buf, len, s->header_len, fname, err) < 0 ||
        check_geometry(s, fname, err) < 0)
        return -1;
    if (backing_off != 0) {
        if (backing_len == 0 || backing_len > 1023 || backing_off > len ||
            backing_len > len - backing_off)
            return ng_error_set(err, EINVAL, "'%s': bad backing file name "
                                "in the header", fname);
        s->backing_name = dup_bytes(buf + backing_off, backing_len);
        if (s->backing_name == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
    }
    qcow2_header_keep(s, buf, len < s->cluster_size ? len : s->cluster_size);
    return 0;
}

/* ---- Table checks ------------------------------------------------------- */

/* A host cluster offset from a table: aligned, inside the file. */
static bool
host_ok(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
    return (off & (s->cluster_size - 1)) == 0 && off <= s->file_size &&
           len <= s->file_size - off;
}

int
qcow2_check_l2(const struct qcow2_state *s, uint64_t i,
               const unsigned char *t, const char *fname,
               struct ng_error *err)
{
    uint64_t per = s->l2_entry_size / 8;

    for (uint64_t j = 0; j < s->l2_entries; j++) {
        uint64_t e = qcow2_get64(t, j * per);
        uint64_t guest = (i * s->l2_entries + j) * s->cluster_size;
        uint64_t host = e & QCOW2_OFFSET_MASK;

        if (e & QCOW2_OFLAG_COMPRESSED) {
            uint64_t x = 62 - (s->cluster_bits - 8);
            uint64_t coff = e & (((uint64_t)1 << x) - 1);

            if (s->data != NULL)
                return ng_error_set(err, EINVAL, "'%s': compressed cluster "
                                    "for guest offset %" PRIu64 " in an "
                                    "image with an external data file",
                                    fname, guest);
            if (coff >= s->file_size)
                return ng_error_set(err, EINVAL, "'%s': compressed cluster "
                                    "for guest offset %" PRIu64 " lies "
                                    "past the end of the file", fname,
                                    guest);
            continue;
        }
        if (s->extl2) {
            uint64_t bm = qcow2_get64(t, j * 2 + 1);

            if ((bm & (bm >> 32) & 0xffffffffu) != 0 ||
                (host == 0 && (bm & 0xffffffffu) != 0))
                return ng_error_set(err, EINVAL, "'%s': bad subcluster "
                                    "bitmap for guest offset %" PRIu64,
                                    fname, guest);
        }
        if (s->data != NULL) {
            /* The guest bytes of the cluster must lie in the data file. */
            uint64_t need = s->size - guest < s->cluster_size
                            ? s->size - guest : s->cluster_size;
            bool data = host != 0 || (e & QCOW2_OFLAG_COPIED) ||
                        (s->extl2 && (qcow2_get64(t, j * 2 + 1) &
                                      0xffffffffu));

            if (data && ((host & (s->cluster_size - 1)) != 0 ||
                         host > s->data_size ||
                         need > s->data_size - host))
                return ng_error_set(err, EINVAL, "'%s': L2 entry for guest "
                                    "offset %" PRIu64 " points to %" PRIu64
                                    ", unaligned or past the end of the "
                                    "data file (%" PRIu64 " bytes)", fname,
                                    guest, host, s->data_size);
            continue;
        }
        if (host != 0 && !host_ok(s, host, s->cluster_size) &&
            !host_ok(s, host, s->file_size - host))
            return ng_error_set(err, EINVAL, "'%s': L2 entry for guest "
                                "offset %" PRIu64 " points to %" PRIu64
                                ", unaligned or past the end of the file "
                                "(%" PRIu64 " bytes)", fname, guest, host,
                                s->file_size);
    }
    return 0;
}

int
qcow2_check_pointers(struct qcow2_state *s, const char *fname,
                     struct ng_error *err)
{
    for (uint64_t i = 0; i < s->l1_size; i++) {
        uint64_t off = be64toh(s->l1[i]) & QCOW2_OFFSET_MASK;

        if (off != 0 && !host_ok(s, off, s->cluster_size))
            return ng_error_set(err, EINVAL, "'%s': L2 table at %" PRIu64
                                " is unaligned or past the end of the file "
                                "(%" PRIu64 " bytes)", fname, off,
                                s->file_size);
    }
    for (uint64_t i = 0; i < s->reft_entries; i++) {
        uint64_t off = be64toh(s->reft[i]) & QCOW2_REFT_OFFSET_MASK;

        if (off != 0 && !host_ok(s, off, s->cluster_size))
            return ng_error_set(err, EINVAL, "'%s': refcount block at %"
                                PRIu64 " is unaligned or past the end of "
                                "the file (%" PRIu64 " bytes)", fname, off,
                                s->file_size);
    }
    return 0;
}

/* ---- Mapping ------------------------------------------------------------ */

/* The piece of guest cluster `gc` at `in` bytes into it: kind, host of
 * that byte, and bytes of the same kind left in the cluster. */
static void
map_cluster(const struct qcow2_state *s, uint64_t gc, uint64_t in,
            struct qcow2_map *m)
{
    uint64_t l1i = gc / s->l2_entries;
    const unsigned char *t = s->l2c.slot[l1i].data;     /* l1i < l1_size */
    uint64_t j = gc % s->l2_entries, e, host, bm;

    m->len = s->cluster_size - in;
    m->host = 0;
    if (t == NULL) {                /* the whole table's span at once */
        m->kind = (be64toh(s->l1[l1i]) & QCOW2_OFFSET_MASK) != 0
                  ? QCOW2_UNLOADED : QCOW2_UNALLOC;
        m->len += (s->l2_entries - 1 - j) << s->cluster_bits;
        return;
    }
    e = qcow2_get64(t, j * (s->l2_entry_size / 8));
    if (e & QCOW2_OFLAG_COMPRESSED) {
        uint64_t x = 62 - (s->cluster_bits - 8);
        uint64_t nsect = (e & ~QCOW2_OFLAG_COPIED & ~QCOW2_OFLAG_COMPRESSED)
                         >> x;

        m->kind = QCOW2_COMPRESSED;
        m->host = e & (((uint64_t)1 << x) - 1);
        m->csize = (nsect + 1) * 512 - (m->host & 511);
        return;
    }
    host = e & QCOW2_OFFSET_MASK;
    if (!s->extl2) {
        /* In a data file 0 is an offset like any other: the copied flag
         * tells data apart (its clusters all have refcount 1), as QEMU. */
        bool data = host != 0 || (s->data != NULL &&
                                  (e & QCOW2_OFLAG_COPIED));

        m->kind = (e & QCOW2_OFLAG_ZERO) && s->version >= 3 ? QCOW2_ZERO :
                  data ? QCOW2_DATA : QCOW2_UNALLOC;
        m->host = host + in;
        return;
    }
    /* Subclusters: run while the status stays the same. */
    bm = qcow2_get64(t, j * 2 + 1);
    {
        unsigned sc = (unsigned)(in / s->sc_size), k;
        unsigned st = ((bm >> sc) & 1) | ((bm >> (32 + sc)) & 1) << 1;

        for (k = sc + 1; k < 32; k++)
            if ((((bm >> k) & 1) | ((bm >> (32 + k)) & 1) << 1) != st)
                break;
        m->len = (uint64_t)k * s->sc_size - in;
        m->kind = st & 1 ? QCOW2_DATA : st & 2 ? QCOW2_ZERO : QCOW2_UNALLOC;
        m->host = host + in;
    }
}

void
qcow2_map(const struct qcow2_state *s, uint64_t off, uint64_t maxlen,
          struct qcow2_map *m)
{
    struct qcow2_map next;
    uint64_t gc = off >> s->cluster_bits;
    uint64_t in = off & (s->cluster_size - 1);

    map_cluster(s, gc, in, m);
    /* Merge following clusters of the same kind (and contiguous host
     * data); compressed clusters go one at a time. */
    while (m->len < maxlen && m->kind != QCOW2_COMPRESSED &&
           (m->len + in) % s->cluster_size == 0) {
        map_cluster(s, (off + m->len) >> s->cluster_bits, 0, &next);
        if (next.kind != m->kind ||
            (m->kind == QCOW2_DATA && next.host != m->host + m->len))
            break;
        m->len += next.len;
    }
    if (m->len > maxlen)
        m->len = maxlen;
}
