/* config/config.c: load a config file into the model and validate it
 * whole: the top level, server:, exports: (nodes: is config/nodes.c).
 * Nothing is opened or bound here; every error names file:line:column.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "graph/graph.h"
#include "filters/throttle.h"
#include "config/config-int.h"
#include "config/plan.h"
#include "config/yaml.h"

/* Longest config file we read; a config is a few KiB. */
#define CONFIG_MAX_SIZE (16u << 20)

/* NBD limits names and descriptions to 4096 bytes on the wire. */
#define EXPORT_STRING_MAX 4096

/* Longest Unix socket path (sun_path, less its NUL). */
#define UNIX_PATH_MAX (sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1)

const char ng_default_config_text[] =
    "# nbdgraph's built-in configuration, used without --config.\n"
    "server:\n"
    "  listen:\n"
    "    - unix:" NG_DEFAULT_SOCKET "\n"
    "    - tcp:127.0.0.1:10809\n"
    "  control: " NG_DEFAULT_CONTROL "\n"
    "nodes:\n"
    "  demo: { driver: memory, size: 1G }\n"
    "exports:\n"
    "  demo:\n"
    "    node: demo\n"
    "    writable: true\n"
    "    description: nbdgraph built-in 1 GiB memory disk\n";

static const char *const top_keys[] = {
    "server", "nodes", "exports", "throttle-groups", "tls-creds", "secrets",
    NULL
};
static const char *const server_keys[] = {
    "listen", "control", "control-group", "max-request", "max-connections",
    "idle-timeout", "poll-max-ns", NULL
};
static const char *const listen_keys[] = {
    "address", "tls", "tls-creds", NULL
};
static const char *const secret_keys[] = {
    "data", "file", NULL
};
static const char *const tls_creds_keys[] = {
    "type", "dir", "verify-peer", "endpoint", "username", NULL
};
static const char *const export_keys[] = {
    "node", "name", "writable", "description", "throttle", "throttle-group",
    "copy-on-read", "detect-zeroes", "allow", "max-connections",
    "allocation-depth", "bitmaps", NULL
};

/* ---- Error helpers ---------------------------------------------------- */

int
ng_config_oom(struct ng_error *err)
{
    return ng_error_set(err, ENOMEM, "out of memory");
}

static const char *
kind_name(const struct ng_value *v)
{
    if (v->kind == NG_VALUE_MAP)
        return "a mapping";
    if (v->kind == NG_VALUE_LIST)
        return "a list";
    return v->is_null ? "null" : "a scalar";
}

int
ng_config_expect_map(const struct ng_value *v, struct ng_error *err,
                     const char *fmt, ...)
{
    char what[NG_ERROR_MSG_MAX];
    va_list ap;

    if (v->kind == NG_VALUE_MAP)
        return 0;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ng_value_error(err, &v->loc, "%s must be a mapping, not %s", what,
                          kind_name(v));
}

/* Length of the "file:line:column: " that starts msg, or 0. */
static size_t
loc_prefix_len(const char *msg, const char *file)
{
    size_t n;
    const char *p;
    size_t digits;

    if (ng_config_cli_prefix(msg) != NULL)
        file = ng_config_cli_prefix(msg);   /* a command-line option's */
    n = strlen(file);
    if (strncmp(msg, file, n) != 0 || msg[n] != ':')
        return 0;
    p = msg + n + 1;
    digits = strspn(p, "0123456789");
    if (digits == 0 || p[digits] != ':')
        return 0;
    p += digits + 1;
    digits = strspn(p, "0123456789");
    if (digits == 0 || p[digits] != ':' || p[digits + 1] != ' ')
        return 0;
    return (size_t)(p + digits + 2 - msg);
}

bool
ng_config_error_located(const struct ng_error *err, const char *file)
{
    return loc_prefix_len(err->msg, file) > 0;
}

/* Append `s` to the string in buf[size] that is `used` long; cuts what
 * does not fit.  Returns the new length. */
static size_t
append(char *buf, size_t size, size_t used, const char *s)
{
    size_t n = strlen(s);

    if (n > size - 1 - used)
        n = size - 1 - used;
    memcpy(buf + used, s, n);
    buf[used + n] = '\0';
    return used + n;
}

int
ng_config_error_prefix(struct ng_error *err, const char *file,
                       const char *fmt, ...)
{
    char out[NG_ERROR_MSG_MAX];
    size_t skip, used;
    va_list ap;
    int n;

    if (err == NULL)
        return -1;
    skip = loc_prefix_len(err->msg, file);
    memcpy(out, err->msg, skip);
    va_start(ap, fmt);
    n = vsnprintf(out + skip, sizeof out - skip, fmt, ap);
    va_end(ap);
    used = skip + (n > 0 ? (size_t)n : 0);
    if (used > sizeof out - 1)
        used = sizeof out - 1;
    used = append(out, sizeof out, used, ": ");
    append(out, sizeof out, used, err->msg + skip);
    memcpy(err->msg, out, sizeof err->msg);
    return -1;
}

/* "listen, control" from a NULL-terminated table. */
static void
join_keys(const char *const *keys, char *buf, size_t size)
{
    size_t used = 0, i;

    buf[0] = '\0';
    for (i = 0; keys[i] != NULL && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                 i ? ", " : "", keys[i]);
}

static bool
key_known(const char *const *keys, const char *key)
{
    size_t i;

    for (i = 0; keys[i] != NULL; i++)
        if (strcmp(keys[i], key) == 0)
            return true;
    return false;
}

/* Every key of `map` must be in `known`; `where` says where we are:
 * "in server", "at top level". */
static int
check_keys(const struct ng_value *map, const char *const *known,
           const char *where, struct ng_error *err)
{
    char expected[256];
    size_t i;

    for (i = 0; i < map->n; i++) {
        if (key_known(known, map->keys[i]))
            continue;
        join_keys(known, expected, sizeof expected);
        return ng_value_error(err, &map->key_locs[i],
                              "unknown key '%s' %s (expected %s)",
                              map->keys[i], where, expected);
    }
    return 0;
}

