/* tests/unit/test-nac.c: unit tests for nac/ (Node Access Control).
 *
 * The library's answers are compared with a tiny reference model written
 * here without aggregates: it keeps every holder's merged claims and, for
 * a new claim list, loops over all holders.  Exhaustive over every pair
 * of (require, allow) masks for two holders on one node, sampled (fixed
 * seed) for three, and random multi-node runs with duplicates, replace,
 * release and duplicate IDs.  Then hand-made cases: release restores the
 * state, IDs are unique, a half-conflicting request changes nothing, the
 * exact messages and log lines, and the README's policy examples.
 *
 * Exit 0 on pass, 1 on the first failure (said on stderr).
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nac/nac.h"

#define NAC_TEST_NAME "test-nac"
#include "tests/unit/nac-test.h"

#define ALL     NG_NAC_ALL
#define RD      NG_NAC_READ_DATA
#define RM      NG_NAC_READ_META
#define WD      NG_NAC_WRITE_DATA
#define WM      NG_NAC_WRITE_META
#define GM      NG_NAC_GRAPH_MOD

/* Deterministic PRNG (splitmix64): the same cases on every run. */
struct rng {
    uint64_t s;
};

static uint64_t
rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static unsigned
rng_below(struct rng *r, unsigned n)
{
    return (unsigned) (rng_next(r) % n);
}

static unsigned
rng_mask(struct rng *r)
{
    return (unsigned) rng_next(r) & ALL;
}

static struct ng_nac *
new_nac(void)
{
    struct ng_nac *nac = ng_nac_new();

    if (nac == NULL)
        fail("ng_nac_new: out of memory");
    return nac;
}

static const char *
mask_str(unsigned mask, char *buf, size_t len)
{
    ng_nac_mask_format(mask, buf, len);
    return buf;
}

/* ---- The reference model ---------------------------------------------- */

#define REF_HOLDERS 40
#define REF_CLAIMS  16

struct ref_claim {
    const char *node;               /* borrowed from a const table */
    unsigned require, allow;
    unsigned long seq;              /* when the holder first named it */
};

struct ref_holder {
    char id[NG_NAC_NAME_MAX];
    char kind[NG_NAC_NAME_MAX];
    size_t n;
    struct ref_claim c[REF_CLAIMS];
};

struct ref {
    struct ref_holder h[REF_HOLDERS];
    size_t nh;
    unsigned long seq;
};

/* Merge a claim list the obvious way: require OR, allow AND. */
static size_t
ref_merge(const struct ng_nac_claim *claims, size_t n,
          struct ref_claim out[REF_CLAIMS])
{
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        size_t j;

        for (j = 0; j < m; j++) {
            if (strcmp(out[j].node, claims[i].node) == 0)
                break;
        }
        if (j == m) {
            if (m == REF_CLAIMS)
                fail("reference: too many claims");
            out[m].node = claims[i].node;
            out[m].require = 0;
            out[m].allow = ALL;
            out[m].seq = 0;
            m++;
        }
        out[j].require |= claims[i].require;
        out[j].allow &= claims[i].allow;
    }
    return m;
}

static const struct ref_claim *
ref_claim_on(const struct ref_holder *h, const char *node)
{
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->c[i].node, node) == 0)
            return &h->c[i];
    }
    return NULL;
}

static ptrdiff_t
ref_find(const struct ref *ref, const char *id)
{
    for (size_t i = 0; i < ref->nh; i++) {
        if (strcmp(ref->h[i].id, id) == 0)
            return (ptrdiff_t) i;
    }
    return -1;
}

/* Among holders other than `skip` naming `node`, the first in node order
 * (by seq) that does not allow `bit` (want_deny) or requires it. */
static const struct ref_holder *
ref_first(const struct ref *ref, const char *node, unsigned bit,
          bool want_deny, ptrdiff_t skip)
{
    const struct ref_holder *best = NULL;
    unsigned long best_seq = 0;

    for (size_t i = 0; i < ref->nh; i++) {
        const struct ref_claim *c = ref_claim_on(&ref->h[i], node);

        if ((ptrdiff_t) i == skip || c == NULL)
            continue;
        if (want_deny ? (c->allow & bit) : !(c->require & bit))
            continue;
        if (best == NULL || c->seq < best_seq) {
            best = &ref->h[i];
            best_seq = c->seq;
        }
    }
    return best;
}

/* The rule, straight from the RFC, on merged claims against every holder
 * but `skip`: true if refused. */
static bool
ref_refused(const struct ref *ref, const struct ng_nac_claim *claims,
            size_t n, ptrdiff_t skip)
{
    struct ref_claim m[REF_CLAIMS];
    size_t nm = ref_merge(claims, n, m);

    for (size_t i = 0; i < ref->nh; i++) {
        if ((ptrdiff_t) i == skip)
            continue;
        for (size_t j = 0; j < nm; j++) {
            const struct ref_claim *c = ref_claim_on(&ref->h[i], m[j].node);

            if (c != NULL && (((m[j].require & ~c->allow) |
                               (~m[j].allow & c->require)) & ALL) != 0)
                return true;
        }
    }
    return false;
}

/* The refusal the model expects; names borrowed (cheap to make, as the
 * sampled tests make millions). */
struct ref_why {
    const char *node, *holder_id, *holder_kind, *new_id, *new_kind;
    unsigned action;
    bool new_requires;
};

/* What the library must answer for this claim list (before the ID and
 * argument checks): 0, or -1 and the exact *why that nac.h promises. */
static int
ref_expect(const struct ref *ref, const char *id, const char *kind,
           const struct ng_nac_claim *claims, size_t n, ptrdiff_t skip,
           struct ref_why *why)
{
    bool refused = ref_refused(ref, claims, n, skip);

    for (size_t i = 0; i < n; i++) {
        for (unsigned bit = 1; bit <= GM; bit <<= 1) {
            const struct ref_holder *h = NULL;
            bool new_requires = true;

            if (claims[i].require & bit)
                h = ref_first(ref, claims[i].node, bit, true, skip);
            if (h == NULL && !(claims[i].allow & bit)) {
                h = ref_first(ref, claims[i].node, bit, false, skip);
                new_requires = false;
            }
            if (h == NULL)
                continue;
            if (!refused)
                fail("reference disagrees with itself (conflict found)");
            why->node = claims[i].node;
            why->holder_id = h->id;
            why->holder_kind = h->kind;
            why->new_id = id;
            why->new_kind = kind;
            why->action = bit;
            why->new_requires = new_requires;
            return -1;
        }
    }
    if (refused)
        fail("reference disagrees with itself (no conflict found)");
    return 0;
}

static void
ref_set_claims(struct ref *ref, struct ref_holder *h,
               const struct ng_nac_claim *claims, size_t n)
{
    struct ref_claim m[REF_CLAIMS];
    size_t nm = ref_merge(claims, n, m);

    for (size_t j = 0; j < nm; j++) {
        const struct ref_claim *old = ref_claim_on(h, m[j].node);

        m[j].seq = old != NULL ? old->seq : ++ref->seq;
    }
    memcpy(h->c, m, nm * sizeof m[0]);
    h->n = nm;
}

static void
ref_add(struct ref *ref, const char *id, const char *kind,
        const struct ng_nac_claim *claims, size_t n)
{
    struct ref_holder *h;

    if (ref->nh == REF_HOLDERS)
        fail("reference: too many holders");
    h = &ref->h[ref->nh++];
    snprintf(h->id, sizeof h->id, "%s", id);
    snprintf(h->kind, sizeof h->kind, "%s", kind);
    h->n = 0;
    ref_set_claims(ref, h, claims, n);
}

static void
ref_remove(struct ref *ref, size_t i)
{
    memmove(&ref->h[i], &ref->h[i + 1],
            (ref->nh - i - 1) * sizeof ref->h[0]);
    ref->nh--;
}

