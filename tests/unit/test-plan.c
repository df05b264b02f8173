/* tests/unit/test-plan.c: the reload diff (config/plan.c) and the dump
 * (config/dump.c) as pure functions: a config and a live model in, steps
 * or a refusal out; the dump of a model read back gives an empty plan. */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/plan.h"

static unsigned checks, failed;

#define CHECK(cond) check((cond), #cond, __LINE__)

static bool
check(bool ok, const char *what, int line)
{
    checks++;
    if (!ok) {
        failed++;
        fprintf(stderr, "FAIL line %d: %s\n", line, what);
    }
    return ok;
}

#define SERVER \
    "server:\n  listen: [ \"unix:/tmp/x.sock\" ]\n  control: /tmp/c.sock\n"

static const char base[] =
    SERVER
    "throttle-groups:\n"
    "  g1: { iops-total: 1000 }\n"
    "nodes:\n"
    "  m0: { driver: memory, size: 1M }\n"
    "  m1: { driver: memory, size: 1M }\n"
    "  t0: { driver: throttle, file: m1, limits: { iops-total: 500 } }\n"
    "exports:\n"
    "  e0: { node: m0, writable: true, throttle: { iops-total: 100 } }\n"
    "  e1: { node: t0, writable: true, detect-zeroes: unmap }\n";

static struct ng_config *
load(const char *yaml)
{
    struct ng_error err = { 0 };
    struct ng_config *cfg = ng_config_load_string(yaml, "test.yaml", &err);

    if (cfg == NULL) {
        fprintf(stderr, "FAIL: config does not load: %s\n", err.msg);
        exit(1);
    }
    return cfg;
}

static struct ng_live *
live_of(const char *yaml)
{
    struct ng_config *cfg = load(yaml);
    struct ng_live *live = ng_live_from_config(cfg);

    ng_config_free(cfg);
    if (live == NULL)
        exit(1);
    return live;
}

/* The plan of `yaml` against `live` as "kind object; kind object; ...",
 * or "refused: <message>". */
static char *
plan_text(const char *yaml, const struct ng_live *live, bool prune)
{
    struct ng_config *cfg = load(yaml);
    struct ng_error err = { 0 };
    struct ng_plan *plan = ng_plan_compute(cfg, live, prune, &err);
    char *text = NULL;
    size_t size = 0, i;
    FILE *fp = open_memstream(&text, &size);

    if (plan == NULL)
        fprintf(fp, "refused: %s", err.msg);
    for (i = 0; plan != NULL && i < plan->n_steps; i++)
        fprintf(fp, "%s%s %s", i ? "; " : "",
                ng_step_kind_name(plan->steps[i].kind),
                plan->steps[i].object);
    for (i = 0; plan != NULL && i < plan->n_kept; i++)
        fprintf(fp, "%skept %s", i || plan->n_steps ? "; " : "",
                plan->kept[i].name);
    fclose(fp);
    ng_plan_free(plan);
    ng_config_free(cfg);
    return text;
}

#define EXPECT_PLAN(yaml, live, prune, want) \
    expect_plan((yaml), (live), (prune), (want), __LINE__)

static void
expect_plan(const char *yaml, const struct ng_live *live, bool prune,
            const char *want, int line)
{
    char *got = plan_text(yaml, live, prune);

    checks++;
    if (strcmp(got, want) != 0 &&
        !(strncmp(want, "refused: ", 9) == 0 &&
          strncmp(got, "refused: ", 9) == 0 && strstr(got, want + 9))) {
        failed++;
        fprintf(stderr, "FAIL line %d:\n  want: %s\n  got:  %s\n", line,
                want, got);
    }
    free(got);
}

/* `base` with `from` replaced by `to` (once).  Static buffer. */
static const char *
edit(const char *text, const char *from, const char *to)
{
    static char buf[8][8192];      /* a ring: results outlive 7 calls */
    static unsigned which;
    const char *at = strstr(text, from);
    char *out = buf[which++ % 8];

    if (at == NULL) {
        fprintf(stderr, "FAIL: '%s' not in the config\n", from);
        exit(1);
    }
    snprintf(out, sizeof buf[0], "%.*s%s%s", (int)(at - text), text, to,
             at + strlen(from));
    return out;
}

