/* server/main.c: nbdgraphd — read the config, build the graph, serve. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "config/config.h"
#include "graph/graph.h"
#include "graph/job.h"
#include "graph/secret.h"
#include "graph/tls-client.h"
#include "filters/filters.h"
#include "filters/throttle.h"
#include "nac/nac.h"
#include "server/control.h"
#include "server/exports.h"
#include "server/log.h"
#include "server/nbd.h"
#include "server/qmp-util.h"
#include "server/reload.h"
#include "server/sd-daemon.h"
#include "server/tls.h"
#include "server/unix-path.h"

/* The daemon's top-level state: the one place that owns everything. */
struct daemon {
    uv_loop_t loop;
    struct ng_config *cfg;
    struct ng_graph *graph;
    struct ng_nbd_server *nbd;
    struct ng_nac *nac;
    struct ng_control_ctx ctl_ctx;
    struct ng_control *control;
    uv_signal_t sigint, sigterm, sighup;
    unsigned n_signals;         /* initialised, so closed at the end */
    int n_activated;            /* sockets from socket activation */
    char pidfile[4096];         /* --pidfile made absolute (we leave the
                                 * start directory), "" = none */
    bool pidfile_written;       /* so removed at exit */
    bool stopping;
    int exit_code;
};

struct options {
    const char *config;
    struct ng_cli cli;          /* --blockdev, --export (arrays point into
                                 * argv; owned arrays) */
    bool check_config;
    bool foreground;
    bool exit_with_parent;
    int verbose;
    const char *pidfile;
    bool log_given;             /* --log: keep it when detaching */
    enum ng_log_sink log;
};

/* Without --config, root (a system service) reads this if it exists;
 * anyone else, and root without it, gets the built-in demo. */
#define NG_SYSTEM_CONFIG "/etc/nbdgraph/nbdgraph.yaml"

static void
usage(FILE *fp)
{
    fprintf(fp,
"Usage: nbdgraphd [OPTION]...\n"
"Serve NBD exports from a live graph of block nodes.\n"
"\n"
"  -c, --config FILE       read FILE (YAML).  Without it, root reads\n"
"                          " NG_SYSTEM_CONFIG " if it exists;\n"
"                          otherwise (and for any other user) nbdgraphd\n"
"                          serves the built-in demo: a writable 1 GiB\n"
"                          memory export 'demo' on unix:%s\n"
"                          and tcp:127.0.0.1:10809\n"
"      --blockdev OPTS     add a node, as qemu-storage-daemon does:\n"
"                          driver=file,node-name=d0,filename=x.raw\n"
"      --export OPTS       add an export: type=nbd,id=e0,node-name=d0,\n"
"                          writable=on (both merge into --config's file,\n"
"                          or into the default's server section)\n"
"  -t, --check-config      validate the configuration, then exit 0 or 1\n"
"  -f, --foreground        stay in the foreground (log to stderr); without\n"
"                          it, detach once serving and log to syslog\n"
"      --log=WHERE         stderr, syslog or journal (journald's native\n"
"                          protocol, with priority and source location)\n"
"      --pidfile FILE      write the pid to FILE once serving; removed at\n"
"                          exit\n"
"      --exit-with-parent  exit when the parent process exits (for tests)\n"
"  -v, --verbose           log debug messages\n"
"  -h, --help              show this help\n"
"  -V, --version           show the version\n",
            NG_DEFAULT_SOCKET);
}

