# tests/interop/local.mk: interop tests — clients nobody here wrote
# (qemu-io, qemu-img, nbdinfo, nbdcopy) against the real nbdgraphd.
# Each one skips (exit 77) when its client is not installed.
INTEROP_TESTS = \
	tests/interop/test-qemu-io.sh \
	tests/interop/test-qemu-img.sh \
	tests/interop/test-nbdinfo.sh \
	tests/interop/test-nbdcopy.sh \
	tests/interop/test-raw-file.sh \
	$(NULL)
TESTS += $(INTEROP_TESTS)
EXTRA_DIST += \
	$(INTEROP_TESTS) \
	$(NULL)

# The qcow2 format driver against qemu-img and qemu-io.
TESTS += tests/interop/test-qcow2.sh
EXTRA_DIST += tests/interop/test-qcow2.sh
TESTS += tests/test-qcow2-bad.sh
EXTRA_DIST += tests/test-qcow2-bad.sh
# qcow2 grows its file through a filter above it (blkdebug, throttle, ...).
TESTS += tests/test-qcow2-filter-grow.sh
EXTRA_DIST += tests/test-qcow2-filter-grow.sh

# qcow2 with metadata caches smaller than the images' metadata.
TESTS += tests/interop/test-qcow2-cache.sh
EXTRA_DIST += tests/interop/test-qcow2-cache.sh
TESTS += tests/interop/test-qcow2-data-file.sh
EXTRA_DIST += tests/interop/test-qcow2-data-file.sh

# s4-snapsync: blockdev-snapshot-sync, the qcow2 header's backing name
# after live chain changes, run-time corrupt marking.
TESTS += tests/test-qcow2-backing-header.sh tests/test-snapshot-sync.sh \
	tests/test-qcow2-corrupt.sh
EXTRA_DIST += tests/test-qcow2-backing-header.sh tests/test-snapshot-sync.sh \
	tests/test-qcow2-corrupt.sh

# s5-stream: block-stream and block-commit keep a sparse chain sparse.
TESTS += tests/test-stream-sparse.sh
EXTRA_DIST += tests/test-stream-sparse.sh
# block-commit copies only what the layers above the base hold.
TESTS += tests/test-commit-sparse.sh
EXTRA_DIST += tests/test-commit-sparse.sh
# s9-qcow2kill: kill -9 leaves a sound qcow2 image holding what was flushed.
TESTS += tests/test-qcow2-kill.sh
EXTRA_DIST += tests/test-qcow2-kill.sh tests/qcow2-kill-client.py
