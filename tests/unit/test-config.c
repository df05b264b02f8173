/* tests/unit/test-config.c: the config loader.
 *
 * Good configs (strings and the files in tests/configs/) must give the
 * model we expect; the built-in default must load; every
 * tests/configs/bad/X.yaml must fail with exactly the message in X.err.
 *
 * Runs in $srcdir (default "tests") and loads "configs/bad/X.yaml", so
 * the messages start with that path: "configs/bad/X.yaml:3:5: ...".
 * With NG_REGEN_ERR=1 it writes what it got into the .err files instead
 * of comparing: for when a message changes on purpose (review the diff).
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

struct t {
    unsigned checks;
    unsigned failed;
};

#define CHECK(t, cond) check((t), (cond), #cond, __LINE__)
#define CHECK_STR(t, got, want) check_str((t), (got), (want), #got, __LINE__)

static bool
check(struct t *t, bool ok, const char *what, int line)
{
    t->checks++;
    if (!ok) {
        t->failed++;
        fprintf(stderr, "FAIL line %d: %s\n", line, what);
    }
    return ok;
}

static void
check_str(struct t *t, const char *got, const char *want, const char *what,
          int line)
{
    bool ok = (got == NULL && want == NULL) ||
              (got != NULL && want != NULL && strcmp(got, want) == 0);

    t->checks++;
    if (!ok) {
        t->failed++;
        fprintf(stderr, "FAIL line %d: %s is \"%s\", expected \"%s\"\n", line,
                what, got ? got : "(null)", want ? want : "(null)");
    }
}

/* Load `yaml` as "test.yaml"; a failure is a test failure.  Caller frees. */
static struct ng_config *
load(struct t *t, const char *yaml, int line)
{
    struct ng_error err = { 0 };
    struct ng_config *cfg = ng_config_load_string(yaml, "test.yaml", &err);

    if (!check(t, cfg != NULL, "config loads", line))
        fprintf(stderr, "  error: %s\n", err.msg);
    return cfg;
}

/* `yaml` must fail with exactly `want`. */
static void
expect_error(struct t *t, const char *yaml, const char *want, int line)
{
    struct ng_error err = { 0 };
    struct ng_config *cfg = ng_config_load_string(yaml, "test.yaml", &err);

    if (!check(t, cfg == NULL, "config is refused", line)) {
        ng_config_free(cfg);
        return;
    }
    if (!check(t, strcmp(err.msg, want) == 0, "error message", line))
        fprintf(stderr, "  want: %s\n  got:  %s\n", want, err.msg);
}

#define LOAD(t, yaml) load((t), (yaml), __LINE__)
#define EXPECT_ERROR(t, yaml, want) expect_error((t), (yaml), (want), __LINE__)

static const char *
opt_text(const struct ng_value *opts, const char *key)
{
    const struct ng_value *v = ng_value_get(opts, key);

    return v != NULL && v->kind == NG_VALUE_SCALAR ? v->text : NULL;
}

/* ---- Good configs ------------------------------------------------------ */

static void
test_default(struct t *t)
{
    struct ng_error err = { 0 };
    struct ng_config *cfg = ng_config_default(&err);
    const struct ng_export_cfg *e;

    if (!CHECK(t, cfg != NULL)) {
        fprintf(stderr, "  error: %s\n", err.msg);
        return;
    }
    CHECK_STR(t, cfg->file, "<default>");
    CHECK(t, cfg->n_listen == 2);
    CHECK(t, cfg->listen[0].kind == NG_LISTEN_UNIX);
    CHECK_STR(t, cfg->listen[0].path, NG_DEFAULT_SOCKET);
    CHECK(t, cfg->listen[1].kind == NG_LISTEN_TCP);
    CHECK_STR(t, cfg->listen[1].host, "127.0.0.1");
    CHECK_STR(t, cfg->listen[1].port, "10809");
    CHECK_STR(t, cfg->control, NG_DEFAULT_CONTROL);
    CHECK(t, cfg->n_nodes == 1);
    CHECK_STR(t, cfg->nodes[0].name, "demo");
    CHECK_STR(t, opt_text(cfg->nodes[0].opts, "driver"), "memory");
    CHECK_STR(t, opt_text(cfg->nodes[0].opts, "size"), "1G");
    CHECK(t, cfg->n_exports == 1);
    e = &cfg->exports[0];
    CHECK_STR(t, e->name, "demo");
    CHECK_STR(t, e->node, "demo");
    CHECK(t, e->writable);
    CHECK_STR(t, e->description, "nbdgraph built-in 1 GiB memory disk");
    CHECK(t, e->loc.file == cfg->file);
    ng_config_free(cfg);
}

