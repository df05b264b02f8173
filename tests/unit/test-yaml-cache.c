/* tests/unit/test-yaml-cache.c: ng_yaml_parse_cached() against
 * ng_yaml_parse().
 *
 * Texts of every shape the cutter takes or refuses, parsed one after
 * another through one cache (each after the one before it, then again
 * warm): each must give exactly the tree a whole parse gives, every
 * location included, or fail with exactly its error.  And on a reload-like
 * edit of a big config, the cache must parse only the entry that changed.
 */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/yaml.h"

static unsigned failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);        \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static bool
same_loc(const struct ng_loc *a, const struct ng_loc *b)
{
    return a->line == b->line && a->column == b->column &&
           strcmp(a->file, b->file) == 0;
}

/* Equal trees, locations included; says where they differ. */
static bool
same(const struct ng_value *a, const struct ng_value *b)
{
    size_t i;

    if (a->kind != b->kind || a->n != b->n || a->is_null != b->is_null ||
        !same_loc(&a->loc, &b->loc) ||
        (a->kind == NG_VALUE_SCALAR && !a->is_null &&
         strcmp(a->text, b->text) != 0)) {
        fprintf(stderr, "  differ at %u:%u (kind %d/%d) vs %u:%u\n",
                a->loc.line, a->loc.column, a->kind, b->kind, b->loc.line,
                b->loc.column);
        return false;
    }
    for (i = 0; i < a->n; i++) {
        if (a->kind == NG_VALUE_MAP &&
            (strcmp(a->keys[i], b->keys[i]) != 0 ||
             !same_loc(&a->key_locs[i], &b->key_locs[i]))) {
            fprintf(stderr, "  key '%s' at %u:%u vs '%s' at %u:%u\n",
                    a->keys[i], a->key_locs[i].line, a->key_locs[i].column,
                    b->keys[i], b->key_locs[i].line, b->key_locs[i].column);
            return false;
        }
        if (!same(a->items[i], b->items[i]))
            return false;
    }
    return true;
}

/* The cached parse of `text` equals the whole one. */
static void
check_text(struct ng_yaml_cache *cache, const char *what, const char *text)
{
    struct ng_error e1 = { 0 }, e2 = { 0 };
    struct ng_value *whole = ng_yaml_parse(text, strlen(text), "t.yaml", &e1);
    struct ng_value *cached = ng_yaml_parse_cached(cache, text, strlen(text),
                                                   "t.yaml", &e2);

    if ((whole == NULL) != (cached == NULL) ||
        (whole != NULL && !same(whole, cached)) ||
        (whole == NULL && strcmp(e1.msg, e2.msg) != 0)) {
        fprintf(stderr, "FAIL %s: whole %s / cached %s\n", what,
                whole ? "ok" : e1.msg, cached ? "ok" : e2.msg);
        failures++;
    }
    ng_value_free(whole);
    ng_value_free(cached);
}

#define N_CUT 4
static const char *const texts[] = {
    /* the plain shape: the first N_CUT texts must be cut into entries */
    "server:\n  listen: [ \"unix:/x.sock\" ]\nnodes:\n"
    "  m0: { driver: memory, size: 1M }\n"
    "  r0: { driver: raw, file: m0 }\n"
    "exports:\n  e0: { node: r0, writable: true }\n",
    /* comments, blank lines, nested block maps, lists, a block scalar,
     * quoted text, a flow map over lines, a top-level key with a value */
    "# head comment\n\nversion: 1\nnodes:\n  # a comment\n"
    "  m0:\n    driver: memory\n    size: 1M\n\n"
    "  q0:\n    driver: quorum\n    children:\n      - m0\n      - m1\n"
    "  d0: { driver: raw,\n         file: m0 }\n"
    "  s0:\n    description: |\n      two\n      lines\n\n"
    "  'quoted': \"x: y\"\n"
    "exports:\n  e0: { node: d0 } # trailing\n",
    /* the same with a line moved */
    "# head comment\n\n\nversion: 1\nnodes:\n  # a comment\n"
    "  m0:\n    driver: memory\n    size: 1M\n\n"
    "  q0:\n    driver: quorum\n    children:\n      - m0\n      - m1\n"
    "  d0: { driver: raw,\n         file: m0 }\n"
    "  s0:\n    description: |\n      two\n      lines\n\n"
    "  'quoted': \"x: y\"\n"
    "exports:\n  e0: { node: d0 } # trailing\n",
    /* indents of 4, no trailing newline */
    "nodes:\n    m0: { driver: memory }\n    m1: { driver: memory }",
    /* refused by the cutter or by a piece: the whole parse decides */
    "nodes:\n  m0: &a { driver: memory }\n  m1: *a\n",
    "nodes:\n\tm0: x\n",
    "nodes:\r\n  m0: x\r\n",
    "- a\n- b\n",
    "---\nnodes:\n  m0: x\n",
    "{ nodes: { m0: x } }\n",
    "nodes:\n  m0:\n  m1: x\n",
    "nodes:\n",
    "nodes:\n  m0: { a: }\n",
    "nodes:\n  - m0\n",
    "nodes:\n    m0: x\n  m1: y\n",
    "  nodes: x\n",
    "",
    "# only a comment\n",
    /* errors, which must be the whole parse's */
    "nodes:\n  m0: x\n  m0: y\n",
    "nodes:\n  m0: x\nnodes:\n  m1: y\n",
    "nodes:\n  m0: x\nexports: y\nexports: z\n",
    "nodes:\n  m0: { a: [ }\n",
    "nodes:\n  m0: x\n  bad\n",
    "nodes:\n  m0: |\n  text\n",
    "nodes:\n  m0: 'open\n  m1: x\n",
    "nodes:\n  m0: \"a\\0b\"\n",
    "nodes:\n  m0: { a: 1, a: 2 }\n",
    "nodes:\n  ? [ a ]\n  : x\n",
    "nodes:\n  m0: \xff\n",
};

