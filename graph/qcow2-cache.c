/* graph/qcow2-cache.c: qcow2 metadata I/O through the file child: the
 * load at open, the caches of L2 tables and refcount blocks, and the
 * write-back of changed tables.
 *
 * Caches: a table is loaded when a request needs it (the request waits;
 * requests that need one table in flight share its load), and the least
 * recently used clean table goes when a cache holds more than its size.
 * A dirty table stays until written back: when only dirty tables could
 * make room, a write-back round starts, and the cache holds the extra
 * tables until it is done.  A table a round is writing stays in memory
 * until its copy is on disk, so a later load never reads an old copy.
 *
 * Write-back runs in rounds, one at a time.  A round takes a copy of
 * every dirty table at once (so requests may go on changing them) and
 * writes the copies in dependency order with a flush between the
 * layers: refcount blocks, then the refcount table (and the header's
 * two fields naming it, when it moved), then (after a flush that also
 * puts the data clusters they point to on disk) the L2 tables, then the
 * L1 table, then a flush; a header rewrite (a new backing name, feature
 * bits) comes last, after a flush of the backing node, then a final
 * flush.  A crash at any point leaves refcounts at least as high as the
 * references on disk: leaked clusters at worst, never a cluster
 * referenced twice, an L2 entry pointing at data not yet written, or a
 * header naming a backing (or none) whose data the tables in the file
 * do not hold yet.  (A kill -9 leaves the page cache: there the order
 * of the writes is what counts; the flushes keep it through a power
 * loss.)  Refcount decrements go the other way: they are applied to the
 * in-memory refcounts only after the round that wrote the tables no
 * longer referencing the clusters, and reach the disk in the next
 * round.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph/qcow2.h"

/* ---- Sequencer ---------------------------------------------------------- */

void
qcow2_seq_resume(struct qcow2_seq *q, int ret)
{
    q->ret = ret;
    if (q->busy)
        q->inline_done = true;
    else
        qcow2_seq_run(q);
}

static void
seq_done(struct ng_req *sub, int ret)
{
    qcow2_seq_resume(sub->opaque, ret);
}

void
qcow2_seq_run(struct qcow2_seq *q)
{
    for (;;) {
        q->busy = true;
        q->inline_done = false;
        if (!q->step(q))
            return;                 /* finished: q may be freed */
        q->busy = false;
        if (!q->inline_done)
            return;                 /* seq_done() resumes */
    }
}

void
qcow2_seq_submit_prepared(struct qcow2_seq *q, struct ng_node *to)
{
    q->sub.done = seq_done;
    q->sub.opaque = q;
    ng_node_submit(to, &q->sub);
}

void
qcow2_seq_submit(struct qcow2_seq *q, struct ng_node *to, enum ng_op op,
                 uint64_t off, uint64_t len, void *buf)
{
    ng_req_init(&q->sub, op, off, len, q->flags);
    if (buf != NULL)
        ng_req_set_buf(&q->sub, buf);
    qcow2_seq_submit_prepared(q, to);
}

/* ---- Cache sizes -------------------------------------------------------- */

/* An optional size option: *set says whether it was given. */
static int
opt_size(const struct ng_value *v, const char *name, uint64_t def,
         uint64_t *out, bool *set, struct ng_error *err)
{
    *set = v != NULL;
    *out = def;
    return v == NULL ? 0 : ng_value_to_size(v, name, out, err);
}

int
qcow2_cache_sizes(struct qcow2_state *s, struct ng_error *err)
{
    uint64_t min_rc = QCOW2_MIN_REFCOUNT_CACHE * s->cluster_size;
    uint64_t entries = (s->size + s->cluster_size - 1) >> s->cluster_bits;
    uint64_t max_l2 = (entries * s->l2_entry_size + s->cluster_size - 1) &
                      ~(s->cluster_size - 1);
    uint64_t combined, l2_max, rc;
    bool combined_set, l2_set, rc_set;

    if (opt_size(s->opt_cache_size, "cache-size", 0, &combined,
                 &combined_set, err) < 0 ||
        opt_size(s->opt_l2_cache_size, "l2-cache-size",
                 QCOW2_DEFAULT_L2_CACHE_MAX, &l2_max, &l2_set, err) < 0 ||
        opt_size(s->opt_rc_cache_size, "refcount-cache-size", 0, &rc,
                 &rc_set, err) < 0)
        return -1;
    if (s->cache_clean_interval < 0 ||
        s->cache_clean_interval > UINT32_MAX)
        return ng_error_set(err, EINVAL, "'cache-clean-interval' must be "
                            "0 to %" PRIu32 " seconds", UINT32_MAX);
    s->l2_cache_bytes = max_l2 < l2_max ? max_l2 : l2_max;
    if (combined_set) {
        if (l2_set && rc_set)
            return ng_error_set(err, EINVAL, "cache-size, l2-cache-size "
                                "and refcount-cache-size may not be set "
                                "at the same time");
        if (l2_set && l2_max > combined)
            return ng_error_set(err, EINVAL, "l2-cache-size may not exceed "
                                "cache-size");
        if (rc > combined)
            return ng_error_set(err, EINVAL, "refcount-cache-size may not "
                                "exceed cache-size");
        if (l2_set) {
            rc = combined - s->l2_cache_bytes;
        } else if (rc_set) {
            s->l2_cache_bytes = combined - rc;
        } else if (combined >= max_l2 + min_rc) {
            s->l2_cache_bytes = max_l2;     /* all to L2, the rest for */
            rc = combined - max_l2;         /* the refcounts */
        } else {
            rc = combined < min_rc ? combined : min_rc;
            s->l2_cache_bytes = combined - rc;
        }
    }
    s->rc_cache_bytes = rc;
    return 0;
}

