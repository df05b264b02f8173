/* tests/nbdkit-test-plugin.c: tiny nbdkit plugins for the nbdkit leaf's
 * tests (tests/test-nbdkit-bad.sh), built in four shapes:
 *
 *   default              API v2: a 1 MiB RAM disk whose reads fail with
 *                        EIO (nbdkit_set_error + nbdkit_error) from
 *                        fail-offset on; flush counts into flush-file
 *   -DTEST_API_V1        the same through API v1's signatures
 *   -DTEST_BAD_VERSION   claims API version 99
 *   -DTEST_NEEDS_SYMBOL  calls an nbdkit_* function no server has
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TEST_API_V1
#define NBDKIT_API_VERSION 1
#else
#define NBDKIT_API_VERSION 2
#endif
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#define DISK_SIZE (1024 * 1024)

static unsigned char disk[DISK_SIZE];
static int64_t fail_offset = DISK_SIZE;     /* past the end: never */

#ifdef TEST_NEEDS_SYMBOL
extern void nbdkit_no_such_function(void);
#endif

static int
test_config(const char *key, const char *value)
{
    if (strcmp(key, "fail-offset") == 0) {
        fail_offset = nbdkit_parse_size(value);
        return fail_offset == -1 ? -1 : 0;
    }
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
}

static void *
test_open(int readonly)
{
    (void)readonly;
#ifdef TEST_NEEDS_SYMBOL
    nbdkit_no_such_function();
#endif
    return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
test_get_size(void *handle)
{
    (void)handle;
    return DISK_SIZE;
}

static int
do_pread(void *buf, uint32_t count, uint64_t offset)
{
    if ((int64_t)(offset + count) > fail_offset) {
        nbdkit_error("injected read error at %" PRIu64, offset);
        nbdkit_set_error(EIO);
        return -1;
    }
    memcpy(buf, disk + offset, count);
    return 0;
}

static int
do_pwrite(const void *buf, uint32_t count, uint64_t offset)
{
    memcpy(disk + offset, buf, count);
    return 0;
}

#ifdef TEST_API_V1
static int
test_pread(void *h, void *buf, uint32_t count, uint64_t offset)
{
    (void)h;
    return do_pread(buf, count, offset);
}

static int
test_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset)
{
    (void)h;
    return do_pwrite(buf, count, offset);
}

static int
test_flush(void *h)
{
    (void)h;
    return 0;
}
#else
static int
test_pread(void *h, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
    (void)h;
    (void)flags;
    return do_pread(buf, count, offset);
}

static int
test_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
    (void)h;
    (void)flags;
    return do_pwrite(buf, count, offset);
}

static int
test_flush(void *h, uint32_t flags)
{
    (void)h;
    (void)flags;
    return 0;
}
#endif

static struct nbdkit_plugin plugin = {
    .name     = "ngtest",
    .config   = test_config,
    .open     = test_open,
    .get_size = test_get_size,
    .pread    = test_pread,
    .pwrite   = test_pwrite,
    .flush    = test_flush,
};

#ifdef TEST_BAD_VERSION
NBDKIT_DLL_PUBLIC struct nbdkit_plugin *plugin_init(void);

NBDKIT_DLL_PUBLIC struct nbdkit_plugin *
plugin_init(void)
{
    plugin._struct_size = sizeof plugin;
    plugin._api_version = 99;
    plugin._thread_model = THREAD_MODEL;
    return &plugin;
}
#else
struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
#endif
