#!/usr/bin/env bash
# tests/test-nbd-dirty-bitmap.sh: the qemu:dirty-bitmap:NAME metadata
# context of an export that offers a bitmap (block-export-add's
# bitmaps): nbdinfo --map and qemu-img map (x-dirty-bitmap) show exactly
# the granules written since the bitmap was added; the context is
# listed under "qemu:"; the bitmap cannot be removed while exported, and
# a missing or busy one is refused.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
requires jq --version
start_nbdgraphd "nodes:
  src: { driver: memory, size: 16M }
exports:
  vm1: { node: src, writable: true }" vm1

out=$dir/out
inc="nbd+unix:///inc?socket=$sock"

# Data everywhere before the bitmap exists: none of it is dirty.
qemu-io -f raw "$uri" -c 'write -P 1 0 16M' > /dev/null
add_dirty_bitmap src b0 65536
qemu-io -f raw "$uri" -c 'write -P 2 1M 64K' -c 'write -P 3 5M 200K' \
    -c 'write -z 10M 4K' -c 'discard 15M 64K' > /dev/null

# A bitmap the node lacks is refused; so is a second export of b0.
expect_status 1 qmp '{"execute":"block-export-add","arguments":{"type":"nbd",
    "id":"bad","node-name":"src","bitmaps":["nope"]}}' > $out 2>&1
grep -q "dirty bitmap 'nope' not found on node 'src'" $out
nbdgraphctl add-export inc src --bitmap b0
expect_status 1 qmp '{"execute":"block-export-add","arguments":{"type":"nbd",
    "id":"inc2","node-name":"src","bitmaps":["b0"]}}' > $out 2>&1
grep -q "dirty bitmap 'b0' is in use" $out

# Listed among the export's contexts (nbdinfo asks for all of them).
nbdinfo "$inc" > $out
grep -q 'qemu:dirty-bitmap:b0' $out
grep -q 'base:allocation' $out

# 200K at 5M dirties four 64K granules; the 4K zero one.
expected='0 1048576 0
1048576 65536 1
1114112 4128768 0
5242880 262144 1
5505024 4980736 0
10485760 65536 1
10551296 5177344 0
15728640 65536 1
15794176 983040 0'
nbdinfo --map=qemu:dirty-bitmap:b0 "$inc" > $out
cat $out
[ "$(awk '{print $1, $2, $3}' $out)" = "$expected" ]

# qemu-img reads the bitmap in place of base:allocation: dirty is
# "data": false, as with qemu-nbd.
qemu-img map --output=json --image-opts \
    "driver=nbd,server.type=unix,server.path=$sock,export=inc,x-dirty-bitmap=qemu:dirty-bitmap:b0" \
    > $out
cat $out
[ "$(jq -r '.[] | select(.data == false) | "\(.start) \(.length)"' $out)" = \
  "1048576 65536
5242880 262144
10485760 65536
15728640 65536" ]

# Exported, the bitmap is busy: not removed, not cleared.
expect_status 1 qmp '{"execute":"block-dirty-bitmap-remove",
    "arguments":{"node":"src","name":"b0"}}' > $out 2>&1
grep -q "dirty bitmap 'b0' is in use by a job or an export" $out
expect_status 1 qmp '{"execute":"block-dirty-bitmap-clear",
    "arguments":{"node":"src","name":"b0"}}'
# Without the export the user has it back.
qmp '{"execute":"block-export-del","arguments":{"id":"inc"}}'
qmp '{"execute":"block-dirty-bitmap-remove",
      "arguments":{"node":"src","name":"b0"}}'
stop_nbdgraphd
