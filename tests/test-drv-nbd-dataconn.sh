#!/usr/bin/env bash
# tests/test-drv-nbd-dataconn.sh: the nbd driver's data connection.  In
# front of a multi-conn nbdkit (memory, its log filter naming the
# connection of each request), reads, writes and flushes go on a second
# connection that asked for no structured replies, block status on the
# first, which did; data and map checked end to end (nbdcopy, qemu-io,
# fio with verify, nbdinfo --map against the remote itself).  A remote
# without multi-conn, and one that refuses a second client, get one
# connection, and the data is still right.  After the remote restarts,
# reconnect makes both connections anew.
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
set -e -x
requires nbdkit --version
requires nbdcopy --version
requires nbdinfo --version
requires qemu-io --version
requires fio --version
for f in log multi-conn limit; do
    requires nbdkit --filter=$f null --version
done

M=$((1024 * 1024))
start_remote kit -v --filter=log memory 32M logfile="$dir/kit-io.log"
start_remote single --filter=multi-conn --filter=log memory 32M \
    multi-conn-mode=disable logfile="$dir/single-io.log"
start_remote limited --filter=limit --filter=log memory 32M limit=1 \
    logfile="$dir/limited-io.log"
start_nbdgraphd "nodes:
  r0:
    driver: nbd
    reconnect-delay: 20
    server: { type: unix, path: \"@DIR@/kit.sock\" }
  r1: { driver: nbd, server: { type: unix, path: \"@DIR@/single.sock\" } }
  r2: { driver: nbd, server: { type: unix, path: \"@DIR@/limited.sock\" } }
exports:
  demo: { node: r0, writable: true }
  single: { node: r1, writable: true }
  limited: { node: r2, writable: true }"

# conns LOG OP...: the connections (numbers) on which the remote logged
# requests of kind OP (Read, Write, Extents, ...), one per line.
conns ()
{
    local log=$1 op

    shift
    for op in "$@"; do
        sed -n "s/.* connection=\\([0-9]*\\) $op id=.*/\\1/p" "$log"
    done | sort -u
}

# Source: 12 MiB of random data, a hole, 4 MiB more, a hole: 32 MiB.
head -c $((12 * M)) /dev/urandom > "$dir/src.img"
truncate -s $((24 * M)) "$dir/src.img"
head -c $((4 * M)) /dev/urandom >> "$dir/src.img"
truncate -s $((32 * M)) "$dir/src.img"

# check EXPORT REMOTE [only-us]: copy the source through our EXPORT and
# read it back, map it; keep what the remote logged so far (only our
# daemon's connections, and start_remote's probe, talked to it) in
# $dir/EXPORT-ours.log; then, unless only-us (a remote that takes one
# client), check the remote's data and map directly.
check ()
{
    local ours

    ours=$(uri_for "$1")
    nbdcopy --requests 16 "$dir/src.img" "$ours"
    rm -f "$dir/back.img" "$dir/direct.img"
    nbdcopy --requests 16 "$ours" "$dir/back.img"
    cmp "$dir/src.img" "$dir/back.img"
    qemu-io -f raw "$ours" -c 'write -P 0x5a 1M 64k' -c 'write -z 2M 1M' \
        -c 'discard 24M 1M' -c 'aio_write -P 0x6b 5M 3M' -c aio_flush |
        grep -q 'wrote 3145728'
    # Block status right after writes (nbdkit's memory plugin reports
    # the zeroed and trimmed ranges as holes).
    nbdinfo --map "$ours" > "$dir/map-ours"
    grep -q hole "$dir/map-ours"
    fio --name=dc --ioengine=nbd --uri="$ours" --rw=randrw --bs=4k \
        --iodepth=32 --size=8M --offset=8M --verify=crc32c --do_verify=1 \
        --verify_fatal=1 --output="$dir/fio.out"
    grep -q 'err= 0' "$dir/fio.out"
    cp "$dir/$2-io.log" "$dir/$1-ours.log"
    [ "${3-}" != only-us ] || return 0
    # The remote holds what we read through us, the source where no
    # write went since, and the patterns qemu-io wrote.
    nbdcopy "$(remote_uri "$2")" "$dir/direct.img"
    nbdcopy "$ours" "$dir/final.img"
    cmp "$dir/final.img" "$dir/direct.img"
    cmp <(head -c $((1 * M)) "$dir/src.img") \
        <(head -c $((1 * M)) "$dir/direct.img")
    cmp <(tail -c $((7 * M)) "$dir/src.img") \
        <(tail -c $((7 * M)) "$dir/direct.img")
    qemu-io -f raw "$(remote_uri "$2")" -c 'read -P 0x5a 1M 64k' \
        -c 'read -P 0 2M 1M' -c 'read -P 0x6b 5M 3M' | grep -q 'read 3145728'
    nbdinfo --map "$(remote_uri "$2")" > "$dir/map-theirs"
    nbdinfo --map "$ours" > "$dir/map-ours"
    diff "$dir/map-ours" "$dir/map-theirs"
}

# lacks LOG CONN OP...: connection CONN logged no OP request.
lacks ()
{
    local log=$1 conn=$2 op

    shift 2
    for op in "$@"; do
        if grep -q " connection=$conn $op id=" "$log"; then
            echo "$0: connection $conn sent $op" >&2
            return 1
        fi
    done
}

# data_conn_ok LOG: block status on one connection, which asked for
# structured replies; every read, write, flush, zero and trim on
# another, which did not (nbdkit -v names the connection "memory[N]").
data_conn_ok ()
{
    local log=$1 e d

    e=$(conns "$log" Extents)
    d=$(conns "$log" Read Write Flush Zero Trim)
    [ "$(echo "$e" | wc -l)" -eq 1 ]
    [ "$(echo "$d" | wc -l)" -eq 1 ]
    [ "$e" != "$d" ]
    lacks "$log" "$e" Read Write Flush Zero Trim
    lacks "$log" "$d" Extents
    grep -q "memory\[$e\]: debug: .*client requested structured replies" \
        "$dir/kit.log"
    if grep -q "memory\[$d\]: debug: .*client requested structured replies" \
        "$dir/kit.log"; then
        echo "$0: the data connection asked for structured replies" >&2
        return 1
    fi
}

check demo kit
data_conn_ok "$dir/demo-ours.log"

# Without multi-conn: one connection carries everything.
check single single
[ "$(conns "$dir/single-ours.log" Extents Read Write | wc -l)" -eq 1 ]
# A second client refused: a warning, and one connection.
check limited limited only-us
grep -q "node 'r2': the server dropped the second connection; all requests go on one" \
    "$dir/nbdgraphd.log"
[ "$(conns "$dir/limited-ours.log" Extents Read Write | wc -l)" -eq 1 ]

# The remote restarts (empty: a memory disk): reconnect makes both
# connections again, and the data goes on the new second one.
stop_remote kit
for i in $(seq 100); do
    grep -q "node 'r0': lost the connection" "$dir/nbdgraphd.log" && break
    sleep 0.1
done
: > "$dir/kit-io.log"
: > "$dir/kit.log"
start_remote kit -v --filter=log memory 32M logfile="$dir/kit-io.log"
qemu-io -f raw "$(uri_for demo)" -c 'write -P 0x77 0 1M' -c flush |
    grep -q 'wrote 1048576'
# start_remote's probe, then our two.
for i in $(seq 100); do
    [ "$(grep -c ' Connect export=' "$dir/kit-io.log")" -ge 3 ] && break
    sleep 0.1
done
qemu-io -f raw "$(uri_for demo)" -c 'read -P 0x77 0 1M' \
    -c 'write -P 0x78 1M 1M' -c flush | grep -q 'wrote 1048576'
nbdinfo --map "$(uri_for demo)" > "$dir/map-ours"
cp "$dir/kit-io.log" "$dir/again-ours.log"
grep -q ' Read id=.* offset=0x0 count=0x100000 ' "$dir/again-ours.log"
# The first write may have gone on the first connection, before the
# second was up; the read and the second write came after.
e=$(conns "$dir/again-ours.log" Extents)
[ "$(echo "$e" | wc -l)" -eq 1 ]
lacks "$dir/again-ours.log" "$e" Read
qemu-io -f raw "$(remote_uri kit)" -c 'read -P 0x77 0 1M' \
    -c 'read -P 0x78 1M 1M' | grep -q 'read 1048576'
nbdinfo --map "$(remote_uri kit)" > "$dir/map-theirs"
diff "$dir/map-ours" "$dir/map-theirs"
stop_nbdgraphd
