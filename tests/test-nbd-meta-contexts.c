/* tests/test-nbd-meta-contexts.c: several metadata contexts in one
 * BLOCK_STATUS.  An export of an overlay offers qemu:allocation-depth
 * and two dirty bitmaps; a client selecting all four contexts gets one
 * chunk for each with the right answer (b1 was disabled before the
 * last write, so it lacks it); with REQ_ONE each chunk has one
 * descriptor; a client selecting only a bitmap is answered without the
 * others; a bitmap listed for an export is busy until the export goes. */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define K64     65536u
#define DISK    (4u << 20)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  control: \"@CONTROL@\"\n"
    "nodes:\n"
    "  base: { driver: memory, size: 4M }\n"
    "  top: { driver: memory, size: 4M, backing: base }\n"
    "exports:\n"
    "  vm1: { node: top, writable: true }\n";

static const char *const contexts[] = {
    "base:allocation", "qemu:allocation-depth",
    "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1",
};
#define NCTX 4

/* What one BLOCK_STATUS said, per context: "off+len:state ..." */
struct seen {
    char text[NCTX][512];
    unsigned chunks[NCTX];
    unsigned entries[NCTX];
};

static int
extent_cb(void *opaque, const char *ctx, uint64_t offset, uint32_t *e,
          size_t n, int *error)
{
    struct seen *s = opaque;
    uint64_t pos = offset;

    (void)error;
    for (int i = 0; i < NCTX; i++) {
        if (strcmp(ctx, contexts[i]) != 0)
            continue;
        s->chunks[i]++;
        for (size_t j = 0; j + 1 < n; j += 2) {
            size_t len = strlen(s->text[i]);

            snprintf(s->text[i] + len, sizeof s->text[i] - len,
                     "%s%" PRIu64 "+%u:%u", len ? " " : "", pos, e[j],
                     e[j + 1]);
            pos += e[j];
            s->entries[i]++;
        }
        return 0;
    }
    ng_test_fail("block status for a context not asked for: %s", ctx);
}

static void
block_status(struct nbd_handle *nbd, uint32_t flags, struct seen *s)
{
    memset(s, 0, sizeof *s);
    if (nbd_block_status(nbd, DISK, 0,
                         (nbd_extent_callback) { .callback = extent_cb,
                                                 .user_data = s },
                         flags) == -1)
        ng_test_fail_nbd("block_status");
}

static struct nbd_handle *
open_with(const char *sock, const char *const *want, int n)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, "ctx") == -1)
        ng_test_fail_nbd("nbd_create");
    for (int i = 0; i < n; i++)
        if (nbd_add_meta_context(nbd, want[i]) == -1)
            ng_test_fail_nbd("add_meta_context");
    if (nbd_connect_unix(nbd, sock) == -1)
        ng_test_fail_nbd("connect");
    for (int i = 0; i < n; i++)
        if (nbd_can_meta_context(nbd, want[i]) != 1)
            ng_test_fail("context %s not negotiated", want[i]);
    return nbd;
}

static void
expect(const struct seen *s, int i, const char *want)
{
    if (s->chunks[i] != 1 || strcmp(s->text[i], want) != 0)
        ng_test_fail("%s: %u chunk(s) '%s', want one '%s'", contexts[i],
                     s->chunks[i], s->text[i], want);
}

static void
pwrite_at(struct nbd_handle *nbd, uint64_t off)
{
    static char buf[K64];

    memset(buf, 0x55, sizeof buf);
    if (nbd_pwrite(nbd, buf, sizeof buf, off, 0) == -1)
        ng_test_fail_nbd("pwrite");
}

static void
qmp_bitmap(struct ng_test_qmp *q, const char *cmd, const char *name)
{
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s}}", "execute", cmd,
                               "arguments", "node", "top", "name", name));
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    struct nbd_handle *nbd;
    struct seen s;

    ng_test_timeout(60);
    d = ng_test_start(config, "vm1");
    q = ng_test_qmp_connect(d->control);
    nbd = nbd_create();
    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    pwrite_at(nbd, 0);                  /* before the bitmaps */
    qmp_bitmap(q, "block-dirty-bitmap-add", "b0");
    qmp_bitmap(q, "block-dirty-bitmap-add", "b1");
    pwrite_at(nbd, 1u << 20);
    qmp_bitmap(q, "block-dirty-bitmap-disable", "b1");
    pwrite_at(nbd, 2u << 20);
    nbd_close(nbd);
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s,s:s,s:s,s:[s,s],s:b}}",
                               "execute", "block-export-add", "arguments",
                               "type", "nbd", "id", "ctx", "node-name", "top",
                               "bitmaps", "b0", "b1",
                               "allocation-depth", 1));

    nbd = open_with(d->sock, contexts, NCTX);
    block_status(nbd, 0, &s);
    expect(&s, 0, "0+65536:0 65536+983040:3 1048576+65536:0 "
           "1114112+983040:3 2097152+65536:0 2162688+2031616:3");
    expect(&s, 1, "0+65536:1 65536+983040:0 1048576+65536:1 "
           "1114112+983040:0 2097152+65536:1 2162688+2031616:0");
    expect(&s, 2, "0+1048576:0 1048576+65536:1 1114112+983040:0 "
           "2097152+65536:1 2162688+2031616:0");
    expect(&s, 3, "0+1048576:0 1048576+65536:1 1114112+3080192:0");
    block_status(nbd, LIBNBD_CMD_FLAG_REQ_ONE, &s);
    for (int i = 0; i < NCTX; i++)
        if (s.chunks[i] != 1 || s.entries[i] != 1)
            ng_test_fail("REQ_ONE: %s: %u chunk(s), %u descriptor(s)",
                         contexts[i], s.chunks[i], s.entries[i]);
    expect(&s, 2, "0+1048576:0");
    nbd_close(nbd);

    /* A bitmap alone: answered without the graph's contexts. */
    nbd = open_with(d->sock, &contexts[3], 1);
    block_status(nbd, 0, &s);
    expect(&s, 3, "0+1048576:0 1048576+65536:1 1114112+3080192:0");
    nbd_close(nbd);

    ng_test_qmp_fails(q, "is in use by a job or an export",
                      "{s:s,s:{s:s,s:s}}", "execute",
                      "block-dirty-bitmap-remove", "arguments", "node", "top",
                      "name", "b1");
    json_decref(ng_test_qmp_ok(q, "{s:s,s:{s:s}}", "execute",
                               "block-export-del", "arguments", "id", "ctx"));
    qmp_bitmap(q, "block-dirty-bitmap-remove", "b1");
    ng_test_qmp_close(q);
    ng_test_stop(d);
    return 0;
}
