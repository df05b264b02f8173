/* config/yaml-cache.c: see ng_yaml_parse_cached() in yaml.h.
 *
 * A config is a top-level block mapping whose big values are block
 * mappings with one line per entry:
 *
 *     nodes:              <- a section header (column 1, nothing after ':')
 *       m0: { ... }       <- an entry: a line at the section's indent,
 *       m1:                  with the lines below it indented deeper
 *         driver: memory
 *     exports: ...        <- any other top-level key is an entry itself
 *
 * An entry's text, cut at line starts, parses alone to a one-key mapping
 * with the key, value and locations it has in the whole document, its
 * lines counted from its first (libyaml's marks are per line; columns do
 * not change, the indentation stays).  That holds as long as no entry
 * refers to another (anchors, aliases) and every line belongs to exactly
 * one entry, which the cutter checks conservatively; anything else takes
 * the whole-text parse.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config/yaml.h"
#include "graph/strmap.h"

/* One entry's parse, as its own text gave it (lines counted from 1 at
 * the entry's first line). */
struct cache_entry {
    char *text;                 /* owned, NUL-terminated: the index key */
    unsigned depth;             /* 0: a top-level key; 1: in a section */
    struct ng_value *value;     /* owned: the one-key mapping */
    bool taken;                 /* claimed by the parse running now */
};

struct ng_yaml_cache {
    struct cache_entry **v;     /* the last parse's entries, owned */
    size_t n;
    struct ng_strmap index;     /* text -> entry */
    char *file;                 /* owned: loc.file of the cached trees */
    char *scratch;              /* a piece's text, NUL-terminated, for
                                 * lookups */
    size_t scratch_cap;
    size_t reused, parsed;      /* of the last parse */
};

/* A piece of the text: an entry, or a section header. */
struct piece {
    size_t off, len;
    unsigned line;              /* 1-based line of its first byte */
    int section;                /* index of its section's header piece,
                                 * or -1 for a top-level entry */
};

struct cutter {
    const char *text;
    size_t len;
    struct piece *p;
    size_t n, cap;
    int section;                /* the open section header, or -1 */
    bool section_has_entries;
    unsigned indent;            /* the open section's entry indent; 0:
                                 * not known yet */
    bool open;                  /* p[n - 1] is an entry still growing */
};

struct ng_yaml_cache *
ng_yaml_cache_new(void)
{
    return calloc(1, sizeof(struct ng_yaml_cache));
}

static void
entry_free(struct cache_entry *e)
{
    if (e == NULL)
        return;
    free(e->text);
    ng_value_free(e->value);
    free(e);
}

void
ng_yaml_cache_free(struct ng_yaml_cache *cache)
{
    size_t i;

    if (cache == NULL)
        return;
    for (i = 0; i < cache->n; i++)
        entry_free(cache->v[i]);
    free(cache->v);
    ng_strmap_clear(&cache->index);
    free(cache->file);
    free(cache->scratch);
    free(cache);
}

void
ng_yaml_cache_stats(const struct ng_yaml_cache *cache, size_t *reused,
                    size_t *parsed)
{
    *reused = cache->reused;
    *parsed = cache->parsed;
}

/* ---- Cutting the text into pieces ------------------------------------------ */

static int
add_piece(struct cutter *c, size_t off, unsigned line, int section)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 256;
        struct piece *p = realloc(c->p, cap * sizeof *p);

        if (p == NULL)
            return -1;
        c->p = p;
        c->cap = cap;
    }
    c->p[c->n++] = (struct piece){ off, 0, line, section };
    return 0;
}

/* A top-level line: "key:" opens a section, "key: value" is an entry.
 * Keys are plain words; anything else (quotes, flow, lists, document
 * markers, directives) is left to the whole parse. */
static int
top_line(struct cutter *c, size_t off, size_t end, unsigned line)
{
    size_t i = off;

    while (i < end && (c->text[i] == '_' || c->text[i] == '-' ||
                       (c->text[i] >= '0' && c->text[i] <= '9') ||
                       (c->text[i] >= 'a' && c->text[i] <= 'z') ||
                       (c->text[i] >= 'A' && c->text[i] <= 'Z')))
        i++;
    if (i == off || c->text[off] == '-' || i == end || c->text[i] != ':' ||
        (i + 1 < end && c->text[i + 1] != ' '))
        return -1;
    for (i++; i < end && c->text[i] == ' '; i++)
        ;
    if (add_piece(c, off, line, -1) == -1)
        return -1;
    if (i == end || c->text[i] == '#') {    /* a section header */
        c->section = (int)(c->n - 1);
        c->section_has_entries = false;
        c->indent = 0;
        c->open = false;
    } else {
        c->section = -1;
        c->open = true;
    }
    return 0;
}

/* Close the last piece at `end` (the start of the line that starts the
 * next one). */
static void
close_piece(struct cutter *c, size_t end)
{
    if (c->n > 0)
        c->p[c->n - 1].len = end - c->p[c->n - 1].off;
}

/* An indented line: more of the entry growing, or a new entry of the
 * open section. */