static void
test_unchanged(void)
{
    struct ng_live *live = live_of(base);

    EXPECT_PLAN(base, live, false, "");
    EXPECT_PLAN(base, live, true, "");
    /* The same sizes written otherwise are no change. */
    EXPECT_PLAN(edit(base, "m0: { driver: memory, size: 1M }",
                     "m0: { driver: memory, size: 1048576 }"), live, false,
                "");
    ng_live_free(live);
    /* QEMU's grammar: a fraction with a suffix. */
    live = live_of(edit(base, "m0: { driver: memory, size: 1M }",
                        "m0: { driver: memory, size: 1536K }"));
    EXPECT_PLAN(edit(base, "m0: { driver: memory, size: 1M }",
                     "m0: { driver: memory, size: 1.5M }"), live, false, "");
    ng_live_free(live);
}

static void
test_retune(void)
{
    struct ng_live *live = live_of(base);
    const char *y = edit(base, "iops-total: 500", "iops-total: 600");

    y = edit(y, "iops-total: 1000", "iops-total: 2000");
    y = edit(y, "iops-total: 100 }", "iops-total: 200 }");
    y = edit(y, "detect-zeroes: unmap", "detect-zeroes: on");
    EXPECT_PLAN(y, live, false, "retune-node t0; retune-group g1; "
                "retune-export e0; retune-export e1");
    ng_live_free(live);
}

static void
test_add_remove(void)
{
    struct ng_live *live = live_of(base);
    const char *more = edit(base, "exports:\n",
                            "  r0: { driver: raw, file: m2, size: 4096 }\n"
                            "  m2: { driver: null-co, size: 1M }\n"
                            "exports:\n  e2: { node: r0 }\n");
    const char *less = edit(base, "  e1: { node: t0, writable: true, "
                            "detect-zeroes: unmap }\n", "");

    EXPECT_PLAN(more, live, false, "add-node m2; add-node r0; add-export e2");
    less = edit(less, "  t0: { driver: throttle, file: m1, limits: "
                "{ iops-total: 500 } }\n", "");
    EXPECT_PLAN(less, live, false, "remove-export e1; remove-node t0");
    ng_live_free(live);
    /* Removing a chain: parents first. */
    live = live_of(more);
    EXPECT_PLAN(base, live, false, "remove-export e2; remove-node r0; "
                "remove-node m2");
    ng_live_free(live);
}

static void
test_refusals(void)
{
    struct ng_live *live = live_of(base);
    const char *y;

    EXPECT_PLAN(edit(base, "size: 1M", "size: 2M"), live, false,
                "refused: test.yaml:7:3: node 'm0': option 'size' cannot "
                "change on a live node; give the node a new name");
    EXPECT_PLAN(edit(base, "file: m1", "file: m0"), live, false,
                "refused: node 't0': option 'file' cannot change on a live "
                "node");
    EXPECT_PLAN(edit(base, "control: /tmp/c.sock", "control: /tmp/d.sock"),
                live, false, "refused: server: 'control' cannot change on "
                "reload");
    /* An export change that needs remove + add: fine without clients,
     * refused with them. */
    y = edit(base, "node: m0, writable: true", "node: m0, writable: false");
    EXPECT_PLAN(y, live, false, "replace-export e0");
    ng_live_export(live, "e0")->clients = 2;
    EXPECT_PLAN(y, live, false, "refused: test.yaml:11:3: export 'e0': "
                "changing 'writable' removes the export and adds it again, "
                "which would disconnect its 2 client(s)");
    EXPECT_PLAN(edit(base, "  e0: { node: m0, writable: true, throttle: { "
                     "iops-total: 100 } }\n", ""), live, false,
                "refused: export 'e0' has 2 client(s) connected");
    /* A live retune is fine with clients: they see a pause at most. */
    EXPECT_PLAN(edit(base, "iops-total: 100 }", "iops-total: 300 }"), live,
                false, "retune-export e0");
    /* A node a job holds. */
    ng_live_node(live, "t0")->held_by = strdup("mirror0");
    EXPECT_PLAN(edit(base, "iops-total: 500", "iops-total: 9"), live, false,
                "refused: node 't0' is in use by job 'mirror0'");
    ng_live_free(live);
}

