#!/usr/bin/env bash
# tests/test-drv-nbd.sh: the nbd driver in front of real NBD servers —
# nbdkit (memory over a Unix socket and over TCP, sparse-random for
# block status) and a second nbdgraphd.  nbdcopy round trips with 64
# requests in flight over four connections, data checked at the remote
# itself, the remote's flags and its map passed through unchanged.
# (The qemu-io patterns run in tests/interop/test-qemu-io.sh.)
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
set -e -x
requires nbdkit --version
requires nbdcopy --version
requires nbdinfo --version
requires qemu-io --version
requires python3 --version
requires fio --version

M=$((1024 * 1024))
port=$(free_port)

start_remote mem memory 64M
start_remote sparse sparse-random 64M seed=42 percent=30 runlength=65536
start_remote --tcp "$port" tcp memory 64M

start_nbdgraphd "nodes:
  r0: { driver: nbd, server: { type: unix, path: \"@DIR@/mem.sock\" } }
  r1:
    driver: nbd
    read-only: true
    server: { type: unix, path: \"@DIR@/sparse.sock\" }
  r2: { driver: nbd, server: { type: inet, host: 127.0.0.1, port: \"$port\" } }
exports:
  demo: { node: r0, writable: true }
  sparse: { node: r1 }
  tcp: { node: r2, writable: true }"
sparse=$(uri_for sparse)
tcp=$(uri_for tcp)

# The remote's facts come through: the same flags and block status.
nbdinfo "$uri" > "$dir/ours"
nbdinfo "$(remote_uri mem)" > "$dir/theirs"
cat "$dir/ours"
for f in is_read_only can_flush can_fua can_trim can_zero can_fast_zero \
         can_cache can_multi_conn export-size; do
    diff <(grep "$f" "$dir/ours") <(grep "$f" "$dir/theirs")
done
grep -q base:allocation "$dir/ours"
nbdinfo --map "$sparse" > "$dir/map-ours"
nbdinfo --map "$(remote_uri sparse)" > "$dir/map-theirs"
# A map of many extents, holes among them, equal to the remote's.
[ "$(grep -c hole "$dir/map-theirs")" -gt 10 ]
diff "$dir/map-ours" "$dir/map-theirs"
# The same for single-extent queries (REQ_ONE), as qemu-img map asks.
nbdinfo --map --totals "$sparse" > "$dir/tot-ours"
nbdinfo --map --totals "$(remote_uri sparse)" > "$dir/tot-theirs"
diff "$dir/tot-ours" "$dir/tot-theirs"
# Reads of the sparse remote through us equal reads direct.
nbdcopy "$sparse" "$dir/sparse-ours.img"
nbdcopy "$(remote_uri sparse)" "$dir/sparse-theirs.img"
cmp "$dir/sparse-ours.img" "$dir/sparse-theirs.img"
# Read-only at the remote and here: a write is refused.
expect_status 1 qemu-io -f raw "$sparse" -c 'write 0 4k'

# Source: 40 MiB of random data, a hole, 8 MiB more, a hole: 64 MiB.
head -c $((40 * M)) /dev/urandom > "$dir/src.img"
truncate -s $((48 * M)) "$dir/src.img"
head -c $((8 * M)) /dev/urandom >> "$dir/src.img"
truncate -s $((64 * M)) "$dir/src.img"
head -c $((64 * M)) /dev/zero | tr '\0' '\377' > "$dir/ff.img"

# copy_check SRC DST DIRECT [OPTION]...: dirty DST, copy SRC onto it,
# then check what DST holds, and what the remote behind it (DIRECT)
# holds, against the source image.
copy_check ()
{
    local src=$1 dst=$2 direct=$3

    shift 3
    nbdcopy "$@" "$dir/ff.img" "$dst"
    nbdcopy "$@" "$src" "$dst"
    rm -f "$dir/out.img" "$dir/direct.img"
    nbdcopy "$@" "$dst" "$dir/out.img"
    cmp "$dir/src.img" "$dir/out.img"
    nbdcopy "$direct" "$dir/direct.img"
    cmp "$dir/src.img" "$dir/direct.img"
}

# One request at a time; then 64 in flight on each of four connections
# (the remotes are multi-conn), Unix and TCP; then nbd leaf to nbd leaf.
copy_check "$dir/src.img" "$uri" "$(remote_uri mem)" --synchronous
copy_check "$dir/src.img" "$uri" "$(remote_uri mem)" \
    --requests 64 --connections 4 --flush
copy_check "$dir/src.img" "$tcp" "nbd://127.0.0.1:$port" \
    --requests 64 --connections 4 --request-size $((4 * M))
copy_check "$uri" "$tcp" "nbd://127.0.0.1:$port" --requests 64
# fio: 64 random 4 KiB writes in flight at once, then every block read
# back and checked.
fio --name=inflight --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k \
    --iodepth=64 --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --output="$dir/fio.out"
cat "$dir/fio.out"
grep -q 'err= 0' "$dir/fio.out"
stop_nbdgraphd
stop_remote mem

# A remote with a 4 KiB minimum and a 64 KiB maximum block size: the
# core aligns what is not (read-modify-write) and splits what is larger,
# so the remote, which refuses anything else (error policy), only sees
# requests it accepts; the bytes match a plain file given the same
# writes.
start_remote blk --filter=blocksize-policy memory 16M \
    blocksize-minimum=4096 blocksize-preferred=16384 \
    blocksize-maximum=65536 blocksize-error-policy=error
start_nbdgraphd "nodes:
  rb: { driver: nbd, server: { type: unix, path: \"@DIR@/blk.sock\" } }
exports:
  demo: { node: rb, writable: true }"
nbdinfo "$uri" | grep -E 'block_size_(minimum|maximum)'
truncate -s $((16 * M)) "$dir/ref.img"
for t in "$dir/ref.img" "$uri"; do
    qemu-io -f raw "$t" -c 'write -P 0x11 0 1M' -c 'write -P 0x22 4095 3' \
        -c 'write -P 0x33 100001 300007' -c 'write -z 600001 70000' \
        -c 'aio_write -P 0x44 2097153 1000000' -c 'aio_write -P 0x55 5M 3M' \
        -c aio_flush > "$dir/qio.out" 2>&1
    ! grep -i 'fail\|error' "$dir/qio.out" || fail "qemu-io on $t failed"
done
qemu-img compare -f raw -F raw "$dir/ref.img" "$uri"
qemu-img compare -f raw -F raw "$dir/ref.img" "$(remote_uri blk)"
stop_nbdgraphd
stop_remote blk

# A second nbdgraphd as the remote: our own server behind our client.
cat > "$dir/b.yaml" <<EOF
server:
  listen: [ "unix:$dir/b.sock" ]
nodes:
  disk: { driver: memory, size: 64M }
exports:
  vm1: { node: disk, writable: true }
EOF
"$NBDGRAPHD" --foreground --exit-with-parent --config "$dir/b.yaml" \
    >> "$dir/b.log" 2>&1 &
bpid=$!
b_uri="nbd+unix:///vm1?socket=$dir/b.sock"
for i in $(seq 300); do
    timeout 5 nbdinfo --size "$b_uri" >/dev/null 2>&1 && break
    sleep 0.1
done
start_nbdgraphd "nodes:
  rb:
    driver: nbd
    export: vm1
    server: { type: unix, path: \"@DIR@/b.sock\" }
exports:
  demo: { node: rb, writable: true }"
qemu-io -f raw "$uri" -c 'write -P 0x5a 1M 3M' -c 'write -z 8M 1M' \
    -c 'discard 12M 1M' -c 'flush' | grep -q 'wrote 3145728'
qemu-io -f raw "$b_uri" -c 'read -P 0x5a 1M 3M' | grep -q 'read 3145728'
copy_check "$dir/src.img" "$uri" "$b_uri" --requests 64 --connections 2
nbdinfo --map "$uri" > "$dir/map-ours"
nbdinfo --map "$b_uri" > "$dir/map-theirs"
diff "$dir/map-ours" "$dir/map-theirs"
stop_nbdgraphd
kill -TERM "$bpid"
wait "$bpid"
