/* tests/fuzz/fuzz-qmp.c: the QMP control channel (server/control.c and
 * the commands in server/qmp-*.c): framing, JSON, the envelope and
 * argument checks, and whatever the commands then do to a real graph
 * with exports, implicit filters, a throttle group and NAC, and the block
 * jobs and dirty bitmaps the commands start on it.
 *
 * Every input meets the daemon state the fixture config makes, so a run
 * depends on its input alone: an input that ran a command other than
 * query-* that succeeded throws its daemon away and builds the next one
 * before it returns; the others leave it as they found it, and the next
 * input uses it again.  The first byte chooses whether the harness
 * negotiates capabilities first (bit 0); the rest is what the client
 * sends.  Drivers that open paths (file, log) are not in this
 * graph's registry: a fuzzer must not create or truncate files outside
 * its temporary directory.  Nor is delay: a request or open it holds for
 * hours would hold the input as long (its options are the config
 * loader's to check).
 */
#include <config.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config/config.h"
#include "filters/filters.h"
#include "filters/throttle.h"
#include "graph/drivers.h"
#include "graph/graph.h"
#include "graph/job.h"
#include "nac/nac.h"
#include "server/control.h"
#include "server/exports.h"
#include "server/log.h"
#include "server/nbd.h"
#include "tests/fuzz/fuzz-util.h"

static const struct ng_driver *const fuzz_drivers[] = {
    &ng_driver_memory,
    &ng_driver_null_co,
    &ng_driver_raw,
    &ng_filter_nofilter,
    &ng_filter_throttle,
    &ng_filter_copy_on_read,
    &ng_filter_detect_zeroes,
    &ng_filter_blkdebug,
    &ng_filter_quorum,
    &ng_filter_blkverify,
    &ng_filter_mirror_top,          /* what mirror and commit put on top */
    &ng_filter_cbw,                 /* what backup puts on top */
    NULL,
};

/* %1$s is the temp dir. */
static const char fixture_config[] =
    "server:\n"
    "  listen: [ 'unix:%1$s/nbd.sock' ]\n"
    "  control: '%1$s/ctl.sock'\n"
    "throttle-groups:\n"
    "  tenants: { iops-total: 1000, bps-total: 10M }\n"
    "nodes:\n"
    "  disk0: { driver: memory, size: 1M }\n"
    "  disk1: { driver: memory, size: 1M }\n"
    "  part0: { driver: raw, file: disk0, offset: 64K, size: 512K }\n"
    "  flt0: { driver: nofilter, file: disk1 }\n"
    "  zero0: { driver: null-co, size: 1M }\n"
    "exports:\n"
    "  vm1:\n"
    "    node: part0\n"
    "    writable: true\n"
    "    throttle: { iops-total: 500 }\n"
    "    detect-zeroes: unmap\n"
    "  vm2: { node: flt0, throttle-group: tenants, copy-on-read: true }\n"
    "  ro: { node: zero0, description: 'reads zeroes' }\n";

static const char negotiate[] = "{\"execute\":\"qmp_capabilities\"}\r\n";

/* The daemon's parts, as server/main.c holds them; libFuzzer's entry
 * point has no context, so the long-lived ones live here. */
struct fixture {
    uv_loop_t loop;
    struct ng_config *cfg;
    char dir[256];
    /* made afresh for every input: */
    struct ng_graph *graph;
    struct ng_nac *nac;
    struct ng_nbd_server *nbd;
    struct ng_control_ctx ctx;
    struct ng_control *control;
    unsigned stopping;          /* shutdowns not yet called back */
};

static struct fixture *the_fixture;

