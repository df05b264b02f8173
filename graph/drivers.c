/* graph/drivers.c: driver lookup in a registry (the list itself is in
 * filters/filters.c, above every driver it names). */
#include <config.h>

#include <string.h>

#include "graph/graph.h"

const struct ng_driver *
ng_driver_find(const struct ng_driver *const *drivers, const char *name)
{
    for (; *drivers != NULL; drivers++)
        if (strcmp((*drivers)->name, name) == 0)
            return *drivers;
    return NULL;
}
