# tests/: unit tests, libnbd integration tests, interop tests.
TEST_EXTENSIONS = .sh
AM_TESTS_ENVIRONMENT = \
	top_srcdir=$(abs_top_srcdir) \
	top_builddir=$(abs_top_builddir) \
	srcdir=$(abs_top_srcdir)/tests \
	NBDGRAPHD=$(abs_top_builddir)/nbdgraphd \
	$(NULL)

# The helpers every shell test that runs the daemon sources.
EXTRA_DIST += \
	tests/functions.sh \
	$(NULL)

# The harness every C integration test links with.
check_LIBRARIES = tests/libngtest.a
tests_libngtest_a_SOURCES = \
	tests/harness.h \
	tests/harness.c \
	tests/qmp-client.h \
	tests/qmp-client.c \
	$(NULL)
tests_libngtest_a_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
TEST_LIBS = tests/libngtest.a $(LIBNBD_LIBS) $(JANSSON_LIBS)

# contrib/check-layers.sh refuses includes that point up the layers.
TESTS += tests/test-layer-includes.sh
EXTRA_DIST += tests/test-layer-includes.sh

# A config of 100k nodes and 20k exports loads, and loads right.
TESTS += tests/test-big-config.sh
EXTRA_DIST += tests/test-big-config.sh
# Which build runs it: under the sanitizers the test loads a smaller
# config (their malloc, not a slow loader, made it take minutes).
if SANITIZERS
AM_TESTS_ENVIRONMENT += NG_SANITIZERS=1
endif

# Starting the daemon: a second start on the same config, detaching
# without --foreground, relative paths.
TESTS += tests/test-start.sh
EXTRA_DIST += tests/test-start.sh

# TLS (x509, PSK), STARTTLS, require mode, allow: lists, control-group.
TESTS += tests/test-tls.sh
EXTRA_DIST += tests/test-tls.sh

# As a systemd service: socket activation, sd_notify, --pidfile, --log.
TESTS += tests/test-service.sh
EXTRA_DIST += tests/test-service.sh
# Socket-activated listeners get the config's TLS settings.
TESTS += tests/test-service-tls.sh
EXTRA_DIST += tests/test-service-tls.sh
# --log=journal: the journal's native protocol.
TESTS += tests/test-log-journal.sh
EXTRA_DIST += tests/test-log-journal.sh

include tests/nbd.mk
include tests/control.mk

include tests/interop/local.mk
include tests/fuzz/local.mk

# The luks format driver against qemu-img/qemu-io and cryptsetup.
TESTS += tests/test-luks.sh
EXTRA_DIST += tests/test-luks.sh
# LUKS2 of 512 to 4096-byte sectors against cryptsetup and python's XTS.
TESTS += tests/test-luks-4k.sh
EXTRA_DIST += tests/test-luks-4k.sh

# blkverify's abort mode ends the daemon on a mismatch.
TESTS += tests/test-blkverify-abort.sh
EXTRA_DIST += tests/test-blkverify-abort.sh

# quorum's blkverify mode: QEMU's rules at open, abort on a mismatch.
TESTS += tests/test-quorum-blkverify.sh
EXTRA_DIST += tests/test-quorum-blkverify.sh
# The nbd driver (graph/drv-nbd.c) against nbdkit and a second daemon:
# data, facts, block status, many requests in flight; bad input and a
# remote that goes away; reconnect; a disk moved between two daemons in
# two network namespaces, live (contrib/move-disk).
NBD_DRIVER_TESTS = \
	tests/test-drv-nbd.sh \
	tests/test-drv-nbd-faults.sh \
	tests/test-live-move.sh \
	$(NULL)
TESTS += $(NBD_DRIVER_TESTS)
EXTRA_DIST += \
	$(NBD_DRIVER_TESTS) \
	tests/nbd-remote.sh \
	tests/tls-certs.sh \
	$(NULL)
# The guest of the live move: a libnbd client that writes and checks.
check_PROGRAMS += tests/live-move-client
tests_live_move_client_SOURCES = tests/live-move-client.c
tests_live_move_client_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_live_move_client_LDADD = $(LIBNBD_LIBS)

# Issue 16's end-to-end checks: a quorum of three nbd leaves on nbdkit
# remotes, one failing (blkdebug) and one corrupted; blkverify checking
# qcow2 against raw and the nbdkit leaf against the memory leaf.
ISSUE16_TESTS = \
	tests/test-quorum-remote.sh \
	$(NULL)
TESTS += $(ISSUE16_TESTS)
if HAVE_NBDKIT
TESTS += tests/test-blkverify-drivers.sh
endif
EXTRA_DIST += $(ISSUE16_TESTS) tests/test-blkverify-drivers.sh

