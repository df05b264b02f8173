/* tests/bench-reload.c: how long a reload of a big config takes and what
 * clients of untouched exports see meanwhile (contrib/bench/reload-speed
 * runs it; not a test: nothing is asserted).
 *
 * The config: NG_BENCH_EXPORTS exports (default 1000), each on a chain of
 * three nodes (memory -> throttle -> raw), so 3000 nodes.  Four readers
 * on four untouched exports loop 4 KiB reads.  Then, NG_BENCH_RELOADS
 * times (default 20), one export's description changes in the file and
 * the daemon gets SIGHUP; the time from the signal to the RELOAD event,
 * and the daemon's own elapsed time, are recorded.  Printed: reload times
 * (min, median, max) and read latency p50/p99/max before and during
 * reloads.
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
    double (*win)[2], *sig_ms, *daemon_ms, *load_ms, *loop_ms, base_end;
    double *during, *before;
    size_t n_during = 0, n_before = 0;
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
    before = calloc(n_before, sizeof *before);
    n_before = 0;
    for (i = 0; i < READERS; i++) {
        size_t j;

        for (j = 0; j < rd[i].n; j++) {
            const struct sample *sm = &rd[i].s[j];

            if (sm->start_ms < base_end)
                before[n_before++] = sm->lat_ms;
            else if (in_windows(sm->start_ms, (const double (*)[2])win,
                                reloads))
                during[n_during++] = sm->lat_ms;
        }
        nbd_close(rd[i].nbd);
        free(rd[i].s);
    }
    qsort(sig_ms, (size_t)reloads, sizeof *sig_ms, cmp_double);
    qsort(daemon_ms, (size_t)reloads, sizeof *daemon_ms, cmp_double);
    qsort(load_ms, (size_t)reloads, sizeof *load_ms, cmp_double);
    qsort(loop_ms, (size_t)reloads, sizeof *loop_ms, cmp_double);
    printf("reload of %d exports, %d nodes, one export changed, %d times:\n",
           n, 3 * n, reloads);
    printf("  SIGHUP -> RELOAD event     min %.1f ms  median %.1f ms  "
           "max %.1f ms\n", sig_ms[0], sig_ms[reloads / 2],
           sig_ms[reloads - 1]);
    printf("  daemon (load+plan+apply)   min %.1f ms  median %.1f ms  "
           "max %.1f ms\n", daemon_ms[0], daemon_ms[reloads / 2],
           daemon_ms[reloads - 1]);
    printf("  of which loading the file  min %.1f ms  median %.1f ms  "
           "max %.1f ms (worker thread)\n", load_ms[0], load_ms[reloads / 2],
           load_ms[reloads - 1]);
    printf("  plan, check, apply         min %.1f ms  median %.1f ms  "
           "max %.1f ms (loop thread)\n", loop_ms[0], loop_ms[reloads / 2],
           loop_ms[reloads - 1]);
    print_latency("  4K reads, before", before, n_before);
    print_latency("  4K reads, during reloads", during, n_during);
    ng_test_qmp_close(q);
    ng_test_stop(d);
    free(during);
    free(before);
    free(win);
    free(sig_ms);
    free(daemon_ms);
    free(load_ms);
    free(loop_ms);
    free(texts[0]);
    free(texts[1]);
    return 0;
}
