#!/usr/bin/env bash
# tests/test-background-workers.sh: a job's bulk copy (NG_REQ_BACKGROUND)
# never takes a driver's loop shortcut, however deep below the job it
# lands.  The rule is the request layer's: the choke point does not
# offer a background request to a driver's submit_inline, and a request
# made to serve one (qcow2's read of its file) inherits the flag.  Seen
# with strace -f on mirrors between files on tmpfs, where every client
# request runs on the loop thread: the mirror's 64 KiB data reads and
# writes are all made by worker threads, from a raw file and from a
# qcow2 image (4 KiB clusters, so its metadata reads are not 64 KiB;
# a log filter between it and its file shows flags=background).  The
# tables such a copy needs are read on workers too: a mirror onto a
# written qcow2 image whose L2 cache holds two of its eight tables reads
# the other six while it copies, and no 4 KiB read (a table) is the
# loop thread's.  A block-stream's copy-up writes (copy-on-read's, made
# for the job's reads) and its table loads in the backing are the
# workers' too.  So is qcow2's metadata write-back that no client waits
# for: the rounds a mirror's allocations start when they fill a small
# cache (tables and flushes on workers; all were the loop's), and the
# round that writes a streamed image's new header with its tables.
source "$srcdir/functions.sh"
set -e -x
requires strace -V
requires qemu-img --version
requires qemu-io --version
if [ ! -d /dev/shm ] || [ ! -w /dev/shm ] ||
       [ "$(stat -f -c %T /dev/shm)" != tmpfs ]; then
    echo "$0: SKIP: needs a writable tmpfs on /dev/shm" >&2
    exit 77
fi
shm=$(mktemp -d /dev/shm/ngtest-bg.XXXXXX)
trap 's=$?; rm -rf "$shm"; (exit $s); _ng_cleanup' EXIT

qemu-img create -q -f qcow2 -o cluster_size=4096 "$shm/src.qcow2" 16M
qemu-io -f qcow2 -c 'write -P 0x5a 0 8M' "$shm/src.qcow2" > /dev/null
qemu-img convert -f qcow2 -O raw "$shm/src.qcow2" "$shm/src.raw"
truncate -s 16M "$shm/dst0.raw" "$shm/dst1.raw" "$shm/full.raw"
qemu-io -f raw -c 'write -P 0x6b 0 16M' "$shm/full.raw" > /dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 "$shm/dst2.qcow2" 16M
qemu-io -f qcow2 -c 'write -P 0x11 0 16M' "$shm/dst2.qcow2" > /dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 "$shm/dst3.qcow2" 16M
qemu-img create -q -f qcow2 -o cluster_size=4096 "$shm/cq.qcow2" 16M
qemu-img create -q -f qcow2 -o cluster_size=4096 "$shm/base.qcow2" 16M
qemu-io -f qcow2 -c 'write -P 0x3c 0 16M' "$shm/base.qcow2" > /dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 -b "$shm/base.qcow2" \
    -F qcow2 "$shm/top.qcow2" 16M

