/* config/yaml.h: YAML text -> located value tree (libyaml event API).
 *
 * Only what a config needs: mappings, sequences and scalars, anchors and
 * aliases (an alias is a copy of what it names), one document.  Every
 * value and every mapping key remembers file:line:column.  Duplicate keys
 * in a mapping are errors, which libyaml itself does not catch.
 */
#ifndef NG_YAML_H
#define NG_YAML_H

#include <stddef.h>

#include "graph/value.h"
#include "graph/error.h"

/* Refuse documents nested deeper than this (recursion bound). */
#define NG_YAML_MAX_DEPTH 64

/* Refuse documents that expand (through aliases) to more values. */
#define NG_YAML_MAX_VALUES 1000000

/* Parse `len` bytes of `text` holding at most one YAML document.  `file`
 * names the text in errors and in every loc.file of the tree; it is
 * borrowed and must outlive the tree.  An empty stream (nothing, or only
 * comments) gives a null scalar at 1:1.  Returns the tree (caller frees
 * with ng_value_free()) or NULL with *err set to "file:line:column: ...". */
struct ng_value *ng_yaml_parse(const char *text, size_t len, const char *file,
                               struct ng_error *err);

/* The same for a piece of a document whose root sits `depth` levels
 * down in it (for NG_YAML_MAX_DEPTH); for config/yaml-cache.c. */
struct ng_value *ng_yaml_parse_at_depth(const char *text, size_t len,
                                        const char *file, unsigned depth,
                                        struct ng_error *err);

/* A reload parses a file that mostly did not change since the last
 * load.  The cache remembers the parsed value of each entry of the last
 * text parsed through it (each key of a top-level mapping that is a
 * block mapping, e.g. every node under `nodes:`, and each other
 * top-level key), by the entry's exact source text; the next parse
 * takes the entries whose text is the same from it (their lines moved
 * if the entry did) and runs libyaml only on the rest.  The result is
 * the tree ng_yaml_parse() makes, locations included.  Text it cannot
 * cut into entries safely (anchors or aliases, tabs, CR, flow or list
 * at the top, document markers, odd indentation) and any entry that
 * fails to parse alone go through ng_yaml_parse() whole, so errors are
 * its errors.  One parse at a time per cache. */
struct ng_yaml_cache;
struct ng_yaml_cache *ng_yaml_cache_new(void);
void ng_yaml_cache_free(struct ng_yaml_cache *cache);    /* NULL-safe */
struct ng_value *ng_yaml_parse_cached(struct ng_yaml_cache *cache,
                                      const char *text, size_t len,
                                      const char *file, struct ng_error *err);
/* Entries the last parse took from the cache, and parsed (tests). */
void ng_yaml_cache_stats(const struct ng_yaml_cache *cache, size_t *reused,
                         size_t *parsed);

#endif
