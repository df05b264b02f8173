/* tests/unit/test-graph-implicit.c: ng_graph_stack_implicit() builds an
 * export's implicit chain in the order given, names and tags each layer,
 * leaves nothing behind when a layer fails, and the check creates
 * nothing; ng_graph_unstack_implicit() removes only the owner's layers.
 *
 *   bb -> e1.copy-on-read -> e1.nofilter -> mem (memory, 1M)
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

static size_t
node_count(struct fixture *f)
{
    size_t n = 0;

    for (struct ng_node *node = f->g->nodes; node != NULL; node = node->next)
        n++;
    return n;
}

static void
check_layer(struct ng_node *n, const char *name, const char *owner,
            struct ng_node *child)
{
    CHECK(n != NULL);
    CHECK(strcmp(n->name, name) == 0);
    CHECK(n->implicit);
    CHECK(strcmp(n->implicit_owner, owner) == 0);
    CHECK(ng_node_child(n) == child);
}

static void
test_stack(void)
{
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_value *layers[2] = {
        yaml("{driver: copy-on-read}"), yaml("{driver: nofilter}"),
    };
    const struct ng_value *const *l = (const struct ng_value *const *)layers;
    struct ng_node *mem, *top;
    unsigned char buf[4096];

    setup(&f, "implicit chain: order, names, tags, removal");
    mem = add(&f, "mem", yaml("{driver: memory, size: 1M}"));

    CHECK(ng_graph_check_stack_implicit(f.g, "mem", "e1", l, 2, &err) == 0);
    CHECK(node_count(&f) == 1);

    top = ng_graph_stack_implicit(f.g, "mem", "e1", l, 2, &err);
    check_layer(top, "e1.copy-on-read", "e1",
                ng_graph_find(f.g, "e1.nofilter"));
    check_layer(ng_graph_find(f.g, "e1.nofilter"), "e1.nofilter", "e1", mem);
    CHECK(!mem->implicit);
    /* A second owner on the same node gets its own chain. */
    CHECK(ng_graph_stack_implicit(f.g, "mem", "e2", l + 1, 1, &err) != NULL);
    CHECK(node_count(&f) == 4);

    struct ng_bb *bb = bb_new(&f, "e1", top, true);
    fill(buf, sizeof buf, 0, 7);
    CHECK_RET(io(&f, bb, NG_OP_WRITE, 0, sizeof buf, 0, buf), 0);
    CHECK(mem->stats[NG_OP_WRITE] == 1);

    /* In use by the BB: nothing goes. */
    ng_graph_unstack_implicit(f.g, "e1");
    CHECK(node_count(&f) == 4);
    ng_bb_free(bb);
    ng_graph_unstack_implicit(f.g, "e1");
    CHECK(ng_graph_find(f.g, "e1.copy-on-read") == NULL);
    CHECK(ng_graph_find(f.g, "e1.nofilter") == NULL);
    CHECK(ng_graph_find(f.g, "e2.nofilter") != NULL);
    CHECK(node_count(&f) == 2);

    ng_value_free(layers[0]);
    ng_value_free(layers[1]);
    teardown(&f);
}

/* The top layer's name is taken: the layer below, already made, goes. */
static void
test_stack_fails(void)
{
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_value *layers[2] = {
        yaml("{driver: copy-on-read}"), yaml("{driver: nofilter}"),
    };
    const struct ng_value *const *l = (const struct ng_value *const *)layers;
    struct ng_value *not_filter = yaml("{driver: memory, size: 1M}");

    setup(&f, "implicit chain: all or nothing");
    add(&f, "mem", yaml("{driver: memory, size: 1M}"));
    add(&f, "e1.copy-on-read", yaml("{driver: null-co, size: 1M}"));

    CHECK(ng_graph_check_stack_implicit(f.g, "mem", "e1", l, 2, &err) == -1);
    CHECK(err.code == EEXIST);
    CHECK(strcmp(err.msg, "node 'e1.copy-on-read' already exists") == 0);
    CHECK(ng_graph_stack_implicit(f.g, "mem", "e1", l, 2, &err) == NULL);
    CHECK(strcmp(err.msg, "node 'e1.copy-on-read' already exists") == 0);
    CHECK(ng_graph_find(f.g, "e1.nofilter") == NULL);
    CHECK(node_count(&f) == 2);

    CHECK(ng_graph_stack_implicit(f.g, "nope", "e1", l, 2, &err) == NULL);
    CHECK(strcmp(err.msg, "node 'nope' not found") == 0);
    CHECK(ng_graph_stack_implicit(f.g, "mem", "e1",
                                  (const struct ng_value *const *)&not_filter,
                                  1, &err) == NULL);
    CHECK(strcmp(err.msg, "'memory' is not a filter driver") == 0);
    CHECK(node_count(&f) == 2);

    ng_value_free(layers[0]);
    ng_value_free(layers[1]);
    ng_value_free(not_filter);
    teardown(&f);
}

int
main(void)
{
    alarm(30);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_stack();
    test_stack_fails();
    printf("all implicit chain tests passed\n");
    return 0;
}
