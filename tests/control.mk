# tests/control.mk: tests of the control channel and live graph changes.
CONTROL_TESTS = \
	tests/test-splice \
	$(NULL)
check_PROGRAMS += $(CONTROL_TESTS)
TESTS += $(CONTROL_TESTS)

tests_test_splice_SOURCES = tests/test-splice.c
tests_test_splice_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_splice_LDADD = $(TEST_LIBS) -lpthread

CONTROL_TESTS += tests/test-filters-daemon
tests_test_filters_daemon_SOURCES = tests/test-filters-daemon.c
tests_test_filters_daemon_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_filters_daemon_LDADD = $(TEST_LIBS) -lpthread

CONTROL_TESTS += tests/test-verify-quorum
tests_test_verify_quorum_SOURCES = tests/test-verify-quorum.c
tests_test_verify_quorum_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_verify_quorum_LDADD = $(TEST_LIBS)

CONTROL_TESTS += tests/test-nac-daemon
tests_test_nac_daemon_SOURCES = tests/test-nac-daemon.c
tests_test_nac_daemon_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nac_daemon_LDADD = $(TEST_LIBS)

CONTROL_TESTS += tests/test-qmp
tests_test_qmp_SOURCES = tests/test-qmp.c
tests_test_qmp_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_qmp_LDADD = $(TEST_LIBS)

# nbdgraphd --check-config against configs that only fail when opened.
TESTS += tests/test-check-config.sh
EXTRA_DIST += tests/test-check-config.sh tests/configs/bad-open
# ... and against a running daemon's config (files read-only, unlocked).
TESTS += tests/test-check-config-live.sh
EXTRA_DIST += tests/test-check-config-live.sh
# block-export-add's allow: list.
TESTS += tests/test-qmp-export-allow.sh
EXTRA_DIST += tests/test-qmp-export-allow.sh
# block_resize and nbdgraphctl resize grow file, memory, raw and qcow2
# nodes live; new clients see the size, old ones keep theirs.
TESTS += tests/test-block-resize.sh
EXTRA_DIST += tests/test-block-resize.sh

CONTROL_TESTS += tests/test-qmp-pressure
tests_test_qmp_pressure_SOURCES = tests/test-qmp-pressure.c
tests_test_qmp_pressure_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_qmp_pressure_LDADD = $(TEST_LIBS) -lpthread

# What the graph refuses because it could not serve it: chains deeper
# than a request, memory disks too big to map.
CONTROL_TESTS += tests/test-graph-limits
tests_test_graph_limits_SOURCES = tests/test-graph-limits.c
tests_test_graph_limits_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_graph_limits_LDADD = $(TEST_LIBS)

CONTROL_TESTS += tests/test-splice-throttle
tests_test_splice_throttle_SOURCES = tests/test-splice-throttle.c
tests_test_splice_throttle_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_splice_throttle_LDADD = $(TEST_LIBS)

CONTROL_TESTS += tests/test-splice-promises
tests_test_splice_promises_SOURCES = tests/test-splice-promises.c
tests_test_splice_promises_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_splice_promises_LDADD = $(TEST_LIBS)

# Reload: bad files, rollback, NAC, dry run, prune, SIGHUP, dump-config.
TESTS += tests/test-reload.sh
EXTRA_DIST += tests/test-reload.sh

# 200 random edits applied by reload under libnbd clients.
CONTROL_TESTS += tests/test-reload-random
tests_test_reload_random_SOURCES = tests/test-reload-random.c
tests_test_reload_random_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_reload_random_LDADD = $(TEST_LIBS)

# contrib/bench/reload-speed's program: built with the tests, not run.
check_PROGRAMS += tests/bench-reload
tests_bench_reload_SOURCES = tests/bench-reload.c
tests_bench_reload_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_bench_reload_LDADD = $(TEST_LIBS) -lpthread

# --blockdev / --export on the command line, as qemu-storage-daemon's.
TESTS += tests/test-cli.sh
EXTRA_DIST += tests/test-cli.sh

CONTROL_TESTS += tests/test-open-async
tests_test_open_async_SOURCES = tests/test-open-async.c
tests_test_open_async_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_open_async_LDADD = $(TEST_LIBS) -lpthread

# Block jobs: mirror under client writes, pivot, the clients carry on.
CONTROL_TESTS += tests/test-mirror
tests_test_mirror_SOURCES = tests/test-mirror.c
tests_test_mirror_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_mirror_LDADD = $(TEST_LIBS) -lpthread

# Job states and verbs, bad input, cancel at random points, dirty bitmaps.
CONTROL_TESTS += tests/test-jobs
tests_test_jobs_SOURCES = tests/test-jobs.c
tests_test_jobs_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_jobs_LDADD = $(TEST_LIBS)

# Backup with a copy-before-write filter: full, incremental, none.
CONTROL_TESTS += tests/test-backup
tests_test_backup_SOURCES = tests/test-backup.c
tests_test_backup_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_backup_LDADD = $(TEST_LIBS)