static int
indented_line(struct cutter *c, size_t off, unsigned indent, unsigned line)
{
    if (c->section < 0)
        return c->open ? 0 : -1;    /* more of a top-level entry */
    if (c->indent == 0)
        c->indent = indent;
    if (indent > c->indent)
        return c->open ? 0 : -1;
    if (indent < c->indent || c->text[off + indent] == '-')
        return -1;                  /* odd indentation; a list */
    close_piece(c, off);
    c->section_has_entries = true;
    c->open = true;
    return add_piece(c, off, line, c->section);
}

/* A section header with entries is marked -2 (a header, not parsed);
 * one without is a top-level entry itself ("key:" alone). */
static void
close_section(struct cutter *c)
{
    if (c->section >= 0 && c->section_has_entries)
        c->p[c->section].section = -2;
    c->section = -1;
}

static bool
text_is_plain(const char *text, size_t len)
{
    return memchr(text, '&', len) == NULL && memchr(text, '*', len) == NULL &&
           memchr(text, '\t', len) == NULL && memchr(text, '\r', len) == NULL &&
           memchr(text, '\0', len) == NULL &&
           (len == 0 || (unsigned char)text[0] < 0x80);
}

/* The pieces of the text, or -1 when it is not of the plain shape.  A
 * piece runs from its first line to the next line that starts one
 * (blank and comment lines go with the piece before them). */
static int
cut(struct cutter *c)
{
    size_t off = 0, end;
    unsigned line = 1, indent;
    int rc = 0;

    c->section = -1;
    if (!text_is_plain(c->text, c->len))
        return -1;
    for (; off < c->len && rc == 0; off = end + 1, line++) {
        const char *nl = memchr(c->text + off, '\n', c->len - off);

        end = nl != NULL ? (size_t)(nl - c->text) : c->len;
        for (indent = 0; off + indent < end && c->text[off + indent] == ' ';
             indent++)
            ;
        if (off + indent == end || c->text[off + indent] == '#')
            continue;
        if (indent == 0) {
            close_piece(c, off);
            close_section(c);
            rc = top_line(c, off, end, line);
        } else {
            rc = indented_line(c, off, indent, line);
        }
    }
    close_piece(c, c->len);
    close_section(c);
    return rc == 0 && c->n > 0 ? 0 : -1;
}

/* ---- Values with their lines moved -------------------------------------------- */

static struct ng_loc
moved(struct ng_loc l, const char *file, unsigned delta)
{
    l.file = file;
    l.line += delta;
    return l;
}

/* A copy of `v` with every line `delta` further and every loc.file
 * `file`. */
static struct ng_value *
copy_moved(const struct ng_value *v, const char *file, unsigned delta)
{
    struct ng_value *c;
    size_t i;

    if (v->kind == NG_VALUE_SCALAR)
        return ng_value_new_scalar(v->is_null ? NULL : v->text,
                                   moved(v->loc, file, delta));
    c = v->kind == NG_VALUE_MAP ? ng_value_new_map(moved(v->loc, file, delta))
                                : ng_value_new_list(moved(v->loc, file, delta));
    for (i = 0; c != NULL && i < v->n; i++) {
        struct ng_value *item = copy_moved(v->items[i], file, delta);
        int rc = item == NULL ? -1
            : v->kind == NG_VALUE_MAP
            ? ng_value_map_put(c, v->keys[i], moved(v->key_locs[i], file,
                                                    delta), item)
            : ng_value_list_append(c, item);

        if (rc == -1) {
            ng_value_free(c);
            c = NULL;
        }
    }
    return c;
}

/* An empty value's place, alone, is where the next token is, which
 * differs from the whole text's: pieces with nulls are not cut. */
static bool
has_null(const struct ng_value *v)
{
    size_t i;

    if (v->kind == NG_VALUE_SCALAR)
        return v->is_null;
    for (i = 0; i < v->n; i++)
        if (has_null(v->items[i]))
            return true;
    return false;
}

static size_t
value_count(const struct ng_value *v)
{
    size_t n = 1, i;

    for (i = 0; i < v->n; i++)
        n += value_count(v->items[i]);
    return n;
}

/* ---- The parse --------------------------------------------------------------- */

struct parse {
    struct ng_yaml_cache *cache;
    const char *text, *file;
    struct cache_entry **next;  /* this parse's entries, for the cache */
    size_t n_next;
    size_t values;
};

static const char *
scratch_text(struct ng_yaml_cache *cache, const char *text, size_t len)
{
    if (len + 1 > cache->scratch_cap) {
        char *s = realloc(cache->scratch, 2 * len + 1);

        if (s == NULL)
            return NULL;
        cache->scratch = s;
        cache->scratch_cap = 2 * len + 1;
    }
    memcpy(cache->scratch, text, len);
    cache->scratch[len] = '\0';
    return cache->scratch;
}

