/* tests/unit/test-graph-backing.c: ng_node_set_backing() on live memory
 * nodes — attach (reads come from the new backing), cut (they do not),
 * refusals (a loop, a driver without a backing, a chain too deep) that
 * leave the graph as it was, and an inline old backing removed with its
 * last parent. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "tests/unit/graph-fixture.h"

#define SIZE (1 * MiB)

static size_t
node_count(struct fixture *f)
{
    size_t n = 0;

    for (struct ng_node *node = f->g->nodes; node != NULL; node = node->next)
        n++;
    return n;
}

static void
set_fails(struct ng_node *n, struct ng_node *backing, int code,
          const char *want)
{
    struct ng_error err = { 0 };
    struct ng_node *old = ng_node_child_role(n, NG_ROLE_BACKING);

    CHECK(ng_node_set_backing(n, backing, 0, &err) == -1);
    if (err.code != code || strstr(err.msg, want) == NULL)
        fail("set_backing(%s): got %d '%s', want %d '%s'", n->name,
             err.code, err.msg, code, want);
    CHECK(ng_node_child_role(n, NG_ROLE_BACKING) == old);
    CHECK(ng_node_facts(n)->has_backing == (old != NULL));
}

static void
test_attach_cut(void)
{
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_node *base, *ov, *nul;
    struct ng_bb *bb_base, *bb_ov;
    static unsigned char buf[64 * KiB];

    setup(&f, "set_backing: attach, refusals, cut");
    base = add(&f, "base", yaml("{driver: memory, size: 1M}"));
    ov = add(&f, "ov", yaml("{driver: memory, size: 1M}"));
    nul = add(&f, "nul", yaml("{driver: null-co, size: 1M}"));
    bb_base = bb_new(&f, "b", base, true);
    bb_ov = bb_new(&f, "o", ov, true);
    fill(buf, sizeof buf, 0, 7);
    CHECK_RET(io(&f, bb_base, NG_OP_WRITE, 0, sizeof buf, 0, buf), 0);

    CHECK_RET(io(&f, bb_ov, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_zero(buf, sizeof buf, 0);
    CHECK(ng_node_set_backing(ov, base, 0, &err) == 0);
    CHECK(ng_node_facts(ov)->has_backing);
    CHECK(ng_node_child_role(ov, NG_ROLE_BACKING) == base);
    CHECK_RET(io(&f, bb_ov, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_filled(buf, sizeof buf, 0, 7);

    set_fails(base, ov, ELOOP, "node 'ov' as the backing of node 'base' "
              "would make a loop");
    set_fails(ov, ov, ELOOP, "would make a loop");
    set_fails(nul, base, ENOTSUP, "node 'nul' (driver 'null-co') cannot "
              "take a backing node");

    CHECK(ng_node_set_backing(ov, NULL, 0, &err) == 0);
    CHECK(!ng_node_facts(ov)->has_backing);
    CHECK(base->parents->bb == bb_base && base->parents->next_parent == NULL);
    CHECK_RET(io(&f, bb_ov, NG_OP_READ, 0, sizeof buf, 0, buf), 0);
    check_zero(buf, sizeof buf, 0);
    ng_bb_free(bb_base);
    ng_bb_free(bb_ov);
    teardown(&f);
}

/* A BB and 15 memory layers fill a request's 16 frames: one more backing
 * below the bottom is refused, naming the chain. */
static void
test_depth(void)
{
    struct fixture f;
    struct ng_node *bottom, *extra;
    struct ng_bb *bb;
    char name[16], text[96];
    int i;

    setup(&f, "set_backing: a chain too deep");
    bottom = add(&f, "c0", yaml("{driver: memory, size: 1M}"));
    for (i = 1; i < 15; i++) {
        snprintf(name, sizeof name, "c%d", i);
        snprintf(text, sizeof text, "{driver: memory, size: 1M, backing: "
                 "c%d}", i - 1);
        add(&f, name, yaml(text));
    }
    bb = bb_new(&f, "top", ng_graph_find(f.g, "c14"), true);
    extra = add(&f, "extra", yaml("{driver: memory, size: 1M}"));
    set_fails(bottom, extra, ELOOP, "layers deep");
    ng_bb_free(bb);
    teardown(&f);
}

static void
test_inline_removed(void)
{
    struct fixture f;
    struct ng_error err = { 0 };
    struct ng_node *base, *ov;
    size_t before;

    setup(&f, "set_backing: an inline old backing goes with it");
    base = add(&f, "base", yaml("{driver: memory, size: 1M}"));
    ov = add(&f, "ov", yaml("{driver: memory, size: 1M, backing: "
                            "{driver: memory, size: 1M}}"));
    before = node_count(&f);
    CHECK(ng_node_set_backing(ov, base, 0, &err) == 0);
    CHECK(node_count(&f) == before - 1);
    CHECK(ng_node_child_role(ov, NG_ROLE_BACKING) == base);
    teardown(&f);
}

int
main(void)
{
    test_attach_cut();
    test_depth();
    test_inline_removed();
    return 0;
}
