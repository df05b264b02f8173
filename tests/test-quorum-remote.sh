#!/usr/bin/env bash
# tests/test-quorum-remote.sh: a quorum (vote-threshold 2) of three `nbd`
# leaves on three nbdkit memory remotes, the replicas on other hosts of
# issue 16.  One replica sits under a blkdebug filter that lets its first
# write and read of the first MiB through and fails every later one with
# EIO; another gets wrong data written straight on its remote, bypassing
# the quorum.  A client writing and reading through the quorum sees
# neither: every read matches what it wrote (and the whole disk compares
# equal to a local copy of the same writes).  The control socket gets
# QUORUM_REPORT_BAD for the failing child (write and read, with the
# error) and for the corrupted one (read, no error), and
# rewrite-corrupted repairs the corrupted remote (read there directly).
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
set -euxo pipefail
requires nbdkit --version
requires qemu-io --version
requires qemu-img --version
requires jq --version

M=$((1024 * 1024))
for r in r0 r1 r2; do
    start_remote $r memory 4M
done
leaf ()
{
    printf '  %s: { driver: nbd, server: { type: unix, path: "@DIR@/%s.sock" } }\n' \
        "$1" "$2"
}
start_nbdgraphd "nodes:
$(leaf n0 r0)
$(leaf n1 r1)
$(leaf n2 r2)
  bd1:
    driver: blkdebug
    image: n1
    inject-error:
      - { iotype: write, offset: 0, length: 1M, after: 1 }
      - { iotype: read, offset: 0, length: 1M, after: 1 }
  vote:
    driver: quorum
    children: [ n0, bd1, n2 ]
    vote-threshold: 2
    rewrite-corrupted: true
exports:
  demo: { node: vote, writable: true }"
out=$dir/out
# What the client writes, kept locally too, for the final comparison.
truncate -s 4M "$dir/expect.raw"
client ()
{
    qemu-io -f raw "$uri" "$@" > $out 2>&1 || { cat $out; return 1; }
    cat $out
    ! grep -q 'failed\|Pattern verification' $out
}
local_copy () { qemu-io -f raw "$dir/expect.raw" "$@" > /dev/null; }

# Listen for events; a GRAPH_CHANGED of ours shows the listener is up
# before the quorum has anything to report.
"$top_builddir/nbdgraphctl" --socket "$ctl" events --timeout 120 \
    > "$dir/events" &
events_pid=$!
for i in $(seq 100); do
    [ -s "$dir/events" ] && break
    nbdgraphctl add-node "sync$i" null-co size=1M
    sleep 0.2
done
[ -s "$dir/events" ]

# The first write and read of the first MiB still reach n1.
client -c 'write -P 0x11 0 4M' -c 'read -P 0x11 0 1M'
local_copy -c 'write -P 0x11 0 4M'
# From now on n1 fails there: the write succeeds on n0 and n2 (2 of 3)
# and the read is voted by them.
client -c 'write -P 0x22 0 1M' -c 'read -P 0x22 0 1M' \
    -c 'read -P 0x11 1M 3M'
local_copy -c 'write -P 0x22 0 1M'

# Wrong data on r2, written behind the quorum's back.
qemu-io -f raw "$(remote_uri r2)" -c 'write -P 0xee 2M 64k'
qemu-io -f raw "$(remote_uri r2)" -c 'read -P 0xee 2M 64k' | grep -q 'read 65536'
# The quorum outvotes it (n0 and n1 agree) and writes it back.
client -c 'read -P 0x11 2M 64k'
qemu-io -f raw "$(remote_uri r2)" -c 'read -P 0x11 2M 64k' > $out 2>&1 || true
cat $out
grep -q 'read 65536' $out
! grep -q 'Pattern verification' $out ||
    fail "the quorum did not repair r2's copy"
# The whole disk, through the quorum, is what the client wrote.
qemu-img compare -f raw -F raw "$uri" "$dir/expect.raw"

# A last GRAPH_CHANGED marks the end of what the listener must have seen.
nbdgraphctl add-node marker null-co size=1M
for i in $(seq 100); do
    grep -q '"marker"' "$dir/events" && break
    sleep 0.2
done
kill $events_pid
wait $events_pid || true
cat "$dir/events"
grep -q '"marker"' "$dir/events"
jq -es 'map(select(.event == "QUORUM_REPORT_BAD") | .data) |
        any(.type == "write" and .["node-name"] == "bd1" and
            .["sector-num"] == 0 and .["sectors-count"] == 2048 and
            .error == "Input/output error") and
        any(.type == "read" and .["node-name"] == "bd1" and
            .["sector-num"] == 0 and .["sectors-count"] == 2048 and
            .error == "Input/output error") and
        any(.type == "read" and .["node-name"] == "n2" and
            .["sector-num"] == 4096 and .["sectors-count"] == 128 and
            (has("error") | not))' "$dir/events"
grep -q "node 'vote': quorum: child 'n2' read offset=$((2 * M)) length=65536: contents differ from the majority" \
    "$dir/nbdgraphd.log"
stop_nbdgraphd
