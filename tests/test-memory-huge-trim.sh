#!/usr/bin/env bash
# tests/test-memory-huge-trim.sh: a trim of a huge, mostly empty memory
# disk costs what the disk holds, not the range.  Without a backing node
# the pages past the last one ever written are unallocated already; a
# trim of all 16 TiB used to visit each of their 268 M table entries
# (and write NULL over each, making the whole 2 GiB page table real: a
# page fault per 4 KiB, half a million).  The daemon's minor-fault
# count shows the walk, as in test-memory-huge-close.sh.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
requires jq --version
start_nbdgraphd "nodes:
  m0: { driver: memory, size: 1M }
exports:
  demo: { node: m0, writable: true }"

nbdgraphctl add-node big memory size=16T
nbdgraphctl add-export big big --writable
big=$(uri_for big)
qemu-io -f raw -c 'write -P 0x61 0 64k' -c 'write -P 0x62 64G 64k' "$big" |
    grep -c '^wrote' | grep -qx 2
# gib_commands OP COUNT START: qemu-io commands for its stdin, COUNT of
# OP (discard, write -z -u) of 1 GiB each from START GiB on, leaving out
# the first page of the disk (untraced: 16,384 lines).
gib_commands ()
(
    set +x
    for ((i = $3; i < $3 + $2; i++)); do
        if [ "$i" -eq 0 ]; then
            echo "$1 65536 $(( (1 << 30) - 65536 ))"
        else
            echo "$1 $((i << 30)) $((1 << 30))"
        fi
    done
)

# Everything but the first page, 16,384 trims: frees the page at 64 GiB,
# then (with the walk up to there, 8 MiB of table, 4,096 faults) nothing.
# The walk over the whole table costs a million faults and 2 GiB.
gib_commands discard 16384 0 > "$dir/trim"
before=$(nbdgraphd_minor_faults)
qemu-io -f raw "$big" < "$dir/trim" | grep -c 'discard [0-9]*/' |
    grep -qx 16384
after=$(nbdgraphd_minor_faults)
test $((after - before)) -lt 20000 ||
    fail "the trim faulted $((after - before)) pages in"
# The page kept holds its data; the one freed reads as zeroes and is a
# hole again.
qemu-io -f raw -c 'read -P 0x61 0 64k' -c 'read -P 0 64G 64k' "$big" |
    grep -c '^read' | grep -qx 2
qemu-img map -f raw --output=json --max-length=128G "$big" |
    jq -c '[.[] | [.start, .length, .data]]' > "$dir/map"
grep -qx '\[\[0,65536,true\],\[65536,137438887936,false\]\]' \
    "$dir/map" || { cat "$dir/map"; fail "the page freed is not a hole"; }
# A write-zeroes that may trim takes the same path: 1 TiB of it past the
# last page ever written walks nothing (65,536 faults before).
gib_commands 'write -z -u' 1024 128 > "$dir/zero"
before=$(nbdgraphd_minor_faults)
qemu-io -f raw "$big" < "$dir/zero" | grep -c 'wrote [0-9]*/' |
    grep -qx 1024
after=$(nbdgraphd_minor_faults)
test $((after - before)) -lt 20000 ||
    fail "the write-zeroes faulted $((after - before)) pages in"
qemu-io -f raw -c 'read -P 0x61 0 64k' "$big" | grep -q '^read'
nbdgraphctl del-export big
nbdgraphctl del-node big
nbdinfo --size "$(uri_for demo)" | grep -qx 1048576
