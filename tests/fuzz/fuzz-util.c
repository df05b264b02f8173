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

/* One turn of the loop counts at most this much towards that: a turn
 * that took longer was the process not running (a loaded machine, the
 * VM's host), not the server waiting.  The waker ends every turn within
 * 100 ms, so a connection that is never freed still fails after about
 * FUZZ_SESSION_SECONDS. */
#define FUZZ_TURN_MAX_SECONDS 0.5

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

/* While the harness waits on the loop, a timer wakes it every 100 ms, so
 * that a wait for something that never comes (a connection the server
 * never frees) ends at its deadline with a message instead of blocking
 * for good.  Unreferenced: it never keeps uv_run(UV_RUN_DEFAULT) going.
 * One per process, like the harness's loop. */
static uv_timer_t waker;
static uv_loop_t *waker_loop;

static void
waker_cb(uv_timer_t *t)
{
    (void)t;
}

/* The time one wait on the loop has left, charged per iteration. */
struct deadline {
    double left;
    double last;            /* when it was last charged */
};

/* A deadline for one wait on the loop, checked after each iteration;
 * starts the waker.  deadline_end() stops it. */
static struct deadline
deadline_start(uv_loop_t *loop)
{
    if (waker_loop == NULL) {
        uv_timer_init(loop, &waker);
        uv_unref((uv_handle_t *)&waker);
        waker_loop = loop;
    } else if (waker_loop != loop) {
        fuzz_die("one loop per harness");
    }
    uv_timer_start(&waker, waker_cb, 100, 100);
    return (struct deadline){ FUZZ_SESSION_SECONDS, now_seconds() };
}

static void
deadline_end(void)
{
    uv_timer_stop(&waker);
}

static void
deadline_check(struct deadline *d, const char *what)
{
    double now = now_seconds(), turn = now - d->last;

    d->left -= turn < FUZZ_TURN_MAX_SECONDS ? turn : FUZZ_TURN_MAX_SECONDS;
    d->last = now;
    if (d->left < 0)
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
await_greeting(uv_loop_t *loop, int fd, struct deadline *deadline)
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

/* Send all of `o`, reading what comes unless `reset`; false if the
 * server closed the connection meanwhile. */
static bool
send_all(uv_loop_t *loop, int fd, struct outbox *o, bool reset,
         struct deadline *deadline)
{
    while (!send_some(fd, o)) {
        if (!reset && drain_replies(fd))
            return false;
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(deadline, "sending");
    }
    return true;
}

/* Send the head, wait for head_done, send the data, close: having read
 * nothing (a reset) or all that came before (a hang-up). */
static void
hang_up_session(uv_loop_t *loop, int fd, const struct fuzz_session *s,
                struct deadline *deadline)
{
    bool reset = s->end == FUZZ_END_RESET;
    struct outbox head = { { s->head, NULL }, { s->head_len, 0 }, 0 };
    struct outbox data = { { s->data, NULL }, { s->len, 0 }, 0 };

    await_greeting(loop, fd, deadline);
    if (!send_all(loop, fd, &head, reset, deadline))
        goto out;
    while (s->head_done != NULL && !s->head_done(s->opaque)) {
        if (!reset && drain_replies(fd))
            goto out;
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(deadline, "handshake");
    }
    if (send_all(loop, fd, &data, reset, deadline) && !reset)
        drain_replies(fd);
out:
    close(fd);
}

void
fuzz_unix_session(uv_loop_t *loop, const char *path,
                  const struct fuzz_session *s)
{
    struct outbox o = { { s->head, s->data }, { s->head_len, s->len }, 0 };
    int fd = connect_unix(path);
    bool sent = false;
    struct deadline deadline = deadline_start(loop);

    if (s->end != FUZZ_END_READ_ALL) {
        hang_up_session(loop, fd, s, &deadline);
        deadline_end();
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
        deadline_check(&deadline, "session");
    }
    close(fd);
    deadline_end();
}

void
fuzz_run_until(uv_loop_t *loop, bool (*done)(void *opaque), void *opaque,
               const char *what)
{
    struct deadline deadline = deadline_start(loop);

    while (!done(opaque)) {
        uv_run(loop, UV_RUN_ONCE);
        deadline_check(&deadline, what);
    }
    deadline_end();
}
