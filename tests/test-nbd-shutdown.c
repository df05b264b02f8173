/* tests/test-nbd-shutdown.c: SIGTERM while a client has writes in
 * flight.  Requests the daemon had before the signal finish and are
 * answered; requests that arrive after it get NBD_ESHUTDOWN; the
 * connection stays until the client disconnects -- so every command
 * completes, with success or ESHUTDOWN, and none is left for libnbd to
 * fail with ENOTCONN.  Then the daemon exits 0. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <libnbd.h>

#include "tests/harness.h"

/* Writes are held 2 s, so the ones sent before the signal are still in
 * flight when those sent after it arrive. */
static const char slow_config[] =
    "server:\n"
    "  listen: [ \"unix:@SOCK@\" ]\n"
    "nodes:\n"
    "  mem0: { driver: memory, size: 64M }\n"
    "  slow: { driver: delay, file: mem0, delay-write: 2s }\n"
    "exports:\n"
    "  slow: { node: slow, writable: true }\n";

#define BATCH           16
#define WRITE_SIZE      (256u << 10)
#define STRESS_DEPTH    64
#define STRESS_SIZE     (1u << 20)

static char wbuf[STRESS_SIZE];

/* How commands ended, counted by their completion callbacks. */
struct outcome {
    unsigned ok, eshutdown, other;
    int last_other;
};

static int
count_cb(void *opaque, int *error)
{
    struct outcome *o = opaque;

    if (*error == 0) {
        o->ok++;
    } else if (*error == ESHUTDOWN) {
        o->eshutdown++;
    } else {
        o->other++;
        o->last_other = *error;
    }
    return 1;                       /* retire the command */
}

static void
submit_write(struct nbd_handle *nbd, uint32_t len, uint64_t offset,
             struct outcome *o)
{
    nbd_completion_callback cb = { .callback = count_cb, .user_data = o };

    if (nbd_aio_pwrite(nbd, wbuf, len, offset, cb, 0) == -1)
        ng_test_fail_nbd("aio_pwrite");
}

static void
wait_all(struct nbd_handle *nbd)
{
    while (nbd_aio_in_flight(nbd) > 0) {
        if (nbd_poll(nbd, 30000) == -1)
            return;                 /* dead: the rest fail with ENOTCONN */
    }
}

/* Shutdown has begun once the listener's socket file is gone. */
static void
signal_and_wait_for_shutdown(struct ng_test_daemon *d)
{
    struct timespec ts = { 0, 2 * 1000 * 1000 };
    struct stat st;

    if (kill(d->pid, SIGTERM) == -1)
        ng_test_fail("kill: %m");
    for (int i = 0; i < 10000 && stat(d->sock, &st) == 0; i++)
        nanosleep(&ts, NULL);
    if (stat(d->sock, &st) == 0)
        ng_test_fail("the daemon did not begin shutting down");
}

static struct nbd_handle *
connect_to(const struct ng_test_daemon *d)
{
    struct nbd_handle *nbd = nbd_create();

    if (nbd == NULL || nbd_connect_uri(nbd, d->uri) == -1)
        ng_test_fail_nbd("connect");
    return nbd;
}

/* In flight before the signal: answered with success.  Sent after it:
 * answered with ESHUTDOWN. */
static void
test_before_and_after(void)
{
    struct ng_test_daemon *d = ng_test_start(slow_config, "slow");
    struct nbd_handle *nbd = connect_to(d);
    struct outcome before = { 0 }, after = { 0 };
    static char rbuf[4096];

    for (int i = 0; i < BATCH; i++)
        submit_write(nbd, WRITE_SIZE, (uint64_t)i * WRITE_SIZE, &before);
    /* Requests are parsed in order: once this (undelayed) read is
     * answered, the daemon holds every write above. */
    if (nbd_pread(nbd, rbuf, sizeof rbuf, 0, 0) == -1)
        ng_test_fail_nbd("pread");
    signal_and_wait_for_shutdown(d);
    for (int i = 0; i < BATCH; i++)
        submit_write(nbd, WRITE_SIZE, (uint64_t)(BATCH + i) * WRITE_SIZE,
                     &after);
    wait_all(nbd);
    if (before.ok != BATCH)
        ng_test_fail("writes in flight at SIGTERM: %u ok, %u ESHUTDOWN, "
                     "%u other (errno %d)", before.ok, before.eshutdown,
                     before.other, before.last_other);
    if (after.eshutdown != BATCH)
        ng_test_fail("writes sent after SIGTERM: %u ok, %u ESHUTDOWN, "
                     "%u other (errno %d)", after.ok, after.eshutdown,
                     after.other, after.last_other);
    /* The client disconnects, as the spec asks after ESHUTDOWN, and the
     * daemon is done well before its grace period (10 s) ends. */
    if (nbd_shutdown(nbd, 0) == -1)
        ng_test_fail_nbd("shutdown");
    nbd_close(nbd);
    ng_test_reap(d, 8000);
}

/* A client keeping STRESS_DEPTH writes in flight goes on submitting
 * after the signal until one comes back ESHUTDOWN. */
static void
test_heavy_writes(void)
{
    struct ng_test_daemon *d = ng_test_start(ng_test_memory_config("64M"),
                                             "demo");
    struct nbd_handle *nbd = connect_to(d);
    struct outcome o = { 0 };
    uint64_t offset = 0;
    bool signalled = false;

    while (o.eshutdown == 0 && o.other == 0) {
        while (nbd_aio_in_flight(nbd) < STRESS_DEPTH) {
            submit_write(nbd, STRESS_SIZE, offset, &o);
            offset = (offset + STRESS_SIZE) % (UINT64_C(64) << 20);
        }
        if (nbd_poll(nbd, 30000) == -1)
            break;
        if (!signalled && o.ok >= 4 * STRESS_DEPTH) {
            signal_and_wait_for_shutdown(d);
            signalled = true;
        }
    }
    wait_all(nbd);
    printf("heavy writes: %u ok, %u ESHUTDOWN, %u other\n", o.ok,
           o.eshutdown, o.other);
    if (o.other != 0 || o.eshutdown == 0)
        ng_test_fail("heavy writes: %u ok, %u ESHUTDOWN, %u other "
                     "(errno %d: %s)", o.ok, o.eshutdown, o.other,
                     o.last_other, strerror(o.last_other));
    if (nbd_shutdown(nbd, 0) == -1)
        ng_test_fail_nbd("shutdown");
    nbd_close(nbd);
    ng_test_reap(d, 8000);
}

int
main(void)
{
    ng_test_timeout(120);
    test_before_and_after();
    test_heavy_writes();
    return 0;
}
