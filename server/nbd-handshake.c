/* server/nbd-handshake.c: fixed newstyle negotiation (option haggling).
 *
 * Options arrive whole in the connection's receive buffer (their data is
 * capped at NBD_MAX_OPTION_DATA) and are answered in order; the replies
 * of one read go out in one write.
 *
 * What we answer:
 *   EXPORT_NAME, GO      enter transmission on the export of exactly
 *                        that name ("" only if an export is named "")
 *   INFO                 NBD_INFO_EXPORT, and NAME / DESCRIPTION when
 *                        asked; BLOCK_SIZE always, since our maximum
 *                        (server.max-request) is not the protocol's default
 *   LIST                 one NBD_REP_SERVER per export, with its
 *                        description as the human-readable part
 *   STRUCTURED_REPLY     ACK; after EXTENDED_HEADERS
 *                        NBD_REP_ERR_EXT_HEADER_REQD (no downgrade)
 *   EXTENDED_HEADERS     ACK: transmission uses 32-byte requests with
 *                        64-bit lengths and extended reply chunks only
 *                        (structured replies are implied); an
 *                        EXPORT_NAME after it breaks the spec's MUST NOT
 *                        and drops the client
 *   LIST/SET_META_CONTEXT  "base:allocation" (queries "base:" and
 *                        "base:allocation"), "qemu:allocation-depth"
 *                        when the export offers it and, for each bitmap the
 *                        export offers, "qemu:dirty-bitmap:NAME"
 *                        ("qemu:" lists the qemu: ones,
 *                        "qemu:dirty-bitmap:" the bitmaps); list with no
 *                        query lists them all
 *   ABORT                ACK, then close
 *   STARTTLS             on a listener with TLS: ACK, then the TLS
 *                        handshake; option haggling starts over inside
 *                        TLS (structured replies, extended headers and
 *                        the metadata context selection are
 *                        forgotten).  Without TLS
 *                        NBD_REP_ERR_UNSUP; a second one
 *                        NBD_REP_ERR_INVALID
 *   anything else        NBD_REP_ERR_UNSUP
 * An unknown export name (the empty one included, unless an export is
 * named "") gets NBD_REP_ERR_UNKNOWN; NBD_OPT_EXPORT_NAME has no error
 * reply, so there the client is dropped, as is a client that breaks the
 * framing (bad magic, unknown client flags, oversized option).
 *
 * On a listener that requires TLS, every option before STARTTLS except
 * ABORT gets NBD_REP_ERR_TLS_REQD (EXPORT_NAME: dropped), as the spec's
 * "forced TLS" says.  An export with an allow: list is, for a client
 * it does not allow, an unknown export: not in LIST, NBD_REP_ERR_UNKNOWN
 * for INFO and GO, and the refusal is logged with the client's identity.
 */
#include <config.h>

#include <fnmatch.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"
#include "server/nbd-int.h"
#include "server/nbd-proto.h"

#define META_ALLOCATION "base:allocation"
#define META_DEPTH "qemu:allocation-depth"
#define META_BITMAP_PREFIX "qemu:dirty-bitmap:"

/* ---- Output -------------------------------------------------------------- */

struct hs_write {
    uv_write_t w;
    struct nbd_conn *conn;
    uint8_t *data;                  /* owned */
};

int
nbd_hs_send(struct nbd_conn *c, const void *data, size_t len)
{
    if (c->hs_len + len > c->hs_cap) {
        size_t cap = c->hs_cap > 0 ? c->hs_cap : 256;
        uint8_t *p;

        while (cap < c->hs_len + len)
            cap *= 2;
        p = realloc(c->hs_out, cap);
        if (p == NULL)
            return -1;
        c->hs_out = p;
        c->hs_cap = cap;
    }
    memcpy(c->hs_out + c->hs_len, data, len);
    c->hs_len += len;
    return 0;
}

