/* tests/unit/test-graph-objects.c: the graph's object registry (QEMU's
 * object-add): objects of two types under the same id stay apart, add
 * refuses a taken (type, id), del runs the destructor once, and the graph
 * frees what is left.  The destructor counts into the object itself. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

struct counted {
    unsigned *freed;                /* bumped by the destructor */
};

static void
counted_free(void *obj)
{
    struct counted *c = obj;

    (*c->freed)++;
    free(c);
}

static const struct ng_object_type type_a = { "thing a", counted_free };
static const struct ng_object_type type_b = { "thing b", counted_free };

static struct counted *
counted_new(unsigned *freed)
{
    struct counted *c = malloc(sizeof *c);

    CHECK(c != NULL);
    c->freed = freed;
    return c;
}

static void
count_one(void *opaque, const struct ng_object_type *type, const char *id,
          void *obj)
{
    unsigned *n = opaque;

    CHECK(type == &type_a || type == &type_b);
    CHECK(strcmp(id, "x") == 0 || strcmp(id, "y") == 0);
    CHECK(obj != NULL);
    (*n)++;
}

static unsigned
count(struct fixture *f, const struct ng_object_type *type)
{
    unsigned n = 0;

    ng_graph_object_foreach(f->g, type, count_one, &n);
    return n;
}

static void
test_objects(void)
{
    struct fixture f;
    struct ng_error err;
    unsigned freed = 0;
    struct counted *a = counted_new(&freed), *b = counted_new(&freed);
    struct counted *dup = counted_new(&freed), *y = counted_new(&freed);

    setup(&f, "graph objects: add, find, del, foreach, free");
    CHECK(ng_graph_object_add(f.g, &type_a, "x", a, &err) == 0);
    CHECK(ng_graph_object_add(f.g, &type_b, "x", b, &err) == 0);
    CHECK(ng_graph_object_add(f.g, &type_a, "x", dup, &err) == -1);
    CHECK(err.code == EEXIST);
    CHECK(strcmp(err.msg, "thing a 'x' already exists") == 0);
    counted_free(dup);              /* a failed add leaves it to us */
    CHECK(freed == 1);
    CHECK(ng_graph_object_add(f.g, &type_a, "y", y, &err) == 0);

    CHECK(ng_graph_object_find(f.g, &type_a, "x") == a);
    CHECK(ng_graph_object_find(f.g, &type_b, "x") == b);
    CHECK(ng_graph_object_find(f.g, &type_b, "y") == NULL);
    CHECK(count(&f, &type_a) == 2);
    CHECK(count(&f, &type_b) == 1);
    CHECK(count(&f, NULL) == 3);

    CHECK(ng_graph_object_del(f.g, &type_b, "x", &err) == 0);
    CHECK(freed == 2);
    CHECK(ng_graph_object_find(f.g, &type_b, "x") == NULL);
    CHECK(ng_graph_object_find(f.g, &type_a, "x") == a);
    CHECK(ng_graph_object_del(f.g, &type_b, "x", &err) == -1);
    CHECK(err.code == ENOENT);
    CHECK(strcmp(err.msg, "thing b 'x' not found") == 0);

    teardown(&f);                   /* frees a and y */
    CHECK(freed == 4);
}

int
main(void)
{
    alarm(30);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_objects();
    printf("all graph object tests passed\n");
    return 0;
}
