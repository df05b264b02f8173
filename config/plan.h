/* config/plan.h: reload as a plan — the live state as a model, the diff
 * of a new config against it, and the live state written back as YAML.
 *
 * The live model (struct ng_live) says what the daemon runs, in the
 * config's own terms: nodes with their blockdev-add options, exports with
 * their config keys, throttle groups with their limits, listen addresses;
 * each node, export and group remembers whether the file made it or the
 * control channel did.  The daemon keeps one up to date and refreshes the
 * parts only the graph knows (children after a splice, clients, NAC
 * holders) before a reload.
 *
 * ng_plan_compute() is pure: config + live model in, ordered steps (or a
 * refusal naming the reason and the alternative) out.  Applying the steps
 * is server/reload.c's job.
 */
#ifndef NG_PLAN_H
#define NG_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "graph/strmap.h"
#include "graph/value.h"
#include "graph/error.h"

/* ---- The live model ----------------------------------------------------- */

struct ng_live_node {
    char *name;
    struct ng_value *opts;      /* owned: blockdev-add options without
                                 * node-name; child options name the
                                 * current children */
    bool from_file;
    char *held_by;              /* a holder other than an export or the
                                 * reload (a job) claiming it, or NULL */
    char *over;                 /* a filter spliced in live: the child it
                                 * went above (a multi-child filter has
                                 * others), or NULL */
    char **live_bitmaps;        /* names of the bitmaps in opts' bitmaps:
                                 * that the control channel made (not in
                                 * the file: a reload keeps them unless it
                                 * prunes), owned */
    size_t n_live_bitmaps;
};

struct ng_live_export {
    char *id;
    struct ng_value *opts;      /* owned: canonical export mapping (see
                                 * ng_export_canon) */
    bool from_file;
    unsigned clients;           /* connected now */
};

struct ng_live_group {
    char *name;
    struct ng_value *limits;    /* owned; an empty map when none */
    bool from_file;
};

/* Each array is kept sorted by name, so lookups are binary searches. */
/* Names to positions in one of ng_live's arrays, for lookups that a
 * reload makes thousands of.  Any insertion or removal makes it stale
 * (lookups then search the sorted array); ng_live_reindex() builds it
 * again. */
struct ng_live_index {
    struct ng_strmap map;       /* name -> position + 1 */
    bool valid;
};

struct ng_live {
    struct ng_live_node *nodes;
    size_t n_nodes, cap_nodes;
    struct ng_live_index node_index;
    struct ng_live_export *exports;
    size_t n_exports, cap_exports;
    struct ng_live_index export_index;
    struct ng_live_group *groups;
    size_t n_groups, cap_groups;
    char **listen;              /* addresses as written, owned */
    size_t n_listen;
    char *control;              /* NULL = none */
    const struct ng_config *server;     /* borrowed: the config whose
                                 * server: section (listen addresses with
                                 * their TLS, limits) and tls-creds: run
                                 * now, which its owner (the reload) keeps
                                 * alive; NULL (ng_live_from_config's):
                                 * the plan leaves the server alone */
};

/* Everything in `cfg`, marked from_file.  Caller frees; NULL on ENOMEM. */
struct ng_live *ng_live_from_config(const struct ng_config *cfg);
void ng_live_free(struct ng_live *live);       /* NULL-safe */

/* A node's dirty bitmaps as its opts' bitmaps: list has them.  Add
 * appends a copy of `entry` ({ name, granularity, disabled }) unless a
 * bitmap of that name is there (0, or -1 on ENOMEM); del removes it, and
 * forgets it was made live. */
/* Index of bitmap `name` in n's bitmaps: list, or -1. */
ptrdiff_t ng_live_node_bitmap_index(const struct ng_live_node *n,
                                    const char *name);
int ng_live_node_add_bitmap(struct ng_live_node *n,
                            const struct ng_value *entry);
void ng_live_node_del_bitmap(struct ng_live_node *n, const char *name);
/* Whether bitmap `name` of `n` was made by the control channel; noting
 * it (0, or -1 on ENOMEM) and forgetting it (the file names it now). */
bool ng_live_node_bitmap_is_live(const struct ng_live_node *n,
                                 const char *name);
int ng_live_node_note_live_bitmap(struct ng_live_node *n, const char *name);
void ng_live_node_forget_live_bitmap(struct ng_live_node *n,
                                     const char *name);

/* A list of owned strings (`char **` and a count) in order, as the
 * model's live bitmaps and listen addresses are.  Add appends a copy of
 * `s` (0, or -1 on ENOMEM, the list unchanged); del removes the first
 * string equal to `s`, keeping the others' order (true when there was
 * one); find gives its index or -1. */
int ng_live_strlist_add(char ***v, size_t *n, const char *s);
bool ng_live_strlist_del(char **v, size_t *n, const char *s);
ptrdiff_t ng_live_strlist_find(char *const *v, size_t n, const char *s);

/* Make the lookups of nodes and exports hash lookups again after
 * changes (see struct ng_live_index); on ENOMEM they stay searches. */
void ng_live_reindex(struct ng_live *live);
/* Lookups: borrowed, NULL when absent. */
struct ng_live_node *ng_live_node(const struct ng_live *live,
                                  const char *name);
struct ng_live_export *ng_live_export(const struct ng_live *live,
                                      const char *id);
struct ng_live_group *ng_live_group(const struct ng_live *live,
                                    const char *name);

/* Add or replace; `opts`/`limits` are copied.  -1 on ENOMEM. */
int ng_live_set_node(struct ng_live *live, const char *name,
                     const struct ng_value *opts, bool from_file);
int ng_live_set_export(struct ng_live *live, const char *id,
                       const struct ng_value *opts, bool from_file);
