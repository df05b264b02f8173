/* graph/drv-luks.c: "luks", QEMU's format driver for LUKS encrypted
 * images: LUKS1 as `qemu-img create -f luks` and `cryptsetup luksFormat
 * --type luks1` make them, and LUKS2 with 512 to 4096-byte sectors and
 * PBKDF2 or argon2 keyslots (graph/luks2.c reads its JSON header; both
 * land in one struct ng_luks_volume, graph/luks.h).
 *
 * A format over a protocol node on the "file" edge, as raw.  At open the
 * header is read from the child, the password (the secret object named
 * by `key-secret`) tried on each active key slot: PBKDF2 of it with the
 * slot's salt and iterations is the key the slot's key material is
 * encrypted with; that material, decrypted and merged (LUKS's
 * anti-forensic split), is a candidate master key, right when its own
 * PBKDF2 matches the header's digest.  The KDF runs on a worker thread
 * (QEMU's default costs about a second); everything else on the loop.
 *
 * The payload starts payload-offset bytes into the child; each sector
 * (512 bytes in LUKS1, the segment's sector_size in LUKS2, which is also
 * our request_alignment) is encrypted on its own with the master key, AES
 * in XTS mode, its tweak the sector number from the payload's start in
 * units of that size, plus LUKS2's iv_tweak (plain64: 64 bits
 * little-endian; plain: the low 32 of them).  Reads are decrypted in the
 * request's buffer (or, when it is scattered, in a bounce buffer copied
 * into it); writes are encrypted into a bounce buffer, so no plaintext
 * reaches the child and the caller's stays as it was.  Trim and write-zeroes are not
 * offered: zeroes in the child do not decrypt to zeroes, so the client
 * writes its zeroes as data, and block status says "all data".
 *
 * All cryptography is GnuTLS's (PBKDF2, the hash, AES-XTS) or
 * libargon2's (argon2, as in cryptsetup).  Other ciphers and modes and
 * other sector sizes are refused at open with the reason.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#ifdef HAVE_LIBARGON2
#include <argon2.h>
#endif

#include "graph/graph.h"
#include "graph/drivers.h"
#include "graph/luks.h"
#include "graph/secret.h"

#define LUKS_SECTOR NG_LUKS_SECTOR
#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_MAGIC_LEN 6
#define LUKS1_HDR_SIZE 592u         /* the LUKS1 header, slots included */
#define LUKS_FIRST_READ 4096u       /* LUKS1's header, LUKS2's binary one */
#define LUKS1_SLOTS 8
#define LUKS1_SLOT_ACTIVE 0x00AC71F3u
#define LUKS1_SLOT_INACTIVE 0x0000DEADu
#define LUKS1_DIGEST_SIZE 20u
#define LUKS1_SALT_SIZE 32u
#define LUKS_MAX_TRANSFER (4u << 20)    /* bounce buffer per request */

/* What open reads and computes; freed (and wiped) when open ends. */
struct luks_open {
    struct ng_node *node;
    struct ng_error *err;
    struct ng_req req;
    unsigned char *buf;             /* header, then header + key areas */
    size_t buf_len;
    struct ng_work work;
    unsigned char *password;        /* a copy: the worker must not touch
                                     * the graph's registry */
    size_t password_len;
    int slot;                       /* the slot that opened, or -1 */
    int work_err;                   /* a GnuTLS failure in the worker */
};

struct luks_state {
    struct ng_node *file;           /* option "file" */
    char *key_secret;               /* option "key-secret" */
    struct ng_luks_volume vol;      /* from the header */
    unsigned char master_key[NG_LUKS_KEY_MAX];
    gnutls_cipher_hd_t payload_cipher;  /* loop thread only */
    struct luks_open *op;           /* during open */
};

/* One request in flight (ng_req_ctx()). */
struct luks_ctx {
    struct ng_node *node;
    struct ng_req *req;
    struct ng_req sub;
    unsigned char *buf;             /* ciphertext */
};

