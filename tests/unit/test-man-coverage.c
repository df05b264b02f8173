/* tests/unit/test-man-coverage.c: the man pages name everything a config
 * can hold.  contrib/nbdgraph.yaml.5 must have a section per driver naming
 * each option of its table, and name, in the right section, every key the
 * config loader accepts — read from the loader's own "unknown key ...
 * (expected ...)" errors, so a key added to config/config.c without docs
 * fails here.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "filters/filters.h"
#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

#define PAGE TOP_SRCDIR "/contrib/nbdgraph.yaml.5"

/* ---- The page as text ------------------------------------------------- */

/* The roff source with the escapes our pages use turned into what they
 * print (\- is '-', \fB and the like vanish), so an option name can be
 * searched for as it is spelled. */
static char *
page_text(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *src, *out, *o;
    long len;

    if (fp == NULL)
        fail("cannot open %s", path);
    CHECK(fseek(fp, 0, SEEK_END) == 0 && (len = ftell(fp)) >= 0);
    rewind(fp);
    src = malloc((size_t)len + 1);
    out = malloc((size_t)len + 1);
    CHECK(src != NULL && out != NULL &&
          fread(src, 1, (size_t)len, fp) == (size_t)len);
    src[len] = '\0';
    fclose(fp);
    o = out;
    for (const char *p = src; *p != '\0'; p++) {
        if (p[0] == '\\' && p[1] == 'f' && p[2] != '\0') {
            p += 2;                 /* \fB \fI \fR \fP */
        } else if (p[0] == '\\' && (p[1] == '-' || p[1] == 'e')) {
            *o++ = p[1] == '-' ? '-' : '\\';
            p++;
        } else if (p[0] == '\\' && p[1] == '&') {
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    free(src);
    return out;
}

/* The part of `text` from the line starting with `heading` (".SH X",
 * ".SS X") to the next heading of the same level or above. */
static char *
section(const char *text, const char *heading)
{
    char want[128];
    const char *start, *end, *p;

    snprintf(want, sizeof want, "\n%s\n", heading);
    start = strstr(text, want);
    if (start == NULL)
        fail("%s has no section '%s'", PAGE, heading);
    start += strlen(want);
    for (end = start; (p = strstr(end, "\n.S")) != NULL; end = p + 1) {
        if (p[3] == 'H' || (heading[2] == 'S' && p[3] == 'S'))
            break;
    }
    end = p != NULL ? p : start + strlen(start);
    return strndup(start, (size_t)(end - start));
}

/* `word` appears in `text` as a whole word ('-' and '.' are part of one:
 * "size" is not found in "iops-size"). */
static bool
has_word(const char *text, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = text; (p = strstr(p, word)) != NULL; p++) {
        char before = p == text ? ' ' : p[-1], after = p[n];

        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789-.", before) &&
            (after == '\0' ||
             !strchr("abcdefghijklmnopqrstuvwxyz0123456789-", after)))
            return true;
    }
    return false;
}

/* `key` is the tag of a .TP entry (".TP\n.B key", ".TP\n.BI key: ..."):
 * it has an entry of its own, not only a mention ("name" is in many a
 * sentence). */
static bool
has_item(const char *text, const char *key)
{
    static const char *const macros[] = {
        "\n.TP\n.B ", "\n.TP\n.BI ", "\n.TP\n.BR ", NULL
    };
    size_t n = strlen(key);
    char *lines = malloc(strlen(text) + 2);     /* a section's first line
                                                 * follows a newline too */
    bool found = false;

    CHECK(lines != NULL);
    lines[0] = '\n';
    strcpy(lines + 1, text);
    for (size_t i = 0; macros[i] != NULL && !found; i++) {
        size_t m = strlen(macros[i]);

        for (const char *p = lines; !found &&
             (p = strstr(p, macros[i])) != NULL; p++)
            found = strncmp(p + m, key, n) == 0 && p[m + n] != '\0' &&
                    strchr(": \n", p[m + n]) != NULL;
    }
    free(lines);
    return found;
}

static void
expect_word(const char *sec, const char *heading, const char *word,
            const char *what)
{
    if (!has_word(sec, word))
        fail("%s, section '%s': %s '%s' is not mentioned", PAGE, heading,
             what, word);
}

/* ---- Keys from the code ------------------------------------------------- */

/* The list in "(expected a, b, c)" of an error message, as words in
 * `out` (NULL-terminated, pointing into `buf`). */
static size_t
expected_list(const char *msg, char *buf, size_t size, char **out,
              size_t max)
{
    const char *p = strstr(msg, "(expected ");
    size_t n = 0;
    char *tok, *save;

    if (p == NULL)
        fail("no '(expected ...)' in '%s'", msg);
    snprintf(buf, size, "%s", p + strlen("(expected "));
    buf[strcspn(buf, ")")] = '\0';
    for (tok = strtok_r(buf, ", ", &save); tok != NULL && n + 1 < max;
         tok = strtok_r(NULL, ", ", &save))
        out[n++] = tok;
    out[n] = NULL;
    CHECK(n > 0);
    return n;
}

/* The error message of loading `yaml`, which must fail. */
static void
load_error(const char *yaml, struct ng_error *err)
{
    struct ng_config *cfg = ng_config_load_string(yaml, "probe", err);

    if (cfg != NULL)
        fail("probe config loaded: %s", yaml);
}

