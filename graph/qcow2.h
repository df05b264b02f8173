/* graph/qcow2.h: the qcow2 format driver's shared state (drv-qcow2.c the
 * driver and request path, qcow2-meta.c header and table parsing and the
 * open-time load, qcow2-alloc.c cluster allocation and refcounts,
 * qcow2-cache.c metadata I/O: the load at open and the ordered
 * write-back, qcow2-backing.c the backing file the header names,
 * qcow2-create.c ng_qcow2_create()).
 *
 * Format: QEMU's docs/interop/qcow2.txt.  All metadata (L1, every L2
 * table, the refcount table and every refcount block) is read at open and
 * held in memory in its on-disk (big-endian) form, so mapping a guest
 * offset never waits; changed tables are marked dirty and written back
 * in dependency order on flush and at close (qcow2-cache.c).
 */
#ifndef NG_QCOW2_H
#define NG_QCOW2_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>

#include "graph/graph.h"

#define QCOW2_MAGIC             0x514649fbu     /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LEN     72
#define QCOW2_V3_HEADER_LEN     104
#define QCOW2_MIN_CLUSTER_BITS  9
#define QCOW2_MAX_CLUSTER_BITS  21

/* Header extensions we read. */
#define QCOW2_EXT_END           0x00000000u
#define QCOW2_EXT_BACKING_FMT   0xe2792acau
#define QCOW2_EXT_FEATURES      0x6803f857u
#define QCOW2_EXT_DATA_FILE     0x44415441u

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY     (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT   (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESS  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2     (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN     ((1ull << 5) - 1)

/* Table entry bits. */
#define QCOW2_OFLAG_COPIED      (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED  (1ull << 62)
#define QCOW2_OFLAG_ZERO        (1ull << 0)
#define QCOW2_OFFSET_MASK       0x00fffffffffffe00ull   /* bits 9-55 */
#define QCOW2_REFT_OFFSET_MASK  0xfffffffffffffe00ull   /* bits 9-63 */

/* Bounds, as QEMU's: what a sane image never exceeds and what keeps the
 * in-memory metadata bounded. */
#define QCOW2_MAX_L1_BYTES      ((uint64_t)32 << 20)
#define QCOW2_MAX_REFT_BYTES    ((uint64_t)8 << 20)
#define QCOW2_MAX_META_BYTES    ((uint64_t)1 << 30)     /* L2 + refblocks */

/* What one guest range maps to. */
enum qcow2_kind {
    QCOW2_DATA,             /* host data at `host` (file or data-file) */
    QCOW2_ZERO,             /* reads as zeroes, allocated in this layer */
    QCOW2_UNALLOC,          /* the backing's data, or zeroes */
    QCOW2_COMPRESSED,       /* `host`, `csize` bytes of deflate data */
};

struct qcow2_map {
    enum qcow2_kind kind;
    uint64_t host;          /* DATA: host offset of the range's start;
                             * COMPRESSED: of the compressed data */
    uint64_t csize;         /* COMPRESSED: bytes to read (upper bound) */
    uint64_t len;           /* bytes of the run, all of this kind */
};

/* A pending refcount decrement: applied only once the tables that no
 * longer reference the cluster are on disk (qcow2-cache.c). */
struct qcow2_unref {
    uint64_t host;
    uint64_t len;
};

struct qcow2_wb;
struct qcow2_io;

/* One chain of sub-requests, one at a time: `step` issues the next one
 * (returns true) or finishes (returns false; the owner may be gone
 * then).  Inline completions loop instead of recursing. */
struct qcow2_seq {
    struct ng_req sub;
    bool (*step)(struct qcow2_seq *q);
    int ret;                        /* the last sub-request's */
    bool busy, inline_done;
};

void qcow2_seq_run(struct qcow2_seq *q);
/* Submit q->sub, prepared by the caller (ng_req_init and buffer). */
void qcow2_seq_submit_prepared(struct qcow2_seq *q, struct ng_node *to);
/* Prepare q->sub for `op` on [off, off + len) with buffer buf (may be
 * NULL), then submit it to `to`. */
void qcow2_seq_submit(struct qcow2_seq *q, struct ng_node *to, enum ng_op op,
                      uint64_t off, uint64_t len, void *buf);

struct qcow2_state {
    /* Options. */
    struct ng_node *file;           /* "file": the image */
    struct ng_node *backing;        /* "backing": NULL for none */
    bool backing_null;              /* "backing: null": none on purpose */

    struct ng_node *node;
    struct ng_error *open_err;      /* open_async's, until it finishes */

    /* Header. */
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint64_t size;                  /* virtual size */
    uint64_t incompat, compat, autoclear;
    uint32_t refcount_order;
    uint32_t header_len;
    uint64_t l1_offset;
    uint32_t l1_size;               /* entries */
    uint64_t reft_offset;
    uint64_t reft_entries;
    uint32_t nb_snapshots;          /* internal snapshots */
    char *backing_name;             /* from the header, or NULL */
    char *backing_fmt;              /* from the extension, or NULL */
    bool extl2;                     /* extended L2 entries (subclusters) */
    unsigned l2_entry_size;         /* 8, or 16 with extended L2 */
    uint64_t l2_entries;            /* per table */
    uint64_t sc_size;               /* subcluster size (= cluster without
                                     * extended L2) */
    uint64_t rb_entries;            /* refcounts per block */
    uint64_t file_size;             /* of the file child, bytes */
    bool writable;

    /* Metadata, on-disk byte order. */
    uint64_t *l1;                   /* l1_size entries */
    unsigned char **l2;             /* l1_size tables, NULL = none */
    uint64_t *reft;                 /* reft_entries entries */
    unsigned char **rb;             /* reft_entries blocks, NULL = none */
    bool *l2_dirty, *rb_dirty;
    bool l1_dirty, reft_dirty;
    bool header_dirty;              /* refcount table moved */
    struct qcow2_unref *unrefs;     /* pending decrements */
    size_t n_unrefs, cap_unrefs;
    uint64_t alloc_next;            /* first host cluster index free for
                                     * allocation: allocation appends, so a
                                     * cluster freed in this session is not
                                     * reused before its freeing is on
                                     * disk */
    bool corrupt;                   /* found inconsistent: no more writes */

    /* The header as read at open, to write it again with another
     * backing name or feature bits (qcow2-backing.c). */
    unsigned char *hdr_raw;         /* its first header_len bytes */
    unsigned char *hdr_exts;        /* extensions we keep as they are */
    size_t hdr_exts_len;
    size_t hdr_end;                 /* bytes in use (extensions, name) */
    unsigned hdr_writes;            /* header updates under way */

    /* Requests that change the mapping hold a range of guest clusters;
     * others overlapping it wait (drv-qcow2.c). */
    struct qcow2_io *locked;        /* holders */
    struct qcow2_io *waiting;       /* waiters, in arrival order */
    struct qcow2_wb *wb;            /* write-back machine (qcow2-cache.c) */
    unsigned char *zero_buf;        /* cluster_size zeroes */
};

/* Big-endian table access. */
static inline uint64_t
qcow2_get64(const void *table, uint64_t i)
{
    uint64_t v;

    memcpy(&v, (const unsigned char *)table + i * 8, 8);
    return be64toh(v);
}

static inline void
qcow2_set64(void *table, uint64_t i, uint64_t v)
{
    v = htobe64(v);
    memcpy((unsigned char *)table + i * 8, &v, 8);
}

/* ---- drv-qcow2.c ---- */

/* Checks once the tables are in (before ng_node_opened). */
int qcow2_open_finish(struct qcow2_state *s, struct ng_error *err);
/* Free what open made (after a failed open, or at close). */
void qcow2_free_state(struct qcow2_state *s);

/* ---- qcow2-backing.c ---- */

/* The driver's expand_opts hook: without a `backing` option, the
 * backing file the header names as an inline child. */
int qcow2_expand_opts(struct ng_graph *g, const struct ng_value *opts,
                      unsigned depth, struct ng_value **out,
                      struct ng_error *err);
/* Keep what qcow2_header_build() needs of the first cluster (len bytes,
 * parsed and checked). */
void qcow2_header_keep(struct qcow2_state *s, const unsigned char *buf,
                       size_t len);
/* The header as it should be on disk now (backing name and format,
 * refcount table, feature bits), the rest as read at open: *out
 * (malloc'd, *len bytes from offset 0).  0, or a negative errno. */
int qcow2_header_build(const struct qcow2_state *s, unsigned char **out,
                       size_t *len);
/* Write the header back (qcow2_wb_flush() with it dirty), no waiting. */
void qcow2_header_update(struct qcow2_state *s);
/* The driver's set_backing hook: the header names the new backing. */
int qcow2_set_backing(struct ng_node *node, struct ng_node *backing,
                      struct ng_error *err);

/* ---- qcow2-corrupt.c ---- */

/* What of the metadata [off, off + len) of the file overlaps ("the L1
 * table", ...), or NULL: data must not be written there. */
const char *qcow2_meta_overlap(const struct qcow2_state *s, uint64_t off,
                               uint64_t len);
/* Metadata that cannot be right, found by I/O: mark the image corrupt
 * (header bit written back on a writable v3 image), refuse writes from
 * now on, log once, emit BLOCK_IMAGE_CORRUPTED (offset < 0: unknown).
 * The caller fails its request with -EIO. */
void qcow2_signal_corruption(struct qcow2_state *s, int64_t offset,
                             int64_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- qcow2-meta.c ---- */

/* Parse the header in buf (len bytes read from offset 0); fills s or
 * fails with a message naming `fname`.  `first` is true when only the
 * first 512 bytes were read, to learn the cluster size. */
int qcow2_parse_header(struct qcow2_state *s, const unsigned char *buf,
                       size_t len, const char *fname, struct ng_error *err);
/* Check the loaded tables (offsets aligned and inside the file, no
 * invalid entries) once everything is read. */
int qcow2_check_tables(struct qcow2_state *s, const char *fname,
                       struct ng_error *err);
/* Map [off, off + maxlen) from `off`: the kind of its first piece and
 * how far that piece runs. */
void qcow2_map(const struct qcow2_state *s, uint64_t off, uint64_t maxlen,
               struct qcow2_map *m);
/* ---- qcow2-alloc.c ---- */

uint64_t qcow2_refcount_get(const struct qcow2_state *s, uint64_t cluster);
/* Allocate up to n contiguous host clusters (at least one), refcount 1;
 * returns the first one's offset and the count in *got, or 0 with
 * errno-style *ret on failure. */
uint64_t qcow2_alloc(struct qcow2_state *s, uint64_t n, uint64_t *got,
                     int *ret);
/* The L2 table for guest cluster `gc`, allocating an empty one when
 * needed; NULL with *ret set on failure. */
unsigned char *qcow2_l2_for(struct qcow2_state *s, uint64_t gc, int *ret);
/* Queue a decrement of the clusters under [host, host + len). */
int qcow2_unref(struct qcow2_state *s, uint64_t host, uint64_t len);
/* Apply the queued decrements to the in-memory refcounts. */
void qcow2_unref_apply(struct qcow2_state *s, struct qcow2_unref *u,
                       size_t n);
/* The first host cluster after every cluster in use. */
uint64_t qcow2_used_end(const struct qcow2_state *s);

/* ---- qcow2-cache.c ---- */

/* Read the header and every table through the file child; calls
 * ng_node_opened() once done. */
void qcow2_load(struct qcow2_state *s);

int qcow2_wb_init(struct qcow2_state *s);
void qcow2_wb_free(struct qcow2_state *s);
/* Write back all dirty metadata in order, then flush the file; cb runs
 * once (maybe inline) with 0 or a negative errno.  Rounds run one at a
 * time; a call during a round waits for the next. */
void qcow2_wb_flush(struct qcow2_state *s, void (*cb)(void *opaque, int ret),
                    void *opaque);
bool qcow2_wb_dirty(const struct qcow2_state *s);

#endif