/* ---- Caches ------------------------------------------------------------- */

/* One table read in flight, and who waits for it. */
struct qcow2_load {
    struct qcow2_seq seq;
    struct qcow2_state *s;
    struct qcow2_cache *c;
    uint64_t idx;
    unsigned char *buf;
    struct qcow2_seq *waiters;
    struct qcow2_load *next;
};

int
qcow2_cache_init(struct qcow2_state *s, struct qcow2_cache *c,
                 uint64_t n_slots, uint64_t bytes, const char *what)
{
    uint64_t floor = c == &s->l2c ? QCOW2_MIN_L2_CACHE
                                  : QCOW2_MIN_REFCOUNT_CACHE;

    c->what = what;
    c->cap = bytes >> s->cluster_bits;
    if (c->cap < floor)
        c->cap = floor;
    c->n_slots = n_slots;
    c->slot = calloc(n_slots ? n_slots : 1, sizeof *c->slot);
    c->cap_res = c->cap + 1;
    c->res = malloc(c->cap_res * sizeof *c->res);
    if (c->slot == NULL || c->res == NULL)
        return -1;
    return 0;
}

void
qcow2_cache_free(struct qcow2_cache *c)
{
    for (uint64_t i = 0; i < c->n_res; i++)
        free(c->slot[c->res[i]].data);
    free(c->slot);
    free(c->res);
    /* Loads in flight hold requests: none are left at close. */
    *c = (struct qcow2_cache){ 0 };
}

/* Put table buf at idx (it was not in memory). */
static int
cache_insert(struct qcow2_cache *c, uint64_t idx, unsigned char *buf)
{
    struct qcow2_slot *sl = &c->slot[idx];

    if (c->n_res == c->cap_res) {
        uint64_t cap = c->cap_res * 2;
        void *p = realloc(c->res, cap * sizeof *c->res);

        if (p == NULL)
            return -ENOMEM;
        c->res = p;
        c->cap_res = cap;
    }
    sl->data = buf;
    sl->lru = ++c->tick;
    sl->res_pos = c->n_res;
    c->res[c->n_res++] = idx;
    return 0;
}

static void
cache_drop(struct qcow2_cache *c, uint64_t idx)
{
    struct qcow2_slot *sl = &c->slot[idx];
    uint64_t last = c->res[--c->n_res];

    c->res[sl->res_pos] = last;
    c->slot[last].res_pos = sl->res_pos;
    free(sl->data);
    sl->data = NULL;
}

static bool
evictable(const struct qcow2_slot *sl)
{
    return !sl->dirty && !sl->writing;
}

/* Keep at most `keep` clean tables. */
static void
cache_trim_to(struct qcow2_state *s, struct qcow2_cache *c, uint64_t keep)
{
    while (c->n_res > keep) {
        uint64_t best = UINT64_MAX, best_lru = UINT64_MAX;

        for (uint64_t i = 0; i < c->n_res; i++) {
            const struct qcow2_slot *sl = &c->slot[c->res[i]];

            if (evictable(sl) && sl->lru < best_lru) {
                best = c->res[i];
                best_lru = sl->lru;
            }
        }
        if (best == UINT64_MAX) {
            /* All dirty (or on their way): write them back, then trim
             * again (qcow2-cache.c's round end does). */
            if (s->writable)
                qcow2_wb_kick(s);
            return;
        }
        cache_drop(c, best);
    }
}

void
qcow2_cache_trim(struct qcow2_state *s, struct qcow2_cache *c)
{
    cache_trim_to(s, c, c->cap);
}

/* Room for one more, made before it comes in: a table just loaded is
 * never the one that goes (its waiters would load it again, forever). */
static void
cache_make_room(struct qcow2_state *s, struct qcow2_cache *c)
{
    cache_trim_to(s, c, c->cap - 1);
}

void
qcow2_cache_clean(struct qcow2_state *s, struct qcow2_cache *c)
{
    (void)s;
    for (uint64_t i = 0; i < c->n_res;) {
        uint64_t idx = c->res[i];

        if (evictable(&c->slot[idx]) && c->slot[idx].lru <= c->clean_tick)
            cache_drop(c, idx);     /* res[i] is another one now */
        else
            i++;
    }
    c->clean_tick = c->tick;
}

