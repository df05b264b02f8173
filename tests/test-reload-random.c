/* tests/test-reload-random.c: 200 random edits of a config, each applied
 * by reload (QMP, or SIGHUP every fifth time) while a libnbd client on
 * every export writes and verifies data.
 *
 * Edits add and remove nodes, explicit throttle filters, exports, and
 * change limits, throttle groups, detect-zeroes, descriptions and
 * writability.  After each reload: the reload applied; every client on an
 * export the edit did not remove or replace is still connected and reads
 * back what was written before the reload, then writes and reads anew;
 * dump-config equals the edited file, line for line (modulo order).
 *
 * The file is written in dump-config's own layout (one flow-style line
 * per node, export and group, canonical key order), so the comparison
 * is exact.  NG_RELOAD_EDITS and NG_RELOAD_SEED override the count and
 * the seed.
 */
#include <config.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define N_SLOTS 8               /* nodes m0.., filters t0.., exports e0.. */
#define N_GROUPS 3
#define NODE_SIZE (4u << 20)
#define BLOCK 4096

struct node_slot {
    bool live;
    bool throttle;              /* t<i>: an explicit throttle over m<i> */
    unsigned limit;             /* its iops-total */
    bool written;               /* `seed` is at `offset` on m<i> */
    unsigned long long offset;
    unsigned seed;
};

enum filter { NO_FILTER, OWN_LIMITS, GROUP };

struct export_slot {
    bool live;
    bool via_throttle;          /* on t<i>, else on m<i> */
    bool writable;
    enum filter filter;
    unsigned limit;             /* OWN_LIMITS */
    int group;                  /* GROUP */
    int dz;                     /* 0 off, 1 on, 2 unmap */
    int desc;                   /* 0 none, else "dN" */
    struct nbd_handle *nbd;     /* connected client, or NULL */
};

struct model {
    struct node_slot node[N_SLOTS];
    struct export_slot exp[N_SLOTS];
    unsigned group_limit[N_GROUPS];
    struct ng_test_daemon *d;
    unsigned seed_counter;
};

static const char *const dz_names[] = { "off", "on", "unmap" };

static unsigned
rnd(unsigned n)
{
    return (unsigned)random() % n;
}

static unsigned
big_limit(void)
{
    return 50000 + rnd(100) * 1000;     /* never slows the test */
}

/* ---- The file ---------------------------------------------------------- */

static void
write_export(FILE *fp, const struct model *m, int i)
{
    const struct export_slot *e = &m->exp[i];

    fprintf(fp, "  e%d: { node: %c%d, writable: %s", i,
            e->via_throttle ? 't' : 'm', i, e->writable ? "true" : "false");
    if (e->desc)
        fprintf(fp, ", description: d%d", e->desc);
    if (e->filter == OWN_LIMITS)
        fprintf(fp, ", throttle: { iops-total: %u }", e->limit);
    else if (e->filter == GROUP)
        fprintf(fp, ", throttle-group: g%d", e->group);
    if (e->dz)
        fprintf(fp, ", detect-zeroes: %s", dz_names[e->dz]);
    fprintf(fp, " }\n");
}

/* The config as dump-config writes it (no header for an empty
 * section), with the daemon's own server: section. */
static void
write_config(FILE *fp, const struct model *m)
{
    const struct ng_test_daemon *d = m->d;
    int i, any_node = 0, any_export = 0;

    fprintf(fp, "server:\n  listen:\n    - \"unix:%s\"\n  control: %s\n",
            d->sock, d->control);
    fprintf(fp, "throttle-groups:\n");
    for (i = 0; i < N_GROUPS; i++)
        fprintf(fp, "  g%d: { iops-total: %u }\n", i, m->group_limit[i]);
    for (i = 0; i < N_SLOTS; i++) {
        if (!m->node[i].live)
            continue;
        if (!any_node++)
            fprintf(fp, "nodes:\n");
        fprintf(fp, "  m%d: { driver: memory, size: 4M }\n", i);
        if (m->node[i].throttle)
            fprintf(fp, "  t%d: { driver: throttle, file: m%d, limits: "
                    "{ iops-total: %u } }\n", i, i, m->node[i].limit);
    }
    for (i = 0; i < N_SLOTS; i++) {
        if (!m->exp[i].live)
            continue;
        if (!any_export++)
            fprintf(fp, "exports:\n");
        write_export(fp, m, i);
    }
}

static char *
config_text(const struct model *m)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);

    write_config(fp, m);
    fclose(fp);
    return text;
}

/* ---- Clients ------------------------------------------------------------- */

static void
connect_client(struct model *m, int i)
{
    char uri[512];
    struct nbd_handle *nbd = nbd_create();

    snprintf(uri, sizeof uri, "nbd+unix:///e%d?socket=%s", i, m->d->sock);
    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    m->exp[i].nbd = nbd;
}

