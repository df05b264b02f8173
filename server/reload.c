/* server/reload.c: see reload.h.
 *
 * A reload is a chain of asynchronous steps: each step's start function
 * calls step_finished() exactly once, now or from a callback, and
 * advance() moves along the chain without recursing, so a step that
 * becomes asynchronous (a node that opens in the background) needs no
 * change here.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config/plan.h"
#include "graph/bitmap.h"
#include "graph/graph.h"
#include "filters/throttle.h"
#include "nac/nac.h"
#include "nac/policy.h"
#include "server/exports.h"
#include "server/log.h"
#include "server/nbd.h"
#include "server/qmp-util.h"
#include "server/reload.h"
#include "server/tls.h"

struct ng_reload {
    struct ng_live *live;
    char *file;                 /* absolute path, NULL = built-in config */
    char *start_dir;            /* where the daemon started: relative
                                 * socket paths of a reloaded file are
                                 * relative to it, as at start */
    unsigned long counter;      /* plan IDs "reload-N" */
    bool busy;                  /* one reload at a time */
    bool orphaned;              /* freed by the daemon while a file was
                                 * loading: the load frees it */
    struct reload_run *run;     /* the reload running now, or NULL */
    struct ng_config *applied;  /* the last file a reload applied, owned:
                                 * live->server points here (before the
                                 * first, at the daemon's start config) */
    struct ng_tls_creds **retired;  /* credentials a reload replaced:
                                 * clients accepted with them may still
                                 * use them, so kept until the end */
    size_t n_retired;
    bool activated;             /* socket activation: listen is systemd's */
    bool planning;              /* a worker plans against `live`: it
                                 * must not change; notes wait in
                                 * `deferred` */
    struct deferred_note *deferred, **deferred_tail;
    struct config_grave *graves;    /* configs being freed, each on a
                                 * thread of its own (config_free_later) */
    unsigned plan_delay_ms;     /* tests: the worker's plan takes this
                                 * much longer (NBDGRAPH_TEST_RELOAD_
                                 * PLAN_DELAY_MS), so that a test can
                                 * change the graph meanwhile */
};

/* A change the control channel made while a worker planned against the
 * model: recorded once the plan is back (and the plan made again). */
enum note_kind {
    NOTE_NODE, NOTE_RECONFIGURE, FORGET_NODE, NOTE_EXPORT, FORGET_EXPORT,
    NOTE_GROUP, FORGET_GROUP,
};

struct deferred_note {
    enum note_kind kind;
    char *name;
    struct ng_value *opts;      /* a copy, or NULL */
    struct deferred_note *next;
};

/* Where a refresh of the model from the graph is (refresh_some()). */
enum refresh_phase {
    REFRESH_START, REFRESH_NODES, REFRESH_EXPORTS, REFRESH_FINISH,
};

struct refresh {
    enum refresh_phase phase;
    size_t i;                   /* the next node or export */
    bool *node_gone, *export_gone;  /* by model index: the graph has it
                                 * no more */
};

/* How the loop's refresh ended, for the worker that waits to plan. */
enum refresh_state {
    REFRESH_RUNNING, REFRESH_OK, REFRESH_FAILED, REFRESH_CANCELLED,
};

struct reload_run {
    struct ng_control_ctx *ctx;
    struct ng_reload *rl;
    struct ng_config *cfg;
    struct ng_plan *plan;
    char id[64];
    bool dry_run, claimed;
    bool adding;                /* a node add is in flight: its callback
                                 * continues the plan */
    size_t pos;                 /* next step to apply, or (undoing) to undo
                                 * is pos - 1 */
    bool undoing, in_advance, step_done;
    struct ng_error err;        /* the first failure */
    bool failed;
    char *file;                 /* the file being reloaded, owned */
    bool prune;
    uv_work_t work;             /* loads the file, then plans, off the
                                 * loop */
    struct refresh refresh;     /* the model's refresh, in loop turns
                                 * while the worker loads */
    uv_idle_t *refresher;       /* runs those turns; NULL when not */
    uv_mutex_t lock;            /* guards refresh_state */
    uv_cond_t refreshed;        /* refresh_state left REFRESH_RUNNING */
    enum refresh_state refresh_state;
    unsigned replans;           /* plans made again (REPLANS_ON_WORKER) */
    struct ng_error load_err;
    struct ng_error plan_err;   /* of the plan made on the worker */
    struct timespec start;
    double load_ms, plan_ms;    /* time to load the file, to plan+check */
    double queue_ms;            /* the start until a worker took the run */
    double load_cpu_ms;         /* the worker's CPU time for the load: wall
                                 * minus this is waiting for a core */
    double plan_cpu_ms;         /* and for the plan */
    double refresh_ms;          /* the loop's time refreshing, in all */
    unsigned refresh_turns;
    long load_faults;           /* page faults the load took (minor+major) */
    struct timespec slice;      /* when the loop turn running the reload
                                 * now began */
    double loop_ms, longest_slice_ms;   /* loop time so far (closed turns),
                                 * and the longest single turn */
    struct timespec slice_cpu;  /* the loop thread's CPU time then */
    double longest_slice_cpu_ms;    /* that turn's own CPU time: wall
                                 * above it is the thread waiting for a
                                 * core */
    struct ng_tls_creds **old_creds;    /* by step: what a CREDS_LOAD
                                 * replaced (NULL: none), for undo */
    ng_reload_done_fn *done;
    void *opaque;
};

/* ---- The live model and the control channel ----------------------------- */

struct ng_reload *
ng_reload_new(const struct ng_config *cfg, bool has_file)
{
    struct ng_reload *r = calloc(1, sizeof *r);
    const char *delay;

    if (r == NULL)
        return NULL;
    r->live = ng_live_from_config(cfg);
    if (r->live != NULL)
        r->live->server = cfg;      /* the daemon keeps it while we run */
    r->start_dir = getcwd(NULL, 0);
    delay = getenv("NBDGRAPH_TEST_RELOAD_PLAN_DELAY_MS");
    if (delay != NULL)
        r->plan_delay_ms = (unsigned)strtoul(delay, NULL, 10) % 60000;
    if (has_file)
        r->file = realpath(cfg->file, NULL);
    if (r->live == NULL || r->start_dir == NULL ||
        (has_file && r->file == NULL)) {
        ng_reload_free(r);
        return NULL;
    }
    return r;
}

void
ng_reload_set_activated(struct ng_reload *r)
{
    r->activated = true;
}

static void deferred_free(struct deferred_note *d);

static void graves_reap(struct ng_reload *rl, bool all);

static void
ng_reload_free_now(struct ng_reload *r)
{
    graves_reap(r, true);
    for (size_t i = 0; i < r->n_retired; i++)
        ng_tls_creds_free(r->retired[i]);
    free(r->retired);
    ng_config_free(r->applied);
    ng_live_free(r->live);
    deferred_free(r->deferred);
    free(r->file);
    free(r->start_dir);
    free(r);
}

static void run_drop(struct reload_run *r);
static void run_cancel_refresh(struct reload_run *r);

void
ng_reload_free(struct ng_reload *r)
{
    if (r == NULL)
        return;
    if (r->busy && r->run != NULL && r->run->adding) {
        /* The daemon stops while a node opens: the graph, freed next,
         * ends that open without its callback, so the run ends here. */
        run_drop(r->run);
    } else if (r->busy) {
        r->orphaned = true;     /* reload_done() finishes the job */
        if (r->run != NULL)
            run_cancel_refresh(r->run);
        return;
    }
    ng_reload_free_now(r);
}

static struct ng_live *
live_of(struct ng_control_ctx *ctx)
{
    return ctx->reload != NULL ? ctx->reload->live : NULL;
}

/* While a worker plans, a change to the model waits: true when this one
 * was queued (or lost to ENOMEM, said in the log). */
static bool
deferred(struct ng_control_ctx *ctx, enum note_kind kind, const char *name,
         const struct ng_value *opts)
{
    struct ng_reload *rl = ctx->reload;
    struct deferred_note *d;

    if (rl == NULL || !rl->planning)
        return false;
    d = calloc(1, sizeof *d);
    if (d == NULL || (d->name = strdup(name)) == NULL ||
        (opts != NULL && (d->opts = ng_value_copy(opts)) == NULL)) {
        ng_log_warn("reload: out of memory recording '%s'", name);
        if (d != NULL)
            free(d->name);
        free(d);
        return true;
    }
    d->kind = kind;
    if (rl->deferred_tail == NULL)
        rl->deferred_tail = &rl->deferred;
    *rl->deferred_tail = d;
    rl->deferred_tail = &d->next;
    return true;
}

static void
deferred_free(struct deferred_note *d)
{
    while (d != NULL) {
        struct deferred_note *next = d->next;

        free(d->name);
        ng_value_free(d->opts);
        free(d);
        d = next;
    }
}

static void replay(struct ng_control_ctx *ctx, const struct deferred_note *d);

/* The plan is back: the changes that waited go into the model, in the
 * order they were made.  True when there were any (the plan is stale). */
static bool
replay_deferred(struct ng_control_ctx *ctx)
{
    struct ng_reload *rl = ctx->reload;
    struct deferred_note *list = rl->deferred, *d;

    rl->planning = false;
    rl->deferred = NULL;
    rl->deferred_tail = NULL;
    for (d = list; d != NULL; d = d->next)
        replay(ctx, d);
    deferred_free(list);
    return list != NULL;
}

