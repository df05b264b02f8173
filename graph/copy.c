/* graph/copy.c: the jobs' copy engine (see copy.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/bitmap.h"
#include "graph/copy.h"
#include "graph/graph.h"

/* One chunk slot: a request and the buffer it reads into. */
struct copy_chunk {
    struct ng_copy *c;
    struct ng_req req;
    void *buf;                      /* p.chunk bytes, owned */
    uint64_t offset, length;
    struct ng_extent ext;           /* the source's block status */
    bool busy;
    bool background;                /* the background pass's, which no
                                     * client waits for (NG_REQ_BACKGROUND
                                     * on its reads and writes) */
};

struct ng_copy {
    struct ng_copy_params p;
    const struct ng_copy_ops *ops;
    void *opaque;
    uv_timer_t *timer;              /* kicks, rate limit, notifications;
                                     * owned, closed asynchronously */
    uv_idle_t *idle;                /* goes on after a pump's time slice:
                                     * a 0 ms timer re-armed from a timer
                                     * callback would run again before
                                     * libuv polls for client I/O */
    struct copy_chunk *chunks;      /* p.max_in_flight slots */
    unsigned in_flight;
    uint64_t in_flight_bytes;
    uint64_t cursor;                /* where the next search starts */
    uint64_t done;                  /* bytes copied */
    uint64_t left_at_stop;          /* dirty bytes when the stop ended */
    bool running;
    bool stopping;
    bool pumping, again;            /* pump() runs; run it once more */
    struct ng_copy_waiter *waiters; /* ranges wanted first */
    struct ng_copy_lock *locks;     /* held or asked for, oldest first */
    uint64_t retry_ms;              /* the background pass waits until
                                     * then (ng_copy_retry) */
    bool converged_told;            /* since the last chunk started */
    /* Notifications waiting for the timer. */
    bool tell_converged, tell_stopped, tell_error;
    bool stopped_told;              /* ops->stopped ran: never again (the
                                     * owner may be gone) */
    bool error_is_read;
    int error;
    /* Token bucket: bytes that may start now (negative: owed). */
    double tokens;
    uint64_t refilled_ns;
    uint64_t pumped_cpu_ns;         /* the loop thread's CPU time when
                                     * the last pump() ended */
    /* Holding back for clients (see clients_busy, busy_width). */
    struct ng_graph *graph;         /* the source's, which outlives us */
    unsigned busy_width;            /* background chunks while they are;
                                     * 0: not yet set */
    uint64_t window_ms;             /* when these were taken: */
    uint64_t window_count;          /* the bitmap's count */
    uint64_t window_done;           /* bytes copied */
};

/* ---- Buffers: the one place that knows how a request carries data ---- */

static void
req_set_data(struct ng_req *req, void *buf)
{
    ng_req_set_buf(req, buf);
}

/* ---- Scheduling --------------------------------------------------------- */

static void pump(struct ng_copy *c);
static void timer_fired(uv_timer_t *t);
static void idle_fired(uv_idle_t *h);

/* Run pump() from the loop's idle phase, once: a completion (a chunk's
 * or a client write's; a poll phase may bring dozens) must not start
 * chunks itself, or each would hold the loop for a slice of its own
 * while clients wait.  Inside pump() already: one more round. */
static void
defer_pump(struct ng_copy *c)
{
    if (c->pumping)
        c->again = true;
    else if (!uv_is_active((uv_handle_t *)c->idle))
        uv_idle_start(c->idle, idle_fired);
}

/* Run timer_fired after delay_ms (0: on the next loop turn). */
static void
schedule(struct ng_copy *c, uint64_t delay_ms)
{
    if (uv_is_active((uv_handle_t *)c->timer) &&
        uv_timer_get_due_in(c->timer) <= delay_ms)
        return;
    uv_timer_start(c->timer, timer_fired, delay_ms, 0);
}

