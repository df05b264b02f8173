#!/usr/bin/env bash
# tests/interop/test-qemu-img.sh: qemu-img copies an image with data,
# zeroes and holes into an export and out again, through qcow2 and back,
# and reads the export's allocation map (NBD block status) after a trim.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires nbdinfo --version
requires jq --version

M=$((1024 * 1024))

# The source, 64 MiB: random data, 4 MiB of written zeroes at 8 MiB,
# holes at 40-48 MiB and 56-64 MiB.
head -c $((40 * M)) /dev/urandom > "$dir/src.img"
dd if=/dev/zero of="$dir/src.img" bs=1M seek=8 count=4 conv=notrunc status=none
truncate -s $((48 * M)) "$dir/src.img"
head -c $((8 * M)) /dev/urandom >> "$dir/src.img"
truncate -s $((64 * M)) "$dir/src.img"

# dirty: fill the whole export with 0xff, so that a copy that skipped
# the source's zeroes would leave 0xff behind and the compare would fail.
dirty ()
{
    qemu-io -f raw "$uri" -c "write -P 0xff 0 64M" > /dev/null
}

# expect_map JSON START LENGTH zero|data: every extent of `qemu-img map
# --output=json` output JSON overlapping [START, START+LENGTH) is zero
# (reads as zeroes), or is data that is not known to be zero.
expect_map ()
{
    local json=$1 start=$(($2)) end=$(($2 + $3)) want=$4

    jq -e --argjson s "$start" --argjson e "$end" --arg w "$want" '
        [ .[] | select(.start < $e and .start + .length > $s) ]
        | length > 0 and all(if $w == "zero" then .zero
                             else .data and (.zero | not) end)' \
        "$json" > /dev/null || {
        echo "$0: map of [$start, $end) is not all $want:" >&2
        cat "$json" >&2
        return 1
    }
}

# The copies and the qcow2 round trip, on whatever export is running.
copies ()
{
    [ "$(qemu-img info --output=json -f raw "$uri" |
         jq '."virtual-size"')" -eq $((64 * M)) ]

    # Into the export: in parallel and out of order, as convert -W does.
    dirty
    qemu-img convert -n -f raw -O raw -m 8 -W "$dir/src.img" "$uri"
    qemu-img compare -f raw -F raw "$dir/src.img" "$uri"

    # Out of the export.
    rm -f "$dir/out.raw"
    qemu-img convert -f raw -O raw "$uri" "$dir/out.raw"
    cmp "$dir/src.img" "$dir/out.raw"

    # Through qcow2: export -> qcow2 -> (dirtied) export.
    rm -f "$dir/out.qcow2"
    qemu-img convert -f raw -O qcow2 "$uri" "$dir/out.qcow2"
    qemu-img check "$dir/out.qcow2"
    dirty
    qemu-img convert -n -f qcow2 -O raw "$dir/out.qcow2" "$uri"
    qemu-img compare -f qcow2 -F raw "$dir/out.qcow2" "$uri"
    qemu-img compare -f raw -F raw "$dir/src.img" "$uri"
}

# Memory backing, whose 64 KiB pages give an exact map.
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: 64M }
exports:
  demo: { node: mem0, writable: true }"
copies

# convert wrote the source's zeroes as zeroes (unmap allowed), so the
# memory driver freed those pages: the map tells them from the data.
qemu-img map --output=json -f raw "$uri" > "$dir/map.json"
cat "$dir/map.json"
expect_map "$dir/map.json" 0 8*M data
expect_map "$dir/map.json" 8*M 4*M zero
expect_map "$dir/map.json" 12*M 28*M data
expect_map "$dir/map.json" 40*M 8*M zero
expect_map "$dir/map.json" 48*M 8*M data
expect_map "$dir/map.json" 56*M 8*M zero

# Trim 4 MiB in the middle of the data: the map shows it as zero, and
# qemu-img compare finds the first difference exactly there.
qemu-io -f raw "$uri" -c "discard 16M 4M"
qemu-img map --output=json -f raw "$uri" > "$dir/map.json"
cat "$dir/map.json"
expect_map "$dir/map.json" 12*M 4*M data
expect_map "$dir/map.json" 16*M 4*M zero
expect_map "$dir/map.json" 20*M 20*M data
rc=0
qemu-img compare -f raw -F raw "$dir/src.img" "$uri" > "$dir/cmp.out" || rc=$?
cat "$dir/cmp.out"
[ "$rc" -eq 1 ]
grep -q "offset $((16 * M))" "$dir/cmp.out"
stop_nbdgraphd

# File backing; what the export showed must be in the file.
truncate -s $((64 * M)) "$dir/disk.img"
start_nbdgraphd "nodes:
  file0: { driver: file, filename: \"@DIR@/disk.img\" }
exports:
  demo: { node: file0, writable: true }"
copies
stop_nbdgraphd
cmp "$dir/src.img" "$dir/disk.img"
