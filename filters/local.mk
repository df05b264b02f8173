# filters/: one file per filter driver; filters.c lists them all.
noinst_LIBRARIES += filters/libngfilters.a
filters_libngfilters_a_SOURCES = \
	filters/filters.h \
	filters/filters.c \
	filters/nofilter.c \
	filters/throttle.h \
	filters/throttle.c \
	filters/copy-on-read.c \
	filters/detect-zeroes.c \
	filters/blkdebug.c \
	filters/delay.c \
	filters/log.c \
	filters/cbw.h \
	filters/cbw.c \
	filters/backup.c \
	filters/stream.h \
	filters/stream.c \
	filters/blkverify.c \
	filters/quorum.c \
	filters/agree.h \
	filters/agree.c \
	$(NULL)

# Unit tests of the filters, through real graphs on a libuv loop: one
# program per filter, so one failure hides no other.
FILTER_UNIT_TESTS = \
	tests/unit/test-filter-throttle \
	tests/unit/test-filter-copy-on-read \
	tests/unit/test-filter-detect-zeroes \
	tests/unit/test-filter-blkdebug \
	tests/unit/test-filter-delay \
	tests/unit/test-filter-log \
	tests/unit/test-filter-docs \
	$(NULL)
check_PROGRAMS += $(FILTER_UNIT_TESTS)
TESTS += $(FILTER_UNIT_TESTS)
FILTER_FIXTURE = tests/unit/graph-fixture.h tests/unit/graph-fixture.c

tests_unit_test_filter_throttle_SOURCES = \
	tests/unit/test-filter-throttle.c $(FILTER_FIXTURE)
tests_unit_test_filter_throttle_LDADD = $(CORE_LIBS)

tests_unit_test_filter_copy_on_read_SOURCES = \
	tests/unit/test-filter-copy-on-read.c $(FILTER_FIXTURE)
tests_unit_test_filter_copy_on_read_LDADD = $(CORE_LIBS)

tests_unit_test_filter_detect_zeroes_SOURCES = \
	tests/unit/test-filter-detect-zeroes.c $(FILTER_FIXTURE)
tests_unit_test_filter_detect_zeroes_LDADD = $(CORE_LIBS)

tests_unit_test_filter_blkdebug_SOURCES = \
	tests/unit/test-filter-blkdebug.c $(FILTER_FIXTURE)
tests_unit_test_filter_blkdebug_LDADD = $(CORE_LIBS)

tests_unit_test_filter_delay_SOURCES = \
	tests/unit/test-filter-delay.c $(FILTER_FIXTURE)
tests_unit_test_filter_delay_LDADD = $(CORE_LIBS)

tests_unit_test_filter_log_SOURCES = \
	tests/unit/test-filter-log.c $(FILTER_FIXTURE)
tests_unit_test_filter_log_LDADD = $(CORE_LIBS)

# docs/filters.md against the option tables.
tests_unit_test_filter_docs_SOURCES = \
	tests/unit/test-filter-docs.c $(FILTER_FIXTURE)
tests_unit_test_filter_docs_CPPFLAGS = \
	$(AM_CPPFLAGS) \
	-DTOP_SRCDIR='"$(abs_top_srcdir)"' \
	$(NULL)
tests_unit_test_filter_docs_LDADD = $(CORE_LIBS)
EXTRA_DIST += docs/filters.md

# filters/ links over graph/ alone: every object of both forced in.
check_PROGRAMS += tests/unit/test-layer-link-filters
TESTS += tests/unit/test-layer-link-filters
tests_unit_test_layer_link_filters_SOURCES = tests/unit/test-layer-link.c
tests_unit_test_layer_link_filters_CPPFLAGS = \
	$(AM_CPPFLAGS) -DLINK_ALL_DRIVERS -DLAYER='"filters"'
tests_unit_test_layer_link_filters_LDFLAGS = \
	$(AM_LDFLAGS) \
	-Wl,--whole-archive,filters/libngfilters.a,graph/libnggraph.a \
	-Wl,--no-whole-archive \
	$(NULL)
tests_unit_test_layer_link_filters_LDADD = \
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
EXTRA_tests_unit_test_layer_link_filters_DEPENDENCIES = \
	filters/libngfilters.a graph/libnggraph.a

# s5-stream: a stream or backup whose job cannot be made takes its filter
# out again.
check_PROGRAMS += tests/unit/test-job-start
TESTS += tests/unit/test-job-start
tests_unit_test_job_start_SOURCES = \
	tests/unit/test-job-start.c $(FILTER_FIXTURE)
tests_unit_test_job_start_LDADD = $(CORE_LIBS)
