/* config/yaml.c: see yaml.h.
 *
 * A recursive descent over libyaml's events: each function that takes an
 * event owns it and deletes it.  libyaml's marks are 0-based; ours are
 * 1-based.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config/yaml.h"

/* An anchor seen so far. */
struct yaml_anchor {
    char *name;                     /* owned */
    const struct ng_value *value;   /* borrowed from the tree being built */
};

/* The state of one parse. */
struct yaml_ctx {
    yaml_parser_t parser;
    const char *text;               /* borrowed: the input */
    size_t len;
    const char *file;               /* borrowed: goes into every loc */
    struct yaml_anchor *anchors;    /* owned array */
    size_t n_anchors;
    size_t cap_anchors;
    size_t n_values;                /* made so far, aliases expanded */
    struct ng_error *err;           /* the caller's */
};

static struct ng_value *parse_value(struct yaml_ctx *c, yaml_event_t *ev,
                                    unsigned depth);

static struct ng_loc
mark_loc(const struct yaml_ctx *c, yaml_mark_t mark)
{
    struct ng_loc loc = {
        .file = c->file,
        .line = (unsigned)mark.line + 1,
        .column = (unsigned)mark.column + 1,
    };

    return loc;
}

/* Where a byte offset is, for reader errors, which carry no mark.  Counts
 * characters, not bytes, in the column, as libyaml's marks do. */
static struct ng_loc
offset_loc(const struct yaml_ctx *c, size_t offset)
{
    struct ng_loc loc = { .file = c->file, .line = 1, .column = 1 };
    size_t i;

    for (i = 0; i < offset && i < c->len; i++) {
        unsigned char b = (unsigned char)c->text[i];

        if (b == '\n') {
            loc.line++;
            loc.column = 1;
        } else if ((b & 0xc0) != 0x80) {
            loc.column++;
        }
    }
    return loc;
}

static int
oom(struct yaml_ctx *c)
{
    return ng_error_set(c->err, ENOMEM, "%s: out of memory", c->file);
}

/* Turn libyaml's error state into "file:line:column: problem". */
static int
parser_error(struct yaml_ctx *c)
{
    const yaml_parser_t *p = &c->parser;
    const char *problem = p->problem != NULL ? p->problem : "bad YAML";
    struct ng_loc loc = mark_loc(c, p->problem_mark);
    struct ng_loc ctx;

    if (p->error == YAML_MEMORY_ERROR)
        return oom(c);
    if (p->error == YAML_READER_ERROR) {
        loc = offset_loc(c, p->problem_offset);
        if (p->problem_value != -1)
            return ng_value_error(c->err, &loc, "%s (byte 0x%02x)", problem,
                                  (unsigned)p->problem_value);
        return ng_value_error(c->err, &loc, "%s", problem);
    }
    if (p->context == NULL)
        return ng_value_error(c->err, &loc, "%s", problem);
    ctx = mark_loc(c, p->context_mark);
    return ng_value_error(c->err, &loc, "%s (%s at %u:%u)", problem,
                          p->context, ctx.line, ctx.column);
}

static int
next_event(struct yaml_ctx *c, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&c->parser, ev))
        return parser_error(c);
    return 0;
}

/* Account for `n` more values; fails past NG_YAML_MAX_VALUES so that a few
 * aliases cannot blow up into billions of values. */
static int
count_values(struct yaml_ctx *c, size_t n, const struct ng_loc *loc)
{
    if (n > NG_YAML_MAX_VALUES - c->n_values)
        return ng_value_error(c->err, loc,
                              "document too large (more than %d values)",
                              NG_YAML_MAX_VALUES);
    c->n_values += n;
    return 0;
}

static size_t
value_size(const struct ng_value *v)
{
    size_t n = 1, i;

    for (i = 0; i < v->n; i++)
        n += value_size(v->items[i]);
    return n;
}

