/* graph/graph-internal.h: shared between the files of graph/ only. */
#ifndef NG_GRAPH_INTERNAL_H
#define NG_GRAPH_INTERNAL_H

#include "graph/graph.h"

/* Edges.  attach returns NULL on ENOMEM. */
struct ng_edge *ng_edge_attach(struct ng_node *parent, struct ng_bb *bb,
                               struct ng_node *child, enum ng_role role);
void ng_edge_detach(struct ng_edge *e);
/* Point an existing edge at another child (splices, pivots). */
void ng_edge_set_child(struct ng_edge *e, struct ng_node *child);

/* Enter a node in the graph's list and name index (-1 on ENOMEM), and
 * take it out again. */
int ng_graph_link_node(struct ng_graph *g, struct ng_node *node);
void ng_graph_unlink_node(struct ng_graph *g, struct ng_node *node);

/* Close the driver, free option fields, detach child edges and unlink the
 * node from the graph.  The node must have no parents. */
void ng_node_destroy(struct ng_node *node);

/* The filter driver `opts` names ("driver"), checking it is a filter and
 * that `opts` leaves out its child option; NULL with *err set. */
const struct ng_driver *ng_filter_driver_check(struct ng_graph *g,
                                               const struct ng_value *opts,
                                               struct ng_error *err);
/* filter_opts plus "<child option>: node".  Caller frees; NULL on
 * ENOMEM. */
struct ng_value *ng_filter_opts_with_child(const struct ng_driver *drv,
                                           const struct ng_value *filter_opts,
                                           const char *node);

/* ng_graph_free(): free every graph object (the nodes are gone). */
void ng_graph_objects_free(struct ng_graph *g);

/* Submit past the drain queue (drain.c resubmits queued requests). */
void ng_bb_dispatch(struct ng_bb *bb, struct ng_req *req);

/* A BB's in-flight count reached 0 while it is quiesced. */
void ng_drain_kick(struct ng_graph *g);
/* The BB goes away: drop it from drained sections. */
void ng_drain_forget_bb(struct ng_graph *g, struct ng_bb *bb);

#endif