/* ---- Comparing the library with the model ----------------------------- */

static bool
same_why(const struct ng_nac_conflict *got, const struct ref_why *want)
{
    return strcmp(got->node, want->node) == 0 &&
        strcmp(got->holder_id, want->holder_id) == 0 &&
        strcmp(got->holder_kind, want->holder_kind) == 0 &&
        strcmp(got->new_id, want->new_id) == 0 &&
        strcmp(got->new_kind, want->new_kind) == 0 &&
        got->action == want->action &&
        got->new_requires == want->new_requires;
}

static void
expect_why(const char *what, const struct ng_nac_conflict *got,
           const struct ref_why *want)
{
    struct ng_nac_conflict c = { .action = want->action,
                                 .new_requires = want->new_requires };
    char g[1024], w[1024];

    if (same_why(got, want))
        return;
    snprintf(c.node, sizeof c.node, "%s", want->node);
    snprintf(c.holder_id, sizeof c.holder_id, "%s", want->holder_id);
    snprintf(c.holder_kind, sizeof c.holder_kind, "%s", want->holder_kind);
    snprintf(c.new_id, sizeof c.new_id, "%s", want->new_id);
    snprintf(c.new_kind, sizeof c.new_kind, "%s", want->new_kind);
    ng_nac_conflict_render(got, g, sizeof g);
    ng_nac_conflict_render(&c, w, sizeof w);
    fail("%s: refusal says\n  %s (new_requires=%d)\nbut should say\n  %s "
         "(new_requires=%d)", what, g, got->new_requires, w,
         want->new_requires);
}

static void
describe(char *buf, size_t len, const struct ng_nac_claim *claims, size_t n)
{
    size_t at = 0;
    char r[64], a[64];

    buf[0] = '\0';
    for (size_t i = 0; i < n && at < len; i++) {
        at += (size_t) snprintf(buf + at, len - at, "%s%s req=%s allow=%s",
                                i > 0 ? "; " : "", claims[i].node,
                                mask_str(claims[i].require, r, sizeof r),
                                mask_str(claims[i].allow, a, sizeof a));
    }
}

/* Check, then acquire, `id` with `claims`; both must give the model's
 * answer.  Returns the answer; on 0 the model has the holder too. */
static int
try_acquire(struct ng_nac *nac, struct ref *ref, const char *id,
            const char *kind, const struct ng_nac_claim *claims, size_t n)
{
    struct ng_nac_conflict got1, got2;
    struct ref_why want;
    char what[1024];
    int rw, r1, r2;

    if (ref_find(ref, id) >= 0)
        rw = -EEXIST;
    else
        rw = ref_expect(ref, id, kind, claims, n, -1, &want);
    /* Poison, so a field left unset shows. */
    memset(&got1, 0, sizeof got1);
    memset(&got2, 0, sizeof got2);
    got1.node[0] = got2.node[0] = '?';
    got1.action = got2.action = ~0u;
    r1 = ng_nac_check(nac, id, kind, claims, n, &got1);
    r2 = ng_nac_acquire(nac, id, kind, "", claims, n, &got2);
    if (r1 != rw || r2 != rw) {
        describe(what, sizeof what, claims, n);
        fail("%s '%s' [%s]: check %d, acquire %d, expected %d", kind, id,
             what, r1, r2, rw);
    }
    if (rw == -1 && (!same_why(&got1, &want) || !same_why(&got2, &want))) {
        describe(what, sizeof what, claims, n);
        expect_why(what, &got1, &want);
        expect_why(what, &got2, &want);
    }
    if (rw == 0)
        ref_add(ref, id, kind, claims, n);
    return rw;
}

/* Compare everything the library shows with the model. */
struct dump {
    struct ng_nac_holding v[REF_HOLDERS * REF_CLAIMS];
    size_t n;
};

static int
dump_holding(void *opaque, const struct ng_nac_holding *h)
{
    struct dump *d = opaque;

    if (d->n == sizeof d->v / sizeof d->v[0])
        fail("dump: too many holdings");
    d->v[d->n++] = *h;
    return 0;
}

struct holder_dump {
    struct ng_nac_holder_info v[REF_HOLDERS];
    size_t n;
};

static int
dump_holder(void *opaque, const struct ng_nac_holder_info *h)
{
    struct holder_dump *d = opaque;

    if (d->n == REF_HOLDERS)
        fail("dump: too many holders");
    d->v[d->n++] = *h;
    return 0;
}

struct ref_pair {
    const struct ref_holder *h;
    const struct ref_claim *c;
};

static int
ref_pair_cmp(const void *a, const void *b)
{
    const struct ref_pair *x = a, *y = b;
    int r = strcmp(x->c->node, y->c->node);

    if (r != 0)
        return r;
    return x->c->seq < y->c->seq ? -1 : x->c->seq > y->c->seq;
}

static void
compare_state(const struct ng_nac *nac, const struct ref *ref,
              const char *when)
{
    struct ref_pair p[REF_HOLDERS * REF_CLAIMS];
    struct dump d = { .n = 0 };
    struct holder_dump hd = { .n = 0 };
    size_t np = 0, nnodes = 0;

    for (size_t i = 0; i < ref->nh; i++) {
        for (size_t j = 0; j < ref->h[i].n; j++) {
            p[np].h = &ref->h[i];
            p[np].c = &ref->h[i].c[j];
            np++;
        }
    }
    qsort(p, np, sizeof p[0], ref_pair_cmp);
    if (ng_nac_foreach(nac, dump_holding, &d) != 0)
        fail("%s: ng_nac_foreach failed", when);
    if (d.n != np)
        fail("%s: %zu holdings listed, model has %zu", when, d.n, np);
    for (size_t k = 0; k < np; k++) {
        if (strcmp(d.v[k].node, p[k].c->node) != 0 ||
            strcmp(d.v[k].id, p[k].h->id) != 0 ||
            strcmp(d.v[k].kind, p[k].h->kind) != 0 ||
            d.v[k].require != p[k].c->require ||
            d.v[k].allow != p[k].c->allow)
            fail("%s: holding %zu is %s/%s req %#x allow %#x, model has "
                 "%s/%s req %#x allow %#x", when, k, d.v[k].node,
                 d.v[k].id, d.v[k].require, d.v[k].allow, p[k].c->node,
                 p[k].h->id, p[k].c->require, p[k].c->allow);
        if (k == 0 || strcmp(p[k].c->node, p[k - 1].c->node) != 0)
            nnodes++;
    }

    /* Per-node aggregates, and nodes nobody names are gone. */
    for (size_t k = 0; k < np; k++) {
        unsigned req = 0, deny = 0, greq, gdeny;
        size_t cnt = 0;

        for (size_t i = 0; i < ref->nh; i++) {
            const struct ref_claim *c = ref_claim_on(&ref->h[i],
                                                     p[k].c->node);
            if (c != NULL) {
                req |= c->require;
                deny |= ~c->allow & ALL;
                cnt++;
            }
        }
        if (ng_nac_node_state(nac, p[k].c->node, &greq, &gdeny) != cnt ||
            greq != req || gdeny != deny)
            fail("%s: node '%s' state wrong", when, p[k].c->node);
    }
    if (ng_nac_count_nodes(nac) != nnodes)
        fail("%s: %zu nodes, model has %zu", when, ng_nac_count_nodes(nac),
             nnodes);
    if (ng_nac_count_holders(nac) != ref->nh)
        fail("%s: %zu holders, model has %zu", when,
             ng_nac_count_holders(nac), ref->nh);

    /* Holders oldest first, each with its claims in claim-list order. */
    if (ng_nac_foreach_holder(nac, dump_holder, &hd) != 0 || hd.n != ref->nh)
        fail("%s: ng_nac_foreach_holder", when);
    for (size_t i = 0; i < ref->nh; i++) {
        struct dump c = { .n = 0 };

        if (strcmp(hd.v[i].id, ref->h[i].id) != 0 ||
            strcmp(hd.v[i].kind, ref->h[i].kind) != 0 ||
            hd.v[i].nnodes != ref->h[i].n)
            fail("%s: holder %zu is '%s', model has '%s'", when, i,
                 hd.v[i].id, ref->h[i].id);
        if (ng_nac_foreach_claim(nac, ref->h[i].id, dump_holding, &c) != 0 ||
            c.n != ref->h[i].n)
            fail("%s: ng_nac_foreach_claim '%s'", when, ref->h[i].id);
        for (size_t j = 0; j < c.n; j++) {
            if (strcmp(c.v[j].node, ref->h[i].c[j].node) != 0 ||
                c.v[j].require != ref->h[i].c[j].require ||
                c.v[j].allow != ref->h[i].c[j].allow)
                fail("%s: claim %zu of '%s' differs", when, j,
                     ref->h[i].id);
        }
    }
}

