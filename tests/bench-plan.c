/* tests/bench-plan.c: the reload's pure parts on fixed files, for a
 * profiler (valgrind --tool=callgrind counts the same instructions however
 * loaded the machine is): load OLD, make its live model, then load NEW
 * and plan it against the model, ROUNDS times (default 1).  Not a test:
 * nothing is asserted.  contrib/bench/reload-profile runs it.
 *   tests/bench-plan OLD.yaml NEW.yaml [ROUNDS]
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "config/config.h"
#include "config/plan.h"

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int
main(int argc, char **argv)
{
    struct ng_error err = { 0 };
    struct ng_config *old, *cfg;
    struct ng_live *live;
    struct ng_plan *plan;
    int rounds = argc > 3 ? atoi(argv[3]) : 1, k;
    double t0, t1, t2, load = 0, diff = 0;
    size_t steps = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: %s OLD.yaml NEW.yaml [ROUNDS]\n", argv[0]);
        return 2;
    }
    if ((old = ng_config_load_file(argv[1], &err)) == NULL ||
        (live = ng_live_from_config(old)) == NULL) {
        fprintf(stderr, "%s: %s\n", argv[1], err.msg);
        return 1;
    }
    for (k = 0; k < rounds; k++) {
        t0 = now_ms();
        if ((cfg = ng_config_load_file(argv[2], &err)) == NULL) {
            fprintf(stderr, "%s: %s\n", argv[2], err.msg);
            return 1;
        }
        t1 = now_ms();
        if ((plan = ng_plan_compute(cfg, live, false, &err)) == NULL) {
            fprintf(stderr, "plan: %s\n", err.msg);
            return 1;
        }
        t2 = now_ms();
        load += t1 - t0;
        diff += t2 - t1;
        steps = plan->n_steps;
        ng_plan_free(plan);
        ng_config_free(cfg);
    }
    printf("%d round(s): load %.2f ms, plan %.2f ms per round; %zu step(s)\n",
           rounds, load / rounds, diff / rounds, steps);
    ng_live_free(live);
    ng_config_free(old);
    return 0;
}
