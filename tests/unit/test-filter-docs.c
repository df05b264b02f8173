/* tests/unit/test-filter-docs.c: docs/filters.md and the filters agree:
 * every filter has a section naming each of its options, and every
 * example loads through the config loader and opens.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "graph/value.h"
#include "graph/graph.h"
#include "config/config.h"
#include "filters/filters.h"
#include "tests/unit/graph-fixture.h"

/* ---- docs/filters.md -------------------------------------------------- */

static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *text;
    long len;

    if (fp == NULL)
        fail("cannot open %s", path);
    CHECK(fseek(fp, 0, SEEK_END) == 0 && (len = ftell(fp)) >= 0);
    rewind(fp);
    text = malloc((size_t)len + 1);
    CHECK(text != NULL && fread(text, 1, (size_t)len, fp) == (size_t)len);
    text[len] = '\0';
    fclose(fp);
    return text;
}

/* Build the nodes of one example (a "nodes:" section) through the config
 * loader; a log's file goes to the fixture's temp dir. */
static void
docs_example(const char *yaml_text, size_t len)
{
    static const char head[] = "server:\n  listen: [ 'unix:/tmp/x.sock' ]\n";
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_config *cfg;
    char *text = malloc(sizeof head + len), logfile[512];

    CHECK(text != NULL);
    memcpy(text, head, sizeof head - 1);
    memcpy(text + sizeof head - 1, yaml_text, len);
    text[sizeof head - 1 + len] = '\0';
    cfg = ng_config_load_string(text, "docs/filters.md example", &err);
    if (cfg == NULL)
        fail("docs/filters.md example does not load: %s\n%s", err.msg,
             yaml_text);
    setup(&f, "  an example");
    snprintf(logfile, sizeof logfile, "%s/example.log", f.tmpdir);
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        struct ng_value *o = ng_value_copy(cfg->nodes[i].opts);
        ptrdiff_t k;

        CHECK(o != NULL);
        if ((k = ng_value_index(o, "logfile")) >= 0) {
            ng_value_free(o->items[k]);
            o->items[k] = ng_value_new_scalar(logfile, (struct ng_loc){ 0 });
            CHECK(o->items[k] != NULL);
        }
        if (add_try(&f, cfg->nodes[i].name, o, &err) == NULL)
            fail("docs/filters.md example, node '%s': %s",
                 cfg->nodes[i].name, err.msg);
        ng_value_free(o);
    }
    teardown(&f);
    ng_config_free(cfg);
    free(text);
}

/* The docs name every filter and every option of its table, and their
 * examples work. */
static void
test_docs(void)
{
    char *text = slurp(TOP_SRCDIR "/docs/filters.md"), *p, *end;
    char want[128];
    unsigned examples = 0;

    printf("docs/filters.md: every filter and option, examples work\n");
    for (const struct ng_driver *const *d = ng_filter_drivers; *d; d++) {
        if (strcmp((*d)->name, "nofilter") == 0)
            continue;
        snprintf(want, sizeof want, "\n## %s\n", (*d)->name);
        if (strstr(text, want) == NULL)
            fail("docs/filters.md has no section '## %s'", (*d)->name);
        for (const struct ng_opt_desc *o = (*d)->opts; o->name; o++) {
            snprintf(want, sizeof want, "`%s`", o->name);
            if (strstr(text, want) == NULL)
                fail("docs/filters.md does not mention option %s of %s",
                     want, (*d)->name);
            CHECK(o->help != NULL && o->help[0] != '\0');
        }
    }
    for (p = text; (p = strstr(p, "```yaml\n")) != NULL; p = end) {
        p += strlen("```yaml\n");
        end = strstr(p, "```");
        CHECK(end != NULL);
        docs_example(p, (size_t)(end - p));
        examples++;
    }
    CHECK(examples >= 6);
    free(text);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_docs();
    printf("all docs tests passed\n");
    return 0;
}