start_nbdgraphd "nodes:
  raw0: { driver: file, filename: \"$shm/src.raw\" }
  qf: { driver: file, filename: \"$shm/src.qcow2\" }
  ql: { driver: log, file: qf, logfile: \"$dir/qcow2-file.log\" }
  q0: { driver: qcow2, file: ql }
  dst0: { driver: file, filename: \"$shm/dst0.raw\" }
  dst1: { driver: file, filename: \"$shm/dst1.raw\" }
  full: { driver: file, filename: \"$shm/full.raw\" }
  d2f: { driver: file, filename: \"$shm/dst2.qcow2\" }
  dst2: { driver: qcow2, file: d2f, l2-cache-size: 8192 }
  d3f: { driver: file, filename: \"$shm/dst3.qcow2\" }
  dst3: { driver: qcow2, file: d3f, l2-cache-size: 8192 }
  bf: { driver: file, filename: \"$shm/base.qcow2\" }
  bl: { driver: log, file: bf, logfile: \"$dir/base-file.log\" }
  base: { driver: qcow2, file: bl, l2-cache-size: 8192 }
  tf: { driver: file, filename: \"$shm/top.qcow2\" }
  top: { driver: qcow2, file: tf, backing: base }
  cqf: { driver: file, filename: \"$shm/cq.qcow2\" }
  cq: { driver: qcow2, file: cqf }
exports:
  raw: { node: raw0, writable: true }
  qcow: { node: q0, writable: true }
  cq: { node: cq, writable: true }" raw

# traced_mirror SRC DST TAG: mirror node SRC to DST to the pivot, with
# strace -f on the daemon (its reads, writes and flushes) into
# $dir/TAG.trace.
traced="pread64,preadv,preadv2,pwrite64,pwritev,pwritev2,fdatasync"
traced_mirror ()
{
    local strace_pid

    strace -f -qq -e trace=$traced -o "$dir/$3.trace" -p "$nbdgraphd_pid" &
    strace_pid=$!
    sleep 1                         # let it attach to every thread
    nbdgraphctl mirror "$1" "$2" --job-id "$3"
    timeout 120 "$top_builddir/nbdgraphctl" --socket "$ctl" \
        wait "$3" --complete
    kill -INT "$strace_pid"
    wait "$strace_pid" || true
}

# count TAG WHO [OP [BYTES]]: transfers of BYTES (64 KiB) in TAG's trace
# made by the loop thread (WHO=loop: the thread id is the daemon's pid)
# or by others; OP: pread, pwrite (either) or fdatasync (BYTES 0).  A
# call another thread's interrupted is counted on its "<... pread64
# resumed>" line.
count ()
{
    local op='=='

    [ "$2" = loop ] || op='!='
    awk -v pid="$nbdgraphd_pid" "
        \$1 $op pid && /^[0-9]+ +(<\\.\\.\\. )?${3:-p(read|write)}/ &&
            / = ${4:-65536}\$/ {
            n++
        }
        END { print n + 0 }" "$dir/$1.trace"
}

traced_mirror raw0 dst0 m0
[ "$(count m0 loop)" -eq 0 ] || fail "raw mirror: 64 KiB I/O on the loop"
[ "$(count m0 workers)" -ge 128 ] || fail "raw mirror: workers did not copy"
cmp "$shm/src.raw" "$shm/dst0.raw"

traced_mirror q0 dst1 m1
[ "$(count m1 loop)" -eq 0 ] || fail "qcow2 mirror: 64 KiB I/O on the loop"
[ "$(count m1 workers)" -ge 128 ] || fail "qcow2 mirror: workers did not copy"
cmp "$shm/src.raw" "$shm/dst1.raw"
# The log filter below the qcow2 node names the flag its reads took over.
grep -q ' read .*length=0x10000 flags=background' "$dir/qcow2-file.log" ||
    fail "qcow2's reads of its file for the mirror are not background"

# Onto a qcow2 image: the copy's writes load the target's cold tables.
traced_mirror full dst2 m2
[ "$(count m2 loop pread 4096)" -eq 0 ] ||
    fail "mirror onto qcow2: its table reads on the loop"
[ "$(count m2 workers pread 4096)" -ge 6 ] ||
    fail "mirror onto qcow2: workers did not read its tables"
qemu-img compare -U -q -f raw -F qcow2 "$shm/full.raw" "$shm/dst2.qcow2"

# Onto an empty qcow2 image with room for two L2 tables: the copy's
# allocations fill the cache with dirty tables, and the write-back rounds
# that makes room (no client waits for them) write tables (4 KiB) and
# flush the file on workers.  (The flush after the pivot, which the job
# sends without the flag, still writes the last tables on the loop.)
traced_mirror full dst3 m3
[ "$(count m3 workers pwrite 4096)" -ge 1 ] ||
    fail "mirror onto qcow2: its table write-back on the loop"
[ "$(count m3 workers fdatasync 0)" -ge 1 ] ||
    fail "mirror onto qcow2: its write-back's flushes on the loop"
qemu-img compare -U -q -f raw -F qcow2 "$shm/full.raw" "$shm/dst3.qcow2"

# A stream reads the backing's data through a copy-on-read filter above
# the top, which writes it into the top: its copy-up writes (256 KiB)
# are the workers' (all were the loop's), and the backing's table loads
# for the reads are background (the walk over the backing's allocation
# before the copy loads tables too, in the foreground, hence the log).
# The top's new header and the dirty tables written with it stay the
# loop's: the job is done only once they are in the file, which the
# compare below reads while the daemon runs.
strace -f -qq -e trace=$traced -o "$dir/s0.trace" -p "$nbdgraphd_pid" &
strace_pid=$!
sleep 1
# (Kept until dismissed: a stream that ends before `wait` connects is
# still there to be seen completed.)
qmp '{"execute": "block-stream", "arguments": {"job-id": "s0",
      "device": "top", "auto-dismiss": false}}'
timeout 120 "$top_builddir/nbdgraphctl" --socket "$ctl" wait s0 --complete |
    grep "job 's0' completed"
nbdgraphctl job dismiss s0
kill -INT "$strace_pid"
wait "$strace_pid" || true
[ "$(count s0 loop pwrite 262144)" -eq 0 ] ||
    fail "stream: copy-up writes on the loop"
[ "$(count s0 workers pwrite 262144)" -ge 32 ] ||
    fail "stream: workers did not write the copy-up"
grep -q ' read .*length=0x1000 flags=background' "$dir/base-file.log" ||
    fail "stream: the backing's table reads for the copy are not background"
qemu-img compare -U -q -f qcow2 -F qcow2 "$shm/base.qcow2" "$shm/top.qcow2"

# A client's reads keep the shortcut (the loop thread reads tmpfs); of
# at most 64 KiB, as bigger ones leave the loop whoever sends them.
strace -f -qq -e trace=pread64 -o "$dir/client.trace" \
    -p "$nbdgraphd_pid" &
strace_pid=$!
sleep 1
qemu-io -f raw -c 'read -P 0x5a 0 64k' "$(uri_for qcow)" | grep -q 'read 65536'
kill -INT "$strace_pid"
wait "$strace_pid" || true
awk -v pid="$nbdgraphd_pid" '$1 == pid && /pread64/ { n++ } END { exit !n }' \
    "$dir/client.trace" || fail "a client read did not run on the loop"

# A client's flush waits for its write-back round: that keeps the loop's
# shortcut (tables and flush on the loop thread, tmpfs never blocks).
strace -f -qq -e trace=$traced -o "$dir/cflush.trace" -p "$nbdgraphd_pid" &
strace_pid=$!
sleep 1
qemu-io -f raw -c 'write -P 0x77 8M 64K' -c flush "$(uri_for cq)" > /dev/null
kill -INT "$strace_pid"
wait "$strace_pid" || true
[ "$(count cflush loop pwrite 4096)" -ge 1 ] ||
    fail "a client's flush: its tables were not written on the loop"
[ "$(count cflush loop fdatasync 0)" -ge 1 ] ||
    fail "a client's flush did not run on the loop"
stop_nbdgraphd
for img in src dst2 dst3 base top cq; do
    qemu-img check -q "$shm/$img.qcow2" || fail "qemu-img check $img.qcow2"
done
