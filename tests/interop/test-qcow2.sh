#!/usr/bin/env bash
# tests/interop/test-qcow2.sh: the qcow2 driver against QEMU's tools.
# Images qemu-img and qemu-io made (cluster sizes 512 B to 2 MiB, v2,
# compressed and zero clusters, extended L2, a backing chain) read the
# same through nbdgraphd as qemu reads them; writes through nbdgraphd
# (qemu-io patterns, many parallel 4 KiB writes from nbdcopy) leave
# images that `qemu-img check` finds clean and `qemu-img compare` finds
# equal to a raw reference; a kill -9 during writes leaves at most
# leaked clusters; copy-on-read over an overlay copies the base up (this
# layer's block status); `qemu-img convert` of an export round-trips.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires nbdcopy --version

M=$((1024 * 1024))

# pattern FILE FORMAT: the same writes (patterns, zeroes) on any image.
pattern ()
{
    qemu-io -f "$2" \
        -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1536k 100k' \
        -c 'write -P 0x33 5M 4k' -c 'write -z 6M 1M' \
        -c 'write -P 0x44 9000k 3M' "$1" >/dev/null
}

# ---- Reads of images qemu made -------------------------------------------

truncate -s 16M "$dir/ref.raw"
pattern "$dir/ref.raw" raw
for c in 512 64k 2M; do
    qemu-img create -q -f qcow2 -o cluster_size=$c "$dir/c$c.qcow2" 16M
    pattern "$dir/c$c.qcow2" qcow2
done
qemu-img create -q -f qcow2 -o compat=0.10 "$dir/v2.qcow2" 16M
pattern "$dir/v2.qcow2" qcow2
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k \
    "$dir/ext.qcow2" 16M
pattern "$dir/ext.qcow2" qcow2
qemu-img convert -q -c -f raw -O qcow2 "$dir/ref.raw" "$dir/comp.qcow2"

# A chain: base holds the pattern, the overlay changes one range.
qemu-img create -q -f qcow2 "$dir/base.qcow2" 16M
pattern "$dir/base.qcow2" qcow2
qemu-img create -q -f qcow2 -b "$dir/base.qcow2" -F qcow2 "$dir/top.qcow2"
qemu-io -f qcow2 -c 'write -P 0x77 1M 70k' "$dir/top.qcow2" >/dev/null
# The same overlay naming its backing file relatively.
(cd "$dir" && qemu-img create -q -f qcow2 -u -b base.qcow2 -F qcow2 rel.qcow2 16M)
qemu-io -f qcow2 -c 'write -P 0x77 1M 70k' "$dir/rel.qcow2" >/dev/null
cp "$dir/ref.raw" "$dir/chain.raw"
qemu-io -f raw -c 'write -P 0x77 1M 70k' "$dir/chain.raw" >/dev/null

ro_node ()
{
    printf '  %s: { driver: qcow2, read-only: true, file: { driver: file, read-only: true, filename: "@DIR@/%s" }%s }\n' \
        "$1" "$2" "${3-}"
}

start_nbdgraphd "nodes:
$(ro_node c512 c512.qcow2)
$(ro_node c64k c64k.qcow2)
$(ro_node c2M c2M.qcow2)
$(ro_node v2 v2.qcow2)
$(ro_node ext ext.qcow2)
$(ro_node comp comp.qcow2)
$(ro_node base base.qcow2)
$(ro_node top top.qcow2 ', backing: base')
$(ro_node cut top.qcow2 ', backing: null')
$(ro_node rel rel.qcow2)
exports:
  demo: { node: c64k }
  c512: { node: c512 }
  c2M: { node: c2M }
  v2: { node: v2 }
  ext: { node: ext }
  comp: { node: comp }
  top: { node: top }
  cut: { node: cut }
  rel: { node: rel }"

for e in demo c512 c2M v2 ext comp; do
    qemu-img compare -f raw -F raw "$dir/ref.raw" "$(uri_for $e)"
done
qemu-img compare -f raw -F raw "$dir/chain.raw" "$(uri_for top)"
# Its backing file found by the header's name, next to it.
qemu-img compare -f raw -F raw "$dir/chain.raw" "$(uri_for rel)"
# Block status through the chain: the base's data at 0 and the
# overlay's two clusters at 1M are data, what neither has is a hole.
nbdinfo --map "$(uri_for rel)" > "$dir/map"
cat "$dir/map"
grep -Eq '^ +0 +1179648 +0 +data' "$dir/map"
grep -Eq '^ +1179648 +[0-9]+ +3 +hole,zero' "$dir/map"
# Cut from its backing, the overlay has only its own range.
truncate -s 16M "$dir/cut.raw"
qemu-io -f raw -c 'write -P 0x77 1M 70k' "$dir/cut.raw" >/dev/null
qemu-img compare -f raw -F raw "$dir/cut.raw" "$(uri_for cut)"

# Block status: data, holes and zero clusters as qemu-img map sees them.
nbdinfo --map "$uri" > "$dir/map"
grep -Eq '^ +6291456 +1048576 +2 +zero' "$dir/map"
grep -Eq '^ +0 +1048576 +0 +data' "$dir/map"
stop_nbdgraphd

# ---- Writes ---------------------------------------------------------------

