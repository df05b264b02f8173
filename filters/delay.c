/* filters/delay.c: "delay", after nbdkit's delay filter: hold each
 * request for a while before passing it down, to make a fast disk look
 * slow (tests of timeouts, of requests in flight during graph changes).
 *
 * Delays are per type of request, in milliseconds ("10", "10ms", "1s",
 * "0.5s").  A waiting request holds one libuv timer; timers are kept on
 * a free list in the node after use, so steady-state I/O allocates
 * nothing.  Each timer is its own allocation because libuv closes
 * handles asynchronously: close() starts closing them and their close
 * callback frees them after the node's state is gone.
 *
 * "open-delay" makes the open itself slow, as nbdkit's delay-open does:
 * the open sleeps on a worker thread of the delay driver's pool, so it
 * shows that a slow open holds up nobody else.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/graph.h"
#include "filters/filters.h"

enum {
    DELAY_READ, DELAY_WRITE, DELAY_ZERO, DELAY_TRIM, DELAY_FLUSH,
    DELAY__COUNT
};

/* A day: longer is surely a mistake, and fits libuv's timeouts. */
#define DELAY_MAX_MS (24 * 3600 * 1000ull)

struct delay_timer {
    uv_timer_t timer;               /* first: the handle is the allocation */
    struct ng_node *node;
    struct ng_req *req;
    struct delay_timer *next_free;
};

struct delay_state {
    struct ng_node *file;                   /* option "file" */
    struct ng_value *opt[DELAY__COUNT];     /* options "delay-*" */
    uint64_t ms[DELAY__COUNT];
    struct delay_timer *free;
    struct ng_value *open_opt;              /* option "open-delay" */
    uint64_t open_ms;
    struct ng_work open_work;
};

#define DELAY_OPT(name, i, what) \
    NG_OPT_VALUE(name, struct delay_state, opt[i], false, \
                 "hold each " what " this long: milliseconds, or a " \
                 "number with ms or s (default 0)")

static const struct ng_opt_desc delay_opts[] = {
    NG_OPT_CHILD("file", struct delay_state, file, NG_ROLE_FILTERED, true,
                 "the node below"),
    DELAY_OPT("delay-read", DELAY_READ, "read"),
    DELAY_OPT("delay-write", DELAY_WRITE, "write"),
    DELAY_OPT("delay-zero", DELAY_ZERO, "write-zeroes"),
    DELAY_OPT("delay-trim", DELAY_TRIM, "trim"),
    DELAY_OPT("delay-flush", DELAY_FLUSH, "flush"),
    NG_OPT_VALUE("open-delay", struct delay_state, open_opt, false,
                 "make the open take this long, sleeping on a worker "
                 "thread: milliseconds, or a number with ms or s "
                 "(default 0)"),
    NG_OPT_END,
};

static const char *const delay_live_opts[] = {
    "delay-read", "delay-write", "delay-zero", "delay-trim", "delay-flush",
    NULL
};

/* "250", "250ms", "1s", "0.5s" -> milliseconds, rounded up. */
static int
delay_parse(const struct ng_value *v, const char *what, uint64_t *ms,
            struct ng_error *err)
{
    const char *text = ng_value_to_string(v, what, err);
    double n, scale = 1;
    char *end;

    if (text == NULL)
        return -1;
    n = strtod(text, &end);
    if (end != text && strcmp(end, "s") == 0)
        scale = 1000;
    else if (end == text || (*end != '\0' && strcmp(end, "ms") != 0))
        end = NULL;
    if (end == NULL || !(n >= 0) || n * scale > (double)DELAY_MAX_MS)
        return ng_value_error(err, &v->loc, "'%s' must be a delay such as "
                              "250, 250ms or 1.5s, up to a day, not '%s'",
                              what, text);
    *ms = (uint64_t)(n * scale);
    if ((double)*ms < n * scale)
        (*ms)++;
    return 0;
}

/* Parse all delay options of `opts` (a node's options, or a change) into
 * ms[], leaving absent ones as they are. */
static int
delay_parse_all(const struct ng_value *const *vals, uint64_t *ms,
                struct ng_error *err)
{
    for (int i = 0; i < DELAY__COUNT; i++)
        if (vals[i] != NULL &&
            delay_parse(vals[i], delay_live_opts[i], &ms[i], err) == -1)
            return -1;
    return 0;
}

