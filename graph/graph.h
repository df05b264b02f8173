/* graph/graph.h: the block graph — nodes, edges, BlockBackends, the one
 * request path, and drain.
 *
 * Threading: everything here runs on the thread that owns the graph's
 * libuv loop.  Drivers that must block (file, later libnbd or nbdkit
 * plugins) declare a thread model (struct ng_driver) and hand work to
 * their own worker pool (graph/threads.c) with ng_req_run_blocking() or
 * ng_node_queue_work(); it completes back on the loop.
 *
 * A request (struct ng_req) is owned by whoever submitted it; the graph
 * only borrows it until its `done` callback runs, which happens exactly
 * once for every request handed to ng_bb_submit() or ng_node_submit(),
 * possibly before that call returns.
 */
#ifndef NG_GRAPH_H
#define NG_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include <uv.h>

#include "graph/value.h"
#include "graph/error.h"
#include "graph/strmap.h"

struct ng_graph;
struct ng_node;
struct ng_bb;
struct ng_edge;
struct ng_req;
struct ng_driver;
struct ng_object;
struct ng_pool;
struct ng_add;
struct ng_remove;

/* ---- Blocking work ----------------------------------------------------- */

/* One piece of blocking work for a node's worker pool (see
 * ng_node_queue_work()).  The submitter owns it and sets fn and after. */
struct ng_work {
    void (*fn)(struct ng_work *w);      /* worker thread: may block, must
                                         * not touch the graph */
    void (*after)(struct ng_work *w);   /* loop thread, once fn returned */
    /* Owned by the graph while queued. */
    struct ng_node *node;
    struct ng_work *next;
    bool background;                    /* ng_node_queue_background_work */
};

/* Run w->fn on a worker thread of the node's pool, then w->after on the
 * loop thread (never inline).  Never fails: the pool exists from before
 * the node's open to after its close.  Loop thread. */
void ng_node_queue_work(struct ng_node *node, struct ng_work *w);
/* The same for work no client waits for (a job's bulk copy,
 * NG_REQ_BACKGROUND): it runs on the pool's background threads, at the
 * lowest CPU priority, so that a mirror at full speed does not take the
 * CPUs from the threads clients wait for (graph/threads.c). */
void ng_node_queue_background_work(struct ng_node *node, struct ng_work *w);

/* Work that a library runs on its own threads (librbd's completions):
 * w->after runs on the loop thread once ng_work_finish_external(w) was
 * called, from any thread, through the same hand-off as pool work.
 * ng_node_begin_external() (loop thread, before the library may finish
 * it) sets w->node and keeps the loop alive until then; w->fn is not
 * used.  Only for NG_THREADS_PARALLEL drivers: the node needs a pool,
 * and SERIALIZE_NODE's order is not kept for such work. */
void ng_node_begin_external(struct ng_node *node, struct ng_work *w);
void ng_work_finish_external(struct ng_work *w);

/* A leaf's open that may block without end (an nbdkit plugin's .open, a
 * connect to a Ceph monitor that does not answer) runs on a thread of
 * its own (graph/open-thread.c), so that the daemon's stop need not wait
 * for it: fn(arg) on that thread, then done(node, arg) on the loop.  arg
 * is the driver's, apart from the node's state: an abandoned open's
 * thread goes on using it after the node is gone.  NULL with *err set
 * when no thread could start (nothing runs then).  Loop thread. */
struct ng_open_thread;
typedef void ng_open_thread_fn(void *arg);
typedef void ng_open_thread_done_fn(struct ng_node *node, void *arg);
struct ng_open_thread *ng_open_thread_start(struct ng_node *node,
                                            ng_open_thread_fn *fn,
                                            ng_open_thread_done_fn *done,
                                            ng_open_thread_fn *orphan,
                                            void *arg, struct ng_error *err);
/* The driver's cancel_open: true when fn is still running; then done
 * never runs, the thread runs orphan(arg) (undo what fn made, free arg)
 * whenever fn returns, and the driver answers the open now.  False when
 * fn returned already: done runs soon, as without the cancel. */
bool ng_open_thread_abandon(struct ng_open_thread *t);

struct ng_bitmap;

/* ---- Requests -------------------------------------------------------- */

enum ng_op {
    NG_OP_READ,
    NG_OP_WRITE,
    NG_OP_FLUSH,
    NG_OP_TRIM,
    NG_OP_WRITE_ZEROES,
    NG_OP_BLOCK_STATUS,
    NG_OP_CACHE,
    NG_OP__COUNT
};

#define NG_OP_BIT(op) (1u << (op))     /* for struct ng_driver's ops */

/* Request flags. */
#define NG_REQ_FUA        (1u << 0)   /* write through before completing */
#define NG_REQ_MAY_TRIM   (1u << 1)   /* write-zeroes may deallocate
                                       * (NBD: NO_HOLE not set) */
#define NG_REQ_FAST_ZERO  (1u << 2)   /* write-zeroes: fail with -ENOTSUP
                                       * rather than write zeroes slowly */
#define NG_REQ_REQ_ONE    (1u << 3)   /* block status: one extent is enough */
#define NG_REQ_LOCAL_ONLY (1u << 4)   /* block status: describe this node's
                                       * own layer only; NG_EXTENT_HOLE then
                                       * means "not allocated here, the data
                                       * comes from the backing node".
                                       * Filters pass it down; the choke
                                       * point answers "all allocated" for a
                                       * non-filter node without a backing
                                       * child, so only drivers with a
                                       * backing child ever see it
                                       * (copy-on-read uses it to find what
                                       * to copy up) */
#define NG_REQ_ALLOC_DEPTH (1u << 5)  /* block status on a BB: answer
                                       * which layer holds each range
                                       * (qemu:allocation-depth); each
                                       * extent's flags are its depth: 0
                                       * unallocated in the whole chain,
                                       * 1 the top layer (filters do not
                                       * count), 2+ down the backing
                                       * chain (graph/alloc-depth.c) */
#define NG_REQ_BACKGROUND (1u << 6)   /* a job's bulk copy, which no
                                       * client waits for: the choke
                                       * point never gives it to a
                                       * driver's submit_inline (a file
                                       * on tmpfs, a page-cache read), so
                                       * it runs on a worker, keeping the
                                       * loop free for clients */
#define NG_REQ_PREFETCH   (1u << 7)   /* a read made only for what a
                                       * copy-on-read filter copies up
                                       * (block-stream's, QEMU's
                                       * BDRV_REQ_PREFETCH): a copy-up
                                       * that fails fails the read, so
                                       * the job learns of it, where a
                                       * client's read gets its data */
/* The flags a request made to serve another (a format's read of its
 * file, a copy-up from a backing node) takes over from it, so a job's
 * bulk copy stays off the loop all the way down. */
#define NG_REQ_INHERITED  NG_REQ_BACKGROUND

/* Extent flags, as NBD's base:allocation. */
#define NG_EXTENT_HOLE    (1u << 0)   /* not allocated */
#define NG_EXTENT_ZERO    (1u << 1)   /* reads as zeroes */

struct ng_extent {
    uint64_t length;
    uint32_t flags;
};

/* Capabilities of a node; decide which NBD transmission flags an export
 * advertises and which requests the choke point lets through. */
#define NG_CAP_WRITE       (1u << 0)
#define NG_CAP_FLUSH       (1u << 1)
#define NG_CAP_FUA         (1u << 2)
#define NG_CAP_TRIM        (1u << 3)
#define NG_CAP_ZERO        (1u << 4)
#define NG_CAP_FAST_ZERO   (1u << 5)
#define NG_CAP_CACHE       (1u << 6)
#define NG_CAP_EXTENTS     (1u << 7)  /* real block status (else all data) */
#define NG_CAP_MULTI_CONN  (1u << 8)  /* flush on one connection covers
                                       * writes completed on all */
#define NG_CAP__BITS       9          /* bits the NG_CAP_* above use */