/* Owner callbacks run from here only, outside every call into us. */
static void
timer_fired(uv_timer_t *t)
{
    struct ng_copy *c = t->data;

    if (c->tell_error) {
        c->tell_error = false;
        c->ops->error(c->opaque, c->error_is_read, c->error);
    }
    if (c->tell_converged) {
        c->tell_converged = false;
        if (ng_copy_is_converged(c) && c->running && !c->stopping)
            c->ops->converged(c->opaque);
    }
    if (c->tell_stopped) {
        c->tell_stopped = false;
        c->stopped_told = true;
        c->ops->stopped(c->opaque);     /* may free c */
        return;
    }
    if (c->stopped_told)
        return;
    pump(c);
}

/* ---- Rate limit ------------------------------------------------------- */

/* 0 if a chunk may start now, else milliseconds to wait. */
static uint64_t
rate_delay(struct ng_copy *c)
{
    uint64_t now = uv_hrtime();
    double cap;

    if (c->p.speed == 0)
        return 0;
    /* A tenth of a second's worth, but never less than a chunk, so a
     * slow limit still makes progress. */
    cap = (double)c->p.speed / 10;
    if (cap < c->p.chunk)
        cap = c->p.chunk;
    c->tokens += (double)(now - c->refilled_ns) * 1e-9 * (double)c->p.speed;
    c->refilled_ns = now;
    if (c->tokens > cap)
        c->tokens = cap;
    if (c->tokens > 0)
        return 0;
    return (uint64_t)(-c->tokens * 1e3 / (double)c->p.speed) + 1;
}

/* ---- Chunks ------------------------------------------------------------- */

static void chunk_submit(struct copy_chunk *k, struct ng_bb *bb,
                         enum ng_op op, uint32_t flags,
                         void (*done)(struct ng_req *, int));

static void
chunk_release(struct copy_chunk *k)
{
    struct ng_copy *c = k->c;

    k->busy = false;
    c->in_flight--;
    c->in_flight_bytes -= k->length;
    defer_pump(c);
}

/* A request failed: the range is dirty again (or, with p.failed, kept
 * there), the engine holds still until the owner has heard of it, and
 * the waiters over the range will hear of it: their writes must not
 * overwrite data that was not saved. */
static void
chunk_fail(struct copy_chunk *k, bool is_read, int err)
{
    struct ng_copy *c = k->c;
    struct ng_copy_waiter *w;

    ng_bitmap_set(c->p.failed != NULL ? c->p.failed : c->p.bitmap,
                  k->offset, k->length);
    c->running = false;
    for (w = c->waiters; w != NULL; w = w->next) {
        if (w->failed == 0 && k->offset < w->offset + w->length &&
            w->offset < k->offset + k->length)
            w->failed = err;
    }
    if (!c->tell_error) {
        c->tell_error = true;
        c->error_is_read = is_read;
        c->error = err;
    }
    schedule(c, 0);
    chunk_release(k);
}

static void
chunk_written(struct ng_req *req, int ret)
{
    struct copy_chunk *k = req->opaque;

    if (ret < 0) {
        chunk_fail(k, false, ret);
        return;
    }
    k->c->done += k->length;
    chunk_release(k);
}

static void
chunk_read(struct ng_req *req, int ret)
{
    struct copy_chunk *k = req->opaque;

    if (ret < 0) {
        chunk_fail(k, true, ret);
        return;
    }
    if (k->c->p.target == NULL) {   /* pull: the read did the work */
        chunk_written(req, 0);
        return;
    }
    chunk_submit(k, k->c->p.target, NG_OP_WRITE, 0, chunk_written);
}

/* Only the first extent is known: copy that much now and leave the rest
 * dirty for the next chunk (whole granules only). */
static void
chunk_shrink(struct copy_chunk *k, uint64_t extent)
{
    struct ng_copy *c = k->c;
    uint64_t gran = c->p.bitmap->granularity;
    uint64_t keep = extent / gran * gran;

    if (extent >= k->length || keep == 0)
        return;
    ng_bitmap_set(c->p.bitmap, k->offset + keep, k->length - keep);
    c->in_flight_bytes -= k->length - keep;
    c->tokens += (double)(k->length - keep);
    k->length = keep;
    if (c->cursor > k->offset + keep)
        c->cursor = k->offset + keep;
}

