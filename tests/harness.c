/* tests/harness.c: see harness.h. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <libnbd.h>

#include "tests/harness.h"

void
ng_test_fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_FAILURE);
}

void
ng_test_fail_nbd(const char *what)
{
    ng_test_fail("%s: %s (errno %d)", what, nbd_get_error(),
                 nbd_get_errno());
}

static void
on_alarm(int sig)
{
    static const char msg[] = "FAIL: test timed out\n";

    (void)sig;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        _exit(2);
    _exit(EXIT_FAILURE);
}

void
ng_test_timeout(unsigned seconds)
{
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

void
ng_test_fill_pattern(void *buf, size_t len, unsigned long long offset,
                     unsigned seed)
{
    unsigned char *p = buf;
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned long long x = (offset + i) * 2654435761ULL + seed;

        p[i] = (unsigned char)(x ^ (x >> 13) ^ ((offset + i) >> 9));
    }
}

void
ng_test_block_expected(const struct ng_test_blocks *d,
                       const unsigned *record, unsigned b, char *buf)
{
    if (record[b] == 0)
        memset(buf, 0, d->size);
    else
        ng_test_fill_pattern(buf, d->size, (unsigned long long)b * d->size,
                             record[b]);
}

long
ng_test_block_write_random(struct ng_test_blocks *d, struct nbd_handle *nbd,
                           unsigned index, unsigned writers, unsigned seed,
                           unsigned *rng, char *buf)
{
    unsigned b = (rand_r(rng) % (d->count / writers)) * writers + index;
    uint64_t off = (uint64_t)b * d->size;

    if (rand_r(rng) % 8 == 0) {
        if (nbd_zero(nbd, d->size, off, 0) == -1)
            return -1;
        d->record[b] = 0;
        return b;
    }
    ng_test_fill_pattern(buf, d->size, off, seed);
    if (nbd_pwrite(nbd, buf, d->size, off, 0) == -1)
        return -1;
    d->record[b] = seed;
    return b;
}

void
ng_test_blocks_fill(struct ng_test_blocks *d, const char *uri,
                    unsigned from, unsigned to, unsigned seed_base)
{
    struct nbd_handle *nbd = nbd_create();
    char *buf = malloc(d->size);

    if (nbd == NULL || buf == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("fill: connect");
    for (unsigned b = from; b < to; b++) {
        d->record[b] = seed_base + b;
        ng_test_block_expected(d, d->record, b, buf);
        if (nbd_pwrite(nbd, buf, d->size, (uint64_t)b * d->size, 0) == -1)
            ng_test_fail_nbd("fill");
    }
    nbd_close(nbd);
    free(buf);
}

void
ng_test_blocks_verify(const struct ng_test_blocks *d, const char *uri,
                      const unsigned *record, const char *what)
{
    struct nbd_handle *nbd = nbd_create();
    char *want = malloc(d->size), *got = malloc(d->size);

    if (nbd == NULL || want == NULL || got == NULL ||
        nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("verify: connect");
    for (unsigned b = 0; b < d->count; b++) {
        ng_test_block_expected(d, record, b, want);
        if (nbd_pread(nbd, got, d->size, (uint64_t)b * d->size, 0) == -1)
            ng_test_fail_nbd("verify: pread");
        if (memcmp(got, want, d->size) != 0)
            ng_test_fail("%s: block %u differs from the record", what, b);
    }
    nbd_close(nbd);
    free(want);
    free(got);
}

/* ---- Writers ------------------------------------------------------------ */

struct writer {
    struct ng_test_writers *ws;
    unsigned index;
    atomic_ulong ops;
    pthread_t thread;
    char error[256];
};

struct ng_test_writers {
    struct ng_test_blocks *d;
    const char *uri;
    struct ng_test_writers_opts opts;
    atomic_int stop, hold, held;
    unsigned count;
    struct writer w[];
};

/* While `hold` is set the writer waits, still connected. */
static void
writer_hold(struct ng_test_writers *ws)
{
    atomic_fetch_add(&ws->held, 1);
    while (atomic_load(&ws->hold) && !atomic_load(&ws->stop))
        usleep(1000);
    atomic_fetch_sub(&ws->held, 1);
}

static void *
writer_main(void *opaque)
{
    struct writer *w = opaque;
    struct ng_test_writers *ws = w->ws;
    struct nbd_handle *nbd = nbd_create();
    char *buf = malloc(ws->d->size);
    unsigned rng = w->index * 7919 + 1;

    if (nbd == NULL || buf == NULL || nbd_connect_uri(nbd, ws->uri) == -1) {
        snprintf(w->error, sizeof w->error, "connect: %s", nbd_get_error());
        goto out;
    }
    while (!atomic_load(&ws->stop)) {
        unsigned long ops = atomic_load(&w->ops);
        unsigned seed = (w->index << 24) + (unsigned)ops + 1;
        long b;

        if (atomic_load(&ws->hold)) {
            writer_hold(ws);
            continue;
        }
        b = ng_test_block_write_random(ws->d, nbd, w->index, ws->count,
                                       seed, &rng, buf);
        if (b == -1) {
            snprintf(w->error, sizeof w->error, "op %lu: %s", ops,
                     nbd_get_error());
            break;
        }
        if (ws->opts.wrote != NULL)
            ws->opts.wrote(b);
        atomic_fetch_add(&w->ops, 1);
        if (ws->opts.pause_us > 0)
            usleep(ws->opts.pause_us);
    }
    nbd_shutdown(nbd, 0);
out:
    nbd_close(nbd);
    free(buf);
    return NULL;
}

