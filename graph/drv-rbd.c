/* graph/drv-rbd.c: "rbd", a Ceph RBD image through librbd (QEMU's "rbd"
 * protocol driver, with its option names).
 *
 * Connecting to the cluster and opening the image block (monitor round
 * trips, up to librados's client_mount_timeout when no monitor answers),
 * and so does closing.  Closing runs on the node's own worker pool
 * (ng_node_queue_work), so a slow cluster holds back nothing else; the
 * open runs on a thread of its own (ng_open_thread_start), on a copy of
 * the options (struct rbd_opening), so that the daemon's stop need not
 * wait for a monitor: it gives the open up (rbd_cancel_open, logged
 * naming the node) and the node goes while the thread finishes.
 *
 * Reads, writes, discards, write-zeroes and flushes use librbd's async
 * API.  librbd calls the completion on a thread of its own; the
 * completion only records the result and hands the request back to the
 * loop through the node's pool (ng_work_finish_external), where it
 * completes.  Block status comes from rbd_diff_iterate2, which blocks
 * (it reads the object map), so it runs on the pool; it is offered only
 * when the image has a valid fast-diff map, since without one librbd
 * would stat every object.
 *
 * Every connection to the export shares the one image handle, whose
 * flush covers every write completed through it: safe for multi-conn.
 */
#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_LIBRBD
#include <rados/librados.h>
#include <rbd/librbd.h>
#endif

#include "graph/graph.h"
#include "graph/drivers.h"

struct rbd_state {
    char *pool;                     /* option "pool" */
    char *ns;                       /* option "namespace"; "" = none */
    char *image;                    /* option "image" */
    char *conf;                     /* option "conf"; "" = ceph's default */
    char *user;                     /* option "user"; "" = ceph's default */
    char *snapshot;                 /* option "snapshot"; "" = none */

#ifdef HAVE_LIBRBD
    bool read_only;                 /* the node's, for the open thread */
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t img;
    bool has_cluster, has_io, has_img;
    uint64_t size;                  /* bytes, at open */
    uint64_t obj_size;              /* bytes per RADOS object, power of 2 */
    bool fast_diff;                 /* valid fast-diff map: block status */

    struct ng_work work;            /* close, on the pool */
    struct ng_open_thread *opening; /* the open's thread, while it runs */
    struct ng_error *open_err;      /* borrowed until ng_node_opened() */
#endif
};

static const struct ng_opt_desc rbd_opts[] = {
    NG_OPT_STRING("pool", struct rbd_state, pool, NULL,
                  "Ceph pool holding the image"),
    NG_OPT_STRING("namespace", struct rbd_state, ns, "",
                  "RADOS namespace in the pool (default: none)"),
    NG_OPT_STRING("image", struct rbd_state, image, NULL,
                  "RBD image name"),
    NG_OPT_STRING("conf", struct rbd_state, conf, "",
                  "ceph.conf to read (default: $CEPH_CONF or "
                  "/etc/ceph/ceph.conf)"),
    NG_OPT_STRING("user", struct rbd_state, user, "",
                  "Ceph client id, without \"client.\" (default: admin)"),
    NG_OPT_STRING("snapshot", struct rbd_state, snapshot, "",
                  "open this snapshot of the image, read-only"),
    NG_OPT_END,
};

#ifdef HAVE_LIBRBD