/* The entry for a piece: the cache's, or a new one parsed now. */
static struct cache_entry *
piece_entry(struct parse *ps, const struct piece *p, unsigned depth)
{
    struct ng_yaml_cache *cache = ps->cache;
    const char *key = scratch_text(cache, ps->text + p->off, p->len);
    struct cache_entry *e;
    struct ng_error ignored = { 0 };

    if (key == NULL)
        return NULL;
    e = ng_strmap_get(&cache->index, key);
    if (e != NULL && !e->taken && e->depth == depth) {
        e->taken = true;
        cache->reused++;
        return e;
    }
    e = calloc(1, sizeof *e);
    if (e == NULL || (e->text = strdup(key)) == NULL) {
        free(e);
        return NULL;
    }
    e->depth = depth;
    e->value = ng_yaml_parse_at_depth(ps->text + p->off, p->len, cache->file,
                                      depth, &ignored);
    if (e->value == NULL || e->value->kind != NG_VALUE_MAP ||
        e->value->n != 1 || has_null(e->value)) {
        entry_free(e);              /* the whole parse says why */
        return NULL;
    }
    cache->parsed++;
    return e;
}

/* Add piece p's key and value (moved to its place) to `map`. */
static int
put_piece(struct parse *ps, struct ng_value *map, const struct piece *p,
          unsigned depth)
{
    struct cache_entry *e = piece_entry(ps, p, depth);
    struct ng_value *v;

    if (e == NULL)
        return -1;
    ps->next[ps->n_next++] = e;
    ps->values += value_count(e->value);
    if (ps->values > NG_YAML_MAX_VALUES ||
        ng_value_index(map, e->value->keys[0]) >= 0)
        return -1;                  /* too big; a duplicate key */
    v = copy_moved(e->value->items[0], ps->file, p->line - 1);
    if (v == NULL)
        return -1;
    return ng_value_map_put(map, e->value->keys[0],
                            moved(e->value->key_locs[0], ps->file,
                                  p->line - 1), v);
}

/* The root mapping: top-level entries and sections in order. */
static struct ng_value *
assemble(struct parse *ps, const struct piece *p, size_t n)
{
    struct ng_loc root = { ps->file, p[0].line, 1 };
    struct ng_value *doc = ng_value_new_map(root), *sec = NULL;
    size_t i;

    for (i = 0; doc != NULL && i < n; i++) {
        int rc;

        if (p[i].section == -1) {
            rc = put_piece(ps, doc, &p[i], 0);
        } else if (p[i].section == -2) {    /* a header: its entries next */
            struct ng_loc key = { ps->file, p[i].line, 1 };
            const char *name = ps->text + p[i].off;
            char *k = strndup(name, (size_t)(strchr(name, ':') - name));

            sec = NULL;
            rc = k == NULL || ng_value_index(doc, k) >= 0 ? -1 : 0;
            if (rc == 0 && i + 1 < n) {
                struct ng_loc at = { ps->file, p[i + 1].line, 1 };

                /* A block mapping starts where its first key does. */
                at.column += (unsigned)strspn(ps->text + p[i + 1].off, " ");
                sec = ng_value_new_map(at);
                rc = sec == NULL ? -1 : ng_value_map_put_key(doc, k, key,
                                                             sec);
                k = NULL;
            }
            free(k);
        } else {
            rc = sec == NULL ? -1 : put_piece(ps, sec, &p[i], 1);
        }
        if (rc == -1) {
            ng_value_free(doc);
            doc = NULL;
        }
    }
    return doc;
}

/* The cache now holds this parse's entries; the others go. */
static void
keep_entries(struct ng_yaml_cache *cache, struct cache_entry **next,
             size_t n)
{
    size_t i;

    for (i = 0; i < cache->n; i++)
        if (!cache->v[i]->taken)
            entry_free(cache->v[i]);
    free(cache->v);
    ng_strmap_clear(&cache->index);
    cache->v = next;
    cache->n = n;
    for (i = 0; i < n; i++) {
        next[i]->taken = false;
        if (ng_strmap_put(&cache->index, next[i]->text, next[i]) == -1) {
            ng_strmap_clear(&cache->index);     /* only slower next time */
            return;
        }
    }
}

/* A parse that fell back: the cache keeps what it had, less this
 * parse's new entries. */
static void
drop_entries(struct ng_yaml_cache *cache, struct cache_entry **next,
             size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (next[i]->taken)
            next[i]->taken = false;
        else
            entry_free(next[i]);
    }
    free(next);
}

struct ng_value *
ng_yaml_parse_cached(struct ng_yaml_cache *cache, const char *text,
                     size_t len, const char *file, struct ng_error *err)
{
    struct cutter c = { .text = text, .len = len };
    struct parse ps = { .cache = cache, .text = text, .file = file };
    struct ng_value *doc = NULL;

    cache->reused = cache->parsed = 0;
    if (cache->file == NULL && (cache->file = strdup(file)) == NULL)
        return ng_yaml_parse(text, len, file, err);
    if (cut(&c) == 0 && (ps.next = calloc(c.n, sizeof *ps.next)) != NULL)
        doc = assemble(&ps, c.p, c.n);
    free(c.p);
    if (doc == NULL) {
        drop_entries(cache, ps.next, ps.n_next);
        cache->reused = cache->parsed = 0;
        return ng_yaml_parse(text, len, file, err);
    }
    keep_entries(cache, ps.next, ps.n_next);
    return doc;
}