struct ng_test_writers *
ng_test_writers_start(struct ng_test_blocks *d, const char *uri,
                      unsigned count, const struct ng_test_writers_opts *opts)
{
    struct ng_test_writers *ws = calloc(1, sizeof *ws +
                                        count * sizeof ws->w[0]);
    unsigned i;

    if (ws == NULL)
        ng_test_fail("writers: out of memory");
    ws->d = d;
    ws->uri = uri;
    if (opts != NULL)
        ws->opts = *opts;
    atomic_init(&ws->stop, 0);
    atomic_init(&ws->hold, 0);
    atomic_init(&ws->held, 0);
    ws->count = count;
    for (i = 0; i < count; i++) {
        struct writer *w = &ws->w[i];

        w->ws = ws;
        w->index = i;
        atomic_init(&w->ops, 0);
        if (pthread_create(&w->thread, NULL, writer_main, w) != 0)
            ng_test_fail("pthread_create");
    }
    return ws;
}

unsigned long
ng_test_writers_ops(struct ng_test_writers *ws)
{
    unsigned long n = 0;

    for (unsigned i = 0; i < ws->count; i++)
        n += atomic_load(&ws->w[i].ops);
    return n;
}

void
ng_test_writers_hold(struct ng_test_writers *ws)
{
    int i;

    atomic_store(&ws->hold, 1);
    for (i = 0; i < 5000 && (unsigned)atomic_load(&ws->held) < ws->count;
         i++)
        usleep(1000);
    if ((unsigned)atomic_load(&ws->held) < ws->count)
        ng_test_fail("writers did not hold still");
}

void
ng_test_writers_release(struct ng_test_writers *ws)
{
    atomic_store(&ws->hold, 0);
}

void
ng_test_writers_stop(struct ng_test_writers *ws)
{
    unsigned i;

    atomic_store(&ws->stop, 1);
    for (i = 0; i < ws->count; i++)
        pthread_join(ws->w[i].thread, NULL);
    for (i = 0; i < ws->count; i++) {
        if (ws->w[i].error[0])
            ng_test_fail("worker %u: %s", i, ws->w[i].error);
        printf("worker %u: %lu ops\n", i, atomic_load(&ws->w[i].ops));
    }
    fflush(stdout);
    free(ws);
}

/* ---- Protocol fields ---------------------------------------------------- */

void
ng_test_put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

void
ng_test_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

void
ng_test_put64(unsigned char *p, uint64_t v)
{
    ng_test_put32(p, (uint32_t)(v >> 32));
    ng_test_put32(p + 4, (uint32_t)v);
}

uint16_t
ng_test_get16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t
ng_test_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

uint64_t
ng_test_get64(const unsigned char *p)
{
    return (uint64_t)ng_test_get32(p) << 32 | ng_test_get32(p + 4);
}

