/* tests/test-quorum-change.c: x-blockdev-change on a live quorum through
 * the real daemon.
 *
 * A quorum qv of three memory replicas (threshold 2, rewrite-corrupted)
 * is written through NBD.  With writes in flight, children.1 (qb) is
 * removed: every write succeeds, and later writes no longer reach qb.  A
 * fresh node qd is added (it becomes children.3, as in QEMU): a read
 * through qv outvotes its zeroes and repairs it, and writes reach it.
 * Refused, changing nothing: removing below the threshold, an unknown
 * child, a node of another size, a node that is a child already, the
 * quorum itself (a cycle), both or neither of child and node, a parent
 * that has no children to change.  A dry run changes nothing either.
 * query-config follows each change.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define CHUNK 65536
#define SIZE (4 << 20)
#define SEED 5
#define INFLIGHT 32

static struct nbd_handle *
connect_export(struct ng_test_daemon *d, const char *name)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512];

    snprintf(uri, sizeof uri, "nbd+unix:///%s?socket=%s", name, d->sock);
    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd(name);
    return nbd;
}

static void
write_seed(struct nbd_handle *nbd, uint64_t off, size_t len, unsigned seed)
{
    static unsigned char buf[CHUNK];

    ng_test_fill_pattern(buf, len, off, seed);
    if (nbd_pwrite(nbd, buf, len, off, 0) == -1)
        ng_test_fail_nbd("write");
}

/* Fail unless [off, off + len) holds `seed`'s pattern. */
static void
expect_seed(struct nbd_handle *nbd, const char *what, uint64_t off,
            size_t len, unsigned seed)
{
    static unsigned char buf[CHUNK];
    long long bad;

    if (nbd_pread(nbd, buf, len, off, 0) == -1)
        ng_test_fail_nbd(what);
    if ((bad = ng_test_check_pattern(buf, len, off, seed)) >= 0)
        ng_test_fail("%s at %llu: wrong byte at %llu", what,
                     (unsigned long long)off, (unsigned long long)off + bad);
}

static void
expect_zero(struct nbd_handle *nbd, const char *what, uint64_t off)
{
    static unsigned char buf[CHUNK], zero[CHUNK];

    if (nbd_pread(nbd, buf, CHUNK, off, 0) == -1)
        ng_test_fail_nbd(what);
    if (memcmp(buf, zero, CHUNK) != 0)
        ng_test_fail("%s at %llu: not zeroes", what, (unsigned long long)off);
}

static void
change_ok(struct ng_test_qmp *q, const char *key, const char *value)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute",
                               "x-blockdev-change", "arguments", "parent",
                               "qv", key, value));
}

static void
change_fails(struct ng_test_qmp *q, const char *parent, const char *key,
             const char *value, const char *want)
{
    ng_test_qmp_fails(q, want, "{s:s,s:{s:s,s:s}}", "execute",
                      "x-blockdev-change", "arguments", "parent", parent,
                      key, value);
}

/* Writes in flight on qv while children.1 goes: all succeed. */
static void
remove_under_writes(struct nbd_handle *qv, struct ng_test_qmp *q)
{
    static unsigned char bufs[INFLIGHT][CHUNK];
    int64_t cookies[INFLIGHT];

    for (int i = 0; i < INFLIGHT; i++) {
        uint64_t off = (uint64_t)i * CHUNK;

        ng_test_fill_pattern(bufs[i], CHUNK, off, SEED + 1);
        cookies[i] = nbd_aio_pwrite(qv, bufs[i], CHUNK, off,
                                    NBD_NULL_COMPLETION, 0);
        if (cookies[i] == -1)
            ng_test_fail_nbd("aio write");
    }
    change_ok(q, "child", "children.1");
    for (int i = 0; i < INFLIGHT; i++) {
        int r;

        while ((r = nbd_aio_command_completed(qv, cookies[i])) == 0)
            if (nbd_poll(qv, -1) == -1)
                ng_test_fail_nbd("poll");
        if (r == -1)
            ng_test_fail_nbd("a write in flight across the removal");
    }
}

/* query-config shows qv with these children (the config's spelling). */
static void
expect_config_children(struct ng_test_qmp *q, const char *want)
{
    json_t *ret = ng_test_qmp_ok(q, "{s:s}", "execute", "query-config");
    const char *yaml = json_string_value(json_object_get(ret, "yaml"));

    if (yaml == NULL || strstr(yaml, want) == NULL)
        ng_test_fail("query-config lacks \"%s\":\n%s", want,
                     yaml ? yaml : "(none)");
    json_decref(ret);
}

