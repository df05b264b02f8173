# tests/fuzz/: libFuzzer harnesses for the parsers that face clients and
# users: NBD option haggling, NBD transmission, the QMP channel, the
# config loader.  Each drives the real libraries in process.
#
# Built with CC=clang --enable-fuzzing (contrib/fuzz.sh does it in
# build-fuzz/), they link libFuzzer's main and `make fuzz` runs each for
# FUZZ_SECONDS.  In any other build they link tests/fuzz/replay.c instead,
# and `make check` replays the seed corpora in tests/fuzz/corpus/ through
# them, so every input kept there (findings included) is a regression test
# of the plain and the sanitizer build.
FUZZERS = \
	tests/fuzz/fuzz-nbd-handshake \
	tests/fuzz/fuzz-nbd-transmission \
	tests/fuzz/fuzz-qmp \
	tests/fuzz/fuzz-config \
	tests/fuzz/fuzz-qcow2 \
	$(NULL)
check_PROGRAMS += $(FUZZERS)

if FUZZING
FUZZ_MAIN =
FUZZ_LINK_FLAGS = $(AM_LDFLAGS) $(FUZZ_LDFLAGS)
else
FUZZ_MAIN = tests/fuzz/replay.c
FUZZ_LINK_FLAGS = $(AM_LDFLAGS)
endif
FUZZ_COMMON = \
	tests/fuzz/fuzz-util.h \
	tests/fuzz/fuzz-util.c \
	$(FUZZ_MAIN) \
	$(NULL)
FUZZ_NBD = \
	tests/fuzz/nbd-fixture.h \
	tests/fuzz/nbd-fixture.c \
	$(NULL)
FUZZ_LIBS = server/libngserver.a $(CORE_LIBS) $(GNUTLS_LIBS) $(LIBSYSTEMD_LIBS)

tests_fuzz_fuzz_nbd_handshake_SOURCES = \
	tests/fuzz/fuzz-nbd-handshake.c \
	$(FUZZ_NBD) \
	$(FUZZ_COMMON) \
	$(NULL)
tests_fuzz_fuzz_nbd_handshake_LDFLAGS = $(FUZZ_LINK_FLAGS)
tests_fuzz_fuzz_nbd_handshake_LDADD = $(FUZZ_LIBS)

tests_fuzz_fuzz_nbd_transmission_SOURCES = \
	tests/fuzz/fuzz-nbd-transmission.c \
	$(FUZZ_NBD) \
	$(FUZZ_COMMON) \
	$(NULL)
tests_fuzz_fuzz_nbd_transmission_LDFLAGS = $(FUZZ_LINK_FLAGS)
tests_fuzz_fuzz_nbd_transmission_LDADD = $(FUZZ_LIBS)

tests_fuzz_fuzz_qmp_SOURCES = \
	tests/fuzz/fuzz-qmp.c \
	$(FUZZ_COMMON) \
	$(NULL)
tests_fuzz_fuzz_qmp_LDFLAGS = $(FUZZ_LINK_FLAGS)
tests_fuzz_fuzz_qmp_LDADD = $(FUZZ_LIBS)

tests_fuzz_fuzz_config_SOURCES = \
	tests/fuzz/fuzz-config.c \
	$(FUZZ_COMMON) \
	$(NULL)
tests_fuzz_fuzz_config_LDFLAGS = $(FUZZ_LINK_FLAGS)
tests_fuzz_fuzz_config_LDADD = $(FUZZ_LIBS)

# The qcow2 driver on mutated images.
tests_fuzz_fuzz_qcow2_SOURCES = \
	tests/fuzz/fuzz-qcow2.c \
	$(FUZZ_COMMON) \
	$(NULL)
tests_fuzz_fuzz_qcow2_LDFLAGS = $(FUZZ_LINK_FLAGS)
tests_fuzz_fuzz_qcow2_LDADD = $(FUZZ_LIBS)

# Every seed (and kept finding) through every harness, once.
TESTS += tests/fuzz/test-fuzz-corpus.sh
EXTRA_DIST += \
	tests/fuzz/test-fuzz-corpus.sh \
	tests/fuzz/run-fuzzers.sh \
	tests/fuzz/make-seeds.py \
	tests/fuzz/corpus \
	tests/fuzz/dict \
	tests/fuzz/README.md \
	$(NULL)

# make fuzz [FUZZ_SECONDS=N] [FUZZ_RUNS=N] [FUZZERS=...]: each harness for
# N seconds (default 60), or for N executions (a campaign; see
# tests/fuzz/README.md), growing its corpus in tests/fuzz/NAME.corpus/ of
# the build tree from the seeds; logs and any crash input land in
# tests/fuzz/ too.
FUZZ_SECONDS = 60
FUZZ_RUNS =
if FUZZING
fuzz: $(FUZZERS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) $(SHELL) \
	    $(top_srcdir)/tests/fuzz/run-fuzzers.sh $(top_srcdir)/tests/fuzz \
	    $(FUZZERS)
else
fuzz:
	@echo "make fuzz: this build has no libFuzzer; run" \
	    "contrib/fuzz.sh (configures CC=clang --enable-fuzzing" \
	    "in build-fuzz/)" >&2; exit 1
endif
.PHONY: fuzz

clean-local: clean-fuzz
clean-fuzz:
	rm -rf tests/fuzz/*.corpus tests/fuzz/*.log tests/fuzz/*.result
.PHONY: clean-fuzz