/* "" means the option was not given. */
static const char *
rbd_opt_or_null(const char *v)
{
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* ---- Open and close (worker thread) ---------------------------------- */

static void
rbd_disconnect(struct rbd_state *s)
{
    if (s->has_img)
        rbd_close(s->img);          /* writes back librbd's cache */
    if (s->has_io)
        rados_ioctx_destroy(s->io);
    if (s->has_cluster)
        rados_shutdown(s->cluster);
    s->has_img = s->has_io = s->has_cluster = false;
}

static int
rbd_connect_cluster(struct rbd_state *s, struct ng_error *err)
{
    const char *conf = rbd_opt_or_null(s->conf);
    int r = rados_create(&s->cluster, rbd_opt_or_null(s->user));

    if (r < 0)
        return ng_error_set(err, -r, "cannot create a ceph client: %s",
                            strerror(-r));
    s->has_cluster = true;
    /* Without "conf", ceph's own search ($CEPH_CONF, /etc/ceph, ...);
     * finding none is no error: CEPH_ARGS may say where the monitors
     * are. */
    r = rados_conf_read_file(s->cluster, conf);
    if (r < 0 && conf != NULL)
        return ng_error_set(err, -r, "cannot read ceph configuration "
                            "'%s': %s", conf, strerror(-r));
    r = rados_conf_parse_env(s->cluster, NULL);
    if (r < 0)
        return ng_error_set(err, -r, "bad CEPH_ARGS: %s", strerror(-r));
    r = rados_connect(s->cluster);
    /* librados's ENOENT: nothing said where the monitors are, or no
     * keyring was found; "No such file or directory" alone says
     * neither. */
    if (r == -ENOENT)
        return ng_error_set(err, ENOENT, "cannot connect to the ceph "
                            "cluster: no monitor address or keyring found "
                            "(set 'conf' or $CEPH_CONF)");
    if (r < 0)
        return ng_error_set(err, -r, "cannot connect to the ceph cluster: "
                            "%s", strerror(-r));
    return 0;
}

static int
rbd_open_image(struct rbd_state *s, struct ng_error *err)
{
    const char *ns = rbd_opt_or_null(s->ns);
    const char *snap = rbd_opt_or_null(s->snapshot);
    rbd_image_info_t info;
    uint64_t features = 0, flags = 0;
    int r = rados_ioctx_create(s->cluster, s->pool, &s->io);

    if (r == -ENOENT)
        return ng_error_set(err, ENOENT, "pool '%s' does not exist",
                            s->pool);
    if (r < 0)
        return ng_error_set(err, -r, "cannot open pool '%s': %s", s->pool,
                            strerror(-r));
    s->has_io = true;
    if (ns != NULL)
        rados_ioctx_set_namespace(s->io, ns);
    if (s->read_only)
        r = rbd_open_read_only(s->io, s->image, &s->img, snap);
    else
        r = rbd_open(s->io, s->image, &s->img, NULL);
    if (r == -ENOENT && snap != NULL)
        return ng_error_set(err, ENOENT, "image '%s' or its snapshot '%s' "
                            "does not exist in pool '%s%s%s'", s->image,
                            snap, s->pool, ns ? "/" : "", ns ? ns : "");
    if (r == -ENOENT)
        return ng_error_set(err, ENOENT, "image '%s' does not exist in "
                            "pool '%s%s%s'", s->image, s->pool,
                            ns ? "/" : "", ns ? ns : "");
    if (r < 0)
        return ng_error_set(err, -r, "cannot open image '%s': %s",
                            s->image, strerror(-r));
    s->has_img = true;
    r = rbd_stat(s->img, &info, sizeof info);
    if (r < 0)
        return ng_error_set(err, -r, "cannot stat image '%s': %s",
                            s->image, strerror(-r));
    if (info.size > INT64_MAX)
        return ng_error_set(err, EFBIG, "image '%s' is too large",
                            s->image);
    s->size = info.size;
    s->obj_size = info.obj_size;
    s->fast_diff = rbd_get_features(s->img, &features) == 0 &&
                   (features & RBD_FEATURE_FAST_DIFF) &&
                   rbd_get_flags(s->img, &flags) == 0 &&
                   !(flags & RBD_FLAG_FAST_DIFF_INVALID) &&
                   (s->obj_size & (s->obj_size - 1)) == 0;
    return 0;
}

/* An open on its thread: a copy of the options and what it connects,
 * apart from the node, which may go before the thread returns. */
struct rbd_opening {
    struct rbd_state st;            /* strdup'd options; the connection */
    struct ng_error err;
    int ret;
};

static void
rbd_opening_free(struct rbd_opening *o)
{
    free(o->st.pool);
    free(o->st.ns);
    free(o->st.image);
    free(o->st.conf);
    free(o->st.user);
    free(o->st.snapshot);
    free(o);
}

static struct rbd_opening *
rbd_opening_new(const struct rbd_state *s)
{
    struct rbd_opening *o = calloc(1, sizeof *o);

    if (o == NULL)
        return NULL;
    o->st.read_only = s->read_only;
    if ((o->st.pool = strdup(s->pool)) == NULL ||
        (o->st.ns = strdup(s->ns)) == NULL ||
        (o->st.image = strdup(s->image)) == NULL ||
        (o->st.conf = strdup(s->conf)) == NULL ||
        (o->st.user = strdup(s->user)) == NULL ||
        (o->st.snapshot = strdup(s->snapshot)) == NULL) {
        rbd_opening_free(o);
        return NULL;
    }
    return o;
}

/* The open's thread. */
static void
rbd_open_work(void *arg)
{
    struct rbd_opening *o = arg;

    o->ret = rbd_connect_cluster(&o->st, &o->err);
    if (o->ret == 0)
        o->ret = rbd_open_image(&o->st, &o->err);
    if (o->ret < 0)
        rbd_disconnect(&o->st);     /* nothing half-open is left */
}

/* The open's thread, once its open returned, given up at shutdown. */
static void
rbd_open_orphan(void *arg)
{
    struct rbd_opening *o = arg;

    rbd_disconnect(&o->st);
    rbd_opening_free(o);
}

/* Loop thread: the open's thread returned. */
static void
rbd_open_done(struct ng_node *node, void *arg)
{
    struct rbd_state *s = ng_node_state(node);
    struct rbd_opening *o = arg;
    int ret = o->ret;

    s->opening = NULL;
    if (ret == 0) {
        /* Field by field, not *s = o->st: o->st's option strings are
         * copies freed with o below, and its work, opening and open_err
         * are not the node's. */
        s->cluster = o->st.cluster;
        s->io = o->st.io;
        s->img = o->st.img;
        s->has_cluster = o->st.has_cluster;
        s->has_io = o->st.has_io;
        s->has_img = o->st.has_img;
        s->size = o->st.size;
        s->obj_size = o->st.obj_size;
        s->fast_diff = o->st.fast_diff;
    } else {
        *s->open_err = o->err;
    }
    rbd_opening_free(o);
    ng_node_opened(node, ret);
}

static void
rbd_open_async(struct ng_node *node, struct ng_error *err)
{
    struct rbd_state *s = ng_node_state(node);
    struct rbd_opening *o;

    if (rbd_opt_or_null(s->snapshot) != NULL && !node->read_only) {
        ng_error_set(err, EROFS, "rbd snapshot '%s' is read-only: set "
                     "read-only: true", s->snapshot);
        ng_node_opened(node, -1);
        return;
    }
    s->read_only = node->read_only;
    s->open_err = err;
    if ((o = rbd_opening_new(s)) == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        ng_node_opened(node, -1);
        return;
    }
    s->opening = ng_open_thread_start(node, rbd_open_work, rbd_open_done,
                                      rbd_open_orphan, o, err);
    if (s->opening == NULL) {
        rbd_opening_free(o);
        ng_node_opened(node, -1);
    }
}

/* The daemon stops: do not wait for a monitor that may not answer for
 * minutes.  The node goes now; its thread disconnects when it returns. */
static void
rbd_cancel_open(struct ng_node *node)
{
    struct rbd_state *s = ng_node_state(node);

    if (s->opening == NULL || !ng_open_thread_abandon(s->opening))
        return;                     /* answered soon, as it is */
    s->opening = NULL;
    ng_node_warn(node, "the daemon stops while image '%s' of pool '%s' is "
                 "still opening: not waiting for the ceph cluster",
                 s->image, s->pool);
    ng_error_set(s->open_err, ECANCELED, "the daemon stops: open of image "
                 "'%s' given up", s->image);
    ng_node_opened(node, -1);
}

static void
rbd_close_work(struct ng_work *w)
{
    rbd_disconnect((void *)((char *)w - offsetof(struct rbd_state, work)));
}

static void
rbd_close_after(struct ng_work *w)
{
    ng_node_closed(w->node);
}

static void
rbd_close_async(struct ng_node *node)
{
    struct rbd_state *s = ng_node_state(node);

    s->work.fn = rbd_close_work;
    s->work.after = rbd_close_after;
    ng_node_queue_work(node, &s->work);
}

/* ---- Async I/O --------------------------------------------------------- */

/* Buffers of more elements than this get an allocated iovec array. */
#define RBD_INLINE_IOV 8

/* One request in librbd's hands: the request's context at our node. */
struct rbd_aio {
    struct ng_work work;            /* first: back to the loop */
    struct ng_req *req;
    rbd_completion_t c;             /* NULL when none is live */
    ssize_t ret;                    /* librbd's result */
    bool flushing;                  /* FUA: the flush after the write */
    struct iovec *iov;              /* inline_iov or allocated */
    struct iovec inline_iov[RBD_INLINE_IOV];
};

/* A librbd error for the client.  A blocklisted client (the cluster
 * fenced us off) gets -ESHUTDOWN for everything, which NBD would pass on
 * as "the server is shutting down"; the daemon is not: it is this
 * node's I/O that fails. */
static int
rbd_errno(ssize_t r)
{
    return r == -ESHUTDOWN ? -EIO : (int)r;
}

/* librbd's thread: record the result, hand it to the loop. */
static void
rbd_aio_cb(rbd_completion_t c, void *arg)
{
    struct rbd_aio *a = arg;

    a->ret = rbd_aio_get_return_value(c);
    ng_work_finish_external(&a->work);
}

/* The request's buffer as a plain iovec list for readv/writev. */
static int
rbd_aio_iov(struct rbd_aio *a, int *n)
{
    struct ng_req *req = a->req;
    size_t len = (size_t)req->length, covered;

    a->iov = a->inline_iov;
    *n = (int)ng_iov_export(&req->iov, len, a->iov, RBD_INLINE_IOV,
                            &covered);
    if (covered == len)
        return 0;
    a->iov = calloc(req->iov.niov, sizeof *a->iov);
    if (a->iov == NULL)
        return -ENOMEM;
    *n = (int)ng_iov_export(&req->iov, len, a->iov, req->iov.niov,
                            &covered);
    return 0;
}

static int
rbd_aio_call(struct rbd_state *s, struct rbd_aio *a)
{
    struct ng_req *req = a->req;
    int n, r, zflags = 0;

    if (a->flushing)
        return rbd_aio_flush(s->img, a->c);
    switch (req->op) {
    case NG_OP_READ:
        if ((r = rbd_aio_iov(a, &n)) < 0)
            return r;
        return rbd_aio_readv(s->img, a->iov, n, req->offset, a->c);
    case NG_OP_WRITE:
        if ((r = rbd_aio_iov(a, &n)) < 0)
            return r;
        return rbd_aio_writev(s->img, a->iov, n, req->offset, a->c);
    case NG_OP_TRIM:
        return rbd_aio_discard(s->img, req->offset, req->length, a->c);
    case NG_OP_WRITE_ZEROES:
        /* NBD's NO_HOLE: keep the range allocated (as QEMU does). */
        if (!(req->flags & NG_REQ_MAY_TRIM))
            zflags = RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
        return rbd_aio_write_zeroes(s->img, req->offset, req->length, a->c,
                                    zflags, 0);
    case NG_OP_FLUSH:
        return rbd_aio_flush(s->img, a->c);
    default:
        return -EINVAL;
    }
}

/* Hand the request to librbd.  A call that fails at once still completes
 * through the loop (never inline), like one that fails later. */
static void
rbd_aio_start(struct ng_node *node, struct rbd_aio *a)
{
    struct rbd_state *s = ng_node_state(node);
    int r;

    ng_node_begin_external(node, &a->work);
    r = rbd_aio_create_completion(a, rbd_aio_cb, &a->c);
    if (r == 0) {
        r = rbd_aio_call(s, a);
        if (r < 0) {
            rbd_aio_release(a->c);
            a->c = NULL;
        }
    } else {
        a->c = NULL;
    }
    if (r < 0) {
        a->ret = r;
        ng_work_finish_external(&a->work);
    }
}

static void rbd_aio_after(struct ng_work *w);

static void
rbd_aio_submit(struct ng_node *node, struct ng_req *req,
               struct rbd_aio *a)
{
    memset(a, 0, sizeof *a);
    a->req = req;
    a->work.after = rbd_aio_after;
    rbd_aio_start(node, a);
}

/* Loop thread: librbd is done with one call for this request. */
static void
rbd_aio_after(struct ng_work *w)
{
    struct rbd_aio *a = (struct rbd_aio *)w;
    struct ng_req *req = a->req;
    int ret = a->ret < 0 ? rbd_errno(a->ret) : 0;

    if (a->c != NULL)
        rbd_aio_release(a->c);
    a->c = NULL;
    if (a->iov != a->inline_iov)
        free(a->iov);
    a->iov = a->inline_iov;
    if (ret == 0 && (req->flags & NG_REQ_FUA) && !a->flushing) {
        a->flushing = true;         /* FUA: flush, then complete */
        rbd_aio_start(w->node, a);
        return;
    }
    ng_req_complete(req, ret);
}

/* ---- Block status (worker thread) -------------------------------------- */

struct rbd_walk {
    struct ng_req *req;
    uint32_t max;                   /* extents the answer may have */
    uint64_t pos, end;              /* described up to pos */
    bool stopped;                   /* the callback ended the walk */
};

/* rbd_diff_iterate2's callback: [off, off + len) holds data when
 * `exists`; what lies between two reported ranges is unallocated and
 * reads as zeroes.  Ranges come in order, whole objects, so they may
 * start before the request. */
static int
rbd_walk_cb(uint64_t off, size_t len, int exists, void *arg)
{
    struct rbd_walk *w = arg;
    uint64_t a = off > w->pos ? off : w->pos;
    uint64_t b = off + len < w->end ? off + len : w->end;

    if (!exists || a >= b)
        return 0;
    if ((a > w->pos && !ng_req_add_extent(w->req, w->max, a - w->pos,
                                          NG_EXTENT_HOLE | NG_EXTENT_ZERO)) ||
        !ng_req_add_extent(w->req, w->max, b - a, 0)) {
        w->stopped = true;
        return -1;
    }
    w->pos = b;
    if (w->pos < w->end)
        return 0;
    w->stopped = true;
    return -1;
}

static int
rbd_block_status(struct ng_node *node, struct ng_req *req)
{
    struct rbd_state *s = ng_node_state(node);
    struct rbd_walk w = {
        .req = req, .pos = req->offset, .end = req->offset + req->length,
        .max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents,
    };
    /* From an object boundary: with fast-diff, older librbd missed data
     * when asked from inside an object (Ceph issue 53784; QEMU works
     * round it the same way). */
    uint64_t from = req->offset & ~(s->obj_size - 1);
    int r;

    req->nr_extents = 0;
    r = rbd_diff_iterate2(s->img, NULL, from, w.end - from, 1, 1,
                          rbd_walk_cb, &w);
    if (r < 0 && !w.stopped)
        return rbd_errno(r);
    if (!w.stopped && w.pos < w.end)
        ng_req_add_extent(req, w.max, w.end - w.pos,
                          NG_EXTENT_HOLE | NG_EXTENT_ZERO);
    return 0;
}

/* ---- Loop thread --------------------------------------------------------- */

static void
rbd_submit(struct ng_node *node, struct ng_req *req)
{
    struct rbd_aio *a;

    if (req->op == NG_OP_BLOCK_STATUS) {
        ng_req_run_blocking(node, req, rbd_block_status);
        return;
    }
    a = ng_req_ctx(node, req);
    if (a == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    rbd_aio_submit(node, req, a);
}

static int
rbd_refresh(struct ng_node *node, struct ng_node_facts *facts,
            struct ng_error *err)
{
    const struct rbd_state *s = ng_node_state(node);

    (void)err;
    facts->size = (int64_t)s->size;
    facts->caps = NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_FUA | NG_CAP_TRIM |
                  NG_CAP_ZERO | NG_CAP_MULTI_CONN;
    if (s->fast_diff)
        facts->caps |= NG_CAP_EXTENTS;
    if (s->obj_size <= UINT32_MAX)
        facts->opt_transfer = (uint32_t)s->obj_size;
    return 0;
}

const struct ng_driver ng_driver_rbd = {
    .name       = "rbd",
    .help       = "Ceph RBD image through librbd",
    .state_size = sizeof(struct rbd_state),
    .opts       = rbd_opts,
    .req_ctx_size = sizeof(struct rbd_aio),
    /* Open, close and block status block; the data path does not. */
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope = NG_POOL_PER_NODE,
    .threads    = 4,
    .open_async = rbd_open_async,
    .cancel_open = rbd_cancel_open,
    .close_async = rbd_close_async,
    .submit     = rbd_submit,
    .refresh    = rbd_refresh,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS),
};

#else /* !HAVE_LIBRBD */

/* Built without librbd: the options are known (configs still check),
 * opening says why it cannot work. */
static int
rbd_open_unavailable(struct ng_node *node, struct ng_error *err)
{
    (void)node;
    return ng_error_set(err, ENOTSUP, "nbdgraph was built without librbd "
                        "(install librbd-dev and reconfigure)");
}

const struct ng_driver ng_driver_rbd = {
    .name       = "rbd",
    .help       = "Ceph RBD image through librbd (not built in)",
    .state_size = sizeof(struct rbd_state),
    .opts       = rbd_opts,
    .open       = rbd_open_unavailable,
    .ops        = NG_OP_BIT(NG_OP_READ),
};

#endif
