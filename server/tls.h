/* server/tls.h: TLS for NBD connections (GnuTLS) — credentials and one
 * session per connection, driven without blocking the loop.
 *
 * Credentials are graph objects (type ng_tls_creds_type, QEMU's
 * tls-creds-x509 / tls-creds-psk), read from a directory laid out as
 * QEMU lays it out:
 *   x509: ca-cert.pem, server-cert.pem, server-key.pem, optional
 *         ca-crl.pem; with verify-peer, a client must present a
 *         certificate signed by ca-cert.pem
 *   psk:  keys.psk, lines of "username:hexkey" (psktool's format)
 *
 * A session never touches the socket's read side: the connection hands
 * it the ciphertext libuv read (ng_tls_in_space / ng_tls_in_added) and
 * pulls plaintext out with ng_tls_recv, which returns NG_TLS_AGAIN when
 * it needs more.  Ciphertext going out is written at once as far as the
 * socket takes it and queued on uv_write for the rest; `written` is
 * called as each queued write completes, and ng_tls_backlog() says how
 * much is still queued, so the connection can stop producing.
 * Everything on the loop thread.
 */
#ifndef NG_TLS_H
#define NG_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <uv.h>

#include "config/config.h"         /* enum ng_tls_mode */
#include "graph/error.h"
#include "graph/graph.h"

enum ng_tls_creds_kind {
    NG_TLS_CREDS_X509,
    NG_TLS_CREDS_PSK,
};

struct ng_tls_creds;
struct ng_tls;

/* Graph object type "tls-creds"; its free is ng_tls_creds_free. */
extern const struct ng_object_type ng_tls_creds_type;

/* Load credentials from `dir` (see above); verify_peer is for x509 only.
 * Errors name the file.  Caller frees (or hands it to the graph). */
struct ng_tls_creds *ng_tls_creds_new(enum ng_tls_creds_kind kind,
                                      const char *dir, bool verify_peer,
                                      struct ng_error *err);
void ng_tls_creds_free(void *creds);                 /* NULL-safe */

/* A server session on `stream` (borrowed; it must outlive the session's
 * queued writes, which libuv cancels when the handle closes).  `peer`
 * names the client in log messages.  NULL on failure (logged). */
struct ng_tls *ng_tls_new(const struct ng_tls_creds *creds,
                          uv_stream_t *stream, const char *peer,
                          void (*written)(void *opaque, int status),
                          void *opaque);
void ng_tls_free(struct ng_tls *t);                 /* NULL-safe */

/* Ciphertext in: where libuv may read to (length 0 when full), and how
 * much it put there.  `data` may also be bytes read before the session
 * existed. */
uv_buf_t ng_tls_in_space(struct ng_tls *t);
void ng_tls_in_added(struct ng_tls *t, size_t n);
int ng_tls_in_put(struct ng_tls *t, const void *data, size_t n);
/* Ciphertext read but not yet decrypted, or plaintext not yet taken. */
bool ng_tls_has_input(struct ng_tls *t);

#define NG_TLS_AGAIN (-2)
/* Plaintext: bytes (> 0), 0 at the client's close_notify, NG_TLS_AGAIN
 * when more ciphertext is needed, -1 on failure (logged).  Finishes the
 * TLS handshake first. */
ssize_t ng_tls_recv(struct ng_tls *t, void *buf, size_t len);

/* Encrypt all of iov[0..n) and send or queue it.  0, or -1 (logged). */
int ng_tls_send(struct ng_tls *t, const uv_buf_t *iov, unsigned n);
/* Ciphertext bytes in uv_writes not yet done. */
size_t ng_tls_backlog(const struct ng_tls *t);
/* Send close_notify once; later calls do nothing. */
void ng_tls_bye(struct ng_tls *t);

/* After the handshake: "x509:DN" of a verified client certificate,
 * "psk:USERNAME", or NULL (no certificate asked for).  Borrowed. */
const char *ng_tls_identity(const struct ng_tls *t);
bool ng_tls_established(const struct ng_tls *t);

#endif
