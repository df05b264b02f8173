/* filters/quorum.c: "quorum", QEMU's quorum driver: one disk kept on
 * several children (replicas), outvoting a child that fails or returns
 * wrong data.
 *
 * Writes, write-zeroes, flushes and cache requests go to every child at
 * once and succeed when at least vote-threshold children succeed (then
 * the first error of the others is forgotten; otherwise it is the
 * answer); a fast write-zeroes only when every child succeeds, since a
 * client answered success will not write the zeroes itself.  A trim
 * goes to every child as a write-zeroes that may deallocate: a trim
 * proper would leave the replicas' contents undefined, outvoting each
 * other; zeroes keep them equal.  Reads:
 *
 * - read-pattern "quorum": every child reads into its own buffer; the
 *   successful reads are grouped by content (memcmp: there are few
 *   children and the data are in memory anyway) and the largest group
 *   wins if it has at least vote-threshold members, else the read fails
 *   with EIO.  The winning data are copied to the caller.  A child that
 *   failed or lost the vote is reported with a warning in the daemon's
 *   log naming it and the range, and with QEMU's QUORUM_REPORT_BAD event
 *   (through the graph's event hook: the daemon sends it to its control
 *   clients; QUORUM_FAILURE when too few agree); with
 *   rewrite-corrupted the losers are written with the winning data
 *   before the read completes (a failed rewrite is reported, and does
 *   not fail the read, whose data are right).
 * - read-pattern "fifo": the first child reads into the caller's buffer;
 *   if it fails, the next one, and so on: the first success wins.
 *
 * Block status asks every child and answers what all of them agree on
 * (filters/agree.h): one replica's holes say nothing of the others'
 * data.  The node has the children's size, which must be
 * equal (refused at open otherwise), the write caps all of them have,
 * and trim when all of them can write zeroes.  Each child's own transfer limits are
 * kept by the core at that child's choke point.
 *
 * A request's context holds one sub-request per child, so a quorum has
 * at most QUORUM_MAX_CHILDREN of them; a quorum read allocates one buffer
 * for all children's copies.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "filters/agree.h"
#include "filters/filters.h"

#define QUORUM_MAX_CHILDREN 8

/* The caps passed on when every child has them. */
#define QUORUM_CAPS (NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_FUA | NG_CAP_ZERO | \
                     NG_CAP_FAST_ZERO | NG_CAP_CACHE | NG_CAP_MULTI_CONN | \
                     NG_CAP_EXTENTS)

enum quorum_read_pattern { QUORUM_READ_QUORUM, QUORUM_READ_FIFO };

static const char *const quorum_read_patterns[] = { "quorum", "fifo", NULL };

struct quorum_state {
    struct ng_children children;    /* option "children" */
    int64_t threshold;              /* option "vote-threshold" */
    int read_pattern;               /* option "read-pattern" */
    bool rewrite;                   /* option "rewrite-corrupted" */
    bool blkverify;                 /* option "blkverify" */
    /* QEMU's child names, "children.N": N for each child, in the order
     * of children.nodes, and the N the next added child gets (as QEMU:
     * one more than the last child's). */
    unsigned labels[QUORUM_MAX_CHILDREN];
    unsigned next_label;
};

struct quorum_ctx;

struct quorum_sub {
    struct ng_req req;
    struct quorum_ctx *c;
    int ret;
};

/* One request in flight, the request's context (ng_req_ctx()). */
struct quorum_ctx {
    struct ng_node *node;
    struct ng_req *req;
    unsigned pending;               /* sub-requests not yet done */
    unsigned next;                  /* fifo: the child to try next */
    unsigned char *bufs;            /* quorum reads: a copy per child */
    struct quorum_sub subs[QUORUM_MAX_CHILDREN];
};

static const struct ng_opt_desc quorum_opts[] = {
    NG_OPT_CHILDREN("children", struct quorum_state, children,
                    NG_ROLE_CHILDREN, true,
                    "the replicas, 2 to 8 nodes of the same size"),
    NG_OPT_INT("vote-threshold", struct quorum_state, threshold, NULL,
               "children that must agree on a read, or succeed in a write"),
    NG_OPT_ENUM("read-pattern", struct quorum_state, read_pattern, "quorum",
                quorum_read_patterns,
                "quorum: read all children and vote; fifo: the first that "
                "succeeds"),
    NG_OPT_BOOL("rewrite-corrupted", struct quorum_state, rewrite, "false",
                "write the winning data over children that lost a vote"),
    NG_OPT_BOOL("blkverify", struct quorum_state, blkverify, "false",
                "two children, both must agree: a mismatch aborts the "
                "daemon (QEMU's blkverify mode of quorum)"),
    NG_OPT_END,
};