int ng_live_set_group(struct ng_live *live, const char *name,
                      const struct ng_value *limits, bool from_file);
/* Forget one (no-op when absent). */
void ng_live_del_node(struct ng_live *live, const char *name);
void ng_live_del_export(struct ng_live *live, const char *id);
void ng_live_del_group(struct ng_live *live, const char *name);

/* An export mapping (config keys, or block-export-add's arguments with
 * "node-name") in canonical form: node, name (only when it differs from
 * `id`), writable (always), description, throttle or throttle-group,
 * copy-on-read (only when true), detect-zeroes (only when on or unmap).
 * Caller frees; NULL on ENOMEM. */
struct ng_value *ng_export_canon(const char *id, const struct ng_value *map);

/* Deep equality of two values; scalars compare as text. */
bool ng_value_equal(const struct ng_value *a, const struct ng_value *b);

/* ---- The plan ------------------------------------------------------------ */

/* In the order they are applied. */
enum ng_step_kind {
    NG_STEP_CREDS_LOAD,         /* tls-creds: read (again); listeners that
                                 * used the old ones take the new ones */
    NG_STEP_LISTEN_ADD,         /* server.listen: a new address */
    NG_STEP_LISTEN_RETUNE,      /* ... its TLS mode or credentials */
    NG_STEP_SERVER_RETUNE,      /* max-connections, idle-timeout,
                                 * max-request */
    NG_STEP_GROUP_ADD,
    NG_STEP_NODE_ADD,
    NG_STEP_NODE_RETUNE,        /* live options through reconfigure */
    NG_STEP_BITMAP_ADD,         /* a dirty bitmap a node's bitmaps: gained */
    NG_STEP_GROUP_RETUNE,
    NG_STEP_EXPORT_ADD,
    NG_STEP_EXPORT_RETUNE,      /* one implicit filter's live options */
    NG_STEP_EXPORT_LIMIT,       /* the export's own max-connections:
                                 * clients connected stay, the cap holds
                                 * for new ones */
    NG_STEP_EXPORT_REPLACE,     /* remove and add again (no clients) */
    NG_STEP_EXPORT_DEL,
    NG_STEP_BITMAP_DEL,         /* ... or lost (after the exports that
                                 * offered it are gone) */
    NG_STEP_NODE_DEL,
    NG_STEP_GROUP_DEL,
    NG_STEP_LISTEN_DEL,         /* last: its clients stay connected */
};

struct ng_step {
    enum ng_step_kind kind;
    char *object;               /* node-name, export ID or group name */
    char *target;               /* EXPORT_RETUNE: the implicit filter node
                                 * ("vm1.throttle"); BITMAP_*: the bitmap
                                 * (object is its node); NULL otherwise */
    struct ng_value *new_opts;  /* ADD, REPLACE: the whole new options;
                                 * RETUNE: the keys to set; BITMAP_ADD:
                                 * { bitmaps: [ the entry ] }; owned */
    struct ng_value *old_opts;  /* DEL, REPLACE: the whole old options;
                                 * RETUNE: the old values of those keys
                                 * (for undo); BITMAP_DEL: as BITMAP_ADD's
                                 * new_opts; owned */
    char *change;               /* for people: "added", "limits", ... */
    char *exports;              /* exports it affects, "a, b", or "" */
    unsigned clients;           /* their clients now */
    struct ng_loc loc;          /* ADD, REPLACE, RETUNE: where the file
                                 * defines the object (file borrowed from
                                 * the config); zero otherwise */
};

/* Something live that the file does not name and a reload without prune
 * keeps. */
struct ng_not_in_file {
    const char *kind;           /* "node", "export", "throttle group",
                                 * "dirty bitmap" (name "NODE/BITMAP") */
    char *name;
};

struct ng_plan {
    struct ng_step *steps;
    size_t n_steps, cap_steps;
    struct ng_not_in_file *kept;
    size_t n_kept, cap_kept;
    /* What the file names that the model holds as the control channel's
     * (a node also when it has bitmaps made live): once applied, it is
     * the file's.  Borrowed from the config the plan was made from. */
    const struct ng_node_cfg **adopt_nodes;
    const char **adopt_exports, **adopt_groups;
    size_t n_adopt_nodes, n_adopt_exports, n_adopt_groups;
};

/* Diff `cfg` against `live`.  With prune, what the control channel made
 * and the file does not name is removed as well; otherwise it is listed in
 * plan->kept.  A change that cannot be made live fails with the reason and
 * the alternative, located in cfg's file.  Caller frees the plan. */
struct ng_plan *ng_plan_compute(const struct ng_config *cfg,
                                const struct ng_live *live, bool prune,
                                struct ng_error *err);
void ng_plan_free(struct ng_plan *plan);       /* NULL-safe */

const char *ng_step_kind_name(enum ng_step_kind kind);

/* Make `live` what it is once `step` is applied (from_file for what the
 * file made).  -1 on ENOMEM. */
int ng_live_apply_step(struct ng_live *live, const struct ng_step *step);

/* The server: parts the reload applies: the listen address written
 * `text`, the tls-creds: entry `name`; NULL when cfg (may be NULL) has
 * none. */
const struct ng_listen_cfg *ng_config_find_listen(const struct ng_config *cfg,
                                                  const char *text);
const struct ng_tls_creds_cfg *
ng_config_find_tls_creds(const struct ng_config *cfg, const char *name);

/* ---- Dump ------------------------------------------------------------- */

/* The live model as a config file (the loader reads it back; comments
 * aside, in the file's own layout).  Caller frees; NULL on ENOMEM. */
char *ng_live_dump_yaml(const struct ng_live *live);

#endif
