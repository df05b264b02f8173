/* filters/nofilter.c: passes every request through unchanged.  For tests
 * of splicing, and to measure what one filter layer costs. */
#include <config.h>

#include "graph/drivers.h"

const struct ng_driver ng_filter_nofilter = {
    .name       = "nofilter",
    .help       = "pass every request through unchanged",
    .is_filter  = true,
    .opts       = (const struct ng_opt_desc[]) {
        NG_OPT_CHILD("file", struct { struct ng_node *child; }, child,
                     "filtered", true, "the node below"),
        NG_OPT_END,
    },
};
