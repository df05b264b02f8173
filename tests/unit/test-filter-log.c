/* tests/unit/test-filter-log.c: the log filter: one line per request and
 * per completion in its log file, failed requests included.
 *
 * Each case draws its graph; "bb" is the BlockBackend the requests enter.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "graph/value.h"
#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

/* ---- log ---------------------------------------------------------------- */

/*   bb -> lg (log) -> dbg (blkdebug: reads at 1M fail) -> mem (2M) */
static void
test_log(void)
{
    struct fixture f;
    struct ng_bb *bb;
    unsigned char buf[4096] = { 0 };
    char path[512], text[600];

    setup(&f, "log: a line per request and per completion");
    snprintf(path, sizeof path, "%s/sub/x.log", f.tmpdir);
    snprintf(text, sizeof text, "{driver: log, file: mem, logfile: '%s'}",
             path);
    add(&f, "mem", yaml("{driver: memory, size: 2M}"));
    add_fails(&f, "x", yaml(text), "cannot open log file");
    add(&f, "dbg", yaml("{driver: blkdebug, image: mem, inject-error: "
                        "[{iotype: read, offset: 1M}]}"));
    snprintf(path, sizeof path, "%s/x.log", f.tmpdir);
    snprintf(text, sizeof text, "{driver: log, file: dbg, logfile: '%s'}",
             path);
    add(&f, "lg", yaml(text));
    bb = bb_new(&f, "bb", ng_graph_find(f.g, "lg"), true);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 4096, 4096, NG_REQ_FUA, buf), 0);
    CHECK_RET(io(&f, bb, NG_OP_READ, MiB, 512, 0, buf), -EIO);
    CHECK_RET(io(&f, bb, NG_OP_FLUSH, 0, 0, 0, NULL), 0);
    CHECK(count_lines(path, "node=lg open file=dbg size=2097152", NULL)
          == 1);
    CHECK(count_lines(path, "node=lg id=1 write offset=0x1000 "
                      "length=0x1000 flags=fua ...", NULL) == 1);
    CHECK(count_lines(path, "node=lg id=1 write return=0 elapsed_us=",
                      NULL) == 1);
    CHECK(count_lines(path, "id=2 read offset=0x100000 length=0x200 "
                      "flags=none", NULL) == 1);
    CHECK(count_lines(path, "id=2 read return=-5 (Input/output error) "
                      "elapsed_us=", NULL) == 1);
    CHECK(count_lines(path, "id=3 flush", "return=0") == 1);
    CHECK(count_lines(path, "node=lg ", NULL) == 7);
    /* Closing the node closes the file, with a last line. */
    ng_bb_free(bb);
    CHECK(ng_graph_del_node(f.g, "lg", NULL, NULL, NULL) == 0);
    CHECK(count_lines(path, "node=lg close requests=3", NULL) == 1);

    /* logappend keeps what was there. */
    snprintf(text, sizeof text, "{driver: log, file: dbg, logfile: '%s', "
             "logappend: true}", path);
    add(&f, "lg", yaml(text));
    CHECK(count_lines(path, "node=lg open", NULL) == 2);
    teardown(&f);
}

int
main(void)
{
    /* A hung request would hang `make check`. */
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_log();
    printf("all log tests passed\n");
    return 0;
}