/* ---- Open and facts ------------------------------------------------------ */

static int
quorum_check_children(const struct quorum_state *s, struct ng_error *err)
{
    const struct ng_children *ch = &s->children;

    if (ch->n < 2 || ch->n > QUORUM_MAX_CHILDREN)
        return ng_error_set(err, EINVAL, "'children' must list 2 to %d "
                            "nodes, not %zu", QUORUM_MAX_CHILDREN, ch->n);
    for (size_t i = 0; i < ch->n; i++) {
        for (size_t j = 0; j < i; j++)
            if (ch->nodes[i] == ch->nodes[j])
                return ng_error_set(err, EINVAL, "node '%s' is listed "
                                    "twice in 'children'",
                                    ch->nodes[i]->name);
        if (ng_node_length(ch->nodes[i]) != ng_node_length(ch->nodes[0]))
            return ng_error_set(err, EINVAL, "children differ in size: "
                                "'%s' has %" PRId64 " bytes, '%s' %" PRId64,
                                ch->nodes[0]->name,
                                ng_node_length(ch->nodes[0]),
                                ch->nodes[i]->name,
                                ng_node_length(ch->nodes[i]));
    }
    return 0;
}

/* QEMU's rules for blkverify mode: exactly two children that must both
 * agree, and nothing that would hide a mismatch. */
static int
quorum_check_blkverify(const struct quorum_state *s, struct ng_error *err)
{
    if (!s->blkverify)
        return 0;
    if (s->children.n != 2 || s->threshold != 2)
        return ng_error_set(err, EINVAL, "'blkverify' needs exactly two "
                            "children and vote-threshold 2");
    if (s->rewrite)
        return ng_error_set(err, EINVAL, "'rewrite-corrupted' cannot be "
                            "used with 'blkverify'");
    if (s->read_pattern != QUORUM_READ_QUORUM)
        return ng_error_set(err, EINVAL, "'blkverify' needs read-pattern "
                            "'quorum'");
    return 0;
}

static int
quorum_open(struct ng_node *node, struct ng_error *err)
{
    struct quorum_state *s = ng_node_state(node);

    if (quorum_check_children(s, err) == -1)
        return -1;
    for (size_t i = 0; i < s->children.n; i++)
        s->labels[i] = (unsigned)i;
    s->next_label = (unsigned)s->children.n;
    if (s->threshold < 1 || (uint64_t)s->threshold > s->children.n)
        return ng_error_set(err, EINVAL, "'vote-threshold' must be 1 to the "
                            "number of children (%zu), not %" PRId64,
                            s->children.n, s->threshold);
    if (s->rewrite && s->read_pattern != QUORUM_READ_QUORUM)
        return ng_error_set(err, EINVAL, "'rewrite-corrupted' needs "
                            "read-pattern 'quorum'");
    return quorum_check_blkverify(s, err);
}

static int
quorum_refresh(struct ng_node *node, struct ng_node_facts *facts,
               struct ng_error *err)
{
    const struct quorum_state *s = ng_node_state(node);
    uint32_t caps = QUORUM_CAPS;

    if (quorum_check_children(s, err) == -1)
        return -1;
    for (size_t i = 0; i < s->children.n; i++)
        caps &= ng_node_caps(s->children.nodes[i]);
    facts->size = ng_node_length(s->children.nodes[0]);
    facts->caps = caps & NG_CAP_ZERO ? caps | NG_CAP_TRIM : caps;
    return 0;
}

/* ---- x-blockdev-change ---------------------------------------------------- */

/* As QEMU's quorum_add_child, plus what our open checks: room, not a
 * child already, the same size. */
static int
quorum_add_child(struct ng_node *node, struct ng_node *child, bool check_only,
                 struct ng_error *err)
{
    struct quorum_state *s = ng_node_state(node);
    struct ng_children *ch = &s->children;
    struct ng_node **nodes;

