/* graph/drv-memory.c: "memory", a sparse RAM disk.
 *
 * The disk is a flat table of pointers to fixed-size pages; a NULL entry
 * reads as zeroes.  A page is allocated the first time a write touches
 * it and freed again when a trim or write-zeroes covers it whole, so
 * steady-state I/O does no allocation and block status is a walk over
 * the table.  Small requests run inline on the loop thread: a memcpy of
 * 4 KiB is far cheaper than a trip through a thread pool.  Big copies
 * are not: a 1 MiB write's copy into the pages took a third of the
 * loop's time, and clients waited behind a job's bulk reads.  Those go
 * to two worker threads (see "Copies on the workers" below); everything
 * but the copy itself stays on the loop.
 *
 * The table costs 8 bytes per 64 KiB of virtual size (128 MiB for 1 TiB).
 * A big one is mapped without reserving swap (MAP_NORESERVE), as
 * untouched zero pages, so an unused disk costs address space rather
 * than memory, and a size too big for the machine fails the same way in
 * every build (a huge calloc() is ENOMEM in one and an abort under
 * ASan); a small one comes from calloc(), so many small disks do not
 * each take a mapping.  MEMORY_MAX_SIZE bounds the address space and the
 * walk over the table at close.
 *
 * With a "backing" child the disk is an overlay, a one-layer COW image
 * for tests and scratch disks: an unallocated page reads from the backing
 * node instead of as zeroes.  Pages then never become unallocated again
 * (zeroing marks them with the zero marker instead, which reads as zeroes
 * without exposing the backing), so a read can fetch the whole range from
 * the backing node and lay the pages allocated by the time it completes
 * over it.  A write or write-zeroes that covers part of an unallocated
 * page first copies that page up from the backing node; pages only ever
 * go from unallocated to allocated, so two of these racing for one page
 * both stay correct (the second drops its copy).  The backing is read
 * through the graph, so it may be any node and answer asynchronously;
 * the context for that (struct memory_io) is the request's own, from the
 * core (ng_req_ctx()).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "graph/graph.h"
#include "graph/drivers.h"

#define MEMORY_PAGE_SHIFT 16
#define MEMORY_PAGE_SIZE  ((uint64_t)1 << MEMORY_PAGE_SHIFT)
#define MEMORY_PAGE_MASK  (MEMORY_PAGE_SIZE - 1)

/* 16 TiB: a 2 GiB page table. */
#define MEMORY_MAX_SIZE   ((uint64_t)1 << 44)
#define MEMORY_MAX_TEXT   "16T"

/* Page tables from this size on (disks of 8 GiB and more) are mapped. */
#define MEMORY_MAP_MIN    ((size_t)1 << 20)

/* Copies from this size on go to the workers: a client's write, and a
 * job's bulk read or write (NG_REQ_BACKGROUND), which no client waits
 * for but every client waits behind while the loop copies.  A trip costs
 * the daemon ~30 us of CPU more than copying on the loop (a futex wake,
 * an eventfd wake of the loop, the copy's source in the other core's
 * cache: 256 KiB writes took 55 -> 85 us of CPU each, 1 MiB ones 190-240
 * -> 275-295, on a loaded 2-core VM), most of it off the loop; the
 * smaller the copy, the less of it is the loop's saving.  A client's read stays on the loop: the loop
 * sends its reply from the request's buffer at once, and reads were well
 * ahead of their peers already. */
#define MEMORY_WORKER_MIN ((uint64_t)256 * 1024)

/* Pages one trip to a worker copies at most: 2 MiB at any alignment.
 * A longer request takes several trips, one after the other. */
#define MEMORY_TRIP_PAGES 33

/* The copies are CPU-bound: more threads than cores only queue. */
#define MEMORY_THREADS 2

/* One trip of a read's or a write's copy to a worker: the pages of
 * [off, off + len), looked up (and for a write allocated) on the loop
 * before it left, so the worker touches neither the page table nor the
 * allocator.  A trip in flight is on its node's list, oldest first: a
 * page taken out of the table meanwhile is freed only once every trip
 * that may hold it is back (memory_page_retire). */
struct memory_trip {
    struct ng_work work;
    struct memory_io *prev, *next;  /* trips in flight, by seq */
    uint64_t seq;                   /* when it left (memory_state) */
    uint64_t off, len;              /* this trip's bytes */
    uint64_t end;                   /* the whole copy's end */
    const unsigned char *zeroed;    /* the node's zero marker */
    bool write;
    bool overlay;                   /* read: NULL pages keep the buffer's
                                     * (the backing's) data */
    int ret;                        /* the request's, once this trip is
                                     * back (ENOSPC: the pages ran out) */
    unsigned n_pages;
    uint64_t fresh;                 /* bit i: page[i] is new, not in the
                                     * table yet (memory_trip_publish) */
    unsigned char *page[MEMORY_TRIP_PAGES];
};

/* A page out of the table that a trip in flight may still copy into or
 * out of, and the trip count when it came out. */
struct memory_dead {
    unsigned char *page;
    uint64_t seq;
};

/* A request that waits for the backing node: a read, the copy-up of at
 * most two partial pages (the first and the last) of a write, or the
 * block status of unallocated runs. */
struct memory_io {
    struct ng_node *node;
    struct ng_req *req;             /* the request being served */
    struct ng_req sub[2];           /* to the backing node */
    unsigned char *cow_buf[2];      /* copy-up: the new pages */
    uint64_t cow_page[2];
    unsigned n_cow, pending;
    int ret;
    uint64_t bs_off, bs_len;        /* block status: the run asked about */
    bool bs_full;                   /* no room: might it extend the last? */
    struct ng_extent bs_scratch;
    bool in_submit, sub_done;       /* block status: inline completion */
    int sub_ret;
    struct memory_trip trip;        /* a copy on a worker */
};