static void
close_client(struct model *m, int i)
{
    if (m->exp[i].nbd == NULL)
        return;
    nbd_shutdown(m->exp[i].nbd, 0);
    nbd_close(m->exp[i].nbd);
    m->exp[i].nbd = NULL;
}

/* What was written on the node before is still there; a writable export
 * then writes a new block and reads it back. */
static void
exercise(struct model *m, int i, int round)
{
    struct node_slot *n = &m->node[i];
    struct export_slot *e = &m->exp[i];
    static char buf[BLOCK];
    long long bad;

    if (n->written) {
        if (nbd_pread(e->nbd, buf, BLOCK, n->offset, 0) == -1)
            ng_test_fail("round %d: export e%d: read: %s", round, i,
                         nbd_get_error());
        if ((bad = ng_test_check_pattern(buf, BLOCK, n->offset,
                                         n->seed)) >= 0)
            ng_test_fail("round %d: export e%d: byte %lld at %llu differs",
                         round, i, bad, n->offset);
    }
    if (!e->writable)
        return;
    n->offset = (unsigned long long)rnd(NODE_SIZE / BLOCK) * BLOCK;
    n->seed = ++m->seed_counter;
    ng_test_fill_pattern(buf, BLOCK, n->offset, n->seed);
    if (nbd_pwrite(e->nbd, buf, BLOCK, n->offset, 0) == -1)
        ng_test_fail("round %d: export e%d: write: %s", round, i,
                     nbd_get_error());
    n->written = true;
    if (nbd_pread(e->nbd, buf, BLOCK, n->offset, 0) == -1 ||
        ng_test_check_pattern(buf, BLOCK, n->offset, n->seed) >= 0)
        ng_test_fail("round %d: export e%d: read back differs", round, i);
}

/* ---- Edits --------------------------------------------------------------- */

static void
random_filters(struct export_slot *e)
{
    e->filter = (enum filter)rnd(3);
    e->limit = big_limit();
    e->group = (int)rnd(N_GROUPS);
    e->dz = (int)rnd(3);
}

/* One random edit that keeps the config valid; returns false when the
 * one drawn does not apply now (the caller draws again). */
static bool
edit_once(struct model *m)
{
    int i = (int)rnd(N_SLOTS);
    struct node_slot *n = &m->node[i];
    struct export_slot *e = &m->exp[i];

    switch (rnd(10)) {
    case 0:                     /* add a node, maybe with a throttle */
        if (n->live)
            return false;
        *n = (struct node_slot){ .live = true, .throttle = rnd(2),
                                 .limit = big_limit() };
        return true;
    case 1:                     /* remove an unused node */
        if (!n->live || e->live)
            return false;
        n->live = false;
        return true;
    case 2:                     /* add an export */
        if (!n->live || e->live)
            return false;
        *e = (struct export_slot){ .live = true, .writable = rnd(3) != 0,
                                   .via_throttle = n->throttle && rnd(2),
                                   .desc = (int)rnd(3) };
        random_filters(e);
        return true;
    case 3:                     /* remove an export */
        if (!e->live)
            return false;
        close_client(m, i);
        e->live = false;
        return true;
    case 4:                     /* retune the export's implicit filters */
        if (!e->live || (e->filter == NO_FILTER && e->dz == 0))
            return false;
        if (e->filter == OWN_LIMITS)
            e->limit = big_limit();
        else if (e->filter == GROUP)
            e->group = (e->group + 1) % N_GROUPS;
        if (e->dz)
            e->dz = 3 - e->dz;  /* on <-> unmap */
        return true;
    case 5:                     /* replace: description or writability */
        if (!e->live)
            return false;
        close_client(m, i);
        if (rnd(2))
            e->desc = (e->desc + 1) % 4;
        else
            e->writable = !e->writable;
        return true;
    case 6:                     /* retune an explicit throttle node */
        if (!n->live || !n->throttle)
            return false;
        n->limit = big_limit();
        return true;
    case 7:                     /* add or remove an unused throttle */
        if (!n->live || (e->live && e->via_throttle))
            return false;
        n->throttle = !n->throttle;
        n->limit = big_limit();
        return true;
    case 8:                     /* a group's limits */
        m->group_limit[rnd(N_GROUPS)] = big_limit();
        return true;
    default:                    /* change the export's filters entirely */
        if (!e->live)
            return false;
        close_client(m, i);
        random_filters(e);
        return true;
    }
}

/* ---- Reload and compare -------------------------------------------------- */