/* With the running server: section known, the plan changes it live:
 * new addresses first, removed ones last, limits and TLS in place. */
static void
test_server(void)
{
    struct ng_live *live = live_of(base);
    struct ng_config *running = load(base);
    const char *tls = "tls-creds:\n  k: { type: psk, dir: /tmp/k }\n";
    char *with_tls = malloc(strlen(base) + strlen(tls) + 1);

    live->server = running;
    EXPECT_PLAN(base, live, false, "");
    EXPECT_PLAN(edit(base, "unix:/tmp/x.sock", "unix:/tmp/y.sock"), live,
                false, "add-listen unix:/tmp/y.sock; "
                "remove-listen unix:/tmp/x.sock");
    EXPECT_PLAN(edit(base, "  control:", "  max-connections: 4\n"
                     "  idle-timeout: 9\n  control:"), live, false,
                "retune-server server");
    /* TLS on the address that was plain, with new credentials. */
    strcpy(with_tls, base);
    strcat(with_tls, tls);
    EXPECT_PLAN(edit(with_tls, "\"unix:/tmp/x.sock\"", "{ address: "
                     "\"unix:/tmp/x.sock\", tls: require, tls-creds: k }"),
                live, false, "load-tls-creds k; retune-listen "
                "unix:/tmp/x.sock");
    EXPECT_PLAN(edit(base, "  control: /tmp/c.sock\n", "  control: "
                     "/tmp/c.sock\n  control-group: root\n"), live, false,
                "refused: server: 'control-group' cannot change on reload");
    free(with_tls);
    ng_config_free(running);
    ng_live_free(live);
}

static void
test_control_channel(void)
{
    struct ng_live *live = live_of(base);
    struct ng_config *cfg = load(SERVER "nodes:\n"
                                 "  m0: { driver: memory, size: 1M }\n"
                                 "  c0: { driver: memory, size: 1M }\n"
                                 "  f1: { driver: nofilter, file: m0 }\n"
                                 "exports:\n  ce: { node: c0 }\n");
    struct ng_value *canon;
    size_t i;

    /* Made over the control channel: c0, ce, and a filter f1 spliced
     * between e0 and m0. */
    for (i = 0; i < cfg->n_nodes; i++)
        if (strcmp(cfg->nodes[i].name, "m0") != 0)
            ng_live_set_node(live, cfg->nodes[i].name, cfg->nodes[i].opts,
                             false);
    canon = ng_export_canon("ce", cfg->exports[0].extra);
    ng_live_set_export(live, "ce", canon, false);
    ng_value_free(canon);
    ng_value_free(ng_live_export(live, "e0")->opts->items[0]);
    ng_live_export(live, "e0")->opts->items[0] =
        ng_value_new_scalar("f1", (struct ng_loc){ 0 });
    ng_config_free(cfg);
    EXPECT_PLAN(base, live, false, "kept c0; kept f1; kept ce");
    EXPECT_PLAN(base, live, true, "remove-export ce; remove-node c0; "
                "remove-node f1");
    /* The file may not drop a node a kept control-channel export uses. */
    canon = ng_export_canon("cx", ng_live_export(live, "ce")->opts);
    ng_value_free(canon->items[0]);
    canon->items[0] = ng_value_new_scalar("m1", (struct ng_loc){ 0 });
    ng_live_set_export(live, "cx", canon, false);
    ng_value_free(canon);
    EXPECT_PLAN(edit(edit(edit(base, "  m1: { driver: memory, size: 1M }\n",
                               ""),
                          "  t0: { driver: throttle, file: m1, limits: { "
                          "iops-total: 500 } }\n", ""),
                     "  e1: { node: t0, writable: true, detect-zeroes: "
                     "unmap }\n", ""),
                live, false, "refused: node 'm1' is not in the file but "
                "export 'cx' (not in the file either) uses it");
    ng_live_free(live);
}

