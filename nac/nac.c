/* nac/nac.c: Node Access Control, see nac.h.
 *
 * Layout.  The registry keeps two hash tables keyed by string: node-names
 * and holder IDs.  A holder owns an array of entries, one per distinct
 * node it claims; each entry is also linked into its node's list, so a
 * node knows its holders (for naming one in a refusal and for query-nac)
 * and a holder knows its nodes (for release).
 *
 * Go/no-go.  Each node keeps, per action, how many holders require it and
 * how many do NOT allow it, and two masks saying which of those counts
 * are non-zero.  A claim on that node is then refused exactly when
 *   (require & denied) | (~allow & required)
 * is not 0 — one lookup and two ANDs per node named, whatever the number
 * of holders.  Only a refusal walks the node's holders, to name one.
 *
 * A node exists in the table only while some holder names it, so an
 * empty registry holds no nodes (acquire may create nodes and drop them
 * again when it runs out of memory half-way).
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nac/nac.h"

/* -1 is both "refused" and -EPERM; see nac.h. */
static_assert(EPERM == 1, "refusal must be -EPERM");

static const char *const nac_action_names[NG_NAC_N_ACTIONS] = {
    "read-data",
    "read-meta",
    "write-data",
    "write-meta",
    "graph-mod",
};

/* ---- Action names ----------------------------------------------------- */

const char *
ng_nac_action_name(unsigned action)
{
    for (size_t i = 0; i < NG_NAC_N_ACTIONS; i++) {
        if (action == 1u << i)
            return nac_action_names[i];
    }
    return NULL;
}

unsigned
ng_nac_action_from_name(const char *name)
{
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < NG_NAC_N_ACTIONS; i++) {
        if (strcmp(name, nac_action_names[i]) == 0)
            return 1u << i;
    }
    return 0;
}

size_t
ng_nac_mask_names(unsigned mask, const char *names[NG_NAC_N_ACTIONS])
{
    size_t n = 0;

    for (size_t i = 0; i < NG_NAC_N_ACTIONS; i++) {
        if (mask & (1u << i))
            names[n++] = nac_action_names[i];
    }
    return n;
}

int
ng_nac_mask_format(unsigned mask, char *buf, size_t len)
{
    const char *names[NG_NAC_N_ACTIONS];
    size_t n = ng_nac_mask_names(mask, names);
    size_t need = 0;

    if (n == 0)
        return snprintf(buf, len, "none");
    if (len > 0)
        buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *sep = i > 0 ? "|" : "";
        char *at = need < len ? buf + need : NULL;

        need += (size_t) snprintf(at, at != NULL ? len - need : 0, "%s%s",
                                  sep, names[i]);
    }
    return (int) need;
}

int
ng_nac_mask_parse(const char *s, unsigned *mask)
{
    unsigned m = 0;

    if (s == NULL || *s == '\0')
        return -EINVAL;
    if (strcmp(s, "none") == 0) {
        *mask = 0;
        return 0;
    }
    while (true) {
        size_t len = strcspn(s, "|,");
        size_t i;

        for (i = 0; i < NG_NAC_N_ACTIONS; i++) {
            if (strlen(nac_action_names[i]) == len &&
                memcmp(s, nac_action_names[i], len) == 0)
                break;
        }
        if (i == NG_NAC_N_ACTIONS)
            return -EINVAL;         /* unknown or empty item */
        m |= 1u << i;
        if (s[len] == '\0')
            break;
        s += len + 1;
    }
    *mask = m;
    return 0;
}

int
ng_nac_conflict_render(const struct ng_nac_conflict *why,
                       char *buf, size_t len)
{
    const char *skind, *sid, *okind, *oid;
    char action[64];

    /* The one who requires comes first. */
    if (why->new_requires) {
        skind = why->new_kind;
        sid = why->new_id;
        okind = why->holder_kind;
        oid = why->holder_id;
    }
    else {
        skind = why->holder_kind;
        sid = why->holder_id;
        okind = why->new_kind;
        oid = why->new_id;
    }
    ng_nac_mask_format(why->action, action, sizeof action);
    return snprintf(buf, len,
                    "node '%s': %s '%s' requires %s, which %s '%s' "
                    "does not allow",
                    why->node, skind, sid, action, okind, oid);
}

