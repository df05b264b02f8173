/* tests/test-nbd-limits.c: limits that hold under load.
 *  - Thousands of connected idle clients (past the handshake, so the
 *    handshake deadline does not drop them, and after one 32 KiB WRITE
 *    each, whose payload went through the receive buffer) cost at most
 *    8 KiB each: a connection holds a receive buffer only while bytes
 *    are unparsed.  A normal client is still served.
 *    NG_TEST_IDLE_CLIENTS sets how many (default 3000); the figures are
 *    printed.
 *  - server.max-connections: a client past it is closed before the
 *    greeting; an export's max-connections refuses one more GO.
 *  - server.idle-timeout: an idle client is closed.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

#define NBDMAGIC    UINT64_C(0x4e42444d41474943)
#define IHAVEOPT    UINT64_C(0x49484156454f5054)

static const char config_plain[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n";

static const char config_capped[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  max-connections: 4\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true, max-connections: 1 }\n";

static const char config_idle[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "  idle-timeout: 1\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "exports:\n"
    "  demo: { node: mem0, writable: true }\n";

#define IDLE_WRITE  32768

/* One WRITE of IDLE_WRITE bytes, header and payload in one send. */
static void
write_once(int fd, uint64_t offset)
{
    static unsigned char req[28 + IDLE_WRITE];
    unsigned char reply[16];

    memset(req, 0x5a, sizeof req);
    ng_test_put32(req, 0x25609513);         /* NBD_REQUEST_MAGIC */
    ng_test_put32(req + 4, 1);              /* flags 0, NBD_CMD_WRITE */
    memset(req + 8, 0, 8);          /* handle */
    ng_test_put32(req + 16, (uint32_t)(offset >> 32));
    ng_test_put32(req + 20, (uint32_t)offset);
    ng_test_put32(req + 24, IDLE_WRITE);
    ng_test_send_all(fd, req, sizeof req);
    if (!ng_test_recv_all(fd, reply, sizeof reply, 10000) || reply[4] != 0 ||
        reply[5] != 0 || reply[6] != 0 || reply[7] != 0)
        ng_test_fail("write from an idle client failed");
}

/* A client as old as NBD gets: greeting, NBD_OPT_EXPORT_NAME "demo",
 * then it sits in transmission without a word. */
static int
idle_client(const struct ng_test_daemon *d)
{
    int fd = ng_test_raw_connect(d);
    unsigned char g[18], out[4 + 16 + 4], reply[10];

    if (!ng_test_recv_all(fd, g, sizeof g, 10000) ||
        ng_test_get64(g) != NBDMAGIC)
        ng_test_fail("bad greeting");
    ng_test_put32(out, 3);                  /* FIXED_NEWSTYLE | NO_ZEROES */
    ng_test_put32(out + 4, (uint32_t)(IHAVEOPT >> 32));
    ng_test_put32(out + 8, (uint32_t)IHAVEOPT);
    ng_test_put32(out + 12, 1);             /* NBD_OPT_EXPORT_NAME */
    ng_test_put32(out + 16, 4);
    memcpy(out + 20, "demo", 4);
    ng_test_send_all(fd, out, sizeof out);
    if (!ng_test_recv_all(fd, reply, sizeof reply, 10000))
        ng_test_fail("EXPORT_NAME refused");
    return fd;
}

static long
rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    if ((f = fopen(path, "r")) == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void
read_4k(const struct ng_test_daemon *d, const char *when)
{
    struct nbd_handle *nbd = nbd_create();
    char buf[4096];

    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1 ||
        nbd_pread(nbd, buf, sizeof buf, 0, 0) == -1)
        ng_test_fail("%s: normal client not served: %s", when,
                     nbd_get_error());
    nbd_close(nbd);
}

/* Our clients and the daemon (which inherits the limit) each need one
 * fd per connection. */
static unsigned
raise_fd_limit(unsigned want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        ng_test_fail("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < want + 100) {
        rl.rlim_cur = rl.rlim_max < want + 100 ? rl.rlim_max : want + 100;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
            ng_test_fail("setrlimit: %s", strerror(errno));
    }
    return rl.rlim_cur > 100 ? (unsigned)(rl.rlim_cur - 100) : 0;
}