/* "FUA", "TRIM", ...: the NBD name of one NG_CAP_* bit, for messages. */
const char *ng_cap_name(uint32_t cap);

/* The caps a leaf that handles every op reports from its refresh hook
 * (file, memory, null-co), write caps included even when the node is
 * read-only: the graph takes those away.  A new NG_CAP_* joins it only
 * once all of those drivers handle it. */
#define NG_CAPS_LEAF_ALL \
    (NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_FUA | NG_CAP_TRIM | NG_CAP_ZERO | \
     NG_CAP_FAST_ZERO | NG_CAP_CACHE | NG_CAP_EXTENTS | NG_CAP_MULTI_CONN)

#define NG_REQ_MAX_FRAMES 16

/* What the graph knows about a node: one struct per node, filled bottom
 * up (a filter starts from its child's facts, a leaf from defaults) by
 * the driver's refresh hook and cached in the node (ng_node_refresh()).
 * The request path reads only these cached fields: O(1) per layer. */
struct ng_node_facts {
    int64_t size;                   /* bytes, or a negative errno */
    uint32_t caps;                  /* NG_CAP_*, after read-only masking */
    uint32_t request_alignment;     /* bytes, a power of two, >= 1: offsets
                                     * and lengths a driver is handed are
                                     * multiples of it (a range may end at
                                     * the node's end unaligned); the core
                                     * aligns what is not (graph/split.c) */
    uint32_t max_transfer;          /* bytes per request, a multiple of
                                     * request_alignment; 0 = no limit; the
                                     * core splits what is larger */
    uint32_t opt_transfer;          /* preferred request size; 0 = none */
    bool has_backing;               /* a child on the "backing" edge */
};

typedef void ng_req_cb(struct ng_req *req, int ret, void *opaque);

/* A request's data buffer: scatter-gather, a view of `length` bytes
 * (the request's) that starts `skip` bytes into iov[0].  The elements
 * are borrowed from whoever built the view; a sub-range of a view is
 * another view of the same elements (ng_iov_slice), so splitting a
 * request copies no data and allocates nothing. */
struct ng_iov {
    const struct iovec *iov;
    unsigned niov;
    size_t skip;                    /* < iov[0].iov_len unless empty */
};

struct ng_req_frame {
    ng_req_cb *cb;
    void *opaque;
};

struct ng_req {
    /* Set by the submitter. */
    enum ng_op op;
    uint32_t flags;                 /* NG_REQ_* */
    uint64_t offset;                /* bytes */
    uint64_t length;                /* bytes; 0 is allowed for FLUSH */
    struct ng_iov iov;              /* READ: filled; WRITE: source; see
                                     * ng_req_set_buf() for one buffer */
    struct iovec one;               /* ng_req_set_buf()'s one element */
    struct ng_extent *extents;      /* BLOCK_STATUS: caller's array */
    uint32_t max_extents;           /* its capacity, >= 1 */
    uint32_t nr_extents;            /* BLOCK_STATUS: filled by the driver,
                                     * >= 1 on success; lengths add up to at
                                     * most `length`, ranges follow on */
    void (*done)(struct ng_req *req, int ret);  /* final completion; ret is
                                     * 0 or a negative errno */
    void *opaque;                   /* the submitter's */

    /* Owned by the graph while the request is in flight. */
    unsigned depth;                 /* frames pushed */
    struct ng_req_frame frames[NG_REQ_MAX_FRAMES];
    struct ng_bb *bb;               /* BB it entered through, or NULL */
    struct ng_req *queue_next;      /* BB drain queue */
    struct ng_req *filter_next;     /* a filter's own wait queue (throttle);
                                     * only the node holding the request
                                     * (submitted to it, not yet passed on
                                     * or completed) may use it */
    struct ng_work work;            /* ng_req_run_blocking() */
    int work_ret;
    int (*work_fn)(struct ng_node *node, struct ng_req *req);
    struct ng_node *work_node;
};

/* Prepare a request for submission (clears the graph-owned part). */
void ng_req_init(struct ng_req *req, enum ng_op op, uint64_t offset,
                 uint64_t length, uint32_t flags);

/* Give the request one flat buffer of req->length bytes (borrowed): a
 * one-element view in the request itself.  Call after ng_req_init(). */
void ng_req_set_buf(struct ng_req *req, void *buf);

/* Helpers for a view of at least off + len bytes.  Offsets are from the
 * view's start. */
/* Bytes contiguous in memory at `off` (0 past the view's elements), and
 * their address in *p. */
size_t ng_iov_piece(const struct ng_iov *v, uint64_t off, void **p);
/* The view's first `len` bytes when they are one flat buffer, else NULL
 * (the fast path for drivers that want a pointer).  Inline. */
static inline void *ng_iov_flat(const struct ng_iov *v, size_t len);
/* Copy [off, off + len) of the view out to dst, or in from src.  Inline
 * for the one-buffer case, the hot path of memory-like drivers. */
static inline void ng_iov_to_buf(const struct ng_iov *v, uint64_t off,
                                 void *dst, size_t len);
static inline void ng_iov_from_buf(const struct ng_iov *v, uint64_t off,
                                   const void *src, size_t len);
/* The same for any view (what the inline ones call when it has several
 * elements). */
void ng_iov_copy_out(const struct ng_iov *v, uint64_t off, void *dst,
                     size_t len);
void ng_iov_copy_in(const struct ng_iov *v, uint64_t off, const void *src,
                    size_t len);
void ng_iov_fill(const struct ng_iov *v, uint64_t off, int c, size_t len);
static inline void ng_iov_memset(const struct ng_iov *v, uint64_t off, int c,
                                 size_t len);
/* The view from `off` on, in *out (may be v).  No copy. */
void ng_iov_slice(const struct ng_iov *v, uint64_t off, struct ng_iov *out);
/* Fill out[0..max) with plain iovecs for the first `len` bytes, as
 * preadv(2) takes them; returns how many, and the bytes they cover in
 * *covered (less than len when max was too small). */
unsigned ng_iov_export(const struct ng_iov *v, size_t len, struct iovec *out,
                       unsigned max, size_t *covered);

/* [off, off + len) when it lies in one flat buffer, else NULL. */
static inline void *
ng_iov_at(const struct ng_iov *v, uint64_t off, size_t len)
{
    if (v->niov == 1 && off + len <= v->iov->iov_len - v->skip)
        return (unsigned char *)v->iov->iov_base + v->skip + off;
    return NULL;
}

static inline void *
ng_iov_flat(const struct ng_iov *v, size_t len)
{
    void *p = ng_iov_at(v, 0, len);

    /* A view whose first element is empty, or that skips into one. */
    if (p == NULL && ng_iov_piece(v, 0, &p) < len)
        p = NULL;
    return p;
}

static inline void
ng_iov_to_buf(const struct ng_iov *v, uint64_t off, void *dst, size_t len)
{
    void *p = ng_iov_at(v, off, len);

    if (p != NULL)
        memcpy(dst, p, len);
    else
        ng_iov_copy_out(v, off, dst, len);
}

static inline void
ng_iov_from_buf(const struct ng_iov *v, uint64_t off, const void *src,
                size_t len)
{
    void *p = ng_iov_at(v, off, len);

    if (p != NULL)
        memcpy(p, src, len);
    else
        ng_iov_copy_in(v, off, src, len);
}

static inline void
ng_iov_memset(const struct ng_iov *v, uint64_t off, int c, size_t len)
{
    void *p = ng_iov_at(v, off, len);

    if (p != NULL)
        memset(p, c, len);
    else
        ng_iov_fill(v, off, c, len);
}

/* Push a completion frame: when the request completes, cb runs first and
 * is responsible for calling ng_req_complete() again (maybe later) to
 * continue up.  Returns -1 (request untouched) when the stack is full. */
int ng_req_push(struct ng_req *req, ng_req_cb *cb, void *opaque);