/* ---- A string-keyed hash table with intrusive chains ------------------ */

/* First member of every object kept in a table, so a link pointer is the
 * object pointer.  Inserting never allocates; growing is best effort. */
struct nac_link {
    struct nac_link *next;          /* bucket chain */
    const char *key;                /* owned by the object */
    size_t hash;
};

struct nac_table {
    struct nac_link **buckets;      /* owned */
    size_t nbuckets;                /* a power of two */
    size_t count;
};

#define NAC_TABLE_MIN 16

static size_t
nac_hash(const char *s)
{
    uint64_t h = 14695981039346656037u;     /* FNV-1a */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char) *s;
        h *= 1099511628211u;
    }
    return (size_t) (h ^ (h >> 32));
}

static int
nac_table_init(struct nac_table *t)
{
    t->buckets = calloc(NAC_TABLE_MIN, sizeof *t->buckets);
    if (t->buckets == NULL)
        return -ENOMEM;
    t->nbuckets = NAC_TABLE_MIN;
    t->count = 0;
    return 0;
}

static struct nac_link *
nac_table_find(const struct nac_table *t, const char *key)
{
    size_t h = nac_hash(key);
    struct nac_link *l = t->buckets[h & (t->nbuckets - 1)];

    for (; l != NULL; l = l->next) {
        if (l->hash == h && strcmp(l->key, key) == 0)
            return l;
    }
    return NULL;
}

/* Double the buckets when the load reaches 1; keep them if that fails,
 * which only makes chains longer. */
