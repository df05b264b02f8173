#!/usr/bin/env bash
# tests/test-kill-during-jobs.sh: kill -9 of the daemon while a mirror
# and, in a second run, a backup of a file-backed export run leaves the
# source file byte-identical to what the client's acknowledged writes
# made of it (the same writes replayed on a copy of the file): the jobs
# only read the source.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires qemu-img --version
requires cmp --version

src=$dir/src.raw
want=$dir/want.raw

# WRITES on the export while JOB runs, then kill -9 and compare.
run_and_kill ()
{
    local job=$1 i off
    local -a io=()

    nbdgraphctl jobs | grep -Eq "^$job +[a-z]+ +running "
    for i in $(seq 40); do
        off=$(( (i * 7919) % 500 * 65536 ))
        io+=(-c "write -P $((i % 250 + 1)) $off 65536")
        if [ $((i % 10)) = 0 ]; then
            io+=(-c "write -z $((off + 4096)) 8192")
        fi
    done
    qemu-io -f raw "$uri" "${io[@]}" > /dev/null
    qemu-io -f raw "$want" "${io[@]}" > /dev/null
    # Still running: the kill lands in the middle of the job.
    nbdgraphctl jobs | grep -Eq "^$job +[a-z]+ +running "
    kill -KILL "$nbdgraphd_pid"
    wait "$nbdgraphd_pid" || true
    nbdgraphd_pid=
    rm -f "$sock" "$ctl"
    cmp "$src" "$want"
}

config="nodes:
  src: { driver: file, filename: $src }
  dst: { driver: file, filename: $dir/dst.raw }
exports:
  vm1: { node: src, writable: true }"

qemu-img create -q -f raw "$src" 32M
qemu-img create -q -f raw $dir/dst.raw 32M
qemu-io -f raw "$src" -c 'write -P 7 0 32M' > /dev/null
cp "$src" "$want"

start_nbdgraphd "$config" vm1
nbdgraphctl mirror src dst --job-id m0 --speed 2M
run_and_kill m0

start_nbdgraphd "$config" vm1
nbdgraphctl backup src dst --job-id b0 --speed 2M
run_and_kill b0