/* Complete a request: pops the top frame and calls it, or calls `done`
 * when no frame is left.  `ret` is 0 or a negative errno. */
void ng_req_complete(struct ng_req *req, int ret);

/* True for ops that can change what a read returns. */
bool ng_req_changes_data(const struct ng_req *req);

const char *ng_op_name(enum ng_op op);

/* For drivers answering block status: add [.., + len) with NG_EXTENT_*
 * `flags` to req's extents, merged into the last one when the flags
 * agree.  False (nothing added) when that needs more than `max`. */
bool ng_req_add_extent(struct ng_req *req, uint32_t max, uint64_t len,
                       uint32_t flags);

/* Run fn(node, req) on a worker thread of the node's pool (its driver's
 * thread model) and complete the request on the loop thread with its
 * return value (0 or negative errno).  fn must not touch the graph. */
void ng_req_run_blocking(struct ng_node *node, struct ng_req *req,
                         int (*fn)(struct ng_node *node, struct ng_req *req));

/* ---- Edge roles -------------------------------------------------------- */

/* What a child is to its parent.  Compared on the request path, so an
 * enum; ng_role_name() gives the spelling shown to users (query-graph,
 * the graph picture). */
enum ng_role {
    NG_ROLE_FILE,                   /* "file": a format's data */
    NG_ROLE_BACKING,                /* "backing": what unallocated ranges
                                     * read from */
    NG_ROLE_FILTERED,               /* "filtered": a filter's one child */
    NG_ROLE_CHILDREN,               /* "children": one of several (quorum) */
    NG_ROLE_ROOT,                   /* "root": a BB's edge to its node */
};

const char *ng_role_name(enum ng_role role);

/* ---- Options --------------------------------------------------------- */

enum ng_opt_type {
    NG_OPT_T_STRING,    /* char * field, owned by the node state */
    NG_OPT_T_SIZE,      /* uint64_t field */
    NG_OPT_T_INT,       /* int64_t field */
    NG_OPT_T_BOOL,      /* bool field */
    NG_OPT_T_ERRNO,     /* int field: a positive errno from "EIO", "ENOSPC"
                         * or a number */
    NG_OPT_T_ENUM,      /* int field: index into `choices` */
    NG_OPT_T_CHILD,     /* struct ng_node * field: a node-name or an inline
                         * node definition; creates an edge with `role` */
    NG_OPT_T_VALUE,     /* struct ng_value * field: the raw value, owned by
                         * the node state (lists of rules and the like) */
    NG_OPT_T_CHILDREN,  /* struct ng_children field: a list, each item a
                         * node-name or an inline node definition; an edge
                         * with `role` for each (quorum's children) */
};

/* The field of an NG_OPT_T_CHILDREN option: the children in the order
 * given; the array is owned by the node state. */
struct ng_children {
    struct ng_node **nodes;
    size_t n;
};

struct ng_opt_desc {
    const char *name;           /* QEMU spelling, dots for nesting:
                                 * "cache.direct" */
    enum ng_opt_type type;
    size_t offset;              /* offsetof the field in the state */
    const char *def;            /* default as text, NULL = required
                                 * (CHILD, VALUE: NULL = optional absent) */
    const char *help;
    const char *const *choices; /* ENUM: NULL-terminated */
    enum ng_role role;          /* CHILD, CHILDREN: edge role */
    bool required;              /* CHILD, CHILDREN, VALUE: must be given */
    bool nullable;              /* CHILD: `null` means "no child, on
                                 * purpose" and sets the bool field at
                                 * null_offset (qcow2's backing: null) */
    size_t null_offset;
};

#define NG_OPT_STRING(n, st, f, d, h) \
    { .name = (n), .type = NG_OPT_T_STRING, .offset = offsetof(st, f), \
      .def = (d), .help = (h) }
#define NG_OPT_SIZE(n, st, f, d, h) \
    { .name = (n), .type = NG_OPT_T_SIZE, .offset = offsetof(st, f), \
      .def = (d), .help = (h) }
#define NG_OPT_INT(n, st, f, d, h) \
    { .name = (n), .type = NG_OPT_T_INT, .offset = offsetof(st, f), \
      .def = (d), .help = (h) }
#define NG_OPT_BOOL(n, st, f, d, h) \
    { .name = (n), .type = NG_OPT_T_BOOL, .offset = offsetof(st, f), \
      .def = (d), .help = (h) }
#define NG_OPT_ERRNO(n, st, f, d, h) \
    { .name = (n), .type = NG_OPT_T_ERRNO, .offset = offsetof(st, f), \
      .def = (d), .help = (h) }
#define NG_OPT_ENUM(n, st, f, d, c, h) \
    { .name = (n), .type = NG_OPT_T_ENUM, .offset = offsetof(st, f), \
      .def = (d), .choices = (c), .help = (h) }
#define NG_OPT_CHILD(n, st, f, r, req, h) \
    { .name = (n), .type = NG_OPT_T_CHILD, .offset = offsetof(st, f), \
      .role = (r), .required = (req), .help = (h) }
#define NG_OPT_CHILD_NULLABLE(n, st, f, nf, r, h) \
    { .name = (n), .type = NG_OPT_T_CHILD, .offset = offsetof(st, f), \
      .role = (r), .nullable = true, .null_offset = offsetof(st, nf), \
      .help = (h) }
#define NG_OPT_CHILDREN(n, st, f, r, req, h) \
    { .name = (n), .type = NG_OPT_T_CHILDREN, .offset = offsetof(st, f), \
      .role = (r), .required = (req), .help = (h) }
#define NG_OPT_VALUE(n, st, f, req, h) \
    { .name = (n), .type = NG_OPT_T_VALUE, .offset = offsetof(st, f), \
      .required = (req), .help = (h) }
#define NG_OPT_END { .name = NULL }

/* An errno given as a name ("EIO", "ENOSPC") or a positive number, for
 * options nested in NG_OPT_VALUE trees (blkdebug's rules).  Stores a
 * positive errno in *out; fails with a located error naming `what`. */
int ng_value_to_errno(const struct ng_value *v, const char *what, int *out,
                      struct ng_error *err);

/* ---- Drivers ---------------------------------------------------------- */

/* How a driver's blocking work may run (ng_req_run_blocking(),
 * ng_node_queue_work()). */
enum ng_thread_model {
    NG_THREADS_NONE,            /* never blocks: no worker pool */
    NG_THREADS_SERIALIZE_NODE,  /* one piece of work at a time per node */
    NG_THREADS_PARALLEL,        /* up to `threads` pieces at once */
};

/* Which threads a driver's blocking work runs on. */
enum ng_pool_scope {
    NG_POOL_PER_DRIVER,         /* one pool for every node of the driver */
    NG_POOL_PER_NODE,           /* each node its own */
};

struct ng_driver {
    const char *name;           /* "file", "memory", "throttle", ... */
    const char *help;           /* one line for --help and docs */
    bool is_filter;             /* exactly one child, NG_ROLE_FILTERED */
    /* Several children and its own facts, yet spliced in above a node
     * and taken out again like a filter (blkverify, quorum): see
     * ng_graph_insert_filter() for where the node goes among its
     * children. */
    bool multi_child_filter;
    size_t state_size;          /* bytes of per-node state, zeroed, then
                                 * filled from `opts` before open() */
    const struct ng_opt_desc *opts;
    unsigned frames;            /* completion frames (ng_req_push) submit
                                 * may push on a request it passes on,
                                 * besides the choke point's one per node;
                                 * the graph refuses a tree whose deepest
                                 * path needs more than NG_REQ_MAX_FRAMES */
    size_t req_ctx_size;        /* bytes of per-request context, see
                                 * ng_req_ctx(); 0 = none */
    /* The ops submit handles, NG_OP_BIT(op) each, written out one by one
     * so that an op added later cannot slip past a driver that does not
     * know it (nbdkit's rule for filters).  0 = every op: only for
     * filters that pass everything on unchanged (nofilter).  For an op
     * left out, the choke point answers what has a correct answer that
     * needs no driver (trim and cache: nothing, block status: all data;
     * the node's caps lose NG_CAP_TRIM, NG_CAP_CACHE, NG_CAP_EXTENTS
     * accordingly, and NG_CAP_ZERO & co without write-zeroes, the write
     * caps without write) and fails the rest (read, write, flush) with
     * -ENOTSUP. */
    uint32_t ops;

