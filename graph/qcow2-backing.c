/* graph/qcow2-backing.c: the backing file and the external data file a
 * qcow2 header names.  The backing file is opened as QEMU does when the
 * options give no `backing`: relative to the image's
 * directory, in the format of the backing format extension (probed when
 * there is none), read-only.  Done by rewriting the node's options before
 * they are parsed (the driver's expand_opts hook): `backing` becomes an
 * inline definition, so the graph creates, opens and later removes the
 * backing nodes (auto-named) with the image, and a chain unrolls one
 * image at a time.  The data file likewise, when the options give no
 * `data-file`: a file node of the name the header's data file extension
 * gives, relative to the image, writable when the image is.  And the
 * other way: when the live graph gives the image another backing, the
 * header kept from open is written again naming it (the set_backing
 * hook), its other extensions (the data file's among them) as they were.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/drivers.h"
#include "graph/qcow2.h"

/* More images in one chain than this is taken for a loop. */
#define QCOW2_MAX_CHAIN 64

static uint32_t
rd32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t
rd64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return be64toh(v);
}

/* The image file the options point to, or NULL (not a file: nothing to
 * resolve names against). */
static const char *
image_path(struct ng_graph *g, const struct ng_value *opts)
{
    const struct ng_value *f = ng_value_get(opts, "file"), *v;
    struct ng_node *node;

    if (f == NULL)
        return NULL;
    if (f->kind == NG_VALUE_MAP) {
        v = ng_value_get(f, "driver");
        if (v == NULL || v->kind != NG_VALUE_SCALAR || v->is_null ||
            strcmp(v->text, "file") != 0)
            return NULL;
        v = ng_value_get(f, "filename");
        return v != NULL && v->kind == NG_VALUE_SCALAR && !v->is_null
               ? v->text : NULL;
    }
    if (f->kind != NG_VALUE_SCALAR || f->is_null ||
        (node = ng_graph_find(g, f->text)) == NULL ||
        node->driver->filename == NULL)
        return NULL;
    return node->driver->filename(node);
}

/* The backing name and format the header at the start of buf names
 * (len bytes read); false when there is none or the header is not one
 * we can read (the open then says why). */
static bool
header_backing(const unsigned char *buf, size_t len, char *name,
               size_t name_size, char *fmt, size_t fmt_size)
{
    uint64_t boff, hlen;
    uint32_t blen;

    fmt[0] = '\0';
    if (len < QCOW2_V2_HEADER_LEN || rd32(buf) != QCOW2_MAGIC)
        return false;
    boff = rd64(buf + 8);
    blen = rd32(buf + 16);
    if (boff == 0 || blen == 0 || blen >= name_size || boff > len ||
        blen > len - boff)
        return false;
    memcpy(name, buf + boff, blen);
    name[blen] = '\0';
    hlen = rd32(buf + 4) >= 3 && len >= QCOW2_V3_HEADER_LEN
           ? rd32(buf + 100) : QCOW2_V2_HEADER_LEN;
    while (hlen + 8 <= len) {
        uint32_t type = rd32(buf + hlen), elen = rd32(buf + hlen + 4);

        if (type == QCOW2_EXT_END || elen > len - hlen - 8)
            break;
        if (type == QCOW2_EXT_BACKING_FMT && elen < fmt_size) {
            memcpy(fmt, buf + hlen + 8, elen);
            fmt[elen] = '\0';
        }
        hlen += 8 + (((uint64_t)elen + 7) & ~(uint64_t)7);
    }
    return true;
}

