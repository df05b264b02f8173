#!/usr/bin/env bash
# tests/test-job-cancel-pivot.sh: a mirror (and an active commit) moves
# the graph at finalize, as QEMU's does (mirror_exit_common at
# .prepare): from the end of its work to finalize the source stays
# drained, so with auto-finalize false a client write to the export
# waits while the job is pending; job-cancel then is taken
# (BLOCK_JOB_CANCELLED), nothing moves and the write lands on the
# source; job-finalize pivots and the write lands on the target.  The
# old code pivoted before pending and refused the cancel ("can no
# longer be cancelled").  block-job-cancel without force on a ready
# mirror is QEMU's soft cancel: the job ends completed, nothing moved,
# the target a point-in-time copy; with force it is cancelled.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"
# The target's flushes take 3 s: the job is done well after its last
# copy.
config="nodes:
  src: { driver: memory, size: 16M }
  dstm: { driver: memory, size: 16M }
  dst: { driver: delay, file: dstm, delay-flush: 3s }
exports:
  vm1: { node: src, writable: true }"

export_on () { qmp '{"execute": "query-block-exports"}' |
                   jq -e --arg n "$1" '.return[] | select(.id == "vm1") |
                                       ."node-name" == $n' > /dev/null; }

# event_for EVENT ID: EVENT came for job ID.
event_for () { jq -s -e --arg e "$1" --arg id "$2" \
                   'any(.[]; .event == $e and .data.device == $id)' \
                   events > /dev/null; }

# mirror_ready ID [ARGS]: a mirror src -> dst, ready.
mirror_ready ()
{
    qmp "{\"execute\": \"blockdev-mirror\", \"arguments\": {
        \"job-id\": \"$1\", \"device\": \"src\", \"target\": \"dst\",
        \"sync\": \"full\", \"auto-dismiss\": false $2}}" > /dev/null
    timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait "$1" > $out
    grep -q "job '$1' ready" $out
}

# start_write URI PATTERN OFFSET: a client writes 64 KiB of PATTERN at
# OFFSET in the background (pid in $writer, its output in $dir/write).
start_write ()
{
    timeout 60 qemu-io -f raw -c "write -P $2 $3 64k" "$1" > write &
    writer=$!
}

# write_waits: the write is still waiting, 2 s after it started.
write_waits ()
{
    sleep 2
    kill -0 $writer || fail "the write ended while the job was pending"
    ! grep -q wrote write || fail "the write ended while pending"
}

write_done () { wait $writer; grep -q 'wrote 65536' write; }

# pending_with_write ID JOB-ARGS [COMPLETE-ARGS]: mirror ID ready with
# auto-finalize off, job-complete, pending with the export still on
# the source, and a client write of 0xab at 1M waiting.
pending_with_write ()
{
    mirror_ready $1 ', "auto-finalize": false'
    qmp "{\"execute\": \"job-complete\", \"arguments\": {\"id\": \"$1\"}}" \
        > /dev/null
    wait_for "[ \"\$(job_of $1 | jq -r .status)\" = pending ]"
    export_on src
    start_write "$uri" 0xab 1M
    write_waits
}

# 1. Pending (auto-finalize off): job-cancel is taken, nothing moves,
# the waiting write completes on the source.  A blockdev-del of the
# drained source meanwhile is refused at once (the job holds it).
start_nbdgraphd "$config" vm1
start_events dst '{"delay-flush": "3s"}'
qemu-io -f raw -c 'write -P 0x11 0 16M' "$uri" > /dev/null
pending_with_write m0
expect_status 1 timeout 10 "$top_builddir/nbdgraphctl" --socket "$ctl" qmp \
    '{"execute": "blockdev-del", "arguments": {"node-name": "src"}}' > $out
kill -0 $writer
qmp '{"execute": "job-cancel", "arguments": {"id": "m0"}}' | jq -e .return
write_done
wait_for '[ "$(job_of m0 | jq -r .status)" = concluded ]'
job_of m0 | jq -e '.error == "Operation canceled"'
wait_for 'event_for BLOCK_JOB_CANCELLED m0'
! event_for BLOCK_JOB_COMPLETED m0 || fail "m0 cancelled and completed"
export_on src
qemu-io -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0xab 1M 64k' \
    -c 'read -P 0x11 1088k 14976k' "$uri" > $out
test "$(grep -c '^read' $out)" = 3
# The target was left as the source was before the write.
qmp '{"execute": "job-dismiss", "arguments": {"id": "m0"}}' > /dev/null
qmp '{"execute": "block-export-add", "arguments": {"type": "nbd",
    "id": "t", "node-name": "dst"}}' > /dev/null
