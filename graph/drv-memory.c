/* graph/drv-memory.c: "memory", a sparse RAM disk.
 *
 * The disk is a flat table of pointers to fixed-size pages; a NULL entry
 * reads as zeroes.  A page is allocated the first time a write touches
 * it and freed again when a trim or write-zeroes covers it whole, so
 * steady-state I/O does no allocation and block status is a walk over
 * the table.  Everything runs inline on the loop thread: a memcpy is far
 * cheaper than a trip through the thread pool.
 *
 * The table costs 8 bytes per 64 KiB of virtual size (128 MiB for 1 TiB);
 * calloc() hands it out as untouched zero pages, so an unused disk costs
 * address space rather than memory.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/drivers.h"

#define MEMORY_PAGE_SHIFT 16
#define MEMORY_PAGE_SIZE  ((uint64_t)1 << MEMORY_PAGE_SHIFT)
#define MEMORY_PAGE_MASK  (MEMORY_PAGE_SIZE - 1)

struct memory_state {
    uint64_t size;                  /* option "size", bytes */
    unsigned char **pages;          /* npages entries, NULL = zeroes */
    uint64_t npages;
};

static const struct ng_opt_desc memory_opts[] = {
    NG_OPT_SIZE("size", struct memory_state, size, NULL,
                "virtual size of the RAM disk, e.g. 1G"),
    NG_OPT_END,
};

static int
memory_open(struct ng_node *node, struct ng_error *err)
{
    struct memory_state *s = ng_node_state(node);

    /* Lengths are int64_t in the graph. */
    if (s->size > INT64_MAX)
        return ng_error_set(err, EINVAL, "size %" PRIu64 " is too large",
                            s->size);
    s->npages = (s->size >> MEMORY_PAGE_SHIFT) +
                ((s->size & MEMORY_PAGE_MASK) != 0);
    if (s->npages == 0)
        return 0;
    if (s->npages > SIZE_MAX / sizeof *s->pages ||
        (s->pages = calloc(s->npages, sizeof *s->pages)) == NULL)
        return ng_error_set(err, ENOMEM,
                            "cannot allocate the page table for size %"
                            PRIu64, s->size);
    return 0;
}

static void
memory_close(struct ng_node *node)
{
    struct memory_state *s = ng_node_state(node);

    for (uint64_t i = 0; i < s->npages; i++)
        free(s->pages[i]);
    free(s->pages);
    s->pages = NULL;
    s->npages = 0;
}

/* Bytes of the page holding `off` from `off` on, at most `left`. */
static inline uint64_t
memory_chunk(uint64_t off, uint64_t left)
{
    uint64_t n = MEMORY_PAGE_SIZE - (off & MEMORY_PAGE_MASK);

    return n < left ? n : left;
}

static void
memory_read(struct memory_state *s, struct ng_req *req)
{
    unsigned char *buf = req->buf;
    uint64_t off = req->offset, left = req->length;

    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        const unsigned char *p = s->pages[off >> MEMORY_PAGE_SHIFT];

        if (p != NULL)
            memcpy(buf, p + (off & MEMORY_PAGE_MASK), n);
        else
            memset(buf, 0, n);
        buf += n;
        off += n;
        left -= n;
    }
}

/* True when [off, off + n) covers the whole page it lies in; the last
 * page ends at the disk's end, not at the page size. */
static inline bool
memory_whole_page(const struct memory_state *s, uint64_t off, uint64_t n)
{
    uint64_t end = (off | MEMORY_PAGE_MASK) + 1;

    if (end > s->size)
        end = s->size;
    return (off & MEMORY_PAGE_MASK) == 0 && off + n == end;
}

