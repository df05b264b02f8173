#!/usr/bin/env bash
# tests/test-fleecing.sh: QEMU's fleecing recipe — a memory overlay whose
# backing is the source, the target of a blockdev-backup sync=none,
# exported read-only — serves the source as it was when the job
# started while clients overwrite, zero and trim the source; the source
# export shows the new data; the fleecing export refuses writes; after
# the job is cancelled and the exports are gone the overlay can go too.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
start_nbdgraphd "nodes:
  src: { driver: memory, size: 16M }
exports:
  vm1: { node: src, writable: true }" vm1

out=$dir/out
fleece="nbd+unix:///fleece?socket=$sock"

qemu-io -f raw "$uri" -c 'write -P 1 0 8M' -c 'write -P 2 8M 8M' > /dev/null
qemu-img convert -f raw -O raw "$uri" $dir/at-start.raw

qmp '{"execute":"blockdev-add","arguments":{"driver":"memory",
      "node-name":"tmp","size":16777216,"backing":"src"}}'
qmp '{"execute":"blockdev-backup","arguments":{"job-id":"fl","device":"src",
      "target":"tmp","sync":"none"}}'
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"fleece",
      "node-name":"tmp"}}'

# The guest carries on; a reader of the fleecing export reads meanwhile.
qemu-io -r -f raw "$fleece" -c 'read -P 1 0 8M' > /dev/null &
reader=$!
qemu-io -f raw "$uri" -c 'write -P 3 1M 1M' -c 'write -z 4M 64K' \
    -c 'discard 9M 1M' -c 'write -P 4 15M 4K' -c 'write -P 5 7M 2M' \
    > /dev/null
wait $reader

qemu-img compare -f raw -F raw $dir/at-start.raw "$fleece"
qemu-io -f raw "$uri" -c 'read -P 3 1M 1M' -c 'read -P 0 4M 64K' \
    -c 'read -P 5 7M 2M' -c 'read -P 4 15M 4K' > $out
[ "$(grep -c '^read' $out)" = 4 ]
# Read-only: qemu-io cannot even open it for writing.
expect_status 1 qemu-io -f raw "$fleece" -c 'write -P 9 0 4K' > $out 2>&1
grep -q 'Permission denied' $out
qemu-img compare -f raw -F raw $dir/at-start.raw "$fleece"

qmp '{"execute":"block-export-del","arguments":{"id":"fleece"}}'
qmp '{"execute":"job-cancel","arguments":{"id":"fl"}}'
for i in $(seq 100); do
    nbdgraphctl --json jobs | grep -q '"fl"' || break
    sleep 0.1
done
qmp '{"execute":"blockdev-del","arguments":{"node-name":"tmp"}}'
stop_nbdgraphd
