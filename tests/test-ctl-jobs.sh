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

# wait looks again as soon as the daemon says the job changed, not at
# its next tick: in --verbose's trace the job's status-change event to
# "ready" arrives while no command is in flight, and the next message
# sent is the query-jobs that ends the wait.  The old wait slept between
# looks and read events only inside a query's reply, so it never saw
# one idle.  (A look may by chance be in flight as the job gets ready:
# one round of three suffices.)
woke_for_ready ()
{
    awk -v id="$1" '
        / > /                          { inflight++; if (idle) sent = $0 }
        / < .*"(return|error)"/        { inflight-- }
        / < .*"JOB_STATUS_CHANGE"/ && index($0, "\"" id "\"") &&
            /"status": *"ready"/ && !idle && inflight == 0 { idle = 1 }
        END { exit !(idle && sent ~ /query-jobs/) }' "$2"
}
woke=no
for i in 1 2 3; do
    nbdgraphctl mirror dst src --job-id "r$i" --speed 16M
    nbdgraphctl --verbose wait "r$i" > $out 2> $dir/trace
    grep -q "job 'r$i' ready" $out
    grep -q '^nbdgraphctl: > .*"query-jobs"' $dir/trace
    nbdgraphctl job cancel "r$i"
    expect_status 1 nbdgraphctl wait "r$i" 2> /dev/null
    if woke_for_ready "r$i" $dir/trace; then woke=yes; break; fi
    cat $dir/trace
done
[ $woke = yes ] || fail "wait did not look when the job became ready"

# --timeout bounds the whole wait: a paused job is given up on, and the
# job goes on (the old wait never returned).
nbdgraphctl mirror dst src --job-id m5 --speed 1M
nbdgraphctl job pause m5
expect_status 1 timeout 30 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    --timeout 1 wait m5 2> $out
cat $out
grep -q "job 'm5' still paused after 1 s" $out
nbdgraphctl jobs | grep -Eq '^m5 +mirror +paused '
nbdgraphctl job cancel m5
expect_status 1 nbdgraphctl wait m5 2> /dev/null

# A backup of the new disk; a second one of it is refused naming it.
nbdgraphctl backup dst bk --job-id b0 --speed 1M
expect_status 1 nbdgraphctl mirror dst src --job-id m2 2> $out
grep -q "job 'b0' does not allow" $out
nbdgraphctl job cancel b0
expect_status 1 nbdgraphctl wait b0
nbdgraphctl --json jobs | jq -e 'length == 0'

# A daemon that goes away ends a wait (exit 1, said): SIGTERM cancels
# the job, and the wait reports that or the connection's end.
nbdgraphctl mirror dst src --job-id m6 --speed 1M
nbdgraphctl wait m6 > $dir/wait6.out 2> $out &
waiter=$!
for i in $(seq 100); do grep -q running $dir/wait6.out && break; sleep 0.1; done
stop_nbdgraphd
status=0; wait $waiter || status=$?
cat $out
[ $status = 1 ] || fail "wait on a daemon gone exited $status"
grep -Eq "job 'm6' cancelled|nbdgraphd closed the connection" $out
