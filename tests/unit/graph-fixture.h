/* tests/unit/graph-fixture.h: what the graph unit tests (test-drivers,
 * test-filter-*, test-graph-*) share: a graph on a real libuv loop with a
 * private temp dir, node options built by hand or from YAML text,
 * requests through a BlockBackend run to completion, live reconfiguring,
 * and data patterns to check.
 *
 * Every helper fails the test (message on stderr, exit 1) rather than
 * return an error, so a case reads as a list of steps.  The names are
 * short because only test programs include this.
 */
#ifndef NG_TEST_GRAPH_FIXTURE_H
#define NG_TEST_GRAPH_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "graph/value.h"
#include "graph/graph.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define MS  1000000ull             /* uv_hrtime() units */

#define CHECK(cond) \
    do { \
        if (!(cond)) \
            fail("%s:%d: check failed: %s", __FILE__, __LINE__, #cond); \
    } while (0)

/* A request's result must be exactly `want`. */
#define CHECK_RET(got, want) \
    do { \
        int got_ = (got), want_ = (want); \
        if (got_ != want_) \
            fail("%s:%d: %s returned %d (%s), expected %d (%s)", \
                 __FILE__, __LINE__, #got, got_, strerror(-got_), want_, \
                 strerror(-want_)); \
    } while (0)

/* Block status flags as the tests expect them. */
#define HOLE (NG_EXTENT_HOLE | NG_EXTENT_ZERO)
#define DATA 0u
#define ONLY_HOLE NG_EXTENT_HOLE    /* LOCAL_ONLY: the backing's */
#define ZERO NG_EXTENT_ZERO         /* allocated, reads as zeroes */

struct fixture {
    uv_loop_t loop;
    struct ng_graph *g;
    uv_timer_t tick;            /* wakes the loop while a test polls time */
    char tmpdir[256];           /* removed with everything in it */
};

void fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Print the case's name; make the loop, the graph and the temp dir. */
void setup(struct fixture *f, const char *name);
/* The same with the test's own driver registry instead of every driver
 * compiled in (borrowed: must outlive the fixture). */
void setup_drivers(struct fixture *f, const char *name,
                   const struct ng_driver *const *drivers);
/* Frees the graph; fails if a handle is left open on the loop. */
void teardown(struct fixture *f);

/* A 2 ms timer, so that UV_RUN_ONCE returns while a test waits for a
 * time rather than an event.  Stop it before teardown. */
void tick_start(struct fixture *f);
void tick_stop(struct fixture *f);
/* Run the loop for `ms` milliseconds. */
void wait_ms(struct fixture *f, unsigned ms);

/* ---- Node options -------------------------------------------------------
 * Each returns a new value the caller owns (add() takes it). */

struct ng_value *map_new(void);
/* Put a scalar, or a value the map takes. */
void map_put(struct ng_value *m, const char *key, const char *text);
void map_put_map(struct ng_value *m, const char *key, struct ng_value *sub);
/* A map from key, value, ..., NULL: for values built at run time, such
 * as paths. */
struct ng_value *opts(const char *key, ...);
/* Options from YAML flow text, e.g. "{driver: memory, size: 1M}";
 * positions in messages are "test:LINE:COLUMN". */
struct ng_value *yaml(const char *text);

/* ---- Nodes and BlockBackends -------------------------------------------- */

/* Add a node and run the loop until its open finished (o stays the
 * caller's); NULL with *err set on failure. */
struct ng_node *add_try(struct fixture *f, const char *name,
                        const struct ng_value *o, struct ng_error *err);
/* Add a node (takes ownership of o). */
struct ng_node *add(struct fixture *f, const char *name, struct ng_value *o);
/* Adding must fail with a message containing `want` (takes o). */
void add_fails(struct fixture *f, const char *name, struct ng_value *o,
               const char *want);
struct ng_bb *bb_new(struct fixture *f, const char *name,
                     struct ng_node *root, bool writable);

/* ---- Doing I/O ---------------------------------------------------------- */

struct io_result {
    bool done;
    int ret;
    uint64_t when;              /* uv_hrtime() at completion */
    unsigned seq;               /* completion order in the program, from 1 */
};

/* Prepare and submit; the result lands in *r (see io_wait()). */
void io_start(struct ng_bb *bb, struct ng_req *req, struct io_result *r,
              enum ng_op op, uint64_t off, uint64_t len, uint32_t flags,
              void *buf);
void io_wait(struct fixture *f, struct io_result *r);
/* Submit a prepared request and wait; it must come back as it went out
 * (format drivers shift the offset and must shift it back, a filter that
 * turns a write into write-zeroes must turn it back).  Returns its
 * result. */
int io_req(struct fixture *f, struct ng_bb *bb, struct ng_req *req);
/* One request, start to finish: io_req() of a fresh request. */
int io(struct fixture *f, struct ng_bb *bb, enum ng_op op, uint64_t off,
       uint64_t len, uint32_t flags, void *buf);

/* Block status into ext[max]; must succeed.  Returns the number of
 * extents, checking the driver's promises: >= 1, <= max, lengths > 0
 * adding up to at most `len`. */
uint32_t extents(struct fixture *f, struct ng_bb *bb, uint64_t off,
                 uint64_t len, uint32_t flags, struct ng_extent *ext,
                 uint32_t max);
void check_extent(const struct ng_extent *e, uint64_t len, uint32_t flags);

/* ---- Reconfiguring live nodes -------------------------------------------
 * Through the driver's reconfigure hook, options as YAML flow text. */

void reconfigure_ok(struct ng_node *n, const char *text);
/* Must fail with a message containing `want`. */
void reconfigure_fails(struct ng_node *n, const char *text,
                       const char *want);

/* ---- Files -------------------------------------------------------------- */

/* How many lines of the file contain w1 and (unless NULL) w2. */
unsigned count_lines(const char *path, const char *w1, const char *w2);

/* ---- Data --------------------------------------------------------------- */

/* Byte i is a function of (off + i, seed), so any range can be checked on
 * its own and different seeds tell writes apart; neighbouring bytes always
 * differ, so filled data never reads as zeroes. */
void fill(unsigned char *buf, size_t len, uint64_t off, unsigned seed);
void check_filled(const unsigned char *buf, size_t len, uint64_t off,
                  unsigned seed);
void check_zero(const unsigned char *buf, size_t len, uint64_t off);

#endif
