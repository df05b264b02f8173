/* graph/qcow2.h: the qcow2 format driver's shared state (drv-qcow2.c the
 * driver and request path, qcow2-meta.c header and table parsing and the
 * open-time load, qcow2-alloc.c cluster allocation and refcounts,
 * qcow2-cache.c metadata I/O: the load at open and the ordered
 * write-back, qcow2-backing.c the backing and data files the header
 * names and the header's rewrite, qcow2-corrupt.c run-time corrupt
 * marking and the overlap check, qcow2-create.c ng_qcow2_create()).
 *
 * Format: QEMU's docs/interop/qcow2.txt.  The L1 and refcount tables
 * are read at open and held in memory; L2 tables and refcount blocks live
 * in two bounded caches (QEMU's l2-cache-size and refcount-cache-size),
 * in their on-disk (big-endian) form.  At open the caches are filled as
 * far as they hold, so an image whose metadata fits never waits for a
 * table; otherwise a request that needs a table that is not in waits for
 * its load (qcow2-cache.c).  Changed tables are marked dirty and written
 * back in dependency order on flush, at close and when the cache needs
 * room.
 */
#ifndef NG_QCOW2_H
#define NG_QCOW2_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

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

/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

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

/* Cache defaults and floors, as QEMU's (block/qcow2.h). */
#define QCOW2_DEFAULT_L2_CACHE_MAX  ((uint64_t)32 << 20)
#define QCOW2_MIN_L2_CACHE          2       /* tables */
#define QCOW2_MIN_REFCOUNT_CACHE    4       /* blocks */

/* What one guest range maps to. */
enum qcow2_kind {
    QCOW2_DATA,             /* host data at `host` (file or data-file) */
    QCOW2_ZERO,             /* reads as zeroes, allocated in this layer */
    QCOW2_UNALLOC,          /* the backing's data, or zeroes */
    QCOW2_COMPRESSED,       /* `host`, `csize` bytes of deflate data */
    QCOW2_UNLOADED,         /* its L2 table is not in the cache: never
                             * the first piece qcow2_map() returns, as
                             * callers load that table first */
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
struct qcow2_load;

/* One table (L2 table or refcount block) of a cache, by index (L1 or
 * refcount table).  A table exists in the image when its L1 or refcount
 * table entry is not 0; it is in memory when `data` is set. */
struct qcow2_slot {
    unsigned char *data;            /* cluster_size bytes, or NULL */
    uint64_t lru;                   /* the cache's tick at the last use */
    uint64_t res_pos;               /* index in res[] while in memory */
    bool dirty;                     /* changed since last written */
    bool writing;                   /* a write-back round writes a copy:
                                     * kept until it is on disk */
    bool loading;                   /* a load is in flight */
};

struct qcow2_cache {
    struct qcow2_slot *slot;        /* n_slots, one per table index */
    uint64_t n_slots;
    uint64_t *res;                  /* indices of the tables in memory */
    uint64_t n_res, cap_res;
    uint64_t cap;                   /* tables kept (more only while the
                                     * extra ones are dirty) */
    uint64_t tick, clean_tick;      /* use counter; its value at the last
                                     * cache-clean-interval pass */
    struct qcow2_load *loads;       /* in flight */
    const char *what;               /* "L2 table", "refcount block" */
};

/* One chain of sub-requests, one at a time: `step` issues the next one
 * (returns true) or finishes (returns false; the owner may be gone
 * then).  Inline completions loop instead of recursing. */
struct qcow2_seq {
    struct ng_req sub;
    bool (*step)(struct qcow2_seq *q);
    int ret;                        /* the last sub-request's */
    uint32_t flags;                 /* what its sub-requests take over
                                     * (NG_REQ_INHERITED) from the
                                     * request they serve: a table load
                                     * a job's bulk copy needs runs on a
                                     * worker, as its data I/O does */
    bool busy, inline_done;
    struct qcow2_seq *wait_next;    /* waiting for a table load */
};

void qcow2_seq_run(struct qcow2_seq *q);
/* Resume q (whose step returned true) with result ret. */
void qcow2_seq_resume(struct qcow2_seq *q, int ret);
/* Submit q->sub, prepared by the caller (ng_req_init and buffer). */
void qcow2_seq_submit_prepared(struct qcow2_seq *q, struct ng_node *to);
/* Prepare q->sub for `op` on [off, off + len) with buffer buf (may be
 * NULL) and q->flags, then submit it to `to`. */
void qcow2_seq_submit(struct qcow2_seq *q, struct ng_node *to, enum ng_op op,
                      uint64_t off, uint64_t len, void *buf);

struct qcow2_state {
    /* Options. */
    struct ng_node *file;           /* "file": the image */
    struct ng_node *backing;        /* "backing": NULL for none */
    bool backing_null;              /* "backing: null": none on purpose */
    struct ng_node *data;           /* "data-file": NULL for none */
    struct ng_node *dfile;          /* where data clusters are: data or
                                     * file */
    struct ng_value *opt_cache_size;        /* "cache-size" etc.: NULL */
    struct ng_value *opt_l2_cache_size;     /* when not given (QEMU's */
    struct ng_value *opt_rc_cache_size;     /* rules tell them apart) */
    int64_t cache_clean_interval;   /* seconds, 0 = never */
    uv_timer_t *clean_timer;

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
    char *data_file_name;           /* from the extension, or NULL */
    bool data_raw;                  /* data_file_raw: the data file is a
                                     * raw image of the disk as well */
    uint64_t data_size;             /* of the data child, bytes */
    bool extl2;                     /* extended L2 entries (subclusters) */
    unsigned l2_entry_size;         /* 8, or 16 with extended L2 */
    uint64_t l2_entries;            /* per table */
    unsigned l2_span_bits;          /* log2 of the guest bytes a table
                                     * maps */
    uint64_t sc_size;               /* subcluster size (= cluster without
                                     * extended L2) */
    uint64_t rb_entries;            /* refcounts per block */
    uint64_t file_size;             /* of the file child, bytes */
    bool writable;

