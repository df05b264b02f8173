#!/usr/bin/env bash
# tests/test-qcow2-kill.sh: kill -9 of the daemon at any moment leaves a
# qcow2 image qemu-img check finds sound (clean, or leaked clusters only:
# exit 3), holding everything a flush or a FUA write made durable before
# the kill, and of the rest, per 512-byte sector, the old data or the new
# (the page cache survives a kill: what decides is the order of the
# daemon's writes).  A bare NBD client (qcow2-kill-client.py) writes
# patterns, zeroes and trims at scattered offsets, up to 8 at once, with
# flushes between, and kills the daemon during writes, during a flush,
# right after one, right after a FUA write; on 512 B, 4 KiB, 64 KiB and
# 128 KiB clusters (512 B: the refcount table moves, the header with it;
# 128 KiB: zeroes written in place over part of a cluster are more than
# the file's loop shortcut takes, so a worker writes them, after the
# qcow2 step that issued them returned) and caches from QEMU's floor
# (write-back rounds all the time) to the default.  Then two jobs that
# rewrite a header, killed right after the rewrite: block-stream (the
# header names no backing file: the tables holding the streamed data
# must be in the file by then) and an intermediate block-commit (the
# overlay's header names the base: the base's tables holding the
# committed data must be); the image opens again afterwards.
# QCOW2_KILL_SEED repeats a run's requests (not their timing).
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires python3 --version

client=$srcdir/qcow2-kill-client.py
seed=${QCOW2_KILL_SEED:-$RANDOM}
echo "seed $seed (QCOW2_KILL_SEED=$seed repeats this run)"
cd "$dir"
TINY=', l2-cache-size: 0, refcount-cache-size: 0'

# reap: the daemon was killed; forget it.
reap ()
{
    wait "$nbdgraphd_pid" || true
    nbdgraphd_pid=
    rm -f "$sock" "$ctl"
}

# check_image IMAGE: qemu-img check finds no corruption (3: leaks only).
check_image ()
{
    local rc=0

    qemu-img check "$1" || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] ||
        fail "qemu-img check of $1 exited $rc after the kill"
}

qcow2_node ()
{
    printf '  %s: { driver: qcow2, %s\n      file: { driver: file, filename: "@DIR@/%s.qcow2" } }\n' \
        "$1" "$2" "$1"
}

# writes_round N CLUSTER_SIZE OPTIONS MODE: a fresh 64 MiB image, the
# client's writes, the kill at MODE, then the checks.
writes_round ()
{
    rm -f k.qcow2
    qemu-img create -q -f qcow2 -o cluster_size="$2" k.qcow2 64M
    start_nbdgraphd "nodes:
$(qcow2_node k "${3#, }${3:+,}")
exports:
  demo: { node: k, writable: true }"
    python3 "$client" run "$sock" demo "$nbdgraphd_pid" $((64 << 20)) \
        $((seed + $1)) "$4" model.json
    reap
    check_image k.qcow2
    qemu-img convert -f qcow2 -O raw k.qcow2 k.raw
    python3 "$client" check k.raw model.json ||
        fail "round $1 (clusters of $2, '$3', killed $4): data lost"
}

writes_round 1 512 "$TINY" during-writes
writes_round 2 4096 "$TINY" during-flush
writes_round 3 65536 '' after-flush
writes_round 4 512 '' after-fua
writes_round 5 4096 ', l2-cache-size: 16K' during-writes
writes_round 6 512 "$TINY" after-flush
writes_round 7 65536 "$TINY" during-flush
writes_round 8 4096 '' after-fua
writes_round 9 131072 '' during-writes

# ---- block-stream: killed once the header names no backing -------------

# 160 pieces of 4 KiB spread over the base: in a top of 512-byte
# clusters each needs an L2 table of its own, and with room for all the
# refcount blocks, the cache holds them all dirty until the header's
# write-back round.
rm -f base.qcow2 mid.qcow2 top.qcow2
qemu-img create -q -f qcow2 base.qcow2 64M
cmds=()
for i in $(seq 0 159); do
    cmds+=(-c "write -P $((i % 200 + 1)) $((i * 409600 + i * 512)) 4k")
done
qemu-io -f qcow2 "${cmds[@]}" base.qcow2 > /dev/null
qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 \
    top.qcow2
qemu-io -f qcow2 -c 'write -P 0xee 1M 64k' top.qcow2 > /dev/null
qemu-img convert -f qcow2 -O raw top.qcow2 want.raw
# Room in the file: the delay filter below cannot grow it.
truncate -s 16M top.qcow2
# Flushes of top's file are slow: a header written before the tables
# would stand alone there long enough for the watcher to see it (it
# polls the file) and kill the daemon.
start_nbdgraphd "nodes:
$(qcow2_node base 'backing: null,')
  top: { driver: qcow2, backing: base, refcount-cache-size: 1M,
         file: { driver: delay, delay-flush: ${QCOW2_KILL_FLUSH_DELAY:-300ms},
                 file: { driver: file, filename: \"@DIR@/top.qcow2\" } } }
exports:
  vm1: { node: top, writable: true }" vm1
python3 "$client" header top.qcow2 "$nbdgraphd_pid" '' 60 &
poller=$!
nbdgraphctl stream top --job-id s0
wait $poller || fail "block-stream did not rewrite the header"
reap
check_image top.qcow2
qemu-img compare -f qcow2 -F raw top.qcow2 want.raw ||
    fail "killed after block-stream rewrote the header: data lost"

# ---- block-commit mid into base: killed once top's header names base ---

rm -f base.qcow2 mid.qcow2 top.qcow2
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x11 32M 1M' base.qcow2 > /dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -f qcow2 "${cmds[@]}" mid.qcow2 > /dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -P 0xee 1M 64k' top.qcow2 > /dev/null
qemu-img convert -f qcow2 -O raw top.qcow2 want.raw
start_nbdgraphd "nodes:
$(qcow2_node base 'backing: null,')
$(qcow2_node mid 'backing: base,')
$(qcow2_node top 'backing: mid,')
exports:
  vm1: { node: top, writable: true }" vm1
python3 "$client" header top.qcow2 "$nbdgraphd_pid" /base.qcow2 60 &
poller=$!
nbdgraphctl commit top --top mid --base base --job-id c0
wait $poller || fail "block-commit did not rewrite the header"
reap
check_image base.qcow2
check_image top.qcow2
qemu-img compare -f qcow2 -F raw top.qcow2 want.raw ||
    fail "killed after block-commit rewrote the header: data lost"

# The image a kill left opens again, by its header chain, and serves
# the same data; this daemon stops as usual (a sanitizer build checks
# it then).
start_nbdgraphd "nodes:
$(qcow2_node top '')
exports:
  vm1: { node: top, writable: true }" vm1
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
