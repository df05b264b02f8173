/* graph/drv-file.c: "file", a POSIX file or block device (QEMU's "file"
 * and "host_device" protocol drivers in one).
 *
 * Every request runs on a thread of the file driver's own worker pool
 * (ng_req_run_blocking, up to 16 at once, shared by every file node): the
 * worker functions below may block but must not touch the graph; they
 * read the node state, which does not change while requests are in
 * flight, and return 0 or a negative errno.
 *
 * Three shortcuts keep requests that seldom block on the loop thread,
 * where they cost no thread hand-off: every request to a file on tmpfs
 * or ramfs (memory only: nothing there waits for a device; but block
 * status that must walk the file goes to a worker, while block status
 * the extent cache answers whole stays on the loop on any file system);
 * a buffered read that preadv2(RWF_NOWAIT) can answer wholly from the
 * page cache; and a buffered write that is not FUA (file_write_inline).
 * None takes a read or write over 64 KiB (FILE_LOOP_COPY_MAX): the loop
 * copies the client's socket meanwhile.
 * The last two are timed: one that took long (readahead, the dirty-page
 * throttle) sends that node's reads or writes off the loop for a while
 * (file_backoff_took).  A job's bulk copy (NG_REQ_BACKGROUND) takes
 * none: no client waits for it, and clients wait while the loop copies.
 *
 * With `aio: io_uring` (QEMU's name) the node has an io_uring of its own
 * on the loop (graph/file-uring.c): reads, writes (FUA as RWF_DSYNC) and
 * flushes of one flat buffer that needs no bounce go to the kernel from
 * the loop thread, many in one system call, with no worker thread of
 * ours (big buffered ones to the ring's kernel workers); the
 * rest (scatter-gather and bounced buffers, trims, zeroes, block status)
 * and anything the ring cannot take right now still use the pool.  A
 * short transfer or EAGAIN is done again on the pool, whose loops finish
 * it.  The shortcuts above come first: they are cheaper still.
 *
 * On ext4, buffered writes go in pieces of at most 64 KiB, aligned,
 * whatever the request's size (FILE_EXT4_WRITE_CHUNK): a write makes
 * page cache folios as large as itself, and every later small write
 * into one walks all its blocks.  The pool's loop writes the pieces
 * one after the other, the ring takes them as one linked op each.
 *
 * With cache.direct=on the file is opened O_DIRECT and the kernel wants
 * offset, length and buffer aligned.  The node declares the offset and
 * length alignment in its facts (file_refresh), so the graph's core
 * hands us only aligned ranges, doing read-modify-write of partial
 * blocks itself, serialised against overlapping writes (graph/split.c).
 * What is left here: a buffer in memory that is not aligned, and the
 * last block of a file whose size is not a multiple of the alignment,
 * bounce through an aligned buffer.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/fs.h>               /* BLKGETSIZE64, BLKSSZGET */
#include <linux/magic.h>            /* TMPFS_MAGIC, RAMFS_MAGIC,
                                     * EXT4_SUPER_MAGIC */
#endif

#include "graph/graph.h"
#include "graph/drivers.h"
#include "graph/file-uring.h"

/* Direct I/O alignment when the kernel does not tell: no logical block
 * size in use is larger, and over-aligning is always allowed. */
#define FILE_DEFAULT_ALIGN 4096

/* Fallback write-zeroes writes from this; aligned so O_DIRECT can use it
 * without a bounce. */
#define FILE_ZERO_BUF_SIZE (64 * 1024)
static _Alignas(FILE_DEFAULT_ALIGN) const unsigned char
    file_zero_buf[FILE_ZERO_BUF_SIZE];

/* QEMU's image locking (block/file-posix.c), so nbdgraph and QEMU see
 * each other: OFD read locks on single bytes, at PERM_BASE + p by a user
 * holding permission p and at SHARED_BASE + p by one that does not let
 * others hold p.  Read locks never conflict with each other; conflicts
 * are found by testing for a write lock. */
#define FILE_LOCK_PERM_BASE   100
#define FILE_LOCK_SHARED_BASE 200

enum file_perm {
    FILE_PERM_CONSISTENT_READ,
    FILE_PERM_WRITE,
    FILE_PERM_WRITE_UNCHANGED,
    FILE_PERM_RESIZE,
    FILE_PERM__COUNT
};

/* QEMU's spelling, for messages users may know from qemu-img. */
static const char *const file_perm_names[FILE_PERM__COUNT] = {
    "consistent read", "write", "write unchanged", "resize",
};

enum file_locking {
    FILE_LOCKING_AUTO,              /* lock when the kernel can */
    FILE_LOCKING_ON,
    FILE_LOCKING_OFF,
};

static const char *const file_locking_choices[] = {
    "auto", "on", "off", NULL,
};

/* QEMU also has "native" (Linux AIO); io_uring does what it did. */
enum { FILE_AIO_THREADS, FILE_AIO_IO_URING };
static const char *const file_aio_choices[] = {
    "threads", "io_uring", NULL,
};

/* Ops in flight on a node's ring at most; past it the pool takes them. */
#define FILE_URING_ENTRIES 128

/* Loop thread only: a loop shortcut that took too long is skipped
 * until `until_ns` (uv_hrtime), see file_backoff_took. */
struct file_backoff {
    uint64_t until_ns;
    uint64_t next_ns;               /* the next back-off; 0: the first */
};

struct file_state {
    char *filename;                 /* option "filename" */
    bool direct;                    /* option "cache.direct" */
    int aio;                        /* option "aio" */
    int locking;                    /* option "locking": FILE_LOCKING_* */

