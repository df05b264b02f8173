/* config/config-int.h: shared between the config loader's files
 * (config.c, nodes.c); not for users of the model. */
#ifndef NG_CONFIG_INT_H
#define NG_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "graph/strmap.h"

/* One node-name the config defines: a key under nodes:, or the
 * node-name of an inline child definition. */
struct ng_name {
    const char *name;           /* borrowed from the document */
    struct ng_loc loc;          /* where it is written */
    size_t owner;               /* file index of the node under nodes: that
                                 * defines it (itself, or its parent) */
    bool is_inline;
};

/* Every node-name of a config; the array is owned, names are not. */
struct ng_names {
    struct ng_name *v;
    size_t n;
    size_t cap;
    struct ng_strmap index;     /* name -> its position in v, plus 1 */
};

const struct ng_name *ng_names_find(const struct ng_names *names,
                                    const char *name);
void ng_names_free(struct ng_names *names);

/* Check the nodes: mapping (NULL or null when absent) and fill
 * cfg->nodes, children before parents; every node-name, inline ones too,
 * goes into `names` (the caller frees it, also on failure).  The node
 * mappings are taken out of `nodes` (its values become NULL; its keys,
 * which `names` borrows, stay).  Returns 0,
 * or -1 with *err set; cfg->nodes then holds what was made so far, for
 * ng_config_free(). */
int ng_config_load_nodes(struct ng_config *cfg, struct ng_value *nodes,
                         struct ng_names *names, struct ng_error *err);

/* "%s must be a mapping, not a list" at v, unless v is a mapping.  The
 * format names the thing: "'server'", "node 'disk0'". */
int ng_config_expect_map(const struct ng_value *v, struct ng_error *err,
                         const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Name the thing in an error that a reader (ng_value_to_*) or the graph
 * set: "f.yaml:3:9: 'size': bad size" becomes "f.yaml:3:9: node 'm':
 * 'size': bad size", so the message still starts with its location.
 * `file` is the config's name.  Returns -1. */
int ng_config_error_prefix(struct ng_error *err, const char *file,
                           const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int ng_config_oom(struct ng_error *err);

/* config/cli.c: merge the command line's nodes and exports into the
 * document (before it is checked). */
int ng_config_cli_merge(struct ng_value *doc, const struct ng_cli *cli,
                        struct ng_error *err);
/* "--blockdev" or "--export" when msg starts with one, else NULL. */
const char *ng_config_cli_prefix(const char *msg);
/* The built-in default's server: section alone. */
extern const char ng_cli_server_text[];

#endif
