#!/usr/bin/env bash
# tests/unit/test-drivers-tmpfs.sh: the driver tests once more with their
# files on tmpfs, where the file driver runs every request inline on the
# loop instead of on worker threads (graph/drv-file.c).
set -eu
[ -d /dev/shm ] && [ -w /dev/shm ] || { echo "no writable /dev/shm"; exit 77; }
TMPDIR=/dev/shm exec "${top_builddir:-.}/tests/unit/test-drivers"
