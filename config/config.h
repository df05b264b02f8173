/* config/config.h: the daemon's configuration model.
 *
 * A config is read whole, validated whole (every error names
 * file:line:column and the key) and only then applied; nothing is opened
 * while loading.  Nodes come out in dependency order (children first), so
 * the daemon can create them one by one.
 */
#ifndef NG_CONFIG_H
#define NG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "graph/value.h"
#include "graph/error.h"

enum ng_listen_kind {
    NG_LISTEN_UNIX,
    NG_LISTEN_TCP,
};

/* TLS on a listener (server/tls.h). */
enum ng_tls_mode {
    NG_TLS_OFF,                 /* STARTTLS refused */
    NG_TLS_ALLOW,               /* plain or TLS, as the client likes */
    NG_TLS_REQUIRE,             /* every option but STARTTLS and ABORT
                                 * gets NBD_REP_ERR_TLS_REQD */
};

struct ng_listen_cfg {
    enum ng_listen_kind kind;
    char *path;                 /* UNIX */
    char *host;                 /* TCP: "127.0.0.1", "::1", "localhost" */
    char *port;                 /* TCP: "10809" */
    char *text;                 /* the address: "unix:/x.sock" */
    enum ng_tls_mode tls;
    char *tls_creds;            /* name under tls-creds:, NULL when off */
    struct ng_loc loc;
};

/* A credentials object under tls-creds: (QEMU's tls-creds-x509 and
 * tls-creds-psk), read from `dir` when the daemon starts. */
struct ng_tls_creds_cfg {
    char *name;
    bool psk;                   /* type: psk (else x509) */
    char *dir;
    bool verify_peer;           /* x509: client certificate required
                                 * (client endpoint: server's checked) */
    bool client;                /* endpoint: client (nodes connecting
                                 * elsewhere), else server (listeners) */
    char *username;             /* psk client: its name in keys.psk */
    struct ng_loc loc;
};

/* One entry of an export's allow: list.  A client may see the export
 * when any entry matches it. */
enum ng_allow_kind {
    NG_ALLOW_X509,              /* "x509:GLOB" on the client certificate's
                                 * DN (RFC 4514, "CN=a,O=b") */
    NG_ALLOW_PSK,               /* "psk:GLOB" on the PSK username */
    NG_ALLOW_TCP,               /* "tcp:ADDRESS[/PREFIX]" on the peer */
    NG_ALLOW_UNIX,              /* "unix": any Unix socket client */
};

struct ng_allow_rule {
    enum ng_allow_kind kind;
    char *pattern;              /* X509, PSK: owned */
    int family;                 /* TCP: AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned prefix;            /* TCP: leading bits that must match */
};

/* Parse one allow: entry into *r (zeroed first); -1 with a message
 * without location. */
int ng_allow_parse(const char *text, struct ng_allow_rule *r,
                   struct ng_error *err);
/* A YAML list of entries into a new array (*out, caller frees with
 * ng_allow_free; NULL for an empty list).  -1 with an error naming the
 * entry's location. */
int ng_allow_parse_list(const struct ng_value *list,
                        struct ng_allow_rule **out, size_t *n,
                        struct ng_error *err);
/* Does any of rules[0..n) let this client in?  identity: "x509:DN",
 * "psk:NAME" or NULL; sa: a TCP peer's address or NULL. */
bool ng_allow_match(const struct ng_allow_rule *rules, size_t n,
                    const char *identity, const struct sockaddr *sa,
                    bool unix_socket);
/* Deep copy (NULL on ENOMEM, or for n == 0) and free. */
struct ng_allow_rule *ng_allow_copy(const struct ng_allow_rule *rules,
                                    size_t n);
void ng_allow_free(struct ng_allow_rule *rules, size_t n);

struct ng_node_cfg {
    char *name;                 /* node-name (the key under nodes:) */
    struct ng_value *opts;      /* blockdev-add options, owned; no
                                 * "node-name" key */
    struct ng_loc loc;
};