qemu-io -f raw -r -c 'read -P 0x11 0 16M' "$(uri_for t)" |
    grep -q 'read 16777216'
qmp '{"execute": "block-export-del", "arguments": {"id": "t"}}' > /dev/null
wait_for '! qmp "{\"execute\": \"query-block-exports\"}" | grep -q "\"t\""'

# 2. The same with job-finalize: pivoted, the write lands on the target
# and reads back through the export.
pending_with_write m1
qmp '{"execute": "job-finalize", "arguments": {"id": "m1"}}' | jq -e .return
write_done
job_of m1 | jq -e '.status == "concluded" and (has("error") | not)'
wait_for 'event_for BLOCK_JOB_COMPLETED m1'
export_on dst
qemu-io -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0xab 1M 64k' \
    -c 'read -P 0x11 1088k 14976k' "$uri" > $out
test "$(grep -c '^read' $out)" = 3
stop_events
stop_nbdgraphd

# 3. job-complete, then job-cancel while the target flushes (the job
# not done yet): taken, the export stays on the source.
start_nbdgraphd "$config" vm1
mirror_ready m2
qmp '{"execute": "job-complete", "arguments": {"id": "m2"}}' > /dev/null
sleep 1
qmp '{"execute": "job-cancel", "arguments": {"id": "m2"}}' | jq -e .return
wait_for '[ "$(job_of m2 | jq -r .status)" = concluded ]'
job_of m2 | jq -e '.error == "Operation canceled"'
export_on src
qmp '{"execute": "job-dismiss", "arguments": {"id": "m2"}}' > /dev/null

# 4. SIGTERM while a job is pending with a write waiting: the daemon
# cancels the job (as QEMU's exit does) and exits at once, the write
# answered first.
pending_with_write m3
stop_within 15
write_done

# 5. block-job-cancel, no force, on a ready mirror: completed in place;
# the target holds the source as it was, the export stays on the source.
start_nbdgraphd "$config" vm1
qemu-io -f raw -c 'write -P 0x33 0 16M' "$uri" > /dev/null
mirror_ready m4
qemu-io -f raw -c 'write -P 0x44 4M 1M' "$uri" > /dev/null
qmp '{"execute": "block-job-cancel", "arguments": {"device": "m4"}}' \
    > /dev/null
wait_for '[ "$(job_of m4 | jq -r .status)" = concluded ]'
job_of m4 | jq -e '.status == "concluded" and (has("error") | not)'
export_on src
qmp '{"execute": "job-dismiss", "arguments": {"id": "m4"}}' > /dev/null
qemu-io -f raw -c 'write -P 0x55 0 16M' "$uri" > /dev/null
qmp '{"execute": "block-export-add", "arguments": {"type": "nbd",
    "id": "t", "node-name": "dst"}}' > /dev/null
qemu-io -f raw -r -c 'read -P 0x33 0 4M' -c 'read -P 0x44 4M 1M' \
    -c 'read -P 0x33 5M 11M' "$(uri_for t)" > $out
test "$(grep -c '^read' $out)" = 3

# 6. With force: cancelled.
qmp '{"execute": "block-export-del", "arguments": {"id": "t"}}' > /dev/null
wait_for '! qmp "{\"execute\": \"query-block-exports\"}" | grep -q "\"t\""'
mirror_ready m5
qmp '{"execute": "block-job-cancel", "arguments": {"device": "m5",
    "force": true}}' > /dev/null
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait m5 2> $out
grep -q "job 'm5' cancelled" $out
export_on src
stop_nbdgraphd

# 7. An active commit (top into base) pivots at finalize the same way.
make_qcow2_chain 16M base=0x11@0:16M top=
commit_config="nodes:
  base: { driver: qcow2, backing: null,
          file: { driver: file, filename: @DIR@/base.qcow2 } }
  top: { driver: qcow2, backing: base,
         file: { driver: file, filename: @DIR@/top.qcow2 } }
exports:
  vm1: { node: top, writable: true }"