static const struct ng_opt_desc luks_opts[] = {
    NG_OPT_CHILD("file", struct luks_state, file, NG_ROLE_FILE, true,
                 "the node holding the encrypted image"),
    NG_OPT_STRING("key-secret", struct luks_state, key_secret, NULL,
                  "id of the secret holding the password"),
    NG_OPT_END,
};

/* ---- Header ------------------------------------------------------------ */

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

/* A NUL-padded string field of 32 bytes. */
static void
hdr_string(char out[33], const unsigned char *p)
{
    memcpy(out, p, 32);
    out[32] = '\0';
}

gnutls_digest_algorithm_t
ng_luks_hash(const char *name)
{
    static const struct {
        const char *name;
        gnutls_digest_algorithm_t alg;
    } hashes[] = {
        { "sha1", GNUTLS_DIG_SHA1 }, { "sha224", GNUTLS_DIG_SHA224 },
        { "sha256", GNUTLS_DIG_SHA256 }, { "sha384", GNUTLS_DIG_SHA384 },
        { "sha512", GNUTLS_DIG_SHA512 },
    };
    size_t i;

    for (i = 0; i < sizeof hashes / sizeof hashes[0]; i++)
        if (strcmp(hashes[i].name, name) == 0)
            return hashes[i].alg;
    return GNUTLS_DIG_UNKNOWN;
}

int
ng_luks_cipher_parse(const char *cipher, const char *mode,
                     uint64_t key_bytes, struct ng_luks_cipher *out,
                     struct ng_error *err)
{
    if (strcmp(cipher, "aes") != 0)
        return ng_error_set(err, ENOTSUP, "LUKS cipher '%s' is not "
                            "supported (only aes)", cipher);
    if (strcmp(mode, "xts-plain64") != 0 && strcmp(mode, "xts-plain") != 0)
        return ng_error_set(err, ENOTSUP, "LUKS cipher mode '%s' is not "
                            "supported (only xts-plain64 and xts-plain)",
                            mode);
    out->plain32 = strcmp(mode, "xts-plain") == 0;
    out->key_bytes = (unsigned)key_bytes;
    if (key_bytes == 32)
        out->alg = GNUTLS_CIPHER_AES_128_XTS;
    else if (key_bytes == 64)
        out->alg = GNUTLS_CIPHER_AES_256_XTS;
    else
        return ng_error_set(err, EINVAL, "LUKS header is damaged: key size "
                            "%" PRIu64 " bytes for aes-xts (expected 32 or "
                            "64)", key_bytes);
    return 0;
}

int
ng_luks_slot_check(struct ng_luks_volume *v, const struct ng_luks_slot *k,
                   uint64_t after, struct ng_error *err)
{
    uint64_t len = (uint64_t)v->cipher.key_bytes * k->stripes;

    if (k->stripes == 0 || k->stripes > NG_LUKS_STRIPES_MAX ||
        k->iterations == 0 || k->iterations > NG_LUKS_ITER_MAX ||
        k->km_offset < after || k->km_offset > v->payload ||
        len > v->payload - k->km_offset)
        return ng_error_set(err, EINVAL, "LUKS header is damaged: key slot "
                            "%u (key material at byte %" PRIu64 ", %"
                            PRIu32 " stripes, %" PRIu32 " iterations) does "
                            "not fit before the payload or is out of "
                            "bounds", k->number, k->km_offset, k->stripes,
                            k->iterations);
    if (k->km_offset + len > v->area_end)
        v->area_end = k->km_offset + len;
    if (v->area_end > NG_LUKS_AREA_MAX)
        return ng_error_set(err, EINVAL, "LUKS header is damaged: key "
                            "material up to byte %" PRIu64, v->area_end);
    return 0;
}

/* LUKS1's key slot i at p (48 bytes): 0 active (into v), 1 inactive. */
static int
luks1_slot(const unsigned char *p, unsigned i, const char *hash,
           struct ng_luks_volume *v, struct ng_error *err)
{
    struct ng_luks_slot *k = &v->slots[v->n_slots];
    uint32_t active = be32(p);