static void
nac_table_grow(struct nac_table *t)
{
    size_t nb = t->nbuckets * 2;
    struct nac_link **b;

    if (t->count < t->nbuckets || nb < t->nbuckets)
        return;
    b = calloc(nb, sizeof *b);
    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct nac_link *l = t->buckets[i], *next;

        for (; l != NULL; l = next) {
            next = l->next;
            l->next = b[l->hash & (nb - 1)];
            b[l->hash & (nb - 1)] = l;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

/* `l->key` must be set and not yet in the table. */
static void
nac_table_insert(struct nac_table *t, struct nac_link *l)
{
    struct nac_link **b;

    nac_table_grow(t);
    l->hash = nac_hash(l->key);
    b = &t->buckets[l->hash & (t->nbuckets - 1)];
    l->next = *b;
    *b = l;
    t->count++;
}

static void
nac_table_remove(struct nac_table *t, struct nac_link *l)
{
    struct nac_link **p = &t->buckets[l->hash & (t->nbuckets - 1)];

    while (*p != l)
        p = &(*p)->next;
    *p = l->next;
    t->count--;
}

/* ---- Registry objects ------------------------------------------------- */

struct nac_holder;

struct nac_node {
    struct nac_link link;           /* first; key = name */
    char *name;                     /* owned */
    size_t nentries;                /* holders naming this node */
    size_t nrequire[NG_NAC_N_ACTIONS];  /* holders requiring action i */
    size_t ndeny[NG_NAC_N_ACTIONS];     /* holders not allowing action i */
    unsigned required;              /* bit i: nrequire[i] > 0 */
    unsigned denied;                /* bit i: ndeny[i] > 0 */
    struct nac_entry *head, *tail;  /* its holders' entries, in order */
    /* Scratch while one holder's entries are built or replaced: that
     * holder, and the index of its entry for this node.  NULL between
     * calls, so a stale pointer never matches a later holder. */
    const struct nac_holder *mark;
    size_t mark_idx;
};

struct nac_entry {
    struct nac_node *node;
    struct nac_holder *holder;
    unsigned require;
    unsigned allow;
    struct nac_entry *prev, *next;  /* on the node's list */
};

struct nac_holder {
    struct nac_link link;           /* first; key = id */
    char *id;                       /* owned */
    char *kind;                     /* owned */
    char *desc;                     /* owned, "" when none */
    struct nac_entry *entries;      /* owned, one per distinct node */
    size_t nentries;
    struct nac_holder *prev, *next; /* all holders, oldest first */
    bool excluded;                  /* ng_nac_replace is checking it */
};

struct ng_nac {
    struct nac_table nodes;         /* of struct nac_node */
    struct nac_table holders;       /* of struct nac_holder */
    struct nac_holder *first, *last;
    ng_nac_log_fn *log;
    void *log_opaque;
};

struct ng_nac *
ng_nac_new(void)
{
    struct ng_nac *nac = calloc(1, sizeof *nac);

    if (nac == NULL)
        return NULL;
    if (nac_table_init(&nac->nodes) < 0) {
        free(nac);
        return NULL;
    }
    if (nac_table_init(&nac->holders) < 0) {
        free(nac->nodes.buckets);
        free(nac);
        return NULL;
    }
    return nac;
}

static void
nac_holder_free(struct nac_holder *h)
{
    if (h == NULL)
        return;
    free(h->entries);
    free(h->id);
    free(h->kind);
    free(h->desc);
    free(h);
}

static void
nac_node_free(struct nac_node *nd)
{
    if (nd == NULL)
        return;
    free(nd->name);
    free(nd);
}

void
ng_nac_free(struct ng_nac *nac)
{
    struct nac_holder *h, *hnext;

    if (nac == NULL)
        return;
    for (h = nac->first; h != NULL; h = hnext) {
        hnext = h->next;
        nac_holder_free(h);
    }
    for (size_t i = 0; i < nac->nodes.nbuckets; i++) {
        struct nac_link *l = nac->nodes.buckets[i], *lnext;

        for (; l != NULL; l = lnext) {
            lnext = l->next;
            nac_node_free((struct nac_node *) l);
        }
    }
    free(nac->nodes.buckets);
    free(nac->holders.buckets);
    free(nac);
}

void
ng_nac_set_log(struct ng_nac *nac, ng_nac_log_fn *log, void *opaque)
{
    nac->log = log;
    nac->log_opaque = opaque;
}

static struct nac_node *
nac_find_node(const struct ng_nac *nac, const char *name)
{
    return (struct nac_node *) nac_table_find(&nac->nodes, name);
}

static struct nac_holder *
nac_find_holder(const struct ng_nac *nac, const char *id)
{
    return (struct nac_holder *) nac_table_find(&nac->holders, id);
}

/* ---- Aggregates ------------------------------------------------------- */

/* Add (delta = +1) or take away (delta = -1) the entries' share of their
 * nodes' counters, and refresh the masks of those nodes. */
static void
nac_count(const struct nac_entry *e, size_t n, int delta)
{
    for (size_t j = 0; j < n; j++) {
        struct nac_node *nd = e[j].node;

        nd->required = 0;
        nd->denied = 0;
        for (size_t i = 0; i < NG_NAC_N_ACTIONS; i++) {
            unsigned bit = 1u << i;

            if ((e[j].require & bit) && delta > 0)
                nd->nrequire[i]++;
            else if (e[j].require & bit)
                nd->nrequire[i]--;
            if (!(e[j].allow & bit) && delta > 0)
                nd->ndeny[i]++;
            else if (!(e[j].allow & bit))
                nd->ndeny[i]--;
            if (nd->nrequire[i] > 0)
                nd->required |= bit;
            if (nd->ndeny[i] > 0)
                nd->denied |= bit;
        }
    }
}

/* The actions on which a claim (require, allow) clashes with the node. */
static unsigned
nac_clash(const struct nac_node *nd, unsigned require, unsigned allow)
{
    return (require & nd->denied) | (~allow & nd->required & NG_NAC_ALL);
}

/* ---- Checking --------------------------------------------------------- */

/* Non-empty and shorter than NG_NAC_NAME_MAX (memchr stops at the first
 * match, so it never reads past the string). */
static bool
nac_name_ok(const char *s)
{
    return s != NULL && *s != '\0' &&
        memchr(s, '\0', NG_NAC_NAME_MAX) != NULL;
}

static int
nac_claims_ok(const struct ng_nac_claim *claims, size_t n)
{
    if (n > 0 && claims == NULL)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!nac_name_ok(claims[i].node) ||
            (claims[i].require & ~NG_NAC_ALL) != 0 ||
            (claims[i].allow & ~NG_NAC_ALL) != 0)
            return -EINVAL;
    }
    return 0;
}

static void
nac_copy_name(char dst[NG_NAC_NAME_MAX], const char *src)
{
    size_t len = strlen(src);

    assert(len < NG_NAC_NAME_MAX);  /* names were checked to fit */
    memcpy(dst, src, len + 1);
}

