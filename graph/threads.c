/* graph/threads.c: worker pools for drivers that block (struct ng_driver's
 * thread_model), so that a slow driver's threads are its own and cannot
 * starve another's: libuv's one global pool would make a stalled remote
 * leaf hold back every file request.
 *
 * A pool is a few pthreads around a queue.  Finished work goes on a done
 * list and a uv_async_t brings it back to the loop thread, where `after`
 * runs.  The async handle keeps the loop alive only while work is
 * pending, so an idle pool never stops a daemon from exiting.
 *
 * A pool belongs to a node (NG_POOL_PER_NODE) or is shared by every node
 * of one driver in the graph (NG_POOL_PER_DRIVER, kept in g->pools).
 * NG_THREADS_SERIALIZE_NODE is kept on the loop side: a node's next piece
 * of work enters the pool only once the previous one finished.
 *
 * How many threads to wake is the pool's cost: waking a thread for a
 * piece of work that takes a microsecond (nbdkit's memory plugin
 * reading 4 KiB) costs several times the work, in futex calls and
 * context switches on both sides.  So the pool keeps a moving average
 * of how long its work takes.  Slow work (a disk, a remote, a sleep)
 * gets a thread per queued piece, as many as the pool has.  Fast work
 * is left to the threads already running or woken: each takes the next
 * piece as soon as it is done with one, so a burst of 32 reads wakes
 * one thread, not 16.  A piece that turns out slow in a pool that
 * guessed fast (a plugin that blocks now and then) must not hold back
 * the queue behind it: a timer on the loop checks, while work is
 * queued, that the queue moved since its last tick, and wakes one more
 * thread each tick it did not.
 *
 * Work no client waits for (a job's bulk copy) goes to the pool's
 * background twin, a second pool made on first use whose threads run at
 * the lowest CPU priority (nice 19): on a busy machine the kernel runs
 * them only when the threads clients wait for (the loop, the normal
 * workers, the client itself) are not runnable, and on an idle one they
 * take all the CPU they want.  On 2 cores (contrib/bench/mirror-speed,
 * round 1: a mirror onto a file on tmpfs that still allocates its
 * pages) a qd1 client's 4 KiB write p99 under the mirror was 16-17x its
 * p99 without; with the copy's threads at nice 19, 6-7x.  (Nice is per
 * thread on Linux and an unprivileged thread cannot raise it again,
 * hence threads of their own rather than one that changes its priority
 * per piece.)
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/resource.h>
#endif

#include "graph/graph.h"
#include "graph/graph-internal.h"

/* When the driver does not say: enough for a queue depth of 16. */
#define NG_POOL_DEFAULT_THREADS 16

/* Work shorter than this on average is "fast" (see the top): a few
 * thread wake-ups' worth. */
#define NG_POOL_FAST_NS (30 * 1000)

/* The stall check's period, in ms: the longest queued work waits behind
 * a piece that blocks in a pool that guessed fast, per extra thread. */
#define NG_POOL_STALL_MS 1

/* The nice value of a background twin's threads: the lowest priority. */
#define NG_POOL_BACKGROUND_NICE 19

struct ng_pool {
    uv_async_t async;               /* first: the handle is the allocation */
    uv_timer_t stall_timer;         /* queued work that does not move */
    const struct ng_driver *driver; /* for per-driver lookup */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    /* Under lock. */
    struct ng_work *todo_head, *todo_tail;
    struct ng_work *done_head, *done_tail;
    unsigned n_todo;                /* on the todo list */
    unsigned idle;                  /* threads waiting for work */
    unsigned waking;                /* signalled or new, not yet looking */
    unsigned running;               /* threads inside fn (or just out) */
    int64_t avg_ns;                 /* moving average of fn's time */
    uint64_t taken;                 /* pieces taken off todo, ever */
    bool stopping;
    /* Loop thread only. */
    pthread_t *threads;
    unsigned n_threads, max_threads;
    unsigned pending;               /* queued and not yet after()ed */
    unsigned open_handles;          /* freed when both are closed */
    uint64_t taken_at_tick;         /* `taken` at the last stall check */
    struct ng_pool *next;           /* g->pools */
    struct ng_pool *background;     /* owned: the background twin, made
                                     * on first use; NULL before */
    bool is_background;             /* this is a twin: threads at
                                     * NG_POOL_BACKGROUND_NICE */
};