/* ---- Names ------------------------------------------------------------ */

static void
test_names(void)
{
    static const char *const names[] = {
        "read-data", "read-meta", "write-data", "write-meta", "graph-mod",
    };
    const char *list[NG_NAC_N_ACTIONS];
    char buf[128];
    unsigned m;

    CHECK(NG_NAC_ALL == 0x1f);
    for (unsigned i = 0; i < NG_NAC_N_ACTIONS; i++) {
        CHECK(strcmp(ng_nac_action_name(1u << i), names[i]) == 0);
        CHECK(ng_nac_action_from_name(names[i]) == 1u << i);
    }
    CHECK(ng_nac_action_name(0) == NULL);
    CHECK(ng_nac_action_name(RD | WD) == NULL);
    CHECK(ng_nac_action_name(1u << NG_NAC_N_ACTIONS) == NULL);
    CHECK(ng_nac_action_from_name("write") == 0);
    CHECK(ng_nac_action_from_name("") == 0);
    CHECK(ng_nac_action_from_name(NULL) == 0);

    for (unsigned mask = 0; mask <= ALL; mask++) {
        size_t n = ng_nac_mask_names(mask, list);
        int len = ng_nac_mask_format(mask, buf, sizeof buf);

        CHECK(n == (size_t) __builtin_popcount(mask));
        CHECK(len == (int) strlen(buf));
        CHECK(ng_nac_mask_parse(buf, &m) == 0 && m == mask);
        for (size_t k = 0; k < n; k++)
            CHECK(ng_nac_action_from_name(list[k]) & mask);
    }
    CHECK(ng_nac_mask_names(ALL | 0x100, list) == NG_NAC_N_ACTIONS);
    CHECK(strcmp(list[0], "read-data") == 0 &&
          strcmp(list[4], "graph-mod") == 0);

    ng_nac_mask_format(0, buf, sizeof buf);
    CHECK(strcmp(buf, "none") == 0);
    ng_nac_mask_format(RD | WD | GM, buf, sizeof buf);
    CHECK(strcmp(buf, "read-data|write-data|graph-mod") == 0);
    /* Truncation: snprintf's contract. */
    CHECK(ng_nac_mask_format(RD | RM, buf, 6) ==
          (int) strlen("read-data|read-meta"));
    CHECK(strcmp(buf, "read-") == 0);
    CHECK(ng_nac_mask_format(RD | RM, NULL, 0) == 19);

    CHECK(ng_nac_mask_parse("write-meta,read-data", &m) == 0 &&
          m == (RD | WM));
    CHECK(ng_nac_mask_parse("graph-mod|graph-mod", &m) == 0 && m == GM);
    m = 77;
    CHECK(ng_nac_mask_parse("", &m) == -EINVAL && m == 77);
    CHECK(ng_nac_mask_parse(NULL, &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("read-data|", &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("|read-data", &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("read-data||write-data", &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("none|read-data", &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("read-datax", &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("read", &m) == -EINVAL);
    CHECK(ng_nac_mask_parse("all", &m) == -EINVAL);
    CHECK(m == 77);
    printf("PASS: action names, mask format and parse\n");
}

/* ---- Bad arguments ---------------------------------------------------- */

static void
test_invalid(void)
{
    struct ng_nac *nac = new_nac();
    char longname[NG_NAC_NAME_MAX + 1];
    struct ng_nac_claim c = { "disk0", RD, ALL };
    struct ng_nac_claim bad;
    struct ng_nac_conflict why;

    memset(longname, 'x', sizeof longname);
    longname[NG_NAC_NAME_MAX] = '\0';           /* 128 chars: too long */
    CHECK(ng_nac_acquire(nac, NULL, "job", "", &c, 1, &why) == -EINVAL);
    CHECK(ng_nac_acquire(nac, "", "job", "", &c, 1, &why) == -EINVAL);
    CHECK(ng_nac_acquire(nac, "j", NULL, "", &c, 1, &why) == -EINVAL);
    CHECK(ng_nac_acquire(nac, "j", "", "", &c, 1, &why) == -EINVAL);
    CHECK(ng_nac_acquire(nac, longname, "job", "", &c, 1, &why) == -EINVAL);
    CHECK(ng_nac_acquire(nac, "j", longname, "", &c, 1, &why) == -EINVAL);
    CHECK(ng_nac_acquire(nac, "j", "job", "", NULL, 1, &why) == -EINVAL);
    CHECK(ng_nac_check(nac, "j", "job", NULL, 1, &why) == -EINVAL);
    bad = c;
    bad.node = NULL;
    CHECK(ng_nac_acquire(nac, "j", "job", "", &bad, 1, &why) == -EINVAL);
    bad.node = "";
    CHECK(ng_nac_acquire(nac, "j", "job", "", &bad, 1, &why) == -EINVAL);
    bad.node = longname;
    CHECK(ng_nac_acquire(nac, "j", "job", "", &bad, 1, &why) == -EINVAL);
    bad = c;
    bad.require = 1u << NG_NAC_N_ACTIONS;
    CHECK(ng_nac_acquire(nac, "j", "job", "", &bad, 1, &why) == -EINVAL);
    bad = c;
    bad.allow = ~0u;
    CHECK(ng_nac_acquire(nac, "j", "job", "", &bad, 1, &why) == -EINVAL);
    CHECK(ng_nac_check(nac, "j", "job", &bad, 1, &why) == -EINVAL);
    CHECK(ng_nac_count_holders(nac) == 0 && ng_nac_count_nodes(nac) == 0);

    /* 127 bytes is the longest name. */
    longname[NG_NAC_NAME_MAX - 1] = '\0';
    bad = c;
    bad.node = longname;
    CHECK(ng_nac_acquire(nac, longname, longname, NULL, &bad, 1, NULL) == 0);
    CHECK(ng_nac_has_holder(nac, longname));
    CHECK(ng_nac_node_state(nac, longname, NULL, NULL) == 1);

    /* A holder with no claims only reserves its ID. */
    CHECK(ng_nac_acquire(nac, "empty", "command", NULL, NULL, 0, NULL) == 0);
    CHECK(ng_nac_count_holders(nac) == 2 && ng_nac_count_nodes(nac) == 1);

    CHECK(ng_nac_release(nac, "nope") == -ENOENT);
    CHECK(ng_nac_release(nac, NULL) == -ENOENT);
    CHECK(ng_nac_replace(nac, "nope", &c, 1, NULL) == -ENOENT);
    CHECK(ng_nac_replace(nac, "empty", &bad, 0, NULL) == 0);
    bad.allow = ~0u;
    CHECK(ng_nac_replace(nac, "empty", &bad, 1, NULL) == -EINVAL);
    CHECK(ng_nac_foreach_claim(nac, "nope", dump_holding, NULL) == -ENOENT);
    CHECK(ng_nac_release(nac, "empty") == 0);
    CHECK(ng_nac_release(nac, longname) == 0);
    CHECK(ng_nac_count_holders(nac) == 0 && ng_nac_count_nodes(nac) == 0);
    CHECK(!ng_nac_has_holder(nac, longname) && !ng_nac_has_holder(nac, NULL));
    ng_nac_free(nac);
    ng_nac_free(NULL);
    printf("PASS: bad arguments\n");
}

/* ---- Exhaustive: two holders on one node ------------------------------ */

/*   node n0
 *     holder h1 (job):    every (require, allow)
 *     holder h2 (export): every (require, allow)
 * 2^10 * 2^10 cases: check and acquire h2, compare with the model, release
 * h2 and see that n0 is as h1 alone left it. */
static void
test_exhaustive_two(void)
{
    unsigned long accepted = 0, total = 0;

    for (unsigned r1 = 0; r1 <= ALL; r1++) {
        for (unsigned a1 = 0; a1 <= ALL; a1++) {
            struct ng_nac *nac = new_nac();
            struct ref ref = { .nh = 0 };
            struct ng_nac_claim c1 = { "n0", r1, a1 };
            unsigned req1, deny1;

            if (try_acquire(nac, &ref, "h1", "job", &c1, 1) != 0)
                fail("first holder refused on an empty registry");
            CHECK(ng_nac_node_state(nac, "n0", &req1, &deny1) == 1);
            CHECK(req1 == r1 && deny1 == (~a1 & ALL));
            for (unsigned r2 = 0; r2 <= ALL; r2++) {
                for (unsigned a2 = 0; a2 <= ALL; a2++) {
                    struct ng_nac_claim c2 = { "n0", r2, a2 };
                    unsigned req, deny;

                    total++;
                    if (try_acquire(nac, &ref, "h2", "export", &c2, 1) != 0)
                        continue;
                    accepted++;
                    CHECK(ng_nac_node_state(nac, "n0", &req, &deny) == 2);
                    CHECK(req == (r1 | r2) && deny == (~(a1 & a2) & ALL));
                    CHECK(ng_nac_release(nac, "h2") == 0);
                    ref_remove(&ref, 1);
                    CHECK(ng_nac_node_state(nac, "n0", &req, &deny) == 1);
                    CHECK(req == req1 && deny == deny1);
                }
            }
            CHECK(ng_nac_release(nac, "h1") == 0);
            CHECK(ng_nac_count_nodes(nac) == 0);
            CHECK(ng_nac_count_holders(nac) == 0);
            ng_nac_free(nac);
        }
    }
    /* Per action 9 of the 16 (r1, a1, r2, a2) agree; five actions. */
    CHECK(accepted == 59049);
    printf("PASS: exhaustive, 2 holders on one node: %lu cases, "
           "%lu accepted\n", total, accepted);
}

/* ---- Sampled: three holders on one node ------------------------------- */

/* A random compatible pair (h1, h2), then many random h3 against it;
 * 4096 pairs * 256 = 1048576 cases, seed fixed. */
static void
test_random_three(void)
{
    struct rng rng = { 20151216 };
    unsigned long accepted = 0, total = 0, pairs_refused = 0;
    struct ng_nac *nac = new_nac();

    for (unsigned pair = 0; pair < 4096; pair++) {
        struct ref ref = { .nh = 0 };
        struct ng_nac_claim c1 = { "n0", rng_mask(&rng), rng_mask(&rng) };
        struct ng_nac_claim c2;

        CHECK(try_acquire(nac, &ref, "h1", "job", &c1, 1) == 0);
        do {
            c2.node = "n0";
            c2.require = rng_mask(&rng);
            c2.allow = rng_mask(&rng);
        } while (try_acquire(nac, &ref, "h2", "export", &c2, 1) != 0 &&
                 ++pairs_refused);
        for (unsigned k = 0; k < 256; k++) {
            struct ng_nac_claim c3 = { "n0", rng_mask(&rng), rng_mask(&rng) };

            total++;
            if (try_acquire(nac, &ref, "h3", "command", &c3, 1) == 0) {
                accepted++;
                CHECK(ng_nac_release(nac, "h3") == 0);
                ref_remove(&ref, 2);
            }
        }
        compare_state(nac, &ref, "three holders");
        CHECK(ng_nac_release(nac, "h2") == 0);
        CHECK(ng_nac_release(nac, "h1") == 0);
        CHECK(ng_nac_count_nodes(nac) == 0);
    }
    ng_nac_free(nac);
    CHECK(total >= 1000000 && accepted > 0 && accepted < total);
    printf("PASS: sampled, 3 holders on one node: %lu cases, %lu accepted "
           "(and %lu refused second holders)\n", total, accepted,
           pairs_refused);
}

/* ---- Random multi-node runs against the model ------------------------- */

static const char *const model_nodes[] = {
    "disk0", "disk1", "base", "mid", "top", "target",
};
#define N_MODEL_NODES (sizeof model_nodes / sizeof model_nodes[0])

static const char *const model_ids[] = {
    "vm1", "vm2", "mirror0", "mirror1", "commit0", "stream0", "backup0",
    "snap", "add", "reload", "del", "insert", "remove", "x", "y", "z",
};
#define N_MODEL_IDS (sizeof model_ids / sizeof model_ids[0])

static size_t
random_claims(struct rng *rng, struct ng_nac_claim *c)
{
    size_t n = rng_below(rng, 5);

    for (size_t i = 0; i < n; i++) {
        c[i].node = model_nodes[rng_below(rng, N_MODEL_NODES)];
        /* Few requires, many allows, so enough requests get in. */
        c[i].require = rng_mask(rng) & rng_mask(rng);
        c[i].allow = rng_mask(rng) | rng_mask(rng);
    }
    return n;
}

static void
test_model_random(void)
{
    static const char *const kinds[] = { "export", "job", "command" };
    struct rng rng = { 42 };
    struct ng_nac *nac = new_nac();
    struct ref *ref = calloc(1, sizeof *ref);
    unsigned long ops[4] = { 0 }, ok[4] = { 0 };

    if (ref == NULL)
        fail("out of memory");
    for (unsigned step = 0; step < 200000; step++) {
        struct ng_nac_claim c[8];
        size_t n = random_claims(&rng, c);
        const char *id = model_ids[rng_below(&rng, N_MODEL_IDS)];
        ptrdiff_t idx = ref_find(ref, id);
        unsigned op = rng_below(&rng, 8);

        if (op < 4) {                           /* acquire (and check) */
            const char *kind = kinds[rng_below(&rng, 3)];

            ops[0]++;
            ok[0] += try_acquire(nac, ref, id, kind, c, n) == 0;
        }
        else if (op < 6) {                      /* replace */
            struct ng_nac_conflict got;
            struct ref_why want;
            int rw = -ENOENT, r;

            if (idx >= 0)
                rw = ref_expect(ref, id, ref->h[idx].kind, c, n, idx, &want);
            memset(&got, 0x55, sizeof got);
            r = ng_nac_replace(nac, id, c, n, &got);
            if (r != rw)
                fail("step %u: replace '%s' gave %d, expected %d", step, id,
                     r, rw);
            if (r == -1)
                expect_why("replace", &got, &want);
            if (r == 0)
                ref_set_claims(ref, &ref->h[idx], c, n);
            ops[1]++;
            ok[1] += r == 0;
        }
        else {                                  /* release */
            int r = ng_nac_release(nac, id);

            if (r != (idx >= 0 ? 0 : -ENOENT))
                fail("step %u: release '%s' gave %d", step, id, r);
            if (idx >= 0)
                ref_remove(ref, (size_t) idx);
            ops[2]++;
            ok[2] += r == 0;
        }
        if (ng_nac_count_holders(nac) != ref->nh)
            fail("step %u: holder count", step);
        if (step % 16 == 0)
            compare_state(nac, ref, "random run");
    }
    compare_state(nac, ref, "end of random run");
    while (ref->nh > 0) {
        CHECK(ng_nac_release(nac, ref->h[0].id) == 0);
        ref_remove(ref, 0);
    }
    CHECK(ng_nac_count_nodes(nac) == 0 && ng_nac_count_holders(nac) == 0);
    ng_nac_free(nac);
    free(ref);
    printf("PASS: random multi-node runs: %lu acquires (%lu in), %lu "
           "replaces (%lu done), %lu releases (%lu found)\n", ops[0], ok[0],
           ops[1], ok[1], ops[2], ok[2]);
}

/* ---- Release restores the exact previous state ------------------------ */

/* The answer to every single-node claim on every node, plus the listing
 * as text (the strings a walk shows are only borrowed): if two snapshots
 * are equal, no client of the API can tell the states apart. */
struct probe {
    int rc[N_MODEL_NODES + 1][ALL + 1][ALL + 1];
    struct ng_nac_conflict why[N_MODEL_NODES + 1][ALL + 1][ALL + 1];
    char list[16384];
    size_t len, n;
};

static int
probe_holding(void *opaque, const struct ng_nac_holding *h)
{
    struct probe *p = opaque;
    int n = snprintf(p->list + p->len, sizeof p->list - p->len,
                     "%s %s %s (%s) %#x %#x\n", h->node, h->id, h->kind,
                     h->desc, h->require, h->allow);

    if (n < 0 || (size_t) n >= sizeof p->list - p->len)
        fail("probe: listing too long");
    p->len += (size_t) n;
    p->n++;
    return 0;
}

static void
take_probe(const struct ng_nac *nac, struct probe *p)
{
    memset(p, 0, sizeof *p);
    for (size_t k = 0; k <= N_MODEL_NODES; k++) {
        const char *node = k < N_MODEL_NODES ? model_nodes[k] : "unknown";

        for (unsigned r = 0; r <= ALL; r++) {
            for (unsigned a = 0; a <= ALL; a++) {
                struct ng_nac_claim c = { node, r, a };

                p->rc[k][r][a] = ng_nac_check(nac, "probe", "job", &c, 1,
                                              &p->why[k][r][a]);
            }
        }
    }
    if (ng_nac_foreach(nac, probe_holding, p) != 0)
        fail("ng_nac_foreach failed");
}

static bool
same_probe(const struct probe *a, const struct probe *b)
{
    return memcmp(a->rc, b->rc, sizeof a->rc) == 0 &&
        memcmp(a->why, b->why, sizeof a->why) == 0 &&
        a->n == b->n && strcmp(a->list, b->list) == 0;
}

/*   vm1 (export, rw) --> top      base <-- vm2 (export, ro)
 *   mirror0: disk0 -> target
 * then a newcomer on top/base/disk1 comes and goes. */
static void
test_release_restores(void)
{
    struct ng_nac *nac = new_nac();
    struct probe *before = malloc(sizeof *before);
    struct probe *during = malloc(sizeof *during);
    struct probe *after = malloc(sizeof *after);
    const struct ng_nac_claim vm1[] = { { "top", RD | RM | WD,
                                          RD | RM | WM | GM } };
    const struct ng_nac_claim vm2[] = { { "base", RD | RM, ALL } };
    const struct ng_nac_claim mirror0[] = {
        { "disk0", RD | RM | GM, RD | RM | WD | WM },
        { "target", RM | WD, RM },
    };
    const struct ng_nac_claim newcomer[] = {
        { "top", RM, RD | RM | WD | WM },
        { "base", RD, RD | RM | WM },
        { "disk1", WM, 0 },
        { "top", RD, ALL },
    };
    const struct ng_nac_claim other[] = {
        { "top", 0, ALL },
        { "disk1", 0, ALL },
        { "base", RM, ALL },
    };

    if (before == NULL || during == NULL || after == NULL)
        fail("out of memory");
    CHECK(ng_nac_acquire(nac, "vm1", "export", "", vm1, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "vm2", "export", "", vm2, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "mirror0", "job", "mirror disk0", mirror0, 2,
                         NULL) == 0);
    take_probe(nac, before);

    CHECK(ng_nac_acquire(nac, "new", "job", "comes and goes", newcomer, 4,
                         NULL) == 0);
    take_probe(nac, during);
    CHECK(!same_probe(before, during));
    CHECK(ng_nac_release(nac, "new") == 0);
    take_probe(nac, after);
    CHECK(same_probe(before, after));

    /* Two newcomers, released in the order they came rather than the
     * reverse. */
    CHECK(ng_nac_acquire(nac, "new", "job", "", newcomer, 4, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "other", "command", "", other, 3, NULL) == 0);
    CHECK(ng_nac_release(nac, "new") == 0);
    CHECK(ng_nac_release(nac, "other") == 0);
    take_probe(nac, after);
    CHECK(same_probe(before, after));

    /* Replace there and back again keeps everything, order included. */
    CHECK(ng_nac_replace(nac, "vm1", vm2, 1, NULL) == 0);
    CHECK(ng_nac_replace(nac, "vm1", vm1, 1, NULL) == 0);
    take_probe(nac, after);
    CHECK(same_probe(before, after));

    CHECK(ng_nac_release(nac, "mirror0") == 0);
    CHECK(ng_nac_release(nac, "vm1") == 0);
    CHECK(ng_nac_release(nac, "vm2") == 0);
    CHECK(ng_nac_count_holders(nac) == 0 && ng_nac_count_nodes(nac) == 0);
    for (size_t k = 0; k < N_MODEL_NODES; k++)
        CHECK(ng_nac_node_state(nac, model_nodes[k], NULL, NULL) == 0);
    take_probe(nac, after);
    CHECK(after->n == 0 && after->list[0] == '\0');
    for (size_t k = 0; k <= N_MODEL_NODES; k++) {
        for (unsigned r = 0; r <= ALL; r++) {
            for (unsigned a = 0; a <= ALL; a++)
                CHECK(after->rc[k][r][a] == 0);
        }
    }
    ng_nac_free(nac);
    free(before);
    free(during);
    free(after);
    printf("PASS: release restores the previous state; empty at the end\n");
}

/* ---- IDs are unique --------------------------------------------------- */

static void
test_unique_ids(void)
{
    struct ng_nac *nac = new_nac();
    struct probe *before = malloc(sizeof *before);
    struct probe *after = malloc(sizeof *after);
    const struct ng_nac_claim c = { "disk0", RD | RM, ALL };
    const struct ng_nac_claim excl = { "disk0", ALL, 0 };
    const struct ng_nac_claim elsewhere = { "disk1", RD, ALL };
    struct ng_nac_conflict why;

    if (before == NULL || after == NULL)
        fail("out of memory");
    CHECK(ng_nac_acquire(nac, "vm1", "export", "", &c, 1, NULL) == 0);
    take_probe(nac, before);
    /* Same ID, whatever the kind and claims: compatible, conflicting,
     * elsewhere, none. */
    CHECK(ng_nac_acquire(nac, "vm1", "export", "", &c, 1, &why) == -EEXIST);
    CHECK(ng_nac_acquire(nac, "vm1", "job", "", &excl, 1, &why) == -EEXIST);
    CHECK(ng_nac_acquire(nac, "vm1", "job", "", &elsewhere, 1, &why) ==
          -EEXIST);
    CHECK(ng_nac_acquire(nac, "vm1", "command", NULL, NULL, 0, &why) ==
          -EEXIST);
    CHECK(ng_nac_check(nac, "vm1", "job", &elsewhere, 1, &why) == -EEXIST);
    CHECK(ng_nac_count_holders(nac) == 1 && ng_nac_count_nodes(nac) == 1);
    take_probe(nac, after);
    CHECK(same_probe(before, after));
    /* IDs are case-sensitive, and free again after release. */
    CHECK(ng_nac_acquire(nac, "VM1", "export", "", &c, 1, NULL) == 0);
    CHECK(ng_nac_release(nac, "vm1") == 0);
    CHECK(ng_nac_acquire(nac, "vm1", "job", "", &elsewhere, 1, NULL) == 0);
    ng_nac_free(nac);               /* frees the holders left */
    free(before);
    free(after);
    printf("PASS: IDs are unique\n");
}

/* ---- Half-conflicting request ----------------------------------------- */

/*   A: held by vm1 (compatible with the newcomer)
 *   B: held by excl (allows nothing)
 *   C: nobody
 * newcomer claims C, A, B: refused on B; A and C unchanged. */
static void
test_half_conflict(void)
{
    struct ng_nac *nac = new_nac();
    const struct ng_nac_claim vm1 = { "A", RD | RM | WD, RD | RM | WM | GM };
    const struct ng_nac_claim excl = { "B", 0, 0 };
    const struct ng_nac_claim newcomer[] = {
        { "C", ALL, 0 },
        { "A", RD | GM, ALL },
        { "B", RD, ALL },
        { "D", WD, 0 },
    };
    struct ng_nac_conflict why;
    struct dump d = { .n = 0 };
    unsigned req, deny;
    char msg[512];

    CHECK(ng_nac_acquire(nac, "vm1", "export", "", &vm1, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "excl", "job", "", &excl, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "new", "job", "", newcomer, 4, &why) == -1);
    ng_nac_conflict_render(&why, msg, sizeof msg);
    CHECK(strcmp(msg, "node 'B': job 'new' requires read-data, which job "
                 "'excl' does not allow") == 0);
    CHECK(!ng_nac_has_holder(nac, "new"));
    CHECK(ng_nac_count_holders(nac) == 2 && ng_nac_count_nodes(nac) == 2);
    CHECK(ng_nac_node_state(nac, "A", &req, &deny) == 1);
    CHECK(req == (RD | RM | WD) && deny == WD);
    CHECK(ng_nac_node_state(nac, "C", &req, &deny) == 0 && req == 0 &&
          deny == 0);
    CHECK(ng_nac_node_state(nac, "D", NULL, NULL) == 0);
    CHECK(ng_nac_foreach(nac, dump_holding, &d) == 0 && d.n == 2);
    CHECK(strcmp(d.v[0].node, "A") == 0 && strcmp(d.v[0].id, "vm1") == 0);
    CHECK(strcmp(d.v[1].node, "B") == 0 && strcmp(d.v[1].id, "excl") == 0);
    /* A refused replace keeps the old claims. */
    CHECK(ng_nac_replace(nac, "vm1", newcomer, 4, &why) == -1);
    CHECK(strcmp(why.node, "B") == 0 && strcmp(why.new_id, "vm1") == 0 &&
          strcmp(why.new_kind, "export") == 0);
    CHECK(ng_nac_node_state(nac, "A", &req, &deny) == 1);
    CHECK(req == (RD | RM | WD) && deny == WD);
    CHECK(ng_nac_count_nodes(nac) == 2);
    /* Without B it goes in, on all of A, C, D. */
    CHECK(ng_nac_release(nac, "excl") == 0);
    CHECK(ng_nac_acquire(nac, "new", "job", "", newcomer, 4, &why) == 0);
    CHECK(ng_nac_count_nodes(nac) == 4);
    ng_nac_free(nac);
    printf("PASS: a half-conflicting request changes nothing\n");
}

/* ---- Messages, duplicates, log lines ---------------------------------- */

static void
test_messages(void)
{
    struct ng_nac *nac = new_nac();
    const struct ng_nac_claim vm1 = { "disk0", RD | RM | WD,
                                      RD | RM | WM | GM };
    const struct ng_nac_claim mirror0 = { "disk0", RD | WD, ALL };
    struct ng_nac_conflict why;
    char msg[512];
    int len;

    /* The job comes second: the new one requires. */
    CHECK(ng_nac_acquire(nac, "vm1", "export", "", &vm1, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "mirror0", "job", "", &mirror0, 1, &why) ==
          -1);
    CHECK(why.new_requires && why.action == WD);
    len = ng_nac_conflict_render(&why, msg, sizeof msg);
    CHECK(strcmp(msg, "node 'disk0': job 'mirror0' requires write-data, "
                 "which export 'vm1' does not allow") == 0);
    CHECK(len == (int) strlen(msg));
    CHECK(ng_nac_conflict_render(&why, msg, 10) == len);
    CHECK(strcmp(msg, "node 'dis") == 0);
    CHECK(ng_nac_conflict_render(&why, NULL, 0) == len);

    /* The export comes second: the holder requires; same sentence. */
    CHECK(ng_nac_release(nac, "vm1") == 0);
    CHECK(ng_nac_acquire(nac, "mirror0", "job", "", &mirror0, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "vm1", "export", "", &vm1, 1, &why) == -1);
    CHECK(!why.new_requires && why.action == WD);
    ng_nac_conflict_render(&why, msg, sizeof msg);
    CHECK(strcmp(msg, "node 'disk0': job 'mirror0' requires write-data, "
                 "which export 'vm1' does not allow") == 0);
    ng_nac_free(nac);

    /* Duplicates merge: require OR, allow AND, no clash with oneself. */
    nac = new_nac();
    {
        const struct ng_nac_claim dup[] = {
            { "n", RD, ALL },
            { "m", 0, ALL },
            { "n", WD, RD | WD },
            { "n", 0, RD | WD | GM },
        };
        struct dump d = { .n = 0 };
        unsigned req, deny;

        CHECK(ng_nac_acquire(nac, "j", "job", "", dup, 4, NULL) == 0);
        CHECK(ng_nac_node_state(nac, "n", &req, &deny) == 1);
        CHECK(req == (RD | WD) && deny == (RM | WM | GM));
        CHECK(ng_nac_foreach_claim(nac, "j", dump_holding, &d) == 0);
        CHECK(d.n == 2 && strcmp(d.v[0].node, "n") == 0 &&
              d.v[0].require == (RD | WD) && d.v[0].allow == (RD | WD) &&
              strcmp(d.v[1].node, "m") == 0);
    }
    ng_nac_free(nac);
    printf("PASS: refusal messages; duplicate node-names merge\n");
}

struct logcap {
    char lines[8][512];
    size_t n;
};

static void
log_line(void *opaque, const char *line)
{
    struct logcap *l = opaque;

    if (l->n < 8)
        snprintf(l->lines[l->n], sizeof l->lines[0], "%s", line);
    l->n++;
}

static void
expect_log(struct logcap *l, const char *want)
{
    if (l->n != 1)
        fail("expected one log line, got %zu: %s", l->n,
             l->n > 0 ? l->lines[0] : "");
    if (strcmp(l->lines[0], want) != 0)
        fail("log line\n  %s\nshould be\n  %s", l->lines[0], want);
    l->n = 0;
}

static void
test_log(void)
{
    struct ng_nac *nac = new_nac();
    struct logcap l = { .n = 0 };
    const struct ng_nac_claim vm1 = { "disk0", RD | RM | WD,
                                      RD | RM | WM | GM };
    const struct ng_nac_claim mirror0[] = {
        { "disk0", RD | RM | GM, RD | RM | WD | WM },
        { "disk1", RM | WD, RM },
    };
    const struct ng_nac_claim bad = { "disk0", WD, ALL };
    const struct ng_nac_claim gm = { "disk0", GM, ALL };

    ng_nac_set_log(nac, log_line, &l);
    CHECK(ng_nac_acquire(nac, "vm1", "export", NULL, &vm1, 1, NULL) == 0);
    expect_log(&l, "acquire export 'vm1': disk0 require=read-data|read-meta|"
               "write-data allow=read-data|read-meta|write-meta|graph-mod");
    CHECK(ng_nac_acquire(nac, "mirror0", "job", "mirror disk0 to disk1",
                         mirror0, 2, NULL) == 0);
    expect_log(&l, "acquire job 'mirror0' (mirror disk0 to disk1): disk0 "
               "require=read-data|read-meta|graph-mod allow=read-data|"
               "read-meta|write-data|write-meta; disk1 require=read-meta|"
               "write-data allow=read-meta");
    /* Refusals are logged even when the caller passes no `why`. */
    CHECK(ng_nac_acquire(nac, "w", "command", "", &bad, 1, NULL) == -1);
    expect_log(&l, "refuse command 'w': node 'disk0': command 'w' requires "
               "write-data, which export 'vm1' does not allow");
    CHECK(ng_nac_acquire(nac, "vm1", "job", "", &bad, 1, NULL) == -EEXIST);
    expect_log(&l, "refuse job 'vm1': id already held by export 'vm1'");
    CHECK(ng_nac_replace(nac, "vm1", &gm, 1, NULL) == -1);
    expect_log(&l, "refuse export 'vm1': node 'disk0': export 'vm1' "
               "requires graph-mod, which job 'mirror0' does not allow");
    CHECK(ng_nac_replace(nac, "vm1", mirror0, 0, NULL) == 0);
    expect_log(&l, "replace export 'vm1': no nodes");
    CHECK(ng_nac_acquire(nac, "c", "command", "", NULL, 0, NULL) == 0);
    expect_log(&l, "acquire command 'c': no nodes");
    /* Quiet: dry runs, unknown IDs, bad arguments. */
    CHECK(ng_nac_check(nac, "w", "command", &gm, 1, NULL) == -1);
    CHECK(ng_nac_release(nac, "nope") == -ENOENT);
    CHECK(ng_nac_acquire(nac, "", "command", "", NULL, 0, NULL) == -EINVAL);
    CHECK(l.n == 0);
    CHECK(ng_nac_release(nac, "mirror0") == 0);
    expect_log(&l, "release job 'mirror0'");
    ng_nac_set_log(nac, NULL, NULL);
    CHECK(ng_nac_release(nac, "vm1") == 0);
    CHECK(l.n == 0);
    ng_nac_free(nac);               /* silent, with 'c' still held */
    CHECK(l.n == 0);
    printf("PASS: log lines\n");
}

/* ---- Walks stop when told --------------------------------------------- */

static int
stop_at_second(void *opaque, const struct ng_nac_holding *h)
{
    int *count = opaque;

    (void) h;
    return ++*count == 2 ? 7 : 0;
}

static int
stop_holder(void *opaque, const struct ng_nac_holder_info *h)
{
    (void) opaque;
    return strcmp(h->id, "b") == 0 ? 9 : 0;
}

static void
test_walks(void)
{
    struct ng_nac *nac = new_nac();
    const struct ng_nac_claim c[] = {
        { "z", 0, ALL }, { "y", 0, ALL }, { "x", 0, ALL },
    };
    struct dump d = { .n = 0 };
    int count = 0;

    CHECK(ng_nac_foreach(nac, stop_at_second, &count) == 0 && count == 0);
    CHECK(ng_nac_acquire(nac, "a", "job", "first", c, 3, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "b", "job", NULL, c, 2, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "c", "job", "", c, 1, NULL) == 0);
    CHECK(ng_nac_foreach(nac, stop_at_second, &count) == 7 && count == 2);
    count = 0;
    CHECK(ng_nac_foreach_claim(nac, "a", stop_at_second, &count) == 7);
    CHECK(ng_nac_foreach_holder(nac, stop_holder, NULL) == 9);
    /* Nodes sorted; holders on a node in claim order. */
    CHECK(ng_nac_foreach(nac, dump_holding, &d) == 0 && d.n == 6);
    CHECK(strcmp(d.v[0].node, "x") == 0 && strcmp(d.v[0].id, "a") == 0);
    CHECK(strcmp(d.v[1].node, "y") == 0 && strcmp(d.v[1].id, "a") == 0);
    CHECK(strcmp(d.v[2].node, "y") == 0 && strcmp(d.v[2].id, "b") == 0);
    CHECK(strcmp(d.v[3].node, "z") == 0 && strcmp(d.v[3].id, "a") == 0);
    CHECK(strcmp(d.v[3].desc, "first") == 0);
    CHECK(strcmp(d.v[4].node, "z") == 0 && strcmp(d.v[4].id, "b") == 0);
    CHECK(strcmp(d.v[4].desc, "") == 0);
    CHECK(strcmp(d.v[5].node, "z") == 0 && strcmp(d.v[5].id, "c") == 0);
    ng_nac_free(nac);
    printf("PASS: walks: order and early stop\n");
}

/* ---- Many holders and nodes: the table grows, lookups stay right ------ */

static void
test_many(void)
{
    struct ng_nac *nac = new_nac();
    char id[32], node[32];
    clock_t t0 = clock();

    for (unsigned i = 0; i < 20000; i++) {
        struct ng_nac_claim c[2] = {
            { node, RD | RM, ALL & ~GM },
            { "shared", RD, ALL },
        };

        snprintf(id, sizeof id, "job%u", i);
        snprintf(node, sizeof node, "node%u", i);
        CHECK(ng_nac_acquire(nac, id, "job", "", c, 2, NULL) == 0);
    }
    CHECK(ng_nac_count_holders(nac) == 20000);
    CHECK(ng_nac_count_nodes(nac) == 20001);
    CHECK(ng_nac_node_state(nac, "shared", NULL, NULL) == 20000);
    for (unsigned i = 0; i < 20000; i++) {
        struct ng_nac_claim c = { node, GM, ALL };
        struct ng_nac_conflict why;

        snprintf(node, sizeof node, "node%u", i);
        CHECK(ng_nac_check(nac, "x", "command", &c, 1, &why) == -1);
        snprintf(id, sizeof id, "job%u", i);
        CHECK(strcmp(why.holder_id, id) == 0);
    }
    for (unsigned i = 0; i < 20000; i += 2) {
        snprintf(id, sizeof id, "job%u", i);
        CHECK(ng_nac_release(nac, id) == 0);
    }
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "job%u", i);
        snprintf(node, sizeof node, "node%u", i);
        CHECK(ng_nac_has_holder(nac, id) == (i % 2 == 1));
        CHECK(ng_nac_node_state(nac, node, NULL, NULL) == i % 2);
    }
    CHECK(ng_nac_count_nodes(nac) == 10001);
    ng_nac_free(nac);
    printf("PASS: 20000 holders (%.0f ms)\n",
           (double) (clock() - t0) * 1000 / CLOCKS_PER_SEC);
}

/* ---- The README's policy and worked examples -------------------------- */

/* Keep in step with the tables in nac/README.md. */
#define EXPORT_RO_REQ   (RD | RM)
#define EXPORT_RO_ALLOW ALL
#define EXPORT_RW_REQ   (RD | RM | WD)
#define EXPORT_RW_ALLOW (RD | RM | WM | GM)
#define MIRROR_SRC_REQ  (RD | RM | GM)
#define MIRROR_SRC_ALLOW (RD | RM | WD | WM)
#define MIRROR_TGT_REQ  (RM | WD)
#define MIRROR_TGT_ALLOW RM
#define COMMIT_OVL_REQ  (WM | GM)
#define COMMIT_OVL_ALLOW (RD | RM | WD)
#define COMMIT_TOP_REQ  (RD | RM | GM)
#define COMMIT_TOP_ALLOW (RD | RM)
#define COMMIT_ACT_ALLOW (RD | RM | WD | WM)
#define COMMIT_MID_REQ  (RD | RM | GM)
#define COMMIT_MID_ALLOW (RD | RM)
#define COMMIT_BASE_REQ (RD | RM | WD)
#define COMMIT_BASE_ALLOW (RD | RM)
#define STREAM_TOP_REQ  (RD | RM | WM | GM)
#define STREAM_TOP_ALLOW (RD | RM | WD)
#define STREAM_MID_REQ  (RD | RM | GM)
#define STREAM_MID_ALLOW (RD | RM)
#define STREAM_BASE_REQ (RD | RM)
#define STREAM_BASE_ALLOW (RD | RM | WM)
#define BACKUP_SRC_REQ  (RD | RM | GM)
#define BACKUP_SRC_ALLOW (RD | RM | WD | WM)
#define BACKUP_TGT_REQ  (RM | WD)
#define BACKUP_TGT_ALLOW (RD | RM)

static void
expect_refusal(struct ng_nac *nac, const char *id,
               const struct ng_nac_claim *c, size_t n, const char *want)
{
    struct ng_nac_conflict why;
    char msg[512];
    int r = ng_nac_acquire(nac, id, "job", "", c, n, &why);

    if (r != -1)
        fail("'%s' should be refused with \"%s\", got %d", id, want, r);
    ng_nac_conflict_render(&why, msg, sizeof msg);
    if (strcmp(msg, want) != 0)
        fail("'%s' refused with\n  %s\nnot\n  %s", id, msg, want);
}

static void
test_readme(void)
{
    struct ng_nac *nac = new_nac();
    const struct ng_nac_claim vm1 = { "disk0", EXPORT_RW_REQ,
                                      EXPORT_RW_ALLOW };
    const struct ng_nac_claim vm2 = { "disk1", EXPORT_RW_REQ,
                                      EXPORT_RW_ALLOW };
    const struct ng_nac_claim mirror0[] = {
        { "disk0", MIRROR_SRC_REQ, MIRROR_SRC_ALLOW },
        { "disk0-new", MIRROR_TGT_REQ, MIRROR_TGT_ALLOW },
    };
    const struct ng_nac_claim mirror1[] = {
        { "disk1", MIRROR_SRC_REQ, MIRROR_SRC_ALLOW },
        { "disk1-new", MIRROR_TGT_REQ, MIRROR_TGT_ALLOW },
    };
    const struct ng_nac_claim vm3 = { "top", EXPORT_RW_REQ,
                                      EXPORT_RW_ALLOW };
    const struct ng_nac_claim mirror2[] = {
        { "top", MIRROR_SRC_REQ, MIRROR_SRC_ALLOW },
        { "top-copy", MIRROR_TGT_REQ, MIRROR_TGT_ALLOW },
    };
    const struct ng_nac_claim commit0[] = {
        { "top", COMMIT_OVL_REQ, COMMIT_OVL_ALLOW },
        { "mid", COMMIT_TOP_REQ, COMMIT_TOP_ALLOW },
        { "base", COMMIT_BASE_REQ, COMMIT_BASE_ALLOW },
    };
    const struct ng_nac_claim ro = { "disk0", EXPORT_RO_REQ,
                                     EXPORT_RO_ALLOW };
    const struct ng_nac_claim rw2 = { "disk0", EXPORT_RW_REQ,
                                      EXPORT_RW_ALLOW };
    const struct ng_nac_claim ro_tgt = { "disk0-new", EXPORT_RO_REQ,
                                         EXPORT_RO_ALLOW };

    /* Example 1: two mirrors of different disks run together. */
    CHECK(ng_nac_acquire(nac, "vm1", "export", "", &vm1, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "vm2", "export", "", &vm2, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "mirror0", "job", "", mirror0, 2, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "mirror1", "job", "", mirror1, 2, NULL) == 0);
    /* ... a read-only export may join the live disk, not the target. */
    CHECK(ng_nac_acquire(nac, "ro", "export", "", &ro, 1, NULL) == 0);
    CHECK(ng_nac_check(nac, "rw2", "export", &rw2, 1, NULL) == -1);
    expect_refusal(nac, "ro2", &ro_tgt, 1, "node 'disk0-new': job 'ro2' "
                   "requires read-data, which job 'mirror0' does not allow");
    /* ... a second mirror of disk0 is refused. */
    expect_refusal(nac, "mirror9", mirror0, 2, "node 'disk0': job 'mirror9' "
                   "requires graph-mod, which job 'mirror0' does not allow");

    /* Example 2: base <- mid <- top, vm3 writes top.  A mirror of top and
     * a commit of mid into base refuse each other, whichever comes
     * first. */
    CHECK(ng_nac_acquire(nac, "vm3", "export", "", &vm3, 1, NULL) == 0);
    CHECK(ng_nac_acquire(nac, "mirror2", "job", "", mirror2, 2, NULL) == 0);
    expect_refusal(nac, "commit0", commit0, 3, "node 'top': job 'commit0' "
                   "requires graph-mod, which job 'mirror2' does not allow");
    CHECK(ng_nac_release(nac, "mirror2") == 0);
    CHECK(ng_nac_acquire(nac, "commit0", "job", "", commit0, 3, NULL) == 0);
    expect_refusal(nac, "mirror2", mirror2, 2, "node 'top': job 'mirror2' "
                   "requires graph-mod, which job 'commit0' does not allow");
    ng_nac_free(nac);

    /* More of the table: two streams share a golden base; a commit into
     * that base is refused; backup with a fleecing export. */
    nac = new_nac();
    {
        const struct ng_nac_claim s1[] = {
            { "vm1-top", STREAM_TOP_REQ, STREAM_TOP_ALLOW },
            { "golden", STREAM_BASE_REQ, STREAM_BASE_ALLOW },
        };
        const struct ng_nac_claim s2[] = {
            { "vm2-top", STREAM_TOP_REQ, STREAM_TOP_ALLOW },
            { "vm2-mid", STREAM_MID_REQ, STREAM_MID_ALLOW },
            { "golden", STREAM_BASE_REQ, STREAM_BASE_ALLOW },
        };
        const struct ng_nac_claim e1 = { "vm1-top", EXPORT_RW_REQ,
                                         EXPORT_RW_ALLOW };
        const struct ng_nac_claim c3[] = {
            { "vm3-top", COMMIT_TOP_REQ, COMMIT_ACT_ALLOW },
            { "golden", COMMIT_BASE_REQ, COMMIT_BASE_ALLOW },
        };
        const struct ng_nac_claim b[] = {
            { "disk5", BACKUP_SRC_REQ, BACKUP_SRC_ALLOW },
            { "fleece", BACKUP_TGT_REQ, BACKUP_TGT_ALLOW },
        };
        const struct ng_nac_claim e5 = { "disk5", EXPORT_RW_REQ,
                                         EXPORT_RW_ALLOW };
        const struct ng_nac_claim fl = { "fleece", EXPORT_RO_REQ,
                                         EXPORT_RO_ALLOW };

        CHECK(ng_nac_acquire(nac, "e1", "export", "", &e1, 1, NULL) == 0);
        CHECK(ng_nac_acquire(nac, "stream1", "job", "", s1, 2, NULL) == 0);
        CHECK(ng_nac_acquire(nac, "stream2", "job", "", s2, 3, NULL) == 0);
        expect_refusal(nac, "commit3", c3, 2, "node 'golden': job 'commit3' "
                       "requires write-data, which job 'stream1' does not "
                       "allow");
        CHECK(ng_nac_acquire(nac, "e5", "export", "", &e5, 1, NULL) == 0);
        CHECK(ng_nac_acquire(nac, "backup0", "job", "", b, 2, NULL) == 0);
        CHECK(ng_nac_acquire(nac, "fleece", "export", "", &fl, 1, NULL) ==
              0);
    }
    ng_nac_free(nac);
    printf("PASS: README policy examples\n");
}

int
main(void)
{
    clock_t t0 = clock();

    test_names();
    test_invalid();
    test_messages();
    test_log();
    test_walks();
    test_unique_ids();
    test_half_conflict();
    test_release_restores();
    test_readme();
    test_exhaustive_two();
    test_random_three();
    test_model_random();
    test_many();
    printf("test-nac: all passed in %.2f s of CPU\n",
           (double) (clock() - t0) / CLOCKS_PER_SEC);
    return 0;
}
