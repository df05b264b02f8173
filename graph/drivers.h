/* graph/drivers.h: the leaf and format drivers graph/ implements.  A
 * graph only uses those in the registry handed to ng_graph_new()
 * (filters/filters.c lists them all). */
#ifndef NG_DRIVERS_H
#define NG_DRIVERS_H

#include "graph/graph.h"

extern const struct ng_driver ng_driver_file;
extern const struct ng_driver ng_driver_memory;
extern const struct ng_driver ng_driver_null_co;
extern const struct ng_driver ng_driver_raw;
extern const struct ng_driver ng_driver_luks;
extern const struct ng_driver ng_driver_nbdkit;

#endif