static void
test_refused(struct ng_test_qmp *q)
{
    change_fails(q, "qv", "child", "children.1",
                 "node 'qv' has no child 'children.1'");
    change_fails(q, "qv", "node", "small",
                 "node 'small' has 1048576 bytes, the children of 'qv' "
                 "4194304");
    change_fails(q, "qv", "node", "qa",
                 "node 'qa' is a child of 'qv' already");
    change_fails(q, "qv", "node", "qv", "cannot be a child of 'qv'");
    change_fails(q, "qa", "node", "qb",
                 "node 'qa' (driver memory) does not support adding or "
                 "removing children");
    change_fails(q, "nosuch", "node", "qb", "node 'nosuch' not found");
    ng_test_qmp_fails(q, "give exactly one of 'child' (to remove) and "
                      "'node' (to add)", "{s:s,s:{s:s,s:s,s:s}}", "execute",
                      "x-blockdev-change", "arguments", "parent", "qv",
                      "child", "children.0", "node", "qb");
    ng_test_qmp_fails(q, "give exactly one", "{s:s,s:{s:s}}", "execute",
                      "x-blockdev-change", "arguments", "parent", "qv");
    printf("refused: unknown child, other size, twice, a cycle, no "
           "children to change, both or neither\n");
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct nbd_handle *qv, *qb, *qd;

    ng_test_timeout(120);
    d = ng_test_start(
        "server:\n"
        "  listen: [ \"unix:@SOCK@\" ]\n"
        "  control: \"@CONTROL@\"\n"
        "nodes:\n"
        "  qa: { driver: memory, size: 4M }\n"
        "  qb: { driver: memory, size: 4M }\n"
        "  qc: { driver: memory, size: 4M }\n"
        "  qd: { driver: memory, size: 4M }\n"
        "  small: { driver: memory, size: 1M }\n"
        "  qv: { driver: quorum, children: [ qa, qb, qc ],\n"
        "        vote-threshold: 2, rewrite-corrupted: true }\n"
        "exports:\n"
        "  qv: { node: qv, writable: true }\n"
        "  qb: { node: qb }\n"
        "  qd: { node: qd }\n", "qv");
    q = ng_test_qmp_connect(d->control);
    qv = connect_export(d, "qv");
    qb = connect_export(d, "qb");
    qd = connect_export(d, "qd");
    for (uint64_t off = 0; off < SIZE; off += CHUNK)
        write_seed(qv, off, CHUNK, SEED);
    expect_seed(qb, "qb before the change", 0, CHUNK, SEED);

    /* A dry run removes nothing: qb still gets writes. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:b}}", "execute",
                               "x-blockdev-change", "arguments", "parent",
                               "qv", "child", "children.1", "dry-run", 1));
    write_seed(qv, 3 * CHUNK, CHUNK, SEED + 2);
    expect_seed(qb, "qb after a dry run", 3 * CHUNK, CHUNK, SEED + 2);

    remove_under_writes(qv, q);
    expect_seed(qv, "qv after the removal", 5 * CHUNK, CHUNK, SEED + 1);
    write_seed(qv, 40 * CHUNK, CHUNK, SEED + 3);
    expect_seed(qb, "qb, no longer a child", 40 * CHUNK, CHUNK, SEED);
    /* Two children left, threshold 2: none may go. */
    change_fails(q, "qv", "child", "children.2",
                 "the number of children cannot be lower than the vote "
                 "threshold 2");
    expect_config_children(q, "children: [ qa, qc ]");
    printf("children.1 removed with writes in flight; it gets no more "
           "writes; no removal below the threshold\n");

    change_ok(q, "node", "qd");
    /* qd reads zeroes: qa and qc outvote it and rewrite it. */
    expect_seed(qv, "qv with qd added", 40 * CHUNK, CHUNK, SEED + 3);
    expect_seed(qd, "qd repaired", 40 * CHUNK, CHUNK, SEED + 3);
    expect_config_children(q, "children: [ qa, qc, qd ]");
    write_seed(qv, 50 * CHUNK, CHUNK, SEED + 4);
    expect_seed(qd, "qd written", 50 * CHUNK, CHUNK, SEED + 4);
    /* QEMU's numbering: the new child is children.3, not children.1. */
    test_refused(q);
    change_ok(q, "child", "children.3");
    write_seed(qv, 51 * CHUNK, CHUNK, SEED + 5);
    expect_zero(qd, "qd removed again", 51 * CHUNK);
    expect_config_children(q, "children: [ qa, qc ]");
    printf("qd added (children.3): outvoted, repaired, written; removed "
           "again\n");

    nbd_close(qv);
    nbd_close(qb);
    nbd_close(qd);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
