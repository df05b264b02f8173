#!/usr/bin/env bash
# tests/test-mirror-bitmap-pivot.sh: an export that offers a dirty bitmap
# (qemu:dirty-bitmap:b0) keeps it through a mirror's pivot.  The bitmap
# goes to the target with the export, bits and all, and records the
# writes that land there; BLOCK_STATUS on the context goes on answering
# after the old node is deleted.  A mirror whose target has a bitmap of
# that name already is refused with the reason, nothing started.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires nbdinfo --version
requires jq --version
start_nbdgraphd "nodes:
  src: { driver: memory, size: 8M }
  dst: { driver: memory, size: 8M }
  other: { driver: memory, size: 8M }
exports:
  vm1: { node: src, writable: true }" vm1

out=$dir/out
inc="nbd+unix:///inc?socket=$sock"

qemu-io -f raw "$uri" -c 'write -P 1 0 8M' > /dev/null
qmp '{"execute":"block-export-del","arguments":{"id":"vm1"}}'
add_dirty_bitmap src b0 65536
nbdgraphctl add-export inc src --bitmap b0 --writable
qemu-io -f raw "$inc" -c 'write -P 2 1M 64K' > /dev/null

# A clash on the target: refused before anything starts.
add_dirty_bitmap other b0
expect_status 1 nbdgraphctl mirror src other --job-id bad 2> $out
cat $out
grep -q "export 'inc' offers dirty bitmap 'b0' of node 'src', which must \
follow it to node 'other': node 'other' has a dirty bitmap 'b0' already" $out
nbdgraphctl --json jobs | jq -e 'length == 0'

nbdgraphctl mirror src dst --job-id m0
nbdgraphctl wait m0 --complete
qmp '{"execute":"query-block-exports"}' |
    jq -e '[.return[] | ."node-name"] == ["dst"]'
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "dst") |
           ."dirty-bitmaps"[0].name == "b0"'

# Written after the pivot, on dst: recorded too.
qemu-io -f raw "$inc" -c 'write -P 3 3M 64K' > /dev/null
qmp '{"execute":"blockdev-del","arguments":{"node-name":"src"}}'
expected='0 1048576 0
1048576 65536 1
1114112 2031616 0
3145728 65536 1
3211264 5177344 0'
nbdinfo --map=qemu:dirty-bitmap:b0 "$inc" > $out
cat $out
[ "$(awk '{print $1, $2, $3}' $out)" = "$expected" ]
qemu-io -f raw "$inc" -c 'read -P 2 1M 64K' -c 'read -P 3 3M 64K' \
    -c 'read -P 1 4M 4M' > $out
[ "$(grep -c '^read' $out)" = 3 ]
# Still the export's: busy.
expect_status 1 qmp '{"execute":"block-dirty-bitmap-remove",
    "arguments":{"node":"dst","name":"b0"}}' > $out 2>&1
grep -q "in use" $out
stop_nbdgraphd
