/* graph/secret.c: secret objects (see secret.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph/secret.h"

/* A secret file larger than this is a mistake (a disk image named by
 * accident), not a password. */
#define SECRET_FILE_MAX (64 * 1024)

static void
secret_free(void *obj)
{
    struct ng_secret *s = obj;

    if (s == NULL)
        return;
    explicit_bzero(s->data, s->len);
    free(s);
}

const struct ng_object_type ng_secret_type = {
    .name = "secret",
    .free = secret_free,
};

int
ng_secret_declare(struct ng_graph *g, const char *id, const void *data,
                  size_t len, struct ng_error *err)
{
    struct ng_secret *s = malloc(sizeof *s + len);

    if (s == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    s->len = len;
    memcpy(s->data, data, len);
    if (ng_graph_object_add(g, &ng_secret_type, id, s, err) == -1) {
        secret_free(s);
        return -1;
    }
    return 0;
}

static int
secret_file_check(int fd, const char *id, const char *path, off_t *size,
                  struct ng_error *err)
{
    struct stat st;

    if (fstat(fd, &st) == -1)
        return ng_error_set(err, errno, "secret '%s': %s: %s", id, path,
                            strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ng_error_set(err, EINVAL, "secret '%s': %s is not a regular "
                            "file", id, path);
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        return ng_error_set(err, EPERM, "secret '%s': %s may be read by "
                            "others (mode %04o; make it 0600)", id, path,
                            (unsigned)(st.st_mode & 07777));
    if (st.st_size > SECRET_FILE_MAX)
        return ng_error_set(err, EFBIG, "secret '%s': %s is larger than "
                            "%d bytes", id, path, SECRET_FILE_MAX);
    *size = st.st_size;
    return 0;
}

static int
read_all(int fd, unsigned char *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t r = read(fd, buf + done, len - done);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;   /* shrank under us */
        done += (size_t)r;
    }
    return 0;
}

int
ng_secret_declare_file(struct ng_graph *g, const char *id, const char *path,
                       struct ng_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    unsigned char *buf = NULL;
    off_t size = 0;
    size_t len;
    int r = -1, e;

    if (fd == -1)
        return ng_error_set(err, errno, "secret '%s': cannot open %s: %s",
                            id, path, strerror(errno));
    if (secret_file_check(fd, id, path, &size, err) == -1)
        goto out;
    len = (size_t)size;
    if ((buf = malloc(len ? len : 1)) == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    if ((e = read_all(fd, buf, len)) < 0) {
        ng_error_set(err, -e, "secret '%s': cannot read %s: %s", id, path,
                     strerror(-e));
        goto out;
    }
    r = ng_secret_declare(g, id, buf, len, err);
out:
    if (buf != NULL) {
        explicit_bzero(buf, (size_t)size);
        free(buf);
    }
    close(fd);
    return r;
}

const struct ng_secret *
ng_secret_find(struct ng_graph *g, const char *id)
{
    return ng_graph_object_find(g, &ng_secret_type, id);
}
