/* graph/drivers.c: the list of leaf and format drivers, and the lookup
 * over every driver (filters are listed in filters/filters.c). */
#include <config.h>

#include <string.h>

#include "graph/graph.h"
#include "graph/drivers.h"

const struct ng_driver *const ng_leaf_drivers[] = {
    &ng_driver_file,
    &ng_driver_memory,
    &ng_driver_null_co,
    &ng_driver_raw,
    NULL,
};

static const struct ng_driver *
find_in(const struct ng_driver *const *list, const char *name)
{
    for (; *list != NULL; list++)
        if (strcmp((*list)->name, name) == 0)
            return *list;
    return NULL;
}

const struct ng_driver *
ng_driver_find(const char *name)
{
    const struct ng_driver *drv = find_in(ng_leaf_drivers, name);

    return drv != NULL ? drv : find_in(ng_filter_drivers, name);
}
