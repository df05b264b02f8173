/* tests/test-splice-multi.c: blkverify and quorum spliced in and out live
 * through the real daemon, under a client that never stops.
 *
 * One libnbd connection to export demo (a file node d0) writes (1 in 8
 * as write-zeroes) and verifies 64 KiB chunks from a thread for the
 * whole test; it never
 * reconnects and every read must match what it wrote.  It pauses (still
 * connected) while a copy is made and spliced in, since a copy must
 * hold the disk's data when it joins; removals happen under its writes.
 * Meanwhile:
 *
 * - bad splices are refused with their reason and change nothing (the
 *   whole query-graph answer is compared): an unknown raw node, a raw
 *   node of another size, a raw node a running mirror holds as its
 *   target (NAC), both test and raw given, the node below as the other
 *   child, a child with the node below it (a loop), a quorum with one
 *   child, a child to keep that the filter does not have;
 * - a copy of the disk made with nbdcopy becomes blkverify's raw:
 *   `nbdgraphctl insert-filter d0 blkverify bv0 raw=c1`; reads pass; the
 *   copy is then corrupted behind the daemon's back (pwrite to its file):
 *   the client's read of that chunk fails with EIO and the log names the
 *   offset; rewriting the chunk through the client heals both; the
 *   filter is removed and d0 is the export's node again, c1 still there;
 * - a quorum of d0 and two more nbdcopy copies is spliced in over QMP
 *   (children: [c2, c3], d0 put first): query-named-block-nodes calls
 *   them children.0..2; after writes and the removal, qemu-img compare
 *   finds all three files equal;
 * - blkverify with test=x1 above x0 makes x0 its raw, and a removal puts
 *   x0 back, the node it was inserted over;
 * - a quorum spliced over x0 and removed with keep=children.1 leaves
 *   its second child in its place;
 * - after each splice, and after x-blockdev-change takes an inline child
 *   from a quorum and adds a named one, the config the daemon dumps
 *   reloads as an empty plan.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define CHUNK   65536u
#define SIZE    (8u << 20)
#define CHUNKS  (SIZE / CHUNK)

static char work[256];              /* images and the daemon's log */
static struct ng_test_qmp *q;

/* ---- The client --------------------------------------------------------- */

struct client {
    struct nbd_handle *nbd;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool pause, paused, stop;
    unsigned seeds[CHUNKS];         /* 0: zeroes */
    struct ng_test_blocks blocks;   /* over seeds */
    unsigned next_seed;
    atomic_ulong ops;
    char error[512];
};

/* Read chunk k and compare it with what was written; -1 and c->error
 * on a failure. */
static int
client_verify(struct client *c, unsigned k)
{
    static __thread char got[CHUNK], want[CHUNK];

    if (nbd_pread(c->nbd, got, CHUNK, (uint64_t)k * CHUNK, 0) == -1) {
        snprintf(c->error, sizeof c->error, "read of chunk %u: %s", k,
                 nbd_get_error());
        return -1;
    }
    ng_test_block_expected(&c->blocks, c->seeds, k, want);
    if (memcmp(got, want, CHUNK) != 0) {
        snprintf(c->error, sizeof c->error, "chunk %u does not hold seed %u",
                 k, c->seeds[k]);
        return -1;
    }
    return 0;
}

/* Write chunk k with a new seed. */
static int
client_write(struct client *c, unsigned k)
{
    static __thread char buf[CHUNK];
    unsigned old = c->seeds[k];

    c->seeds[k] = ++c->next_seed;
    ng_test_block_expected(&c->blocks, c->seeds, k, buf);
    if (nbd_pwrite(c->nbd, buf, CHUNK, (uint64_t)k * CHUNK, 0) == -1) {
        c->seeds[k] = old;
        snprintf(c->error, sizeof c->error, "write of chunk %u: %s", k,
                 nbd_get_error());
        return -1;
    }
    return 0;
}

/* Stop here while the main thread wants the disk still; false to end. */
static bool
client_wait(struct client *c)
{
    bool go;

    pthread_mutex_lock(&c->lock);
    while (c->pause && !c->stop) {
        c->paused = true;
        pthread_cond_broadcast(&c->cond);
        pthread_cond_wait(&c->cond, &c->lock);
    }
    c->paused = false;
    go = !c->stop;
    pthread_mutex_unlock(&c->lock);
    return go;
}

