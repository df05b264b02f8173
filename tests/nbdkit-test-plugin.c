/* tests/nbdkit-test-plugin.c: tiny nbdkit plugins for the nbdkit leaf's
 * tests (tests/test-nbdkit-bad.sh), built in four shapes:
 *
 *   default              API v2: a 1 MiB RAM disk whose reads fail with
 *                        EIO (nbdkit_set_error + nbdkit_error) from
 *                        fail-offset on.  thread-model=MODEL lowers the
 *                        thread model through .thread_model; with
 *                        delay-ms=N each read sleeps N ms (only the
 *                        reads at delay-offset=OFF, when given); with
 *                        block-offset=OFF a read there waits, up to 5 s,
 *                        for another read to come in while it waits
 *                        (else it fails: the server held the queue
 *                        behind it); stats=FILE gets, at .unload, the
 *                        most reads that were ever inside the plugin at
 *                        once; with open-sleep=S .open first creates
 *                        the file open-marker=FILE (when given), then
 *                        sleeps S seconds, where no signal or server
 *                        can wake it (a plugin stuck in a remote)
 *   -DTEST_API_V1        the same through API v1's signatures
 *   -DTEST_BAD_VERSION   claims API version 99
 *   -DTEST_NEEDS_SYMBOL  calls an nbdkit_* function no server has
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
static int thread_model = NBDKIT_THREAD_MODEL_PARALLEL;
static unsigned delay_ms;
static int64_t delay_offset = -1;           /* -1: every read */
static int64_t block_offset = -1;           /* -1: none */
static const char *stats_file;
static unsigned open_sleep;                 /* seconds */
static const char *open_marker;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t read_came = PTHREAD_COND_INITIALIZER;
static unsigned inside, most_inside;         /* reads, under lock */
static unsigned long reads_begun;            /* under lock */

static const char *const model_names[] = {
    "serialize_connections", "serialize_all_requests",
    "serialize_requests", "parallel",
};

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
    if (strcmp(key, "delay-ms") == 0)
        return nbdkit_parse_unsigned("delay-ms", value, &delay_ms);
    if (strcmp(key, "delay-offset") == 0)
        return (delay_offset = nbdkit_parse_size(value)) == -1 ? -1 : 0;
    if (strcmp(key, "block-offset") == 0)
        return (block_offset = nbdkit_parse_size(value)) == -1 ? -1 : 0;
    if (strcmp(key, "stats") == 0) {
        stats_file = nbdkit_strdup_intern(value);
        return stats_file == NULL ? -1 : 0;
    }
    if (strcmp(key, "open-sleep") == 0)
        return nbdkit_parse_unsigned("open-sleep", value, &open_sleep);
    if (strcmp(key, "open-marker") == 0) {
        open_marker = nbdkit_strdup_intern(value);
        return open_marker == NULL ? -1 : 0;
    }
    if (strcmp(key, "thread-model") == 0) {
        for (int i = 0; i < 4; i++)
            if (strcmp(value, model_names[i]) == 0) {
                thread_model = i;
                return 0;
            }
        nbdkit_error("unknown thread model '%s'", value);
        return -1;
    }
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
}

static int
test_thread_model(void)
{
    return thread_model;
}

static void
test_unload(void)
{
    FILE *fp;

    if (stats_file != NULL && (fp = fopen(stats_file, "w")) != NULL) {
        fprintf(fp, "%u\n", most_inside);
        fclose(fp);
    }
}

static void
sleep_uninterrupted(unsigned seconds)
{
    struct timespec ts = { .tv_sec = seconds };

    while (nanosleep(&ts, &ts) == -1)
        ;
}

static void *
test_open(int readonly)
{
    FILE *fp;

    (void)readonly;
#ifdef TEST_NEEDS_SYMBOL
    nbdkit_no_such_function();
#endif
    if (open_marker != NULL && (fp = fopen(open_marker, "w")) != NULL)
        fclose(fp);
    sleep_uninterrupted(open_sleep);
    return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
test_get_size(void *handle)
{
    (void)handle;
    return DISK_SIZE;
}

/* The read at block-offset: wait (lock held) until another read begins,
 * or 5 s. */
static int
wait_for_another_read(void)
{
    unsigned long seen = reads_begun;
    struct timespec until;
    int r = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (reads_begun == seen && r == 0)
        r = pthread_cond_timedwait(&read_came, &lock, &until);
    return reads_begun == seen ? -1 : 0;
}

static int
do_pread(void *buf, uint32_t count, uint64_t offset)
{
    int blocked = 0;

    pthread_mutex_lock(&lock);
    if (++inside > most_inside)
        most_inside = inside;
    reads_begun++;
    pthread_cond_broadcast(&read_came);
    if ((int64_t)offset == block_offset)
        blocked = wait_for_another_read();
    pthread_mutex_unlock(&lock);
    if (delay_ms > 0 &&
        (delay_offset == -1 || (int64_t)offset == delay_offset))
        nbdkit_nanosleep(0, delay_ms * 1000000);
    pthread_mutex_lock(&lock);
    inside--;
    pthread_mutex_unlock(&lock);
    if (blocked) {
        nbdkit_error("no other read came in 5 s while the read at %" PRIu64
                     " waited", offset);
        nbdkit_set_error(ETIMEDOUT);
        return -1;
    }
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
    .unload   = test_unload,
    .config   = test_config,
    .thread_model = test_thread_model,
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