static void
hs_write_cb(uv_write_t *req, int status)
{
    struct hs_write *w = (struct hs_write *)req;
    struct nbd_conn *c = w->conn;

    free(w->data);
    free(w);
    c->hs_writes--;
    if (nbd_conn_write_failed(c, status))
        return;
    nbd_conn_maybe_close(c);
}

/* Hands the queued bytes to one uv_write, which owns them until done. */
void
nbd_hs_flush(struct nbd_conn *c)
{
    struct hs_write *w;
    uv_buf_t buf;
    int r;

    if (c->hs_len == 0)
        return;
    if (c->dead || c->handle_closing) {
        c->hs_len = 0;
        return;
    }
    if (c->tls != NULL) {           /* encrypted: the session copies */
        buf = uv_buf_init((char *)c->hs_out, (unsigned)c->hs_len);
        c->hs_len = 0;
        if (ng_tls_send(c->tls, &buf, 1) < 0)
            nbd_conn_abort(c);
        return;
    }
    w = malloc(sizeof *w);
    if (w == NULL) {
        ng_log_error("%s: out of memory; dropping client", c->peer);
        nbd_conn_abort(c);
        return;
    }
    w->conn = c;
    w->data = c->hs_out;
    buf = uv_buf_init((char *)c->hs_out, (unsigned)c->hs_len);
    c->hs_out = NULL;
    c->hs_len = c->hs_cap = 0;
    r = uv_write(&w->w, &c->h.stream, &buf, 1, hs_write_cb);
    if (r < 0) {
        free(w->data);
        free(w);
        ng_log_debug("%s: write: %s", c->peer, uv_strerror(r));
        nbd_conn_abort(c);
        return;
    }
    c->hs_writes++;
}

void
nbd_hs_free(struct nbd_conn *c)
{
    free(c->hs_out);
    c->hs_out = NULL;
    c->hs_len = c->hs_cap = 0;
    free(c->meta_export);
    c->meta_export = NULL;
}

void
nbd_hs_greet(struct nbd_conn *c)
{
    uint8_t g[18];

    nbd_put64(g, NBD_MAGIC);
    nbd_put64(g + 8, NBD_OPT_MAGIC);
    nbd_put16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (nbd_hs_send(c, g, sizeof g) < 0) {
        ng_log_error("%s: out of memory; dropping client", c->peer);
        nbd_conn_abort(c);
    }
}

/* One option reply; `data` may be NULL when len is 0.  -1 on ENOMEM. */
static int
hs_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
         size_t len)
{
    uint8_t h[NBD_REP_HDR_SIZE];

    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, type);
    nbd_put32(h + 16, (uint32_t)len);
    if (nbd_hs_send(c, h, sizeof h) < 0 ||
        (len > 0 && nbd_hs_send(c, data, len) < 0))
        return -1;
    return 0;
}

/* An error reply carrying a message for the user. */
static int
hs_reply_error(struct nbd_conn *c, uint32_t opt, uint32_t type,
               const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
hs_reply_error(struct nbd_conn *c, uint32_t opt, uint32_t type,
               const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    ng_log_debug("%s: option %" PRIu32 ": %s", c->peer, opt, msg);
    return hs_reply(c, opt, type, msg, (size_t)n);
}

/* Copy a wire string into a C string; false if it holds a NUL (which the
 * protocol forbids, and which no export name can match). */
static bool
hs_string(char *out, const uint8_t *data, uint32_t len)
{
    memcpy(out, data, len);
    out[len] = '\0';
    return memchr(data, '\0', len) == NULL;
}

/* The export named by an option's name field (`nlen` bytes at `wire`),
 * its name copied to `name` (NBD_MAX_STRING + 1 bytes).  NULL when the
 * name is invalid or unknown: the error reply is queued and *ret holds
 * what the option handler returns. */
static struct ng_nbd_export *
hs_option_export(struct nbd_conn *c, uint32_t opt, const uint8_t *wire,
                 uint32_t nlen, char *name, int *ret)
{
    struct ng_nbd_export *exp;

    if (nlen > NBD_MAX_STRING || !hs_string(name, wire, nlen)) {
        *ret = hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "invalid export name");
        return NULL;
    }
    exp = nbd_export_find(c->srv, name);
    if (exp != NULL && !nbd_hs_export_allowed(c, exp, false))
        exp = NULL;                 /* as if it did not exist */
    if (exp == NULL && name[0] == '\0')
        *ret = hs_reply_error(c, opt, NBD_REP_ERR_UNKNOWN,
                              "no export name given and no export is "
                              "named ''");
    else if (exp == NULL)
        *ret = hs_reply_error(c, opt, NBD_REP_ERR_UNKNOWN,
                              "export '%s' not found", name);
    return exp;
}

