/* graph/copy.h: the jobs' copy engine — DESIGN.md's one "pull"
 * mechanism.  It copies what a dirty bitmap says from a source BB to a
 * target BB: it takes the next dirty run of granules (at most
 * `zero_span` bytes), clears it, asks the source's block status, and
 * either writes zeroes on the target for as much of it as the first
 * extent says is zero or unallocated (with NG_REQ_MAY_TRIM so a sparse
 * source stays sparse), or reads at most `chunk` bytes of data and writes
 * them; what is left goes back to the bitmap.  Several chunks run at
 * once; a rate limit spaces them.  The background pass's reads and writes
 * carry NG_REQ_BACKGROUND.
 *
 * Writes that land on the source meanwhile set bits again (the choke
 * point marks the bitmap), so the engine keeps going until the bitmap is
 * clean with nothing in flight — "converged" — and wakes up again when
 * new bits appear.  A failed chunk is marked dirty again and reported;
 * the owner decides whether to go on, pause or stop.
 *
 * Loop thread only.  The engine never calls its owner's callbacks inside
 * one of the owner's calls.
 */
#ifndef NG_COPY_H
#define NG_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "graph/error.h"

struct ng_bb;
struct ng_bitmap;
struct ng_copy;

struct ng_copy_ops {
    /* The bitmap is clean and nothing is in flight.  Called each time
     * that becomes true again. */
    void (*converged)(void *opaque);
    /* A chunk failed with `err` (negative errno) reading the source
     * (is_read) or writing the target; its range is dirty again. */
    void (*error)(void *opaque, bool is_read, int err);
    /* ng_copy_stop() finished: nothing is in flight any more. */
    void (*stopped)(void *opaque);
};

/* A range someone waits for (copy-before-write): owned by the caller,
 * borrowed by the engine from ng_copy_wait() until `done` runs. */
struct ng_copy_waiter {
    uint64_t offset, length;
    void (*done)(struct ng_copy_waiter *w, int ret);  /* ret < 0: a chunk
                                     * over the range failed with ret (it
                                     * is dirty again), or -ECANCELED: the
                                     * engine stopped */
    void *opaque;                   /* the caller's */
    int failed;                     /* the engine's: */
    struct ng_copy_waiter *next;
};

struct ng_copy_params {
    struct ng_bb *source;           /* borrowed; read, block status */
    struct ng_bb *target;           /* borrowed; written.  NULL: pull
                                     * mode, each chunk is only read from
                                     * the source, whose read does the
                                     * work (block-stream reads through
                                     * a copy-on-read filter); no block
                                     * status, zero ranges are read too */
    struct ng_bitmap *bitmap;       /* borrowed: what is left to copy;
                                     * its granularity divides chunk */
    uint32_t chunk;                 /* bytes per read or write at most */
    uint64_t zero_span;             /* bytes a chunk may ask block status
                                     * of: a zero or unallocated run that
                                     * long goes to the target as one
                                     * write-zeroes (costing the loop no
                                     * more than a small one), data is
                                     * copied `chunk` at a time.  0 or
                                     * below chunk: chunk */
    unsigned max_in_flight;         /* chunks at once, >= 1 */
    uint64_t speed;                 /* bytes/s, 0 = no limit */
    bool on_demand;                 /* copy only what waiters ask for
                                     * (backup sync=none), no background
                                     * pass */
    struct ng_bitmap *failed;       /* borrowed, or NULL: a failed chunk's
                                     * range goes into this bitmap (of the
                                     * same size and granularity) instead
                                     * of back into `bitmap`, and is not
                                     * retried (block-stream's on-error
                                     * "ignore", which skips it, as
                                     * QEMU's does) */
};

/* A new engine, not running yet; it sets the bitmap's on_dirty hook to
 * wake itself.  NULL with *err set. */
struct ng_copy *ng_copy_new(uv_loop_t *loop,
                            const struct ng_copy_params *params,
                            const struct ng_copy_ops *ops, void *opaque,
                            struct ng_error *err);
