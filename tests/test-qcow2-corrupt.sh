#!/usr/bin/env bash
# tests/test-qcow2-corrupt.sh: metadata found wrong while serving (an L2
# entry of an image made by qemu-img, patched before open to point at
# the refcount table: aligned and inside the file, so the open takes
# it).  The write that would land there fails with EIO and writes
# nothing; the image is marked corrupt in its header (qemu-img sees
# it), later writes fail, reads go on, the log says it once with the
# file and offset, and BLOCK_IMAGE_CORRUPTED reaches the control
# clients.  A second image has the refcount of its L2 table patched to
# 0 (its only data cluster discarded first, so the table is the last
# cluster in use): the next allocation hands out the table's cluster,
# and the same check stops the write there.  A third image has more L2
# tables than its cache holds: the one not loaded at open points past the
# end of the file, and its load at run time marks the image the same way.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires python3 --version
requires jq --version

cd "$dir"
img=$dir/c.qcow2
qemu-img create -q -f qcow2 "$img" 4M
qemu-io -f qcow2 -c 'write -P 0x11 0 128K' "$img" > /dev/null
# L2[0] := the refcount table's cluster, with the COPIED flag.
reft=$(python3 - "$img" <<'EOF2'
import struct, sys
f = open(sys.argv[1], 'r+b')
hdr = f.read(104)
l1 = struct.unpack('>Q', hdr[40:48])[0]
reft = struct.unpack('>Q', hdr[48:56])[0]
f.seek(l1); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
f.seek(l2); f.write(struct.pack('>Q', reft | (1 << 63)))
print(reft)
EOF2
)
dd if="$img" of=reft.before bs=65536 skip=$((reft / 65536)) count=1 status=none
img2=$dir/d.qcow2
qemu-img create -q -f qcow2 "$img2" 4M
qemu-io -f qcow2 -c 'write -P 0x11 0 64K' -c 'discard 0 64K' "$img2" > /dev/null
l2=$(python3 - "$img2" <<'EOF2'
import struct, sys
f = open(sys.argv[1], 'r+b')
hdr = f.read(104)
l1 = struct.unpack('>Q', hdr[40:48])[0]
reft = struct.unpack('>Q', hdr[48:56])[0]
f.seek(l1); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
f.seek(reft); rb = struct.unpack('>Q', f.read(8))[0]
c = l2 >> 16
f.seek(rb + 2 * (c + 1))
assert struct.unpack('>H', f.read(2))[0] == 0, "data cluster not freed"
f.seek(rb + 2 * c); f.write(struct.pack('>H', 0))
print(l2)
EOF2
)
dd if="$img2" of=l2.before bs=65536 skip=$((l2 / 65536)) count=1 status=none
img3=$dir/e.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img3" 8M
# 2M per L2 table: tables 0, 1 and 3; a cache of two loads 0 and 1.
qemu-io -f qcow2 -c 'write -P 0x11 0 4K' -c 'write -P 0x11 2M 4K' \
    -c 'write -P 0x11 6M 4K' "$img3" > /dev/null
l2_3=$(python3 - "$img3" <<'EOF2'
import struct, sys
f = open(sys.argv[1], 'r+b')
hdr = f.read(104)
l1 = struct.unpack('>Q', hdr[40:48])[0]
f.seek(l1 + 3 * 8); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
f.seek(l2); f.write(struct.pack('>Q', (1 << 40) | (1 << 63)))
print(l2)
EOF2
)

start_nbdgraphd "nodes:
  q: { driver: qcow2, file: { driver: file, filename: @DIR@/c.qcow2 } }
  r: { driver: qcow2, file: { driver: file, filename: @DIR@/d.qcow2 } }
  t: { driver: qcow2, l2-cache-size: 8192,
       file: { driver: file, filename: @DIR@/e.qcow2 } }
exports:
  vm1: { node: q, writable: true }
  vm2: { node: r, writable: true }
  vm3: { node: t, writable: true }" vm1
# Listen; a GRAPH_CHANGED of ours shows the listener is up.
nbdgraphctl events --timeout 120 > events &
events_pid=$!
for i in $(seq 100); do
    [ -s events ] && break
    nbdgraphctl add-node "sync$i" null-co size=1M
    sleep 0.2
done
[ -s events ]

! qemu-io -f raw -c 'write -P 0x22 0 4K' "$uri" > out 2>&1 ||
    { cat out; fail "a write over the refcount table succeeded"; }