# The rbd leaf against a throwaway Ceph cluster (contrib/ceph-dev-cluster).
TESTS += tests/test-drv-rbd.sh
EXTRA_DIST += tests/test-drv-rbd.sh contrib/ceph-dev-cluster

# ---- The nbdkit leaf (graph/drv-nbdkit.c) ----------------------------------
# Debian's plugins (memory, file, data, pattern, null, zero, sparse-random)
# end to end; python and curl plugins; bad input and plugin errors, with
# tiny test plugins built here.
if HAVE_NBDKIT
NBDKIT_TEST_PLUGINS = \
	tests/nbdkit-ngtest-plugin.so \
	tests/nbdkit-ngtestv1-plugin.so \
	tests/nbdkit-ngbadversion-plugin.so \
	tests/nbdkit-ngneedsym-plugin.so \
	$(NULL)
check_PROGRAMS += $(NBDKIT_TEST_PLUGINS)

# graph/nbdkit-api.c's functions, called as a plugin calls them.
check_PROGRAMS += tests/unit/test-nbdkit-api
TESTS += tests/unit/test-nbdkit-api
tests_unit_test_nbdkit_api_SOURCES = \
	tests/unit/test-nbdkit-api.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_nbdkit_api_LDADD = $(CORE_LIBS)
NGTEST_PLUGIN_CF = $(AM_CFLAGS) -fPIC
NGTEST_PLUGIN_LF = $(AM_LDFLAGS) -shared
tests_nbdkit_ngtest_plugin_so_SOURCES = tests/nbdkit-test-plugin.c
tests_nbdkit_ngtest_plugin_so_CFLAGS = $(NGTEST_PLUGIN_CF)
tests_nbdkit_ngtest_plugin_so_LDFLAGS = $(NGTEST_PLUGIN_LF)
tests_nbdkit_ngtestv1_plugin_so_SOURCES = tests/nbdkit-test-plugin.c
tests_nbdkit_ngtestv1_plugin_so_CFLAGS = $(NGTEST_PLUGIN_CF) -DTEST_API_V1
tests_nbdkit_ngtestv1_plugin_so_LDFLAGS = $(NGTEST_PLUGIN_LF)
tests_nbdkit_ngbadversion_plugin_so_SOURCES = tests/nbdkit-test-plugin.c
tests_nbdkit_ngbadversion_plugin_so_CFLAGS = \
	$(NGTEST_PLUGIN_CF) -DTEST_BAD_VERSION
tests_nbdkit_ngbadversion_plugin_so_LDFLAGS = $(NGTEST_PLUGIN_LF)
tests_nbdkit_ngneedsym_plugin_so_SOURCES = tests/nbdkit-test-plugin.c
tests_nbdkit_ngneedsym_plugin_so_CFLAGS = \
	$(NGTEST_PLUGIN_CF) -DTEST_NEEDS_SYMBOL
tests_nbdkit_ngneedsym_plugin_so_LDFLAGS = $(NGTEST_PLUGIN_LF)

# Under LeakSanitizer, plugins stay mapped after their unload: Debian's
# leave memory their globals point to, which would be blamed on the
# daemon once dlclose() unmapped those globals (in any test that loads
# one, the man page's example too); CPython's own leftovers are
# suppressed (tests/nbdkit-lsan.supp).
if SANITIZERS
AM_TESTS_ENVIRONMENT += \
	NBDGRAPH_NBDKIT_NO_DLCLOSE=1 \
	LSAN_OPTIONS=suppressions=$(abs_top_srcdir)/tests/nbdkit-lsan.supp \
	$(NULL)
endif

TESTS += \
	tests/test-nbdkit.sh \
	tests/test-nbdkit-lang.sh \
	tests/test-nbdkit-bad.sh \
	tests/test-nbdkit-threads.sh \
	$(NULL)
endif
EXTRA_DIST += \
	tests/test-nbdkit.sh \
	tests/test-nbdkit-lang.sh \
	tests/test-nbdkit-bad.sh \
	tests/test-nbdkit-threads.sh \
	tests/nbdkit.sh \
	tests/nbdkit-lsan.supp \
	tests/nbdkit-ram.py \
	tests/nbdkit-http-server.py \
	$(NULL)

# The file driver's aio=io_uring (graph/file-uring.c).
TESTS += tests/test-file-uring.sh
EXTRA_DIST += tests/test-file-uring.sh

# The file driver's extent cache keeps block status right.
TESTS += tests/test-file-extents.sh
EXTRA_DIST += tests/test-file-extents.sh

# The file driver's loop shortcuts: RWF_NOWAIT reads of a hot page cache
# and every tmpfs read on the loop thread, workers for cold and O_DIRECT.
TESTS += tests/test-file-inline.sh
EXTRA_DIST += tests/test-file-inline.sh

