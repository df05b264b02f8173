/* tests/unit/test-qcow2-create.c: ng_qcow2_create() makes images that
 * qemu-img checks clean and describes as asked (size, cluster size,
 * backing file and format), that qemu-io reads as zeroes or as the
 * backing file, and that the qcow2 driver opens and writes; bad
 * arguments get a clear error.
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>

#include "graph/drivers.h"
#include "tests/unit/graph-fixture.h"

/* Run a shell command; its exit status. */
static int
sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    int r;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    r = system(cmd);
    return r == -1 ? -1 : WEXITSTATUS(r);
}

static void
create_ok(const char *path, uint64_t size, uint64_t cs, const char *b,
          const char *fmt)
{
    struct ng_error err = { 0 };

    if (ng_qcow2_create(path, size, cs, b, fmt, &err) != 0)
        fail("ng_qcow2_create(%s): %s", path, err.msg);
    CHECK(sh("qemu-img check -q '%s'", path) == 0);
    CHECK(sh("qemu-img info --output=json '%s' | grep -q "
             "'\"virtual-size\": %llu,'", path,
             (unsigned long long)size) == 0);
    CHECK(sh("qemu-img info --output=json '%s' | grep -q "
             "'\"cluster-size\": %llu,'", path,
             (unsigned long long)cs) == 0);
}

static void
removed(void *opaque)
{
    *(bool *)opaque = true;
}

int
main(void)
{
    struct fixture f;
    struct ng_error err = { 0 };
    char a[512], b[512], raw[512], text[1024];
    bool gone = false;
    static unsigned char buf[65536];
    struct ng_node *n;
    struct ng_bb *bb;

    if (sh("qemu-img --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: needs qemu-img\n");
        return 77;
    }
    setup(&f, "ng_qcow2_create");
    snprintf(a, sizeof a, "%s/a.qcow2", f.tmpdir);
    snprintf(b, sizeof b, "%s/b.qcow2", f.tmpdir);
    snprintf(raw, sizeof raw, "%s/base.raw", f.tmpdir);

    create_ok(a, 1 * MiB, 65536, NULL, NULL);
    create_ok(a, 10 * 1024 * MiB + 512, 65536, NULL, NULL);
    create_ok(a, 64 * MiB, 512, NULL, NULL);
    create_ok(a, 1024 * MiB, 2 * MiB, NULL, NULL);
    CHECK(sh("qemu-io -f qcow2 -c 'read -P 0 0 1M' '%s' >/dev/null", a) == 0);

    /* A backing file by name and format, as qemu-img create -b -F. */
    CHECK(sh("qemu-img create -q -f raw '%s' 4M && qemu-io -f raw -c "
             "'write -P 0x5a 0 4M' '%s' >/dev/null", raw, raw) == 0);
    create_ok(b, 4 * MiB, 65536, raw, "raw");
    CHECK(sh("qemu-img info '%s' | grep -q 'backing file: %s'", b,
             raw) == 0);
    CHECK(sh("qemu-img info '%s' | grep -q 'backing file format: raw'",
             b) == 0);
    CHECK(sh("qemu-io -f qcow2 -c 'read -P 0x5a 0 4M' '%s' >/dev/null",
             b) == 0);

    /* The driver opens and writes it; qemu-img still finds it clean. */
    create_ok(a, 8 * MiB, 65536, NULL, NULL);
    snprintf(text, sizeof text, "{driver: qcow2, file: {driver: file, "
             "filename: \"%s\"}}", a);
    n = add(&f, "q", yaml(text));
    bb = bb_new(&f, "bb", n, true);
    memset(buf, 0x33, sizeof buf);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 1 * MiB + 4096, 8192, 0, buf), 0);
    ng_bb_free(bb);
    /* Closing writes the metadata back. */
    CHECK(ng_graph_del_node(f.g, "q", removed, &gone, &err) == 0);
    while (!gone)
        uv_run(&f.loop, UV_RUN_ONCE);
    CHECK(sh("qemu-img check -q '%s'", a) == 0);
    CHECK(sh("qemu-io -f qcow2 -c 'read -P 0x33 1052672 8k' -c "
             "'read -P 0 0 1M' '%s' >/dev/null", a) == 0);

    /* Bad arguments. */
    CHECK(ng_qcow2_create(a, 1 * MiB, 1000, NULL, NULL, &err) == -1);
    CHECK(strstr(err.msg, "power of two") != NULL);
    CHECK(ng_qcow2_create("/nonexistent/x.qcow2", 1 * MiB, 65536, NULL,
                          NULL, &err) == -1);
    CHECK(strstr(err.msg, "cannot create '/nonexistent/x.qcow2'") != NULL);
    CHECK(ng_qcow2_create(a, (uint64_t)1 << 40, 512, NULL, NULL,
                          &err) == -1);
    CHECK(strstr(err.msg, "too large") != NULL);
    teardown(&f);
    printf("ok\n");
    return 0;
}
