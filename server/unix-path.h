/* server/unix-path.h: checks shared by every Unix socket we listen on
 * (the NBD listeners and the control channel), so that both refuse to
 * take a path from a running server or to delete what is not a socket. */
#ifndef NG_UNIX_PATH_H
#define NG_UNIX_PATH_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/error.h"

/* The directory a socket path lives in must exist: libuv reports a
 * missing one as "permission denied", which sends users the wrong way.
 * Returns 0, or -1 with a message naming the directory. */
int ng_unix_path_check_dir(const char *path, struct ng_error *err);

/* Could a server bind `path`?  Its directory exists and nothing is
 * there but perhaps a socket.  With `probe`, that socket must also be
 * stale (nothing answers on it): one that answers belongs to a running
 * server.  Changes nothing.  Returns 0, or -1 with a message. */
int ng_unix_path_check(const char *path, bool probe, struct ng_error *err);

/* Just before binding: ng_unix_path_check(path, true), then remove the
 * stale socket if there is one. */
int ng_unix_path_prepare(const char *path, struct ng_error *err);

/* The identity of the socket file we bound, so that shutdown removes
 * only our own file and not one another server has put there since. */
struct ng_unix_file {
    uint64_t dev, ino;
    bool known;
};

/* Call right after binding `path`. */
void ng_unix_path_remember(const char *path, struct ng_unix_file *f);
/* Remove `path` if it is still the file remembered in *f. */
void ng_unix_path_unlink_own(const char *path, const struct ng_unix_file *f);

#endif
