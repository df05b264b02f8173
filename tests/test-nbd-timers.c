/* tests/test-nbd-timers.c: replies to requests that complete in a timer
 * callback (here the "delay" filter's) go out at once, not whenever the
 * loop next wakes for something else.  With a single client waiting for
 * each reply there is nothing else to wake it, so a reply left behind
 * would hang the test. */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "tests/harness.h"

static const char config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 16M }\n"
    "  slow: { driver: delay, file: mem0, delay-read: 20ms,"
    " delay-write: 20ms, delay-flush: 20ms }\n"
    "exports:\n"
    "  slow: { node: slow, writable: true }\n";

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct nbd_handle *nbd;
    char out[4096], in[4096];
    double start, worst = 0;

    ng_test_timeout(60);
    d = ng_test_start(config, "slow");
    nbd = nbd_create();
    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    for (int i = 0; i < 20; i++) {
        uint64_t off = (uint64_t)i * sizeof out;

        start = now();
        ng_test_fill_pattern(out, sizeof out, off, 3);
        if (nbd_pwrite(nbd, out, sizeof out, off, 0) == -1 ||
            nbd_pread(nbd, in, sizeof in, off, 0) == -1 ||
            nbd_flush(nbd, 0) == -1)
            ng_test_fail_nbd("pwrite/pread/flush");
        if (memcmp(in, out, sizeof in) != 0)
            ng_test_fail("data read back differs at %" PRIu64, off);
        if (now() - start > worst)
            worst = now() - start;
    }
    /* three 20 ms delays; allow for a slow (sanitizer) build */
    if (worst > 2.0)
        ng_test_fail("a round trip took %.3f s", worst);
    printf("worst write+read+flush round: %.3f s\n", worst);
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    ng_test_stop(d);
    return 0;
}