void
ng_reload_note_node(struct ng_control_ctx *ctx, const char *name,
                    const struct ng_value *opts)
{
    struct ng_live *live = live_of(ctx);
    struct ng_value *copy;
    ptrdiff_t i;

    if (live == NULL || deferred(ctx, NOTE_NODE, name, opts))
        return;
    /* The model keeps options without node-name, as the file does. */
    copy = ng_value_copy(opts);
    if (copy != NULL && (i = ng_value_index(copy, "node-name")) >= 0)
        ng_value_free(ng_value_map_take(copy, (size_t)i));
    if (copy == NULL || ng_live_set_node(live, name, copy, false) == -1)
        ng_log_warn("reload: out of memory recording node '%s'", name);
    ng_value_free(copy);
}

/* map[key] = a copy of v, in place (replacing or adding). */
static int
merge_key(struct ng_value *map, const char *key, const struct ng_value *v)
{
    ptrdiff_t j = ng_value_index(map, key);
    struct ng_value *copy = ng_value_copy(v);

    if (copy == NULL)
        return -1;
    if (j < 0)
        return ng_value_map_put(map, key, (struct ng_loc){ 0 }, copy);
    ng_value_free(map->items[j]);
    map->items[j] = copy;
    return 0;
}

static int
merge_into(struct ng_value *map, const struct ng_value *keys)
{
    size_t i;

    for (i = 0; i < keys->n; i++)
        if (merge_key(map, keys->keys[i], keys->items[i]) == -1)
            return -1;
    return 0;
}

/* An implicit filter's live option, as its export's config key (only a
 * key the export already has: the filter exists because of it). */
static int
note_implicit(struct ng_live *live, struct ng_node *n,
              const struct ng_value *opts)
{
    static const struct {
        const char *driver, *opt, *key;
    } map[] = {
        { "throttle", "limits", "throttle" },
        { "throttle", "throttle-group", "throttle-group" },
        { "detect-zeroes", "mode", "detect-zeroes" },
    };
    struct ng_live_export *e = ng_live_export(live, n->implicit_owner);
    const struct ng_value *v;
    size_t i;

    for (i = 0; e != NULL && i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(n->driver->name, map[i].driver) != 0 ||
            (v = ng_value_get(opts, map[i].opt)) == NULL ||
            ng_value_get(e->opts, map[i].key) == NULL)
            continue;
        if (merge_key(e->opts, map[i].key, v) == -1)
            return -1;
    }
    return 0;
}

void
ng_reload_note_reconfigure(struct ng_control_ctx *ctx, const char *name,
                           const struct ng_value *opts)
{
    struct ng_live *live = live_of(ctx);
    struct ng_node *n = ng_graph_find(ctx->graph, name);
    struct ng_live_node *ln;
    int r = 0;

    if (live == NULL || n == NULL ||
        deferred(ctx, NOTE_RECONFIGURE, name, opts))
        return;
    if (n->implicit && n->implicit_owner != NULL)
        r = note_implicit(live, n, opts);
    else if ((ln = ng_live_node(live, name)) != NULL)
        r = merge_into(ln->opts, opts);
    if (r == -1)
        ng_log_warn("reload: out of memory recording node '%s'", name);
}

const struct ng_value *
ng_reload_node_opts(struct ng_control_ctx *ctx, const char *name)
{
    const struct ng_live_node *ln;

    if (live_of(ctx) == NULL || (ln = ng_live_node(live_of(ctx),
                                                   name)) == NULL)
        return NULL;
    return ln->opts;
}

void
ng_reload_forget_node(struct ng_control_ctx *ctx, const char *name)
{
    if (live_of(ctx) != NULL && !deferred(ctx, FORGET_NODE, name, NULL))
        ng_live_del_node(live_of(ctx), name);
}

void
ng_reload_note_export(struct ng_control_ctx *ctx, const char *id,
                      const struct ng_value *args)
{
    struct ng_live *live = live_of(ctx);
    struct ng_value *canon;

    if (live == NULL || deferred(ctx, NOTE_EXPORT, id, args))
        return;
    canon = ng_export_canon(id, args);
    if (canon == NULL || ng_live_set_export(live, id, canon, false) == -1)
        ng_log_warn("reload: out of memory recording export '%s'", id);
    ng_value_free(canon);
}

void
ng_reload_forget_export(struct ng_control_ctx *ctx, const char *id)
{
    if (live_of(ctx) != NULL && !deferred(ctx, FORGET_EXPORT, id, NULL))
        ng_live_del_export(live_of(ctx), id);
}

void
ng_reload_note_group(struct ng_control_ctx *ctx, const char *name,
                     const struct ng_value *limits)
{
    struct ng_live *live = live_of(ctx);
    struct ng_live_group *g;

    if (live == NULL || deferred(ctx, NOTE_GROUP, name, limits))
        return;
    g = ng_live_group(live, name);
    if (ng_live_set_group(live, name, limits, g != NULL && g->from_file) == -1)
        ng_log_warn("reload: out of memory recording group '%s'", name);
}

void
ng_reload_forget_group(struct ng_control_ctx *ctx, const char *name)
{
    if (live_of(ctx) != NULL && !deferred(ctx, FORGET_GROUP, name, NULL))
        ng_live_del_group(live_of(ctx), name);
}

static void
replay(struct ng_control_ctx *ctx, const struct deferred_note *d)
{
    switch (d->kind) {
    case NOTE_NODE:
        ng_reload_note_node(ctx, d->name, d->opts);
        break;
    case NOTE_RECONFIGURE:
        ng_reload_note_reconfigure(ctx, d->name, d->opts);
        break;
    case FORGET_NODE:
        ng_reload_forget_node(ctx, d->name);
        break;
    case NOTE_EXPORT:
        ng_reload_note_export(ctx, d->name, d->opts);
        break;
    case FORGET_EXPORT:
        ng_reload_forget_export(ctx, d->name);
        break;
    case NOTE_GROUP:
        ng_reload_note_group(ctx, d->name, d->opts);
        break;
    case FORGET_GROUP:
        ng_reload_forget_group(ctx, d->name);
        break;
    }
}

/* ---- Refreshing the model from the graph -------------------------------- */

/* A list of children (quorum's) names the children the graph has now,
 * item by item: a splice may have gone above one (x-blockdev-change
 * notes its own changes).  Inline definitions stay as written. */
static int
refresh_children_list(struct ng_value *list, struct ng_node *n)
{
    struct ng_edge *e;
    size_t i = 0;

    if (list == NULL || list->kind != NG_VALUE_LIST)
        return 0;
    for (e = n->children; e != NULL && i < list->n; e = e->next_child) {
        struct ng_value *item = list->items[i], *name;

        if (e->role != NG_ROLE_CHILDREN)
            continue;
        i++;
        if (item->kind != NG_VALUE_SCALAR || e->child->inline_def ||
            e->child->auto_named || strcmp(item->text, e->child->name) == 0)
            continue;
        if ((name = ng_value_new_scalar(e->child->name,
                                        (struct ng_loc){ 0 })) == NULL)
            return -1;
        ng_value_free(item);
        list->items[i - 1] = name;
    }
    return 0;
}

/* Child options name the children the graph has now (a splice moved
 * them); inline definitions stay as written. */
static int
refresh_children(struct ng_live_node *ln, struct ng_node *n)
{
    const struct ng_opt_desc *d;

    for (d = n->driver->opts; d != NULL && d->name != NULL; d++) {
        struct ng_node *child;
        const struct ng_value *v;
        struct ng_value *name;
        ptrdiff_t i;

        if (d->type == NG_OPT_T_CHILDREN &&
            refresh_children_list(ng_value_get(ln->opts, d->name), n) == -1)
            return -1;
        if (d->type != NG_OPT_T_CHILD ||
            (child = ng_node_child_role(n, d->role)) == NULL ||
            child->inline_def || child->auto_named)
            continue;
        v = ng_value_get(ln->opts, d->name);
        if (v != NULL && (v->kind != NG_VALUE_SCALAR ||
                          strcmp(v->text, child->name) == 0))
            continue;
        if ((name = ng_value_new_scalar(child->name,
                                        (struct ng_loc){ 0 })) == NULL)
            return -1;
        if ((i = ng_value_index(ln->opts, d->name)) >= 0) {
            ng_value_free(ln->opts->items[i]);
            ln->opts->items[i] = name;
        } else if (ng_value_map_put(ln->opts, d->name, (struct ng_loc){ 0 },
                                    name) == -1) {
            return -1;
        }
    }
    return 0;
}

/* The child a live splice went over, which the graph alone knows. */
static int
refresh_over(struct ng_live_node *ln, const struct ng_node *n)
{
    free(ln->over);
    ln->over = NULL;
    if (n->spliced_over == NULL)
        return 0;
    ln->over = strdup(n->spliced_over->child->name);
    return ln->over != NULL ? 0 : -1;
}

/* { name, granularity, disabled } of a bitmap, as a node's bitmaps:
 * entry in the file has it; NULL on ENOMEM. */
static int
put_text(struct ng_value *map, const char *key, const char *text)
{
    return ng_value_map_put(map, key, (struct ng_loc){ 0 },
                            ng_value_new_scalar(text, (struct ng_loc){ 0 }));
}

static struct ng_value *
bitmap_entry(const struct ng_bitmap *bm)
{
    struct ng_value *e = ng_value_new_map((struct ng_loc){ 0 });
    char gran[24];

    snprintf(gran, sizeof gran, "%" PRIu32, bm->granularity);
    if (e == NULL || put_text(e, "name", bm->name) == -1 ||
        put_text(e, "granularity", gran) == -1 ||
        (!bm->recording && put_text(e, "disabled", "true") == -1)) {
        ng_value_free(e);
        return NULL;
    }
    return e;
}

/* The node's named dirty bitmaps as the graph has them: one made by
 * block-dirty-bitmap-add (or moved here) is recorded, as made live; one
 * removed (block-dirty-bitmap-remove) is dropped.  A job's own bitmaps
 * have no name and are not the config's. */