static void
test_listen_forms(struct t *t)
{
    struct ng_config *cfg = LOAD(t,
        "server:\n"
        "  listen:\n"
        "    - unix:relative.sock\n"
        "    - tcp:[::1]:10809\n"
        "    - \"tcp:localhost:0080\"\n"
        "    - tcp:0.0.0.0:65535\n");

    if (cfg == NULL)
        return;
    CHECK(t, cfg->n_listen == 4);
    CHECK_STR(t, cfg->listen[0].path, "relative.sock");
    CHECK_STR(t, cfg->listen[0].text, "unix:relative.sock");
    CHECK(t, cfg->listen[0].host == NULL);
    CHECK(t, cfg->listen[1].kind == NG_LISTEN_TCP);
    CHECK_STR(t, cfg->listen[1].host, "::1");
    CHECK_STR(t, cfg->listen[1].port, "10809");
    CHECK(t, cfg->listen[1].loc.line == 4 && cfg->listen[1].loc.column == 7);
    CHECK_STR(t, cfg->listen[2].host, "localhost");
    CHECK_STR(t, cfg->listen[2].port, "80");
    CHECK_STR(t, cfg->listen[3].port, "65535");
    CHECK(t, cfg->control == NULL);
    CHECK(t, cfg->n_nodes == 0 && cfg->n_exports == 0);
    ng_config_free(cfg);

    cfg = LOAD(t, "server: { listen: \"unix:/x.sock\", control: /c.sock }\n"
                  "nodes:\n"
                  "exports:\n");
    if (cfg == NULL)
        return;
    CHECK(t, cfg->n_listen == 1 && cfg->listen[0].kind == NG_LISTEN_UNIX);
    CHECK_STR(t, cfg->listen[0].path, "/x.sock");
    CHECK_STR(t, cfg->control, "/c.sock");
    ng_config_free(cfg);
}

/* A daemon about to chdir("/") makes its socket paths absolute against
 * the working directory; "x.sock" and "/cwd/x.sock" then clash. */
static void
test_absolute_paths(struct t *t)
{
    struct ng_error err = { 0 };
    char cwd[1024], want[2 * sizeof cwd + 128];
    struct ng_config *cfg;

    if (!CHECK(t, getcwd(cwd, sizeof cwd) != NULL))
        return;
    cfg = LOAD(t, "server:\n"
                  "  listen: [ \"unix:run/n.sock\", \"unix:/abs.sock\",\n"
                  "            \"tcp:127.0.0.1:10809\" ]\n"
                  "  control: c.sock\n");
    if (cfg == NULL)
        return;
    CHECK(t, ng_config_absolute_paths(cfg, &err) == 0);
    snprintf(want, sizeof want, "%s/run/n.sock", cwd);
    CHECK_STR(t, cfg->listen[0].path, want);
    snprintf(want, sizeof want, "unix:%s/run/n.sock", cwd);
    CHECK_STR(t, cfg->listen[0].text, want);
    CHECK_STR(t, cfg->listen[1].text, "unix:/abs.sock");
    CHECK_STR(t, cfg->listen[2].text, "tcp:127.0.0.1:10809");
    snprintf(want, sizeof want, "%s/c.sock", cwd);
    CHECK_STR(t, cfg->control, want);
    ng_config_free(cfg);

    snprintf(want, sizeof want, "server:\n  listen: [ \"unix:x.sock\" ]\n"
             "  control: %s/x.sock\n", cwd);
    cfg = LOAD(t, want);
    if (cfg == NULL)
        return;
    CHECK(t, ng_config_absolute_paths(cfg, &err) == -1);
    snprintf(want, sizeof want, "test.yaml:3:12: control socket '%s/x.sock' "
             "is also listen address 'unix:%s/x.sock' (at 2:13)", cwd, cwd);
    CHECK_STR(t, err.msg, want);
    ng_config_free(cfg);
}