static void
test_many_idle(void)
{
    const char *env = getenv("NG_TEST_IDLE_CLIENTS");
    unsigned want = env != NULL ? (unsigned)atoi(env) : 3000;
    unsigned n = raise_fd_limit(want);
    struct ng_test_daemon *d;
    struct timespec t0, t1;
    long before, after;
    int *fds;

    if (n > want)
        n = want;
    if (n < 100)
        ng_test_fail("fd limit too low for the test (%u)", n);
    fds = calloc(n, sizeof *fds);
    if (fds == NULL)
        ng_test_fail("out of memory");
    d = ng_test_start(config_plain, "demo");
    read_4k(d, "before");
    before = rss_kib(d->pid);
    for (unsigned i = 0; i < n; i++) {
        fds[i] = idle_client(d);
        write_once(fds[i], 0);     /* one place: the disk stays small */
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    read_4k(d, "with idle clients");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    after = rss_kib(d->pid);
    printf("a normal client (connect, 4 KiB read) beside them: %.1f ms "
           "(reported, not checked)\n",
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    printf("%u idle clients: daemon RSS %ld KiB -> %ld KiB, %.2f KiB "
           "each\n", n, before, after, (double)(after - before) / n);
#ifndef __SANITIZE_ADDRESS__        /* ASan's redzones and shadow */
    if ((after - before) > 8L * n)
        ng_test_fail("more than 8 KiB resident per idle client");
#endif
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    read_4k(d, "after");
    ng_test_stop(d);
}

static struct nbd_handle *
try_go(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL)
        ng_test_fail_nbd("nbd_create");
    if (nbd_connect_uri(nbd, d->uri) == -1) {
        nbd_close(nbd);
        return NULL;
    }
    return nbd;
}

static void
test_caps(void)
{
    struct ng_test_daemon *d = ng_test_start(config_capped, "demo");
    struct nbd_handle *first = try_go(d), *second;
    unsigned char g[18];
    int fds[5];

    if (first == NULL)
        ng_test_fail("first client of demo refused: %s", nbd_get_error());
    if ((second = try_go(d)) != NULL)
        ng_test_fail("second client of demo (max-connections 1) served");
    nbd_close(first);
    /* The daemon's side of `first` closes soon after; until it has, it
     * still counts.  A fresh client past the cap is never greeted. */
    for (int tries = 0; (first = try_go(d)) == NULL; tries++) {
        if (tries == 100)
            ng_test_fail("demo refused after its one client left");
        usleep(10000);
    }
    nbd_close(first);
    for (int tries = 0;; tries++) {
        bool all_greeted = true;

        for (int i = 0; i < 4; i++) {
            fds[i] = ng_test_raw_connect(d);
            if (!ng_test_recv_all(fds[i], g, sizeof g, 10000))
                all_greeted = false;
        }
        if (all_greeted)
            break;
        for (int i = 0; i < 4; i++)
            close(fds[i]);
        if (tries == 100)
            ng_test_fail("4 clients (max-connections 4) not all greeted");
        usleep(10000);
    }
    fds[4] = ng_test_raw_connect(d);
    if (ng_test_recv_all(fds[4], g, sizeof g, 10000))
        ng_test_fail("a fifth client (max-connections 4) was greeted");
    for (int i = 0; i < 5; i++)
        close(fds[i]);
    ng_test_stop(d);
}

static void
test_idle_timeout(void)
{
    struct ng_test_daemon *d = ng_test_start(config_idle, "demo");
    int fd = idle_client(d);
    char c;

    /* idle-timeout 1: closed after 1-2 s; 10 s bounds the wait. */
    if (ng_test_recv_all(fd, &c, 1, 10000))
        ng_test_fail("idle client got data instead of being closed");
    close(fd);
    read_4k(d, "after the idle timeout");
    ng_test_stop(d);
}

int
main(void)
{
    ng_test_timeout(300);
    test_caps();
    test_idle_timeout();
    test_many_idle();
    return 0;
}
