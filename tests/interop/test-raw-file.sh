#!/usr/bin/env bash
# tests/interop/test-raw-file.sh: two raw slices of one file, one at an
# odd offset.  Writes, write-zeroes and trims through the slices must
# land at the slice's offset in the file and nowhere else; a read-only
# export of the whole file sees them at once.  The expected file is built
# with dd and compared with cmp.
source "$srcdir/functions.sh"
set -e -x
requires nbdcopy --version
requires qemu-io --version

M=$((1024 * 1024))
size=$((32 * M))
off1=$M                      # slice 1: 8 MiB at 1 MiB
len1=$((8 * M))
off2=$((10 * M + 4097))      # slice 2: 3 MiB + 3 at an odd offset
len2=$((3 * M + 3))

# put FILE OFFSET SRC: copy SRC into FILE at byte OFFSET, in place.
put ()
{
    dd if="$3" of="$1" bs=64K oflag=seek_bytes seek="$2" conv=notrunc \
        status=none
}

# fill FILE OFFSET LENGTH BYTE: LENGTH bytes of BYTE (0-255) at OFFSET.
fill ()
{
    head -c "$3" /dev/zero | tr '\0' "\\$(printf '%03o' "$4")" > "$dir/fill"
    put "$1" "$2" "$dir/fill"
}

# The file starts as random data, so a write landing at a wrong offset
# or a slice spilling over its end shows up.
head -c "$size" /dev/urandom > "$dir/disk.img"
cp "$dir/disk.img" "$dir/want.img"
head -c "$len1" /dev/urandom > "$dir/data1"
head -c "$len2" /dev/urandom > "$dir/data2"

start_nbdgraphd "nodes:
  file0: { driver: file, filename: \"@DIR@/disk.img\" }
  part1: { driver: raw, file: file0, offset: $off1, size: $len1 }
  part2: { driver: raw, file: file0, offset: $off2, size: $len2 }
exports:
  part1: { node: part1, writable: true }
  part2: { node: part2, writable: true }
  whole: { node: file0 }" part1
part1=$uri
part2=$(uri_for part2)
whole=$(uri_for whole)

[ "$(nbdinfo --size "$part1")" -eq "$len1" ]
[ "$(nbdinfo --size "$part2")" -eq "$len2" ]

# Whole slices, with several requests and connections in flight.
nbdcopy --connections 4 "$dir/data1" "$part1"
put "$dir/want.img" "$off1" "$dir/data1"
nbdcopy "$dir/data2" "$part2"
put "$dir/want.img" "$off2" "$dir/data2"

# Small writes at the slices' first and last bytes and inside, zeroes
# and a trim (the file driver punches a hole, which reads as zeroes).
qemu-io -f raw "$part2" -c "write -P 0x5a 0 1" \
    -c "write -P 0x5b $((len2 - 1)) 1" -c "write -P 0x5c 65533 7" \
    -c "write -z $((M + 5)) 70000" -c "discard $((2 * M)) $M" -c flush
fill "$dir/want.img" "$off2" 1 $((0x5a))
fill "$dir/want.img" $((off2 + len2 - 1)) 1 $((0x5b))
fill "$dir/want.img" $((off2 + 65533)) 7 $((0x5c))
fill "$dir/want.img" $((off2 + M + 5)) 70000 0
fill "$dir/want.img" $((off2 + 2 * M)) "$M" 0
qemu-io -f raw "$part1" -c "write -P 0x11 $((len1 - 4096)) 4096" \
    -c "write -z -u 0 64K"
fill "$dir/want.img" $((off1 + len1 - 4096)) 4096 $((0x11))
fill "$dir/want.img" "$off1" 65536 0

# Reads through each slice give that slice of the expected file, and
# the whole-file export gives all of it while the slices are live.
nbdcopy "$part1" "$dir/out1"
cmp "$dir/out1" <(dd if="$dir/want.img" bs=64K iflag=skip_bytes,count_bytes \
                     skip="$off1" count="$len1" status=none)
nbdcopy "$part2" "$dir/out2"
cmp "$dir/out2" <(dd if="$dir/want.img" bs=64K iflag=skip_bytes,count_bytes \
                     skip="$off2" count="$len2" status=none)
nbdcopy "$whole" "$dir/out"
cmp "$dir/want.img" "$dir/out"

# And the file itself, once the daemon has flushed and gone.
stop_nbdgraphd
cmp "$dir/want.img" "$dir/disk.img"