static int
parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "blockdev", required_argument, NULL, 'B' },
        { "export", required_argument, NULL, 'E' },
        { "check-config", no_argument, NULL, 't' },
        { "foreground", no_argument, NULL, 'f' },
        { "exit-with-parent", no_argument, NULL, 'P' },
        { "log", required_argument, NULL, 'L' },
        { "pidfile", required_argument, NULL, 'p' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char **bd = calloc((size_t)argc, sizeof *bd);
    const char **ex = calloc((size_t)argc, sizeof *ex);
    int c;

    if (bd == NULL || ex == NULL) {
        free(bd);
        free(ex);
        fprintf(stderr, "nbdgraphd: out of memory\n");
        return -1;
    }
    o->cli.blockdevs = bd;
    o->cli.exports = ex;
    while ((c = getopt_long(argc, argv, "c:tfvhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'B': bd[o->cli.n_blockdevs++] = optarg; break;
        case 'E': ex[o->cli.n_exports++] = optarg; break;
        case 't': o->check_config = true; break;
        case 'f': o->foreground = true; break;
        case 'P': o->exit_with_parent = true; break;
        case 'p': o->pidfile = optarg; break;
        case 'L':
            if (ng_log_sink_parse(optarg, &o->log) == -1) {
                fprintf(stderr, "nbdgraphd: --log: expected stderr, syslog "
                        "or journal, not '%s'\n", optarg);
                return -1;
            }
            o->log_given = true;
            break;
        case 'v': o->verbose++; break;
        case 'h': usage(stdout); exit(EXIT_SUCCESS);
        case 'V': printf("nbdgraphd %s\n", PACKAGE_VERSION);
                  exit(EXIT_SUCCESS);
        default:  usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "nbdgraphd: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* Errors found while opening (a raw slice past its child's end, a file
 * that is missing) carry no position; give them the node's. */
static int
located(struct ng_error *err, const char *file, const struct ng_loc *loc)
{
    if (ng_config_error_located(err, file))
        return -1;
    return ng_error_prefix(err, "%s:%u:%u", file, loc->line, loc->column);
}

/* One config node's open (ng_graph_add_node's callback). */
struct node_wait {
    bool done;
    bool failed;
    struct ng_error *err;
};

static void
node_opened(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct node_wait *w = opaque;

    w->done = true;
    if (node == NULL) {
        w->failed = true;
        *w->err = *err;
    }
}

/* Open one node and wait: an open may take a while (on a worker thread,
 * through its children).  Nothing listens yet, so running the loop here
 * serves nobody early. */
static int
open_node(struct daemon *d, const struct ng_node_cfg *nc,
          struct ng_error *err)
{
    struct node_wait w = { .err = err };
    struct ng_value *opts = ng_node_opts_for_graph(nc->opts);
    int rc;

    if (opts == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    rc = ng_graph_add_node(d->graph, nc->name, opts, node_opened, &w, err);
    ng_value_free(opts);
    if (rc == -1)
        return -1;
    while (!w.done)
        if (uv_run(&d->loop, UV_RUN_ONCE) == 0 && !w.done)
            return ng_error_set(err, EIO, "node '%s': its open never "
                                "completes", nc->name);
    if (w.failed)
        return -1;
    /* bitmaps: before any export offers them */
    return ng_reload_make_bitmaps(ng_graph_find(d->graph, nc->name),
                                  nc->opts, err);
}

/* The graph's warn hook: drivers' warnings (blkverify, quorum) go to
 * the daemon's log. */
static void
log_graph_warning(void *opaque, const char *msg)
{
    (void)opaque;
    ng_log_warn("%s", msg);
}

/* Secrets become graph objects before any node opens: luks nodes
 * unlock with them.  A secret file is read once, here. */
static int
load_secrets(struct daemon *d, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < d->cfg->n_secrets; i++) {
        const struct ng_secret_cfg *sc = &d->cfg->secrets[i];
        int r = sc->file != NULL
                ? ng_secret_declare_file(d->graph, sc->name, sc->file, err)
                : ng_secret_declare(d->graph, sc->name, sc->data,
                                    strlen(sc->data), err);

        if (r == -1)
            return located(err, d->cfg->file, &sc->loc);
    }
    return 0;
}

/* Client TLS credentials (endpoint: client) too: nodes connecting
 * elsewhere (nbd's tls-creds) find them at open.  Their files are
 * checked here; libnbd reads them at each connection. */
static int
load_client_creds(struct daemon *d, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < d->cfg->n_tls_creds; i++) {
        const struct ng_tls_creds_cfg *tc = &d->cfg->tls_creds[i];

        if (tc->client &&
            ng_tls_client_creds_declare(d->graph, tc->name, tc->psk,
                                        tc->dir, tc->verify_peer,
                                        tc->username, err) == -1)
            return ng_error_prefix(err, "%s:%u:%u: tls-creds '%s'",
                                   tc->loc.file, tc->loc.line,
                                   tc->loc.column, tc->name);
    }
    return 0;
}

static int
build_graph(struct daemon *d, bool inspect_only, struct ng_error *err)
{
    size_t i;

    d->graph = ng_graph_new(&d->loop, ng_all_drivers);
    if (d->graph == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    d->graph->warn = log_graph_warning;
    d->graph->inspect_only = inspect_only;
    for (i = 0; i < d->cfg->n_groups; i++)
        if (ng_throttle_group_declare(d->graph, d->cfg->groups[i].name,
                                      d->cfg->groups[i].limits, err) == -1)
            return -1;
    if (load_secrets(d, err) == -1 || load_client_creds(d, err) == -1)
        return -1;
    for (i = 0; i < d->cfg->n_nodes; i++) {
        const struct ng_node_cfg *nc = &d->cfg->nodes[i];

        if (open_node(d, nc, err) == -1)
            return located(err, d->cfg->file, &nc->loc);
        ng_log_debug("node '%s' opened", nc->name);
    }
    return 0;
}

static void
log_nac(void *opaque, const char *line)
{
    (void)opaque;
    ng_log_debug("nac: %s", line);
}

static int
start_server(struct daemon *d, struct ng_error *err)
{
    size_t i;

    d->nac = ng_nac_new();
    if (d->nac == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    ng_nac_set_log(d->nac, log_nac, NULL);
    d->nbd = ng_nbd_server_new(&d->loop, d->graph, err);
    if (d->nbd == NULL)
        return -1;
    if (d->cfg->max_request != 0 &&
        ng_nbd_server_set_max_request(d->nbd, d->cfg->max_request,
                                      err) == -1)
        return located(err, d->cfg->file, &d->cfg->max_request_loc);
    ng_nbd_server_set_max_connections(d->nbd, d->cfg->max_connections);
    ng_nbd_server_set_idle_timeout(d->nbd, d->cfg->idle_timeout);
    ng_nbd_server_set_poll_max_ns(d->nbd, d->cfg->poll_max_ns);
    d->ctl_ctx.graph = d->graph;
    d->graph->event = ng_qmp_graph_event;
    d->graph->event_opaque = &d->ctl_ctx;
    d->ctl_ctx.nbd = d->nbd;
    d->ctl_ctx.nac = d->nac;
    d->ctl_ctx.reload = ng_reload_new(d->cfg, strcmp(d->cfg->file,
                                                     "<default>") != 0);
    if (d->ctl_ctx.reload == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    if (d->n_activated > 0)
        ng_reload_set_activated(d->ctl_ctx.reload);
    ng_nbd_server_on_export_gone(d->nbd, ng_exports_gone, &d->ctl_ctx);
    for (i = 0; i < d->cfg->n_exports; i++) {
        const struct ng_export_cfg *ec = &d->cfg->exports[i];
        struct ng_export_spec spec = {
            .id = ec->name, .name = ec->nbd_name, .node = ec->node,
            .writable = ec->writable,
            .description = ec->description, .filters = ec->filters,
            .max_connections = ec->max_connections,
            .allocation_depth = ec->allocation_depth,
            .bitmaps = (const char *const *)ec->bitmaps,
            .n_bitmaps = ec->n_bitmaps,
        };

        if (ng_exports_add(&d->ctl_ctx, &spec, "config", false, err) == -1 ||
            (ec->restricted &&
             ng_nbd_server_set_export_allow(d->nbd, ec->nbd_name != NULL
                                            ? ec->nbd_name : ec->name,
                                            ec->allow,
                                            ec->n_allow, err) == -1))
            return ng_error_prefix(err, "%s:%u:%u: export '%s'",
                                   ec->loc.file, ec->loc.line,
                                   ec->loc.column, ec->name);
    }
    return 0;
}

/* TLS credentials become graph objects, read once at start: a
 * missing or unreadable file stops the start, not a client. */
static int
load_tls_creds(struct daemon *d, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < d->cfg->n_tls_creds; i++) {
        const struct ng_tls_creds_cfg *tc = &d->cfg->tls_creds[i];
        struct ng_tls_creds *creds;

        if (tc->client)             /* build_graph() loaded those */
            continue;
        creds = ng_tls_creds_new(tc->psk ? NG_TLS_CREDS_PSK
                                         : NG_TLS_CREDS_X509,
                                 tc->dir, tc->verify_peer, err);
        if (creds == NULL ||
            ng_graph_object_add(d->graph, &ng_tls_creds_type, tc->name,
                                creds, err) == -1) {
            ng_tls_creds_free(creds);
            return ng_error_prefix(err, "%s:%u:%u: tls-creds '%s'",
                                   tc->loc.file, tc->loc.line,
                                   tc->loc.column, tc->name);
        }
    }
    return 0;
}

/* A host name resolves (a numeric address the config already checked). */
static int
check_tcp_host(const struct ng_listen_cfg *l, struct ng_error *err)
{
    struct addrinfo hints = {
        .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM,
    };
    struct addrinfo *res = NULL;
    int r = getaddrinfo(l->host, l->port, &hints, &res);

    if (r != 0)
        return ng_error_set(err, EINVAL, "listen address '%s': cannot "
                            "resolve host '%s': %s", l->text, l->host,
                            gai_strerror(r));
    freeaddrinfo(res);
    return 0;
}

static int
check_listener(const struct ng_listen_cfg *l, bool probe,
               struct ng_error *err)
{
    if (l->kind == NG_LISTEN_UNIX)
        return ng_unix_path_check(l->path, probe, err);
    return check_tcp_host(l, err);
}

/* Before any listener is made, check them all, so that a start that
 * cannot listen (a second daemon on the same config) changes nothing —
 * above all not the running daemon's control socket.  `probe`: a socket
 * file that something answers on counts as taken (not for
 * --check-config: the running daemon may be the one to be replaced). */
static int
check_listeners(const struct ng_config *cfg, bool probe, bool activated,
                struct ng_error *err)
{
    size_t i;

    for (i = 0; i < cfg->n_listen && !activated; i++) {
        const struct ng_listen_cfg *l = &cfg->listen[i];

        if (check_listener(l, probe, err) == -1)
            return located(err, cfg->file, &l->loc);
    }
    if (cfg->control != NULL &&
        ng_unix_path_check(cfg->control, probe, err) == -1)
        return located(err, cfg->file, &cfg->control_loc);
    return 0;
}

/* The config's listen address that socket `fd` is bound to: the same
 * Unix socket path, or the same TCP port.  NULL when none is. */
static const struct ng_listen_cfg *
listen_cfg_of_fd(const struct ng_config *cfg, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char port[16];
    size_t i;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
        return NULL;
    if (ss.ss_family == AF_INET)
        snprintf(port, sizeof port, "%u",
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));
    else if (ss.ss_family == AF_INET6)
        snprintf(port, sizeof port, "%u",
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    for (i = 0; i < cfg->n_listen; i++) {
        const struct ng_listen_cfg *l = &cfg->listen[i];

        if (ss.ss_family == AF_UNIX && l->kind == NG_LISTEN_UNIX &&
            strcmp(((struct sockaddr_un *)&ss)->sun_path, l->path) == 0)
            return l;
        if (ss.ss_family != AF_UNIX && l->kind == NG_LISTEN_TCP &&
            strcmp(l->port, port) == 0)
            return l;
    }
    return NULL;
}

/* The TLS settings for a socket we were handed: those of the listen
 * address it is bound to, or, when it matches none, those all the
 * listen addresses share.  Never plain text by accident: addresses that
 * differ, and a socket that matches none of them, stop the start. */
static int
activated_tls(const struct ng_config *cfg, int fd,
              const struct ng_listen_cfg **tls_from, struct ng_error *err)
{
    const struct ng_listen_cfg *l = listen_cfg_of_fd(cfg, fd);
    size_t i;

    if (l != NULL || cfg->n_listen == 0) {
        *tls_from = l;
        return 0;
    }
    for (i = 1; i < cfg->n_listen; i++)
        if (cfg->listen[i].tls != cfg->listen[0].tls ||
            (cfg->listen[0].tls_creds == NULL) !=
            (cfg->listen[i].tls_creds == NULL) ||
            (cfg->listen[0].tls_creds != NULL &&
             strcmp(cfg->listen[0].tls_creds, cfg->listen[i].tls_creds)))
            return ng_error_set(err, EINVAL, "socket activation: fd %d "
                                "is bound to none of server.listen's "
                                "addresses, whose tls: settings differ; "
                                "name its address in server.listen", fd);
    *tls_from = &cfg->listen[0];
    return 0;
}

/* Socket activation (systemd's .socket unit, systemd-socket-activate):
 * the sockets we were handed replace the config's listen addresses, as
 * nbdkit-service(1) describes for nbdkit; each takes the TLS settings
 * of its address in the config (activated_tls). */
static int
listen_activated(struct daemon *d, struct ng_error *err)
{
    char addr[32];

    ng_log_info("socket activation: %d socket%s; the config's listen "
                "addresses are not bound", d->n_activated,
                d->n_activated == 1 ? "" : "s");
    for (int i = 0; i < d->n_activated; i++) {
        int fd = NG_SD_LISTEN_FDS_START + i;
        const struct ng_listen_cfg *l = NULL;
        const struct ng_tls_creds *creds = NULL;

        if (activated_tls(d->cfg, fd, &l, err) == -1)
            return -1;
        if (l != NULL && l->tls_creds != NULL)
            creds = ng_graph_object_find(d->graph, &ng_tls_creds_type,
                                         l->tls_creds);
        snprintf(addr, sizeof addr, "fd:%d", fd);
        if (ng_nbd_server_listen_tls(d->nbd, addr,
                                     l != NULL ? l->tls : NG_TLS_OFF,
                                     creds, err) == -1)
            return -1;
    }
    return 0;
}

/* Last of all, so that once an NBD socket accepts, the daemon (control
 * channel included) is ready. */
static int
start_listening(struct daemon *d, struct ng_error *err)
{
    size_t i;

    if (d->n_activated > 0)
        return listen_activated(d, err);
    for (i = 0; i < d->cfg->n_listen; i++) {
        const struct ng_listen_cfg *l = &d->cfg->listen[i];
        const struct ng_tls_creds *creds = NULL;

        if (l->tls_creds != NULL)
            creds = ng_graph_object_find(d->graph, &ng_tls_creds_type,
                                         l->tls_creds);
        if (ng_nbd_server_listen_tls(d->nbd, l->text, l->tls, creds,
                                     err) == -1)
            return -1;
    }
    return 0;
}

static int
start_control(struct daemon *d, struct ng_error *err)
{
    if (d->cfg->control == NULL)
        return 0;
    d->control = ng_control_new(&d->loop, &d->ctl_ctx, err);
    if (d->control == NULL)
        return -1;
    if (ng_control_listen(d->control, d->cfg->control, err) == -1)
        return -1;
    if (d->cfg->control_group != NULL &&
        ng_control_share_with_group(d->control, d->cfg->control_group,
                                    err) == -1)
        return located(err, d->cfg->file, &d->cfg->control_group_loc);
    return 0;
}

/* Tell the user how to connect: one URI per listen address and export. */
static void
print_uris(const struct daemon *d)
{
    size_t i, j;

    for (i = 0; i < d->cfg->n_listen; i++) {
        const struct ng_listen_cfg *l = &d->cfg->listen[i];
        /* libnbd's scheme for a server that requires TLS */
        const char *s = l->tls == NG_TLS_REQUIRE ? "s" : "";

        for (j = 0; j < d->cfg->n_exports; j++) {
            const char *name = d->cfg->exports[j].name;

            if (l->kind == NG_LISTEN_UNIX)
                printf("nbd%s+unix:///%s?socket=%s\n", s, name, l->path);
            else if (strchr(l->host, ':') != NULL)
                printf("nbd%s://[%s]:%s/%s\n", s, l->host, l->port, name);
            else
                printf("nbd%s://%s:%s/%s\n", s, l->host, l->port, name);
        }
    }
    fflush(stdout);
}

static void
control_stopped(void *opaque)
{
    struct daemon *d = opaque;

    uv_signal_t *hs[] = { &d->sigint, &d->sigterm, &d->sighup };
    unsigned i;

    for (i = 0; i < d->n_signals; i++)
        uv_close((uv_handle_t *)hs[i], NULL);
    d->n_signals = 0;
}

/* Clients first (their requests finish), then the control channel. */
static void
server_stopped(void *opaque)
{
    struct daemon *d = opaque;

    if (d->control != NULL)
        ng_control_shutdown(d->control, control_stopped, d);
    else
        control_stopped(d);
}

/* Tell systemd (Type=notify) where we are; nothing without it. */
static void
notify_manager(const char *state)
{
    if (ng_sd_notify(state) == -1)
        ng_log_warn("sd_notify %s: %s", state, strerror(errno));
}

static void
begin_shutdown(struct daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    notify_manager("STOPPING=1");
    if (d->graph != NULL) {
        ng_job_cancel_all(d->graph);    /* they wind down with the clients */
        ng_throttle_lift_all(d->graph); /* nothing waits for its limits */
        /* A blockdev-add or reload waiting for a remote is answered now,
         * while its caller is still connected; the exit does not wait. */
        ng_graph_cancel_opens(d->graph);
    }
    if (d->nbd != NULL)
        ng_nbd_server_shutdown(d->nbd, server_stopped, d);
    else
        server_stopped(d);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;

    if (signum == SIGHUP) {
        if (!d->stopping)
            ng_reload_signal(&d->ctl_ctx);
        return;
    }
    if (d->stopping)
        return;
    ng_log_info("%s: shutting down", strsignal(signum));
    begin_shutdown(d);
}

static int
watch_signals(struct daemon *d)
{
    uv_signal_t *hs[] = { &d->sigint, &d->sigterm, &d->sighup };
    int nums[] = { SIGINT, SIGTERM, SIGHUP };
    size_t i;

    for (i = 0; i < 3; i++) {
        if (uv_signal_init(&d->loop, hs[i]) != 0)
            return -1;
        d->n_signals++;
        hs[i]->data = d;
        if (uv_signal_start(hs[i], on_signal, nums[i]) != 0)
            return -1;
    }
    return 0;
}

/* The parent of a daemon: wait until the child says it serves, then exit
 * 0; if it dies first (its error is already on our shared stderr), exit
 * with its status.  Never returns. */
static void
wait_for_daemon(pid_t child, int ready_fd)
{
    char c;
    ssize_t n;
    int status = 0;

    do
        n = read(ready_fd, &c, 1);
    while (n == -1 && errno == EINTR);
    if (n == 1)
        _exit(EXIT_SUCCESS);
    while (waitpid(child, &status, 0) == -1 && errno == EINTR)
        ;
    _exit(WIFEXITED(status) && WEXITSTATUS(status) != 0 ?
          WEXITSTATUS(status) : EXIT_FAILURE);
}

/* Without --foreground, as qemu-nbd --fork: fork before starting, so
 * the child makes every handle itself; the parent stays until the child
 * serves.  In the child, returns the fd to announce that on. */
static int
fork_daemon(void)
{
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) == -1)
        return -1;
    pid = fork();
    if (pid == -1) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid > 0) {
        close(fds[1]);
        wait_for_daemon(pid, fds[0]);
    }
    close(fds[0]);
    if (setsid() == -1) {
        close(fds[1]);
        return -1;
    }
    return fds[1];
}

/* The child, now serving: leave the start directory (every path the
 * config holds is absolute by now) and the terminal — stdio to
 * /dev/null, and logs to syslog — then tell the parent it may exit.
 * In that order, so that when the parent is gone nothing of ours holds
 * its stdout: `out=$(nbdgraphd)` returns at once. */
static int
detach(int ready_fd, bool keep_log)
{
    int fd;

    if (chdir("/") == -1 || (fd = open("/dev/null", O_RDWR)) == -1)
        return -1;
    if (dup2(fd, STDIN_FILENO) == -1 || dup2(fd, STDOUT_FILENO) == -1 ||
        dup2(fd, STDERR_FILENO) == -1) {
        close(fd);
        return -1;
    }
    if (fd > STDERR_FILENO)
        close(fd);
    if (!keep_log)
        ng_log_to(NG_LOG_SINK_SYSLOG);
    if (write(ready_fd, "", 1) != 1)
        return -1;
    close(ready_fd);
    return 0;
}

static struct ng_config *
load_config(const struct options *o, struct ng_error *err)
{
    if (o->cli.n_blockdevs > 0 || o->cli.n_exports > 0)
        return ng_config_load_with_cli(o->config, &o->cli, err);
    if (o->config != NULL)
        return ng_config_load_file(o->config, err);
    if (geteuid() == 0 && access(NG_SYSTEM_CONFIG, F_OK) == 0)
        return ng_config_load_file(NG_SYSTEM_CONFIG, err);
    return ng_config_default(err);
}

/* Written whole under a temporary name, then renamed: a reader never
 * sees a partial pid. */
static int
write_pidfile(const char *path)
{
    char tmp[4096];
    FILE *f;

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((f = fopen(tmp, "we")) == NULL)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) == -1) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* After detaching, once every listener is bound: the pidfile, then
 * READY=1 for systemd. */