static void
clean_timer_cb(uv_timer_t *t)
{
    struct qcow2_state *s = t->data;

    qcow2_cache_clean(s, &s->l2c);
    qcow2_cache_clean(s, &s->rbc);
}

static void
clean_timer_closed(uv_handle_t *h)
{
    free(h);
}

int
qcow2_clean_timer_start(struct qcow2_state *s)
{
    uint64_t ms = (uint64_t)s->cache_clean_interval * 1000;

    if (ms == 0)
        return 0;
    if ((s->clean_timer = malloc(sizeof *s->clean_timer)) == NULL)
        return -1;
    uv_timer_init(ng_node_loop(s->node), s->clean_timer);  /* no failure */
    s->clean_timer->data = s;
    uv_timer_start(s->clean_timer, clean_timer_cb, ms, ms);
    uv_unref((uv_handle_t *)s->clean_timer);    /* keeps nothing alive */
    return 0;
}

void
qcow2_clean_timer_stop(struct qcow2_state *s)
{
    if (s->clean_timer == NULL)
        return;
    uv_timer_stop(s->clean_timer);
    uv_close((uv_handle_t *)s->clean_timer, clean_timer_closed);
    s->clean_timer = NULL;
}

unsigned char *
qcow2_cache_new(struct qcow2_state *s, struct qcow2_cache *c, uint64_t idx)
{
    unsigned char *buf = calloc(1, s->cluster_size);

    if (buf != NULL)
        cache_make_room(s, c);
    if (buf == NULL || cache_insert(c, idx, buf) < 0) {
        free(buf);
        return NULL;
    }
    c->slot[idx].dirty = true;
    return buf;
}

static uint64_t
table_offset(const struct qcow2_state *s, const struct qcow2_cache *c,
             uint64_t idx)
{
    if (c == &s->l2c)
        return be64toh(s->l1[idx]) & QCOW2_OFFSET_MASK;
    return idx < s->reft_entries
           ? be64toh(s->reft[idx]) & QCOW2_REFT_OFFSET_MASK : 0;
}

/* msg without the "'FILE': " it starts with (qcow2_check_l2() names the
 * file, as every open-time error does). */
static const char *
msg_without_file(const char *msg, const char *fname)
{
    size_t n = strlen(fname);

    if (msg[0] == '\'' && strncmp(msg + 1, fname, n) == 0 &&
        strncmp(msg + 1 + n, "': ", 3) == 0)
        return msg + n + 4;
    return msg;
}

/* A load failed (ret) or brought a bad table (err set): say so.  A bad
 * table at run time is metadata found wrong by I/O: the image is marked
 * corrupt (qcow2-corrupt.c), which logs it with the file and the
 * table's offset, and the node takes no more writes. */
static int
load_failed(struct qcow2_load *ld, int ret, struct ng_error *err)
{
    struct qcow2_state *s = ld->s;
    const char *fname = ng_node_filename(s->file);
    uint64_t off = table_offset(s, ld->c, ld->idx);
    bool bad = err->code != 0;

    if (!bad)
        ng_error_set(err, -ret, "'%s': cannot read the %s at %" PRIu64
                     ": %s", fname, ld->c->what, off, strerror(-ret));
    if (s->open_err != NULL)
        *s->open_err = *err;
    else if (bad)
        qcow2_signal_corruption(s, (int64_t)off, (int64_t)s->cluster_size,
                                "%s", msg_without_file(err->msg, fname));
    else
        ng_node_warn(s->node, "%s", err->msg);
    return bad ? -EIO : ret;
}

static bool
load_step_table(struct qcow2_seq *q)
{
    struct qcow2_load *ld = (struct qcow2_load *)q;
    struct qcow2_state *s = ld->s;
    struct qcow2_cache *c = ld->c;
    struct ng_error err = { 0 };
    struct qcow2_seq *w = ld->waiters;
    int ret = q->ret;

    if (ret == 0 && c == &s->l2c &&
        qcow2_check_l2(s, ld->idx, ld->buf, ng_node_filename(s->file),
                       &err) < 0)
        ret = load_failed(ld, -EINVAL, &err);
    else if (ret < 0)
        ret = load_failed(ld, ret, &err);
    c->slot[ld->idx].loading = false;
    for (struct qcow2_load **p = &c->loads; *p != NULL; p = &(*p)->next)
        if (*p == ld) {
            *p = ld->next;
            break;
        }
    if (ret == 0)
        cache_make_room(s, c);
    if (ret == 0 && cache_insert(c, ld->idx, ld->buf) < 0)
        ret = -ENOMEM;
    if (ret < 0)
        free(ld->buf);
    free(ld);
    while (w != NULL) {
        struct qcow2_seq *next = w->wait_next;

        w->wait_next = NULL;
        qcow2_seq_resume(w, ret);
        w = next;
    }
    return false;
}

