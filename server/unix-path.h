/* server/unix-path.h: checks shared by every Unix socket we listen on. */
#ifndef NG_UNIX_PATH_H
#define NG_UNIX_PATH_H

#include "graph/error.h"

/* The directory a socket path lives in must exist: libuv reports a
 * missing one as "permission denied", which sends users the wrong way.
 * Returns 0, or -1 with a message naming the directory. */
int ng_unix_path_check_dir(const char *path, struct ng_error *err);

#endif
