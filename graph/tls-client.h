/* graph/tls-client.h: TLS credentials for the daemon as a client (QEMU's
 * tls-creds-x509 / tls-creds-psk with endpoint=client), graph objects
 * that drivers connecting elsewhere name by id: the nbd driver's
 * tls-creds.  Server credentials (listeners) are server/tls.h's; these
 * only say where the files are, which the client library (libnbd)
 * reads itself at each connection. */
#ifndef NG_TLS_CLIENT_H
#define NG_TLS_CLIENT_H

#include <stdbool.h>

#include "graph/graph.h"

struct ng_tls_client_creds {
    bool psk;                       /* else x509 */
    bool verify_peer;               /* x509: check the server's certificate */
    char *dir;                      /* x509: ca-cert.pem [client-cert.pem
                                     * client-key.pem]; psk: keys.psk */
    char *username;                 /* psk: whose key in keys.psk */
};

extern const struct ng_object_type ng_tls_client_creds_type;

/* Register client credentials `id`, checking now that the files are
 * there and readable (x509: ca-cert.pem when verify_peer, and both or
 * neither of client-cert.pem, client-key.pem; psk: keys.psk with a line
 * for username).  Errors name the file.  Fails with EEXIST too. */
int ng_tls_client_creds_declare(struct ng_graph *g, const char *id, bool psk,
                                const char *dir, bool verify_peer,
                                const char *username, struct ng_error *err);

/* The credentials, or NULL.  Borrowed. */
const struct ng_tls_client_creds *
ng_tls_client_creds_find(struct ng_graph *g, const char *id);

#endif
