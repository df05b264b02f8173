/* tests/test-nbd-multiconn.c: 16 clients at once, each writing its own
 * region of one export with many requests in flight, then every client
 * reading back every region (multi-conn: a flush on one connection
 * covers the writes of all). */
#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tests/harness.h"

#define NCLIENTS    16
#define REGION      (UINT64_C(4) << 20)     /* per client */
#define REQ         (64u << 10)
#define DEPTH       16

struct client {
    const struct ng_test_daemon *d;
    int id;
    struct nbd_handle *nbd;
    pthread_barrier_t *barrier;
    char failure[256];
};

static void
client_fail(struct client *c, const char *what)
{
    if (c->failure[0] == '\0')
        snprintf(c->failure, sizeof c->failure, "client %d: %s: %s", c->id,
                 what, nbd_get_error() ? nbd_get_error() : "");
}

/* Write the region with DEPTH requests in flight. */
static void
write_region(struct client *c)
{
    static __thread char bufs[DEPTH][REQ];
    int64_t cookies[DEPTH] = { 0 };
    uint64_t base = (uint64_t)c->id * REGION;

    for (uint64_t off = 0; off < REGION; off += REQ) {
        int slot = (int)((off / REQ) % DEPTH);

        if (cookies[slot] > 0 &&
            nbd_aio_command_completed(c->nbd, cookies[slot]) == 0) {
            while (nbd_aio_command_completed(c->nbd, cookies[slot]) == 0)
                if (nbd_poll(c->nbd, -1) == -1)
                    return client_fail(c, "poll");
        }
        ng_test_fill_pattern(bufs[slot], REQ, base + off, (unsigned)c->id);
        cookies[slot] = nbd_aio_pwrite(c->nbd, bufs[slot], REQ, base + off,
                                       NBD_NULL_COMPLETION, 0);
        if (cookies[slot] == -1)
            return client_fail(c, "aio_pwrite");
    }
    while (nbd_aio_in_flight(c->nbd) > 0)
        if (nbd_poll(c->nbd, -1) == -1)
            return client_fail(c, "poll");
    if (nbd_flush(c->nbd, 0) == -1)
        client_fail(c, "flush");
}

static void
check_all_regions(struct client *c)
{
    char *buf = malloc(REGION);

    if (buf == NULL)
        return client_fail(c, "out of memory");
    for (int i = 0; i < NCLIENTS; i++) {
        uint64_t base = (uint64_t)i * REGION;
        long long bad;

        if (nbd_pread(c->nbd, buf, REGION, base, 0) == -1) {
            client_fail(c, "pread");
            break;
        }
        bad = ng_test_check_pattern(buf, REGION, base, (unsigned)i);
        if (bad >= 0) {
            snprintf(c->failure, sizeof c->failure,
                     "client %d: region %d wrong at +%lld", c->id, i, bad);
            break;
        }
    }
    free(buf);
}

static void *
client_main(void *opaque)
{
    struct client *c = opaque;

    write_region(c);
    pthread_barrier_wait(c->barrier);   /* everybody has flushed */
    if (c->failure[0] == '\0')
        check_all_regions(c);
    return NULL;
}

int
main(void)
{
    struct ng_test_daemon *d;
    struct client clients[NCLIENTS];
    pthread_t threads[NCLIENTS];
    pthread_barrier_t barrier;

    ng_test_timeout(120);
    d = ng_test_start(ng_test_memory_config("64M"), "demo");
    pthread_barrier_init(&barrier, NULL, NCLIENTS);
    /* All connected before anyone writes: 16 live connections at once. */
    for (int i = 0; i < NCLIENTS; i++) {
        clients[i] = (struct client) { .d = d, .id = i,
                                       .barrier = &barrier };
        clients[i].nbd = nbd_create();
        if (clients[i].nbd == NULL ||
            nbd_connect_uri(clients[i].nbd, d->uri) == -1)
            ng_test_fail_nbd("connect");
        if (nbd_can_multi_conn(clients[i].nbd) != 1)
            ng_test_fail("memory export without multi-conn");
    }
    for (int i = 0; i < NCLIENTS; i++) {
        if (pthread_create(&threads[i], NULL, client_main, &clients[i]) != 0)
            ng_test_fail("pthread_create");
    }
    for (int i = 0; i < NCLIENTS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < NCLIENTS; i++) {
        if (clients[i].failure[0] != '\0')
            ng_test_fail("%s", clients[i].failure);
        if (nbd_shutdown(clients[i].nbd, 0) == -1)
            ng_test_fail_nbd("shutdown");
        nbd_close(clients[i].nbd);
    }
    pthread_barrier_destroy(&barrier);
    ng_test_stop(d);
    return 0;
}