static int
cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The lines of text, sorted, comments dropped, as one string. */
static char *
sorted_lines(const char *text)
{
    char *copy = strdup(text), *save = NULL, *line, *out = NULL;
    char *lines[256];
    size_t n = 0, size = 0, i;
    FILE *fp;

    for (line = strtok_r(copy, "\n", &save); line != NULL && n < 256;
         line = strtok_r(NULL, "\n", &save))
        if (line[0] != '#')
            lines[n++] = line;
    qsort(lines, n, sizeof *lines, cmp_line);
    fp = open_memstream(&out, &size);
    for (i = 0; i < n; i++)
        fprintf(fp, "%s\n", lines[i]);
    fclose(fp);
    free(copy);
    return out;
}

static void
check_dump(struct ng_test_qmp *q, const char *want, int round)
{
    json_t *ret = ng_test_qmp_ok(q, "{s:s}", "execute", "query-config");
    char *a = sorted_lines(json_string_value(json_object_get(ret, "yaml")));
    char *b = sorted_lines(want);

    if (strcmp(a, b) != 0)
        ng_test_fail("round %d: dump-config differs from the file:\n"
                     "--- dump\n%s--- file\n%s", round, a, b);
    free(a);
    free(b);
    json_decref(ret);
}

/* Wait for the RELOAD event of a SIGHUP. */
static void
wait_reload_event(struct ng_test_qmp *q, int round)
{
    json_t *ev;

    while ((ev = ng_test_qmp_next_event(q, 30000)) != NULL) {
        const char *name = json_string_value(json_object_get(ev, "event"));
        json_t *data = json_object_get(ev, "data");

        if (name != NULL && strcmp(name, "RELOAD") == 0) {
            const char *res = json_string_value(json_object_get(data,
                                                                "result"));

            if (res == NULL || strcmp(res, "applied") != 0)
                ng_test_fail("round %d: SIGHUP reload %s: %s", round,
                             res ? res : "?", json_string_value(
                                 json_object_get(data, "error")));
            json_decref(ev);
            return;
        }
        json_decref(ev);
    }
    ng_test_fail("round %d: no RELOAD event after SIGHUP", round);
}

static void
reload(struct model *m, struct ng_test_qmp *q, int round)
{
    char *text = config_text(m);
    FILE *fp = fopen(m->d->config, "w");
    json_t *ret;

    if (fp == NULL || fputs(text, fp) == EOF || fclose(fp) != 0)
        ng_test_fail("cannot write %s", m->d->config);
    if (round % 5 == 4) {
        kill(m->d->pid, SIGHUP);
        wait_reload_event(q, round);
    } else {
        ret = ng_test_qmp(q, "{s:s}", "execute", "reload");
        if (json_object_get(ret, "error") != NULL)
            ng_test_fail("round %d: reload refused: %s\n%s", round,
                         json_string_value(json_object_get(
                             json_object_get(ret, "error"), "desc")), text);
        json_decref(ret);
    }
    check_dump(q, text, round);
    free(text);
}

int
main(void)
{
    const char *s = getenv("NG_RELOAD_EDITS");
    int edits = s ? atoi(s) : 200, round, i, k;
    struct model m = { 0 };
    struct ng_test_qmp *q;

    s = getenv("NG_RELOAD_SEED");
    srandom(s ? (unsigned)atoi(s) : 13);
    ng_test_timeout(300);
    m.node[0] = (struct node_slot){ .live = true, .limit = big_limit() };
    m.exp[0] = (struct export_slot){ .live = true, .writable = true };
    for (i = 0; i < N_GROUPS; i++)
        m.group_limit[i] = big_limit();
    /* Start from a file naming @SOCK@ and @CONTROL@ (the harness fills
     * them in); every reload after writes the model in full. */
    m.d = ng_test_start("server:\n  listen: [ \"unix:@SOCK@\" ]\n"
                        "  control: \"@CONTROL@\"\nnodes:\n"
                        "  m0: { driver: memory, size: 4M }\nexports:\n"
                        "  e0: { node: m0, writable: true }\n", "e0");
    q = ng_test_qmp_connect(m.d->control);
    reload(&m, q, -1);
    connect_client(&m, 0);
    for (round = 0; round < edits; round++) {
        for (k = 1 + (int)rnd(3); k > 0;)
            k -= edit_once(&m);
        reload(&m, q, round);
        for (i = 0; i < N_SLOTS; i++) {
            if (!m.exp[i].live)
                continue;
            if (m.exp[i].nbd == NULL)
                connect_client(&m, i);
            exercise(&m, i, round);
        }
    }
    for (i = 0; i < N_SLOTS; i++)
        close_client(&m, i);
    ng_test_qmp_close(q);
    ng_test_stop(m.d);
    printf("%d reloads with clients on every export: ok\n", edits);
    return 0;
}
