#!/usr/bin/env bash
# tests/test-blkverify-drivers.sh: blkverify doing what issue 16 wants
# it for, checking a driver against a trusted one.
# - test = a qcow2 node on an image qemu-img made and qemu-io wrote, raw
#   = a file node on `qemu-img convert -O raw` of it: the whole export
#   compares equal to the raw file; then one byte of a data cluster
#   (found with `qemu-img map`) is changed inside the qcow2 file, and a
#   read of that range fails with EIO and the log names the range and
#   the byte, while the rest still reads.
# - test = the nbdkit leaf (data plugin, a known pattern), raw = our
#   memory leaf filled with the same bytes: equal; a byte changed on the
#   memory side fails the read over it.  And test = nbdkit's memory
#   plugin written through blkverify (both children get the writes), then
#   changed directly: the same EIO.
source "$srcdir/functions.sh"
source "$srcdir/nbdkit.sh"
set -euxo pipefail
requires qemu-io --version
requires qemu-img --version
requires jq --version
requires test -f "$plugindir/nbdkit-data-plugin.so"
requires test -f "$plugindir/nbdkit-memory-plugin.so"

M=$((1024 * 1024))
out=$dir/out
# eio_at URI OFFSET LENGTH: a read of that range fails with EIO.
eio_at ()
{
    qemu-io -r -f raw "$1" -c "read $2 $3" > $out 2>&1 || true
    cat $out
    grep -q 'read failed: Input/output error' $out
}
# reads URI PATTERN OFFSET BYTES: the range reads back as PATTERN.
reads ()
{
    qemu-io -r -f raw "$1" -c "read -P $2 $3 $4" > $out 2>&1 || true
    cat $out
    grep -q "^read $4/$4 bytes" $out
}
# mismatch_logged NODE OFFSET LENGTH AT: blkverify's warning for it.
mismatch_logged ()
{
    grep -F "node '$1': blkverify: read offset=$2 length=$3: contents mismatch at offset $4" \
        "$dir/nbdgraphd.log"
}

# ---- qcow2 against raw -----------------------------------------------------
qemu-img create -f qcow2 "$dir/t.qcow2" 4M
qemu-io -f qcow2 "$dir/t.qcow2" -c 'write -P 0x5a 0 1M' \
    -c 'write -P 0xa5 2M 512k' -c 'write -z 3M 64k'
qemu-img convert -f qcow2 -O raw "$dir/t.qcow2" "$dir/r.raw"
# The host offset of the data cluster holding guest offset 2M.
qemu-img map -f qcow2 --output=json "$dir/t.qcow2" > "$dir/map.json"
cat "$dir/map.json"
host=$(jq -e ".[] | select(.data and .start <= $((2 * M)) and
                         .start + .length > $((2 * M))) |
               .offset + $((2 * M)) - .start" "$dir/map.json")

start_nbdgraphd "nodes:
  q: { driver: qcow2, read-only: true,
       file: { driver: file, read-only: true, filename: \"@DIR@/t.qcow2\" } }
  r: { driver: file, read-only: true, filename: \"@DIR@/r.raw\" }
  bv: { driver: blkverify, test: q, raw: r }
exports:
  demo: { node: bv }"
qemu-img compare -f raw -F raw "$uri" "$dir/r.raw"
! grep 'blkverify' "$dir/nbdgraphd.log" ||
    fail "blkverify logged a mismatch where test and raw agree"

# One byte 100 bytes into guest offset 2M, changed in the qcow2 file
# (dd: the daemon holds the image's lock; data are not cached).
printf '\x01' | dd of="$dir/t.qcow2" bs=1 seek=$((host + 100)) conv=notrunc
eio_at "$uri" 2M 64k
mismatch_logged bv $((2 * M)) 65536 $((2 * M + 100))
reads "$uri" 0x5a 0 $M
reads "$uri" 0xa5 $((2 * M + 65536)) $((448 * 1024))
# 4: qemu-img compare hit a read error (1 would be "differ").
expect_status 4 qemu-img compare -f raw -F raw "$uri" "$dir/r.raw"
stop_nbdgraphd

# ---- the nbdkit leaf against the memory leaf -------------------------------
# A known image: a byte pattern, 64 KiB of random bytes, a last byte.
head -c 64k /dev/urandom > "$dir/rnd.bin"
truncate -s 4M "$dir/d.raw"
qemu-io -f raw "$dir/d.raw" -c 'write -P 0x11 0 64k' -c 'write -P 0x44 4194303 1'
dd if="$dir/rnd.bin" of="$dir/d.raw" bs=64k seek=16 conv=notrunc
start_nbdgraphd "nodes:
  d: { driver: nbdkit, plugin: data, read-only: true,
       args: { data: '@0 0x11*65536 @1048576 <@DIR@/rnd.bin @4194303 0x44',
               size: 4M } }
  m: { driver: memory, size: 4M }
  bvd: { driver: blkverify, test: d, raw: m }
  k: { driver: nbdkit, plugin: memory, args: { size: 4M } }
  m2: { driver: memory, size: 4M }
  bvk: { driver: blkverify, test: k, raw: m2 }
exports:
  demo: { node: bvd }
  m: { node: m, writable: true }
  bvk: { node: bvk, writable: true }
  k: { node: k, writable: true }"
mem=$(uri_for m)
bvk=$(uri_for bvk)
k=$(uri_for k)
# Before the memory node holds the same bytes, blkverify refuses them.
eio_at "$uri" 0 64k
mismatch_logged bvd 0 65536 0
# The memory node filled from the known image: the whole export equal.
qemu-img convert -n -f raw -O raw "$dir/d.raw" "$mem"
qemu-img compare -f raw -F raw "$uri" "$dir/d.raw"
# One byte in the random range changed on the memory side.
qemu-io -f raw "$mem" -c "write -P 0x99 $((M + 1000)) 1"
eio_at "$uri" 1M 64k
mismatch_logged bvd $M 65536 $((M + 1000))
reads "$uri" 0x11 0 65536

# nbdkit's memory plugin written through blkverify, which writes both.
qemu-io -f raw "$bvk" -c 'write -P 0x77 0 1M' -c 'read -P 0x77 0 1M' > $out
cat $out
! grep -q 'failed\|Pattern' $out ||
    fail "qemu-io through blkverify to nbdkit failed"
reads "$k" 0x77 0 $M
qemu-io -f raw "$k" -c 'write -P 0x78 512k 4k'
eio_at "$bvk" 0 1M
mismatch_logged bvk 0 1048576 $((512 * 1024))
stop_nbdgraphd
