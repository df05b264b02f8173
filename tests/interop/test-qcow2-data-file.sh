#!/usr/bin/env bash
# tests/interop/test-qcow2-data-file.sh: qcow2 images with an external
# data file (qemu-img create -o data_file=...,data_file_raw=on|off), the
# data file found by the header's name next to the image or given as
# `data-file: NODE`: what qemu-io wrote reads the same through
# nbdgraphd; writes through nbdgraphd (patterns, zeroes, trims, parallel
# 4 KiB writes) read the same through qemu-img, `qemu-img check` finds
# the image clean, and with data_file_raw=on the data file alone is the
# disk as a raw image.  Bad combinations are refused at open.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires nbdcopy --version

M=$((1024 * 1024))

# pattern FILE FORMAT: writes before the daemon sees the image.
pattern ()
{
    qemu-io -f "$2" \
        -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1536k 100k' \
        -c 'write -z 6M 1M' -c 'write -P 0x44 9000k 3M' "$1" >/dev/null
}

# writes URI RAW: the same writes on the export and the raw reference
# (guest offset 0 is offset 0 of the data file, where the image file has
# its header: no overlap, as the data file holds no metadata).
writes ()
{
    local cmd
    for cmd in 'write -P 0x55 3M 4k' 'write -P 0x56 5M 8k' \
               'write -P 0x57 12M 3M' 'write -P 0x58 1000k 100k' \
               'write -z 12M 64k' 'write -z 13M 10k' 'discard 14M 2M' \
               'write -P 0x5a 16380k 4k' 'write -f -P 0x5b 200k 4k' \
               'write -P 0x5c 0 4k'; do
        qemu-io -f raw -c "$cmd" "$1" >/dev/null
        qemu-io -f raw -c "$cmd" "$2" >/dev/null
    done
}

truncate -s 16M "$dir/ref.raw"
pattern "$dir/ref.raw" raw
# The data file named relatively, as qemu-img writes it when given so.
for r in on off; do
    (cd "$dir" && qemu-img create -q -f qcow2 \
         -o data_file=d-$r.raw,data_file_raw=$r i-$r.qcow2 16M &&
     pattern i-$r.qcow2 qcow2)
    cp "$dir/ref.raw" "$dir/w-$r.raw"
done
# One more, its data file given as a node (with small caches too).
qemu-img create -q -f qcow2 -o data_file="$dir/d-node.raw" \
    "$dir/i-node.qcow2" 16M
pattern "$dir/i-node.qcow2" qcow2
cp "$dir/ref.raw" "$dir/w-node.raw"

start_nbdgraphd "nodes:
  on: { driver: qcow2, file: { driver: file, filename: \"@DIR@/i-on.qcow2\" } }
  off: { driver: qcow2, file: { driver: file, filename: \"@DIR@/i-off.qcow2\" } }
  dn: { driver: file, filename: \"@DIR@/d-node.raw\" }
  node: { driver: qcow2, data-file: dn, l2-cache-size: 0,
          file: { driver: file, filename: \"@DIR@/i-node.qcow2\" } }
exports:
  on: { node: on, writable: true }
  off: { node: off, writable: true }
  node: { node: node, writable: true }" on
head -c $((4 * M)) /dev/urandom > "$dir/rand"
for e in on off node; do
    qemu-img compare -f raw -F raw "$dir/ref.raw" "$(uri_for $e)"
    writes "$(uri_for $e)" "$dir/w-$e.raw"
    qemu-img compare -f raw -F raw "$dir/w-$e.raw" "$(uri_for $e)"
    dd if="$dir/rand" of="$dir/w-$e.raw" conv=notrunc status=none
    nbdcopy --request-size=4096 --requests=64 --connections=4 --flush \
        "$dir/rand" "$(uri_for $e)"
    qemu-img compare -f raw -F raw "$dir/w-$e.raw" "$(uri_for $e)"
done
stop_nbdgraphd
# (QEMU opens a relative data file name from its working directory; the
# daemon from the image's, the same here.)
cd "$dir"
for e in on off node; do
    qemu-img check -q "i-$e.qcow2"
    qemu-img compare -q -f raw -F qcow2 "w-$e.raw" "i-$e.qcow2"
done
# data_file_raw=on: the data file alone is the disk.
qemu-img compare -q -f raw -F raw "$dir/w-on.raw" "$dir/d-on.raw"

# Refused at open: a data-file for an image without one; an image whose
# data file is missing.
qemu-img create -q -f qcow2 "$dir/plain.qcow2" 16M
cat > "$dir/bad1.yaml" <<EOT
server: { listen: [ "unix:$dir/s" ] }
nodes:
  dn: { driver: file, filename: "$dir/d-node.raw" }
  p: { driver: qcow2, data-file: dn,
       file: { driver: file, filename: "$dir/plain.qcow2" } }
EOT
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/bad1.yaml" \
    2> "$dir/err"
cat "$dir/err"
grep -q "no external data file" "$dir/err"
rm "$dir/d-off.raw"
cat > "$dir/bad2.yaml" <<EOT
server: { listen: [ "unix:$dir/s" ] }
nodes:
  off: { driver: qcow2, file: { driver: file, filename: "$dir/i-off.qcow2" } }
EOT
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/bad2.yaml" \
    2> "$dir/err"
cat "$dir/err"
grep -q "data file '.*d-off.raw' not found" "$dir/err"