/* Free an engine that never started or whose stop finished.  Its timer
 * closes asynchronously: the loop must run afterwards.  It does not touch
 * the bitmap (which may be gone already): whoever removes the bitmap
 * clears its on_dirty hook, or removes it first.  NULL-safe. */
void ng_copy_free(struct ng_copy *c);

/* Start or go on copying. */
void ng_copy_resume(struct ng_copy *c);
/* Go on after an error the owner ignores: the failed range is dirty and
 * is copied again, but the background pass comes round to it only a
 * moment later (COPY_RETRY_MS), so a range that keeps failing costs an
 * error now and then, not a loop spinning on it (and a flood of
 * BLOCK_JOB_ERROR). */
void ng_copy_retry(struct ng_copy *c);
/* Start no new chunk; those in flight finish. */
void ng_copy_pause(struct ng_copy *c);
/* Start no new chunk; once none is in flight, ops->stopped runs (never
 * inline). */
void ng_copy_stop(struct ng_copy *c);
/* New bits may be set: look again (soon, never inline). */
void ng_copy_kick(struct ng_copy *c);
void ng_copy_set_speed(struct ng_copy *c, uint64_t speed);

/* Copy w's range before anything else, also while paused (a client
 * write waits on it): w->done runs once no granule of it is dirty and no
 * chunk in flight overlaps it, never inline.  Returns 1 (w unused) when
 * that is true already. */
int ng_copy_wait(struct ng_copy *c, struct ng_copy_waiter *w);

/* A range a write holds while it goes to the source and then to the
 * target itself (mirror's write-blocking mode, filters/mirror-top.c):
 * owned by the caller, borrowed by the engine from ng_copy_lock() until
 * ng_copy_unlock().  The engine works in whole granules: the range is
 * rounded out to them for every overlap. */
struct ng_copy_lock {
    uint64_t offset, length;        /* the write's */
    void (*granted)(struct ng_copy_lock *l, int ret);  /* ret < 0: the
                                     * engine stops, the lock is not held */
    void *opaque;                   /* the caller's */
    /* Set when granted: the part of the range worth writing to the
     * target.  A granule the write covers only partly that is dirty
     * already is left out (the engine copies it whole anyway, as QEMU's
     * do_sync_target_write does); length 0: nothing to write. */
    uint64_t copy_offset, copy_length;
    bool held;                      /* the engine's */
    struct ng_copy_lock *next;
};

/* Hold l's range: no chunk starts over it, and it is granted once no
 * chunk in flight and no earlier lock overlaps it, oldest first.
 * Returns 1 when granted now (l->granted does not run), 0 when
 * l->granted runs later (never inline), -1 when the engine stops (not
 * held). */
int ng_copy_lock(struct ng_copy *c, struct ng_copy_lock *l);
/* The write is over.  copied: l->copy_offset/length reached the source
 * and the target, so the granules they touch are clean now (a partly
 * covered one was clean when granted, and the lock kept it so); else
 * they are dirty again, for the background copy.  Releases the lock. */
void ng_copy_unlock(struct ng_copy *c, struct ng_copy_lock *l, bool copied);

/* Bytes copied so far, and copied + still dirty + in flight. */
void ng_copy_progress(const struct ng_copy *c, uint64_t *current,
                      uint64_t *total);
/* Once stopped (also after the bitmap is gone): bytes copied, and
 * copied + what was still to copy when the engine stopped, so a job
 * that failed or was cancelled shows how far it got. */
void ng_copy_final_progress(const struct ng_copy *c, uint64_t *current,
                            uint64_t *total);
/* Nothing in flight and the bitmap clean.  Locks do not count: a write
 * holding one is a client's, which a drained section waits for. */
bool ng_copy_is_converged(const struct ng_copy *c);
unsigned ng_copy_in_flight(const struct ng_copy *c);

#endif
