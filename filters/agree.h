/* filters/agree.h: block status for a filter whose children should hold
 * the same data (quorum, blkverify): ask every child, answer what they
 * all agree on. */
#ifndef NG_FILTERS_AGREE_H
#define NG_FILTERS_AGREE_H

#include "graph/graph.h"

/* Children ng_extents_agree() takes at most. */
#define NG_AGREE_MAX 8

/* Into req (a block status, nr_extents 0): the extents of subs[0..n),
 * n <= NG_AGREE_MAX block status answers for req's range, merged: a
 * range is a hole, or reads as zeroes, only where every child says so
 * (anything else would let a client skip data one replica holds), and
 * the answer reaches as far as every child's does.  Always at least one
 * extent: all data when the children say nothing usable. */
void ng_extents_agree(struct ng_req *req, struct ng_req *const *subs,
                      unsigned n);

#endif
