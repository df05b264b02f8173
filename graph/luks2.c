/* graph/luks2.c: the LUKS2 header, for the luks driver (luks.h).
 *
 * A LUKS2 header is a 4096-byte binary header (magic, version 2, the
 * header's size, a checksum over all of it) followed by a JSON area
 * describing keyslots, segments and digests (cryptsetup's
 * docs/on-disk-format-luks2.pdf).  A second copy follows; we read the
 * first and refuse it when its checksum is wrong.  What we take: luks2
 * keyslots with the PBKDF2 KDF and the luks1 anti-forensic split, whose
 * key material is aes-xts, their KDF PBKDF2 or (with libargon2, the
 * library cryptsetup uses) argon2i/argon2id; one crypt segment of
 * 512, 1024, 2048 or 4096-byte sectors (4096 is cryptsetup's default on
 * a file); a pbkdf2 digest.  Other sector sizes are refused with the
 * reason.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "graph/luks.h"

#define LUKS2_BIN_SIZE 4096u
#define LUKS2_HDR_MAX (4u << 20)        /* cryptsetup's largest */
#define LUKS2_CSUM_OFF 448u
#define LUKS2_CSUM_LEN 64u

static uint64_t
be64(const unsigned char *p)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int
ng_luks2_hdr_size(const unsigned char *p, uint64_t file_len, uint64_t *size,
                  struct ng_error *err)
{
    uint64_t hs = be64(p + 8);

    if (hs <= LUKS2_BIN_SIZE || hs > LUKS2_HDR_MAX || hs % 4096 != 0 ||
        hs > file_len)
        return ng_error_set(err, EINVAL, "LUKS2 header is damaged: header "
                            "size %" PRIu64, hs);
    *size = hs;
    return 0;
}

/* SHA-256 over the header with its checksum field as zeroes. */
static int
hdr_checksum_ok(const unsigned char *hdr, size_t size)
{
    static const unsigned char zero[LUKS2_CSUM_LEN];
    unsigned char sum[32];
    gnutls_hash_hd_t h;
    char alg[33];

    memcpy(alg, hdr + 72, 32);
    alg[32] = '\0';
    if (strcmp(alg, "sha256") != 0 || gnutls_hash_init(&h, GNUTLS_DIG_SHA256)
                                      < 0)
        return 0;
    gnutls_hash(h, hdr, LUKS2_CSUM_OFF);
    gnutls_hash(h, zero, sizeof zero);
    gnutls_hash(h, hdr + LUKS2_CSUM_OFF + LUKS2_CSUM_LEN,
                size - LUKS2_CSUM_OFF - LUKS2_CSUM_LEN);
    gnutls_hash_deinit(h, sum);
    return memcmp(sum, hdr + LUKS2_CSUM_OFF, sizeof sum) == 0;
}

/* ---- JSON helpers --------------------------------------------------------- */

static int
damaged(struct ng_error *err, const char *what)
{
    return ng_error_set(err, EINVAL, "LUKS2 header is damaged: %s", what);
}

/* A number the JSON gives as a string ("offset": "16777216") or an
 * integer ("key_size": 64). */
static int
get_u64(json_t *obj, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    char *end;

    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if ((s = json_string_value(v)) == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' ? 0 : -1;
}

static const char *
get_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s != NULL ? s : "";
}

/* Base64 `key` of obj into out (at most max bytes). */
static int
get_b64(json_t *obj, const char *key, unsigned char *out, size_t max,
        size_t *len)
{
    const char *s = json_string_value(json_object_get(obj, key));
    gnutls_datum_t in, dec = { NULL, 0 };
    int r = -1;

    if (s == NULL)
        return -1;
    in.data = (unsigned char *)s;
    in.size = (unsigned)strlen(s);
    if (gnutls_base64_decode2(&in, &dec) < 0)
        return -1;
    if (dec.size > 0 && dec.size <= max) {
        memcpy(out, dec.data, dec.size);
        *len = dec.size;
        r = 0;
    }
    gnutls_free(dec.data);
    return r;
}

/* "aes-xts-plain64": cipher and mode. */
static int
parse_encryption(const char *enc, uint64_t key_bytes,
                 struct ng_luks_cipher *c, struct ng_error *err)
{
    const char *dash = strchr(enc, '-');
    char cipher[32];

    if (dash == NULL || (size_t)(dash - enc) >= sizeof cipher)
        return ng_error_set(err, ENOTSUP, "LUKS2 encryption '%s' is not "
                            "supported (only aes-xts-plain64)", enc);
    memcpy(cipher, enc, (size_t)(dash - enc));
    cipher[dash - enc] = '\0';
    return ng_luks_cipher_parse(cipher, dash + 1, key_bytes, c, err);
}

/* ---- Segments, digests, keyslots ------------------------------------------- */

/* A segment's sector size: a power of two from 512 to 4096 (as
 * cryptsetup's), and iv_tweak a whole number of them (as dm-crypt wants
 * of its iv_offset). */
