/* filters/filters.c: the list of every filter driver. */
#include <config.h>

#include "graph/drivers.h"

const struct ng_driver *const ng_filter_drivers[] = {
    &ng_filter_nofilter,
    &ng_filter_throttle,
    &ng_filter_copy_on_read,
    &ng_filter_detect_zeroes,
    &ng_filter_blkdebug,
    &ng_filter_delay,
    &ng_filter_log,
    NULL,
};