/* No format named: qcow2 when the file says so, else raw (QEMU probes). */
static void
probe_format(const char *path, char *fmt, size_t size)
{
    unsigned char magic[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool qcow2 = fd >= 0 && pread(fd, magic, 4, 0) == 4 &&
                 rd32(magic) == QCOW2_MAGIC;

    if (fd >= 0)
        close(fd);
    snprintf(fmt, size, "%s", qcow2 ? "qcow2" : "raw");
}

static struct ng_value *
scalar(const char *text)
{
    return ng_value_new_scalar(text, (struct ng_loc){ 0 });
}

/* map[key] = a new scalar `text`; consumes nothing on failure.  -1 on
 * ENOMEM. */
static int
put_scalar(struct ng_value *map, const char *key, const char *text)
{
    struct ng_value *v = scalar(text);

    return v != NULL ? ng_value_map_put(map, key, (struct ng_loc){ 0 }, v)
                     : -1;
}

/* A copy of opts whose `key` is an inline node on the file at `path`:
 * the file node itself (fmt NULL: { driver: file, filename: PATH }) or
 * a `fmt` node over it ({ driver: FMT, file: { .. } }).  Each node made
 * gets read-only: true when read_only, else a copy of `ro` (NULL: none,
 * the option's default). */
static struct ng_value *
with_file_node(const struct ng_value *opts, const char *key,
               const char *fmt, const char *path, bool read_only,
               const struct ng_value *ro)
{
    struct ng_loc none = { 0 };
    struct ng_value *out = ng_value_copy(opts);
    struct ng_value *node = ng_value_new_map(none);
    struct ng_value *f = fmt != NULL ? ng_value_new_map(none) : node;
    struct ng_value *layer[2] = { f, fmt != NULL ? node : NULL };
    int i;

    if (out == NULL || node == NULL || f == NULL ||
        put_scalar(f, "driver", "file") < 0 ||
        put_scalar(f, "filename", path) < 0 ||
        (fmt != NULL && put_scalar(node, "driver", fmt) < 0))
        goto fail;
    for (i = 0; i < 2 && layer[i] != NULL; i++)
        if (read_only ? put_scalar(layer[i], "read-only", "true") < 0
            : ro != NULL && ng_value_map_put(layer[i], "read-only", none,
                                             ng_value_copy(ro)) < 0)
            goto fail;
    if (fmt != NULL && ng_value_map_put(node, "file", none, f) < 0) {
        f = NULL;                   /* freed by the put */
        goto fail;
    }
    if (ng_value_map_put(out, key, none, node) < 0) {
        ng_value_free(out);
        return NULL;
    }
    return out;

fail:
    if (f != node)
        ng_value_free(f);
    ng_value_free(node);
    ng_value_free(out);
    return NULL;
}

/* The first 4 KiB of the image at path into buf; its length, 0 when it
 * cannot be read (the file node says why). */
static size_t
read_header(const char *path, unsigned char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return 0;
    n = pread(fd, buf, size, 0);
    close(fd);
    return n > 0 ? (size_t)n : 0;
}

/* The file `name` a header of the image at `path` names (what: "backing
 * file", "data file"), resolved against the image's directory as QEMU
 * does, into full: -1 with *err when it is not a local file (the option
 * `key` names a node instead) or is not there. */
static int
resolve_named_file(const char *path, const char *name, const char *what,
                   const char *key, char *full, size_t full_size,
                   struct ng_error *err)
{
    const char *slash = strrchr(path, '/');

    if (strstr(name, "://") != NULL || strncmp(name, "json:", 5) == 0)
        return ng_error_set(err, ENOTSUP, "'%s': %s '%s' is not a local "
                            "file; give '%s: NODE'", path, what, name, key);
    if (name[0] == '/' || slash == NULL)
        snprintf(full, full_size, "%s", name);
    else
        snprintf(full, full_size, "%.*s/%s", (int)(slash - path), path,
                 name);
    if (access(full, F_OK) != 0)
        return ng_error_set(err, ENOENT, "'%s': %s '%s' not found (%s)",
                            path, what, full, strerror(errno));
    return 0;
}

static int
expand_backing(struct ng_graph *g, const struct ng_value *opts,
               unsigned depth, struct ng_value **out, struct ng_error *err)
{
    char name[1024], fmt[32], full[4096];
    unsigned char buf[4096];
    const char *path;
    size_t n;

    *out = NULL;
    if (ng_value_get(opts, "backing") != NULL ||
        (path = image_path(g, opts)) == NULL)
        return 0;
    n = read_header(path, buf, sizeof buf);
    if (n == 0 || !header_backing(buf, n, name, sizeof name, fmt,
                                  sizeof fmt))
        return 0;
    if (depth >= QCOW2_MAX_CHAIN)
        return ng_error_set(err, ELOOP, "'%s': backing chain longer than %d "
                            "images (a loop?)", path, QCOW2_MAX_CHAIN);
    if (resolve_named_file(path, name, "backing file", "backing", full,
                           sizeof full, err) < 0)
        return -1;
    if (fmt[0] == '\0')
        probe_format(full, fmt, sizeof fmt);
    if (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)
        return ng_error_set(err, ENOTSUP, "'%s': backing format '%s' is not "
                            "supported (qcow2 or raw)", path, fmt);
    /* Read-only, as QEMU opens a backing file. */
    *out = with_file_node(opts, "backing", fmt, full, true, NULL);
    return *out != NULL ? 0 : ng_error_set(err, ENOMEM, "out of memory");
}

/* The data file name of the header in buf (len bytes), when its
 * incompatible feature bit says there is one. */
static bool
header_data_file(const unsigned char *buf, size_t len, char *name,
                 size_t name_size)
{
    uint64_t hlen;

    if (len < QCOW2_V3_HEADER_LEN || rd32(buf) != QCOW2_MAGIC ||
        rd32(buf + 4) < 3 || !(rd64(buf + 72) & QCOW2_INCOMPAT_DATA_FILE))
        return false;
    hlen = rd32(buf + 100);
    while (hlen + 8 <= len) {
        uint32_t type = rd32(buf + hlen), elen = rd32(buf + hlen + 4);

        if (type == QCOW2_EXT_END || elen > len - hlen - 8)
            break;
        if (type == QCOW2_EXT_DATA_FILE && elen > 0 && elen < name_size) {
            memcpy(name, buf + hlen + 8, elen);
            name[elen] = '\0';
            return memchr(name, '\0', elen) == NULL;
        }
        hlen += 8 + (((uint64_t)elen + 7) & ~(uint64_t)7);
    }
    return false;
}

static int
expand_data_file(struct ng_graph *g, const struct ng_value *opts,
                 struct ng_value **out, struct ng_error *err)
{
    char name[1024], full[4096];
    unsigned char buf[4096];
    const char *path;
    size_t n;

    *out = NULL;
    if (ng_value_get(opts, "data-file") != NULL ||
        (path = image_path(g, opts)) == NULL)
        return 0;
    n = read_header(path, buf, sizeof buf);
    if (n == 0 || !header_data_file(buf, n, name, sizeof name))
        return 0;
    if (resolve_named_file(path, name, "data file", "data-file", full,
                           sizeof full, err) < 0)
        return -1;
    /* Read-only with the image. */
    *out = with_file_node(opts, "data-file", NULL, full, false,
                          ng_value_get(opts, "read-only"));
    return *out != NULL ? 0 : ng_error_set(err, ENOMEM, "out of memory");
}

int
qcow2_expand_opts(struct ng_graph *g, const struct ng_value *opts,
                  unsigned depth, struct ng_value **out, struct ng_error *err)
{
    struct ng_value *b = NULL, *d = NULL;

    *out = NULL;
    if (expand_backing(g, opts, depth, &b, err) < 0 ||
        expand_data_file(g, b != NULL ? b : opts, &d, err) < 0) {
        ng_value_free(b);
        return -1;
    }
    if (d != NULL) {
        ng_value_free(b);
        b = d;
    }
    *out = b;
    return 0;
}

/* ---- The backing a live graph gives the image, written to its header ---- */

static void
put32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void
put64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

bool
ng_qcow2_backing_ref(struct ng_node *backing, char *name, size_t size,
                     const char **fmt)
{
    struct ng_node *f = backing;
    const char *path;
    char cwd[4096];
    int n;

    if (strcmp(backing->driver->name, "qcow2") == 0 ||
        strcmp(backing->driver->name, "raw") == 0)
        f = ng_node_child_role(backing, NG_ROLE_FILE);
    if (f == NULL || strcmp(f->driver->name, "file") != 0 ||
        f->driver->filename == NULL)
        return false;
    *fmt = strcmp(backing->driver->name, "qcow2") == 0 ? "qcow2" : "raw";
    path = f->driver->filename(f);
    /* The header's name is read relative to the image's folder, the
     * node's relative to our working folder: make it absolute. */
    if (path[0] == '/')
        n = snprintf(name, size, "%s", path);
    else if (getcwd(cwd, sizeof cwd) != NULL)
        n = snprintf(name, size, "%s/%s", cwd, path);
    else
        return false;
    return n > 0 && (size_t)n < size && n <= 1023;
}

void
qcow2_header_keep(struct qcow2_state *s, const unsigned char *buf,
                  size_t len)
{
    size_t off = s->header_len, end;

    free(s->hdr_raw);
    free(s->hdr_exts);
    s->hdr_raw = s->hdr_exts = NULL;
    s->hdr_exts_len = 0;
    if ((s->hdr_raw = malloc(s->header_len)) == NULL)
        return;                     /* the old 12-byte update then */
    memcpy(s->hdr_raw, buf, s->header_len);
    if ((s->hdr_exts = malloc(len - off)) == NULL) {
        free(s->hdr_raw);
        s->hdr_raw = NULL;
        return;
    }
    /* parse_extensions() checked the list: each fits, it ends. */
    while (off + 8 <= len) {
        uint32_t type = rd32(buf + off), elen = rd32(buf + off + 4);
        size_t unit = 8 + (((size_t)elen + 7) & ~(size_t)7);

        if (type == QCOW2_EXT_END) {
            off += 8;
            break;
        }
        if (type != QCOW2_EXT_BACKING_FMT) {
            memcpy(s->hdr_exts + s->hdr_exts_len, buf + off,
                   unit < len - off ? unit : len - off);
            s->hdr_exts_len += unit < len - off ? unit : len - off;
        }
        off += unit;
    }
    end = off;
    if (rd64(buf + 8) != 0 && rd64(buf + 8) + rd32(buf + 16) > end)
        end = rd64(buf + 8) + rd32(buf + 16);
    s->hdr_end = end < len ? end : len;
}

/* Bytes the header needs with the current backing name and format. */
static size_t
header_need(const struct qcow2_state *s)
{
    size_t need = s->header_len + s->hdr_exts_len + 8;

    if (s->backing_fmt != NULL)
        need += 8 + ((strlen(s->backing_fmt) + 7) & ~(size_t)7);
    if (s->backing_name != NULL)
        need += strlen(s->backing_name);
    return need;
}

int
qcow2_header_build(const struct qcow2_state *s, unsigned char **out,
                   size_t *len)
{
    size_t off = s->header_len, n;
    unsigned char *h;

    if (s->hdr_raw == NULL || header_need(s) > s->cluster_size)
        return -EINVAL;
    n = header_need(s) > s->hdr_end ? header_need(s) : s->hdr_end;
    n = (n + 511) & ~(size_t)511;
    if (n > s->cluster_size)
        n = s->cluster_size;
    if ((h = calloc(1, n)) == NULL)
        return -ENOMEM;
    memcpy(h, s->hdr_raw, s->header_len);
    put64(h + 8, 0);
    put32(h + 16, 0);
    put64(h + 24, s->size);         /* block_resize changes these */
    put32(h + 36, s->l1_size);
    put64(h + 40, s->l1_offset);
    put64(h + 48, s->reft_offset);
    put32(h + 56, (uint32_t)(s->reft_entries * 8 / s->cluster_size));
    if (s->version >= 3)
        put64(h + 72, s->incompat);
    if (s->backing_fmt != NULL) {
        size_t flen = strlen(s->backing_fmt);

        put32(h + off, QCOW2_EXT_BACKING_FMT);
        put32(h + off + 4, (uint32_t)flen);
        memcpy(h + off + 8, s->backing_fmt, flen);
        off += 8 + ((flen + 7) & ~(size_t)7);
    }
    memcpy(h + off, s->hdr_exts, s->hdr_exts_len);
    off += s->hdr_exts_len + 8;     /* the end mark: zeroes */
    if (s->backing_name != NULL) {
        put64(h + 8, off);
        put32(h + 16, (uint32_t)strlen(s->backing_name));
        memcpy(h + off, s->backing_name, strlen(s->backing_name));
    }
    *out = h;
    *len = n;
    return 0;
}

static bool
same_str(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void
header_written(void *opaque, int ret)
{
    struct qcow2_state *s = opaque;

    s->hdr_writes--;
    if (ret < 0)
        ng_node_warn(s->node, "cannot write the header of '%s' back (its "
                     "size, backing file name, corrupt bit): %s",
                     ng_node_filename(s->file), strerror(-ret));
}

/* Write the header (with every other dirty table, in order) and flush. */
void
qcow2_header_update(struct qcow2_state *s)
{
    s->header_dirty = true;
    s->hdr_writes++;
    /* On the loop's shortcut, not workers: a job that gives the image a
     * new backing reports itself done when this returns, and a reader of
     * the file then (qemu-img info -U) must find the new header there, as
     * after QEMU's synchronous header update. */
    qcow2_wb_flush(s, 0, header_written, s);
}

static int
set_header_backing(struct qcow2_state *s, const char *name, const char *fmt)
{
    char *n = name ? strdup(name) : NULL, *f = fmt ? strdup(fmt) : NULL;

    if ((name != NULL && n == NULL) || (fmt != NULL && f == NULL)) {
        free(n);
        free(f);
        return -1;
    }
    free(s->backing_name);
    free(s->backing_fmt);
    s->backing_name = n;
    s->backing_fmt = f;
    return 0;
}

/* The backing changed on the live graph (snapshot, stream, commit): the
 * header names the new one (or none), as QEMU's
 * bdrv_change_backing_file(), so a restart that opens the image by its
 * header chain sees the same data.  The write starts at once, through
 * the file child (the drained section holds back only the BBs above),
 * queued behind any write-back round, so it lands in order with the
 * refcount table it names; its round writes it after the image's tables
 * and a flush of the new backing (qcow2-cache.c), so a crash never
 * leaves a header naming a chain that lacks the data. */
int
qcow2_set_backing(struct ng_node *node, struct ng_node *backing,
                  struct ng_error *err)
{
    struct qcow2_state *s = ng_node_state(node);
    char name[1024];
    const char *fmt = NULL, *fname = ng_node_filename(s->file);
    char *old_name = s->backing_name, *old_fmt = s->backing_fmt;

    (void)err;
    s->node = node;
    if (backing != NULL && !ng_qcow2_backing_ref(backing, name, sizeof name,
                                                 &fmt)) {
        ng_node_warn(node, "backing node '%s' is not a qcow2 or raw image "
                     "on a file: the header of '%s' keeps its backing file "
                     "name", backing->name, fname);
        return 0;
    }
    if (same_str(old_name, backing ? name : NULL) &&
        same_str(old_fmt, fmt))
        return 0;
    if (!s->writable || s->hdr_raw == NULL) {
        ng_node_warn(node, "'%s' is read-only: its header keeps its backing "
                     "file name", fname);
        return 0;
    }
    s->backing_name = s->backing_fmt = NULL;
    if (set_header_backing(s, backing ? name : NULL, fmt) < 0) {
        s->backing_name = old_name;
        s->backing_fmt = old_fmt;
        ng_node_warn(node, "out of memory: the header of '%s' keeps its "
                     "backing file name", fname);
        return 0;
    }
    if (header_need(s) > s->cluster_size) {
        free(s->backing_name);
        free(s->backing_fmt);
        s->backing_name = old_name;
        s->backing_fmt = old_fmt;
        ng_node_warn(node, "backing file name '%s' does not fit in the "
                     "header of '%s', which keeps its old one", name,
                     fname);
        return 0;
    }
    free(old_name);
    free(old_fmt);
    s->backing_dirty = true;
    qcow2_header_update(s);
    return 0;
}
