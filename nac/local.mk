# nac/: Node Access Control, a pure library (no libuv, no graph types).
noinst_LIBRARIES += nac/libngnac.a
nac_libngnac_a_SOURCES = \
	nac/nac.h \
	nac/nac.c \
	nac/policy.h \
	$(NULL)

EXTRA_DIST += nac/README.md

check_PROGRAMS += tests/unit/test-nac
TESTS += tests/unit/test-nac
tests_unit_test_nac_SOURCES = \
	tests/unit/test-nac.c \
	tests/unit/nac-test.h \
	$(NULL)
tests_unit_test_nac_LDADD = nac/libngnac.a

# Every allocation in nac.c failing in turn; the test compiles nac.c itself
# with the allocator redirected, so it links no library.
check_PROGRAMS += tests/unit/test-nac-nomem
TESTS += tests/unit/test-nac-nomem
tests_unit_test_nac_nomem_SOURCES = \
	tests/unit/test-nac-nomem.c \
	tests/unit/nac-test.h \
	$(NULL)