bool
qcow2_cache_ready(struct qcow2_state *s, struct qcow2_cache *c,
                  uint64_t idx, struct qcow2_seq *q)
{
    struct qcow2_slot *sl = &c->slot[idx];
    struct qcow2_load *ld;
    uint64_t off;

    if (sl->data != NULL) {
        sl->lru = ++c->tick;
        return true;
    }
    if ((off = table_offset(s, c, idx)) == 0)
        return true;
    if (sl->loading) {
        for (ld = c->loads; ld->idx != idx; ld = ld->next)
            ;
        q->wait_next = ld->waiters;
        ld->waiters = q;
        return false;
    }
    if ((ld = calloc(1, sizeof *ld)) == NULL ||
        (ld->buf = malloc(s->cluster_size)) == NULL) {
        free(ld);
        q->wait_next = NULL;
        qcow2_seq_resume(q, -ENOMEM);   /* q's step is running: busy */
        return false;
    }
    ld->s = s;
    ld->c = c;
    ld->idx = idx;
    ld->waiters = q;
    q->wait_next = NULL;
    ld->next = c->loads;
    c->loads = ld;
    sl->loading = true;
    ld->seq.step = load_step_table;
    /* The first request that needs the table decides where its read
     * runs; later ones join it wherever it runs. */
    ld->seq.flags = q->flags;
    qcow2_seq_submit(&ld->seq, s->file, NG_OP_READ, off, s->cluster_size,
                     ld->buf);
    return false;
}

/* ---- Load at open ------------------------------------------------------- */

enum load_phase {
    LOAD_HEAD, LOAD_CLUSTER0, LOAD_PARSE, LOAD_L1, LOAD_REFT, LOAD_RB,
    LOAD_L2, LOAD_USED, LOAD_DONE,
};

struct qcow2_loader {
    struct qcow2_seq seq;
    struct qcow2_state *s;
    enum load_phase phase;
    unsigned char *buf;
    size_t len;
    uint64_t idx;
    bool parsed;                    /* the header is parsed in full */
};

static const char *
load_fname(const struct qcow2_state *s)
{
    return ng_node_filename(s->file);
}

static bool
load_fail(struct qcow2_loader *ld, int ret, const char *what)
{
    struct qcow2_state *s = ld->s;

    if (what != NULL)
        ng_error_set(s->open_err, -ret, "'%s': cannot read the %s: %s",
                     load_fname(s), what, strerror(-ret));
    free(ld->buf);
    free(ld);
    qcow2_free_state(s);
    ng_node_opened(s->node, -1);
    return false;
}

static int
alloc_tables(struct qcow2_state *s)
{
    s->l1 = calloc(s->l1_size ? s->l1_size : 1, 8);
    s->reft = calloc(s->reft_entries, 8);
    s->zero_buf = calloc(1, s->cluster_size);
    if (s->l1 == NULL || s->reft == NULL || s->zero_buf == NULL ||
        qcow2_cache_init(s, &s->l2c, s->l1_size, s->l2_cache_bytes,
                         "L2 table") < 0 ||
        qcow2_cache_init(s, &s->rbc, s->reft_entries, s->rc_cache_bytes,
                         "refcount block") < 0)
        return ng_error_set(s->open_err, ENOMEM, "out of memory");
    return 0;
}

static bool load_finish(struct qcow2_loader *ld);

/* Fill the caches, refcount blocks first, while they have room: an
 * image whose metadata fits never waits for a table.  true: a load is
 * in flight. */
static bool
load_preload(struct qcow2_loader *ld)
{
    struct qcow2_state *s = ld->s;

    if (ld->phase == LOAD_RB) {
        for (; ld->idx < s->reft_entries && s->rbc.n_res < s->rbc.cap;
             ld->idx++)
            if (s->reft[ld->idx] != 0 &&
                !qcow2_cache_ready(s, &s->rbc, ld->idx, &ld->seq)) {
                ld->idx++;
                return true;
            }
        ld->phase = LOAD_L2;
        ld->idx = 0;
    }
    for (; ld->idx < s->l1_size && s->l2c.n_res < s->l2c.cap; ld->idx++)
        if (s->l1[ld->idx] != 0 &&
            !qcow2_cache_ready(s, &s->l2c, ld->idx, &ld->seq)) {
            ld->idx++;
            return true;
        }
    ld->phase = LOAD_USED;
    ld->idx = s->reft_entries;
    return false;
}

/* Where allocation starts: after the last cluster with a refcount,
 * looking at the blocks from the end (loaded when not in). */
static bool
load_used_end(struct qcow2_loader *ld)
{
    struct qcow2_state *s = ld->s;

    while (ld->idx > 0) {
        uint64_t rbi = ld->idx - 1, end;

        if (s->reft[rbi] == 0) {
            ld->idx--;
            continue;
        }
        if (!qcow2_cache_ready(s, &s->rbc, rbi, &ld->seq))
            return true;            /* resumed here once it is in */
        if ((end = qcow2_rb_used_end(s, rbi)) != 0) {
            s->alloc_next = end;
            return load_finish(ld);
        }
        ld->idx--;
    }
    return load_finish(ld);
}

