# tests/: unit tests, libnbd integration tests, interop tests.
TEST_EXTENSIONS = .sh
AM_TESTS_ENVIRONMENT = \
	top_srcdir=$(abs_top_srcdir) \
	top_builddir=$(abs_top_builddir) \
	srcdir=$(abs_top_srcdir)/tests \
	NBDGRAPHD=$(abs_top_builddir)/nbdgraphd \
	$(NULL)
