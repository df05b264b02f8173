/* graph/qcow2-alloc.c: qcow2 refcounts and cluster allocation, on the
 * cached tables (qcow2-cache.c loads them and writes the changed ones
 * back in order).  An operation that needs a table not in memory fails
 * with -EAGAIN before it changes anything (see graph/qcow2.h).
 *
 * Allocation appends: new clusters come from alloc_next, past every
 * cluster in use at open, so a cluster freed in this session is never
 * handed out again before the tables no longer pointing to it are on
 * disk.  Free holes an image had at open are left alone.  A refcount
 * block that does not exist yet is made in the first free cluster, and
 * counts itself when it covers that cluster.  A full refcount table
 * moves to a bigger place at the end of the file.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/qcow2.h"

/* Grow the file by at least this much at a time (then whole clusters). */
#define QCOW2_GROW_STEP ((uint64_t)1 << 20)

uint64_t
qcow2_refcount_get(const struct qcow2_state *s, uint64_t cluster)
{
    uint64_t rbi = cluster / s->rb_entries, i = cluster % s->rb_entries;
    const unsigned char *b;
    unsigned w = 1u << s->refcount_order;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;

    if ((b = qcow2_table(&s->rbc, rbi)) == NULL)
        return 0;
    switch (s->refcount_order) {
    case 0: case 1: case 2:
        return (b[i * w / 8] >> (i * w % 8)) & ((1u << w) - 1);
    case 3:
        return b[i];
    case 4:
        memcpy(&v16, b + i * 2, 2);
        return be16toh(v16);
    case 5:
        memcpy(&v32, b + i * 4, 4);
        return be32toh(v32);
    default:
        memcpy(&v64, b + i * 8, 8);
        return be64toh(v64);
    }
}

static void
refcount_store(struct qcow2_state *s, uint64_t cluster, uint64_t v)
{
    uint64_t rbi = cluster / s->rb_entries, i = cluster % s->rb_entries;
    unsigned char *b = s->rbc.slot[rbi].data;
    unsigned w = 1u << s->refcount_order;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;

    switch (s->refcount_order) {
    case 0: case 1: case 2: {
        unsigned sh = (unsigned)(i * w % 8), mask = ((1u << w) - 1) << sh;

        b[i * w / 8] = (unsigned char)((b[i * w / 8] & ~mask) |
                                       ((v << sh) & mask));
        break;
    }
    case 3:
        b[i] = (unsigned char)v;
        break;
    case 4:
        v16 = htobe16((uint16_t)v);
        memcpy(b + i * 2, &v16, 2);
        break;
    case 5:
        v32 = htobe32((uint32_t)v);
        memcpy(b + i * 4, &v32, 4);
        break;
    default:
        v64 = htobe64(v);
        memcpy(b + i * 8, &v64, 8);
        break;
    }
    s->rbc.slot[rbi].dirty = true;
}

/* -EAGAIN naming table idx of c. */
static int
need(struct qcow2_state *s, struct qcow2_cache *c, uint64_t idx)
{
    s->need_cache = c;
    s->need_idx = idx;
    return -EAGAIN;
}

/* Block rbi in memory (0), not in the image (1), or -EAGAIN. */
static int
rb_state(struct qcow2_state *s, uint64_t rbi)
{
    if (qcow2_table(&s->rbc, rbi) != NULL)
        return 0;
    if (rbi >= s->reft_entries || s->reft[rbi] == 0)
        return 1;
    return need(s, &s->rbc, rbi);
}

/* The file must hold [0, end). */
static int
ensure_file(struct qcow2_state *s, uint64_t end)
{
    struct ng_error err = { 0 };
    uint64_t want;

    if (end <= s->file_size)
        return 0;
    want = end + QCOW2_GROW_STEP;
    want = (want + s->cluster_size - 1) & ~(s->cluster_size - 1);
    if (ng_node_grow(s->file, want, &err) < 0) {
        ng_node_warn(s->node, "%s", err.msg);
        return -ENOSPC;
    }
    s->file_size = want;
    return 0;
}

int
qcow2_data_grow(struct qcow2_state *s, uint64_t end)
{
    struct ng_error err = { 0 };

    if (end <= s->data_size)
        return 0;
    if (ng_node_grow(s->data, end, &err) < 0) {
        ng_node_warn(s->node, "%s", err.msg);
        return -ENOSPC;
    }
    s->data_size = end;
    return 0;
}

