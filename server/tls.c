/* server/tls.c: GnuTLS credentials and non-blocking server sessions (see
 * tls.h).  GnuTLS talks to the socket only through our pull and push
 * functions: pull reads the ciphertext buffer the connection filled from
 * uv_read, push tries the socket and queues what it does not take, so no
 * GnuTLS call ever waits. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "server/log.h"
#include "server/tls.h"

/* Ciphertext buffered between uv_read and GnuTLS: a little over one
 * largest TLS record. */
#define TLS_IN_SIZE (20u << 10)

/* PSK suites have to be asked for; NORMAL has the certificate ones. */
#define TLS_PRIORITY_X509   "NORMAL"
#define TLS_PRIORITY_PSK    "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

struct ng_tls_creds {
    enum ng_tls_creds_kind kind;
    bool verify_peer;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk;
    gnutls_priority_t priority;
};

struct ng_tls {
    gnutls_session_t session;
    const struct ng_tls_creds *creds;
    uv_stream_t *stream;
    const char *peer;               /* borrowed, for log messages */
    void (*written)(void *opaque, int status);
    void *opaque;
    bool established;
    bool bye_sent;
    char *identity;                 /* owned, or NULL */
    size_t backlog;                 /* queued ciphertext bytes */
    size_t in_pos, in_len;          /* unread ciphertext in `in` */
    uint8_t in[TLS_IN_SIZE];
};

/* One queued ciphertext write; owns its copy of the bytes. */
struct tls_write {
    uv_write_t w;
    struct ng_tls *tls;
    size_t len;
    char data[];
};

/* ---- Credentials --------------------------------------------------------- */

const struct ng_object_type ng_tls_creds_type = {
    .name = "tls-creds",
    .free = ng_tls_creds_free,
};

void
ng_tls_creds_free(void *p)
{
    struct ng_tls_creds *c = p;

    if (c == NULL)
        return;
    if (c->x509 != NULL)
        gnutls_certificate_free_credentials(c->x509);
    if (c->psk != NULL)
        gnutls_psk_free_server_credentials(c->psk);
    if (c->priority != NULL)
        gnutls_priority_deinit(c->priority);
    free(c);
}

static int
tls_path(char *buf, size_t size, const char *dir, const char *file,
         struct ng_error *err)
{
    if ((size_t)snprintf(buf, size, "%s/%s", dir, file) >= size)
        return ng_error_set(err, ENAMETOOLONG, "%s/%s: path too long", dir,
                            file);
    return 0;
}

static int
tls_file_error(struct ng_error *err, const char *path, int r)
{
    return ng_error_set(err, EINVAL, "%s: %s", path, gnutls_strerror(r));
}