/* A reload's edit of a config of `n` exports on 3 nodes each: the
 * description of e0. */
static char *
big(int n, const char *desc, bool extra)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    int i;

    fprintf(fp, "server:\n  listen: [ \"unix:/x.sock\" ]\nnodes:\n");
    if (extra)
        fprintf(fp, "  new: { driver: memory, size: 1M }\n");
    for (i = 0; i < n; i++)
        fprintf(fp, "  m%d: { driver: memory, size: 1M }\n"
                "  t%d: { driver: throttle, file: m%d, limits: "
                "{ iops-total: 1000000 } }\n"
                "  r%d: { driver: raw, file: t%d }\n", i, i, i, i, i);
    fprintf(fp, "exports:\n");
    for (i = 0; i < n; i++)
        fprintf(fp, "  e%d: { node: r%d%s%s }\n", i, i,
                i == 0 ? ", description: " : "", i == 0 ? desc : "");
    fclose(fp);
    return text;
}

static void
check_reuse(void)
{
    struct ng_yaml_cache *cache = ng_yaml_cache_new();
    char *a = big(100, "a", false), *b = big(100, "b", false);
    char *c = big(100, "b", true);
    size_t reused, parsed;

    check_text(cache, "big a, cold", a);
    ng_yaml_cache_stats(cache, &reused, &parsed);
    CHECK(reused == 0 && parsed == 401);
    check_text(cache, "big b after a", b);
    ng_yaml_cache_stats(cache, &reused, &parsed);
    CHECK(reused == 400 && parsed == 1);
    /* a line added at the top: every entry below moves one line */
    check_text(cache, "big b with a node added", c);
    ng_yaml_cache_stats(cache, &reused, &parsed);
    CHECK(reused == 401 && parsed == 1);
    check_text(cache, "big a again", a);
    ng_yaml_cache_stats(cache, &reused, &parsed);
    CHECK(reused == 400 && parsed == 1);
    /* a text the cutter refuses leaves the cache as it was */
    check_text(cache, "anchors", texts[4]);
    check_text(cache, "big a after a refusal", a);
    ng_yaml_cache_stats(cache, &reused, &parsed);
    CHECK(reused == 401 && parsed == 0);
    free(a);
    free(b);
    free(c);
    ng_yaml_cache_free(cache);
}

int
main(void)
{
    struct ng_yaml_cache *cache = ng_yaml_cache_new();
    size_t i, j;
    char what[32];

    CHECK(cache != NULL);
    for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (j = 0; j < 2; j++) {
            snprintf(what, sizeof what, "text %zu%s", i, j ? " warm" : "");
            check_text(cache, what, texts[i]);
            if (i < N_CUT) {
                size_t reused, parsed;

                ng_yaml_cache_stats(cache, &reused, &parsed);
                if (reused + parsed == 0)
                    fprintf(stderr, "FAIL %s: not cut\n", what);
                failures += reused + parsed == 0;
            }
        }
    ng_yaml_cache_free(cache);
    check_reuse();
    if (failures != 0) {
        fprintf(stderr, "%u failure(s)\n", failures);
        return 1;
    }
    return 0;
}