struct memory_state {
    uint64_t size;                  /* option "size", bytes */
    struct ng_node *backing;        /* option "backing", NULL = none */
    unsigned char **pages;          /* npages entries, NULL = unallocated
                                     * (zeroes, or the backing's data) */
    uint64_t npages;
    uint64_t top;                   /* past the last page ever allocated:
                                     * from there on every entry is NULL,
                                     * so close, trim and write-zeroes
                                     * need not walk a huge, mostly empty
                                     * table */
    unsigned char zero_marker;      /* its address in pages[]: allocated,
                                     * reads as zeroes (backing only) */
    struct ng_node *node;
    /* Copies on the workers.  Loop thread only, like everything here. */
    struct memory_io *trip_head, *trip_tail;    /* in flight, oldest
                                     * first */
    uint64_t trip_seq;              /* trips that ever left */
    struct memory_dead *dead;       /* pages waiting for trips, oldest
                                     * first: [dead_head, dead_tail) */
    size_t dead_head, dead_tail, dead_cap;
    bool closing;                   /* close_async waits for the trips */
};

static const struct ng_opt_desc memory_opts[] = {
    NG_OPT_SIZE("size", struct memory_state, size, NULL,
                "virtual size of the RAM disk, e.g. 1G"),
    NG_OPT_CHILD("backing", struct memory_state, backing,
                 NG_ROLE_BACKING, false,
                 "node whose data shows where this one has none written"),
    NG_OPT_END,
};

#define MEMORY_ZEROED(s) (&(s)->zero_marker)

/* Bytes of a page table of n entries. */
static size_t
memory_table_bytes(uint64_t n)
{
    return (size_t)n * sizeof(unsigned char *);
}

/* A page table of n entries, all NULL, or NULL (ENOMEM): small ones from
 * calloc(), big ones mapped (see the top of the file). */