    if (ch->n == QUORUM_MAX_CHILDREN)
        return ng_error_set(err, EINVAL, "quorum '%s' has %d children "
                            "already, the most it can have", node->name,
                            QUORUM_MAX_CHILDREN);
    for (size_t i = 0; i < ch->n; i++)
        if (ch->nodes[i] == child)
            return ng_error_set(err, EEXIST, "node '%s' is a child of '%s' "
                                "already", child->name, node->name);
    if (ng_node_length(child) != ng_node_length(ch->nodes[0]))
        return ng_error_set(err, EINVAL, "node '%s' has %" PRId64 " bytes, "
                            "the children of '%s' %" PRId64, child->name,
                            ng_node_length(child), node->name,
                            ng_node_length(ch->nodes[0]));
    if (check_only)
        return 0;
    nodes = realloc(ch->nodes, (ch->n + 1) * sizeof *nodes);
    if (nodes == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    ch->nodes = nodes;
    ch->nodes[ch->n] = child;
    s->labels[ch->n++] = s->next_label++;
    return 0;
}

/* Which child `name` is: "children.N" (QEMU's name) or a node-name. */
static int
quorum_find_child(const struct quorum_state *s, const char *name)
{
    const char *prefix = "children.";
    size_t plen = strlen(prefix);

    for (size_t i = 0; i < s->children.n; i++) {
        char label[32];

        snprintf(label, sizeof label, "%s%u", prefix, s->labels[i]);
        if (strcmp(name, label) == 0 ||
            (strncmp(name, prefix, plen) != 0 &&
             strcmp(name, s->children.nodes[i]->name) == 0))
            return (int)i;
    }
    return -1;
}

/* As QEMU's quorum_del_child: never below the vote threshold (nor, ours,
 * below the 2 children a quorum needs). */
static struct ng_node *
quorum_del_child(struct ng_node *node, const char *child, bool check_only,
                 struct ng_error *err)
{
    struct quorum_state *s = ng_node_state(node);
    struct ng_children *ch = &s->children;
    int i = quorum_find_child(s, child);
    struct ng_node *gone;

