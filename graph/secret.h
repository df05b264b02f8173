/* graph/secret.h: secrets, graph objects holding a password or key
 * (QEMU's `secret` object) that drivers name by id: luks's key-secret.
 * The bytes are wiped when the secret goes; nothing logs them. */
#ifndef NG_SECRET_H
#define NG_SECRET_H

#include <stddef.h>

#include "graph/graph.h"

struct ng_secret {
    size_t len;
    unsigned char data[];           /* len bytes, not NUL-terminated */
};

extern const struct ng_object_type ng_secret_type;

/* Register secret `id` holding len bytes of data (copied).  Fails with
 * EEXIST or ENOMEM. */
int ng_secret_declare(struct ng_graph *g, const char *id, const void *data,
                      size_t len, struct ng_error *err);

/* The same, the bytes read from `path`, which must be a regular file
 * that only its owner may read (mode 0600 or 0400: QEMU trusts the
 * mode, we check it).  Every byte counts, a trailing newline too, as
 * in QEMU's secret,file=: use `printf %s pw > file`. */
int ng_secret_declare_file(struct ng_graph *g, const char *id,
                           const char *path, struct ng_error *err);

/* The secret, or NULL.  Borrowed. */
const struct ng_secret *ng_secret_find(struct ng_graph *g, const char *id);

#endif
