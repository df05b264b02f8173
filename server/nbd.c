/* server/nbd.c: the NBD server object — listeners, exports, the request
 * and buffer pools, flushing and shutdown.  The protocol itself lives in
 * nbd-handshake.c (option haggling) and nbd-conn.c (transmission).
 *
 * Export names match exactly: a client that names no export ("") gets
 * the export named "" if there is one, never some other export.
 */
#include <config.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/log.h"
#include "server/nbd-int.h"
#include "server/unix-path.h"
#include "server/nbd-proto.h"
#include "server/nbd.h"

/* ---- Buffer pool --------------------------------------------------------- */

static unsigned
pool_class(uint32_t len)
{
    unsigned cls = 0;

    while (cls + 1 < NBD_POOL_CLASSES &&
           ((size_t)1 << (NBD_POOL_MIN_SHIFT + cls)) < len)
        cls++;
    return cls;
}

static size_t
pool_class_size(unsigned cls)
{
    return (size_t)1 << (NBD_POOL_MIN_SHIFT + cls);
}

/* Page-aligned, so drivers that use O_DIRECT can take it as it is. */
static void *
pool_get(struct nbd_pool *pool, unsigned cls)
{
    void *buf = pool->free[cls];

    if (buf != NULL) {
        memcpy(&pool->free[cls], buf, sizeof(void *));
        pool->cached -= pool_class_size(cls);
        return buf;
    }
    return aligned_alloc(4096, pool_class_size(cls));
}

static void
pool_put(struct nbd_pool *pool, void *buf, unsigned cls)
{
    size_t size = pool_class_size(cls);

    if (pool->cached + size > NBD_POOL_BUDGET) {
        free(buf);
        return;
    }
    memcpy(buf, &pool->free[cls], sizeof(void *));
    pool->free[cls] = buf;
    pool->cached += size;
}

static void
pool_fini(struct nbd_pool *pool)
{
    for (unsigned cls = 0; cls < NBD_POOL_CLASSES; cls++) {
        while (pool->free[cls] != NULL) {
            void *buf = pool->free[cls];

            memcpy(&pool->free[cls], buf, sizeof(void *));
            free(buf);
        }
    }
    pool->cached = 0;
}

/* ---- Request objects ----------------------------------------------------- */

struct nbd_req *
nbd_req_get(struct nbd_conn *c, uint32_t len)
{
    struct ng_nbd_server *srv = c->srv;
    struct nbd_req *r = srv->free_reqs;

    if (r != NULL)
        srv->free_reqs = r->next;
    else if ((r = malloc(sizeof *r)) == NULL)
        return NULL;
    r->conn = c;
    r->next = NULL;
    r->buf = NULL;
    r->buf_class = 0;
    r->rb = NULL;
    r->payload = NULL;
    r->payload_len = 0;
    r->hdr_len = 0;
    if (len > 0) {
        r->buf_class = pool_class(len);
        r->buf = pool_get(&srv->pool, r->buf_class);
        if (r->buf == NULL) {
            r->next = srv->free_reqs;
            srv->free_reqs = r;
            return NULL;
        }
        c->nbytes += pool_class_size(r->buf_class);
    }
    c->nreqs++;
    return r;
}

void
nbd_req_put(struct nbd_req *r)
{
    struct nbd_conn *c = r->conn;
    struct ng_nbd_server *srv = c->srv;

    if (r->rb != NULL) {
        c->nbytes -= r->length;
        nbd_rbuf_unref(srv, r->rb);
        r->rb = NULL;
    } else if (r->buf != NULL) {
        c->nbytes -= pool_class_size(r->buf_class);
        pool_put(&srv->pool, r->buf, r->buf_class);
    }
    r->buf = NULL;
    c->nreqs--;
    r->conn = NULL;
    r->next = srv->free_reqs;
    srv->free_reqs = r;
}

