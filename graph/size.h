/* graph/size.h: QEMU's size grammar (qemu_strtosz), for the config and
 * for nbdgraphctl; no other dependency. */
#ifndef NG_SIZE_H
#define NG_SIZE_H

#include <stdint.h>

/* A decimal number, maybe with a fraction, and at most one suffix letter
 * B, K, M, G, T, P or E (any case; powers of 1024): "512M", "1.5G",
 * "4096"; "1GB" and "1GiB" are refused, as QEMU does.  A fraction of a
 * byte is dropped; at most INT64_MAX.  0, or -1 with *why saying what is
 * wrong (a static string). */
int ng_parse_size_why(const char *s, uint64_t *out, const char **why);

/* The same without the reason. */
int ng_parse_size(const char *s, uint64_t *out);

#endif
