#!/usr/bin/env bash
# tests/interop/test-qcow2-cache.sh: the qcow2 driver with metadata caches
# far smaller than the images' metadata (l2-cache-size and
# refcount-cache-size 0: QEMU's floor of 2 L2 tables and 4 refcount
# blocks), so that tables are loaded, evicted and written back all the
# time: images qemu wrote read the same; writes (qemu-io patterns, many
# parallel 4 KiB writes from nbdcopy) leave images `qemu-img check` finds
# clean and `qemu-img compare` finds equal to a raw reference; a kill -9
# during writes leaves at most leaked clusters; a 16 TiB image with
# writes spread over it works with a 1M L2 cache, and a daemon holding it
# stays far smaller than one whose cache holds every table.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires nbdcopy --version

M=$((1024 * 1024))
TINY='l2-cache-size: 0, refcount-cache-size: 0, cache-clean-interval: 1'

# pattern FILE FORMAT: writes before the daemon sees the image.
pattern ()
{
    qemu-io -f "$2" \
        -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1536k 100k' \
        -c 'write -P 0x33 5M 4k' -c 'write -z 6M 1M' \
        -c 'write -P 0x44 9000k 3M' "$1" >/dev/null
}

# writes URI RAW: the same writes on the export and the raw reference.
writes ()
{
    local cmd
    for cmd in 'write -P 0x55 3M 4k' 'write -P 0x56 5M 8k' \
               'write -P 0x57 12M 3M' 'write -P 0x58 1000k 100k' \
               'write -z 12M 64k' 'write -z 13M 10k' 'discard 14M 2M' \
               'write -P 0x5a 16380k 4k' 'write -f -P 0x5b 200k 4k'; do
        qemu-io -f raw -c "$cmd" "$1" >/dev/null
        qemu-io -f raw -c "$cmd" "$2" >/dev/null
    done
}

node ()
{
    printf '  %s: { driver: qcow2, file: { driver: file, filename: "@DIR@/%s" }, %s }\n' \
        "$1" "$2" "$3"
}

# 512 B clusters: 512 L2 tables, a refcount block per 128 KiB of file;
# 4 KiB clusters with 1-bit refcounts; 64 KiB clusters with a chain.
truncate -s 16M "$dir/ref.raw"
pattern "$dir/ref.raw" raw
qemu-img create -q -f qcow2 -o cluster_size=512 "$dir/c512.qcow2" 16M
qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=1 \
    "$dir/r1.qcow2" 16M
qemu-img create -q -f qcow2 -o cluster_size=512 "$dir/base.qcow2" 16M
pattern "$dir/c512.qcow2" qcow2
pattern "$dir/r1.qcow2" qcow2
pattern "$dir/base.qcow2" qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 -b "$dir/base.qcow2" \
    -F qcow2 "$dir/top.qcow2"
for f in c512 r1 top; do
    cp "$dir/ref.raw" "$dir/w-$f.raw"
done

start_nbdgraphd "nodes:
$(node c512 c512.qcow2 "$TINY")
$(node r1 r1.qcow2 "$TINY")
$(node top top.qcow2 "$TINY")
exports:
  demo: { node: c512, writable: true }
  r1: { node: r1, writable: true }
  top: { node: top, writable: true }"
for e in demo r1 top; do
    qemu-img compare -f raw -F raw "$dir/ref.raw" "$(uri_for $e)"
done
for e in demo r1 top; do
    f=$e; [ $e = demo ] && f=c512
    writes "$(uri_for $e)" "$dir/w-$f.raw"
    qemu-img compare -f raw -F raw "$dir/w-$f.raw" "$(uri_for $e)"
done
# Many allocating 4 KiB writes in flight at once, over four connections,
# while the tables they need come and go.
head -c $((4 * M)) /dev/urandom > "$dir/rand"
for e in demo r1 top; do
    f=$e; [ $e = demo ] && f=c512
    dd if="$dir/rand" of="$dir/w-$f.raw" conv=notrunc status=none
    nbdcopy --request-size=4096 --requests=64 --connections=4 --flush \
        "$dir/rand" "$(uri_for $e)"
    qemu-img compare -f raw -F raw "$dir/w-$f.raw" "$(uri_for $e)"
done
stop_nbdgraphd
for f in c512 r1 top; do
    qemu-img check -q "$dir/$f.qcow2"
    qemu-img compare -q -f raw -F qcow2 "$dir/w-$f.raw" "$dir/$f.qcow2"
done

# ---- kill -9 during writes: at most leaks ----------------------------------

qemu-img create -q -f qcow2 -o cluster_size=512 "$dir/crash.qcow2" 64M
start_nbdgraphd "nodes:
$(node crash crash.qcow2 "$TINY")
exports:
  demo: { node: crash, writable: true }"
kill_during_writes "$dir/crash.qcow2"

# ---- 16 TiB, writes spread over it, a 1M L2 cache ---------------------------

# 256 writes 64 GiB apart: 256 L2 tables (16 MiB), 16 of which fit.
qemu-img create -q -f qcow2 "$dir/big.qcow2" 16T
G64=$((64 * 1024 * M))
wcmds=() rcmds=()
for i in $(seq 0 255); do
    wcmds+=(-c "write -P $((i % 200 + 1)) $((i * G64 + i * 4096)) 4k")
    rcmds+=(-c "read -P $((i % 200 + 1)) $((i * G64 + i * 4096)) 4k")
done
# rss_after_reads L2_CACHE_SIZE: the daemon's resident KiB once every
# table was read through it.
rss_after_reads ()
{
    start_nbdgraphd "nodes:
$(node big big.qcow2 "l2-cache-size: $1")
exports:
  demo: { node: big, writable: true }"
    qemu-io -f raw "${rcmds[@]}" "$uri" >/dev/null
    awk '/^VmRSS:/ { print $2 }' "/proc/$nbdgraphd_pid/status"
    stop_nbdgraphd
}
start_nbdgraphd "nodes:
$(node big big.qcow2 "l2-cache-size: 1M")
exports:
  demo: { node: big, writable: true }"
qemu-io -f raw "${wcmds[@]}" "$uri" > "$dir/w.out"
qemu-io -f raw "${rcmds[@]}" "$uri" > "$dir/r.out"
! grep 'failed' "$dir/w.out" "$dir/r.out" ||
    fail "qemu-io through the daemon failed"
stop_nbdgraphd
qemu-img check -q "$dir/big.qcow2"
qemu-io -f qcow2 -r "${rcmds[@]}" "$dir/big.qcow2" > "$dir/r.out"
! grep 'failed' "$dir/r.out" ||
    fail "qemu-io on the image the daemon wrote failed"
# (Under ASan, freed memory waits in a quarantine: none here.)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
small=$(rss_after_reads 1M)
large=$(rss_after_reads 32M)
echo "VmRSS after reading 256 tables: 1M cache ${small} KiB," \
     "32M cache ${large} KiB"
# The large cache keeps all 16 MiB of tables, the small one 1 MiB.
[ $((small + 8 * 1024)) -lt "$large" ]
