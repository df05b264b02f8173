/* tests/unit/test-nbdkit-api.c: graph/nbdkit-api.c, the nbdkit_*
 * functions plugins call, against nbdkit 1.32's meaning: the size
 * suffixes of nbdkit_parse_size, the integer and boolean parsers, the
 * errors a plugin call reports, and nbdkit_add_extent's rules (order,
 * contiguity, clipping, merging, a full request array). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include <nbdkit-filter.h>

#include "graph/nbdkit-api.h"
#include "tests/unit/graph-fixture.h"

static void
test_parse_size(void)
{
    static const struct { const char *s; int64_t want; } cases[] = {
        { "0", 0 }, { "1", 1 }, { "1b", 1 }, { "1B", 1 },
        { "1k", 1024 }, { "1K", 1024 }, { "2M", 2 << 20 },
        { "1g", 1 << 30 }, { "1T", 1ll << 40 }, { "1P", 1ll << 50 },
        { "1E", 1ll << 60 }, { "1s", 512 }, { "3S", 1536 },
        { "9223372036854775807", INT64_MAX },
        /* What nbdkit refuses, so must we. */
        { "", -1 }, { "abc", -1 }, { "-1", -1 }, { "1KB", -1 },
        { "1KiB", -1 }, { "1.5M", -1 }, { "1x", -1 }, { "8E", -1 },
        { "9223372036854775808", -1 },
    };
    struct ng_nbdkit_call c;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ng_nbdkit_call_begin(&c);
        int64_t got = nbdkit_parse_size(cases[i].s);
        ng_nbdkit_call_end();
        if (got != cases[i].want)
            fail("nbdkit_parse_size(\"%s\") = %lld, want %lld", cases[i].s,
                 (long long)got, (long long)cases[i].want);
        /* Each refusal says why, through nbdkit_error. */
        CHECK((got == -1) == (c.msg[0] != '\0'));
    }
}

static void
test_parse_numbers(void)
{
    struct ng_nbdkit_call c;
    uint32_t u32 = 7;
    int8_t i8;
    int i;

    ng_nbdkit_call_begin(&c);
    CHECK(nbdkit_parse_int("n", "-12", &i) == 0 && i == -12);
    CHECK(nbdkit_parse_int("n", "0x10", &i) == 0 && i == 16);
    CHECK(nbdkit_parse_int8_t("n", "127", &i8) == 0 && i8 == 127);
    CHECK(nbdkit_parse_int8_t("n", "128", &i8) == -1);
    CHECK(nbdkit_parse_uint32_t("n", "4294967295", &u32) == 0 &&
          u32 == UINT32_MAX);
    CHECK(nbdkit_parse_uint32_t("n", "4294967296", &u32) == -1);
    CHECK(nbdkit_parse_uint32_t("n", " -1", &u32) == -1);
    CHECK(strstr(c.msg, "negative numbers are not allowed") != NULL);
    CHECK(nbdkit_parse_unsigned("n", "12abc", NULL) == -1);
    CHECK(strstr(c.msg, "trailing garbage") != NULL);
    CHECK(nbdkit_parse_unsigned("n", "", NULL) == -1);
    CHECK(nbdkit_parse_bool("on") == 1 && nbdkit_parse_bool("YES") == 1);
    CHECK(nbdkit_parse_bool("0") == 0 && nbdkit_parse_bool("f") == 0);
    CHECK(nbdkit_parse_bool("maybe") == -1);
    ng_nbdkit_call_end();
}

static void
test_errors(void)
{
    struct ng_nbdkit_call c;

    ng_nbdkit_call_begin(&c);
    nbdkit_error("first");
    nbdkit_error("bad value %d:\n  line two", 42);
    nbdkit_set_error(ENOSPC);
    ng_nbdkit_call_end();
    /* The last message, on one line; the errno set. */
    CHECK(strcmp(c.msg, "bad value 42: line two") == 0);
    CHECK(c.err == ENOSPC);
    /* A new call starts clean. */
    ng_nbdkit_call_begin(&c);
    ng_nbdkit_call_end();
    CHECK(c.msg[0] == '\0' && c.err == 0);
    CHECK(strcmp(nbdkit_export_name(), "") == 0 && nbdkit_is_tls() == 0);
    CHECK(nbdkit_peer_pid() == -1 && errno == ENOTSUP);
}