/* ---- Who may see what ---------------------------------------------------- */

/* The client's TLS identity, "tls" for one without, or "no TLS". */
static const char *
hs_identity_text(const struct nbd_conn *c)
{
    const char *id = c->tls != NULL ? ng_tls_identity(c->tls) : NULL;

    return id != NULL ? id : c->tls != NULL ? "TLS, no identity" : "no TLS";
}

bool
nbd_hs_export_allowed(struct nbd_conn *c, const struct ng_nbd_export *exp,
                      bool quiet)
{
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    const struct sockaddr *sa = NULL;
    bool unix_socket = c->h.handle.type == UV_NAMED_PIPE;

    if (!exp->restricted)
        return true;
    if (!unix_socket &&
        uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &sslen) == 0)
        sa = (const struct sockaddr *)&ss;
    if (ng_allow_match(exp->allow, exp->n_allow,
                       c->tls != NULL ? ng_tls_identity(c->tls) : NULL, sa,
                       unix_socket))
        return true;
    if (!quiet)
        ng_log_warn("%s: export '%s' refused to client (%s): not in its "
                    "allow list", c->peer, exp->name, hs_identity_text(c));
    return false;
}

/* ---- Options ------------------------------------------------------------- */

/* A metadata context selection is for one export only. */
static void
hs_check_meta_export(struct nbd_conn *c, const struct ng_nbd_export *exp)
{
    if (c->meta_export == NULL || strcmp(c->meta_export, exp->name) != 0) {
        c->meta_allocation = false;
        c->meta_depth = false;
        c->meta_bitmaps = 0;
    }
    /* The export may have been replaced since (same name, other list). */
    c->meta_bitmaps &= (uint32_t)((UINT64_C(1) << exp->n_bitmaps) - 1);
    c->meta_depth = c->meta_depth && exp->allocation_depth;
}

static int
hs_opt_export_name(struct nbd_conn *c, const uint8_t *data, uint32_t len)
{
    char name[NBD_MAX_STRING + 1];
    struct ng_nbd_export *exp = NULL;
    uint8_t out[10 + NBD_EXPORT_NAME_ZEROES];
    uint16_t tflags;
    uint64_t size;

    if (c->extended) {
        ng_log_info("%s: NBD_OPT_EXPORT_NAME after extended headers were "
                    "negotiated; dropping client", c->peer);
        nbd_conn_abort(c);
        return -1;
    }
    /* This option cannot fail politely: a hard disconnect is the answer. */
    if (len <= NBD_MAX_STRING && hs_string(name, data, len))
        exp = nbd_export_find(c->srv, name);
    if (exp != NULL && !nbd_hs_export_allowed(c, exp, false))
        exp = NULL;
    if (exp == NULL) {
        ng_log_info("%s: NBD_OPT_EXPORT_NAME for an unknown export%s; "
                    "dropping client", c->peer,
                    len == 0 ? " (none named)" : "");
        nbd_conn_abort(c);
        return -1;
    }
    if (nbd_export_full(exp)) {
        ng_log_info("%s: export '%s' is at its max-connections (%u); "
                    "dropping client", c->peer, exp->name, exp->max_conns);
        nbd_conn_abort(c);
        return -1;
    }
    size = nbd_export_size(exp);
    tflags = nbd_export_tflags(exp, c->structured);
    memset(out, 0, sizeof out);
    nbd_put64(out, size);
    nbd_put16(out + 8, tflags);
    if (nbd_hs_send(c, out, c->no_zeroes ? 10 : sizeof out) < 0)
        return -1;
    hs_check_meta_export(c, exp);
    nbd_conn_enter_transmission(c, exp, size, tflags);
    return 0;
}