/* Free receive buffers kept for reuse, at most this many. */
#define NBD_FREE_RBUFS_MAX 64

struct nbd_rbuf *
nbd_rbuf_get(struct ng_nbd_server *srv)
{
    struct nbd_rbuf *rb = srv->free_rbufs;

    if (rb != NULL) {
        srv->free_rbufs = rb->next_free;
        srv->n_free_rbufs--;
    } else if ((rb = malloc(sizeof *rb + NBD_RBUF_SIZE)) == NULL) {
        return NULL;
    }
    rb->refs = 1;
    rb->next_free = NULL;
    return rb;
}

void
nbd_rbuf_unref(struct ng_nbd_server *srv, struct nbd_rbuf *rb)
{
    if (--rb->refs > 0)
        return;
    if (srv->n_free_rbufs >= NBD_FREE_RBUFS_MAX) {
        free(rb);
        return;
    }
    rb->next_free = srv->free_rbufs;
    srv->free_rbufs = rb;
    srv->n_free_rbufs++;
}

static void
free_req_list(struct nbd_req *r)
{
    while (r != NULL) {
        struct nbd_req *next = r->next;

        free(r);
        r = next;
    }
}

/* ---- Flushing once per loop iteration ------------------------------------ */

/* Replies completed during one loop iteration go out together: one
 * writev per connection.  Most complete in the poll phase (our read
 * callbacks, thread-pool completions); the check handle, which runs
 * right after it, sends them.  Some complete in a timer callback (a
 * throttle releasing requests, the end of a drained section): the idle
 * handle, which also keeps the coming poll from blocking, sends those
 * before the loop would go to sleep on them. */
static void
flush_dirty(struct ng_nbd_server *srv)
{
    while (srv->dirty != NULL) {
        struct nbd_conn *c = srv->dirty;

        srv->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        nbd_conn_flush(c);
    }
    uv_check_stop(&srv->flush_check);
    uv_idle_stop(&srv->flush_idle);
}

static void
flush_check_cb(uv_check_t *check)
{
    flush_dirty(check->data);
}

static void
flush_idle_cb(uv_idle_t *idle)
{
    flush_dirty(idle->data);
}

void
nbd_mark_dirty(struct nbd_conn *c)
{
    struct ng_nbd_server *srv = c->srv;

    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = srv->dirty;
    srv->dirty = c;
    if (!srv->handles_closing) {
        uv_check_start(&srv->flush_check, flush_check_cb);
        uv_idle_start(&srv->flush_idle, flush_idle_cb);
    }
}

static void
unmark_dirty(struct ng_nbd_server *srv, struct nbd_conn *c)
{
    struct nbd_conn **pp = &srv->dirty;

    if (!c->dirty)
        return;
    while (*pp != c)
        pp = &(*pp)->dirty_next;
    *pp = c->dirty_next;
    c->dirty = false;
    c->dirty_next = NULL;
}

/* ---- Server -------------------------------------------------------------- */

struct ng_nbd_server *
ng_nbd_server_new(uv_loop_t *loop, struct ng_graph *graph,
                  struct ng_error *err)
{
    struct ng_nbd_server *srv = calloc(1, sizeof *srv);

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
    srv->handles_open = 3;
    return srv;
}

/* ---- Exports ------------------------------------------------------------- */

/* Exact names only: falling back to the first export for "" would hand
 * a client that named none whatever disk happens to be first, and after
 * a removal a different one (qemu-storage-daemon refuses too). */
struct ng_nbd_export *
nbd_export_find(struct ng_nbd_server *srv, const char *name)
{
    return ng_strmap_get(&srv->export_index, name);
}

static void
export_free(struct ng_nbd_export *exp)
{
    if (exp == NULL)
        return;
    ng_bb_free(exp->bb);
    ng_allow_free(exp->allow, exp->n_allow);
    free(exp->name);
    free(exp->description);
    free(exp);
}