static void *
client_run(void *opaque)
{
    struct client *c = opaque;
    char buf[CHUNK];
    unsigned rng = 12345;

    /* A write (or, 1 in 8, a write-zeroes) of a random chunk, read back,
     * and a read of another. */
    while (client_wait(c)) {
        long k = ng_test_block_write_random(&c->blocks, c->nbd, 0, 1,
                                            ++c->next_seed, &rng, buf);

        if (k == -1) {
            snprintf(c->error, sizeof c->error, "write: %s",
                     nbd_get_error());
            break;
        }
        if (client_verify(c, (unsigned)k) == -1 ||
            client_verify(c, (unsigned)rand_r(&rng) % CHUNKS) == -1)
            break;
        atomic_fetch_add(&c->ops, 1);
    }
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    c->paused = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void
client_check(struct client *c)
{
    if (c->error[0] != '\0')
        ng_test_fail("the client: %s", c->error);
}

/* Let the client do `n` more rounds (it keeps going meanwhile). */
static void
client_busy(struct client *c, unsigned long n)
{
    unsigned long until = atomic_load(&c->ops) + n;

    while (atomic_load(&c->ops) < until) {
        client_check(c);
        if (c->stop)
            ng_test_fail("the client stopped");
        usleep(2000);
    }
}

static void
client_pause(struct client *c)
{
    pthread_mutex_lock(&c->lock);
    c->pause = true;
    while (!c->paused)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    client_check(c);
}

static void
client_resume(struct client *c)
{
    pthread_mutex_lock(&c->lock);
    c->pause = false;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void
client_start(struct client *c, const char *uri)
{
    c->blocks = (struct ng_test_blocks){ c->seeds, CHUNKS, CHUNK };
    c->nbd = nbd_create();
    if (c->nbd == NULL || nbd_connect_uri(c->nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, client_run, c) != 0)
        ng_test_fail("pthread_create");
}

/* Stop the client, then check every chunk over the same connection,
 * and over a new one. */
static void
client_finish(struct client *c, const char *uri)
{
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    client_check(c);
    for (unsigned k = 0; k < CHUNKS; k++)
        if (client_verify(c, k) == -1)
            client_check(c);
    nbd_close(c->nbd);
    ng_test_blocks_verify(&c->blocks, uri, c->seeds, "demo at the end");
}

/* ---- Helpers ------------------------------------------------------------ */

static void
run(const char *cmd)
{
    int r = system(cmd);

    if (r != 0)
        ng_test_fail("'%s' exited with %d", cmd, r);
}

static bool
runs(const char *cmd)
{
    char line[512];

    snprintf(line, sizeof line, "%s >/dev/null 2>&1", cmd);
    return system(line) == 0;
}

static char *
graph_text(void)
{
    json_t *g = ng_test_qmp_ok(q, "{s:s}", "execute", "query-graph");
    char *text = json_dumps(g, JSON_COMPACT | JSON_SORT_KEYS);

    json_decref(g);
    return text;
}

/* A command refused with `want` in its message, the graph unchanged. */
static void
refused(const char *want, json_t *cmd)
{
    char *before = graph_text(), *after;
    char *text = json_dumps(cmd, JSON_COMPACT);

    ng_test_qmp_fails(q, want, "o", cmd);
    after = graph_text();
    if (strcmp(before, after) != 0)
        ng_test_fail("%s changed the graph:\n%s\n%s", text, before, after);
    printf("refused as it should be: %s\n", text);
    free(text);
    free(before);
    free(after);
}

static json_t *
insert_cmd(const char *node, json_t *filter)
{
    return json_pack("{s:s,s:{s:s,s:o}}", "execute",
                     "blockdev-insert-filter", "arguments", "node", node,
                     "filter", filter);
}

static void
add_file_node(const char *name)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s.img", work, name);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s}}", "execute",
                               "blockdev-add", "arguments", "node-name", name,
                               "driver", "file", "filename", path));
}

/* nbdcopy the export into WORK/NAME.img and add it as node NAME. */
static void
copy_disk(struct ng_test_daemon *d, const char *name)
{
    char cmd[2048];

    snprintf(cmd, sizeof cmd, "nbdcopy '%s' '%s/%s.img'", d->uri, work,
             name);
    run(cmd);
    add_file_node(name);
}