static int
hs_opt_list(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
    const struct ng_nbd_export *exp;

    if (len != 0)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "NBD_OPT_LIST takes no data");
    for (exp = c->srv->exports; exp != NULL; exp = exp->next) {
        size_t nlen = strlen(exp->name);
        size_t dlen = exp->description ? strlen(exp->description) : 0;
        uint8_t buf[4 + 2 * NBD_MAX_STRING];

        if (!nbd_hs_export_allowed(c, exp, true))
            continue;
        nbd_put32(buf, (uint32_t)nlen);
        memcpy(buf + 4, exp->name, nlen);
        if (dlen > 0)
            memcpy(buf + 4 + nlen, exp->description, dlen);
        if (hs_reply(c, opt, NBD_REP_SERVER, buf, 4 + nlen + dlen) < 0)
            return -1;
    }
    return hs_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static int
hs_info_string(struct nbd_conn *c, uint32_t opt, uint16_t type,
               const char *s)
{
    size_t len = strlen(s);
    uint8_t buf[2 + NBD_MAX_STRING];

    nbd_put16(buf, type);
    memcpy(buf + 2, s, len);
    return hs_reply(c, opt, NBD_REP_INFO, buf, 2 + len);
}

static int
hs_send_infos(struct nbd_conn *c, uint32_t opt,
              const struct ng_nbd_export *exp, uint64_t size,
              uint16_t tflags, bool want_name, bool want_desc)
{
    uint8_t info[14];

    nbd_put16(info, NBD_INFO_EXPORT);
    nbd_put64(info + 2, size);
    nbd_put16(info + 10, tflags);
    if (hs_reply(c, opt, NBD_REP_INFO, info, 12) < 0)
        return -1;
    if (want_name && hs_info_string(c, opt, NBD_INFO_NAME, exp->name) < 0)
        return -1;
    if (want_desc && exp->description != NULL &&
        hs_info_string(c, opt, NBD_INFO_DESCRIPTION, exp->description) < 0)
        return -1;
    nbd_put16(info, NBD_INFO_BLOCK_SIZE);
    nbd_put32(info + 2, NBD_MIN_BLOCK);
    nbd_put32(info + 6, NBD_PREF_BLOCK);
    nbd_put32(info + 10, c->srv->max_request);
    return hs_reply(c, opt, NBD_REP_INFO, info, 14);
}

/* NBD_OPT_INFO and NBD_OPT_GO: name length, name, count, info types. */
static int
hs_opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *data,
               uint32_t len)
{
    char name[NBD_MAX_STRING + 1];
    struct ng_nbd_export *exp;
    bool want_name = false, want_desc = false;
    uint32_t nlen;
    uint16_t ninfo, tflags;
    uint64_t size;
    int r;

    if (len < 6 || (nlen = nbd_get32(data)) > len - 6 ||
        len - 6 - nlen != 2u * (ninfo = nbd_get16(data + 4 + nlen)))
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "malformed NBD_OPT_INFO/GO request");
    exp = hs_option_export(c, opt, data + 4, nlen, name, &r);
    if (exp == NULL)
        return r;
    for (uint16_t i = 0; i < ninfo; i++) {
        uint16_t type = nbd_get16(data + 6 + nlen + 2 * i);

        if (type == NBD_INFO_NAME)
            want_name = true;
        else if (type == NBD_INFO_DESCRIPTION)
            want_desc = true;
    }
    if (opt == NBD_OPT_GO && nbd_export_full(exp)) {
        ng_log_info("%s: export '%s' is at its max-connections (%u); "
                    "refused", c->peer, exp->name, exp->max_conns);
        return hs_reply_error(c, opt, NBD_REP_ERR_POLICY, "export '%s' is "
                              "at its max-connections (%u)", exp->name,
                              exp->max_conns);
    }
    size = nbd_export_size(exp);
    tflags = nbd_export_tflags(exp, c->structured);
    if (hs_send_infos(c, opt, exp, size, tflags, want_name, want_desc) < 0 ||
        hs_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
        return -1;
    if (opt == NBD_OPT_GO) {
        hs_check_meta_export(c, exp);
        nbd_conn_enter_transmission(c, exp, size, tflags);
    }
    return 0;
}