int
ng_nbd_server_add_export(struct ng_nbd_server *srv, const char *name,
                         const char *description, struct ng_node *node,
                         bool writable, struct ng_error *err)
{
    struct ng_nbd_export *exp;

    if (srv->shutting_down)
        return ng_error_set(err, ESHUTDOWN, "server is shutting down");
    if (strlen(name) > NBD_MAX_STRING)
        return ng_error_set(err, EINVAL, "export name longer than %d bytes",
                            NBD_MAX_STRING);
    if (description != NULL && strlen(description) > NBD_MAX_STRING)
        return ng_error_set(err, EINVAL,
                            "export '%s': description longer than %d bytes",
                            name, NBD_MAX_STRING);
    if (ng_strmap_get(&srv->export_index, name) != NULL)
        return ng_error_set(err, EEXIST, "export '%s' already exists",
                            name);
    exp = calloc(1, sizeof *exp);
    if (exp == NULL ||
        (exp->name = strdup(name)) == NULL ||
        (description != NULL &&
         (exp->description = strdup(description)) == NULL)) {
        export_free(exp);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    exp->bb = ng_bb_new(srv->graph, name, node, writable, err);
    if (exp->bb == NULL) {
        export_free(exp);
        return ng_error_prefix(err, "export '%s'", name);
    }
    exp->srv = srv;
    exp->writable = writable;
    if (ng_strmap_put(&srv->export_index, exp->name, exp) == -1) {
        export_free(exp);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    if (srv->exports_tail != NULL)
        srv->exports_tail->next = exp;
    else
        srv->exports = exp;
    srv->exports_tail = exp;
    ng_log_debug("export '%s' added", name);
    return 0;
}

int
ng_nbd_server_set_export_allow(struct ng_nbd_server *srv, const char *name,
                               const struct ng_allow_rule *rules, size_t n,
                               struct ng_error *err)
{
    struct ng_nbd_export *exp = nbd_export_find(srv, name);
    struct ng_allow_rule *copy = ng_allow_copy(rules, n);

    if (exp == NULL) {
        ng_allow_free(copy, n);
        return ng_error_set(err, ENOENT, "export '%s' not found", name);
    }
    if (n > 0 && copy == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    ng_allow_free(exp->allow, exp->n_allow);
    exp->allow = copy;
    exp->n_allow = n;
    exp->restricted = true;
    return 0;
}

/* Unlink from `list`; true if it was there. */
static bool
export_unlink(struct ng_nbd_export **list, struct ng_nbd_export *exp)
{
    for (; *list != NULL; list = &(*list)->next) {
        if (*list == exp) {
            *list = exp->next;
            exp->next = NULL;
            return true;
        }
    }
    return false;
}

/* Take an export off the server's list and out of its name index. */
static void
export_withdraw(struct ng_nbd_server *srv, struct ng_nbd_export *exp)
{
    struct ng_nbd_export *prev = NULL;

    if (srv->exports_tail == exp) {
        for (prev = srv->exports; prev != NULL && prev->next != exp;
             prev = prev->next)
            ;
        srv->exports_tail = prev;
    }
    export_unlink(&srv->exports, exp);
    ng_strmap_del(&srv->export_index, exp->name);
}

int
ng_nbd_server_del_export(struct ng_nbd_server *srv, const char *name,
                         bool hard, struct ng_error *err)
{
    struct ng_nbd_export *exp = ng_strmap_get(&srv->export_index, name);
    struct nbd_conn *c, *next;

    if (exp == NULL)
        return ng_error_set(err, ENOENT, "export '%s' not found", name);
    if (exp->nconns > 0 && !hard)
        return ng_error_set(err, EBUSY, "export '%s' has %u connection%s",
                            name, exp->nconns, exp->nconns == 1 ? "" : "s");
    export_withdraw(srv, exp);
    if (exp->nconns == 0) {
        export_free(exp);
        return 0;
    }
    exp->removed = true;
    exp->next = srv->removed;
    srv->removed = exp;
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->exp == exp)
            nbd_conn_close_gracefully(c);
    }
    return 0;
}

void
nbd_export_conn_added(struct ng_nbd_export *exp)
{
    exp->nconns++;
}

void
nbd_export_conn_removed(struct ng_nbd_export *exp)
{
    struct ng_nbd_server *srv = exp->srv;
    char *name;

    exp->nconns--;
    if (exp->nconns == 0 && exp->removed) {
        export_unlink(&srv->removed, exp);
        ng_log_debug("export '%s' removed", exp->name);
        name = exp->name;
        exp->name = NULL;
        export_free(exp);
        if (srv->export_gone != NULL)
            srv->export_gone(srv->export_gone_opaque, name);
        free(name);
    }
}

void
ng_nbd_server_on_export_gone(struct ng_nbd_server *srv,
                             void (*cb)(void *opaque, const char *name),
                             void *opaque)
{
    srv->export_gone = cb;
    srv->export_gone_opaque = opaque;
}

const struct ng_nbd_export *
ng_nbd_server_next_export(const struct ng_nbd_server *srv,
                          const struct ng_nbd_export *prev)
{
    return prev == NULL ? srv->exports : prev->next;
}

const struct ng_nbd_export *
ng_nbd_server_find_export(const struct ng_nbd_server *srv, const char *name)
{
    return nbd_export_find((struct ng_nbd_server *)srv, name);
}

const char *
ng_nbd_export_name(const struct ng_nbd_export *exp)
{
    return exp->name;
}

const char *
ng_nbd_export_description(const struct ng_nbd_export *exp)
{
    return exp->description;
}

bool
ng_nbd_export_writable(const struct ng_nbd_export *exp)
{
    return exp->writable;
}

struct ng_bb *
ng_nbd_export_bb(const struct ng_nbd_export *exp)
{
    return exp->bb;
}

unsigned
ng_nbd_export_connections(const struct ng_nbd_export *exp)
{
    return exp->nconns;
}

unsigned
ng_nbd_server_connections(const struct ng_nbd_server *srv)
{
    return srv->nconns;
}

/* ---- Listening ----------------------------------------------------------- */

static void listener_close(struct nbd_listener *l);
static void shutdown_poll(struct ng_nbd_server *srv);

/* "tcp:ADDRESS" of the peer, for log messages. */
static void
describe_tcp_peer(struct nbd_conn *c, const char *fallback)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";

    snprintf(c->peer, sizeof c->peer, "%s", fallback);
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
    else
        uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
    snprintf(c->peer, sizeof c->peer, "tcp:%s", host);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct nbd_listener *l = server->data;
    struct ng_nbd_server *srv = l->srv;
    bool tcp = l->h.handle.type == UV_TCP;
    struct nbd_conn *c;
    int r;

    if (status < 0) {
        ng_log_warn("%s: accept: %s", l->addr, uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        /* Without a handle we cannot even accept to refuse; libuv holds
         * the client until a later accept. */
        ng_log_error("%s: out of memory for a new connection", l->addr);
        return;
    }
    c->srv = srv;
    c->since = c->active_at = uv_now(srv->loop);
    c->tls_mode = l->tls_mode;
    c->tls_creds = l->tls_creds;
    r = tcp ? uv_tcp_init(srv->loop, &c->h.tcp)
            : uv_pipe_init(srv->loop, &c->h.pipe, 0);
    if (r < 0) {
        ng_log_error("%s: %s", l->addr, uv_strerror(r));
        free(c);
        return;
    }
    c->h.handle.data = c;
    /* From here the connection owns itself: it is on the list, and
     * nbd-conn.c closes and frees it even if accepting failed. */
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    r = uv_accept(server, &c->h.stream);
    if (r < 0) {
        ng_log_warn("%s: accept: %s", l->addr, uv_strerror(r));
        nbd_conn_abort(c);
        return;
    }
    if (tcp) {
        uv_tcp_nodelay(&c->h.tcp, 1);
        describe_tcp_peer(c, l->addr);
    } else {
        /* The default Unix socket buffer (~200 KiB) splits every large
         * READ reply into several writes and wake-ups; a bigger one more
         * than doubles 1 MiB read throughput.  (TCP buffers tune
         * themselves; setting them would stop that.)  The kernel caps
         * it at net.core.wmem_max; a failure costs only speed. */
        int size = NBD_UNIX_SNDBUF;

        uv_send_buffer_size(&c->h.handle, &size);
        snprintf(c->peer, sizeof c->peer, "%s", l->addr);
    }
    nbd_server_watch_deadlines(srv);
    nbd_conn_start(c);
}

void
nbd_server_conn_gone(struct ng_nbd_server *srv, struct nbd_conn *c)
{
    unmark_dirty(srv, c);
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

static int
listen_unix(struct nbd_listener *l, const char *path, struct ng_error *err)
{
    int r;

    if (ng_unix_path_prepare(path, err) < 0)
        return -1;
    if ((l->path = strdup(path)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    r = uv_pipe_init(l->srv->loop, &l->h.pipe, 0);
    if (r < 0)
        return ng_error_set(err, -r, "%s: %s", l->addr, uv_strerror(r));
    l->h.handle.data = l;
    r = uv_pipe_bind(&l->h.pipe, path);
    if (r < 0) {
        free(l->path);
        l->path = NULL;
        return ng_error_set(err, -r, "%s: bind: %s", l->addr, uv_strerror(r));
    }
    ng_unix_path_remember(path, &l->file);
    return 0;
}

/* "HOST:PORT" or "[V6HOST]:PORT" into host and port (both in `buf`). */
static int
split_host_port(char *buf, char **host, char **port)
{
    char *colon;

    if (buf[0] == '[') {
        char *end = strchr(buf, ']');

        if (end == NULL || end[1] != ':')
            return -1;
        *end = '\0';
        *host = buf + 1;
        *port = end + 2;
    } else {
        colon = strrchr(buf, ':');
        if (colon == NULL)
            return -1;
        *colon = '\0';
        *host = buf;
        *port = colon + 1;
    }
    return **port != '\0' ? 0 : -1;
}

/* Binds the first address the name resolves to. */
static int
listen_tcp(struct nbd_listener *l, const char *hostport, struct ng_error *err)
{
    struct addrinfo hints, *res = NULL;
    uv_getaddrinfo_t gai;
    char *buf = strdup(hostport), *host, *port;
    int r;

    if (buf == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    if (split_host_port(buf, &host, &port) < 0) {
        free(buf);
        return ng_error_set(err, EINVAL,
                            "'%s': expected tcp:HOST:PORT or tcp:[V6]:PORT",
                            l->addr);
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    r = uv_getaddrinfo(l->srv->loop, &gai, NULL,
                       host[0] != '\0' ? host : NULL, port, &hints);
    free(buf);
    if (r < 0)
        return ng_error_set(err, EINVAL, "%s: %s", l->addr, uv_strerror(r));
    res = gai.addrinfo;
    r = uv_tcp_init(l->srv->loop, &l->h.tcp);
    if (r == 0) {
        l->h.handle.data = l;
        r = uv_tcp_bind(&l->h.tcp, res->ai_addr,
                        res->ai_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    }
    uv_freeaddrinfo(res);
    if (r < 0)
        return ng_error_set(err, -r, "%s: bind: %s", l->addr, uv_strerror(r));
    return 0;
}

static void
listener_free(struct nbd_listener *l)
{
    free(l->addr);
    free(l->path);
    free(l);
}

static void
listener_closed_cb(uv_handle_t *h)
{
    listener_free(h->data);
}

int
ng_nbd_server_listen(struct ng_nbd_server *srv, const char *addr,
                     struct ng_error *err)
{
    return ng_nbd_server_listen_tls(srv, addr, NG_TLS_OFF, NULL, err);
}

int
ng_nbd_server_listen_tls(struct ng_nbd_server *srv, const char *addr,
                         enum ng_tls_mode mode,
                         const struct ng_tls_creds *creds,
                         struct ng_error *err)
{
    struct nbd_listener *l;
    int r;

    if (srv->shutting_down)
        return ng_error_set(err, ESHUTDOWN, "server is shutting down");
    if (mode != NG_TLS_OFF && creds == NULL)
        return ng_error_set(err, EINVAL, "%s: TLS without credentials",
                            addr);
    l = calloc(1, sizeof *l);
    if (l == NULL || (l->addr = strdup(addr)) == NULL) {
        free(l);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    l->srv = srv;
    l->tls_mode = mode;
    l->tls_creds = mode != NG_TLS_OFF ? creds : NULL;
    if (strncmp(addr, "unix:", 5) == 0)
        r = listen_unix(l, addr + 5, err);
    else if (strncmp(addr, "tcp:", 4) == 0)
        r = listen_tcp(l, addr + 4, err);
    else
        r = ng_error_set(err, EINVAL,
                         "'%s': expected unix:PATH or tcp:HOST:PORT", addr);
    if (r == 0) {
        r = uv_listen(&l->h.stream, SOMAXCONN, on_connection);
        if (r < 0)
            r = ng_error_set(err, -r, "%s: listen: %s", addr,
                             uv_strerror(r));
    }
    if (r < 0) {
        if (l->h.handle.data == l) {
            listener_close(l);
        } else {
            listener_free(l);
        }
        return -1;
    }
    l->next = srv->listeners;
    srv->listeners = l;
    ng_log_info("listening on %s%s", addr,
                mode == NG_TLS_REQUIRE ? " (TLS required)"
                : mode == NG_TLS_ALLOW ? " (TLS allowed)" : "");
    return 0;
}

/* Remove the socket file only if it is still the one we bound: another
 * server may have replaced it meanwhile. */
static void
listener_close(struct nbd_listener *l)
{
    if (l->path != NULL)
        ng_unix_path_unlink_own(l->path, &l->file);
    uv_close(&l->h.handle, listener_closed_cb);
}

/* ---- Deadlines ----------------------------------------------------------- */

/* Once a second while a client is in handshake, and every
 * NBD_SHUTDOWN_TICK_MS while we are shutting down: drop clients that take
 * too long, close those done at shutdown. */
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
    while (srv->listeners != NULL) {
        struct nbd_listener *l = srv->listeners;

        srv->listeners = l->next;
        listener_close(l);
    }
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
    while (srv->exports != NULL) {
        struct ng_nbd_export *exp = srv->exports;

        srv->exports = exp->next;
        export_free(exp);
    }
    srv->exports_tail = NULL;
    ng_strmap_clear(&srv->export_index);
    while (srv->removed != NULL) {
        struct ng_nbd_export *exp = srv->removed;

        srv->removed = exp->next;
        export_free(exp);
    }
    free_req_list(srv->free_reqs);
    srv->free_reqs = NULL;
    while (srv->free_rbufs != NULL) {
        struct nbd_rbuf *rb = srv->free_rbufs;

        srv->free_rbufs = rb->next_free;
        free(rb);
    }
    srv->n_free_rbufs = 0;
    pool_fini(&srv->pool);
    if (srv->handles_closing && srv->handles_open == 0) {
        free(srv);
        return;
    }
    /* Our handles are still closing (or, if the server was never shut
     * down, still open): their close callback frees the rest. */
    while (srv->listeners != NULL) {
        struct nbd_listener *l = srv->listeners;

        srv->listeners = l->next;
        listener_close(l);
    }
    srv->shutdown_cb = NULL;
    srv->free_pending = true;
    server_close_handles(srv);
}