static const char probe_head[] =
    "server:\n  listen: [ 'unix:/tmp/x.sock' ]\n"
    "nodes:\n  n: { driver: null-co }\n";

/* Every key the loader lists when it meets `bogus` in `yaml` appears in
 * the section `heading`. */
static void
check_keys(const char *text, const char *heading, const char *yaml)
{
    struct ng_error err = { 0 };
    char buf[NG_ERROR_MSG_MAX], *keys[64];
    char *sec = section(text, heading);

    load_error(yaml, &err);
    expected_list(err.msg, buf, sizeof buf, keys, 64);
    for (size_t i = 0; keys[i] != NULL; i++) {
        if (!has_item(sec, keys[i]))
            fail("%s, section '%s': config key '%s' has no entry", PAGE,
                 heading, keys[i]);
        printf("  %s: %s\n", heading, keys[i]);
    }
    free(sec);
}

static void
test_config_keys(const char *text)
{
    char yaml[1024];

    printf("config keys (from the loader's errors)\n");
    check_keys(text, ".SH TOP-LEVEL KEYS", "bogus: 1\nserver:\n  listen: "
               "[ 'unix:/tmp/x.sock' ]\n");
    check_keys(text, ".SH SERVER", "server:\n  listen: [ 'unix:/tmp/x.sock' ]"
               "\n  bogus: 1\n");
    snprintf(yaml, sizeof yaml, "%sexports:\n  e: { node: n, bogus: 1 }\n",
             probe_head);
    check_keys(text, ".SH EXPORTS", yaml);
}

/* "iops-total, ..., bps-write, each optionally with -max or -max-length,
 * or iops-size": the names, the suffixes and the extra key. */
static void
test_throttle_limits(const char *text)
{
    const char *heading = ".SH THROTTLE LIMITS";
    struct ng_error err = { 0 };
    char buf[NG_ERROR_MSG_MAX], *words[64];
    char *sec = section(text, heading);
    char yaml[1024];

    printf("throttle limit keys (from the loader's errors)\n");
    snprintf(yaml, sizeof yaml, "%sthrottle-groups:\n  g: { bogus: 1 }\n",
             probe_head);
    load_error(yaml, &err);
    expected_list(err.msg, buf, sizeof buf, words, 64);
    for (size_t i = 0; words[i] != NULL; i++) {
        const char *w = words[i];

        if (strcmp(w, "each") == 0 || strcmp(w, "optionally") == 0 ||
            strcmp(w, "with") == 0 || strcmp(w, "or") == 0)
            continue;
        if (w[0] == '-') {          /* a suffix: "<limit>-max" */
            CHECK(strstr(sec, w) != NULL);
        } else {
            expect_word(sec, heading, w, "throttle limit");
        }
        printf("  %s\n", w);
    }
    free(sec);
}

/* ---- Drivers ------------------------------------------------------------ */

/* Keys every node takes (graph/opts.c, generic_keys): no driver's table
 * has them, so they are named here. */
static const char *const generic_keys[] = {
    "driver", "node-name", "read-only", NULL
};

static void
test_drivers(const char *text)
{
    char heading[128];
    char *sec = section(text, ".SH NODES");

    printf("drivers and their options (from the option tables)\n");
    for (size_t i = 0; generic_keys[i] != NULL; i++)
        expect_word(sec, ".SH NODES", generic_keys[i], "node key");
    free(sec);
    for (const struct ng_driver *const *d = ng_all_drivers; *d; d++) {
        snprintf(heading, sizeof heading, ".SS %s", (*d)->name);
        sec = section(text, heading);
        for (const struct ng_opt_desc *o = (*d)->opts; o->name; o++)
            expect_word(sec, heading, o->name, "option");
        printf("  %s: every option\n", (*d)->name);
        free(sec);
    }
}

/* Nested keys checked by the driver at open: blkdebug's rules. */
static void
test_blkdebug_rules(const char *text)
{
    const char *heading = ".SS blkdebug";
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_value *o;
    char buf[NG_ERROR_MSG_MAX], *keys[64];
    char *sec = section(text, heading);

    setup(&f, "blkdebug rule keys (from the driver's errors)");
    add(&f, "m", yaml("{ driver: memory, size: 1M }"));
    o = yaml("{ driver: blkdebug, image: m, inject-error: [ { bogus: 1 } ] }");
    CHECK(ng_graph_add_node_now(f.g, "b", o, &err) == NULL);
    ng_value_free(o);
    expected_list(err.msg, buf, sizeof buf, keys, 64);
    for (size_t i = 0; keys[i] != NULL; i++) {
        if (strcmp(keys[i], "or") == 0)
            continue;
        expect_word(sec, heading, keys[i], "inject-error key");
        printf("  %s\n", keys[i]);
    }
    teardown(&f);
    free(sec);
}

int
main(void)
{
    char *text;

    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    text = page_text(PAGE);
    test_config_keys(text);
    test_throttle_limits(text);
    test_drivers(text);
    test_blkdebug_rules(text);
    free(text);
    printf("every key and option is in %s\n", PAGE);
    return 0;
}
