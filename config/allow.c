/* config/allow.c: an export's allow: list — parsing its entries and
 * matching a client against them (see config.h).  Pure: the server
 * passes what it knows of the client. */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define ALLOW_EXPECTED "expected x509:DN-PATTERN, psk:USER-PATTERN, " \
                       "tcp:ADDRESS[/PREFIX] or unix"

static int
allow_parse_tcp(const char *text, const char *spec, struct ng_allow_rule *r,
                struct ng_error *err)
{
    char host[64];
    const char *slash = strchr(spec, '/');
    size_t len = slash != NULL ? (size_t)(slash - spec) : strlen(spec);
    unsigned max;

    if (len >= 2 && spec[0] == '[' && spec[len - 1] == ']') {
        spec++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof host)
        return ng_error_set(err, EINVAL, "allow entry '%s': bad address",
                            text);
    memcpy(host, spec, len);
    host[len] = '\0';
    r->kind = NG_ALLOW_TCP;
    if (inet_pton(AF_INET, host, r->addr) == 1) {
        r->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, r->addr) == 1) {
        r->family = AF_INET6;
        max = 128;
    } else {
        return ng_error_set(err, EINVAL, "allow entry '%s': '%s' is not an "
                            "IPv4 or IPv6 address", text, host);
    }
    r->prefix = max;
    if (slash != NULL) {
        size_t digits = strspn(slash + 1, "0123456789");
        long p = strtol(slash + 1, NULL, 10);

        if (digits == 0 || digits > 3 || slash[1 + digits] != '\0' ||
            p > (long)max)
            return ng_error_set(err, EINVAL, "allow entry '%s': bad prefix "
                                "length (expected 0 to %u)", text, max);
        r->prefix = (unsigned)p;
    }
    return 0;
}

int
ng_allow_parse(const char *text, struct ng_allow_rule *r,
               struct ng_error *err)
{
    enum ng_allow_kind kind;
    const char *pattern;

    memset(r, 0, sizeof *r);
    if (strcmp(text, "unix") == 0) {
        r->kind = NG_ALLOW_UNIX;
        return 0;
    }
    if (strncmp(text, "tcp:", 4) == 0)
        return allow_parse_tcp(text, text + 4, r, err);
    if (strncmp(text, "x509:", 5) == 0) {
        kind = NG_ALLOW_X509;
        pattern = text + 5;
    } else if (strncmp(text, "psk:", 4) == 0) {
        kind = NG_ALLOW_PSK;
        pattern = text + 4;
    } else {
        return ng_error_set(err, EINVAL, "bad allow entry '%s' (%s)", text,
                            ALLOW_EXPECTED);
    }
    if (pattern[0] == '\0')
        return ng_error_set(err, EINVAL, "allow entry '%s': empty pattern",
                            text);
    r->kind = kind;
    r->pattern = strdup(pattern);
    return r->pattern != NULL ? 0 : ng_error_set(err, ENOMEM,
                                                 "out of memory");
}

int
ng_allow_parse_list(const struct ng_value *list, struct ng_allow_rule **out,
                    size_t *n, struct ng_error *err)
{
    struct ng_allow_rule *rules = NULL;
    size_t i;

    *out = NULL;
    *n = 0;
    if (list->kind != NG_VALUE_LIST)
        return ng_value_error(err, &list->loc, "'allow' must be a list");
    if (list->n > 0 && (rules = calloc(list->n, sizeof *rules)) == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    for (i = 0; i < list->n; i++) {
        const char *s = ng_value_to_string(list->items[i], "allow", err);
        char msg[NG_ERROR_MSG_MAX];

        if (s == NULL || ng_allow_parse(s, &rules[i], err) == -1) {
            ng_allow_free(rules, i);
            if (s == NULL)
                return -1;
            snprintf(msg, sizeof msg, "%s", err != NULL ? err->msg : "");
            return ng_value_error(err, &list->items[i]->loc, "%s", msg);
        }
    }
    *out = rules;
    *n = list->n;
    return 0;
}

/* The first `bits` bits of a and b agree. */
static bool
prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));

    if (memcmp(a, b, full) != 0)
        return false;
    return rest == 0 || ((a[full] ^ b[full]) & mask) == 0;
}

static bool
addr_matches(const struct ng_allow_rule *r, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        return r->family == AF_INET &&
               prefix_equal(r->addr, (const unsigned char *)&in->sin_addr,
                            r->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const unsigned char *a = in6->sin6_addr.s6_addr;

        /* An IPv4 client on a dual-stack socket looks like ::ffff:a.b.c.d */
        if (r->family == AF_INET && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return prefix_equal(r->addr, a + 12, r->prefix);
        return r->family == AF_INET6 && prefix_equal(r->addr, a, r->prefix);
    }
    return false;
}

static bool
identity_matches(const struct ng_allow_rule *r, const char *identity,
                 const char *kind)
{
    size_t n = strlen(kind);

    return identity != NULL && strncmp(identity, kind, n) == 0 &&
           fnmatch(r->pattern, identity + n, 0) == 0;
}

bool
ng_allow_match(const struct ng_allow_rule *rules, size_t n,
               const char *identity, const struct sockaddr *sa,
               bool unix_socket)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const struct ng_allow_rule *r = &rules[i];
        bool ok = false;

        switch (r->kind) {
        case NG_ALLOW_X509:
            ok = identity_matches(r, identity, "x509:");
            break;
        case NG_ALLOW_PSK:
            ok = identity_matches(r, identity, "psk:");
            break;
        case NG_ALLOW_TCP:
            ok = sa != NULL && addr_matches(r, sa);
            break;
        case NG_ALLOW_UNIX:
            ok = unix_socket;
            break;
        }
        if (ok)
            return true;
    }
    return false;
}

struct ng_allow_rule *
ng_allow_copy(const struct ng_allow_rule *rules, size_t n)
{
    struct ng_allow_rule *out;
    size_t i;

    if (n == 0 || (out = calloc(n, sizeof *out)) == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        out[i] = rules[i];
        if (rules[i].pattern != NULL &&
            (out[i].pattern = strdup(rules[i].pattern)) == NULL) {
            ng_allow_free(out, i);
            return NULL;
        }
    }
    return out;
}

void
ng_allow_free(struct ng_allow_rule *rules, size_t n)
{
    size_t i;

    if (rules == NULL)
        return;
    for (i = 0; i < n; i++)
        free(rules[i].pattern);
    free(rules);
}