static int
announce_ready(struct daemon *d)
{
    if (d->pidfile[0] != '\0') {
        if (write_pidfile(d->pidfile) == -1) {
            ng_log_error("--pidfile %s: %s", d->pidfile, strerror(errno));
            return -1;
        }
        d->pidfile_written = true;
    }
    notify_manager("READY=1");
    return 0;
}

/* --pidfile against the start directory, into out[size]. */
static int
absolute_pidfile(const char *path, char *out, size_t size)
{
    char cwd[4096];
    int n;

    if (path[0] == '/')
        n = snprintf(out, size, "%s", path);
    else if (getcwd(cwd, sizeof cwd) != NULL)
        n = snprintf(out, size, "%s/%s", cwd, path);
    else
        return -1;
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static void
daemon_cleanup(struct daemon *d)
{
    ng_nbd_server_free(d->nbd);
    d->nbd = NULL;
    ng_control_free(d->control);
    d->control = NULL;
    ng_exports_free_all(&d->ctl_ctx);
    ng_reload_free(d->ctl_ctx.reload);
    d->ctl_ctx.reload = NULL;
    ng_nac_free(d->nac);
    d->nac = NULL;
    ng_graph_free(d->graph);
    d->graph = NULL;
    /* Let closing handles (the graph's timer, sockets) finish. */
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d->loop) != 0)
        ng_log_warn("libuv handles still open at exit");
    ng_config_free(d->cfg);
    d->cfg = NULL;
}