/* The node the export's BB sits on. */
static void
expect_export_root(const char *bb, const char *want)
{
    json_t *g = ng_test_qmp_ok(q, "{s:s}", "execute", "query-graph");
    json_t *b;
    size_t i;

    json_array_foreach(json_object_get(g, "block-backends"), i, b) {
        const char *root = json_string_value(json_object_get(b, "root"));

        if (strcmp(json_string_value(json_object_get(b, "name")), bb) != 0)
            continue;
        if (root == NULL || strcmp(root, want) != 0)
            ng_test_fail("export '%s' is on '%s', not '%s'", bb,
                         root ? root : "(none)", want);
        json_decref(g);
        return;
    }
    ng_test_fail("no block backend '%s'", bb);
}

/* query-named-block-nodes: node's children as "label=node,...". */
static void
expect_children(const char *node, const char *want)
{
    json_t *list = ng_test_qmp_ok(q, "{s:s}", "execute",
                                  "query-named-block-nodes");
    json_t *n, *c;
    size_t i, j;
    char got[512] = "";
    size_t used = 0;
    bool found = false;

    json_array_foreach(list, i, n) {
        if (strcmp(json_string_value(json_object_get(n, "node-name")),
                   node) != 0)
            continue;
        found = true;
        json_array_foreach(json_object_get(n, "children"), j, c)
            used += (size_t)snprintf(got + used, sizeof got - used, "%s%s=%s",
                used ? "," : "",
                json_string_value(json_object_get(c, "child")),
                json_string_value(json_object_get(c, "node-name")));
    }
    json_decref(list);
    if (!found || strcmp(got, want) != 0)
        ng_test_fail("node '%s' has children '%s', not '%s'", node,
                     found ? got : "(no such node)", want);
}

static bool
node_exists(const char *name)
{
    json_t *list = ng_test_qmp_ok(q, "{s:s}", "execute",
                                  "query-named-block-nodes");
    json_t *n;
    size_t i;
    bool found = false;

    json_array_foreach(list, i, n)
        found |= strcmp(json_string_value(json_object_get(n, "node-name")),
                        name) == 0;
    json_decref(list);
    return found;
}

/* The config the daemon dumps, reloaded, is an empty plan. */
static void
expect_dump_reloads_empty(const char *when)
{
    json_t *cfg = ng_test_qmp_ok(q, "{s:s}", "execute", "query-config");
    const char *yaml = json_string_value(json_object_get(cfg, "yaml"));
    char path[512];
    json_t *plan;
    FILE *fp;

    snprintf(path, sizeof path, "%s/dump.yaml", work);
    if (yaml == NULL || (fp = fopen(path, "w")) == NULL ||
        fputs(yaml, fp) < 0 || fclose(fp) != 0)
        ng_test_fail("writing %s", path);
    plan = ng_test_qmp_ok(q, "{s:s,s:{s:s,s:b}}", "execute", "reload",
                          "arguments", "file", path, "dry-run", 1);
    if (json_array_size(json_object_get(plan, "steps")) != 0)
        ng_test_fail("%s: the dumped config is not an empty plan:\n%s\n%s",
                     when, yaml, json_dumps(plan, JSON_INDENT(2)));
    json_decref(plan);
    json_decref(cfg);
    printf("%s: the dumped config reloads as an empty plan\n", when);
}

static bool
log_has(const char *text)
{
    char path[512], line[1024];
    bool found = false;
    FILE *fp;

    snprintf(path, sizeof path, "%s/daemon.log", work);
    if ((fp = fopen(path, "r")) == NULL)
        return false;
    while (!found && fgets(line, sizeof line, fp) != NULL)
        found = strstr(line, text) != NULL;
    fclose(fp);
    return found;
}

/* nbdgraphctl ARGS, from the build tree, on the daemon's control
 * socket; its exit status. */
