/* tests/unit/test-nac-nomem.c: make each allocation in nac/nac.c fail in
 * turn.  Every call must then either fail with -ENOMEM and leave the
 * registry exactly as it was, or succeed anyway (growing a hash table and
 * building a log line are best effort) with the same result as when
 * nothing fails.
 *
 * nac.c is compiled into this program with malloc, calloc and realloc
 * redirected, so the library's own object is not used here.
 *
 * Exit 0 on pass, 1 on the first failure (said on stderr).
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocation number `fi_countdown` from now fails; -1: none fails.  A test
 * program's global: the allocator hook has no opaque pointer. */
static long fi_countdown = -1;
static unsigned long fi_failed;

static bool
fi_fail_now(void)
{
    if (fi_countdown < 0)
        return false;
    if (fi_countdown-- > 0)
        return false;
    fi_failed++;
    return true;
}

static void *
fi_malloc(size_t n)
{
    return fi_fail_now() ? NULL : malloc(n);
}

static void *
fi_calloc(size_t n, size_t size)
{
    return fi_fail_now() ? NULL : calloc(n, size);
}

static void *
fi_realloc(void *p, size_t n)
{
    return fi_fail_now() ? NULL : realloc(p, n);
}

#define malloc fi_malloc
#define calloc fi_calloc
#define realloc fi_realloc
#include "nac/nac.c"
#undef malloc
#undef calloc
#undef realloc

#define NAC_TEST_NAME "test-nac-nomem"
#include "tests/unit/nac-test.h"

/* Everything a user of the API can see, as text. */
struct snap {
    char text[65536];
    size_t len;
};

