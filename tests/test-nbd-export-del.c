/* tests/test-nbd-export-del.c: removing an export under a connected
 * client, through the control channel's block-export-del — "safe" is
 * refused while the client is there, "hard" answers the client's
 * requests in flight and then disconnects it; the export's name is gone
 * for new clients while other exports go on serving. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

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

/* ---- A minimal QMP client: one JSON object per line ------------------- */

static int
qmp_connect(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (strlen(path) >= sizeof sun.sun_path)
        ng_test_fail("control path too long");
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
        ng_test_fail("connect %s: %s", path, strerror(errno));
    return fd;
}

/* Next line that is not an event. */
static void
qmp_read_line(int fd, char *buf, size_t cap)
{
    for (;;) {
        size_t n = 0;

        for (;;) {
            struct pollfd pfd = { .fd = fd, .events = POLLIN };

            if (poll(&pfd, 1, 10000) != 1)
                ng_test_fail("no answer on the control socket");
            if (read(fd, buf + n, 1) != 1)
                ng_test_fail("control socket closed");
            if (buf[n] == '\n')
                break;
            if (++n == cap - 1)
                ng_test_fail("control line too long");
        }
        buf[n] = '\0';
        if (strstr(buf, "\"event\"") == NULL)
            return;
    }
}

static void
qmp_command(int fd, const char *cmd, char *reply, size_t cap)
{
    if (write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd) ||
        write(fd, "\n", 1) != 1)
        ng_test_fail("write to the control socket: %s", strerror(errno));
    qmp_read_line(fd, reply, cap);
}

static int
qmp_start(const struct ng_test_daemon *d)
{
    int fd = qmp_connect(d->control);
    char line[4096];

    qmp_read_line(fd, line, sizeof line);      /* greeting */
    qmp_command(fd, "{\"execute\":\"qmp_capabilities\"}", line, sizeof line);
    if (strstr(line, "\"return\"") == NULL)
        ng_test_fail("qmp_capabilities: %s", line);
    return fd;
}

/* ---- The test ----------------------------------------------------------- */

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

int
main(void)
{
    struct ng_test_daemon *d;
    struct nbd_handle *nbd, *keep;
    static char buf[1 << 20];
    char line[4096];
    int64_t cookies[8];
    int qmp;

    ng_test_timeout(60);
    d = ng_test_start(config, "demo");
    nbd = connect_export(d, "demo");
    keep = connect_export(d, "other");
    if (nbd == NULL || keep == NULL)
        ng_test_fail_nbd("connect");
    qmp = qmp_start(d);

    qmp_command(qmp, "{\"execute\":\"block-export-del\","
                     "\"arguments\":{\"id\":\"demo\",\"mode\":\"safe\"}}",
                line, sizeof line);
    if (strstr(line, "\"error\"") == NULL)
        ng_test_fail("safe removal with a client connected: %s", line);
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
    qmp_command(qmp, "{\"execute\":\"block-export-del\","
                     "\"arguments\":{\"id\":\"demo\",\"mode\":\"hard\"}}",
                line, sizeof line);
    if (strstr(line, "\"return\"") == NULL)
        ng_test_fail("hard removal: %s", line);
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
    if (nbd_pread(keep, buf, 4096, 0, 0) == -1)
        ng_test_fail_nbd("other export after the removal");
    nbd_close(keep);
    close(qmp);
    ng_test_stop(d);
    return 0;
}
