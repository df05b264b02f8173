#!/usr/bin/env bash
# tests/test-nbd-allocation-depth.sh: qemu:allocation-depth on an export
# of a chain of memory overlays (top -> mid -> base) answers what
# qemu-nbd -A answers for the same chain built as qcow2 files with the
# same writes: 1 where the top has the data, 2 and 3 down the chain, 0
# where no layer has it.  An export without allocation-depth does not
# list the context; a config export's allocation-depth: true does.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
requires qemu-nbd --version
# A config export offers it with allocation-depth: true; a value that
# is no boolean is refused at its place in the file.
cat > $dir/bad.yaml <<EOF
server:
  listen: [ "unix:$dir/x.sock" ]
nodes:
  base: { driver: memory, size: 4M }
exports:
  eb: { node: base, allocation-depth: maybe }
EOF
expect_status 1 "$NBDGRAPHD" --check-config --config $dir/bad.yaml \
    > $dir/out 2>&1
cat $dir/out
grep -q "bad.yaml:6:.*allocation-depth" $dir/out
start_nbdgraphd "nodes:
  base: { driver: memory, size: 4M }
exports:
  eb: { node: base, writable: true, allocation-depth: true }" eb
nbdinfo "$uri" | grep -q 'qemu:allocation-depth'

out=$dir/out
at="nbd+unix:///et?socket=$sock"

# Each layer written while it is the top, through its own export.
base_io=(-c 'write -P 1 0 1M' -c 'write -P 2 2M 1M')
mid_io=(-c 'write -P 3 1M 512K' -c 'write -P 4 2560K 512K')
top_io=(-c 'write -P 5 0 256K' -c 'write -z 3584K 512K')
qemu-io -f raw "$uri" "${base_io[@]}" > /dev/null
qmp '{"execute":"block-export-del","arguments":{"id":"eb"}}'
qmp '{"execute":"blockdev-add","arguments":{"driver":"memory",
      "node-name":"mid","size":4194304,"backing":"base"}}'
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"em",
      "node-name":"mid","writable":true}}'
qemu-io -f raw "nbd+unix:///em?socket=$sock" "${mid_io[@]}" > /dev/null
qmp '{"execute":"block-export-del","arguments":{"id":"em"}}'
qmp '{"execute":"blockdev-add","arguments":{"driver":"memory",
      "node-name":"top","size":4194304,"backing":"mid"}}'
# An implicit filter above the node counts for nothing.
nbdgraphctl add-export et top --writable --allocation-depth --detect-zeroes on
nbdgraphctl graph | grep -q "et.detect-zeroes"
qemu-io -f raw "$at" "${top_io[@]}" > /dev/null
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"plain",
      "node-name":"top"}}'

# The same chain as qcow2 files, served by qemu-nbd -A.
qemu-img create -q -f qcow2 $dir/base.qcow2 4M
qemu-io -f qcow2 "${base_io[@]}" $dir/base.qcow2 > /dev/null
qemu-img create -q -f qcow2 -b $dir/base.qcow2 -F qcow2 $dir/mid.qcow2
qemu-io -f qcow2 "${mid_io[@]}" $dir/mid.qcow2 > /dev/null
qemu-img create -q -f qcow2 -b $dir/mid.qcow2 -F qcow2 $dir/top.qcow2
qemu-io -f qcow2 "${top_io[@]}" $dir/top.qcow2 > /dev/null
nbdinfo --map=qemu:allocation-depth -- \
    [ qemu-nbd -A -r -f qcow2 $dir/top.qcow2 ] > $dir/want
cat $dir/want

nbdinfo --map=qemu:allocation-depth "$at" > $out
cat $out
[ "$(awk '{print $1, $2, $3}' $out)" = "$(awk '{print $1, $2, $3}' $dir/want)" ]
[ "$(awk '{print $1, $2, $3}' $out)" = "0 262144 1
262144 786432 3
1048576 524288 2
1572864 524288 0
2097152 524288 3
2621440 524288 2
3145728 524288 0
3670016 524288 1" ]
# base:allocation is unchanged by it.
nbdinfo --map "$at" > $out
cat $out
[ "$(awk '$3 == 3 {print $1, $2}' $out)" = "1572864 524288
3145728 524288" ]

# Only an export that offers it lists it.
nbdinfo "$at" | grep -q 'qemu:allocation-depth'
nbdinfo "nbd+unix:///plain?socket=$sock" > $out
expect_status 1 grep -q 'qemu:allocation-depth' $out
grep -q 'base:allocation' $out
stop_nbdgraphd
