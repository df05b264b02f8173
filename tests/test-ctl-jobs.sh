#!/usr/bin/env bash
# tests/test-ctl-jobs.sh: nbdgraphctl's job commands against the real
# daemon — mirror, jobs, wait --complete, job cancel, backup, refusals.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires jq --version
start_nbdgraphd "nodes:
  src: { driver: memory, size: 32M }
  dst: { driver: memory, size: 32M }
  bk: { driver: memory, size: 32M }
exports:
  vm1: { node: src, writable: true }" vm1

out=$dir/out
uri="nbd+unix:///vm1?socket=$sock"

qemu-io -f raw "$uri" -c 'write -P 0x5a 0 32M' > /dev/null

# A slow mirror shows as running; a bad verb is a usage error.
nbdgraphctl mirror src dst --job-id m0 --speed 1M
nbdgraphctl jobs > $out
cat $out
grep -Eq '^ID +TYPE +STATUS +DONE +COPIED +TOTAL +ERROR$' $out
grep -Eq '^m0 +mirror +running ' $out
expect_status 2 nbdgraphctl job frobnicate m0
nbdgraphctl job pause m0
nbdgraphctl jobs | grep -Eq '^m0 +mirror +paused '
nbdgraphctl job cancel m0
# wait on a cancelled job fails and says so (or finds it gone).
expect_status 1 nbdgraphctl wait m0 2> $out
cat $out

# At full speed, wait --complete pivots the export onto dst.
nbdgraphctl mirror src dst --job-id m1
nbdgraphctl wait m1 --complete > $out
cat $out
grep -q "job 'm1' completed" $out
nbdgraphctl graph | grep -q 'dst (memory'
qemu-io -f raw "$uri" -c 'read -P 0x5a 0 32M' | grep -q 'read 33554432'

# wait says what happened: a mirror that became ready is "ready", not
# "completed" (in --json too); cancelled while waited for, "cancelled".
nbdgraphctl mirror dst src --job-id m3
nbdgraphctl wait m3 > $out
cat $out
grep -q "job 'm3' ready" $out
grep -q completed $out && fail "wait called a ready mirror completed"
nbdgraphctl --json wait m3 | jq -e '.outcome == "ready" and .completed == false'
nbdgraphctl job cancel m3
expect_status 1 nbdgraphctl wait m3 2> /dev/null
nbdgraphctl mirror dst src --job-id m4 --speed 1M
nbdgraphctl wait m4 > $dir/wait.out 2> $out &
waiter=$!
for i in $(seq 100); do grep -q running $dir/wait.out && break; sleep 0.1; done
nbdgraphctl job cancel m4
status=0; wait $waiter || status=$?
cat $out
[ $status = 1 ] || fail "wait on a cancelled job exited $status"
grep -q "job 'm4' cancelled" $out

# A backup of the new disk; a second one of it is refused naming it.
nbdgraphctl backup dst bk --job-id b0 --speed 1M
expect_status 1 nbdgraphctl mirror dst src --job-id m2 2> $out
grep -q "job 'b0' does not allow" $out
nbdgraphctl job cancel b0
expect_status 1 nbdgraphctl wait b0
nbdgraphctl --json jobs | jq -e 'length == 0'