    if (active == LUKS1_SLOT_INACTIVE)
        return 1;
    if (active != LUKS1_SLOT_ACTIVE)
        return ng_error_set(err, EINVAL, "LUKS header is damaged: key slot "
                            "%u state 0x%08" PRIx32, i, active);
    memset(k, 0, sizeof *k);
    k->number = i;
    k->area = v->cipher;
    k->kdf_hash = k->af_hash = ng_luks_hash(hash);
    k->iterations = be32(p + 4);
    memcpy(k->salt, p + 8, LUKS1_SALT_SIZE);
    k->salt_len = LUKS1_SALT_SIZE;
    k->km_offset = (uint64_t)be32(p + 40) * LUKS_SECTOR;
    k->stripes = be32(p + 44);
    if (ng_luks_slot_check(v, k, LUKS1_HDR_SIZE, err) == -1)
        return -1;
    v->n_slots++;
    return 0;
}

/* The LUKS1 header (its spec's layout, big-endian) into *v. */
static int
luks1_parse(const unsigned char *p, uint64_t file_len,
            struct ng_luks_volume *v, struct ng_error *err)
{
    char cipher[33], mode[33], hash[33];
    unsigned i;

    hdr_string(cipher, p + 8);
    hdr_string(mode, p + 40);
    hdr_string(hash, p + 72);
    v->version = 1;
    v->sector_size = LUKS_SECTOR;
    if (ng_luks_cipher_parse(cipher, mode, be32(p + 108), &v->cipher,
                             err) == -1)
        return -1;
    if ((v->mk_hash = ng_luks_hash(hash)) == GNUTLS_DIG_UNKNOWN)
        return ng_error_set(err, ENOTSUP, "LUKS hash '%s' is not supported "
                            "(sha1, sha224, sha256, sha384, sha512)", hash);
    v->payload = (uint64_t)be32(p + 104) * LUKS_SECTOR;
    memcpy(v->mk_digest, p + 112, LUKS1_DIGEST_SIZE);
    v->mk_digest_len = LUKS1_DIGEST_SIZE;
    memcpy(v->mk_salt, p + 132, LUKS1_SALT_SIZE);
    v->mk_salt_len = LUKS1_SALT_SIZE;
    v->mk_iter = be32(p + 164);
    if (v->payload > file_len || v->mk_iter == 0 ||
        v->mk_iter > NG_LUKS_ITER_MAX)
        return ng_error_set(err, EINVAL, "LUKS header is damaged: payload "
                            "offset %" PRIu64 " (the file has %" PRIu64
                            " bytes) or %" PRIu32 " digest iterations",
                            v->payload, file_len, v->mk_iter);
    for (i = 0; i < LUKS1_SLOTS; i++)
        if (luks1_slot(p + 208 + 48 * i, i, hash, v, err) == -1)
            return -1;
    if (v->n_slots == 0)
        return ng_error_set(err, EINVAL, "LUKS image has no active key "
                            "slot");
    return 0;
}

/* LUKS2's payload offset comes from JSON: inside the file. */
static int
luks_check_payload(const struct luks_state *s, struct ng_error *err)
{
    int64_t len = ng_node_length(s->file);

    if (s->vol.payload > (uint64_t)len || s->vol.payload % LUKS_SECTOR)
        return ng_error_set(err, EINVAL, "LUKS header is damaged: payload "
                            "offset %" PRIu64 " (the file '%s' has %" PRId64
                            " bytes)", s->vol.payload, s->file->name, len);
    return 0;
}

/* ---- Crypto ------------------------------------------------------------ */

/* En- or decrypt len bytes in place, sector by sector (of sector_size
 * bytes), the first one numbered `sector` (a last short sector is XTS's
 * ciphertext stealing, as QEMU does for key material). */
