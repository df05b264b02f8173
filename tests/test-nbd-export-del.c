/* tests/test-nbd-export-del.c: removing an export under a connected
 * client, through the control channel's block-export-del — "safe" is
 * refused while the client is there, "hard" answers the client's
 * requests in flight and then disconnects it; the export's name is gone
 * for new clients while other exports go on serving. */
#include <config.h>

#include <inttypes.h>
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
    "  mem1: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n"
    "  other: { node: mem1, writable: true }\n";

static struct nbd_handle *
connect_export(const struct ng_test_daemon *d, const char *name)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, name) == -1 ||
        nbd_connect_unix(nbd, d->sock) == -1) {
        nbd_close(nbd);
        return NULL;
    }
    return nbd;
}

/* query-block-exports counts the clients past their handshake. */
static void
expect_connections(struct ng_test_qmp *qmp, const char *id, int want)
{
    json_t *list = ng_test_qmp_ok(qmp, "{s:s}", "execute",
                                  "query-block-exports");
    size_t i;
    json_t *e;

    json_array_foreach(list, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "id")), id) != 0)
            continue;
        if (json_integer_value(json_object_get(e, "connections")) != want)
            ng_test_fail("export '%s': %" JSON_INTEGER_FORMAT
                         " connections, expected %d", id,
                         json_integer_value(json_object_get(e,
                                                            "connections")),
                         want);
        json_decref(list);
        return;
    }
    ng_test_fail("export '%s' not in query-block-exports", id);
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct nbd_handle *nbd, *keep;
    static char buf[1 << 20];
    struct ng_test_qmp *qmp;
    int64_t cookies[8];

    ng_test_timeout(60);
    d = ng_test_start(config, "demo");
    nbd = connect_export(d, "demo");
    keep = connect_export(d, "other");
    if (nbd == NULL || keep == NULL)
        ng_test_fail_nbd("connect");
    qmp = ng_test_qmp_connect(d->control);
    expect_connections(qmp, "demo", 1);

    ng_test_qmp_fails(qmp, "connected",
                      "{s:s,s:{s:s,s:s}}", "execute", "block-export-del",
                      "arguments", "id", "demo", "mode", "safe");
    if (nbd_pread(nbd, buf, 4096, 0, 0) == -1)
        ng_test_fail_nbd("pread after the refused removal");

    /* requests in flight when the export goes */
    for (int i = 0; i < 8; i++) {
        cookies[i] = nbd_aio_pwrite(nbd, buf, sizeof buf,
                                    (uint64_t)i << 20, NBD_NULL_COMPLETION,
                                    0);
        if (cookies[i] == -1)
            ng_test_fail_nbd("aio_pwrite");
    }
    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s,s:s}}",
                               "execute", "block-export-del", "arguments",
                               "id", "demo", "mode", "hard"));
    /* Each write was either answered or lost with the connection; the
     * client sees the server go away rather than hang. */
    while (nbd_aio_in_flight(nbd) > 0) {
        if (nbd_poll(nbd, 10000) <= 0)
            break;
    }
    if (nbd_pread(nbd, buf, 4096, 0, 0) != -1)
        ng_test_fail("client still served after hard removal");
    nbd_close(nbd);

    if ((nbd = connect_export(d, "demo")) != NULL)
        ng_test_fail("removed export still accepts clients");

    /* the name can be used again, on the same node */
    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s,s:s,s:s,s:b}}",
                               "execute", "block-export-add", "arguments",
                               "type", "nbd", "id", "demo",
                               "node-name", "mem0", "writable", 1));
    if ((nbd = connect_export(d, "demo")) == NULL)
        ng_test_fail_nbd("connect to the re-added export");
    if (nbd_pread(nbd, buf, 4096, 0, 0) == -1)
        ng_test_fail_nbd("pread on the re-added export");
    expect_connections(qmp, "demo", 1);
    nbd_close(nbd);
    if (nbd_pread(keep, buf, 4096, 0, 0) == -1)
        ng_test_fail_nbd("other export after the removal");
    nbd_close(keep);
    ng_test_qmp_close(qmp);
    ng_test_stop(d);
    return 0;
}