static void
test_bad_listen(struct t *t)
{
    EXPECT_ERROR(t, "server: { listen: [] }\n",
                 "test.yaml:1:19: no listen address in the list");
    EXPECT_ERROR(t, "server: { listen: \"unix:\" }\n",
                 "test.yaml:1:19: listen address 'unix:': empty socket path");
    EXPECT_ERROR(t, "server: { listen: \"tcp::10809\" }\n",
                 "test.yaml:1:19: listen address 'tcp::10809': missing host "
                 "(expected tcp:HOST:PORT)");
    EXPECT_ERROR(t, "server: { listen: \"tcp:[::1]\" }\n",
                 "test.yaml:1:19: listen address 'tcp:[::1]': missing port "
                 "(expected tcp:HOST:PORT)");
    EXPECT_ERROR(t, "server: { listen: \"tcp:[::1:10809\" }\n",
                 "test.yaml:1:19: listen address 'tcp:[::1:10809': missing "
                 "']' after IPv6 host");
    EXPECT_ERROR(t, "server: { listen: \"tcp:h:0\" }\n",
                 "test.yaml:1:19: listen address 'tcp:h:0': bad port '0' "
                 "(expected 1 to 65535)");
    EXPECT_ERROR(t, "server: { listen: \"tcp:h:nbd\" }\n",
                 "test.yaml:1:19: listen address 'tcp:h:nbd': bad port "
                 "'nbd' (expected 1 to 65535)");
    EXPECT_ERROR(t, "server: { listen: { unix: /x } }\n",
                 "test.yaml:1:19: 'listen' must be a string or a list, not "
                 "a mapping");
    EXPECT_ERROR(t, "server: { listen: unix:/x, control: \"\" }\n",
                 "test.yaml:1:37: 'control' must not be empty");
    EXPECT_ERROR(t, "server:\n",
                 "test.yaml:1:8: 'server' must be a mapping, not null");
}

/* Children first; among nodes free to go, file order. */
static void
test_node_order(struct t *t)
{
    static const char *const want[] = {
        "solo", "disk", "mid", "top", "side", "user",
    };
    struct ng_config *cfg = LOAD(t,
        "server: { listen: unix:/x.sock }\n"
        "nodes:\n"
        "  top:  { driver: raw, file: mid }\n"
        "  solo: { driver: null-co, size: 1M }\n"
        "  mid:  { driver: raw, file: disk, offset: 1M }\n"
        "  disk: { node-name: disk, driver: memory, size: 1G }\n"
        "  side:\n"
        "    driver: raw\n"
        "    file: { driver: memory, size: 1M, node-name: inl }\n"
        "  user: { driver: raw, file: inl }\n"
        "exports:\n"
        "  e1: { node: inl }\n");
    size_t i;

    if (cfg == NULL)
        return;
    if (!CHECK(t, cfg->n_nodes == 6))
        goto out;
    for (i = 0; i < 6; i++)
        CHECK_STR(t, cfg->nodes[i].name, want[i]);
    /* "disk" came with a node-name: the model's options have none */
    CHECK(t, ng_value_get(cfg->nodes[1].opts, "node-name") == NULL);
    CHECK_STR(t, opt_text(cfg->nodes[1].opts, "size"), "1G");
    CHECK(t, cfg->nodes[1].loc.line == 6 && cfg->nodes[1].loc.column == 3);
    CHECK(t, cfg->nodes[1].opts->items[0]->loc.file == cfg->file);
    /* inline definitions stay inside their parent's options */
    CHECK(t, ng_value_get(ng_value_get(cfg->nodes[4].opts, "file"),
                          "node-name") != NULL);
    CHECK_STR(t, cfg->exports[0].node, "inl");
out:
    ng_config_free(cfg);
}

static void
test_exports(struct t *t)
{
    struct ng_config *cfg = LOAD(t,
        "server: { listen: unix:/x.sock }\n"
        "nodes:\n"
        "  m: { driver: memory, size: 64M }\n"
        "exports:\n"
        "  ro: { node: m }\n"
        "  rw:\n"
        "    node: m\n"
        "    writable: yes\n"
        "    description: \"\"\n"
        "  \"\": { node: m, writable: false, description: default export }\n");
    const struct ng_export_cfg *e;

    if (cfg == NULL)
        return;
    if (!CHECK(t, cfg->n_exports == 3))
        goto out;
    e = &cfg->exports[0];
    CHECK_STR(t, e->name, "ro");
    CHECK_STR(t, e->node, "m");
    CHECK(t, !e->writable);
    CHECK(t, e->description == NULL);
    CHECK(t, e->extra != NULL && e->extra->kind == NG_VALUE_MAP);
    CHECK(t, e->loc.line == 5 && e->loc.column == 3);
    e = &cfg->exports[1];
    CHECK(t, e->writable);
    CHECK_STR(t, e->description, "");
    CHECK_STR(t, opt_text(e->extra, "writable"), "yes");
    e = &cfg->exports[2];
    CHECK_STR(t, e->name, "");
    CHECK(t, !e->writable);
    CHECK_STR(t, e->description, "default export");
out:
    ng_config_free(cfg);
}