static int
creds_load_x509(struct ng_tls_creds *c, const char *dir,
                struct ng_error *err)
{
    char ca[PATH_MAX], crl[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
    int r;

    if (tls_path(ca, sizeof ca, dir, "ca-cert.pem", err) == -1 ||
        tls_path(crl, sizeof crl, dir, "ca-crl.pem", err) == -1 ||
        tls_path(cert, sizeof cert, dir, "server-cert.pem", err) == -1 ||
        tls_path(key, sizeof key, dir, "server-key.pem", err) == -1)
        return -1;
    r = gnutls_certificate_allocate_credentials(&c->x509);
    if (r < 0)
        return ng_error_set(err, ENOMEM, "%s", gnutls_strerror(r));
    /* The CA is what client certificates are checked against: needed
     * only with verify-peer, but read whenever it is there. */
    if (c->verify_peer || access(ca, F_OK) == 0) {
        r = gnutls_certificate_set_x509_trust_file(c->x509, ca,
                                                   GNUTLS_X509_FMT_PEM);
        if (r < 0)
            return tls_file_error(err, ca, r);
        if (r == 0)
            return ng_error_set(err, EINVAL, "%s: no certificate in it", ca);
    }
    if (access(crl, F_OK) == 0) {
        r = gnutls_certificate_set_x509_crl_file(c->x509, crl,
                                                 GNUTLS_X509_FMT_PEM);
        if (r < 0)
            return tls_file_error(err, crl, r);
    }
    r = gnutls_certificate_set_x509_key_file(c->x509, cert, key,
                                             GNUTLS_X509_FMT_PEM);
    if (r < 0)
        return ng_error_set(err, EINVAL, "%s, %s: %s", cert, key,
                            gnutls_strerror(r));
    gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

static int
creds_load_psk(struct ng_tls_creds *c, const char *dir, struct ng_error *err)
{
    char keys[PATH_MAX];
    int r;

    if (tls_path(keys, sizeof keys, dir, "keys.psk", err) == -1)
        return -1;
    /* GnuTLS reads the file at each handshake; fail now, not then. */
    if (access(keys, R_OK) == -1)
        return ng_error_set(err, errno, "%s: %s", keys, strerror(errno));
    r = gnutls_psk_allocate_server_credentials(&c->psk);
    if (r < 0)
        return ng_error_set(err, ENOMEM, "%s", gnutls_strerror(r));
    r = gnutls_psk_set_server_credentials_file(c->psk, keys);
    if (r < 0)
        return tls_file_error(err, keys, r);
    gnutls_psk_set_server_known_dh_params(c->psk, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

struct ng_tls_creds *
ng_tls_creds_new(enum ng_tls_creds_kind kind, const char *dir,
                 bool verify_peer, struct ng_error *err)
{
    struct ng_tls_creds *c = calloc(1, sizeof *c);
    int r;

    if (c == NULL) {
        ng_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    c->kind = kind;
    c->verify_peer = kind == NG_TLS_CREDS_X509 && verify_peer;
    r = kind == NG_TLS_CREDS_X509 ? creds_load_x509(c, dir, err)
                                  : creds_load_psk(c, dir, err);
    if (r == 0) {
        r = gnutls_priority_init(&c->priority,
                                 kind == NG_TLS_CREDS_X509
                                 ? TLS_PRIORITY_X509 : TLS_PRIORITY_PSK,
                                 NULL);
        if (r < 0)
            r = ng_error_set(err, EINVAL, "TLS priority: %s",
                             gnutls_strerror(r));
    }
    if (r < 0) {
        ng_tls_creds_free(c);
        return NULL;
    }
    return c;
}

/* ---- Transport ----------------------------------------------------------- */

static ssize_t
tls_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    struct ng_tls *t = p;
    size_t n = t->in_len - t->in_pos;

    if (n == 0) {
        gnutls_transport_set_errno(t->session, EAGAIN);
        return -1;
    }
    if (n > len)
        n = len;
    memcpy(data, t->in + t->in_pos, n);
    t->in_pos += n;
    return (ssize_t)n;
}

/* Only called for DTLS or handshake timeouts, both of which we leave to
 * the connection's deadline timer; say whether data is there. */
static int
tls_pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
    struct ng_tls *t = p;

    return t->in_len > t->in_pos ? 1 : 0;
}

static void
tls_write_cb(uv_write_t *w, int status)
{
    struct tls_write *tw = (struct tls_write *)w;
    struct ng_tls *t = tw->tls;

    t->backlog -= tw->len;
    free(tw);
    t->written(t->opaque, status);
}

/* Queue what the socket did not take: iov[first..n), the first one
 * `skip` bytes in, as one copy.  -1 on failure. */
static int
tls_queue(struct ng_tls *t, const giovec_t *iov, int n, int first,
          size_t skip)
{
    struct tls_write *tw;
    size_t len = 0, off = 0;
    uv_buf_t buf;
    int i;

    for (i = first; i < n; i++)
        len += iov[i].iov_len;
    len -= skip;
    tw = malloc(sizeof *tw + len);
    if (tw == NULL)
        return -1;
    for (i = first; i < n; i++) {
        size_t k = i == first ? skip : 0;

        memcpy(tw->data + off, (char *)iov[i].iov_base + k,
               iov[i].iov_len - k);
        off += iov[i].iov_len - k;
    }
    tw->tls = t;
    tw->len = len;
    buf = uv_buf_init(tw->data, (unsigned)len);
    if (uv_write(&tw->w, t->stream, &buf, 1, tls_write_cb) < 0) {
        free(tw);
        return -1;
    }
    t->backlog += len;
    return 0;
}

/* Never EAGAIN: the bytes the socket refuses are queued, so GnuTLS never
 * has to be called again with the same record. */
static ssize_t
tls_vec_push(gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
    struct ng_tls *t = p;
    size_t total = 0, sent = 0;
    int i, r = 0;

    for (i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (t->backlog == 0 && n <= 64) {   /* else libuv would queue anyway */
        uv_buf_t bufs[64];

        for (i = 0; i < n; i++)
            bufs[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
        r = uv_try_write(t->stream, bufs, (unsigned)n);
        if (r == UV_EAGAIN)
            r = 0;
        if (r < 0) {
            gnutls_transport_set_errno(t->session, EPIPE);
            return -1;
        }
        sent = (size_t)r;
    }
    if (sent == total)
        return (ssize_t)total;
    for (i = 0; sent >= iov[i].iov_len; i++)
        sent -= iov[i].iov_len;
    if (tls_queue(t, iov, n, i, sent) == -1) {
        gnutls_transport_set_errno(t->session, ENOMEM);
        return -1;
    }
    return (ssize_t)total;
}

static ssize_t
tls_push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
    giovec_t iov = { .iov_base = (void *)data, .iov_len = len };

    return tls_vec_push(p, &iov, 1);
}

/* ---- Sessions ------------------------------------------------------------ */

struct ng_tls *
ng_tls_new(const struct ng_tls_creds *creds, uv_stream_t *stream,
           const char *peer, void (*written)(void *opaque, int status),
           void *opaque)
{
    struct ng_tls *t = calloc(1, sizeof *t);
    gnutls_session_t s;
    int r;

    if (t == NULL)
        return NULL;
    r = gnutls_init(&t->session, GNUTLS_SERVER | GNUTLS_NONBLOCK |
                                 GNUTLS_NO_SIGNAL);
    if (r < 0) {
        ng_log_error("%s: TLS: %s", peer, gnutls_strerror(r));
        free(t);
        return NULL;
    }
    s = t->session;
    t->creds = creds;
    t->stream = stream;
    t->peer = peer;
    t->written = written;
    t->opaque = opaque;
    r = gnutls_priority_set(s, creds->priority);
    if (r == 0)
        r = creds->kind == NG_TLS_CREDS_X509
            ? gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds->x509)
            : gnutls_credentials_set(s, GNUTLS_CRD_PSK, creds->psk);
    if (r < 0) {
        ng_log_error("%s: TLS: %s", peer, gnutls_strerror(r));
        ng_tls_free(t);
        return NULL;
    }
    if (creds->kind == NG_TLS_CREDS_X509)
        gnutls_certificate_server_set_request(s, creds->verify_peer
                                                 ? GNUTLS_CERT_REQUIRE
                                                 : GNUTLS_CERT_IGNORE);
    gnutls_handshake_set_timeout(s, 0);     /* our deadline timer's job */
    gnutls_transport_set_ptr(s, t);
    gnutls_transport_set_pull_function(s, tls_pull);
    gnutls_transport_set_pull_timeout_function(s, tls_pull_timeout);
    gnutls_transport_set_push_function(s, tls_push);
    gnutls_transport_set_vec_push_function(s, tls_vec_push);
    return t;
}

void
ng_tls_free(struct ng_tls *t)
{
    if (t == NULL)
        return;
    gnutls_deinit(t->session);
    free(t->identity);
    free(t);
}

uv_buf_t
ng_tls_in_space(struct ng_tls *t)
{
    if (t->in_pos > 0) {
        memmove(t->in, t->in + t->in_pos, t->in_len - t->in_pos);
        t->in_len -= t->in_pos;
        t->in_pos = 0;
    }
    return uv_buf_init((char *)t->in + t->in_len,
                       (unsigned)(sizeof t->in - t->in_len));
}

void
ng_tls_in_added(struct ng_tls *t, size_t n)
{
    t->in_len += n;
}

int
ng_tls_in_put(struct ng_tls *t, const void *data, size_t n)
{
    uv_buf_t space = ng_tls_in_space(t);

    if (n > space.len)
        return -1;
    memcpy(space.base, data, n);
    t->in_len += n;
    return 0;
}

bool
ng_tls_has_input(struct ng_tls *t)
{
    return t->in_len > t->in_pos ||
           (t->established && gnutls_record_check_pending(t->session) > 0);
}

/* "x509:DN" of the verified client certificate; -1 if it fails. */
static int
tls_x509_identity(struct ng_tls *t)
{
    const gnutls_datum_t *certs;
    unsigned n = 0, status = 0;
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = { NULL, 0 };
    int r;

    r = gnutls_certificate_verify_peers2(t->session, &status);
    if (r < 0 || status != 0) {
        gnutls_datum_t out = { NULL, 0 };

        if (r >= 0)
            gnutls_certificate_verification_status_print(
                status, GNUTLS_CRT_X509, &out, 0);
        ng_log_warn("%s: TLS: client certificate refused: %s", t->peer,
                    r < 0 ? gnutls_strerror(r)
                          : out.data ? (char *)out.data : "not trusted");
        gnutls_free(out.data);
        return -1;
    }
    certs = gnutls_certificate_get_peers(t->session, &n);
    if (certs == NULL || n == 0 || gnutls_x509_crt_init(&crt) < 0)
        return -1;
    r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
    if (r == 0)
        r = gnutls_x509_crt_get_dn3(crt, &dn, 0);
    gnutls_x509_crt_deinit(crt);
    if (r < 0)
        return -1;
    r = asprintf(&t->identity, "x509:%s", (char *)dn.data);
    gnutls_free(dn.data);
    return r < 0 ? -1 : 0;
}

static int
tls_find_identity(struct ng_tls *t)
{
    const char *user;

    if (t->creds->kind == NG_TLS_CREDS_X509)
        return t->creds->verify_peer ? tls_x509_identity(t) : 0;
    user = gnutls_psk_server_get_username(t->session);
    if (user == NULL)
        return -1;
    return asprintf(&t->identity, "psk:%s", user) < 0 ? -1 : 0;
}

/* 1 when established, NG_TLS_AGAIN, or -1 (logged). */
static int
tls_handshake(struct ng_tls *t)
{
    int r = gnutls_handshake(t->session);
    char *desc;

    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
        return NG_TLS_AGAIN;
    if (r < 0) {
        ng_log_warn("%s: TLS handshake failed: %s", t->peer,
                    gnutls_strerror(r));
        return -1;
    }
    if (tls_find_identity(t) < 0)
        return -1;
    t->established = true;
    desc = gnutls_session_get_desc(t->session);
    ng_log_info("%s: TLS established (%s)%s%s", t->peer,
                desc != NULL ? desc : "?",
                t->identity != NULL ? ", client " : "",
                t->identity != NULL ? t->identity : "");
    gnutls_free(desc);
    return 1;
}

ssize_t
ng_tls_recv(struct ng_tls *t, void *buf, size_t len)
{
    ssize_t n;

    if (!t->established) {
        int r = tls_handshake(t);

        if (r != 1)
            return r;
    }
    n = gnutls_record_recv(t->session, buf, len);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        return NG_TLS_AGAIN;
    if (n == GNUTLS_E_PREMATURE_TERMINATION)
        return 0;                   /* EOF without close_notify */
    if (n < 0) {
        ng_log_warn("%s: TLS: %s", t->peer, gnutls_strerror((int)n));
        return -1;
    }
    return n;
}

int
ng_tls_send(struct ng_tls *t, const uv_buf_t *iov, unsigned n)
{
    ssize_t r = 0;
    unsigned i;

    /* Corked, the records of one batch leave in one push. */
    gnutls_record_cork(t->session);
    for (i = 0; i < n && r >= 0; i++) {
        size_t off = 0;

        while (off < iov[i].len) {
            r = gnutls_record_send(t->session, iov[i].base + off,
                                   iov[i].len - off);
            if (r < 0)
                break;
            off += (size_t)r;
        }
    }
    if (r >= 0)
        r = gnutls_record_uncork(t->session, GNUTLS_RECORD_WAIT);
    if (r < 0) {
        ng_log_debug("%s: TLS: %s", t->peer, gnutls_strerror((int)r));
        return -1;
    }
    return 0;
}

size_t
ng_tls_backlog(const struct ng_tls *t)
{
    return t->backlog;
}

void
ng_tls_bye(struct ng_tls *t)
{
    if (t->bye_sent || !t->established)
        return;
    t->bye_sent = true;
    gnutls_bye(t->session, GNUTLS_SHUT_WR);     /* a failure changes
                                                 * nothing: we close */
}

const char *
ng_tls_identity(const struct ng_tls *t)
{
    return t->identity;
}

bool
ng_tls_established(const struct ng_tls *t)
{
    return t->established;
}