void
ng_test_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1)
            ng_test_fail("send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

bool
ng_test_recv_all(int fd, void *buf, size_t len, int ms)
{
    char *p = buf;

    while (len > 0) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ssize_t n;

        if (poll(&pfd, 1, ms) != 1)
            ng_test_fail("no answer from the server within %d ms", ms);
        n = recv(fd, p, len, 0);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

long long
ng_test_check_pattern(const void *buf, size_t len, unsigned long long offset,
                      unsigned seed)
{
    unsigned char want[4096];
    const unsigned char *p = buf;
    size_t done, n, i;

    for (done = 0; done < len; done += n) {
        n = len - done < sizeof want ? len - done : sizeof want;
        ng_test_fill_pattern(want, n, offset + done, seed);
        if (memcmp(want, p + done, n) != 0) {
            for (i = 0; want[i] == p[done + i]; i++)
                ;
            return (long long)(done + i);
        }
    }
    return -1;
}

const char *
ng_test_memory_config(const char *size)
{
    static char buf[512];

    snprintf(buf, sizeof buf,
             "server:\n"
             "  listen: [ \"unix:@SOCK@\" ]\n"
             "  control: \"@CONTROL@\"\n"
             "nodes:\n"
             "  mem0: { driver: memory, size: %s }\n"
             "exports:\n"
             "  demo: { node: mem0, writable: true,"
             " description: \"test disk\" }\n", size);
    return buf;
}

/* Copy `in` to `out` replacing each @KEY@ with its value. */
static void
expand(const char *in, FILE *out, const struct ng_test_daemon *d)
{
    const struct { const char *key, *value; } subst[] = {
        { "@SOCK@", d->sock }, { "@CONTROL@", d->control },
        { "@DIR@", d->dir },
    };
    size_t i;

    while (*in != '\0') {
        for (i = 0; i < sizeof subst / sizeof subst[0]; i++) {
            size_t k = strlen(subst[i].key);

            if (strncmp(in, subst[i].key, k) == 0) {
                fputs(subst[i].value, out);
                in += k;
                break;
            }
        }
        if (i == sizeof subst / sizeof subst[0])
            fputc(*in++, out);
    }
}

static int
try_connect(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r;

    if (fd == -1)
        return -1;
    if (strlen(path) >= sizeof sun.sun_path) {
        close(fd);
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    r = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    close(fd);
    return r;
}

static void
wait_ready(struct ng_test_daemon *d)
{
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    int status, i;

    for (i = 0; i < 3000; i++) {          /* 30 s, slow under ASan */
        if (try_connect(d->sock) == 0)
            return;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid)
            ng_test_fail("nbdgraphd exited during startup (status %d)",
                         status);
        nanosleep(&ts, NULL);
    }
    ng_test_fail("nbdgraphd did not listen on %s", d->sock);
}

struct ng_test_daemon *
ng_test_start(const char *yaml, const char *export)
{
    struct ng_test_daemon *d = calloc(1, sizeof *d);
    const char *daemon = getenv("NBDGRAPHD");
    const char *tmp = getenv("TMPDIR");
    FILE *fp;

    if (d == NULL)
        ng_test_fail("out of memory");
    if (daemon == NULL)
        daemon = "./nbdgraphd";
    snprintf(d->dir, sizeof d->dir, "%s/ngtest.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(d->dir) == NULL)
        ng_test_fail("mkdtemp: %s", strerror(errno));
    snprintf(d->sock, sizeof d->sock, "%s/nbd.sock", d->dir);
    snprintf(d->control, sizeof d->control, "%s/control.sock", d->dir);
    snprintf(d->config, sizeof d->config, "%s/config.yaml", d->dir);
    snprintf(d->uri, sizeof d->uri, "nbd+unix:///%s?socket=%s",
             export ? export : "", d->sock);
    fp = fopen(d->config, "w");
    if (fp == NULL)
        ng_test_fail("%s: %s", d->config, strerror(errno));
    expand(yaml, fp, d);
    fclose(fp);
    fflush(NULL);
    d->pid = fork();
    if (d->pid == -1)
        ng_test_fail("fork: %s", strerror(errno));
    if (d->pid == 0) {
        execl(daemon, daemon, "--foreground", "--exit-with-parent",
              "--config", d->config, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", daemon, strerror(errno));
        _exit(127);
    }
    wait_ready(d);
    return d;
}

static void
remove_dir(const char *dir)
{
    char cmd[600];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
}

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Reap the daemon, waiting at most `ms` (0: for ever). */
static void
wait_exit(struct ng_test_daemon *d, unsigned ms, int *status)
{
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    double deadline = now_ms() + ms;
    pid_t r;

    while ((r = waitpid(d->pid, status, ms > 0 ? WNOHANG : 0)) == 0) {
        if (now_ms() > deadline)
            ng_test_fail("nbdgraphd still running after %u ms", ms);
        nanosleep(&ts, NULL);
    }
    if (r != d->pid)
        ng_test_fail("waitpid: %s", strerror(errno));
}

void
ng_test_stop_within(struct ng_test_daemon *d, unsigned ms)
{
    if (kill(d->pid, SIGTERM) == -1)
        ng_test_fail("kill: %s", strerror(errno));
    ng_test_reap(d, ms);
}

void
ng_test_reap(struct ng_test_daemon *d, unsigned ms)
{
    struct stat st;
    int status;

    wait_exit(d, ms, &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        ng_test_fail("nbdgraphd did not exit cleanly (status 0x%x)", status);
    if (stat(d->sock, &st) == 0)
        ng_test_fail("socket %s left behind after shutdown", d->sock);
    remove_dir(d->dir);
    free(d);
}

void
ng_test_stop(struct ng_test_daemon *d)
{
    ng_test_stop_within(d, 0);
}

int
ng_test_free_tcp_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof sin) == -1 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
        ng_test_fail("finding a free port: %s", strerror(errno));
    port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

int
ng_test_raw_connect(const struct ng_test_daemon *d)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (strlen(d->sock) >= sizeof sun.sun_path)
        ng_test_fail("socket path too long");
    memcpy(sun.sun_path, d->sock, strlen(d->sock) + 1);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
        ng_test_fail("connect: %s", strerror(errno));
    return fd;
}

/* For a Unix socket SIOCOUTQ counts what the peer has not read yet. */
void
ng_test_wait_consumed(int fd)
{
    struct timespec pause = { 0, 200 * 1000 };

    for (unsigned i = 0; i < 100000; i++) {     /* 20 s at least */
        int left;

        if (ioctl(fd, SIOCOUTQ, &left) == -1)
            ng_test_fail("SIOCOUTQ: %s", strerror(errno));
        if (left == 0)
            return;
        nanosleep(&pause, NULL);
    }
    ng_test_fail("the daemon stopped reading");
}
