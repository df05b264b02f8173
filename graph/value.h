/* graph/value.h: a small tree of option values that remembers where
 * each value came from.
 *
 * The YAML loader (config/yaml.c) and the QMP control channel (JSON) both
 * turn their input into this tree; drivers and the config model read
 * options only from it, so one option table serves both front ends and
 * every error can name file:line:column.
 */
#ifndef NG_VALUE_H
#define NG_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph/error.h"

struct ng_strmap;

enum ng_value_kind {
    NG_VALUE_SCALAR,        /* text; JSON numbers and booleans become text */
    NG_VALUE_MAP,           /* ordered keys -> values */
    NG_VALUE_LIST,
};

struct ng_loc {
    const char *file;       /* NULL when the value did not come from a file;
                             * borrowed: points into the owning document */
    unsigned line;          /* 1-based */
    unsigned column;        /* 1-based */
};

struct ng_value {
    enum ng_value_kind kind;
    struct ng_loc loc;
    char *text;                 /* SCALAR: NUL-terminated, part of the
                                 * value's allocation (freed with it) */
    bool is_null;               /* SCALAR: YAML ~/null or JSON null */
    size_t n;                   /* MAP, LIST: number of items */
    size_t cap;
    char **keys;                /* MAP: owned key strings */
    struct ng_loc *key_locs;    /* MAP: where each key was written */
    struct ng_value **items;    /* MAP, LIST: owned children; the array
                                 * is one allocation with keys and
                                 * key_locs (only value.c grows them) */
    struct ng_strmap *index;    /* MAP: key -> position + 1, owned; built
                                 * once the map grows past a few keys, so
                                 * big maps (nodes:, exports:) are not
                                 * searched key by key */
};

/* Constructors: the new value is owned by the caller (or by the container
 * it is appended to).  `loc.file` is borrowed and must outlive the tree. */
struct ng_value *ng_value_new_scalar(const char *text, struct ng_loc loc);
struct ng_value *ng_value_new_map(struct ng_loc loc);
struct ng_value *ng_value_new_list(struct ng_loc loc);
/* Takes ownership of `item` even on failure.  Returns -1 on ENOMEM. */
int ng_value_map_put(struct ng_value *map, const char *key,
                     struct ng_loc key_loc, struct ng_value *item);
/* The same with `key` owned (taken even on failure): no copy of it. */
int ng_value_map_put_key(struct ng_value *map, char *key,
                         struct ng_loc key_loc, struct ng_value *item);
/* Remove entry i of `map` (a map, i < n) and return its value, now the
 * caller's; later entries move up one. */
struct ng_value *ng_value_map_take(struct ng_value *map, size_t i);
int ng_value_list_append(struct ng_value *list, struct ng_value *item);
struct ng_value *ng_value_copy(const struct ng_value *v);
void ng_value_free(struct ng_value *v);     /* NULL-safe */

/* Lookups: borrowed results, NULL when absent or not a map.  When a key
 * occurs twice (ng_value_map_put does not refuse that), the first one
 * counts. */
struct ng_value *ng_value_get(const struct ng_value *map, const char *key);
/* Index of key in map, or -1. */
ptrdiff_t ng_value_index(const struct ng_value *map, const char *key);

/* Set *err to "file:line:column: <message>" (or just the message when the
 * value has no file location); returns -1. */
int ng_value_error(struct ng_error *err, const struct ng_loc *loc,
                   const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Typed readers.  Each fails with a located error naming `what` (usually
 * the key) when the value has the wrong type or range. */
int ng_value_to_bool(const struct ng_value *v, const char *what, bool *out,
                     struct ng_error *err);
int ng_value_to_int64(const struct ng_value *v, const char *what,
                      int64_t *out, struct ng_error *err);
/* Sizes, in QEMU's grammar: plain bytes or a number (a fraction allowed)
 * with one suffix letter B/K/M/G/T/P/E (powers of 1024), e.g. "512M",
 * "1.5G", "4096"; "1GB" and "1GiB" are refused, as QEMU does. */
int ng_value_to_size(const struct ng_value *v, const char *what,
                     uint64_t *out, struct ng_error *err);
const char *ng_value_to_string(const struct ng_value *v, const char *what,
                               struct ng_error *err);

#endif