static bool
is_null(const struct ng_value *v)
{
    return v == NULL || (v->kind == NG_VALUE_SCALAR && v->is_null);
}

/* ---- server: ---------------------------------------------------------- */

static int
parse_port(const char *s)
{
    size_t digits = strspn(s, "0123456789");
    long port;

    if (digits == 0 || digits > 5 || s[digits] != '\0')
        return -1;
    port = strtol(s, NULL, 10);
    return port >= 1 && port <= 65535 ? (int)port : -1;
}

static int
parse_unix(const char *path, struct ng_listen_cfg *l, struct ng_error *err)
{
    l->kind = NG_LISTEN_UNIX;
    if (path[0] == '\0')
        return ng_value_error(err, &l->loc, "listen address '%s': empty "
                              "socket path", l->text);
    if (strlen(path) > UNIX_PATH_MAX)
        return ng_value_error(err, &l->loc, "listen address '%s': socket "
                              "path longer than %zu bytes", l->text,
                              UNIX_PATH_MAX);
    l->path = strdup(path);
    return l->path != NULL ? 0 : ng_config_oom(err);
}

/* Split "HOST:PORT" or "[V6HOST]:PORT"; *port points into hp. */
static int
split_host_port(const char *hp, struct ng_listen_cfg *l, const char **host,
                size_t *host_len, const char **port, struct ng_error *err)
{
    const char *end;

    if (hp[0] == '[') {
        end = strchr(hp, ']');
        if (end == NULL)
            return ng_value_error(err, &l->loc, "listen address '%s': "
                                  "missing ']' after IPv6 host", l->text);
        *host = hp + 1;
        *host_len = (size_t)(end - hp - 1);
        end++;
        if (*end != ':' && *end != '\0')
            return ng_value_error(err, &l->loc, "listen address '%s': "
                                  "expected ':PORT' after ']'", l->text);
    } else {
        end = strrchr(hp, ':');
        *host = hp;
        *host_len = end != NULL ? (size_t)(end - hp) : strlen(hp);
        if (memchr(hp, ':', *host_len) != NULL)
            return ng_value_error(err, &l->loc, "listen address '%s': IPv6 "
                                  "host must be in brackets "
                                  "(tcp:[HOST]:PORT)", l->text);
    }
    *port = end != NULL && *end == ':' ? end + 1 : "";
    return 0;
}

/* An address written as numbers (IPv6 is, being in brackets) must be a
 * valid one: "256.1.1.1" would only fail at bind time.  Host names are
 * resolved when the daemon starts, not here (loading does no I/O). */
static int
check_numeric_host(const struct ng_listen_cfg *l, struct ng_error *err)
{
    struct addrinfo hints = {
        .ai_flags = AI_NUMERICHOST | AI_PASSIVE,
        .ai_socktype = SOCK_STREAM,
    };
    struct addrinfo *res = NULL;

    if (getaddrinfo(l->host, NULL, &hints, &res) != 0)
        return ng_value_error(err, &l->loc, "listen address '%s': '%s' is "
                              "not a valid IP address", l->text, l->host);
    freeaddrinfo(res);
    return 0;
}

static int
parse_tcp(const char *hp, struct ng_listen_cfg *l, struct ng_error *err)
{
    const char *host = "", *port = "";     /* set by split_host_port */
    size_t host_len = 0;
    char buf[8];

    l->kind = NG_LISTEN_TCP;
    if (split_host_port(hp, l, &host, &host_len, &port, err) == -1)
        return -1;
    if (port[0] == '\0')
        return ng_value_error(err, &l->loc, "listen address '%s': missing "
                              "port (expected tcp:HOST:PORT)", l->text);
    if (host_len == 0)
        return ng_value_error(err, &l->loc, "listen address '%s': missing "
                              "host (expected tcp:HOST:PORT)", l->text);
    if (parse_port(port) == -1)
        return ng_value_error(err, &l->loc, "listen address '%s': bad port "
                              "'%s' (expected 1 to 65535)", l->text, port);
    snprintf(buf, sizeof buf, "%d", parse_port(port));   /* no leading 0s */
    l->host = strndup(host, host_len);
    l->port = strdup(buf);
    if (l->host == NULL || l->port == NULL)
        return ng_config_oom(err);
    if (hp[0] == '[' || strspn(l->host, "0123456789.") == host_len)
        return check_numeric_host(l, err);
    return 0;
}

static int
parse_address(const struct ng_value *v, struct ng_listen_cfg *l,
              struct ng_error *err)
{
    const char *s = ng_value_to_string(v, "listen", err);

    if (s == NULL)
        return -1;
    l->loc = v->loc;
    if ((l->text = strdup(s)) == NULL)
        return ng_config_oom(err);
    if (strncmp(s, "unix:", 5) == 0)
        return parse_unix(s + 5, l, err);
    if (strncmp(s, "tcp:", 4) == 0)
        return parse_tcp(s + 4, l, err);
    return ng_value_error(err, &v->loc, "bad listen address '%s' (expected "
                          "unix:PATH or tcp:HOST:PORT)", s);
}

static int
parse_tls_mode(const struct ng_value *v, enum ng_tls_mode *mode,
               struct ng_error *err)
{
    const char *s = ng_value_to_string(v, "tls", err);

    if (s == NULL)
        return -1;
    if (strcmp(s, "off") == 0)
        *mode = NG_TLS_OFF;
    else if (strcmp(s, "allow") == 0)
        *mode = NG_TLS_ALLOW;
    else if (strcmp(s, "require") == 0)
        *mode = NG_TLS_REQUIRE;
    else
        return ng_value_error(err, &v->loc, "bad tls mode '%s' (expected "
                              "off, allow or require)", s);
    return 0;
}

/* "ADDRESS" or { address: ADDRESS, tls: MODE, tls-creds: NAME }; with
 * tls-creds and no tls, TLS is required. */