    int fd;
    bool has_fd;                    /* fd is open (state starts zeroed) */
    bool is_block;                  /* a block device, not a file */
    uint64_t size;                  /* bytes, at open */
    uint64_t align;                 /* O_DIRECT offset and length
                                     * alignment; 1 without O_DIRECT */
    uint64_t mem_align;             /* O_DIRECT buffer alignment, >= the
                                     * above; 1 without O_DIRECT */
    uint64_t dev_align;             /* fallocate() granularity of a block
                                     * device; 1 for a file */
    bool never_blocks;              /* tmpfs/ramfs, buffered: run inline */
    bool nowait_reads;              /* try RWF_NOWAIT reads inline; cleared
                                     * when the file system says no */
    bool inline_writes;             /* small buffered writes on the loop */
    uint64_t write_chunk;           /* pwrite at most this, aligned to it
                                     * (FILE_EXT4_WRITE_CHUNK); 0: any */
    struct file_backoff read_backoff;   /* the loop's RWF_NOWAIT reads */
    struct file_backoff write_backoff;  /* the loop's inline writes */
    /* The data extent SEEK_HOLE found last, [data_start, data_end)
     * (empty when equal): the next block status inside it answers from
     * here.  SEEK_HOLE walks to the end of the data, milliseconds per GiB
     * on tmpfs, so without this each request of a map of a full file
     * walked the whole rest of it.  Only data is kept: calling a hole
     * data is always right, the other way round is not, and another
     * process may write the file.  Our own fallocate()s (trims, zeroes)
     * empty it and bump extent_gen, so a walk that began before one
     * does not store what it found.  Block status runs on worker
     * threads, hence the lock. */
    pthread_mutex_t extent_lock;
    bool extent_lock_ready;
    uint64_t data_start, data_end;
    uint64_t extent_gen;
    struct ng_node *node;           /* back from ring completions */
    struct ng_uring *uring;         /* aio=io_uring: owned, else NULL */
};

static const struct ng_opt_desc file_opts[] = {
    NG_OPT_STRING("filename", struct file_state, filename, NULL,
                  "path of the file or block device"),
    NG_OPT_BOOL("cache.direct", struct file_state, direct, "false",
                "bypass the host page cache (O_DIRECT)"),
    NG_OPT_ENUM("aio", struct file_state, aio, "threads", file_aio_choices,
                "I/O backend: a thread pool, or io_uring on the loop"),
    NG_OPT_ENUM("locking", struct file_state, locking, "auto",
                file_locking_choices,
                "take QEMU-compatible image locks (auto: when supported)"),
    NG_OPT_END,
};

/* ---- Worker thread: system call loops -------------------------------- */

static inline bool
file_is_aligned(uint64_t v, uint64_t align)
{
    return (v & (align - 1)) == 0;
}

/* Read it all; what lies past the end of the file reads as zeroes (the
 * unaligned tail of a bounce, or a file someone else truncated). */
static int
file_pread_all(const struct file_state *s, void *buf, uint64_t len,
               uint64_t off)
{
    unsigned char *p = buf;

    while (len > 0) {
        size_t n = len < SSIZE_MAX ? len : SSIZE_MAX;
        ssize_t r = pread(s->fd, p, n, (off_t)off);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
        /* O_DIRECT stops short only at the end of the file, and would
         * refuse to go on from an unaligned offset. */
        if (r == 0 || (len > 0 && !file_is_aligned(off, s->align))) {
            memset(p, 0, len);
            break;
        }
    }
    return 0;
}

/* How much of [off, off + len) one pwrite() takes: all of it, or up to
 * the next multiple of s->write_chunk (see FILE_EXT4_WRITE_CHUNK). */
static inline size_t
file_write_piece(const struct file_state *s, uint64_t len, uint64_t off)
{
    uint64_t n = len < SSIZE_MAX ? len : SSIZE_MAX;

    if (s->write_chunk != 0 && n > s->write_chunk - off % s->write_chunk)
        n = s->write_chunk - off % s->write_chunk;
    return (size_t)n;
}

