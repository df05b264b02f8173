/* tests/fuzz/fuzz-util.c: see fuzz-util.h. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/fuzz/fuzz-util.h"

/* One session may take this long before the harness calls it a hang. */
#define FUZZ_SESSION_SECONDS 10

void
fuzz_die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "fuzz harness: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* ---- Temporary directory --------------------------------------------- */

/* The directories to remove at exit: a harness is a process with one
 * entry point and no context to hang them on. */
static char tmpdirs[4][256];

static void
remove_tmpdirs(void)
{
    for (size_t i = 0; i < sizeof tmpdirs / sizeof tmpdirs[0]; i++) {
        DIR *d;
        struct dirent *e;

        if (tmpdirs[i][0] == '\0' || (d = opendir(tmpdirs[i])) == NULL)
            continue;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
        rmdir(tmpdirs[i]);
    }
}

void
fuzz_make_tmpdir(char *dir, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    size_t i;

    for (i = 0; i < sizeof tmpdirs / sizeof tmpdirs[0]; i++)
        if (tmpdirs[i][0] == '\0')
            break;
    if (i == sizeof tmpdirs / sizeof tmpdirs[0])
        fuzz_die("too many temporary directories");
    snprintf(tmpdirs[i], sizeof tmpdirs[i], "%s/ngfuzz.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(tmpdirs[i]) == NULL)
        fuzz_die("mkdtemp: %s", strerror(errno));
    if (i == 0)
        atexit(remove_tmpdirs);
    if ((size_t)snprintf(dir, size, "%s", tmpdirs[i]) >= size)
        fuzz_die("temporary directory name too long");
}

/* ---- Sessions ---------------------------------------------------------- */

static double
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A deadline for one wait on the loop, checked after each loop
 * iteration; an iteration that blocks for good is left to libFuzzer's
 * -timeout (run-fuzzers.sh) and to timeout(1) in test-fuzz-corpus.sh. */
static double
deadline_start(void)
{
    return now_seconds() + FUZZ_SESSION_SECONDS;
}

static void
deadline_check(double deadline, const char *what)
{
    if (now_seconds() > deadline)
        fuzz_die("%s not done after %d s", what, FUZZ_SESSION_SECONDS);
}

static int
connect_unix(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd == -1)
        fuzz_die("socket: %s", strerror(errno));
    if (strlen(path) >= sizeof sun.sun_path)
        fuzz_die("socket path too long: %s", path);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
        fuzz_die("connect %s: %s", path, strerror(errno));
    return fd;
}

/* What is left to send: head, then data. */
struct outbox {
    const uint8_t *seg[2];
    size_t len[2];
    unsigned cur;
};

/* Send what the socket takes; true once everything is sent (or the
 * server stopped listening, which ends sending just the same). */
static bool
send_some(int fd, struct outbox *o)
{
    while (o->cur < 2) {
        ssize_t n;

        if (o->len[o->cur] == 0) {
            o->cur++;
            continue;
        }
        n = send(fd, o->seg[o->cur], o->len[o->cur], MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return false;
            if (errno == EINTR)
                continue;
            return true;            /* EPIPE, ECONNRESET: it hung up */
        }
        o->seg[o->cur] += n;
        o->len[o->cur] -= (size_t)n;
    }
    return true;
}

/* Read and drop what is there (shown on stderr with FUZZ_SHOW_REPLIES=1,
 * to see what a seed reaches); true once the server has closed. */
static bool
drain_replies(int fd)
{
    static int show = -1;
    uint8_t buf[65536];

    if (show == -1)
        show = getenv("FUZZ_SHOW_REPLIES") != NULL;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);

        if (n > 0) {
            if (show)
                fwrite(buf, 1, (size_t)n, stderr);
            continue;
        }
        if (n == 0)
            return true;
        if (errno == EINTR)
            continue;
        return errno != EAGAIN && errno != EWOULDBLOCK;
    }
}

/* Wait until the server has said something: it has accepted us. */
static void
await_greeting(uv_loop_t *loop, int fd, double deadline)
{
    uint8_t byte;
    ssize_t n;

    while ((n = recv(fd, &byte, 1, MSG_PEEK)) <= 0) {
        if (n == 0)
            fuzz_die("the server hung up before its greeting");
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            fuzz_die("no greeting: %s", strerror(errno));
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(deadline, "greeting");
    }
}

/* Send everything, then close without reading a reply. */
static void
hang_up_session(uv_loop_t *loop, int fd, struct outbox *o, double deadline)
{
    await_greeting(loop, fd, deadline);
    while (!send_some(fd, o)) {
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(deadline, "sending");
    }
    close(fd);
}

void
fuzz_unix_session(uv_loop_t *loop, const char *path, const uint8_t *head,
                  size_t head_len, const uint8_t *data, size_t len,
                  bool hang_up)
{
    struct outbox o = { { head, data }, { head_len, len }, 0 };
    int fd = connect_unix(path);
    bool sent = false;
    double deadline = deadline_start();

    if (hang_up) {
        hang_up_session(loop, fd, &o, deadline);
        return;
    }
    for (;;) {
        if (!sent && send_some(fd, &o)) {
            sent = true;
            shutdown(fd, SHUT_WR);
        }
        if (drain_replies(fd))
            break;
        /* Our end is drained and filled as far as it goes, so whatever
         * comes next is an event on the loop (the server's socket, a
         * worker thread done): wait for it rather than spin, which
         * would take the CPU from the worker threads. */
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(deadline, "session");
    }
    close(fd);
}

void
fuzz_run_until(uv_loop_t *loop, bool (*done)(void *opaque), void *opaque,
               const char *what)
{
    double deadline = deadline_start();

    while (!done(opaque)) {
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(deadline, what);
    }
}
