/* tests/fuzz/fuzz-util.h: what the libFuzzer harnesses share — a private
 * temporary directory and one client session over a Unix socket against
 * servers that run on the harness's own libuv loop.
 *
 * Each harness builds the real daemon objects (graph, NBD server, control
 * channel) on one loop and plays one client per input: connect, send the
 * input, half-close, read and drop whatever comes back until the server
 * closes its end.  Nothing is mocked: the bytes go through the kernel and
 * libuv into the same read callbacks a real client reaches.
 */
#ifndef NG_FUZZ_UTIL_H
#define NG_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* libFuzzer's entry point, which tests/fuzz/replay.c also calls. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fresh directory under $TMPDIR, removed with its files at exit.  The
 * path is copied to `dir` (size bytes); aborts on failure. */
void fuzz_make_tmpdir(char *dir, size_t size);

/* How a client session ends. */
enum fuzz_end {
    FUZZ_END_READ_ALL,      /* shut down writing, read every reply until
                             * the server closes */
    FUZZ_END_HANG_UP,       /* send everything, read what has come, close:
                             * the server reads EOF, then its replies
                             * fail to send */
    FUZZ_END_RESET,         /* send everything, close with the greeting
                             * unread: the server's next read fails */
};

/* What one client sends, and how it ends. */
struct fuzz_session {
    const uint8_t *head;        /* sent first (NULL when head_len is 0) */
    size_t head_len;
    bool (*head_done)(void *opaque);    /* optional: with a hang-up or a
                                         * reset, true once the server has
                                         * dealt with `head` (the handshake
                                         * is over); `data` waits for it */
    void *opaque;
    const uint8_t *data;        /* then this */
    size_t len;
    enum fuzz_end end;
};

/* One client on the Unix socket `path`, running `loop` meanwhile.  With
 * FUZZ_END_READ_ALL, head and data go out back to back and the call
 * returns once the server has closed the connection; it aborts if that
 * takes longer than a generous bound: a server that never lets go of a
 * half-closed client is a finding.  The other ends wait for the server's
 * greeting first (so it has accepted the connection) and return once the
 * client's socket is closed, leaving the server with requests in flight
 * and replies for a client that is gone. */
void fuzz_unix_session(uv_loop_t *loop, const char *path,
                       const struct fuzz_session *s);

/* Run `loop` until done(opaque), which must become true through events
 * on the loop; aborts past the same bound, with `what` in the message. */
void fuzz_run_until(uv_loop_t *loop, bool (*done)(void *opaque),
                    void *opaque, const char *what);

/* Print a message and abort(): libFuzzer records the input. */
void fuzz_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
