#!/usr/bin/env bash
# tests/test-nbdkit.sh: the nbdkit leaf with the plugins Debian ships
# (memory, file, data, pattern, null, zero, sparse-random) and an API v1
# test plugin, loaded in process: qemu-io patterns, block status, and an
# nbdcopy round trip between an nbdkit-memory node and a file node.
source "$srcdir/functions.sh"
source "$srcdir/nbdkit.sh"
set -e -x
requires qemu-io --version
requires nbdcopy --version
requires python3 --version
for p in memory file data pattern null zero sparse-random; do
    requires test -f "$plugindir/nbdkit-$p-plugin.so"
done

head -c 4M /dev/urandom > $dir/src.raw
truncate -s 4M $dir/copy.raw
truncate -s 1M $dir/plain.raw
start_nbdgraphd "nodes:
  mem: { driver: nbdkit, plugin: memory, args: { size: 4M } }
  copy: { driver: file, filename: @DIR@/copy.raw }
  fp: { driver: nbdkit, plugin: file, args: { file: @DIR@/plain.raw } }
  data: { driver: nbdkit, plugin: data, read-only: true,
          args: { data: '1 2 3 @1000 0x55*8', size: 64K } }
  pat: { driver: nbdkit, plugin: pattern, args: { size: 1M },
         read-only: true }
  nul: { driver: nbdkit, plugin: 'null', args: { size: 1M }, read-only: true }
  zero: { driver: nbdkit, plugin: zero, read-only: true }
  sr: { driver: nbdkit, plugin: sparse-random, read-only: true,
        args: { size: 8M, seed: 42, percent: 50, runlength: 65536 } }
  v1: { driver: nbdkit, plugin: '$top_builddir/tests/nbdkit-ngtestv1-plugin.so' }
exports:
  demo: { node: mem, writable: true }
  copy: { node: copy, writable: true }
  fp: { node: fp, writable: true }
  data: { node: data }
  pat: { node: pat }
  nul: { node: nul }
  zero: { node: zero }
  sr: { node: sr }
  v1: { node: v1, writable: true }"

# memory: patterns, FUA, write-zeroes, trim (a hole afterwards).
qemu-io -f raw "$uri" \
    -c 'write -P 0x5a 0 1M' -c 'write -f -P 0xa5 1M 64k' \
    -c 'write -z 2M 64k' -c 'discard 3M 1M' -c 'flush' \
    -c 'read -P 0x5a 0 1M' -c 'read -P 0xa5 1M 64k' \
    -c 'read -P 0 2M 64k' -c 'read -P 0 3M 1M'
nbdinfo --map "$uri" > $dir/map
cat $dir/map
# 3M to 4M is a hole (it may merge with the zeroes before it).
awk '$3 == 3 && $1 <= 3145728 && $1 + $2 >= 4194304 { ok = 1 }
     END { exit !ok }' $dir/map

# nbdcopy round trip: a file into the memory node, the memory node into
# a file node; the same bytes come out.
nbdcopy $dir/src.raw "$uri"
nbdcopy "$uri" "$(uri_for copy)"
cmp $dir/src.raw $dir/copy.raw

# file plugin: writes land in the file.
qemu-io -f raw "$(uri_for fp)" -c 'write -P 0x77 4096 4096' -c 'flush'
python3 -c 'import sys; d = open(sys.argv[1], "rb").read()
assert d[4096:8192] == b"\x77" * 4096 and d[:4096] == bytes(4096)' \
    $dir/plain.raw

# data plugin: exactly the bytes its expression says.
nbdcopy "$(uri_for data)" $dir/data.raw
python3 - $dir/data.raw <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
want = bytearray(64 * 1024)
want[0:3] = b"\x01\x02\x03"
want[1000:1008] = b"\x55" * 8
assert d == bytes(want), "data plugin bytes differ"
PY

# pattern plugin: each 8 bytes hold their own offset, big-endian.
nbdcopy "$(uri_for pat)" $dir/pat.raw
python3 - $dir/pat.raw <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
assert len(d) == 1024 * 1024
for off in range(0, len(d), 8):
    assert struct.unpack(">Q", d[off:off + 8])[0] == off, off
PY

# null reads zeroes; zero is an empty disk.
qemu-io -r -f raw "$(uri_for nul)" -c 'read -P 0 0 1M'
[ "$(nbdinfo --size "$(uri_for zero)")" = 0 ]

# sparse-random: the same bytes on every read, holes in the map.
nbdcopy "$(uri_for sr)" $dir/sr1.raw
nbdcopy "$(uri_for sr)" $dir/sr2.raw
cmp $dir/sr1.raw $dir/sr2.raw
[ "$(nbdinfo --size "$(uri_for sr)")" = 8388608 ]
nbdinfo --map "$(uri_for sr)" > $dir/map
cat $dir/map
grep -q 'hole,zero$' $dir/map
grep -q ' data$' $dir/map

# API version 1 plugin: the v1 signatures, FUA emulated by a flush,
# write-zeroes (it has no .zero) by writing zeroes.
qemu-io -f raw "$(uri_for v1)" \
    -c 'write -P 0x42 0 64k' -c 'write -f -P 0x43 64k 64k' \
    -c 'write -P 0x44 128k 4k' -c 'write -z 128k 4k' -c 'flush' \
    -c 'read -P 0x42 0 64k' -c 'read -P 0x43 64k 64k' -c 'read -P 0 128k 4k'

stop_nbdgraphd
