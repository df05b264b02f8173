/* tests/harness.h: start the real nbdgraphd from the build tree and talk
 * to it.  Used by every C integration test. */
#ifndef NG_TEST_HARNESS_H
#define NG_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct nbd_handle;

struct ng_test_daemon {
    pid_t pid;
    char dir[256];          /* private temp dir, removed at stop */
    char sock[300];         /* NBD Unix socket: @SOCK@ in the config */
    char control[300];      /* control socket: @CONTROL@ */
    char config[300];       /* the written config file */
    char uri[400];          /* nbd+unix:///EXPORT?socket=... for the
                             * first export named in ng_test_start() */
};

/* Write `yaml` to a config file in a fresh temp dir, replacing @SOCK@,
 * @CONTROL@ and @DIR@, start $NBDGRAPHD (--foreground --exit-with-parent)
 * on it and wait until the NBD socket accepts.  `export` names the export
 * d->uri points at.  Fails the test (exit 1) when the daemon won't start. */
struct ng_test_daemon *ng_test_start(const char *yaml, const char *export);

/* SIGTERM; expects exit status 0 and the socket file gone; frees d. */
void ng_test_stop(struct ng_test_daemon *d);
/* The same, failing the test unless the daemon has exited `ms`
 * milliseconds after the signal. */
void ng_test_stop_within(struct ng_test_daemon *d, unsigned ms);
/* For a daemon already told to stop: wait for it to exit, at most `ms`
 * (0: no bound), then check as ng_test_stop() does; frees d. */
void ng_test_reap(struct ng_test_daemon *d, unsigned ms);

/* The default test config: a writable memory export "demo" of `size`
 * ("64M"). Returns a static string with @SOCK@ in it. */
const char *ng_test_memory_config(const char *size);

/* Fail the test: print the message (and libnbd's error) and exit 1.
 * A running daemon dies with us (--exit-with-parent). */
/* A loopback TCP port nobody listens on right now. */
int ng_test_free_tcp_port(void);
/* A plain socket connected to the daemon's Unix socket, for tests that
 * speak the protocol byte by byte. */
int ng_test_raw_connect(const struct ng_test_daemon *d);

void ng_test_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void ng_test_fail_nbd(const char *what) __attribute__((noreturn));

/* Deterministic data: byte i of a buffer for `seed` at absolute offset
 * `offset` is a function of (offset + i, seed), so any range can be
 * regenerated and compared. */
void ng_test_fill_pattern(void *buf, size_t len, unsigned long long offset,
                          unsigned seed);
/* Returns the index of the first differing byte, or -1. */
long long ng_test_check_pattern(const void *buf, size_t len,
                                unsigned long long offset, unsigned seed);

/* A disk as its writers left it, block by block: record[b] is the seed
 * of block b's pattern (see ng_test_fill_pattern), 0 for zeroes.  With
 * several writers, block b belongs to writer b % writers, so each entry
 * has one writer. */
struct ng_test_blocks {
    unsigned *record;           /* borrowed: `count` entries */
    unsigned count;
    size_t size;                /* bytes per block */
};

/* What block b of `record` holds: size bytes into buf. */
void ng_test_block_expected(const struct ng_test_blocks *d,
                            const unsigned *record, unsigned b, char *buf);
/* One write by writer `index` of `writers`: `seed` into a block of its
 * own picked with rng, or (1 in 8) write-zeroes; the record follows.
 * buf holds a block.  Returns the block, or -1 with libnbd's error. */
long ng_test_block_write_random(struct ng_test_blocks *d,
                                struct nbd_handle *nbd, unsigned index,
                                unsigned writers, unsigned seed,
                                unsigned *rng, char *buf);
/* Blocks [from, to) get the pattern of seed `seed_base + b`, over a
 * connection of their own to uri; fails the test on an error. */
void ng_test_blocks_fill(struct ng_test_blocks *d, const char *uri,
                         unsigned from, unsigned to, unsigned seed_base);
/* The export at uri reads as `record` (d's or a copy of it), else the
 * test fails naming `what` and the block. */
void ng_test_blocks_verify(const struct ng_test_blocks *d, const char *uri,
                           const unsigned *record, const char *what);

/* Clients writing d while a test does something else: `count` libnbd
 * connections to uri, each on a thread of its own, each doing
 * ng_test_block_write_random() on its share of the blocks as fast as it
 * can (seeds (index << 24) + its op count + 1), until stopped.  With
 * opts (NULL: none), each sleeps pause_us after each write, and calls
 * wrote(block) (from its thread; the block is its own). */
struct ng_test_writers;
struct ng_test_writers_opts {
    unsigned pause_us;          /* leave the daemon's loop to jobs */
    void (*wrote)(long block);
};
struct ng_test_writers *ng_test_writers_start(
    struct ng_test_blocks *d, const char *uri, unsigned count,
    const struct ng_test_writers_opts *opts);
/* Writes (and zeroes) done so far by all of them. */
unsigned long ng_test_writers_ops(struct ng_test_writers *w);
/* Each writer finishes the write it is doing and waits, still
 * connected; returns once all of them do (fails the test after 5 s).
 * ng_test_writers_release() lets them go on. */
void ng_test_writers_hold(struct ng_test_writers *w);
void ng_test_writers_release(struct ng_test_writers *w);
/* Stop and join them, print each one's op count, free w; fails the test
 * if one of them failed. */
void ng_test_writers_stop(struct ng_test_writers *w);

/* For tests that speak a protocol byte by byte: big-endian fields, and
 * whole buffers over a socket.  send_all fails the test on an error;
 * recv_all fails it when nothing comes within `ms`, and returns false on
 * EOF or a reset (what a test of a dropped connection waits for). */
void ng_test_put16(unsigned char *p, uint16_t v);
void ng_test_put32(unsigned char *p, uint32_t v);
void ng_test_put64(unsigned char *p, uint64_t v);
uint16_t ng_test_get16(const unsigned char *p);
uint32_t ng_test_get32(const unsigned char *p);
uint64_t ng_test_get64(const unsigned char *p);
void ng_test_send_all(int fd, const void *buf, size_t len);
bool ng_test_recv_all(int fd, void *buf, size_t len, int ms);
/* Wait until the daemon has read everything sent on the Unix socket fd
 * (so the next send is a read of its own); fails the test after 20 s. */
void ng_test_wait_consumed(int fd);

/* Bound the whole test: SIGALRM after `seconds` fails it. */
void ng_test_timeout(unsigned seconds);

#endif
