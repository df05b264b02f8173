/* graph/file-uring.c: an io_uring on the loop (see file-uring.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/file-uring.h"

#ifdef HAVE_LIBURING

#include <liburing.h>

struct ng_uring {
    struct io_uring ring;
    uv_poll_t poll;                 /* the ring's fd: completions; keeps
                                     * the loop alive only while ops are
                                     * in flight */
    uv_prepare_t prepare;           /* submits what this turn queued */
    unsigned entries;
    unsigned queued;                /* in the SQ, not submitted yet */
    unsigned in_flight;             /* queued or submitted, not reaped */
    unsigned handles;               /* loop handles not closed yet */
    struct io_uring_sqe *last;      /* the SQE queued last */
    bool reaping;                   /* in uring_reap: free waits */
    bool freed;                     /* ng_uring_free came meanwhile */
    ng_uring_done_cb *done;
    void *opaque;
};

static void
uring_submit(struct ng_uring *u)
{
    int r;

    if (u->queued == 0)
        return;
    /* -EAGAIN/-EBUSY: the kernel takes what it can; the rest stays in
     * the SQ for the next turn. */
    r = io_uring_submit(&u->ring);
    if (r > 0)
        u->queued -= (unsigned)r < u->queued ? (unsigned)r : u->queued;
    if (u->queued == 0)
        uv_prepare_stop(&u->prepare);
}

static void
uring_prepare_cb(uv_prepare_t *h)
{
    uring_submit(h->data);
}

static void
uring_handle_closed(uv_handle_t *h)
{
    struct ng_uring *u = h->data;

    if (--u->handles == 0)
        free(u);
}

static void
uring_teardown(struct ng_uring *u)
{
    struct io_uring_cqe *cqe;

    /* The graph drains a node before closing it, so nothing should be
     * in flight; if something is, its buffers must outlive the kernel's
     * use of them, so wait for it (and drop it: nobody waits for it). */
    while (u->in_flight > u->queued &&
           io_uring_wait_cqe(&u->ring, &cqe) == 0) {
        io_uring_cqe_seen(&u->ring, cqe);
        u->in_flight--;
    }
    io_uring_queue_exit(&u->ring);
    uv_close((uv_handle_t *)&u->poll, uring_handle_closed);
    uv_close((uv_handle_t *)&u->prepare, uring_handle_closed);
}

/* Completions, on the loop thread.  A done callback may queue more
 * (they are submitted before the loop waits) or free the ring. */
static void
uring_reap(uv_poll_t *h, int status, int events)
{
    struct ng_uring *u = h->data;
    struct io_uring_cqe *cqe;

    (void)status;
    (void)events;
    u->reaping = true;
    while (!u->freed && io_uring_peek_cqe(&u->ring, &cqe) == 0) {
        void *user = io_uring_cqe_get_data(cqe);
        int res = cqe->res;

        io_uring_cqe_seen(&u->ring, cqe);
        if (--u->in_flight == 0)
            uv_unref((uv_handle_t *)&u->poll);
        u->done(u->opaque, user, res);
    }
    u->reaping = false;
    if (u->freed)
        uring_teardown(u);
}

