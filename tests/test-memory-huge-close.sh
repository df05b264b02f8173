#!/usr/bin/env bash
# tests/test-memory-huge-close.sh: removing a huge, mostly empty memory
# disk costs what it holds, not its virtual size.  A 16 TiB disk has a
# 2 GiB page table; closing it used to read every entry, a page fault
# per 4 KiB of table (half a million) and seconds on the loop thread
# under ASan.  The daemon's minor-fault count shows the walk.
source "$srcdir/functions.sh"
set -e -x
start_nbdgraphd "nodes:
  m0: { driver: memory, size: 1M }
exports:
  demo: { node: m0, writable: true }"

nbdgraphctl add-node big memory size=16T
nbdgraphctl add-export big big --writable
# Pages near the start, and one 64 GiB in: what close must free.
qemu-io -f raw -c 'write -P 0x61 0 64k' -c 'write -P 0x62 64G 4k' \
    -c 'read -P 0x62 64G 4k' "$(uri_for big)" | grep -c '^wrote\|^read' |
    grep -qx 3
nbdgraphctl del-export big
before=$(nbdgraphd_minor_faults)
nbdgraphctl del-node big
after=$(nbdgraphd_minor_faults)
# Walking the 2 GiB table costs 524,288 faults; the 8 MiB up to the last page, 2,048.
test $((after - before)) -lt 20000
nbdgraphctl nodes > $dir/nodes
! grep -q '^big ' $dir/nodes
# The daemon still serves.
nbdinfo --size "$(uri_for demo)" | grep -qx 1048576