    /* Blocking work: how it may run, on whose threads, and how many
     * threads a pool has (0 = 16).  A pool is made before the node's
     * open, so open may use it too. */
    enum ng_thread_model thread_model;
    enum ng_pool_scope pool_scope;
    unsigned threads;

    /* Open, in one of two shapes; children are attached and open, so
     * either may do I/O through them (ng_node_submit).  Loop thread.
     * open: synchronous; may block briefly (open(2)).  Returns 0, or -1
     *   with *err set.
     * open_async: may complete later (I/O, work on a thread): calls
     *   ng_node_opened(node, 0 or -1) exactly once, maybe inline, having
     *   filled *err (borrowed until then) on failure. */
    int (*open)(struct ng_node *node, struct ng_error *err);
    void (*open_async)(struct ng_node *node, struct ng_error *err);
    /* Optional, with open_async: the daemon stops while the open has not
     * answered (ng_graph_cancel_opens): give it up and answer it soon
     * with -1, maybe inline.  An open that may wait long (for a remote)
     * needs it, or the daemon's exit waits too. */
    void (*cancel_open)(struct ng_node *node);

    /* Close, in one of two shapes.  Loop thread, no request in flight
     * from above; children are still open.  Frees what open made; the
     * graph frees option fields (strings, values) itself afterwards.
     * close_async calls ng_node_closed(node) once done, maybe inline. */
    void (*close)(struct ng_node *node);
    void (*close_async)(struct ng_node *node);

    /* Loop thread.  The choke point (ng_node_submit) has checked: the
     * range lies inside the node, the op is in `ops` and it and its flags
     * are in the node's caps, writes only on writable nodes; and the
     * request keeps to the node's request_alignment and max_transfer
     * (block status too: its answer is cut back for the caller).  The
     * buffer (req->iov) may have several elements: use the ng_iov_*
     * helpers.  Must eventually call ng_req_complete(req, 0 or -errno)
     * exactly once; may do so inline.  NULL for a filter means: forward
     * everything unchanged. */
    void (*submit)(struct ng_node *node, struct ng_req *req);
    /* Optional: a fast path on the loop thread, tried before submit, for
     * a request that cannot block here (a file on tmpfs, a read the page
     * cache answers).  The same checks hold as for submit.  Either it
     * does the request (ng_req_complete, maybe inline) and returns true,
     * or it leaves it untouched and returns false: submit gets it.  The
     * choke point never offers it a job's bulk copy (NG_REQ_BACKGROUND):
     * no client waits for that, and clients would wait while the loop
     * copies.  So a driver's shortcut lives here, not in submit. */
    bool (*submit_inline)(struct ng_node *node, struct ng_req *req);

    /* Optional: fill this node's facts (size, caps, transfer limits).
     * Loop thread; called after open(), and again whenever a child's
     * facts change or the node is reconfigured live, always bottom up, so
     * children's facts (ng_node_facts()) are current; inside the drained
     * section of a graph mutation.  May read the node's state and its
     * children's facts, nothing else, and must not block: the request
     * path reads only the result.  `facts` arrives filled: for a filter
     * with its child's facts, for others with size 0, no caps, alignment
     * 1 and no transfer limits; has_backing is set.  Without a hook a
     * filter has its child's facts and a leaf is an empty read-only disk.
     * The graph takes the write caps away afterwards when the node is
     * read-only.  Returns 0, or -1 with *err set. */
    int (*refresh)(struct ng_node *node, struct ng_node_facts *facts,
                   struct ng_error *err);

    /* Optional: a drained section over this node begins or ends (see
     * ng_drain_begin()).  Loop thread.  drain_begin runs on every node
     * in the trees of the BBs the section quiesces, parents before
     * children, right after those BBs stop admitting and before the
     * requests already inside have completed; drain_end runs on the same
     * nodes in the reverse order (children first), before the BBs'
     * queued requests are resubmitted.  Sections may nest and overlap:
     * count.  A driver that holds requests back (throttle) must let them
     * go on drain_begin, and let new ones through until drain_end, or the
     * section would wait for it.  A node made during a section gets
     * neither call; one destroyed during it gets close() instead of
     * drain_end. */
    void (*drain_begin)(struct ng_node *node);
    void (*drain_end)(struct ng_node *node);

    /* Optional: options the control channel may change on a live node
     * (throttle limits, blkdebug rules).  Loop thread, inside a drained
     * section. */
    int (*reconfigure)(struct ng_node *node, const struct ng_value *opts,
                       struct ng_error *err);

    /* Optional: QEMU's x-blockdev-change, for drivers with a list of
     * children (quorum); see ng_graph_change_child().  Loop thread; with
     * check_only false inside a drained section over the node.
     * add_child: could `child` (open, not one of ours) become one more
     * child?  Unless check_only, also take it into the driver's state;
     * the graph makes the edge (role NG_ROLE_CHILDREN) and refreshes.
     * del_child: the child the user calls `child` (QEMU's "children.N",
     * or its node-name), if it may go; unless check_only, also taken out
     * of the driver's state; the graph then drops the edge.  Return 0
     * (add) or the child (del), or -1 (NULL) with *err set and nothing
     * changed. */
    int (*add_child)(struct ng_node *node, struct ng_node *child,
                     bool check_only, struct ng_error *err);
    struct ng_node *(*del_child)(struct ng_node *node, const char *child,
                                 bool check_only, struct ng_error *err);
    /* Optional: QEMU's name of the child on edge `e` (quorum:
     * "children.N"), written to buf (size bytes), for queries and for
     * naming a child to keep (ng_graph_remove_filter()).  Without it a
     * child is called by its role's name.  Loop thread. */
    void (*child_label)(struct ng_node *node, const struct ng_edge *e,
                        char *buf, size_t size);
    /* Optional: make the node at least `size` bytes long (a format above
     * allocating past the end: qcow2; block_resize, ng_node_resize(),
     * which wants exactly `size`).  Only ever called with `size` larger
     * than the node; not drained: requests may be in flight.  Loop
     * thread, may block briefly; call through ng_node_grow(). */
    int (*grow)(struct ng_node *node, uint64_t size, struct ng_error *err);
    /* Optional: make the node exactly `size` bytes, fewer than now
     * (block_resize).  Only called on a node with no parents, so no
     * request is in flight and nobody was told the old size.  Loop
     * thread, may block briefly; call through ng_node_resize(). */
    int (*shrink)(struct ng_node *node, uint64_t size, struct ng_error *err);

    /* Optional: the path this node reads, for messages (QEMU's
     * bs->filename); see ng_node_filename(). */
    const char *(*filename)(struct ng_node *node);

    /* Optional: options to create the node from instead of `opts`, before
     * they are parsed (qcow2 adds the backing file its header names as
     * an inline child).  `depth` is the number of nodes the same add has
     * created so far.  May read files (blocking briefly).  Returns 0 with
     * *out NULL (use opts) or a new value the graph frees, or -1 with
     * *err set. */
    int (*expand_opts)(struct ng_graph *g, const struct ng_value *opts,
                       unsigned depth, struct ng_value **out,
                       struct ng_error *err);