static int
parse_listen(const struct ng_value *v, struct ng_listen_cfg *l,
             struct ng_error *err)
{
    const struct ng_value *a, *t, *c;
    const char *creds;

    if (v->kind != NG_VALUE_MAP)
        return parse_address(v, l, err);
    if (check_keys(v, listen_keys, "in listen entry", err) == -1)
        return -1;
    if ((a = ng_value_get(v, "address")) == NULL)
        return ng_value_error(err, &v->loc, "listen entry: missing key "
                              "'address'");
    if (parse_address(a, l, err) == -1)
        return -1;
    t = ng_value_get(v, "tls");
    c = ng_value_get(v, "tls-creds");
    l->tls = c != NULL ? NG_TLS_REQUIRE : NG_TLS_OFF;
    if (t != NULL && parse_tls_mode(t, &l->tls, err) == -1)
        return -1;
    if (l->tls == NG_TLS_OFF)
        return 0;
    if (c == NULL)
        return ng_value_error(err, &t->loc, "listen address '%s': tls needs "
                              "tls-creds", l->text);
    if ((creds = ng_value_to_string(c, "tls-creds", err)) == NULL)
        return -1;
    l->tls_creds = strdup(creds);
    return l->tls_creds != NULL ? 0 : ng_config_oom(err);
}

/* The next component of a path, skipping runs of '/' and "." parts, so
 * that "/run//x.sock" and "/run/./x.sock" compare equal; *len = 0 at
 * the end. */
static const char *
path_component(const char *p, size_t *len)
{
    for (;;) {
        p += strspn(p, "/");
        *len = strcspn(p, "/");
        if (*len != 1 || p[0] != '.')
            return p;
        p++;
    }
}

/* Do two paths name the same file, as far as their text can tell? */
static bool
same_path(const char *a, const char *b)
{
    size_t la, lb;

    if ((a[0] == '/') != (b[0] == '/'))
        return false;
    for (;;) {
        a = path_component(a, &la);
        b = path_component(b, &lb);
        if (la != lb || memcmp(a, b, la) != 0)
            return false;
        if (la == 0)
            return true;
        a += la;
        b += lb;
    }
}

static bool
same_listen(const struct ng_listen_cfg *a, const struct ng_listen_cfg *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == NG_LISTEN_UNIX)
        return same_path(a->path, b->path);
    return strcasecmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0;
}

/* Two listeners on one address, or the control socket on a listener's
 * path, would fail at bind time (or the second would find the first
 * "in use"); say where instead. */
static int
check_server_unique(const struct ng_config *cfg, struct ng_error *err)
{
    size_t i, j;

    for (i = 0; i < cfg->n_listen; i++) {
        const struct ng_listen_cfg *l = &cfg->listen[i];

        for (j = 0; j < i; j++)
            if (same_listen(&cfg->listen[j], l))
                return ng_value_error(err, &l->loc, "duplicate listen "
                                      "address '%s' (first at %u:%u)",
                                      l->text, cfg->listen[j].loc.line,
                                      cfg->listen[j].loc.column);
        if (cfg->control != NULL && l->kind == NG_LISTEN_UNIX &&
            same_path(cfg->control, l->path))
            return ng_value_error(err, &cfg->control_loc, "control socket "
                                  "'%s' is also listen address '%s' (at "
                                  "%u:%u)", cfg->control, l->text,
                                  l->loc.line, l->loc.column);
    }
    return 0;
}

/* listen: takes one address or a list of them. */
static int
load_listen(struct ng_config *cfg, const struct ng_value *v,
            struct ng_error *err)
{
    bool single = v->kind == NG_VALUE_SCALAR && !v->is_null;
    size_t n = single ? 1 : v->n, i;

    if (!single && v->kind != NG_VALUE_LIST)
        return ng_value_error(err, &v->loc, "'listen' must be a string or "
                              "a list, not %s", kind_name(v));
    if (n == 0)
        return ng_value_error(err, &v->loc, "no listen address in the list");
    cfg->listen = calloc(n, sizeof *cfg->listen);
    if (cfg->listen == NULL)
        return ng_config_oom(err);
    for (i = 0; i < n; i++) {
        struct ng_listen_cfg *l = &cfg->listen[cfg->n_listen++];

        if (parse_listen(single ? v : v->items[i], l, err) == -1)
            return -1;
    }
    return 0;
}

static int
load_control(struct ng_config *cfg, const struct ng_value *v,
             struct ng_error *err)
{
    const char *path = ng_value_to_string(v, "control", err);

    if (path == NULL)
        return -1;
    if (path[0] == '\0')
        return ng_value_error(err, &v->loc, "'control' must not be empty");
    if (strlen(path) > UNIX_PATH_MAX)
        return ng_value_error(err, &v->loc, "control socket path longer "
                              "than %zu bytes", UNIX_PATH_MAX);
    cfg->control = strdup(path);
    cfg->control_loc = v->loc;
    return cfg->control != NULL ? 0 : ng_config_oom(err);
}

/* A count or a number of seconds: 0 .. 1,000,000 (0 = none). */
static int
load_count(const struct ng_value *v, const char *what, unsigned *out,
           struct ng_error *err)
{
    int64_t n;

    if (ng_value_to_int64(v, what, &n, err) == -1)
        return -1;
    if (n < 0 || n > 1000000)
        return ng_value_error(err, &v->loc, "'%s' must be between 0 and "
                              "1000000", what);
    *out = (unsigned)n;
    return 0;
}

/* QEMU's iothread poll-max-ns: nanoseconds, at most a second. */
static int
load_poll_max_ns(struct ng_config *cfg, const struct ng_value *v,
                 struct ng_error *err)
{
    int64_t n;

    if (ng_value_to_int64(v, "poll-max-ns", &n, err) == -1)
        return -1;
    if (n < 0 || n > NG_CONFIG_POLL_MAX_NS_MAX)
        return ng_value_error(err, &v->loc, "'poll-max-ns' must be between "
                              "0 and %d (one second)",
                              NG_CONFIG_POLL_MAX_NS_MAX);
    cfg->poll_max_ns = (uint32_t)n;
    return 0;
}

