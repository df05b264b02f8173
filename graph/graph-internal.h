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

/* ---- Depth (graph/depth.c) -------------------------------------------- */

/* A way down the graph, for messages; `drv` is NULL for the BB on top.
 * Longer ones are cut (and are too deep anyway). */
#define NG_CHAIN_MAX (2 * NG_REQ_MAX_FRAMES + 4)
struct ng_chain_link {
    const char *name;
    const struct ng_driver *drv;
};
struct ng_chain {
    struct ng_chain_link links[NG_CHAIN_MAX];
    size_t n;
};

/* Layers a request entering `node` passes on its deepest way down (node
 * included); appends that way to `chain`. */
unsigned ng_depth_below(const struct ng_node *node, struct ng_chain *chain);
/* Layers above the edge's child on its deepest way up: the BB, or, above
 * a node no BB uses, the one to come, down to the edge's parent; appends
 * that way to `chain`, top first. */
unsigned ng_depth_above(const struct ng_edge *e, struct ng_chain *chain);
/* Fail with a message naming `chain` when `layers` do not fit a request. */
int ng_depth_check(const struct ng_chain *chain, unsigned layers,
                   struct ng_error *err);
/* A new node, before anything uses it: room for a BB above it? */
int ng_depth_check_node(const struct ng_node *node, struct ng_error *err);
/* A BB named `bb` on `root`. */
int ng_depth_check_bb(const char *bb, const struct ng_node *root,
                      struct ng_error *err);

/* alloc-depth.c: answer a BLOCK_STATUS with NG_REQ_ALLOC_DEPTH on the
 * tree below `root` (the BB has counted it in flight). */
void ng_alloc_depth_start(struct ng_node *root, struct ng_req *req);

/* A node `name` of driver `drv` spliced in on edge `e` (NULL: above
 * `below`, which nothing uses yet), above `below`. */
/* ng_graph_replace_node() for the parent edges of `from` that `moves`
 * picks. */
int ng_graph_replace_node_if(struct ng_graph *g, struct ng_node *from,
                             struct ng_node *to,
                             bool (*moves)(const struct ng_edge *e,
                                           const void *arg),
                             const void *arg, unsigned flags,
                             struct ng_error *err);

/* `child` becomes a new child of `node` (a backing node put in live):
 * does the deepest way down to `node` still fit through it? */
int ng_depth_check_child(const struct ng_node *node,
                         const struct ng_node *child, struct ng_error *err);
int ng_depth_check_splice(const struct ng_edge *e, const char *name,
                          const struct ng_driver *drv,
                          const struct ng_node *below, struct ng_error *err);

/* Unlink the node from the graph now, close the driver (maybe later),
 * then free option fields and detach child edges; inline children left
 * without parents go the same way.  The node must have no parents. */
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

/* Free what the core keeps per node for requests (ng_req_ctx()'s free
 * list); nothing may be in flight. */
void ng_node_free_req_pools(struct ng_node *node);

/* Hand a request the choke point has checked to the node's driver (or
 * its child, for a filter without submit), counted in flight. */
void ng_node_call_driver(struct ng_node *node, struct ng_req *req);

/* graph/split.c: does req need splitting, aligning or tracking to meet
 * the node's facts?  Then ng_split_submit() takes it instead of the
 * driver. */
bool ng_split_needed(const struct ng_node_facts *f, const struct ng_req *req);
void ng_split_submit(struct ng_node *node, const struct ng_node_facts *f,
                     struct ng_req *req);
void ng_split_free_pool(struct ng_node *node);
/* Worker pools (graph/threads.c): give a node its pool before open, take
 * it away after close; free the per-driver pools with the graph. */
int ng_node_pool_attach(struct ng_node *node, struct ng_error *err);
void ng_node_pool_detach(struct ng_node *node);
void ng_graph_pools_free(struct ng_graph *g);
void ng_pool_free(struct ng_pool *p);
/* ng_graph_free(): remove every node (graph/opts.c), then, once every
 * node and add is gone, free the rest (graph.c). */
void ng_graph_free_nodes(struct ng_graph *g);
void ng_graph_free_finish(struct ng_graph *g);

/* Submit past the drain queue (drain.c resubmits queued requests). */
void ng_bb_dispatch(struct ng_bb *bb, struct ng_req *req);

/* A BB's in-flight count reached 0 while it is quiesced. */
void ng_drain_kick(struct ng_graph *g);
/* A new BB (with a root) joins every open section over a node in its
 * tree; -1 on ENOMEM, then call ng_drain_forget_bb() before freeing it. */
int ng_drain_adopt_bb(struct ng_graph *g, struct ng_bb *bb);
/* The BB goes away: drop it from drained sections. */
void ng_drain_forget_bb(struct ng_graph *g, struct ng_bb *bb);
/* The node goes away: no drain_end for it. */
void ng_drain_forget_node(struct ng_graph *g, struct ng_node *node);

#endif