static int
xts_sectors(gnutls_cipher_hd_t h, bool plain32, uint32_t sector_size,
            uint64_t sector, unsigned char *buf, size_t len, bool encrypt)
{
    size_t off;

    for (off = 0; off < len; off += sector_size, sector++) {
        size_t n = len - off < sector_size ? len - off : sector_size;
        uint64_t tweak = plain32 ? (sector & 0xffffffffu) : sector;
        unsigned char iv[16] = { 0 };
        unsigned b;
        int r;

        for (b = 0; b < 8; b++)
            iv[b] = (unsigned char)(tweak >> (8 * b));
        gnutls_cipher_set_iv(h, iv, sizeof iv);
        r = encrypt ? gnutls_cipher_encrypt2(h, buf + off, n, buf + off, n)
                    : gnutls_cipher_decrypt2(h, buf + off, n, buf + off, n);
        if (r < 0)
            return r;
    }
    return 0;
}

/* LUKS's diffuse step: each digest-sized piece of buf replaced by
 * H(be32(index) || piece), cut to the piece's length. */
static int
af_diffuse(gnutls_digest_algorithm_t dig, unsigned char *buf, size_t len)
{
    unsigned ds = gnutls_hash_get_len(dig);
    unsigned char out[64];
    uint32_t i;
    size_t off;

    for (off = 0, i = 0; off < len; off += ds, i++) {
        size_t n = len - off < ds ? len - off : ds;
        unsigned char idx[4] = {
            (unsigned char)(i >> 24), (unsigned char)(i >> 16),
            (unsigned char)(i >> 8), (unsigned char)i,
        };
        gnutls_hash_hd_t h;

        if (gnutls_hash_init(&h, dig) < 0)
            return -1;
        gnutls_hash(h, idx, sizeof idx);
        gnutls_hash(h, buf + off, n);
        gnutls_hash_deinit(h, out);
        memcpy(buf + off, out, n);
    }
    explicit_bzero(out, sizeof out);
    return 0;
}

/* The anti-forensic merge: stripes blocks of len bytes to one key. */
static int
af_merge(gnutls_digest_algorithm_t dig, const unsigned char *src,
         uint32_t stripes, size_t len, unsigned char *key)
{
    uint32_t i;
    size_t b;

    memset(key, 0, len);
    for (i = 0; i < stripes; i++) {
        for (b = 0; b < len; b++)
            key[b] ^= src[(size_t)i * len + b];
        if (i + 1 < stripes && af_diffuse(dig, key, len) == -1)
            return -1;
    }
    return 0;
}

static gnutls_mac_algorithm_t
mac_of(gnutls_digest_algorithm_t dig)
{
    /* GnuTLS numbers its HMACs as its digests. */
    return (gnutls_mac_algorithm_t)dig;
}

static int
pbkdf2(gnutls_digest_algorithm_t dig, const unsigned char *pw, size_t pw_len,
       const unsigned char *salt, size_t salt_len, uint32_t iter,
       unsigned char *out, size_t out_len)
{
    gnutls_datum_t key = { .data = (unsigned char *)pw,
                           .size = (unsigned)pw_len };
    gnutls_datum_t salt_d = { .data = (unsigned char *)salt,
                              .size = (unsigned)salt_len };

    return gnutls_pbkdf2(mac_of(dig), &key, &salt_d, iter, out, out_len);
}

/* The slot's key from the password, by its KDF: 0 or a negative GnuTLS
 * error. */