cat out
grep -q 'Input/output error' out
# Refused from then on, even where the tables are right; reads go on.
! qemu-io -f raw -c 'write -P 0x22 64K 4K' "$uri" > out 2>&1 ||
    { cat out; fail "a write to an image marked corrupt succeeded"; }
grep -q 'Input/output error' out
qemu-io -f raw -c 'read -P 0x11 64K 64K' "$uri" | grep -q 'read 65536'

# The header goes to disk by the write-back: a flush behind it waits.
qemu-io -f raw -c flush "$uri"
qemu-img info -U --output=json "$img" > info
cat info
jq -e '."format-specific".data.corrupt == true' info
dd if="$img" of=reft.after bs=65536 skip=$((reft / 65536)) count=1 status=none
cmp reft.before reft.after

# The allocation that would hand out the L2 table's cluster.
uri2=$(uri_for vm2)
! qemu-io -f raw -c 'write -P 0x22 1M 64K' "$uri2" > out 2>&1 ||
    { cat out; fail "an allocation over the L2 table succeeded"; }
cat out
grep -q 'Input/output error' out
qemu-io -f raw -c flush "$uri2"
qemu-img info -U --output=json "$img2" |
    jq -e '."format-specific".data.corrupt == true'
dd if="$img2" of=l2.after bs=65536 skip=$((l2 / 65536)) count=1 status=none
cmp l2.before l2.after

# The L2 table loaded at run time: the read fails, writes are refused
# from then on, the tables that were right still read.
uri3=$(uri_for vm3)
! qemu-io -f raw -c 'read -P 0x11 6M 4K' "$uri3" > out 2>&1 ||
    { cat out; fail "a read through a bad L2 entry succeeded"; }
cat out
grep -q 'Input/output error' out
! qemu-io -f raw -c 'write -P 0x22 0 4K' "$uri3" > out 2>&1 ||
    { cat out; fail "a write to an image marked corrupt succeeded"; }
grep -q 'Input/output error' out
qemu-io -f raw -c 'read -P 0x11 2M 4K' "$uri3" | grep -q 'read 4096'
qemu-io -f raw -c flush "$uri3"
qemu-img info -U --output=json "$img3" |
    jq -e '."format-specific".data.corrupt == true'

# The event, as QEMU's.
nbdgraphctl add-node marker null-co size=1M
for i in $(seq 100); do
    grep -q '"marker"' events && break
    sleep 0.2
done
kill $events_pid
wait $events_pid || true
cat events
jq -es --argjson r "$reft" --argjson l2 "$l2" --argjson l2_3 "$l2_3" 'map(select(.event == "BLOCK_IMAGE_CORRUPTED") |
        .data) | length == 3 and .[0]."node-name" == "q" and
        .[0].offset == $r and .[0].size == 4096 and .[0].fatal == true and
        (.[0].msg | test("would overwrite the refcount table")) and
        .[1]."node-name" == "r" and .[1].offset == $l2 and
        (.[1].msg | test("guest offset 1048576 would overwrite an L2 table")) and
        .[2]."node-name" == "t" and .[2].offset == $l2_3 and
        .[2].size == 4096 and .[2].fatal == true and
        (.[2].msg | test("^L2 entry for guest offset 6291456 points to 1099511627776, unaligned or past the end of the file"))
        ' events
stop_nbdgraphd
cat nbdgraphd.log
[ "$(grep -c "c.qcow2': a write to guest offset 0 would overwrite the refcount table (offset $reft, 4096 bytes); marked corrupt" nbdgraphd.log)" = 1 ]
[ "$(grep -c "e.qcow2': L2 entry for guest offset 6291456 points to .* (offset $l2_3, 4096 bytes); marked corrupt" nbdgraphd.log)" = 1 ]

# Marked: a writer is refused at open now, as QEMU refuses one.
printf 'server:\n  listen: ["unix:%s/s"]\nnodes:\n  q: { driver: qcow2, file: { driver: file, filename: "%s" } }\nexports:\n  demo: { node: q, writable: true }\n' \
    "$dir" "$img" > again.yaml
! "$NBDGRAPHD" --check-config --config again.yaml > out 2>&1 ||
    { cat out; fail "--check-config let a writer open a corrupt image"; }
cat out
grep -q 'marked corrupt' out
