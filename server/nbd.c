/* server/nbd.c: the NBD server object — creating it, the connection
 * list, handshake and shutdown deadlines, shutdown and freeing.  Each
 * other part has one home: listeners in nbd-listen.c, the export
 * registry in nbd-export.c, pools in nbd-pool.c, option haggling in
 * nbd-handshake.c, and a request's whole walk (parse, submit, reply,
 * flush) in nbd-conn.c.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "server/log.h"
#include "server/nbd-int.h"
#include "server/nbd.h"

static void shutdown_poll(struct ng_nbd_server *srv);

/* ---- Server -------------------------------------------------------------- */

struct ng_nbd_server *
ng_nbd_server_new(uv_loop_t *loop, struct ng_graph *graph,
                  struct ng_error *err)
{
    struct ng_nbd_server *srv = calloc(1, sizeof *srv);
    struct rlimit rl;

    if (srv == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    srv->loop = loop;
    srv->graph = graph;
    uv_check_init(loop, &srv->flush_check);
    srv->flush_check.data = srv;
    uv_idle_init(loop, &srv->flush_idle);
    srv->flush_idle.data = srv;
    uv_timer_init(loop, &srv->timer);
    srv->timer.data = srv;
    uv_idle_init(loop, &srv->poll_idle);
    srv->poll_idle.data = srv;
    srv->handles_open = 4;
    srv->max_request = NG_NBD_MAX_REQUEST_DEFAULT;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        srv->fd_limit = (uint64_t)rl.rlim_cur;
    return srv;
}

void
ng_nbd_server_set_max_connections(struct ng_nbd_server *srv, unsigned n)
{
    srv->max_conns = n;
}

void
ng_nbd_server_set_idle_timeout(struct ng_nbd_server *srv, unsigned seconds)
{
    srv->idle_timeout_ms = (uint64_t)seconds * 1000;
}

int
ng_nbd_server_set_max_request(struct ng_nbd_server *srv, uint64_t bytes,
                              struct ng_error *err)
{
    if (bytes < NG_MAX_REQUEST_MIN || bytes > NG_MAX_REQUEST_MAX)
        return ng_error_set(err, EINVAL, "max-request %" PRIu64 " bytes: "
                            "must be between %uM and %uM", bytes,
                            NG_MAX_REQUEST_MIN >> 20, NG_MAX_REQUEST_MAX >> 20);
    srv->max_request = (uint32_t)bytes;
    return 0;
}

void
ng_nbd_server_set_poll_max_ns(struct ng_nbd_server *srv, uint32_t ns)
{
    srv->poll_ns = ns;
    if (ns == 0)
        uv_idle_stop(&srv->poll_idle);
}

/* Polling pays only on a core the loop has to itself.  Where other
 * threads want the loop's core (four fio clients on two cores), the
 * kernel keeps taking it from the loop, and a loop that polls takes
 * that time from them: -15 to -20 % at four connections of qd32 on a
 * 2-core VM that was busy with other work too.  So the loop looks, at most every NBD_POLL_CHECK_MS, at its
 * involuntary context switches (getrusage, one system call): at least
 * NBD_POLL_SHARED_SWITCHES since the last look (one is a kernel worker
 * passing by), and it does not poll for NBD_POLL_BACKOFF_MS.  (Looking
 * again after one check period only, it polled every other period and
 * four connections still lost 18 %.) */
#define NBD_POLL_CHECK_MS 10
#define NBD_POLL_SHARED_SWITCHES 2
#define NBD_POLL_BACKOFF_MS 200

static bool
poll_core_shared(struct ng_nbd_server *srv)
{
#ifdef RUSAGE_THREAD
    uint64_t now = uv_now(srv->loop);
    struct rusage ru;

    if (now >= srv->poll_check_ms &&
        getrusage(RUSAGE_THREAD, &ru) == 0) {
        /* Switches counted over a long quiet spell (the loop slept,
         * nobody asked) say nothing of the core now: count afresh. */
        bool recent = now - srv->poll_check_ms < NBD_POLL_CHECK_MS;

        srv->poll_check_ms = now + NBD_POLL_CHECK_MS;
        if (recent &&
            ru.ru_nivcsw - srv->poll_nivcsw >= NBD_POLL_SHARED_SWITCHES)
            srv->poll_shared_until = now + NBD_POLL_BACKOFF_MS;
        srv->poll_nivcsw = ru.ru_nivcsw;
    }
    return now < srv->poll_shared_until;
#else
    (void)srv;
    return false;
#endif
}

/* An active idle handle makes each loop turn poll without blocking.
 * It does not sched_yield() between polls: a yield hands the core to
 * whatever else is runnable there for the rest of its time slice, and
 * the loop, still runnable, is not woken when a client's bytes come
 * (perf sched on 2 cores under a mirror: the loop waited 3.9 ms while a
 * SCHED_IDLE spinner ran, right after a yield) -- worse than not polling
 * at all, where the wakeup would preempt the other task.  The kernel
 * still takes the core from a loop that polls when its slice is up. */
static void
poll_idle_cb(uv_idle_t *idle)
{
    struct ng_nbd_server *srv = idle->data;

    if (uv_hrtime() >= srv->poll_until || poll_core_shared(srv))
        uv_idle_stop(idle);
}

void
nbd_server_poll_on(struct ng_nbd_server *srv)
{
    if (srv->poll_ns == 0 || srv->handles_closing || poll_core_shared(srv))
        return;
    srv->poll_until = uv_hrtime() + srv->poll_ns;
    uv_idle_start(&srv->poll_idle, poll_idle_cb);
}

/* ---- Connections --------------------------------------------------------- */

void
nbd_server_conn_gone(struct ng_nbd_server *srv, struct nbd_conn *c)
{
    nbd_unmark_dirty(srv, c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->nconns--;
    if (srv->shutting_down)
        shutdown_poll(srv);
}

unsigned
ng_nbd_server_connections(const struct ng_nbd_server *srv)
{
    return srv->nconns;
}

/* ---- Deadlines ----------------------------------------------------------- */

/* server.idle-timeout: a client with nothing in flight that has been
 * quiet that long is closed (gracefully: there is nothing to answer). */
static void
idle_check(struct nbd_conn *c, uint64_t now)
{
    uint64_t limit = c->srv->idle_timeout_ms;

    if (!nbd_conn_idle(c) || now - c->active_at < limit)
        return;
    ng_log_info("%s: idle for %" PRIu64 " s; closing", c->peer,
                limit / 1000);
    nbd_conn_close_gracefully(c);
}

/* Once a second while a client is in handshake (or is connected at all,
 * with an idle timeout), and every NBD_SHUTDOWN_TICK_MS while we are
 * shutting down: drop clients that take too long, close idle ones and
 * those done at shutdown. */
static void
deadline_timer_cb(uv_timer_t *t)
{
    struct ng_nbd_server *srv = t->data;
    uint64_t now = uv_now(srv->loop);
    bool waiting = false;
    struct nbd_conn *c, *next;

    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->dead)
            continue;
        if (c->phase == NBD_PHASE_HANDSHAKE &&
            now - c->since >= NBD_HANDSHAKE_TIMEOUT_MS) {
            ng_log_info("%s: handshake not finished in %d s; dropping client",
                        c->peer, NBD_HANDSHAKE_TIMEOUT_MS / 1000);
            nbd_conn_abort(c);
        } else if (srv->shutting_down &&
                   now - srv->shutdown_at >= NBD_SHUTDOWN_GRACE_MS) {
            ng_log_warn("%s: not done after %d s of shutdown; dropping client",
                        c->peer, NBD_SHUTDOWN_GRACE_MS / 1000);
            nbd_conn_abort(c);
        } else if (srv->shutting_down) {
            nbd_conn_shutdown_check(c, now);
        } else if (c->phase == NBD_PHASE_HANDSHAKE) {
            waiting = true;
        } else if (srv->idle_timeout_ms != 0 && !c->closing) {
            idle_check(c, now);
            waiting = true;
        }
    }
    if (!waiting && !srv->shutting_down)
        uv_timer_stop(&srv->timer);
}

