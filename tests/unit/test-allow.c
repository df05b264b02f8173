/* tests/unit/test-allow.c: config/allow.c — parsing allow: entries and
 * matching clients: identities by glob, address ranges by prefix bits
 * (also for an IPv4 client seen as ::ffff:a.b.c.d), Unix clients. */
#include <config.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static unsigned failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);        \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* Does the one entry `text` let this client in? */
static bool
admits(const char *text, const char *identity, const char *addr,
       bool unix_socket)
{
    struct ng_allow_rule r;
    struct ng_error err = { 0 };
    struct sockaddr_in in = { .sin_family = AF_INET };
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
    const struct sockaddr *sa = NULL;
    bool ok;

    if (ng_allow_parse(text, &r, &err) == -1) {
        fprintf(stderr, "FAIL: '%s': %s\n", text, err.msg);
        failures++;
        return false;
    }
    if (addr != NULL && inet_pton(AF_INET, addr, &in.sin_addr) == 1)
        sa = (const struct sockaddr *)&in;
    else if (addr != NULL && inet_pton(AF_INET6, addr, &in6.sin6_addr) == 1)
        sa = (const struct sockaddr *)&in6;
    ok = ng_allow_match(&r, 1, identity, sa, unix_socket);
    ng_allow_free(ng_allow_copy(&r, 1), 1);     /* copy frees cleanly */
    free(r.pattern);
    return ok;
}

static bool
refused(const char *text, const char *want)
{
    struct ng_allow_rule r;
    struct ng_error err = { 0 };

    if (ng_allow_parse(text, &r, &err) == 0) {
        free(r.pattern);
        return false;
    }
    if (strcmp(err.msg, want) != 0) {
        fprintf(stderr, "  want: %s\n  got:  %s\n", want, err.msg);
        return false;
    }
    return true;
}

int
main(void)
{
    CHECK(admits("x509:CN=alice,*", "x509:CN=alice,O=x", NULL, false));
    CHECK(!admits("x509:CN=alice,*", "x509:CN=alicex,O=x", NULL, false));
    CHECK(!admits("x509:CN=alice", "psk:CN=alice", NULL, false));
    CHECK(!admits("x509:*", NULL, "10.0.0.1", false));
    CHECK(admits("psk:al*", "psk:alice", NULL, false));
    CHECK(!admits("psk:alice", "x509:alice", NULL, false));

    CHECK(admits("tcp:10.1.0.0/16", NULL, "10.1.255.3", false));
    CHECK(!admits("tcp:10.1.0.0/16", NULL, "10.2.0.3", false));
    CHECK(admits("tcp:10.1.2.128/25", NULL, "10.1.2.200", false));
    CHECK(!admits("tcp:10.1.2.128/25", NULL, "10.1.2.100", false));
    CHECK(admits("tcp:192.0.2.7", NULL, "192.0.2.7", false));
    CHECK(!admits("tcp:192.0.2.7", NULL, "192.0.2.8", false));
    CHECK(admits("tcp:0.0.0.0/0", NULL, "203.0.113.9", false));
    CHECK(admits("tcp:127.0.0.0/8", NULL, "::ffff:127.0.0.1", false));
    CHECK(admits("tcp:[fd00::]/8", NULL, "fd12::1", false));
    CHECK(!admits("tcp:fd00::/8", NULL, "fe80::1", false));
    CHECK(!admits("tcp:fd00::/8", NULL, "10.0.0.1", false));
    CHECK(!admits("tcp:127.0.0.1", NULL, NULL, true));
    /* A TLS client from the range is let in by its address. */
    CHECK(admits("tcp:127.0.0.0/8", "psk:bob", "127.0.0.1", false));

    CHECK(admits("unix", NULL, NULL, true));
    CHECK(!admits("unix", NULL, "127.0.0.1", false));

    CHECK(refused("tcp:10.0.0.0/33",
                  "allow entry 'tcp:10.0.0.0/33': bad prefix length "
                  "(expected 0 to 32)"));
    CHECK(refused("tcp:::/129",
                  "allow entry 'tcp:::/129': bad prefix length "
                  "(expected 0 to 128)"));
    CHECK(refused("tcp:example.com",
                  "allow entry 'tcp:example.com': 'example.com' is not an "
                  "IPv4 or IPv6 address"));
    CHECK(refused("tcp:10.0.0.0/", "allow entry 'tcp:10.0.0.0/': bad prefix "
                  "length (expected 0 to 32)"));
    CHECK(refused("psk:", "allow entry 'psk:': empty pattern"));
    CHECK(refused("everyone", "bad allow entry 'everyone' (expected "
                  "x509:DN-PATTERN, psk:USER-PATTERN, tcp:ADDRESS[/PREFIX] "
                  "or unix)"));

    if (failures > 0)
        fprintf(stderr, "test-allow: %u failed\n", failures);
    return failures > 0;
}
