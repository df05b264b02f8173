/* graph/open-thread.c: a leaf's blocking open (an nbdkit plugin's .open,
 * a connect to a Ceph monitor) on a thread of its own, which the daemon's
 * stop may leave behind.
 *
 * Such an open may block for minutes and cannot be interrupted.  On the
 * node's worker pool it would hold the pool, and the pool the node and
 * the exit (a pool's threads are joined when it goes).  Here the work
 * has its own detached thread and its own data (`arg`, which the driver
 * allocates, never the node's state), so that ng_open_thread_abandon()
 * can let the node go at once: the thread finishes whenever the call
 * returns, or the process exits first.  QEMU and nbdkit have no better
 * answer to a call that does not return: they cannot stop it either.
 *
 * The thread and the loop share this struct; the last of the two frees
 * it.  `done` runs on the loop through the uv_async_t, unless the open
 * was abandoned first; then `orphan` runs on the thread instead.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"

struct ng_open_thread {
    uv_async_t async;               /* first: its data is this struct */
    struct ng_node *node;
    ng_open_thread_fn *fn, *orphan;
    ng_open_thread_done_fn *done;
    void *arg;
    pthread_mutex_t lock;
    /* Under lock. */
    bool finished;                  /* fn returned, async sent */
    bool abandoned;                 /* the node went: nobody waits */
    unsigned refs;                  /* the thread, the async handle */
};

static void
open_thread_unref(struct ng_open_thread *t)
{
    bool last;

    pthread_mutex_lock(&t->lock);
    last = --t->refs == 0;
    pthread_mutex_unlock(&t->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static void
open_thread_closed(uv_handle_t *h)
{
    open_thread_unref(h->data);
}

static void *
open_thread_main(void *opaque)
{
    struct ng_open_thread *t = opaque;
    bool abandoned;

    t->fn(t->arg);
    pthread_mutex_lock(&t->lock);
    abandoned = t->abandoned;
    t->finished = true;
    if (!abandoned)
        uv_async_send(&t->async);   /* under lock: the loop may close it */
    pthread_mutex_unlock(&t->lock);
    if (abandoned)
        t->orphan(t->arg);
    open_thread_unref(t);
    return NULL;
}

/* Loop thread: the open finished and nobody gave it up. */
static void
open_thread_async(uv_async_t *h)
{
    struct ng_open_thread *t = h->data;

    uv_close((uv_handle_t *)h, open_thread_closed);
    t->done(t->node, t->arg);
}

struct ng_open_thread *
ng_open_thread_start(struct ng_node *node, ng_open_thread_fn *fn,
                     ng_open_thread_done_fn *done,
                     ng_open_thread_fn *orphan, void *arg,
                     struct ng_error *err)
{
    struct ng_open_thread *t = calloc(1, sizeof *t);
    pthread_attr_t attr;
    pthread_t tid;
    int r;

    if (t == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (uv_async_init(ng_node_loop(node), &t->async, open_thread_async)) {
        free(t);
        ng_error_set(err, EAGAIN, "cannot create a libuv async handle");
        return NULL;
    }
    t->async.data = t;
    t->node = node;
    t->fn = fn;
    t->done = done;
    t->orphan = orphan;
    t->arg = arg;
    t->refs = 2;
    pthread_mutex_init(&t->lock, NULL);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&tid, &attr, open_thread_main, t);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        t->refs = 1;                /* no thread: the handle's only */
        uv_close((uv_handle_t *)&t->async, open_thread_closed);
        ng_error_set(err, r, "cannot start a thread for the open: %s",
                     strerror(r));
        return NULL;
    }
    return t;
}

bool
ng_open_thread_abandon(struct ng_open_thread *t)
{
    bool finished;

    pthread_mutex_lock(&t->lock);
    finished = t->finished;
    t->abandoned = !finished;
    pthread_mutex_unlock(&t->lock);
    if (finished)
        return false;               /* done() runs soon: let it */
    uv_close((uv_handle_t *)&t->async, open_thread_closed);
    return true;
}