static int
load_max_request(struct ng_config *cfg, const struct ng_value *v,
                 struct ng_error *err)
{
    if (ng_value_to_size(v, "max-request", &cfg->max_request, err) == -1)
        return -1;
    if (cfg->max_request < NG_MAX_REQUEST_MIN ||
        cfg->max_request > NG_MAX_REQUEST_MAX)
        return ng_value_error(err, &v->loc, "'max-request' must be between "
                              "%uM and %uM", NG_MAX_REQUEST_MIN >> 20,
                              NG_MAX_REQUEST_MAX >> 20);
    cfg->max_request_loc = v->loc;
    return 0;
}

static int
load_control_group(struct ng_config *cfg, const struct ng_value *v,
                   struct ng_error *err)
{
    const char *group = ng_value_to_string(v, "control-group", err);

    if (group == NULL)
        return -1;
    if (group[0] == '\0')
        return ng_value_error(err, &v->loc, "'control-group' must not be "
                              "empty");
    if (cfg->control == NULL)
        return ng_value_error(err, &v->loc, "'control-group' without "
                              "'control'");
    cfg->control_group = strdup(group);
    cfg->control_group_loc = v->loc;
    return cfg->control_group != NULL ? 0 : ng_config_oom(err);
}

static int
load_server(struct ng_config *cfg, struct ng_error *err)
{
    const struct ng_value *doc = cfg->doc;
    ptrdiff_t i = ng_value_index(doc, "server");
    const struct ng_value *server, *v;

    if (i < 0)
        return ng_value_error(err, &doc->loc, "no listen address (no "
                              "server section)");
    server = doc->items[i];
    if (ng_config_expect_map(server, err, "'server'") == -1 ||
        check_keys(server, server_keys, "in server", err) == -1)
        return -1;
    v = ng_value_get(server, "listen");
    if (v == NULL)
        return ng_value_error(err, &doc->key_locs[i], "no listen address "
                              "in server");
    if (load_listen(cfg, v, err) == -1)
        return -1;
    v = ng_value_get(server, "control");
    if (v != NULL && load_control(cfg, v, err) == -1)
        return -1;
    v = ng_value_get(server, "control-group");
    if (v != NULL && load_control_group(cfg, v, err) == -1)
        return -1;
    v = ng_value_get(server, "max-request");
    if (v != NULL && load_max_request(cfg, v, err) == -1)
        return -1;
    v = ng_value_get(server, "max-connections");
    if (v != NULL &&
        load_count(v, "max-connections", &cfg->max_connections, err) == -1)
        return -1;
    v = ng_value_get(server, "idle-timeout");
    if (v != NULL &&
        load_count(v, "idle-timeout", &cfg->idle_timeout, err) == -1)
        return -1;
    v = ng_value_get(server, "poll-max-ns");
    if (v != NULL && load_poll_max_ns(cfg, v, err) == -1)
        return -1;
    return check_server_unique(cfg, err);
}

/* ---- tls-creds: ------------------------------------------------------- */

/* QEMU's endpoint (server, the default, or client: for nodes that
 * connect elsewhere) and a PSK client's username (QEMU's default). */
static int
load_creds_endpoint(const struct ng_value *map, struct ng_tls_creds_cfg *tc,
                    struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(map, "endpoint");
    const char *s = "server";

    if (v != NULL && (s = ng_value_to_string(v, "endpoint", err)) == NULL)
        return -1;
    if (strcmp(s, "server") != 0 && strcmp(s, "client") != 0)
        return ng_value_error(err, &v->loc, "tls-creds '%s': bad endpoint "
                              "'%s' (expected server or client)", tc->name,
                              s);
    tc->client = strcmp(s, "client") == 0;
    v = ng_value_get(map, "username");
    s = "qemu";
    if (v != NULL && !(tc->psk && tc->client))
        return ng_value_error(err, &v->loc, "tls-creds '%s': username is "
                              "for type psk with endpoint client only",
                              tc->name);
    if (v != NULL && (s = ng_value_to_string(v, "username", err)) == NULL)
        return -1;
    if (tc->psk && tc->client && (tc->username = strdup(s)) == NULL)
        return ng_config_oom(err);
    return 0;
}

static int
load_one_creds(const struct ng_value *map, struct ng_tls_creds_cfg *tc,
               struct ng_error *err)
{
    const struct ng_value *v;
    const char *s;
    char where[NG_ERROR_MSG_MAX];

    snprintf(where, sizeof where, "in tls-creds '%s'", tc->name);
    if (ng_config_expect_map(map, err, "tls-creds '%s'", tc->name) == -1 ||
        check_keys(map, tls_creds_keys, where, err) == -1)
        return -1;
    v = ng_value_get(map, "type");
    if (v == NULL)
        return ng_value_error(err, &tc->loc, "tls-creds '%s': missing key "
                              "'type' (x509 or psk)", tc->name);
    if ((s = ng_value_to_string(v, "type", err)) == NULL)
        return -1;
    if (strcmp(s, "psk") != 0 && strcmp(s, "x509") != 0)
        return ng_value_error(err, &v->loc, "tls-creds '%s': bad type '%s' "
                              "(expected x509 or psk)", tc->name, s);
    tc->psk = strcmp(s, "psk") == 0;
    v = ng_value_get(map, "dir");
    if (v == NULL)
        return ng_value_error(err, &tc->loc, "tls-creds '%s': missing key "
                              "'dir'", tc->name);
    if ((s = ng_value_to_string(v, "dir", err)) == NULL)
        return -1;
    if ((tc->dir = strdup(s)) == NULL)
        return ng_config_oom(err);
    tc->verify_peer = !tc->psk;     /* QEMU's default */
    v = ng_value_get(map, "verify-peer");
    if (v != NULL && tc->psk)
        return ng_value_error(err, &v->loc, "tls-creds '%s': verify-peer "
                              "is for x509 only", tc->name);
    if (v != NULL &&
        ng_value_to_bool(v, "verify-peer", &tc->verify_peer, err) == -1)
        return -1;
    return load_creds_endpoint(map, tc, err);
}

