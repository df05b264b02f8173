/* server/sd-daemon.c: see sd-daemon.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/sd-daemon.h"

int
ng_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t len;
    socklen_t slen;
    ssize_t n;
    int fd;

    if (path == NULL || path[0] == '\0')
        return 0;
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof sun.sun_path) {
        errno = EINVAL;
        return -1;
    }
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')
        sun.sun_path[0] = '\0';     /* abstract namespace */
    slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
               (struct sockaddr *)&sun, slen);
    close(fd);
    return n == (ssize_t)strlen(state) ? 1 : -1;
}

/* A decimal environment variable; -1 when absent or not a number. */
static long
env_number(const char *name)
{
    const char *s = getenv(name);
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    return errno != 0 || *end != '\0' || v < 0 ? -1 : v;
}

int
ng_sd_listen_fds(void)
{
    long pid = env_number("LISTEN_PID"), n = env_number("LISTEN_FDS");
    int r = 0;

    if (pid == (long)getpid() && n > 0 && n < 1024) {
        for (int fd = NG_SD_LISTEN_FDS_START;
             fd < NG_SD_LISTEN_FDS_START + n; fd++)
            if (fcntl(fd, F_SETFD, FD_CLOEXEC) == -1)
                return -1;
        r = (int)n;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return r;
}