static bool
load_finish(struct qcow2_loader *ld)
{
    struct qcow2_state *s = ld->s;

    ld->phase = LOAD_DONE;
    if (qcow2_open_finish(s, s->open_err) < 0)
        return load_fail(ld, -EINVAL, NULL);
    if (s->alloc_next == 0) {
        ng_error_set(s->open_err, EINVAL, "'%s': the header cluster has "
                     "refcount 0", load_fname(s));
        return load_fail(ld, -EINVAL, NULL);
    }
    if (qcow2_clean_timer_start(s) < 0) {
        ng_error_set(s->open_err, ENOMEM, "out of memory");
        return load_fail(ld, -ENOMEM, NULL);
    }
    free(ld->buf);
    free(ld);
    s->open_err = NULL;
    ng_node_opened(s->node, 0);
    return false;
}

static bool
load_step(struct qcow2_seq *q)
{
    struct qcow2_loader *ld = (struct qcow2_loader *)q;
    struct qcow2_state *s = ld->s;
    static const char *const what[] = {
        [LOAD_HEAD] = "header", [LOAD_CLUSTER0] = "header", [LOAD_L1] =
        "L1 table", [LOAD_REFT] = "refcount table", [LOAD_RB] =
        "refcount block", [LOAD_L2] = "L2 table", [LOAD_USED] =
        "refcount block",
    };

    if (q->ret < 0)
        return load_fail(ld, q->ret, s->open_err->code ? NULL
                                                       : what[ld->phase]);
    switch (ld->phase) {
    case LOAD_HEAD:
        ld->len = s->file_size < 512 ? s->file_size : 512;
        if ((ld->buf = malloc(512)) == NULL) {
            ng_error_set(s->open_err, ENOMEM, "out of memory");
            return load_fail(ld, -ENOMEM, NULL);
        }
        ld->phase = LOAD_CLUSTER0;
        qcow2_seq_submit(q, s->file, NG_OP_READ, 0, ld->len, ld->buf);
        return true;
    case LOAD_CLUSTER0:
        if (qcow2_parse_header(s, ld->buf, ld->len, load_fname(s),
                               s->open_err) < 0)
            return load_fail(ld, -EINVAL, NULL);
        ld->phase = LOAD_PARSE;
        if (ld->len >= s->cluster_size || ld->len >= s->file_size) {
            ld->parsed = true;      /* all of it was there */
            return load_step(q);
        }
        free(ld->buf);
        ld->len = s->file_size < s->cluster_size ? s->file_size
                                                 : s->cluster_size;
        if ((ld->buf = malloc(ld->len)) == NULL) {
            ng_error_set(s->open_err, ENOMEM, "out of memory");
            return load_fail(ld, -ENOMEM, NULL);
        }
        qcow2_seq_submit(q, s->file, NG_OP_READ, 0, ld->len, ld->buf);
        return true;
    case LOAD_PARSE:
        if ((!ld->parsed &&
             qcow2_parse_header(s, ld->buf, ld->len, load_fname(s),
                                s->open_err) < 0) ||
            qcow2_cache_sizes(s, s->open_err) < 0 || alloc_tables(s) < 0)
            return load_fail(ld, -EINVAL, NULL);
        ld->phase = LOAD_L1;
        if (s->l1_size == 0)
            return load_step(q);
        qcow2_seq_submit(q, s->file, NG_OP_READ, s->l1_offset,
                         (uint64_t)s->l1_size * 8, s->l1);
        return true;
    case LOAD_L1:
        ld->phase = LOAD_REFT;
        qcow2_seq_submit(q, s->file, NG_OP_READ, s->reft_offset,
                         s->reft_entries * 8, s->reft);
        return true;
    case LOAD_REFT:
        if (qcow2_check_pointers(s, load_fname(s), s->open_err) < 0)
            return load_fail(ld, -EINVAL, NULL);
        ld->phase = LOAD_RB;
        ld->idx = 0;
        /* fall through */
    case LOAD_RB:
    case LOAD_L2:
        if (load_preload(ld))
            return true;
        /* fall through */
    case LOAD_USED:
        return load_used_end(ld);
    case LOAD_DONE:
        break;
    }
    return false;                   /* not reached */
}

void
qcow2_load(struct qcow2_state *s)
{
    struct qcow2_loader *ld = calloc(1, sizeof *ld);

    if (ld == NULL) {
        ng_error_set(s->open_err, ENOMEM, "out of memory");
        ng_node_opened(s->node, -1);
        return;
    }
    ld->s = s;
    ld->seq.step = load_step;
    qcow2_seq_run(&ld->seq);
}

/* ---- Write-back --------------------------------------------------------- */

enum wb_kind {
    WB_RB, WB_REFT, WB_HEADER, WB_L2, WB_L1, WB_FLUSH,
    WB_DFLUSH,                      /* the data file's flush */
    WB_BFLUSH,                      /* the backing node's flush */
};

struct wb_item {
    enum wb_kind kind;
    uint64_t idx;                   /* table index (RB, L2) */
    uint64_t off, len;
    unsigned char *copy;
};

struct wb_waiter {
    void (*cb)(void *opaque, int ret);
    void *opaque;
    bool background;                /* no client waits for it */
    struct wb_waiter *next;
};

