/* filters/agree.c: block status the children agree on (see agree.h). */
#include <config.h>

#include <stdint.h>

#include "filters/agree.h"

/* Where one child's answer is read: extent `i`, `used` bytes into it. */
struct agree_pos {
    const struct ng_extent *e;
    uint32_t n, i;
    uint64_t used;
};

/* The rest of the current extent (0 when the answer is used up). */
static uint64_t
agree_left(struct agree_pos *p)
{
    while (p->i < p->n && p->used == p->e[p->i].length) {
        p->i++;
        p->used = 0;
    }
    return p->i < p->n ? p->e[p->i].length - p->used : 0;
}

void
ng_extents_agree(struct ng_req *req, struct ng_req *const *subs, unsigned n)
{
    uint32_t max = (req->flags & NG_REQ_REQ_ONE) ? 1 : req->max_extents;
    struct agree_pos pos[NG_AGREE_MAX];
    uint64_t done = 0;

    for (unsigned c = 0; c < n; c++)
        pos[c] = (struct agree_pos){ subs[c]->extents, subs[c]->nr_extents,
                                     0, 0 };
    req->nr_extents = 0;
    while (done < req->length) {
        uint64_t len = req->length - done;
        uint32_t flags = NG_EXTENT_HOLE | NG_EXTENT_ZERO;

        for (unsigned c = 0; c < n; c++) {
            uint64_t left = agree_left(&pos[c]);

            if (left < len)
                len = left;
            if (left > 0)
                flags &= pos[c].e[pos[c].i].flags;
        }
        if (len == 0 || !ng_req_add_extent(req, max, len, flags))
            break;
        for (unsigned c = 0; c < n; c++)
            pos[c].used += len;
        done += len;
    }
    if (req->nr_extents == 0)
        ng_req_add_extent(req, max, req->length, 0);
}
