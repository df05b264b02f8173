/* tests/test-qmp-pressure.c: the control channel under clients that
 * misbehave on purpose.
 *
 * - flood: a client sends up to a million commands and reads nothing.
 *   The daemon must stop reading from it (back-pressure) instead of
 *   queueing every reply: its RSS stays bounded and NBD clients are served
 *   meanwhile; once the client reads, every reply comes, in order.
 * - oversized: a complete message over the 1 MiB limit is refused with a
 *   reason and skipped; the connection stays usable.
 * - ordered: commands sent in one write run one at a time, in order,
 *   even when one answers later (after a drain), and replies keep order.
 * - trickle: one message sent a byte per write (each byte waits until the
 *   daemon has read the previous one) is parsed and answered.
 *
 * Figures (RSS growth, daemon CPU for the trickle, NBD read latency during
 * the trickle) are printed for the record.  Asserted: correctness, the
 * memory bound, and a CPU bound for the trickle far above what linear
 * framing costs (no wall-clock times). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/sockios.h>

#include <jansson.h>
#include <libnbd.h>

#include "tests/harness.h"

#define FLOOD_COMMANDS      1000000
#define STALL_MS            2000    /* unwritable this long: not reading */
#define RSS_GROWTH_MAX_KIB  (64 * 1024)
#define TRICKLE_CPU_MAX_S   15
#define MSG_LIMIT           (1024 * 1024)
#define ID_OVERHEAD         35      /* message_of_size() minus its id */

/* ---- /proc figures ----------------------------------------------------- */

static long
rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if ((fp = fopen(path, "r")) == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, fp) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(fp);
    if (kib < 0)
        ng_test_fail("no VmRSS in %s", path);
    return kib;
}

/* utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat). */
static long
cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut, st;
    FILE *fp;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((fp = fopen(path, "r")) == NULL)
        ng_test_fail("%s: %s", path, strerror(errno));
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    p = strrchr(buf, ')');          /* the command name may hold blanks */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u "
                            "%*u %*u %lu %lu", &ut, &st) != 2)
        ng_test_fail("cannot parse %s", path);
    return (long)(ut + st);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait (bounded) until the daemon stops using CPU: what it read is
 * processed, so RSS is measured after the work, not during it. */
static void
wait_idle(pid_t pid)
{
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    long before;
    int i;

    for (i = 0; i < 100; i++) {
        before = cpu_ticks(pid);
        nanosleep(&ts, NULL);
        if (cpu_ticks(pid) == before)
            return;
    }
}

/* ---- A raw QMP client -------------------------------------------------- */

struct raw {
    int fd;
    char *buf;
    size_t len, cap;
};

static void
send_all(struct raw *r, const char *p, size_t n)
{
    ssize_t k;

    while (n > 0) {
        k = send(r->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            ng_test_fail("QMP send: %s", strerror(errno));
        p += k;
        n -= (size_t)k;
    }
}

static void
send_str(struct raw *r, const char *s)
{
    send_all(r, s, strlen(s));
}

/* The next line, parsed; events are skipped.  NULL on timeout. */
static json_t *
read_msg(struct raw *r, int timeout_ms)
{
    struct pollfd p = { .fd = r->fd, .events = POLLIN };
    json_error_t jerr;
    json_t *msg;
    char *nl;
    size_t n;
    ssize_t k;

    for (;;) {
        while ((nl = memchr(r->buf, '\n', r->len)) != NULL) {
            n = (size_t)(nl - r->buf) + 1;
            msg = json_loadb(r->buf, n, 0, &jerr);
            memmove(r->buf, r->buf + n, r->len - n);
            r->len -= n;
            if (msg == NULL)
                ng_test_fail("bad message from daemon: %s", jerr.text);
            if (json_object_get(msg, "event") == NULL)
                return msg;
            json_decref(msg);
        }
        if (r->cap - r->len < 65536) {
            r->cap *= 2;
            if ((r->buf = realloc(r->buf, r->cap)) == NULL)
                ng_test_fail("out of memory");
        }
        if (poll(&p, 1, timeout_ms) == 0)
            return NULL;
        k = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k <= 0)
            ng_test_fail("QMP recv: %s", k == 0 ? "connection closed"
                                                : strerror(errno));
        r->len += (size_t)k;
    }
}

