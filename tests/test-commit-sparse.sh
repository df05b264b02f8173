#!/usr/bin/env bash
# tests/test-commit-sparse.sh: block-commit copies only what the layers
# above the base hold (QEMU's commit copies what bdrv_is_allocated_above
# finds between top and base).  The base's own data is not read and
# written back, ranges no layer above the base holds stay as they are in
# the base (a hole there keeps showing the base's backing), and
# total-progress is the bytes above the base, not the disk.  A 256 MiB
# qcow2 chain bottom <- base <- mid <- top with 5 MiB above the base,
# committed active (top into base) and intermediate (mid into base).
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"
size=256M

# chain: bottom has 4 MiB at 8M, base 2 MiB at 16M, mid 4 MiB at 128M,
# top 1 MiB at 200M; everything else is unallocated everywhere.
chain ()
{
    make_qcow2_chain $size bottom=0x11@8M:4M base=0x22@16M:2M \
        mid=0x33@128M:4M top=0x44@200M:1M
}

chain_config="nodes:
  bottom: { driver: qcow2, backing: null,
            file: { driver: file, filename: @DIR@/bottom.qcow2 } }
  base: { driver: qcow2, backing: bottom,
          file: { driver: file, filename: @DIR@/base.qcow2 } }
  mid: { driver: qcow2, backing: base,
         file: { driver: file, filename: @DIR@/mid.qcow2 } }
  top: { driver: qcow2, backing: mid,
         file: { driver: file, filename: @DIR@/top.qcow2 } }
exports:
  vm1: { node: top, writable: true }"

# run_commit ID 'MEMBERS' [--complete]: block-commit job ID (arguments:
# job-id, device top, auto-dismiss false and MEMBERS), wait for it to
# complete, keep its total-progress in $progress, dismiss it, flush.
run_commit ()
{
    local id=$1
    qmp "{\"execute\": \"block-commit\", \"arguments\": {
        \"job-id\": \"$id\", \"device\": \"top\", \"auto-dismiss\": false,
        $2 }}" > $out
    jq -e '.return' $out
    timeout 120 "$top_builddir/nbdgraphctl" --socket "$ctl" wait $3 "$id" \
        > $out
    grep -q "job '$id' completed" $out || fail "job $id did not complete"
    progress=$(qmp '{"execute": "query-jobs"}' |
        jq --arg id "$id" '.return[] | select(.id == $id) |
            ."total-progress"')
    echo "$id: total-progress $progress"
    qmp "{\"execute\": \"job-dismiss\", \"arguments\": {\"id\": \"$id\"}}" |
        jq -e '.return'
    qemu-io -f raw -c flush "$uri" > /dev/null
}

# own_bytes IMAGE: bytes `qemu-img map` says IMAGE holds in its own
# layer, data or zero clusters alike (depth 0, present).
own_bytes ()
{
    qemu-img map -U -f qcow2 --output=json "$1" |
        jq '[.[] | select(.depth == 0 and .present) | .length] | add // 0'
}

# check_base ALLOWED: base.qcow2 is sound, reads (with bottom below it)
# as want.raw, holds no more than ALLOWED bytes itself, and bottom's
# 4 MiB at 8M still comes from bottom.
check_base ()
{
    qemu-img check base.qcow2
    qemu-img compare -f qcow2 -F raw base.qcow2 want.raw
    qemu-img map -f qcow2 base.qcow2
    test "$(own_bytes base.qcow2)" -le "$1" ||
        fail "base.qcow2 holds $(own_bytes base.qcow2) bytes, not <= $1"
    qemu-img map -U -f qcow2 --output=json base.qcow2 > $out
    jq -e '[.[] | select(.start < 12582912 and .start + .length > 8388608)
            | .depth == 1] | all' $out ||
        fail "bottom's data was copied into base"
}

# 1. Active commit, top into base: mid's 4 MiB and top's 1 MiB go down.
chain
start_nbdgraphd "$chain_config" vm1
run_commit c0 '"base-node": "base"' --complete
test "$progress" -eq $((5 << 20)) ||
    fail "active commit total-progress $progress, not 5 MiB"
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
check_base $((7 << 20))

# 2. Intermediate commit, mid into base: mid's 4 MiB only; top keeps its
# own 1 MiB and now reads through to base.
chain
start_nbdgraphd "$chain_config" vm1
run_commit c1 '"top-node": "mid", "base-node": "base"'
test "$progress" -eq $((4 << 20)) ||
    fail "intermediate commit total-progress $progress, not 4 MiB"
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
qemu-img convert -U -f qcow2 -O raw base.qcow2 base.raw
qemu-io -f raw -c 'write -P 0x44 200M 1M' base.raw > /dev/null
cmp base.raw want.raw || fail "base does not hold mid's data"
rm -f base.raw
qemu-img compare -f qcow2 -F raw top.qcow2 want.raw
test "$(own_bytes base.qcow2)" -le $((6 << 20)) ||
    fail "base.qcow2 holds more than its own and mid's data"

# 3. A client writes during an active commit, once it is ready (`wait`
# without --complete returns then): what it wrote goes down too
# (total-progress grows by it), and the base reads as the client saw.
chain
start_nbdgraphd "$chain_config" vm1
qmp '{"execute": "block-commit", "arguments": {"job-id": "c2",
    "device": "top", "base-node": "base", "auto-dismiss": false}}'
timeout 120 "$top_builddir/nbdgraphctl" --socket "$ctl" wait c2
qemu-io -f raw -c 'write -P 0x55 64M 1M' "$uri" > /dev/null
qemu-io -f raw -c 'write -P 0x55 64M 1M' want.raw > /dev/null
timeout 120 "$top_builddir/nbdgraphctl" --socket "$ctl" wait --complete c2
progress=$(qmp '{"execute": "query-jobs"}' |
    jq '.return[] | select(.id == "c2") | ."total-progress"')
test "$progress" -eq $((6 << 20)) ||
    fail "active commit with a client write: total-progress $progress"
qemu-io -f raw -c flush "$uri" > /dev/null
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
check_base $((8 << 20))