static int
load_tls_creds(struct ng_config *cfg, struct ng_error *err)
{
    const struct ng_value *all = ng_value_get(cfg->doc, "tls-creds");
    size_t i;

    if (is_null(all))
        return 0;
    if (ng_config_expect_map(all, err, "'tls-creds'") == -1)
        return -1;
    cfg->tls_creds = calloc(all->n ? all->n : 1, sizeof *cfg->tls_creds);
    if (cfg->tls_creds == NULL)
        return ng_config_oom(err);
    for (i = 0; i < all->n; i++) {
        struct ng_tls_creds_cfg *tc = &cfg->tls_creds[cfg->n_tls_creds++];

        tc->loc = all->key_locs[i];
        if ((tc->name = strdup(all->keys[i])) == NULL)
            return ng_config_oom(err);
        if (load_one_creds(all->items[i], tc, err) == -1)
            return -1;
    }
    return 0;
}

/* ---- secrets: --------------------------------------------------------- */

/* One of data: and file:, never both; the value itself is never shown
 * in an error. */
static int
load_one_secret(const struct ng_value *map, struct ng_secret_cfg *sc,
                struct ng_error *err)
{
    const struct ng_value *data = ng_value_get(map, "data");
    const struct ng_value *file = ng_value_get(map, "file");
    const struct ng_value *v = data != NULL ? data : file;
    char where[NG_ERROR_MSG_MAX];
    const char *s;
    char *copy;

    snprintf(where, sizeof where, "in secret '%s'", sc->name);
    if (ng_config_expect_map(map, err, "secret '%s'", sc->name) == -1 ||
        check_keys(map, secret_keys, where, err) == -1)
        return -1;
    if ((data == NULL) == (file == NULL))
        return ng_value_error(err, &sc->loc, "secret '%s': give exactly one "
                              "of 'data' and 'file'", sc->name);
    if ((s = ng_value_to_string(v, data != NULL ? "data" : "file",
                                err)) == NULL)
        return -1;
    if ((copy = strdup(s)) == NULL)
        return ng_config_oom(err);
    if (data != NULL)
        sc->data = copy;
    else
        sc->file = copy;
    return 0;
}

static int
load_secrets(struct ng_config *cfg, struct ng_error *err)
{
    const struct ng_value *all = ng_value_get(cfg->doc, "secrets");
    size_t i;

    if (is_null(all))
        return 0;
    if (ng_config_expect_map(all, err, "'secrets'") == -1)
        return -1;
    cfg->secrets = calloc(all->n ? all->n : 1, sizeof *cfg->secrets);
    if (cfg->secrets == NULL)
        return ng_config_oom(err);
    for (i = 0; i < all->n; i++) {
        struct ng_secret_cfg *sc = &cfg->secrets[cfg->n_secrets++];

        sc->loc = all->key_locs[i];
        if ((sc->name = strdup(all->keys[i])) == NULL)
            return ng_config_oom(err);
        if (load_one_secret(all->items[i], sc, err) == -1)
            return -1;
    }
    return 0;
}

/* Every listener with TLS names declared credentials. */
static int
check_listen_creds(const struct ng_config *cfg, struct ng_error *err)
{
    size_t i, j;

    for (i = 0; i < cfg->n_listen; i++) {
        const struct ng_listen_cfg *l = &cfg->listen[i];

        if (l->tls_creds == NULL)
            continue;
        for (j = 0; j < cfg->n_tls_creds; j++)
            if (strcmp(cfg->tls_creds[j].name, l->tls_creds) == 0)
                break;
        if (j == cfg->n_tls_creds)
            return ng_value_error(err, &l->loc, "listen address '%s': "
                                  "unknown tls-creds '%s' (declare it under "
                                  "tls-creds)", l->text, l->tls_creds);
        if (cfg->tls_creds[j].client)
            return ng_value_error(err, &l->loc, "listen address '%s': "
                                  "tls-creds '%s' has endpoint client: a "
                                  "listener needs server credentials",
                                  l->text, l->tls_creds);
    }
    return 0;
}

/* `path` against the working directory `cwd`; caller frees. */
static char *
absolute_path(const char *cwd, const char *path)
{
    size_t n = strlen(cwd) + 1 + strlen(path) + 1;
    char *out = malloc(n);

    if (out != NULL)
        snprintf(out, n, "%s/%s", cwd, path);
    return out;
}

static int
absolute_listen(struct ng_listen_cfg *l, const char *cwd,
                struct ng_error *err)
{
    char *path, *text;
    size_t n;

    if (l->kind != NG_LISTEN_UNIX || l->path[0] == '/')
        return 0;
    if ((path = absolute_path(cwd, l->path)) == NULL)
        return ng_config_oom(err);
    if (strlen(path) > UNIX_PATH_MAX) {
        ng_value_error(err, &l->loc, "listen address '%s': socket path "
                       "'%s' longer than %zu bytes", l->text, path,
                       UNIX_PATH_MAX);
        free(path);
        return -1;
    }
    n = strlen("unix:") + strlen(path) + 1;
    if ((text = malloc(n)) == NULL) {
        free(path);
        return ng_config_oom(err);
    }
    snprintf(text, n, "unix:%s", path);
    free(l->path);
    free(l->text);
    l->path = path;
    l->text = text;
    return 0;
}

static int
absolute_control(struct ng_config *cfg, const char *cwd,
                 struct ng_error *err)
{
    char *path;

    if (cfg->control == NULL || cfg->control[0] == '/')
        return 0;
    if ((path = absolute_path(cwd, cfg->control)) == NULL)
        return ng_config_oom(err);
    if (strlen(path) > UNIX_PATH_MAX) {
        ng_value_error(err, &cfg->control_loc, "control socket path '%s' "
                       "longer than %zu bytes", path, UNIX_PATH_MAX);
        free(path);
        return -1;
    }
    free(cfg->control);
    cfg->control = path;
    return 0;
}