/* What the file names that the model holds as the control channel's
 * (a node with bitmaps made live too) is listed for the reload to
 * adopt; the file's own entries are not. */
static void
test_adopt(void)
{
    struct ng_live *live = live_of(base);
    struct ng_config *cfg = load(base);
    struct ng_error err = { 0 };
    struct ng_plan *plan;

    ng_live_node(live, "m0")->from_file = false;
    ng_live_export(live, "e1")->from_file = false;
    ng_live_group(live, "g1")->from_file = false;
    CHECK(ng_live_node_note_live_bitmap(ng_live_node(live, "t0"), "b9")
          == 0);
    plan = ng_plan_compute(cfg, live, false, &err);
    if (CHECK(plan != NULL)) {
        CHECK(plan->n_steps == 0);
        CHECK(plan->n_adopt_nodes == 2 &&
              strcmp(plan->adopt_nodes[0]->name, "m0") == 0 &&
              strcmp(plan->adopt_nodes[1]->name, "t0") == 0);
        CHECK(plan->n_adopt_exports == 1 &&
              strcmp(plan->adopt_exports[0], "e1") == 0);
        CHECK(plan->n_adopt_groups == 1 &&
              strcmp(plan->adopt_groups[0], "g1") == 0);
    }
    ng_plan_free(plan);
    ng_config_free(cfg);
    ng_live_free(live);
}

/* The model's string lists keep their order through removals. */
static void
test_strlist(void)
{
    char **v = NULL;
    size_t n = 0, i;

    CHECK(ng_live_strlist_add(&v, &n, "a") == 0 &&
          ng_live_strlist_add(&v, &n, "b") == 0 &&
          ng_live_strlist_add(&v, &n, "c") == 0 && n == 3);
    CHECK(ng_live_strlist_del(v, &n, "a"));
    CHECK(!ng_live_strlist_del(v, &n, "x"));
    CHECK(n == 2 && strcmp(v[0], "b") == 0 && strcmp(v[1], "c") == 0);
    CHECK(ng_live_strlist_find(v, n, "c") == 1 &&
          ng_live_strlist_find(v, n, "a") == -1);
    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Dump a model, read it back: no step.  Apply a plan's steps to the
 * model: planning again gives no step. */
static void
test_dump_and_apply(void)
{
    struct ng_live *live = live_of(base);
    const char *y = edit(base, "exports:\n",
                         "  m2: { driver: null-co, size: 1M }\n"
                         "exports:\n  e2: { node: m2, name: \"other "
                         "name\", description: \"it's: #1\" }\n");
    struct ng_config *cfg;
    struct ng_error err = { 0 };
    struct ng_plan *plan;
    char *text;
    size_t i;

    y = edit(y, "iops-total: 500", "iops-total: 700");
    cfg = load(y);
    plan = ng_plan_compute(cfg, live, false, &err);
    CHECK(plan != NULL && plan->n_steps == 3);
    for (i = 0; plan != NULL && i < plan->n_steps; i++)
        CHECK(ng_live_apply_step(live, &plan->steps[i]) == 0);
    ng_plan_free(plan);
    EXPECT_PLAN(y, live, false, "");
    text = ng_live_dump_yaml(live);
    CHECK(text != NULL);
    EXPECT_PLAN(text, live, false, "");
    CHECK(strstr(text, "name: \"other name\"") != NULL);
    free(text);
    ng_config_free(cfg);
    ng_live_free(live);
}

int
main(void)
{
    test_unchanged();
    test_retune();
    test_add_remove();
    test_refusals();
    test_control_channel();
    test_server();
    test_dump_and_apply();
    test_adopt();
    test_strlist();
    printf("%u checks, %u failed\n", checks, failed);
    return failed ? 1 : 0;
}