/* Zeroes on the target: write-zeroes that may punch a hole, or, on a
 * target without it, a write of a zeroed buffer. */
static void
chunk_write_zeroes(struct copy_chunk *k)
{
    if (ng_bb_caps(k->c->p.target) & NG_CAP_ZERO) {
        chunk_submit(k, k->c->p.target, NG_OP_WRITE_ZEROES, NG_REQ_MAY_TRIM,
                     chunk_written);
        return;
    }
    chunk_shrink(k, k->c->p.chunk);     /* the buffer's size */
    memset(k->buf, 0, k->length);
    chunk_submit(k, k->c->p.target, NG_OP_WRITE, 0, chunk_written);
}

/* The first extent is all the source said: zeroes for as much of the
 * span as it covers, else a read of at most one buffer. */
static void
chunk_status(struct ng_req *req, int ret)
{
    struct copy_chunk *k = req->opaque;

    if (ret < 0) {
        chunk_fail(k, true, ret);
        return;
    }
    chunk_shrink(k, k->ext.length);
    if ((k->ext.flags & NG_EXTENT_ZERO) && k->ext.length >= k->length) {
        chunk_write_zeroes(k);
        return;
    }
    chunk_shrink(k, k->c->p.chunk);
    chunk_submit(k, k->c->p.source, NG_OP_READ, 0, chunk_read);
}

static void
chunk_submit(struct copy_chunk *k, struct ng_bb *bb, enum ng_op op,
             uint32_t flags, void (*done)(struct ng_req *, int))
{
    if (k->background && op != NG_OP_BLOCK_STATUS)
        flags |= NG_REQ_BACKGROUND;
    ng_req_init(&k->req, op, k->offset, k->length, flags);
    req_set_data(&k->req, op == NG_OP_READ || op == NG_OP_WRITE ? k->buf
                                                                : NULL);
    if (op == NG_OP_BLOCK_STATUS) {
        k->req.extents = &k->ext;
        k->req.max_extents = 1;
    }
    k->req.done = done;
    k->req.opaque = k;
    ng_bb_submit(bb, &k->req);
}

/* ---- Picking what to copy --------------------------------------------- */

/* A lock's range rounded out to whole granules (and cut at the end). */
static void
lock_span(const struct ng_copy *c, uint64_t off, uint64_t len, uint64_t *lo,
          uint64_t *hi)
{
    uint64_t gran = c->p.bitmap->granularity;

    *lo = off / gran * gran;
    *hi = (off + len + gran - 1) / gran * gran;
    if (*hi > c->p.bitmap->size)
        *hi = c->p.bitmap->size;
}

/* Whether [lo, hi) is busy at `off`: then *busy_end is where it ends;
 * else *next_busy comes down to lo when that lies above off. */
static bool
span_busy_at(uint64_t lo, uint64_t hi, uint64_t off, uint64_t *busy_end,
             uint64_t *next_busy)
{
    if (off >= lo && off < hi) {
        *busy_end = hi;
        return true;
    }
    if (lo > off && lo < *next_busy)
        *next_busy = lo;
    return false;
}

/* Whether a chunk in flight or a lock (held or asked for) covers `off`:
 * then *busy_end is where that ends; else *next_busy is the start of the
 * nearest such range above `off` (or the end of the node). */
static bool
busy_at(struct ng_copy *c, uint64_t off, uint64_t *busy_end,
        uint64_t *next_busy)
{
    struct ng_copy_lock *l;
    uint64_t lo, hi;
    unsigned i;

    *next_busy = c->p.bitmap->size;
    for (i = 0; i < c->p.max_in_flight; i++) {
        struct copy_chunk *k = &c->chunks[i];

        if (k->busy && span_busy_at(k->offset, k->offset + k->length, off,
                                    busy_end, next_busy))
            return true;
    }
    for (l = c->locks; l != NULL; l = l->next) {
        lock_span(c, l->offset, l->length, &lo, &hi);
        if (span_busy_at(lo, hi, off, busy_end, next_busy))
            return true;
    }
    return false;
}