static int
slot_derive(const struct ng_luks_slot *k, const unsigned char *pw,
            size_t pw_len, unsigned char *out)
{
    if (k->kdf == NG_LUKS_PBKDF2)
        return pbkdf2(k->kdf_hash, pw, pw_len, k->salt, k->salt_len,
                      k->iterations, out, k->area.key_bytes);
#ifdef HAVE_LIBARGON2
    switch (argon2_hash(k->iterations, k->memory_kib, k->cpus, pw, pw_len,
                        k->salt, k->salt_len, out, k->area.key_bytes, NULL,
                        0, k->kdf == NG_LUKS_ARGON2ID ? Argon2_id : Argon2_i,
                        ARGON2_VERSION_13)) {
    case ARGON2_OK:
        return 0;
    case ARGON2_MEMORY_ALLOCATION_ERROR:
        return GNUTLS_E_MEMORY_ERROR;
    default:
        return GNUTLS_E_INTERNAL_ERROR;
    }
#else
    return GNUTLS_E_UNIMPLEMENTED_FEATURE;  /* parse refused it already */
#endif
}

/* Try the password on slot k: 1 when it opens it (master key in
 * s->master_key), 0 when not, a negative GnuTLS error. */
static int
slot_try(struct luks_state *s, struct luks_open *op,
         const struct ng_luks_slot *k)
{
    const struct ng_luks_volume *v = &s->vol;
    size_t kb = v->cipher.key_bytes, km_len = kb * k->stripes;
    unsigned char slot_key[NG_LUKS_KEY_MAX], digest[NG_LUKS_KEY_MAX];
    unsigned char *km = malloc(km_len);
    gnutls_datum_t key_d = { .data = slot_key,
                             .size = k->area.key_bytes };
    gnutls_cipher_hd_t h = NULL;
    int r;

    if (km == NULL)
        return GNUTLS_E_MEMORY_ERROR;
    memcpy(km, op->buf + k->km_offset, km_len);
    r = slot_derive(k, op->password, op->password_len, slot_key);
    if (r >= 0)
        r = gnutls_cipher_init(&h, k->area.alg, &key_d, NULL);
    if (r >= 0)
        r = xts_sectors(h, k->area.plain32, LUKS_SECTOR, 0, km, km_len,
                        false);
    if (r >= 0 && af_merge(k->af_hash, km, k->stripes, kb,
                           s->master_key) < 0)
        r = GNUTLS_E_HASH_FAILED;
    if (r >= 0)
        r = pbkdf2(v->mk_hash, s->master_key, kb, v->mk_salt,
                   v->mk_salt_len, v->mk_iter, digest, v->mk_digest_len);
    if (r >= 0)
        r = memcmp(digest, v->mk_digest, v->mk_digest_len) == 0;
    if (h != NULL)
        gnutls_cipher_deinit(h);
    explicit_bzero(km, km_len);
    explicit_bzero(slot_key, sizeof slot_key);
    free(km);
    return r;
}

/* Worker thread: the slots, in order, until one opens. */
static void
unlock_work(struct ng_work *w)
{
    struct luks_open *op = (struct luks_open *)
        ((char *)w - offsetof(struct luks_open, work));
    struct luks_state *s = ng_node_state(op->node);
    unsigned i;

    op->slot = -1;
    for (i = 0; i < s->vol.n_slots; i++) {
        int r = slot_try(s, op, &s->vol.slots[i]);

        if (r < 0) {
            op->work_err = r;
            break;
        }
        if (r == 1) {
            op->slot = (int)s->vol.slots[i].number;
            break;
        }
    }
}

/* ---- Open -------------------------------------------------------------- */

static void
open_finish(struct luks_state *s, int ret)
{
    struct luks_open *op = s->op;
    struct ng_node *node = op->node;

    s->op = NULL;
    if (op->password != NULL) {
        explicit_bzero(op->password, op->password_len);
        free(op->password);
    }
    if (op->buf != NULL) {
        explicit_bzero(op->buf, op->buf_len);
        free(op->buf);
    }
    free(op);
    if (ret < 0)
        explicit_bzero(s->master_key, sizeof s->master_key);
    ng_node_opened(node, ret);
}

