/* graph/value.c: see value.h. */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "graph/size.h"
#include "graph/value.h"
#include "graph/strmap.h"

/* Maps with more keys than this get a hash index; smaller ones are
 * searched in order, which is as fast and allocates nothing. */
#define VALUE_INDEX_MIN 8

static struct ng_value *
value_new(enum ng_value_kind kind, struct ng_loc loc)
{
    struct ng_value *v = calloc(1, sizeof *v);

    if (v != NULL) {
        v->kind = kind;
        v->loc = loc;
    }
    return v;
}

/* A scalar and its text are one allocation (a 3,000-node config has
 * some 30,000 scalars: half the mallocs of loading it).  The text sits
 * right after the struct; ng_value_free() knows it by that place. */
struct ng_value *
ng_value_new_scalar(const char *text, struct ng_loc loc)
{
    size_t len = text != NULL ? strlen(text) : 0;
    struct ng_value *v = calloc(1, sizeof *v + len + 1);

    if (v == NULL)
        return NULL;
    v->kind = NG_VALUE_SCALAR;
    v->loc = loc;
    v->text = (char *)(v + 1);
    memcpy(v->text, text != NULL ? text : "", len + 1);
    v->is_null = text == NULL;
    return v;
}

struct ng_value *
ng_value_new_map(struct ng_loc loc)
{
    return value_new(NG_VALUE_MAP, loc);
}

struct ng_value *
ng_value_new_list(struct ng_loc loc)
{
    return value_new(NG_VALUE_LIST, loc);
}

/* Make room for one more item; keys too for maps.  A container's
 * arrays are one allocation, `items` first (then, for a map, `keys` and
 * `key_locs`): one malloc per growth, not three. */
static int
value_grow(struct ng_value *c)
{
    bool map = c->kind == NG_VALUE_MAP;
    size_t cap, per;
    char *block;

    if (c->n < c->cap)
        return 0;
    cap = c->cap ? c->cap * 2 : 4;
    per = sizeof *c->items + (map ? sizeof *c->keys + sizeof *c->key_locs
                                  : 0);
    if ((block = malloc(cap * per)) == NULL)
        return -1;
    if (c->n > 0)               /* (memcpy from NULL is undefined) */
        memcpy(block, c->items, c->n * sizeof *c->items);
    if (map) {
        char **keys = (char **)(block + cap * sizeof *c->items);
        struct ng_loc *locs = (struct ng_loc *)(keys + cap);

        if (c->n > 0) {
            memcpy(keys, c->keys, c->n * sizeof *keys);
            memcpy(locs, c->key_locs, c->n * sizeof *locs);
        }
        c->keys = keys;
        c->key_locs = locs;
    }
    free(c->items);
    c->items = (struct ng_value **)(void *)block;
    c->cap = cap;
    return 0;
}

/* Enter key i in the index, unless an earlier key has the same text. */
static int
index_key(struct ng_value *map, size_t i)
{
    if (ng_strmap_get(map->index, map->keys[i]) != NULL)
        return 0;
    return ng_strmap_put(map->index, map->keys[i],
                         (void *)(uintptr_t)(i + 1));
}

/* Keep the index in step with a key just appended at n - 1; the first
 * time the map is big enough, index every key it has. */
static int
index_update(struct ng_value *map)
{
    size_t i;

    if (map->index != NULL)
        return index_key(map, map->n - 1);
    if (map->n <= VALUE_INDEX_MIN)
        return 0;
    if ((map->index = calloc(1, sizeof *map->index)) == NULL)
        return -1;
    for (i = 0; i < map->n; i++) {
        if (index_key(map, i) == -1) {
            ng_strmap_clear(map->index);
            free(map->index);
            map->index = NULL;
            return -1;
        }
    }
    return 0;
}

int
ng_value_map_put(struct ng_value *map, const char *key, struct ng_loc key_loc,
                 struct ng_value *item)
{
    char *k = strdup(key);

    if (k == NULL) {
        ng_value_free(item);
        return -1;
    }
    return ng_value_map_put_key(map, k, key_loc, item);
}

int
ng_value_map_put_key(struct ng_value *map, char *k, struct ng_loc key_loc,
                     struct ng_value *item)
{
    if (item == NULL || value_grow(map) == -1) {   /* NULL: a failed copy */
        free(k);
        ng_value_free(item);
        return -1;
    }
    map->keys[map->n] = k;
    map->key_locs[map->n] = key_loc;
    map->items[map->n++] = item;
    if (index_update(map) == -1) {
        map->n--;                   /* all or nothing */
        free(k);
        ng_value_free(item);
        return -1;
    }
    return 0;
}

/* The index holds positions: after a removal it is built again. */
static void
index_drop(struct ng_value *map)
{
    if (map->index == NULL)
        return;
    ng_strmap_clear(map->index);
    free(map->index);
    map->index = NULL;
}

struct ng_value *
ng_value_map_take(struct ng_value *map, size_t i)
{
    struct ng_value *item = map->items[i];
    size_t k;

    free(map->keys[i]);
    map->n--;
    memmove(map->keys + i, map->keys + i + 1,
            (map->n - i) * sizeof *map->keys);
    memmove(map->key_locs + i, map->key_locs + i + 1,
            (map->n - i) * sizeof *map->key_locs);
    memmove(map->items + i, map->items + i + 1,
            (map->n - i) * sizeof *map->items);
    if (map->index != NULL) {
        index_drop(map);
        if (map->n > VALUE_INDEX_MIN &&
            (map->index = calloc(1, sizeof *map->index)) != NULL)
            for (k = 0; k < map->n; k++)
                if (index_key(map, k) == -1) {
                    index_drop(map);    /* searched in order instead */
                    break;
                }
    }
    return item;
}

