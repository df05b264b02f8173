/* config/cli.c: nodes and exports given on the command line in
 * qemu-storage-daemon's syntax (--blockdev, --export: QEMU's keyval,
 * "key=value,key=value", ",," for a comma in a value, dots for nesting),
 * merged into the config document before it is checked, so they meet
 * every check a file's nodes and exports meet.
 *
 * Their locations name the option: "--blockdev:2:18" is column 18 of
 * the second --blockdev.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/config-int.h"

static const char blockdev_file[] = "--blockdev";
static const char export_file[] = "--export";

/* Without --config: the built-in default's server section, and nothing
 * else. */
const char ng_cli_server_text[] =
    "server:\n"
    "  listen:\n"
    "    - unix:" NG_DEFAULT_SOCKET "\n"
    "    - tcp:127.0.0.1:10809\n"
    "  control: " NG_DEFAULT_CONTROL "\n";

bool
ng_config_loc_is_cli(const struct ng_loc *loc)
{
    return loc->file == blockdev_file || loc->file == export_file;
}

const char *
ng_config_cli_prefix(const char *msg)
{
    if (strncmp(msg, blockdev_file, strlen(blockdev_file)) == 0)
        return blockdev_file;
    if (strncmp(msg, export_file, strlen(export_file)) == 0)
        return export_file;
    return NULL;
}

/* map[key], made a mapping when absent; NULL on ENOMEM or when `key`
 * holds something else (said). */
static struct ng_value *
submap(struct ng_value *map, const char *key, struct ng_loc loc,
       struct ng_error *err)
{
    struct ng_value *v = ng_value_get(map, key);

    if (v != NULL && v->kind == NG_VALUE_SCALAR && v->is_null) {
        /* "nodes:" with nothing under it: made an empty mapping in
         * place (its text is part of its allocation: nothing to free) */
        *v = (struct ng_value){ .kind = NG_VALUE_MAP, .loc = v->loc };
    }
    if (v != NULL) {
        if (v->kind != NG_VALUE_MAP) {
            ng_value_error(err, &loc, "'%s' is given both as a value and "
                           "as a group of options", key);
            return NULL;
        }
        return v;
    }
    v = ng_value_new_map(loc);
    if (v == NULL || ng_value_map_put(map, key, loc, v) == -1) {
        ng_config_oom(err);
        return NULL;
    }
    return v;
}

/* "a.b.c" = value into map (nested maps for the dots).  Takes value. */
static int
put_dotted(struct ng_value *map, char *key, struct ng_loc loc,
           struct ng_value *value, struct ng_error *err)
{
    char *dot;

    while ((dot = strchr(key, '.')) != NULL) {
        *dot = '\0';
        if (*key == '\0' || (map = submap(map, key, loc, err)) == NULL) {
            ng_value_free(value);
            return *key == '\0' ? ng_value_error(err, &loc, "empty key")
                                : -1;
        }
        key = dot + 1;
    }
    if (*key == '\0' || ng_value_get(map, key) != NULL) {
        ng_value_free(value);
        return ng_value_error(err, &loc, *key ? "key '%s' given twice"
                              : "empty key%s", key);
    }
    return ng_value_map_put(map, key, loc, value) == 0 ? 0
                                                       : ng_config_oom(err);
}

/* One "key=value" starting at text[*pos]; *pos moves past it and its
 * comma. */
static int
parse_pair(const char *text, size_t *pos, struct ng_loc where,
           struct ng_value *map, struct ng_error *err)
{
    struct ng_loc loc = { where.file, where.line, (unsigned)*pos + 1 };
    size_t n = strlen(text), klen = strcspn(text + *pos, "=,");
    char *key, *val = malloc(n + 1);
    size_t i = *pos + klen, used = 0;
    struct ng_value *v;

    if (val == NULL)
        return ng_config_oom(err);
    if (text[i] != '=') {
        free(val);
        return ng_value_error(err, &loc, "expected KEY=VALUE, not '%.*s'",
                              (int)klen, text + *pos);
    }
    for (i++; i < n && (text[i] != ',' || text[i + 1] == ','); i++) {
        val[used++] = text[i];
        i += text[i] == ',';        /* ",," is one comma */
    }
    val[used] = '\0';
    key = strndup(text + *pos, klen);
    v = key ? ng_value_new_scalar(val, loc) : NULL;
    free(val);
    *pos = i + (i < n);
    if (v == NULL) {
        free(key);
        return ng_config_oom(err);
    }
    i = (size_t)put_dotted(map, key, loc, v, err);
    free(key);
    return (int)i;
}