static int refcount_set(struct qcow2_state *s, uint64_t cluster, uint64_t v);

static int grow_reft(struct qcow2_state *s, uint64_t need);
static uint64_t alloc_run(struct qcow2_state *s, uint64_t n, int *ret);

/* Make refcount block `rbi` in the first free cluster. */
static int
make_rb(struct qcow2_state *s, uint64_t rbi)
{
    uint64_t c = s->alloc_next;
    int r;

    if (rbi >= s->reft_entries && (r = grow_reft(s, rbi + 1)) < 0)
        return r;
    if ((r = rb_state(s, rbi)) <= 0)
        return r;                   /* growing the table made it */
    c = s->alloc_next;
    if ((r = ensure_file(s, (c + 1) << s->cluster_bits)) < 0)
        return r;
    if (qcow2_cache_new(s, &s->rbc, rbi) == NULL)
        return -ENOMEM;
    s->reft[rbi] = htobe64(c << s->cluster_bits);
    s->reft_dirty = true;
    s->alloc_next = c + 1;
    return refcount_set(s, c, 1);
}

static int
refcount_set(struct qcow2_state *s, uint64_t cluster, uint64_t v)
{
    uint64_t rbi = cluster / s->rb_entries;
    int r;

    if (s->refcount_order < 6 && v >> (1u << s->refcount_order) != 0) {
        ng_node_warn(s->node, "refcount of host cluster %" PRIu64
                     " would overflow", cluster);
        return -EIO;
    }
    if ((r = rb_state(s, rbi)) < 0 || (r == 1 && (r = make_rb(s, rbi)) < 0))
        return r;
    refcount_store(s, cluster, v);
    return 0;
}

/* Move the refcount table to a bigger place at the end of the file:
 * the old one is freed once the header points to the new one (the
 * write-back writes the table, then the header, then applies the
 * decrement).  Its clusters come from past the old table's reach, where
 * no block exists yet: no -EAGAIN halfway. */
static int
grow_reft(struct qcow2_state *s, uint64_t need)
{
    uint64_t per = s->cluster_size / 8, old_n = s->reft_entries;
    uint64_t n = old_n * 2 > need ? old_n * 2 : need, clusters, host;
    uint64_t old_off = s->reft_offset;
    void *p;
    int r;

    n = (n + per - 1) / per * per;
    clusters = n / per;
    if (n * 8 > QCOW2_MAX_REFT_BYTES) {
        ng_node_warn(s->node, "the refcount table would exceed %" PRIu64
                     " bytes", QCOW2_MAX_REFT_BYTES);
        return -ENOSPC;
    }
    if ((p = realloc(s->reft, n * 8)) == NULL)
        return -ENOMEM;
    s->reft = p;
    if ((p = realloc(s->rbc.slot, n * sizeof *s->rbc.slot)) == NULL)
        return -ENOMEM;
    s->rbc.slot = p;
    memset(s->reft + old_n, 0, (n - old_n) * 8);
    memset(s->rbc.slot + old_n, 0, (n - old_n) * sizeof *s->rbc.slot);
    s->rbc.n_slots = n;
    s->reft_entries = n;
    if ((host = alloc_run(s, clusters, &r)) == 0)
        return r;
    s->reft_offset = host;
    s->reft_dirty = true;
    s->header_dirty = true;
    return qcow2_unref(s, old_off, old_n * 8);
}

/* `n` contiguous new clusters for a table; 0 with *ret on failure.  A
 * refcount block made in between breaks the run: free the piece and try
 * again further on. */
static uint64_t
alloc_run(struct qcow2_state *s, uint64_t n, int *ret)
{
    uint64_t host, got;

    for (;;) {
        if ((host = qcow2_alloc(s, n, &got, ret)) == 0)
            return 0;
        if (got == n)
            return host;
        if ((*ret = qcow2_unref(s, host, got << s->cluster_bits)) < 0)
            return 0;
    }
}