int
ng_config_absolute_paths(struct ng_config *cfg, struct ng_error *err)
{
    char cwd[PATH_MAX];

    if (getcwd(cwd, sizeof cwd) == NULL)
        return ng_error_set(err, errno, "cannot get the working directory: "
                            "%s", strerror(errno));
    return ng_config_absolute_paths_at(cfg, cwd, err);
}

int
ng_config_absolute_paths_at(struct ng_config *cfg, const char *cwd,
                            struct ng_error *err)
{
    size_t i;

    for (i = 0; i < cfg->n_listen; i++)
        if (absolute_listen(&cfg->listen[i], cwd, err) == -1)
            return -1;
    if (absolute_control(cfg, cwd, err) == -1)
        return -1;
    /* "x.sock" and "/cwd/x.sock" only compare equal now. */
    return check_server_unique(cfg, err);
}

/* ---- exports: --------------------------------------------------------- */

static int
export_node(const struct ng_config *cfg, const struct ng_value *map,
            struct ng_export_cfg *e, const struct ng_names *names,
            struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(map, "node");
    const char *node;

    if (v == NULL)
        return ng_value_error(err, &e->loc, "export '%s': missing key "
                              "'node'", e->name);
    if ((node = ng_value_to_string(v, "node", err)) == NULL)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    if (ng_names_find(names, node) == NULL)
        return ng_value_error(err, &v->loc, "export '%s': unknown node "
                              "'%s'", e->name, node);
    e->node = strdup(node);
    return e->node != NULL ? 0 : ng_config_oom(err);
}

static int
export_options(const struct ng_config *cfg, const struct ng_value *map,
               struct ng_export_cfg *e, struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(map, "writable");
    const char *s;

    if (v != NULL && ng_value_to_bool(v, "writable", &e->writable, err) == -1)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    v = ng_value_get(map, "allocation-depth");
    if (v != NULL && ng_value_to_bool(v, "allocation-depth",
                                      &e->allocation_depth, err) == -1)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    v = ng_value_get(map, "name");
    if (v != NULL) {
        if ((s = ng_value_to_string(v, "name", err)) == NULL)
            return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                          e->name);
        if (strlen(s) > EXPORT_STRING_MAX)
            return ng_value_error(err, &v->loc, "export '%s': name longer "
                                  "than %d bytes", e->name,
                                  EXPORT_STRING_MAX);
        if ((e->nbd_name = strdup(s)) == NULL)
            return ng_config_oom(err);
    }
    v = ng_value_get(map, "max-connections");
    if (v != NULL &&
        load_count(v, "max-connections", &e->max_connections, err) == -1)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    v = ng_value_get(map, "description");
    if (v == NULL)
        return 0;
    if ((s = ng_value_to_string(v, "description", err)) == NULL)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    if (strlen(s) > EXPORT_STRING_MAX)
        return ng_value_error(err, &v->loc, "export '%s': description "
                              "longer than %d bytes", e->name,
                              EXPORT_STRING_MAX);
    e->description = strdup(s);
    return e->description != NULL ? 0 : ng_config_oom(err);
}

static int
load_groups(struct ng_config *cfg, struct ng_error *err)
{
    const struct ng_value *groups = ng_value_get(cfg->doc,
                                                 "throttle-groups");
    size_t i;

    if (is_null(groups))
        return 0;
    if (ng_config_expect_map(groups, err, "'throttle-groups'") == -1)
        return -1;
    cfg->groups = calloc(groups->n ? groups->n : 1, sizeof *cfg->groups);
    if (cfg->groups == NULL)
        return ng_config_oom(err);
    for (i = 0; i < groups->n; i++) {
        struct ng_group_cfg *gc = &cfg->groups[cfg->n_groups];

        if (ng_throttle_limits_check(groups->items[i], err) == -1)
            return ng_config_error_prefix(err, cfg->file, "throttle group "
                                          "'%s'", groups->keys[i]);
        gc->name = strdup(groups->keys[i]);
        if (gc->name == NULL)
            return ng_config_oom(err);
        gc->limits = groups->items[i];
        gc->loc = groups->key_locs[i];
        cfg->n_groups++;
    }
    return 0;
}

static bool
group_declared(const struct ng_config *cfg, const char *name)
{
    size_t i;

    for (i = 0; i < cfg->n_groups; i++)
        if (strcmp(cfg->groups[i].name, name) == 0)
            return true;
    return false;
}

/* The implicit throttle of an export: valid limits, or a known group. */
static int
check_export_throttle(const struct ng_config *cfg,
                      const struct ng_export_cfg *e, struct ng_error *err)
{
    const struct ng_implicit_filters *f = &e->filters;
    const struct ng_value *v = ng_value_get(e->extra, "throttle-group");

    if (f->throttle != NULL && ng_throttle_limits_check(f->throttle,
                                                        err) == -1)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    if (f->throttle_group != NULL && !group_declared(cfg, f->throttle_group))
        return ng_value_error(err, &v->loc, "export '%s': unknown throttle "
                              "group '%s' (declare it under "
                              "throttle-groups)", e->name, f->throttle_group);
    return 0;
}

/* allow: a list of entries (config.h); present, even empty, it
 * restricts the export to them. */
static int
export_allow(const struct ng_config *cfg, const struct ng_value *map,
             struct ng_export_cfg *e, struct ng_error *err)
{
    const struct ng_value *v = ng_value_get(map, "allow");
    size_t i;

