/* server/exports.h: exports as the management layer sees them — an ID,
 * an NBD name, a node, a NAC holder — on top of the NBD server's export
 * list.  Config exports and block-export-add both come through here, so
 * every export is a NAC holder from birth to removal. */
#ifndef NG_EXPORTS_H
#define NG_EXPORTS_H

#include <stdbool.h>

#include <jansson.h>

#include "config/config.h"
#include "server/control.h"

struct ng_export_spec {
    const char *id;             /* management ID and NAC holder ID */
    const char *name;           /* NBD export name; NULL = id */
    const char *node;           /* node-name of the root */
    bool writable;
    const char *description;    /* NULL = none */
    unsigned max_connections;   /* 0 = no limit */
    const char *const *bitmaps; /* dirty bitmaps of `node` offered as
                                 * qemu:dirty-bitmap:NAME */
    size_t n_bitmaps;
    bool allocation_depth;      /* offer qemu:allocation-depth */
    struct ng_implicit_filters filters;     /* created above `node`,
                                             * named "<id>.<driver>" */
};

struct ng_export_entry {
    char *id;
    char *name;
    char *node;
    bool writable;
    bool has_implicit;          /* it stacked implicit filters: removing
                                 * it walks the graph for them */
    struct ng_export_entry *next;
};

/* Check, claim under NAC, then add to the NBD server.  With dry_run only
 * the checks and the NAC check run.  `job` names the command in events. */
int ng_exports_add(struct ng_control_ctx *ctx,
                   const struct ng_export_spec *spec, const char *job,
                   bool dry_run, struct ng_error *err);

/* Remove by ID: hard = disconnect clients (their requests in flight are
 * answered first); safe refuses while clients are connected. */
int ng_exports_del(struct ng_control_ctx *ctx, const char *id, bool hard,
                   const char *job, bool dry_run, struct ng_error *err);

/* The export with management ID `id`, or NULL.  Borrowed. */
struct ng_export_entry *ng_exports_find(struct ng_control_ctx *ctx,
                                        const char *id);

/* A job moved what used node `from` to node `to` (mirror's pivot):
 * every export of `from` now serves `to`; its NAC claim moves along. */
void ng_exports_follow_node(struct ng_control_ctx *ctx, const char *from,
                            const char *to);

/* For ng_nbd_server_on_export_gone(): opaque is the ctx. */
void ng_exports_gone(void *opaque, const char *name);

/* query-block-exports' answer.  New reference. */
json_t *ng_exports_query(struct ng_control_ctx *ctx);

/* Forget every entry (at exit; the NBD server frees its own side). */
void ng_exports_free_all(struct ng_control_ctx *ctx);

/* NAC helpers for every command: acquire (or, when dry_run, only check)
 * `claims` as holder `id` of `kind`; a refusal fills *err with the NAC
 * sentence. */
struct ng_nac_claim;
int ng_ctx_nac_claim(struct ng_control_ctx *ctx, const char *id,
                     const char *kind, const struct ng_nac_claim *claims,
                     size_t n, bool dry_run, struct ng_error *err);
void ng_ctx_nac_release(struct ng_control_ctx *ctx, const char *id);

#endif