int
qcow2_grow_l1(struct qcow2_state *s, uint64_t need)
{
    uint64_t old_n = s->l1_size, cs = s->cluster_size;
    uint64_t old_room = (old_n * 8 + cs - 1) & ~(cs - 1);
    uint64_t host = s->l1_offset;
    void *p;
    int r;

    if (need <= old_n)
        return 0;
    if (need * 8 > QCOW2_MAX_L1_BYTES)
        return -EFBIG;
    if ((p = realloc(s->l1, need * 8)) == NULL)
        return -ENOMEM;
    s->l1 = p;
    memset(s->l1 + old_n, 0, (need - old_n) * 8);
    if ((p = realloc(s->l2c.slot, need * sizeof *s->l2c.slot)) == NULL)
        return -ENOMEM;
    s->l2c.slot = p;
    memset(s->l2c.slot + old_n, 0, (need - old_n) * sizeof *s->l2c.slot);
    /* Past its clusters: a new place, freed once the header names it. */
    if (old_n == 0 || need * 8 > old_room) {
        if ((host = alloc_run(s, (need * 8 + cs - 1) / cs, &r)) == 0)
            return r;
        if (old_n > 0 && (r = qcow2_unref(s, s->l1_offset, old_n * 8)) < 0)
            return r;
        s->l1_offset = host;
    }
    s->l2c.n_slots = need;
    s->l1_size = (uint32_t)need;
    s->l1_dirty = true;
    s->header_dirty = true;
    return 0;
}

uint64_t
qcow2_rb_used_end(const struct qcow2_state *s, uint64_t rbi)
{
    for (uint64_t i = s->rb_entries; i-- > 0;)
        if (qcow2_refcount_get(s, rbi * s->rb_entries + i) != 0)
            return rbi * s->rb_entries + i + 1;
    return 0;
}

uint64_t
qcow2_alloc(struct qcow2_state *s, uint64_t n, uint64_t *got, int *ret)
{
    uint64_t c, rbi;
    int r;

    /* A missing block for the first cluster is made there first. */
    for (;;) {
        c = s->alloc_next;
        rbi = c / s->rb_entries;
        if ((r = rb_state(s, rbi)) == 0)
            break;
        if (r < 0 || (r = make_rb(s, rbi)) < 0) {
            *ret = r;
            return 0;
        }
    }
    /* One block covers them all. */
    if (n > s->rb_entries - c % s->rb_entries)
        n = s->rb_entries - c % s->rb_entries;
    if ((r = ensure_file(s, (c + n) << s->cluster_bits)) < 0) {
        *ret = r;
        return 0;
    }
    for (uint64_t i = 0; i < n; i++)
        refcount_store(s, c + i, 1);
    s->alloc_next = c + n;
    *got = n;
    return c << s->cluster_bits;
}

unsigned char *
qcow2_l2_for(struct qcow2_state *s, uint64_t gc, int *ret)
{
    uint64_t l1i = gc / s->l2_entries, got, host;
    unsigned char *t;

    if ((t = qcow2_table(&s->l2c, l1i)) != NULL)
        return t;
    if ((be64toh(s->l1[l1i]) & QCOW2_OFFSET_MASK) != 0) {
        *ret = need(s, &s->l2c, l1i);
        return NULL;
    }
    if ((host = qcow2_alloc(s, 1, &got, ret)) == 0)
        return NULL;
    if ((t = qcow2_cache_new(s, &s->l2c, l1i)) == NULL) {
        *ret = -ENOMEM;             /* the cluster leaks */
        return NULL;
    }
    s->l1[l1i] = htobe64(host | QCOW2_OFLAG_COPIED);
    s->l1_dirty = true;
    return t;
}

int
qcow2_unref(struct qcow2_state *s, uint64_t host, uint64_t len)
{
    if (s->n_unrefs == s->cap_unrefs) {
        size_t cap = s->cap_unrefs ? s->cap_unrefs * 2 : 16;
        void *p = realloc(s->unrefs, cap * sizeof *s->unrefs);

        if (p == NULL)
            return -ENOMEM;
        s->unrefs = p;
        s->cap_unrefs = cap;
    }
    s->unrefs[s->n_unrefs++] = (struct qcow2_unref){ host, len };
    return 0;
}

void
qcow2_refcount_dec(struct qcow2_state *s, uint64_t cluster)
{
    uint64_t v = qcow2_refcount_get(s, cluster);

    if (v > 0)
        refcount_store(s, cluster, v - 1);
}
