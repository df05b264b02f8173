/* tests/bench-reload.c: how long a reload of a big config takes and what
 * clients of untouched exports see meanwhile (contrib/bench/reload-speed
 * runs it; not a test: nothing is asserted).
 *
 * The config: NG_BENCH_EXPORTS exports (default 1000), each on a chain of
 * three nodes (memory -> throttle -> raw), so 3000 nodes.  Readers
 * (NG_BENCH_READERS, default 4; 0 for a quiet machine) on untouched
 * exports loop 4 KiB reads as fast as they can, and a probe on another
 * untouched export reads 4 KiB at a fixed modest rate (NG_BENCH_PROBE_RATE
 * per second, default 1000, one at a time), whose latency is what an
 * ordinary client sees.  Then, NG_BENCH_RELOADS
 * times (default 20), one export's description changes in the file and
 * the daemon gets SIGHUP; the time from the signal to the RELOAD event,
 * and the daemon's own figures from it, are recorded.  Printed: median
 * and p90 of each (signal to event; the worker's load, wall and CPU; the
 * loop's part, in all and its longest turn; the signal's way to the
 * loop, the wait for a worker, the refresh's and the apply's loop time)
 * and read latency p50/p99/max of the readers and of the probe before,
 * during reloads, and split into the load's and the loop's part of each
 * reload.  A daemon too old to report a figure prints "-".
 */
#include <config.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

#define MAX_READERS 16
#define MAX_SAMPLES 2000000

struct sample {
    double start_ms, lat_ms;
};

struct reader {
    pthread_t thread;
    struct nbd_handle *nbd;
    struct sample *s;
    size_t n;
    double period_ms;           /* the probe: one read per period; 0 for
                                 * a reader, as fast as it can */
};

static atomic_bool stop;

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Sleep until `t` (now_ms() time); a probe that fell behind does not
 * catch up in a burst: the schedule starts again from now. */
static double
wait_until(double t)
{
    double now = now_ms();

    if (t > now) {
        long ns = (long)((t - now) * 1e6);

        nanosleep(&(struct timespec){ ns / 1000000000, ns % 1000000000 },
                  NULL);
        return t;
    }
    return now;
}

static void *
reader_main(void *opaque)
{
    struct reader *r = opaque;
    static __thread char buf[4096];
    unsigned seed = (unsigned)(size_t)r;

    double next = now_ms();

    while (!atomic_load(&stop) && r->n < MAX_SAMPLES) {
        double t0;

        if (r->period_ms > 0)
            next = wait_until(next) + r->period_ms;
        t0 = now_ms();
        if (nbd_pread(r->nbd, buf, sizeof buf,
                      (uint64_t)(rand_r(&seed) % 256) * 4096, 0) == -1)
            ng_test_fail_nbd("pread");
        r->s[r->n++] = (struct sample){ t0, now_ms() - t0 };
    }
    return NULL;
}

static char *
big_config(int n, int changed_desc)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    int i;

    fprintf(fp, "server:\n  listen: [ \"unix:@SOCK@\" ]\n"
            "  control: \"@CONTROL@\"\nnodes:\n");
    for (i = 0; i < n; i++)
        fprintf(fp, "  m%d: { driver: memory, size: 1M }\n"
                "  t%d: { driver: throttle, file: m%d, limits: "
                "{ iops-total: 1000000 } }\n"
                "  r%d: { driver: raw, file: t%d }\n", i, i, i, i, i);
    fprintf(fp, "exports:\n");
    for (i = 0; i < n; i++)
        fprintf(fp, "  e%d: { node: r%d, writable: true%s }\n", i, i,
                i == 0 ? (changed_desc ? ", description: b"
                                       : ", description: a") : "");
    fclose(fp);
    return text;
}

