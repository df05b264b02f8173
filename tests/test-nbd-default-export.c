/* tests/test-nbd-default-export.c: a client that names no export gets
 * the export named "" if there is one, and otherwise a refusal
 * (NBD_REP_ERR_UNKNOWN for INFO and GO; a dropped connection for the old
 * NBD_OPT_EXPORT_NAME, which has no error reply) -- never the first
 * export in the list, which after a removal could be another disk. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "  mem1: { driver: memory, size: 1M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n"
    "  other: { node: mem1 }\n";

/* Connect to `name` with NBD_OPT_GO, or with the old NBD_OPT_EXPORT_NAME
 * (libnbd uses it when fixed newstyle is not offered).  NULL when the
 * server refused. */
static struct nbd_handle *
try_connect(const struct ng_test_daemon *d, const char *name,
            bool export_name_opt)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, name) == -1 ||
        (export_name_opt && nbd_set_handshake_flags(nbd, 0) == -1))
        ng_test_fail_nbd("nbd_create");
    if (nbd_connect_unix(nbd, d->sock) == -1) {
        nbd_close(nbd);
        return NULL;
    }
    return nbd;
}

static void
expect_refused(const struct ng_test_daemon *d, const char *when)
{
    struct nbd_handle *nbd;

    if ((nbd = try_connect(d, "", false)) != NULL)
        ng_test_fail("%s: GO with no export name served a %" PRId64
                     "-byte export", when, nbd_get_size(nbd));
    if ((nbd = try_connect(d, "", true)) != NULL)
        ng_test_fail("%s: EXPORT_NAME with no name served a %" PRId64
                     "-byte export", when, nbd_get_size(nbd));
}

static void
expect_served(const struct ng_test_daemon *d, int64_t size)
{
    for (int old_style = 0; old_style < 2; old_style++) {
        struct nbd_handle *nbd = try_connect(d, "", old_style);

        if (nbd == NULL)
            ng_test_fail_nbd(old_style ? "EXPORT_NAME ''" : "GO ''");
        if (nbd_get_size(nbd) != size)
            ng_test_fail("export '': %" PRId64 " bytes, not %" PRId64,
                         nbd_get_size(nbd), size);
        nbd_shutdown(nbd, 0);
        nbd_close(nbd);
    }
}

/* NBD_OPT_INFO for "" is refused with "unknown export" and the
 * connection stays usable for a name that exists. */
static void
test_info_refused(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_opt_mode(nbd, true) == -1 ||
        nbd_connect_unix(nbd, d->sock) == -1)
        ng_test_fail_nbd("connect in opt mode");
    if (nbd_set_export_name(nbd, "") == -1)
        ng_test_fail_nbd("set_export_name");
    if (nbd_opt_info(nbd) != -1)
        ng_test_fail("NBD_OPT_INFO '' succeeded with no export named ''");
    if (nbd_get_errno() != ENOENT)      /* libnbd's NBD_REP_ERR_UNKNOWN */
        ng_test_fail("NBD_OPT_INFO '': %s (errno %d), expected ENOENT",
                     nbd_get_error(), nbd_get_errno());
    if (nbd_set_export_name(nbd, "other") == -1 || nbd_opt_go(nbd) == -1)
        ng_test_fail_nbd("GO 'other' after the refusal");
    if (nbd_get_size(nbd) != 1 << 20)
        ng_test_fail("GO 'other': wrong size");
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *qmp;

    ng_test_timeout(60);
    d = ng_test_start(config, "demo");
    qmp = ng_test_qmp_connect(d->control);
    expect_refused(d, "no export named ''");
    test_info_refused(d);

    /* An export named "" is what a client naming none gets. */
    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s,s:s,s:s,s:s}}",
                               "execute", "block-export-add", "arguments",
                               "type", "nbd", "id", "dflt",
                               "node-name", "mem1", "name", ""));
    expect_served(d, 1 << 20);
    /* ... even when it is not the first, and after the first goes. */
    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s}}", "execute",
                               "block-export-del", "arguments", "id",
                               "demo"));
    expect_served(d, 1 << 20);
    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s}}", "execute",
                               "block-export-del", "arguments", "id",
                               "dflt"));
    expect_refused(d, "after removing export ''");
    ng_test_qmp_close(qmp);
    ng_test_stop(d);
    return 0;
}
