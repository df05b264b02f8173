/* filters/throttle.c: "throttle", QEMU's I/O throttling filter.
 *
 * Limits are QEMU's ThrottleLimits (iops-total, bps-read-max,
 * iops-write-max-length, iops-size, ...) and live in a throttle group.
 * A node either names a shared group in "throttle-group" (every node of
 * the group together stays under the limits, as in QEMU) or gives
 * "limits" alone and gets a private group.  Named groups are graph objects
 * of type "throttle-group" (graph.h); the config loader and the control
 * channel declare and change them with ng_throttle_group_*()
 * (filters/throttle.h).
 *
 * The model is QEMU's leaky bucket: each limit is a bucket that fills by
 * one unit per operation (or per byte) and leaks at the limit's rate.  A
 * request is admitted while its buckets are below their size (a tenth of
 * a second at the average rate, or max * max-length with a burst) and is
 * then accounted in full, so the rate over time is the limit while short
 * bursts pass.  Admission is at submission; flush, block status and cache
 * are not throttled, as in QEMU.  Reads are one direction; writes,
 * write-zeroes and trims the other.
 *
 * Requests over the limit wait in a FIFO per node and direction, linked
 * through ng_req.filter_next, so waiting allocates nothing.  While any
 * request of a direction waits in the group, new ones queue behind it:
 * order is kept and the group's nodes take turns.  One libuv timer per
 * node wakes the group when the buckets have leaked enough.
 *
 * A drained section over a node lifts its limits until it ends (QEMU
 * does the same): what waits goes on at once and new requests pass
 * unaccounted, so a splice never waits at the throttled rate.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "filters/filters.h"
#include "filters/throttle.h"

/* Buckets, in QEMU's order. */
enum {
    TB_BPS_TOTAL, TB_BPS_READ, TB_BPS_WRITE,
    TB_OPS_TOTAL, TB_OPS_READ, TB_OPS_WRITE,
    TB__COUNT
};

enum { TD_READ, TD_WRITE, TD__COUNT };

/* Beyond this a limit is surely a typo (QEMU's THROTTLE_VALUE_MAX). */
#define THROTTLE_VALUE_MAX 1000000000000000ull

#define NS_PER_SEC 1e9

static const char *const throttle_bucket_names[TB__COUNT] = {
    "bps-total", "bps-read", "bps-write",
    "iops-total", "iops-read", "iops-write",
};

/* The buckets a request of each direction fills. */
static const int throttle_dir_buckets[TD__COUNT][4] = {
    [TD_READ]  = { TB_BPS_TOTAL, TB_BPS_READ, TB_OPS_TOTAL, TB_OPS_READ },
    [TD_WRITE] = { TB_BPS_TOTAL, TB_BPS_WRITE, TB_OPS_TOTAL, TB_OPS_WRITE },
};

struct throttle_limit {
    uint64_t avg;                   /* units per second, 0 = unlimited */
    uint64_t max;                   /* burst rate, 0 = no burst */
    uint64_t length;                /* seconds the burst may last, >= 1 */
};

struct throttle_config {
    struct throttle_limit b[TB__COUNT];
    uint64_t iops_size;             /* bytes one operation stands for */
};

struct throttle_state;

struct ng_throttle_group {
    struct ng_graph *graph;
    char *name;                     /* NULL: a node's private group */
    unsigned refs;                  /* member nodes + the declaration */
    bool declared;
    struct throttle_config cfg;
    double level[TB__COUNT];        /* units in the bucket */
    double burst_level[TB__COUNT];  /* the same, leaking at max */
    uint64_t last_leak;             /* uv_hrtime() of the last leak */
    struct throttle_state *members;
    struct throttle_state *turn[TD__COUNT];  /* member served next */
    uint64_t queued[TD__COUNT];     /* waiting in all members */
    unsigned first_dir;             /* alternates so neither starves */
};

struct throttle_state {
    struct ng_node *file;           /* option "file" */
    char *group_name;               /* option "throttle-group", "" = none */
    struct ng_value *limits;        /* option "limits", NULL = absent */
    struct ng_node *node;
    struct ng_throttle_group *tg;
    uv_timer_t *timer;              /* own allocation: closes async */
    struct ng_req *head[TD__COUNT], *tail[TD__COUNT];
    uint64_t nqueued[TD__COUNT];
    unsigned drained;               /* drained sections over us: no limits */
    bool lifted;                    /* ng_throttle_lift_all(): no limits
                                     * ever again */
    struct throttle_state *next_member;
};

