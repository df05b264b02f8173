/* server/nbd-pool.c: the server's pools — payload buffers in
 * power-of-two classes, request objects and receive buffers.  Steady
 * state I/O allocates nothing: everything goes back to a free list.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "server/nbd-int.h"

/* ---- Buffer pool --------------------------------------------------------- */

static unsigned
pool_class(uint32_t len)
{
    unsigned cls = 0;

    while (cls + 1 < NBD_POOL_CLASSES &&
           ((size_t)1 << (NBD_POOL_MIN_SHIFT + cls)) < len)
        cls++;
    return cls;
}

static size_t
pool_class_size(unsigned cls)
{
    return (size_t)1 << (NBD_POOL_MIN_SHIFT + cls);
}

/* Page-aligned, so drivers that use O_DIRECT can take it as it is. */
static void *
pool_get(struct nbd_pool *pool, unsigned cls)
{
    void *buf = pool->free[cls];

    if (buf != NULL) {
        memcpy(&pool->free[cls], buf, sizeof(void *));
        pool->cached -= pool_class_size(cls);
        return buf;
    }
    return aligned_alloc(4096, pool_class_size(cls));
}

static void
pool_put(struct nbd_pool *pool, void *buf, unsigned cls)
{
    size_t size = pool_class_size(cls);

    if (pool->cached + size > NBD_POOL_BUDGET) {
        free(buf);
        return;
    }
    memcpy(buf, &pool->free[cls], sizeof(void *));
    pool->free[cls] = buf;
    pool->cached += size;
}

static void
pool_fini(struct nbd_pool *pool)
{
    for (unsigned cls = 0; cls < NBD_POOL_CLASSES; cls++) {
        while (pool->free[cls] != NULL) {
            void *buf = pool->free[cls];

            memcpy(&pool->free[cls], buf, sizeof(void *));
            free(buf);
        }
    }
    pool->cached = 0;
}

/* ---- Request objects ----------------------------------------------------- */

struct nbd_req *
nbd_req_get(struct nbd_conn *c, uint32_t len)
{
    struct ng_nbd_server *srv = c->srv;
    struct nbd_req *r = srv->free_reqs;

    if (r != NULL)
        srv->free_reqs = r->next;
    else if ((r = malloc(sizeof *r)) == NULL)
        return NULL;
    r->conn = c;
    r->next = NULL;
    r->buf = NULL;
    r->buf_class = 0;
    r->rb = NULL;
    r->payload = NULL;
    r->payload_len = 0;
    r->hdr_len = 0;
    if (len > 0) {
        r->buf_class = pool_class(len);
        r->buf = pool_get(&srv->pool, r->buf_class);
        if (r->buf == NULL) {
            r->next = srv->free_reqs;
            srv->free_reqs = r;
            return NULL;
        }
        c->nbytes += pool_class_size(r->buf_class);
    }
    c->nreqs++;
    return r;
}

void
nbd_req_put(struct nbd_req *r)
{
    struct nbd_conn *c = r->conn;
    struct ng_nbd_server *srv = c->srv;

    if (r->rb != NULL) {
        c->nbytes -= r->length;
        nbd_rbuf_unref(srv, r->rb);
        r->rb = NULL;
    } else if (r->buf != NULL) {
        c->nbytes -= pool_class_size(r->buf_class);
        pool_put(&srv->pool, r->buf, r->buf_class);
    }
    r->buf = NULL;
    c->nreqs--;
    r->conn = NULL;
    r->next = srv->free_reqs;
    srv->free_reqs = r;
}

/* Free receive buffers kept for reuse, at most this many. */
#define NBD_FREE_RBUFS_MAX 64

struct nbd_rbuf *
nbd_rbuf_get(struct ng_nbd_server *srv)
{
    struct nbd_rbuf *rb = srv->free_rbufs;

    if (rb != NULL) {
        srv->free_rbufs = rb->next_free;
        srv->n_free_rbufs--;
    } else if ((rb = malloc(sizeof *rb + NBD_RBUF_SIZE)) == NULL) {
        return NULL;
    }
    rb->refs = 1;
    rb->next_free = NULL;
    return rb;
}

void
nbd_rbuf_unref(struct ng_nbd_server *srv, struct nbd_rbuf *rb)
{
    if (--rb->refs > 0)
        return;
    if (srv->n_free_rbufs >= NBD_FREE_RBUFS_MAX) {
        free(rb);
        return;
    }
    rb->next_free = srv->free_rbufs;
    srv->free_rbufs = rb;
    srv->n_free_rbufs++;
}

static void
free_req_list(struct nbd_req *r)
{
    while (r != NULL) {
        struct nbd_req *next = r->next;

        free(r);
        r = next;
    }
}

/* ---- Freeing ------------------------------------------------------------- */

void
nbd_pools_free(struct ng_nbd_server *srv)
{
    free_req_list(srv->free_reqs);
    srv->free_reqs = NULL;
    while (srv->free_rbufs != NULL) {
        struct nbd_rbuf *rb = srv->free_rbufs;

        srv->free_rbufs = rb->next_free;
        free(rb);
    }
    srv->n_free_rbufs = 0;
    pool_fini(&srv->pool);
}
