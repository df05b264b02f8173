#!/usr/bin/env bash
# tests/test-stream-sparse.sh: block-stream and block-commit keep a
# sparse chain sparse.  A range no layer has allocated stays unallocated
# in the node that receives the data (QEMU's stream copies what the
# chain has allocated, not what reads as zeroes), so streaming a 256 MiB
# chain holding 5 MiB writes 5 MiB, not 256.  Checked on qcow2 chains
# (qemu-img map and the image's allocated size, qemu-img compare against
# the chain as it was) and on a memory overlay over a sparse raw file
# (the export's base:allocation map).
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"
size=256M

# data_mib IMAGE: MiB that `qemu-img map` calls data in IMAGE's own
# layer (rounded up).
data_mib ()
{
    qemu-img map -U -f qcow2 --output=json "$1" |
        jq '[.[] | select(.data and .depth == 0) | .length] | add // 0 |
            (. + 1048575) / 1048576 | floor'
}

# alloc_mib FILE: MiB the file takes on disk.
alloc_mib () { echo $(( $(stat -c '%b * %B' "$1") / 1048576 )); }

# check_sparse IMAGE DATA ALLOC: IMAGE is a sound qcow2 image reading as
# want.raw, with at most DATA MiB of data of its own and ALLOC MiB on
# disk.
check_sparse ()
{
    qemu-img check "$1"
    qemu-img compare -f qcow2 -F raw "$1" want.raw
    qemu-img map -f qcow2 "$1"
    test "$(data_mib "$1")" -le "$2"
    test "$(alloc_mib "$1")" -le "$3"
}

# The chain base <- mid <- top: base has 2 MiB at 16M, mid 2 MiB at
# 128M, top 1 MiB at 200M; everything else is unallocated everywhere.
make_chain ()
{
    make_qcow2_chain $size base=0x11@16M:2M mid=0x22@128M:2M \
        top=0x33@200M:1M
}

chain_config="nodes:
  base: { driver: qcow2, file: { driver: file, filename: @DIR@/base.qcow2 },
          backing: null }
  mid: { driver: qcow2, file: { driver: file, filename: @DIR@/mid.qcow2 },
         backing: base }
  top: { driver: qcow2, file: { driver: file, filename: @DIR@/top.qcow2 },
         backing: mid }
exports:
  vm1: { node: top, writable: true }"

# run_job ID COMMAND 'MEMBERS' [--complete]: start job ID with QMP
# COMMAND (arguments: job-id, auto-dismiss false and MEMBERS), wait for
# it to complete, keep its total-progress (the bytes it had to copy) in
# $progress, dismiss it, and flush the export so the images are on disk.
run_job ()
{
    local id=$1 cmd=$2 members=$3
    nbdgraphctl qmp "{\"execute\": \"$cmd\", \"arguments\": {
        \"job-id\": \"$id\", \"auto-dismiss\": false, $members }}" > $out
    jq -e '.return' $out
    timeout 120 "$top_builddir/nbdgraphctl" --socket "$ctl" wait $4 "$id" \
        > $out
    grep -q "job '$id' completed" $out
    progress=$(nbdgraphctl qmp '{"execute": "query-jobs"}' |
        jq --arg id "$id" '.return[] | select(.id == $id) |
            ."total-progress"')
    echo "$id: total-progress $progress"
    nbdgraphctl qmp "{\"execute\": \"job-dismiss\",
        \"arguments\": {\"id\": \"$id\"}}" | jq -e '.return'
    qemu-io -f raw -c flush "$uri" > /dev/null
}

# 1. Stream with no base: top gets base's and mid's data, nothing else.
make_chain
start_nbdgraphd "$chain_config" vm1
run_job s0 block-stream '"device": "top"'
test "$progress" -le $((6 << 20))
stop_nbdgraphd
check_sparse top.qcow2 6 8
qemu-img info --backing-chain top.qcow2 | grep -c '^image:' | grep -qx 1

# 2. Stream with a base: top gets mid's data only.
make_chain
start_nbdgraphd "$chain_config" vm1
run_job s1 block-stream '"device": "top", "base-node": "base"'
test "$progress" -le $((3 << 20))
stop_nbdgraphd
check_sparse top.qcow2 4 6

# 3. Commit mid into base (intermediate), then top into base (active):
# base ends with the chain's 5 MiB of data and nothing more.
make_chain
start_nbdgraphd "$chain_config" vm1
run_job c0 block-commit '"device": "top", "top-node": "mid",
    "base-node": "base"'
run_job c1 block-commit '"device": "top", "base-node": "base"' --complete
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
check_sparse base.qcow2 6 8

# 4. A memory overlay over a sparse raw file (half its size: the rest
# reads as zeroes): after the stream the overlay has pages for the
# file's data only; the rest is a hole.
rm -f disk.raw
truncate -s 128M disk.raw
qemu-io -f raw -c 'write -P 0x44 32M 1M' disk.raw > /dev/null
start_nbdgraphd "nodes:
  disk: { driver: file, filename: @DIR@/disk.raw, read-only: true }
  ov: { driver: memory, size: $size, backing: disk }
exports:
  vm1: { node: ov, writable: true }" vm1
qemu-io -f raw -c 'write -P 0x55 100M 1M' "$uri" > /dev/null
cp disk.raw want.raw
truncate -s $size want.raw
qemu-io -f raw -c 'write -P 0x55 100M 1M' want.raw > /dev/null
run_job s2 block-stream '"device": "ov"'
test "$progress" -le $((2 << 20))
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "ov") | .children | length == 0'
qemu-img compare -f raw -F raw "$uri" want.raw
qemu-img map -f raw --output=json "$uri" > $out
cat $out
jq -e '[.[] | select(.data) | .length] | add <= 2097152' $out
stop_nbdgraphd
