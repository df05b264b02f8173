/* graph/tls-client.c: client TLS credentials (see tls-client.h). */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/tls-client.h"

static void
tls_client_creds_free(void *obj)
{
    struct ng_tls_client_creds *c = obj;

    if (c == NULL)
        return;
    free(c->dir);
    free(c->username);
    free(c);
}

const struct ng_object_type ng_tls_client_creds_type = {
    .name = "tls-creds (client)",
    .free = tls_client_creds_free,
};

/* dir/file readable: 1; missing: 0; -1 (err set) when it cannot be read
 * or the path is too long. */
static int
tls_client_file(const char *dir, const char *file, bool required,
                struct ng_error *err)
{
    char path[PATH_MAX];

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >=
        sizeof path)
        return ng_error_set(err, ENAMETOOLONG, "%s/%s: path too long", dir,
                            file);
    if (access(path, R_OK) == 0)
        return 1;
    if (errno == ENOENT && !required)
        return 0;
    return ng_error_set(err, errno, "%s: %s", path, strerror(errno));
}

static int
tls_client_check_x509(const char *dir, bool verify_peer,
                      struct ng_error *err)
{
    int cert, key;

    if (verify_peer && tls_client_file(dir, "ca-cert.pem", true, err) == -1)
        return -1;
    if ((cert = tls_client_file(dir, "client-cert.pem", false, err)) == -1 ||
        (key = tls_client_file(dir, "client-key.pem", false, err)) == -1)
        return -1;
    if (cert != key)
        return ng_error_set(err, EINVAL, "%s: client-cert.pem and "
                            "client-key.pem go together (one is missing)",
                            dir);
    return 0;
}

/* keys.psk holds a line "username:..." */
static int
tls_client_check_psk(const char *dir, const char *username,
                     struct ng_error *err)
{
    char path[PATH_MAX], line[1024];
    size_t n = strlen(username);
    bool found = false;
    FILE *f;

    if (tls_client_file(dir, "keys.psk", true, err) == -1)
        return -1;
    snprintf(path, sizeof path, "%s/keys.psk", dir);
    if ((f = fopen(path, "r")) == NULL)
        return ng_error_set(err, errno, "%s: %s", path, strerror(errno));
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strncmp(line, username, n) == 0 && line[n] == ':';
    explicit_bzero(line, sizeof line);
    fclose(f);
    if (!found)
        return ng_error_set(err, ENOENT, "%s: no key for username '%s'",
                            path, username);
    return 0;
}

int
ng_tls_client_creds_declare(struct ng_graph *g, const char *id, bool psk,
                            const char *dir, bool verify_peer,
                            const char *username, struct ng_error *err)
{
    struct ng_tls_client_creds *c;

    if ((psk ? tls_client_check_psk(dir, username, err)
             : tls_client_check_x509(dir, verify_peer, err)) == -1)
        return -1;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    c->psk = psk;
    c->verify_peer = !psk && verify_peer;
    c->dir = strdup(dir);
    c->username = strdup(psk ? username : "");
    if (c->dir == NULL || c->username == NULL) {
        tls_client_creds_free(c);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    if (ng_graph_object_add(g, &ng_tls_client_creds_type, id, c, err) == -1) {
        tls_client_creds_free(c);
        return -1;
    }
    return 0;
}

const struct ng_tls_client_creds *
ng_tls_client_creds_find(struct ng_graph *g, const char *id)
{
    return ng_graph_object_find(g, &ng_tls_client_creds_type, id);
}
