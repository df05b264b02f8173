/* tests/unit/nac-test.h: how the NAC unit tests (test-nac.c,
 * test-nac-nomem.c) fail: fail() says why on stderr, prefixed with
 * NAC_TEST_NAME (define it before including this), and exits 1; CHECK()
 * fails with the file, line and condition.
 *
 * Header only, with a static fail(): test-nac-nomem builds nac/nac.c into
 * itself with the allocator redirected and links nothing else, so it
 * stays one self-contained object.
 */
#ifndef NG_TEST_NAC_TEST_H
#define NG_TEST_NAC_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
    __attribute__((noreturn));

static void
fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, NAC_TEST_NAME ": FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond))                                                    \
            fail("%s:%d: %s", __FILE__, __LINE__, #cond);               \
    } while (0)

#endif