# Buffered writes to ext4 in aligned pieces of at most 64 KiB, pool and
# ring alike; none under cache.direct.
TESTS += tests/test-file-ext4-pieces.sh
EXTRA_DIST += tests/test-file-ext4-pieces.sh

# aio: io_uring: --check-config agrees with a real start, with or
# without liburing in the build.
TESTS += tests/test-file-aio-build.sh
EXTRA_DIST += tests/test-file-aio-build.sh

# The nbd driver's tls-creds (endpoint: client credentials) against
# nbdkit --tls=require: x509 and PSK, a wrong CA and key refused.
TESTS += tests/test-drv-nbd-tls.sh
EXTRA_DIST += tests/test-drv-nbd-tls.sh

# Block status through quorum and blkverify: what every child agrees on.
TESTS += tests/test-quorum-map.sh
EXTRA_DIST += tests/test-quorum-map.sh

# ---- The nbd driver's data connection (graph/drv-nbd.c, issue 12) --------
# A second, simple-reply connection for data when the remote allows
# multi-conn; one connection otherwise; both made anew on reconnect.
TESTS += tests/test-drv-nbd-dataconn.sh
EXTRA_DIST += tests/test-drv-nbd-dataconn.sh
# Its wire code against a remote that answers badly (a wrong magic or
# cookie, a cut read, error codes, a reply twice or too long, a write
# answered before it was sent): an error or the right data, never a
# hang or wrong data; the node reconnects, the daemon serves on.
TESTS += tests/test-drv-nbd-hostile.sh
EXTRA_DIST += tests/test-drv-nbd-hostile.sh tests/nbd-hostile-server.py
# SIGTERM while a blockdev-add or a reload waits for a remote that never
# answers: the daemon exits at once, not at the open-timeout.
TESTS += tests/test-shutdown-open.sh
EXTRA_DIST += tests/test-shutdown-open.sh
TESTS += tests/test-shutdown-throttled.sh
EXTRA_DIST += tests/test-shutdown-throttled.sh

# ---- NG_REQ_BACKGROUND as the request layer's rule (s6-folds) -------------
# A job's bulk copy never runs on the loop thread, also through a qcow2
# node whose file is on tmpfs; a client's read still does.
TESTS += tests/test-background-workers.sh
EXTRA_DIST += tests/test-background-workers.sh
TESTS += tests/test-background-priority.sh
EXTRA_DIST += tests/test-background-priority.sh

# Closing a huge, mostly empty memory disk walks only what it holds.
TESTS += tests/test-memory-huge-close.sh
EXTRA_DIST += tests/test-memory-huge-close.sh
# A drain (a mirror's pivot) and SIGTERM while a memory node's copies
# are on its workers.
TESTS += tests/test-memory-workers-stop.sh
EXTRA_DIST += tests/test-memory-workers-stop.sh

# ---- A cancelled job's claims (s7-p99) -----------------------------------
# mirror, cancel, wait, mirror again to the same target while copies of
# the cancelled job are still in flight: wait returns once the job is
# gone, and the next mirror is not refused.
TESTS += tests/test-mirror-cancel-reuse.sh
EXTRA_DIST += tests/test-mirror-cancel-reuse.sh
TESTS += tests/test-job-errors.sh
EXTRA_DIST += tests/test-job-errors.sh
TESTS += tests/test-job-cancel-pivot.sh
EXTRA_DIST += tests/test-job-cancel-pivot.sh
# block-stream and an intermediate commit change the chain at finalize,
# their pending clients running.
TESTS += tests/test-stream-finalize.sh
EXTRA_DIST += tests/test-stream-finalize.sh
# A mirror's bulk copy runs two chunks wide while clients are busy, its
# whole width when none is (graph/copy.c).
TESTS += tests/test-mirror-client-yield.sh
EXTRA_DIST += tests/test-mirror-client-yield.sh

# ---- A trim of a huge memory disk (s7-folds) --------------------------------
# Trim and write-zeroes walk a memory disk only up to the last page ever
# written.
TESTS += tests/test-memory-huge-trim.sh
EXTRA_DIST += tests/test-memory-huge-trim.sh

# ---- Shutdown during a leaf's open that blocks (s7-folds) -------------------
# SIGTERM while an nbdkit plugin's .open sleeps, or while an rbd node waits
# for a monitor that is not there: the daemon exits at once, naming the
# node.
if HAVE_NBDKIT
TESTS += tests/test-nbdkit-shutdown-open.sh
endif
TESTS += tests/test-rbd-shutdown-open.sh
EXTRA_DIST += tests/test-nbdkit-shutdown-open.sh tests/test-rbd-shutdown-open.sh