static void
test_yaml_features(struct t *t)
{
    /* anchors and aliases: the alias is a copy */
    struct ng_config *cfg = LOAD(t,
        "server: { listen: unix:/x.sock }\n"
        "nodes:\n"
        "  a: &mem { driver: memory, size: 1M }\n"
        "  b: *mem\n"
        "exports:\n"
        "  a: { node: a, description: 'single ''quoted''' }\n");

    if (cfg == NULL)
        return;
    CHECK(t, cfg->n_nodes == 2);
    CHECK_STR(t, opt_text(cfg->nodes[1].opts, "size"), "1M");
    CHECK_STR(t, cfg->exports[0].description, "single 'quoted'");
    ng_config_free(cfg);
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\nnodes: { a: *nope }\n",
                 "test.yaml:2:13: undefined alias 'nope'");
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock, [k]: v }\n",
                 "test.yaml:1:33: mapping key must be a scalar");
    EXPECT_ERROR(t, "server: { listen: \"unix:/x\\0y\" }\n",
                 "test.yaml:1:19: string contains a NUL character");
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\nnodes: [\n",
                 "test.yaml:3:1: did not find expected node content (while "
                 "parsing a flow node at 3:1)");
}

static void
test_nodes_more(struct t *t)
{
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\n"
                    "nodes:\n"
                    "  a: { driver: raw, file: { driver: raw, node-name: b,"
                    " file: b } }\n",
                 "test.yaml:3:62: node 'a': 'b' is defined inside this node "
                 "and cannot be referenced from it");
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\n"
                    "nodes:\n"
                    "  a: { driver: raw, file: { driver: memory, size: 1M,"
                    " node-name: '#ng0' } }\n",
                 "test.yaml:3:66: node 'a': invalid node name '#ng0' (a "
                 "letter, then up to 126 letters, digits, '-', '.' or '_')");
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\n"
                    "nodes:\n"
                    "  a: { driver: raw, file: { driver: memory, size: 1M,"
                    " node-name: { x: y } } }\n",
                 "test.yaml:3:66: node 'a': 'node-name' must be a string, "
                 "not a mapping");
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\n"
                    "nodes:\n"
                    "  a: { driver: memory, size: 1M, node-name: [a] }\n",
                 "test.yaml:3:45: node 'a': 'node-name' must be a string, "
                 "not a list");
    EXPECT_ERROR(t, "server: { listen: unix:/x.sock }\n"
                    "nodes:\n"
                    "  a: memory\n",
                 "test.yaml:3:6: node 'a' must be a mapping, not a scalar");
}

static void
test_files(struct t *t)
{
    struct ng_error err = { 0 };
    struct ng_config *cfg = ng_config_load_file("configs/memory-1g.yaml",
                                                &err);

    if (!CHECK(t, cfg != NULL)) {
        fprintf(stderr, "  error: %s\n", err.msg);
    } else {
        CHECK_STR(t, cfg->file, "configs/memory-1g.yaml");
        CHECK(t, cfg->n_listen == 1);
        CHECK_STR(t, cfg->listen[0].path, "@SOCK@");
        CHECK_STR(t, cfg->control, "@CONTROL@");
        CHECK(t, cfg->n_nodes == 1 && cfg->n_exports == 1);
        CHECK_STR(t, opt_text(cfg->nodes[0].opts, "driver"), "memory");
        CHECK_STR(t, cfg->exports[0].name, "demo");
        CHECK(t, cfg->exports[0].writable);
    }
    ng_config_free(cfg);
    cfg = ng_config_load_file("configs/no-such-file.yaml", &err);
    CHECK(t, cfg == NULL);
    CHECK_STR(t, err.msg, "configs/no-such-file.yaml: cannot open config "
              "file: no such file or directory");
    CHECK(t, err.code == ENOENT);
    ng_config_free(NULL);
}