/* Remember that `anchor` names `v` (borrowed: it lives in the tree). */
static int
add_anchor(struct yaml_ctx *c, const char *anchor, const struct ng_value *v)
{
    char *name;

    if (c->n_anchors == c->cap_anchors) {
        size_t cap = c->cap_anchors ? 2 * c->cap_anchors : 8;
        struct yaml_anchor *a = realloc(c->anchors, cap * sizeof *a);

        if (a == NULL)
            return oom(c);
        c->anchors = a;
        c->cap_anchors = cap;
    }
    name = strdup(anchor);
    if (name == NULL)
        return oom(c);
    c->anchors[c->n_anchors].name = name;
    c->anchors[c->n_anchors++].value = v;
    return 0;
}

static void
free_anchors(struct yaml_ctx *c)
{
    size_t i;

    for (i = 0; i < c->n_anchors; i++)
        free(c->anchors[i].name);
    free(c->anchors);
}

/* An alias is a copy of the latest value with that anchor.  An anchor is
 * known only once its value is complete, so an alias cannot name a value
 * it is inside of: no cycles. */
static struct ng_value *
parse_alias(struct yaml_ctx *c, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    struct ng_loc loc = mark_loc(c, ev->start_mark);
    struct ng_value *v;
    size_t i;

    for (i = c->n_anchors; i > 0; i--)
        if (strcmp(c->anchors[i - 1].name, name) == 0)
            break;
    if (i == 0) {
        ng_value_error(c->err, &loc, "undefined alias '%s'", name);
        return NULL;
    }
    if (count_values(c, value_size(c->anchors[i - 1].value), &loc) == -1)
        return NULL;
    v = ng_value_copy(c->anchors[i - 1].value);
    if (v == NULL) {
        oom(c);
        return NULL;
    }
    v->loc = loc;       /* the alias's own place; inner values keep theirs */
    return v;
}

/* YAML 1.1 core schema nulls, when the scalar is plain and untagged. */
static bool
scalar_is_null(const yaml_event_t *ev)
{
    static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };
    const char *tag = (const char *)ev->data.scalar.tag;
    const char *s = (const char *)ev->data.scalar.value;
    size_t i;

    if (tag != NULL)
        return strcmp(tag, YAML_NULL_TAG) == 0;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        if (strcmp(s, nulls[i]) == 0)
            return true;
    return false;
}

/* Scalar text as a C string; refuses embedded NULs ("\0" escapes), which
 * would silently cut the text short. */
static const char *
scalar_text(struct yaml_ctx *c, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    struct ng_loc loc;

    if (strlen(s) == ev->data.scalar.length)
        return s;
    loc = mark_loc(c, ev->start_mark);
    ng_value_error(c->err, &loc, "string contains a NUL character");
    return NULL;
}

static struct ng_value *
parse_scalar(struct yaml_ctx *c, const yaml_event_t *ev)
{
    const char *text = scalar_text(c, ev);
    struct ng_value *v;

    if (text == NULL)
        return NULL;
    v = ng_value_new_scalar(scalar_is_null(ev) ? NULL : text,
                            mark_loc(c, ev->start_mark));
    if (v == NULL)
        oom(c);
    return v;
}

static struct ng_value *
parse_list(struct yaml_ctx *c, struct ng_loc loc, unsigned depth)
{
    struct ng_value *list = ng_value_new_list(loc);
    struct ng_value *item;
    yaml_event_t ev;

    if (list == NULL) {
        oom(c);
        return NULL;
    }
    for (;;) {
        if (next_event(c, &ev) == -1)
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return list;
        }
        item = parse_value(c, &ev, depth + 1);
        if (item == NULL)
            break;
        if (ng_value_list_append(list, item) == -1) {
            oom(c);
            break;
        }
    }
    ng_value_free(list);
    return NULL;
}