/* The implicit filters an export asks for (DESIGN.md): created as nodes
 * tagged implicit, top to bottom throttle -> copy-on-read ->
 * detect-zeroes -> the export's node.  Pointers are borrowed from the
 * value tree the export came from. */
/* A node's bitmaps: key — not a driver option — declares dirty bitmaps
 * made when the node opens, as block-dirty-bitmap-add would:
 *   bitmaps: [ { name: b0, granularity: 64K, disabled: false } ]
 * (granularity a power of two from 512 to 64M, default 64K; disabled:
 * not recording writes).  It stays in the node's options in the config
 * and the live model; what goes to the graph is the copy without it. */
struct ng_node_bitmap_cfg {
    const char *name;           /* borrowed */
    uint32_t granularity;
    bool disabled;
};

/* Entry i of `opts`'s bitmaps: (checked when the file was loaded); the
 * count.  -1 with *err for a bad entry. */
size_t ng_node_bitmaps_count(const struct ng_value *opts);
int ng_node_bitmap_get(const struct ng_value *opts, size_t i,
                       struct ng_node_bitmap_cfg *out, struct ng_error *err);
/* `opts` without bitmaps:, for the graph.  Caller frees; NULL on ENOMEM. */
struct ng_value *ng_node_opts_for_graph(const struct ng_value *opts);

struct ng_implicit_filters {
    const struct ng_value *throttle;    /* ThrottleLimits mapping, or NULL */
    const char *throttle_group;         /* shared group name, or NULL */
    bool copy_on_read;
    const char *detect_zeroes;          /* "on" or "unmap"; NULL = off */
};

/* Read the implicit-filter keys ("throttle", "throttle-group",
 * "copy-on-read", "detect-zeroes") of an export mapping (a config export
 * or block-export-add's arguments) into *f.  Errors name the key with its
 * location when the value has one. */
int ng_implicit_filters_parse(const struct ng_value *map,
                              struct ng_implicit_filters *f,
                              struct ng_error *err);

struct ng_export_cfg {
    char *name;                 /* export ID (the key under exports:) */
    char *nbd_name;             /* "name:", the NBD name when it differs
                                 * from the ID; NULL = the ID */
    char *node;                 /* root node-name */
    bool writable;
    char *description;          /* NULL = none */
    unsigned max_connections;   /* 0 = no limit */
    bool allocation_depth;      /* offer qemu:allocation-depth */
    char **bitmaps;             /* bitmaps: names of dirty bitmaps of
                                 * `node` offered as qemu:dirty-bitmap:NAME,
                                 * owned */
    size_t n_bitmaps;
    struct ng_implicit_filters filters;     /* borrowed from `extra` */
    bool restricted;            /* allow: given; only `allow` may see it */
    struct ng_allow_rule *allow;
    size_t n_allow;
    struct ng_value *extra;     /* owned: the whole export mapping, for
                                 * options later issues add (throttle,
                                 * copy-on-read, detect-zeroes, ...) */
    struct ng_value *canon;     /* owned: ng_export_canon() of `extra`,
                                 * made by the loader (a reload's worker
                                 * thread) so the plan, on the loop, only
                                 * compares */
    struct ng_loc loc;
};

/* A throttle group shared by exports ("throttle-group: NAME"). */
struct ng_group_cfg {
    char *name;
    const struct ng_value *limits;  /* borrowed from the document */
    struct ng_loc loc;
};

/* A secret under secrets: (QEMU's secret object), for luks's key-secret:
 * the bytes given as `data`, or read from `file` when the daemon starts. */
struct ng_secret_cfg {
    char *name;
    char *data;                 /* or NULL */
    char *file;                 /* or NULL; exactly one of the two */
    struct ng_loc loc;
};

/* server.poll-max-ns: QEMU's iothread default, and our ceiling. */
#define NG_CONFIG_POLL_MAX_NS_DEFAULT   32768
#define NG_CONFIG_POLL_MAX_NS_MAX       1000000000