static json_t *
expect_msg(struct raw *r)
{
    json_t *msg = read_msg(r, 60 * 1000);

    if (msg == NULL)
        ng_test_fail("no reply from the daemon within 60 s");
    return msg;
}

static struct raw *
raw_connect(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct raw *r = calloc(1, sizeof *r);
    json_t *msg;

    if (r == NULL || strlen(path) >= sizeof sun.sun_path ||
        (r->buf = malloc(r->cap = 1 << 20)) == NULL)
        ng_test_fail("raw_connect");
    memcpy(sun.sun_path, path, strlen(path) + 1);
    r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->fd == -1 ||
        connect(r->fd, (struct sockaddr *)&sun, sizeof sun) == -1)
        ng_test_fail("connect %s: %s", path, strerror(errno));
    json_decref(expect_msg(r));                 /* the greeting */
    send_str(r, "{\"execute\":\"qmp_capabilities\"}\n");
    msg = expect_msg(r);
    if (json_object_get(msg, "return") == NULL)
        ng_test_fail("qmp_capabilities refused");
    json_decref(msg);
    return r;
}

static void
raw_close(struct raw *r)
{
    close(r->fd);
    free(r->buf);
    free(r);
}

static const char *
error_desc(json_t *msg)
{
    return json_string_value(json_object_get(json_object_get(msg, "error"),
                                             "desc"));
}

/* One command answered with a return: the connection is usable. */
static void
expect_usable(struct raw *r)
{
    json_t *msg;

    send_str(r, "{\"execute\":\"query-version\",\"id\":\"alive\"}\n");
    msg = expect_msg(r);
    if (json_object_get(msg, "return") == NULL ||
        strcmp(json_string_value(json_object_get(msg, "id")), "alive") != 0)
        ng_test_fail("connection not usable: %s",
                     json_dumps(msg, JSON_COMPACT));
    json_decref(msg);
}

/* ---- Commands run one at a time, in order -------------------------------- */

/* The reply with id `want`, as the next message; it must be a return. */
static json_t *
expect_reply(struct raw *r, json_int_t want)
{
    json_t *msg = expect_msg(r);

    if (json_integer_value(json_object_get(msg, "id")) != want)
        ng_test_fail("reply out of order: wanted id %lld, got %s",
                     (long long)want, json_dumps(msg, JSON_COMPACT));
    if (json_object_get(msg, "return") == NULL)
        ng_test_fail("command %lld failed: %s", (long long)want,
                     error_desc(msg));
    return msg;
}

/* Send one command with id `id` and expect its return. */
static json_t *
call(struct raw *r, json_int_t id, const char *cmd)
{
    char buf[512];

    snprintf(buf, sizeof buf, "{\"id\":%lld,%s}\n", (long long)id, cmd);
    send_str(r, buf);
    return expect_reply(r, id);
}

/* A mirror with a named filter node answers after the splice's drain;
 * the query sent in the same write must run after it and see the job, as
 * QEMU runs in-band commands, and the replies come in the order sent. */