/* How much one chunk may ask block status of: a zero run may go whole
 * (see zero_span), but under a rate limit no more than the tokens allow
 * (a slow mirror of an empty disk must stay slow); a pull reads it all
 * into the buffer. */
static uint64_t
chunk_span(const struct ng_copy *c)
{
    uint64_t gran = c->p.bitmap->granularity;
    uint64_t span = c->p.target == NULL ? c->p.chunk : c->p.zero_span;

    if (c->p.speed != 0 && c->tokens < (double)span)
        span = c->tokens > c->p.chunk ? (uint64_t)c->tokens / gran * gran
                                      : c->p.chunk;
    return span;
}

/* The next dirty range at or after `from` that no chunk in flight
 * overlaps: a second copy of a range must not race the first to the
 * target.  False when there is none before the end. */
static bool
pick_range(struct ng_copy *c, uint64_t from, uint64_t limit, uint64_t *off,
           uint64_t *len)
{
    struct ng_bitmap *bm = c->p.bitmap;
    uint64_t start, end, busy_end, next_busy;
    uint64_t span = chunk_span(c);

    for (start = ng_bitmap_next_dirty(bm, from); start < limit;
         start = ng_bitmap_next_dirty(bm, busy_end)) {
        if (busy_at(c, start, &busy_end, &next_busy))
            continue;
        end = ng_bitmap_next_clean(bm, start);
        if (end > next_busy)
            end = next_busy;
        if (end - start > span)
            end = start + span;
        *off = start;
        *len = end - start;
        return true;
    }
    return false;
}

static struct copy_chunk *
free_slot(struct ng_copy *c)
{
    unsigned i;

    for (i = 0; i < c->p.max_in_flight; i++)
        if (!c->chunks[i].busy)
            return &c->chunks[i];
    return NULL;
}

/* A dirty range a waiter wants; false when there is none to start. */
static bool
pick_wanted(struct ng_copy *c, uint64_t *off, uint64_t *len)
{
    struct ng_copy_waiter *w;

    for (w = c->waiters; w != NULL; w = w->next) {
        uint64_t end = w->offset + w->length;
        uint64_t gran = c->p.bitmap->granularity;

        if (!pick_range(c, w->offset, end, off, len))
            continue;
        /* No more than the waiter needs: its write waits on it. */
        end = (end + gran - 1) / gran * gran;
        if (*off + *len > end)
            *len = end - *off;
        return true;
    }
    return false;
}

/* How long after an ignored error the background pass may come round
 * to it again. */
#define COPY_RETRY_MS 100u

/* The next range of the background pass, from the cursor round.  After
 * an ignored error (ng_copy_retry) the pass goes on to the end, but
 * comes round to what failed again only COPY_RETRY_MS later. */
static bool
pick_next(struct ng_copy *c, uint64_t *off, uint64_t *len)
{
    uint64_t size = c->p.bitmap->size;
    uint64_t now = uv_now(c->graph->loop);

    if (pick_range(c, c->cursor, size, off, len))
        return true;
    if (c->retry_ms > now) {
        schedule(c, c->retry_ms - now);
        return false;
    }
    return pick_range(c, 0, size, off, len);
}

static void
start_chunk(struct ng_copy *c, uint64_t off, uint64_t len, bool background)
{
    struct copy_chunk *k;

    k = free_slot(c);
    k->busy = true;
    k->background = background;
    k->offset = off;
    k->length = len;
    c->cursor = off + len;
    c->in_flight++;
    c->in_flight_bytes += len;
    c->tokens -= (double)len;
    c->converged_told = false;
    /* Cleared before the read: a write landing from now on sets it
     * again and is copied once more. */
    ng_bitmap_reset(c->p.bitmap, off, len);
    if (c->p.target == NULL)        /* pull: every range is read, and a
                                     * copy-up that fails fails it */
        chunk_submit(k, c->p.source, NG_OP_READ, NG_REQ_PREFETCH,
                     chunk_read);
    else
        chunk_submit(k, c->p.source, NG_OP_BLOCK_STATUS, NG_REQ_REQ_ONE,
                     chunk_status);
}

