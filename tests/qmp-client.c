/* tests/qmp-client.c: see qmp-client.h. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/harness.h"
#include "tests/qmp-client.h"

struct ng_test_qmp {
    FILE *fp;                   /* reading */
    FILE *out;                  /* writing: stdio can't switch directions
                                 * on a socket */
    unsigned events;
};

static json_t *
read_message(struct ng_test_qmp *q)
{
    json_error_t jerr;
    json_t *msg = json_loadf(q->fp, JSON_DISABLE_EOF_CHECK, &jerr);

    if (msg == NULL)
        ng_test_fail("QMP: bad or no message: %s", jerr.text);
    return msg;
}

struct ng_test_qmp *
ng_test_qmp_connect_raw(const char *path, json_t **greeting)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct ng_test_qmp *q = calloc(1, sizeof *q);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (q == NULL || fd == -1 || strlen(path) >= sizeof sun.sun_path)
        ng_test_fail("QMP: socket: %s", strerror(errno));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
        ng_test_fail("QMP: connect %s: %s", path, strerror(errno));
    q->fp = fdopen(fd, "r");
    q->out = fdopen(dup(fd), "w");
    if (q->fp == NULL || q->out == NULL)
        ng_test_fail("QMP: fdopen: %s", strerror(errno));
    /* Unbuffered, so that poll() on the socket tells whether a message
     * is waiting (stdio would otherwise hide read-ahead from it). */
    setvbuf(q->fp, NULL, _IONBF, 0);
    *greeting = read_message(q);
    if (json_object_get(*greeting, "QMP") == NULL)
        ng_test_fail("QMP: no greeting");
    return q;
}

struct ng_test_qmp *
ng_test_qmp_connect(const char *path)
{
    json_t *greeting;
    struct ng_test_qmp *q = ng_test_qmp_connect_raw(path, &greeting);

    json_decref(greeting);
    json_decref(ng_test_qmp_ok(q, "{s:s}", "execute", "qmp_capabilities"));
    return q;
}

static json_t *
next_reply(struct ng_test_qmp *q)
{
    json_t *msg;

    for (;;) {
        msg = read_message(q);
        if (json_object_get(msg, "event") == NULL)
            return msg;
        q->events++;
        json_decref(msg);
    }
}

void
ng_test_qmp_send(struct ng_test_qmp *q, const char *text)
{
    if (fputs(text, q->out) == EOF || fflush(q->out) == EOF)
        ng_test_fail("QMP: write: %s", strerror(errno));
}

json_t *
ng_test_qmp_raw(struct ng_test_qmp *q, const char *text)
{
    ng_test_qmp_send(q, text);
    return next_reply(q);
}

json_t *
ng_test_qmp_next_event(struct ng_test_qmp *q, int ms)
{
    struct pollfd pfd = { .fd = fileno(q->fp), .events = POLLIN };
    json_t *msg;

    if (poll(&pfd, 1, ms) <= 0)
        return NULL;
    msg = read_message(q);
    if (json_object_get(msg, "event") == NULL)
        ng_test_fail("QMP: unexpected reply while waiting for an event");
    q->events++;
    return msg;
}

void
ng_test_qmp_close(struct ng_test_qmp *q)
{
    fclose(q->fp);
    fclose(q->out);
    free(q);
}

unsigned
ng_test_qmp_events(const struct ng_test_qmp *q)
{
    return q->events;
}

static json_t *
qmp_vcall(struct ng_test_qmp *q, const char *fmt, va_list ap)
{
    json_error_t jerr;
    json_t *cmd = json_vpack_ex(&jerr, 0, fmt, ap);

    if (cmd == NULL)
        ng_test_fail("QMP: bad pack format: %s", jerr.text);
    if (json_dumpf(cmd, q->out, JSON_COMPACT) == -1 ||
        fputs("\n", q->out) == EOF || fflush(q->out) == EOF)
        ng_test_fail("QMP: write: %s", strerror(errno));
    json_decref(cmd);
    return next_reply(q);
}

