/* tests/test-splice-promises.c: a splice may not take away what connected
 * clients were told.
 *
 * Two libnbd clients are told FUA and TRIM.  Splicing in a blkdebug that
 * drops those caps is refused, naming the export and the flag, and the
 * graph stays exactly as it was; the clients keep working.  A filter that
 * takes nothing away still goes in.  With "force": true the reducing
 * filter goes in; a FUA write then fails cleanly with EINVAL (the
 * connection stays up, other requests work), and a new client is told
 * neither flag. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define LEN     (64u << 10)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  disk0: { driver: memory, size: 16M }\n"
    "exports:\n"
    "  vm1: { node: disk0, writable: true }\n";

static struct nbd_handle *
connect_client(const char *uri)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    return nbd;
}

static void
expect_told(struct nbd_handle *nbd, int fua, int trim, const char *who)
{
    if (nbd_can_fua(nbd) != fua || nbd_can_trim(nbd) != trim)
        ng_test_fail("%s: told fua=%d trim=%d, expected fua=%d trim=%d",
                     who, nbd_can_fua(nbd), nbd_can_trim(nbd), fua, trim);
}

/* Write a pattern (with `flags`) and read it back. */
static void
write_and_check(struct nbd_handle *nbd, uint64_t off, unsigned seed,
                uint32_t flags, const char *what)
{
    static char out[LEN], in[LEN];

    ng_test_fill_pattern(out, LEN, off, seed);
    if (nbd_pwrite(nbd, out, LEN, off, flags) == -1)
        ng_test_fail("%s: pwrite: %s", what, nbd_get_error());
    if (nbd_pread(nbd, in, LEN, off, 0) == -1)
        ng_test_fail("%s: pread: %s", what, nbd_get_error());
    if (ng_test_check_pattern(in, LEN, off, seed) >= 0)
        ng_test_fail("%s: data read back differs", what);
}

static json_t *
graph_of(struct ng_test_qmp *q)
{
    return ng_test_qmp_ok(q, "{s:s}", "execute", "query-graph");
}

static void
expect_graph(struct ng_test_qmp *q, json_t *want, const char *when)
{
    json_t *now = graph_of(q);

    if (!json_equal(now, want))
        ng_test_fail("graph changed %s:\n%s\nwas:\n%s", when,
                     json_dumps(now, JSON_INDENT(1)),
                     json_dumps(want, JSON_INDENT(1)));
    json_decref(now);
}

/* blockdev-insert-filter of a blkdebug dropping `caps` above disk0. */
static json_t *
insert_blkdebug(struct ng_test_qmp *q, const char *name, json_t *caps,
                int force)
{
    return ng_test_qmp(q, "{s:s,s:{s:s,s:b,s:{s:s,s:s,s:o}}}", "execute",
                       "blockdev-insert-filter", "arguments", "node",
                       "disk0", "force", force, "filter", "driver",
                       "blkdebug", "node-name", name, "drop-caps", caps);
}

/* Wait (bounded by the test's alarm) until export vm1 has `n`
 * connections: the server sees a client go only when it reads EOF. */
static void
wait_connections(struct ng_test_qmp *q, int n)
{
    for (;;) {
        json_t *l = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-block-exports");
        int now = (int)json_integer_value(json_object_get(
                      json_array_get(l, 0), "connections"));

        json_decref(l);
        if (now == n)
            return;
        usleep(10000);
    }
}