static int
refresh_bitmaps(struct ng_live_node *ln, struct ng_node *n)
{
    size_t i = ng_node_bitmaps_count(ln->opts);
    struct ng_node_bitmap_cfg b;
    struct ng_bitmap *bm;
    struct ng_value *e;
    int r = 0;

    while (i-- > 0)
        if (ng_node_bitmap_get(ln->opts, i, &b, NULL) == 0 &&
            ng_bitmap_find(n, b.name) == NULL)
            ng_live_node_del_bitmap(ln, b.name);
    for (bm = n->bitmaps; r == 0 && bm != NULL; bm = bm->next) {
        if (bm->name == NULL || ng_live_node_bitmap_index(ln, bm->name) >= 0)
            continue;
        if ((e = bitmap_entry(bm)) == NULL ||
            ng_live_node_add_bitmap(ln, e) == -1 ||
            ng_live_node_note_live_bitmap(ln, bm->name) == -1)
            r = -1;
        ng_value_free(e);
    }
    return r;
}

/* One model node against the graph: its children, the splice above it,
 * its bitmaps; *gone when the graph no longer has it. */
static int
refresh_node(struct ng_control_ctx *ctx, struct ng_live_node *ln, bool *gone)
{
    struct ng_node *n = ng_graph_find(ctx->graph, ln->name);

    free(ln->held_by);          /* note_holder() sets it again */
    ln->held_by = NULL;
    if (n == NULL) {
        *gone = true;
        return 0;
    }
    if (refresh_children(ln, n) == -1 || refresh_over(ln, n) == -1 ||
        ((n->bitmaps != NULL || ng_node_bitmaps_count(ln->opts) > 0) &&
         refresh_bitmaps(ln, n) == -1))
        return -1;
    return 0;
}

/* The node below an export's implicit filters. */
static struct ng_node *
export_base(const struct ng_nbd_export *exp, const char *id)
{
    struct ng_node *n = ng_bb_root(ng_nbd_export_bb(exp));

    while (n != NULL && n->implicit && n->implicit_owner != NULL &&
           strcmp(n->implicit_owner, id) == 0)
        n = ng_node_child(n);
    return n;
}

/* Clients, and the node below the implicit filters (a splice may have
 * moved it), of one model export; *gone when the daemon no longer has
 * it. */
static int
refresh_export(struct ng_control_ctx *ctx, struct ng_live_export *le,
               bool *gone)
{
    const struct ng_export_entry *e = ng_exports_find(ctx, le->id);
    const struct ng_nbd_export *exp;
    struct ng_node *base;
    ptrdiff_t k = ng_value_index(le->opts, "node");
    struct ng_value *v;

    if (e == NULL) {
        *gone = true;
        return 0;
    }
    exp = ctx->nbd != NULL ? ng_nbd_server_find_export(ctx->nbd, e->name)
                           : NULL;
    base = exp != NULL ? export_base(exp, e->id) : NULL;
    le->clients = exp != NULL ? ng_nbd_export_connections(exp) : 0;
    if (base == NULL || k < 0 ||
        strcmp(le->opts->items[k]->text, base->name) == 0)
        return 0;
    if ((v = ng_value_new_scalar(base->name, (struct ng_loc){ 0 })) == NULL)
        return -1;
    ng_value_free(le->opts->items[k]);
    le->opts->items[k] = v;
    return 0;
}

/* A holder that is not an export (a job, a command still running) holds
 * the node: the plan must not change it. */
static int
note_holding(void *opaque, const struct ng_nac_holding *h)
{
    struct ng_live_node *ln = ng_live_node(opaque, h->node);

    if (ln != NULL && ln->held_by == NULL &&
        (ln->held_by = strdup(h->id)) == NULL)
        return -ENOMEM;
    return 0;
}

struct holder_walk {
    const struct ng_nac *nac;
    struct ng_live *live;
};

/* Holder by holder, exports skipped whole: a thousand exports' claims
 * are not walked (nor sorted, as ng_nac_foreach would) to find a job. */
static int
note_holder(void *opaque, const struct ng_nac_holder_info *h)
{
    const struct holder_walk *w = opaque;

    if (strcmp(h->kind, "export") == 0)
        return 0;
    return ng_nac_foreach_claim(w->nac, h->id, note_holding, w->live);
}

/* The model entries the graph no longer has go, last first (the flags
 * are by index). */
static void
refresh_drop_gone(struct ng_live *live, const struct refresh *rf)
{
    size_t i;

    for (i = live->n_nodes; i-- > 0;)
        if (rf->node_gone[i])
            ng_live_del_node(live, live->nodes[i].name);
    for (i = live->n_exports; i-- > 0;)
        if (rf->export_gone[i])
            ng_live_del_export(live, live->exports[i].id);
}

static void
refresh_reset(struct refresh *rf)
{
    free(rf->node_gone);
    free(rf->export_gone);
    *rf = (struct refresh){ 0 };
}

/* Work between deadline checks: a few microseconds' worth. */
#define REFRESH_BATCH 32

/* Refresh the model from the graph, in turns: each call does what fits
 * before `deadline` (uv_hrtime() ns) and returns 0 to be called again,
 * 1 when done (rf reset), -1 on ENOMEM (rf reset).  The model's arrays
 * do not change between turns (a worker that plans waits, the control
 * channel's notes are deferred), so indexes stay valid; the graph may
 * change between turns, and each entry is looked up when its turn
 * comes. */
static int
refresh_some(struct ng_control_ctx *ctx, struct refresh *rf,
             uint64_t deadline)
{
    struct ng_live *live = ctx->reload->live;
    size_t k;

    switch (rf->phase) {
    case REFRESH_START:
        ng_live_reindex(live);      /* the lookups below, and the plan's */
        rf->node_gone = calloc(live->n_nodes + 1, sizeof *rf->node_gone);
        rf->export_gone = calloc(live->n_exports + 1,
                                 sizeof *rf->export_gone);
        if (rf->node_gone == NULL || rf->export_gone == NULL)
            goto oom;
        rf->phase = REFRESH_NODES;
        rf->i = 0;
        return 0;
    case REFRESH_NODES:
        while (rf->i < live->n_nodes) {
            for (k = 0; k < REFRESH_BATCH && rf->i < live->n_nodes; k++) {
                if (refresh_node(ctx, &live->nodes[rf->i],
                                 &rf->node_gone[rf->i]) == -1)
                    goto oom;
                rf->i++;
            }
            if (uv_hrtime() >= deadline)
                return 0;
        }
        rf->phase = REFRESH_EXPORTS;
        rf->i = 0;
        /* fall through */
    case REFRESH_EXPORTS:
        while (rf->i < live->n_exports) {
            for (k = 0; k < REFRESH_BATCH && rf->i < live->n_exports; k++) {
                if (refresh_export(ctx, &live->exports[rf->i],
                                   &rf->export_gone[rf->i]) == -1)
                    goto oom;
                rf->i++;
            }
            if (uv_hrtime() >= deadline)
                return 0;
        }
        rf->phase = REFRESH_FINISH;
        return 0;
    case REFRESH_FINISH:
        if (ctx->nac != NULL &&
            ng_nac_foreach_holder(ctx->nac, note_holder,
                                  &(struct holder_walk){ ctx->nac,
                                                         live }) < 0)
            goto oom;
        refresh_drop_gone(live, rf);
        ng_live_reindex(live);      /* again if nodes or exports went */
        refresh_reset(rf);
        return 1;
    }
oom:
    refresh_reset(rf);
    return -1;
}

/* The whole refresh in one go (dump-config; planning again). */
static int
refresh_live(struct ng_control_ctx *ctx, struct ng_error *err)
{
    struct refresh rf = { 0 };
    int rc;

    while ((rc = refresh_some(ctx, &rf, UINT64_MAX)) == 0)
        ;
    return rc == 1 ? 0 : ng_error_set(err, ENOMEM, "out of memory");
}

char *
ng_reload_dump(struct ng_control_ctx *ctx, struct ng_error *err)
{
    char *text;

    if (ctx->reload == NULL) {
        ng_error_set(err, ENOTSUP, "this daemon keeps no live model");
        return NULL;
    }
    if (ctx->reload->planning) {
        /* A worker reads the model: refreshing it now would race. */
        ng_error_set(err, EBUSY, "%s is being planned; try again in a "
                     "moment", ctx->reload->run->id);
        return NULL;
    }
    if (refresh_live(ctx, err) == -1)
        return NULL;
    text = ng_live_dump_yaml(ctx->reload->live);
    if (text == NULL)
        ng_error_set(err, ENOMEM, "out of memory");
    return text;
}

/* ---- Steps ---------------------------------------------------------------- */

static void step_finished(struct reload_run *r, const struct ng_error *err);

static int
bitmap_busy(const struct ng_config *cfg, const char *node, const char *name,
            struct ng_error *err)
{
    return ng_error_set(err, EBUSY, "%s: node '%s': dirty bitmap '%s' is in "
                        "use by a job or an export and cannot be removed; "
                        "wait for the job to end or remove the export (in "
                        "this reload or before it), then reload", cfg->file,
                        node, name);
}

/* An export spec from a canonical export mapping (borrowed from it; its
 * bitmap names go to bitmaps[]). */
static int
spec_from(const char *id, const struct ng_value *map,
          struct ng_export_spec *spec,
          const char *bitmaps[NG_NBD_MAX_EXPORT_BITMAPS],
          struct ng_error *err)
{
    const struct ng_value *v;

