#!/usr/bin/env bash
# tests/interop/test-nbdcopy.sh: libnbd's nbdcopy into, out of and
# between exports, with one connection and with four (multi-conn) and
# 64 requests in flight.
source "$srcdir/functions.sh"
set -e -x
requires nbdcopy --version
requires nbdinfo --version

M=$((1024 * 1024))

# Source: 40 MiB of random data, a hole, 8 MiB more data, a hole: 64 MiB.
head -c $((40 * M)) /dev/urandom > "$dir/src.img"
truncate -s $((48 * M)) "$dir/src.img"
head -c $((8 * M)) /dev/urandom >> "$dir/src.img"
truncate -s $((64 * M)) "$dir/src.img"
# All 0xff: written first, so that a copy that skipped the source's
# holes would leave 0xff behind.
head -c $((64 * M)) /dev/zero | tr '\0' '\377' > "$dir/ff.img"

truncate -s $((64 * M)) "$dir/disk.img"
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: 64M }
  mem1: { driver: memory, size: 64M }
  file0: { driver: file, filename: \"@DIR@/disk.img\" }
exports:
  demo: { node: mem0, writable: true }
  copy: { node: mem1, writable: true }
  file: { node: file0, writable: true }"
copy=$(uri_for copy)
file=$(uri_for file)

# copy_check SRC DST [OPTION]...: dirty DST, nbdcopy SRC to it, then copy
# DST out to a file and compare it with the source image.
copy_check ()
{
    local src=$1 dst=$2

    shift 2
    nbdcopy "$@" "$dir/ff.img" "$dst"
    nbdcopy "$@" "$src" "$dst"
    rm -f "$dir/out.img"
    nbdcopy "$@" "$dst" "$dir/out.img"
    cmp "$dir/src.img" "$dir/out.img"
}

# File in, file out; then export to export within the daemon.
copy_check "$dir/src.img" "$uri"
copy_check "$uri" "$copy"

# Many requests over four connections, to memory and to file.
copy_check "$dir/src.img" "$file" --requests 64 --connections 4
copy_check "$file" "$uri" --requests 64 --connections 4 --flush
copy_check "$uri" "$copy" --requests 64 --connections 4 \
    --request-size $((4 * M))

# One request at a time, 64 KiB each.
copy_check "$dir/src.img" "$file" --synchronous --request-size 65536

# The file holds what the export showed once the daemon is gone.
stop_nbdgraphd
cmp "$dir/src.img" "$dir/disk.img"