/* Fill *why for a clash of claim c on node nd; `bits` is nac_clash's
 * answer.  Walks the node's holders: refusals only. */
static void
nac_explain(const struct nac_node *nd, const struct ng_nac_claim *c,
            unsigned bits, const char *id, const char *kind,
            struct ng_nac_conflict *why)
{
    unsigned action = bits & -bits;             /* lowest */
    bool new_requires = (c->require & action & nd->denied) != 0;
    const struct nac_entry *e;

    for (e = nd->head; e != NULL; e = e->next) {
        if (e->holder->excluded)
            continue;
        if (new_requires ? !(e->allow & action) : (e->require & action))
            break;
    }
    assert(e != NULL);              /* the counters say one exists */
    memset(why, 0, sizeof *why);
    nac_copy_name(why->node, nd->name);
    nac_copy_name(why->holder_id, e->holder->id);
    nac_copy_name(why->holder_kind, e->holder->kind);
    nac_copy_name(why->new_id, id);
    nac_copy_name(why->new_kind, kind);
    why->action = action;
    why->new_requires = new_requires;
}

/* The rule itself.  Checking the entries one by one gives the answer for
 * the merged claim: the merged clash is
 *   (OR r_i & denied) | (~AND a_i & required)
 *     = OR_i ((r_i & denied) | (~a_i & required)),
 * so no merging (and no allocation) is needed here. */
static int
nac_check_claims(const struct ng_nac *nac, const char *id, const char *kind,
                 const struct ng_nac_claim *claims, size_t n,
                 struct ng_nac_conflict *why)
{
    for (size_t i = 0; i < n; i++) {
        const struct nac_node *nd = nac_find_node(nac, claims[i].node);
        unsigned bits;

        if (nd == NULL)
            continue;
        bits = nac_clash(nd, claims[i].require, claims[i].allow);
        if (bits != 0) {
            if (why != NULL)
                nac_explain(nd, &claims[i], bits, id, kind, why);
            return -1;
        }
    }
    return 0;
}

/* ---- Log lines -------------------------------------------------------- */

/* A growing string; on allocation failure it stops growing and the line
 * is not logged. */
struct nac_buf {
    char *s;                        /* owned */
    size_t len, cap;
    bool failed;
};

static void nac_buf_add(struct nac_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
nac_buf_add(struct nac_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t) n >= b->cap - b->len) {
        size_t cap = b->len + (size_t) n + 1;
        char *s;

        cap = cap < 2 * b->cap ? 2 * b->cap : cap;
        s = realloc(b->s, cap);
        if (s == NULL) {
            b->failed = true;
            return;
        }
        b->s = s;
        b->cap = cap;
        va_start(ap, fmt);
        vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t) n;
}

static void
nac_buf_init(struct nac_buf *b)
{
    b->cap = 256;
    b->len = 0;
    b->s = malloc(b->cap);
    b->failed = b->s == NULL;
    if (b->s != NULL)
        b->s[0] = '\0';
}

/* Hand the line to the log hook, and free it. */
static void
nac_buf_log(const struct ng_nac *nac, struct nac_buf *b)
{
    if (!b->failed)
        nac->log(nac->log_opaque, b->s);
    free(b->s);
}

static void
nac_log_claims(const struct ng_nac *nac, const char *verb,
               const struct nac_holder *h)
{
    struct nac_buf b;
    char req[64], allow[64];

    if (nac->log == NULL)
        return;
    nac_buf_init(&b);
    nac_buf_add(&b, "%s %s '%s'", verb, h->kind, h->id);
    if (h->desc[0] != '\0')
        nac_buf_add(&b, " (%s)", h->desc);
    if (h->nentries == 0)
        nac_buf_add(&b, ": no nodes");
    for (size_t i = 0; i < h->nentries; i++) {
        const struct nac_entry *e = &h->entries[i];

        ng_nac_mask_format(e->require, req, sizeof req);
        ng_nac_mask_format(e->allow, allow, sizeof allow);
        nac_buf_add(&b, "%s %s require=%s allow=%s", i == 0 ? ":" : ";",
                    e->node->name, req, allow);
    }
    nac_buf_log(nac, &b);
}