    memset(spec, 0, sizeof *spec);
    if ((v = ng_value_get(map, "bitmaps")) != NULL) {
        if (v->n > NG_NBD_MAX_EXPORT_BITMAPS)
            return ng_error_set(err, EINVAL, "export '%s': at most %d dirty "
                                "bitmaps per export", id,
                                NG_NBD_MAX_EXPORT_BITMAPS);
        for (size_t i = 0; i < v->n; i++)
            bitmaps[i] = v->items[i]->text;
        spec->bitmaps = bitmaps;
        spec->n_bitmaps = v->n;
    }
    spec->id = id;
    spec->node = (v = ng_value_get(map, "node")) ? v->text : "";
    spec->name = (v = ng_value_get(map, "name")) ? v->text : NULL;
    spec->description = (v = ng_value_get(map, "description")) ? v->text
                                                                : NULL;
    v = ng_value_get(map, "writable");
    spec->writable = v != NULL && strcmp(v->text, "true") == 0;
    v = ng_value_get(map, "allocation-depth");
    spec->allocation_depth = v != NULL && strcmp(v->text, "true") == 0;
    /* checked (0 .. 1000000) when the file was loaded */
    v = ng_value_get(map, "max-connections");
    spec->max_connections = v != NULL ? (unsigned)strtoul(v->text, NULL, 10)
                                      : 0;
    return ng_implicit_filters_parse(map, &spec->filters, err);
}

static int
export_add(struct reload_run *r, const char *id, const struct ng_value *map,
           struct ng_error *err)
{
    struct ng_export_spec spec;
    const char *bitmaps[NG_NBD_MAX_EXPORT_BITMAPS];
    const struct ng_value *allow = ng_value_get(map, "allow");
    struct ng_allow_rule *rules = NULL;
    size_t n = 0;
    int ret;

    if (spec_from(id, map, &spec, bitmaps, err) == -1 ||
        (allow != NULL && ng_allow_parse_list(allow, &rules, &n, err) == -1))
        return -1;
    ret = ng_exports_add(r->ctx, &spec, r->id, false, err);
    /* Before the loop runs again, so no client sees it unrestricted. */
    if (ret == 0 && allow != NULL)
        ret = ng_nbd_server_set_export_allow(r->ctx->nbd,
                                             spec.name != NULL ? spec.name
                                                               : id,
                                             rules, n, err);
    ng_allow_free(rules, n);
    return ret;
}

/* An export's max-connections from a step's { max-connections: N }. */
static int
export_limit(struct reload_run *r, const char *id,
             const struct ng_value *keys, struct ng_error *err)
{
    const struct ng_export_entry *e = ng_exports_find(r->ctx, id);
    const struct ng_value *v = ng_value_get(keys, "max-connections");

    if (e == NULL)
        return ng_error_set(err, ENOENT, "export '%s' not found", id);
    /* checked (0 .. 1000000) when the file was loaded */
    return ng_nbd_server_set_export_max_connections(
        r->ctx->nbd, e->name, (unsigned)strtoul(v->text, NULL, 10), err);
}