static int
memory_write(struct memory_state *s, struct ng_req *req)
{
    const unsigned char *buf = req->buf;
    uint64_t off = req->offset, left = req->length;

    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        unsigned char **pp = &s->pages[off >> MEMORY_PAGE_SHIFT];

        if (*pp == NULL) {
            /* First touch.  A page the write fills needs no zeroing. */
            *pp = memory_whole_page(s, off, n) ?
                  malloc(MEMORY_PAGE_SIZE) : calloc(1, MEMORY_PAGE_SIZE);
            /* Out of RAM is this disk's out of space; ENOSPC lets a
             * client (QEMU's werror=enospc) pause rather than fail.  What
             * went before stays written. */
            if (*pp == NULL)
                return -ENOSPC;
        }
        memcpy(*pp + (off & MEMORY_PAGE_MASK), buf, n);
        buf += n;
        off += n;
        left -= n;
    }
    return 0;
}

/* Trim and write-zeroes: a RAM disk has no cheaper way to zero than to
 * deallocate, so both free whole pages and clear partial ones, and
 * FAST_ZERO is always honoured. */
static void
memory_zero(struct memory_state *s, struct ng_req *req)
{
    uint64_t off = req->offset, left = req->length;

    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        unsigned char **pp = &s->pages[off >> MEMORY_PAGE_SHIFT];

        if (*pp != NULL) {
            if (memory_whole_page(s, off, n)) {
                free(*pp);
                *pp = NULL;
            } else {
                memset(*pp + (off & MEMORY_PAGE_MASK), 0, n);
            }
        }
        off += n;
        left -= n;
    }
}

/* Runs of allocated (data) and unallocated (hole, reads as zeroes) pages,
 * adjacent runs of one kind merged. */
static void
memory_block_status(struct memory_state *s, struct ng_req *req)
{
    struct ng_extent *e = req->extents;
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
    uint32_t nr = 0;
    uint64_t off = req->offset, left = req->length;

    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        uint32_t flags = s->pages[off >> MEMORY_PAGE_SHIFT] != NULL ?
                         0 : NG_EXTENT_HOLE | NG_EXTENT_ZERO;

        if (nr > 0 && e[nr - 1].flags == flags) {
            e[nr - 1].length += n;
        } else {
            if (nr == max)
                break;
            e[nr].length = n;
            e[nr].flags = flags;
            nr++;
        }
        off += n;
        left -= n;
    }
    req->nr_extents = nr;
}

static void
memory_submit(struct ng_node *node, struct ng_req *req)
{
    struct memory_state *s = ng_node_state(node);
    int ret = 0;

    switch (req->op) {
    case NG_OP_READ:
        memory_read(s, req);
        break;
    case NG_OP_WRITE:
        ret = memory_write(s, req);     /* FUA: RAM has nowhere to flush */
        break;
    case NG_OP_TRIM:
    case NG_OP_WRITE_ZEROES:
        memory_zero(s, req);
        break;
    case NG_OP_BLOCK_STATUS:
        memory_block_status(s, req);
        break;
    case NG_OP_FLUSH:
    case NG_OP_CACHE:
        break;
    default:
        ret = -EINVAL;
        break;
    }
    ng_req_complete(req, ret);
}

static int64_t
memory_length(struct ng_node *node)
{
    const struct memory_state *s = ng_node_state(node);

    return (int64_t)s->size;
}

static uint32_t
memory_caps(struct ng_node *node)
{
    /* The graph takes the write caps away from a read-only node. */
    (void)node;
    return NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_FUA | NG_CAP_TRIM |
           NG_CAP_ZERO | NG_CAP_FAST_ZERO | NG_CAP_CACHE | NG_CAP_EXTENTS |
           NG_CAP_MULTI_CONN;
}

const struct ng_driver ng_driver_memory = {
    .name       = "memory",
    .help       = "sparse RAM disk, lost when the node closes",
    .is_filter  = false,
    .state_size = sizeof(struct memory_state),
    .opts       = memory_opts,
    .open       = memory_open,
    .close      = memory_close,
    .submit     = memory_submit,
    .length     = memory_length,
    .caps       = memory_caps,
};
