/* config/dump.c: the live model written as a config file — the layout of
 * the README's examples (server:, throttle-groups:, nodes:, exports:, one
 * line per node, export and group in flow style), which the loader reads
 * back to the same model. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/plan.h"

/* Plain scalars we write unquoted: nothing YAML could read as anything
 * else (null, a flow indicator, a comment, a key). */
static bool
plain_ok(const char *s)
{
    static const char *const nulls[] = { "null", "Null", "NULL", "~", NULL };
    size_t i;

    if (s[0] == '\0' || s[0] == '-')
        return false;
    for (i = 0; nulls[i] != NULL; i++)
        if (strcmp(s, nulls[i]) == 0)
            return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789_./+-") == strlen(s);
}

static void
write_scalar(FILE *fp, const struct ng_value *v)
{
    const unsigned char *p;

    if (v->is_null) {
        fputs("~", fp);
        return;
    }
    if (plain_ok(v->text)) {
        fputs(v->text, fp);
        return;
    }
    fputc('"', fp);
    for (p = (const unsigned char *)v->text; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(fp, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(fp, "\\x%02x", *p);
        else
            fputc(*p, fp);
    }
    fputc('"', fp);
}

static void
write_key(FILE *fp, const char *key)
{
    struct ng_value k = { .kind = NG_VALUE_SCALAR, .text = (char *)key };

    write_scalar(fp, &k);
}

/* One value in flow style: { a: 1, b: [ x, y ] }. */
static void
write_flow(FILE *fp, const struct ng_value *v)
{
    size_t i;

    if (v->kind == NG_VALUE_SCALAR) {
        write_scalar(fp, v);
        return;
    }
    fputs(v->kind == NG_VALUE_MAP ? "{" : "[", fp);
    for (i = 0; i < v->n; i++) {
        fputs(i ? ", " : " ", fp);
        if (v->kind == NG_VALUE_MAP) {
            write_key(fp, v->keys[i]);
            fputs(": ", fp);
        }
        write_flow(fp, v->items[i]);
    }
    fputs(v->n ? " " : "", fp);
    fputs(v->kind == NG_VALUE_MAP ? "}" : "]", fp);
}

static void
write_entry(FILE *fp, const char *name, const struct ng_value *v)
{
    fputs("  ", fp);
    write_key(fp, name);
    fputs(": ", fp);
    write_flow(fp, v);
    fputc('\n', fp);
}

/* A top-level map of the running file (server:, tls-creds:) as it was
 * written, key by key in flow style.  False when the file has none. */
static bool
write_section(FILE *fp, const struct ng_config *cfg, const char *key)
{
    const struct ng_value *map = ng_value_get(cfg->doc, key);
    size_t i;

    if (map == NULL || map->kind != NG_VALUE_MAP)
        return false;
    fprintf(fp, "%s:\n", key);
    for (i = 0; i < map->n; i++) {
        const struct ng_value *v = map->items[i];

        if (v->kind != NG_VALUE_LIST) {
            write_entry(fp, map->keys[i], v);
            continue;
        }
        /* A list (listen:) one entry a line, as write_server has it. */
        fputs("  ", fp);
        write_key(fp, map->keys[i]);
        fputs(":\n", fp);
        for (size_t j = 0; j < v->n; j++) {
            fputs("    - ", fp);
            write_flow(fp, v->items[j]);
            fputc('\n', fp);
        }
    }
    return true;
}

static void
write_server(FILE *fp, const struct ng_live *live)
{
    struct ng_value s = { .kind = NG_VALUE_SCALAR };
    size_t i;

    /* The running server: section with its TLS and limits, which the
     * reload applies too: reloading the dump must not drop them. */
    if (live->server != NULL && live->server->doc != NULL &&
        write_section(fp, live->server, "server")) {
        write_section(fp, live->server, "tls-creds");
        return;
    }

    fputs("server:\n  listen:\n", fp);
    for (i = 0; i < live->n_listen; i++) {
        s.text = live->listen[i];
        fputs("    - ", fp);
        write_scalar(fp, &s);
        fputc('\n', fp);
    }
    if (live->control != NULL) {
        s.text = live->control;
        fputs("  control: ", fp);
        write_scalar(fp, &s);
        fputc('\n', fp);
    }
}

char *
ng_live_dump_yaml(const struct ng_live *live)
{
    char *text = NULL;
    size_t size = 0, i;
    FILE *fp = open_memstream(&text, &size);

    if (fp == NULL)
        return NULL;
    fputs("# written by nbdgraphd (dump-config)\n", fp);
    write_server(fp, live);
    if (live->n_groups > 0)
        fputs("throttle-groups:\n", fp);
    for (i = 0; i < live->n_groups; i++)
        write_entry(fp, live->groups[i].name, live->groups[i].limits);
    if (live->n_nodes > 0)
        fputs("nodes:\n", fp);
    for (i = 0; i < live->n_nodes; i++)
        write_entry(fp, live->nodes[i].name, live->nodes[i].opts);
    if (live->n_exports > 0)
        fputs("exports:\n", fp);
    for (i = 0; i < live->n_exports; i++)
        write_entry(fp, live->exports[i].id, live->exports[i].opts);
    if (fclose(fp) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
