/* server/unix-path.c: see unix-path.h. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "server/unix-path.h"

int
ng_unix_path_check_dir(const char *path, struct ng_error *err)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    struct stat st;
    size_t n;

    if (slash == NULL)
        return 0;                   /* relative to the working directory */
    n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof dir)
        return ng_error_set(err, ENAMETOOLONG, "socket path '%s' too long",
                            path);
    memcpy(dir, path, n);
    dir[n] = '\0';
    if (stat(dir, &st) == -1)
        return ng_error_set(err, errno, "socket '%s': directory '%s': %s",
                            path, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ng_error_set(err, ENOTDIR, "socket '%s': '%s' is not a "
                            "directory", path, dir);
    return 0;
}
