#!/usr/bin/env bash
# tests/test-mirror-sparse.sh: blockdev-mirror of a sparse source keeps
# the target sparse and equal.  The copy engine asks block status over
# spans larger than its 64 KiB data chunks, writes a zero run as one
# write-zeroes and copies data a chunk at a time; the source mixes data
# that starts and ends inside granules, holes (some of them trimmed
# data, one right after data) and data at the very end, over a
# target first filled with 0xff (so every zero must really land).  The
# target is a file on /dev/shm when there is one (tmpfs: the job's
# writes go to worker threads there), else in the test directory.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
start_nbdgraphd "nodes:
  src: { driver: memory, size: 64M }
exports:
  vm0: { node: src, writable: true }" vm0

uri="nbd+unix:///vm0?socket=$sock"
tdir=$dir
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    tdir=$(mktemp -d /dev/shm/ngtest-sparse.XXXXXX)
    trap 'rm -rf "$tdir"' EXIT
fi
img=$tdir/target.raw

qemu-io -f raw "$uri" \
    -c 'write -P 0x11 0 4k' \
    -c 'write -P 0x22 1M 1M' \
    -c 'write -P 0x66 3M 2M' -c 'write -z -u 3M 2M' \
    -c 'write -P 0x33 8292k 200k' \
    -c 'write -P 0x44 20M 64k' \
    -c 'write -P 0x66 20544k 64k' -c 'write -z -u 20544k 64k' \
    -c 'write -P 0x55 63M 1M'
head -c 64M /dev/zero | tr '\0' '\377' > "$img"

nbdgraphctl add-node dst file filename="$img"
nbdgraphctl mirror src dst --job-id m0
nbdgraphctl wait m0                     # returns once ready: in sync
python3 -c "
import os,sys
fd=os.open(sys.argv[1],os.O_RDONLY); off=0; end=os.fstat(fd).st_size
while off<end:
    try: d=os.lseek(fd,off,os.SEEK_DATA)
    except OSError: break
    h=os.lseek(fd,d,os.SEEK_HOLE); print(\"data\",d>>10,\"K..\",h>>10,\"K\"); off=h
" "$img"

# Only the data is allocated: 2.4 MiB of it in whole 64 KiB granules;
# the holes were punched (where the file system can punch holes: tmpfs
# and ext4 can).
head -c 8192 /dev/zero > "$img.probe"
if fallocate -p -o 0 -l 4096 "$img.probe"; then
    used=$(( $(stat -c '%b * %B' "$img") ))
    [ "$used" -le $((2560 << 10)) ]
fi
rm -f "$img.probe"

# Complete: the export now on the file, which still reads the same.
nbdgraphctl wait m0 --complete
qemu-io -f raw "$uri" \
    -c 'read -P 0x11 0 4k' -c 'read -P 0 4k 1020k' \
    -c 'read -P 0x22 1M 1M' -c 'read -P 0 2M 6244k' \
    -c 'read -P 0x33 8292k 200k' -c 'read -P 0 8492k 11988k' \
    -c 'read -P 0x44 20M 64k' \
    -c 'read -P 0 20544k 43968k' -c 'read -P 0x55 63M 1M' | tee $dir/out
! grep -q 'verification failed' $dir/out ||
    fail "the export reads other data after the mirror completed"
