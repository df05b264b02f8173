/* graph/luks.h: what the luks driver (drv-luks.c) reads from a LUKS1 or
 * LUKS2 header, in one shape for both; luks2.c parses LUKS2's. */
#ifndef NG_LUKS_H
#define NG_LUKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "graph/error.h"

#define NG_LUKS_SECTOR 512u         /* LUKS1's, and key areas' */
#define NG_LUKS_SECTOR_MAX 4096u    /* LUKS2 segments: 512 to 4096 */
#define NG_LUKS_SLOTS_MAX 32        /* LUKS2's; LUKS1 has 8 */
#define NG_LUKS_SALT_MAX 64
#define NG_LUKS_KEY_MAX 64          /* aes-256-xts */
/* Bounds that no real header exceeds: a damaged one must not make us
 * read or compute for ever. */
#define NG_LUKS_STRIPES_MAX 100000u
#define NG_LUKS_AREA_MAX (64u << 20)
#define NG_LUKS_ITER_MAX (1u << 26) /* PBKDF2: minutes, not hours */
#define NG_LUKS_ARGON2_MEM_MAX 4194304u /* KiB: cryptsetup's most */
#define NG_LUKS_ARGON2_TIME_MAX 1000u
#define NG_LUKS_ARGON2_CPUS_MAX 64u

/* aes-xts with plain64 (or plain: 32-bit) sector tweaks. */
struct ng_luks_cipher {
    gnutls_cipher_algorithm_t alg;
    bool plain32;
    unsigned key_bytes;             /* 32 or 64 */
};

/* How a keyslot's key is derived from the password. */
enum ng_luks_kdf { NG_LUKS_PBKDF2, NG_LUKS_ARGON2I, NG_LUKS_ARGON2ID };

struct ng_luks_slot {
    struct ng_luks_cipher area;     /* how its key material is encrypted */
    enum ng_luks_kdf kdf;
    gnutls_digest_algorithm_t kdf_hash; /* PBKDF2's */
    uint32_t iterations;            /* PBKDF2's, or argon2's time cost */
    uint32_t memory_kib, cpus;      /* argon2's memory and parallelism */
    unsigned char salt[NG_LUKS_SALT_MAX];
    size_t salt_len;
    uint64_t km_offset;             /* bytes from the start of the file */
    uint32_t stripes;
    gnutls_digest_algorithm_t af_hash;
    unsigned number;                /* for messages */
};

struct ng_luks_volume {
    unsigned version;               /* 1 or 2 */
    struct ng_luks_cipher cipher;   /* the payload's; key_bytes is the
                                     * master key's size */
    uint64_t payload;               /* bytes from the start of the file */
    uint32_t sector_size;           /* the payload's unit of encryption */
    uint64_t iv_tweak;              /* added to sector numbers, in units of
                                     * sector_size (LUKS2's iv_tweak counts
                                     * 512-byte sectors, as dm-crypt's
                                     * iv_offset) */
    gnutls_digest_algorithm_t mk_hash;  /* the master key's digest */
    uint32_t mk_iter;
    unsigned char mk_salt[NG_LUKS_SALT_MAX];
    size_t mk_salt_len;
    unsigned char mk_digest[NG_LUKS_KEY_MAX];
    size_t mk_digest_len;
    struct ng_luks_slot slots[NG_LUKS_SLOTS_MAX];   /* the active ones */
    unsigned n_slots;
    uint64_t area_end;              /* the key areas end before this */
};

/* cipher "aes", mode "xts-plain64" or "xts-plain", a key of key_bytes. */
int ng_luks_cipher_parse(const char *cipher, const char *mode,
                         uint64_t key_bytes, struct ng_luks_cipher *out,
                         struct ng_error *err);
/* "sha256" & co; GNUTLS_DIG_UNKNOWN for others. */
gnutls_digest_algorithm_t ng_luks_hash(const char *name);
/* A slot's key area, of stripes * key_bytes bytes, lies between
 * `after` and the payload; updates v->area_end. */
int ng_luks_slot_check(struct ng_luks_volume *v, const struct ng_luks_slot *k,
                       uint64_t after, struct ng_error *err);

/* LUKS2: from the binary header's first 4096 bytes, the size of the
 * header (binary header and JSON area) to read. */
int ng_luks2_hdr_size(const unsigned char *p, uint64_t file_len,
                      uint64_t *size, struct ng_error *err);
/* LUKS2: the whole header, `size` bytes, checked (checksum) and parsed
 * into *v.  Only what we can use: keyslots of type luks2 with pbkdf2 or
 * (built with libargon2) argon2i/argon2id and the luks1 anti-forensic
 * split, one crypt segment of 512 to 4096-byte sectors, pbkdf2 digests. */
int ng_luks2_parse(const unsigned char *hdr, size_t size,
                   struct ng_luks_volume *v, struct ng_error *err);

#endif