static void
list_append(struct ng_work **head, struct ng_work **tail, struct ng_work *w)
{
    w->next = NULL;
    if (*tail != NULL)
        (*tail)->next = w;
    else
        *head = w;
    *tail = w;
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Tell the loop that work is done: a write(2) when the loop has not
 * been told yet, so not under the lock, where it would hold up the
 * loop's next push.  The pool outlives the call: freeing it joins this
 * thread first. */
static void
pool_kick(struct ng_pool *p, bool *kick)
{
    if (*kick)
        uv_async_send(&p->async);
    *kick = false;
}

/* Run one piece, timing it for the moving average.  Called and returns
 * with the lock held. */
static void
pool_run(struct ng_pool *p, struct ng_work *w, bool *kick)
{
    int64_t t;

    p->running++;
    p->taken++;
    pthread_mutex_unlock(&p->lock);
    pool_kick(p, kick);
    t = now_ns();
    w->fn(w);
    /* Capped: one piece preempted on a busy machine must not make fast
     * work look slow; work that is slow every time still does. */
    t = now_ns() - t;
    if (t > 4 * NG_POOL_FAST_NS)
        t = 4 * NG_POOL_FAST_NS;
    pthread_mutex_lock(&p->lock);
    p->running--;
    p->avg_ns += (t - p->avg_ns) / 8;
}

/* A background twin's thread lowers its own priority first.  Failing
 * to is no error: the work runs, only without the priority. */
static void
pool_thread_priority(const struct ng_pool *p)
{
#ifdef __linux__
    if (p->is_background)
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(),
                          NG_POOL_BACKGROUND_NICE);
#else
    (void)p;
#endif
}