static void
snap_add(struct snap *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
snap_add(struct snap *s, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(s->text + s->len, sizeof s->text - s->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= sizeof s->text - s->len)
        fail("snapshot too long");
    s->len += (size_t) n;
}

static int
snap_holding(void *opaque, const struct ng_nac_holding *h)
{
    snap_add(opaque, "%s %s %s (%s) %#x %#x\n", h->node, h->id, h->kind,
             h->desc, h->require, h->allow);
    return 0;
}

static int
snap_holder(void *opaque, const struct ng_nac_holder_info *h)
{
    snap_add(opaque, "holder %s %s %zu\n", h->id, h->kind, h->nnodes);
    return 0;
}

static const char *const nodes[] = {
    "n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10",
    "n11", "n12", "n13", "n14", "new0", "new1", "nowhere",
};
#define N_NODES (sizeof nodes / sizeof nodes[0])

static void
take(const struct ng_nac *nac, struct snap *s)
{
    long saved = fi_countdown;

    fi_countdown = -1;              /* looking must not fail */
    s->len = 0;
    s->text[0] = '\0';
    if (ng_nac_foreach(nac, snap_holding, s) != 0)
        fail("ng_nac_foreach");
    ng_nac_foreach_holder(nac, snap_holder, s);
    for (size_t i = 0; i < N_NODES; i++) {
        unsigned r, d;
        size_t n = ng_nac_node_state(nac, nodes[i], &r, &d);

        snap_add(s, "%s: %zu %#x %#x\n", nodes[i], n, r, d);
        for (unsigned a = 0; a <= NG_NAC_ALL; a++) {
            struct ng_nac_claim c = { nodes[i], a, NG_NAC_ALL & ~a };
            struct ng_nac_conflict why;

            if (ng_nac_check(nac, "probe", "job", &c, 1, &why) == -1)
                snap_add(s, " %u:%s", a, why.holder_id);
        }
        snap_add(s, "\n");
    }
    snap_add(s, "%zu holders %zu nodes\n", ng_nac_count_holders(nac),
             ng_nac_count_nodes(nac));
    fi_countdown = saved;
}

static void
count_line(void *opaque, const char *line)
{
    unsigned long *n = opaque;

    (void) line;
    ++*n;
}

/* 15 nodes and 16 holders, so that one more of each makes both tables
 * (16 buckets at first) want to grow. */
static struct ng_nac *
setup(unsigned long *lines)
{
    struct ng_nac *nac;
    char id[16];

    fi_countdown = -1;
    nac = ng_nac_new();
    if (nac == NULL)
        fail("ng_nac_new");
    ng_nac_set_log(nac, count_line, lines);
    for (unsigned i = 0; i < 15; i++) {
        struct ng_nac_claim c = { nodes[i], NG_NAC_READ_DATA, NG_NAC_ALL };

        snprintf(id, sizeof id, "h%u", i);
        if (ng_nac_acquire(nac, id, "export", "desc", &c, 1, NULL) != 0)
            fail("setup acquire");
    }
    {
        struct ng_nac_claim c[] = {
            { "n0", NG_NAC_READ_META, NG_NAC_ALL },
            { "n13", NG_NAC_READ_META, NG_NAC_ALL },
        };

        if (ng_nac_acquire(nac, "r", "job", "", c, 2, NULL) != 0)
            fail("setup acquire r");
    }
    return nac;
}

enum op { OP_ACQUIRE, OP_REPLACE, OP_FOREACH, OP_N };

static const char *const op_names[] = { "acquire", "replace", "foreach" };

static int
run(struct ng_nac *nac, enum op op, struct snap *listing)
{
    const struct ng_nac_claim c[] = {
        { "n1", NG_NAC_READ_META, NG_NAC_ALL },
        { "new0", NG_NAC_WRITE_DATA, NG_NAC_READ_META },
        { "new1", NG_NAC_GRAPH_MOD, 0 },
        { "new0", NG_NAC_READ_DATA, NG_NAC_ALL },
    };

    switch (op) {
    case OP_ACQUIRE:
        return ng_nac_acquire(nac, "newcomer", "job", "a long description",
                              c, 4, NULL);
    case OP_REPLACE:
        return ng_nac_replace(nac, "r", c, 4, NULL);
    case OP_FOREACH:
        listing->len = 0;
        return ng_nac_foreach(nac, snap_holding, listing);
    default:
        return -1;
    }
}

int
main(void)
{
    static struct snap before, after, want, list, want_list;

    for (enum op op = 0; op < OP_N; op++) {
        unsigned long lines = 0, nomem = 0, odd = 0;
        struct ng_nac *nac = setup(&lines);
        long k;

        /* What the call does when nothing fails. */
        take(nac, &before);
        CHECK(run(nac, op, &want_list) == 0);
        take(nac, &want);
        ng_nac_free(nac);

        for (k = 0;; k++) {
            int r;

            lines = 0;
            nac = setup(&lines);
            take(nac, &before);
            lines = 0;
            fi_failed = 0;
            fi_countdown = k;
            r = run(nac, op, &list);
            fi_countdown = -1;
            if (r == -ENOMEM) {
                take(nac, &after);
                if (strcmp(before.text, after.text) != 0)
                    fail("%s, allocation %ld failing: -ENOMEM but the "
                         "registry changed", op_names[op], k);
                if (lines != 0)
                    fail("%s, allocation %ld failing: logged on -ENOMEM",
                         op_names[op], k);
                nomem++;
            }
            else if (r == 0) {
                take(nac, &after);
                if (strcmp(want.text, after.text) != 0)
                    fail("%s, allocation %ld failing: succeeded with a "
                         "different result", op_names[op], k);
                if (op == OP_FOREACH && strcmp(list.text, want_list.text))
                    fail("foreach, allocation %ld failing: wrong listing",
                         k);
                odd += fi_failed;   /* best effort: table growth, log */
            }
            else {
                fail("%s, allocation %ld failing: returned %d",
                     op_names[op], k, r);
            }
            ng_nac_free(nac);
            if (fi_failed == 0)
                break;              /* ran past its last allocation */
        }
        printf("PASS: %s with each of %ld allocations failing: %lu -ENOMEM, "
               "%lu succeeded without the allocation\n", op_names[op], k,
               nomem, odd);
    }

    /* ng_nac_new itself. */
    for (long k = 0;; k++) {
        struct ng_nac *nac;

        fi_failed = 0;
        fi_countdown = k;
        nac = ng_nac_new();
        fi_countdown = -1;
        if (nac != NULL) {
            CHECK(ng_nac_count_nodes(nac) == 0);
            ng_nac_free(nac);
            if (fi_failed == 0)
                break;
        }
    }
    printf("PASS: ng_nac_new under allocation failure\n");
    return 0;
}