    if (i < 0)
        return ng_error_set(err, ENOENT, "node '%s' has no child '%s'",
                            node->name, child), NULL;
    if ((int64_t)ch->n <= s->threshold || ch->n <= 2)
        return ng_error_set(err, EINVAL, "cannot remove '%s' from '%s': the "
                            "number of children cannot be lower than the "
                            "vote threshold %" PRId64 " or 2", child,
                            node->name, s->threshold), NULL;
    gone = ch->nodes[i];
    if (check_only)
        return gone;
    /* As QEMU: the newest child's number is given out again. */
    if (s->labels[i] == s->next_label - 1)
        s->next_label--;
    memmove(&ch->nodes[i], &ch->nodes[i + 1],
            (ch->n - (size_t)i - 1) * sizeof ch->nodes[0]);
    memmove(&s->labels[i], &s->labels[i + 1],
            (ch->n - (size_t)i - 1) * sizeof s->labels[0]);
    ch->n--;
    return gone;
}

/* QEMU's name of a child, "children.N", for queries and remove-filter's
 * keep. */
static void
quorum_child_label(struct ng_node *node, const struct ng_edge *e, char *buf,
                   size_t size)
{
    const struct quorum_state *s = ng_node_state(node);

    for (size_t i = 0; i < s->children.n; i++) {
        if (s->children.nodes[i] == e->child) {
            snprintf(buf, size, "children.%u", s->labels[i]);
            return;
        }
    }
    snprintf(buf, size, "%s", ng_role_name(e->role));
}

/* ---- Sub-requests -------------------------------------------------------- */

/* The request's range in QEMU's 512-byte sectors, for the events. */
static void
quorum_sectors(const struct ng_req *req, int64_t *first, int64_t *count)
{
    uint64_t end = (req->offset + req->length + 511) / 512;

    *first = (int64_t)(req->offset / 512);
    *count = (int64_t)end - *first;
}

/* Child i failed the request (ret < 0) or lost the vote (ret == 0): a
 * line in the log and QEMU's QUORUM_REPORT_BAD event. */
static void
quorum_report(struct quorum_ctx *c, unsigned i, int ret)
{
    const struct quorum_state *s = ng_node_state(c->node);
    const struct ng_req *req = c->req;
    const char *child = s->children.nodes[i]->name;
    const char *what = ret < 0 ? strerror(-ret)
                               : "contents differ from the majority";
    struct ng_event_field f[5] = {
        { .key = "type", .kind = NG_EVENT_STR,
          .str = req->op == NG_OP_READ ? "read"
                 : req->op == NG_OP_FLUSH ? "flush" : "write" },
        { .key = "node-name", .kind = NG_EVENT_STR, .str = child },
        { .key = "sector-num", .kind = NG_EVENT_INT },
        { .key = "sectors-count", .kind = NG_EVENT_INT },
        { .key = "error", .kind = NG_EVENT_STR, .str = what },
    };

    ng_node_warn(c->node, "quorum: child '%s' %s offset=%" PRIu64
                 " length=%" PRIu64 ": %s", child, ng_op_name(req->op),
                 req->offset, req->length, what);
    quorum_sectors(req, &f[2].num, &f[3].num);
    /* As QEMU: "error" only when the child failed. */
    ng_graph_emit(c->node->graph, "QUORUM_REPORT_BAD", f, ret < 0 ? 5 : 4);
}

/* Too few children agree on a read: QEMU's QUORUM_FAILURE. */
static void
quorum_report_failure(struct quorum_ctx *c)
{
    const struct quorum_state *s = ng_node_state(c->node);
    const struct ng_req *req = c->req;
    struct ng_event_field f[3] = {
        { .key = "reference", .kind = NG_EVENT_STR, .str = c->node->name },
        { .key = "sector-num", .kind = NG_EVENT_INT },
        { .key = "sectors-count", .kind = NG_EVENT_INT },
    };

    ng_node_warn(c->node, "quorum: read offset=%" PRIu64 " length=%"
                 PRIu64 ": no %" PRId64 " children agree", req->offset,
                 req->length, s->threshold);
    quorum_sectors(req, &f[1].num, &f[2].num);
    ng_graph_emit(c->node->graph, "QUORUM_FAILURE", f, 3);
}

/* Child i's copy of the request; its data from `buf`, or the caller's
 * view when NULL. */
static struct ng_req *
quorum_sub_init(struct quorum_ctx *c, unsigned i, enum ng_op op,
                unsigned char *buf, void (*done)(struct ng_req *, int))
{
    struct ng_req *req = c->req, *sub = &c->subs[i].req;

    ng_req_init(sub, op, req->offset, req->length,
                op == req->op ? req->flags : 0);
    if (buf != NULL)
        ng_req_set_buf(sub, buf);
    else
        sub->iov = req->iov;
    sub->done = done;
    sub->opaque = &c->subs[i];
    c->subs[i].c = c;
    c->subs[i].ret = 0;
    return sub;
}

static void
quorum_finish(struct quorum_ctx *c, int ret)
{
    free(c->bufs);
    ng_req_complete(c->req, ret);
}

/* ---- Writes, write-zeroes, flushes ---------------------------------------- */

static void
quorum_write_done(struct ng_req *sub, int ret)
{
    struct quorum_sub *qs = sub->opaque;
    struct quorum_ctx *c = qs->c;
    const struct quorum_state *s = ng_node_state(c->node);
    int64_t ok = 0;
    int first_err = 0;

    /* Every child, for a fast zero: see the top of the file. */
    int64_t need = c->req->flags & NG_REQ_FAST_ZERO
                   ? (int64_t)s->children.n : s->threshold;

    qs->ret = ret;
    if (--c->pending > 0)
        return;
    for (unsigned i = 0; i < s->children.n; i++) {
        if (c->subs[i].ret == 0) {
            ok++;
            continue;
        }
        if (first_err == 0)
            first_err = c->subs[i].ret;
        quorum_report(c, i, c->subs[i].ret);
    }
    quorum_finish(c, ok >= need ? 0 : first_err);
}

static void
quorum_write(struct quorum_ctx *c)
{
    const struct quorum_state *s = ng_node_state(c->node);
    unsigned n = (unsigned)s->children.n;
    struct ng_req *req = c->req;
    bool trim = req->op == NG_OP_TRIM;

    c->pending = n;             /* before any may complete inline */
    for (unsigned i = 0; i < n; i++) {
        struct ng_req *sub = quorum_sub_init(c, i, trim ? NG_OP_WRITE_ZEROES
                                                        : req->op,
                                             NULL, quorum_write_done);

        /* As zeroes that may deallocate: see the top of the file. */
        if (trim)
            sub->flags = (req->flags & NG_REQ_FUA) | NG_REQ_MAY_TRIM;
    }
    for (unsigned i = 0; i < n; i++)
        ng_node_submit(s->children.nodes[i], &c->subs[i].req);
}

/* ---- Block status ---------------------------------------------------------- */

/* What every child agrees on (filters/agree.h); a child that fails
 * leaves its data unknown, so then all of it is data. */
static void
quorum_bs_done(struct ng_req *sub, int ret)
{
    struct quorum_sub *qs = sub->opaque;
    struct quorum_ctx *c = qs->c;
    const struct quorum_state *s = ng_node_state(c->node);
    struct ng_req *subs[QUORUM_MAX_CHILDREN];
    bool failed = false;

    qs->ret = ret;
    if (--c->pending > 0)
        return;
    for (unsigned i = 0; i < s->children.n; i++) {
        subs[i] = &c->subs[i].req;
        failed |= c->subs[i].ret != 0;
    }
    c->req->nr_extents = 0;
    if (failed)
        ng_req_add_extent(c->req, 1, c->req->length, 0);
    else
        ng_extents_agree(c->req, subs, (unsigned)s->children.n);
    quorum_finish(c, 0);
}

static void
quorum_block_status(struct quorum_ctx *c)
{
    const struct quorum_state *s = ng_node_state(c->node);
    unsigned n = (unsigned)s->children.n;
    uint32_t max = c->req->max_extents;
    struct ng_extent *e = calloc((size_t)n * max, sizeof *e);

    if (e == NULL) {
        quorum_finish(c, -ENOMEM);
        return;
    }
    c->bufs = (unsigned char *)e;       /* freed by quorum_finish */
    c->pending = n;             /* before any may complete inline */
    for (unsigned i = 0; i < n; i++) {
        struct ng_req *sub = quorum_sub_init(c, i, NG_OP_BLOCK_STATUS, NULL,
                                             quorum_bs_done);

        sub->extents = e + (size_t)i * max;
        sub->max_extents = max;
    }
    for (unsigned i = 0; i < n; i++)
        ng_node_submit(s->children.nodes[i], &c->subs[i].req);
}

/* ---- Reads: fifo ---------------------------------------------------------- */

static void quorum_fifo_next(struct quorum_ctx *c);

static void
quorum_fifo_done(struct ng_req *sub, int ret)
{
    struct quorum_sub *qs = sub->opaque;
    struct quorum_ctx *c = qs->c;

    if (ret == 0) {
        quorum_finish(c, 0);
        return;
    }
    qs->ret = ret;
    quorum_report(c, c->next - 1, ret);
    quorum_fifo_next(c);
}

static void
quorum_fifo_next(struct quorum_ctx *c)
{
    const struct quorum_state *s = ng_node_state(c->node);
    unsigned i = c->next++;

    if (i == s->children.n) {
        quorum_finish(c, c->subs[i - 1].ret);
        return;
    }
    ng_node_submit(s->children.nodes[i],
                   quorum_sub_init(c, i, NG_OP_READ, NULL, quorum_fifo_done));
}

/* ---- Reads: vote ---------------------------------------------------------- */

static unsigned char *
quorum_buf(struct quorum_ctx *c, unsigned i)
{
    return c->bufs + (size_t)i * c->req->length;
}

/* The first child of the largest group of successful reads with the same
 * data, and the group's size in *votes (0 when every read failed). */
static unsigned
quorum_winner(struct quorum_ctx *c, unsigned n, int64_t *votes)
{
    size_t len = c->req->length;
    unsigned best = 0;

    *votes = 0;
    for (unsigned i = 0; i < n; i++) {
        int64_t v = 0;

        if (c->subs[i].ret < 0)
            continue;
        for (unsigned j = 0; j < n; j++)
            v += c->subs[j].ret == 0 &&
                 memcmp(quorum_buf(c, i), quorum_buf(c, j), len) == 0;
        if (v > *votes) {
            *votes = v;
            best = i;
        }
    }
    return best;
}

static void
quorum_rewrite_done(struct ng_req *sub, int ret)
{
    struct quorum_sub *qs = sub->opaque;
    struct quorum_ctx *c = qs->c;

    /* Only a log line: QEMU reports no event for a failed rewrite. */
    if (ret < 0) {
        const struct quorum_state *s = ng_node_state(c->node);

        ng_node_warn(c->node, "quorum: child '%s' read offset=%" PRIu64
                     " length=%" PRIu64 ": rewrite failed: %s",
                     s->children.nodes[qs - c->subs]->name, c->req->offset,
                     c->req->length, strerror(-ret));
    }
    if (--c->pending == 0)
        quorum_finish(c, 0);
}

/* Write the winning copy over the children that lost the vote; the read
 * completes when they are done. */
static void
quorum_rewrite(struct quorum_ctx *c, unsigned n, unsigned win,
               const bool *lost)
{
    const struct quorum_state *s = ng_node_state(c->node);

    c->pending = 1;             /* ours, dropped last */
    for (unsigned i = 0; i < n; i++) {
        if (!lost[i])
            continue;
        c->pending++;
        ng_node_submit(s->children.nodes[i],
                       quorum_sub_init(c, i, NG_OP_WRITE, quorum_buf(c, win),
                                       quorum_rewrite_done));
    }
    if (--c->pending == 0)
        quorum_finish(c, 0);
}

static void
quorum_vote(struct quorum_ctx *c)
{
    const struct quorum_state *s = ng_node_state(c->node);
    struct ng_req *req = c->req;
    unsigned n = (unsigned)s->children.n, win;
    bool lost[QUORUM_MAX_CHILDREN] = { false }, any_lost = false;
    int64_t votes;
    int first_err = -EIO;

    win = quorum_winner(c, n, &votes);
    for (unsigned i = 0; i < n; i++) {
        if (c->subs[i].ret < 0) {
            if (first_err == -EIO)
                first_err = c->subs[i].ret;
            quorum_report(c, i, c->subs[i].ret);
        } else if (votes > 0 &&
                   memcmp(quorum_buf(c, i), quorum_buf(c, win),
                          req->length) != 0) {
            quorum_report(c, i, 0);
            any_lost = lost[i] = true;
        }
    }
    if (s->blkverify && any_lost) {
        /* As QEMU: in blkverify mode a mismatch ends the process. */
        ng_node_warn(c->node, "quorum: offset=%" PRIu64 " bytes=%" PRIu64
                     " contents mismatch: aborting", req->offset,
                     req->length);
        abort();
    }
    if (votes < s->threshold) {
        quorum_report_failure(c);
        /* Every read failed: their error; else the replicas disagree. */
        quorum_finish(c, votes == 0 ? first_err : -EIO);
        return;
    }
    ng_iov_from_buf(&req->iov, 0, quorum_buf(c, win), req->length);
    if (s->rewrite && any_lost)
        quorum_rewrite(c, n, win, lost);
    else
        quorum_finish(c, 0);
}

static void
quorum_read_done(struct ng_req *sub, int ret)
{
    struct quorum_sub *qs = sub->opaque;
    struct quorum_ctx *c = qs->c;

    qs->ret = ret;
    if (--c->pending == 0)
        quorum_vote(c);
}

static void
quorum_read(struct quorum_ctx *c)
{
    const struct quorum_state *s = ng_node_state(c->node);
    unsigned n = (unsigned)s->children.n;

    c->bufs = malloc(n * (c->req->length ? c->req->length : 1));
    if (c->bufs == NULL) {
        quorum_finish(c, -ENOMEM);
        return;
    }
    c->pending = n;             /* before any may complete inline */
    for (unsigned i = 0; i < n; i++)
        quorum_sub_init(c, i, NG_OP_READ, quorum_buf(c, i), quorum_read_done);
    for (unsigned i = 0; i < n; i++)
        ng_node_submit(s->children.nodes[i], &c->subs[i].req);
}

static void
quorum_submit(struct ng_node *node, struct ng_req *req)
{
    const struct quorum_state *s = ng_node_state(node);
    struct quorum_ctx *c = ng_req_ctx(node, req);

    if (c == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    c->node = node;
    c->req = req;
    c->bufs = NULL;
    if (req->op == NG_OP_BLOCK_STATUS)
        quorum_block_status(c);
    else if (req->op != NG_OP_READ)
        quorum_write(c);
    else if (s->read_pattern == QUORUM_READ_FIFO)
        quorum_fifo_next(c);
    else
        quorum_read(c);
}

const struct ng_driver ng_filter_quorum = {
    .name       = "quorum",
    .help       = "replicas outvoting a child that fails or returns wrong "
                  "data",
    .multi_child_filter = true,
    .state_size = sizeof(struct quorum_state),
    .req_ctx_size = sizeof(struct quorum_ctx),
    .opts       = quorum_opts,
    .open       = quorum_open,
    .refresh    = quorum_refresh,
    .submit     = quorum_submit,
    .add_child  = quorum_add_child,
    .del_child  = quorum_del_child,
    .child_label = quorum_child_label,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_TRIM) | NG_OP_BIT(NG_OP_CACHE) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS),
};
