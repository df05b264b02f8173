/* tests/fuzz/fuzz-nbd-handshake.c: the NBD option-haggling parser
 * (server/nbd-handshake.c).  The input is everything a client sends after
 * the server's greeting: the client flags, then options.  Whatever it
 * reaches — an export through GO or EXPORT_NAME included — runs on the
 * real server; what follows the handshake goes to the transmission parser
 * as it would from a client.
 */
#include <config.h>

#include "tests/fuzz/fuzz-util.h"
#include "tests/fuzz/nbd-fixture.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_session s = {
        .data = data, .len = size, .end = FUZZ_END_READ_ALL,
    };

    fuzz_nbd_session(&s);
    return 0;
}
