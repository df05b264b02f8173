/* tests/test-nbd-early-close.c: clients that go away before their
 * replies are sent.  Each one negotiates GO, asks for 8 READs of 32 MiB
 * and closes (Unix socket), closes or resets (TCP) without reading a
 * byte.  Every such connection must be freed with its reply buffers:
 * the export's client count drops to 0, the daemon's RSS comes back to
 * where it was, block-export-del (safe mode) is allowed, and SIGTERM
 * finishes at once.  (Each leaked connection used to pin ~224 MiB and
 * keep shutdown from ever finishing.) */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define CLIENTS         100
#define BATCH           4       /* clients connected at once */
#define WARM_ROUNDS_MAX 5       /* well-behaved batches to fill the pool */
#define READS           8
#define READ_SIZE       (UINT32_C(32) << 20)

/* Never read into: the clients go away before any reply arrives. */
static char read_buf[READ_SIZE];

/* VmRSS of `pid` in KiB. */
static long
rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, fp) != NULL) {
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    }
    fclose(fp);
    if (kib < 0)
        ng_test_fail("%s: no VmRSS", path);
    return kib;
}

static json_int_t
export_connections(struct ng_test_qmp *qmp)
{
    json_t *list = ng_test_qmp_ok(qmp, "{s:s}", "execute",
                                  "query-block-exports");
    json_int_t n = json_integer_value(
        json_object_get(json_array_get(list, 0), "connections"));

    json_decref(list);
    return n;
}

/* Poll query-block-exports until the export has no client (10 s at
 * most, for a loaded sanitizer build); returns the last count. */
static json_int_t
wait_no_connections(struct ng_test_qmp *qmp)
{
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    json_int_t n = 0;

    for (int i = 0; i < 500; i++) {
        if ((n = export_connections(qmp)) == 0)
            break;
        nanosleep(&ts, NULL);
    }
    return n;
}

/* A TCP socket to the daemon; with `reset`, closing it sends RST. */
static int
tcp_socket(int port, bool reset)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (fd == -1 ||
        (reset && setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg,
                             sizeof lg) == -1) ||
        connect(fd, (struct sockaddr *)&sin, sizeof sin) == -1)
        ng_test_fail("tcp connect: %s", strerror(errno));
    return fd;
}

/* Client i: Unix socket for even i, TCP for odd; every other TCP client
 * resets its connection. */
static struct nbd_handle *
connect_client(const struct ng_test_daemon *d, int port, int i)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_set_export_name(nbd, "demo") == -1)
        ng_test_fail_nbd("nbd_create");
    if (i % 2 == 0 ? nbd_connect_unix(nbd, d->sock) == -1
                   : nbd_connect_socket(nbd, tcp_socket(port,
                                                        i % 4 == 3)) == -1)
        ng_test_fail_nbd("connect");
    return nbd;
}

static void
send_reads(struct nbd_handle *nbd)
{
    for (int r = 0; r < READS; r++) {
        if (nbd_aio_pread(nbd, read_buf, READ_SIZE,
                          (uint64_t)r * READ_SIZE, NBD_NULL_COMPLETION,
                          0) == -1)
            ng_test_fail_nbd("aio_pread");
    }
}

/* Until the first reply bytes are waiting: the daemon is writing. */
static void
wait_readable(struct nbd_handle *nbd)
{
    struct pollfd pfd = { .fd = nbd_aio_get_fd(nbd), .events = POLLIN };

    if (pfd.fd == -1 || poll(&pfd, 1, 30000) != 1)
        ng_test_fail("no reply from the daemon within 30 s");
}

/* One batch of clients that send their READs and go; client i waits for
 * the daemon to start answering unless i is a multiple of 3. */
static void
abrupt_batch(const struct ng_test_daemon *d, int port, int first)
{
    struct nbd_handle *nbd[BATCH];

    for (int j = 0; j < BATCH; j++) {
        nbd[j] = connect_client(d, port, first + j);
        send_reads(nbd[j]);
    }
    for (int j = 0; j < BATCH; j++) {
        if ((first + j) % 3 != 0)
            wait_readable(nbd[j]);
        nbd_close(nbd[j]);          /* without reading anything */
    }
}

/* The same I/O by clients that wait for their replies: afterwards the
 * daemon's buffer pool is as full as it gets, the baseline for RSS. */
static void
polite_batch(const struct ng_test_daemon *d, int port)
{
    struct nbd_handle *nbd[BATCH];

    for (int j = 0; j < BATCH; j++) {
        nbd[j] = connect_client(d, port, j);
        send_reads(nbd[j]);
    }
    for (int j = 0; j < BATCH; j++) {
        while (nbd_aio_in_flight(nbd[j]) > 0) {
            if (nbd_poll(nbd[j], 30000) == -1)
                ng_test_fail_nbd("poll");
        }
        nbd_shutdown(nbd[j], 0);
        nbd_close(nbd[j]);
    }
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct ng_test_qmp *qmp;
    long rss_start, rss_warm, rss_end;
    json_int_t left;
    char yaml[512];
    int port;

    ng_test_timeout(300);
    port = ng_test_free_tcp_port();
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [ \"unix:@SOCK@\", \"tcp:127.0.0.1:%d\" ]\n"
             "  control: \"@CONTROL@\"\n"
             "nodes:\n"
             "  mem0: { driver: memory, size: 256M }\n"
             "exports:\n"
             "  demo: { node: mem0 }\n", port);
    d = ng_test_start(yaml, "demo");
    qmp = ng_test_qmp_connect(d->control);
    rss_start = rss_kib(d->pid);
    /* Warm up until the buffer pool's cache stops growing: how full one
     * batch leaves it depends on how the reads interleave, and growth
     * that is only the cache filling is not a leak. */
    rss_warm = rss_start;
    for (int round = 0; round < WARM_ROUNDS_MAX; round++) {
        long before = rss_warm;

        polite_batch(d, port);
        if ((left = wait_no_connections(qmp)) != 0)
            ng_test_fail("%" JSON_INTEGER_FORMAT " connections left after "
                         "well-behaved clients", left);
        rss_warm = rss_kib(d->pid);
        if (round > 0 && rss_warm <= before + before / 50)
            break;
    }
    printf("RSS at start %ld KiB, after batches of %d well-behaved "
           "clients %ld KiB\n", rss_start, BATCH, rss_warm);

    for (int i = 0; i < CLIENTS; i += BATCH) {
        abrupt_batch(d, port, i);
        if ((left = wait_no_connections(qmp)) != 0)
            ng_test_fail("after %d early-closing clients: %"
                         JSON_INTEGER_FORMAT " connections still open, "
                         "RSS %ld KiB (%ld KiB before them)", i + BATCH,
                         left, rss_kib(d->pid), rss_warm);
    }
    rss_end = rss_kib(d->pid);
    printf("RSS after %d early-closing clients: %ld KiB, 0 connections\n",
           CLIENTS, rss_end);
    if (rss_end > rss_warm + rss_warm / 10)
        ng_test_fail("RSS grew from %ld to %ld KiB", rss_warm, rss_end);

    json_decref(ng_test_qmp_ok(qmp, "{s:s,s:{s:s}}", "execute",
                               "block-export-del", "arguments", "id",
                               "demo"));
    ng_test_qmp_close(qmp);
    ng_test_stop_within(d, 2000);
    return 0;
}
