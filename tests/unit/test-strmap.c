/* tests/unit/test-strmap.c: graph/strmap.c against a plain array.
 *
 * Puts, replaces and deletes many keys in an order that makes long probe
 * runs wrap round the end of the table, and after each phase checks
 * every key, present and absent, against what an array says.
 */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "graph/strmap.h"

#define N_KEYS 20000

static unsigned failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);        \
            failures++;                                                    \
        }                                                                  \
    } while (0)

struct model {
    char keys[N_KEYS][16];
    int values[N_KEYS];
    bool present[N_KEYS];
};

static void
check_all(const struct ng_strmap *m, const struct model *mod)
{
    size_t i, n = 0, bad = 0;

    for (i = 0; i < N_KEYS; i++) {
        void *v = ng_strmap_get(m, mod->keys[i]);

        if (mod->present[i]) {
            n++;
            bad += v != &mod->values[i];
        } else {
            bad += v != NULL;
        }
    }
    CHECK(bad == 0);
    CHECK(m->n == n);
}

int
main(void)
{
    static struct model mod;
    struct ng_strmap m = NG_STRMAP_INIT;
    size_t i;

    CHECK(ng_strmap_get(&m, "absent") == NULL);
    CHECK(ng_strmap_del(&m, "absent") == NULL);
    for (i = 0; i < N_KEYS; i++)
        snprintf(mod.keys[i], sizeof mod.keys[i], "node%zu", i);

    for (i = 0; i < N_KEYS; i++) {
        CHECK(ng_strmap_put(&m, mod.keys[i], &mod.values[i]) == 0);
        mod.present[i] = true;
    }
    check_all(&m, &mod);

    /* Replacing keeps one entry per key. */
    CHECK(ng_strmap_put(&m, mod.keys[7], &mod.values[7]) == 0);
    CHECK(m.n == N_KEYS);

    /* Delete every third key, then every other of the rest: holes in the
     * middle of probe runs must be closed up. */
    for (i = 0; i < N_KEYS; i += 3) {
        CHECK(ng_strmap_del(&m, mod.keys[i]) == &mod.values[i]);
        mod.present[i] = false;
    }
    check_all(&m, &mod);
    for (i = 1; i < N_KEYS; i += 2) {
        if (mod.present[i]) {
            CHECK(ng_strmap_del(&m, mod.keys[i]) == &mod.values[i]);
            mod.present[i] = false;
        }
    }
    check_all(&m, &mod);
    CHECK(ng_strmap_del(&m, mod.keys[0]) == NULL);

    /* Put them back: the table is reused without growing for ever. */
    for (i = 0; i < N_KEYS; i++) {
        if (!mod.present[i]) {
            CHECK(ng_strmap_put(&m, mod.keys[i], &mod.values[i]) == 0);
            mod.present[i] = true;
        }
    }
    check_all(&m, &mod);
    CHECK(m.cap <= 4 * N_KEYS);

    for (i = 0; i < N_KEYS; i++)
        CHECK(ng_strmap_del(&m, mod.keys[i]) == &mod.values[i]);
    CHECK(m.n == 0);
    ng_strmap_clear(&m);
    CHECK(m.slots == NULL && m.cap == 0);

    if (failures > 0) {
        fprintf(stderr, "%u check(s) failed\n", failures);
        return 1;
    }
    printf("strmap: all checks passed\n");
    return 0;
}