void
nbd_server_watch_deadlines(struct ng_nbd_server *srv)
{
    /* Not restarted when active: a stream of new clients must not keep
     * pushing the next check away. */
    if (!srv->handles_closing && !uv_is_active((uv_handle_t *)&srv->timer))
        uv_timer_start(&srv->timer, deadline_timer_cb, 1000, 1000);
}

/* ---- Shutdown ------------------------------------------------------------ */

/* The last of our own handles is closed: report, and finish a free that
 * was asked for meanwhile. */
static void
server_handle_closed_cb(uv_handle_t *h)
{
    struct ng_nbd_server *srv = h->data;
    void (*cb)(void *) = srv->shutdown_cb;
    void *opaque = srv->shutdown_opaque;

    if (--srv->handles_open > 0)
        return;
    srv->shutdown_cb = NULL;
    if (srv->free_pending)
        free(srv);
    if (cb != NULL)
        cb(opaque);
}

static void
server_close_handles(struct ng_nbd_server *srv)
{
    if (srv->handles_closing)
        return;
    srv->handles_closing = true;
    uv_check_stop(&srv->flush_check);
    uv_idle_stop(&srv->flush_idle);
    uv_timer_stop(&srv->timer);
    uv_idle_stop(&srv->poll_idle);
    uv_close((uv_handle_t *)&srv->poll_idle, server_handle_closed_cb);
    uv_close((uv_handle_t *)&srv->flush_check, server_handle_closed_cb);
    uv_close((uv_handle_t *)&srv->flush_idle, server_handle_closed_cb);
    uv_close((uv_handle_t *)&srv->timer, server_handle_closed_cb);
}

static void
shutdown_poll(struct ng_nbd_server *srv)
{
    if (srv->nconns == 0)
        server_close_handles(srv);
}

void
ng_nbd_server_shutdown(struct ng_nbd_server *srv, void (*cb)(void *opaque),
                       void *opaque)
{
    struct nbd_conn *c, *next;

    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->shutdown_at = uv_now(srv->loop);
    srv->shutdown_cb = cb;
    srv->shutdown_opaque = opaque;
    nbd_listeners_close(srv);
    /* Connections in transmission stay open until they are done (see
     * nbd_conn_shutdown_check); an idle one closes now. */
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->phase == NBD_PHASE_HANDSHAKE)
            nbd_conn_abort(c);
        else
            nbd_conn_shutdown_check(c, srv->shutdown_at);
    }
    if (srv->nconns > 0)
        uv_timer_start(&srv->timer, deadline_timer_cb, NBD_SHUTDOWN_TICK_MS,
                       NBD_SHUTDOWN_TICK_MS);
    shutdown_poll(srv);
}

void
ng_nbd_server_free(struct ng_nbd_server *srv)
{
    if (srv == NULL)
        return;
    nbd_exports_free(srv);
    nbd_pools_free(srv);
    if (srv->handles_closing && srv->handles_open == 0) {
        free(srv);
        return;
    }
    /* Our handles are still closing (or, if the server was never shut
     * down, still open): their close callback frees the rest. */
    nbd_listeners_close(srv);
    srv->shutdown_cb = NULL;
    srv->free_pending = true;
    server_close_handles(srv);
}
