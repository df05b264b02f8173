/* server/unix-path.c: see unix-path.h. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/log.h"
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

/* Does a server accept on the socket at `path`?  0 no, 1 yes, -1 error. */
static int
unix_path_answers(const char *path, struct ng_error *err)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd, r;

    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return ng_error_set(err, errno, "socket: %s", strerror(errno));
    r = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    close(fd);
    return r == 0;
}

int
ng_unix_path_check(const char *path, bool probe, struct ng_error *err)
{
    struct sockaddr_un sun;
    struct stat st;
    int r;

    if (strlen(path) >= sizeof sun.sun_path)
        return ng_error_set(err, ENAMETOOLONG, "socket path '%s' too long",
                            path);
    if (ng_unix_path_check_dir(path, err) == -1)
        return -1;
    if (lstat(path, &st) == -1) {
        if (errno == ENOENT)
            return 0;
        return ng_error_set(err, errno, "socket '%s': %s", path,
                            strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return ng_error_set(err, EEXIST, "'%s' exists and is not a socket",
                            path);
    if (!probe)
        return 0;
    r = unix_path_answers(path, err);
    if (r == 1)
        return ng_error_set(err, EADDRINUSE,
                            "socket '%s' is in use by another server", path);
    return r;
}

int
ng_unix_path_prepare(const char *path, struct ng_error *err)
{
    if (ng_unix_path_check(path, true, err) == -1)
        return -1;
    if (unlink(path) == -1) {
        if (errno == ENOENT)
            return 0;
        return ng_error_set(err, errno, "removing stale socket '%s': %s",
                            path, strerror(errno));
    }
    ng_log_debug("removed stale socket '%s'", path);
    return 0;
}

void
ng_unix_path_remember(const char *path, struct ng_unix_file *f)
{
    struct stat st;

    f->known = stat(path, &st) == 0;
    f->dev = f->known ? (uint64_t)st.st_dev : 0;
    f->ino = f->known ? (uint64_t)st.st_ino : 0;
}

void
ng_unix_path_unlink_own(const char *path, const struct ng_unix_file *f)
{
    struct stat st;

    if (f->known && stat(path, &st) == 0 && (uint64_t)st.st_dev == f->dev &&
        (uint64_t)st.st_ino == f->ino)
        unlink(path);
}