    if (v == NULL)
        return 0;
    if (v->kind != NG_VALUE_LIST)
        return ng_value_error(err, &v->loc, "export '%s': 'allow' must be a "
                              "list, not %s", e->name, kind_name(v));
    e->restricted = true;
    if (v->n == 0)
        return 0;
    e->allow = calloc(v->n, sizeof *e->allow);
    if (e->allow == NULL)
        return ng_config_oom(err);
    for (i = 0; i < v->n; i++) {
        const char *s = ng_value_to_string(v->items[i], "allow", err);

        if (s == NULL)
            return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                          e->name);
        if (ng_allow_parse(s, &e->allow[i], err) == -1) {
            char msg[NG_ERROR_MSG_MAX];

            snprintf(msg, sizeof msg, "%s", err != NULL ? err->msg : "");
            return ng_value_error(err, &v->items[i]->loc, "export '%s': %s",
                                  e->name, msg);
        }
        e->n_allow++;
    }
    return 0;
}

/* One entry of an export's bitmaps: (block-export-add's): a bitmap name,
 * or {node, name} where node is the export's own. */
static const char *
export_bitmap_name(const struct ng_value *item, const struct ng_export_cfg *e,
                   struct ng_error *err)
{
    const struct ng_value *node, *name;

    if (item->kind == NG_VALUE_SCALAR && !item->is_null)
        return item->text;
    if (item->kind != NG_VALUE_MAP ||
        (name = ng_value_get(item, "name")) == NULL ||
        name->kind != NG_VALUE_SCALAR ||
        (node = ng_value_get(item, "node")) == NULL ||
        node->kind != NG_VALUE_SCALAR || item->n != 2) {
        ng_value_error(err, &item->loc, "export '%s': 'bitmaps' entries are "
                       "bitmap names or { node: NODE, name: NAME }", e->name);
        return NULL;
    }
    if (strcmp(node->text, e->node) != 0) {
        ng_value_error(err, &node->loc, "export '%s': dirty bitmap '%s' is "
                       "on node '%s'; only bitmaps of the exported node "
                       "'%s' can be exported", e->name, name->text,
                       node->text, e->node);
        return NULL;
    }
    return name->text;
}

/* bitmaps: the dirty bitmaps of the export's node it offers as NBD meta
 * contexts qemu:dirty-bitmap:NAME. */
static int
export_bitmaps(const struct ng_value *map, struct ng_export_cfg *e,
               struct ng_error *err)
{
    const struct ng_value *list = ng_value_get(map, "bitmaps");
    const char *name;
    size_t i;

    if (is_null(list))
        return 0;
    if (list->kind != NG_VALUE_LIST)
        return ng_value_error(err, &list->loc, "export '%s': 'bitmaps' must "
                              "be a list", e->name);
    if ((e->bitmaps = calloc(list->n + 1, sizeof *e->bitmaps)) == NULL)
        return ng_config_oom(err);
    for (i = 0; i < list->n; i++) {
        if ((name = export_bitmap_name(list->items[i], e, err)) == NULL)
            return -1;
        if ((e->bitmaps[e->n_bitmaps++] = strdup(name)) == NULL)
            return ng_config_oom(err);
    }
    return 0;
}

/* Export i of the exports: mapping into *e (zeroed). */
static int
load_export(const struct ng_config *cfg, struct ng_value *exports,
            size_t i, struct ng_export_cfg *e, const struct ng_names *names,
            struct ng_error *err)
{
    struct ng_value *map = exports->items[i];
    char where[NG_ERROR_MSG_MAX];

    e->loc = exports->key_locs[i];
    if ((e->name = strdup(exports->keys[i])) == NULL)
        return ng_config_oom(err);
    if (strlen(e->name) > EXPORT_STRING_MAX)
        return ng_value_error(err, &e->loc, "export name longer than %d "
                              "bytes", EXPORT_STRING_MAX);
    if (ng_config_expect_map(map, err, "export '%s'", e->name) == -1)
        return -1;
    snprintf(where, sizeof where, "in export '%s'", e->name);
    if (check_keys(map, export_keys, where, err) == -1 ||
        export_node(cfg, map, e, names, err) == -1 ||
        export_options(cfg, map, e, err) == -1 ||
        export_bitmaps(map, e, err) == -1)
        return -1;
    if (export_allow(cfg, map, e, err) == -1)
        return -1;
    /* Taken out of the document, not copied (1,000 exports on a
     * reload): nothing reads the exports: section after this. */
    e->extra = map;
    exports->items[i] = NULL;
    if (ng_implicit_filters_parse(e->extra, &e->filters, err) == -1)
        return ng_config_error_prefix(err, cfg->file, "export '%s'",
                                      e->name);
    if (check_export_throttle(cfg, e, err) == -1)
        return -1;
    if ((e->canon = ng_export_canon(e->name, e->extra)) == NULL)
        return ng_config_oom(err);
    return 0;
}

static int
load_exports(struct ng_config *cfg, const struct ng_names *names,
             struct ng_error *err)
{
    struct ng_value *exports = ng_value_get(cfg->doc, "exports");
    size_t i;

    if (is_null(exports))
        return 0;
    if (ng_config_expect_map(exports, err, "'exports'") == -1)
        return -1;
    cfg->exports = calloc(exports->n ? exports->n : 1, sizeof *cfg->exports);
    if (cfg->exports == NULL)
        return ng_config_oom(err);
    for (i = 0; i < exports->n; i++) {
        struct ng_export_cfg *e = &cfg->exports[cfg->n_exports++];

        if (load_export(cfg, exports, i, e, names, err) == -1)
            return -1;
    }
    return 0;
}

/* ---- The whole config ----------------------------------------------- */

static int
check_top(const struct ng_value *doc, struct ng_error *err)
{
    char expected[160];          /* every top-level key, joined */

    if (is_null(doc)) {
        join_keys(top_keys, expected, sizeof expected);
        return ng_value_error(err, &doc->loc, "config is empty (expected "
                              "a mapping with %s)", expected);
    }
    if (ng_config_expect_map(doc, err, "config") == -1)
        return -1;
    return check_keys(doc, top_keys, "at top level", err);
}