static int
check_sector(uint64_t sector, uint64_t iv_tweak, struct ng_error *err)
{
    if (sector < NG_LUKS_SECTOR || sector > NG_LUKS_SECTOR_MAX ||
        (sector & (sector - 1)) != 0)
        return ng_error_set(err, ENOTSUP, "LUKS2 sector size %" PRIu64
                            " is not supported (512, 1024, 2048 or 4096)",
                            sector);
    if (iv_tweak % (sector / NG_LUKS_SECTOR) != 0)
        return ng_error_set(err, EINVAL, "LUKS2 header is damaged: "
                            "segment 0's iv_tweak %" PRIu64 " is not a "
                            "whole number of its %" PRIu64 "-byte sectors",
                            iv_tweak, sector);
    return 0;
}

static int
parse_segment(json_t *root, struct ng_luks_volume *v, uint64_t *key_bytes,
              struct ng_error *err)
{
    json_t *segs = json_object_get(root, "segments");
    json_t *seg = json_object_get(segs, "0");
    uint64_t sector = 0;

    if (!json_is_object(seg) || json_object_size(segs) != 1 ||
        strcmp(get_str(seg, "type"), "crypt") != 0)
        return ng_error_set(err, ENOTSUP, "LUKS2 image without exactly one "
                            "crypt segment (a reencryption in progress?) is "
                            "not supported");
    if (get_u64(seg, "offset", &v->payload) == -1 ||
        get_u64(seg, "iv_tweak", &v->iv_tweak) == -1 ||
        get_u64(seg, "sector_size", &sector) == -1)
        return damaged(err, "segment 0 lacks offset, iv_tweak or "
                       "sector_size");
    if (check_sector(sector, v->iv_tweak, err) == -1)
        return -1;
    /* IVs count sector_size units (dm-crypt's iv_large_sectors, which
     * cryptsetup sets for LUKS2); iv_tweak counts 512-byte sectors and
     * is added before the division, so it must be a whole sector. */
    v->sector_size = (uint32_t)sector;
    v->iv_tweak /= sector / NG_LUKS_SECTOR;
    if (strcmp(get_str(seg, "size"), "dynamic") != 0)
        return ng_error_set(err, ENOTSUP, "LUKS2 segment of a fixed size is "
                            "not supported (only \"dynamic\")");
    return parse_encryption(get_str(seg, "encryption"), *key_bytes,
                            &v->cipher, err);
}

static int
parse_digest(json_t *root, struct ng_luks_volume *v, struct ng_error *err)
{
    json_t *dig = json_object_get(json_object_get(root, "digests"), "0");
    uint64_t iter = 0;

    if (!json_is_object(dig) || strcmp(get_str(dig, "type"), "pbkdf2") != 0)
        return ng_error_set(err, ENOTSUP, "LUKS2 digest 0 is missing or "
                            "not pbkdf2");
    v->mk_hash = ng_luks_hash(get_str(dig, "hash"));
    if (v->mk_hash == GNUTLS_DIG_UNKNOWN)
        return ng_error_set(err, ENOTSUP, "LUKS2 digest hash '%s' is not "
                            "supported", get_str(dig, "hash"));
    if (get_u64(dig, "iterations", &iter) == -1 || iter == 0 ||
        iter > NG_LUKS_ITER_MAX ||
        get_b64(dig, "salt", v->mk_salt, sizeof v->mk_salt,
                &v->mk_salt_len) == -1 ||
        get_b64(dig, "digest", v->mk_digest, sizeof v->mk_digest,
                &v->mk_digest_len) == -1)
        return damaged(err, "digest 0's iterations, salt or digest");
    v->mk_iter = (uint32_t)iter;
    return 0;
}

/* A keyslot's KDF into *k: 0, or 1 with *why saying why we cannot use it
 * ("damaged..." when its numbers are missing or absurd). */
static int
parse_kdf(json_t *kdf, struct ng_luks_slot *k, const char **why)
{
    const char *type = get_str(kdf, "type");
    uint64_t iter = 0, mem = 0, cpus = 0;

    if (strcmp(type, "pbkdf2") == 0) {
        k->kdf = NG_LUKS_PBKDF2;
        k->kdf_hash = ng_luks_hash(get_str(kdf, "hash"));
        if (get_u64(kdf, "iterations", &iter) == -1 || iter == 0 ||
            iter > NG_LUKS_ITER_MAX) {
            *why = "damaged PBKDF2 iterations";
            return 1;
        }
        k->iterations = (uint32_t)iter;
        return 0;
    }
    if (strcmp(type, "argon2i") != 0 && strcmp(type, "argon2id") != 0) {
        *why = "an unknown KDF";
        return 1;
    }
#ifndef HAVE_LIBARGON2
    *why = "argon2, which this build lacks (libargon2 was not found "
           "when it was configured; or use cryptsetup --pbkdf pbkdf2)";
    return 1;
#endif
    k->kdf = type[6] == 'i' && type[7] == 'd' ? NG_LUKS_ARGON2ID
                                              : NG_LUKS_ARGON2I;
    k->kdf_hash = GNUTLS_DIG_SHA256;    /* unused; keeps the check simple */
    if (get_u64(kdf, "time", &iter) == -1 || iter == 0 ||
        iter > NG_LUKS_ARGON2_TIME_MAX ||
        get_u64(kdf, "memory", &mem) == -1 || mem == 0 ||
        mem > NG_LUKS_ARGON2_MEM_MAX ||
        get_u64(kdf, "cpus", &cpus) == -1 || cpus == 0 ||
        cpus > NG_LUKS_ARGON2_CPUS_MAX) {
        *why = "damaged argon2 time, memory or cpus";
        return 1;
    }
    k->iterations = (uint32_t)iter;
    k->memory_kib = (uint32_t)mem;
    k->cpus = (uint32_t)cpus;
    return 0;
}