# writes URI RAW: more writes, to the export and to the raw reference:
# into unallocated, allocated, zero and partial clusters, zeroes, trims.
writes ()
{
    local cmd
    for cmd in 'write -P 0x55 3M 4k' 'write -P 0x56 5M 8k' \
               'write -P 0x57 12M 3M' 'write -P 0x58 1000k 100k' \
               'write -P 0x59 6100k 10k' 'write -z 12M 64k' \
               'write -z 13M 10k' 'discard 14M 2M' \
               'write -P 0x5a 16380k 4k' 'write -f -P 0x5b 200k 4k'; do
        qemu-io -f raw -c "$cmd" "$1" >/dev/null
        qemu-io -f raw -c "$cmd" "$2" >/dev/null
    done
}

rw_node ()
{
    printf '  %s: { driver: qcow2, file: { driver: file, filename: "@DIR@/%s" }%s }\n' \
        "$1" "$2" "${3-}"
}

for f in c512 c64k c2M v2 comp top; do
    cp "$dir/ref.raw" "$dir/w-$f.raw"
done
cp "$dir/chain.raw" "$dir/w-top.raw"
# Refcounts of other widths than 16 bits, written too.
for b in 1 64; do
    qemu-img create -q -f qcow2 -o refcount_bits=$b,cluster_size=4k \
        "$dir/r$b.qcow2" 16M
done
start_nbdgraphd "nodes:
$(rw_node r1 r1.qcow2)
$(rw_node r64 r64.qcow2)
$(rw_node c512 c512.qcow2)
$(rw_node c64k c64k.qcow2)
$(rw_node c2M c2M.qcow2)
$(rw_node v2 v2.qcow2)
$(rw_node comp comp.qcow2)
$(ro_node base base.qcow2)
$(rw_node top top.qcow2 ', backing: base')
exports:
  demo: { node: c64k, writable: true }
  c512: { node: c512, writable: true }
  c2M: { node: c2M, writable: true }
  v2: { node: v2, writable: true }
  comp: { node: comp, writable: true }
  top: { node: top, writable: true }
  r1: { node: r1, writable: true }
  r64: { node: r64, writable: true }"
for e in c512 demo c2M v2 comp top; do
    f=$e; [ $e = demo ] && f=c64k
    writes "$(uri_for $e)" "$dir/w-$f.raw"
    qemu-img compare -f raw -F raw "$dir/w-$f.raw" "$(uri_for $e)"
done

# Many 4 KiB writes in flight at once, over four connections: new
# clusters next to each other in one L2 table, several in one cluster.
head -c $((4 * M)) /dev/urandom > "$dir/rand"
for e in r1 r64; do
    cp "$dir/rand" "$dir/w-$e.raw"
    truncate -s 16M "$dir/w-$e.raw"
done
for e in c512 demo r1 r64; do
    f=$e; [ $e = demo ] && f=c64k
    dd if="$dir/rand" of="$dir/w-$f.raw" conv=notrunc status=none
    nbdcopy --request-size=4096 --requests=64 --connections=4 --flush \
        "$dir/rand" "$(uri_for $e)"
    qemu-img compare -f raw -F raw "$dir/w-$f.raw" "$(uri_for $e)"
done
stop_nbdgraphd

for f in c512 c64k c2M v2 comp top r1 r64; do
    qemu-img check -q "$dir/$f.qcow2"
done
for f in c512 c64k c2M v2 comp r1 r64; do
    qemu-img compare -q -f raw -F qcow2 "$dir/w-$f.raw" "$dir/$f.qcow2"
done
qemu-img compare -q -f raw -F qcow2 "$dir/w-top.raw" "$dir/top.qcow2"

# ---- Copy-on-read: this layer's block status (LOCAL_ONLY) -----------------

# Reading through copy-on-read copies what the overlay lacks up from its
# backing: afterwards qemu-img finds the base's data in the overlay.
qemu-img create -q -f qcow2 -b "$dir/base.qcow2" -F qcow2 "$dir/cor.qcow2"
start_nbdgraphd "nodes:
$(rw_node cor cor.qcow2)
  c: { driver: copy-on-read, file: cor }
exports:
  demo: { node: c, writable: true }"
qemu-img compare -f raw -F raw "$dir/ref.raw" "$uri"
stop_nbdgraphd
qemu-img check -q "$dir/cor.qcow2"
qemu-img map --output=json -f qcow2 "$dir/cor.qcow2" > "$dir/cor.map"
cat "$dir/cor.map"
# The base's first megabyte now comes from the overlay (depth 0).
grep -q '"start": 0, "length": [0-9]*, "depth": 0, "present": true, "zero": false, "data": true' \
    "$dir/cor.map"
qemu-img compare -q -f raw -F qcow2 "$dir/ref.raw" "$dir/cor.qcow2"

# ---- Round trip: qemu-img convert of an export, served again -------------

start_nbdgraphd "nodes:
$(ro_node c64k c64k.qcow2)
exports:
  demo: { node: c64k }"
qemu-img convert -q -f raw -O qcow2 "$uri" "$dir/round.qcow2"
stop_nbdgraphd
start_nbdgraphd "nodes:
$(ro_node round round.qcow2)
exports:
  demo: { node: round }"
qemu-img compare -f raw -F raw "$dir/w-c64k.raw" "$uri"
stop_nbdgraphd

# ---- kill -9 during writes: at most leaks ----------------------------------

qemu-img create -q -f qcow2 "$dir/crash.qcow2" 64M
start_nbdgraphd "nodes:
$(rw_node crash crash.qcow2)
exports:
  demo: { node: crash, writable: true }"
kill_during_writes "$dir/crash.qcow2"