/* --check-config opens every node and claims every export, as a start
 * would, and checks the listen addresses, but listens on nothing.  Files
 * are opened read-only and unlocked: the daemon this config will replace
 * may hold them (a start is what finds a file in use). */
static int
check_config(struct daemon *d)
{
    struct ng_error err = { 0 };

    if (build_graph(d, true, &err) == 0 && load_tls_creds(d, &err) == 0 &&
        start_server(d, &err) == 0 &&
        check_listeners(d->cfg, false, false, &err) == 0) {
        printf("%s: configuration is valid\n", d->cfg->file);
    } else {
        d->exit_code = EXIT_FAILURE;
        fprintf(stderr, "nbdgraphd: %s\n", err.msg);
    }
    if (d->nbd != NULL)
        ng_nbd_server_shutdown(d->nbd, NULL, NULL);
    daemon_cleanup(d);
    return d->exit_code;
}

static int
start(struct daemon *d)
{
    struct ng_error err = { 0 };

    if (build_graph(d, false, &err) == 0 && load_tls_creds(d, &err) == 0 &&
        start_server(d, &err) == 0 &&
        check_listeners(d->cfg, true, d->n_activated > 0, &err) == 0 &&
        start_control(d, &err) == 0 && watch_signals(d) == 0 &&
        start_listening(d, &err) == 0)
        return 0;
    fprintf(stderr, "nbdgraphd: %s\n", err.msg[0] ? err.msg : "cannot start");
    if (d->nbd != NULL)
        ng_nbd_server_shutdown(d->nbd, NULL, NULL);
    if (d->control != NULL)
        ng_control_shutdown(d->control, NULL, NULL);
    control_stopped(d);
    daemon_cleanup(d);
    return -1;
}

