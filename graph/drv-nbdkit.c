/* graph/drv-nbdkit.c: "nbdkit", a leaf that loads an nbdkit plugin
 * (nbdkit-plugin(3), API versions 1 and 2) into the daemon and serves
 * the node from it, with no socket in between.
 *
 * A plugin is a process-wide thing: dlopen() hands out one copy of its
 * globals, and .load/.config/.config_complete/.get_ready run once, as
 * under nbdkit.  So a loaded plugin (struct nbdkit_lib) is a graph object
 * keyed by its path, shared by the nodes that use it and unloaded
 * (.cleanup, .unload, dlclose) with the last of them.  Its .config
 * state is global, so a second node may use a loaded plugin only with
 * the very same args; anything else is refused, naming the plugin.
 *
 * Each node is one nbdkit connection: .preconnect and .open at node
 * open, .close at node close, every request through that handle.  Every
 * call into the plugin runs on the node's own worker threads (the
 * plugin may block: curl, ssh, python), never on the loop.  The plugin's
 * thread model (the lower of its THREAD_MODEL and .thread_model) is kept
 * with locks around the calls: SERIALIZE_REQUESTS one call at a time per
 * node, SERIALIZE_ALL_REQUESTS one per plugin, SERIALIZE_CONNECTIONS one
 * per plugin and only one node.
 *
 * .preconnect and .open (and, for the first node, the plugin's load) run
 * on a thread of the open's own (ng_open_thread_start), on a copy of
 * what they need (struct nbdkit_opening): a plugin's .open may block
 * without end (a sleep, a remote that does not answer), and the daemon's
 * stop does not wait for it.  It gives the open up (nbdkit_cancel_open,
 * logged naming the node) and the node goes; the thread is left in the
 * plugin, which is never unloaded from then on (lib->abandoned), until
 * the call returns or the process exits.
 *
 * A plugin runs inside the daemon: one that crashes (in .open or
 * anywhere) takes the daemon down.  One that fails a call fails only its
 * node: the open with the plugin's nbdkit_error() text, a request with
 * its nbdkit_set_error() errno (else errno when the plugin preserves it,
 * else EIO), logged as a warning naming the node.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/graph.h"
#include "graph/drivers.h"
#include "graph/nbdkit-api.h"

struct nbdkit_state {
    char *plugin;                   /* option "plugin": name or path */
    struct ng_value *args;          /* option "args": a map, or NULL */
    char *plugin_dir;               /* option "plugin-dir" */

    struct nbdkit_lib *lib;         /* a reference, once open starts */
    void *handle;                   /* .open's */
    bool has_handle;
    pthread_mutex_t req_lock;       /* SERIALIZE_REQUESTS */
    bool has_req_lock;
    bool loads;                     /* this open loads lib */
    bool unloads;                   /* this close unloads lib */
    struct ng_work work;            /* close, unload after a failed open */
    struct ng_open_thread *opening; /* the open's thread, while it runs */
    struct ng_error *open_err;      /* borrowed during open_async */
    int work_ret;

    /* Facts, from the plugin at open. */
    int64_t size;
    uint32_t caps;
    uint32_t align, max_transfer, opt_transfer;
    int fua;                        /* NBDKIT_FUA_* */
};

static const struct ng_opt_desc nbdkit_opts[] = {
    NG_OPT_STRING("plugin", struct nbdkit_state, plugin, NULL,
                  "plugin name (nbdkit-NAME-plugin.so in plugin-dir) or "
                  "path of a plugin .so"),
    NG_OPT_VALUE("args", struct nbdkit_state, args, false,
                 "the plugin's key=value parameters, a map, passed to "
                 ".config in order"),
    NG_OPT_STRING("plugin-dir", struct nbdkit_state, plugin_dir, "",
                  "where plugin names are looked up (default: nbdkit's "
                  "plugin directory)"),
    NG_OPT_END,
};

#ifdef HAVE_NBDKIT

#include <dlfcn.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

/* Requests larger than this are split by the core: .pread's count is 32
 * bits, and NBD clients send at most 32 MiB. */
#define NBDKIT_MAX_TRANSFER (32u * 1024 * 1024)

/* Write-zeroes without a plugin .zero writes this, piece by piece. */
#define NBDKIT_ZERO_BUF_SIZE (64 * 1024)
static const char nbdkit_zero_buf[NBDKIT_ZERO_BUF_SIZE];

/* A plugin loaded in process; a graph object of nbdkit_lib_type. */
struct nbdkit_lib {
    char *path;                     /* the .so, also the object's id */
    char **args;                    /* key, value, key, value, ... */
    size_t n_args;                  /* entries: twice the pairs */
    unsigned refs;                  /* nodes using it (loop thread) */
    bool loading;                   /* a node's open is loading it */
    bool unloading;                 /* the last node went: unloading */
    bool loaded;                    /* .load ran: unload at the end */
    bool abandoned;                 /* an open given up at shutdown may
                                     * still be inside: never unloaded
                                     * nor freed (loop thread) */
    void *dl;
    struct nbdkit_plugin p;         /* a copy, zero beyond _struct_size */
    int thread_model;               /* NBDKIT_THREAD_MODEL_* in force */
    pthread_mutex_t lock;           /* SERIALIZE_ALL_REQUESTS */
};

