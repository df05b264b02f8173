/* graph/chain.c: backing chains on a live graph — blockdev-snapshot's
 * step (an overlay cut in between a node and everything above it).  The
 * jobs that shorten a chain again (stream, commit) are in stream.c and
 * mirror.c; all of them change a node's backing with
 * ng_node_set_backing() (mutate.c). */
#include <config.h>

#include <errno.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

int
ng_graph_check_snapshot(struct ng_graph *g, const char *node,
                        const char *overlay, struct ng_error *err)
{
    struct ng_node *n = ng_graph_find(g, node);
    struct ng_node *o = ng_graph_find(g, overlay);

    if (n == NULL)
        return ng_error_set(err, ENOENT, "node '%s' not found", node);
    if (o == NULL)
        return ng_error_set(err, ENOENT, "overlay node '%s' not found",
                            overlay);
    if (n == o)
        return ng_error_set(err, EINVAL, "node '%s' cannot be its own "
                            "overlay", node);
    if (ng_node_child_role(o, NG_ROLE_BACKING) != NULL)
        return ng_error_set(err, EEXIST, "overlay node '%s' already has a "
                            "backing node ('%s')", overlay,
                            ng_node_child_role(o, NG_ROLE_BACKING)->name);
    if (o->parents != NULL)
        return ng_error_set(err, EBUSY, "overlay node '%s' is in use by %s "
                            "'%s'", overlay, ng_edge_user_kind(o->parents),
                            ng_edge_user_name(o->parents));
    if (o->read_only)
        return ng_error_set(err, EROFS, "overlay node '%s' is read-only",
                            overlay);
    if (ng_node_length(o) < ng_node_length(n))
        return ng_error_set(err, EINVAL, "overlay node '%s' (%lld bytes) is "
                            "smaller than node '%s' (%lld bytes)", overlay,
                            (long long)ng_node_length(o), node,
                            (long long)ng_node_length(n));
    return ng_node_check_set_backing(o, NULL, err);
}

/* What a snapshot moves up onto the overlay: BlockBackends (exports,
 * jobs) and filters above the node.  Other nodes' backing or file links
 * to it stay: an overlay that shares it as a base must not start
 * reading the new overlay's writes. */
static bool
snapshot_moves(const struct ng_edge *e, const void *arg)
{
    (void)arg;
    return e->role == NG_ROLE_ROOT || e->role == NG_ROLE_FILTERED;
}

int
ng_graph_snapshot(struct ng_graph *g, const char *node, const char *overlay,
                  unsigned flags, struct ng_error *err)
{
    struct ng_node *n, *o;

    if (ng_graph_check_snapshot(g, node, overlay, err) == -1)
        return -1;
    n = ng_graph_find(g, node);
    o = ng_graph_find(g, overlay);
    /* Parents first, so the depth check of the new backing edge sees the
     * way down from the exports through the overlay. */
    if (ng_graph_replace_node_if(g, n, o, snapshot_moves, NULL, flags,
                                 err) == -1)
        return -1;
    if (ng_node_set_backing(o, n, flags, err) == -1) {
        ng_graph_replace_node_if(g, o, n, snapshot_moves, NULL,
                                 NG_MUTATE_FORCE, NULL);
        return -1;
    }
    return 0;
}