static int
hs_opt_structured_reply(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
    if (len != 0)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "NBD_OPT_STRUCTURED_REPLY takes no data");
    if (c->extended)
        return hs_reply_error(c, opt, NBD_REP_ERR_EXT_HEADER_REQD,
                              "extended headers are already negotiated");
    c->structured = true;
    return hs_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Extended headers imply structured replies: chunks are the only
 * replies there are. */
static int
hs_opt_extended_headers(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
    if (len != 0)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "NBD_OPT_EXTENDED_HEADERS takes no data");
    c->extended = true;
    c->structured = true;
    return hs_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Metadata contexts a request names: base:allocation, and bit i for
 * the export's bitmap i. */
struct meta_sel {
    bool allocation;
    bool depth;
    uint32_t bitmaps;
};

static bool
query_is(const uint8_t *q, uint32_t qlen, const char *s)
{
    return qlen == strlen(s) && memcmp(q, s, qlen) == 0;
}

/* What one query of NBD_OPT_LIST/SET_META_CONTEXT names on `exp`.  The
 * namespace alone ("base:", "qemu:") and "qemu:dirty-bitmap:" are
 * wildcards for listing only, as in qemu-nbd. */
static void
meta_query_match(const uint8_t *q, uint32_t qlen, bool listing,
                 const struct ng_nbd_export *exp, struct meta_sel *sel)
{
    size_t plen = strlen(META_BITMAP_PREFIX);
    uint32_t all = (uint32_t)((UINT64_C(1) << exp->n_bitmaps) - 1);

    if (query_is(q, qlen, META_ALLOCATION) ||
        (listing && query_is(q, qlen, "base:")))
        sel->allocation = true;
    if (exp->allocation_depth &&
        (query_is(q, qlen, META_DEPTH) ||
         (listing && query_is(q, qlen, "qemu:"))))
        sel->depth = true;
    if (listing && (query_is(q, qlen, "qemu:") ||
                    query_is(q, qlen, META_BITMAP_PREFIX)))
        sel->bitmaps |= all;
    if (qlen <= plen || memcmp(q, META_BITMAP_PREFIX, plen) != 0)
        return;
    for (unsigned i = 0; i < exp->n_bitmaps; i++)
        if (query_is(q + plen, qlen - (uint32_t)plen, exp->bitmaps[i]))
            sel->bitmaps |= UINT32_C(1) << i;
}

/* Walk the queries of a meta context request: -1 when the layout is
 * malformed.  With `exp`, fill *sel with what they name on it. */
static int
meta_scan_queries(const uint8_t *data, uint32_t len, uint32_t pos,
                  bool listing, const struct ng_nbd_export *exp,
                  struct meta_sel *sel)
{
    uint32_t nq = nbd_get32(data + pos);

    pos += 4;
    if (nq == 0 && listing && exp != NULL) {    /* list everything */
        sel->allocation = true;
        sel->depth = exp->allocation_depth;
        sel->bitmaps = (uint32_t)((UINT64_C(1) << exp->n_bitmaps) - 1);
    }
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t qlen;

