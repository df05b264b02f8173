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

#endif