static void
ordered(struct ng_test_daemon *d)
{
    struct raw *r = raw_connect(d->control);
    json_t *msg;
    int i;

    json_decref(call(r, 1, "\"execute\":\"blockdev-add\",\"arguments\":"
                     "{\"driver\":\"memory\",\"node-name\":\"m1\","
                     "\"size\":\"64M\"}"));
    send_str(r,
        "{\"execute\":\"blockdev-mirror\",\"id\":2,\"arguments\":"
        "{\"job-id\":\"j\",\"device\":\"mem0\",\"target\":\"m1\","
        "\"sync\":\"full\",\"speed\":1048576,\"filter-node-name\":\"mt\"}}\n"
        "{\"execute\":\"query-jobs\",\"id\":3}\n");
    json_decref(expect_reply(r, 2));
    msg = expect_reply(r, 3);
    if (json_array_size(json_object_get(msg, "return")) != 1)
        ng_test_fail("query-jobs pipelined after blockdev-mirror ran before "
                     "it: %s", json_dumps(msg, JSON_COMPACT));
    json_decref(msg);
    json_decref(call(r, 4, "\"execute\":\"job-cancel\",\"arguments\":"
                     "{\"id\":\"j\"}"));
    for (i = 0; i < 3000; i++) {        /* 30 s: gone, then its target */
        msg = call(r, 5, "\"execute\":\"query-jobs\"");
        if (json_array_size(json_object_get(msg, "return")) == 0)
            break;
        json_decref(msg);
        usleep(10000);
    }
    json_decref(msg);
    json_decref(call(r, 6, "\"execute\":\"blockdev-del\",\"arguments\":"
                     "{\"node-name\":\"m1\"}"));
    raw_close(r);
}

/* ---- NBD I/O beside the control channel ---------------------------------- */

static void
nbd_roundtrip(const char *uri, unsigned seed)
{
    struct nbd_handle *nbd = nbd_create();
    static char out[65536], in[65536];

    if (nbd == NULL || nbd_connect_uri(nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    ng_test_fill_pattern(out, sizeof out, 1 << 20, seed);
    if (nbd_pwrite(nbd, out, sizeof out, 1 << 20, 0) == -1 ||
        nbd_pread(nbd, in, sizeof in, 1 << 20, 0) == -1)
        ng_test_fail_nbd("pwrite/pread");
    if (memcmp(in, out, sizeof in) != 0)
        ng_test_fail("NBD data read back differs");
    nbd_close(nbd);
}

/* ---- flood --------------------------------------------------------------- */

/* Append commands id = *next.. to buf until it holds about `room` bytes. */
static size_t
fill_commands(char *buf, size_t room, long *next, long last)
{
    size_t len = 0;

    while (*next <= last && len + 64 < room)
        len += (size_t)sprintf(buf + len, "{\"execute\":\"query-version\","
                               "\"id\":%ld}\n", (*next)++);
    return len;
}

/* Send up to FLOOD_COMMANDS without reading; stop when the socket stays
 * unwritable for STALL_MS (the daemon stopped reading).  Returns how many
 * commands went out whole. */
static long
flood_send(struct raw *r)
{
    static char chunk[65536];
    struct pollfd p = { .fd = r->fd, .events = POLLOUT };
    size_t len = 0, off = 0;
    long next = 1, sent_lines = 0;
    ssize_t k;

    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        if (off == len) {
            sent_lines = next - 1;
            off = 0;
            len = fill_commands(chunk, sizeof chunk, &next, FLOOD_COMMANDS);
            if (len == 0)
                break;
        }
        if (poll(&p, 1, STALL_MS) == 0)
            break;
        k = send(r->fd, chunk + off, len - off, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (k < 0)
            ng_test_fail("flood send: %s", strerror(errno));
        off += (size_t)k;
    }
    /* Lines of the chunk in flight that went out whole count too. */
    for (size_t i = 0; i < off; i++)
        sent_lines += chunk[i] == '\n';
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) & ~O_NONBLOCK);
    return sent_lines;
}

