# contrib/: nbdgraphctl, example configs, bench scripts.
EXTRA_DIST += \
	contrib/bench/README.md \
	contrib/bench/compare \
	contrib/bench/reload-speed \
	contrib/bench/mirror-speed \
	contrib/check-layers.sh \
	$(NULL)

# nbdgraphctl: the admin CLI.  Only jansson: it talks QMP over a plain
# socket, no libuv, no graph code.
bin_PROGRAMS += nbdgraphctl
nbdgraphctl_SOURCES = contrib/nbdgraphctl.c
nbdgraphctl_LDADD = $(JANSSON_LIBS)
dist_man_MANS += contrib/nbdgraphctl.1

# Its tests run the real daemon through tests/functions.sh.
TESTS += \
	tests/test-ctl.sh \
	tests/test-ctl-implicit.sh \
	tests/test-ctl-limits.sh \
	tests/test-ctl-jobs.sh \
	$(NULL)
EXTRA_DIST += \
	tests/test-ctl.sh \
	tests/test-ctl-implicit.sh \
	tests/test-ctl-limits.sh \
	tests/test-ctl-jobs.sh \
	$(NULL)
