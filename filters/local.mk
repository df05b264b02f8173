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
	$(NULL)

# Unit tests of the filters, through real graphs on a libuv loop.
check_PROGRAMS += tests/unit/test-filters
TESTS += tests/unit/test-filters
tests_unit_test_filters_SOURCES = \
	tests/unit/test-filters.c \
	tests/unit/graph-fixture.h \
	tests/unit/graph-fixture.c \
	$(NULL)
tests_unit_test_filters_CPPFLAGS = \
	$(AM_CPPFLAGS) \
	-DTOP_SRCDIR='"$(abs_top_srcdir)"' \
	$(NULL)
tests_unit_test_filters_LDADD = $(CORE_LIBS)
EXTRA_DIST += docs/filters.md
