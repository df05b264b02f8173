# contrib/: nbdgraphctl, example configs, bench scripts.
EXTRA_DIST += \
	contrib/bench/README.md \
	contrib/bench/compare \
	contrib/bench/reload-speed \
	contrib/bench/splice-pause \
	contrib/bench/mirror-speed \
	contrib/bench/nbd-leaf \
	contrib/bench/nbd-leaf-cost \
	contrib/bench/filters \
	contrib/bench/nbdkit-leaf \
	contrib/check-layers.sh \
	contrib/move-disk \
	contrib/nbdgraphd.service \
	contrib/nbdgraphd.socket \
	contrib/nbdgraph.yaml \
	$(NULL)

# contrib/bench/compare runs and prints its table (a tiny real run).
TESTS += tests/test-bench-compare.sh
EXTRA_DIST += tests/test-bench-compare.sh

# nbdgraphctl: the admin CLI.  Only jansson: it talks QMP over a plain
# socket, no libuv, no graph code but graph/size.c (sizes parse as in the
# config).
bin_PROGRAMS += nbdgraphctl
nbdgraphctl_SOURCES = \
	contrib/nbdgraphctl.c \
	graph/size.h \
	graph/size.c \
	$(NULL)
nbdgraphctl_LDADD = $(JANSSON_LIBS)
dist_man_MANS += contrib/nbdgraphctl.1

# Its tests run the real daemon through tests/functions.sh.
TESTS += \
	tests/test-ctl.sh \
	tests/test-ctl-implicit.sh \
	tests/test-ctl-limits.sh \
	tests/test-ctl-jobs.sh \
	tests/test-ctl-chain.sh \
	$(NULL)
EXTRA_DIST += \
	tests/test-ctl.sh \
	tests/test-ctl-implicit.sh \
	tests/test-ctl-limits.sh \
	tests/test-ctl-jobs.sh \
	tests/test-ctl-chain.sh \
	$(NULL)

# The daemon's and the config file's man pages, and their tests:
# test-man-coverage checks nbdgraph.yaml.5 names every config key and
# driver option; test-man-pages.sh renders the pages without warnings,
# checks nbdgraphd.8 against --help and runs every example config.
dist_man_MANS += \
	contrib/nbdgraphd.8 \
	contrib/nbdgraph.yaml.5 \
	$(NULL)
check_PROGRAMS += tests/unit/test-man-coverage
TESTS += \
	tests/unit/test-man-coverage \
	tests/test-man-pages.sh \
	$(NULL)
tests_unit_test_man_coverage_SOURCES = \
	tests/unit/test-man-coverage.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_man_coverage_CPPFLAGS = \
	$(AM_CPPFLAGS) \
	-DTOP_SRCDIR='"$(abs_top_srcdir)"' \
	$(NULL)
tests_unit_test_man_coverage_LDADD = $(CORE_LIBS)
EXTRA_DIST += tests/test-man-pages.sh
