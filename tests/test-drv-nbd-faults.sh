#!/usr/bin/env bash
# tests/test-drv-nbd-faults.sh: the nbd driver when the remote is not
# there or goes away.  blockdev-add of an unreachable remote fails with
# a clear QMP error and leaves no node behind; open-timeout waits for a
# remote that comes up late.  A remote killed in the middle of a request
# fails that request with EIO, only for that node's clients, and the
# node works again once the remote is back; with reconnect-delay the
# requests in flight and those that come meanwhile wait and succeed when
# the remote comes back in time, and fail with EIO when it does not.
# (Config-file errors: tests/configs/bad-open/nbd-*.yaml.)
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
set -e -x
requires nbdkit --version
requires nbdinfo --version
requires qemu-io --version
requires python3 --version

M=$((1024 * 1024))
truncate -s $((16 * M)) "$dir/disk.img"
start_remote slow --filter=delay memory 16M rdelay=2
start_remote disk file "$dir/disk.img"
start_nbdgraphd "nodes:
  mem: { driver: memory, size: 16M }
  rs: { driver: nbd, server: { type: unix, path: \"@DIR@/slow.sock\" } }
  rd:
    driver: nbd
    reconnect-delay: 4
    server: { type: unix, path: \"@DIR@/disk.sock\" }
exports:
  demo: { node: mem, writable: true }
  slow: { node: rs, writable: true }
  rec: { node: rd, writable: true }"
slow=$(uri_for slow)
rec=$(uri_for rec)
out=$dir/out

# Unreachable at blockdev-add: a missing socket, a closed TCP port.
expect_status 1 nbdgraphctl add-node r9 nbd server.type=unix \
    server.path="$dir/none.sock" 2> $out
cat $out
grep -q "node 'r9': cannot connect to unix:$dir/none.sock" $out
port=$(free_port)
expect_status 1 nbdgraphctl add-node r9 nbd server.type=inet \
    server.host=127.0.0.1 server.port="$port" 2> $out
cat $out
grep -q "node 'r9': cannot talk to 127.0.0.1:$port: .*refused" $out
expect_status 1 nbdgraphctl add-node r9 nbd server.type=unix \
    server.path="$dir/none.sock" tls-creds=tls0 2> $out
grep -q "tls-creds 'tls0': no such client credentials" $out
nodes=$(nbdgraphctl nodes)
! grep r9 <<<"$nodes" || fail "a refused node r9 is in the graph"
# A read-only remote: refused unless the node is read-only too.
start_remote ro -r memory 1M
expect_status 1 nbdgraphctl add-node r9 nbd server.type=unix \
    server.path="$dir/ro.sock" 2> $out
grep -q "node 'r9': the export is read-only (give read-only: true)" $out
nodes=$(nbdgraphctl nodes)
! grep r9 <<<"$nodes" || fail "a refused node r9 is in the graph"
nbdgraphctl add-node r9 nbd server.type=unix server.path="$dir/ro.sock" \
    read-only=true
nbdgraphctl del-node r9
stop_remote ro
# open-timeout: the remote comes up a second after blockdev-add.
nbdgraphctl add-node late nbd server.type=unix \
    server.path="$dir/late.sock" open-timeout=20 > $out 2>&1 &
addpid=$!
sleep 1
start_remote late memory 1M
wait $addpid
nbdgraphctl nodes | grep -q '^late '
# Deleted while it tries to reconnect to a remote that went away.
stop_remote late
for i in $(seq 100); do
    grep -q "node 'late': lost the connection" "$dir/nbdgraphd.log" && break
    sleep 0.1
done
grep -q "node 'late': lost the connection" "$dir/nbdgraphd.log"
nbdgraphctl del-node late
nodes=$(nbdgraphctl nodes)
! grep '^late ' <<<"$nodes" || fail "node 'late' is still there after del-node"

# The slow remote dies with a read in flight: EIO for that read and,
# the connection being gone (reconnect-delay 0), for the next request
# at once; the memory export does not notice.
qemu-io -f raw "$slow" -c 'read 0 64k' > "$dir/inflight" 2>&1 &
qpid=$!
sleep 1
stop_remote slow
wait $qpid || true
cat "$dir/inflight"
grep -q 'read failed: Input/output error' "$dir/inflight"
qemu-io -f raw "$slow" -c 'write 0 4k' > $out 2>&1 || true
grep -q 'write failed: Input/output error' $out
qemu-io -f raw "$uri" -c 'write -P 0x5a 0 1M' -c 'read -P 0x5a 0 1M' |
    grep -q 'read 1048576'
# Back (without the delay): the node reconnects in the background.
start_remote slow memory 16M
for i in $(seq 100); do
    qemu-io -f raw "$slow" -c 'write -P 0x21 0 4k' -c 'read -P 0x21 0 4k' \
        > $out 2>&1 && ! grep -q failed $out && break
    sleep 0.2
done
grep -q 'read 4096' $out
! grep -q failed $out || fail "the slow remote did not come back: $(cat $out)"

# reconnect-delay 4: the remote goes away with a slow read in flight
# and comes back after a second: the read is issued again, and a write
# sent meanwhile waits, and both succeed.
qemu-io -f raw "$rec" -c 'write -P 0x11 0 1M' | grep -q 'wrote 1048576'
stop_remote disk
start_remote disk --filter=delay file "$dir/disk.img" rdelay=2
qemu-io -f raw "$rec" -c 'read -P 0x11 0 1M' > "$dir/inflight" 2>&1 &
qpid=$!
sleep 0.5
stop_remote disk
qemu-io -f raw "$rec" -c 'write -P 0x22 1M 1M' > $out 2>&1 &
wpid=$!
sleep 1
start_remote disk file "$dir/disk.img"
wait $qpid
wait $wpid
cat "$dir/inflight" $out
grep -q 'read 1048576' "$dir/inflight"
grep -q 'wrote 1048576' $out
! grep -q failed "$dir/inflight" $out ||
    fail "a request in flight over the reconnect failed"
qemu-io -f raw "$(remote_uri disk)" -c 'read -P 0x22 1M 1M' |
    grep -q 'read 1048576'
grep -q "node 'rd': lost the connection" "$dir/nbdgraphd.log"
grep -q "node 'rd': connection to the server is back" "$dir/nbdgraphd.log"

# Back too late: after reconnect-delay the waiting write fails with EIO,
# later requests fail at once, and once the remote is back they work.
stop_remote disk
qemu-io -f raw "$rec" -c 'write -P 0x33 2M 64k' > $out 2>&1 || true
cat $out
grep -q 'write failed: Input/output error' $out
qemu-io -f raw "$rec" -c 'read 0 4k' > $out 2>&1 || true
grep -q 'read failed: Input/output error' $out
start_remote disk file "$dir/disk.img"
for i in $(seq 100); do
    qemu-io -f raw "$rec" -c 'read -P 0x22 1M 1M' > $out 2>&1 &&
        ! grep -q failed $out && break
    sleep 0.2
done
grep -q 'read 1048576' $out
! grep -q failed $out || fail "the remote came back but reads still fail"
grep -q "node 'rd': server still unreachable after 4 s" "$dir/nbdgraphd.log"
# A daemon stops at once with a node that is reconnecting meanwhile.
stop_remote slow
stop_nbdgraphd