    /* Optional: the node's backing child changes on a live node
     * (ng_node_set_backing(): blockdev-snapshot, block-stream,
     * block-commit).  Loop thread, inside a drained section, nothing in
     * flight in this node.  `backing` (NULL: no backing from now on) is
     * on the node's "backing" edge already, and when the driver's option
     * table has a CHILD option of role NG_ROLE_BACKING, the graph has set
     * that field to it too.  Update whatever else the driver keeps about
     * its backing, without waiting for I/O (it may start some of its own
     * to its children, which the drained section does not hold back:
     * qcow2 rewrites its header); return 0, or -1 with *err to refuse
     * (the graph then puts the old backing back and calls the hook again
     * with it).  A driver whose backing lives in that option field alone
     * (memory) needs no hook; a driver with neither hook nor such an
     * option cannot change its backing live. */
    int (*set_backing)(struct ng_node *node, struct ng_node *backing,
                       struct ng_error *err);
};

/* What to call the image `node` reads in a message: its driver's
 * filename hook, else its first child's, else the node's name. */
const char *ng_node_filename(struct ng_node *node);

/* Grow `node` to at least `size` bytes through its driver's grow hook,
 * then refresh its facts and its ancestors'.  Growing never takes from
 * what clients were told, so it needs no drained section.  Fails with
 * ENOSPC when the driver cannot grow, EROFS on a read-only node. */
int ng_node_grow(struct ng_node *node, uint64_t size, struct ng_error *err);
/* The grow hook of a filter that is exactly as long as its one child
 * (blkdebug, throttle, ...): grows the child, whose refresh reaches the
 * filter.  Not for a filter whose job sized something by the node (a
 * backup's copy-before-write, a mirror's write tracker). */
int ng_node_grow_child(struct ng_node *node, uint64_t size,
                       struct ng_error *err);

/* QMP block_resize: make `node` exactly `size` bytes.  Grows through
 * ng_node_grow() (a filter passes it to its child); refuses a node whose
 * driver, or the one below its filters, has no grow hook.  Shrinks only
 * a node nothing uses (no parents: no export, job or node above) whose
 * driver has a shrink hook; a shrink under an export names it (its
 * clients were told the size).  Loop thread.  The caller takes the NAC
 * claims (server/). */
int ng_node_resize(struct ng_node *node, uint64_t size, struct ng_error *err);
/* Its checks alone (what a dry run can tell): the size, the driver. */
int ng_node_resize_check(struct ng_node *node, uint64_t size,
                         struct ng_error *err);

/* For open_async and close_async: the open or close finished.  ret is 0,
 * or -1 with the open's *err filled. */
void ng_node_opened(struct ng_node *node, int ret);
void ng_node_closed(struct ng_node *node);

/* For reconfigure hooks: `opts` is a map of options to change.  Checks
 * that each key is one of `live` (NULL-terminated: what the driver can
 * change on a live node) or leaves the node as it is ("driver" naming its
 * driver, "node-name" its name, a CHILD option naming the current child).
 * Returns 0, or -1 with a located error. */
int ng_node_reconfigure_check(struct ng_node *node,
                              const struct ng_value *opts,
                              const char *const *live, struct ng_error *err);

/* Change options of a live node through its driver's reconfigure hook
 * (throttle limits, blkdebug rules), then refresh its facts and its
 * ancestors'.  Not drained: the hooks are written to change state between
 * two requests on the loop thread.  The options that change live today
 * change no facts; one that could take caps or size away would have to
 * go through a mutation, which checks what clients were told. */
int ng_node_reconfigure(struct ng_node *node, const struct ng_value *opts,
                        struct ng_error *err);

/* A driver registry: a NULL-terminated list of the drivers a graph can
 * create nodes of.  graph/ names none itself; the caller hands the list in
 * (filters/filters.c has the one of every driver compiled in).  Returns
 * the driver called `name`, or NULL. */
const struct ng_driver *ng_driver_find(const struct ng_driver *const *drivers,
                                       const char *name);

/* ---- Nodes and edges ---------------------------------------------------- */

struct ng_edge {
    struct ng_node *parent;         /* NULL when the parent is a BB */
    struct ng_bb *bb;               /* the BB, when parent == NULL */
    struct ng_node *child;
    enum ng_role role;
    struct ng_edge *next_child;     /* in parent's child list */
    struct ng_edge *next_parent;    /* in child's parent list */
};

struct ng_node {
    struct ng_graph *graph;
    char *name;                     /* node-name, owned */
    const struct ng_driver *driver;
    void *state;                    /* driver_state_size bytes, owned */
    struct ng_edge *children;       /* edges down, owned */
    struct ng_edge *parents;        /* edges up (owned by the parents) */
    bool read_only;
    bool implicit;                  /* created for an export's config */
    bool auto_named;                /* inline child without a node-name */
    bool inline_def;                /* defined inline in a parent's options;
                                     * removed with its last parent */
    char *implicit_owner;           /* export that made it, when implicit */
    uint64_t in_flight;             /* requests inside this node */
    struct ng_node *next;           /* graph's node list */
    struct ng_node *prev;           /* so removal need not walk the list */
    uint64_t stats[NG_OP__COUNT];   /* requests seen, by op */
    struct ng_node_facts facts;     /* cached: see ng_node_refresh() */
    struct ng_req_ctx *req_ctx_free;    /* see ng_req_ctx() */
    struct ng_split *split_free;        /* graph/split.c's contexts */
    struct ng_split *split_head, *split_tail;   /* requests changing data
                                     * on an aligned node, oldest first */
    bool opened;                    /* its open succeeded, not closed */
    struct ng_pool *pool;           /* blocking work (graph/threads.c) */
    bool work_busy;                 /* SERIALIZE_NODE: work in the pool */
    struct ng_work *work_wait_head, *work_wait_tail;  /* ... and after it */
    struct ng_add *adding;          /* the add opening it, until it joins
                                     * the graph's node list */
    struct ng_remove *removing;     /* the removal closing it */
    struct ng_bitmap *bitmaps;      /* dirty bitmaps, owned
                                     * (graph/bitmap.h) */
    bool spliced_live;              /* a filter spliced in live ... */
    struct ng_edge *spliced_over;   /* ... and its edge to the node it went
                                     * above (which a pivot may replace),
                                     * until that edge goes */
};

static inline void *
ng_node_state(struct ng_node *node)
{
    return node->state;
}

/* The filter's one child (or the first child for others). */
struct ng_node *ng_node_child(struct ng_node *node);
/* Child on the edge with this role, or NULL. */
struct ng_node *ng_node_child_role(struct ng_node *node, enum ng_role role);
/* NODE itself unless it is a filter; else its filtered child, down to
 * the first node that is none (NULL if a filter has no child). */
struct ng_node *ng_node_skip_filters(struct ng_node *node);

/* The node's facts (see struct ng_node_facts), as cached at the last
 * refresh: O(1), for the request path.  Borrowed: changes only when the
 * graph changes. */
const struct ng_node_facts *ng_node_facts(const struct ng_node *node);
int64_t ng_node_length(const struct ng_node *node); /* facts->size */
uint32_t ng_node_caps(const struct ng_node *node);  /* facts->caps */
/* Recompute the node's facts (its driver's refresh hook over its
 * children's cached facts) and, where they changed, its ancestors'.  The
 * graph calls it after open, in every mutation and after a live
 * reconfigure; a driver whose facts change on their own (a remote disk
 * grew) calls it too.  Loop thread.  Returns 0, or -1 with *err set;
 * the facts of the nodes not yet reached then stay as they were. */
int ng_node_refresh(struct ng_node *node, struct ng_error *err);
/* ng_node_refresh() on each parent node: after an edge to `node` was
 * added or moved. */