static void
unlock_done(struct ng_work *w)
{
    struct luks_open *op = (struct luks_open *)
        ((char *)w - offsetof(struct luks_open, work));
    struct luks_state *s = ng_node_state(op->node);
    gnutls_datum_t key = { .data = s->master_key,
                           .size = s->vol.cipher.key_bytes };
    int r;

    if (op->work_err < 0) {
        ng_error_set(op->err, EIO, "LUKS key slot check failed: %s",
                     gnutls_strerror(op->work_err));
        open_finish(s, -1);
        return;
    }
    if (op->slot < 0) {
        /* An inline file child's generated name would tell nothing. */
        if (s->file->auto_named)
            ng_error_set(op->err, EPERM, "invalid password for its LUKS "
                         "image: secret '%s' opens no key slot",
                         s->key_secret);
        else
            ng_error_set(op->err, EPERM, "invalid password for '%s': "
                         "secret '%s' opens no key slot", s->file->name,
                         s->key_secret);
        open_finish(s, -1);
        return;
    }
    r = gnutls_cipher_init(&s->payload_cipher, s->vol.cipher.alg, &key,
                           NULL);
    if (r < 0) {
        s->payload_cipher = NULL;
        ng_error_set(op->err, EIO, "cannot set up %s: %s",
                     gnutls_cipher_get_name(s->vol.cipher.alg),
                     gnutls_strerror(r));
        open_finish(s, -1);
        return;
    }
    open_finish(s, 0);
}

/* Read [0, len) of the child into op->buf, then `next`. */
static void
open_read(struct luks_open *op, size_t len,
          void (*next)(struct ng_req *req, int ret))
{
    struct luks_state *s = ng_node_state(op->node);
    unsigned char *buf = realloc(op->buf, len);

    if (buf == NULL) {
        ng_error_set(op->err, ENOMEM, "out of memory");
        open_finish(s, -1);
        return;
    }
    op->buf = buf;
    op->buf_len = len;
    ng_req_init(&op->req, NG_OP_READ, 0, len, 0);
    ng_req_set_buf(&op->req, buf);
    op->req.done = next;
    op->req.opaque = op;
    ng_node_submit(s->file, &op->req);
}

/* A failed read of the header: say which part. */
static bool
open_read_failed(struct luks_open *op, int ret, const char *what)
{
    struct luks_state *s = ng_node_state(op->node);

    if (ret == 0)
        return false;
    ng_error_set(op->err, -ret, "cannot read the LUKS %s from '%s': %s",
                 what, s->file->name, strerror(-ret));
    open_finish(s, -1);
    return true;
}

static void
key_areas_read(struct ng_req *req, int ret)
{
    struct luks_open *op = req->opaque;

    if (open_read_failed(op, ret, "key material"))
        return;
    op->work.fn = unlock_work;
    op->work.after = unlock_done;
    ng_node_queue_work(op->node, &op->work);
}

/* The header parsed into s->vol: read the key areas next. */
static void
header_parsed(struct luks_open *op)
{
    struct luks_state *s = ng_node_state(op->node);

    open_read(op, (size_t)s->vol.area_end, key_areas_read);
}

static void
luks2_header_read(struct ng_req *req, int ret)
{
    struct luks_open *op = req->opaque;
    struct luks_state *s = ng_node_state(op->node);

    if (open_read_failed(op, ret, "header"))
        return;
    if (ng_luks2_parse(op->buf, op->buf_len, &s->vol, op->err) == -1 ||
        luks_check_payload(s, op->err) == -1) {
        open_finish(s, -1);
        return;
    }
    header_parsed(op);
}