static void
nac_log_refusal(const struct ng_nac *nac, const char *kind, const char *id,
                const struct ng_nac_conflict *why,
                const struct nac_holder *dup)
{
    struct nac_buf b;
    char msg[6 * NG_NAC_NAME_MAX];

    if (nac->log == NULL)
        return;
    nac_buf_init(&b);
    nac_buf_add(&b, "refuse %s '%s': ", kind, id);
    if (dup != NULL) {
        nac_buf_add(&b, "id already held by %s '%s'", dup->kind, dup->id);
    }
    else {
        ng_nac_conflict_render(why, msg, sizeof msg);
        nac_buf_add(&b, "%s", msg);
    }
    nac_buf_log(nac, &b);
}

static void
nac_log_release(const struct ng_nac *nac, const struct nac_holder *h)
{
    struct nac_buf b;

    if (nac->log == NULL)
        return;
    nac_buf_init(&b);
    nac_buf_add(&b, "release %s '%s'", h->kind, h->id);
    nac_buf_log(nac, &b);
}

/* ---- Building and linking a holder's entries -------------------------- */

/* strdup is POSIX, not C11; NULL is copied as "". */
static char *
nac_strdup(const char *s)
{
    size_t len = s != NULL ? strlen(s) + 1 : 1;
    char *d = malloc(len);

    if (d != NULL && s != NULL)
        memcpy(d, s, len);
    else if (d != NULL)
        d[0] = '\0';
    return d;
}

static struct nac_node *
nac_node_new(const char *name)
{
    struct nac_node *nd = calloc(1, sizeof *nd);

    if (nd == NULL)
        return NULL;
    nd->name = nac_strdup(name);
    if (nd->name == NULL) {
        free(nd);
        return NULL;
    }
    nd->link.key = nd->name;
    return nd;
}

/* Drop the nodes no entry is linked to any more. */
static void
nac_drop_if_unused(struct ng_nac *nac, struct nac_node *nd)
{
    if (nd->nentries == 0) {
        nac_table_remove(&nac->nodes, &nd->link);
        nac_node_free(nd);
    }
}

/* Make h's merged entries for the claims, creating the nodes nobody
 * named yet (they stay in the table with no entry until linked).  On
 * success *out (caller owns it, NULL when n is 0) and *nout are set.  On
 * failure the nodes created here are gone again and the registry is as
 * before. */
static int
nac_build(struct ng_nac *nac, const struct nac_holder *h,
          const struct ng_nac_claim *claims, size_t n,
          struct nac_entry **out, size_t *nout)
{
    struct nac_entry *e = NULL;
    size_t m = 0, i;

    if (n > 0) {
        e = calloc(n, sizeof *e);
        if (e == NULL)
            return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        struct nac_node *nd = nac_find_node(nac, claims[i].node);

        if (nd == NULL) {
            nd = nac_node_new(claims[i].node);
            if (nd == NULL)
                goto fail;
            nac_table_insert(&nac->nodes, &nd->link);
        }
        if (nd->mark == h) {        /* named twice: merge, as QEMU does */
            e[nd->mark_idx].require |= claims[i].require;
            e[nd->mark_idx].allow &= claims[i].allow;
            continue;
        }
        nd->mark = h;
        nd->mark_idx = m;
        e[m].node = nd;
        e[m].require = claims[i].require;
        e[m].allow = claims[i].allow;
        m++;
    }
    for (size_t j = 0; j < m; j++)
        e[j].node->mark = NULL;
    *out = e;
    *nout = m;
    return 0;

 fail:
    for (size_t j = 0; j < m; j++) {
        e[j].node->mark = NULL;
        nac_drop_if_unused(nac, e[j].node);
    }
    free(e);
    return -ENOMEM;
}

/* Put entry e on its node's list: before `before` (an entry on the same
 * node), or last when `before` is NULL. */
static void
nac_entry_link(struct nac_entry *e, struct nac_entry *before)
{
    struct nac_node *nd = e->node;

    e->next = before;
    e->prev = before != NULL ? before->prev : nd->tail;
    if (e->prev != NULL)
        e->prev->next = e;
    else
        nd->head = e;
    if (e->next != NULL)
        e->next->prev = e;
    else
        nd->tail = e;
    nd->nentries++;
}

static void
nac_entry_unlink(struct ng_nac *nac, struct nac_entry *e)
{
    struct nac_node *nd = e->node;

    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        nd->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        nd->tail = e->prev;
    nd->nentries--;
    nac_drop_if_unused(nac, nd);
}