static int
ctl(struct ng_test_daemon *d, const char *args)
{
    const char *top = getenv("top_builddir");
    char cmd[1024];
    int r;

    snprintf(cmd, sizeof cmd, "'%s/nbdgraphctl' --socket '%s' %s",
             top ? top : ".", d->control, args);
    r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* ---- The cases ---------------------------------------------------------- */

static void
test_refusals(void)
{
    refused("unknown node 'nosuch'", insert_cmd("d0", json_pack(
        "{s:s,s:s,s:s}", "driver", "blkverify", "node-name", "bv9",
        "raw", "nosuch")));
    refused("children differ in size: test 'd0' has 8388608 bytes, raw "
            "'small' 1048576", insert_cmd("d0", json_pack(
        "{s:s,s:s,s:s}", "driver", "blkverify", "node-name", "bv9",
        "raw", "small")));
    refused("do not give both 'test' and 'raw'", insert_cmd("d0", json_pack(
        "{s:s,s:s,s:s,s:s}", "driver", "blkverify", "node-name", "bv9",
        "raw", "x0", "test", "x1")));
    refused("'children' must list 2 to 8 nodes, not 1", insert_cmd("d0",
        json_pack("{s:s,s:s,s:i}", "driver", "quorum", "node-name", "q9",
                  "vote-threshold", 1)));
    refused("children differ in size", insert_cmd("d0", json_pack(
        "{s:s,s:s,s:[s],s:i}", "driver", "quorum", "node-name", "q9",
        "children", "small", "vote-threshold", 1)));
    refused("node 'd0' is the node the filter goes above", insert_cmd("d0",
        json_pack("{s:s,s:s,s:s}", "driver", "blkverify", "node-name", "bv9",
                  "raw", "d0")));
    refused("node 'qi' cannot be a child of 'q9': 'x3' is below it",
            insert_cmd("x3", json_pack("{s:s,s:s,s:[s],s:i}", "driver",
                                       "quorum", "node-name", "q9",
                                       "children", "qi", "vote-threshold",
                                       1)));
    refused("node 'd0' is not a filter", json_pack(
        "{s:s,s:{s:s}}", "execute", "blockdev-remove-filter", "arguments",
        "node-name", "d0"));
}

/* t0 is a running mirror's target: nobody may splice above it. */
static void
test_nac_refusal(void)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:s,s:I}}", "execute",
                               "blockdev-mirror", "arguments", "job-id",
                               "mj", "device", "m0", "target", "t0", "sync",
                               "full", "speed", (json_int_t)65536));
    refused("node 't0': command 'insert-filter-", insert_cmd("x0",
        json_pack("{s:s,s:s,s:s}", "driver", "blkverify", "node-name", "bv9",
                  "raw", "t0")));
    refused("which job 'mj' does not allow", insert_cmd("x0", json_pack(
        "{s:s,s:s,s:[s],s:i}", "driver", "quorum", "node-name", "q9",
        "children", "t0", "vote-threshold", 1)));
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute", "job-cancel",
                               "arguments", "id", "mj"));
}

/* Corrupt chunk k of c1.img behind the daemon's back. */
static void
corrupt_copy(unsigned k)
{
    char path[512], junk[4096];
    int fd;

    snprintf(path, sizeof path, "%s/c1.img", work);
    memset(junk, 0xa5, sizeof junk);
    fd = open(path, O_WRONLY);
    if (fd == -1 ||
        pwrite(fd, junk, sizeof junk, (off_t)k * CHUNK + 512) !=
        (ssize_t)sizeof junk || close(fd) == -1)
        ng_test_fail("corrupting %s", path);
}

static void
test_blkverify(struct ng_test_daemon *d, struct client *c)
{
    unsigned k = 17;
    char want[256];

    /* The copy must hold what d0 holds when the filter goes in. */
    client_pause(c);
    copy_disk(d, "c1");
    if (ctl(d, "insert-filter d0 blkverify bv0 raw=c1") != 0)
        ng_test_fail("nbdgraphctl insert-filter d0 blkverify bv0 raw=c1 "
                     "failed");
    client_resume(c);
    expect_export_root("demo", "bv0");
    expect_children("bv0", "test=d0,raw=c1");
    client_busy(c, 200);
    expect_dump_reloads_empty("blkverify spliced in");
    printf("blkverify over d0 with raw=c1: %lu client rounds pass\n",
           (unsigned long)atomic_load(&c->ops));

    client_pause(c);
    corrupt_copy(k);
    if (client_verify(c, k) == 0 || nbd_get_errno() != EIO)
        ng_test_fail("a read of the corrupted chunk did not fail with EIO "
                     "(%s)", c->error);
    c->error[0] = '\0';
    snprintf(want, sizeof want, "blkverify: read offset=%u length=%u: "
             "contents mismatch at offset %u", k * CHUNK, CHUNK,
             k * CHUNK + 512);
    if (!log_has(want))
        ng_test_fail("the log lacks \"%s\"", want);
    /* Written through the filter, both copies agree again. */
    if (client_write(c, k) == -1 || client_verify(c, k) == -1)
        client_check(c);
    client_resume(c);
    printf("a corrupted raw copy: EIO and \"%s\"; healed by a write\n", want);

    refused("filter 'bv0' has no child 'children.1'", json_pack(
        "{s:s,s:{s:s,s:s}}", "execute", "blockdev-remove-filter",
        "arguments", "node-name", "bv0", "keep", "children.1"));
    client_busy(c, 50);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "blockdev-remove-filter", "arguments",
                               "node-name", "bv0"));
    expect_export_root("demo", "d0");
    if (!node_exists("c1") || node_exists("bv0"))
        ng_test_fail("after the removal: c1 must stay, bv0 go");
    client_busy(c, 100);
    expect_dump_reloads_empty("blkverify removed");
    printf("blkverify removed: demo on d0 again, c1 kept, client on\n");
}