static unsigned char **
memory_table_new(uint64_t n)
{
    void *table;

    if (memory_table_bytes(n) < MEMORY_MAP_MIN)
        return calloc(n, sizeof(unsigned char *));
    table = mmap(NULL, memory_table_bytes(n), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return table != MAP_FAILED ? table : NULL;
}

/* Free a table from memory_table_new(n) (NULL: nothing). */
static void
memory_table_free(unsigned char **pages, uint64_t n)
{
    if (pages == NULL)
        return;
    if (memory_table_bytes(n) < MEMORY_MAP_MIN)
        free(pages);
    else
        munmap(pages, memory_table_bytes(n));
}

/* Pages a disk of `size` bytes has. */
static uint64_t
memory_pages_for(uint64_t size)
{
    return (size >> MEMORY_PAGE_SHIFT) + ((size & MEMORY_PAGE_MASK) != 0);
}

static int
memory_open(struct ng_node *node, struct ng_error *err)
{
    struct memory_state *s = ng_node_state(node);

    s->node = node;
    if (s->size > MEMORY_MAX_SIZE)
        return ng_error_set(err, EFBIG, "size %" PRIu64 " is too large for "
                            "a memory disk (at most " MEMORY_MAX_TEXT ")",
                            s->size);
    s->npages = memory_pages_for(s->size);
    if (s->npages == 0)
        return 0;
    if ((s->pages = memory_table_new(s->npages)) == NULL) {
        s->npages = 0;
        return ng_error_set(err, ENOMEM, "cannot allocate the page table "
                            "for size %" PRIu64, s->size);
    }
    return 0;
}

static void
memory_free_table(struct memory_state *s)
{
    memory_table_free(s->pages, s->npages);
    s->pages = NULL;
}

/* ---- Pages out of the table ------------------------------------------- */

/* A page that left the table (a trim, a write-zeroes, a write that
 * replaced it) may still be copied into or out of by a trip that looked
 * it up before (memory_trip_go).  RCU's rule, with trips for readers: a
 * page that came out when `trip_seq` trips had left is freed once every
 * trip up to that one is back, i.e. when the oldest trip in flight is
 * younger (memory_dead_release).  Without trips in flight, at once: the
 * inline path pays one test. */

static bool
memory_dead_grow(struct memory_state *s)
{
    size_t cap = s->dead_cap ? 2 * s->dead_cap : 64;
    struct memory_dead *d;

    if (s->dead_head > 0) {         /* room at the front: move down */
        memmove(s->dead, s->dead + s->dead_head,
                (s->dead_tail - s->dead_head) * sizeof *s->dead);
        s->dead_tail -= s->dead_head;
        s->dead_head = 0;
        return true;
    }
    if ((d = realloc(s->dead, cap * sizeof *d)) == NULL)
        return false;
    s->dead = d;
    s->dead_cap = cap;
    return true;
}

/* Free `p`, which has left the table, once no trip may hold it; false
 * (nothing done) when it cannot be kept that long for want of memory:
 * the caller then leaves it in the table. */
static bool
memory_page_retire(struct memory_state *s, unsigned char *p)
{
    if (s->trip_head == NULL) {
        free(p);
        return true;
    }
    if (s->dead_tail == s->dead_cap && !memory_dead_grow(s))
        return false;
    s->dead[s->dead_tail++] = (struct memory_dead){ p, s->trip_seq };
    return true;
}

/* A trip came back: free what no trip in flight may hold. */
static void
memory_dead_release(struct memory_state *s)
{
    uint64_t oldest = s->trip_head != NULL ? s->trip_head->trip.seq
                                           : UINT64_MAX;

    while (s->dead_head < s->dead_tail &&
           s->dead[s->dead_head].seq < oldest)
        free(s->dead[s->dead_head++].page);
    if (s->dead_head == s->dead_tail)
        s->dead_head = s->dead_tail = 0;
}

/* Take the page at *pp out of the table (a trim or write-zeroes covers it
 * whole).  Kept, zeroed, when it cannot be retired: it reads the same. */
static void
memory_drop_page(struct memory_state *s, unsigned char **pp)
{
    if (*pp != NULL && *pp != MEMORY_ZEROED(s) &&
        !memory_page_retire(s, *pp)) {
        memset(*pp, 0, MEMORY_PAGE_SIZE);
        return;
    }
    *pp = s->backing != NULL ? MEMORY_ZEROED(s) : NULL;
}

/* No trip in flight: the graph closes a node only once its requests
 * completed, and a request completes after its last trip. */
static void
memory_close(struct ng_node *node)
{
    struct memory_state *s = ng_node_state(node);

    for (uint64_t i = 0; i < s->top; i++)
        if (s->pages[i] != NULL && s->pages[i] != MEMORY_ZEROED(s))
            free(s->pages[i]);
    memory_free_table(s);
    s->npages = 0;
    s->top = 0;
    for (size_t i = s->dead_head; i < s->dead_tail; i++)
        free(s->dead[i].page);
    free(s->dead);
    s->dead = NULL;
    s->dead_head = s->dead_tail = s->dead_cap = 0;
}

/* The same, waiting for trips should any still be out (a request the
 * graph gave up on): their pages must outlive them. */
static void
memory_close_async(struct ng_node *node)
{
    struct memory_state *s = ng_node_state(node);

    if (s->trip_head != NULL) {
        s->closing = true;          /* memory_trip_back() finishes it */
        return;
    }
    memory_close(node);
    ng_node_closed(node);
}

/* Page `index` has just been allocated. */
static inline void
memory_note_page(struct memory_state *s, uint64_t index)
{
    if (index >= s->top)
        s->top = index + 1;
}

/* Bytes of [off, off + len) below `top`: past it every entry is NULL. */
static inline uint64_t
memory_below_top(const struct memory_state *s, uint64_t off, uint64_t len)
{
    uint64_t end = s->top << MEMORY_PAGE_SHIFT;

    if (off >= end)
        return 0;
    return len < end - off ? len : end - off;
}

/* Bytes of the page holding `off` from `off` on, at most `left`. */
static inline uint64_t
memory_chunk(uint64_t off, uint64_t left)
{
    uint64_t n = MEMORY_PAGE_SIZE - (off & MEMORY_PAGE_MASK);

    return n < left ? n : left;
}

/* Copy the range out of the pages.  With `overlay` the buffer already
 * holds the backing's data and only allocated pages are copied. */
static void
memory_read(struct memory_state *s, struct ng_req *req, bool overlay)
{
    uint64_t off = req->offset, left = req->length;

    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        const unsigned char *p = s->pages[off >> MEMORY_PAGE_SHIFT];

        if (p == MEMORY_ZEROED(s) || (p == NULL && !overlay))
            ng_iov_memset(&req->iov, off - req->offset, 0, n);
        else if (p != NULL)
            ng_iov_from_buf(&req->iov, off - req->offset,
                            p + (off & MEMORY_PAGE_MASK), n);
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

/* Store the data in `v` (or zeroes when v is NULL) at [off, off + len),
 * making each page it touches a real page: a write, or a write-zeroes
 * that must stay provisioned (NBD's NO_HOLE). */
static int
memory_store(struct memory_state *s, uint64_t off, uint64_t len,
             const struct ng_iov *v)
{
    uint64_t done = 0;

    while (len > 0) {
        uint64_t n = memory_chunk(off, len);
        unsigned char **pp = &s->pages[off >> MEMORY_PAGE_SHIFT];
        bool fresh = *pp == NULL || *pp == MEMORY_ZEROED(s);

        if (fresh) {
            /* First touch.  A page the data fills needs no zeroing.  With
             * a backing node a partial page was copied up already. */
            if (*pp == NULL && s->backing != NULL &&
                !memory_whole_page(s, off, n))
                return -EIO;
            *pp = v != NULL && memory_whole_page(s, off, n) ?
                  malloc(MEMORY_PAGE_SIZE) : calloc(1, MEMORY_PAGE_SIZE);
            /* Out of RAM is this disk's out of space; ENOSPC lets a
             * client (QEMU's werror=enospc) pause rather than fail.  What
             * went before stays written. */
            if (*pp == NULL)
                return -ENOSPC;
            memory_note_page(s, off >> MEMORY_PAGE_SHIFT);
        }
        if (v != NULL)
            ng_iov_to_buf(v, done, *pp + (off & MEMORY_PAGE_MASK), n);
        else if (!fresh)
            memset(*pp + (off & MEMORY_PAGE_MASK), 0, n);
        off += n;
        done += n;
        len -= n;
    }
    return 0;
}

/* Trim and write-zeroes: a RAM disk has no cheaper way to zero than to
 * deallocate, so both free whole pages and clear partial ones, and
 * FAST_ZERO is always honoured.  With a backing node a freed page must
 * not show the backing's data: it becomes the zero marker.  A trim may
 * leave a partial unallocated page alone (its contents are unspecified
 * afterwards); write-zeroes copied such pages up first.  Write-zeroes
 * without MAY_TRIM keeps its pages allocated (memory_store). */
static int
memory_zero(struct memory_state *s, struct ng_req *req)
{
    uint64_t off = req->offset, left = req->length;

    if (req->op == NG_OP_WRITE_ZEROES && !(req->flags & NG_REQ_MAY_TRIM))
        return memory_store(s, req->offset, req->length, NULL);
    /* Without a backing node the pages from `top` on are unallocated,
     * which is what zeroing leaves them: a trim of a whole 16 TiB disk
     * walks what was ever written, not 268 M entries. */
    if (s->backing == NULL)
        left = memory_below_top(s, off, left);
    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        unsigned char **pp = &s->pages[off >> MEMORY_PAGE_SHIFT];

        if (memory_whole_page(s, off, n)) {
            memory_drop_page(s, pp);
        } else if (*pp != NULL && *pp != MEMORY_ZEROED(s)) {
            memset(*pp + (off & MEMORY_PAGE_MASK), 0, n);
        } else if (*pp == NULL && s->backing != NULL &&
                   req->op == NG_OP_WRITE_ZEROES) {
            return -EIO;
        }
        off += n;
        left -= n;
    }
    return 0;
}

static uint32_t
memory_max_extents(const struct ng_req *req)
{
    return (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
}

/* This layer's allocation: runs of allocated (data), zeroed and
 * unallocated pages.  Without backing an unallocated page is a hole that
 * reads as zeroes; with backing it is a hole in this layer only (see
 * NG_REQ_LOCAL_ONLY). */
static void
memory_block_status_local(struct memory_state *s, struct ng_req *req)
{
    uint32_t max = memory_max_extents(req);
    uint32_t unallocated = s->backing != NULL ? NG_EXTENT_HOLE :
                           NG_EXTENT_HOLE | NG_EXTENT_ZERO;
    uint64_t off = req->offset, left = req->length;

    req->nr_extents = 0;
    while (left > 0) {
        uint64_t n = memory_chunk(off, left);
        const unsigned char *p = s->pages[off >> MEMORY_PAGE_SHIFT];
        uint32_t flags = p == NULL ? unallocated :
                         p == MEMORY_ZEROED(s) ? NG_EXTENT_ZERO : 0;

        if (!ng_req_add_extent(req, max, n, flags))
            break;
        off += n;
        left -= n;
    }
}

/* ---- Copies on the workers --------------------------------------------- */

/* The request's context (zeroed), or NULL on ENOMEM.  The core takes it
 * back when the request completes. */
static struct memory_io *
memory_io_get(struct memory_state *s, struct ng_req *req)
{
    struct memory_io *io = ng_req_ctx(s->node, req);

    if (io != NULL) {
        io->node = s->node;
        io->req = req;
    }
    return io;
}

/* Is the request's copy worth a trip to a worker? */
static bool
memory_copy_on_worker(const struct ng_req *req)
{
    if (req->length < MEMORY_WORKER_MIN)
        return false;
    return req->op == NG_OP_WRITE ||
           (req->op == NG_OP_READ && (req->flags & NG_REQ_BACKGROUND));
}

static struct memory_io *
trip_io(struct ng_work *w)
{
    return (struct memory_io *)((char *)w -
                                offsetof(struct memory_io, trip.work));
}

/* Worker thread: the copy between the request's buffer and the pages
 * the loop looked up.  Nothing else: no table, no allocator, no graph. */
static void
memory_trip_copy(struct ng_work *w)
{
    struct memory_io *io = trip_io(w);
    const struct memory_trip *t = &io->trip;
    const struct ng_iov *v = &io->req->iov;
    uint64_t off = t->off, left = t->len, at = t->off - io->req->offset;

    for (unsigned i = 0; left > 0; i++) {
        uint64_t n = memory_chunk(off, left);
        unsigned char *p = t->page[i];

        if (t->write)
            ng_iov_to_buf(v, at, p + (off & MEMORY_PAGE_MASK), n);
        else if (p == t->zeroed || (p == NULL && !t->overlay))
            ng_iov_memset(v, at, 0, n);
        else if (p != NULL)
            ng_iov_from_buf(v, at, p + (off & MEMORY_PAGE_MASK), n);
        off += n;
        at += n;
        left -= n;
    }
}

/* A read's pages from t->off on, as many as one trip takes. */
static void
memory_trip_look_up(struct memory_state *s, struct memory_trip *t)
{
    uint64_t off = t->off;

    t->n_pages = 0;
    while (off < t->end && t->n_pages < MEMORY_TRIP_PAGES) {
        t->page[t->n_pages++] = s->pages[off >> MEMORY_PAGE_SHIFT];
        off += memory_chunk(off, t->end - off);
    }
    t->len = off - t->off;
}

/* A write's pages from t->off on, allocating those it touches first, as
 * memory_store does.  A page the write fills whole is new and enters the
 * table only once the worker filled it (memory_trip_publish), so no read
 * meanwhile sees what malloc() left in it; a partial one is zeroed and
 * goes in now (it reads as zeroes either way).  The pages that could be
 * had go; t->ret says why the rest could not. */
static void
memory_trip_allocate(struct memory_state *s, struct memory_trip *t)
{
    uint64_t off = t->off;

    t->n_pages = 0;
    t->fresh = 0;
    while (off < t->end && t->n_pages < MEMORY_TRIP_PAGES) {
        uint64_t n = memory_chunk(off, t->end - off);
        unsigned char **pp = &s->pages[off >> MEMORY_PAGE_SHIFT];
        unsigned char *p = *pp;

        if (p == NULL || p == MEMORY_ZEROED(s)) {
            if (memory_whole_page(s, off, n)) {
                p = malloc(MEMORY_PAGE_SIZE);
                t->fresh |= (uint64_t)1 << t->n_pages;
            } else if (p == NULL && s->backing != NULL) {
                t->ret = -EIO;      /* not copied up: a bug above */
                break;
            } else if ((p = calloc(1, MEMORY_PAGE_SIZE)) != NULL) {
                *pp = p;
                memory_note_page(s, off >> MEMORY_PAGE_SHIFT);
            }
            if (p == NULL) {
                t->fresh &= ~((uint64_t)1 << t->n_pages);
                t->ret = -ENOSPC;   /* as memory_store says it */
                break;
            }
        }
        t->page[t->n_pages++] = p;
        off += n;
    }
    t->len = off - t->off;
}

/* Send the next trip from t->off; false when there was nothing to send
 * (t->ret says why). */
static bool
memory_trip_go(struct memory_state *s, struct memory_io *io)
{
    struct memory_trip *t = &io->trip;

    if (t->write)
        memory_trip_allocate(s, t);
    else
        memory_trip_look_up(s, t);
    if (t->len == 0)
        return false;
    t->seq = ++s->trip_seq;
    t->next = NULL;
    t->prev = s->trip_tail;
    if (s->trip_tail != NULL)
        s->trip_tail->trip.next = io;
    else
        s->trip_head = io;
    s->trip_tail = io;
    if (io->req->flags & NG_REQ_BACKGROUND)
        ng_node_queue_background_work(s->node, &t->work);
    else
        ng_node_queue_work(s->node, &t->work);
    return true;
}

static void
memory_trip_unlink(struct memory_state *s, struct memory_io *io)
{
    struct memory_trip *t = &io->trip;

    if (t->prev != NULL)
        t->prev->trip.next = t->next;
    else
        s->trip_head = t->next;
    if (t->next != NULL)
        t->next->trip.prev = t->prev;
    else
        s->trip_tail = t->prev;
}

/* A write's new pages go into the table.  Whatever another request put
 * there meanwhile is older than this write's data (the write was in
 * flight when it came, so NBD lets it go first) and goes; when it
 * cannot be retired, it takes the data instead. */
static void
memory_trip_publish(struct memory_state *s, struct memory_trip *t)
{
    uint64_t index = t->off >> MEMORY_PAGE_SHIFT;

    for (unsigned i = 0; i < t->n_pages; i++, index++) {
        unsigned char **pp = &s->pages[index];
        uint64_t page_off = index << MEMORY_PAGE_SHIFT;

        if (!(t->fresh & ((uint64_t)1 << i)))
            continue;
        if (*pp != NULL && *pp != MEMORY_ZEROED(s) &&
            !memory_page_retire(s, *pp)) {
            memcpy(*pp, t->page[i], memory_chunk(page_off,
                                                 s->size - page_off));
            free(t->page[i]);
            continue;
        }
        *pp = t->page[i];
        memory_note_page(s, index);
    }
}

/* Loop thread: a trip is back.  The next one, or the request completes
 * (after its copy, always). */
static void
memory_trip_back(struct ng_work *w)
{
    struct memory_io *io = trip_io(w);
    struct memory_state *s = ng_node_state(io->node);
    struct memory_trip *t = &io->trip;
    struct ng_node *node = io->node;
    bool close_now;

    memory_trip_unlink(s, io);
    if (t->write)
        memory_trip_publish(s, t);
    memory_dead_release(s);
    t->off += t->len;
    if (t->ret == 0 && t->off < t->end && memory_trip_go(s, io))
        return;
    /* Decided first: once the request completes, a close may come and
     * free the node (then with no trip left, so not through here). */
    close_now = s->closing && s->trip_head == NULL;
    ng_req_complete(io->req, t->ret);
    if (close_now) {
        memory_close(node);
        ng_node_closed(node);
    }
}

/* Do the request's copy on the workers, in trips; it completes after
 * the last.  With `overlay` (a read) the buffer holds the backing's
 * data and only allocated pages are copied.  Without a context the copy
 * is done here, as small ones are. */
static void
memory_copy_start(struct memory_state *s, struct ng_req *req, bool overlay)
{
    struct memory_io *io = memory_io_get(s, req);
    struct memory_trip *t;

    if (io == NULL) {
        if (req->op == NG_OP_WRITE) {
            ng_req_complete(req, memory_store(s, req->offset, req->length,
                                              &req->iov));
        } else {
            memory_read(s, req, overlay);
            ng_req_complete(req, 0);
        }
        return;
    }
    t = &io->trip;
    t->work.fn = memory_trip_copy;
    t->work.after = memory_trip_back;
    t->off = req->offset;
    t->end = req->offset + req->length;
    t->zeroed = MEMORY_ZEROED(s);
    t->write = req->op == NG_OP_WRITE;
    t->overlay = overlay;
    t->ret = 0;
    if (!memory_trip_go(s, io))
        ng_req_complete(req, t->ret);
}

/* Serve a read from the pages (see memory_read) and complete it. */
static void
memory_read_done(struct memory_state *s, struct ng_req *req, bool overlay)
{
    if (memory_copy_on_worker(req)) {
        memory_copy_start(s, req, overlay);
        return;
    }
    memory_read(s, req, overlay);
    ng_req_complete(req, 0);
}

/* ---- The backing node --------------------------------------------------- */

/* Bytes of [off, off + len) the backing node has; the rest reads as
 * zeroes, as QEMU does past a shorter backing file. */
static uint64_t
memory_backing_span(struct memory_state *s, uint64_t off, uint64_t len)
{
    int64_t blen = ng_node_length(s->backing);

    if (blen < 0 || off >= (uint64_t)blen)
        return 0;
    return len < (uint64_t)blen - off ? len : (uint64_t)blen - off;
}

static void
memory_sub_init(struct ng_req *sub, enum ng_op op, uint64_t off,
                uint64_t len, uint32_t flags,
                void (*done)(struct ng_req *, int), struct memory_io *io)
{
    ng_req_init(sub, op, off, len,
                flags | (io->req->flags & NG_REQ_INHERITED));
    sub->done = done;
    sub->opaque = io;
}

static void
memory_backed_read_done(struct ng_req *sub, int ret)
{
    struct memory_io *io = sub->opaque;
    struct memory_state *s = ng_node_state(io->node);
    struct ng_req *req = io->req;

    /* Pages allocated meanwhile are newer than the backing's data. */
    if (ret == 0)
        memory_read_done(s, req, true);
    else
        ng_req_complete(req, ret);
}

static void
memory_backed_read(struct memory_state *s, struct ng_req *req)
{
    struct memory_io *io;
    uint64_t first = req->offset >> MEMORY_PAGE_SHIFT;
    uint64_t last = (req->offset + req->length - 1) >> MEMORY_PAGE_SHIFT;
    uint64_t n;

    while (first <= last && s->pages[first] != NULL)
        first++;
    if (first > last) {             /* all here: no need to ask */
        memory_read_done(s, req, false);
        return;
    }
    n = memory_backing_span(s, req->offset, req->length);
    ng_iov_memset(&req->iov, n, 0, req->length - n);
    if (n == 0) {                   /* all past the backing's end */
        memory_read_done(s, req, true);
        return;
    }
    if ((io = memory_io_get(s, req)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    memory_sub_init(&io->sub[0], NG_OP_READ, req->offset, n, 0,
                    memory_backed_read_done, io);
    io->sub[0].iov = req->iov;
    ng_node_submit(s->backing, &io->sub[0]);
}

/* Apply a write, write-zeroes or trim to pages that need no copy-up. */
static int
memory_apply(struct memory_state *s, struct ng_req *req)
{
    if (req->op == NG_OP_WRITE)
        return memory_store(s, req->offset, req->length, &req->iov);
    return memory_zero(s, req);
}

/* memory_apply, and complete the request: a big write's copy on the
 * workers. */
static void
memory_apply_done(struct memory_state *s, struct ng_req *req)
{
    if (memory_copy_on_worker(req))
        memory_copy_start(s, req, false);
    else
        ng_req_complete(req, memory_apply(s, req));
}

static void
memory_cow_finish(struct memory_io *io)
{
    struct memory_state *s = ng_node_state(io->node);
    struct ng_req *req = io->req;
    int ret = io->ret;

    for (unsigned i = 0; i < io->n_cow; i++) {
        unsigned char **pp = &s->pages[io->cow_page[i]];

        /* Another request may have allocated it meanwhile: its data is
         * newer than our copy. */
        if (ret == 0 && *pp == NULL) {
            *pp = io->cow_buf[i];
            memory_note_page(s, io->cow_page[i]);
        } else
            free(io->cow_buf[i]);
    }
    if (ret == 0)
        memory_apply_done(s, req);
    else
        ng_req_complete(req, ret);
}

static void
memory_cow_piece_done(struct memory_io *io, int ret)
{
    if (ret < 0 && io->ret == 0)
        io->ret = ret;
    if (--io->pending == 0)
        memory_cow_finish(io);
}

static void
memory_cow_read_done(struct ng_req *sub, int ret)
{
    memory_cow_piece_done(sub->opaque, ret);
}

/* Does the chunk of [off, off + left) in off's page need copying up? */
static bool
memory_needs_cow(struct memory_state *s, const struct ng_req *req,
                 uint64_t off, uint64_t left)
{
    return req->op != NG_OP_TRIM &&
           s->pages[off >> MEMORY_PAGE_SHIFT] == NULL &&
           !memory_whole_page(s, off, memory_chunk(off, left));
}

/* Writes, write-zeroes and trims on an overlay.  Only the first and the
 * last page can be partial. */
static void
memory_backed_modify(struct memory_state *s, struct ng_req *req)
{
    uint64_t end = req->offset + req->length;
    uint64_t cand[2] = { req->offset, (end - 1) & ~MEMORY_PAGE_MASK };
    uint64_t need[2], span[2];
    unsigned ncand = cand[1] > cand[0] ? 2 : 1, nneed = 0, i;
    struct memory_io *io;

    for (i = 0; i < ncand; i++)
        if (memory_needs_cow(s, req, cand[i], end - cand[i]))
            need[nneed++] = cand[i] >> MEMORY_PAGE_SHIFT;
    if (nneed == 0) {
        memory_apply_done(s, req);
        return;
    }
    if (req->flags & NG_REQ_FAST_ZERO) {    /* copying up is not fast */
        ng_req_complete(req, -ENOTSUP);
        return;
    }
    if ((io = memory_io_get(s, req)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    for (i = 0; i < nneed; i++) {
        uint64_t page_off = need[i] << MEMORY_PAGE_SHIFT;
        unsigned char *buf = malloc(MEMORY_PAGE_SIZE);

        if (buf == NULL) {
            while (i-- > 0)
                free(io->cow_buf[i]);
            ng_req_complete(req, -ENOSPC);
            return;
        }
        span[i] = memory_backing_span(s, page_off,
                                      memory_chunk(page_off,
                                                   s->size - page_off));
        memset(buf + span[i], 0, MEMORY_PAGE_SIZE - span[i]);
        io->cow_buf[i] = buf;
        io->cow_page[i] = need[i];
    }
    io->n_cow = nneed;
    io->pending = 1;                /* ours, until all are submitted */
    for (i = 0; i < nneed; i++) {
        if (span[i] == 0)
            continue;
        io->pending++;
        memory_sub_init(&io->sub[i], NG_OP_READ,
                        need[i] << MEMORY_PAGE_SHIFT, span[i], 0,
                        memory_cow_read_done, io);
        ng_req_set_buf(&io->sub[i], io->cow_buf[i]);
        ng_node_submit(s->backing, &io->sub[i]);
    }
    /* Not through sub[0]: it was not used when span[0] is 0. */
    memory_cow_piece_done(io, 0);
}

/* ---- Block status through the backing ----------------------------------- */

/* Block status of an overlay: this layer's allocated and zeroed pages,
 * and the backing's answer for the runs of unallocated ones.  Walks the
 * range asking the backing node run by run; a backing that answers short
 * ends the answer there (a short answer is allowed). */

static void
memory_bs_finish(struct memory_io *io, int ret)
{
    ng_req_complete(io->req, ret);
}

/* Add this layer's extents from io->bs_off on, up to the next run of
 * unallocated pages the backing has data for; sets io->bs_len to that
 * run's length, 0 when the answer is complete. */
static void
memory_bs_walk(struct memory_state *s, struct memory_io *io)
{
    struct ng_req *req = io->req;
    uint32_t max = memory_max_extents(req);
    uint64_t end = req->offset + req->length, off = io->bs_off, run;

    io->bs_len = 0;
    while (off < end) {
        uint64_t n = memory_chunk(off, end - off);
        const unsigned char *p = s->pages[off >> MEMORY_PAGE_SHIFT];

        if (p == NULL) {
            for (run = n; off + run < end &&
                 s->pages[(off + run) >> MEMORY_PAGE_SHIFT] == NULL;
                 run += memory_chunk(off + run, end - off - run))
                ;
            io->bs_off = off;
            io->bs_len = memory_backing_span(s, off, run);
            if (io->bs_len > 0) {
                /* With the array full, the backing's first extent may
                 * still continue the last one. */
                io->bs_full = req->nr_extents == max;
                return;
            }
            /* Past the backing's end: zeroes. */
            if (!ng_req_add_extent(req, max, run,
                                   NG_EXTENT_HOLE | NG_EXTENT_ZERO))
                return;
            off += run;
            continue;
        }
        if (!ng_req_add_extent(req, max, n,
                               p == MEMORY_ZEROED(s) ? NG_EXTENT_ZERO : 0))
            return;
        off += n;
    }
}

/* Take in the backing's answer for the run; false when the request
 * finished. */
static bool
memory_bs_absorb(struct memory_io *io)
{
    struct ng_req *req = io->req, *sub = &io->sub[0];
    struct ng_extent *e = req->extents;
    uint32_t nr = req->nr_extents, got = sub->nr_extents;
    uint64_t covered = 0;

    if (io->sub_ret < 0) {
        memory_bs_finish(io, io->sub_ret);
        return false;
    }
    if (io->bs_full) {
        if (got == 0 || io->bs_scratch.flags != e[nr - 1].flags) {
            memory_bs_finish(io, 0);
            return false;
        }
        e[nr - 1].length += io->bs_scratch.length;
        covered = io->bs_scratch.length;
        got = 0;
    }
    for (uint32_t i = 0; i < got; i++)
        covered += e[nr + i].length;
    /* The backing's first extent may continue our last one. */
    if (nr > 0 && got > 0 && e[nr - 1].flags == e[nr].flags) {
        e[nr - 1].length += e[nr].length;
        memmove(&e[nr], &e[nr + 1], (got - 1) * sizeof *e);
        got--;
    }
    req->nr_extents = nr + got;
    if (covered < io->bs_len) {
        memory_bs_finish(io, 0);
        return false;
    }
    io->bs_off += covered;
    return true;
}

static void memory_bs_step(struct memory_io *io);

static void
memory_bs_sub_done(struct ng_req *sub, int ret)
{
    struct memory_io *io = sub->opaque;

    io->sub_ret = ret;
    io->sub_done = true;
    /* Answered inline: memory_bs_step() carries on, without recursing. */
    if (io->in_submit)
        return;
    if (memory_bs_absorb(io))
        memory_bs_step(io);
}

static void
memory_bs_step(struct memory_io *io)
{
    struct memory_state *s = ng_node_state(io->node);
    struct ng_req *req = io->req;

    for (;;) {
        memory_bs_walk(s, io);
        if (io->bs_len == 0) {
            memory_bs_finish(io, 0);
            return;
        }
        memory_sub_init(&io->sub[0], NG_OP_BLOCK_STATUS, io->bs_off,
                        io->bs_len,
                        io->bs_full ? NG_REQ_REQ_ONE :
                                      req->flags & NG_REQ_REQ_ONE,
                        memory_bs_sub_done, io);
        if (io->bs_full) {
            io->sub[0].extents = &io->bs_scratch;
            io->sub[0].max_extents = 1;
        } else {
            io->sub[0].extents = req->extents + req->nr_extents;
            io->sub[0].max_extents = memory_max_extents(req) -
                                     req->nr_extents;
        }
        io->sub_done = false;
        io->in_submit = true;
        ng_node_submit(s->backing, &io->sub[0]);
        io->in_submit = false;
        if (!io->sub_done || !memory_bs_absorb(io))
            return;
    }
}

static void
memory_block_status(struct memory_state *s, struct ng_req *req)
{
    struct memory_io *io;

    if (s->backing == NULL || (req->flags & NG_REQ_LOCAL_ONLY)) {
        memory_block_status_local(s, req);
        ng_req_complete(req, 0);
        return;
    }
    if ((io = memory_io_get(s, req)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    req->nr_extents = 0;
    io->bs_off = req->offset;
    memory_bs_step(io);
}

static void
memory_submit(struct ng_node *node, struct ng_req *req)
{
    struct memory_state *s = ng_node_state(node);
    int ret = 0;

    switch (req->op) {
    case NG_OP_READ:
        if (s->backing != NULL)
            memory_backed_read(s, req);
        else
            memory_read_done(s, req, false);
        return;
    case NG_OP_WRITE:               /* FUA: RAM has nowhere to flush */
    case NG_OP_TRIM:
    case NG_OP_WRITE_ZEROES:
        if (s->backing != NULL)
            memory_backed_modify(s, req);
        else
            memory_apply_done(s, req);
        return;
    case NG_OP_BLOCK_STATUS:
        memory_block_status(s, req);
        return;
    case NG_OP_FLUSH:
    case NG_OP_CACHE:
        break;
    default:
        ret = -EINVAL;
        break;
    }
    ng_req_complete(req, ret);
}

/* block_resize: a bigger table with the pages moved over.  Trips in
 * flight hold pages, not the table (memory_trip_allocate), so it may be
 * replaced between two requests.  The new pages read as zeroes; with a
 * backing node they would show its data if it were longer than us. */
static int
memory_grow(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    struct memory_state *s = ng_node_state(node);
    uint64_t n = memory_pages_for(size), last = s->size >> MEMORY_PAGE_SHIFT;
    uint64_t tail = s->size & MEMORY_PAGE_MASK;
    unsigned char **pages;

    if (size > MEMORY_MAX_SIZE)
        return ng_error_set(err, EFBIG, "size %" PRIu64 " is too large for "
                            "a memory disk (at most " MEMORY_MAX_TEXT ")",
                            size);
    if (s->backing != NULL &&
        ng_node_length(s->backing) > (int64_t)s->size)
        return ng_error_set(err, ENOTSUP, "node '%s' is shorter than its "
                            "backing node '%s': growing it would show the "
                            "backing's data", node->name, s->backing->name);
    /* A trip may be filling the last page past the old end (below). */
    if (tail != 0 && s->trip_head != NULL)
        return ng_error_set(err, EBUSY, "node '%s' has copies in flight "
                            "into its last page; try again", node->name);
    if (n > s->npages) {
        if ((pages = memory_table_new(n)) == NULL)
            return ng_error_set(err, ENOMEM, "cannot allocate the page "
                                "table for size %" PRIu64, size);
        if (s->top > 0)
            memcpy(pages, s->pages, s->top * sizeof *pages);
        memory_table_free(s->pages, s->npages);
        s->pages = pages;
        s->npages = n;
    }
    /* A write that filled the last page up to the old end got it from
     * malloc(): what lies past that end was never zeroed. */
    if (tail != 0 && last < s->top && s->pages[last] != NULL &&
        s->pages[last] != MEMORY_ZEROED(s))
        memset(s->pages[last] + tail, 0, MEMORY_PAGE_SIZE - tail);
    s->size = size;
    return 0;
}

/* block_resize of a node nothing uses (ng_node_resize()): the pages past
 * the new end go; the table keeps its length (memory_grow() zeroes the
 * tail of a partial last page should the disk grow again). */
static int
memory_shrink(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    struct memory_state *s = ng_node_state(node);
    uint64_t n = memory_pages_for(size);

    if (s->trip_head != NULL)
        return ng_error_set(err, EBUSY, "node '%s' has copies in flight; "
                            "try again", node->name);
    for (uint64_t i = n; i < s->top; i++) {
        if (s->pages[i] != NULL && s->pages[i] != MEMORY_ZEROED(s))
            free(s->pages[i]);
        s->pages[i] = NULL;
    }
    if (s->top > n)
        s->top = n;
    s->size = size;
    return 0;
}

static int
memory_refresh(struct ng_node *node, struct ng_node_facts *facts,
               struct ng_error *err)
{
    const struct memory_state *s = ng_node_state(node);

    (void)err;
    facts->size = (int64_t)s->size;
    facts->caps = NG_CAPS_LEAF_ALL;
    return 0;
}

const struct ng_driver ng_driver_memory = {
    .name       = "memory",
    .help       = "sparse RAM disk, lost when the node closes",
    .is_filter  = false,
    .state_size = sizeof(struct memory_state),
    .req_ctx_size = sizeof(struct memory_io),
    .opts       = memory_opts,
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope = NG_POOL_PER_DRIVER,
    .threads    = MEMORY_THREADS,
    .open       = memory_open,
    .close      = memory_close,
    .close_async = memory_close_async,
    .submit     = memory_submit,
    .refresh    = memory_refresh,
    .grow       = memory_grow,
    .shrink     = memory_shrink,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