/* ---- Every file in a directory -------------------------------------- */

static int
cmp_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in `dir` ending in `ext`, without it, sorted; caller frees. */
static char **
list_dir(const char *dir, const char *ext, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL, **p;
    size_t len, elen = strlen(ext);

    *n = 0;
    while (d != NULL && (de = readdir(d)) != NULL) {
        len = strlen(de->d_name);
        if (len <= elen || strcmp(de->d_name + len - elen, ext) != 0)
            continue;
        if ((p = realloc(names, (*n + 1) * sizeof *p)) == NULL)
            abort();
        names = p;
        if ((names[(*n)++] = strndup(de->d_name, len - elen)) == NULL)
            abort();
    }
    if (d != NULL)
        closedir(d);
    if (*n > 0)
        qsort(names, *n, sizeof *names, cmp_strings);
    return names;
}

static void
free_list(char **names, size_t n)
{
    while (n > 0)
        free(names[--n]);
    free(names);
}

static void
test_good_files(struct t *t)
{
    size_t n, i;
    char **names = list_dir("configs", ".yaml", &n);
    char path[512];

    CHECK(t, n >= 2);
    for (i = 0; i < n; i++) {
        struct ng_error err = { 0 };
        struct ng_config *cfg;

        snprintf(path, sizeof path, "configs/%s.yaml", names[i]);
        cfg = ng_config_load_file(path, &err);
        if (!CHECK(t, cfg != NULL))
            fprintf(stderr, "  %s: %s\n", path, err.msg);
        ng_config_free(cfg);
    }
    free_list(names, n);
}

/* The first line of a file, without its newline; caller frees. */
static char *
read_line(const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t size = 0;
    ssize_t len;

    if (f == NULL)
        return NULL;
    len = getline(&line, &size, f);
    fclose(f);
    if (len < 0) {
        free(line);
        return strdup("");
    }
    if (len > 0 && line[len - 1] == '\n')
        line[len - 1] = '\0';
    return line;
}

static void
run_bad(struct t *t, const char *name, bool regen)
{
    char yaml[512], errf[512];
    struct ng_error err = { 0 };
    struct ng_config *cfg;
    char *want;
    FILE *f;

    snprintf(yaml, sizeof yaml, "configs/bad/%s.yaml", name);
    snprintf(errf, sizeof errf, "configs/bad/%s.err", name);
    cfg = ng_config_load_file(yaml, &err);
    if (!check(t, cfg == NULL, yaml, __LINE__)) {
        fprintf(stderr, "  %s loaded, but should not\n", yaml);
        ng_config_free(cfg);
        return;
    }
    if (regen && (f = fopen(errf, "w")) != NULL) {
        fprintf(f, "%s\n", err.msg);
        fclose(f);
    }
    want = read_line(errf);
    if (!check(t, want != NULL && strcmp(err.msg, want) == 0, errf,
               __LINE__))
        fprintf(stderr, "  want: %s\n  got:  %s\n", want ? want : "(none)",
                err.msg);
    else
        printf("ok %s\n", yaml);
    free(want);
}

static void
test_bad_files(struct t *t, bool regen)
{
    size_t n, n_err, i;
    char **names = list_dir("configs/bad", ".yaml", &n);
    char **errs = list_dir("configs/bad", ".err", &n_err);

    CHECK(t, n >= 15);
    CHECK(t, n == n_err);           /* every .yaml has its .err */
    for (i = 0; i < n; i++)
        run_bad(t, names[i], regen);
    free_list(names, n);
    free_list(errs, n_err);
}

int
main(void)
{
    const char *srcdir = getenv("srcdir");
    const char *regen = getenv("NG_REGEN_ERR");
    struct t t = { 0 };

    if (srcdir == NULL)
        srcdir = "tests";
    if (chdir(srcdir) == -1) {
        fprintf(stderr, "test-config: %s: %s\n", srcdir, strerror(errno));
        return EXIT_FAILURE;
    }
    test_default(&t);
    test_listen_forms(&t);
    test_bad_listen(&t);
    test_absolute_paths(&t);
    test_node_order(&t);
    test_exports(&t);
    test_yaml_features(&t);
    test_nodes_more(&t);
    test_files(&t);
    test_good_files(&t);
    test_bad_files(&t, regen != NULL && strcmp(regen, "1") == 0);
    printf("test-config: %u checks, %u failed\n", t.checks, t.failed);
    return t.failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