static void
test_quorum(struct ng_test_daemon *d, struct client *c)
{
    char cmd[2048];

    client_pause(c);
    copy_disk(d, "c2");
    copy_disk(d, "c3");
    json_decref(ng_test_qmp_ok(q, "o", insert_cmd("d0", json_pack(
        "{s:s,s:s,s:[s,s],s:i}", "driver", "quorum", "node-name", "q0",
        "children", "c2", "c3", "vote-threshold", 2))));
    client_resume(c);
    expect_export_root("demo", "q0");
    expect_children("q0", "children.0=d0,children.1=c2,children.2=c3");
    client_busy(c, 200);
    expect_dump_reloads_empty("quorum spliced in");
    refused("filter 'q0' has no child 'children.3'", json_pack(
        "{s:s,s:{s:s,s:s}}", "execute", "blockdev-remove-filter",
        "arguments", "node-name", "q0", "keep", "children.3"));
    /* Paused: the writes after the removal would reach d0 alone. */
    client_pause(c);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "blockdev-remove-filter", "arguments",
                               "node-name", "q0"));
    expect_export_root("demo", "d0");
    if (!node_exists("c2") || !node_exists("c3") || node_exists("q0"))
        ng_test_fail("after the removal: c2 and c3 must stay, q0 go");
    snprintf(cmd, sizeof cmd, "qemu-img compare -U -f raw -F raw '%s/d0.img' "
             "'%s/c2.img' && qemu-img compare -U -f raw -F raw "
             "'%s/d0.img' '%s/c3.img'", work, work, work, work);
    run(cmd);
    client_resume(c);
    client_busy(c, 100);
    printf("quorum of d0, c2, c3 (children.0..2): written, removed, the "
           "three images equal\n");
}

/* test=x1 given: x0, the node below, becomes raw, and comes back. */
static void
test_blkverify_test_given(void)
{
    json_decref(ng_test_qmp_ok(q, "o", insert_cmd("x0", json_pack(
        "{s:s,s:s,s:s}", "driver", "blkverify", "node-name", "bv1",
        "test", "x1"))));
    expect_children("bv1", "test=x1,raw=x0");
    expect_export_root("x", "bv1");
    expect_dump_reloads_empty("blkverify with test given");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "blockdev-remove-filter", "arguments",
                               "node-name", "bv1"));
    expect_export_root("x", "x0");
    printf("blkverify test=x1 over x0: x0 is raw, and is put back\n");
}

/* x-blockdev-change on a quorum with inline children: the dumped config
 * keeps their definitions. */
static void
expect_config_line(const char *want)
{
    json_t *cfg = ng_test_qmp_ok(q, "{s:s}", "execute", "query-config");
    const char *yaml = json_string_value(json_object_get(cfg, "yaml"));

    if (yaml == NULL || strstr(yaml, want) == NULL)
        ng_test_fail("query-config lacks \"%s\":\n%s", want,
                     yaml ? yaml : "(none)");
    json_decref(cfg);
}

