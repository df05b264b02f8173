/* server/reload.h: reload — the YAML file applied live as one
 * transaction — and dump-config.
 *
 * The daemon keeps a live model (config/plan.h) of what it runs and who
 * made it (the file or the control channel).  A reload loads and checks
 * the file whole, refreshes the model from the graph, computes the plan,
 * checks it under NAC, then applies it step by step through the functions
 * the QMP commands use; a failing step undoes the ones before it in
 * reverse, so the graph ends fully new or exactly as it was.
 */
#ifndef NG_RELOAD_H
#define NG_RELOAD_H

#include <stdbool.h>

#include <jansson.h>

#include "config/config.h"
#include "graph/value.h"
#include "server/control.h"

struct ng_reload;
struct ng_node;

/* The live model of the config the daemon started from; `cfg->file` is
 * remembered (as an absolute path) for reloads without a file.  NULL on
 * ENOMEM. */
struct ng_reload *ng_reload_new(const struct ng_config *cfg, bool has_file);
void ng_reload_free(struct ng_reload *r);      /* NULL-safe */
/* The daemon serves sockets it was handed (socket activation): reloads
 * refuse to change server.listen, which it does not bind. */
void ng_reload_set_activated(struct ng_reload *r);

/* What the control channel changed, so the model follows it.  Each is a
 * no-op when ctx has no reload state. */
void ng_reload_note_node(struct ng_control_ctx *ctx, const char *name,
                         const struct ng_value *opts);
void ng_reload_note_reconfigure(struct ng_control_ctx *ctx, const char *name,
                                const struct ng_value *opts);
void ng_reload_forget_node(struct ng_control_ctx *ctx, const char *name);
/* The model's options of node `name` (borrowed until the model next
 * changes), or NULL. */
const struct ng_value *ng_reload_node_opts(struct ng_control_ctx *ctx,
                                           const char *name);
void ng_reload_note_export(struct ng_control_ctx *ctx, const char *id,
                           const struct ng_value *args);
void ng_reload_forget_export(struct ng_control_ctx *ctx, const char *id);
void ng_reload_note_group(struct ng_control_ctx *ctx, const char *name,
                          const struct ng_value *limits);
void ng_reload_forget_group(struct ng_control_ctx *ctx, const char *name);

/* Make on `node`, just opened, the dirty bitmaps its config options
 * declare (bitmaps:, config/config.h).  -1 with *err (then none are
 * left). */
int ng_reload_make_bitmaps(struct ng_node *node, const struct ng_value *opts,
                           struct ng_error *err);

/* When a reload ends: `result` (borrowed) is the plan as JSON with the
 * outcome, or NULL when it was refused, with err set. */
typedef void ng_reload_done_fn(void *opaque, json_t *result,
                               const struct ng_error *err);

/* Reload `file` (NULL = the daemon's own).  dry_run computes and checks
 * the plan only; prune also removes what the control channel made and the
 * file does not name.  done runs exactly once, maybe before this returns. */
void ng_reload_run(struct ng_control_ctx *ctx, const char *file,
                   bool dry_run, bool prune, ng_reload_done_fn *done,
                   void *opaque);

/* SIGHUP: reload the daemon's file and log the outcome. */
void ng_reload_signal(struct ng_control_ctx *ctx);

/* The live graph as config YAML.  Caller frees; NULL with *err set. */
char *ng_reload_dump(struct ng_control_ctx *ctx, struct ng_error *err);

/* QMP: reload {file?, dry-run?, prune?} and query-config. */
ng_qmp_handler ng_qmp_reload;
ng_qmp_handler ng_qmp_query_config;

#endif
