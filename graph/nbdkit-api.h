/* graph/nbdkit-api.h: the side of graph/nbdkit-api.c that the nbdkit
 * leaf (graph/drv-nbdkit.c) uses.  nbdkit-api.c implements the nbdkit_*
 * functions a plugin calls (nbdkit-plugin.h); nbdgraphd exports them
 * (server/local.mk) so a plugin resolves them when it is dlopen()ed.
 *
 * A plugin reports errors through calls that carry no context
 * (nbdkit_error, nbdkit_set_error), as nbdkit's server keeps them per
 * thread.  So does this file: the worker thread that is about to call the
 * plugin points a thread-local slot at a struct ng_nbdkit_call, and the
 * nbdkit_* functions fill it.
 */
#ifndef NG_NBDKIT_API_H
#define NG_NBDKIT_API_H

#include <stdbool.h>
#include <stdint.h>

#include "graph/graph.h"

/* What one plugin call said about its failure. */
struct ng_nbdkit_call {
    char msg[NG_ERROR_MSG_MAX];     /* the last nbdkit_error(), "" if none */
    int err;                        /* nbdkit_set_error(), 0 if none */
};

/* Worker thread: the plugin calls that follow on this thread report to
 * `c` (cleared here), until ng_nbdkit_call_end(). */
void ng_nbdkit_call_begin(struct ng_nbdkit_call *c);
void ng_nbdkit_call_end(void);

/* A plugin's .extents callback fills one of these with nbdkit_add_extent
 * (nbdkit's rules: in order, contiguous, clipped to [start, end), equal
 * neighbours merged).  The ones the request path makes write straight
 * into the request's array and stop quietly when it is full; those of
 * nbdkit_extents_new() grow on the heap. */
struct nbdkit_extents {
    uint64_t start, end;            /* the range asked about */
    uint64_t next;                  /* where the next extent must start */
    struct ng_extent *out;          /* request's array, or NULL */
    uint32_t max;                   /* its capacity */
    uint32_t n;                     /* extents stored in out */
    struct nbdkit_extent_rec *own;  /* nbdkit_extents_new()'s, else NULL */
    size_t own_n, own_cap;
    uint32_t last_type;             /* of the last extent stored */
};

/* Prepare `e` for a request's [start, end) with room for `max` extents
 * in `out` (borrowed).  Allocates nothing. */
void ng_nbdkit_extents_init(struct nbdkit_extents *e, uint64_t start,
                            uint64_t end, struct ng_extent *out,
                            uint32_t max);

/* The directory nbdkit keeps its plugins in (configure's pkg-config
 * answer), or NULL when nbdgraphd was built without nbdkit's headers. */
const char *ng_nbdkit_plugindir(void);

#endif