static void
test_inline_children(void)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute",
                               "x-blockdev-change", "arguments", "parent",
                               "qi", "child", "children.1"));
    expect_config_line("  qi: { driver: quorum, vote-threshold: 1, "
                       "children: [ x3, { driver: memory, size: 8M } ] }\n");
    expect_dump_reloads_empty("an inline quorum child removed");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute",
                               "x-blockdev-change", "arguments", "parent",
                               "qi", "node", "x2"));
    expect_children("qi", "children.0=x3,children.2=#ng1,children.3=x2");
    expect_config_line("  qi: { driver: quorum, vote-threshold: 1, "
                       "children: [ x3, { driver: memory, size: 8M }, x2 ] "
                       "}\n");
    expect_dump_reloads_empty("a quorum child added beside an inline one");
}

/* nbdgraphctl's children.N lists; keep=children.1: the quorum's second
 * child takes its place. */
static void
test_keep(struct ng_test_daemon *d)
{
    if (ctl(d, "insert-filter x0 quorum q1 children.2=x1 "
            "vote-threshold=1") != 2)
        ng_test_fail("children.2 without children.1 was not a usage error");
    if (ctl(d, "insert-filter x0 quorum q1 children.1=x1 "
            "vote-threshold=1") != 0)
        ng_test_fail("nbdgraphctl insert-filter ... quorum failed");
    expect_export_root("x", "q1");
    expect_children("q1", "children.0=x0,children.1=x1");
    if (ctl(d, "remove-filter q1 keep=children.1") != 0)
        ng_test_fail("nbdgraphctl remove-filter q1 keep=children.1 failed");
    expect_export_root("x", "x1");
    printf("quorum over x0 removed with keep=children.1: x is on x1\n");
}

/* ---- Main --------------------------------------------------------------- */

/* The daemon's stderr goes to WORK/daemon.log, for its warnings. */
static struct ng_test_daemon *
start_logged(const char *yaml)
{
    char path[512];
    int saved = dup(2), fd;
    struct ng_test_daemon *d;

    snprintf(path, sizeof path, "%s/daemon.log", work);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (saved == -1 || fd == -1 || dup2(fd, 2) == -1)
        ng_test_fail("redirecting stderr to %s", path);
    d = ng_test_start(yaml, "demo");
    dup2(saved, 2);
    close(saved);
    close(fd);
    return d;
}

static void
make_image(const char *name)
{
    char path[512];
    int fd;

    snprintf(path, sizeof path, "%s/%s.img", work, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || ftruncate(fd, SIZE) == -1 || close(fd) == -1)
        ng_test_fail("creating %s", path);
}

int
main(void)
{
    const char *tmp = getenv("TMPDIR");
    struct ng_test_daemon *d;
    struct client c = { .error = "" };
    char yaml[2048], cmd[600];

    if (!runs("nbdcopy --version") || !runs("qemu-img --version")) {
        fprintf(stderr, "SKIP: needs nbdcopy and qemu-img\n");
        return 77;
    }
    ng_test_timeout(200);
    snprintf(work, sizeof work, "%s/ngsplice.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(work) == NULL)
        ng_test_fail("mkdtemp");
    make_image("d0");
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [ \"unix:@SOCK@\" ]\n"
             "  control: \"@CONTROL@\"\n"
             "nodes:\n"
             "  d0: { driver: file, filename: %s/d0.img }\n"
             "  small: { driver: memory, size: 1M }\n"
             "  x0: { driver: memory, size: 8M }\n"
             "  x1: { driver: memory, size: 8M }\n"
             "  m0: { driver: memory, size: 8M }\n"
             "  t0: { driver: memory, size: 8M }\n"
             "  x2: { driver: memory, size: 8M }\n"
             "  x3: { driver: memory, size: 8M }\n"
             "  qi: { driver: quorum, vote-threshold: 1, children: [ x3,\n"
             "        { driver: memory, size: 8M },\n"
             "        { driver: memory, size: 8M } ] }\n"
             "exports:\n"
             "  demo: { node: d0, writable: true }\n"
             "  x: { node: x0, writable: true }\n", work);
    d = start_logged(yaml);
    q = ng_test_qmp_connect(d->control);
    client_start(&c, d->uri);
    client_busy(&c, 50);

    test_refusals();
    test_nac_refusal();
    test_blkverify(d, &c);
    test_quorum(d, &c);
    test_blkverify_test_given();
    test_inline_children();
    test_keep(d);

    client_finish(&c, d->uri);
    printf("the client: %lu rounds on one connection, every chunk right\n",
           (unsigned long)atomic_load(&c.ops));
    ng_test_qmp_close(q);
    ng_test_stop(d);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
    run(cmd);
    return 0;
}