static void
idle_fired(uv_idle_t *h)
{
    uv_idle_stop(h);
    pump(h->data);
}

/* A pump that has run this long lets the loop serve clients before it
 * goes on: with drivers that complete inline (memory, a file on tmpfs)
 * one pump would otherwise copy the whole disk in one go.  A client's
 * request that arrives meanwhile waits for the rest of the slice (and of
 * the chunk under way), so a light client load gets a short one:
 * measured with the thread's CPU time per loop iteration during a
 * memory-to-tmpfs mirror, 200 us made most iterations 0.5-1 ms long,
 * 30 us (with 64 KiB chunks) 32-64 us, for the same CPU per byte copied.
 * But the slice grows with the CPU time the loop thread spent elsewhere
 * since the last one, up to the old 200 us, so the copy keeps a fair
 * share of a loop busy with other work -- unless clients are busy
 * (clients_busy() below): then they come first, the slice stays the
 * shortest and the background pass runs narrower (busy_width(); a
 * 1 GiB mirror still reached ready several times in 5 s under the qd1
 * writer of contrib/bench/mirror-speed, at load 7-9).  CPU time, not
 * wall time: a loop that slept waiting for the target's workers served
 * nobody meanwhile, and a long slice then would only make a client
 * arriving during it wait. */
#define PUMP_SLICE_MIN_NS 30000ull
#define PUMP_SLICE_MAX_NS 200000ull

static uint64_t
thread_cpu_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t
pump_slice(struct ng_copy *c, uint64_t cpu_now)
{
    uint64_t elsewhere = cpu_now - c->pumped_cpu_ns;

    return elsewhere < PUMP_SLICE_MIN_NS ? PUMP_SLICE_MIN_NS
         : elsewhere > PUMP_SLICE_MAX_NS ? PUMP_SLICE_MAX_NS : elsewhere;
}

/* While clients of the graph are busy, the background pass runs
 * narrower and takes the shortest slice: on 2 cores sixteen chunks'
 * reads, writes and completions compete with every client request for
 * the loop and the CPUs (a qd1 4 KiB writer's p99 went 4-6x up under a
 * full-speed mirror).  Clients are busy from a request of theirs until
 * COPY_CLIENTS_QUIET_MS after their last one.  A copy with no client
 * running goes at full width. */
#define COPY_CLIENTS_QUIET_MS 100u

static bool
clients_busy(const struct ng_copy *c)
{
    uint64_t last = c->graph->client_request_ms;

    return last != 0 &&
           uv_now(c->graph->loop) - last < COPY_CLIENTS_QUIET_MS;
}

/* The width while clients are busy: COPY_BUSY_WIDTH_MIN chunks, doubled
 * (up to the full width, never narrowed again) each COPY_WIDEN_MS in
 * which chunks were copied but the dirty count did not fall: clients
 * that dirty faster than the narrow copy cleans (four writers of 64 KiB
 * blocks) must not keep a mirror from ever getting ready.  A window in
 * which nothing was copied (the daemon had no CPU) says nothing. */
#define COPY_BUSY_WIDTH_MIN 2u
#define COPY_WIDEN_MS 100u

static unsigned
busy_width(struct ng_copy *c)
{
    uint64_t now = uv_now(c->graph->loop);
    uint64_t count = c->p.bitmap->count;

    if (c->busy_width == 0) {
        c->busy_width = COPY_BUSY_WIDTH_MIN;
    } else if (now - c->window_ms < COPY_WIDEN_MS) {
        return c->busy_width;
    } else if (count > 0 && count >= c->window_count &&
               c->done > c->window_done) {
        c->busy_width *= 2;
    }
    if (c->busy_width > c->p.max_in_flight)
        c->busy_width = c->p.max_in_flight;
    c->window_ms = now;
    c->window_count = count;
    c->window_done = c->done;
    return c->busy_width;
}