static int
config_build(struct ng_config *cfg, struct ng_error *err)
{
    struct ng_names names = { 0 };
    int r = -1;

    if (check_top(cfg->doc, err) == 0 && load_server(cfg, err) == 0 &&
        load_tls_creds(cfg, err) == 0 && check_listen_creds(cfg, err) == 0 &&
        load_groups(cfg, err) == 0 && load_secrets(cfg, err) == 0 &&
        ng_config_load_nodes(cfg, ng_value_get(cfg->doc, "nodes"), &names,
                             err) == 0)
        r = load_exports(cfg, &names, err);
    ng_names_free(&names);
    return r;
}

/* Takes nothing: `text`, `name` and `cli` (NULL = none) are borrowed for
 * the call. */
static struct ng_config *
load_text(const char *text, size_t len, const char *name,
          const struct ng_cli *cli, struct ng_error *err)
{
    struct ng_config *cfg = calloc(1, sizeof *cfg);

    if (cfg == NULL || (cfg->file = strdup(name)) == NULL) {
        free(cfg);
        ng_config_oom(err);
        return NULL;
    }
    cfg->poll_max_ns = NG_CONFIG_POLL_MAX_NS_DEFAULT;
    cfg->doc = ng_yaml_parse(text, len, cfg->file, err);
    if (cfg->doc == NULL ||
        (cli != NULL && ng_config_cli_merge(cfg->doc, cli, err) == -1) ||
        config_build(cfg, err) == -1) {
        ng_config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct ng_config *
ng_config_load_string(const char *text, const char *name,
                      struct ng_error *err)
{
    return load_text(text, strlen(text), name != NULL ? name : "<string>",
                     NULL, err);
}

/* errno as a message, lower case like all of ours. */
static int
file_error(struct ng_error *err, int code, const char *path,
           const char *what)
{
    char msg[128];

    snprintf(msg, sizeof msg, "%s", strerror(code));
    msg[0] = (char)tolower((unsigned char)msg[0]);
    return ng_error_set(err, code, "%s: cannot %s config file: %s", path,
                        what, msg);
}

/* The whole file, NUL-terminated; caller frees. */
static char *
read_file(const char *path, size_t *len, struct ng_error *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *p;
    size_t cap = 0, n;

    if (f == NULL) {
        file_error(err, errno, path, "open");
        return NULL;
    }
    *len = 0;
    do {
        if (cap - *len < 4096 + 1) {
            cap = cap ? 2 * cap : 8192;
            if (cap > CONFIG_MAX_SIZE + 8192) {
                ng_error_set(err, EFBIG, "%s: config file larger than "
                             "%u MiB", path, CONFIG_MAX_SIZE >> 20);
                goto fail;
            }
            if ((p = realloc(buf, cap)) == NULL) {
                ng_config_oom(err);
                goto fail;
            }
            buf = p;
        }
        n = fread(buf + *len, 1, cap - *len - 1, f);
        *len += n;
    } while (n > 0);
    if (ferror(f)) {
        file_error(err, errno, path, "read");
        goto fail;
    }
    fclose(f);
    buf[*len] = '\0';
    return buf;

fail:
    fclose(f);
    free(buf);
    return NULL;
}

struct ng_config *
ng_config_load_file(const char *path, struct ng_error *err)
{
    struct ng_config *cfg;
    size_t len;
    char *text = read_file(path, &len, err);

    if (text == NULL)
        return NULL;
    cfg = load_text(text, len, path, NULL, err);
    free(text);
    return cfg;
}

struct ng_config *
ng_config_load_with_cli(const char *path, const struct ng_cli *cli,
                        struct ng_error *err)
{
    struct ng_config *cfg;
    size_t len;
    char *text;

    if (path == NULL)
        return load_text(ng_cli_server_text, strlen(ng_cli_server_text),
                         "<default>", cli, err);
    if ((text = read_file(path, &len, err)) == NULL)
        return NULL;
    cfg = load_text(text, len, path, cli, err);
    free(text);
    return cfg;
}

struct ng_config *
ng_config_default(struct ng_error *err)
{
    return ng_config_load_string(ng_default_config_text, "<default>", err);
}

void
ng_config_free(struct ng_config *cfg)
{
    size_t i;

    if (cfg == NULL)
        return;
    for (i = 0; i < cfg->n_listen; i++) {
        free(cfg->listen[i].path);
        free(cfg->listen[i].host);
        free(cfg->listen[i].port);
        free(cfg->listen[i].text);
        free(cfg->listen[i].tls_creds);
    }
    free(cfg->listen);
    free(cfg->control);
    free(cfg->control_group);
    for (i = 0; i < cfg->n_tls_creds; i++) {
        free(cfg->tls_creds[i].name);
        free(cfg->tls_creds[i].dir);
        free(cfg->tls_creds[i].username);
    }
    free(cfg->tls_creds);
    for (i = 0; i < cfg->n_secrets; i++) {
        free(cfg->secrets[i].name);
        if (cfg->secrets[i].data != NULL)
            explicit_bzero(cfg->secrets[i].data,
                           strlen(cfg->secrets[i].data));
        free(cfg->secrets[i].data);
        free(cfg->secrets[i].file);
    }
    free(cfg->secrets);
    for (i = 0; i < cfg->n_nodes; i++) {
        free(cfg->nodes[i].name);
        ng_value_free(cfg->nodes[i].opts);
    }
    free(cfg->nodes);
    for (i = 0; i < cfg->n_exports; i++) {
        free(cfg->exports[i].name);
        free(cfg->exports[i].node);
        free(cfg->exports[i].description);
        free(cfg->exports[i].nbd_name);
        for (size_t j = 0; j < cfg->exports[i].n_bitmaps; j++)
            free(cfg->exports[i].bitmaps[j]);
        free(cfg->exports[i].bitmaps);
        ng_allow_free(cfg->exports[i].allow, cfg->exports[i].n_allow);
        ng_value_free(cfg->exports[i].extra);
        ng_value_free(cfg->exports[i].canon);
    }
    for (i = 0; i < cfg->n_groups; i++)
        free(cfg->groups[i].name);
    free(cfg->exports);
    free(cfg->groups);
    ng_value_free(cfg->doc);
    free(cfg->file);
    free(cfg);
}
