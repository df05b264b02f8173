/* filters/throttle.h: throttle groups, the limits throttle nodes share.
 *
 * A throttle group: limits (QEMU's ThrottleLimits) shared by every
 * throttle node naming it in "throttle-group", so their combined I/O stays
 * under them.  A group exists while a node uses it or while it is declared
 * (QEMU's "object-add throttle-group"); the first node naming an unknown
 * group with "limits" creates it.  Named groups are graph objects
 * (graph.h), freed with the graph.  Loop thread.
 */
#ifndef NG_THROTTLE_H
#define NG_THROTTLE_H

#include "graph/graph.h"

struct ng_throttle_group;

/* Declare group `name` with `limits` (a map; may be NULL = no limits).  If
 * a node already made the group, the declaration adopts it and sets its
 * limits.  Fails when the limits are invalid or the group is already
 * declared. */
int ng_throttle_group_declare(struct ng_graph *g, const char *name,
                              const struct ng_value *limits,
                              struct ng_error *err);
/* Check a ThrottleLimits map without a graph (the config loader). */
int ng_throttle_limits_check(const struct ng_value *limits,
                             struct ng_error *err);
/* Drop the declaration; the group lives on while nodes use it. */
int ng_throttle_group_undeclare(struct ng_graph *g, const char *name,
                                struct ng_error *err);
/* Change a group's limits live (QEMU: qom-set GROUP limits): requests
 * waiting in the group's nodes stay queued and are released at the new
 * rate. */
int ng_throttle_group_set_limits(struct ng_graph *g, const char *name,
                                 const struct ng_value *limits,
                                 struct ng_error *err);
/* The group, or NULL.  Borrowed: take a reference to keep it. */
struct ng_throttle_group *ng_throttle_group_find(struct ng_graph *g,
                                                 const char *name);
void ng_throttle_group_ref(struct ng_throttle_group *tg);
/* Frees the group with its last reference.  NULL-safe. */
void ng_throttle_group_unref(struct ng_throttle_group *tg);

/* Shutting down: every open throttle node lets what it holds go now and
 * passes whatever comes later unaccounted, as QEMU's exit drains with
 * limits off, so a throttled client or a job's throttled target does not
 * hold the exit for as long as the limits say. */
void ng_throttle_lift_all(struct ng_graph *g);

#endif
