/* tests/test-nac-daemon.c: Node Access Control in the running daemon.
 *
 * Exports are holders from birth; a second writable export of a node is
 * refused with the NAC sentence naming both; a read-only one beside it is
 * fine; dry runs answer and change nothing; query-nac shows who holds
 * what; claims go when the export goes. */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  disk0: { driver: memory, size: 16M }\n"
    "exports:\n"
    "  vm1: { node: disk0, writable: true }\n";

static json_t *
export_args(const char *id, bool writable, bool dry_run)
{
    return json_pack("{s:s,s:s,s:s,s:b,s:b}", "type", "nbd", "id", id,
                     "node-name", "disk0", "writable", writable,
                     "dry-run", dry_run);
}

/* The holders of disk0 in query-nac, as "id:kind:require:allow;..." */
static void
holders_of_disk0(struct ng_test_qmp *q, char *out, size_t size)
{
    json_t *list = ng_test_qmp_ok(q, "{s:s}", "execute", "query-nac");
    json_t *entry, *h, *a;
    size_t i, j, k, used = 0;

    out[0] = '\0';
    json_array_foreach(list, i, entry) {
        if (strcmp(json_string_value(json_object_get(entry, "node-name")),
                   "disk0") != 0)
            continue;
        json_array_foreach(json_object_get(entry, "holders"), j, h) {
            used += (size_t)snprintf(out + used, size - used, "%s:%s:",
                json_string_value(json_object_get(h, "id")),
                json_string_value(json_object_get(h, "kind")));
            json_array_foreach(json_object_get(h, "require"), k, a)
                used += (size_t)snprintf(out + used, size - used, "%s%s",
                                         k ? "," : "", json_string_value(a));
            used += (size_t)snprintf(out + used, size - used, ":");
            json_array_foreach(json_object_get(h, "allow"), k, a)
                used += (size_t)snprintf(out + used, size - used, "%s%s",
                                         k ? "," : "", json_string_value(a));
            used += (size_t)snprintf(out + used, size - used, ";");
        }
    }
    json_decref(list);
}

static void
expect_holders(struct ng_test_qmp *q, const char *want, const char *when)
{
    char got[1024];

    holders_of_disk0(q, got, sizeof got);
    if (strcmp(got, want) != 0)
        ng_test_fail("%s: holders of disk0 are '%s', expected '%s'", when,
                     got, want);
}

int
main(void)
{
    static const char vm1[] =
        "vm1:export:read-data,read-meta,write-data:"
        "read-data,read-meta,write-meta,graph-mod;";
    static const char ro[] =
        "ro1:export:read-data,read-meta:"
        "read-data,read-meta,write-data,write-meta,graph-mod;";
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    char both[1024];

    ng_test_timeout(60);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    expect_holders(q, vm1, "at start");

    /* A second writer is refused, naming both sides; dry run too. */
    ng_test_qmp_fails(q, "node 'disk0': export 'vm2' requires write-data, "
                      "which export 'vm1' does not allow", "{s:s,s:o}",
                      "execute", "block-export-add", "arguments",
                      export_args("vm2", true, true));
    ng_test_qmp_fails(q, "node 'disk0': export 'vm2' requires write-data, "
                      "which export 'vm1' does not allow", "{s:s,s:o}",
                      "execute", "block-export-add", "arguments",
                      export_args("vm2", true, false));
    expect_holders(q, vm1, "after refusals");

    /* A reader beside the writer is fine; a dry run adds nothing. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:o}", "execute", "block-export-add",
                               "arguments", export_args("ro1", false, true)));
    expect_holders(q, vm1, "after a dry run");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:o}", "execute", "block-export-add",
                               "arguments", export_args("ro1", false,
                                                        false)));
    snprintf(both, sizeof both, "%s%s", vm1, ro);
    expect_holders(q, both, "with a reader");

    /* An ID is unique across holders. */
    ng_test_qmp_fails(q, "already exists", "{s:s,s:o}", "execute",
                      "block-export-add", "arguments",
                      export_args("ro1", false, false));

    /* blockdev-del claims the node exclusively: refused while exported. */
    ng_test_qmp_fails(q, "in use", "{s:s,s:{s:s,s:b}}", "execute",
                      "blockdev-del", "arguments", "node-name", "disk0",
                      "dry-run", 1);

    /* Claims go with the export; then a second writer may come. */
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "block-export-del", "arguments", "id", "vm1"));
    expect_holders(q, ro, "after removing vm1");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:o}", "execute", "block-export-add",
                               "arguments", export_args("vm2", true,
                                                        false)));
    ng_test_qmp_close(q);
    ng_test_stop(d);
    printf("NAC in the daemon: holders, refusals, dry runs, release\n");
    return 0;
}