static int
file_pwrite_all(const struct file_state *s, const void *buf, uint64_t len,
                uint64_t off)
{
    const unsigned char *p = buf;

    while (len > 0) {
        size_t n = file_write_piece(s, len, off);
        ssize_t r = pwrite(s->fd, p, n, (off_t)off);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;            /* would loop for ever */
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

static int
file_sync(const struct file_state *s)
{
    while (fdatasync(s->fd) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

/* ---- Worker thread: the ops ------------------------------------------ */

static inline bool
file_needs_bounce(const struct file_state *s, const void *buf, uint64_t len,
                  uint64_t off)
{
    return !file_is_aligned(off | len, s->align) ||
           !file_is_aligned((uintptr_t)buf, s->mem_align);
}

/* O_DIRECT through an aligned buffer of our own, for memory that is not
 * aligned, a scatter-gather buffer, or the last block of a file whose
 * size is not a multiple of the alignment.  The range itself is aligned
 * (the core sees to it, see file_refresh) except where it ends at the
 * end of the file: reading past it gives zeroes, and a write sends the
 * last block whole, zeroes past the end, then cuts the file back. */
static int
file_read_bounce(struct file_state *s, const struct ng_iov *v, uint64_t len,
                 uint64_t off)
{
    uint64_t blen = (len + s->align - 1) & ~(s->align - 1);
    unsigned char *b;
    int r;

    if (!file_is_aligned(off, s->align))
        return -EINVAL;             /* the core did not align it: a bug */
    if ((r = posix_memalign((void **)&b, s->mem_align, blen)) != 0)
        return -r;
    r = file_pread_all(s, b, blen, off);
    if (r == 0)
        ng_iov_from_buf(v, 0, b, len);
    free(b);
    return r;
}

static int
file_write_bounce(struct file_state *s, const struct ng_iov *v,
                  uint64_t len, uint64_t off)
{
    uint64_t blen = (len + s->align - 1) & ~(s->align - 1);
    /* file_grow() may change it on the loop thread meanwhile. */
    uint64_t size = __atomic_load_n(&s->size, __ATOMIC_RELAXED);
    unsigned char *b;
    int r;

    if (!file_is_aligned(off, s->align) ||
        (!file_is_aligned(len, s->align) && off + len < size))
        return -EINVAL;             /* the core did not align it: a bug */
    if ((r = posix_memalign((void **)&b, s->mem_align, blen)) != 0)
        return -r;
    ng_iov_to_buf(v, 0, b, len);
    memset(b + len, 0, blen - len);
    r = file_pwrite_all(s, b, blen, off);
    if (r == 0 && off + blen > size && !s->is_block &&
        ftruncate(s->fd, (off_t)size) < 0)
        r = -errno;
    free(b);
    return r;
}

/* One flat buffer as a view, to bounce it. */
static inline struct ng_iov
file_flat_view(struct iovec *e, const void *buf, uint64_t len)
{
    *e = (struct iovec){ (void *)buf, (size_t)len };
    return (struct ng_iov){ .iov = e, .niov = 1, .skip = 0 };
}

static int
file_read(struct file_state *s, void *buf, uint64_t len, uint64_t off)
{
    struct iovec e;
    struct ng_iov v;

    if (s->direct && file_needs_bounce(s, buf, len, off)) {
        v = file_flat_view(&e, buf, len);
        return file_read_bounce(s, &v, len, off);
    }
    return file_pread_all(s, buf, len, off);
}

static int
file_write(struct file_state *s, const void *buf, uint64_t len,
           uint64_t off)
{
    struct iovec e;
    struct ng_iov v;

    if (s->direct && file_needs_bounce(s, buf, len, off)) {
        v = file_flat_view(&e, buf, len);
        return file_write_bounce(s, &v, len, off);
    }
    return file_pwrite_all(s, buf, len, off);
}

/* A scatter-gather read or write: one flat buffer (what NBD clients send)
 * goes straight through; with O_DIRECT several pieces bounce as one
 * range; otherwise piece by piece.  Only requests padded by the core
 * come in pieces. */
static int
file_readv(struct file_state *s, const struct ng_iov *v, uint64_t len,
           uint64_t off)
{
    void *buf = ng_iov_flat(v, (size_t)len);
    uint64_t done = 0;

    if (buf != NULL)
        return file_read(s, buf, len, off);
    if (s->direct)
        return file_read_bounce(s, v, len, off);
    while (done < len) {
        size_t n = ng_iov_piece(v, done, &buf);
        int r;

        if (n == 0)
            return -EIO;            /* a view shorter than the request */
        if (n > len - done)
            n = (size_t)(len - done);
        if ((r = file_pread_all(s, buf, n, off + done)) < 0)
            return r;
        done += n;
    }
    return 0;
}

static int
file_writev(struct file_state *s, const struct ng_iov *v, uint64_t len,
            uint64_t off)
{
    void *buf = ng_iov_flat(v, (size_t)len);
    uint64_t done = 0;

    if (buf != NULL)
        return file_write(s, buf, len, off);
    if (s->direct)
        return file_write_bounce(s, v, len, off);
    while (done < len) {
        size_t n = ng_iov_piece(v, done, &buf);
        int r;

        if (n == 0)
            return -EIO;
        if (n > len - done)
            n = (size_t)(len - done);
        if ((r = file_pwrite_all(s, buf, n, off + done)) < 0)
            return r;
        done += n;
    }
    return 0;
}

/* Zeroes by writing them, for when the file system cannot do better. */
static int
file_write_zero_bytes(struct file_state *s, uint64_t len, uint64_t off)
{
    while (len > 0) {
        /* Chunks on buffer-size boundaries keep all but the first and
         * last aligned for O_DIRECT. */
        uint64_t n = FILE_ZERO_BUF_SIZE - off % FILE_ZERO_BUF_SIZE;
        int r;

        if (n > len)
            n = len;
        r = file_write(s, file_zero_buf, n, off);
        if (r < 0)
            return r;
        off += n;
        len -= n;
    }
    return 0;
}

/* ---- Worker thread or loop: the extent cache (see file_state) -------- */

static void
file_forget_data(struct file_state *s)
{
    pthread_mutex_lock(&s->extent_lock);
    s->data_start = s->data_end = 0;
    s->extent_gen++;
    pthread_mutex_unlock(&s->extent_lock);
}

/* Whether `off` is in the cached data extent; *data_end is its end. */
static bool
file_cached_data(struct file_state *s, uint64_t off, uint64_t *data_end,
                 uint64_t *gen)
{
    bool hit;

    pthread_mutex_lock(&s->extent_lock);
    hit = off >= s->data_start && off < s->data_end;
    *data_end = s->data_end;
    *gen = s->extent_gen;
    pthread_mutex_unlock(&s->extent_lock);
    return hit;
}

static void
file_remember_data(struct file_state *s, uint64_t start, uint64_t end,
                   uint64_t gen)
{
    pthread_mutex_lock(&s->extent_lock);
    if (s->extent_gen == gen) {
        s->data_start = start;
        s->data_end = end;
    }
    pthread_mutex_unlock(&s->extent_lock);
}

static inline bool
file_errno_unsupported(int r)
{
    return r == -EOPNOTSUPP || r == -ENOSYS;
}

static int
file_fallocate(struct file_state *s, int mode, uint64_t off, uint64_t len)
{
    int r;

    if (len == 0)
        return 0;
    do {
        r = fallocate(s->fd, mode, (off_t)off, (off_t)len);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        r = -errno;
    file_forget_data(s);
    return r;
}

static int
file_trim(struct file_state *s, uint64_t len, uint64_t off)
{
    /* A block device deallocates whole logical blocks only; trim is
     * advisory, so leave the partial ones alone. */
    uint64_t a = (off + s->dev_align - 1) & ~(s->dev_align - 1);
    uint64_t b = (off + len) & ~(s->dev_align - 1);
    int r;

    if (a >= b)
        return 0;
    r = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       a, b - a);
    return file_errno_unsupported(r) ? 0 : r;
}

static int
file_zero(struct file_state *s, uint64_t len, uint64_t off, uint32_t flags)
{
    /* A block device zeroes whole logical blocks only: the partial ones
     * at either end are written (a few bytes, fast even for FAST_ZERO). */
    uint64_t end = off + len;
    uint64_t a = (off + s->dev_align - 1) & ~(s->dev_align - 1);
    uint64_t b = end & ~(s->dev_align - 1);
    int r = -EOPNOTSUPP;

    if (a >= b)
        return file_write_zero_bytes(s, len, off);
    if (flags & NG_REQ_MAY_TRIM)
        r = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           a, b - a);
    /* KEEP_SIZE: block devices insist on it, files do not care. */
    if (file_errno_unsupported(r))
        r = file_fallocate(s, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                           a, b - a);
    if (file_errno_unsupported(r)) {
        if (flags & NG_REQ_FAST_ZERO)
            return -ENOTSUP;
        return file_write_zero_bytes(s, len, off);
    }
    if (r == 0 && off < a)
        r = file_write_zero_bytes(s, a - off, off);
    if (r == 0 && b < end)
        r = file_write_zero_bytes(s, end - b, b);
    return r;
}

/* Where the data at or after `off` ends and the next hole starts, from
 * SEEK_DATA and SEEK_HOLE.  Sets *next and *flags for [off, *next). */
static int
file_next_extent(struct file_state *s, uint64_t off, uint64_t end,
                 uint64_t *next, uint32_t *flags)
{
    uint64_t data_end, gen;
    off_t data, hole;

    if (file_cached_data(s, off, &data_end, &gen)) {
        *next = data_end < end ? data_end : end;
        *flags = 0;
        return 0;
    }
    data = lseek(s->fd, (off_t)off, SEEK_DATA);

    if (data < 0) {
        if (errno == ENXIO) {
            /* No data from here to the end of the file. */
            *next = end;
            *flags = NG_EXTENT_HOLE | NG_EXTENT_ZERO;
            return 0;
        }
        return -errno;
    }
    if ((uint64_t)data > off) {
        *next = (uint64_t)data < end ? (uint64_t)data : end;
        *flags = NG_EXTENT_HOLE | NG_EXTENT_ZERO;
        return 0;
    }
    hole = lseek(s->fd, (off_t)off, SEEK_HOLE);
    if (hole < 0 && errno == ENXIO) {
        /* Truncated between the two calls: what is gone reads as
         * zeroes. */
        *next = end;
        *flags = NG_EXTENT_HOLE | NG_EXTENT_ZERO;
        return 0;
    }
    if (hole < 0)
        return -errno;
    if ((uint64_t)hole > off)
        file_remember_data(s, off, (uint64_t)hole, gen);
    /* A hole at `off` right after data at `off` means the file changed
     * under us; calling it data keeps us moving. */
    *next = (uint64_t)hole > off && (uint64_t)hole < end ?
            (uint64_t)hole : end;
    *flags = 0;
    return 0;
}

static int
file_block_status(struct file_state *s, struct ng_req *req)
{
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
    uint64_t off = req->offset, end = req->offset + req->length;

    req->nr_extents = 0;
    while (off < end) {
        uint64_t next = end;
        uint32_t flags = 0;
        int r = file_next_extent(s, off, end, &next, &flags);

        if (r == -EINVAL || file_errno_unsupported(r)) {
            /* No SEEK_DATA here: say data, which is always true. */
            next = end;
            flags = 0;
        } else if (r < 0) {
            return r;
        }
        if (!ng_req_add_extent(req, max, next - off, flags))
            break;
        off = next;
    }
    return 0;
}

static int
file_cache(const struct file_state *s, uint64_t len, uint64_t off)
{
    return -posix_fadvise(s->fd, (off_t)off, (off_t)len,
                          POSIX_FADV_WILLNEED);
}

/* Worker thread: the one entry point for every op. */
static int
file_work(struct ng_node *node, struct ng_req *req)
{
    struct file_state *s = ng_node_state(node);
    int r;

    switch (req->op) {
    case NG_OP_READ:
        return file_readv(s, &req->iov, req->length, req->offset);
    case NG_OP_WRITE:
        r = file_writev(s, &req->iov, req->length, req->offset);
        break;
    case NG_OP_TRIM:
        r = file_trim(s, req->length, req->offset);
        break;
    case NG_OP_WRITE_ZEROES:
        r = file_zero(s, req->length, req->offset, req->flags);
        break;
    case NG_OP_FLUSH:
        return file_sync(s);
    case NG_OP_BLOCK_STATUS:
        return file_block_status(s, req);
    case NG_OP_CACHE:
        return file_cache(s, req->length, req->offset);
    default:
        return -EINVAL;
    }
    if (r == 0 && (req->flags & NG_REQ_FUA))
        r = file_sync(s);
    return r;
}

/* ---- Loop thread ------------------------------------------------------ */

/* A buffered read or write copies between the page cache and the
 * request's buffer; the loop then copies that buffer to or from the
 * client's socket.  Up to this size both copies stay on the loop: a
 * hand-off would cost more than the copy.  Bigger ones go to a worker
 * (or the ring's kernel worker), so the loop sends the previous reply or
 * receives the next payload meanwhile: with a 1 MiB read both copies on
 * the loop were ~40 % each of its time, the loop one busy core and the
 * read bound by it, where nbd-server spreads them over threads. */
#define FILE_LOOP_COPY_MAX (64 * 1024)

/* A read or write whose copy is too big for the loop, even on tmpfs,
 * where it cannot block but still takes the loop's time from the
 * client's socket. */
static inline bool
file_big_copy(const struct ng_req *req)
{
    return (req->op == NG_OP_READ || req->op == NG_OP_WRITE) &&
           req->length > FILE_LOOP_COPY_MAX;
}

/* How long a read or write on the loop may take before we call it
 * slow: a fixed part, plus the copy at 1 GB/s (a hot 1 MiB copy takes
 * 0.6 ms on the slow VMs we measured, 4 KiB 5 us).  1 MiB gets 2 ms,
 * above the 1.1 ms a cold one typically waits there: the aim is the
 * long waits (25 ms seen), not every preemption of a loaded loop. */
#define FILE_NOWAIT_SLOW_NS     1000000u
#define FILE_NOWAIT_NS_PER_BYTE 1u

/* After a slow one, such requests go to the workers (or the ring) for
 * this long, doubled on each slow try in a row up to the maximum; a fast
 * try starts over. */
#define FILE_NOWAIT_BACKOFF_MIN_NS (10u * 1000 * 1000)
#define FILE_NOWAIT_BACKOFF_MAX_NS (1000u * 1000 * 1000)

/* Whether a loop shortcut may be tried at `now`. */
static inline bool
file_backoff_allows(const struct file_backoff *b, uint64_t now)
{
    return now >= b->until_ns;
}

/* The loop's shortcuts may still wait: RWF_NOWAIT reads of pages that
 * readahead is still filling succeed, but only once the disk has
 * delivered them (on a virtio disk: 1 ms typical, 25 ms seen, per
 * 1 MiB), and a buffered write may meet the kernel's dirty-page
 * throttle or a journal commit; the whole loop waits with them.  Such a
 * request is only seen afterwards, by its time, so the shortcut is then
 * skipped for a while: a disk that stays slow stays off the loop, with a
 * try now and then. */
static void
file_backoff_took(struct file_backoff *b, uint64_t start_ns, uint64_t len)
{
    uint64_t now = uv_hrtime();

    if (now - start_ns <= FILE_NOWAIT_SLOW_NS +
                          len * FILE_NOWAIT_NS_PER_BYTE) {
        b->next_ns = 0;
        return;
    }
    if (b->next_ns == 0)
        b->next_ns = FILE_NOWAIT_BACKOFF_MIN_NS;
    b->until_ns = now + b->next_ns;
    if (b->next_ns < FILE_NOWAIT_BACKOFF_MAX_NS / 2)
        b->next_ns *= 2;
    else
        b->next_ns = FILE_NOWAIT_BACKOFF_MAX_NS;
}

/* A buffered read wholly in the page cache, done without blocking;
 * false when it must go to a worker thread. */
static bool
file_read_nowait(struct file_state *s, struct ng_req *req)
{
    struct iovec iov[8];
    size_t covered;
    unsigned n;
    ssize_t r;
    uint64_t start_ns;

    if (!s->nowait_reads || req->op != NG_OP_READ || file_big_copy(req))
        return false;
    start_ns = uv_hrtime();
    if (!file_backoff_allows(&s->read_backoff, start_ns))
        return false;
    n = ng_iov_export(&req->iov, (size_t)req->length, iov, 8, &covered);
    if (covered < req->length)
        return false;
    r = preadv2(s->fd, iov, (int)n, (off_t)req->offset, RWF_NOWAIT);
    if (r < 0 && errno == EOPNOTSUPP)
        s->nowait_reads = false;
    file_backoff_took(&s->read_backoff, start_ns, req->length);
    return r == (ssize_t)req->length;
}

/* Small buffered writes on the loop: the kernel has no RWF_NOWAIT for
 * them on ext4 (EOPNOTSUPP), and io_uring hands each to one io-wq
 * thread per file (the inode lock serialises them anyway), so a 4 KiB
 * write cost ~45 us of CPU that way, ~25 us here, where it usually only
 * copies into the page cache (and then the back-off above).  Big ones
 * (FILE_LOOP_COPY_MAX) stay off the loop; FUA ones wait for the disk. */
static bool
file_write_inline(struct ng_node *node, struct file_state *s,
                  struct ng_req *req)
{
    uint64_t start_ns;
    int r;

    if (!s->inline_writes || req->op != NG_OP_WRITE ||
        (req->flags & NG_REQ_FUA) || file_big_copy(req))
        return false;
    start_ns = uv_hrtime();
    if (!file_backoff_allows(&s->write_backoff, start_ns))
        return false;
    r = file_work(node, req);
    file_backoff_took(&s->write_backoff, start_ns, req->length);
    ng_req_complete(req, r);
    return true;
}

/* Block status that the extent cache cannot answer walks the file,
 * which on tmpfs takes long enough (a second for 16 GiB) to stall every
 * client if done on the loop: it goes to a worker even there. */
static bool
file_may_walk(struct file_state *s, const struct ng_req *req)
{
    uint64_t data_end, gen;

    return req->op == NG_OP_BLOCK_STATUS &&
           !file_cached_data(s, req->offset, &data_end, &gen);
}

/* Block status the extent cache answers whole: one extent, no lseek()
 * (on a disk that may read extent blocks), so the loop can answer it on
 * any file system instead of a worker. */
static bool
file_status_cached(struct file_state *s, const struct ng_req *req)
{
    uint64_t data_end, gen;

    return req->op == NG_OP_BLOCK_STATUS &&
           file_cached_data(s, req->offset, &data_end, &gen) &&
           (data_end >= req->offset + req->length ||
            (req->flags & NG_REQ_REQ_ONE) || req->max_extents == 1);
}

/* A write that one pwrite() may not take whole (s->write_chunk) goes
 * to the ring as one op per piece, all queued at once and linked, so
 * that they run one after the other (side by side, the kernel's workers
 * spun on the file's lock: 1 MiB writes 21 % slower than linked); this
 * counts them back in.  The ring's
 * `user` of such an op is this, tagged with FILE_PIECES_TAG, where that
 * of a whole op is the request itself. */
struct file_pieces {
    struct ng_req *req;
    unsigned left;                  /* ops not completed yet */
    bool redo;                      /* not all could be queued */
    uint64_t done;                  /* bytes they wrote */
    int err;                        /* the first hard failure, or 0 */
};

#define FILE_PIECES_TAG ((uintptr_t)1)  /* malloc() aligns better */

/* Queue req's write of `buf` in pieces; false (nothing queued) when the
 * ring has no room for them all. */
static bool
file_uring_pieces(struct file_state *s, struct ng_req *req,
                  unsigned char *buf, bool kernel_worker)
{
    uint64_t end = req->offset + req->length, off;
    unsigned n = 0, queued = 0;
    struct file_pieces *p;

    for (off = req->offset; off < end; off += file_write_piece(s, end - off,
                                                               off))
        n++;
    if (n > ng_uring_room(s->uring) || (p = calloc(1, sizeof *p)) == NULL)
        return false;
    p->req = req;
    /* The room asked for makes every queueing below succeed; should one
     * fail anyway, the link left on the last queued piece may take in an
     * op queued after it, which then waits for it or is cancelled with
     * it: file_uring_done has the pool redo a cancelled op. */
    for (off = req->offset; off < end; queued++) {
        struct iovec e = { buf + (off - req->offset),
                           file_write_piece(s, end - off, off) };

        if (!ng_uring_rw(s->uring, true, s->fd, &e, 1, off, 0,
                         kernel_worker,
                         (void *)((uintptr_t)p | FILE_PIECES_TAG)))
            break;
        off += e.iov_len;
        if (off < end)
            ng_uring_link_last(s->uring);
    }
    p->left = queued;
    p->redo = queued < n;           /* the pool does it all again */
    if (queued == 0)
        free(p);
    return queued > 0;
}

/* A request the ring can take: one flat buffer needing no bounce (a
 * length the kernel's int result can hold), or a flush.  Queues it;
 * false when the pool must do it.  A FUA write in pieces is the pool's:
 * one RWF_DSYNC per piece would be a journal commit each. */
static bool
file_uring_queue(struct file_state *s, struct ng_req *req)
{
    bool write = req->op == NG_OP_WRITE;
    bool pieces = write && file_write_piece(s, req->length, req->offset) <
                           req->length;
    struct iovec e;

    if (req->op == NG_OP_FLUSH)
        return ng_uring_fdatasync(s->uring, s->fd, req);
    if ((req->op != NG_OP_READ && !write) || req->length > (1u << 30) ||
        (pieces && (req->flags & NG_REQ_FUA)))
        return false;
    e.iov_base = ng_iov_flat(&req->iov, (size_t)req->length);
    e.iov_len = (size_t)req->length;
    if (e.iov_base == NULL ||
        (s->direct && file_needs_bounce(s, e.iov_base, req->length,
                                        req->offset)))
        return false;
    if (pieces)
        return file_uring_pieces(s, req, e.iov_base, file_big_copy(req));
    /* A buffered copy the kernel could do at once (page cache hit)
     * would run in the loop's submitting call: big ones go to the ring's
     * worker instead (FILE_LOOP_COPY_MAX).  O_DIRECT copies nothing. */
    return ng_uring_rw(s->uring, write, s->fd, &e, 1, req->offset,
                       write && (req->flags & NG_REQ_FUA) ? RWF_DSYNC : 0,
                       !s->direct && file_big_copy(req), req);
}

/* One piece's completion (file_uring_pieces); the last one completes
 * the request as file_uring_done does a whole op: a failure, all
 * written, or (a short piece, EAGAIN, pieces not queued, or cancelled
 * after one of those) the pool does it all again. */
static void
file_uring_piece_done(struct file_state *s, struct file_pieces *p, int res)
{
    struct ng_req *req = p->req;
    bool whole;
    int err;

    if (res >= 0)
        p->done += (uint64_t)res;
    else if (res == -EAGAIN || res == -EINTR || res == -ECANCELED)
        p->redo = true;             /* ECANCELED: one before it stopped */
    else if (p->err == 0)
        p->err = res;
    if (--p->left > 0)
        return;
    err = p->err;
    whole = !p->redo && p->done == req->length;
    free(p);
    if (err != 0)
        ng_req_complete(req, err);
    else if (whole)
        ng_req_complete(req, 0);
    else
        ng_req_run_blocking(s->node, req, file_work);
}

/* A ring completion, on the loop thread: all done, a failure, or (short,
 * or EAGAIN) the pool does the whole op again — reads and writes of the
 * same bytes can be repeated, and its loops go past what stopped us. */
static void
file_uring_done(void *opaque, void *user, int res)
{
    struct file_state *s = opaque;
    struct ng_req *req = user;

    if ((uintptr_t)user & FILE_PIECES_TAG) {
        file_uring_piece_done(s, (struct file_pieces *)
                                 ((uintptr_t)user & ~FILE_PIECES_TAG), res);
        return;
    }
    if (res >= 0 && (uint64_t)res == (req->op == NG_OP_FLUSH ? 0
                                                             : req->length))
        ng_req_complete(req, 0);
    else if (res >= 0 || res == -EAGAIN || res == -EINTR ||
             res == -ECANCELED)     /* behind a link that came short */
        ng_req_run_blocking(s->node, req, file_work);
    else
        ng_req_complete(req, res);
}

/* The loop shortcuts (see the top of the file); the choke point keeps
 * a job's bulk copy away from them. */
static bool
file_submit_inline(struct ng_node *node, struct ng_req *req)
{
    struct file_state *s = ng_node_state(node);

    if ((s->never_blocks && !file_may_walk(s, req) && !file_big_copy(req)) ||
        file_status_cached(s, req))
        ng_req_complete(req, file_work(node, req));
    else if (file_read_nowait(s, req))
        ng_req_complete(req, 0);
    else if (!file_write_inline(node, s, req))   /* completes it if true */
        return false;
    return true;
}

static void
file_submit(struct ng_node *node, struct ng_req *req)
{
    struct file_state *s = ng_node_state(node);

    if (s->uring == NULL || !file_uring_queue(s, req))
        ng_req_run_blocking(node, req, file_work);
}

/* Buffered writes to ext4 go in pieces of at most this, each within
 * one aligned block of this size.  The page cache takes a write in
 * folios as large as the write (Linux 6.16 gave ext4 large folios), and
 * ext4 keeps a buffer head per 4 KiB block of a folio: every later
 * write into that folio, however small, walks all of them
 * (ext4_block_write_begin, block_commit_write).  After a client wrote
 * the file in 1 MiB requests (a copy, an install), each 4 KiB write
 * took 20 us of CPU, 72 % of it in that walk, against 6 us in folios
 * of 64 KiB (contrib/bench/README.md).  The price: 1 MiB writes take
 * a quarter more CPU (16 folios, 16 calls or ring ops), some 5 % fewer
 * MB/s.  Larger pieces do not make them cheaper (256 KiB measured the
 * same) but small writes dearer.  XFS and the others track blocks with
 * a bitmap, tmpfs (by default) uses small pages: only ext4 gets this. */
#define FILE_EXT4_WRITE_CHUNK (64 * 1024)

/* Which shortcut (see the top of the file) this file may take, and how
 * it is written. */
static void
file_probe_blocking(struct file_state *s)
{
    struct statfs fs;

    if (s->direct || s->is_block)
        return;
    s->nowait_reads = true;
    s->inline_writes = true;
    if (fstatfs(s->fd, &fs) != 0)
        return;
    if (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)
        s->never_blocks = true;
    if (fs.f_type == EXT4_SUPER_MAGIC)
        s->write_chunk = FILE_EXT4_WRITE_CHUNK;
}

/* O_DIRECT alignment: what statx() reports, else the device's logical
 * block size, else a safe guess.  Sets s->align and s->mem_align. */
static void
file_probe_align(struct file_state *s)
{
    uint64_t align = 0, mem_align = 0;

#ifdef STATX_DIOALIGN
    struct statx stx;

    if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align != 0) {
        align = stx.stx_dio_offset_align;
        mem_align = stx.stx_dio_mem_align;
    }
#endif
#ifdef BLKSSZGET
    if (align == 0 && s->is_block) {
        int lbs;

        if (ioctl(s->fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
            align = (uint64_t)lbs;
    }
#endif
    if (align == 0 || (align & (align - 1)) != 0)
        align = FILE_DEFAULT_ALIGN;
    if (mem_align < align)
        mem_align = align;          /* one buffer serves both */
    if ((mem_align & (mem_align - 1)) != 0)
        mem_align = FILE_DEFAULT_ALIGN > align ? FILE_DEFAULT_ALIGN : align;
    s->align = align;
    s->mem_align = mem_align;
}

static int
file_get_size(struct file_state *s, struct ng_error *err)
{
    struct stat st;

    if (fstat(s->fd, &st) < 0)
        return ng_error_set(err, errno, "cannot stat '%s': %s",
                            s->filename, strerror(errno));
    s->dev_align = 1;
    if (S_ISREG(st.st_mode)) {
        s->size = (uint64_t)st.st_size;
        return 0;
    }
#ifdef BLKGETSIZE64
    if (S_ISBLK(st.st_mode)) {
        int lbs;

        s->is_block = true;
        if (ioctl(s->fd, BLKGETSIZE64, &s->size) < 0)
            return ng_error_set(err, errno,
                                "cannot get the size of '%s': %s",
                                s->filename, strerror(errno));
        if (ioctl(s->fd, BLKSSZGET, &lbs) == 0 && lbs > 0 &&
            (lbs & (lbs - 1)) == 0)
            s->dev_align = (uint64_t)lbs;
        return 0;
    }
#endif
    return ng_error_set(err, EINVAL,
                        "'%s' is not a regular file or block device",
                        s->filename);
}

/* 0: set; 1: the kernel has no OFD locks; -errno otherwise. */
static int
file_lock_byte(const struct file_state *s, off_t byte)
{
    struct flock fl = {
        .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte,
        .l_len = 1,
    };

    if (fcntl(s->fd, F_OFD_SETLK, &fl) == 0)
        return 0;
    return errno == EINVAL ? 1 : -errno;
}

/* True when another open file holds a lock on `byte`. */
static bool
file_byte_locked(const struct file_state *s, off_t byte)
{
    struct flock fl = {
        .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte,
        .l_len = 1,
    };

    return fcntl(s->fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

/* Announce what we use and what we do not share, then look for others
 * who hold what we do not share or do not share what we use.  In that
 * order, so that of two racing openers at least one sees the other. */
static int
file_lock(struct file_state *s, bool read_only, struct ng_error *err)
{
    unsigned held = 1u << FILE_PERM_CONSISTENT_READ;
    /* A size fixed at open and data we serve: others must not change
     * them under us. */
    unsigned unshared = 1u << FILE_PERM_WRITE | 1u << FILE_PERM_RESIZE;

    if (!read_only)
        held |= 1u << FILE_PERM_WRITE;
    for (int p = 0; p < FILE_PERM__COUNT; p++) {
        int r = 0;

        if (held & (1u << p))
            r = file_lock_byte(s, FILE_LOCK_PERM_BASE + p);
        if (r == 0 && (unshared & (1u << p)))
            r = file_lock_byte(s, FILE_LOCK_SHARED_BASE + p);
        if (r == 1 && s->locking == FILE_LOCKING_AUTO)
            return 0;               /* unlocked, as asked */
        if (r == 1)
            r = -EINVAL;
        if (r == -EAGAIN || r == -EACCES)
            return ng_error_set(err, EAGAIN,
                                "failed to lock '%s': is another process "
                                "using it?", s->filename);
        if (r < 0)
            return ng_error_set(err, -r, "cannot lock '%s': %s",
                                s->filename, strerror(-r));
    }
    for (int p = 0; p < FILE_PERM__COUNT; p++) {
        if ((held & (1u << p)) &&
            file_byte_locked(s, FILE_LOCK_SHARED_BASE + p))
            return ng_error_set(err, EAGAIN,
                                "failed to get \"%s\" lock on '%s': is "
                                "another process using it?",
                                file_perm_names[p], s->filename);
        if ((unshared & (1u << p)) &&
            file_byte_locked(s, FILE_LOCK_PERM_BASE + p))
            return ng_error_set(err, EAGAIN,
                                "failed to get shared \"%s\" lock on '%s': "
                                "is another process using it?",
                                file_perm_names[p], s->filename);
    }
    return 0;
}

static void
file_close(struct ng_node *node)
{
    struct file_state *s = ng_node_state(node);

    /* Clients may have written without asking for a flush; what they
     * wrote must be on disk once the node (or the daemon) is gone. */
    ng_uring_free(s->uring);
    s->uring = NULL;
    if (s->extent_lock_ready)
        pthread_mutex_destroy(&s->extent_lock);
    s->extent_lock_ready = false;
    if (s->has_fd && !node->read_only && !node->graph->inspect_only)
        fdatasync(s->fd);
    if (s->has_fd)
        close(s->fd);               /* also drops the image locks */
    s->has_fd = false;
}

static int
file_open_uring(struct ng_node *node, struct file_state *s,
                struct ng_error *err)
{
    struct ng_error why = { 0 };

    s->node = node;
    s->uring = ng_uring_new(ng_node_loop(node), FILE_URING_ENTRIES,
                            file_uring_done, s, &why);
    if (s->uring != NULL)
        return 0;
    file_close(node);
    return ng_error_set(err, why.code, "'%s': aio=io_uring: %s", s->filename,
                        why.msg);
}

static int
file_open(struct ng_node *node, struct ng_error *err)
{
    struct file_state *s = ng_node_state(node);
    bool inspect = node->graph->inspect_only;
    int flags = O_CLOEXEC |
                (node->read_only || inspect ? O_RDONLY : O_RDWR);
    struct ng_error why = { 0 };

    /* Before anything: --check-config (inspect) must refuse it too. */
    if (s->aio == FILE_AIO_IO_URING && !ng_uring_built(&why))
        return ng_error_set(err, why.code, "'%s': aio=io_uring: %s",
                            s->filename, why.msg);
    if (s->direct)
        flags |= O_DIRECT;
    s->align = s->mem_align = s->dev_align = 1;
    pthread_mutex_init(&s->extent_lock, NULL);
    s->extent_lock_ready = true;
    s->fd = open(s->filename, flags);
    if (s->fd < 0) {
        if (s->direct && errno == EINVAL)
            return ng_error_set(err, EINVAL,
                                "could not open '%s': the file system "
                                "does not support cache.direct=on",
                                s->filename);
        return ng_error_set(err, errno, "could not open '%s': %s",
                            s->filename, strerror(errno));
    }
    s->has_fd = true;
    if (file_get_size(s, err) < 0 ||
        (s->locking != FILE_LOCKING_OFF && !inspect &&
         file_lock(s, node->read_only, err) < 0)) {
        file_close(node);
        return -1;
    }
    if (s->direct)
        file_probe_align(s);
    /* Write-zeroes falls back to writes of file_zero_buf, in pieces of
     * its size: each must be a whole number of blocks. */
    if (s->align > FILE_ZERO_BUF_SIZE) {
        file_close(node);
        return ng_error_set(err, EINVAL, "'%s': O_DIRECT alignment %"
                            PRIu64 " is larger than %d bytes",
                            s->filename, s->align, FILE_ZERO_BUF_SIZE);
    }
    file_probe_blocking(s);
    if (s->size > INT64_MAX) {
        file_close(node);
        return ng_error_set(err, EFBIG, "'%s' is too large", s->filename);
    }
    if (s->aio == FILE_AIO_IO_URING && !inspect)
        return file_open_uring(node, s, err);
    return 0;
}

static const char *
file_filename(struct ng_node *node)
{
    const struct file_state *s = ng_node_state(node);

    return s->filename;
}

/* ftruncate to `size` for file_grow and file_shrink; `verb` ("grow",
 * "shrink") for the messages.  A block device keeps its size (ENOSPC:
 * ng_node_grow()'s "cannot grow"). */
static int
file_set_size(struct ng_node *node, uint64_t size, const char *verb,
              struct ng_error *err)
{
    struct file_state *s = ng_node_state(node);
    int e;

    if (s->is_block)
        return ng_error_set(err, ENOSPC, "'%s' is a block device and "
                            "cannot %s", s->filename, verb);
    if (size > INT64_MAX || ftruncate(s->fd, (off_t)size) < 0) {
        e = size > INT64_MAX ? EFBIG : errno;
        return ng_error_set(err, e, "cannot %s '%s' to %" PRIu64
                            " bytes: %s", verb, s->filename, size,
                            strerror(e));
    }
    __atomic_store_n(&s->size, size, __ATOMIC_RELAXED);
    return 0;
}

/* A format driver on top needs room (qcow2 allocating clusters), or
 * block_resize. */
static int
file_grow(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    return file_set_size(node, size, "grow", err);
}

/* block_resize of a node nothing uses (ng_node_resize()). */
static int
file_shrink(struct ng_node *node, uint64_t size, struct ng_error *err)
{
    return file_set_size(node, size, "shrink", err);
}

/* O_DIRECT wants whole blocks: the core aligns requests to them. */
static int
file_refresh(struct ng_node *node, struct ng_node_facts *facts,
             struct ng_error *err)
{
    const struct file_state *s = ng_node_state(node);

    (void)err;
    facts->size = (int64_t)s->size;
    facts->caps = NG_CAPS_LEAF_ALL;
    facts->request_alignment = (uint32_t)s->align;  /* 1 without O_DIRECT */
    return 0;
}

const struct ng_driver ng_driver_file = {
    .name       = "file",
    .help       = "POSIX file or block device",
    .is_filter  = false,
    .state_size = sizeof(struct file_state),
    .opts       = file_opts,
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope = NG_POOL_PER_DRIVER,
    .threads    = 16,
    .open       = file_open,
    .close      = file_close,
    .submit     = file_submit,
    .submit_inline = file_submit_inline,
    .refresh    = file_refresh,
    .grow       = file_grow,
    .shrink     = file_shrink,
    .filename   = file_filename,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH) | NG_OP_BIT(NG_OP_TRIM) |
                  NG_OP_BIT(NG_OP_WRITE_ZEROES) |
                  NG_OP_BIT(NG_OP_BLOCK_STATUS) | NG_OP_BIT(NG_OP_CACHE),
};