/* One key and its value into `map`; takes ownership of the key event. */
static int
parse_pair(struct yaml_ctx *c, struct ng_value *map, yaml_event_t *key,
           unsigned depth)
{
    struct ng_loc kloc = mark_loc(c, key->start_mark);
    const struct ng_loc *first;
    const char *text;
    char *name = NULL;
    struct ng_value *v;
    yaml_event_t ev;
    ptrdiff_t i;

    if (key->type != YAML_SCALAR_EVENT) {
        yaml_event_delete(key);
        return ng_value_error(c->err, &kloc, "mapping key must be a scalar");
    }
    text = scalar_text(c, key);
    if (text != NULL && (name = strdup(text)) == NULL)
        oom(c);
    yaml_event_delete(key);
    if (name == NULL)
        return -1;
    i = ng_value_index(map, name);
    if (i >= 0) {
        first = &map->key_locs[i];
        ng_value_error(c->err, &kloc, "duplicate key '%s' (first at %u:%u)",
                       name, first->line, first->column);
        free(name);
        return -1;
    }
    v = next_event(c, &ev) == -1 ? NULL : parse_value(c, &ev, depth + 1);
    if (v == NULL) {
        free(name);
        return -1;
    }
    if (ng_value_map_put_key(map, name, kloc, v) == -1)   /* takes name */
        return oom(c);
    return 0;
}

static struct ng_value *
parse_map(struct yaml_ctx *c, struct ng_loc loc, unsigned depth)
{
    struct ng_value *map = ng_value_new_map(loc);
    yaml_event_t ev;

    if (map == NULL) {
        oom(c);
        return NULL;
    }
    for (;;) {
        if (next_event(c, &ev) == -1)
            break;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return map;
        }
        if (parse_pair(c, map, &ev, depth) == -1)
            break;
    }
    ng_value_free(map);
    return NULL;
}

/* The value that starts with event `ev` (owned: deleted here). */
static struct ng_value *
parse_value(struct yaml_ctx *c, yaml_event_t *ev, unsigned depth)
{
    struct ng_loc loc = mark_loc(c, ev->start_mark);
    struct ng_value *v = NULL;
    const yaml_char_t *anchor = NULL;

    if (depth >= NG_YAML_MAX_DEPTH) {
        ng_value_error(c->err, &loc, "nested deeper than %d levels",
                       NG_YAML_MAX_DEPTH);
    } else if (count_values(c, 1, &loc) == -1) {
        /* error set */
    } else if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        v = parse_scalar(c, ev);
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        v = parse_list(c, loc, depth);
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        v = parse_map(c, loc, depth);
    } else if (ev->type == YAML_ALIAS_EVENT) {
        v = parse_alias(c, ev);
    } else {
        ng_value_error(c->err, &loc, "unexpected YAML event %d", ev->type);
    }
    if (v != NULL && anchor != NULL
        && add_anchor(c, (const char *)anchor, v) == -1) {
        ng_value_free(v);
        v = NULL;
    }
    yaml_event_delete(ev);
    return v;
}

/* What an empty stream stands for: a null at 1:1. */
static struct ng_value *
empty_document(struct yaml_ctx *c)
{
    struct ng_loc start = { .file = c->file, .line = 1, .column = 1 };
    struct ng_value *v = ng_value_new_scalar(NULL, start);

    if (v == NULL)
        oom(c);
    return v;
}

/* The stream: nothing at all, or one document. */
static struct ng_value *
parse_stream(struct yaml_ctx *c)
{
    struct ng_value *doc = NULL;
    struct ng_loc loc;
    yaml_event_t ev;

    for (;;) {
        if (next_event(c, &ev) == -1)
            break;
        if (ev.type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            return doc != NULL ? doc : empty_document(c);
        }
        if (ev.type != YAML_DOCUMENT_START_EVENT) {
            yaml_event_delete(&ev);     /* stream start, document end */
            continue;
        }
        loc = mark_loc(c, ev.start_mark);
        yaml_event_delete(&ev);
        if (doc != NULL) {
            ng_value_error(c->err, &loc, "more than one document in config");
            break;
        }
        if (next_event(c, &ev) == -1 || (doc = parse_value(c, &ev, 0)) == NULL)
            return NULL;
    }
    ng_value_free(doc);
    return NULL;
}

struct ng_value *
ng_yaml_parse(const char *text, size_t len, const char *file,
              struct ng_error *err)
{
    struct yaml_ctx c = {
        .text = text, .len = len, .file = file, .err = err,
    };
    struct ng_value *doc;

    if (!yaml_parser_initialize(&c.parser)) {
        oom(&c);
        return NULL;
    }
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)text, len);
    doc = parse_stream(&c);
    yaml_parser_delete(&c.parser);
    free_anchors(&c);
    return doc;
}
