/* tests/bench-reload.c: how long a reload of a big config takes and what
 * clients of untouched exports see meanwhile (contrib/bench/reload-speed
 * runs it; not a test: nothing is asserted).
 *
 * The config: NG_BENCH_EXPORTS exports (default 1000), each on a chain of
 * three nodes (memory -> throttle -> raw), so 3000 nodes.  Four readers
 * on four untouched exports loop 4 KiB reads.  Then, NG_BENCH_RELOADS
 * times (default 20), one export's description changes in the file and
 * the daemon gets SIGHUP; the time from the signal to the RELOAD event,
 * and the daemon's own figures from it, are recorded.  Printed: median
 * and p90 of each (signal to event; the worker's load, wall and CPU; the
 * loop's part, in all and its longest turn) and read latency p50/p99/max
 * before, during reloads, and split into the load's and the loop's part
 * of each reload.  A daemon too old to report a figure prints "-".
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

#define READERS 4
#define MAX_SAMPLES 2000000

struct sample {
    double start_ms, lat_ms;
};

struct reader {
    pthread_t thread;
    struct nbd_handle *nbd;
    struct sample *s;
    size_t n;
};

static atomic_bool stop;

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *
reader_main(void *opaque)
{
    struct reader *r = opaque;
    static __thread char buf[4096];
    unsigned seed = (unsigned)(size_t)r;

    while (!atomic_load(&stop) && r->n < MAX_SAMPLES) {
        double t0 = now_ms();

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

int
main(void)
{
    const char *s = getenv("NG_BENCH_EXPORTS");
    int n = s ? atoi(s) : 1000, reloads, i, k;
    char *texts[2] = { big_config(n, 0), big_config(n, 1) };
    double (*win)[2], (*loopwin)[2], *sig_ms, *daemon_ms, *load_ms;
    double *loop_ms, *cpu_ms, *slice_ms, *faults, base_end;
    double *during, *before, *during_load, *during_loop;
    size_t n_during = 0, n_before = 0, n_dload = 0, n_dloop = 0;
    bool has_cpu = false;
    struct reader rd[READERS];
    struct ng_test_daemon *d;
    struct ng_test_qmp *q;
    char uri[512];

    s = getenv("NG_BENCH_RELOADS");
    reloads = s ? atoi(s) : 20;
    win = calloc((size_t)reloads, sizeof *win);
    sig_ms = calloc((size_t)reloads, sizeof *sig_ms);
    daemon_ms = calloc((size_t)reloads, sizeof *daemon_ms);
    load_ms = calloc((size_t)reloads, sizeof *load_ms);
    loop_ms = calloc((size_t)reloads, sizeof *loop_ms);
    cpu_ms = calloc((size_t)reloads, sizeof *cpu_ms);
    slice_ms = calloc((size_t)reloads, sizeof *slice_ms);
    faults = calloc((size_t)reloads, sizeof *faults);
    loopwin = calloc((size_t)reloads, sizeof *loopwin);
    ng_test_timeout(600);
    d = ng_test_start(texts[0], "e1");
    q = ng_test_qmp_connect(d->control);
    for (i = 0; i < READERS; i++) {
        rd[i] = (struct reader){ .nbd = nbd_create(),
                                 .s = calloc(MAX_SAMPLES, sizeof *rd[i].s) };
        snprintf(uri, sizeof uri, "nbd+unix:///e%d?socket=%s", n - 1 - i,
                 d->sock);
        if (rd[i].nbd == NULL || nbd_connect_uri(rd[i].nbd, uri) == -1)
            ng_test_fail_nbd("connect");
        pthread_create(&rd[i].thread, NULL, reader_main, &rd[i]);
    }
    nanosleep(&(struct timespec){ 2, 0 }, NULL);
    base_end = now_ms();
    for (k = 0; k < reloads; k++) {
        json_t *ev;

        write_config(d, texts[(k + 1) % 2]);
        win[k][0] = now_ms();
        kill(d->pid, SIGHUP);
        while ((ev = ng_test_qmp_next_event(q, 60000)) != NULL) {
            const char *name = json_string_value(json_object_get(ev,
                                                                 "event"));
            json_t *data = json_object_get(ev, "data");

            if (name != NULL && strcmp(name, "RELOAD") == 0) {
                win[k][1] = now_ms();
                if (strcmp(json_string_value(json_object_get(data, "result")),
                           "applied") != 0)
                    ng_test_fail("reload %d: %s", k, json_string_value(
                        json_object_get(data, "error")));
                daemon_ms[k] = json_real_value(json_object_get(data,
                                                               "elapsed-ms"));
                load_ms[k] = json_real_value(json_object_get(data,
                                                             "load-ms"));
                loop_ms[k] = daemon_ms[k] - load_ms[k];
                if (json_object_get(data, "loop-ms") != NULL) {
                    has_cpu = true;
                    loop_ms[k] = json_number_value(json_object_get(
                        data, "loop-ms"));
                    cpu_ms[k] = json_number_value(json_object_get(
                        data, "load-cpu-ms"));
                    slice_ms[k] = json_number_value(json_object_get(
                        data, "longest-slice-ms"));
                    faults[k] = json_number_value(json_object_get(
                        data, "load-faults"));
                }
                /* The loop's part ends at the event; it began when the
                 * load ended (the signal's delivery aside). */
                loopwin[k][0] = win[k][1] - (daemon_ms[k] - load_ms[k]);
                loopwin[k][1] = win[k][1];
                json_decref(ev);
                break;
            }
            json_decref(ev);
        }
        if (ev == NULL)
            ng_test_fail("reload %d: no RELOAD event", k);
        sig_ms[k] = win[k][1] - win[k][0];
        nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);
    }
    atomic_store(&stop, true);
    for (i = 0; i < READERS; i++) {
        pthread_join(rd[i].thread, NULL);
        n_before += rd[i].n;
    }
    during = calloc(n_before, sizeof *during);
    during_load = calloc(n_before, sizeof *during_load);
    during_loop = calloc(n_before, sizeof *during_loop);
    before = calloc(n_before, sizeof *before);
    n_before = 0;
    for (i = 0; i < READERS; i++) {
        size_t j;

        for (j = 0; j < rd[i].n; j++) {
            const struct sample *sm = &rd[i].s[j];

            if (sm->start_ms < base_end)
                before[n_before++] = sm->lat_ms;
            else if (in_windows(sm->start_ms, (const double (*)[2])win,
                                reloads)) {
                during[n_during++] = sm->lat_ms;
                /* A read that began in the load and ends in the loop's
                 * part waited for the loop: counted there. */
                if (in_windows(sm->start_ms + sm->lat_ms,
                               (const double (*)[2])loopwin, reloads))
                    during_loop[n_dloop++] = sm->lat_ms;
                else
                    during_load[n_dload++] = sm->lat_ms;
            }
        }
        nbd_close(rd[i].nbd);
        free(rd[i].s);
    }
    printf("reload of %d exports, %d nodes, one export changed, %d times:\n",
           n, 3 * n, reloads);
    print_figure("SIGHUP -> RELOAD event", sig_ms, reloads, true);
    print_figure("daemon (load+plan+apply)", daemon_ms, reloads, true);
    print_figure("load, worker wall", load_ms, reloads, true);
    print_figure("load, worker CPU", cpu_ms, reloads, has_cpu);
    print_figure("load, page faults", faults, reloads, has_cpu);
    print_figure("loop part, in all", loop_ms, reloads, true);
    print_figure("loop part, longest turn", slice_ms, reloads, has_cpu);
    print_latency("  4K reads, before", before, n_before);
    print_latency("  4K reads, during reloads", during, n_during);
    print_latency("    of which during the load", during_load, n_dload);
    print_latency("    of which during the loop", during_loop, n_dloop);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    free(during);
    free(during_load);
    free(during_loop);
    free(before);
    free(cpu_ms);
    free(slice_ms);
    free(faults);
    free(loopwin);
    free(win);
    free(sig_ms);
    free(daemon_ms);
    free(load_ms);
    free(loop_ms);
    free(texts[0]);
    free(texts[1]);
    return 0;
}
