#!/usr/bin/env bash
# tests/test-quorum-blkverify.sh: quorum's `blkverify: true` (QEMU's
# blkverify mode of quorum): QEMU's rules at open (two children,
# vote-threshold 2, no rewrite-corrupted, read-pattern quorum); reads
# served while the children agree; a mismatch logs the range and aborts
# the daemon.
source "$srcdir/functions.sh"
set -euxo pipefail
requires qemu-io --version
ulimit -c 0                     # the abort is expected: no core file

# Refused at open, each with its reason.
bad() {   # bad EXPECTED-MESSAGE QUORUM-OPTIONS
    cat > "$dir/bad.yaml" <<EOT
server:
  listen: [ "unix:$dir/bad.sock" ]
nodes:
  a: { driver: memory, size: 1M }
  b: { driver: memory, size: 1M }
  c: { driver: memory, size: 1M }
  q: { driver: quorum, blkverify: true, $2 }
EOT
    if "$NBDGRAPHD" --check-config --config "$dir/bad.yaml" \
            2> "$dir/bad.err"; then
        echo "$0: accepted: $2" >&2
        exit 1
    fi
    grep -F "$1" "$dir/bad.err"
}
bad "'blkverify' needs exactly two children and vote-threshold 2" \
    "children: [ a, b, c ], vote-threshold: 2"
bad "'blkverify' needs exactly two children and vote-threshold 2" \
    "children: [ a, b ], vote-threshold: 1"
bad "'rewrite-corrupted' cannot be used with 'blkverify'" \
    "children: [ a, b ], vote-threshold: 2, rewrite-corrupted: true"
bad "'blkverify' needs read-pattern 'quorum'" \
    "children: [ a, b ], vote-threshold: 2, read-pattern: fifo"

for f in a b; do
    qemu-img create -f raw "$dir/$f.img" 1M
    qemu-io -f raw -c "write -P 0x42 0 1M" "$dir/$f.img"
done
start_nbdgraphd "
nodes:
  a: { driver: file, filename: \"$dir/a.img\" }
  b: { driver: file, filename: \"$dir/b.img\" }
  q: { driver: quorum, children: [ a, b ], vote-threshold: 2,
       blkverify: true }
exports:
  demo: { node: q }"
qemu-io -r -f raw "$uri" -c "read -P 0x42 0 1M"

# Change b's copy behind the daemon's back: the next read over it ends
# the daemon with SIGABRT, its log naming the range first.
printf C | dd of="$dir/b.img" bs=1 seek=70000 conv=notrunc
pid=$nbdgraphd_pid
if qemu-io -r -f raw "$uri" -c "read 65536 65536"; then
    echo "$0: the mismatched read succeeded" >&2
    exit 1
fi
rc=0
timeout 30 tail --pid="$pid" -f /dev/null || true
wait "$pid" || rc=$?
nbdgraphd_pid=                  # gone: nothing for the EXIT trap to stop
test "$rc" -eq $((128 + 6))
grep -F "quorum: offset=65536 bytes=65536 contents mismatch: aborting" \
    "$dir/nbdgraphd.log"