# commit_pending ID VERB PATTERN OFFSET: an active commit ID of top,
# ready, job-complete, pending with the export on top, a client write
# of PATTERN at OFFSET waiting; then job-VERB: the write completes.
commit_pending ()
{
    qmp "{\"execute\": \"block-commit\", \"arguments\": {\"job-id\": \"$1\",
        \"device\": \"top\", \"auto-finalize\": false,
        \"auto-dismiss\": false}}" | jq -e .return
    timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait $1 > $out
    grep -q "job '$1' ready" $out
    qmp "{\"execute\": \"job-complete\", \"arguments\": {\"id\": \"$1\"}}" \
        > /dev/null
    wait_for "[ \"\$(job_of $1 | jq -r .status)\" = pending ]"
    export_on top
    start_write "$uri" $3 $4
    write_waits
    qmp "{\"execute\": \"job-$2\", \"arguments\": {\"id\": \"$1\"}}" |
        jq -e .return
    write_done
    wait_for "[ \"\$(job_of $1 | jq -r .status)\" = concluded ]"
    qmp "{\"execute\": \"job-dismiss\", \"arguments\": {\"id\": \"$1\"}}" \
        > /dev/null
}

# top alone, unallocated reading as zeroes.
top_only='json:{"driver": "qcow2", "backing": null,
                "file": {"driver": "file", "filename": "top.qcow2"}}'

start_nbdgraphd "$commit_config" vm1
qemu-io -f raw -c 'write -P 0x22 8M 1M' "$uri" > /dev/null
# Cancelled: nothing moves, the write lands in top.
commit_pending c0 cancel 0xab 1M
export_on top
# Finalized: the export on base, the write (after the pivot) in base.
commit_pending c1 finalize 0xcd 2M
export_on base
qemu-io -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0xab 1M 64k' \
    -c 'read -P 0xcd 2M 64k' -c 'read -P 0x22 8M 1M' "$uri" > $out
test "$(grep -c '^read' $out)" = 4
stop_nbdgraphd
qemu-io -r -c 'read -P 0xab 1M 64k' -c 'read -P 0 2M 64k' \
    -c 'read -P 0x22 8M 1M' "$top_only" > $out
test "$(grep -c '^read' $out)" = 3
qemu-io -f qcow2 -r -c 'read -P 0xab 1M 64k' -c 'read -P 0xcd 2M 64k' \
    -c 'read -P 0x22 8M 1M' base.qcow2 > $out
test "$(grep -c '^read' $out)" = 3

# 8. A pivot refused at finalize (a connected client was told trim, the
# target does not offer it) fails the job with the reason, nothing
# moved; the clients go on on the source.
start_nbdgraphd "nodes:
  src: { driver: memory, size: 16M }
  dstm: { driver: memory, size: 16M }
  dst: { driver: blkdebug, image: dstm, drop-caps: [ trim ] }
exports:
  vm1: { node: src, writable: true }" vm1
# A client that stays connected until fd 3 closes.
mkfifo hold
qemu-io -f raw "$uri" < hold > /dev/null &
holder=$!
exec 3> hold
wait_export_connections vm1 1
pending_with_write m6
qmp '{"execute": "job-finalize", "arguments": {"id": "m6"}}' | jq -e .return
write_done
job_of m6 | jq -e '.status == "concluded" and
                   (.error | test("were told TRIM"))'
export_on src
qemu-io -f raw -c 'read -P 0xab 1M 64k' "$uri" | grep -q 'read 65536'
exec 3>&-
wait $holder
stop_nbdgraphd

# 9. An export added on the drained source while the job is pending
# waits with the others (the section adopts its BB, as QEMU drains a
# new parent of a drained node): its write lands on the target after
# the pivot, not on the source behind the job's back (old code: on the
# source, lost on the target).
start_nbdgraphd "nodes:
  other: { driver: memory, size: 1M }
  src: { driver: memory, size: 16M }
  dst: { driver: memory, size: 16M }
exports:
  other: { node: other }" other
mirror_ready m7 ', "auto-finalize": false'
qmp '{"execute": "job-complete", "arguments": {"id": "m7"}}' > /dev/null
wait_for '[ "$(job_of m7 | jq -r .status)" = pending ]'
qmp '{"execute": "block-export-add", "arguments": {"type": "nbd",
    "id": "vm1", "node-name": "src", "writable": true}}' | jq -e .return
start_write "$(uri_for vm1)" 0xab 1M
write_waits
qmp '{"execute": "job-finalize", "arguments": {"id": "m7"}}' | jq -e .return
write_done
export_on dst
qemu-io -f raw -c 'read -P 0xab 1M 64k' "$(uri_for vm1)" |
    grep -q 'read 65536'
qmp '{"execute": "block-export-add", "arguments": {"type": "nbd",
    "id": "s", "node-name": "src"}}' | jq -e .return
qemu-io -f raw -r -c 'read -P 0 1M 64k' "$(uri_for s)" | grep -q 'read 65536'
stop_nbdgraphd