static const struct ng_opt_desc throttle_opts[] = {
    NG_OPT_CHILD("file", struct throttle_state, file, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_STRING("throttle-group", struct throttle_state, group_name, "",
                  "name of a throttle group shared with other nodes"),
    NG_OPT_VALUE("limits", struct throttle_state, limits, false,
                 "QEMU ThrottleLimits: iops-total, iops-read, iops-write, "
                 "bps-total, bps-read, bps-write, each with -max and "
                 "-max-length, and iops-size"),
    NG_OPT_END,
};

static const char *const throttle_live_opts[] = {
    "limits", "throttle-group", NULL
};

/* ---- Limits ------------------------------------------------------------- */

/* Store one key of a ThrottleLimits map in *cfg. */
static int
throttle_parse_key(struct throttle_config *cfg, const char *key,
                   const struct ng_value *v, struct ng_error *err)
{
    uint64_t n;
    size_t len;
    int i;

    if (ng_value_to_size(v, key, &n, err) == -1)
        return -1;
    if (n > THROTTLE_VALUE_MAX)
        return ng_value_error(err, &v->loc, "'%s' must be at most %llu",
                              key, THROTTLE_VALUE_MAX);
    if (strcmp(key, "iops-size") == 0) {
        cfg->iops_size = n;
        return 0;
    }
    for (i = 0; i < TB__COUNT; i++) {
        len = strlen(throttle_bucket_names[i]);
        if (strncmp(key, throttle_bucket_names[i], len) != 0)
            continue;
        if (key[len] == '\0') {
            cfg->b[i].avg = n;
            return 0;
        }
        if (strcmp(key + len, "-max") == 0) {
            cfg->b[i].max = n;
            return 0;
        }
        if (strcmp(key + len, "-max-length") == 0) {
            if (n == 0)
                return ng_value_error(err, &v->loc,
                                      "'%s' must be at least 1", key);
            cfg->b[i].length = n;
            return 0;
        }
    }
    return -2;
}

/* QEMU's rules for a consistent set of limits. */
static int
throttle_check_config(const struct throttle_config *cfg,
                      const struct ng_loc *loc, struct ng_error *err)
{
    const char *const *names = throttle_bucket_names;
    int i;

    for (i = TB_BPS_TOTAL; i <= TB_OPS_TOTAL; i += TB_OPS_TOTAL) {
        if (cfg->b[i].avg && (cfg->b[i + 1].avg || cfg->b[i + 2].avg))
            return ng_value_error(err, loc, "'%s' cannot be combined with "
                                  "'%s' or '%s'", names[i], names[i + 1],
                                  names[i + 2]);
    }
    for (i = 0; i < TB__COUNT; i++) {
        const struct throttle_limit *l = &cfg->b[i];

        if (l->max && !l->avg)
            return ng_value_error(err, loc, "'%s-max' needs '%s'",
                                  names[i], names[i]);
        if (l->max && l->max < l->avg)
            return ng_value_error(err, loc, "'%s-max' must be at least "
                                  "'%s'", names[i], names[i]);
        if (l->length > 1 && !l->max)
            return ng_value_error(err, loc, "'%s-max-length' needs "
                                  "'%s-max'", names[i], names[i]);
    }
    return 0;
}

/* A ThrottleLimits map (NULL = no limits) -> *cfg. */
static int
throttle_parse_limits(const struct ng_value *limits,
                      struct throttle_config *cfg, struct ng_error *err)
{
    size_t i;
    int r;

    memset(cfg, 0, sizeof *cfg);
    for (i = 0; i < TB__COUNT; i++)
        cfg->b[i].length = 1;
    if (limits == NULL)
        return 0;
    if (limits->kind != NG_VALUE_MAP)
        return ng_value_error(err, &limits->loc, "'limits' must be a "
                              "mapping such as {iops-total: 1000}");
    for (i = 0; i < limits->n; i++) {
        r = throttle_parse_key(cfg, limits->keys[i], limits->items[i], err);
        if (r == -1)
            return -1;
        if (r == -2)
            return ng_value_error(err, &limits->key_locs[i],
                                  "unknown throttle limit '%s' (expected "
                                  "iops-total, iops-read, iops-write, "
                                  "bps-total, bps-read, bps-write, each "
                                  "optionally with -max or -max-length, "
                                  "or iops-size)", limits->keys[i]);
    }
    return throttle_check_config(cfg, &limits->loc, err);
}

/* ---- The leaky buckets -------------------------------------------------- */

/* fmax() without libm. */
static inline double
throttle_max(double a, double b)
{
    return a > b ? a : b;
}

static void
throttle_leak(struct ng_throttle_group *tg, uint64_t now)
{
    double secs;
    int i;

    if (now <= tg->last_leak)
        return;
    secs = (double)(now - tg->last_leak) / NS_PER_SEC;
    tg->last_leak = now;
    for (i = 0; i < TB__COUNT; i++) {
        const struct throttle_limit *l = &tg->cfg.b[i];

        tg->level[i] = throttle_max(tg->level[i] - (double)l->avg * secs, 0);
        if (l->length > 1)
            tg->burst_level[i] = throttle_max(tg->burst_level[i] -
                                      (double)l->max * secs, 0);
    }
}

/* Nanoseconds until bucket i admits a request. */
static double
throttle_bucket_wait(const struct ng_throttle_group *tg, int i)
{
    const struct throttle_limit *l = &tg->cfg.b[i];
    double size, burst_size, extra;

    if (l->avg == 0)
        return 0;
    if (l->max == 0) {
        /* Without a burst limit still let a tenth of a second through at
         * once: a strict one-by-one pace would throttle every other
         * request of a parallel client. */
        size = (double)l->avg / 10;
        burst_size = 0;
    } else {
        /* With one, the whole burst goes first, but no faster than max
         * (checked on the burst bucket, over tenths of a second). */
        size = (double)l->max * (double)l->length;
        burst_size = (double)l->max / 10;
    }
    extra = tg->level[i] - size;
    if (extra > 0)
        return extra * NS_PER_SEC / (double)l->avg;
    if (l->length > 1) {
        extra = tg->burst_level[i] - burst_size;
        if (extra > 0)
            return extra * NS_PER_SEC / (double)l->max;
    }
    return 0;
}

static double
throttle_dir_wait(const struct ng_throttle_group *tg, int dir)
{
    double wait = 0;
    int i;

    for (i = 0; i < 4; i++)
        wait = throttle_max(wait, throttle_bucket_wait(tg,
                                               throttle_dir_buckets[dir][i]));
    return wait;
}

static void
throttle_account(struct ng_throttle_group *tg, int dir, uint64_t bytes)
{
    double ops = 1;
    int i;

    /* A large request counts as several operations of iops-size. */
    if (tg->cfg.iops_size != 0 && bytes > tg->cfg.iops_size)
        ops = (double)bytes / (double)tg->cfg.iops_size;
    for (i = 0; i < 4; i++) {
        int b = throttle_dir_buckets[dir][i];
        double units = b < TB_OPS_TOTAL ? (double)bytes : ops;

        tg->level[b] += units;
        if (tg->cfg.b[b].length > 1)
            tg->burst_level[b] += units;
    }
}

/* Account the request and return true if the buckets allow it now. */
static bool
throttle_admit(struct ng_throttle_group *tg, int dir, uint64_t bytes)
{
    throttle_leak(tg, uv_hrtime());
    if (throttle_dir_wait(tg, dir) > 0)
        return false;
    throttle_account(tg, dir, bytes);
    return true;
}

/* ---- Queues and the timer ----------------------------------------------- */

static int
throttle_direction(const struct ng_req *req)
{
    switch (req->op) {
    case NG_OP_READ:
        return TD_READ;
    case NG_OP_WRITE:
    case NG_OP_WRITE_ZEROES:
    case NG_OP_TRIM:
        return TD_WRITE;
    default:
        return -1;
    }
}

static void
throttle_enqueue(struct throttle_state *s, int dir, struct ng_req *req)
{
    req->filter_next = NULL;
    if (s->tail[dir] != NULL)
        s->tail[dir]->filter_next = req;
    else
        s->head[dir] = req;
    s->tail[dir] = req;
    s->nqueued[dir]++;
    s->tg->queued[dir]++;
}

static struct ng_req *
throttle_dequeue(struct throttle_state *s, int dir)
{
    struct ng_req *req = s->head[dir];

    s->head[dir] = req->filter_next;
    if (s->head[dir] == NULL)
        s->tail[dir] = NULL;
    req->filter_next = NULL;
    s->nqueued[dir]--;
    s->tg->queued[dir]--;
    return req;
}

/* The member whose turn it is among those with requests waiting in
 * `dir`; the group must have some. */
static struct throttle_state *
throttle_next_member(struct ng_throttle_group *tg, int dir)
{
    struct throttle_state *m = tg->turn[dir] ? tg->turn[dir] : tg->members;

    while (m->head[dir] == NULL)
        m = m->next_member ? m->next_member : tg->members;
    return m;
}

static void throttle_timer_cb(uv_timer_t *timer);

/* Arm a member's timer for when the first waiting request may go. */
static void
throttle_schedule(struct ng_throttle_group *tg)
{
    struct throttle_state *m;
    double wait = -1;
    int dir;

    throttle_leak(tg, uv_hrtime());
    for (dir = 0; dir < TD__COUNT; dir++) {
        double w = tg->queued[dir] ? throttle_dir_wait(tg, dir) : -1;

        if (w >= 0 && (wait < 0 || w < wait))
            wait = w;
    }
    if (wait < 0) {
        /* Nothing waits: an armed timer would only hold the loop (a
         * daemon's exit waits for its loop to empty). */
        for (m = tg->members; m != NULL; m = m->next_member)
            uv_timer_stop(m->timer);
        return;
    }
    for (m = tg->members; m != NULL; m = m->next_member) {
        if (m->nqueued[TD_READ] + m->nqueued[TD_WRITE] > 0) {
            /* libuv timers count milliseconds: round up, so that the
             * buckets have surely leaked when it fires. */
            uv_timer_start(m->timer, throttle_timer_cb,
                           ((uint64_t)wait + 999999) / 1000000, 0);
            return;
        }
    }
}

/* Let through, in turn, what the buckets allow now.  Forwarding may
 * complete requests and bring new ones in, so look afresh each time. */
static void
throttle_release(struct ng_throttle_group *tg)
{
    bool progress = true;

    tg->first_dir ^= 1;
    while (progress) {
        progress = false;
        for (unsigned i = 0; i < TD__COUNT; i++) {
            int dir = (int)((tg->first_dir + i) % TD__COUNT);
            struct throttle_state *m;
            struct ng_req *req;

            if (tg->queued[dir] == 0)
                continue;
            m = throttle_next_member(tg, dir);
            if (!throttle_admit(tg, dir, m->head[dir]->length))
                continue;
            req = throttle_dequeue(m, dir);
            tg->turn[dir] = m->next_member;
            progress = true;
            ng_node_forward(m->node, req);
        }
    }
    throttle_schedule(tg);
}

static void
throttle_timer_cb(uv_timer_t *timer)
{
    struct throttle_state *s = timer->data;

    throttle_release(s->tg);
}

static void
throttle_free_timer(uv_handle_t *h)
{
    free(h);
}

/* ---- Groups ------------------------------------------------------------- */

/* QEMU's rule for object ids: a letter, then letters, digits, '-', '.',
 * '_'. */
static bool
throttle_valid_group_name(const char *name)
{
    const char *p;

    if (!isalpha((unsigned char)name[0]) || strlen(name) >= 128)
        return false;
    for (p = name; *p != '\0'; p++)
        if (!isalnum((unsigned char)*p) && strchr("-._", *p) == NULL)
            return false;
    return true;
}

static void
throttle_group_destroy(void *obj)
{
    struct ng_throttle_group *tg = obj;

    free(tg->name);
    free(tg);
}

/* Named groups in the graph's object registry. */
static const struct ng_object_type throttle_group_type = {
    .name = "throttle group",
    .free = throttle_group_destroy,
};

/* A new group with one reference; named groups join the registry. */
static struct ng_throttle_group *
throttle_group_new(struct ng_graph *g, const char *name,
                   const struct throttle_config *cfg, struct ng_error *err)
{
    struct ng_throttle_group *tg = calloc(1, sizeof *tg);

    if (tg == NULL || (name != NULL && (tg->name = strdup(name)) == NULL)) {
        free(tg);
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    tg->graph = g;
    tg->refs = 1;
    tg->cfg = *cfg;
    tg->last_leak = uv_hrtime();
    if (name != NULL &&
        ng_graph_object_add(g, &throttle_group_type, name, tg, err) == -1) {
        throttle_group_destroy(tg);
        return NULL;
    }
    return tg;
}

/* New limits; requests already waiting are released at the new rate. */
static void
throttle_group_configure(struct ng_throttle_group *tg,
                         const struct throttle_config *cfg)
{
    tg->cfg = *cfg;
    /* As QEMU: new limits start with empty buckets. */
    memset(tg->level, 0, sizeof tg->level);
    memset(tg->burst_level, 0, sizeof tg->burst_level);
    tg->last_leak = uv_hrtime();
    throttle_schedule(tg);
}

struct ng_throttle_group *
ng_throttle_group_find(struct ng_graph *g, const char *name)
{
    return ng_graph_object_find(g, &throttle_group_type, name);
}

void
ng_throttle_group_ref(struct ng_throttle_group *tg)
{
    tg->refs++;
}

void
ng_throttle_group_unref(struct ng_throttle_group *tg)
{
    if (tg == NULL || --tg->refs > 0)
        return;
    if (tg->name != NULL)
        ng_graph_object_del(tg->graph, &throttle_group_type, tg->name, NULL);
    else
        throttle_group_destroy(tg);
}

int
ng_throttle_limits_check(const struct ng_value *limits, struct ng_error *err)
{
    struct throttle_config cfg;

    return throttle_parse_limits(limits, &cfg, err);
}

int
ng_throttle_group_declare(struct ng_graph *g, const char *name,
                          const struct ng_value *limits,
                          struct ng_error *err)
{
    struct ng_throttle_group *tg = ng_throttle_group_find(g, name);
    struct throttle_config cfg;

    if (!throttle_valid_group_name(name))
        return ng_error_set(err, EINVAL, "invalid throttle group name '%s' "
                            "(a letter, then letters, digits, '-', '.', "
                            "'_')", name);
    if (tg != NULL && tg->declared)
        return ng_error_set(err, EEXIST, "throttle group '%s' already "
                            "exists", name);
    if (throttle_parse_limits(limits, &cfg, err) == -1)
        return ng_error_prefix(err, "throttle group '%s'", name);
    if (tg == NULL) {
        if ((tg = throttle_group_new(g, name, &cfg, err)) == NULL)
            return -1;
    } else {
        ng_throttle_group_ref(tg);
        throttle_group_configure(tg, &cfg);
    }
    tg->declared = true;
    return 0;
}

int
ng_throttle_group_undeclare(struct ng_graph *g, const char *name,
                            struct ng_error *err)
{
    struct ng_throttle_group *tg = ng_throttle_group_find(g, name);

    if (tg == NULL || !tg->declared)
        return ng_error_set(err, ENOENT, "throttle group '%s' is not "
                            "declared", name);
    tg->declared = false;
    ng_throttle_group_unref(tg);
    return 0;
}

int
ng_throttle_group_set_limits(struct ng_graph *g, const char *name,
                             const struct ng_value *limits,
                             struct ng_error *err)
{
    struct ng_throttle_group *tg = ng_throttle_group_find(g, name);
    struct throttle_config cfg;

    if (tg == NULL)
        return ng_error_set(err, ENOENT, "throttle group '%s' not found",
                            name);
    if (throttle_parse_limits(limits, &cfg, err) == -1)
        return ng_error_prefix(err, "throttle group '%s'", name);
    throttle_group_configure(tg, &cfg);
    return 0;
}

/* ---- Membership --------------------------------------------------------- */

/* The group a node asks for: a shared one by name (made from `limits` if
 * it does not exist yet) or a private one.  Returns a new reference. */
static struct ng_throttle_group *
throttle_resolve_group(struct ng_node *node, const char *name,
                       const struct ng_value *limits, struct ng_error *err)
{
    struct ng_throttle_group *tg;
    struct throttle_config cfg;

    if (throttle_parse_limits(limits, &cfg, err) == -1)
        return NULL;
    if (name[0] == '\0') {
        if (limits == NULL) {
            ng_error_set(err, EINVAL, "give 'throttle-group' or 'limits'");
            return NULL;
        }
        return throttle_group_new(node->graph, NULL, &cfg, err);
    }
    tg = ng_throttle_group_find(node->graph, name);
    if (tg != NULL) {
        if (limits != NULL && memcmp(&cfg, &tg->cfg, sizeof cfg) != 0) {
            ng_error_set(err, EEXIST, "throttle group '%s' already exists "
                         "with other limits", name);
            return NULL;
        }
        ng_throttle_group_ref(tg);
        return tg;
    }
    if (limits == NULL) {
        ng_error_set(err, ENOENT, "unknown throttle group '%s' (declare "
                     "it, or give 'limits' to create it)", name);
        return NULL;
    }
    if (!throttle_valid_group_name(name)) {
        ng_error_set(err, EINVAL, "invalid throttle group name '%s' (a "
                     "letter, then letters, digits, '-', '.', '_')", name);
        return NULL;
    }
    return throttle_group_new(node->graph, name, &cfg, err);
}

/* Join tg (taking over the caller's reference), bringing our waiting
 * requests along. */
static void
throttle_join(struct throttle_state *s, struct ng_throttle_group *tg)
{
    int dir;

    s->tg = tg;
    s->next_member = tg->members;
    tg->members = s;
    for (dir = 0; dir < TD__COUNT; dir++)
        tg->queued[dir] += s->nqueued[dir];
    throttle_schedule(tg);
}

static void
throttle_leave(struct throttle_state *s)
{
    struct ng_throttle_group *tg = s->tg;
    struct throttle_state **p;
    int dir;

    for (p = &tg->members; *p != NULL; p = &(*p)->next_member) {
        if (*p == s) {
            *p = s->next_member;
            break;
        }
    }
    for (dir = 0; dir < TD__COUNT; dir++) {
        tg->queued[dir] -= s->nqueued[dir];
        if (tg->turn[dir] == s)
            tg->turn[dir] = s->next_member;
    }
    s->next_member = NULL;
    s->tg = NULL;
    uv_timer_stop(s->timer);
    /* Our timer may have been the one armed for the group. */
    throttle_schedule(tg);
    ng_throttle_group_unref(tg);
}

/* ---- The driver --------------------------------------------------------- */

static int
throttle_open(struct ng_node *node, struct ng_error *err)
{
    struct throttle_state *s = ng_node_state(node);
    struct ng_throttle_group *tg;

    s->node = node;
    tg = throttle_resolve_group(node, s->group_name, s->limits, err);
    if (tg == NULL)
        return -1;
    s->timer = malloc(sizeof *s->timer);
    if (s->timer == NULL || uv_timer_init(ng_node_loop(node), s->timer)) {
        free(s->timer);
        s->timer = NULL;
        ng_throttle_group_unref(tg);
        return ng_error_set(err, ENOMEM, "cannot create a timer");
    }
    s->timer->data = s;
    throttle_join(s, tg);
    return 0;
}

static void
throttle_close(struct ng_node *node)
{
    struct throttle_state *s = ng_node_state(node);

    throttle_leave(s);
    /* The state goes when we return; the handle goes when libuv is done
     * with it. */
    uv_close((uv_handle_t *)s->timer, throttle_free_timer);
    s->timer = NULL;
}

static void
throttle_submit(struct ng_node *node, struct ng_req *req)
{
    struct throttle_state *s = ng_node_state(node);
    int dir = throttle_direction(req);

    /* Drained: whatever still reaches us goes straight on, unaccounted,
     * as in QEMU (io_limits_disabled). */
    if (dir < 0 || s->drained > 0) {
        ng_node_forward(node, req);
        return;
    }
    /* Behind others already waiting, even if the buckets have room: they
     * go first. */
    if (s->tg->queued[dir] == 0 && throttle_admit(s->tg, dir, req->length)) {
        ng_node_forward(node, req);
        return;
    }
    throttle_enqueue(s, dir, req);
    throttle_schedule(s->tg);
}

/* A drained section waits for what we hold: let all of it go now, in
 * order, past the limits, as QEMU's throttle_co_drain_begin does. */
static void
throttle_drain_begin(struct ng_node *node)
{
    struct throttle_state *s = ng_node_state(node);
    int dir;

    s->drained++;
    for (dir = 0; dir < TD__COUNT; dir++)
        while (s->head[dir] != NULL)
            ng_node_forward(node, throttle_dequeue(s, dir));
    /* Our timer may have been the one armed for the group. */
    throttle_schedule(s->tg);
}

void
ng_throttle_lift_all(struct ng_graph *g)
{
    struct ng_node *n;

    for (n = g->nodes; n != NULL; n = n->next) {
        struct throttle_state *s;

        if (n->driver != &ng_filter_throttle || !n->opened)
            continue;
        s = ng_node_state(n);
        if (!s->lifted) {
            s->lifted = true;
            throttle_drain_begin(n);    /* a section that never ends */
        }
    }
}

static void
throttle_drain_end(struct ng_node *node)
{
    struct throttle_state *s = ng_node_state(node);

    s->drained--;
}

/* Replace an owned option field with a copy of v (NULL = absent). */
static int
throttle_replace_value(struct ng_value **field, const struct ng_value *v,
                       struct ng_error *err)
{
    struct ng_value *copy = NULL;

    if (v != NULL && (copy = ng_value_copy(v)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    ng_value_free(*field);
    *field = copy;
    return 0;
}

/* "limits" changes the node's group (for every node in it, when shared);
 * "throttle-group" moves the node to another group.  Waiting requests
 * stay queued either way and go at the new rate. */
static int
throttle_reconfigure(struct ng_node *node, const struct ng_value *opts,
                     struct ng_error *err)
{
    struct throttle_state *s = ng_node_state(node);
    const struct ng_value *limits = ng_value_get(opts, "limits");
    const struct ng_value *gv = ng_value_get(opts, "throttle-group");
    struct ng_throttle_group *tg;
    struct throttle_config cfg;
    const char *name = s->group_name;
    char *new_name;
    bool existing;

    if (ng_node_reconfigure_check(node, opts, throttle_live_opts, err) == -1)
        return -1;
    if (gv != NULL && (name = ng_value_to_string(gv, "throttle-group",
                                                 err)) == NULL)
        return -1;
    if (strcmp(name, s->group_name) == 0) {
        if (limits == NULL)
            return 0;
        if (throttle_parse_limits(limits, &cfg, err) == -1 ||
            throttle_replace_value(&s->limits, limits, err) == -1)
            return -1;
        throttle_group_configure(s->tg, &cfg);
        return 0;
    }
    /* Another group: as at open, except that an existing group named
     * together with limits takes them. */
    tg = name[0] != '\0' ? ng_throttle_group_find(node->graph, name) : NULL;
    existing = tg != NULL;
    if (existing) {
        if (limits != NULL && throttle_parse_limits(limits, &cfg, err) == -1)
            return -1;
        ng_throttle_group_ref(tg);
    } else if ((tg = throttle_resolve_group(node, name, limits,
                                            err)) == NULL) {
        return -1;
    }
    if ((new_name = strdup(name)) == NULL ||
        throttle_replace_value(&s->limits, limits, err) == -1) {
        free(new_name);
        ng_throttle_group_unref(tg);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    free(s->group_name);
    s->group_name = new_name;
    throttle_leave(s);
    throttle_join(s, tg);
    if (existing && limits != NULL)
        throttle_group_configure(tg, &cfg);
    return 0;
}

const struct ng_driver ng_filter_throttle = {
    .name        = "throttle",
    .help        = "limit IOPS and bandwidth (QEMU's throttle groups)",
    .is_filter   = true,
    .grow        = ng_node_grow_child,
    .state_size  = sizeof(struct throttle_state),
    .opts        = throttle_opts,
    .open        = throttle_open,
    .close       = throttle_close,
    .submit      = throttle_submit,
    .drain_begin = throttle_drain_begin,
    .drain_end   = throttle_drain_end,
    .ops         = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                   NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                   NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                   NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
    .reconfigure = throttle_reconfigure,
};