struct qcow2_wb {
    struct qcow2_seq seq;
    struct qcow2_state *s;
    bool running;
    bool kicked;                    /* a round is wanted with no waiter */
    bool applying;                  /* the writes are done: decrements */
    size_t u_at;                    /* decrement being applied */
    uint64_t u_cluster;             /* its next cluster */
    struct wb_waiter *round, *next_round;   /* waiters, in order */
    struct wb_item *items;
    size_t n_items, cap_items, at;
    struct qcow2_unref *unrefs;     /* taken at the round's start */
    size_t n_unrefs;
    int ret;
};

static bool
cache_dirty(const struct qcow2_cache *c)
{
    for (uint64_t i = 0; i < c->n_res; i++)
        if (c->slot[c->res[i]].dirty)
            return true;
    return false;
}

bool
qcow2_wb_dirty(const struct qcow2_state *s)
{
    return s->l1_dirty || s->reft_dirty || s->header_dirty ||
           s->n_unrefs > 0 || cache_dirty(&s->l2c) || cache_dirty(&s->rbc);
}

int
qcow2_wb_init(struct qcow2_state *s)
{
    if ((s->wb = calloc(1, sizeof *s->wb)) == NULL)
        return -1;
    s->wb->s = s;
    return 0;
}

static void
wb_items_clear(struct qcow2_wb *wb)
{
    for (size_t i = 0; i < wb->n_items; i++)
        free(wb->items[i].copy);
    wb->n_items = wb->at = 0;
    free(wb->unrefs);
    wb->unrefs = NULL;
    wb->n_unrefs = 0;
}

void
qcow2_wb_free(struct qcow2_state *s)
{
    if (s->wb == NULL)
        return;
    wb_items_clear(s->wb);
    free(s->wb->items);
    free(s->wb);
    s->wb = NULL;
}

static int
wb_add(struct qcow2_wb *wb, enum wb_kind kind, uint64_t idx, uint64_t off,
       const void *src, uint64_t len)
{
    struct wb_item *it;

    if (wb->n_items == wb->cap_items) {
        size_t cap = wb->cap_items ? wb->cap_items * 2 : 16;
        void *p = realloc(wb->items, cap * sizeof *wb->items);

        if (p == NULL)
            return -ENOMEM;
        wb->items = p;
        wb->cap_items = cap;
    }
    it = &wb->items[wb->n_items];
    *it = (struct wb_item){ .kind = kind, .idx = idx, .off = off,
                            .len = len };
    if (src != NULL) {
        if ((it->copy = malloc(len)) == NULL)
            return -ENOMEM;
        memcpy(it->copy, src, len);
    }
    wb->n_items++;
    return 0;
}

static void wb_start(struct qcow2_wb *wb);

/* The cached table an item writes, or NULL. */
static struct qcow2_slot *
wb_slot(struct qcow2_wb *wb, const struct wb_item *it)
{
    if (it->kind == WB_RB)
        return &wb->s->rbc.slot[it->idx];
    if (it->kind == WB_L2)
        return &wb->s->l2c.slot[it->idx];
    return NULL;
}

/* A flush of the image, after one of the data file when there is one
 * (data before the tables that point to it). */
static int
wb_add_flush(struct qcow2_wb *wb)
{
    int r = 0;

    if (wb->s->data != NULL)
        r = wb_add(wb, WB_DFLUSH, 0, 0, NULL, 0);
    return r < 0 ? r : wb_add(wb, WB_FLUSH, 0, 0, NULL, 0);
}

/* The header's refcount_table_offset and refcount_table_clusters, and
 * a flush. */
static int
wb_add_header_reft(struct qcow2_wb *wb)
{
    const struct qcow2_state *s = wb->s;
    unsigned char h[12];
    uint64_t off = htobe64(s->reft_offset);
    uint32_t n = htobe32((uint32_t)(s->reft_entries * 8 / s->cluster_size));
    int r;

    memcpy(h, &off, 8);
    memcpy(h + 8, &n, 4);
    r = wb_add(wb, WB_HEADER, 0, 48, h, sizeof h);
    return r < 0 ? r : wb_add_flush(wb);
}

/* The whole header (backing name, feature bits, refcount table:
 * qcow2-backing.c), after a flush of the backing node when the header
 * names a new one: the base a block-commit wrote to is on disk before
 * the header names it.  Then a flush. */
static int
wb_add_header(struct qcow2_wb *wb)
{
    unsigned char *h = NULL;
    size_t len = 0;
    int r = 0;

    if (wb->s->backing_dirty && wb->s->backing != NULL)
        r = wb_add(wb, WB_BFLUSH, 0, 0, NULL, 0);
    if (r == 0)
        r = qcow2_header_build(wb->s, &h, &len);
    if (r == 0)
        r = wb_add(wb, WB_HEADER, 0, 0, h, len);
    free(h);
    return r < 0 ? r : wb_add_flush(wb);
}