int
ng_value_list_append(struct ng_value *list, struct ng_value *item)
{
    if (value_grow(list) == -1) {
        ng_value_free(item);
        return -1;
    }
    list->items[list->n++] = item;
    return 0;
}

struct ng_value *
ng_value_copy(const struct ng_value *v)
{
    struct ng_value *c;
    size_t i;

    if (v == NULL)
        return NULL;
    if (v->kind == NG_VALUE_SCALAR) {
        c = ng_value_new_scalar(v->is_null ? NULL : v->text, v->loc);
        return c;
    }
    c = value_new(v->kind, v->loc);
    if (c == NULL)
        return NULL;
    for (i = 0; i < v->n; i++) {
        struct ng_value *item = ng_value_copy(v->items[i]);
        int r;

        if (item == NULL) {
            ng_value_free(c);
            return NULL;
        }
        r = v->kind == NG_VALUE_MAP
            ? ng_value_map_put(c, v->keys[i], v->key_locs[i], item)
            : ng_value_list_append(c, item);
        if (r == -1) {
            ng_value_free(c);
            return NULL;
        }
    }
    return c;
}

void
ng_value_free(struct ng_value *v)
{
    size_t i;

    if (v == NULL)
        return;
    for (i = 0; i < v->n; i++) {
        ng_value_free(v->items[i]);
        if (v->keys != NULL)
            free(v->keys[i]);
    }
    free(v->items);             /* and keys, key_locs: value_grow() */
    if (v->text != (char *)(v + 1))     /* not ng_value_new_scalar()'s */
        free(v->text);
    if (v->index != NULL)
        ng_strmap_clear(v->index);
    free(v->index);
    free(v);
}

ptrdiff_t
ng_value_index(const struct ng_value *map, const char *key)
{
    size_t i;

    if (map == NULL || map->kind != NG_VALUE_MAP)
        return -1;
    if (map->index != NULL) {
        uintptr_t pos = (uintptr_t)ng_strmap_get(map->index, key);

        return pos != 0 ? (ptrdiff_t)(pos - 1) : -1;
    }
    /* Most keys differ in their first byte: that test first, strcmp()
     * only for the rest (loading a 3,000-node file looks up tens of
     * thousands of keys in small maps). */
    for (i = 0; i < map->n; i++)
        if (map->keys[i][0] == key[0] && strcmp(map->keys[i], key) == 0)
            return (ptrdiff_t)i;
    return -1;
}

struct ng_value *
ng_value_get(const struct ng_value *map, const char *key)
{
    ptrdiff_t i = ng_value_index(map, key);

    return i < 0 ? NULL : map->items[i];
}

int
ng_value_error(struct ng_error *err, const struct ng_loc *loc,
               const char *fmt, ...)
{
    char msg[NG_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (loc != NULL && loc->file != NULL)
        return ng_error_set(err, EINVAL, "%s:%u:%u: %s", loc->file,
                            loc->line, loc->column, msg);
    return ng_error_set(err, EINVAL, "%s", msg);
}

static const char *
kind_name(enum ng_value_kind kind)
{
    switch (kind) {
    case NG_VALUE_MAP:  return "a mapping";
    case NG_VALUE_LIST: return "a list";
    default:            return "a scalar";
    }
}

static int
expect_scalar(const struct ng_value *v, const char *what, const char *want,
              struct ng_error *err)
{
    if (v->kind == NG_VALUE_SCALAR && !v->is_null)
        return 0;
    return ng_value_error(err, &v->loc, "'%s' must be %s, not %s", what,
                          want, v->is_null ? "null" : kind_name(v->kind));
}

int
ng_value_to_bool(const struct ng_value *v, const char *what, bool *out,
                 struct ng_error *err)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    size_t i;

    if (expect_scalar(v, what, "a boolean", err) == -1)
        return -1;
    for (i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v->text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v->text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return ng_value_error(err, &v->loc, "'%s' must be true or false, not '%s'",
                          what, v->text);
}

int
ng_value_to_int64(const struct ng_value *v, const char *what, int64_t *out,
                  struct ng_error *err)
{
    char *end;
    long long n;

    if (expect_scalar(v, what, "an integer", err) == -1)
        return -1;
    errno = 0;
    n = strtoll(v->text, &end, 0);
    if (errno != 0 || end == v->text || *end != '\0')
        return ng_value_error(err, &v->loc, "'%s' must be an integer, not '%s'",
                              what, v->text);
    *out = n;
    return 0;
}

int
ng_value_to_size(const struct ng_value *v, const char *what, uint64_t *out,
                 struct ng_error *err)
{
    const char *why;

    if (expect_scalar(v, what, "a size", err) == -1)
        return -1;
    if (ng_parse_size_why(v->text, out, &why) == -1)
        return ng_value_error(err, &v->loc, "'%s': bad size '%s' (%s)", what,
                              v->text, why);
    return 0;
}

const char *
ng_value_to_string(const struct ng_value *v, const char *what,
                   struct ng_error *err)
{
    if (expect_scalar(v, what, "a string", err) == -1)
        return NULL;
    return v->text;
}
