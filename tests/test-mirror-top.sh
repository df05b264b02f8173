#!/usr/bin/env bash
# tests/test-mirror-top.sh: blockdev-mirror sync "top" of a memory
# overlay copies only what the overlay itself holds (and what clients
# write meanwhile) to a target overlay on the same backing node; after
# the pivot the export reads the same data, and the target's own layer
# holds just that (qemu:allocation-depth).  A target without the
# source's backing node is refused.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires jq --version
start_nbdgraphd "nodes:
  base: { driver: memory, size: 8M }
exports:
  eb: { node: base, writable: true }" eb

out=$dir/out
vm1="nbd+unix:///vm1?socket=$sock"

qemu-io -f raw "$uri" -c 'write -P 1 0 8M' > /dev/null
qmp '{"execute":"block-export-del","arguments":{"id":"eb"}}'
for n in src dst; do
    qmp '{"execute":"blockdev-add","arguments":{"driver":"memory",
          "node-name":"'$n'","size":8388608,"backing":"base"}}'
done
qmp '{"execute":"blockdev-add","arguments":{"driver":"memory",
      "node-name":"lone","size":8388608}}'
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"vm1",
      "node-name":"src","writable":true}}'
qemu-io -f raw "$vm1" -c 'write -P 2 1M 1M' > /dev/null

expect_status 1 nbdgraphctl mirror src lone --sync top > $out 2>&1
grep -q "target node 'lone' must have the source's backing node 'base'" $out

# Slow enough that the client's write lands while the job runs.
nbdgraphctl mirror src dst --job-id m0 --sync top --speed 512K
qemu-io -f raw "$vm1" -c 'write -P 3 6M 64K' > /dev/null
qmp '{"execute":"block-job-set-speed","arguments":{"device":"m0",
      "speed":0}}'
nbdgraphctl wait m0 --complete > $out
cat $out
nbdgraphctl graph | grep -q 'dst (memory'

qemu-io -f raw "$vm1" -c 'read -P 1 0 1M' -c 'read -P 2 1M 1M' \
    -c 'read -P 1 2M 4M' -c 'read -P 3 6M 64K' -c 'read -P 1 6208K 1984K' \
    > $out
[ "$(grep -c '^read' $out)" = 5 ]
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"d",
      "node-name":"dst","allocation-depth":true}}'
nbdinfo --map=qemu:allocation-depth "nbd+unix:///d?socket=$sock" > $out
cat $out
[ "$(awk '$3 == 1 {print $1, $2}' $out)" = "1048576 1048576
6291456 65536" ]
stop_nbdgraphd
