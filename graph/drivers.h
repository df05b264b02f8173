/* graph/drivers.h: every driver compiled in.  Adding one is one line here
 * and one in graph/drivers.c or filters/filters.c. */
#ifndef NG_DRIVERS_H
#define NG_DRIVERS_H

#include "graph/graph.h"

/* Leaf and format drivers (graph/). */
extern const struct ng_driver ng_driver_file;
extern const struct ng_driver ng_driver_memory;
extern const struct ng_driver ng_driver_null_co;
extern const struct ng_driver ng_driver_raw;

/* Filters (filters/). */
extern const struct ng_driver ng_filter_nofilter;
extern const struct ng_driver ng_filter_throttle;
extern const struct ng_driver ng_filter_copy_on_read;
extern const struct ng_driver ng_filter_detect_zeroes;
extern const struct ng_driver ng_filter_blkdebug;
extern const struct ng_driver ng_filter_delay;
extern const struct ng_driver ng_filter_log;

#endif
