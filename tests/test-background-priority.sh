#!/usr/bin/env bash
# tests/test-background-priority.sh: a job's bulk copy runs on worker
# threads at the lowest CPU priority (nice 19), the work clients wait
# for on threads at the daemon's own (graph/threads.c, "background
# twin").  Clients' 1 MiB writes to a memory node and to a file make no
# thread nice 19; a mirror from a memory node to a file writes its
# target only from nice-19 threads (strace -f: every pwrite while no
# client writes a file is the mirror's), while the loop thread and the
# client's workers stay at nice 0; client I/O meanwhile is served and
# the source's data is what the client wrote.
source "$srcdir/functions.sh"
set -e -x
requires strace -V
requires qemu-io --version
requires qemu-img --version
[ "$(uname -s)" = Linux ] || { echo "$0: SKIP: per-thread nice is Linux's" >&2; exit 77; }

truncate -s 64M "$dir/dst.raw" "$dir/f.raw"
start_nbdgraphd "nodes:
  src: { driver: memory, size: 64M }
  f: { driver: file, filename: \"$dir/f.raw\" }
  dst: { driver: file, filename: \"$dir/dst.raw\" }
exports:
  src: { node: src, writable: true }
  f: { node: f, writable: true }" src

# thread_nices: "TID NICE" for each of the daemon's threads.
thread_nices ()
{
    local t

    for t in /proc/"$nbdgraphd_pid"/task/*; do
        # Field 19 of stat; the comm in parentheses may hold spaces.
        echo "${t##*/} $(sed 's/^.*) //' "$t/stat" | awk '{ print $17 }')"
    done
}

# Client work only: big writes go to the memory node's and the file
# pool's workers, none of which is a background one.
qemu-io -f raw -c 'write -P 0x3c 0 32M' -c 'write -P 0x3d 32M 32M' \
    "$uri" > /dev/null
qemu-io -f raw -c 'write -P 0x4e 0 8M' "$(uri_for f)" > /dev/null
thread_nices > "$dir/before"
grep -q ' 0$' "$dir/before"
if grep -v ' 0$' "$dir/before"; then
    fail "a thread runs below normal priority with no job: $(cat "$dir/before")"
fi

# A mirror slow enough to watch (8 MiB/s: about 8 s for 64 MiB).
strace -f -qq -e trace=pwrite64,pwritev,pwritev2 -o "$dir/trace" \
    -p "$nbdgraphd_pid" &
strace_pid=$!
# Attached once every thread of the daemon has a tracer.
wait_for '! grep -q "^TracerPid:[[:space:]]*0$" /proc/$nbdgraphd_pid/task/*/status'
nbdgraphctl mirror src dst --job-id m0 --speed 8M
wait_for '[ "$(job_of m0 | jq ".\"current-progress\"")" -gt 0 ]'
thread_nices > "$dir/during"
# Client I/O during the copy: served, and what it wrote reads back.
qemu-io -f raw -c 'write -P 0x5f 1M 64k' -c 'read -P 0x5f 1M 64k' \
    -c 'read -P 0x3d 40M 1M' "$uri" > "$dir/io.out"
grep -q 'read 1048576/1048576' "$dir/io.out" &&
    ! grep -qi 'fail\|error' "$dir/io.out" ||
    fail "client I/O during the mirror: $(cat "$dir/io.out")"
kill "$strace_pid"; wait "$strace_pid" || true
nbdgraphctl job cancel m0
wait_for '[ -z "$(job_of m0)" ]'

# Every pwrite of the window came from a nice-19 thread, and there was
# at least one; the loop thread (tid = pid) stayed at 0.
tids=$(awk '$2 ~ /^pwrite/ { print $1 }' "$dir/trace" | sort -u)
[ -n "$tids" ] || fail "the mirror wrote nothing in the window: $(head "$dir/trace")"
for tid in $tids; do
    nice=$(awk -v t="$tid" '$1 == t { print $2 }' "$dir/during")
    [ "$nice" = 19 ] ||
        fail "thread $tid wrote the target at nice '$nice': $(cat "$dir/during")"
done
grep -q "^$nbdgraphd_pid 0$" "$dir/during" ||
    fail "the loop thread is not at nice 0: $(cat "$dir/during")"

# The source is what the client wrote, the cancelled mirror's claims
# are gone (the target can go).
qemu-io -f raw -r -c 'read -P 0x3c 0 1M' -c 'read -P 0x5f 1M 64k' \
    -c 'read -P 0x3d 32M 32M' "$uri" > "$dir/io.out"
grep -q 'read 33554432/33554432' "$dir/io.out" &&
    ! grep -qi 'fail\|error' "$dir/io.out" ||
    fail "the source after the mirror: $(cat "$dir/io.out")"
qmp '{"execute": "blockdev-del", "arguments": {"node-name": "dst"}}' |
    grep -q '"return"'
stop_nbdgraphd