struct ng_uring *
ng_uring_new(uv_loop_t *loop, unsigned entries, ng_uring_done_cb *done,
             void *opaque, struct ng_error *err)
{
    struct ng_uring *u = calloc(1, sizeof *u);
    int r;

    if (u == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    r = io_uring_queue_init(entries, &u->ring, 0);
    if (r < 0) {
        free(u);
        ng_error_set(err, -r, "io_uring is not available: %s", strerror(-r));
        return NULL;
    }
    u->entries = entries;
    u->done = done;
    u->opaque = opaque;
    u->poll.data = u->prepare.data = u;
    if (uv_poll_init(loop, &u->poll, u->ring.ring_fd) != 0 ||
        uv_poll_start(&u->poll, UV_READABLE, uring_reap) != 0) {
        io_uring_queue_exit(&u->ring);
        free(u);
        ng_error_set(err, EIO, "cannot watch the io_uring on the loop");
        return NULL;
    }
    uv_unref((uv_handle_t *)&u->poll);
    uv_prepare_init(loop, &u->prepare);
    u->handles = 2;
    return u;
}

/* A free SQE, or NULL when the ring is as full as we let it get: no
 * more in flight than the CQ has room for, so none is ever dropped. */
static struct io_uring_sqe *
uring_sqe(struct ng_uring *u)
{
    struct io_uring_sqe *sqe;

    if (u->freed || u->in_flight >= u->entries)
        return NULL;
    sqe = io_uring_get_sqe(&u->ring);
    if (sqe == NULL) {
        uring_submit(u);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static void
uring_queued(struct ng_uring *u, struct io_uring_sqe *sqe, void *user)
{
    io_uring_sqe_set_data(sqe, user);
    u->last = sqe;
    if (u->queued++ == 0)
        uv_prepare_start(&u->prepare, uring_prepare_cb);
    if (u->in_flight++ == 0)
        uv_ref((uv_handle_t *)&u->poll);
}

bool
ng_uring_rw(struct ng_uring *u, bool write, int fd, const struct iovec *iov,
            unsigned niov, uint64_t off, int rw_flags, bool kernel_worker,
            void *user)
{
    struct io_uring_sqe *sqe = uring_sqe(u);

    if (sqe == NULL)
        return false;
    if (niov == 1 && write)
        io_uring_prep_write(sqe, fd, iov[0].iov_base,
                            (unsigned)iov[0].iov_len, off);
    else if (niov == 1)
        io_uring_prep_read(sqe, fd, iov[0].iov_base,
                           (unsigned)iov[0].iov_len, off);
    else if (write)
        io_uring_prep_writev(sqe, fd, iov, niov, off);
    else
        io_uring_prep_readv(sqe, fd, iov, niov, off);
    sqe->rw_flags = rw_flags;
    if (kernel_worker)
        io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
    uring_queued(u, sqe, user);
    return true;
}

void
ng_uring_link_last(struct ng_uring *u)
{
    u->last->flags |= IOSQE_IO_LINK;
}

unsigned
ng_uring_room(const struct ng_uring *u)
{
    return u->freed ? 0 : u->entries - u->in_flight;   /* see uring_sqe */
}

bool
ng_uring_fdatasync(struct ng_uring *u, int fd, void *user)
{
    struct io_uring_sqe *sqe = uring_sqe(u);

    if (sqe == NULL)
        return false;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    uring_queued(u, sqe, user);
    return true;
}

void
ng_uring_free(struct ng_uring *u)
{
    if (u == NULL || u->freed)
        return;
    u->freed = true;
    if (!u->reaping)
        uring_teardown(u);
}

bool
ng_uring_built(struct ng_error *err)
{
    (void)err;
    return true;
}

#else /* !HAVE_LIBURING */

bool
ng_uring_built(struct ng_error *err)
{
    ng_error_set(err, ENOTSUP, "this nbdgraphd was built without liburing "
                 "(configure --with-liburing, which needs liburing-dev)");
    return false;
}

struct ng_uring *
ng_uring_new(uv_loop_t *loop, unsigned entries, ng_uring_done_cb *done,
             void *opaque, struct ng_error *err)
{
    (void)loop;
    (void)entries;
    (void)done;
    (void)opaque;
    ng_uring_built(err);
    return NULL;
}

bool
ng_uring_rw(struct ng_uring *u, bool write, int fd, const struct iovec *iov,
            unsigned niov, uint64_t off, int rw_flags, bool kernel_worker,
            void *user)
{
    (void)u, (void)write, (void)fd, (void)iov, (void)niov, (void)off;
    (void)rw_flags, (void)kernel_worker, (void)user;
    return false;
}

void
ng_uring_link_last(struct ng_uring *u)
{
    (void)u;
}

unsigned
ng_uring_room(const struct ng_uring *u)
{
    (void)u;
    return 0;
}

bool
ng_uring_fdatasync(struct ng_uring *u, int fd, void *user)
{
    (void)u, (void)fd, (void)user;
    return false;
}

void
ng_uring_free(struct ng_uring *u)
{
    (void)u;
}

#endif