/* @SOCK@/@CONTROL@ filled in as the harness does. */
static void
write_config(const struct ng_test_daemon *d, const char *text)
{
    FILE *fp = fopen(d->config, "w");
    const char *p;

    if (fp == NULL)
        ng_test_fail("cannot write %s", d->config);
    for (p = text; *p != '\0'; p++) {
        if (strncmp(p, "@SOCK@", 6) == 0) {
            fputs(d->sock, fp);
            p += 5;
        } else if (strncmp(p, "@CONTROL@", 9) == 0) {
            fputs(d->control, fp);
            p += 8;
        } else {
            fputc(*p, fp);
        }
    }
    fclose(fp);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void
print_latency(const char *what, double *v, size_t n)
{
    if (n == 0) {
        printf("%-28s no samples\n", what);
        return;
    }
    qsort(v, n, sizeof *v, cmp_double);
    printf("%-28s n=%-8zu p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", what, n,
           v[n / 2], v[n * 99 / 100], v[n - 1]);
}

/* Median and p90 (nearest rank) of v[0..n), sorted here; "-" when the
 * daemon did not report it. */
static void
print_figure(const char *what, double *v, int n, bool known)
{
    if (!known) {
        printf("  %-28s -\n", what);
        return;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    printf("  %-28s median %7.1f  p90 %7.1f  (min %.1f, max %.1f)\n", what,
           v[n / 2], v[(n * 9 + 9) / 10 - 1], v[0], v[n - 1]);
}

static bool
in_windows(double t, const double (*win)[2], int n)
{
    int i;

    for (i = 0; i < n; i++)
        if (t >= win[i][0] && t <= win[i][1])
            return true;
    return false;
}

/* Latency of `count` readers' samples before the reloads and during
 * them, split into the load's part and the loop's. */
static void
print_reads(const char *who, const struct reader *rd, int count,
            double base_end, const double (*win)[2],
            const double (*loopwin)[2], int reloads)
{
    size_t total = 0, n_before = 0, n_during = 0, n_dload = 0, n_dloop = 0;
    double *before, *during, *dload, *dloop;
    char what[64];
    int i;

    for (i = 0; i < count; i++)
        total += rd[i].n;
    before = calloc(total + 1, sizeof *before);
    during = calloc(total + 1, sizeof *during);
    dload = calloc(total + 1, sizeof *dload);
    dloop = calloc(total + 1, sizeof *dloop);
    for (i = 0; i < count; i++) {
        size_t j;

        for (j = 0; j < rd[i].n; j++) {
            const struct sample *sm = &rd[i].s[j];

            if (sm->start_ms < base_end)
                before[n_before++] = sm->lat_ms;
            else if (in_windows(sm->start_ms, win, reloads)) {
                during[n_during++] = sm->lat_ms;
                /* A read that began in the load and ends in the loop's
                 * part waited for the loop: counted there. */
                if (in_windows(sm->start_ms + sm->lat_ms, loopwin, reloads))
                    dloop[n_dloop++] = sm->lat_ms;
                else
                    dload[n_dload++] = sm->lat_ms;
            }
        }
    }
    snprintf(what, sizeof what, "  %s, before", who);
    print_latency(what, before, n_before);
    snprintf(what, sizeof what, "  %s, during reloads", who);
    print_latency(what, during, n_during);
    print_latency("    of which during the load", dload, n_dload);
    print_latency("    of which during the loop", dloop, n_dloop);
    free(before);
    free(during);
    free(dload);
    free(dloop);
}

/* The daemon's figures of one RELOAD event. */
enum figure {
    F_SIGNAL, F_DAEMON, F_LOAD, F_CPU, F_FAULTS, F_LOOP, F_SLICE,
    F_SLICE_CPU, F_ARRIVE, F_QUEUE, F_PLAN_CPU, F_REFRESH, F_TURNS,
    F_APPLY, N_FIGURES,
};

static const char *const figure_name[N_FIGURES] = {
    "SIGHUP -> RELOAD event", "daemon (load+plan+apply)",
    "load, worker wall", "load, worker CPU", "load, page faults",
    "loop part, in all", "loop part, longest turn",
    "loop turn, most CPU",
    "SIGHUP -> daemon's start", "start -> worker takes it",
    "plan, worker CPU", "refresh, loop in all", "refresh, loop turns",
    "check+apply, loop",
};

static bool
figure_get(json_t *data, const char *key, double *v)
{
    json_t *j = json_object_get(data, key);

    if (j == NULL)
        return false;
    *v = json_number_value(j);
    return true;
}

/* Wait for the RELOAD event of the reload signalled at sig_ms; its
 * figures into f[][k], known[] for those the daemon reported. */
static void
wait_reload(struct ng_test_qmp *q, int k, double sig_ms,
            double *f[N_FIGURES], bool known[N_FIGURES], double win[2],
            double loopwin[2])
{
    json_t *ev;

    while ((ev = ng_test_qmp_next_event(q, 60000)) != NULL) {
        const char *name = json_string_value(json_object_get(ev, "event"));
        json_t *data = json_object_get(ev, "data");
        double start;

        if (name == NULL || strcmp(name, "RELOAD") != 0) {
            json_decref(ev);
            continue;
        }
        win[1] = now_ms();
        if (strcmp(json_string_value(json_object_get(data, "result")),
                   "applied") != 0)
            ng_test_fail("reload %d: %s", k, json_string_value(
                json_object_get(data, "error")));
        f[F_SIGNAL][k] = win[1] - sig_ms;
        known[F_SIGNAL] = known[F_DAEMON] = known[F_LOAD] = true;
        f[F_DAEMON][k] = json_real_value(json_object_get(data,
                                                         "elapsed-ms"));
        f[F_LOAD][k] = json_real_value(json_object_get(data, "load-ms"));
        f[F_LOOP][k] = f[F_DAEMON][k] - f[F_LOAD][k];
        known[F_LOOP] = true;
        figure_get(data, "loop-ms", &f[F_LOOP][k]);
        known[F_CPU] = figure_get(data, "load-cpu-ms", &f[F_CPU][k]);
        known[F_SLICE] = figure_get(data, "longest-slice-ms",
                                    &f[F_SLICE][k]);
        known[F_FAULTS] = figure_get(data, "load-faults", &f[F_FAULTS][k]);
        known[F_QUEUE] = figure_get(data, "load-queue-ms", &f[F_QUEUE][k]);
        known[F_PLAN_CPU] = figure_get(data, "plan-cpu-ms",
                                       &f[F_PLAN_CPU][k]);
        known[F_REFRESH] = figure_get(data, "refresh-ms", &f[F_REFRESH][k]);
        known[F_TURNS] = figure_get(data, "refresh-turns", &f[F_TURNS][k]);
        known[F_APPLY] = figure_get(data, "apply-ms", &f[F_APPLY][k]);
        known[F_SLICE_CPU] = figure_get(data, "longest-slice-cpu-ms",
                                        &f[F_SLICE_CPU][k]);
        /* Both clocks are the system's CLOCK_MONOTONIC. */
        if ((known[F_ARRIVE] = figure_get(data, "start-monotonic-ms",
                                          &start)))
            f[F_ARRIVE][k] = start - sig_ms;
        /* The loop's part ends at the event; it began when the load
         * ended (the signal's delivery aside).  A daemon that refreshes
         * its model while the file loads has those turns in the load's
         * part. */
        loopwin[0] = win[1] - (f[F_DAEMON][k] - f[F_LOAD][k]);
        loopwin[1] = win[1];
        json_decref(ev);
        return;
    }
    ng_test_fail("reload %d: no RELOAD event", k);
}

static void
reader_start(struct reader *r, const struct ng_test_daemon *d, int export,
             double period_ms)
{
    char uri[512];

    *r = (struct reader){ .nbd = nbd_create(), .period_ms = period_ms,
                          .s = calloc(MAX_SAMPLES, sizeof *r->s) };
    snprintf(uri, sizeof uri, "nbd+unix:///e%d?socket=%s", export, d->sock);
    if (r->nbd == NULL || r->s == NULL || nbd_connect_uri(r->nbd, uri) == -1)
        ng_test_fail_nbd("connect");
    pthread_create(&r->thread, NULL, reader_main, r);
}

static int
env_int(const char *name, int dflt)
{
    const char *s = getenv(name);

    return s != NULL ? atoi(s) : dflt;
}

int
main(void)
{
    int n = env_int("NG_BENCH_EXPORTS", 1000);
    int reloads = env_int("NG_BENCH_RELOADS", 20);
    int readers = env_int("NG_BENCH_READERS", 4);
    int rate = env_int("NG_BENCH_PROBE_RATE", 1000), i, k;
    char *texts[2] = { big_config(n, 0), big_config(n, 1) };
    double (*win)[2], (*loopwin)[2], *f[N_FIGURES], base_end;
    bool known[N_FIGURES] = { false };
    struct reader rd[MAX_READERS], probe;
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;

    if (readers < 0 || readers > MAX_READERS || n < readers + 2 ||
        rate <= 0 || reloads <= 0)
        ng_test_fail("NG_BENCH_READERS 0..%d, fewer than EXPORTS - 1; "
                     "NG_BENCH_PROBE_RATE and NG_BENCH_RELOADS > 0",
                     MAX_READERS);
    win = calloc((size_t)reloads, sizeof *win);
    loopwin = calloc((size_t)reloads, sizeof *loopwin);
    for (i = 0; i < N_FIGURES; i++)
        f[i] = calloc((size_t)reloads, sizeof *f[i]);
    ng_test_timeout(600);
    d = ng_test_start(texts[0], "e1");
    q = ng_test_qmp_connect(d->control);
    for (i = 0; i < readers; i++)
        reader_start(&rd[i], d, n - 1 - i, 0);
    reader_start(&probe, d, n / 2, 1000.0 / rate);
    nanosleep(&(struct timespec){ 2, 0 }, NULL);
    base_end = now_ms();
    for (k = 0; k < reloads; k++) {
        write_config(d, texts[(k + 1) % 2]);
        win[k][0] = now_ms();
        kill(d->pid, SIGHUP);
        wait_reload(q, k, win[k][0], f, known, win[k], loopwin[k]);
        nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);
    }
    atomic_store(&stop, true);
    for (i = 0; i < readers; i++)
        pthread_join(rd[i].thread, NULL);
    pthread_join(probe.thread, NULL);
    printf("reload of %d exports, %d nodes, one export changed, %d times "
           "(%d readers, probe %d/s):\n", n, 3 * n, reloads, readers, rate);
    for (i = 0; i < N_FIGURES; i++)
        print_figure(figure_name[i], f[i], reloads, known[i]);
    print_reads("4K reads", rd, readers, base_end,
                (const double (*)[2])win, (const double (*)[2])loopwin,
                reloads);
    print_reads("probe 4K", &probe, 1, base_end, (const double (*)[2])win,
                (const double (*)[2])loopwin, reloads);
    for (i = 0; i < readers; i++) {
        nbd_close(rd[i].nbd);
        free(rd[i].s);
    }
    nbd_close(probe.nbd);
    free(probe.s);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    for (i = 0; i < N_FIGURES; i++)
        free(f[i]);
    free(loopwin);
    free(win);
    free(texts[0]);
    free(texts[1]);
    return 0;
}