static void
lib_unload(struct nbdkit_lib *lib)
{
    if (lib->loaded) {
        if (lib->p.cleanup != NULL)
            lib->p.cleanup();
        if (lib->p.unload != NULL)
            lib->p.unload();
        lib->loaded = false;
    }
    /* NBDGRAPH_NBDKIT_NO_DLCLOSE, like nbdkit's NBDKIT_VALGRIND: keep
     * the code mapped so that a leak checker can name the plugin that
     * leaked at exit. */
    if (lib->dl != NULL && getenv("NBDGRAPH_NBDKIT_NO_DLCLOSE") == NULL)
        dlclose(lib->dl);
    lib->dl = NULL;
}

static void
lib_free(void *obj)
{
    struct nbdkit_lib *lib = obj;

    if (lib->abandoned)
        return;                     /* a thread may still be inside */
    /* The last node's close unloaded it; only a graph torn down with
     * the plugin still loaded gets here with it. */
    lib_unload(lib);
    for (size_t i = 0; i < lib->n_args; i++)
        free(lib->args[i]);
    free(lib->args);
    free(lib->path);
    pthread_mutex_destroy(&lib->lock);
    free(lib);
}

static const struct ng_object_type nbdkit_lib_type = {
    .name = "nbdkit plugin",
    .free = lib_free,
};

/* ---- Worker thread: calling the plugin ----------------------------------- */

