/* graph/file-uring.h: an io_uring on the loop, for the file driver's
 * `aio: io_uring` (graph/drv-file.c).
 *
 * Reads, writes and fdatasyncs are queued as the loop hands them over
 * and submitted together, in one io_uring_enter, just before the loop
 * next waits (a uv_prepare handle); completions come back on the loop
 * thread through a uv_poll on the ring's fd.  Nothing here blocks, and
 * no worker thread is involved.  Every queueing call may say no (the
 * ring is full, or it was built without liburing): the caller then does
 * the work another way, so a refusal is never an error.
 */
#ifndef NBDGRAPH_GRAPH_FILE_URING_H
#define NBDGRAPH_GRAPH_FILE_URING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <uv.h>

#include "graph/error.h"

struct ng_uring;

/* `res` is what the kernel returned: bytes done, or a negative errno.
 * `user` is what the op was queued with.  Called on the loop thread. */
typedef void ng_uring_done_cb(void *opaque, void *user, int res);

/* Whether this build has io_uring at all (liburing found at configure
 * time); false with err set, naming the build option, when not.  It
 * touches no kernel state, so --check-config can ask it: a config that
 * names aio=io_uring must fail there as it would at start. */
bool ng_uring_built(struct ng_error *err);

/* A ring of `entries` ops in flight at most, calling done(opaque, ...)
 * for each.  NULL with err set when io_uring cannot be had (built
 * without liburing, or the kernel refuses it). */
struct ng_uring *ng_uring_new(uv_loop_t *loop, unsigned entries,
                              ng_uring_done_cb *done, void *opaque,
                              struct ng_error *err);

/* Queue preadv (write false) or pwritev of iov[0..niov) at `off` of fd,
 * with preadv2-style rw_flags (RWF_DSYNC); false when it cannot be
 * queued now.  With several elements the array must stay valid until
 * the op is done; one element is copied (a plain read or write).
 * The kernel does an op it can do at once (a read from the page cache)
 * inside the submitting call, on the loop thread; `kernel_worker` has it
 * go to the ring's own kernel workers instead (IOSQE_ASYNC), for copies
 * big enough that the loop has better things to do meanwhile. */
bool ng_uring_rw(struct ng_uring *u, bool write, int fd,
                 const struct iovec *iov, unsigned niov, uint64_t off,
                 int rw_flags, bool kernel_worker, void *user);
/* Have the op queued last start the next one queued only once it is
 * done (IOSQE_IO_LINK); if it fails or comes short, the next one fails
 * with -ECANCELED.  Call right after a successful queueing call. */
void ng_uring_link_last(struct ng_uring *u);
/* How many ops could be queued now, at least: a caller that needs
 * several at once asks first.  0 without liburing. */
unsigned ng_uring_room(const struct ng_uring *u);
/* Queue fdatasync(fd); false when it cannot be queued now. */
bool ng_uring_fdatasync(struct ng_uring *u, int fd, void *user);

/* Tear it down (NULL-safe).  No op may be in flight: the graph drains a
 * node before it closes it.  The loop handles go later, on the loop. */
void ng_uring_free(struct ng_uring *u);

#endif