/* Worker thread: sleep through the open delay. */
static void
delay_open_sleep(struct ng_work *w)
{
    const struct delay_state *s = ng_node_state(w->node);
    struct timespec ts = { .tv_sec = (time_t)(s->open_ms / 1000),
                           .tv_nsec = (long)(s->open_ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void
delay_open_slept(struct ng_work *w)
{
    ng_node_opened(w->node, 0);
}

static void
delay_open(struct ng_node *node, struct ng_error *err)
{
    struct delay_state *s = ng_node_state(node);

    if (delay_parse_all((const struct ng_value *const *)s->opt, s->ms,
                        err) == -1 ||
        (s->open_opt != NULL &&
         delay_parse(s->open_opt, "open-delay", &s->open_ms, err) == -1)) {
        ng_node_opened(node, -1);
        return;
    }
    if (s->open_ms == 0) {
        ng_node_opened(node, 0);
        return;
    }
    s->open_work.fn = delay_open_sleep;
    s->open_work.after = delay_open_slept;
    ng_node_queue_work(node, &s->open_work);
}

static void
delay_free_timer(uv_handle_t *h)
{
    free(h);                        /* struct delay_timer starts with it */
}

static void
delay_close(struct ng_node *node)
{
    struct delay_state *s = ng_node_state(node);
    struct delay_timer *t;

    /* Nothing is in flight, so every timer is on the free list. */
    while ((t = s->free) != NULL) {
        s->free = t->next_free;
        uv_close((uv_handle_t *)&t->timer, delay_free_timer);
    }
}

static int
delay_kind(const struct ng_req *req)
{
    switch (req->op) {
    case NG_OP_READ:
        return DELAY_READ;
    case NG_OP_WRITE:
        return DELAY_WRITE;
    case NG_OP_WRITE_ZEROES:
        return DELAY_ZERO;
    case NG_OP_TRIM:
        return DELAY_TRIM;
    case NG_OP_FLUSH:
        return DELAY_FLUSH;
    default:
        return -1;
    }
}

static void
delay_expired(uv_timer_t *timer)
{
    struct delay_timer *t = (struct delay_timer *)timer;
    struct delay_state *s = ng_node_state(t->node);
    struct ng_node *node = t->node;
    struct ng_req *req = t->req;

    /* Free before forwarding: the request may complete inline and the
     * next one want a timer. */
    t->req = NULL;
    t->next_free = s->free;
    s->free = t;
    ng_node_forward(node, req);
}

static void
delay_submit(struct ng_node *node, struct ng_req *req)
{
    struct delay_state *s = ng_node_state(node);
    int kind = delay_kind(req);
    struct delay_timer *t;

    if (kind < 0 || s->ms[kind] == 0) {
        ng_node_forward(node, req);
        return;
    }
    if ((t = s->free) != NULL) {
        s->free = t->next_free;
    } else {
        /* More requests waiting than ever before: one more timer. */
        if ((t = malloc(sizeof *t)) == NULL ||
            uv_timer_init(ng_node_loop(node), &t->timer) != 0) {
            free(t);
            ng_req_complete(req, -ENOMEM);
            return;
        }
        t->node = node;
    }
    t->req = req;
    /* libuv counts whole milliseconds from the loop's cached time, which
     * may lag and is truncated: refresh it and add one, so the request
     * waits at least the delay. */
    uv_update_time(ng_node_loop(node));
    uv_timer_start(&t->timer, delay_expired, s->ms[kind] + 1, 0);
}

/* New delays apply to requests that arrive from now on. */
static int
delay_reconfigure(struct ng_node *node, const struct ng_value *opts,
                  struct ng_error *err)
{
    struct delay_state *s = ng_node_state(node);
    const struct ng_value *vals[DELAY__COUNT];
    struct ng_value *copies[DELAY__COUNT] = { NULL };
    uint64_t ms[DELAY__COUNT];
    int i;

    if (ng_node_reconfigure_check(node, opts, delay_live_opts, err) == -1)
        return -1;
    memcpy(ms, s->ms, sizeof ms);
    for (i = 0; i < DELAY__COUNT; i++)
        vals[i] = ng_value_get(opts, delay_live_opts[i]);
    if (delay_parse_all(vals, ms, err) == -1)
        return -1;
    for (i = 0; i < DELAY__COUNT; i++) {
        if (vals[i] != NULL && (copies[i] = ng_value_copy(vals[i])) == NULL) {
            while (i-- > 0)
                ng_value_free(copies[i]);
            return ng_error_set(err, ENOMEM, "out of memory");
        }
    }
    for (i = 0; i < DELAY__COUNT; i++) {
        if (vals[i] != NULL) {
            ng_value_free(s->opt[i]);
            s->opt[i] = copies[i];
        }
    }
    memcpy(s->ms, ms, sizeof ms);
    return 0;
}

const struct ng_driver ng_filter_delay = {
    .name        = "delay",
    .help        = "hold each request for a while (nbdkit's delay filter)",
    .is_filter   = true,
    .grow        = ng_node_grow_child,
    .state_size  = sizeof(struct delay_state),
    .opts        = delay_opts,
    /* Only the open sleeps on a thread; a few are plenty. */
    .thread_model = NG_THREADS_SERIALIZE_NODE,
    .pool_scope  = NG_POOL_PER_DRIVER,
    .threads     = 4,
    .open_async  = delay_open,
    .close       = delay_close,
    .submit      = delay_submit,
    .ops         = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                   NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                   NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                   NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
    .reconfigure = delay_reconfigure,
};