static void
expect_refused(struct ng_test_qmp *q, json_t *caps, const char *want)
{
    json_t *before = graph_of(q);
    json_t *r = insert_blkdebug(q, "plain", caps, 0);
    const char *desc = json_string_value(json_object_get(
                           json_object_get(r, "error"), "desc"));

    if (desc == NULL || strcmp(desc, want) != 0)
        ng_test_fail("insert: got %s, expected the error \"%s\"",
                     json_dumps(r, 0), want);
    printf("refused: %s\n", desc);
    json_decref(r);
    expect_graph(q, before, "by a refused splice");
    json_decref(before);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct nbd_handle *a, *b, *c;
    json_t *r;

    ng_test_timeout(60);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    a = connect_client(d->uri);
    b = connect_client(d->uri);
    expect_told(a, 1, 1, "client a");

    /* Refused, naming export and flag; nothing changed. */
    expect_refused(q, json_pack("[s,s]", "fua", "trim"),
                   "export 'vm1' has 2 client(s) that were told FUA; the "
                   "new graph would not offer it");
    expect_refused(q, json_pack("[s]", "trim"),
                   "export 'vm1' has 2 client(s) that were told TRIM; the "
                   "new graph would not offer it");

    /* The clients keep working, FUA and trim included. */
    write_and_check(a, 0, 1, LIBNBD_CMD_FLAG_FUA, "client a, FUA");
    if (nbd_trim(b, LEN, LEN, 0) == -1)
        ng_test_fail_nbd("client b: trim");
    write_and_check(b, LEN, 2, 0, "client b");

    /* Taking nothing away is fine with clients connected. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:{s:s,s:s}}}", "execute",
                               "blockdev-insert-filter", "arguments",
                               "node", "disk0", "filter", "driver",
                               "nofilter", "node-name", "nf"));
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "blockdev-remove-filter", "arguments",
                               "node-name", "nf"));

    /* Forced: in it goes; a FUA write fails cleanly, the rest works. */
    r = insert_blkdebug(q, "plain", json_pack("[s,s]", "fua", "trim"), 1);
    if (json_object_get(r, "return") == NULL)
        ng_test_fail("forced insert: %s", json_dumps(r, 0));
    json_decref(r);
    {
        static char buf[LEN];

        ng_test_fill_pattern(buf, LEN, 0, 3);
        if (nbd_pwrite(a, buf, LEN, 0, LIBNBD_CMD_FLAG_FUA) != -1)
            ng_test_fail("FUA write succeeded on a graph without FUA");
        if (nbd_get_errno() != EINVAL)
            ng_test_fail("FUA write failed with %s, expected EINVAL",
                         strerror(nbd_get_errno()));
        printf("forced: FUA write fails with EINVAL: %s\n",
               nbd_get_error());
    }
    /* Nothing of it was written; plain writes and reads still work. */
    write_and_check(a, 2 * LEN, 4, 0, "client a after the forced splice");
    {
        static char in[LEN];

        if (nbd_pread(a, in, LEN, 0, 0) == -1)
            ng_test_fail_nbd("pread after the failed FUA write");
        if (ng_test_check_pattern(in, LEN, 0, 1) >= 0)
            ng_test_fail("the refused FUA write changed data");
    }
    c = connect_client(d->uri);
    expect_told(c, 0, 0, "a client connecting after the forced splice");
    write_and_check(c, 3 * LEN, 5, 0, "client c");

    /* Taking the filter out gives caps back: no force needed. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "blockdev-remove-filter", "arguments",
                               "node-name", "plain"));
    write_and_check(a, 0, 6, LIBNBD_CMD_FLAG_FUA, "client a, FUA again");

    /* Now client c, told no FUA, holds nothing back, but a and b do. */
    expect_refused(q, json_pack("[s]", "fua"),
                   "export 'vm1' has 2 client(s) that were told FUA; the "
                   "new graph would not offer it");
    nbd_close(a);
    nbd_close(b);
    wait_connections(q, 1);
    /* The last client told FUA is gone: the splice goes in. */
    r = insert_blkdebug(q, "plain", json_pack("[s]", "fua"), 0);
    if (json_object_get(r, "return") == NULL)
        ng_test_fail("insert once the clients told FUA left: %s",
                     json_dumps(r, 0));
    json_decref(r);
    write_and_check(c, 3 * LEN, 7, 0, "client c at the end");

    nbd_close(c);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