/* Copy every dirty table, in write order, with the flushes between. */
static int
wb_snapshot(struct qcow2_wb *wb)
{
    struct qcow2_state *s = wb->s;
    size_t before;
    bool flushed = false;
    int r = 0;

    for (uint64_t k = 0; k < s->rbc.n_res && r == 0; k++) {
        uint64_t i = s->rbc.res[k];

        if (s->rbc.slot[i].dirty)
            r = wb_add(wb, WB_RB, i, be64toh(s->reft[i]) &
                       QCOW2_REFT_OFFSET_MASK, s->rbc.slot[i].data,
                       s->cluster_size);
    }
    if (r == 0 && wb->n_items > 0) {
        r = wb_add_flush(wb);
        flushed = true;
    }
    if (r == 0 && s->reft_dirty) {
        r = wb_add(wb, WB_REFT, 0, s->reft_offset, s->reft,
                   s->reft_entries * 8);
        if (r == 0)
            r = wb_add_flush(wb);
        flushed = true;
    }
    /* A refcount table that moved counts the clusters of new blocks:
     * the header names it before L2 entries use those clusters.  Its two
     * fields only: the rest of a header waits for the tables (below). */
    if (r == 0 && s->header_dirty)
        r = wb_add_header_reft(wb);
    before = wb->n_items;
    for (uint64_t k = 0; k < s->l2c.n_res && r == 0; k++) {
        uint64_t i = s->l2c.res[k];

        if (!s->l2c.slot[i].dirty)
            continue;
        if (!flushed) {             /* the data the entries point to */
            r = wb_add_flush(wb);
            flushed = true;
        }
        if (r == 0)
            r = wb_add(wb, WB_L2, i, be64toh(s->l1[i]) & QCOW2_OFFSET_MASK,
                       s->l2c.slot[i].data, s->cluster_size);
    }
    if (r == 0 && s->l1_dirty) {
        if (wb->n_items > before)
            r = wb_add_flush(wb);
        if (r == 0)
            r = wb_add(wb, WB_L1, 0, s->l1_offset, s->l1,
                       (uint64_t)s->l1_size * 8);
    }
    if (r == 0)
        r = wb_add_flush(wb);
    /* The whole header last: a new backing name (block-stream drops it,
     * block-commit names the base) must not be in the file before the
     * tables that hold the data the old backing had. */
    if (r == 0 && s->header_dirty && s->hdr_raw != NULL)
        r = wb_add_header(wb);
    if (r < 0)
        return r;
    /* Only now, all or nothing: the tables are clean, and stay in memory
     * until their copies are on disk. */
    for (size_t i = 0; i < wb->n_items; i++) {
        struct qcow2_slot *sl = wb_slot(wb, &wb->items[i]);

        if (sl != NULL) {
            sl->dirty = false;
            sl->writing = true;
        }
    }
    s->reft_dirty = s->l1_dirty = s->header_dirty = false;
    s->backing_dirty = false;
    wb->unrefs = s->unrefs;
    wb->n_unrefs = s->n_unrefs;
    s->unrefs = NULL;
    s->n_unrefs = s->cap_unrefs = 0;
    return 0;
}

/* What the round's writes and flushes take over (NG_REQ_INHERITED):
 * background when no client waits for the round, as a job's bulk copy
 * whose writes filled the cache, a header rewrite, a job's flush. */
static uint32_t
wb_round_flags(const struct qcow2_wb *wb)
{
    for (const struct wb_waiter *w = wb->round; w != NULL; w = w->next)
        if (!w->background)
            return 0;
    return NG_REQ_BACKGROUND;
}

/* The round is over: its tables may go; after a failure, what it took
 * is dirty again. */
static void
wb_release(struct qcow2_wb *wb, bool failed)
{
    struct qcow2_state *s = wb->s;

    for (size_t i = 0; i < wb->n_items; i++) {
        const struct wb_item *it = &wb->items[i];
        struct qcow2_slot *sl = wb_slot(wb, it);

        if (sl != NULL) {
            sl->writing = false;
            sl->dirty |= failed;
        }
        if (!failed)
            continue;
        if (it->kind == WB_REFT)
            s->reft_dirty = true;
        else if (it->kind == WB_HEADER)
            s->header_dirty = true;
        else if (it->kind == WB_BFLUSH)
            s->backing_dirty = true;
        else if (it->kind == WB_L1)
            s->l1_dirty = true;
    }
    for (size_t i = 0; failed && i < wb->n_unrefs; i++)
        qcow2_unref(s, wb->unrefs[i].host, wb->unrefs[i].len);
}

/* Apply the round's decrements, loading the blocks that are not in;
 * true while a load is in flight (wb_step resumes). */