static void
test_extents_request(void)
{
    struct ng_extent out[3];
    struct nbdkit_extents e;
    struct ng_nbdkit_call c;

    /* Asked about [4096, 20480): the first extent may start before it
     * and is clipped; equal neighbours merge; once the array is full the
     * rest is dropped quietly. */
    ng_nbdkit_extents_init(&e, 4096, 20480, out, 3);
    ng_nbdkit_call_begin(&c);
    CHECK(nbdkit_add_extent(&e, 0, 1024, 0) == 0);          /* before */
    CHECK(nbdkit_add_extent(&e, 1024, 5120, 0) == 0);       /* clipped */
    CHECK(nbdkit_add_extent(&e, 6144, 2048, 0) == 0);       /* merged */
    CHECK(nbdkit_add_extent(&e, 8192, 4096, NBDKIT_EXTENT_HOLE) == 0);
    CHECK(nbdkit_add_extent(&e, 12288, 1024, 0) == 0);
    CHECK(nbdkit_add_extent(&e, 13312, 1024, NBDKIT_EXTENT_ZERO) == 0);
    CHECK(nbdkit_add_extent(&e, 14336, 1024, 0) == 0);      /* no room */
    ng_nbdkit_call_end();
    CHECK(e.n == 3 && nbdkit_extents_count(&e) == 3);
    CHECK(out[0].length == 4096 && out[0].flags == 0);
    CHECK(out[1].length == 4096 && out[1].flags == NG_EXTENT_HOLE);
    CHECK(out[2].length == 1024 && out[2].flags == 0);
    CHECK(nbdkit_get_extent(&e, 1).offset == 8192);

    /* A gap, or going backwards, is the plugin's bug: refused. */
    ng_nbdkit_extents_init(&e, 0, 8192, out, 3);
    ng_nbdkit_call_begin(&c);
    CHECK(nbdkit_add_extent(&e, 512, 512, 0) == -1);        /* gap at 0 */
    CHECK(nbdkit_add_extent(&e, 0, 4096, 0) == 0);
    CHECK(nbdkit_add_extent(&e, 2048, 4096, 0) == -1);      /* overlap */
    CHECK(strstr(c.msg, "ascending order") != NULL);
    CHECK(nbdkit_add_extent(&e, 4096, 0, 0) == 0);          /* empty */
    CHECK(nbdkit_add_extent(&e, 4096, 1ull << 40, 0) == 0); /* clipped */
    ng_nbdkit_call_end();
    CHECK(e.n == 1 && out[0].length == 8192);
}

static void
test_extents_heap(void)
{
    struct nbdkit_extents *e = nbdkit_extents_new(0, 1 << 20);

    CHECK(e != NULL);
    for (uint64_t off = 0; off < (1 << 20); off += 4096)
        CHECK(nbdkit_add_extent(e, off, 4096,
                                (off / 4096) % 2 ? NBDKIT_EXTENT_HOLE
                                                 : 0) == 0);
    CHECK(nbdkit_extents_count(e) == 256);
    CHECK(nbdkit_get_extent(e, 255).offset == (1 << 20) - 4096);
    CHECK(nbdkit_get_extent(e, 255).type == NBDKIT_EXTENT_HOLE);
    nbdkit_extents_free(e);
    CHECK(nbdkit_extents_new(10, 5) == NULL);
}

int
main(void)
{
    test_parse_size();
    test_parse_numbers();
    test_errors();
    test_extents_request();
    test_extents_heap();
    printf("test-nbdkit-api: ok\n");
    return 0;
}