static void
flood(struct ng_test_daemon *d)
{
    struct raw *r = raw_connect(d->control);
    long rss0, rss1, rss2, sent, id;
    double t0 = now_s();
    json_t *msg;

    rss0 = rss_kib(d->pid);
    sent = flood_send(r);
    wait_idle(d->pid);
    rss1 = rss_kib(d->pid);
    printf("flood: %ld of %d commands accepted before the daemon stopped "
           "reading (%.1f s); RSS %ld -> %ld KiB (+%ld)\n", sent,
           FLOOD_COMMANDS, now_s() - t0, rss0, rss1, rss1 - rss0);
    fflush(stdout);
    if (rss1 - rss0 > RSS_GROWTH_MAX_KIB)
        ng_test_fail("daemon RSS grew by %ld KiB for a client that does not "
                     "read (bound %d KiB)", rss1 - rss0, RSS_GROWTH_MAX_KIB);
    nbd_roundtrip(d->uri, 1);       /* NBD served while QMP is stalled */
    /* Reading lets the daemon go on: every reply comes, in order. */
    for (id = 1; id <= sent; id++) {
        msg = expect_msg(r);
        if (json_object_get(msg, "return") == NULL ||
            json_integer_value(json_object_get(msg, "id")) != id)
            ng_test_fail("reply %ld of %ld: %s", id, sent,
                         json_dumps(msg, JSON_COMPACT));
        json_decref(msg);
    }
    expect_usable(r);
    raw_close(r);
    wait_idle(d->pid);
    rss2 = rss_kib(d->pid);
    printf("flood: all %ld replies read in order; RSS after close %ld KiB\n",
           sent, rss2);
}

/* ---- oversized ----------------------------------------------------------- */

/* {"execute":"query-version","id":"xxx..."} of `size` bytes plus "\n". */
static char *
message_of_size(size_t size, size_t *len)
{
    static const char head[] = "{\"execute\":\"query-version\",\"id\":\"";
    char *m = malloc(size + 2);

    if (m == NULL)
        ng_test_fail("out of memory");
    memcpy(m, head, sizeof head - 1);
    memset(m + sizeof head - 1, 'x', size - (sizeof head - 1) - 2);
    memcpy(m + size - 2, "\"}\n", 4);
    *len = size + 1;
    return m;
}

static void
oversized(struct ng_test_daemon *d)
{
    struct raw *r = raw_connect(d->control);
    size_t len;
    char *m = message_of_size(MSG_LIMIT + 4096, &len);
    const char *desc;
    json_t *msg;

    send_all(r, m, len);            /* complete, in one write */
    msg = expect_msg(r);
    desc = error_desc(msg);
    if (desc == NULL || strstr(desc, "1 MiB") == NULL)
        ng_test_fail("oversized message not refused with a reason: %.200s",
                     json_dumps(msg, JSON_COMPACT));
    printf("oversized: refused: %s\n", desc);
    json_decref(msg);
    expect_usable(r);
    /* Just under the limit is fine. */
    free(m);
    m = message_of_size(MSG_LIMIT - 16, &len);
    send_all(r, m, len);
    msg = expect_msg(r);
    if (json_object_get(msg, "return") == NULL ||
        json_string_length(json_object_get(msg, "id")) !=
        MSG_LIMIT - 16 - ID_OVERHEAD)
        ng_test_fail("message just under 1 MiB not answered: %.200s",
                     json_dumps(msg, JSON_COMPACT));
    json_decref(msg);
    free(m);
    raw_close(r);
}

/* ---- trickle -------------------------------------------------------------- */

struct latency {
    const char *uri;
    volatile bool stop;
    double max_ms, sum_ms;
    long reads;
};

static void *
latency_thread(void *opaque)
{
    struct latency *l = opaque;
    struct nbd_handle *nbd = nbd_create();
    static char buf[4096];
    double t, ms;

    if (nbd == NULL || nbd_connect_uri(nbd, l->uri) == -1)
        ng_test_fail_nbd("latency connect");
    while (!l->stop) {
        t = now_s();
        if (nbd_pread(nbd, buf, sizeof buf, 0, 0) == -1)
            ng_test_fail_nbd("latency pread");
        ms = (now_s() - t) * 1000;
        l->sum_ms += ms;
        l->max_ms = ms > l->max_ms ? ms : l->max_ms;
        l->reads++;
    }
    nbd_close(nbd);
    return NULL;
}