        if (len - pos < 4)
            return -1;
        qlen = nbd_get32(data + pos);
        pos += 4;
        if (qlen > len - pos || qlen > NBD_MAX_STRING)
            return -1;
        if (exp != NULL)
            meta_query_match(data + pos, qlen, listing, exp, sel);
        pos += qlen;
    }
    return pos == len ? 0 : -1;
}

/* One NBD_REP_META_CONTEXT: the ID (0 when listing) and the name. */
static int
hs_reply_context(struct nbd_conn *c, uint32_t opt, uint32_t id,
                 const char *prefix, const char *name)
{
    uint8_t reply[4 + NBD_MAX_STRING];
    size_t plen = strlen(prefix), nlen = strlen(name);

    nbd_put32(reply, opt == NBD_OPT_LIST_META_CONTEXT ? 0 : id);
    memcpy(reply + 4, prefix, plen);
    memcpy(reply + 4 + plen, name, nlen);
    return hs_reply(c, opt, NBD_REP_META_CONTEXT, reply,
                    (uint32_t)(4 + plen + nlen));
}

static int
hs_reply_contexts(struct nbd_conn *c, uint32_t opt,
                  const struct ng_nbd_export *exp, const struct meta_sel *sel)
{
    if (sel->allocation &&
        hs_reply_context(c, opt, NBD_META_ID_ALLOCATION, "",
                         META_ALLOCATION) < 0)
        return -1;
    if (sel->depth &&
        hs_reply_context(c, opt, NBD_META_ID_DEPTH, "", META_DEPTH) < 0)
        return -1;
    for (unsigned i = 0; i < exp->n_bitmaps; i++)
        if ((sel->bitmaps & (UINT32_C(1) << i)) &&
            hs_reply_context(c, opt, NBD_META_ID_BITMAP0 + i,
                             META_BITMAP_PREFIX, exp->bitmaps[i]) < 0)
            return -1;
    return 0;
}

static void
hs_forget_meta(struct nbd_conn *c)
{
    c->meta_allocation = false;
    c->meta_depth = false;
    c->meta_bitmaps = 0;
    free(c->meta_export);
    c->meta_export = NULL;
}

static int
hs_opt_meta_context(struct nbd_conn *c, uint32_t opt, const uint8_t *data,
                    uint32_t len)
{
    bool listing = opt == NBD_OPT_LIST_META_CONTEXT;
    char name[NBD_MAX_STRING + 1];
    struct ng_nbd_export *exp;
    struct meta_sel sel = { false, false, 0 };
    uint32_t nlen;
    int r;

    if (!listing)                   /* replaces the selection, even on
                                     * failure */
        hs_forget_meta(c);
    if (len < 8 || (nlen = nbd_get32(data)) > len - 8 ||
        meta_scan_queries(data, len, 4 + nlen, listing, NULL, &sel) < 0)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "malformed metadata context request");
    if (!c->structured)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "structured replies not negotiated");
    exp = hs_option_export(c, opt, data + 4, nlen, name, &r);
    if (exp == NULL)
        return r;
    meta_scan_queries(data, len, 4 + nlen, listing, exp, &sel);
    if (hs_reply_contexts(c, opt, exp, &sel) < 0)
        return -1;
    if (!listing && (sel.allocation || sel.depth || sel.bitmaps != 0)) {
        c->meta_export = strdup(exp->name);
        if (c->meta_export == NULL)
            return -1;
        c->meta_allocation = sel.allocation;
        c->meta_depth = sel.depth;
        c->meta_bitmaps = sel.bitmaps;
    }
    return hs_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static int
hs_opt_starttls(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
    if (c->tls_mode == NG_TLS_OFF)
        return hs_reply_error(c, opt, NBD_REP_ERR_UNSUP,
                              "TLS is not enabled on this listener");
    if (c->tls != NULL)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "TLS is already in use");
    if (len != 0)
        return hs_reply_error(c, opt, NBD_REP_ERR_INVALID,
                              "NBD_OPT_STARTTLS takes no data");
    if (hs_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
        return -1;
    /* What was agreed in the clear could have been tampered with. */
    c->structured = false;
    c->extended = false;
    hs_forget_meta(c);
    if (nbd_conn_start_tls(c) < 0)
        return -1;
    return 0;
}

