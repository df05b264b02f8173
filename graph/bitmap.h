/* graph/bitmap.h: dirty bitmaps — one bit per granule of a node, set by
 * the choke point when a write, trim or write-zeroes completes.
 *
 * A bitmap belongs to one node (its list `bitmaps`) and dies with it.
 * Named bitmaps are the user's (block-dirty-bitmap-add); a job makes an
 * anonymous one (name NULL) to track what it still has to copy.  Memory
 * is one bit per granule, rounded up to 64-bit words; iteration goes a
 * word at a time, so finding the next dirty granule on a mostly clean
 * 16 TiB node costs words, not bits.  Loop thread only.
 */
#ifndef NG_BITMAP_H
#define NG_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/error.h"

struct ng_node;

#define NG_BITMAP_GRAN_MIN      512u
#define NG_BITMAP_GRAN_MAX      (64u << 20)
#define NG_BITMAP_GRAN_DEFAULT  (64u << 10)

struct ng_bitmap {
    char *name;                 /* owned; NULL for a job's own */
    struct ng_node *node;       /* the node it tracks, borrowed */
    uint64_t size;              /* bytes covered (the node's size) */
    uint32_t granularity;       /* bytes per bit, a power of two */
    unsigned shift;             /* log2(granularity) */
    uint64_t nbits;
    uint64_t *words;            /* owned */
    uint64_t count;             /* bits set */
    bool recording;             /* marked by writes (enabled) */
    bool busy;                  /* in use by a job or an export: the user
                                 * may not change it */
    /* Called after the choke point set bits, so a job copying what the
     * bitmap says can wake up.  NULL = nobody waits. */
    void (*on_dirty)(void *opaque);
    void *on_dirty_opaque;
    struct ng_bitmap *next;     /* node's list */
};

/* A new clean bitmap of `granularity` (a power of two in
 * [NG_BITMAP_GRAN_MIN, NG_BITMAP_GRAN_MAX]) over `node`, recording, on
 * the node's list.  `name` is copied (NULL = anonymous).  Names are
 * unique per node.  NULL with *err set. */
struct ng_bitmap *ng_bitmap_add(struct ng_node *node, const char *name,
                                uint32_t granularity, struct ng_error *err);
/* Take it off its node's list and free it.  NULL-safe. */
void ng_bitmap_remove(struct ng_bitmap *bm);
/* Whether ng_bitmap_move(bm, to) would go through: `to` has bm's size
 * and no bitmap of its name.  -1 with *err. */
int ng_bitmap_check_move(const struct ng_bitmap *bm, struct ng_node *to,
                         struct ng_error *err);
/* Hand a bitmap, bits and all, to node `to` (a mirror's pivot moved its
 * node's users there); it records `to`'s writes from now on.  -1 with
 * *err (nothing moved) when the check fails. */
int ng_bitmap_move(struct ng_bitmap *bm, struct ng_node *to,
                   struct ng_error *err);
/* Free every bitmap of a node going away. */
void ng_bitmap_remove_all(struct ng_node *node);

/* The named bitmap of node, or NULL. */
struct ng_bitmap *ng_bitmap_find(struct ng_node *node, const char *name);

/* Byte ranges; they are widened to whole granules and cut at the end. */
void ng_bitmap_set(struct ng_bitmap *bm, uint64_t offset, uint64_t length);
void ng_bitmap_reset(struct ng_bitmap *bm, uint64_t offset, uint64_t length);
void ng_bitmap_set_all(struct ng_bitmap *bm);
void ng_bitmap_clear_all(struct ng_bitmap *bm);
bool ng_bitmap_get(const struct ng_bitmap *bm, uint64_t offset);

/* dst |= src.  Refuses (EINVAL) bitmaps of different sizes or
 * granularities. */
int ng_bitmap_merge(struct ng_bitmap *dst, const struct ng_bitmap *src,
                    struct ng_error *err);

/* First dirty (clean) byte offset of a granule at or after `offset`,
 * or bm->size when there is none.  `offset` is rounded down to its
 * granule. */
uint64_t ng_bitmap_next_dirty(const struct ng_bitmap *bm, uint64_t offset);
uint64_t ng_bitmap_next_clean(const struct ng_bitmap *bm, uint64_t offset);

/* Bytes covered by dirty granules (the last one cut at the end). */
uint64_t ng_bitmap_dirty_bytes(const struct ng_bitmap *bm);

/* Mark [offset, offset + length) in every recording bitmap of node. */
void ng_bitmap_mark_node(struct ng_node *node, uint64_t offset,
                         uint64_t length);
/* The choke point, as a request on `node` completes with `ret`: a
 * write, trim or write-zeroes that succeeded marks its range. */
struct ng_req;
void ng_bitmap_mark_request(struct ng_node *node, const struct ng_req *req,
                            int ret);

#endif
