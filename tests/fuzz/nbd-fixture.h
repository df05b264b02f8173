/* tests/fuzz/nbd-fixture.h: the real NBD server on the harness's loop,
 * set up once per process, for the handshake and transmission harnesses.
 *
 * Exports, each on its own node (sizes 1 MiB, so data a fuzzer writes
 * stays bounded across runs):
 *   disk    memory, writable, with a description
 *   ro      null-co, read-only
 *   img     file (a sparse file in the temp dir): completions come from
 *           worker threads, so requests are still in flight when the
 *           client has gone
 *   faulty  blkdebug over memory: reads at 64K and writes at 128K fail,
 *           and so does every block-status
 *   zero    detect-zeroes (unmap) over memory
 */
#ifndef NG_FUZZ_NBD_FIXTURE_H
#define NG_FUZZ_NBD_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz-util.h"

#define FUZZ_NBD_EXPORTS 5
extern const char *const fuzz_nbd_export_names[FUZZ_NBD_EXPORTS];

/* One client session against the server (set up on first use), as
 * fuzz_unix_session() plays it; returns once the server has freed every
 * connection. */
void fuzz_nbd_session(const struct fuzz_session *s);

/* A head_done for fuzz_session: true once a client is in transmission on
 * the export named by opaque (a const char *). */
bool fuzz_nbd_in_transmission(void *opaque);

#endif