/* ---- Acquire, check, replace, release --------------------------------- */

/* What acquire and check share: everything but the change. */
static int
nac_precheck(const struct ng_nac *nac, const char *id, const char *kind,
             const struct ng_nac_claim *claims, size_t n,
             struct ng_nac_conflict *why, const struct nac_holder **dup)
{
    int r;

    *dup = NULL;
    if (!nac_name_ok(id) || !nac_name_ok(kind))
        return -EINVAL;
    r = nac_claims_ok(claims, n);
    if (r < 0)
        return r;
    *dup = nac_find_holder(nac, id);
    if (*dup != NULL)
        return -EEXIST;
    return nac_check_claims(nac, id, kind, claims, n, why);
}

int
ng_nac_check(const struct ng_nac *nac, const char *id, const char *kind,
             const struct ng_nac_claim *claims, size_t n,
             struct ng_nac_conflict *why)
{
    const struct nac_holder *dup;

    return nac_precheck(nac, id, kind, claims, n, why, &dup);
}


int
ng_nac_acquire(struct ng_nac *nac, const char *id, const char *kind,
               const char *desc, const struct ng_nac_claim *claims,
               size_t n, struct ng_nac_conflict *why)
{
    const struct nac_holder *dup;
    struct ng_nac_conflict local;
    struct nac_holder *h;
    int r;

    /* The log wants the reason even when the caller does not. */
    if (why == NULL && nac->log != NULL)
        why = &local;
    r = nac_precheck(nac, id, kind, claims, n, why, &dup);
    if (r == -1 || r == -EEXIST)
        nac_log_refusal(nac, kind, id, why, dup);
    if (r < 0)
        return r;

    h = calloc(1, sizeof *h);
    if (h == NULL)
        return -ENOMEM;
    h->id = nac_strdup(id);
    h->kind = nac_strdup(kind);
    h->desc = nac_strdup(desc);
    if (h->id == NULL || h->kind == NULL || h->desc == NULL ||
        nac_build(nac, h, claims, n, &h->entries, &h->nentries) < 0) {
        nac_holder_free(h);
        return -ENOMEM;
    }

    /* From here on nothing can fail. */
    for (size_t i = 0; i < h->nentries; i++) {
        h->entries[i].holder = h;
        nac_entry_link(&h->entries[i], NULL);
    }
    nac_count(h->entries, h->nentries, +1);
    h->link.key = h->id;
    nac_table_insert(&nac->holders, &h->link);
    h->prev = nac->last;
    if (nac->last != NULL)
        nac->last->next = h;
    else
        nac->first = h;
    nac->last = h;
    nac_log_claims(nac, "acquire", h);
    return 0;
}

int
ng_nac_replace(struct ng_nac *nac, const char *id,
               const struct ng_nac_claim *claims, size_t n,
               struct ng_nac_conflict *why)
{
    struct ng_nac_conflict local;
    struct nac_holder *h;
    struct nac_entry *e, *old;
    size_t m, nold;
    int r;

    if (!nac_name_ok(id) || nac_claims_ok(claims, n) < 0)
        return -EINVAL;
    h = nac_find_holder(nac, id);
    if (h == NULL)
        return -ENOENT;
    if (why == NULL && nac->log != NULL)
        why = &local;

    /* Check against everybody else: take h's share out of the counters
     * (and skip h when naming a holder), then put it back. */
    nac_count(h->entries, h->nentries, -1);
    h->excluded = true;
    r = nac_check_claims(nac, h->id, h->kind, claims, n, why);
    h->excluded = false;
    if (r == 0)
        r = nac_build(nac, h, claims, n, &e, &m);
    if (r < 0) {
        nac_count(h->entries, h->nentries, +1);
        if (r == -1)
            nac_log_refusal(nac, h->kind, h->id, why, NULL);
        return r;
    }