json_t *
ng_test_qmp(struct ng_test_qmp *q, const char *fmt, ...)
{
    va_list ap;
    json_t *r;

    va_start(ap, fmt);
    r = qmp_vcall(q, fmt, ap);
    va_end(ap);
    return r;
}

json_t *
ng_test_qmp_ok(struct ng_test_qmp *q, const char *fmt, ...)
{
    va_list ap;
    json_t *r, *ret;
    char *dump;

    va_start(ap, fmt);
    r = qmp_vcall(q, fmt, ap);
    va_end(ap);
    ret = json_object_get(r, "return");
    if (ret == NULL) {
        dump = json_dumps(r, JSON_COMPACT);
        ng_test_fail("QMP: expected success, got %s", dump);
    }
    json_incref(ret);
    json_decref(r);
    return ret;
}

void
ng_test_qmp_fails(struct ng_test_qmp *q, const char *want,
                  const char *fmt, ...)
{
    va_list ap;
    json_t *r;
    const char *desc;
    char *dump;

    va_start(ap, fmt);
    r = qmp_vcall(q, fmt, ap);
    va_end(ap);
    desc = json_string_value(json_object_get(json_object_get(r, "error"),
                                             "desc"));
    if (desc == NULL || strstr(desc, want) == NULL) {
        dump = json_dumps(r, JSON_COMPACT);
        ng_test_fail("QMP: expected an error containing '%s', got %s",
                     want, dump);
    }
    json_decref(r);
}

char *
ng_test_qmp_child(struct ng_test_qmp *q, const char *name, const char *role)
{
    json_t *nodes = ng_test_qmp_ok(q, "{s:s}", "execute",
                                   "query-named-block-nodes");
    json_t *n, *c;
    char *child = NULL;
    size_t i, j;

    json_array_foreach(nodes, i, n) {
        if (strcmp(json_string_value(json_object_get(n, "node-name")),
                   name) != 0)
            continue;
        json_array_foreach(json_object_get(n, "children"), j, c)
            if (strcmp(json_string_value(json_object_get(c, "child")),
                       role) == 0)
                child = strdup(json_string_value(json_object_get(
                    c, "node-name")));
    }
    json_decref(nodes);
    return child;
}

void
ng_test_qmp_expect_child(struct ng_test_qmp *q, const char *name,
                         const char *role, const char *want)
{
    char *got = ng_test_qmp_child(q, name, role);

    if ((want == NULL) != (got == NULL) ||
        (want != NULL && strcmp(got, want) != 0))
        ng_test_fail("node '%s' has %s child '%s', not '%s'", name, role,
                     got ? got : "(none)", want ? want : "(none)");
    free(got);
}

const char *
ng_test_qmp_job_status(struct ng_test_qmp *q, const char *id, char *out,
                       size_t size, long long *total)
{
    json_t *list = ng_test_qmp_ok(q, "{s:s}", "execute", "query-jobs");
    json_t *j;
    size_t i;

    snprintf(out, size, "gone");
    json_array_foreach(list, i, j) {
        if (strcmp(json_string_value(json_object_get(j, "id")), id) != 0)
            continue;
        snprintf(out, size, "%s",
                 json_string_value(json_object_get(j, "status")));
        if (total != NULL)
            *total = json_integer_value(json_object_get(j,
                                                        "total-progress"));
    }
    json_decref(list);
    return out;
}

void
ng_test_qmp_wait_job(struct ng_test_qmp *q, const char *id,
                     const char *want, unsigned seconds, long long *total)
{
    char got[32];
    unsigned i;

    for (i = 0; i < seconds * 100; i++) {
        if (strcmp(ng_test_qmp_job_status(q, id, got, sizeof got, total),
                   want) == 0)
            return;
        usleep(10000);
    }
    ng_test_fail("job '%s' is '%s' after %u s, not '%s'", id, got, seconds,
                 want);
}
