/* graph/size.c: QEMU's size grammar, on its own so that nbdgraphctl
 * parses a size exactly as the config does (it links this file alone). */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/size.h"

int
ng_parse_size_why(const char *s, uint64_t *out, const char **why)
{
    static const char suffixes[] = "BKMGTPE";
    const char *p, *frac = NULL;
    char *end;
    unsigned long long n;
    unsigned shift = 0;
    uint64_t part = 0, scale = 1;

    *why = "expected bytes or a number with K, M, G, T, P or E";
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0) {
        *why = "too large";
        return -1;
    }
    if (*end == '.') {
        for (frac = ++end; isdigit((unsigned char)*end); end++) {
            if (scale < 1000000000000000000ull) {     /* 18 digits */
                part = part * 10 + (uint64_t)(*end - '0');
                scale *= 10;
            }
        }
        if (end == frac)
            return -1;
    }
    if (*end != '\0') {
        p = strchr(suffixes, toupper((unsigned char)*end));
        if (p == NULL || *p == '\0')
            return -1;
        shift = 10 * (unsigned)(p - suffixes);
        if (end[1] != '\0') {
            *why = "QEMU's sizes take one suffix letter, K, M, G, T, P or "
                   "E, for powers of 1024; not a unit such as GB or GiB";
            return -1;
        }
    }
    if (frac != NULL && shift == 0) {
        *why = "a fraction needs a suffix such as K, M or G; bytes are "
               "whole";
        return -1;
    }
    if (shift != 0 && n > (UINT64_MAX >> shift)) {
        *why = "too large";
        return -1;
    }
    n <<= shift;
    if (frac != NULL)                   /* part / scale < 1: adds less
                                         * than one unit */
        n += (unsigned long long)((long double)part / (long double)scale *
                                  (long double)(1ull << shift));
    if (n > (uint64_t)INT64_MAX) {
        *why = "too large";
        return -1;
    }
    *out = (uint64_t)n;
    return 0;
}


int
ng_parse_size(const char *s, uint64_t *out)
{
    const char *why;

    return ng_parse_size_why(s, out, &why);
}