static int
node_reconfigure(struct reload_run *r, const char *name,
                 const struct ng_value *opts, struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(r->ctx->graph, name);

    if (n == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", name);
    return ng_node_reconfigure(n, opts, err);
}

/* A dirty bitmap a node's bitmaps: gained: `one` is { bitmaps: [ it ] }. */
static int
bitmap_add(struct reload_run *r, const char *node, const struct ng_value *one,
           struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(r->ctx->graph, node);

    if (n == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", node);
    return ng_reload_make_bitmaps(n, one, err);
}

static int
bitmap_del(struct reload_run *r, const char *node, const char *name,
           struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(r->ctx->graph, node);
    struct ng_bitmap *bm = n != NULL ? ng_bitmap_find(n, name) : NULL;

    if (bm == NULL)
        return 0;                   /* gone already (block-dirty-bitmap-
                                     * remove): nothing to do */
    if (bm->busy)
        return bitmap_busy(r->cfg, node, name, err);
    ng_bitmap_remove(bm);
    return 0;
}

/* A filter spliced in over the control channel still has users: take it
 * out in a drained section, re-linking them to its child. */
static int
splice_out(struct ng_graph *g, void *opaque, struct ng_error *err)
{
    struct reload_run *r = opaque;

    /* Not forced: a splice whose removal would take from an export what
     * its clients were told fails the step, and the reload rolls back. */
    return ng_graph_remove_filter(g, r->plan->steps[r->pos].object, 0,
                                  err);
}

static void
splice_out_done(void *opaque, const struct ng_error *err)
{
    step_finished(opaque, err);
}

int
ng_reload_make_bitmaps(struct ng_node *node, const struct ng_value *opts,
                       struct ng_error *err)
{
    size_t i, n = ng_node_bitmaps_count(opts);
    struct ng_node_bitmap_cfg b;
    struct ng_bitmap *bm;

    for (i = 0; i < n; i++) {
        if (ng_node_bitmap_get(opts, i, &b, err) == -1 ||
            (bm = ng_bitmap_add(node, b.name, b.granularity, err)) == NULL) {
            while (i-- > 0 && ng_node_bitmap_get(opts, i, &b, NULL) == 0)
                ng_bitmap_remove(ng_bitmap_find(node, b.name));
            return ng_error_prefix(err, "node '%s'", node->name);
        }
        bm->recording = !b.disabled;
    }
    return 0;
}

static void
node_added(void *opaque, struct ng_node *node, const struct ng_error *err)
{
    struct reload_run *r = opaque;
    const struct ng_step *s = &r->plan->steps[r->undoing ? r->pos - 1
                                                        : r->pos];
    struct ng_error berr = { 0 };

    r->adding = false;
    if (node != NULL &&
        ng_reload_make_bitmaps(node, r->undoing ? s->old_opts : s->new_opts,
                               &berr) == -1) {
        ng_graph_del_node(r->ctx->graph, s->object, NULL, NULL, NULL);
        err = &berr;
    }
    if (r->undoing && err != NULL)
        ng_log_error("reload %s: cannot undo remove-node '%s': %s", r->id,
                     r->plan->steps[r->pos - 1].object, err->msg);
    step_finished(r, r->undoing ? NULL : err);
}

/* Add a node (or, undoing a removal, add it back).  Its open may go on in
 * the background (nbd connecting, a LUKS key derived on a worker, qcow2
 * reading its header): the loop runs meanwhile, so clients of every
 * export keep being served, and the plan carries on from node_added(). */
static void
node_add_start(struct reload_run *r, const char *name,
               const struct ng_value *opts)
{
    struct ng_error err = { 0 };
    struct ng_value *graph_opts = ng_node_opts_for_graph(opts);

    r->adding = true;
    if (graph_opts == NULL) {
        ng_error_set(&err, ENOMEM, "out of memory");
        node_added(r, NULL, &err);
    } else if (ng_graph_add_node(r->ctx->graph, name, graph_opts, node_added,
                                 r, &err) == -1) {
        node_added(r, NULL, &err);
    }
    ng_value_free(graph_opts);
}

/* Remove a node; one with parents (a kept splice being pruned) goes
 * asynchronously through a drained section. */
static void
node_del_start(struct reload_run *r, const struct ng_step *s)
{
    struct ng_graph *g = r->ctx->graph;
    struct ng_node *n = ng_graph_find(g, s->object);
    struct ng_error err = { 0 };

    if (n != NULL && n->parents != NULL &&
        (n->driver->is_filter || n->driver->multi_child_filter)) {
        if (ng_graph_mutate(g, n, splice_out, splice_out_done, r,
                            &err) == -1)
            step_finished(r, &err);
        return;
    }
    step_finished(r, ng_graph_del_node(g, s->object, NULL, NULL,
                                       &err) == 0 ? NULL : &err);
}

/* ---- server: and tls-creds: ---------------------------------------------- */

static int
retire_creds(struct ng_reload *rl, struct ng_tls_creds *creds)
{
    struct ng_tls_creds **v;

    if (creds == NULL)
        return 0;
    v = realloc(rl->retired, (rl->n_retired + 1) * sizeof *v);
    if (v == NULL) {
        /* Leaked rather than freed under a client that may use it. */
        ng_log_warn("out of memory keeping replaced TLS credentials");
        return -1;
    }
    rl->retired = v;
    v[rl->n_retired++] = creds;
    return 0;
}

/* Read the credentials the file defines as `name` and put them in the
 * graph in place of the old ones; listeners move over, clients already
 * accepted keep the old ones.  The old ones are kept for undo. */
static int
creds_load(struct reload_run *r, size_t pos, const char *name,
           struct ng_error *err)
{
    const struct ng_tls_creds_cfg *tc = ng_config_find_tls_creds(r->cfg,
                                                                 name);
    struct ng_graph *g = r->ctx->graph;
    struct ng_tls_creds *creds, *old;

    if (tc->client)
        return ng_error_set(err, ENOTSUP, "tls-creds '%s': credentials "
                            "with endpoint client are read at start only; "
                            "restart the daemon to add or change them",
                            name);
    creds = ng_tls_creds_new(tc->psk ? NG_TLS_CREDS_PSK : NG_TLS_CREDS_X509,
                             tc->dir, tc->verify_peer, err);
    if (creds == NULL)
        return ng_error_prefix(err, "tls-creds '%s'", name);
    old = ng_graph_object_take(g, &ng_tls_creds_type, name);
    if (ng_graph_object_add(g, &ng_tls_creds_type, name, creds, err) == -1) {
        if (old != NULL)
            ng_graph_object_add(g, &ng_tls_creds_type, name, old, NULL);
        ng_tls_creds_free(creds);
        return -1;
    }
    ng_nbd_server_swap_creds(r->ctx->nbd, old, creds);
    r->old_creds[pos] = old;
    return 0;
}

static void
creds_undo(struct reload_run *r, size_t pos, const char *name)
{
    struct ng_graph *g = r->ctx->graph;
    struct ng_tls_creds *creds = ng_graph_object_take(g, &ng_tls_creds_type,
                                                      name);
    struct ng_tls_creds *old = r->old_creds[pos];

    if (old != NULL)
        ng_graph_object_add(g, &ng_tls_creds_type, name, old, NULL);
    ng_nbd_server_swap_creds(r->ctx->nbd, creds, old);
    r->old_creds[pos] = NULL;
    retire_creds(r->rl, creds);     /* a client may have got them */
}

/* Listen on `addr` as `cfg` says. */
static int
listen_as(struct reload_run *r, const struct ng_config *cfg,
          const char *addr, bool retune, struct ng_error *err)
{
    const struct ng_listen_cfg *l = ng_config_find_listen(cfg, addr);
    const struct ng_tls_creds *creds = NULL;

    if (l->tls_creds != NULL)
        creds = ng_graph_object_find(r->ctx->graph, &ng_tls_creds_type,
                                     l->tls_creds);
    if (retune)
        return ng_nbd_server_listen_set_tls(r->ctx->nbd, addr, l->tls,
                                            creds, err);
    return ng_nbd_server_listen_tls(r->ctx->nbd, addr, l->tls, creds, err);
}

static int
set_limits(struct reload_run *r, const struct ng_config *cfg,
           struct ng_error *err)
{
    struct ng_nbd_server *nbd = r->ctx->nbd;

    if (ng_nbd_server_set_max_request(nbd, cfg->max_request != 0
                                      ? cfg->max_request
                                      : NG_NBD_MAX_REQUEST_DEFAULT,
                                      err) == -1)
        return -1;
    ng_nbd_server_set_max_connections(nbd, cfg->max_connections);
    ng_nbd_server_set_idle_timeout(nbd, cfg->idle_timeout);
    ng_nbd_server_set_poll_max_ns(nbd, cfg->poll_max_ns);
    return 0;
}

/* The server steps, done (undo false) or undone. */
static int
server_step(struct reload_run *r, const struct ng_step *s, bool undo,
            struct ng_error *err)
{
    const struct ng_config *old = r->rl->live->server;
    size_t pos = (size_t)(s - r->plan->steps);

    switch (s->kind) {
    case NG_STEP_CREDS_LOAD:
        if (!undo)
            return creds_load(r, pos, s->object, err);
        creds_undo(r, pos, s->object);
        return 0;
    case NG_STEP_LISTEN_ADD:
        return undo ? ng_nbd_server_unlisten(r->ctx->nbd, s->object, err)
                    : listen_as(r, r->cfg, s->object, false, err);
    case NG_STEP_LISTEN_RETUNE:
        return listen_as(r, undo ? old : r->cfg, s->object, true, err);
    case NG_STEP_SERVER_RETUNE:
        return set_limits(r, undo ? old : r->cfg, err);
    case NG_STEP_LISTEN_DEL:
        return undo ? listen_as(r, old, s->object, false, err)
                    : ng_nbd_server_unlisten(r->ctx->nbd, s->object, err);
    default:
        return ng_error_set(err, EINVAL, "not a server step");
    }
}

/* Apply `s`; 0 or -1 with *err.  NODE_ADD and NODE_DEL are
 * node_add_start's and node_del_start's. */
static int
step_do(struct reload_run *r, const struct ng_step *s, struct ng_error *err)
{
    struct ng_graph *g = r->ctx->graph;

    switch (s->kind) {
    case NG_STEP_GROUP_ADD:
        return ng_throttle_group_declare(g, s->object, s->new_opts, err);
    case NG_STEP_GROUP_RETUNE:
        return ng_throttle_group_set_limits(g, s->object, s->new_opts, err);
    case NG_STEP_GROUP_DEL:
        return ng_throttle_group_undeclare(g, s->object, err);
    case NG_STEP_NODE_RETUNE:
        return node_reconfigure(r, s->object, s->new_opts, err);
    case NG_STEP_EXPORT_ADD:
        return export_add(r, s->object, s->new_opts, err);
    case NG_STEP_EXPORT_RETUNE:
        return node_reconfigure(r, s->target, s->new_opts, err);
    case NG_STEP_EXPORT_LIMIT:
        return export_limit(r, s->object, s->new_opts, err);
    case NG_STEP_EXPORT_REPLACE:
        if (ng_exports_del(r->ctx, s->object, false, r->id, false, err) == -1)
            return -1;
        if (export_add(r, s->object, s->new_opts, err) == 0)
            return 0;
        /* Put the old one back before reporting. */
        export_add(r, s->object, s->old_opts, NULL);
        return -1;
    case NG_STEP_EXPORT_DEL:
        return ng_exports_del(r->ctx, s->object, false, r->id, false, err);
    case NG_STEP_BITMAP_ADD:
        return bitmap_add(r, s->object, s->new_opts, err);
    case NG_STEP_BITMAP_DEL:
        return bitmap_del(r, s->object, s->target, err);
    case NG_STEP_NODE_ADD:
    case NG_STEP_NODE_DEL:
        break;
    case NG_STEP_CREDS_LOAD:
    case NG_STEP_LISTEN_ADD:
    case NG_STEP_LISTEN_RETUNE:
    case NG_STEP_SERVER_RETUNE:
    case NG_STEP_LISTEN_DEL:
        return server_step(r, s, false, err);
    }
    return ng_error_set(err, EINVAL, "step kind %d applied here", s->kind);
}

/* Undo an applied `s`. */
static int
step_undo(struct reload_run *r, const struct ng_step *s, struct ng_error *err)
{
    struct ng_graph *g = r->ctx->graph;

    switch (s->kind) {
    case NG_STEP_GROUP_ADD:
        return ng_throttle_group_undeclare(g, s->object, err);
    case NG_STEP_GROUP_RETUNE:
        return ng_throttle_group_set_limits(g, s->object, s->old_opts, err);
    case NG_STEP_GROUP_DEL:
        return ng_throttle_group_declare(g, s->object, s->old_opts, err);
    case NG_STEP_NODE_ADD:
        return ng_graph_del_node(g, s->object, NULL, NULL, err);
    case NG_STEP_NODE_RETUNE:
        return node_reconfigure(r, s->object, s->old_opts, err);
    case NG_STEP_EXPORT_ADD:
        return ng_exports_del(r->ctx, s->object, true, r->id, false, err);
    case NG_STEP_EXPORT_RETUNE:
        return node_reconfigure(r, s->target, s->old_opts, err);
    case NG_STEP_EXPORT_LIMIT:
        return export_limit(r, s->object, s->old_opts, err);
    case NG_STEP_EXPORT_REPLACE:
        if (ng_exports_del(r->ctx, s->object, true, r->id, false, err) == -1)
            return -1;
        return export_add(r, s->object, s->old_opts, err);
    case NG_STEP_EXPORT_DEL:
        return export_add(r, s->object, s->old_opts, err);
    case NG_STEP_BITMAP_ADD:
        return bitmap_del(r, s->object, s->target, err);
    case NG_STEP_BITMAP_DEL:
        return bitmap_add(r, s->object, s->old_opts, err);
    case NG_STEP_NODE_DEL:
        break;                      /* node_add_start's */
    case NG_STEP_CREDS_LOAD:
    case NG_STEP_LISTEN_ADD:
    case NG_STEP_LISTEN_RETUNE:
    case NG_STEP_SERVER_RETUNE:
    case NG_STEP_LISTEN_DEL:
        return server_step(r, s, true, err);
    }
    return 0;
}

static void
step_start(struct reload_run *r)
{
    const struct ng_step *s;
    struct ng_error err = { 0 };
    int rc;

    if (r->undoing) {
        s = &r->plan->steps[r->pos - 1];
        if (s->kind == NG_STEP_NODE_DEL) {
            /* A spliced-in filter taken out comes back as a node without
             * its users; only group removals follow node removals, and
             * the plan only removes groups that are declared, so that is
             * not reached in practice. */
            node_add_start(r, s->object, s->old_opts);
            return;
        }
        rc = step_undo(r, s, &err);
        if (rc == -1)
            ng_log_error("reload %s: cannot undo %s '%s': %s", r->id,
                         ng_step_kind_name(s->kind), s->object, err.msg);
        step_finished(r, NULL);     /* carry on undoing the rest */
        return;
    }
    s = &r->plan->steps[r->pos];
    if (s->kind == NG_STEP_NODE_ADD) {
        node_add_start(r, s->object, s->new_opts);
        return;
    }
    if (s->kind == NG_STEP_NODE_DEL) {
        node_del_start(r, s);
        return;
    }
    rc = step_do(r, s, &err);
    step_finished(r, rc == 0 ? NULL : &err);
}

/* ---- The chain -------------------------------------------------------------- */

static void finish(struct reload_run *r);
static void slice_begin(struct reload_run *r);
static void slice_end(struct reload_run *r);

static void
advance(struct reload_run *r)
{
    r->in_advance = true;
    for (;;) {
        if (r->undoing ? r->pos == 0 : r->pos == r->plan->n_steps) {
            r->in_advance = false;
            finish(r);
            return;
        }
        r->step_done = false;
        step_start(r);
        if (!r->step_done) {
            r->in_advance = false;  /* step_finished() resumes */
            slice_end(r);           /* the loop serves others meanwhile */
            return;
        }
    }
}

/* A failing step's error names the place in the file, as a start's
 * (server/main.c) does, so --check-config and reload say the same. */
static void
locate(const struct reload_run *r, const struct ng_step *s,
       struct ng_error *err)
{
    const struct ng_loc *l = &s->loc;

    if (l->file == NULL || ng_config_error_located(err, r->cfg->file))
        return;
    if (s->kind == NG_STEP_EXPORT_ADD || s->kind == NG_STEP_EXPORT_REPLACE)
        ng_error_prefix(err, "%s:%u:%u: export '%s'", l->file, l->line,
                        l->column, s->object);
    else
        ng_error_prefix(err, "%s:%u:%u", l->file, l->line, l->column);
}

static void
step_finished(struct reload_run *r, const struct ng_error *err)
{
    const struct ng_step *s = &r->plan->steps[r->undoing ? r->pos - 1
                                                        : r->pos];

    if (r->undoing) {
        ng_log_info("reload %s: undid %s '%s'", r->id,
                    ng_step_kind_name(s->kind), s->object);
        r->pos--;
    } else if (err != NULL) {
        r->err = *err;
        locate(r, s, &r->err);
        ng_log_warn("reload %s: step %zu/%zu %s '%s' failed: %s", r->id,
                    r->pos + 1, r->plan->n_steps, ng_step_kind_name(s->kind),
                    s->object, r->err.msg);
        r->failed = r->undoing = true;
    } else {
        ng_log_info("reload %s: step %zu/%zu %s '%s': %s", r->id, r->pos + 1,
                    r->plan->n_steps, ng_step_kind_name(s->kind), s->object,
                    s->change);
        r->pos++;
    }
    r->step_done = true;
    if (!r->in_advance) {
        slice_begin(r);
        advance(r);
    }
}

/* ---- Plan as JSON, the event, the end ------------------------------------------ */

static json_t *
plan_json(const struct reload_run *r)
{
    json_t *steps = json_array(), *kept = json_array();
    size_t i;

    for (i = 0; i < r->plan->n_steps; i++) {
        const struct ng_step *s = &r->plan->steps[i];

        json_array_append_new(steps, json_pack(
            "{s:I,s:s,s:s,s:s,s:s,s:i}", "step", (json_int_t)(i + 1),
            "action", ng_step_kind_name(s->kind), "object", s->object,
            "change", s->change, "exports", s->exports,
            "clients", (int)s->clients));
    }
    for (i = 0; i < r->plan->n_kept; i++)
        json_array_append_new(kept, json_pack("{s:s,s:s}", "kind",
                                              r->plan->kept[i].kind, "name",
                                              r->plan->kept[i].name));
    return json_pack("{s:s,s:o,s:o}", "plan-id", r->id, "steps", steps,
                     "not-in-file", kept);
}

static double
elapsed_ms(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* The reload runs on the loop in turns (after the load, after each
 * node that opens in the background): each turn's length is the wait
 * it gives every client of the loop. */
static void
slice_begin(struct reload_run *r)
{
    clock_gettime(CLOCK_MONOTONIC, &r->slice);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &r->slice_cpu);
}

static void
slice_end(struct reload_run *r)
{
    double ms = elapsed_ms(&r->slice);
    struct timespec now;
    double cpu_ms;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    cpu_ms = (double)(now.tv_sec - r->slice_cpu.tv_sec) * 1e3 +
             (double)(now.tv_nsec - r->slice_cpu.tv_nsec) / 1e6;
    r->loop_ms += ms;
    if (ms > r->longest_slice_ms)
        r->longest_slice_ms = ms;
    if (cpu_ms > r->longest_slice_cpu_ms)
        r->longest_slice_cpu_ms = cpu_ms;
    r->slice.tv_sec = 0;
}

static void
emit_event(struct reload_run *r, const char *result, const char *error)
{
    json_t *data;

    if (r->slice.tv_sec != 0)   /* the turn emitting the event counts */
        slice_end(r);
    data = json_pack("{s:s,s:I,s:s,s:f,s:f,s:f,s:f,s:I,s:f,s:f}", "plan-id",
                     r->id, "steps",
                     (json_int_t)(r->plan ? r->plan->n_steps : 0),
                     "result", result, "elapsed-ms", elapsed_ms(&r->start),
                     "load-ms", r->load_ms, "plan-ms", r->plan_ms,
                     "load-cpu-ms", r->load_cpu_ms,
                     "load-faults", (json_int_t)r->load_faults,
                     "loop-ms", r->loop_ms,
                     "longest-slice-ms", r->longest_slice_ms);

    /* The parts of the time (README.md, "Reload"); the start on the
     * system's monotonic clock, so that a client that sent the signal
     * can tell how long it took to arrive. */
    json_object_set_new(data, "start-monotonic-ms",
                        json_real((double)r->start.tv_sec * 1e3 +
                                  (double)r->start.tv_nsec / 1e6));
    json_object_set_new(data, "load-queue-ms", json_real(r->queue_ms));
    json_object_set_new(data, "plan-cpu-ms", json_real(r->plan_cpu_ms));
    json_object_set_new(data, "refresh-ms", json_real(r->refresh_ms));
    json_object_set_new(data, "refresh-turns",
                        json_integer((json_int_t)r->refresh_turns));
    json_object_set_new(data, "apply-ms",
                        json_real(r->loop_ms - r->refresh_ms));
    json_object_set_new(data, "longest-slice-cpu-ms",
                        json_real(r->longest_slice_cpu_ms));
    if (error != NULL)
        json_object_set_new(data, "error", json_string(error));
    if (r->ctx->control != NULL)
        ng_control_emit(r->ctx->control, "RELOAD", data);
    else
        json_decref(data);
}

/* Freeing a big config takes milliseconds of CPU (a 3,000-node file:
 * ~20): neither the RELOAD reply nor clients may wait for it.  Not on a
 * libuv worker either: the worker woken for it took the loop thread's
 * core at once (the scheduler lets a thread it wakes preempt the waker),
 * a stall of 2-16 ms for every client on a busy machine.  A thread of its
 * own does not preempt its creator so, and it runs as SCHED_BATCH (never
 * preempting on wakeup) at nice 10, taking what the loop leaves. */
struct config_grave {
    pthread_t thread;
    struct ng_config *cfg;
    atomic_bool done;
    struct config_grave *next;
};

static void *
grave_main(void *opaque)
{
    struct config_grave *g = opaque;
    struct sched_param sp = { 0 };

    /* Best effort: a failure only makes the free more eager. */
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    ng_config_free(g->cfg);
    atomic_store(&g->done, true);
    return NULL;
}

/* Join the graves that are done; with `all`, wait for every one. */
static void
graves_reap(struct ng_reload *rl, bool all)
{
    struct config_grave **p = &rl->graves, *g;

    while ((g = *p) != NULL) {
        if (!all && !atomic_load(&g->done)) {
            p = &g->next;
            continue;
        }
        pthread_join(g->thread, NULL);
        *p = g->next;
        free(g);
    }
}

static void
config_free_later(struct ng_reload *rl, struct ng_config *cfg)
{
    struct config_grave *g;
    sigset_t all, old;
    int rc = -1;

    if (cfg == NULL)
        return;
    graves_reap(rl, false);
    g = calloc(1, sizeof *g);
    if (g != NULL) {
        g->cfg = cfg;
        /* Signals stay the loop's: the thread starts with them blocked. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&g->thread, NULL, grave_main, g);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (rc != 0) {
        free(g);
        ng_config_free(cfg);
        return;
    }
    g->next = rl->graves;
    rl->graves = g;
}

static void refresh_stop(struct reload_run *r);

static void
run_free(struct reload_run *r)
{
    if (r->claimed)
        ng_ctx_nac_release(r->ctx, r->id);
    r->rl->busy = false;
    r->rl->run = NULL;
    refresh_stop(r);
    uv_cond_destroy(&r->refreshed);
    uv_mutex_destroy(&r->lock);
    free(r->old_creds);
    ng_plan_free(r->plan);
    config_free_later(r->rl, r->cfg);
    free(r->file);
    free(r);
}

/* The daemon stops under a reload waiting for a node: no reply (the
 * control channel is gone), nothing to undo (the graph goes too). */
static void
run_drop(struct reload_run *r)
{
    ng_log_warn("reload %s: abandoned at step %zu/%zu: the daemon stops",
                r->id, r->pos + 1, r->plan->n_steps);
    run_free(r);
}

/* Refused before anything changed. */
static void
refuse(struct reload_run *r, const struct ng_error *err)
{
    ng_log_warn("reload %s: refused: %s", r->id, err->msg);
    emit_event(r, "refused", err->msg);
    r->done(r->opaque, NULL, err);
    run_free(r);
}

/* The file's server: section and tls-creds: run now: keep the file, and
 * the credentials its steps replaced (clients may still use them). */
static void
adopt_server(struct reload_run *r)
{
    struct ng_reload *rl = r->rl;
    size_t i;

    for (i = 0; i < r->plan->n_steps; i++)
        if (r->old_creds[i] != NULL)
            retire_creds(rl, r->old_creds[i]);
    config_free_later(rl, rl->applied);
    rl->applied = r->cfg;
    rl->live->server = r->cfg;
    r->cfg = NULL;
}

/* The file names node `n` (and the bitmaps it lists): they are the
 * file's now, not the control channel's. */
static void
adopt_node(struct ng_live_node *n, const struct ng_node_cfg *nc)
{
    size_t i, count = ng_node_bitmaps_count(nc->opts);
    struct ng_node_bitmap_cfg b;

    n->from_file = true;
    for (i = 0; n->n_live_bitmaps > 0 && i < count; i++)
        if (ng_node_bitmap_get(nc->opts, i, &b, NULL) == 0)
            ng_live_node_forget_live_bitmap(n, b.name);
}

/* A node this reload added may have got (or lost) dirty bitmaps over the
 * control channel while later steps ran; no step says so, so the model
 * takes them from the graph now, as the next refresh would (every reader
 * of the model refreshes first, so this keeps the model true between
 * reloads rather than changing what a reader sees). */
static void
adopt_added_bitmaps(struct reload_run *r, const char *name)
{
    struct ng_node *n = ng_graph_find(r->ctx->graph, name);
    struct ng_live_node *ln = ng_live_node(r->rl->live, name);

    if (n != NULL && ln != NULL && refresh_bitmaps(ln, n) == -1)
        ng_log_warn("reload %s: out of memory updating the model", r->id);
}

/* The model follows the graph: each applied step, and what the file
 * names now belongs to the file (the plan lists what was not). */
static void
adopt_plan(struct reload_run *r)
{
    struct ng_live *live = r->rl->live;
    struct ng_live_node *n;
    struct ng_live_export *e;
    struct ng_live_group *g;
    size_t i;

    for (i = 0; i < r->plan->n_steps; i++)
        if (ng_live_apply_step(live, &r->plan->steps[i]) == -1)
            ng_log_warn("reload %s: out of memory updating the model",
                        r->id);
    ng_live_reindex(live);      /* for the lookups below */
    for (i = 0; i < r->plan->n_adopt_nodes; i++)
        if ((n = ng_live_node(live, r->plan->adopt_nodes[i]->name)) != NULL)
            adopt_node(n, r->plan->adopt_nodes[i]);
    for (i = 0; i < r->plan->n_adopt_exports; i++)
        if ((e = ng_live_export(live, r->plan->adopt_exports[i])) != NULL)
            e->from_file = true;
    for (i = 0; i < r->plan->n_adopt_groups; i++)
        if ((g = ng_live_group(live, r->plan->adopt_groups[i])) != NULL)
            g->from_file = true;
    for (i = 0; i < r->plan->n_steps; i++)
        if (r->plan->steps[i].kind == NG_STEP_NODE_ADD)
            adopt_added_bitmaps(r, r->plan->steps[i].object);
    adopt_server(r);
}

/* "<message> (reload-N rolled back; nothing changed)" */
static void
append_note(struct ng_error *err, const char *id)
{
    size_t used = strlen(err->msg);

    snprintf(err->msg + used, sizeof err->msg - used, " (%s rolled back; "
             "nothing changed)", id);
}

static void
finish(struct reload_run *r)
{
    json_t *result;
    double ms = elapsed_ms(&r->start);

    if (r->failed) {
        ng_log_warn("reload %s: rolled back: %s", r->id, r->err.msg);
        emit_event(r, "rolled-back", r->err.msg);
        append_note(&r->err, r->id);
        r->done(r->opaque, NULL, &r->err);
        run_free(r);
        return;
    }
    if (!r->dry_run)
        adopt_plan(r);
    result = plan_json(r);
    json_object_set_new(result, "dry-run", json_boolean(r->dry_run));
    json_object_set_new(result, "applied", json_boolean(!r->dry_run));
    json_object_set_new(result, "elapsed-ms", json_real(ms));
    ng_log_info("reload %s: %s, %zu step(s) in %.1f ms (load %.1f, plan "
                "%.1f, apply %.1f)", r->id,
                r->dry_run ? "checked (dry run)" : "applied",
                r->plan->n_steps, ms, r->load_ms, r->plan_ms,
                ms - r->load_ms - r->plan_ms);
    emit_event(r, r->dry_run ? "dry-run" : "applied", NULL);
    r->done(r->opaque, result, NULL);
    json_decref(result);
    run_free(r);
}

/* ---- Checks before anything changes ----------------------------------------- */

/* Nodes the plan changes in place: the reload claims graph-mod on them,
 * as a splice does, so a job that does not allow it refuses the plan. */
static int
claim_nodes(struct reload_run *r, struct ng_error *err)
{
    struct ng_nac_claim *claims;
    size_t i, n = 0;
    int rc;

    claims = calloc(r->plan->n_steps + 1, sizeof *claims);
    if (claims == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (i = 0; i < r->plan->n_steps; i++) {
        const struct ng_step *s = &r->plan->steps[i];
        const char *node = s->kind == NG_STEP_EXPORT_RETUNE ? s->target
            : s->kind == NG_STEP_NODE_RETUNE || s->kind == NG_STEP_NODE_DEL
            ? s->object : NULL;

        if (node == NULL)
            continue;
        claims[n++] = (struct ng_nac_claim){ node, NG_NAC_SPLICE_REQUIRE,
                                             NG_NAC_SPLICE_ALLOW };
    }
    rc = n == 0 ? 0 : ng_ctx_nac_claim(r->ctx, r->id, "reload", claims, n,
                                       r->dry_run, err);
    free(claims);
    if (rc == 0 && n > 0 && !r->dry_run)
        r->claimed = true;
    return rc;
}

/* True when the plan removes or replaces an export of `node` first. */
static bool
node_freed_by_plan(const struct ng_plan *plan, const char *node)
{
    size_t i;

    for (i = 0; i < plan->n_steps; i++) {
        const struct ng_step *s = &plan->steps[i];
        const struct ng_value *v;

        if ((s->kind == NG_STEP_EXPORT_DEL ||
             s->kind == NG_STEP_EXPORT_REPLACE) &&
            (v = ng_value_get(s->old_opts, "node")) != NULL &&
            strcmp(v->text, node) == 0)
            return true;
    }
    return false;
}

/* New exports on nodes that exist: their NAC claims checked now. */
static int
check_new_exports(struct reload_run *r, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < r->plan->n_steps; i++) {
        const struct ng_step *s = &r->plan->steps[i];
        struct ng_export_spec spec;
        const char *bitmaps[NG_NBD_MAX_EXPORT_BITMAPS];

        if (s->kind != NG_STEP_EXPORT_ADD ||
            spec_from(s->object, s->new_opts, &spec, bitmaps, err) == -1)
            continue;
        if (ng_graph_find(r->ctx->graph, spec.node) == NULL ||
            node_freed_by_plan(r->plan, spec.node))
            continue;
        /* Only the claims: its bitmaps may be the plan's own, made by
         * a step before it. */
        spec.n_bitmaps = 0;
        if (ng_exports_add(r->ctx, &spec, r->id, true, err) == -1)
            return ng_error_prefix(err, "%s: export '%s'", r->cfg->file,
                                   s->object);
    }
    return 0;
}

/* Bitmaps the plan removes that a job or an export that stays uses:
 * refused before anything changes. */
static int
check_bitmap_dels(struct reload_run *r, struct ng_error *err)
{
    size_t i;

    for (i = 0; i < r->plan->n_steps; i++) {
        const struct ng_step *s = &r->plan->steps[i];
        struct ng_node *n;
        struct ng_bitmap *bm;

        if (s->kind != NG_STEP_BITMAP_DEL ||
            (n = ng_graph_find(r->ctx->graph, s->object)) == NULL ||
            (bm = ng_bitmap_find(n, s->target)) == NULL || !bm->busy ||
            node_freed_by_plan(r->plan, s->object))
            continue;
        return bitmap_busy(r->cfg, s->object, s->target, err);
    }
    return 0;
}

/* Under socket activation the config's listen addresses are not ours
 * to bind or drop. */
static int
check_activated(const struct reload_run *r, struct ng_error *err)
{
    size_t i;

    for (i = 0; r->rl->activated && i < r->plan->n_steps; i++) {
        enum ng_step_kind k = r->plan->steps[i].kind;

        if (k == NG_STEP_LISTEN_ADD || k == NG_STEP_LISTEN_RETUNE ||
            k == NG_STEP_LISTEN_DEL)
            return ng_error_set(err, EINVAL, "%s: server: 'listen' cannot "
                                "change on reload under socket activation "
                                "(the sockets are systemd's); change the "
                                "socket unit and restart", r->cfg->file);
    }
    return 0;
}

/* The checks against live state, and the claims: on the loop, with the
 * plan made. */
static int
check_plan(struct reload_run *r, struct ng_error *err)
{
    if ((r->old_creds = calloc(r->plan->n_steps + 1,
                               sizeof *r->old_creds)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    if (check_activated(r, err) == -1 || check_bitmap_dels(r, err) == -1 ||
        check_new_exports(r, err) == -1 || claim_nodes(r, err) == -1)
        return -1;
    r->plan_ms = elapsed_ms(&r->start) - r->load_ms;
    return 0;
}

/* ---- The load, the refresh and the plan ------------------------------------ */

/* A signal to the applied plan is three parts: the worker loads the file
 * while the loop refreshes the model from the graph in short turns
 * (each at most about REFRESH_SLICE_NS, so no client waits long); the
 * worker, done loading, waits for the refresh and plans against the
 * model; one loop turn then checks, claims and applies.  The model does
 * not change from the start until the plan is back (rl->planning: the
 * control channel's notes wait, dump-config says to try again). */
#define REFRESH_SLICE_NS (500 * 1000)

/* Plans made again on a worker when the graph changed meanwhile; a run
 * that meets more changes than that plans on the loop at last. */
#define REPLANS_ON_WORKER 3

static double
thread_cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static long
thread_faults(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_THREAD, &ru) == -1)
        return 0;
    return ru.ru_minflt + ru.ru_majflt;
}

static void
free_handle(uv_handle_t *h)
{
    free(h);
}

/* The refresh's turns end (done, failed, or given up). */
static void
refresh_stop(struct reload_run *r)
{
    if (r->refresher != NULL) {
        uv_idle_stop(r->refresher);
        uv_close((uv_handle_t *)r->refresher, free_handle);
        r->refresher = NULL;
    }
    refresh_reset(&r->refresh);
}

/* Tell the worker how the refresh ended. */
static void
refresh_end(struct reload_run *r, enum refresh_state state)
{
    refresh_stop(r);
    uv_mutex_lock(&r->lock);
    if (r->refresh_state == REFRESH_RUNNING)
        r->refresh_state = state;
    uv_cond_signal(&r->refreshed);
    uv_mutex_unlock(&r->lock);
}

/* Loop: one turn of the refresh, in the idle phase (clients' I/O is
 * polled between turns). */
static void
refresh_turn(uv_idle_t *h)
{
    struct reload_run *r = h->data;
    int rc;

    slice_begin(r);
    rc = refresh_some(r->ctx, &r->refresh, uv_hrtime() + REFRESH_SLICE_NS);
    r->refresh_turns++;
    r->refresh_ms += elapsed_ms(&r->slice);
    slice_end(r);
    if (rc != 0)
        refresh_end(r, rc == 1 ? REFRESH_OK : REFRESH_FAILED);
}

static void
refresh_start(struct reload_run *r)
{
    r->refresher = malloc(sizeof *r->refresher);
    if (r->refresher == NULL ||
        uv_idle_init(r->ctx->graph->loop, r->refresher) != 0) {
        free(r->refresher);
        r->refresher = NULL;
        refresh_end(r, refresh_live(r->ctx, NULL) == 0 ? REFRESH_OK
                                                       : REFRESH_FAILED);
        return;
    }
    r->refresher->data = r;
    uv_idle_start(r->refresher, refresh_turn);
}

/* Worker: true once the loop refreshed the model. */
static bool
wait_refreshed(struct reload_run *r)
{
    enum refresh_state state;

    uv_mutex_lock(&r->lock);
    while (r->refresh_state == REFRESH_RUNNING)
        uv_cond_wait(&r->refreshed, &r->lock);
    state = r->refresh_state;
    uv_mutex_unlock(&r->lock);
    return state == REFRESH_OK;
}

/* Worker thread: read, parse and check the file (the config loader is
 * pure: it touches nothing but the run's own fields). */
static void
load_file(struct reload_run *r)
{
    double cpu0 = thread_cpu_ms();
    long faults0 = thread_faults();

    r->cfg = ng_config_load_file(r->file, &r->load_err);
    if (r->cfg != NULL &&
        ng_config_absolute_paths_at(r->cfg, r->rl->start_dir,
                                    &r->load_err) == -1) {
        ng_config_free(r->cfg);
        r->cfg = NULL;
    }
    r->load_cpu_ms = thread_cpu_ms() - cpu0;
    r->load_faults = thread_faults() - faults0;
    r->load_ms = elapsed_ms(&r->start);
}

/* Worker thread: the plan, from the new config (immutable) and the
 * refreshed model. */
static void
plan_file(struct reload_run *r)
{
    unsigned ms = r->rl->plan_delay_ms;
    double cpu0;

    if (!wait_refreshed(r)) {
        ng_error_set(&r->plan_err, ENOMEM, "out of memory");
        return;
    }
    if (ms > 0)
        nanosleep(&(struct timespec){ ms / 1000, ms % 1000 * 1000000L },
                  NULL);
    cpu0 = thread_cpu_ms();
    r->plan = ng_plan_compute(r->cfg, r->rl->live, r->prune, &r->plan_err);
    r->plan_cpu_ms = thread_cpu_ms() - cpu0;
}

static void
reload_work(uv_work_t *w)
{
    struct reload_run *r = w->data;

    if (r->cfg == NULL) {           /* not when planning again */
        r->queue_ms = elapsed_ms(&r->start);
        load_file(r);
    }
    if (r->cfg != NULL)
        plan_file(r);
}

static void reload_done(uv_work_t *w, int status);

/* The control channel changed the graph while the plan was made: refresh
 * and plan again the same way, the file loaded already.  False when no
 * worker can be had. */
static bool
plan_again(struct reload_run *r)
{
    uv_mutex_lock(&r->lock);
    r->refresh_state = REFRESH_RUNNING;
    uv_mutex_unlock(&r->lock);
    r->rl->planning = true;
    if (uv_queue_work(r->ctx->graph->loop, &r->work, reload_work,
                      reload_done) != 0) {
        r->rl->planning = false;
        return false;
    }
    slice_end(r);
    refresh_start(r);
    return true;
}

static void run_orphaned(struct reload_run *r);

/* Back on the loop with the plan (or the load's error). */
static void
reload_done(uv_work_t *w, int status)
{
    struct reload_run *r = w->data;
    struct ng_error err = { 0 };
    bool changed;

    slice_begin(r);
    if (r->rl->orphaned) {          /* the daemon went away meanwhile */
        run_orphaned(r);
        return;
    }
    refresh_stop(r);                /* still running when the load failed */
    changed = replay_deferred(r->ctx);
    ng_log_debug("reload %s: file loaded in %.1f ms (CPU %.1f ms, %ld page "
                 "faults, %.1f ms waiting for a worker)", r->id, r->load_ms,
                 r->load_cpu_ms, r->load_faults, r->queue_ms);
    if (r->cfg == NULL) {
        if (status != 0)
            ng_error_set(&r->load_err, ECANCELED, "reload cancelled");
        refuse(r, &r->load_err);
        return;
    }
    if (changed && r->plan != NULL) {
        /* The control channel changed the graph meanwhile: the plan is
         * made again against the model as it is now, on a worker (a
         * plan is milliseconds); after REPLANS_ON_WORKER tries here,
         * where nothing can change meanwhile. */
        ng_log_info("reload %s: the graph changed while it was planned; "
                    "planning again", r->id);
        ng_plan_free(r->plan);
        r->plan = NULL;
        if (r->replans++ < REPLANS_ON_WORKER && plan_again(r))
            return;
        r->plan = refresh_live(r->ctx, &r->plan_err) == -1 ? NULL
            : ng_plan_compute(r->cfg, r->rl->live, r->prune, &r->plan_err);
    }
    if (status != 0 && r->plan == NULL)
        ng_error_set(&r->plan_err, ECANCELED, "reload cancelled");
    if (r->plan == NULL)
        refuse(r, &r->plan_err);
    else if (check_plan(r, &err) == -1)
        refuse(r, &err);
    else if (r->dry_run)
        finish(r);
    else
        advance(r);
}

/* The daemon went away while a worker had the run: it ends here. */
static void
run_orphaned(struct reload_run *r)
{
    refresh_stop(r);
    ng_reload_free_now(r->rl);
    ng_plan_free(r->plan);
    ng_config_free(r->cfg);
    uv_cond_destroy(&r->refreshed);
    uv_mutex_destroy(&r->lock);
    free(r->file);
    free(r);
}

/* The daemon stops while a worker has the run: the refresh's turns stop
 * (the graph goes) and a worker waiting for them goes on. */
static void
run_cancel_refresh(struct reload_run *r)
{
    if (r->refresh_state == REFRESH_RUNNING)
        refresh_end(r, REFRESH_CANCELLED);
}

void
ng_reload_run(struct ng_control_ctx *ctx, const char *file, bool dry_run,
              bool prune, ng_reload_done_fn *done, void *opaque)
{
    struct ng_reload *rl = ctx->reload;
    struct reload_run *r = NULL;
    struct ng_error err = { 0 };

    if (rl == NULL || rl->busy || (file == NULL && rl->file == NULL) ||
        (r = calloc(1, sizeof *r)) == NULL ||
        (r->file = strdup(file != NULL ? file : rl->file)) == NULL ||
        uv_mutex_init(&r->lock) != 0) {
        ng_error_set(&err, EBUSY, rl == NULL ? "reload is not available"
                     : rl->busy ? "a reload is already running; try again "
                     "when it ends" : file == NULL && rl->file == NULL
                     ? "no config file to reload (the daemon runs its "
                     "built-in config); give a file" : "out of memory");
        if (r != NULL)
            free(r->file);
        free(r);
        done(opaque, NULL, &err);
        return;
    }
    if (uv_cond_init(&r->refreshed) != 0) {
        uv_mutex_destroy(&r->lock);
        free(r->file);
        free(r);
        ng_error_set(&err, ENOMEM, "out of memory");
        done(opaque, NULL, &err);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    rl->busy = true;
    rl->run = r;
    r->ctx = ctx;
    r->rl = rl;
    r->dry_run = dry_run;
    r->prune = prune;
    r->done = done;
    r->opaque = opaque;
    snprintf(r->id, sizeof r->id, "reload-%lu", ++rl->counter);
    /* From here until the plan is back the model holds still. */
    rl->planning = true;
    r->work.data = r;
    if (uv_queue_work(ctx->graph->loop, &r->work, reload_work,
                      reload_done) != 0) {
        /* No worker: all of it here, the refresh first. */
        refresh_end(r, refresh_live(ctx, NULL) == 0 ? REFRESH_OK
                                                    : REFRESH_FAILED);
        reload_work(&r->work);
        reload_done(&r->work, 0);
        return;
    }
    refresh_start(r);
}

/* ---- SIGHUP and QMP -------------------------------------------------------- */

static void
signal_done(void *opaque, json_t *result, const struct ng_error *err)
{
    (void)opaque;
    (void)result;
    if (err != NULL)
        ng_log_error("SIGHUP: reload failed: %s", err->msg);
}

void
ng_reload_signal(struct ng_control_ctx *ctx)
{
    ng_log_info("SIGHUP: reloading %s", ctx->reload && ctx->reload->file
                ? ctx->reload->file : "(no file)");
    ng_reload_run(ctx, NULL, false, false, signal_done, NULL);
}

static void
qmp_done(void *opaque, json_t *result, const struct ng_error *err)
{
    struct ng_qmp_call *call = opaque;

    if (err != NULL)
        ng_qmp_error_from(call, err);
    else
        ng_qmp_return(call, json_incref(result));
}

void
ng_qmp_reload(struct ng_qmp_call *call, json_t *args)
{
    const char *file = json_string_value(json_object_get(args, "file"));

    ng_reload_run(ng_qmp_ctx(call), file, ng_qmp_dry_run(args),
                  json_is_true(json_object_get(args, "prune")), qmp_done,
                  call);
}

void
ng_qmp_query_config(struct ng_qmp_call *call, json_t *args)
{
    struct ng_error err = { 0 };
    char *text = ng_reload_dump(ng_qmp_ctx(call), &err);

    (void)args;
    if (text == NULL) {
        ng_qmp_error_from(call, &err);
        return;
    }
    ng_qmp_return(call, json_pack("{s:s}", "yaml", text));
    free(text);
}
