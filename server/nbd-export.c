/* server/nbd-export.c: the export registry — exports in config order
 * with a name index, adding and removing them (a removed export lives
 * on until its last connection is gone), what a client is told about
 * one, and the read-only views the control channel uses.
 *
 * Export names match exactly: a client that names no export ("") gets
 * the export named "" if there is one, never some other export.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/bitmap.h"
#include "server/log.h"
#include "server/nbd-int.h"
#include "server/nbd-proto.h"
#include "server/nbd.h"

/* ---- Exports ------------------------------------------------------------- */

/* Exact names only: falling back to the first export for "" would hand
 * a client that named none whatever disk happens to be first, and after
 * a removal a different one (qemu-storage-daemon refuses too). */
struct ng_nbd_export *
nbd_export_find(struct ng_nbd_server *srv, const char *name)
{
    return ng_strmap_get(&srv->export_index, name);
}

/* Export `name` for a control-path call, or NULL with *err set. */
static struct ng_nbd_export *
export_get(struct ng_nbd_server *srv, const char *name, struct ng_error *err)
{
    struct ng_nbd_export *exp = nbd_export_find(srv, name);

    if (exp == NULL)
        ng_error_set(err, ENOENT, "export '%s' not found", name);
    return exp;
}

struct ng_bitmap *
nbd_export_bitmap(const struct ng_nbd_export *exp, unsigned i)
{
    struct ng_node *node = ng_graph_find(exp->srv->graph, exp->bitmap_node);

    return node != NULL ? ng_bitmap_find(node, exp->bitmaps[i]) : NULL;
}

/* Let the user have the export's bitmaps back. */
static void
export_release_bitmaps(struct ng_nbd_export *exp)
{
    for (unsigned i = 0; i < exp->n_bitmaps; i++) {
        struct ng_bitmap *bm = nbd_export_bitmap(exp, i);

        if (bm != NULL)
            bm->busy = false;
        free(exp->bitmaps[i]);
    }
    exp->n_bitmaps = 0;
    free(exp->bitmap_node);
    exp->bitmap_node = NULL;
}

static void
export_free(struct ng_nbd_export *exp)
{
    if (exp == NULL)
        return;
    export_release_bitmaps(exp);
    ng_bb_free(exp->bb);
    ng_allow_free(exp->allow, exp->n_allow);
    free(exp->name);
    free(exp->description);
    free(exp);
}

int
ng_nbd_server_add_export(struct ng_nbd_server *srv, const char *name,
                         const char *description, struct ng_node *node,
                         bool writable, unsigned max_conns,
                         struct ng_error *err)
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
    exp->max_conns = max_conns;
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
    struct ng_nbd_export *exp = export_get(srv, name, err);
    struct ng_allow_rule *copy;

    if (exp == NULL)
        return -1;
    if ((copy = ng_allow_copy(rules, n)) == NULL && n > 0)
        return ng_error_set(err, ENOMEM, "out of memory");
    ng_allow_free(exp->allow, exp->n_allow);
    exp->allow = copy;
    exp->n_allow = n;
    exp->restricted = true;
    return 0;
}

int
ng_nbd_server_set_export_max_connections(struct ng_nbd_server *srv,
                                         const char *name, unsigned n,
                                         struct ng_error *err)
{
    struct ng_nbd_export *exp = export_get(srv, name, err);

    if (exp == NULL)
        return -1;
    exp->max_conns = n;
    return 0;
}

/* Each of names[0..n) a bitmap of node, not busy, named once. */
static int
check_export_bitmaps(struct ng_node *node, const char *node_name,
                     const char *const *names, size_t n,
                     struct ng_error *err)
{
    if (n > NBD_MAX_EXPORT_BITMAPS)
        return ng_error_set(err, EINVAL, "at most %d dirty bitmaps per "
                            "export", NBD_MAX_EXPORT_BITMAPS);
    for (size_t i = 0; i < n; i++) {
        struct ng_bitmap *bm = node ? ng_bitmap_find(node, names[i]) : NULL;

        if (bm == NULL)
            return ng_error_set(err, ENOENT, "dirty bitmap '%s' not found "
                                "on node '%s'", names[i], node_name);
        if (strlen(names[i]) > NBD_MAX_STRING - 18)
            return ng_error_set(err, EINVAL, "dirty bitmap name '%s' is too "
                                "long for an NBD metadata context", names[i]);
        if (bm->busy)
            return ng_error_set(err, EBUSY, "dirty bitmap '%s' is in use by "
                                "a job or another export", names[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], names[i]) == 0)
                return ng_error_set(err, EINVAL, "dirty bitmap '%s' is "
                                    "listed twice", names[i]);
    }
    return 0;
}

int
ng_nbd_server_set_export_bitmaps(struct ng_nbd_server *srv,
                                 const char *name, const char *node,
                                 const char *const *names, size_t n,
                                 struct ng_error *err)
{
    struct ng_nbd_export *exp = export_get(srv, name, err);
    struct ng_node *nd = ng_graph_find(srv->graph, node);

