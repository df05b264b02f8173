#!/usr/bin/env bash
# tests/test-job-cancel-pivot.sh: a cancel says what happened to the
# graph.  A mirror whose pivot is done has moved the export for good, so
# job-cancel then (during the pivot's flush of the target, or while the
# job is pending) is refused and the job ends completed; the old code
# took the cancel and reported "Operation canceled" with the export on
# the target.  block-job-cancel without force on a ready mirror is
# QEMU's soft cancel: the job ends completed, nothing moved, the target
# a point-in-time copy (old code: cancelled); with force it is
# cancelled.
source "$srcdir/functions.sh"
set -e -x
requires qemu-io --version
requires jq --version

out=$dir/out
# The target's flushes take 3 s: the pivot is done well before the job.
config="nodes:
  src: { driver: memory, size: 16M }
  dstm: { driver: memory, size: 16M }
  dst: { driver: delay, file: dstm, delay-flush: 3s }
exports:
  vm1: { node: src, writable: true }"

# job_of ID: job ID's query-jobs entry, one line ("" once gone).
job_of ()
{
    qmp '{"execute": "query-jobs"}' | jq -c --arg id "$1" \
        '.return[] | select(.id == $id)'
}

# wait_for TEST: run TEST (a shell command) until it succeeds, 60 s.
wait_for ()
{
    local i
    for i in $(seq 600); do
        eval "$1" && return 0
        sleep 0.1
    done
    fail "still not: $1"
}

export_on () { qmp '{"execute": "query-block-exports"}' |
                   jq -e --arg n "$1" '.return[] | select(.id == "vm1") |
                                       ."node-name" == $n' > /dev/null; }

# mirror_ready ID [ARGS]: a mirror src -> dst, ready.
mirror_ready ()
{
    qmp "{\"execute\": \"blockdev-mirror\", \"arguments\": {
        \"job-id\": \"$1\", \"device\": \"src\", \"target\": \"dst\",
        \"sync\": \"full\", \"auto-dismiss\": false $2}}" > /dev/null
    timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait "$1" > $out
    grep -q "job '$1' ready" $out
}

# 1. Pending after the pivot (auto-finalize off): the cancel is refused,
# finalizing completes it, the export stays on the target.
start_nbdgraphd "$config" vm1
qemu-io -f raw -c 'write -P 0x11 0 16M' "$uri" > /dev/null
mirror_ready m0 ', "auto-finalize": false'
qmp '{"execute": "job-complete", "arguments": {"id": "m0"}}' > /dev/null
wait_for '[ "$(job_of m0 | jq -r .status)" = pending ]'
export_on dst
expect_status 1 nbdgraphctl qmp \
    '{"execute": "job-cancel", "arguments": {"id": "m0"}}' > $out
grep -q "can no longer be cancelled" $out
qmp '{"execute": "job-finalize", "arguments": {"id": "m0"}}' > /dev/null
job_of m0 | jq -e '.status == "concluded" and (has("error") | not)'
export_on dst
qemu-io -f raw -c 'read -P 0x11 0 16M' "$uri" | grep -q 'read 16777216'
stop_nbdgraphd

# 2. job-complete, then job-cancel once the export is on the target (its
# flush still under way): refused, the job ends completed.  On a machine
# so slow that the job is over first, the cancel finds it concluded.
start_nbdgraphd "$config" vm1
mirror_ready m1
qmp '{"execute": "job-complete", "arguments": {"id": "m1"}}' > /dev/null
wait_for 'export_on dst'
expect_status 1 nbdgraphctl qmp \
    '{"execute": "job-cancel", "arguments": {"id": "m1"}}' > $out
grep -Eq "can no longer be cancelled|cannot accept command verb" $out
wait_for '[ "$(job_of m1 | jq -r .status)" = concluded ]'
job_of m1 | jq -e 'has("error") | not'
export_on dst
stop_nbdgraphd

# 3. block-job-cancel, no force, on a ready mirror: completed in place;
# the target holds the source as it was, the export stays on the source.
start_nbdgraphd "$config" vm1
qemu-io -f raw -c 'write -P 0x33 0 16M' "$uri" > /dev/null
mirror_ready m2
qemu-io -f raw -c 'write -P 0x44 4M 1M' "$uri" > /dev/null
qmp '{"execute": "block-job-cancel", "arguments": {"device": "m2"}}' \
    > /dev/null
wait_for '[ "$(job_of m2 | jq -r .status)" = concluded ]'
job_of m2 | jq -e '.status == "concluded" and (has("error") | not)'
export_on src
qmp '{"execute": "job-dismiss", "arguments": {"id": "m2"}}' > /dev/null
qemu-io -f raw -c 'write -P 0x55 0 16M' "$uri" > /dev/null
qmp '{"execute": "block-export-add", "arguments": {"type": "nbd",
    "id": "t", "node-name": "dst"}}' > /dev/null
qemu-io -f raw -r -c 'read -P 0x33 0 4M' -c 'read -P 0x44 4M 1M' \
    -c 'read -P 0x33 5M 11M' "$(uri_for t)" > $out
test "$(grep -c '^read' $out)" = 3

# 4. With force: cancelled.
qmp '{"execute": "block-export-del", "arguments": {"id": "t"}}' > /dev/null
wait_for '! qmp "{\"execute\": \"query-block-exports\"}" | grep -q "\"t\""'
mirror_ready m3
qmp '{"execute": "block-job-cancel", "arguments": {"device": "m3",
    "force": true}}' > /dev/null
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait m3 2> $out
grep -q "job 'm3' cancelled" $out
export_on src