static void *
pool_worker(void *arg)
{
    struct ng_pool *p = arg;
    struct ng_work *w;
    bool kick = false;              /* finished work the loop must hear of */

    pool_thread_priority(p);
    pthread_mutex_lock(&p->lock);
    if (p->waking > 0)
        p->waking--;                /* a new thread: it came */
    for (;;) {
        if (p->todo_head == NULL && kick) {
            pthread_mutex_unlock(&p->lock);
            pool_kick(p, &kick);
            pthread_mutex_lock(&p->lock);
            continue;               /* work may have come meanwhile */
        }
        while (p->todo_head == NULL && !p->stopping) {
            p->idle++;
            pthread_cond_wait(&p->wake, &p->lock);
            p->idle--;
            /* Woken (or spuriously, then in another's stead: the count
             * is a hint, the stall check makes up for any slip). */
            if (p->waking > 0)
                p->waking--;
        }
        if (p->todo_head == NULL)
            break;                  /* stopping, and nothing left */
        w = p->todo_head;
        if ((p->todo_head = w->next) == NULL)
            p->todo_tail = NULL;
        p->n_todo--;
        pool_run(p, w, &kick);
        /* A done list that is not empty was told of already (or will be,
         * by the thread that made it so). */
        if (p->done_head == NULL)
            kick = true;
        list_append(&p->done_head, &p->done_tail, w);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int
pool_add_thread(struct ng_pool *p)
{
    if (pthread_create(&p->threads[p->n_threads], NULL, pool_worker,
                       p) != 0)
        return -1;
    p->n_threads++;
    return 0;
}

/* Bring one more thread to the queue: a sleeping one not already woken,
 * else a new one when the pool may grow (true: the caller starts it once
 * the lock is dropped).  Under the lock, loop thread. */
static bool
pool_wake_one(struct ng_pool *p)
{
    if (p->idle > p->waking) {
        p->waking++;
        pthread_cond_signal(&p->wake);
        return false;
    }
    if (p->n_threads >= p->max_threads)
        return false;               /* all busy: the work waits its turn */
    p->waking++;
    return true;
}

/* Start the thread pool_wake_one() asked for.  A thread that cannot
 * start is no failure: the work waits for one that runs. */
static void
pool_grow(struct ng_pool *p)
{
    if (pool_add_thread(p) == -1) {
        pthread_mutex_lock(&p->lock);
        p->waking--;
        pthread_mutex_unlock(&p->lock);
    }
}

/* Does the piece just queued need a thread woken for it?  Under the
 * lock. */
static bool
pool_needs_thread(const struct ng_pool *p)
{
    /* Slow work: a thread for every queued piece. */
    if (p->avg_ns >= NG_POOL_FAST_NS)
        return p->n_todo > p->waking;
    /* Fast work: only when no thread would come back for it. */
    return p->running == 0 && p->waking == 0;
}

static void node_work_finished(struct ng_node *node);

/* Loop thread: run `after` for everything that finished. */
static void
pool_async_cb(uv_async_t *h)
{
    struct ng_pool *p = (struct ng_pool *)h;
    struct ng_work *w, *next;

    pthread_mutex_lock(&p->lock);
    w = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    for (; w != NULL; w = next) {
        next = w->next;
        if (--p->pending == 0)
            uv_unref((uv_handle_t *)&p->async);
        /* `after` may free the pool (a per-node pool whose node goes
         * away); its memory lives on until the async handle's close
         * callback, and nothing below touches it once pending is 0. */
        node_work_finished(w->node);
        w->after(w);
    }
}

/* Loop thread, every NG_POOL_STALL_MS while work is queued: a queue that
 * did not move since the last tick is stuck behind work that blocks;
 * one more thread for it. */
static void
pool_stall_cb(uv_timer_t *t)
{
    struct ng_pool *p = t->data;
    bool grow = false;

    pthread_mutex_lock(&p->lock);
    if (p->n_todo == 0)
        uv_timer_stop(t);
    else if (p->taken == p->taken_at_tick)
        grow = pool_wake_one(p);
    p->taken_at_tick = p->taken;
    pthread_mutex_unlock(&p->lock);
    if (grow)
        pool_grow(p);
}

static struct ng_pool *
pool_new(uv_loop_t *loop, const struct ng_driver *drv, bool background,
         struct ng_error *err)
{
    struct ng_pool *p = calloc(1, sizeof *p);

    if (p == NULL)
        goto nomem;
    p->driver = drv;
    p->is_background = background;  /* before a thread reads it */
    p->max_threads = drv->threads ? drv->threads : NG_POOL_DEFAULT_THREADS;
    if (drv->thread_model == NG_THREADS_SERIALIZE_NODE &&
        drv->pool_scope == NG_POOL_PER_NODE)
        p->max_threads = 1;         /* more could never be busy */
    /* Slow until measured: a new pool's first burst gets its threads. */
    p->avg_ns = 2 * NG_POOL_FAST_NS;
    p->threads = calloc(p->max_threads, sizeof *p->threads);
    if (p->threads == NULL)
        goto nomem;
    if (uv_async_init(loop, &p->async, pool_async_cb) != 0) {
        free(p->threads);
        free(p);
        ng_error_set(err, EIO, "cannot create a libuv async handle");
        return NULL;
    }
    uv_unref((uv_handle_t *)&p->async);
    uv_timer_init(loop, &p->stall_timer);
    uv_unref((uv_handle_t *)&p->stall_timer);
    p->async.data = p->stall_timer.data = p;
    p->open_handles = 2;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    /* One thread now, so queueing never fails; the rest on demand. */
    if (pool_add_thread(p) == -1) {
        ng_pool_free(p);
        ng_error_set(err, EAGAIN, "cannot start a worker thread");
        return NULL;
    }
    return p;

nomem:
    free(p);
    ng_error_set(err, ENOMEM, "out of memory");
    return NULL;
}

static void
pool_free_handle(uv_handle_t *h)
{
    struct ng_pool *p = h->data;

    if (--p->open_handles > 0)
        return;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    free(p->threads);
    free(p);
}

void
ng_pool_free(struct ng_pool *p)
{
    unsigned i;

    if (p == NULL)
        return;
    ng_pool_free(p->background);
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    uv_close((uv_handle_t *)&p->async, pool_free_handle);
    uv_close((uv_handle_t *)&p->stall_timer, pool_free_handle);
}

/* The pool that runs `w`: p, or for background work p's twin, made now
 * if need be (if it cannot be, p runs the work at normal priority). */
static struct ng_pool *
pool_for(struct ng_pool *p, const struct ng_work *w)
{
    struct ng_error err = { 0 };

    if (!w->background)
        return p;
    if (p->background == NULL) {
        p->background = pool_new(p->async.loop, p->driver, true, &err);
        if (p->background == NULL)
            return p;
    }
    return p->background;
}

static void
pool_push(struct ng_pool *p, struct ng_work *w)
{
    bool grow = false;

    p = pool_for(p, w);
    if (p->pending++ == 0)
        uv_ref((uv_handle_t *)&p->async);
    pthread_mutex_lock(&p->lock);
    list_append(&p->todo_head, &p->todo_tail, w);
    p->n_todo++;
    if (pool_needs_thread(p))
        grow = pool_wake_one(p);
    if (!uv_is_active((uv_handle_t *)&p->stall_timer)) {
        p->taken_at_tick = p->taken;
        uv_timer_start(&p->stall_timer, pool_stall_cb, NG_POOL_STALL_MS,
                       NG_POOL_STALL_MS);
    }
    pthread_mutex_unlock(&p->lock);
    if (grow)
        pool_grow(p);
}

/* ---- Nodes -------------------------------------------------------------- */

int
ng_node_pool_attach(struct ng_node *node, struct ng_error *err)
{
    const struct ng_driver *drv = node->driver;
    struct ng_graph *g = node->graph;
    struct ng_pool *p;

    if (drv->thread_model == NG_THREADS_NONE)
        return 0;
    if (drv->pool_scope == NG_POOL_PER_NODE) {
        node->pool = pool_new(g->loop, drv, false, err);
        return node->pool != NULL ? 0 : -1;
    }
    for (p = g->pools; p != NULL && p->driver != drv; p = p->next)
        ;
    if (p == NULL) {
        if ((p = pool_new(g->loop, drv, false, err)) == NULL)
            return -1;
        p->next = g->pools;
        g->pools = p;
    }
    node->pool = p;
    return 0;
}

void
ng_node_pool_detach(struct ng_node *node)
{
    if (node->driver->pool_scope == NG_POOL_PER_NODE)
        ng_pool_free(node->pool);
    node->pool = NULL;
}

void
ng_graph_pools_free(struct ng_graph *g)
{
    struct ng_pool *p;

    while ((p = g->pools) != NULL) {
        g->pools = p->next;
        ng_pool_free(p);
    }
}

/* A piece of `node`'s work finished: with SERIALIZE_NODE the next one
 * may go. */
static void
node_work_finished(struct ng_node *node)
{
    struct ng_work *w = node->work_wait_head;

    if (node->driver->thread_model != NG_THREADS_SERIALIZE_NODE)
        return;
    if (w == NULL) {
        node->work_busy = false;
        return;
    }
    if ((node->work_wait_head = w->next) == NULL)
        node->work_wait_tail = NULL;
    pool_push(node->pool, w);
}

static void
node_queue(struct ng_node *node, struct ng_work *w, bool background)
{
    w->node = node;
    w->background = background;
    if (node->pool == NULL) {
        /* A driver without a thread model that blocks anyway: a driver
         * bug, but the work still gets done, on the loop. */
        w->fn(w);
        w->after(w);
        return;
    }
    if (node->driver->thread_model == NG_THREADS_SERIALIZE_NODE) {
        if (node->work_busy) {
            list_append(&node->work_wait_head, &node->work_wait_tail, w);
            return;
        }
        node->work_busy = true;
    }
    pool_push(node->pool, w);
}

void
ng_node_queue_work(struct ng_node *node, struct ng_work *w)
{
    node_queue(node, w, false);
}

void
ng_node_queue_background_work(struct ng_node *node, struct ng_work *w)
{
    node_queue(node, w, true);
}

/* ---- Work finished on a library's threads ------------------------------ */

void
ng_node_begin_external(struct ng_node *node, struct ng_work *w)
{
    struct ng_pool *p = node->pool;

    assert(p != NULL && node->driver->thread_model == NG_THREADS_PARALLEL);
    w->node = node;
    if (p->pending++ == 0)
        uv_ref((uv_handle_t *)&p->async);
}

/* Any thread.  The node, hence its pool, stays while work is pending. */
void
ng_work_finish_external(struct ng_work *w)
{
    struct ng_pool *p = w->node->pool;

    pthread_mutex_lock(&p->lock);
    list_append(&p->done_head, &p->done_tail, w);
    uv_async_send(&p->async);
    pthread_mutex_unlock(&p->lock);
}