static struct fixture *
fixture_get(void)
{
    struct fixture *f = the_fixture;
    struct ng_error err = { 0 };
    char text[sizeof fixture_config + 1024];

    if (f != NULL)
        return f;
    f = calloc(1, sizeof *f);
    if (f == NULL || uv_loop_init(&f->loop) != 0)
        fuzz_die("cannot create the loop");
    ng_log_set_level(NG_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    fuzz_make_tmpdir(f->dir, sizeof f->dir);
    snprintf(text, sizeof text, fixture_config, f->dir);
    f->cfg = ng_config_load_string(text, "qmp fixture", &err);
    if (f->cfg == NULL)
        fuzz_die("fixture config: %s", err.msg);
    the_fixture = f;
    return f;
}

/* What server/main.c's build_graph and start_server do. */
static void
daemon_start(struct fixture *f)
{
    const struct ng_config *cfg = f->cfg;
    struct ng_error err = { 0 };

    f->graph = ng_graph_new(&f->loop, fuzz_drivers);
    f->nac = ng_nac_new();
    if (f->graph == NULL || f->nac == NULL)
        fuzz_die("out of memory");
    for (size_t i = 0; i < cfg->n_groups; i++)
        if (ng_throttle_group_declare(f->graph, cfg->groups[i].name,
                                      cfg->groups[i].limits, &err) == -1)
            fuzz_die("group: %s", err.msg);
    for (size_t i = 0; i < cfg->n_nodes; i++)
        if (ng_graph_add_node_now(f->graph, cfg->nodes[i].name,
                              cfg->nodes[i].opts, &err) == NULL)
            fuzz_die("node '%s': %s", cfg->nodes[i].name, err.msg);
    f->nbd = ng_nbd_server_new(&f->loop, f->graph, &err);
    if (f->nbd == NULL)
        fuzz_die("nbd server: %s", err.msg);
    memset(&f->ctx, 0, sizeof f->ctx);
    f->ctx.graph = f->graph;
    f->ctx.nbd = f->nbd;
    f->ctx.nac = f->nac;
    ng_nbd_server_on_export_gone(f->nbd, ng_exports_gone, &f->ctx);
    for (size_t i = 0; i < cfg->n_exports; i++) {
        const struct ng_export_cfg *ec = &cfg->exports[i];
        struct ng_export_spec spec = {
            .id = ec->name, .node = ec->node, .writable = ec->writable,
            .description = ec->description, .filters = ec->filters,
        };

        if (ng_exports_add(&f->ctx, &spec, "config", false, &err) == -1)
            fuzz_die("export '%s': %s", ec->name, err.msg);
    }
    f->control = ng_control_new(&f->loop, &f->ctx, &err);
    if (f->control == NULL ||
        ng_control_listen(f->control, cfg->control, &err) == -1)
        fuzz_die("control: %s", err.msg);
}

/* Cancels what still runs (again is a no-op) and says whether any job
 * is left: a job's copies finish before it lets go of its nodes (with
 * limits lifted, as at the daemon's exit). */
static bool
jobs_gone(void *opaque)
{
    const struct fixture *f = opaque;

    return ng_job_cancel_all(f->graph) == 0;
}

static bool
drains_done(void *opaque)
{
    const struct fixture *f = opaque;

    return f->graph->drains == NULL;
}

static bool
stopped(void *opaque)
{
    const struct fixture *f = opaque;

    return f->stopping == 0;
}

static void
one_stopped(void *opaque)
{
    struct fixture *f = opaque;

    f->stopping--;
}

/* Cancel the jobs an input started, as server/main.c's begin_shutdown
 * does, and let commands still waiting for a drain finish (their client
 * is gone; they answer into the void), then shut down and free
 * everything as its daemon_cleanup does, leaving the loop empty. */
static void
daemon_stop(struct fixture *f)
{
    ng_throttle_lift_all(f->graph);
    fuzz_run_until(&f->loop, jobs_gone, f, "jobs' cancel");
    fuzz_run_until(&f->loop, drains_done, f, "drained sections");
    f->stopping = 2;
    ng_nbd_server_shutdown(f->nbd, one_stopped, f);
    ng_control_shutdown(f->control, one_stopped, f);
    fuzz_run_until(&f->loop, stopped, f, "shutdown");
    ng_nbd_server_free(f->nbd);
    ng_control_free(f->control);
    ng_exports_free_all(&f->ctx);
    ng_nac_free(f->nac);
    ng_graph_free(f->graph);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    f->nbd = NULL;
    f->control = NULL;
    f->nac = NULL;
    f->graph = NULL;
}

/* At exit: the last daemon goes as every other one did, so LSan (which
 * checks at exit) sees whatever survived between inputs.  The loop and
 * the config stay (fuzz-util.c's timer is on the loop), reachable. */
static void
daemon_stop_at_exit(void)
{
    struct fixture *f = the_fixture;

    if (f->graph != NULL)
        daemon_stop(f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fixture *f = fixture_get();
    bool negotiated = size > 0 && (data[0] & 1);
    struct fuzz_session s = {
        .head = negotiated ? (const uint8_t *)negotiate : NULL,
        .head_len = negotiated ? strlen(negotiate) : 0,
        .data = data + 1,
        .len = size - 1,
        .end = FUZZ_END_READ_ALL,
    };

    if (size == 0)
        return -1;
    if (f->graph == NULL) {
        daemon_start(f);
        atexit(daemon_stop_at_exit);   /* before the temp dir's removal runs */
    }
    fuzz_unix_session(&f->loop, f->cfg->control, &s);
    /* Most inputs end in the framer, the JSON parser, the argument
     * checks or a command's refusal, or run only query-* commands: the
     * daemon is as it was (a failed command changes nothing), so the
     * next input may use it as well (building one costs far more than a
     * session).  After a change, the daemon is rebuilt at once, within
     * this input: so a run still depends on its input alone, and each
     * input frees about what it allocates, which keeps libFuzzer from
     * running it a second time to look for a leak (it does when an
     * input allocates more than it frees). */
    if (f->ctx.changes_done != 0) {
        daemon_stop(f);
        daemon_start(f);
    }
    return 0;
}