/* Wanted ranges first, unlimited (a client waits); then the background
 * pass under the rate limit, narrower while clients are busy. */
static void
pump_once(struct ng_copy *c, uint64_t started_ns, uint64_t slice,
          unsigned background_max)
{
    uint64_t delay, off, len;

    while (!c->stopping && c->in_flight < c->p.max_in_flight) {
        if (uv_hrtime() - started_ns > slice) {
            uv_idle_start(c->idle, idle_fired);
            return;
        }
        if (pick_wanted(c, &off, &len)) {
            start_chunk(c, off, len, false);
            continue;
        }
        if (!c->running || c->p.on_demand ||
            c->in_flight >= background_max)
            return;                 /* a completion pumps again */
        if ((delay = rate_delay(c)) > 0) {
            if (c->p.bitmap->count > 0)
                schedule(c, delay);
            return;
        }
        if (!pick_next(c, &off, &len))
            return;
        start_chunk(c, off, len, true);
    }
}

/* No dirty granule in w's range and no chunk in flight over it. */
static bool
waiter_satisfied(struct ng_copy *c, const struct ng_copy_waiter *w)
{
    uint64_t end = w->offset + w->length;
    unsigned i;

    if (ng_bitmap_next_dirty(c->p.bitmap, w->offset) < end)
        return false;
    for (i = 0; i < c->p.max_in_flight; i++) {
        const struct copy_chunk *k = &c->chunks[i];

        if (k->busy && k->offset < end && w->offset < k->offset + k->length)
            return false;
    }
    return true;
}

/* ---- Locks (write-blocking writes) ------------------------------------- */

/* A chunk in flight or a lock older than l overlaps l. */
static bool
lock_blocked(struct ng_copy *c, const struct ng_copy_lock *l)
{
    const struct ng_copy_lock *o;
    uint64_t lo, hi, olo, ohi;
    unsigned i;

    lock_span(c, l->offset, l->length, &lo, &hi);
    for (i = 0; i < c->p.max_in_flight; i++) {
        const struct copy_chunk *k = &c->chunks[i];

        if (k->busy && k->offset < hi && lo < k->offset + k->length)
            return true;
    }
    for (o = c->locks; o != l; o = o->next) {
        lock_span(c, o->offset, o->length, &olo, &ohi);
        if (olo < hi && lo < ohi)
            return true;
    }
    return false;
}

/* Granted: what the write should copy.  A partly covered granule that is
 * dirty stays out of it (and dirty); one that is clean stays clean while
 * the lock is held, so the write may clear it. */
static void
lock_grant(struct ng_copy *c, struct ng_copy_lock *l)
{
    struct ng_bitmap *bm = c->p.bitmap;
    uint64_t gran = bm->granularity;
    uint64_t off = l->offset, end = l->offset + l->length;

    l->held = true;
    if (off % gran != 0 && ng_bitmap_get(bm, off))
        off = (off + gran - 1) / gran * gran;
    if (end % gran != 0 && end < bm->size && end > off &&
        ng_bitmap_get(bm, end - 1))
        end = end / gran * gran;
    l->copy_offset = off;
    l->copy_length = end > off ? end - off : 0;
}

