#!/usr/bin/env bash
# tests/interop/test-qemu-io.sh: QEMU's block layer as the client.
# qemu-io writes and reads patterns (aligned, unaligned, across 64 KiB
# memory pages, at the end of the disk), write-zeroes with and without
# unmap, fast zero, FUA, discard, parallel aio writes and flush, on a
# memory export (bare and behind implicit filters), on a file export and
# on an nbd node in front of nbdkit.
# The same commands also run on a local file, and the two disks must end
# up equal byte for byte.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
requires nbdinfo --version

M=$((1024 * 1024))
size=$((64 * M))
end=$size

# qio TARGET CMD...: run qemu-io commands on TARGET.  qemu-io 7.x exits
# 1 when a command failed but older ones exit 0, so read its output too.
qio ()
{
    local target=$1 c out rc=0 xtrace=
    local -a args=()

    # One line per call in the log rather than one per loop step.
    case $- in *x*) xtrace=1; { set +x; } 2>/dev/null ;; esac
    shift
    for c; do args+=(-c "$c"); done
    echo "+ qemu-io -f raw $target ${args[*]@Q}" >&2
    out=$(qemu-io -f raw "$target" "${args[@]}" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ -n "$xtrace" ] && set -x
    [ "$rc" -eq 0 ] && ! grep -Eqi 'fail|error' <<<"$out"
}

# The writes, each followed by the reads that check it and its
# neighbours.  Page = the memory driver's 64 KiB allocation unit.
exercise ()
{
    local t=$1

    qio "$t" "write -P 0x11 0 4M" "read -P 0x11 0 4M"

    # Unaligned: 3 bytes across the first page boundary, one byte, and
    # 300007 bytes from an odd offset over five pages.
    qio "$t" \
        "write -P 0x22 65535 3" "read -P 0x22 65535 3" \
        "read -P 0x11 0 65535" "read -P 0x11 65538 65536" \
        "write -P 0x23 7 1" "read -P 0x11 0 7" "read -P 0x23 7 1" \
        "read -P 0x11 8 65527" \
        "write -P 0x24 100001 300007" "read -P 0x11 65538 34463" \
        "read -P 0x24 100001 300007" "read -P 0x11 400008 100000"

    # A long write from an odd offset, not a page multiple.
    qio "$t" "write -P 0x25 $((5 * M + 17)) $((3 * M + 5))" \
        "read -P 0 $((4 * M)) $((M + 17))" \
        "read -P 0x25 $((5 * M + 17)) $((3 * M + 5))" \
        "read -P 0 $((8 * M + 22)) 65536"

    # The end of the disk: its last sector, then its very last byte.
    qio "$t" "write -P 0x33 $((end - 512)) 512" \
        "write -P 0x34 $((end - 1)) 1" \
        "read -P 0 $((end - 2 * 65536)) $((2 * 65536 - 512))" \
        "read -P 0x33 $((end - 512)) 511" "read -P 0x34 $((end - 1)) 1"

    # Write-zeroes: aligned, unaligned inside data, with unmap allowed,
    # fast (the server advertises it), then FUA writes.
    qio "$t" "write -z 1M 128K" "read -P 0 1M 128K" \
        "read -P 0x11 $((M - 65536)) 65536" "read -P 0x11 $((M + 131072)) 65536" \
        "write -z 300001 70000" "read -P 0x24 100001 200000" \
        "read -P 0 300001 70000" "read -P 0x24 370001 30007" \
        "write -z -u 2M 256K" "read -P 0 2M 256K" \
        "read -P 0x11 $((2 * M + 262144)) 4096" \
        "write -z -n 3M 64K" "read -P 0 3M 64K" \
        "write -f -P 0x55 $((3 * M + 65536)) 65536" \
        "write -f -P 0x56 $((3 * M + 131072 + 3)) 1000" \
        "read -P 0x55 $((3 * M + 65536)) 65536" \
        "read -P 0x11 $((3 * M + 131072)) 3" \
        "read -P 0x56 $((3 * M + 131072 + 3)) 1000"

    # Discard of whole pages: both drivers free them, so they read as
    # zeroes (NBD allows garbage; our drivers promise zeroes).  The two
    # bytes of 0x22 past the page stay.
    qio "$t" "discard 0 64K" "read -P 0 0 64K" "read -P 0x22 65536 2" \
        "read -P 0x11 65538 10" \
        "discard 12M 1M" "read -P 0 12M 1M"

    # Parallel: 8 writes in flight at once, some unaligned, then one
    # flush that must wait for all of them.
    qio "$t" \
        "aio_write -P 0x61 16M 1M" "aio_write -P 0x62 $((17 * M + 1)) $((M - 1))" \
        "aio_write -P 0x63 18M 4K" "aio_write -P 0x64 $((18 * M + 4096)) 4K" \
        "aio_write -P 0x65 $((19 * M + 511)) 200000" \
        "aio_write -P 0x66 20M 2M" "aio_write -f -P 0x67 23M 64K" \
        "aio_write -z 22M 512K" "aio_flush" \
        "read -P 0x61 16M 1M" "read -P 0x62 $((17 * M + 1)) $((M - 1))" \
        "read -P 0x63 18M 4K" "read -P 0x64 $((18 * M + 4096)) 4K" \
        "read -P 0x65 $((19 * M + 511)) 200000" \
        "read -P 0x66 20M 2M" "read -P 0x67 23M 64K" \
        "read -P 0 22M 512K" "flush"
}

# Memory backing.
truncate -s "$size" "$dir/ref.img"
exercise "$dir/ref.img"
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: $size }
exports:
  demo: { node: mem0, writable: true }"
exercise "$uri"
qemu-img compare -f raw -F raw "$dir/ref.img" "$uri"
stop_nbdgraphd

# The same behind all three implicit filters (limits high enough never
# to wait): filters must not change what the client sees.
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: $size }
exports:
  demo:
    node: mem0
    writable: true
    throttle: { iops-total: 1000000, bps-total: 100G }
    copy-on-read: true
    detect-zeroes: unmap"
exercise "$uri"
qemu-img compare -f raw -F raw "$dir/ref.img" "$uri"
stop_nbdgraphd

# File backing, through the page cache and with O_DIRECT; after the
# daemon is gone the file itself must hold the same bytes.
for direct in false true; do
    rm -f "$dir/disk.img"
    truncate -s "$size" "$dir/disk.img"
    start_nbdgraphd "nodes:
  file0:
    driver: file
    filename: \"@DIR@/disk.img\"
    cache.direct: $direct
exports:
  demo: { node: file0, writable: true }"
    exercise "$uri"
    qemu-img compare -f raw -F raw "$dir/ref.img" "$uri"
    stop_nbdgraphd
    cmp "$dir/ref.img" "$dir/disk.img"
done

# An nbd node in front of nbdkit's memory plugin: the same patterns,
# and the remote itself ends up holding the same bytes.
source "$srcdir/nbd-remote.sh"
requires nbdkit --version
start_remote mem memory "$size"
start_nbdgraphd "nodes:
  r0: { driver: nbd, server: { type: unix, path: \"@DIR@/mem.sock\" } }
exports:
  demo: { node: r0, writable: true }"
exercise "$uri"
qemu-img compare -f raw -F raw "$dir/ref.img" "$uri"
qemu-img compare -f raw -F raw "$dir/ref.img" "$(remote_uri mem)"
stop_nbdgraphd
