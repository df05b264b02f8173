/* server/nbd-listen.c: listeners — binding "unix:PATH" and
 * "tcp:HOST:PORT", accepting clients onto the server's connection list,
 * and closing listeners (a Unix socket file is removed only if it is
 * still ours).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "server/log.h"
#include "server/nbd-int.h"
#include "server/nbd.h"
#include "server/unix-path.h"

/* ---- Listening ----------------------------------------------------------- */

static void listener_close(struct nbd_listener *l);

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

/* True (and logged, at most once per NBD_FD_WARN_MS) when the client
 * took one of the descriptors kept in reserve below the fd limit. */
static bool
at_fd_limit(struct ng_nbd_server *srv, struct nbd_conn *c)
{
    uv_os_fd_t fd;
    uint64_t now = uv_now(srv->loop);

    if (srv->fd_limit == 0 || uv_fileno(&c->h.handle, &fd) != 0 ||
        (uint64_t)fd + NBD_FD_RESERVE < srv->fd_limit)
        return false;
    srv->fd_refused++;
    if (srv->fd_warned_at != 0 && now - srv->fd_warned_at < NBD_FD_WARN_MS)
        return true;
    ng_log_warn("%s: at the open file limit (%" PRIu64 " descriptors, %u "
                "clients connected): closed %u new client%s at once (raise "
                "the open file limit, or set server.max-connections)",
                c->peer, srv->fd_limit, srv->nconns - 1, srv->fd_refused,
                srv->fd_refused == 1 ? "" : "s");
    srv->fd_warned_at = now != 0 ? now : 1;
    srv->fd_refused = 0;
    return true;
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct nbd_listener *l = server->data;
    struct ng_nbd_server *srv = l->srv;
    bool tcp = l->h.handle.type == UV_TCP;
    struct nbd_conn *c;
    int r;

    if (status == UV_EMFILE || status == UV_ENFILE) {
        /* libuv has accepted and closed the client to keep the listener
         * from spinning (its EMFILE trick); say so. */
        ng_log_warn("%s: %s: a new client was closed at once (raise the "
                    "open file limit, or set server.max-connections)",
                    l->addr, uv_strerror(status));
        return;
    }
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
    if (at_fd_limit(srv, c)) {
        nbd_conn_abort(c);
        return;
    }
    if (srv->max_conns != 0 && srv->nconns > srv->max_conns) {
        ng_log_warn("%s: %u clients connected, the maximum "
                    "(max-connections); closing the new one", c->peer,
                    srv->max_conns);
        nbd_conn_abort(c);
        return;
    }
    nbd_server_watch_deadlines(srv);
    nbd_conn_start(c);
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

/* A socket we were handed (socket activation), bound and maybe already
 * listening: Unix or TCP, whatever it is.  Its file, if any, is not ours
 * to remove. */
static int
listen_fd(struct nbd_listener *l, const char *num, struct ng_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0, r;
    socklen_t tlen = sizeof type;
    char *end;
    long fd = strtol(num, &end, 10);

    if (*num == '\0' || *end != '\0' || fd < 0 || fd > INT32_MAX)
        return ng_error_set(err, EINVAL, "'%s': not a file descriptor",
                            l->addr);
    if (getsockname((int)fd, (struct sockaddr *)&ss, &len) == -1 ||
        getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == -1)
        return ng_error_set(err, errno, "%s: not a socket: %s", l->addr,
                            strerror(errno));
    if (type != SOCK_STREAM)
        return ng_error_set(err, EINVAL, "%s: not a stream socket",
                            l->addr);
    if (ss.ss_family == AF_UNIX) {
        r = uv_pipe_init(l->srv->loop, &l->h.pipe, 0);
        if (r == 0) {
            l->h.handle.data = l;
            r = uv_pipe_open(&l->h.pipe, (int)fd);
        }
    } else if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        r = uv_tcp_init(l->srv->loop, &l->h.tcp);
        if (r == 0) {
            l->h.handle.data = l;
            r = uv_tcp_open(&l->h.tcp, (int)fd);
        }
    } else {
        return ng_error_set(err, EINVAL, "%s: neither a Unix nor a TCP "
                            "socket", l->addr);
    }
    if (r < 0)
        return ng_error_set(err, -r, "%s: %s", l->addr, uv_strerror(r));
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
    else if (strncmp(addr, "fd:", 3) == 0)
        r = listen_fd(l, addr + 3, err);
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

void
nbd_listeners_close(struct ng_nbd_server *srv)
{
    while (srv->listeners != NULL) {
        struct nbd_listener *l = srv->listeners;

        srv->listeners = l->next;
        listener_close(l);
    }
}

static struct nbd_listener **
listener_slot(struct ng_nbd_server *srv, const char *addr)
{
    struct nbd_listener **p = &srv->listeners;

    while (*p != NULL && strcmp((*p)->addr, addr) != 0)
        p = &(*p)->next;
    return p;
}

int
ng_nbd_server_unlisten(struct ng_nbd_server *srv, const char *addr,
                       struct ng_error *err)
{
    struct nbd_listener **p = listener_slot(srv, addr);
    struct nbd_listener *l = *p;

    if (l == NULL)
        return ng_error_set(err, ENOENT, "not listening on %s", addr);
    *p = l->next;
    listener_close(l);
    ng_log_info("no longer listening on %s (its clients stay connected)",
                addr);
    return 0;
}

int
ng_nbd_server_listen_set_tls(struct ng_nbd_server *srv, const char *addr,
                             enum ng_tls_mode mode,
                             const struct ng_tls_creds *creds,
                             struct ng_error *err)
{
    struct nbd_listener *l = *listener_slot(srv, addr);

    if (l == NULL)
        return ng_error_set(err, ENOENT, "not listening on %s", addr);
    if (mode != NG_TLS_OFF && creds == NULL)
        return ng_error_set(err, EINVAL, "%s: TLS without credentials",
                            addr);
    l->tls_mode = mode;
    l->tls_creds = mode != NG_TLS_OFF ? creds : NULL;
    return 0;
}

void
ng_nbd_server_swap_creds(struct ng_nbd_server *srv,
                         const struct ng_tls_creds *old,
                         const struct ng_tls_creds *new)
{
    struct nbd_listener *l;

    for (l = srv->listeners; l != NULL; l = l->next)
        if (old != NULL && l->tls_creds == old)
            l->tls_creds = new;
}