/* QEMU keyval text into a fresh mapping; caller frees. */
static struct ng_value *
keyval_parse(const char *text, struct ng_loc where, struct ng_error *err)
{
    struct ng_value *map = ng_value_new_map(where);
    size_t pos = 0;

    if (map == NULL) {
        ng_config_oom(err);
        return NULL;
    }
    while (text[pos] != '\0') {
        if (parse_pair(text, &pos, where, map, err) == -1) {
            ng_value_free(map);
            return NULL;
        }
    }
    return map;
}

/* Take `key` (a scalar) out of map; NULL with *err set when absent. */
static struct ng_value *
take_key(struct ng_value *map, const char *key, const char *what,
         struct ng_error *err)
{
    ptrdiff_t i = ng_value_index(map, key);
    struct ng_value *v;

    if (i < 0 || map->items[i]->kind != NG_VALUE_SCALAR) {
        ng_value_error(err, &map->loc, "%s needs '%s='", what, key);
        return NULL;
    }
    v = map->items[i];
    free(map->keys[i]);
    memmove(map->keys + i, map->keys + i + 1,
            (map->n - (size_t)i - 1) * sizeof *map->keys);
    memmove(map->key_locs + i, map->key_locs + i + 1,
            (map->n - (size_t)i - 1) * sizeof *map->key_locs);
    memmove(map->items + i, map->items + i + 1,
            (map->n - (size_t)i - 1) * sizeof *map->items);
    map->n--;
    return v;
}

/* map[name] = item, refusing a name the section has already.  Takes
 * item. */
static int
add_entry(struct ng_value *section, const struct ng_value *name,
          struct ng_value *item, const char *what, struct ng_error *err)
{
    ptrdiff_t i = ng_value_index(section, name->text);

    if (i >= 0) {
        ng_value_free(item);
        return ng_value_error(err, &name->loc, "duplicate %s '%s' (also "
                              "at %s:%u:%u)", what, name->text,
                              section->key_locs[i].file,
                              section->key_locs[i].line,
                              section->key_locs[i].column);
    }
    return ng_value_map_put(section, name->text, name->loc, item) == 0
        ? 0 : ng_config_oom(err);
}

static int
merge_blockdev(struct ng_value *nodes, const char *text, unsigned index,
               struct ng_error *err)
{
    struct ng_value *map = keyval_parse(text, (struct ng_loc){
        blockdev_file, index, 1 }, err), *name;
    int r;

    if (map == NULL)
        return -1;
    if ((name = take_key(map, "node-name", "--blockdev", err)) == NULL) {
        ng_value_free(map);
        return -1;
    }
    r = add_entry(nodes, name, map, "node name", err);
    ng_value_free(name);
    return r;
}

/* --export type=nbd,id=ID,node-name=NODE,...: the config's export keys,
 * "node-name" spelled "node" there. */
static int
merge_export(struct ng_value *exports, const char *text, unsigned index,
             struct ng_error *err)
{
    struct ng_value *map = keyval_parse(text, (struct ng_loc){
        export_file, index, 1 }, err), *id, *type, *node;
    int r = -1;

    if (map == NULL)
        return -1;
    type = take_key(map, "type", "--export", err);
    id = type ? take_key(map, "id", "--export", err) : NULL;
    node = id ? take_key(map, "node-name", "--export", err) : NULL;
    if (type != NULL && strcmp(type->text, "nbd") != 0)
        ng_value_error(err, &type->loc, "export type '%s' is not supported "
                       "(only 'nbd')", type->text);
    else if (node != NULL &&
             ng_value_map_put(map, "node", node->loc, node) == 0) {
        node = NULL;
        r = add_entry(exports, id, map, "export", err);
        map = NULL;
    }
    ng_value_free(map);
    ng_value_free(type);
    ng_value_free(id);
    ng_value_free(node);
    return r;
}

int
ng_config_cli_merge(struct ng_value *doc, const struct ng_cli *cli,
                    struct ng_error *err)
{
    struct ng_loc loc = { blockdev_file, 0, 0 };
    struct ng_value *nodes = NULL, *exports = NULL;
    size_t i;

    if (doc->kind != NG_VALUE_MAP)
        return 0;               /* the checks say what is wrong */
    if (cli->n_blockdevs > 0 && (nodes = submap(doc, "nodes", loc,
                                                err)) == NULL)
        return -1;
    for (i = 0; i < cli->n_blockdevs; i++)
        if (merge_blockdev(nodes, cli->blockdevs[i], (unsigned)i + 1,
                           err) == -1)
            return -1;
    if (cli->n_exports > 0 && (exports = submap(doc, "exports", loc,
                                                err)) == NULL)
        return -1;
    for (i = 0; i < cli->n_exports; i++)
        if (merge_export(exports, cli->exports[i], (unsigned)i + 1,
                         err) == -1)
            return -1;
    return 0;
}
