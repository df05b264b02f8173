# tests/nbd.mk: integration tests of the NBD server (server/nbd*.c), each
# against the real nbdgraphd through tests/harness.c.
NBD_TESTS = \
	tests/test-nbd-data \
	tests/test-nbd-handshake \
	tests/test-nbd-errors \
	tests/test-nbd-multiconn \
	tests/test-nbd-garbage \
	tests/test-nbd-export-del \
	tests/test-nbd-timers \
	tests/test-nbd-early-close \
	tests/test-nbd-default-export \
	tests/test-nbd-shutdown \
	tests/test-nbd-split \
	tests/test-nbd-big-request \
	tests/test-nbd-limits \
	tests/test-nbd-flood \
	$(NULL)
check_PROGRAMS += $(NBD_TESTS)
TESTS += $(NBD_TESTS)

tests_test_nbd_data_SOURCES = tests/test-nbd-data.c
tests_test_nbd_data_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_data_LDADD = $(TEST_LIBS)

tests_test_nbd_handshake_SOURCES = tests/test-nbd-handshake.c
tests_test_nbd_handshake_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_handshake_LDADD = $(TEST_LIBS)

tests_test_nbd_errors_SOURCES = tests/test-nbd-errors.c
tests_test_nbd_errors_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_errors_LDADD = $(TEST_LIBS)

tests_test_nbd_multiconn_SOURCES = tests/test-nbd-multiconn.c
tests_test_nbd_multiconn_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_multiconn_LDADD = $(TEST_LIBS) -lpthread

tests_test_nbd_garbage_SOURCES = tests/test-nbd-garbage.c
tests_test_nbd_garbage_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_garbage_LDADD = $(TEST_LIBS)

tests_test_nbd_export_del_SOURCES = tests/test-nbd-export-del.c
tests_test_nbd_export_del_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS) $(JANSSON_CFLAGS)
tests_test_nbd_export_del_LDADD = $(TEST_LIBS)

tests_test_nbd_timers_SOURCES = tests/test-nbd-timers.c
tests_test_nbd_timers_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_timers_LDADD = $(TEST_LIBS)

tests_test_nbd_early_close_SOURCES = tests/test-nbd-early-close.c
tests_test_nbd_early_close_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS) $(JANSSON_CFLAGS)
tests_test_nbd_early_close_LDADD = $(TEST_LIBS)

tests_test_nbd_default_export_SOURCES = tests/test-nbd-default-export.c
tests_test_nbd_default_export_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS) $(JANSSON_CFLAGS)
tests_test_nbd_default_export_LDADD = $(TEST_LIBS)

tests_test_nbd_shutdown_SOURCES = tests/test-nbd-shutdown.c
tests_test_nbd_shutdown_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_shutdown_LDADD = $(TEST_LIBS)

tests_test_nbd_split_SOURCES = tests/test-nbd-split.c
tests_test_nbd_split_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_split_LDADD = $(TEST_LIBS)

tests_test_nbd_big_request_SOURCES = tests/test-nbd-big-request.c
tests_test_nbd_big_request_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_big_request_LDADD = $(TEST_LIBS)

tests_test_nbd_limits_SOURCES = tests/test-nbd-limits.c
tests_test_nbd_limits_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_limits_LDADD = $(TEST_LIBS)

tests_test_nbd_flood_SOURCES = tests/test-nbd-flood.c
tests_test_nbd_flood_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_flood_LDADD = $(TEST_LIBS)

# NBD extended headers (issue 14), spoken byte by byte.
NBD_EXTENDED_TESTS = \
	tests/test-nbd-extended \
	$(NULL)
check_PROGRAMS += $(NBD_EXTENDED_TESTS)
TESTS += $(NBD_EXTENDED_TESTS)
tests_test_nbd_extended_SOURCES = tests/test-nbd-extended.c
tests_test_nbd_extended_LDADD = $(TEST_LIBS)

# Issue 15: requests cut up and coalesced by the client, and the read
# syscalls small WRITEs cost (server/nbd-conn.c's receive path).
NBD_COALESCE_TESTS = \
	tests/test-nbd-coalesce \
	$(NULL)
check_PROGRAMS += $(NBD_COALESCE_TESTS)
TESTS += $(NBD_COALESCE_TESTS)
tests_test_nbd_coalesce_SOURCES = tests/test-nbd-coalesce.c
tests_test_nbd_coalesce_CFLAGS = $(AM_CFLAGS) $(LIBNBD_CFLAGS)
tests_test_nbd_coalesce_LDADD = $(TEST_LIBS)