static bool
wb_apply_unrefs(struct qcow2_wb *wb)
{
    struct qcow2_state *s = wb->s;

    if (!wb->applying) {
        wb->applying = true;
        wb->u_at = 0;
        wb->u_cluster = wb->n_unrefs > 0
                        ? wb->unrefs[0].host >> s->cluster_bits : 0;
    } else if (wb->seq.ret < 0) {
        /* A block we cannot read: its clusters stay counted (leak). */
        wb->u_cluster++;
    }
    for (; wb->u_at < wb->n_unrefs; wb->u_at++) {
        const struct qcow2_unref *u = &wb->unrefs[wb->u_at];
        uint64_t last = (u->host + u->len - 1) >> s->cluster_bits;

        if (wb->u_cluster < u->host >> s->cluster_bits)
            wb->u_cluster = u->host >> s->cluster_bits;
        for (; wb->u_cluster <= last; wb->u_cluster++) {
            uint64_t rbi = wb->u_cluster / s->rb_entries;

            if (rbi >= s->reft_entries)
                continue;
            if (!qcow2_cache_ready(s, &s->rbc, rbi, &wb->seq))
                return true;
            qcow2_refcount_dec(s, wb->u_cluster);
        }
    }
    wb->applying = false;
    return false;
}

bool
qcow2_wb_running(const struct qcow2_state *s)
{
    return s->wb != NULL && s->wb->running;
}

void
qcow2_wb_kick(struct qcow2_state *s)
{
    s->wb->kicked = true;
    if (!s->wb->running)
        wb_start(s->wb);
}

/* Where a flush item goes (a backing taken away since the snapshot:
 * the image itself, which does no harm). */
static struct ng_node *
wb_flush_target(const struct qcow2_state *s, enum wb_kind kind)
{
    if (kind == WB_DFLUSH)
        return s->data;
    if (kind == WB_BFLUSH && s->backing != NULL)
        return s->backing;
    return s->file;
}

static bool
wb_step(struct qcow2_seq *q)
{
    struct qcow2_wb *wb = (struct qcow2_wb *)q;
    struct qcow2_state *s = wb->s;
    struct wb_waiter *w;
    bool start;
    int ret;

    if (wb->applying) {
        if (wb_apply_unrefs(wb))
            return true;
        goto done;
    }
    if (q->ret < 0 && wb->ret == 0)
        wb->ret = q->ret;
    if (wb->ret == 0 && wb->at < wb->n_items) {
        const struct wb_item *it = &wb->items[wb->at++];

        if (it->kind == WB_FLUSH || it->kind == WB_DFLUSH ||
            it->kind == WB_BFLUSH)
            qcow2_seq_submit(q, wb_flush_target(s, it->kind), NG_OP_FLUSH,
                             0, 0, NULL);
        else
            qcow2_seq_submit(q, s->file, NG_OP_WRITE, it->off, it->len,
                             it->copy);
        return true;
    }
    wb_release(wb, wb->ret < 0);
    if (wb->ret == 0 && wb_apply_unrefs(wb))
        return true;
done:
    wb_items_clear(wb);
    w = wb->round;
    ret = wb->ret;
    wb->round = NULL;
    /* Tables written may go now.  Still marked running: a cache that
     * stays full kicks, which only asks for the next round (started
     * here, it would be marked not running below with its write out). */
    qcow2_cache_trim(s, &s->l2c);
    qcow2_cache_trim(s, &s->rbc);
    /* This round's waiters, then the next round.  A waiter (close) may
     * free everything unless a round is running: one due next is marked
     * running before they run, so that a close queues behind it instead
     * (close_flush).  Starting it first instead would let it end inline
     * and its close free wb under this frame. */
    start = wb->next_round != NULL || (wb->kicked && qcow2_wb_dirty(s));
    wb->running = start;
    wb->kicked = false;
    while (w != NULL) {
        struct wb_waiter *next = w->next;

        w->cb(w->opaque, ret);
        free(w);
        w = next;
    }
    if (start)
        wb_start(wb);
    return false;
}

static void
wb_start(struct qcow2_wb *wb)
{
    int r;

    wb->running = true;
    wb->kicked = false;
    wb->applying = false;
    wb->round = wb->next_round;
    wb->next_round = NULL;
    wb->ret = 0;
    wb->seq.ret = 0;
    wb->seq.step = wb_step;
    wb->seq.flags = wb_round_flags(wb);
    if ((r = wb_snapshot(wb)) < 0) {
        wb_items_clear(wb);
        wb->ret = r;
    }
    qcow2_seq_run(&wb->seq);
}

void
qcow2_wb_flush(struct qcow2_state *s, uint32_t flags,
               void (*cb)(void *opaque, int ret), void *opaque)
{
    struct qcow2_wb *wb = s->wb;
    struct wb_waiter *w = malloc(sizeof *w), **p;

    if (w == NULL) {
        cb(opaque, -ENOMEM);
        return;
    }
    w->cb = cb;
    w->opaque = opaque;
    w->background = (flags & NG_REQ_BACKGROUND) != 0;
    w->next = NULL;
    /* A client waits behind the round under way: the rest of it goes as
     * the client's own I/O would (the loop's shortcut, if any). */
    if (!w->background)
        wb->seq.flags &= ~NG_REQ_BACKGROUND;
    /* In order: a header update's waiter runs before a later close's,
     * which may free everything. */
    for (p = &wb->next_round; *p != NULL; p = &(*p)->next)
        ;
    *p = w;
    if (!wb->running)
        wb_start(wb);
}