    /* Link the new entries, each in the old one's place where there is
     * one, then drop the old ones (their counts are already out). */
    old = h->entries;
    nold = h->nentries;
    for (size_t j = 0; j < nold; j++) {
        old[j].node->mark = h;
        old[j].node->mark_idx = j;
    }
    for (size_t j = 0; j < m; j++) {
        struct nac_node *nd = e[j].node;

        e[j].holder = h;
        nac_entry_link(&e[j], nd->mark == h ? &old[nd->mark_idx] : NULL);
    }
    for (size_t j = 0; j < nold; j++)
        old[j].node->mark = NULL;
    nac_count(e, m, +1);
    for (size_t j = 0; j < nold; j++)
        nac_entry_unlink(nac, &old[j]);
    free(old);
    h->entries = e;
    h->nentries = m;
    nac_log_claims(nac, "replace", h);
    return 0;
}

int
ng_nac_release(struct ng_nac *nac, const char *id)
{
    struct nac_holder *h = id != NULL ? nac_find_holder(nac, id) : NULL;

    if (h == NULL)
        return -ENOENT;
    nac_log_release(nac, h);
    nac_count(h->entries, h->nentries, -1);
    for (size_t i = 0; i < h->nentries; i++)
        nac_entry_unlink(nac, &h->entries[i]);
    nac_table_remove(&nac->holders, &h->link);
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        nac->first = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    else
        nac->last = h->prev;
    nac_holder_free(h);
    return 0;
}

/* ---- Looking inside --------------------------------------------------- */

size_t
ng_nac_count_holders(const struct ng_nac *nac)
{
    return nac->holders.count;
}

size_t
ng_nac_count_nodes(const struct ng_nac *nac)
{
    return nac->nodes.count;
}

bool
ng_nac_has_holder(const struct ng_nac *nac, const char *id)
{
    return id != NULL && nac_find_holder(nac, id) != NULL;
}

size_t
ng_nac_node_state(const struct ng_nac *nac, const char *node,
                  unsigned *required, unsigned *denied)
{
    const struct nac_node *nd = node != NULL ? nac_find_node(nac, node)
                                             : NULL;

    if (required != NULL)
        *required = nd != NULL ? nd->required : 0;
    if (denied != NULL)
        *denied = nd != NULL ? nd->denied : 0;
    return nd != NULL ? nd->nentries : 0;
}

static int
nac_visit(const struct nac_entry *e, ng_nac_holding_fn *fn, void *opaque)
{
    struct ng_nac_holding v = {
        .node = e->node->name,
        .id = e->holder->id,
        .kind = e->holder->kind,
        .desc = e->holder->desc,
        .require = e->require,
        .allow = e->allow,
    };

    return fn(opaque, &v);
}

static int
nac_node_cmp(const void *a, const void *b)
{
    const struct nac_node *const *x = a, *const *y = b;

    return strcmp((*x)->name, (*y)->name);
}

int
ng_nac_foreach(const struct ng_nac *nac, ng_nac_holding_fn *fn,
               void *opaque)
{
    struct nac_node **v;
    size_t n = 0;
    int r = 0;

    if (nac->nodes.count == 0)
        return 0;
    v = malloc(nac->nodes.count * sizeof *v);
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < nac->nodes.nbuckets; i++) {
        struct nac_link *l = nac->nodes.buckets[i];

        for (; l != NULL; l = l->next)
            v[n++] = (struct nac_node *) l;
    }
    qsort(v, n, sizeof *v, nac_node_cmp);
    for (size_t i = 0; i < n && r == 0; i++) {
        for (const struct nac_entry *e = v[i]->head;
             e != NULL && r == 0; e = e->next)
            r = nac_visit(e, fn, opaque);
    }
    free(v);
    return r;
}

int
ng_nac_foreach_claim(const struct ng_nac *nac, const char *id,
                     ng_nac_holding_fn *fn, void *opaque)
{
    const struct nac_holder *h = id != NULL ? nac_find_holder(nac, id)
                                            : NULL;
    int r = 0;

    if (h == NULL)
        return -ENOENT;
    for (size_t i = 0; i < h->nentries && r == 0; i++)
        r = nac_visit(&h->entries[i], fn, opaque);
    return r;
}

int
ng_nac_foreach_holder(const struct ng_nac *nac, ng_nac_holder_fn *fn,
                      void *opaque)
{
    int r = 0;

    for (const struct nac_holder *h = nac->first; h != NULL && r == 0;
         h = h->next) {
        struct ng_nac_holder_info v = {
            .id = h->id,
            .kind = h->kind,
            .desc = h->desc,
            .nnodes = h->nentries,
        };

        r = fn(opaque, &v);
    }
    return r;
}