# qemu:dirty-bitmap:NAME and qemu:allocation-depth contexts, mirror's
# write-blocking and sync top, fleecing, kill -9 during jobs (issue 10).
TESTS += tests/test-nbd-dirty-bitmap.sh
EXTRA_DIST += tests/test-nbd-dirty-bitmap.sh
TESTS += tests/test-nbd-allocation-depth.sh
EXTRA_DIST += tests/test-nbd-allocation-depth.sh
CONTROL_TESTS += tests/test-nbd-meta-contexts
tests_test_nbd_meta_contexts_SOURCES = tests/test-nbd-meta-contexts.c
tests_test_nbd_meta_contexts_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_meta_contexts_LDADD = $(TEST_LIBS)
TESTS += tests/test-fleecing.sh
EXTRA_DIST += tests/test-fleecing.sh
TESTS += tests/test-kill-during-jobs.sh
EXTRA_DIST += tests/test-kill-during-jobs.sh
TESTS += tests/test-mirror-top.sh
EXTRA_DIST += tests/test-mirror-top.sh

# x-blockdev-change: quorum children added and removed live.
CONTROL_TESTS += tests/test-quorum-change
tests_test_quorum_change_SOURCES = tests/test-quorum-change.c
tests_test_quorum_change_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_quorum_change_LDADD = $(TEST_LIBS)
# Snapshots, stream and commit on backing chains (issue 11, issue 10).
CONTROL_TESTS += tests/test-snapshot
tests_test_snapshot_SOURCES = tests/test-snapshot.c
tests_test_snapshot_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_snapshot_LDADD = $(TEST_LIBS) -lpthread
CONTROL_TESTS += tests/test-chain-jobs
tests_test_chain_jobs_SOURCES = tests/test-chain-jobs.c
tests_test_chain_jobs_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_chain_jobs_LDADD = $(TEST_LIBS) -lpthread
# block-export-add's max-connections (issue 14).
TESTS += tests/test-qmp-export-max-connections.sh
EXTRA_DIST += tests/test-qmp-export-max-connections.sh

# blkverify and quorum spliced in and out live under a client (issue 16).
CONTROL_TESTS += tests/test-splice-multi
tests_test_splice_multi_SOURCES = tests/test-splice-multi.c
tests_test_splice_multi_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_splice_multi_LDADD = $(TEST_LIBS) -lpthread

# The mirror filter node: copy-mode write-blocking, filter-node-name
# (issue 10).
CONTROL_TESTS += tests/test-mirror-write-blocking
tests_test_mirror_write_blocking_SOURCES = tests/test-mirror-write-blocking.c
tests_test_mirror_write_blocking_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_mirror_write_blocking_LDADD = $(TEST_LIBS) -lpthread
TESTS += tests/test-mirror-filter-node.sh
EXTRA_DIST += tests/test-mirror-filter-node.sh
TESTS += tests/test-mirror-bitmap-pivot.sh
EXTRA_DIST += tests/test-mirror-bitmap-pivot.sh

# Reload of nodes that open asynchronously (nbd, nbdkit, qcow2; issue 13).
TESTS += tests/test-reload-async.sh
EXTRA_DIST += tests/test-reload-async.sh
# Dirty bitmaps declared in the config, added and removed by reload.
TESTS += tests/test-reload-bitmaps.sh
EXTRA_DIST += tests/test-reload-bitmaps.sh
# contrib/bench/reload-profile's program: built with the tests, not run.
check_PROGRAMS += tests/bench-plan
tests_bench_plan_SOURCES = tests/bench-plan.c
tests_bench_plan_LDADD = $(CORE_LIBS)

# s5-mirror: a sparse source mirrored through the copy engine's zero spans
TESTS += tests/test-mirror-sparse.sh
EXTRA_DIST += tests/test-mirror-sparse.sh
# s5-reload (issue 13): a reload changes an export's max-connections live.
TESTS += tests/test-reload-max-connections.sh
EXTRA_DIST += tests/test-reload-max-connections.sh
# s5-reload (issue 13): bitmaps made over QMP are in the live model.
TESTS += tests/test-reload-live-bitmaps.sh
EXTRA_DIST += tests/test-reload-live-bitmaps.sh
# s6-p99 (issue 10): the log filter names the background flag.
TESTS += tests/test-log-flags.sh
EXTRA_DIST += tests/test-log-flags.sh

# QMP changes while a reload is planned on a worker (issue 13).
TESTS += tests/test-reload-race.sh
EXTRA_DIST += tests/test-reload-race.sh

# A reload meets a running block job: refused on its nodes, applied
# elsewhere (issue 13, s7-reload).
TESTS += tests/test-reload-job.sh
EXTRA_DIST += tests/test-reload-job.sh

# A memory node's big copies on its workers, raced against trims and
# write-zeroes of the same pages, a mirror's bulk copy alongside; run
# under ASan too (issue 15).
CONTROL_TESTS += tests/test-memory-workers
tests_test_memory_workers_SOURCES = tests/test-memory-workers.c
tests_test_memory_workers_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_memory_workers_LDADD = $(TEST_LIBS) -lpthread
# s15 (issue 15): server.poll-max-ns keeps the loop awake after a client's
# bytes; a reload retunes it.
TESTS += tests/test-poll.sh
EXTRA_DIST += tests/test-poll.sh
