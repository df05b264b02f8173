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

/* One client on the Unix socket `path`: send `head` (may be NULL when
 * head_len is 0), then `data`, shut down writing, and run `loop` while
 * reading and dropping replies, until the server has closed the
 * connection.  Aborts if that takes longer than a generous bound: a
 * server that never lets go of a half-closed client is a finding.
 *
 * With `hang_up`, the client waits for the server's first bytes (so it
 * has been accepted), sends everything and closes its socket at once,
 * reading no reply: the server then has requests in flight and replies
 * to send to a client that is gone. */
void fuzz_unix_session(uv_loop_t *loop, const char *path,
                       const uint8_t *head, size_t head_len,
                       const uint8_t *data, size_t len, bool hang_up);

/* Run `loop` until done(opaque), which must become true through events
 * on the loop; aborts past the same bound, with `what` in the message. */
void fuzz_run_until(uv_loop_t *loop, bool (*done)(void *opaque),
                    void *opaque, const char *what);

/* Print a message and abort(): libFuzzer records the input. */
void fuzz_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