static int
run(const struct options *o)
{
    struct daemon d = { .exit_code = EXIT_SUCCESS };
    struct ng_error err = { 0 };
    int ready_fd = -1;

    /* Before forking: LISTEN_PID names this process. */
    d.n_activated = ng_sd_listen_fds();
    if (d.n_activated < 0) {
        fprintf(stderr, "nbdgraphd: socket activation: %s\n",
                strerror(errno));
        return EXIT_FAILURE;
    }
    if (o->pidfile != NULL &&
        absolute_pidfile(o->pidfile, d.pidfile, sizeof d.pidfile) == -1) {
        fprintf(stderr, "nbdgraphd: --pidfile %s: %s\n", o->pidfile,
                strerror(errno));
        return EXIT_FAILURE;
    }

    d.cfg = load_config(o, &err);
    if (d.cfg == NULL || ng_config_absolute_paths(d.cfg, &err) == -1) {
        fprintf(stderr, "nbdgraphd: %s\n", err.msg);
        ng_config_free(d.cfg);
        return EXIT_FAILURE;
    }
    if (!o->check_config && !o->foreground &&
        (ready_fd = fork_daemon()) == -1) {
        fprintf(stderr, "nbdgraphd: cannot fork: %s\n", strerror(errno));
        ng_config_free(d.cfg);
        return EXIT_FAILURE;
    }
    if (uv_loop_init(&d.loop) != 0) {
        fprintf(stderr, "nbdgraphd: cannot create event loop\n");
        ng_config_free(d.cfg);
        return EXIT_FAILURE;
    }
    if (o->check_config)
        return check_config(&d);
    if (start(&d) == -1)
        return EXIT_FAILURE;
    if (d.n_activated == 0)
        print_uris(&d);
    if (ready_fd != -1 && detach(ready_fd, o->log_given) == -1) {
        ng_log_error("cannot detach: %s", strerror(errno));
        d.exit_code = EXIT_FAILURE;
        begin_shutdown(&d);         /* the parent then exits 1 too */
    } else if (announce_ready(&d) == -1) {
        d.exit_code = EXIT_FAILURE;
        begin_shutdown(&d);
    }
    uv_run(&d.loop, UV_RUN_DEFAULT);
    daemon_cleanup(&d);
    if (d.pidfile_written)
        unlink(d.pidfile);
    ng_log_info("stopped");
    return d.exit_code;
}

static void
options_free(struct options *o)
{
    free((void *)o->cli.blockdevs);
    free((void *)o->cli.exports);
}

int
main(int argc, char **argv)
{
    struct options o = { 0 };
    int r;

    if (parse_args(argc, argv, &o) == -1) {
        options_free(&o);
        return EXIT_FAILURE;
    }
    if (o.verbose)
        ng_log_set_level(NG_LOG_DEBUG);
    if (o.log_given && ng_log_to(o.log) == -1) {
        fprintf(stderr, "nbdgraphd: --log=journal: built without "
                "libsystemd; use --log=stderr (a unit's stderr goes to the "
                "journal too)\n");
        options_free(&o);
        return EXIT_FAILURE;
    }
    if (o.exit_with_parent && prctl(PR_SET_PDEATHSIG, SIGTERM) == -1) {
        perror("nbdgraphd: prctl");
        options_free(&o);
        return EXIT_FAILURE;
    }
    signal(SIGPIPE, SIG_IGN);
    r = run(&o);
    options_free(&o);
    return r;
}
