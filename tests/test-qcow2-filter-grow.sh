#!/usr/bin/env bash
# tests/test-qcow2-filter-grow.sh: a qcow2 image whose file sits under a
# filter (blkdebug, throttle, log, delay, detect-zeroes, nofilter, as QEMU
# users stack them) grows that file through the filter when it allocates
# clusters past its end.  The old code had no grow for filters: every
# write that needed a new cluster past the file's end failed with ENOSPC
# ("node 'f' (driver 'blkdebug') cannot grow").  Each round writes 24 MiB
# into a fresh 64 MiB image (its file starts at a few hundred KiB), reads
# it back through the export, then checks the image with qemu-img.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version

out=$dir/out
cd "$dir"
truncate -s 64M want.raw
qemu-io -f raw -c 'write -P 0x5a 0 16M' -c 'write -P 0xa5 56M 8M' \
    want.raw > /dev/null

# filter_round NAME SPEC: the image's file is SPEC, a filter named f
# over the file node; writes, reads back, checks.
filter_round ()
{
    rm -f img.qcow2
    qemu-img create -q -f qcow2 img.qcow2 64M
    local before
    before=$(stat -c %s img.qcow2)
    start_nbdgraphd "nodes:
  f: $2
  img: { driver: qcow2, file: f }
exports:
  vm1: { node: img, writable: true }" vm1
    qemu-io -f raw -c 'write -P 0x5a 0 16M' -c 'write -P 0xa5 56M 8M' \
        "$uri" > $out 2>&1 || fail "$1: writes failed: $(cat $out)"
    qemu-io -f raw -c 'read -P 0x5a 0 16M' -c 'read -P 0 16M 40M' \
        -c 'read -P 0xa5 56M 8M' "$uri" > $out 2>&1 ||
        fail "$1: read back wrong: $(cat $out)"
    grep -q "cannot grow" "$dir/nbdgraphd.log" &&
        fail "$1: the daemon could not grow the file"
    stop_nbdgraphd
    test "$(stat -c %s img.qcow2)" -gt $((before + 24 * 1024 * 1024)) ||
        fail "$1: the file did not grow"
    qemu-img check img.qcow2
    qemu-img compare -f qcow2 -F raw img.qcow2 want.raw
}

file="{ driver: file, filename: @DIR@/img.qcow2 }"
filter_round blkdebug "{ driver: blkdebug, image: $file }"
filter_round throttle "{ driver: throttle, file: $file,
         limits: { iops-total: 100000 } }"
filter_round log "{ driver: log, file: $file, logfile: @DIR@/req.log }"
filter_round delay "{ driver: delay, file: $file, delay-write: 1ms }"
filter_round detect-zeroes "{ driver: detect-zeroes, file: $file }"
filter_round nofilter "{ driver: nofilter, file: $file }"