    if (exp == NULL)
        return -1;
    if (check_export_bitmaps(nd, node, names, n, err) == -1)
        return -1;
    export_release_bitmaps(exp);
    if ((exp->bitmap_node = strdup(node)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if ((exp->bitmaps[i] = strdup(names[i])) == NULL) {
            export_release_bitmaps(exp);
            return ng_error_set(err, ENOMEM, "out of memory");
        }
        exp->n_bitmaps++;
        ng_bitmap_find(nd, names[i])->busy = true;
    }
    return 0;
}

int
ng_nbd_server_check_follow_bitmaps(struct ng_nbd_server *srv,
                                   const char *from, const char *to,
                                   struct ng_error *err)
{
    struct ng_node *dst = ng_graph_find(srv->graph, to);
    struct ng_nbd_export *exp;

    for (exp = srv->exports; exp != NULL && dst != NULL; exp = exp->next) {
        if (exp->bitmap_node == NULL || strcmp(exp->bitmap_node, from) != 0)
            continue;
        for (unsigned i = 0; i < exp->n_bitmaps; i++) {
            struct ng_bitmap *bm = nbd_export_bitmap(exp, i);

            if (bm != NULL && ng_bitmap_check_move(bm, dst, err) == -1)
                return ng_error_prefix(err, "export '%s' offers dirty bitmap "
                                       "'%s' of node '%s', which must follow "
                                       "it to node '%s'", exp->name,
                                       bm->name, from, to);
        }
    }
    return 0;
}

void
ng_nbd_server_follow_bitmaps(struct ng_nbd_server *srv, const char *from,
                             const char *to)
{
    struct ng_node *dst = ng_graph_find(srv->graph, to);
    struct ng_nbd_export *exp;
    struct ng_error err = { 0 };
    char *copy;

    for (exp = srv->exports; exp != NULL && dst != NULL; exp = exp->next) {
        if (exp->bitmap_node == NULL || strcmp(exp->bitmap_node, from) != 0 ||
            (copy = strdup(to)) == NULL)
            continue;
        for (unsigned i = 0; i < exp->n_bitmaps; i++) {
            struct ng_bitmap *bm = nbd_export_bitmap(exp, i);

            if (bm != NULL && ng_bitmap_move(bm, dst, &err) == -1)
                ng_log_warn("export '%s': %s; its context "
                            "qemu:dirty-bitmap:%s stops recording",
                            exp->name, err.msg, bm->name);
        }
        /* The ones that could not move are found no more: their
         * context answers as for a bitmap gone. */
        free(exp->bitmap_node);
        exp->bitmap_node = copy;
    }
}

int
ng_nbd_server_set_export_allocation_depth(struct ng_nbd_server *srv,
                                          const char *name, bool on,
                                          struct ng_error *err)
{
    struct ng_nbd_export *exp = export_get(srv, name, err);

    if (exp == NULL)
        return -1;
    exp->allocation_depth = on;
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
    struct ng_nbd_export *exp = export_get(srv, name, err);
    struct nbd_conn *c, *next;

    if (exp == NULL)
        return -1;
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

bool
nbd_export_full(const struct ng_nbd_export *exp)
{
    return exp->max_conns != 0 && exp->nconns >= exp->max_conns;
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

/* ---- What a client is told ----------------------------------------------- */

uint16_t
nbd_export_tflags(const struct ng_nbd_export *exp, bool structured)
{
    uint32_t caps = ng_bb_caps(exp->bb);
    bool writable = exp->writable && (caps & NG_CAP_WRITE);
    uint16_t f = NBD_FLAG_HAS_FLAGS;

    if (!writable)
        f |= NBD_FLAG_READ_ONLY;
    if (caps & NG_CAP_FLUSH)
        f |= NBD_FLAG_SEND_FLUSH;
    if (writable && (caps & NG_CAP_FUA))
        f |= NBD_FLAG_SEND_FUA;
    if (writable && (caps & NG_CAP_TRIM))
        f |= NBD_FLAG_SEND_TRIM;
    if (writable && (caps & NG_CAP_ZERO)) {
        f |= NBD_FLAG_SEND_WRITE_ZEROES;
        if (caps & NG_CAP_FAST_ZERO)
            f |= NBD_FLAG_SEND_FAST_ZERO;
    }
    if (structured)
        f |= NBD_FLAG_SEND_DF;
    if (caps & NG_CAP_CACHE)
        f |= NBD_FLAG_SEND_CACHE;
    /* A read-only export has no cache to keep coherent. */
    if ((caps & NG_CAP_MULTI_CONN) || !writable)
        f |= NBD_FLAG_CAN_MULTI_CONN;
    return f;
}

uint64_t
nbd_export_size(const struct ng_nbd_export *exp)
{
    int64_t len = ng_bb_length(exp->bb);

    return len > 0 ? (uint64_t)len : 0;
}

/* ---- Freeing ------------------------------------------------------------- */

void
nbd_exports_free(struct ng_nbd_server *srv)
{
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
}