struct ng_config {
    char *file;                 /* path given, or "<default>"; loc.file
                                 * in every value points here */
    struct ng_listen_cfg *listen;
    size_t n_listen;
    char *control;              /* control socket path, NULL = none */
    uint64_t max_request;       /* server.max-request, 0 = default;
                                 * within NG_MAX_REQUEST_MIN .. _MAX */
    struct ng_loc max_request_loc;
    unsigned max_connections;   /* server.max-connections, 0 = no limit */
    unsigned idle_timeout;      /* server.idle-timeout, s, 0 = none */
    uint32_t poll_max_ns;       /* server.poll-max-ns, 0 = never poll */
    struct ng_loc control_loc;
    char *control_group;        /* group that may use it too, or NULL */
    struct ng_loc control_group_loc;
    struct ng_tls_creds_cfg *tls_creds;
    size_t n_tls_creds;
    struct ng_node_cfg *nodes;  /* children before parents */
    size_t n_nodes;
    struct ng_export_cfg *exports;
    size_t n_exports;
    struct ng_group_cfg *groups;    /* throttle-groups: */
    size_t n_groups;
    struct ng_secret_cfg *secrets;  /* secrets: */
    size_t n_secrets;
    struct ng_value *doc;       /* the parsed document, owned; the
                                 * values under nodes: and exports: are
                                 * moved out (NULL) into nodes[].opts
                                 * and exports[].extra */
};

/* Load and validate.  Caller frees with ng_config_free(). */
struct ng_config *ng_config_load_file(const char *path, struct ng_error *err);
/* `name` is what errors call the text ("<default>", a path). */
struct ng_config *ng_config_load_string(const char *text, const char *name,
                                        struct ng_error *err);
/* The built-in default: a writable 1 GiB memory export "demo" on
 * unix:NG_DEFAULT_SOCKET and tcp:127.0.0.1:10809. */
struct ng_config *ng_config_default(struct ng_error *err);
extern const char ng_default_config_text[];

void ng_config_free(struct ng_config *cfg);        /* NULL-safe */

/* Make the server's socket paths (listen unix:PATH and control)
 * absolute against the working directory, for a daemon about to leave
 * it: its sockets must still be found, and removed, from "/".  Node
 * options are untouched (nodes are opened before the daemon leaves). */
int ng_config_absolute_paths(struct ng_config *cfg, struct ng_error *err);
/* The same against `cwd` (a reload, once the daemon has left the
 * directory it started in). */
int ng_config_absolute_paths_at(struct ng_config *cfg, const char *cwd,
                                struct ng_error *err);

/* Nodes and exports from the command line, in qemu-storage-daemon's
 * syntax: "driver=file,node-name=d0,filename=x.raw" (--blockdev) and
 * "type=nbd,id=e0,node-name=d0,writable=on" (--export).  Borrowed. */
struct ng_cli {
    const char *const *blockdevs;
    size_t n_blockdevs;
    const char *const *exports;
    size_t n_exports;
};

/* Load `path` (NULL: only the built-in default's server section) with
 * the command line's nodes and exports merged in, then validate it all;
 * their errors are located "--blockdev:N:COL" / "--export:N:COL". */
struct ng_config *ng_config_load_with_cli(const char *path,
                                          const struct ng_cli *cli,
                                          struct ng_error *err);
/* True for a value that came from the command line. */
bool ng_config_loc_is_cli(const struct ng_loc *loc);

/* True when err's message already starts with "file:line:column: " for
 * `file`, so a caller adding a position does not add a second one. */
bool ng_config_error_located(const struct ng_error *err, const char *file);

/* server.max-request: its range, here where the config checks it (the
 * NBD server takes the same). */
#define NG_MAX_REQUEST_MIN (1u << 20)
#define NG_MAX_REQUEST_MAX (256u << 20)

#define NG_DEFAULT_SOCKET "/tmp/nbdgraph.sock"
#define NG_DEFAULT_CONTROL "/tmp/nbdgraph-control.sock"

#endif