/* A listener that requires TLS answers only these before STARTTLS. */
static bool
hs_tls_required(const struct nbd_conn *c, uint32_t opt)
{
    return c->tls_mode == NG_TLS_REQUIRE && c->tls == NULL &&
           opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT;
}

/* Returns 0, or -1 when the connection is going away. */
static int
hs_option(struct nbd_conn *c, uint32_t opt, const uint8_t *data,
          uint32_t len)
{
    if (hs_tls_required(c, opt) && opt == NBD_OPT_EXPORT_NAME) {
        ng_log_info("%s: NBD_OPT_EXPORT_NAME without TLS on a listener "
                    "that requires it; dropping client", c->peer);
        nbd_conn_abort(c);
        return -1;
    }
    if (hs_tls_required(c, opt))
        return hs_reply_error(c, opt, NBD_REP_ERR_TLS_REQD,
                              "TLS is required: use NBD_OPT_STARTTLS");
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        return hs_opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        /* ACK, then close once it is written. */
        if (hs_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
            return -1;
        nbd_conn_close_gracefully(c);
        return -1;
    case NBD_OPT_LIST:
        return hs_opt_list(c, opt, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return hs_opt_info_go(c, opt, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
        return hs_opt_structured_reply(c, opt, len);
    case NBD_OPT_EXTENDED_HEADERS:
        return hs_opt_extended_headers(c, opt, len);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return hs_opt_meta_context(c, opt, data, len);
    case NBD_OPT_STARTTLS:
        return hs_opt_starttls(c, opt, len);
    default:
        return hs_reply_error(c, opt, NBD_REP_ERR_UNSUP,
                              "option %" PRIu32 " not supported", opt);
    }
}

static int
hs_client_flags(struct nbd_conn *c)
{
    uint32_t flags = nbd_get32(c->rbuf + c->rstart);

    c->rstart += 4;
    if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE |
                            NBD_FLAG_C_NO_ZEROES)) {
        ng_log_warn("%s: unknown client flags 0x%" PRIx32 "; dropping client",
                    c->peer, flags);
        nbd_conn_abort(c);
        return -1;
    }
    c->no_zeroes = (flags & NBD_FLAG_C_NO_ZEROES) != 0;
    c->hs_state = NBD_HS_OPTIONS;
    return 1;
}

int
nbd_hs_parse(struct nbd_conn *c)
{
    const uint8_t *p = c->rbuf + c->rstart;
    size_t avail = c->rend - c->rstart;
    uint32_t opt, len;

    if (c->hs_state == NBD_HS_CLIENT_FLAGS)
        return avail < 4 ? 0 : hs_client_flags(c);
    if (avail < NBD_OPT_HDR_SIZE)
        return 0;
    if (nbd_get64(p) != NBD_OPT_MAGIC) {
        ng_log_warn("%s: bad option magic; dropping client", c->peer);
        nbd_conn_abort(c);
        return -1;
    }
    opt = nbd_get32(p + 8);
    len = nbd_get32(p + 12);
    if (len > NBD_MAX_OPTION_DATA) {
        ng_log_warn("%s: option %" PRIu32 " with %" PRIu32 " bytes of data; "
                    "dropping client", c->peer, opt, len);
        nbd_conn_abort(c);
        return -1;
    }
    if (avail < NBD_OPT_HDR_SIZE + (size_t)len)
        return 0;
    c->rstart += NBD_OPT_HDR_SIZE + len;
    if (hs_option(c, opt, p + NBD_OPT_HDR_SIZE, len) < 0) {
        if (!c->closing) {
            ng_log_error("%s: out of memory; dropping client", c->peer);
            nbd_conn_abort(c);
        }
        return -1;
    }
    return 1;
}
