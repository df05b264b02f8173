/* graph/objects.c: the registry of graph objects (see graph.h).  A short
 * list: a daemon holds a handful of throttle groups, bitmaps and
 * credentials, looked up on the control path only. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/graph-internal.h"

struct ng_object {
    const struct ng_object_type *type;
    char *id;                       /* owned */
    void *obj;                      /* owned, freed with type->free */
    struct ng_object *next;
};

static struct ng_object **
object_slot(struct ng_graph *g, const struct ng_object_type *type,
            const char *id)
{
    struct ng_object **p;

    for (p = &g->objects; *p != NULL; p = &(*p)->next)
        if ((*p)->type == type && strcmp((*p)->id, id) == 0)
            return p;
    return p;
}

int
ng_graph_object_add(struct ng_graph *g, const struct ng_object_type *type,
                    const char *id, void *obj, struct ng_error *err)
{
    struct ng_object *o;

    if (*object_slot(g, type, id) != NULL)
        return ng_error_set(err, EEXIST, "%s '%s' already exists",
                            type->name, id);
    o = calloc(1, sizeof *o);
    if (o == NULL || (o->id = strdup(id)) == NULL) {
        free(o);
        return ng_error_set(err, ENOMEM, "out of memory");
    }
    o->type = type;
    o->obj = obj;
    o->next = g->objects;
    g->objects = o;
    return 0;
}

void *
ng_graph_object_find(struct ng_graph *g, const struct ng_object_type *type,
                     const char *id)
{
    struct ng_object *o = *object_slot(g, type, id);

    return o != NULL ? o->obj : NULL;
}

/* Unlink first: the destructor may look the registry up again. */
static void
object_unlink_free(struct ng_object **p)
{
    struct ng_object *o = *p;

    *p = o->next;
    o->type->free(o->obj);
    free(o->id);
    free(o);
}

int
ng_graph_object_del(struct ng_graph *g, const struct ng_object_type *type,
                    const char *id, struct ng_error *err)
{
    struct ng_object **p = object_slot(g, type, id);

    if (*p == NULL)
        return ng_error_set(err, ENOENT, "%s '%s' not found", type->name,
                            id);
    object_unlink_free(p);
    return 0;
}

void *
ng_graph_object_take(struct ng_graph *g, const struct ng_object_type *type,
                     const char *id)
{
    struct ng_object **p = object_slot(g, type, id);
    struct ng_object *o = *p;
    void *obj;

    if (o == NULL)
        return NULL;
    *p = o->next;
    obj = o->obj;
    free(o->id);
    free(o);
    return obj;
}

void
ng_graph_object_foreach(struct ng_graph *g, const struct ng_object_type *type,
                        ng_object_fn *fn, void *opaque)
{
    struct ng_object *o;

    for (o = g->objects; o != NULL; o = o->next)
        if (type == NULL || o->type == type)
            fn(opaque, o->type, o->id, o->obj);
}

void
ng_graph_objects_free(struct ng_graph *g)
{
    while (g->objects != NULL)
        object_unlink_free(&g->objects);
}
