# graph/: nodes, edges, BlockBackends, the request path, drain, drivers.
noinst_LIBRARIES += graph/libnggraph.a
graph_libnggraph_a_SOURCES = \
	graph/error.h \
	graph/error.c \
	graph/value.h \
	graph/value.c \
	graph/size.h \
	graph/size.c \
	graph/strmap.h \
	graph/strmap.c \
	graph/graph.h \
	graph/graph-internal.h \
	graph/drivers.h \
	graph/graph.c \
	graph/req.c \
	graph/split.c \
	graph/threads.c \
	graph/opts.c \
	graph/drain.c \
	graph/depth.c \
	graph/alloc-depth.c \
	graph/mutate.c \
	graph/chain.c \
	graph/implicit.c \
	graph/drivers.c \
	graph/objects.c \
	graph/bitmap.h \
	graph/bitmap.c \
	graph/copy.h \
	graph/copy.c \
	graph/job.h \
	graph/job.c \
	graph/mirror.h \
	graph/mirror.c \
	graph/mirror-top.c \
	graph/drv-memory.c \
	graph/drv-null.c \
	graph/drv-file.c \
	graph/file-uring.h \
	graph/file-uring.c \
	graph/drv-raw.c \
	graph/secret.h \
	graph/secret.c \
	graph/tls-client.h \
	graph/tls-client.c \
	graph/luks.h \
	graph/luks2.c \
	graph/drv-luks.c \
	graph/qcow2.h \
	graph/drv-qcow2.c \
	graph/qcow2-meta.c \
	graph/qcow2-cache.c \
	graph/qcow2-alloc.c \
	graph/qcow2-create.c \
	graph/qcow2-backing.c \
	graph/qcow2-corrupt.c \
	graph/drv-nbd.c \
	graph/drv-rbd.c \
	graph/nbdkit-api.h \
	graph/nbdkit-api.c \
	graph/drv-nbdkit.c \
	graph/open-thread.c \
	$(NULL)

# Unit tests of the leaf and format drivers.
check_PROGRAMS += tests/unit/test-drivers
TESTS += tests/unit/test-drivers
tests_unit_test_drivers_SOURCES = \
	tests/unit/test-drivers.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_drivers_LDADD = $(CORE_LIBS)

# The same on tmpfs: the file driver's inline path.
TESTS += tests/unit/test-drivers-tmpfs.sh
EXTRA_DIST += tests/unit/test-drivers-tmpfs.sh

# The graph object registry.
check_PROGRAMS += tests/unit/test-graph-objects
TESTS += tests/unit/test-graph-objects
tests_unit_test_graph_objects_SOURCES = \
	tests/unit/test-graph-objects.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_graph_objects_LDADD = $(CORE_LIBS)

# A job's asynchronous finalize (ops->commit_async).
check_PROGRAMS += tests/unit/test-job-finalize
TESTS += tests/unit/test-job-finalize
tests_unit_test_job_finalize_SOURCES = \
	tests/unit/test-job-finalize.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_job_finalize_LDADD = $(CORE_LIBS)

# Export implicit chains (ng_graph_stack_implicit).
check_PROGRAMS += tests/unit/test-graph-implicit
TESTS += tests/unit/test-graph-implicit
tests_unit_test_graph_implicit_SOURCES = \
	tests/unit/test-graph-implicit.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_graph_implicit_LDADD = $(CORE_LIBS)

# Changing a live node's backing (ng_node_set_backing).
check_PROGRAMS += tests/unit/test-graph-backing
TESTS += tests/unit/test-graph-backing
tests_unit_test_graph_backing_SOURCES = \
	tests/unit/test-graph-backing.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_graph_backing_LDADD = $(CORE_LIBS)

# graph/ links without anything above it: every object forced in.
check_PROGRAMS += tests/unit/test-layer-link-graph
TESTS += tests/unit/test-layer-link-graph
tests_unit_test_layer_link_graph_SOURCES = tests/unit/test-layer-link.c
tests_unit_test_layer_link_graph_LDFLAGS = \
	$(AM_LDFLAGS) \
	-Wl,--whole-archive,graph/libnggraph.a,--no-whole-archive \
	$(NULL)
tests_unit_test_layer_link_graph_LDADD = \
	nac/libngnac.a \
	$(LIBUV_LIBS) \
	$(GNUTLS_LIBS) \
	$(JANSSON_LIBS) \
	$(ARGON2_LIBS) \
	$(ZLIB_LIBS) \
	$(LIBNBD_LIBS) \
	$(LIBRBD_LIBS) \
	$(LIBURING_LIBS) \
	-lpthread \
	$(NULL)
EXTRA_tests_unit_test_layer_link_graph_DEPENDENCIES = graph/libnggraph.a

# The string-keyed hash map behind lookups by name.
check_PROGRAMS += tests/unit/test-strmap
TESTS += tests/unit/test-strmap
tests_unit_test_strmap_SOURCES = tests/unit/test-strmap.c
tests_unit_test_strmap_LDADD = $(CORE_LIBS)

# The order the graph calls drivers in, through the test's own drivers.
check_PROGRAMS += tests/unit/test-layers
TESTS += tests/unit/test-layers
tests_unit_test_layers_SOURCES = \
	tests/unit/test-layers.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_layers_LDADD = $(CORE_LIBS)

# The core's side of the request path: contexts, ops mask, splitting and
# alignment, with test drivers.
check_PROGRAMS += tests/unit/test-req
TESTS += tests/unit/test-req
tests_unit_test_req_SOURCES = \
	tests/unit/test-req.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_req_LDADD = $(CORE_LIBS)
# Asynchronous open and close, worker pools (with its own test drivers).
check_PROGRAMS += tests/unit/test-threads
TESTS += tests/unit/test-threads
tests_unit_test_threads_SOURCES = \
	tests/unit/test-threads.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_threads_LDADD = $(CORE_LIBS)

# Dirty bitmaps.
check_PROGRAMS += tests/unit/test-bitmap
TESTS += tests/unit/test-bitmap
tests_unit_test_bitmap_SOURCES = \
	tests/unit/test-bitmap.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_bitmap_LDADD = $(CORE_LIBS)

# ng_qcow2_create(), checked by qemu-img.
check_PROGRAMS += tests/unit/test-qcow2-create
TESTS += tests/unit/test-qcow2-create
tests_unit_test_qcow2_create_SOURCES = \
	tests/unit/test-qcow2-create.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_qcow2_create_LDADD = $(CORE_LIBS)