static void
lock_unlink(struct ng_copy *c, struct ng_copy_lock *l)
{
    struct ng_copy_lock **p;

    for (p = &c->locks; *p != NULL; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    l->next = NULL;
}

/* Grant what may be granted now, or fail every waiting lock when the
 * engine stops.  A callback may take or drop locks: rescan after each. */
static void
grant_locks(struct ng_copy *c)
{
    struct ng_copy_lock *l;

again:
    for (l = c->locks; l != NULL; l = l->next) {
        if (l->held)
            continue;
        if (c->stopping) {
            lock_unlink(c, l);
            l->granted(l, -ECANCELED);
            goto again;
        }
        if (!lock_blocked(c, l)) {
            lock_grant(c, l);
            l->granted(l, 0);
            goto again;
        }
    }
}

int
ng_copy_lock(struct ng_copy *c, struct ng_copy_lock *l)
{
    struct ng_copy_lock **p;

    if (c->stopping)
        return -1;
    l->held = false;
    l->next = NULL;
    for (p = &c->locks; *p != NULL; p = &(*p)->next)
        ;
    *p = l;
    if (!lock_blocked(c, l)) {
        lock_grant(c, l);
        return 1;
    }
    return 0;
}

void
ng_copy_unlock(struct ng_copy *c, struct ng_copy_lock *l, bool copied)
{
    uint64_t lo, hi;

    lock_unlink(c, l);
    if (l->copy_length > 0) {
        lock_span(c, l->copy_offset, l->copy_length, &lo, &hi);
        if (copied) {
            ng_bitmap_reset(c->p.bitmap, lo, hi - lo);
            c->done += l->copy_length;
        } else {
            ng_bitmap_set(c->p.bitmap, lo, hi - lo);
        }
    }
    defer_pump(c);
}

/* Tell the waiters that are satisfied or whose range failed, or all
 * with `fail` (< 0).  A callback may add waiters: take each off the
 * list first, rescan. */
static void
wake_waiters(struct ng_copy *c, int fail)
{
    struct ng_copy_waiter **p, *w;
    int ret;

again:
    for (p = &c->waiters; (w = *p) != NULL; p = &w->next) {
        ret = fail < 0 ? fail : w->failed;
        if (ret < 0 || waiter_satisfied(c, w)) {
            *p = w->next;
            w->next = NULL;
            w->done(w, ret);
            goto again;
        }
    }
}

int
ng_copy_wait(struct ng_copy *c, struct ng_copy_waiter *w)
{
    if (c->stopping || waiter_satisfied(c, w))
        return 1;
    w->failed = 0;
    w->next = c->waiters;
    c->waiters = w;
    schedule(c, 0);
    return 0;
}

/* Bytes not copied and not in flight: still dirty, or failed and
 * skipped (p.failed), which a job's progress counts as never done. */
static uint64_t
left_bytes(const struct ng_copy *c)
{
    return ng_bitmap_dirty_bytes(c->p.bitmap) +
           (c->p.failed != NULL ? ng_bitmap_dirty_bytes(c->p.failed) : 0);
}

/* Start what may start.  Completions that come inline call back in here;
 * they only ask for one more round, so the stack stays flat. */
static void
pump(struct ng_copy *c)
{
    uint64_t started_ns, slice;
    unsigned background_max = c->p.max_in_flight;

    if (c->pumping) {
        c->again = true;
        return;
    }
    started_ns = uv_hrtime();
    slice = pump_slice(c, thread_cpu_ns());
    if (c->running && !c->stopping && clients_busy(c)) {
        slice = PUMP_SLICE_MIN_NS;
        background_max = busy_width(c);
    }
    c->pumping = true;
    do {
        c->again = false;
        pump_once(c, started_ns, slice, background_max);
        grant_locks(c);
    } while (c->again);
    c->pumping = false;
    c->pumped_cpu_ns = thread_cpu_ns();
    if (c->waiters != NULL)
        wake_waiters(c, c->stopping ? -ECANCELED : 0);
    if (c->stopping && c->in_flight == 0 && c->locks == NULL &&
        !c->tell_stopped &&
        !c->stopped_told) {
        c->left_at_stop = left_bytes(c);
        c->tell_stopped = true;
        schedule(c, 0);
    } else if (c->running && !c->converged_told &&
               ng_copy_is_converged(c)) {
        c->converged_told = true;
        c->tell_converged = true;
        schedule(c, 0);
    }
}

/* ---- The engine ----------------------------------------------------------- */

static void
bitmap_dirtied(void *opaque)
{
    ng_copy_kick(opaque);
}

struct ng_copy *
ng_copy_new(uv_loop_t *loop, const struct ng_copy_params *params,
            const struct ng_copy_ops *ops, void *opaque,
            struct ng_error *err)
{
    struct ng_copy *c = calloc(1, sizeof *c);
    unsigned i;

    if (params->max_in_flight == 0 || params->chunk == 0 ||
        params->chunk % params->bitmap->granularity != 0) {
        free(c);
        ng_error_set(err, EINVAL, "copy chunk must be a multiple of the "
                     "bitmap granularity");
        return NULL;
    }
    if (c == NULL)
        goto oom;
    c->p = *params;
    if (c->p.zero_span < c->p.chunk)
        c->p.zero_span = c->p.chunk;
    c->ops = ops;
    c->opaque = opaque;
    c->graph = params->source->graph;
    c->refilled_ns = uv_hrtime();
    c->tokens = params->chunk;
    c->chunks = calloc(params->max_in_flight, sizeof *c->chunks);
    c->timer = malloc(sizeof *c->timer);
    c->idle = malloc(sizeof *c->idle);
    if (c->chunks == NULL || c->timer == NULL || c->idle == NULL)
        goto oom_timer;
    for (i = 0; i < params->max_in_flight; i++) {
        c->chunks[i].c = c;
        if ((c->chunks[i].buf = malloc(params->chunk)) == NULL)
            goto oom_timer;
    }
    if (uv_timer_init(loop, c->timer) != 0)
        goto oom_timer;
    c->timer->data = c;
    uv_idle_init(loop, c->idle);    /* cannot fail */
    c->idle->data = c;
    params->bitmap->on_dirty = bitmap_dirtied;
    params->bitmap->on_dirty_opaque = c;
    return c;

oom_timer:
    free(c->timer);
    free(c->idle);
    c->timer = NULL;
    c->idle = NULL;
    ng_copy_free(c);
oom:
    ng_error_set(err, ENOMEM, "out of memory");
    return NULL;
}

static void
free_handle(uv_handle_t *h)
{
    free(h);
}

void
ng_copy_free(struct ng_copy *c)
{
    unsigned i;

    if (c == NULL)
        return;
    if (c->timer != NULL) {
        uv_close((uv_handle_t *)c->timer, free_handle);
        uv_close((uv_handle_t *)c->idle, free_handle);
    }
    for (i = 0; c->chunks != NULL && i < c->p.max_in_flight; i++)
        free(c->chunks[i].buf);
    free(c->chunks);
    free(c);
}

void
ng_copy_resume(struct ng_copy *c)
{
    c->running = true;
    c->converged_told = false;
    schedule(c, 0);
}

void
ng_copy_retry(struct ng_copy *c)
{
    c->retry_ms = uv_now(c->graph->loop) + COPY_RETRY_MS;
    ng_copy_resume(c);
}

void
ng_copy_pause(struct ng_copy *c)
{
    c->running = false;
}

void
ng_copy_stop(struct ng_copy *c)
{
    c->stopping = true;
    c->running = false;
    schedule(c, 0);
}

void
ng_copy_kick(struct ng_copy *c)
{
    if (c->running && !c->stopping)
        schedule(c, 0);
}

void
ng_copy_set_speed(struct ng_copy *c, uint64_t speed)
{
    c->p.speed = speed;
    c->tokens = c->p.chunk;
    c->refilled_ns = uv_hrtime();
    ng_copy_kick(c);
}

void
ng_copy_progress(const struct ng_copy *c, uint64_t *current,
                 uint64_t *total)
{
    *current = c->done;
    *total = c->done + left_bytes(c) + c->in_flight_bytes;
}

void
ng_copy_final_progress(const struct ng_copy *c, uint64_t *current,
                       uint64_t *total)
{
    *current = c->done;
    *total = c->done + c->left_at_stop;
}

bool
ng_copy_is_converged(const struct ng_copy *c)
{
    return c->in_flight == 0 && c->p.bitmap->count == 0;
}

unsigned
ng_copy_in_flight(const struct ng_copy *c)
{
    return c->in_flight;
}