/* Serialise as the plugin's thread model asks. */
static void
call_lock(struct nbdkit_state *s)
{
    if (s->lib->thread_model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
        pthread_mutex_lock(&s->lib->lock);
    else if (s->lib->thread_model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
        pthread_mutex_lock(&s->req_lock);
}

static void
call_unlock(struct nbdkit_state *s)
{
    if (s->lib->thread_model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
        pthread_mutex_unlock(&s->lib->lock);
    else if (s->lib->thread_model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
        pthread_mutex_unlock(&s->req_lock);
}

/* Fill *err after a plugin call failed: its nbdkit_error() text, or
 * `what` when it said nothing. */
static int
call_failed(struct ng_error *err, const struct ng_nbdkit_call *c,
            const char *what)
{
    int code = c->err != 0 ? c->err : EINVAL;

    if (c->msg[0] != '\0')
        return ng_error_set(err, code, "%s", c->msg);
    return ng_error_set(err, code, "%s failed", what);
}

/* Check what plugin_init() returned and keep a copy of it. */
static int
lib_take_struct(struct nbdkit_lib *lib, const struct nbdkit_plugin *p,
                const char *name, struct ng_error *err)
{
    size_t size;

    if (p->_api_version != 1 && p->_api_version != 2)
        return ng_error_set(err, ENOTSUP, "plugin '%s' uses nbdkit API "
                            "version %d; only versions 1 and 2 are "
                            "supported", name, p->_api_version);
    /* An older plugin has a shorter struct, a newer one fields we do not
     * know: take what both have, the rest stays NULL. */
    if (p->_struct_size < offsetof(struct nbdkit_plugin, errno_is_preserved))
        return ng_error_set(err, ENOTSUP, "plugin '%s': struct "
                            "nbdkit_plugin is too small (%" PRIu64
                            " bytes)", name, p->_struct_size);
    size = p->_struct_size < sizeof lib->p ? (size_t)p->_struct_size
                                           : sizeof lib->p;
    memset(&lib->p, 0, sizeof lib->p);
    memcpy(&lib->p, p, size);
    if (lib->p.name == NULL)
        return ng_error_set(err, EINVAL, "plugin '%s' has no name", name);
    if (lib->p.open == NULL || lib->p.get_size == NULL ||
        (lib->p._api_version == 1 ? lib->p._pread_v1 == NULL
                                  : lib->p.pread == NULL))
        return ng_error_set(err, EINVAL, "plugin '%s' lacks .open, "
                            ".get_size or .pread", name);
    return 0;
}

/* dlopen and plugin_init. */
static int
lib_dlopen(struct nbdkit_lib *lib, const char *name, struct ng_error *err)
{
    struct nbdkit_plugin *(*init)(void);
    const char *e;

    /* RTLD_NOW: a plugin that needs an nbdkit_* function we lack fails
     * here, naming it, not in the middle of a request.  RTLD_GLOBAL as
     * nbdkit does: the language plugins' libraries (libpython) must be
     * visible to the modules they load in turn. */
    lib->dl = dlopen(lib->path, RTLD_NOW | RTLD_GLOBAL);
    if (lib->dl == NULL) {
        int r;

        e = dlerror();
        if (e != NULL && strstr(e, "undefined symbol: nbdkit_") != NULL)
            r = ng_error_set(err, ENOTSUP, "plugin '%s' needs an nbdkit "
                             "function nbdgraphd does not provide: %s",
                             name, e);
        else
            r = ng_error_set(err, ENOENT, "cannot load plugin '%s': %s",
                             name, e != NULL ? e : "dlopen failed");
        /* glibc frees the message at the next dlerror() or when this
         * thread exits: now, or a daemon that exits on the error while
         * the open thread winds down shows it to LSan as a leak. */
        dlerror();
        return r;
    }
    dlerror();
    *(void **)&init = dlsym(lib->dl, "plugin_init");
    if (init == NULL)
        return ng_error_set(err, EINVAL, "'%s' is not an nbdkit plugin: "
                            "it has no plugin_init", lib->path);
    const struct nbdkit_plugin *p = init();
    if (p == NULL)
        return ng_error_set(err, EINVAL, "plugin '%s': plugin_init "
                            "returned NULL", name);
    return lib_take_struct(lib, p, name, err);
}

/* The thread model in force: the lower of the one compiled in and what
 * .thread_model says after configuration, as in nbdkit. */
static int
lib_thread_model(struct nbdkit_lib *lib, struct ng_nbdkit_call *c,
                 const char *name, struct ng_error *err)
{
    int model = lib->p._thread_model, r;

    if (lib->p.thread_model != NULL) {
        if ((r = lib->p.thread_model()) == -1)
            return call_failed(err, c, ".thread_model");
        if (r < model)
            model = r;
    }
    if (model < NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS ||
        model > NBDKIT_THREAD_MODEL_PARALLEL)
        return ng_error_set(err, EINVAL, "plugin '%s': unknown thread "
                            "model %d", name, model);
    lib->thread_model = model;
    return 0;
}

/* Everything nbdkit does once per plugin, before the first connection. */
static int
lib_load(struct nbdkit_lib *lib, const char *name, struct ng_error *err)
{
    struct ng_nbdkit_call c;
    int r = -1;

    if (lib_dlopen(lib, name, err) == -1)
        return -1;
    ng_nbdkit_call_begin(&c);
    if (lib->p.load != NULL)
        lib->p.load();
    lib->loaded = true;
    for (size_t i = 0; i < lib->n_args; i += 2) {
        if (lib->p.config == NULL) {
            ng_error_set(err, EINVAL, "plugin '%s' takes no parameters, "
                         "not even '%s'", name, lib->args[i]);
            goto out;
        }
        if (lib->p.config(lib->args[i], lib->args[i + 1]) == -1) {
            call_failed(err, &c, ".config");
            /* The key only: values may be passwords. */
            ng_error_prefix(err, "plugin '%s': parameter '%s'", name,
                            lib->args[i]);
            goto out;
        }
    }
    if ((lib->p.config_complete != NULL && lib->p.config_complete() == -1) ||
        (lib->p.get_ready != NULL && lib->p.get_ready() == -1) ||
        (lib->p.after_fork != NULL && lib->p.after_fork() == -1)) {
        call_failed(err, &c, "plugin configuration");
        ng_error_prefix(err, "plugin '%s'", name);
        goto out;
    }
    r = lib_thread_model(lib, &c, name, err);
out:
    ng_nbdkit_call_end();
    return r;
}

/* One .can_* answer: the callback's, else `dflt`; -1 on failure. */
static int
ask(int (*fn)(void *), void *handle, int dflt)
{
    return fn != NULL ? fn(handle) : dflt;
}

/* Ask the plugin what the node can do (nbdkit's rules for the defaults:
 * a callback's presence). */
static int
node_ask_caps(struct nbdkit_state *s)
{
    const struct nbdkit_plugin *p = &s->lib->p;
    bool v1 = p->_api_version == 1;
    bool has_write = v1 ? p->_pwrite_v1 != NULL : p->pwrite != NULL;
    bool has_flush = v1 ? p->_flush_v1 != NULL : p->flush != NULL;
    bool has_trim = v1 ? p->_trim_v1 != NULL : p->trim != NULL;
    bool has_zero = v1 ? p->_zero_v1 != NULL : p->zero != NULL;
    int w, f, t, z, fz, mc, ex, ca;

    if ((w = ask(p->can_write, s->handle, has_write)) == -1 ||
        (f = ask(p->can_flush, s->handle, has_flush)) == -1 ||
        (t = ask(p->can_trim, s->handle, has_trim)) == -1 ||
        (z = ask(p->can_zero, s->handle, 1)) == -1 ||
        (mc = ask(p->can_multi_conn, s->handle, 0)) == -1 ||
        (ex = ask(p->can_extents, s->handle, p->extents != NULL)) == -1 ||
        (ca = ask(p->can_cache, s->handle,
                  p->cache != NULL ? NBDKIT_CACHE_NATIVE
                                   : NBDKIT_CACHE_NONE)) == -1)
        return -1;
    /* FUA: native only when the plugin says so; else a flush after the
     * write, when it can flush. */
    s->fua = f ? NBDKIT_FUA_EMULATE : NBDKIT_FUA_NONE;
    if (p->can_fua != NULL && !v1 && (s->fua = p->can_fua(s->handle)) == -1)
        return -1;
    if (s->fua == NBDKIT_FUA_EMULATE && !(f && has_flush))
        s->fua = NBDKIT_FUA_NONE;   /* nothing to emulate it with */
    /* Fast zero: without a native .zero it fails fast, so it is "fast". */
    fz = !has_zero || v1 || !z;
    if (p->can_fast_zero != NULL && (fz = p->can_fast_zero(s->handle)) == -1)
        return -1;
    s->caps = 0;
    if (w && has_write) {
        s->caps |= NG_CAP_WRITE;
        if (z)
            s->caps |= NG_CAP_ZERO | (fz ? NG_CAP_FAST_ZERO : 0);
        if (t && has_trim)
            s->caps |= NG_CAP_TRIM;
        if (s->fua != NBDKIT_FUA_NONE)
            s->caps |= NG_CAP_FUA;
    }
    if (f && has_flush)
        s->caps |= NG_CAP_FLUSH;
    if (mc)
        s->caps |= NG_CAP_MULTI_CONN;
    if (ex && p->extents != NULL)
        s->caps |= NG_CAP_EXTENTS;
    if (ca == NBDKIT_CACHE_NATIVE && p->cache != NULL)
        s->caps |= NG_CAP_CACHE;
    return 0;
}

/* .block_size: the minimum becomes our alignment, the maximum our
 * transfer limit. */
static int
node_ask_block_size(struct nbdkit_state *s, struct ng_error *err,
                    const struct ng_nbdkit_call *c)
{
    uint32_t min = 1, pref = 0, max = 0;

    s->align = 1;
    s->max_transfer = NBDKIT_MAX_TRANSFER;
    s->opt_transfer = 0;
    if (s->lib->p.block_size == NULL)
        return 0;
    if (s->lib->p.block_size(s->handle, &min, &pref, &max) == -1)
        return call_failed(err, c, ".block_size");
    if (min == 0 && max == 0)
        return 0;                   /* "no preference" */
    if (min == 0 || (min & (min - 1)) != 0 || min > 64 * 1024)
        return ng_error_set(err, EINVAL, "plugin block size minimum %" PRIu32
                            " is not a power of two up to 64K", min);
    s->align = min;
    if (max != 0 && max != UINT32_MAX && max < s->max_transfer)
        s->max_transfer = max / min * min;
    if (s->max_transfer < min)
        s->max_transfer = min;
    if (pref >= min && pref <= s->max_transfer)
        s->opt_transfer = pref;
    return 0;
}

/* .preconnect, .open and the questions about the new handle. */
static int
node_connect(struct nbdkit_state *s, int readonly, struct ng_error *err)
{
    const struct nbdkit_plugin *p = &s->lib->p;
    struct ng_nbdkit_call c;
    int r = -1;

    ng_nbdkit_call_begin(&c);
    call_lock(s);
    if (p->preconnect != NULL && p->preconnect(readonly) == -1) {
        call_failed(err, &c, ".preconnect");
        goto out;
    }
    if ((s->handle = p->open(readonly)) == NULL) {
        call_failed(err, &c, ".open");
        goto out;
    }
    s->has_handle = true;
    if ((s->size = p->get_size(s->handle)) == -1) {
        call_failed(err, &c, ".get_size");
        goto out;
    }
    if (s->size < 0) {
        ng_error_set(err, EINVAL, ".get_size returned %" PRId64, s->size);
        goto out;
    }
    if (node_ask_caps(s) == -1) {
        call_failed(err, &c, "a .can_* callback");
        goto out;
    }
    r = node_ask_block_size(s, err, &c);
out:
    call_unlock(s);
    ng_nbdkit_call_end();
    return r;
}

static void
node_disconnect(struct nbdkit_state *s)
{
    struct ng_nbdkit_call c;

    if (!s->has_handle)
        return;
    ng_nbdkit_call_begin(&c);
    call_lock(s);
    if (s->lib->p.close != NULL)
        s->lib->p.close(s->handle);
    call_unlock(s);
    ng_nbdkit_call_end();
    s->has_handle = false;
}

/* ---- Worker thread: requests --------------------------------------------- */

/* Per request, in the core's context block (ng_req_ctx). */
struct nbdkit_req {
    struct ng_work work;
    struct ng_req *req;
    struct ng_node *node;
    int ret;
    struct ng_nbdkit_call call;
    struct nbdkit_extents extents;
};

/* The errno of a call that returned -1: nbdkit_set_error()'s, else errno
 * when the plugin keeps it meaningful, else EIO. */
static int
req_errno(const struct nbdkit_state *s, const struct ng_nbdkit_call *c,
          int saved_errno)
{
    int e = c->err;

    if (e == 0 && s->lib->p.errno_is_preserved)
        e = saved_errno;
    return e > 0 ? -e : -EIO;
}

static int
plugin_pread(struct nbdkit_state *s, void *buf, uint32_t n, uint64_t off)
{
    if (s->lib->p._api_version == 1)
        return s->lib->p._pread_v1(s->handle, buf, n, off);
    return s->lib->p.pread(s->handle, buf, n, off, 0);
}

static int
plugin_flush(struct nbdkit_state *s)
{
    if (s->lib->p._api_version == 1)
        return s->lib->p._flush_v1(s->handle);
    return s->lib->p.flush(s->handle, 0);
}

/* FUA the plugin cannot do itself: a flush after the change. */
static int
emulate_fua(struct nbdkit_state *s, uint32_t flags, int r)
{
    if (r == 0 && (flags & NG_REQ_FUA) && s->fua == NBDKIT_FUA_EMULATE)
        r = plugin_flush(s);
    return r;
}

static uint32_t
native_fua(const struct nbdkit_state *s, uint32_t flags)
{
    return (flags & NG_REQ_FUA) && s->fua == NBDKIT_FUA_NATIVE
           ? NBDKIT_FLAG_FUA : 0;
}

static int
plugin_pwrite(struct nbdkit_state *s, const void *buf, uint32_t n,
              uint64_t off, uint32_t flags)
{
    int r;

    if (s->lib->p._api_version == 1)
        r = s->lib->p._pwrite_v1(s->handle, buf, n, off);
    else
        r = s->lib->p.pwrite(s->handle, buf, n, off, native_fua(s, flags));
    return emulate_fua(s, flags, r);
}

static int
plugin_trim(struct nbdkit_state *s, uint32_t n, uint64_t off,
            uint32_t flags)
{
    int r;

    if (s->lib->p._api_version == 1)
        r = s->lib->p._trim_v1(s->handle, n, off);
    else
        r = s->lib->p.trim(s->handle, n, off, native_fua(s, flags));
    return emulate_fua(s, flags, r);
}

/* Write-zeroes by writing zeroes, as nbdkit does without .zero. */
static int
zero_by_writing(struct nbdkit_state *s, uint32_t n, uint64_t off,
                uint32_t flags)
{
    while (n > 0) {
        uint32_t k = n < NBDKIT_ZERO_BUF_SIZE ? n : NBDKIT_ZERO_BUF_SIZE;

        if (plugin_pwrite(s, nbdkit_zero_buf, k, off,
                          n == k ? flags : 0) == -1)
            return -1;
        n -= k;
        off += k;
    }
    return 0;
}

static int
plugin_zero(struct nbdkit_state *s, uint32_t n, uint64_t off,
            uint32_t flags, struct ng_nbdkit_call *c)
{
    const struct nbdkit_plugin *p = &s->lib->p;
    uint32_t f = native_fua(s, flags);
    int r;

    if (flags & NG_REQ_MAY_TRIM)
        f |= NBDKIT_FLAG_MAY_TRIM;
    if ((flags & NG_REQ_FAST_ZERO) &&
        (p->_api_version == 1 || p->zero == NULL)) {
        c->err = ENOTSUP;           /* only a native zero is fast */
        return -1;
    }
    if (p->_api_version == 1 && p->_zero_v1 != NULL)
        r = p->_zero_v1(s->handle, n, off, !!(flags & NG_REQ_MAY_TRIM));
    else if (p->_api_version == 2 && p->zero != NULL)
        r = p->zero(s->handle, n, off,
                    f | ((flags & NG_REQ_FAST_ZERO) ? NBDKIT_FLAG_FAST_ZERO
                                                    : 0));
    else
        r = -1, c->err = EOPNOTSUPP;
    if (r == 0)
        return emulate_fua(s, flags, 0);
    /* "Cannot do it here": write the zeroes, unless asked to be fast. */
    if ((c->err == EOPNOTSUPP || c->err == ENOTSUP) &&
        !(flags & NG_REQ_FAST_ZERO) && (s->caps & NG_CAP_WRITE)) {
        c->err = 0;
        c->msg[0] = '\0';
        return zero_by_writing(s, n, off, flags);
    }
    if (flags & NG_REQ_FAST_ZERO)
        c->err = ENOTSUP;
    return -1;
}

static int
plugin_extents(struct nbdkit_state *s, struct nbdkit_req *rc)
{
    struct ng_req *req = rc->req;
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;

    ng_nbdkit_extents_init(&rc->extents, req->offset,
                           req->offset + req->length, req->extents, max);
    if (s->lib->p.extents(s->handle, (uint32_t)req->length, req->offset,
                          (req->flags & NG_REQ_REQ_ONE) ? NBDKIT_FLAG_REQ_ONE
                                                        : 0,
                          &rc->extents) == -1)
        return -1;
    if (rc->extents.n == 0) {
        /* nbdkit's rule: at least the first byte must be described. */
        snprintf(rc->call.msg, sizeof rc->call.msg, ".extents described "
                 "nothing at offset %" PRIu64, req->offset);
        rc->call.err = EINVAL;
        return -1;
    }
    req->nr_extents = rc->extents.n;
    return 0;
}

/* A buffer for the plugin: the request's own when it is one piece, else
 * a bounce (the core rarely hands a driver several pieces). */
static int
req_rw(struct nbdkit_state *s, struct ng_req *req)
{
    uint32_t n = (uint32_t)req->length;
    void *buf = ng_iov_flat(&req->iov, n), *bounce = NULL;
    int r;

    if (buf == NULL && (buf = bounce = malloc(n)) == NULL) {
        errno = ENOMEM;
        return -1;
    }
    if (req->op == NG_OP_READ) {
        r = plugin_pread(s, buf, n, req->offset);
        if (r == 0 && bounce != NULL)
            ng_iov_from_buf(&req->iov, 0, bounce, n);
    } else {
        if (bounce != NULL)
            ng_iov_to_buf(&req->iov, 0, bounce, n);
        r = plugin_pwrite(s, buf, n, req->offset, req->flags);
    }
    free(bounce);
    return r;
}

static int
req_call(struct nbdkit_state *s, struct nbdkit_req *rc)
{
    struct ng_req *req = rc->req;
    uint32_t n = (uint32_t)req->length;

    switch (req->op) {
    case NG_OP_READ:
    case NG_OP_WRITE:
        return req_rw(s, req);
    case NG_OP_FLUSH:
        return plugin_flush(s);
    case NG_OP_TRIM:
        return plugin_trim(s, n, req->offset, req->flags);
    case NG_OP_WRITE_ZEROES:
        return plugin_zero(s, n, req->offset, req->flags, &rc->call);
    case NG_OP_BLOCK_STATUS:
        return plugin_extents(s, rc);
    case NG_OP_CACHE:
        return s->lib->p.cache(s->handle, n, req->offset, 0);
    default:
        rc->call.err = ENOTSUP;
        return -1;
    }
}

static void
req_work(struct ng_work *w)
{
    struct nbdkit_req *rc = (struct nbdkit_req *)w;
    struct nbdkit_state *s = ng_node_state(rc->node);

    ng_nbdkit_call_begin(&rc->call);
    call_lock(s);
    errno = 0;
    rc->ret = req_call(s, rc) == -1 ? req_errno(s, &rc->call, errno) : 0;
    call_unlock(s);
    ng_nbdkit_call_end();
}

/* ---- Loop thread: requests ----------------------------------------------- */

static void
req_after(struct ng_work *w)
{
    struct nbdkit_req *rc = (struct nbdkit_req *)w;

    if (rc->ret < 0 && rc->call.msg[0] != '\0')
        ng_node_warn(rc->node, "%s failed (%s): %s",
                     ng_op_name(rc->req->op), strerror(-rc->ret),
                     rc->call.msg);
    ng_req_complete(rc->req, rc->ret);
}

static void
nbdkit_submit(struct ng_node *node, struct ng_req *req)
{
    struct nbdkit_req *rc = ng_req_ctx(node, req);

    if (rc == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    rc->work.fn = req_work;
    rc->work.after = req_after;
    rc->req = req;
    rc->node = node;
    ng_node_queue_work(node, &rc->work);
}

/* ---- Loop thread: open and close ----------------------------------------- */

/* args as .config takes them: a map of scalars, in order. */
static int
args_flatten(const struct ng_value *args, char ***out, size_t *n,
             struct ng_error *err)
{
    char **v;

    *out = NULL;
    *n = 0;
    if (args == NULL)
        return 0;
    if (args->kind != NG_VALUE_MAP)
        return ng_error_set(err, EINVAL, "'args' must be a map of plugin "
                            "parameters");
    if ((v = calloc(2 * args->n + 1, sizeof *v)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < args->n; i++) {
        const struct ng_value *a = args->items[i];

        if (a->kind != NG_VALUE_SCALAR || a->is_null) {
            for (size_t j = 0; j < 2 * i; j++)
                free(v[j]);
            free(v);
            return ng_error_set(err, EINVAL, "plugin parameter '%s' must "
                                "be a string or number", args->keys[i]);
        }
        v[2 * i] = strdup(args->keys[i]);
        v[2 * i + 1] = strdup(a->text);
    }
    *out = v;
    *n = 2 * args->n;
    for (size_t i = 0; i < *n; i++)
        if (v[i] == NULL)
            return ng_error_set(err, ENOMEM, "out of memory");
    return 0;
}

static bool
args_equal(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

/* The plugin's .so: a path as given, or nbdkit-NAME-plugin.so. */
static char *
plugin_path(const struct nbdkit_state *s, struct ng_error *err)
{
    const char *dir = s->plugin_dir[0] != '\0' ? s->plugin_dir
                                               : ng_nbdkit_plugindir();
    char *path, *real;

    if (s->plugin[0] == '\0') {
        ng_error_set(err, EINVAL, "'plugin' must not be empty");
        return NULL;
    }
    if (strchr(s->plugin, '/') != NULL)
        path = strdup(s->plugin);
    else if (asprintf(&path, "%s/nbdkit-%s-plugin.so", dir, s->plugin) < 0)
        path = NULL;
    if (path == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    /* One key per file, however it is spelt. */
    if ((real = realpath(path, NULL)) == NULL) {
        ng_error_set(err, errno, "plugin '%s' not found: %s: %s",
                     s->plugin, path, strerror(errno));
        free(path);
        return NULL;
    }
    free(path);
    return real;
}

static struct nbdkit_lib *
lib_new(char *path, char **args, size_t n_args)
{
    struct nbdkit_lib *lib = calloc(1, sizeof *lib);

    if (lib == NULL)
        return NULL;
    lib->path = path;
    lib->args = args;
    lib->n_args = n_args;
    pthread_mutex_init(&lib->lock, NULL);
    return lib;
}

static void
args_free(char **args, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(args[i]);
    free(args);
}

/* Take a reference to the plugin `s` names, loaded or to load (then
 * s->loads).  Loop thread. */
static int
lib_get(struct ng_node *node, struct nbdkit_state *s, struct ng_error *err)
{
    struct ng_graph *g = node->graph;
    struct nbdkit_lib *lib;
    char *path, **args;
    size_t n_args;

    if ((path = plugin_path(s, err)) == NULL)
        return -1;
    if (args_flatten(s->args, &args, &n_args, err) == -1) {
        free(path);
        return -1;
    }
    lib = ng_graph_object_find(g, &nbdkit_lib_type, path);
    if (lib != NULL) {
        int r = 0;

        if (lib->loading || lib->unloading)
            r = ng_error_set(err, EBUSY, "plugin '%s' is still %s for "
                             "another node; try again", s->plugin,
                             lib->loading ? "loading" : "unloading");
        else if (!args_equal(lib->args, lib->n_args, args, n_args))
            r = ng_error_set(err, EBUSY, "plugin '%s' is already loaded "
                             "with other args: a plugin's configuration "
                             "is global, so all its nodes need the same "
                             "args", s->plugin);
        else if (lib->thread_model ==
                 NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS)
            r = ng_error_set(err, EBUSY, "plugin '%s' serializes "
                             "connections: only one node may use it",
                             s->plugin);
        free(path);
        args_free(args, n_args);
        if (r == -1)
            return -1;
        lib->refs++;
        s->lib = lib;
        return 0;
    }
    if ((lib = lib_new(path, args, n_args)) == NULL) {
        free(path);
        args_free(args, n_args);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    if (ng_graph_object_add(g, &nbdkit_lib_type, path, lib, err) == -1) {
        lib_free(lib);
        return -1;
    }
    lib->refs = 1;
    lib->loading = true;
    s->lib = lib;
    s->loads = true;
    return 0;
}

/* Drop s->lib; true when that was the last reference, and the caller
 * must unload it (on a worker) and then lib_forget() it. */
static bool
lib_put(struct nbdkit_state *s)
{
    if (--s->lib->refs > 0)
        return false;
    s->lib->unloading = true;       /* no new node may take it now */
    return true;
}

static void
lib_forget(struct ng_node *node, struct nbdkit_state *s)
{
    ng_graph_object_del(node->graph, &nbdkit_lib_type, s->lib->path, NULL);
    s->lib = NULL;
}

/* The end of a node's life, open failed or close done. */
static void
node_drop_lock(struct nbdkit_state *s)
{
    if (s->has_req_lock)
        pthread_mutex_destroy(&s->req_lock);
    s->has_req_lock = false;
}

/* An open on its thread: what it needs and what it finds, apart from
 * the node, which may go before the thread returns. */
struct nbdkit_opening {
    struct nbdkit_state st;         /* lib, loads, req_lock; the thread
                                     * fills the handle and the facts */
    char *plugin;                   /* the option, for messages */
    int readonly;
    struct ng_error err;
    int ret;
};

static struct nbdkit_opening *
opening_new(struct ng_node *node, const struct nbdkit_state *s)
{
    struct nbdkit_opening *o = calloc(1, sizeof *o);

    if (o == NULL || (o->plugin = strdup(s->plugin)) == NULL ||
        pthread_mutex_init(&o->st.req_lock, NULL) != 0) {
        if (o != NULL)
            free(o->plugin);
        free(o);
        return NULL;
    }
    o->st.lib = s->lib;
    o->st.loads = s->loads;
    o->readonly = node->read_only;
    return o;
}

static void
opening_free(struct nbdkit_opening *o)
{
    pthread_mutex_destroy(&o->st.req_lock);
    free(o->plugin);
    free(o);
}

/* The open's thread. */
static void
open_work(void *arg)
{
    struct nbdkit_opening *o = arg;

    o->ret = 0;
    if (o->st.loads)
        o->ret = lib_load(o->st.lib, o->plugin, &o->err);
    if (o->ret == 0)
        o->ret = node_connect(&o->st, o->readonly, &o->err);
    if (o->ret == -1) {
        node_disconnect(&o->st);
        /* Unloaded here when this open loaded it; otherwise open_finish
         * decides (another node may hold the plugin). */
        if (o->st.loads)
            lib_unload(o->st.lib);
    }
}

/* The open's thread, once its open returned, given up at shutdown: the
 * plugin stays loaded (lib->abandoned), so its handle can be closed. */
static void
open_orphan(void *arg)
{
    struct nbdkit_opening *o = arg;

    node_disconnect(&o->st);
    opening_free(o);
}

static void
unload_after(struct ng_work *w)
{
    struct ng_node *node = w->node;
    struct nbdkit_state *s = ng_node_state(node);

    lib_forget(node, s);
    node_drop_lock(s);
    ng_node_opened(node, -1);
}

static void
unload_work(struct ng_work *w)
{
    struct nbdkit_state *s = ng_node_state(w->node);

    lib_unload(s->lib);
}

/* The open is over, s->work_ret says how (*s->open_err filled on
 * failure): answer it, dropping the plugin on failure. */
static void
open_finish(struct ng_node *node)
{
    struct nbdkit_state *s = ng_node_state(node);

    if (s->loads)
        s->lib->loading = false;
    if (s->work_ret == 0) {
        ng_node_opened(node, 0);
        return;
    }
    if (!lib_put(s)) {
        s->lib = NULL;
        node_drop_lock(s);
        ng_node_opened(node, -1);
    } else if (s->loads) {
        lib_forget(node, s);        /* open_work unloaded it */
        node_drop_lock(s);
        ng_node_opened(node, -1);
    } else {
        /* The other nodes went while this one opened. */
        s->work.fn = unload_work;
        s->work.after = unload_after;
        ng_node_queue_work(node, &s->work);
    }
}

/* Loop thread: the open's thread returned. */
static void
open_done(struct ng_node *node, void *arg)
{
    struct nbdkit_state *s = ng_node_state(node);
    struct nbdkit_opening *o = arg;

    s->opening = NULL;
    s->work_ret = o->ret;
    if (o->ret == 0) {
        /* Field by field, not s = o->st: o->st is a scratch state whose
         * lib, loads, req_lock and options are not the node's (req_lock
         * is destroyed with o below). */
        s->handle = o->st.handle;
        s->has_handle = o->st.has_handle;
        s->size = o->st.size;
        s->caps = o->st.caps;
        s->align = o->st.align;
        s->max_transfer = o->st.max_transfer;
        s->opt_transfer = o->st.opt_transfer;
        s->fua = o->st.fua;
    } else {
        *s->open_err = o->err;
    }
    opening_free(o);
    open_finish(node);
}

static void
nbdkit_open_async(struct ng_node *node, struct ng_error *err)
{
    struct nbdkit_state *s = ng_node_state(node);
    struct nbdkit_opening *o;

    if (pthread_mutex_init(&s->req_lock, NULL) != 0) {
        ng_error_set(err, EAGAIN, "cannot create a mutex");
        ng_node_opened(node, -1);
        return;
    }
    s->has_req_lock = true;
    if (lib_get(node, s, err) == -1) {
        node_drop_lock(s);
        ng_node_opened(node, -1);
        return;
    }
    s->open_err = err;
    if ((o = opening_new(node, s)) == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
    } else if ((s->opening = ng_open_thread_start(node, open_work,
                                                  open_done, open_orphan,
                                                  o, err)) == NULL) {
        opening_free(o);
    } else {
        return;
    }
    s->work_ret = -1;               /* nothing ran: nothing to undo */
    open_finish(node);
}

/* The daemon stops: do not wait for a plugin that may never return from
 * .open.  The node goes now; its thread keeps the plugin loaded. */
static void
nbdkit_cancel_open(struct ng_node *node)
{
    struct nbdkit_state *s = ng_node_state(node);

    if (s->opening == NULL || !ng_open_thread_abandon(s->opening))
        return;                     /* answered soon, as it is */
    s->opening = NULL;
    s->lib->abandoned = true;
    s->lib = NULL;                  /* its reference stays with the thread */
    ng_node_warn(node, "the daemon stops while plugin '%s' is still "
                 "opening it: not waiting for the plugin", s->plugin);
    ng_error_set(s->open_err, ECANCELED, "the daemon stops: open given up "
                 "while plugin '%s' was still in it", s->plugin);
    node_drop_lock(s);
    ng_node_opened(node, -1);
}

static void
close_work(struct ng_work *w)
{
    struct nbdkit_state *s = ng_node_state(w->node);

    node_disconnect(s);
    if (s->unloads)
        lib_unload(s->lib);
}

static void
close_after(struct ng_work *w)
{
    struct ng_node *node = w->node;
    struct nbdkit_state *s = ng_node_state(node);

    if (s->unloads)
        lib_forget(node, s);
    s->lib = NULL;
    node_drop_lock(s);
    ng_node_closed(node);
}

static void
nbdkit_close_async(struct ng_node *node)
{
    struct nbdkit_state *s = ng_node_state(node);

    /* Decided here, on the loop, where references are counted; a node
     * opening before the unload is done is refused (lib_get). */
    s->unloads = lib_put(s);
    s->work.fn = close_work;
    s->work.after = close_after;
    ng_node_queue_work(node, &s->work);
}

static int
nbdkit_refresh(struct ng_node *node, struct ng_node_facts *facts,
               struct ng_error *err)
{
    const struct nbdkit_state *s = ng_node_state(node);

    (void)err;
    facts->size = s->size;
    facts->caps = s->caps;
    facts->request_alignment = s->align;
    facts->max_transfer = s->max_transfer;
    facts->opt_transfer = s->opt_transfer;
    return 0;
}

#else /* !HAVE_NBDKIT */

static void
nbdkit_open_async(struct ng_node *node, struct ng_error *err)
{
    ng_error_set(err, ENOTSUP, "nbdgraphd was built without nbdkit's "
                 "plugin headers (nbdkit-plugin-dev): the nbdkit driver "
                 "is not available");
    ng_node_opened(node, -1);
}

static void
nbdkit_cancel_open(struct ng_node *node)
{
    (void)node;                     /* open_async answered inline */
}

static void
nbdkit_close_async(struct ng_node *node)
{
    ng_node_closed(node);
}

static void
nbdkit_submit(struct ng_node *node, struct ng_req *req)
{
    (void)node;
    ng_req_complete(req, -ENOTSUP);
}

static int
nbdkit_refresh(struct ng_node *node, struct ng_node_facts *facts,
               struct ng_error *err)
{
    (void)node;
    (void)facts;
    (void)err;
    return 0;
}

struct nbdkit_req {
    int unused;
};

#endif /* HAVE_NBDKIT */

const struct ng_driver ng_driver_nbdkit = {
    .name         = "nbdkit",
    .help         = "an nbdkit plugin loaded into the daemon",
    .is_filter    = false,
    .state_size   = sizeof(struct nbdkit_state),
    .opts         = nbdkit_opts,
    .req_ctx_size = sizeof(struct nbdkit_req),
    /* Every node its own threads: a plugin that stalls (a remote that
     * hangs) holds back only its own node.  The plugin's thread model is
     * kept with locks (see the top of the file). */
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope   = NG_POOL_PER_NODE,
    .threads      = 16,
    .open_async   = nbdkit_open_async,
    .cancel_open  = nbdkit_cancel_open,
    .close_async  = nbdkit_close_async,
    .submit       = nbdkit_submit,
    .refresh      = nbdkit_refresh,
    .ops          = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                    NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                    NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                    NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
