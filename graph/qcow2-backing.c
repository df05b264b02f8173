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
 * gives, relative to the image, writable when the image is.
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

/* opts with backing: { driver: FMT, read-only: true, file: { driver:
 * file, filename: PATH, read-only: true } }. */
static struct ng_value *
with_backing(const struct ng_value *opts, const char *path, const char *fmt)
{
    struct ng_loc none = { 0 };
    struct ng_value *out = ng_value_copy(opts);
    struct ng_value *b = ng_value_new_map(none);
    struct ng_value *f = ng_value_new_map(none);

    if (out == NULL || b == NULL || f == NULL ||
        ng_value_map_put(f, "driver", none, scalar("file")) < 0 ||
        ng_value_map_put(f, "filename", none, scalar(path)) < 0 ||
        ng_value_map_put(f, "read-only", none, scalar("true")) < 0 ||
        ng_value_map_put(b, "driver", none, scalar(fmt)) < 0 ||
        ng_value_map_put(b, "read-only", none, scalar("true")) < 0 ||
        ng_value_map_put(b, "file", none, f) < 0) {
        ng_value_free(out);
        ng_value_free(b);
        return NULL;
    }
    if (ng_value_map_put(out, "backing", none, b) < 0) {
        ng_value_free(out);
        return NULL;
    }
    return out;
}

static int
expand_backing(struct ng_graph *g, const struct ng_value *opts,
               unsigned depth, struct ng_value **out, struct ng_error *err)
{
    char name[1024], fmt[32], full[4096];
    unsigned char buf[4096];
    const char *path, *slash;
    ssize_t n;
    int fd;

    *out = NULL;
    if (ng_value_get(opts, "backing") != NULL ||
        (path = image_path(g, opts)) == NULL)
        return 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;                   /* the file node says why */
    n = pread(fd, buf, sizeof buf, 0);
    close(fd);
    if (n <= 0 || !header_backing(buf, (size_t)n, name, sizeof name, fmt,
                                  sizeof fmt))
        return 0;
    if (depth >= QCOW2_MAX_CHAIN)
        return ng_error_set(err, ELOOP, "'%s': backing chain longer than %d "
                            "images (a loop?)", path, QCOW2_MAX_CHAIN);
    if (strstr(name, "://") != NULL || strncmp(name, "json:", 5) == 0)
        return ng_error_set(err, ENOTSUP, "'%s': backing file '%s' is not "
                            "a local file; give 'backing: NODE'", path,
                            name);
    slash = strrchr(path, '/');
    if (name[0] == '/' || slash == NULL)
        snprintf(full, sizeof full, "%s", name);
    else
        snprintf(full, sizeof full, "%.*s/%s", (int)(slash - path), path,
                 name);
    if (access(full, F_OK) != 0)
        return ng_error_set(err, ENOENT, "'%s': backing file '%s' not "
                            "found (%s)", path, full, strerror(errno));
    if (fmt[0] == '\0')
        probe_format(full, fmt, sizeof fmt);
    if (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)
        return ng_error_set(err, ENOTSUP, "'%s': backing format '%s' is not "
                            "supported (qcow2 or raw)", path, fmt);
    if ((*out = with_backing(opts, full, fmt)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    return 0;
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

/* opts with data-file: { driver: file, filename: PATH } (read-only
 * with the image). */
static struct ng_value *
with_data_file(const struct ng_value *opts, const char *path)
{
    struct ng_loc none = { 0 };
    const struct ng_value *ro = ng_value_get(opts, "read-only");
    struct ng_value *out = ng_value_copy(opts);
    struct ng_value *f = ng_value_new_map(none);

    if (out == NULL || f == NULL ||
        ng_value_map_put(f, "driver", none, scalar("file")) < 0 ||
        ng_value_map_put(f, "filename", none, scalar(path)) < 0 ||
        (ro != NULL && ng_value_map_put(f, "read-only", none,
                                        ng_value_copy(ro)) < 0)) {
        ng_value_free(out);
        ng_value_free(f);
        return NULL;
    }
    if (ng_value_map_put(out, "data-file", none, f) < 0) {
        ng_value_free(out);
        return NULL;
    }
    return out;
}

static int
expand_data_file(struct ng_graph *g, const struct ng_value *opts,
                 struct ng_value **out, struct ng_error *err)
{
    char name[1024], full[4096];
    unsigned char buf[4096];
    const char *path, *slash;
    ssize_t n;
    int fd;

    *out = NULL;
    if (ng_value_get(opts, "data-file") != NULL ||
        (path = image_path(g, opts)) == NULL)
        return 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;                   /* the file node says why */
    n = pread(fd, buf, sizeof buf, 0);
    close(fd);
    if (n <= 0 || !header_data_file(buf, (size_t)n, name, sizeof name))
        return 0;
    if (strstr(name, "://") != NULL || strncmp(name, "json:", 5) == 0)
        return ng_error_set(err, ENOTSUP, "'%s': data file '%s' is not a "
                            "local file; give 'data-file: NODE'", path,
                            name);
    slash = strrchr(path, '/');
    if (name[0] == '/' || slash == NULL)
        snprintf(full, sizeof full, "%s", name);
    else
        snprintf(full, sizeof full, "%.*s/%s", (int)(slash - path), path,
                 name);
    if (access(full, F_OK) != 0)
        return ng_error_set(err, ENOENT, "'%s': data file '%s' not found "
                            "(%s)", path, full, strerror(errno));
    if ((*out = with_data_file(opts, full)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    return 0;
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
