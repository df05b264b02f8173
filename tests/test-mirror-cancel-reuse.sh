#!/usr/bin/env bash
# tests/test-mirror-cancel-reuse.sh: mirror -> ready -> job cancel ->
# wait -> mirror again to the same target, 20 rounds.  The target is slow
# (a delay filter on its writes) and a client write lands just before
# each cancel, so the cancelled job still has copies in flight: `wait`
# must not return before the job has dropped its claims (it used to
# report the cancelled mirror as "ready" at once, and the next mirror was
# refused with "target node 'dst' is in use by job ...").
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
start_nbdgraphd "nodes:
  src: { driver: memory, size: 4M }
  dst-mem: { driver: memory, size: 4M }
  dst: { driver: delay, file: dst-mem, delay-write: 300ms }
exports:
  vm1: { node: src, writable: true }" vm1

out=$dir/out
for i in $(seq 20); do
    nbdgraphctl mirror src dst --job-id "c$i"
    nbdgraphctl wait "c$i" > $out
    grep -q "job 'c$i' ready" $out
    # Sixteen 64 KiB copies go to the slow target now.
    qemu-io -f raw "$uri" -c "write -P $i 0 1M" > /dev/null
    nbdgraphctl job cancel "c$i"
    # Over only once the job is gone: cancelled, not "ready".
    expect_status 1 nbdgraphctl wait "c$i" 2> $out
    cat $out
    # A cancel that ends before `wait` connects leaves it nothing to see
    # but a job that is gone (also exit 1, and also free for the next).
    grep -Eq "job 'c$i' (cancelled|is gone)" $out
    nbdgraphctl nac | grep -q "c$i" && fail "job c$i still holds claims"
    nbdgraphctl --json jobs | grep -q "c$i" && fail "job c$i still listed"
done
# The source is what the client wrote last.
qemu-io -f raw "$uri" -c 'read -P 20 0 1M' | grep -q 'read 1048576'
