/* tests/test-nbd-handshake.c: option haggling as libnbd sees it — LIST
 * with descriptions, INFO (size, flags, name, description, block sizes),
 * unknown exports, no export name with no export named "" (refused;
 * test-nbd-default-export.c has the rest), metadata contexts, ABORT, and
 * GO onto a read-only export. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

/* A second listen address whose socket file is left over from a dead
 * server: the daemon must replace it, and remove it when it stops. */
static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\", \"unix:%s\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "  mem1: { driver: memory, size: 1M }\n"
    "  mem2: { driver: memory, size: 3M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true, description: \"test disk\" }\n"
    "  ro: { node: mem1, description: \"read-only disk\" }\n"
    "  plain: { node: mem2, writable: true }\n";

struct listing {
    int n;
    char names[8][32];
    char descs[8][32];
};

static int
list_cb(void *opaque, const char *name, const char *desc)
{
    struct listing *l = opaque;

    if (l->n < 8) {
        snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
        snprintf(l->descs[l->n], sizeof l->descs[0], "%s", desc);
    }
    l->n++;
    return 0;
}

static int
meta_cb(void *opaque, const char *name)
{
    int *n = opaque;

    if (strcmp(name, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        ng_test_fail("unexpected context '%s'", name);
    (*n)++;
    return 0;
}

static struct nbd_handle *
connect_opt(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512];

    if (nbd == NULL)
        ng_test_fail_nbd("nbd_create");
    snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", d->sock);
    if (nbd_set_opt_mode(nbd, true) == -1 ||
        nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect in opt mode");
    return nbd;
}

static void
test_list(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = connect_opt(d);
    struct listing l = { 0 };

    if (nbd_opt_list(nbd, (nbd_list_callback) { .callback = list_cb,
                                                .user_data = &l }) == -1)
        ng_test_fail_nbd("opt_list");
    if (l.n != 3 || strcmp(l.names[0], "demo") != 0 ||
        strcmp(l.names[1], "ro") != 0 || strcmp(l.names[2], "plain") != 0)
        ng_test_fail("list: %d exports, not demo, ro, plain in order", l.n);
    if (strcmp(l.descs[0], "test disk") != 0 ||
        strcmp(l.descs[1], "read-only disk") != 0 || l.descs[2][0] != '\0')
        ng_test_fail("list: descriptions wrong ('%s')", l.descs[0]);
    if (nbd_opt_abort(nbd) == -1)
        ng_test_fail_nbd("opt_abort");
    nbd_close(nbd);
}

static void
expect_info(struct nbd_handle *nbd, const char *name, const char *canonical,
            int64_t size, const char *desc, int ro)
{
    char *s;

    if (nbd_set_export_name(nbd, name) == -1 || nbd_opt_info(nbd) == -1)
        ng_test_fail_nbd("opt_info");
    if (nbd_get_size(nbd) != size)
        ng_test_fail("info '%s': size %" PRId64, name, nbd_get_size(nbd));
    if (nbd_is_read_only(nbd) != ro)
        ng_test_fail("info '%s': read-only %d", name, nbd_is_read_only(nbd));
    s = nbd_get_canonical_export_name(nbd);
    if (s == NULL || strcmp(s, canonical) != 0)
        ng_test_fail("info '%s': canonical name '%s'", name, s ? s : "");
    free(s);
    s = nbd_get_export_description(nbd);
    if ((desc == NULL) != (s == NULL) ||
        (desc != NULL && strcmp(s, desc) != 0))
        ng_test_fail("info '%s': description '%s'", name, s ? s : "(none)");
    free(s);
    if (nbd_get_block_size(nbd, LIBNBD_SIZE_MINIMUM) != 1 ||
        nbd_get_block_size(nbd, LIBNBD_SIZE_PREFERRED) != 4096 ||
        nbd_get_block_size(nbd, LIBNBD_SIZE_MAXIMUM) != 64 << 20)
        ng_test_fail("info '%s': block sizes wrong", name);
}

static void
test_info(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = connect_opt(d);
    int n = 0;

    if (nbd_set_full_info(nbd, true) == -1)
        ng_test_fail_nbd("set_full_info");
    expect_info(nbd, "demo", "demo", 64 << 20, "test disk", 0);
    expect_info(nbd, "ro", "ro", 1 << 20, "read-only disk", 1);
    expect_info(nbd, "plain", "plain", 3 << 20, NULL, 0);
    /* no export is named "", so naming none is naming an unknown one */
    if (nbd_set_export_name(nbd, "") == -1)
        ng_test_fail_nbd("set_export_name");
    if (nbd_opt_info(nbd) != -1)
        ng_test_fail("info with no export name succeeded");
    if (nbd_set_export_name(nbd, "nope") == -1)
        ng_test_fail_nbd("set_export_name");
    if (nbd_opt_info(nbd) != -1)
        ng_test_fail("info on an unknown export succeeded");
    /* the connection survives the error */
    if (nbd_set_export_name(nbd, "demo") == -1 ||
        nbd_opt_list_meta_context(nbd, (nbd_context_callback) {
                                      .callback = meta_cb,
                                      .user_data = &n }) == -1)
        ng_test_fail_nbd("opt_list_meta_context");
    if (n != 1)
        ng_test_fail("%d metadata contexts listed", n);
    if (nbd_add_meta_context(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
        nbd_set_export_name(nbd, "ro") == -1 || nbd_opt_go(nbd) == -1)
        ng_test_fail_nbd("opt_go");
    if (nbd_is_read_only(nbd) != 1 || nbd_can_multi_conn(nbd) != 1 ||
        nbd_can_trim(nbd) != 0 || nbd_can_zero(nbd) != 0 ||
        nbd_can_meta_context(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
        ng_test_fail("read-only export: flags wrong");
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
}

/* A plain connect with no export name is refused: no export is named
 * "", and the first one (demo) is not handed out in its place. */
static void
test_no_export_name(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512];

    snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", d->sock);
    if (nbd == NULL)
        ng_test_fail_nbd("nbd_create");
    if (nbd_connect_uri(nbd, uri) != -1)
        ng_test_fail("a connect naming no export got a %" PRId64
                     "-byte export", nbd_get_size(nbd));
    nbd_close(nbd);
}

/* Without structured replies there are no metadata contexts. */
static void
test_no_structured(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = nbd_create();
    char uri[512];

    snprintf(uri, sizeof uri, "nbd+unix:///plain?socket=%s", d->sock);
    if (nbd == NULL ||
        nbd_set_request_structured_replies(nbd, false) == -1 ||
        nbd_add_meta_context(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
        nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect without structured replies");
    if (nbd_can_meta_context(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 ||
        nbd_can_df(nbd) != 0)
        ng_test_fail("simple replies, yet contexts or DF offered");
    nbd_close(nbd);
}

/* Bind a socket and close it without unlinking: a stale socket file. */
static void
make_stale_socket(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (strlen(path) >= sizeof sun.sun_path)
        ng_test_fail("socket path too long");
    memcpy(sun.sun_path, path, strlen(path) + 1);
    unlink(path);
    if (fd == -1 || bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
        ng_test_fail("bind %s: %s", path, strerror(errno));
    close(fd);
}

static void
test_second_socket(const char *path)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, "plain") == -1 ||
        nbd_connect_unix(nbd, path) == -1)
        ng_test_fail_nbd("connect through the replaced stale socket");
    if (nbd_get_size(nbd) != 3 << 20)
        ng_test_fail("wrong export through the second socket");
    nbd_close(nbd);
}

int
main(void)
{
    struct ng_test_daemon *d;
    char stale[128], yaml[sizeof config + sizeof stale];
    struct stat st;

    ng_test_timeout(60);
    snprintf(stale, sizeof stale, "/tmp/ngtest-stale-%ld.sock",
             (long)getpid());
    make_stale_socket(stale);
    snprintf(yaml, sizeof yaml, config, stale);
    d = ng_test_start(yaml, "demo");
    test_list(d);
    test_info(d);
    test_no_export_name(d);
    test_no_structured(d);
    test_second_socket(stale);
    ng_test_stop(d);
    if (stat(stale, &st) == 0)
        ng_test_fail("%s left behind after shutdown", stale);
    return 0;
}