    /* Metadata, on-disk byte order. */
    uint64_t *l1;                   /* l1_size entries */
    uint64_t *reft;                 /* reft_entries entries */
    struct qcow2_cache l2c;         /* L2 tables, by L1 index */
    struct qcow2_cache rbc;         /* refcount blocks, by reft index */
    uint64_t l2_cache_bytes, rc_cache_bytes;    /* the sizes in effect */
    struct qcow2_cache *need_cache; /* after -EAGAIN: the table to load */
    uint64_t need_idx;
    bool l1_dirty, reft_dirty;
    bool header_dirty;              /* refcount table moved */
    bool backing_dirty;             /* the header is to name a new
                                     * backing: flush it first */
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

/* The L2 table or refcount block at idx when in memory, else NULL. */
static inline unsigned char *
qcow2_table(const struct qcow2_cache *c, uint64_t idx)
{
    return idx < c->n_slots ? c->slot[idx].data : NULL;
}

/* ---- qcow2-cache.c, the fast path ---- */

/* Whether table idx can be used now: in memory (then counted as used),
 * or not in the image at all.  Otherwise starts its load (or joins the
 * one in flight), queues q and returns false; q's step then returns true
 * and is resumed with 0 or a negative errno once the load is done. */
bool qcow2_cache_ready(struct qcow2_state *s, struct qcow2_cache *c,
                       uint64_t idx, struct qcow2_seq *q);

/* qcow2_cache_ready() for the L2 table of guest offset off. */
static inline bool
qcow2_l2_ready(struct qcow2_state *s, uint64_t off, struct qcow2_seq *q)
{
    uint64_t l1i = off >> s->l2_span_bits;
    struct qcow2_slot *sl = &s->l2c.slot[l1i];

    if (sl->data != NULL) {
        sl->lru = ++s->l2c.tick;
        return true;
    }
    return qcow2_cache_ready(s, &s->l2c, l1i, q);
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
/* Check the L1 and refcount table entries (tables aligned and inside
 * the file) once both are read. */
int qcow2_check_pointers(struct qcow2_state *s, const char *fname,
                         struct ng_error *err);
/* Check L2 table l1i (t, just read): no invalid entries. */
int qcow2_check_l2(const struct qcow2_state *s, uint64_t l1i,
                   const unsigned char *t, const char *fname,
                   struct ng_error *err);
/* Map [off, off + maxlen) from `off`: the kind of its first piece and
 * how far that piece runs.  The L2 table of off must be usable
 * (qcow2_cache_ready()); the run stops before a table that is not in. */
void qcow2_map(const struct qcow2_state *s, uint64_t off, uint64_t maxlen,
               struct qcow2_map *m);
/* ---- qcow2-alloc.c ---- */

/* Table operations that find a table they need not in memory fail with
 * -EAGAIN before changing anything, and name the table in need_cache and
 * need_idx: the caller loads it (qcow2_cache_ready()) and tries again. */

/* The refcount of a cluster whose block is in memory (0 otherwise). */
uint64_t qcow2_refcount_get(const struct qcow2_state *s, uint64_t cluster);
/* Allocate up to n contiguous host clusters (at least one), refcount 1;
 * returns the first one's offset and the count in *got, or 0 with
 * errno-style *ret on failure. */
uint64_t qcow2_alloc(struct qcow2_state *s, uint64_t n, uint64_t *got,
                     int *ret);
/* The L2 table for guest cluster `gc`, allocating an empty one when
 * needed; NULL with *ret set on failure. */
unsigned char *qcow2_l2_for(struct qcow2_state *s, uint64_t gc, int *ret);
/* The data file must hold [0, end). */
int qcow2_data_grow(struct qcow2_state *s, uint64_t end);
/* Make the L1 table `need` entries long (block_resize), moving it to new
 * clusters when it outgrows its own; the header is to name it (dirty).
 * 0, or a negative errno (-EAGAIN: a refcount block to load). */
int qcow2_grow_l1(struct qcow2_state *s, uint64_t need);
/* Queue a decrement of the clusters under [host, host + len). */
int qcow2_unref(struct qcow2_state *s, uint64_t host, uint64_t len);
/* Decrement the refcount of `cluster` (its block is in memory). */
void qcow2_refcount_dec(struct qcow2_state *s, uint64_t cluster);
/* The first cluster after every cluster in use that refcount block rbi
 * (in memory) counts, or 0 when it counts none. */
uint64_t qcow2_rb_used_end(const struct qcow2_state *s, uint64_t rbi);

/* ---- qcow2-cache.c ---- */

/* Read the header, the L1 and refcount tables and as many L2 tables and
 * refcount blocks as the caches hold, through the file child; calls
 * ng_node_opened() once done. */
void qcow2_load(struct qcow2_state *s);

/* The cache sizes from the options, as QEMU's read_cache_sizes(). */
int qcow2_cache_sizes(struct qcow2_state *s, struct ng_error *err);
int qcow2_cache_init(struct qcow2_state *s, struct qcow2_cache *c,
                     uint64_t n_slots, uint64_t bytes, const char *what);
void qcow2_cache_free(struct qcow2_cache *c);
/* Put a new table (zeroes, dirty) in memory at idx; NULL on ENOMEM. */
unsigned char *qcow2_cache_new(struct qcow2_state *s, struct qcow2_cache *c,
                               uint64_t idx);
/* Keep at most c->cap clean tables; start a write-back round when only
 * dirty ones could make room. */
void qcow2_cache_trim(struct qcow2_state *s, struct qcow2_cache *c);
/* Drop the clean tables not used since the last call. */
void qcow2_cache_clean(struct qcow2_state *s, struct qcow2_cache *c);
/* The cache-clean-interval timer: started once open, stopped at close
 * or when open fails. */
int qcow2_clean_timer_start(struct qcow2_state *s);
void qcow2_clean_timer_stop(struct qcow2_state *s);

int qcow2_wb_init(struct qcow2_state *s);
void qcow2_wb_free(struct qcow2_state *s);
/* Write back all dirty metadata in order, then flush the file; cb runs
 * once (maybe inline) with 0 or a negative errno.  Rounds run one at a
 * time; a call during a round waits for the next.  `flags`: of the
 * request that waits (NG_REQ_BACKGROUND: none a client waits for); a
 * round only such requests wait for, or none (a full cache's), runs its
 * I/O as background requests, on workers. */
void qcow2_wb_flush(struct qcow2_state *s, uint32_t flags,
                    void (*cb)(void *opaque, int ret), void *opaque);
bool qcow2_wb_dirty(const struct qcow2_state *s);
/* A round is under way (one a full cache started, maybe). */
bool qcow2_wb_running(const struct qcow2_state *s);
/* Start a write-back round with no waiter (or one more after the
 * current one). */
void qcow2_wb_kick(struct qcow2_state *s);

#endif