static void
header_read(struct ng_req *req, int ret)
{
    struct luks_open *op = req->opaque;
    struct luks_state *s = ng_node_state(op->node);
    uint64_t file_len = (uint64_t)ng_node_length(s->file), size;
    unsigned version;

    if (open_read_failed(op, ret, "header"))
        return;
    if (memcmp(op->buf, LUKS_MAGIC, LUKS_MAGIC_LEN) != 0) {
        ng_error_set(op->err, EINVAL, "'%s' is not a LUKS image (bad "
                     "magic)", s->file->name);
        open_finish(s, -1);
        return;
    }
    version = (unsigned)(op->buf[6] << 8 | op->buf[7]);
    if (version == 1 && luks1_parse(op->buf, file_len, &s->vol,
                                    op->err) == 0) {
        header_parsed(op);
        return;
    }
    if (version == 2 && op->buf_len == LUKS_FIRST_READ &&
        ng_luks2_hdr_size(op->buf, file_len, &size, op->err) == 0) {
        open_read(op, (size_t)size, luks2_header_read);
        return;
    }
    if (version != 1 && version != 2)
        ng_error_set(op->err, ENOTSUP, "'%s': unknown LUKS version %u",
                     s->file->name, version);
    else if (version == 2 && op->buf_len < LUKS_FIRST_READ)
        ng_error_set(op->err, EINVAL, "'%s' is too small for a LUKS2 "
                     "header", s->file->name);
    open_finish(s, -1);
}

/* The secret's bytes, copied for the worker thread. */
static int
open_take_password(struct luks_state *s, struct luks_open *op,
                   struct ng_error *err)
{
    const struct ng_secret *sec = ng_secret_find(op->node->graph,
                                                 s->key_secret);

    if (sec == NULL)
        return ng_error_set(err, ENOENT, "key-secret '%s': no such secret "
                            "(declare it under secrets: or with object-add)",
                            s->key_secret);
    op->password = malloc(sec->len ? sec->len : 1);
    if (op->password == NULL)
        return ng_error_set(err, ENOMEM, "out of memory");
    memcpy(op->password, sec->data, sec->len);
    op->password_len = sec->len;
    return 0;
}

static void
luks_open(struct ng_node *node, struct ng_error *err)
{
    struct luks_state *s = ng_node_state(node);
    struct luks_open *op = calloc(1, sizeof *op);
    int64_t len = ng_node_length(s->file);

    if (op == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        ng_node_opened(node, -1);
        return;
    }
    op->node = node;
    op->err = err;
    s->op = op;
    if (open_take_password(s, op, err) == -1) {
        open_finish(s, -1);
        return;
    }
    if (len < (int64_t)LUKS1_HDR_SIZE) {
        ng_error_set(err, EINVAL, "'%s' is too small for a LUKS header (%"
                     PRId64 " bytes)", s->file->name, len < 0 ? 0 : len);
        open_finish(s, -1);
        return;
    }
    open_read(op, len < (int64_t)LUKS_FIRST_READ ? LUKS1_HDR_SIZE
                                                  : LUKS_FIRST_READ,
              header_read);
}

static void
luks_close(struct ng_node *node)
{
    struct luks_state *s = ng_node_state(node);

    if (s->payload_cipher != NULL)
        gnutls_cipher_deinit(s->payload_cipher);
    s->payload_cipher = NULL;
    explicit_bzero(s->master_key, sizeof s->master_key);
}

/* ---- Requests ---------------------------------------------------------- */

static void
luks_ctx_done(struct luks_ctx *c, int ret)
{
    struct ng_req *req = c->req;

    free(c->buf);
    ng_req_complete(req, ret);
}

/* En- or decrypt a payload range starting at `offset`, a multiple of
 * the sector size (our request_alignment). */
static int
payload_xts(const struct luks_state *s, uint64_t offset, unsigned char *buf,
            size_t len, bool encrypt)
{
    uint32_t sector = s->vol.sector_size;

    return xts_sectors(s->payload_cipher, s->vol.cipher.plain32, sector,
                       offset / sector + s->vol.iv_tweak, buf, len, encrypt);
}

static void
luks_read_done(struct ng_req *sub, int ret)
{
    struct luks_ctx *c = sub->opaque;
    struct luks_state *s = ng_node_state(c->node);
    struct ng_req *req = c->req;
    unsigned char *data = c->buf != NULL ? c->buf
                                         : ng_iov_flat(&req->iov, req->length);

    if (ret == 0 && payload_xts(s, req->offset, data, req->length,
                                false) < 0)
        ret = -EIO;
    if (ret == 0 && c->buf != NULL)
        ng_iov_from_buf(&req->iov, 0, c->buf, req->length);
    luks_ctx_done(c, ret);
}

