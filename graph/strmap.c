/* graph/strmap.c: see strmap.h. */
#include <config.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "graph/strmap.h"

#define STRMAP_MIN_CAP 16

/* FNV-1a: short keys, no attacker-chosen flood worth defending against
 * here (names come from the admin's config and control socket). */
static uint64_t
strmap_hash(const char *key)
{
    uint64_t h = 0xcbf29ce484222325u;

    for (; *key != '\0'; key++) {
        h ^= (unsigned char)*key;
        h *= 0x100000001b3u;
    }
    return h;
}

/* The slot holding `key`, or the empty slot where it would go. */
static struct ng_strmap_slot *
strmap_probe(const struct ng_strmap *m, const char *key, uint64_t hash)
{
    size_t mask = m->cap - 1, i = (size_t)hash & mask;

    while (m->slots[i].key != NULL &&
           (m->slots[i].hash != hash || strcmp(m->slots[i].key, key) != 0))
        i = (i + 1) & mask;
    return &m->slots[i];
}

static int
strmap_resize(struct ng_strmap *m, size_t cap)
{
    struct ng_strmap_slot *old = m->slots;
    size_t old_cap = m->cap, i;

    m->slots = calloc(cap, sizeof *m->slots);
    if (m->slots == NULL) {
        m->slots = old;
        return -1;
    }
    m->cap = cap;
    for (i = 0; i < old_cap; i++)
        if (old[i].key != NULL)
            *strmap_probe(m, old[i].key, old[i].hash) = old[i];
    free(old);
    return 0;
}

void
ng_strmap_clear(struct ng_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

void *
ng_strmap_get(const struct ng_strmap *m, const char *key)
{
    if (m->n == 0)
        return NULL;
    return strmap_probe(m, key, strmap_hash(key))->value;
}

int
ng_strmap_put(struct ng_strmap *m, const char *key, void *value)
{
    uint64_t hash = strmap_hash(key);
    struct ng_strmap_slot *s = m->cap ? strmap_probe(m, key, hash) : NULL;

    if (s == NULL || s->key == NULL) {
        /* A new key.  Keep at most half the slots full, so probes stay
         * short; a replacement never grows the table (nor fails). */
        if (2 * (m->n + 1) > m->cap) {
            if (strmap_resize(m, m->cap ? 2 * m->cap : STRMAP_MIN_CAP) == -1)
                return -1;
            s = strmap_probe(m, key, hash);
        }
        m->n++;
    }
    *s = (struct ng_strmap_slot){ .key = key, .hash = hash, .value = value };
    return 0;
}

/* Can the entry at j, whose home slot is `home`, move back to the hole at
 * i?  Only if its home does not lie cyclically in (i, j]. */
static bool
strmap_may_fill(size_t i, size_t j, size_t home)
{
    if (i <= j)
        return home <= i || home > j;
    return home <= i && home > j;
}

void *
ng_strmap_del(struct ng_strmap *m, const char *key)
{
    struct ng_strmap_slot *s;
    size_t mask, i, j;
    void *value;

    if (m->n == 0)
        return NULL;
    s = strmap_probe(m, key, strmap_hash(key));
    if (s->key == NULL)
        return NULL;
    value = s->value;
    mask = m->cap - 1;
    i = (size_t)(s - m->slots);
    /* Shift the rest of the probe run back over the hole, so lookups
     * never need to step over deleted slots. */
    for (j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        if (strmap_may_fill(i, j, (size_t)m->slots[j].hash & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i] = (struct ng_strmap_slot){ .key = NULL };
    m->n--;
    return value;
}