/* Bytes sent on fd that the peer has not read yet. */
static int
unread(int fd)
{
    int n = 0;

    if (ioctl(fd, SIOCOUTQ, &n) == -1)
        ng_test_fail("SIOCOUTQ: %s", strerror(errno));
    return n;
}

static void
trickle(struct ng_test_daemon *d, size_t size)
{
    struct raw *r = raw_connect(d->control);
    struct latency lat = { .uri = d->uri };
    size_t len, i;
    char *m = message_of_size(size, &len);
    long ticks0, ticks1;
    pthread_t th;
    double t0;
    json_t *msg;

    if (pthread_create(&th, NULL, latency_thread, &lat) != 0)
        ng_test_fail("pthread_create");
    ticks0 = cpu_ticks(d->pid);
    t0 = now_s();
    for (i = 0; i < len; i++) {
        send_all(r, m + i, 1);
        while (unread(r->fd) > 0)   /* one byte per read on its side */
            sched_yield();
    }
    msg = expect_msg(r);
    ticks1 = cpu_ticks(d->pid);
    lat.stop = true;
    pthread_join(th, NULL);
    if (json_object_get(msg, "return") == NULL ||
        json_string_length(json_object_get(msg, "id")) != size - ID_OVERHEAD)
        ng_test_fail("trickled message not answered: %.200s",
                     json_dumps(msg, JSON_COMPACT));
    json_decref(msg);
    /* Linear framing costs about 1 s of CPU here (ASan included); the
     * old reparse-per-read cost 34 s.  The bound is far from both. */
    if (ticks1 - ticks0 > TRICKLE_CPU_MAX_S * sysconf(_SC_CLK_TCK))
        ng_test_fail("trickling %zu bytes cost the daemon %ld ticks of CPU "
                     "(bound %d s): input is rescanned", len,
                     ticks1 - ticks0, TRICKLE_CPU_MAX_S);
    printf("trickle: %zu bytes one per write in %.1f s; daemon CPU %ld "
           "ticks (%ld/s); NBD 4 KiB read latency meanwhile mean %.3f ms, "
           "max %.3f ms over %ld reads\n", len, now_s() - t0,
           ticks1 - ticks0, sysconf(_SC_CLK_TCK),
           lat.reads ? lat.sum_ms / lat.reads : 0.0, lat.max_ms, lat.reads);
    expect_usable(r);
    free(m);
    raw_close(r);
}

/* Under ASan freed memory sits in a quarantine (256 MiB by default) that
 * counts in RSS; keep it small so RSS measures what the daemon holds.
 * Later ASAN_OPTIONS entries win; the plain build ignores the variable. */
static void
asan_small_quarantine(void)
{
    const char *old = getenv("ASAN_OPTIONS");
    char opts[1024];

    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=1", old ? old : "",
             old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
}

int
main(int argc, char **argv)
{
    struct ng_test_daemon *d;
    const char *only = argc > 1 ? argv[1] : NULL;
    size_t trickle_size = argc > 2 ? strtoul(argv[2], NULL, 0) : 65536;

    ng_test_timeout(240);
    asan_small_quarantine();
    d = ng_test_start(ng_test_memory_config("64M"), "demo");
    if (only == NULL || strcmp(only, "ordered") == 0)
        ordered(d);
    if (only == NULL || strcmp(only, "flood") == 0)
        flood(d);
    if (only == NULL || strcmp(only, "oversized") == 0)
        oversized(d);
    if (only == NULL || strcmp(only, "trickle") == 0)
        trickle(d, trickle_size);
    ng_test_stop(d);
    printf("control channel pressure checks passed\n");
    return 0;
}