static void
luks_write_done(struct ng_req *sub, int ret)
{
    luks_ctx_done(sub->opaque, ret);
}

static void
luks_submit(struct ng_node *node, struct ng_req *req)
{
    struct luks_state *s = ng_node_state(node);
    struct luks_ctx *c;
    bool write = req->op == NG_OP_WRITE;

    if (req->op == NG_OP_FLUSH) {
        ng_node_submit(s->file, req);
        return;
    }
    if ((c = ng_req_ctx(node, req)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    c->node = node;
    c->req = req;
    /* A read into one flat buffer is decrypted in place; anything else
     * (writes: the caller's plaintext must stay) goes through a bounce
     * buffer. */
    c->buf = NULL;
    if ((write || ng_iov_flat(&req->iov, req->length) == NULL) &&
        (c->buf = malloc(req->length ? req->length : 1)) == NULL) {
        ng_req_complete(req, -ENOMEM);
        return;
    }
    if (write) {
        ng_iov_to_buf(&req->iov, 0, c->buf, req->length);
        if (payload_xts(s, req->offset, c->buf, req->length, true) < 0) {
            luks_ctx_done(c, -EIO);
            return;
        }
    }
    ng_req_init(&c->sub, req->op, s->vol.payload + req->offset, req->length,
                req->flags & (NG_REQ_FUA | NG_REQ_INHERITED));
    if (c->buf != NULL)
        ng_req_set_buf(&c->sub, c->buf);
    else
        c->sub.iov = req->iov;
    c->sub.done = write ? luks_write_done : luks_read_done;
    c->sub.opaque = c;
    ng_node_submit(s->file, &c->sub);
}

/* The child's caps that hold for encrypted data; our size; the sector
 * size, the unit of encryption, as our alignment. */
static int
luks_refresh(struct ng_node *node, struct ng_node_facts *facts,
             struct ng_error *err)
{
    const struct luks_state *s = ng_node_state(node);
    const struct ng_node_facts *child = ng_node_facts(s->file);
    uint32_t max = LUKS_MAX_TRANSFER, sector = s->vol.sector_size;

    (void)err;
    facts->caps = child->caps & (NG_CAP_WRITE | NG_CAP_FLUSH | NG_CAP_FUA |
                                 NG_CAP_MULTI_CONN);
    facts->request_alignment = sector;
    if (child->max_transfer != 0 && child->max_transfer < max)
        max = child->max_transfer / sector * sector;
    facts->max_transfer = max >= sector ? max : sector;
    facts->opt_transfer = child->opt_transfer;
    if (child->size < 0)
        facts->size = child->size;
    else if ((uint64_t)child->size <= s->vol.payload)
        facts->size = 0;
    else
        facts->size = (int64_t)(((uint64_t)child->size - s->vol.payload) /
                                sector * sector);
    return 0;
}

const struct ng_driver ng_driver_luks = {
    .name       = "luks",
    .help       = "LUKS1 and LUKS2 encrypted image format (aes-xts)",
    .is_filter  = false,
    .state_size = sizeof(struct luks_state),
    .req_ctx_size = sizeof(struct luks_ctx),
    .opts       = luks_opts,
    /* The key derivation at open, which may take a second or more. */
    .thread_model = NG_THREADS_PARALLEL,
    .pool_scope = NG_POOL_PER_DRIVER,
    .threads    = 2,
    .open_async = luks_open,
    .close      = luks_close,
    .submit     = luks_submit,
    .refresh    = luks_refresh,
    .ops        = NG_OP_BIT(NG_OP_READ) | NG_OP_BIT(NG_OP_WRITE) |
                  NG_OP_BIT(NG_OP_FLUSH),
};