/* One keyslot; 0 when usable (filled in *k), 1 when of a kind we skip
 * (*why says which), -1 on a damaged one. */
static int
parse_keyslot(json_t *ks, struct ng_luks_slot *k, uint64_t *key_bytes,
              const char **why, struct ng_error *err)
{
    json_t *af = json_object_get(ks, "af"), *area = json_object_get(ks, "area");
    json_t *kdf = json_object_get(ks, "kdf");
    uint64_t size = 0, stripes = 0, area_key = 0;

    if (strcmp(get_str(ks, "type"), "luks2") != 0 ||
        strcmp(get_str(af, "type"), "luks1") != 0 ||
        strcmp(get_str(area, "type"), "raw") != 0) {
        *why = "not a plain luks2 keyslot";
        return 1;
    }
    if (parse_kdf(kdf, k, why) != 0)
        return strncmp(*why, "damaged", 7) == 0 ? damaged(err, *why) : 1;
    if (get_u64(ks, "key_size", &size) == -1 || size == 0 ||
        size > NG_LUKS_KEY_MAX || (*key_bytes != 0 && size != *key_bytes) ||
        get_u64(af, "stripes", &stripes) == -1 ||
        get_u64(area, "offset", &k->km_offset) == -1 ||
        get_u64(area, "key_size", &area_key) == -1 ||
        get_b64(kdf, "salt", k->salt, sizeof k->salt, &k->salt_len) == -1 ||
        stripes > NG_LUKS_STRIPES_MAX)
        return damaged(err, "a keyslot's sizes, offset or salt");
    *key_bytes = size;
    k->stripes = (uint32_t)stripes;
    k->af_hash = ng_luks_hash(get_str(af, "hash"));
    if (k->kdf_hash == GNUTLS_DIG_UNKNOWN || k->af_hash == GNUTLS_DIG_UNKNOWN)
        return ng_error_set(err, ENOTSUP, "LUKS2 keyslot hash '%s' or '%s' "
                            "is not supported", get_str(kdf, "hash"),
                            get_str(af, "hash"));
    return parse_encryption(get_str(area, "encryption"), area_key, &k->area,
                            err);
}

static int
parse_keyslots(json_t *root, struct ng_luks_volume *v, uint64_t *key_bytes,
               struct ng_error *err)
{
    json_t *slots = json_object_get(root, "keyslots"), *ks;
    const char *key, *why = NULL;
    unsigned skipped = 0;

    json_object_foreach(slots, key, ks) {
        struct ng_luks_slot *k = &v->slots[v->n_slots];
        int r;

        if (v->n_slots == NG_LUKS_SLOTS_MAX)
            return damaged(err, "too many keyslots");
        memset(k, 0, sizeof *k);
        k->number = (unsigned)strtoul(key, NULL, 10);
        if ((r = parse_keyslot(ks, k, key_bytes, &why, err)) == -1)
            return -1;
        if (r == 1) {
            skipped = k->number + 1;
            continue;
        }
        v->n_slots++;
    }
    if (v->n_slots == 0 && skipped > 0)
        return ng_error_set(err, ENOTSUP, "LUKS2 keyslot %u uses %s",
                            skipped - 1, why);
    if (v->n_slots == 0)
        return ng_error_set(err, EINVAL, "LUKS2 image has no keyslot");
    return 0;
}

int
ng_luks2_parse(const unsigned char *hdr, size_t size,
               struct ng_luks_volume *v, struct ng_error *err)
{
    const char *json = (const char *)hdr + LUKS2_BIN_SIZE;
    size_t json_len = strnlen(json, size - LUKS2_BIN_SIZE);
    uint64_t key_bytes = 0;
    json_error_t je;
    json_t *root;
    int r = -1;

    if (!hdr_checksum_ok(hdr, size))
        return damaged(err, "checksum mismatch");
    if ((root = json_loadb(json, json_len, 0, &je)) == NULL)
        return ng_error_set(err, EINVAL, "LUKS2 header is damaged: JSON "
                            "area: %s", je.text);
    v->version = 2;
    if (parse_keyslots(root, v, &key_bytes, err) == 0 &&
        parse_segment(root, v, &key_bytes, err) == 0 &&
        parse_digest(root, v, err) == 0) {
        r = 0;
        /* Key areas lie after both copies of the header. */
        for (unsigned i = 0; r == 0 && i < v->n_slots; i++)
            r = ng_luks_slot_check(v, &v->slots[i], 2 * (uint64_t)size, err);
    }
    json_decref(root);
    return r;
}
