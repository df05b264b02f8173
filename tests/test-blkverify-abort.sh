#!/usr/bin/env bash
# tests/test-blkverify-abort.sh: blkverify with `abort: true` aborts the
# daemon on a mismatch, after logging it, as QEMU's blkverify ends QEMU;
# until then it serves reads like the plain mode.
source "$srcdir/functions.sh"
set -euxo pipefail
requires qemu-io --version
ulimit -c 0                     # the abort is expected: no core file

for f in test raw; do
    qemu-img create -f raw "$dir/$f.img" 1M
    qemu-io -f raw -c "write -P 0x42 0 1M" "$dir/$f.img"
done
start_nbdgraphd "
nodes:
  t: { driver: file, filename: \"$dir/test.img\" }
  r: { driver: file, filename: \"$dir/raw.img\" }
  bv: { driver: blkverify, test: t, raw: r, abort: true }
exports:
  demo: { node: bv }"
qemu-io -r -f raw "$uri" -c "read -P 0x42 0 64k"

# Change raw's copy behind the daemon's back (dd: the daemon holds the
# file's lock): the next read over it ends the daemon with SIGABRT, its
# log naming the range first.
printf C | dd of="$dir/raw.img" bs=1 seek=70000 conv=notrunc
pid=$nbdgraphd_pid
if qemu-io -r -f raw "$uri" -c "read 65536 65536"; then
    echo "$0: the mismatched read succeeded" >&2
    exit 1
fi
rc=0
timeout 30 tail --pid="$pid" -f /dev/null || true
wait "$pid" || rc=$?
nbdgraphd_pid=                  # gone: nothing for the EXIT trap to stop
test "$rc" -eq $((128 + 6))
grep -F "node 'bv': blkverify: read offset=65536 length=65536: contents mismatch at offset 70000: aborting" \
    "$dir/nbdgraphd.log"