int ng_node_refresh_parents(struct ng_node *node, struct ng_error *err);
uv_loop_t *ng_node_loop(struct ng_node *node);
/* "node 'NAME': ..." to the graph's warn hook (stderr without one). */
void ng_node_warn(struct ng_node *node, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* For a driver with req_ctx_size > 0: the context of `req` at `node`, a
 * zeroed block of req_ctx_size bytes (aligned for any type) that belongs
 * to this request while the node holds it, from the first call until the
 * request completes at this node; the core takes it back then, before
 * the completion goes further up.  Every call for the same request at
 * the same node returns the same block.  Only valid between the driver's
 * submit and its ng_req_complete(); NULL on ENOMEM.  Contexts are kept
 * on a free list per node, so steady-state I/O allocates nothing. */
void *ng_req_ctx(struct ng_node *node, struct ng_req *req);

/* The choke point: every request reaches a driver through here.  Checks
 * range, op and flags against caps and writability (failing the request
 * with -EINVAL/-EPERM/-ENOTSUP/-EROFS without calling the driver), counts
 * it in flight, then calls the driver's submit. */
void ng_node_submit(struct ng_node *node, struct ng_req *req);

/* For filters: pass the request, unchanged, to our one child. */
void ng_node_forward(struct ng_node *node, struct ng_req *req);

/* ---- BlockBackends ---------------------------------------------------- */

struct ng_bb {
    struct ng_graph *graph;
    char *name;                     /* export name or job ID, owned */
    struct ng_edge *root;           /* edge to the root node, or NULL */
    bool writable;
    uint64_t in_flight;
    unsigned quiesce;               /* drain depth; > 0 queues requests */
    struct ng_req *queue_head, *queue_tail;
    struct ng_bb *next;             /* graph's BB list */
    struct ng_bb *prev;
    struct ng_bb *older_same_name;  /* the next older BB of this name */

    /* What the clients connected through this BB were told (see
     * ng_bb_promise()); mutations must not take it away. */
    unsigned promise_clients;
    uint64_t promise_size;          /* the largest size told, in bytes */
    unsigned promise_told[NG_CAP__BITS];    /* clients told each cap */
    bool drain_exempt;              /* left out of a drain that begins
                                     * now: a job's own BB inside the
                                     * section it opens */
    const char *job_id;             /* a job's BB: the job's ID (borrowed
                                     * from the job, which outlives it);
                                     * NULL for an export's */
};

/* Who uses a node through edge e, for messages: ("node", its name),
 * ("export", the BB's name) or ("job", the job's ID). */
const char *ng_edge_user_kind(const struct ng_edge *e);
const char *ng_edge_user_name(const struct ng_edge *e);

/* Create a BB on `root` (may be NULL: no medium).  A writable BB needs a
 * writable root. */
struct ng_bb *ng_bb_new(struct ng_graph *g, const char *name,
                        struct ng_node *root, bool writable,
                        struct ng_error *err);
/* The BB must have nothing in flight.  NULL-safe. */
void ng_bb_free(struct ng_bb *bb);

struct ng_node *ng_bb_root(struct ng_bb *bb);
int64_t ng_bb_length(struct ng_bb *bb);
uint32_t ng_bb_caps(struct ng_bb *bb);     /* without NG_CAP_WRITE & co
                                            * when the BB is read-only */

/* A client of this BB (an NBD connection) was told the BB has `size`
 * bytes and offers the NG_CAP_* in `caps` (those behind the transmission
 * flags it got).  Until the matching ng_bb_unpromise(), a mutation that
 * would shrink the BB below what it was told or take one of those caps
 * away is refused (ng_bb_check_promise()).  Loop thread. */
void ng_bb_promise(struct ng_bb *bb, uint64_t size, uint32_t caps);
/* That client is gone (`caps` as promised); with the last one the record
 * is cleared. */
void ng_bb_unpromise(struct ng_bb *bb, uint32_t caps);
/* For mutations, after the graph changed and facts were refreshed: the
 * BB offered `old_size` bytes and `old_caps` (ng_bb_length/caps) before.
 * Fails when the change shrinks it below what a client was told, or
 * takes away a cap a client was told and the BB still had; the message
 * names the BB (an export), the flag or size and the number of clients.
 * A cap a client was told but that an earlier forced change already
 * took away does not count again. */
int ng_bb_check_promise(struct ng_bb *bb, int64_t old_size, uint32_t old_caps,
                        struct ng_error *err);

/* Submit through the BB; req->done runs exactly once.  While the BB is
 * drained the request waits in a queue, in order.  A BB without medium
 * fails requests with -ENOMEDIUM. */
void ng_bb_submit(struct ng_bb *bb, struct ng_req *req);

/* ---- The graph ----------------------------------------------------------- */

/* A warning from a driver about data, not a failed call (blkverify's
 * mismatch, quorum's bad child): one line, no trailing newline.  graph/
 * and filters/ have no log of their own; the daemon points this at its. */
typedef void ng_graph_warn_fn(void *opaque, const char *msg);

/* An event a driver reports to the daemon's clients, under QEMU's name
 * and with QEMU's data (quorum's QUORUM_REPORT_BAD and QUORUM_FAILURE):
 * a name and flat fields, borrowed for the call.  graph/ and filters/
 * know no QMP; the daemon subscribes (ng_graph's event hook) and turns
 * each into a QMP event. */
enum ng_event_kind { NG_EVENT_STR, NG_EVENT_INT, NG_EVENT_BOOL };

struct ng_event_field {
    const char *key;
    enum ng_event_kind kind;
    const char *str;                /* NG_EVENT_STR */
    int64_t num;                    /* NG_EVENT_INT; NG_EVENT_BOOL: != 0 */
};

typedef void ng_graph_event_fn(void *opaque, const char *event,
                               const struct ng_event_field *fields,
                               size_t n);

/* Hand an event to the graph's event hook; nothing happens without one.
 * Loop thread. */
void ng_graph_emit(struct ng_graph *g, const char *event,
                   const struct ng_event_field *fields, size_t n);

struct ng_graph {
    uv_loop_t *loop;                /* borrowed */
    const struct ng_driver *const *drivers;  /* registry, borrowed */
    struct ng_node *nodes;          /* all nodes, owned, newest first */
    struct ng_bb *bbs;              /* all BBs, owned, newest first */
    struct ng_strmap node_index;    /* node-name -> node */
    struct ng_strmap bb_index;      /* BB name -> the newest BB of that
                                     * name (BBs may share one) */
    unsigned anon_counter;          /* for auto-named inline nodes */
    struct ng_drain *drains;        /* drained sections not yet ended */
    uv_timer_t drain_timer;         /* runs drained callbacks outside any
                                     * request's call stack */
    struct ng_object *objects;      /* graph objects, owned */
    struct ng_pool *pools;          /* per-driver worker pools */
    uint64_t client_request_ms;     /* uv_now() of the last request
                                     * through a BB no job owns (a
                                     * client's); 0: none yet.  The copy
                                     * engine holds back while it is
                                     * recent */
    struct ng_add *adds;            /* ng_graph_add_node()s in flight */
    unsigned removing;              /* node removals in flight */
    bool freeing;                   /* ng_graph_free() called */
    bool opens_cancelled;           /* ng_graph_cancel_opens() called */
    bool free_stepping;             /* graph_free_step() on the stack */
    ng_graph_warn_fn *warn;         /* where drivers' warnings go (the
                                     * daemon sets its log); NULL = stderr */
    void *warn_opaque;
    ng_graph_event_fn *event;       /* where drivers' events go (the
                                     * daemon's control clients); NULL =
                                     * nowhere */
    void *event_opaque;
    bool inspect_only;              /* --check-config: drivers open their
                                     * files read-only and take no locks,
                                     * so a config whose files a running
                                     * daemon holds can be checked */
};

/* `drivers`: the registry nodes are created from (NULL-terminated,
 * borrowed; it must outlive the graph). */
struct ng_graph *ng_graph_new(uv_loop_t *loop,
                              const struct ng_driver *const *drivers);
/* Frees every BB and node; nothing may be in flight.  Nodes close top
 * down, each after its parents, and may take a while (close_async); the
 * graph is freed once all are gone.  Adds still in flight finish without
 * their callbacks and their nodes are closed.  Run the loop afterwards
 * (uv_run) until it returns.  NULL-safe. */
void ng_graph_free(struct ng_graph *g);

struct ng_node *ng_graph_find(struct ng_graph *g, const char *name);
struct ng_bb *ng_graph_find_bb(struct ng_graph *g, const char *name);

/* The end of ng_graph_add_node(): node is the new node (borrowed: the
 * graph owns it) and err NULL, or node NULL and err says why. */
typedef void ng_node_added_fn(void *opaque, struct ng_node *node,
                              const struct ng_error *err);

/* Create and open a node from options as blockdev-add takes them
 * ("driver", "node-name" unless `name` is given, "read-only", then the
 * driver's own).  Children named by node-name must exist; inline child
 * definitions are created too (auto-named "#ngN" unless they carry a
 * node-name) and opened first, one after the other, children before
 * parents.  The opens may take a while (open_async); meanwhile the new
 * nodes are not in the graph's node list and their names are taken.
 * All or nothing: after a failed open, the nodes opened for it are
 * closed and removed before cb runs.
 * Returns -1 with *err set when the options are wrong (then cb never
 * runs), else 0 and cb runs exactly once, maybe before this returns. */
int ng_graph_add_node(struct ng_graph *g, const char *name,
                      const struct ng_value *opts, ng_node_added_fn *cb,
                      void *opaque, struct ng_error *err);

/* The daemon stops: give up every open in flight, and each async open
 * started from now on, through the drivers' cancel_open hooks, so that
 * nobody waits for a remote that does not answer.  Each add's callback
 * then runs with the failure, as for any failed open (maybe before this
 * returns).  Opens of drivers without the hook finish on their own. */
void ng_graph_cancel_opens(struct ng_graph *g);

/* The same for callers that cannot wait (inside a drained section): when
 * an open does not complete at once, fails with EAGAIN, and the nodes
 * are closed once it does. */
struct ng_node *ng_graph_add_node_now(struct ng_graph *g, const char *name,
                                      const struct ng_value *opts,
                                      struct ng_error *err);

/* Check node options against the driver's option table without opening
 * anything: "driver" present and known, every key known, types right,
 * required options present.  For each child reference (a node-name given
 * where a CHILD option is expected) ref_cb is called with the name and
 * where it was written; inline child definitions (mappings) are checked
 * recursively.  Returns 0, or -1 with *err set to "file:line:column: ...". */
typedef void ng_ref_cb(void *opaque, const char *ref, const struct ng_loc *loc);
int ng_node_opts_check(const struct ng_driver *const *drivers,
                       const struct ng_value *opts, ng_ref_cb *ref_cb,
                       void *opaque, struct ng_error *err);

/* Called once a removal closed every node it took away. */
typedef void ng_graph_done_fn(void *opaque);

/* Remove a node nobody uses (no parent edge, no BB); also removes inline
 * children that nothing else uses.  The node leaves the graph's node list
 * at once; cb (may be NULL) runs once it and those children are closed,
 * maybe before this returns.  Returns -1 (cb never runs) or 0. */
int ng_graph_del_node(struct ng_graph *g, const char *name,
                      ng_graph_done_fn *cb, void *opaque,
                      struct ng_error *err);
/* The same checks, changing nothing. */
int ng_graph_check_del_node(struct ng_graph *g, const char *name,
                            struct ng_error *err);

/* ---- Graph objects (QEMU's object-add) ------------------------------- */

/* Named objects that live beside the nodes and that drivers above graph/
 * share: throttle groups (filters/throttle.c), later dirty bitmaps and TLS
 * credentials.  The graph knows no kind: each is a type with a name and a
 * destructor, and an object is found by (type, id).  Loop thread. */
struct ng_object_type {
    const char *name;               /* "throttle group": for messages */
    void (*free)(void *obj);        /* destructor */
};

/* Register `obj` as `id` of `type`.  On success the graph owns obj and
 * frees it with type->free on ng_graph_object_del() or ng_graph_free();
 * on failure (EEXIST, ENOMEM) the caller keeps it. */
int ng_graph_object_add(struct ng_graph *g, const struct ng_object_type *type,
                        const char *id, void *obj, struct ng_error *err);
/* The object, or NULL.  Borrowed. */
void *ng_graph_object_find(struct ng_graph *g,
                           const struct ng_object_type *type,
                           const char *id);
/* Unregister and free the object (type->free).  Fails with ENOENT. */
int ng_graph_object_del(struct ng_graph *g, const struct ng_object_type *type,
                        const char *id, struct ng_error *err);
/* Unregister the object without freeing it: the caller owns it now
 * (something may still use it, as a TLS session its credentials).
 * NULL when there is none. */
void *ng_graph_object_take(struct ng_graph *g,
                           const struct ng_object_type *type,
                           const char *id);
/* Call fn for each object of `type` (every object when NULL), newest
 * first.  fn must not add or delete objects. */
typedef void ng_object_fn(void *opaque, const struct ng_object_type *type,
                          const char *id, void *obj);
void ng_graph_object_foreach(struct ng_graph *g,
                             const struct ng_object_type *type,
                             ng_object_fn *fn, void *opaque);

/* ---- Drain ------------------------------------------------------------- */

typedef void ng_drained_fn(void *opaque);

/* Quiesce every BB whose tree contains `node` (all BBs when node is NULL):
 * new requests at those BBs queue and every node in their trees gets its
 * driver's drain_begin (parents first); when the requests already inside
 * them have completed, `cb` runs on the loop — never inline, and never
 * inside a request's call stack, so it may change the graph freely.  The
 * handle remembers which BBs and nodes it quiesced, so the graph may be
 * changed freely before ng_drain_end(); a BB made meanwhile (ng_bb_new())
 * whose tree contains `node` joins the section, as QEMU drains a new
 * parent of a drained node.  Returns NULL only on ENOMEM. */
struct ng_drain *ng_drain_begin(struct ng_graph *g, struct ng_node *node,
                                ng_drained_fn *cb, void *opaque,
                                struct ng_error *err);
/* End the drained section: drain_end on the nodes still there (children
 * first), then queued requests are resubmitted in order and the handle is
 * freed.  Must be called after `cb` ran. */
void ng_drain_end(struct ng_drain *d);

/* ---- Mutations ---------------------------------------------------------- */

/* A change to the graph, run inside a drained section on the loop thread.
 * Returns 0, or -1 with *err set and the graph as it was. */
typedef int ng_mutation_fn(struct ng_graph *g, void *opaque,
                           struct ng_error *err);
/* Called once the mutation ran and the section ended; err is NULL on
 * success. */
typedef void ng_mutation_done_fn(void *opaque, const struct ng_error *err);

/* Drain the BBs above `node` (all when NULL), run fn, undrain, call done.
 * done never runs inline.  Returns -1 only when the section could not
 * begin (ENOMEM); then neither fn nor done runs. */
int ng_graph_mutate(struct ng_graph *g, struct ng_node *node,
                    ng_mutation_fn *fn, ng_mutation_done_fn *done,
                    void *opaque, struct ng_error *err);

/* QEMU's x-blockdev-change: on node `parent` (a driver with add_child
 * and del_child hooks: quorum), add node `node` as a new child (child
 * NULL), or remove the child called `child` (node NULL); exactly one.
 * The removed child stays in the graph.  An added child must not make a
 * cycle or a chain too deep for a request, nor take a size or a cap away
 * from what a connected client was told.  Run inside a drained section
 * over parent (ng_graph_mutate()).  Returns 0, or -1 with *err set and
 * the graph as it was. */
int ng_graph_change_child(struct ng_graph *g, const char *parent,
                          const char *child, const char *node,
                          struct ng_error *err);
/* The same checks, changing nothing (before draining; the drained run
 * checks again). */
int ng_graph_check_change_child(struct ng_graph *g, const char *parent,
                                const char *child, const char *node,
                                struct ng_error *err);

/* Checks a filter insertion would pass, without changing anything:
 * `node` exists, `filter_opts` names a filter driver and valid options,
 * its node-name is free, and each BB in `bbs` (may be NULL = all parents)
 * is a parent of `node`. */
int ng_graph_check_insert_filter(struct ng_graph *g, const char *node,
                                 const struct ng_value *filter_opts,
                                 const char *const *bbs, size_t n_bbs,
                                 struct ng_error *err);

/* Flags of the mutations below. */
#define NG_MUTATE_FORCE (1u << 0)   /* go through even when it takes from an
                                     * export what its connected clients
                                     * were told (ng_bb_check_promise());
                                     * their requests that need it then
                                     * fail at the choke point */

/* Create a filter node from `filter_opts` (its child option is set to
 * `node`) and re-link `node`'s parents to it: all of them, or only the
 * edges from the BBs named in `bbs`; refresh the facts above it.  Call
 * inside a drained section.  Refused, with the graph exactly as it was,
 * when the new facts would take from an export what its clients were
 * told (unless NG_MUTATE_FORCE).
 * A multi_child_filter driver gets `node` in the first of its child
 * options (in its option table's order) that `filter_opts` leaves out;
 * a list of children (quorum's) gets it in front.  The other children
 * are named in `filter_opts` (blkverify: test=N, or raw=N when test is
 * given; quorum: children [N, the given ones...]). */
struct ng_node *ng_graph_insert_filter(struct ng_graph *g, const char *node,
                                       const struct ng_value *filter_opts,
                                       const char *const *bbs, size_t n_bbs,
                                       unsigned flags, struct ng_error *err);

/* The nodes `filter_opts` names as children besides the node below (a
 * multi_child_filter's other children), for the caller to claim: up to
 * max names, borrowed from filter_opts; returns how many there are
 * (maybe more than max); 0 when the driver is not a filter. */
size_t ng_graph_filter_other_children(struct ng_graph *g,
                                      const struct ng_value *filter_opts,
                                      const char **names, size_t max);
/* The options a filter inserted above `node` is made from: filter_opts
 * with `node` among its children.  New value (caller frees), or NULL
 * (not a filter driver, ENOMEM). */
struct ng_value *ng_graph_filter_opts(struct ng_graph *g, const char *node,
                                      const struct ng_value *filter_opts);

int ng_graph_check_remove_filter(struct ng_graph *g, const char *name,
                                 struct ng_error *err);
/* Re-link the filter's parents to its child, refresh the facts above
 * and remove the filter.  Call inside a drained section.  Refused like
 * ng_graph_insert_filter(), the graph as it was.  For a
 * multi_child_filter, as ng_graph_remove_filter_keep() with keep NULL. */
int ng_graph_remove_filter(struct ng_graph *g, const char *name,
                           unsigned flags, struct ng_error *err);
/* A job's own filter (mirror_top, copy-before-write, copy-on-read) out
 * again, in a drained section of its own and forced (passing everything
 * through, it takes nothing from anybody); then done(opaque, err), err
 * NULL when it went.  done never runs inline, except when the section
 * cannot begin (ENOMEM): then the filter stays, passing through. */
void ng_graph_remove_job_filter(struct ng_graph *g, struct ng_node *filter,
                                ng_mutation_done_fn *done, void *opaque);
/* The options of such a filter: { driver: DRIVER, node-name: NAME }.
 * New value (caller frees), or NULL on ENOMEM. */
struct ng_value *ng_job_filter_opts(const char *driver, const char *name);
/* The same, keeping the child named `keep` (its label, e.g. "raw" or
 * "children.2", or its node-name) when not NULL; else the node the
 * filter was spliced in over; else (made by the config or blockdev-add)
 * its first child: blkverify's test, quorum's children.0.  The other
 * children of a multi_child_filter are released, not deleted. */
int ng_graph_check_remove_filter_keep(struct ng_graph *g, const char *name,
                                      const char *keep, struct ng_error *err);
int ng_graph_remove_filter_keep(struct ng_graph *g, const char *name,
                                const char *keep, unsigned flags,
                                struct ng_error *err);

/* The name of the child on edge `e` of `node`: the driver's child_label,
 * else the role's name.  Written to buf (size bytes); returns buf. */
const char *ng_edge_label(struct ng_node *node, const struct ng_edge *e,
                          char *buf, size_t size);

/* Move every parent of `from` (nodes and BBs) but the BB `keep` to
 * `to`, and refresh the facts above: mirror's pivot.  Call inside a
 * drained section.  Refused like ng_graph_insert_filter(), the graph as
 * it was. */
int ng_graph_replace_node(struct ng_graph *g, struct ng_node *from,
                          struct ng_node *to, const struct ng_bb *keep,
                          unsigned flags, struct ng_error *err);

/* The checks ng_node_set_backing() makes, changing nothing: the driver
 * can change its backing live (a set_backing hook or a "backing" CHILD
 * option, else ENOTSUP), `backing` is not `node` nor has `node` below it
 * (ELOOP), and a request from the deepest way down to `node` still fits
 * through `backing` (ELOOP). */
int ng_node_check_set_backing(struct ng_node *node, struct ng_node *backing,
                              struct ng_error *err);
/* Make `backing` (NULL: none) the node's backing child on a live node:
 * blockdev-snapshot (an overlay gets the node as backing), block-stream
 * and block-commit (a node's backing skips the layers they drop).  Moves
 * the "backing" edge, sets the driver's backing option field, calls its
 * set_backing hook and refreshes the facts above.  Call inside a drained
 * section over `node` (ng_graph_mutate()).  Refused, the old backing
 * back in place, on a failed check, when the driver refuses, or when the
 * new facts would take from an export what its clients were told
 * (unless NG_MUTATE_FORCE).  The old backing stays in the graph, unless
 * it was defined inline and nothing else uses it. */
int ng_node_set_backing(struct ng_node *node, struct ng_node *backing,
                        unsigned flags, struct ng_error *err);

/* ---- Backing chains (graph/chain.c) ------------------------------------- */

/* blockdev-snapshot's checks, changing nothing: both nodes exist and
 * differ; the overlay has no backing node, nothing uses it, it is
 * writable, not smaller than `node`, and its driver can take a backing
 * node live. */
int ng_graph_check_snapshot(struct ng_graph *g, const char *node,
                            const char *overlay, struct ng_error *err);
/* blockdev-snapshot: the BlockBackends (exports, jobs) and filters
 * (exports' implicit ones included) above `node` move to `overlay`, and
 * `node` becomes the overlay's backing: new writes land in the overlay,
 * reads of what it lacks come from `node`.  Other nodes that have `node`
 * as their backing or file keep it.  Call inside a drained section over
 * `node`.  Refused like ng_graph_insert_filter(), the graph as it was. */
int ng_graph_snapshot(struct ng_graph *g, const char *node,
                      const char *overlay, unsigned flags,
                      struct ng_error *err);

/* ---- Implicit chains ---------------------------------------------------- */

/* An export's implicit filters (DESIGN.md, "implicit filter"): a chain of
 * filter nodes stacked above `node`, tagged implicit with their `owner`
 * (the export) and named "<owner>.<driver>".  `layers` are the filters'
 * option maps, top to bottom, each with "driver" and the filter's own
 * options but not its child option, which the graph sets.  The graph
 * knows no filter by name: the caller decides which layers and in what
 * order. */

/* The checks ng_graph_stack_implicit() would make, creating nothing. */
int ng_graph_check_stack_implicit(struct ng_graph *g, const char *node,
                                  const char *owner,
                                  const struct ng_value *const *layers,
                                  size_t n, struct ng_error *err);
/* Create the chain; returns its top (the node itself when n == 0).  All
 * or nothing: on failure no layer is left behind. */
struct ng_node *ng_graph_stack_implicit(struct ng_graph *g, const char *node,
                                        const char *owner,
                                        const struct ng_value *const *layers,
                                        size_t n, struct ng_error *err);
/* Remove the implicit filters of `owner` that nothing uses any more (after
 * its BB went away). */
void ng_graph_unstack_implicit(struct ng_graph *g, const char *owner);

#endif
