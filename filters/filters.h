/* filters/filters.h: the filter drivers, and the registry of every driver
 * compiled in (leaves from graph/, filters from here) that the daemon and
 * tests hand to ng_graph_new().  Adding a filter is one line here and one
 * in filters/filters.c. */
#ifndef NG_FILTERS_H
#define NG_FILTERS_H

#include "graph/graph.h"

extern const struct ng_driver ng_filter_nofilter;
extern const struct ng_driver ng_filter_throttle;
extern const struct ng_driver ng_filter_copy_on_read;
extern const struct ng_driver ng_filter_detect_zeroes;
extern const struct ng_driver ng_filter_blkdebug;
extern const struct ng_driver ng_filter_delay;
extern const struct ng_driver ng_filter_log;
extern const struct ng_driver ng_filter_cbw;
extern const struct ng_driver ng_filter_blkverify;
extern const struct ng_driver ng_filter_quorum;

/* Every driver, NULL-terminated: leaves first, then filters. */
extern const struct ng_driver *const ng_all_drivers[];
/* The filters alone, NULL-terminated (docs and their tests). */
extern const struct ng_driver *const ng_filter_drivers[];

#endif
