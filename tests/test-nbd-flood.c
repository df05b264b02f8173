/* tests/test-nbd-flood.c: floods a host's daemon must ride out.
 *  - 1,000 clients that connect and never finish option haggling (some
 *    say nothing after the greeting, some stop half-way through an
 *    option header) do not stop a normal client from being served, and
 *    the handshake deadline closes every one of them.
 *  - More clients than the daemon has file descriptors (its soft
 *    RLIMIT_NOFILE lowered to 64): the ones it cannot take are closed at
 *    once with a log line that says what to do, a client connected
 *    before keeps being served, and once the flood is gone new clients
 *    are served again.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libnbd.h>

#include "tests/harness.h"

#define FLOOD       1000
#define FD_FLOOD    100
#define NBDMAGIC    UINT64_C(0x4e42444d41474943)

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 1M }\n"
    "exports:\n"
    "  demo: { node: mem0 }\n";

/* Wait up to `ms` for fd to be readable; then read what is there.
 * Returns the bytes read, 0 on EOF or reset, -1 on timeout. */
static ssize_t
read_within(int fd, void *buf, size_t len, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    ssize_t n;

    if (poll(&pfd, 1, ms) != 1)
        return -1;
    n = recv(fd, buf, len, 0);
    return n < 0 ? 0 : n;
}

/* Connect, take the greeting, send the client flags; every other one
 * also sends half an option header, then silence. */
static int
unfinished_client(const struct ng_test_daemon *d, unsigned i)
{
    static const unsigned char flags[4] = { 0, 0, 0, 3 };
    static const unsigned char half_opt[8] = "IHAVEOPT";
    unsigned char g[18];
    size_t got = 0;
    int fd = ng_test_raw_connect(d);

    while (got < sizeof g) {
        ssize_t n = read_within(fd, g + got, sizeof g - got, 10000);

        if (n <= 0)
            ng_test_fail("client %u: no greeting", i);
        got += (size_t)n;
    }
    if (send(fd, flags, sizeof flags, MSG_NOSIGNAL) != sizeof flags ||
        (i % 2 == 1 &&
         send(fd, half_opt, sizeof half_opt, MSG_NOSIGNAL) !=
         sizeof half_opt))
        ng_test_fail("client %u: send: %s", i, strerror(errno));
    return fd;
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

static void
test_unfinished_handshakes(void)
{
    struct ng_test_daemon *d = ng_test_start(config, "demo");
    static int fds[FLOOD];
    char c;

    for (unsigned i = 0; i < FLOOD; i++)
        fds[i] = unfinished_client(d, i);
    read_4k(d, "beside 1,000 unfinished handshakes");
    /* The deadline is 10 s from each connect; 40 s bounds the wait. */
    for (unsigned i = 0; i < FLOOD; i++) {
        if (read_within(fds[i], &c, 1, 40000) != 0)
            ng_test_fail("unfinished handshake %u not closed by the "
                         "deadline", i);
        close(fds[i]);
    }
    read_4k(d, "after the handshake deadline");
    ng_test_stop(d);
}

/* Start the daemon with soft RLIMIT_NOFILE `limit` and its stderr in
 * `log`; ours are as before afterwards. */
static struct ng_test_daemon *
start_limited(rlim_t limit, const char *log)
{
    struct rlimit rl, low;
    struct ng_test_daemon *d;
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (saved == -1 || fd == -1 || getrlimit(RLIMIT_NOFILE, &rl) == -1)
        ng_test_fail("%s: %s", log, strerror(errno));
    low = rl;
    low.rlim_cur = limit;
    if (setrlimit(RLIMIT_NOFILE, &low) == -1 || dup2(fd, 2) == -1)
        ng_test_fail("setrlimit/dup2: %s", strerror(errno));
    d = ng_test_start(config, "demo");
    dup2(saved, 2);
    close(saved);
    close(fd);
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
        ng_test_fail("setrlimit: %s", strerror(errno));
    return d;
}

static bool
log_has(const char *log, const char *text)
{
    char line[1024];
    bool found = false;
    FILE *fp = fopen(log, "r");

    while (fp != NULL && !found && fgets(line, sizeof line, fp) != NULL)
        found = strstr(line, text) != NULL;
    if (fp != NULL)
        fclose(fp);
    return found;
}

static void
test_fd_limit(void)
{
    char log[] = "/tmp/ngflood.XXXXXX";
    int lfd = mkstemp(log);
    struct ng_test_daemon *d;
    struct nbd_handle *before;
    static int fds[FD_FLOOD];
    char buf[4096];
    unsigned closed = 0;

    if (lfd == -1)
        ng_test_fail("mkstemp: %s", strerror(errno));
    close(lfd);
    d = start_limited(64, log);
    before = nbd_create();
    if (before == NULL || nbd_connect_uri(before, d->uri) == -1)
        ng_test_fail("first client: %s", nbd_get_error());
    for (unsigned i = 0; i < FD_FLOOD; i++)
        fds[i] = ng_test_raw_connect(d);
    /* Each one the daemon could not take is closed without a greeting. */
    for (unsigned i = 0; i < FD_FLOOD; i++) {
        char g[18];

        if (read_within(fds[i], g, sizeof g, 10000) == 0)
            closed++;
    }
    if (closed == 0)
        ng_test_fail("no client of %u was refused at the fd limit",
                     FD_FLOOD);
    if (!log_has(log, "raise the open file limit"))
        ng_test_fail("no log line about the fd limit in %s", log);
    if (nbd_pread(before, buf, sizeof buf, 0, 0) == -1)
        ng_test_fail("the client from before the flood: %s",
                     nbd_get_error());
    nbd_close(before);
    for (unsigned i = 0; i < FD_FLOOD; i++)
        close(fds[i]);
    /* The daemon closes its ends as it notices: retry for a while. */
    for (int tries = 0;; tries++) {
        struct nbd_handle *nbd = nbd_create();
        bool ok = nbd != NULL && nbd_connect_uri(nbd, d->uri) == 0 &&
                  nbd_pread(nbd, buf, sizeof buf, 0, 0) == 0;

        nbd_close(nbd);
        if (ok)
            break;
        if (tries == 200)
            ng_test_fail("not served after the flood: %s", nbd_get_error());
        usleep(50000);
    }
    printf("fd limit 64: %u of %u flooding clients refused at once\n",
           closed, FD_FLOOD);
    ng_test_stop(d);
    unlink(log);
}

int
main(void)
{
    ng_test_timeout(240);
    test_fd_limit();
    test_unfinished_handshakes();
    return 0;
}
