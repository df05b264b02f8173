/* graph/strmap.h: a string-keyed hash map, for lookups by name that
 * must not cost a scan of everything (node-names, export names, the keys
 * of big option maps).
 *
 * Open addressing with linear probing; the table doubles at half full
 * and deletion shifts entries back, so there are no tombstones.  The map
 * owns nothing but its own table: keys are borrowed and must stay valid
 * and unchanged while they are in the map (callers use the name string
 * of the object they store); values are the caller's and never NULL.
 */
#ifndef NG_STRMAP_H
#define NG_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct ng_strmap_slot {
    const char *key;            /* borrowed; NULL = empty slot */
    uint64_t hash;
    void *value;
};

struct ng_strmap {
    struct ng_strmap_slot *slots;   /* owned; NULL until the first put */
    size_t cap;                     /* a power of 2, or 0 */
    size_t n;                       /* entries in use */
};

/* A zeroed struct ng_strmap is an empty map; NG_STRMAP_INIT says so. */
#define NG_STRMAP_INIT { .slots = NULL, .cap = 0, .n = 0 }

/* Frees the table (not the keys or values) and leaves an empty map. */
void ng_strmap_clear(struct ng_strmap *m);

/* The value stored under `key`, or NULL. */
void *ng_strmap_get(const struct ng_strmap *m, const char *key);

/* Store `value` (not NULL) under `key`, replacing the key pointer and
 * value when `key` is there already (that never fails).  Returns 0, or
 * -1 on ENOMEM with the map unchanged. */
int ng_strmap_put(struct ng_strmap *m, const char *key, void *value);

/* Remove `key`; returns its value, or NULL when it was absent. */
void *ng_strmap_del(struct ng_strmap *m, const char *key);

#endif
