/* filters/log.c: "log", after nbdkit's log filter: one line when a
 * request arrives and one when it completes, with its op, range, flags,
 * result and how long it took, to see what a client (or a job) really
 * sends down a graph.
 *
 *   2024-05-01 12:00:00.123456 node=lg id=7 write offset=0x10000
 *     length=0x1000 flags=fua ...
 *   2024-05-01 12:00:00.123502 node=lg id=7 write return=0 elapsed_us=46
 *
 * (one line each).  The file opens with the node and closes with it;
 * stdio with line buffering keeps each line whole.  Per-request records
 * (id, start time) are the request's context from the core
 * (ng_req_ctx()), so steady-state I/O allocates nothing; if one cannot be
 * had the request is logged without its completion rather than failed.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph/graph.h"
#include "filters/filters.h"

struct log_entry {
    struct ng_node *node;
    uint64_t id;
    uint64_t start;                 /* uv_hrtime() */
};

struct log_state {
    struct ng_node *file;           /* option "file" */
    char *logfile;                  /* option "logfile" */
    bool append;                    /* option "logappend" */
    FILE *fp;
    uint64_t next_id;
};

static const struct ng_opt_desc log_opts[] = {
    NG_OPT_CHILD("file", struct log_state, file, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_STRING("logfile", struct log_state, logfile, NULL,
                  "file to write the log to"),
    NG_OPT_BOOL("logappend", struct log_state, append, "false",
                "append to the file instead of truncating it"),
    NG_OPT_END,
};

/* "YYYY-MM-DD HH:MM:SS.uuuuuu node=NAME " */
static void
log_prefix(struct ng_node *node, FILE *fp)
{
    struct timespec ts;
    struct tm tm;
    char when[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(fp, "%s.%06ld node=%s ", when, ts.tv_nsec / 1000, node->name);
}

static void
log_flags(FILE *fp, uint32_t flags)
{
    static const struct {
        uint32_t flag;
        const char *name;
    } names[] = {
        { NG_REQ_FUA, "fua" },
        { NG_REQ_MAY_TRIM, "may_trim" },
        { NG_REQ_FAST_ZERO, "fast_zero" },
        { NG_REQ_REQ_ONE, "req_one" },
        { NG_REQ_LOCAL_ONLY, "local_only" },
        { NG_REQ_ALLOC_DEPTH, "alloc_depth" },
        { NG_REQ_BACKGROUND, "background" },
        { NG_REQ_PREFETCH, "prefetch" },
    };
    const char *sep = "";

    fputs(" flags=", fp);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (flags & names[i].flag) {
            fprintf(fp, "%s%s", sep, names[i].name);
            sep = ",";
        }
    }
    if (*sep == '\0')
        fputs("none", fp);
}

/* --check-config (inspect_only): the log file may be a running
 * daemon's; check that it could be written, but neither truncate nor
 * write it: log to /dev/null instead. */
static FILE *
log_open_inspect(const char *logfile)
{
    char dir[PATH_MAX];

    if (access(logfile, W_OK) == -1) {
        if (errno != ENOENT || strlen(logfile) >= sizeof dir)
            return NULL;
        strcpy(dir, logfile);
        if (access(dirname(dir), W_OK) == -1)
            return NULL;
    }
    return fopen("/dev/null", "we");
}

static int
log_open(struct ng_node *node, struct ng_error *err)
{
    struct log_state *s = ng_node_state(node);

    if (node->graph->inspect_only)
        s->fp = log_open_inspect(s->logfile);
    else
        s->fp = fopen(s->logfile, s->append ? "ae" : "we");
    if (s->fp == NULL)
        return ng_error_set(err, errno, "cannot open log file '%s': %s",
                            s->logfile, strerror(errno));
    setvbuf(s->fp, NULL, _IOLBF, 0);
    log_prefix(node, s->fp);
    fprintf(s->fp, "open file=%s size=%" PRId64 "\n", s->file->name,
            ng_node_length(s->file));
    return 0;
}

static void
log_close(struct ng_node *node)
{
    struct log_state *s = ng_node_state(node);

    log_prefix(node, s->fp);
    fprintf(s->fp, "close requests=%" PRIu64 "\n", s->next_id);
    fclose(s->fp);
    s->fp = NULL;
}

static void
log_done(struct ng_req *req, int ret, void *opaque)
{
    struct log_entry *e = opaque;
    struct ng_node *node = e->node;
    struct log_state *s = ng_node_state(node);

    log_prefix(node, s->fp);
    fprintf(s->fp, "id=%" PRIu64 " %s return=%d", e->id, ng_op_name(req->op),
            ret);
    if (ret < 0)
        fprintf(s->fp, " (%s)", strerror(-ret));
    if (ret == 0 && req->op == NG_OP_BLOCK_STATUS)
        fprintf(s->fp, " extents=%" PRIu32, req->nr_extents);
    fprintf(s->fp, " elapsed_us=%" PRIu64 "\n",
            (uv_hrtime() - e->start) / 1000);
    ng_req_complete(req, ret);
}

static void
log_submit(struct ng_node *node, struct ng_req *req)
{
    struct log_state *s = ng_node_state(node);
    struct log_entry *e = ng_req_ctx(node, req);
    uint64_t id = ++s->next_id;

    log_prefix(node, s->fp);
    fprintf(s->fp, "id=%" PRIu64 " %s offset=0x%" PRIx64 " length=0x%"
            PRIx64, id, ng_op_name(req->op), req->offset, req->length);
    log_flags(s->fp, req->flags);
    if (e == NULL || ng_req_push(req, log_done, e) < 0) {
        fputs(" (completion not logged)\n", s->fp);
        ng_node_forward(node, req);
        return;
    }
    fputs(" ...\n", s->fp);
    e->node = node;
    e->id = id;
    e->start = uv_hrtime();
    ng_node_forward(node, req);
}

const struct ng_driver ng_filter_log = {
    .name       = "log",
    .help       = "log every request and its result to a file",
    .is_filter  = true,
    .grow       = ng_node_grow_child,
    .frames     = 1,                /* log_done */
    .state_size = sizeof(struct log_state),
    .req_ctx_size = sizeof(struct log_entry),
    .opts       = log_opts,
    .open       = log_open,
    .close      = log_close,
    .submit     = log_submit,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
