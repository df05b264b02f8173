/* filters/nofilter.c: passes every request through unchanged.  For tests
 * of splicing, and to measure what one filter layer costs. */
#include <config.h>

#include "filters/filters.h"

struct nofilter_state {
    struct ng_node *child;          /* option "file" */
};

static const struct ng_opt_desc nofilter_opts[] = {
    NG_OPT_CHILD("file", struct nofilter_state, child, NG_ROLE_FILTERED, true,
                 "the node below"),
    NG_OPT_END,
};

const struct ng_driver ng_filter_nofilter = {
    .name       = "nofilter",
    .help       = "pass every request through unchanged",
    .is_filter  = true,
    .grow       = ng_node_grow_child,
    .state_size = sizeof(struct nofilter_state),
    .opts       = nofilter_opts,
};
