#!/usr/bin/env bash
# tests/test-job-errors.sh: jobs whose target writes fail follow their
# error policy, as QEMU's do, and their progress counts only what they
# copied.  The target sits on a blkdebug node injecting ENOSPC (or EIO)
# into writes:
#   - block-stream onto a qcow2 overlay (its file under blkdebug): with
#     on-error report it fails with BLOCK_JOB_ERROR then
#     BLOCK_JOB_COMPLETED and its error, the chain as it was (old code:
#     the copy-on-read filter swallowed the failed copy-up, the job
#     counted it as copied and went round for ever); stop pauses it with
#     io-status nospace, and once the rule is gone job-resume finishes
#     it; ignore skips what fails and ends failed, the chain kept.
#   - blockdev-mirror to a memory node under blkdebug: report fails it,
#     enospc stops on ENOSPC (io-status nospace, resumable) and reports
#     EIO, ignore keeps it running with the range still to copy and
#     current-progress below total-progress (old code: 'enospc' was
#     refused, io-status always "ok"); `nbdgraphctl wait` on a job a
#     stop paused says so and exits 1 (it used to wait for ever).
#   - block-commit (active) into a base under blkdebug: report fails
#     it, stop pauses it until job-resume, then it completes and pivots.
#   - blockdev-backup: a client write whose old data cannot be saved
#     fails (old code: it went through, and a backup that goes on would
#     hold the new data there).
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"

# rules NODE JSON: the blkdebug node's inject-error list becomes JSON.
rules ()
{
    qmp "{\"execute\": \"blockdev-reconfigure\", \"arguments\": {
        \"node-name\": \"$1\", \"options\": {\"inject-error\": $2}}}" \
        > /dev/null
}

# job_field ID FIELD: FIELD of job ID in query-block-jobs ("" if gone).
job_field ()
{
    qmp '{"execute": "query-block-jobs"}' |
        jq -r --arg id "$1" --arg f "$2" \
            '.return[] | select(.device == $id) | .[$f]'
}

# wait_field ID FIELD VALUE: wait (up to 60 s) until it says VALUE.
wait_field ()
{
    local i
    for i in $(seq 600); do
        [ "$(job_field "$1" "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    fail "job $1: $2 is '$(job_field "$1" "$2")', not '$3'"
}

# progress_ok ID: current-progress never above total-progress.
progress_ok ()
{
    qmp '{"execute": "query-jobs"}' | jq -e --arg id "$1" \
        '.return[] | select(.id == $id) |
         ."current-progress" <= ."total-progress"'
}

# events_in_order ID: BLOCK_JOB_ERROR for ID came, then
# BLOCK_JOB_COMPLETED with an error (which goes to stdout).
events_in_order ()
{
    jq -rs --arg id "$1" '[.[] | select(.data.device == $id) |
        select(.event == "BLOCK_JOB_ERROR" or
               .event == "BLOCK_JOB_COMPLETED")] |
        if .[0].event == "BLOCK_JOB_ERROR" and
           .[-1].event == "BLOCK_JOB_COMPLETED" and .[-1].data.error
        then .[-1].data.error else error("order") end' events
}

# ---- block-stream onto a qcow2 overlay whose writes fail -------------

enospc_above_1m='[{"iotype": "write", "errno": "ENOSPC", "offset": 1048576}]'
stream_config="nodes:
  base: { driver: qcow2, file: { driver: file, filename: @DIR@/base.qcow2 },
          backing: null }
  topf: { driver: blkdebug, image: { driver: file,
          filename: @DIR@/top.qcow2 } }
  top: { driver: qcow2, file: topf, backing: base }
exports:
  vm1: { node: top, writable: true }"

# stream_round POLICY: a fresh chain (base full of data, an empty top,
# whose file grows through blkdebug), the daemon, and a stream under
# POLICY with the top's writes above its first MiB failing with ENOSPC.
stream_round ()
{
    make_qcow2_chain 64M base=0x11@0:64M top=
    start_nbdgraphd "$stream_config" vm1
    start_events topf '{"inject-error": []}'
    rules topf "$enospc_above_1m"
    qmp "{\"execute\": \"block-stream\", \"arguments\": {\"job-id\": \"s0\",
        \"device\": \"top\", \"on-error\": \"$1\",
        \"auto-dismiss\": false}}" > /dev/null
}

chain_kept ()
{
    nbdgraphctl --json nodes |
        jq -e '.[] | select(."node-name" == "top") | .children |
               map(select(.child == "backing")) | length == 1'
}

# report: fails, and fast -- not 2.6 GiB "copied" of a 64 MiB job.
stream_round report
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait s0 2> $out || fail "stream s0 did not end: $(cat $out)"
grep -q "No space left on device" $out
stop_events
events_in_order s0 | grep -q "No space left on device"
progress_ok s0
qmp '{"execute": "query-jobs"}' |
    jq -e '.return[0] | ."current-progress" < ."total-progress"'
chain_kept
qemu-img compare -f raw -F raw "$uri" want.raw
qmp '{"execute": "job-dismiss", "arguments": {"id": "s0"}}' > /dev/null
stop_nbdgraphd

# stop: paused, io-status nospace; without the rule, resumed, it ends.
stream_round stop
wait_field s0 io-status nospace
test "$(job_field s0 status)" = paused
progress_ok s0
rules topf '[]'
qmp '{"execute": "job-resume", "arguments": {"id": "s0"}}' > /dev/null
timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait s0 > $out
grep -q "job 's0' completed" $out
stop_events
qmp '{"execute": "query-jobs"}' |
    jq -e '.return[0] | ."current-progress" == ."total-progress"'
! chain_kept || fail "the stream did not cut the chain"
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd
qemu-img compare -f qcow2 -F raw top.qcow2 want.raw

# ignore: what fails is skipped, the job goes on and fails at its end.
stream_round ignore
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait s0 2> $out || fail "stream s0 did not end: $(cat $out)"
grep -q "ignored" $out
stop_events
grep -q '"action":"ignore"' events
progress_ok s0
chain_kept
qemu-img compare -f raw -F raw "$uri" want.raw
stop_nbdgraphd

# ---- blockdev-mirror to a target whose writes fail ------------------

# start_mirror_daemon: export vm1 on a memory node full of 0x5a, beside
# a blkdebug target dst; the events of dst's injected errors recorded.
start_mirror_daemon ()
{
    start_nbdgraphd "nodes:
  src: { driver: memory, size: 64M }
  dstm: { driver: memory, size: 64M }
  dst: { driver: blkdebug, image: dstm }
exports:
  vm1: { node: src, writable: true }" vm1
    qemu-io -f raw -c 'write -P 0x5a 0 64M' "$uri" > /dev/null
    start_events dst '{"inject-error": []}'
}

start_mirror_daemon

# mirror ID POLICY ERRNO: a full mirror src -> dst under POLICY, with
# dst's writes from 8 MiB on for 1 MiB failing with ERRNO.
mirror ()
{
    rules dst "[{\"iotype\": \"write\", \"errno\": \"$3\",
                 \"offset\": 8388608, \"length\": 1048576}]"
    qmp "{\"execute\": \"blockdev-mirror\", \"arguments\": {
        \"job-id\": \"$1\", \"device\": \"src\", \"target\": \"dst\",
        \"sync\": \"full\", \"on-target-error\": \"$2\",
        \"auto-dismiss\": false}}" > /dev/null
}

# report: BLOCK_JOB_ERROR, then BLOCK_JOB_COMPLETED with the error.
mirror m0 report ENOSPC
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait m0 2> $out
grep -q "writing target node 'dst': No space left on device" $out
progress_ok m0
qmp '{"execute": "job-dismiss", "arguments": {"id": "m0"}}' > /dev/null

# enospc, EIO: reported.
mirror m1 enospc EIO
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait m1 2> $out
grep -q "Input/output error" $out
qmp '{"execute": "job-dismiss", "arguments": {"id": "m1"}}' > /dev/null

# enospc, ENOSPC: a stop, nospace; resumed without the rule, it gets
# ready and the pivot gives the export a target with the data.
mirror m2 enospc ENOSPC
# `wait` says so rather than wait for a job-resume for ever.
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait m2 2> $out
grep -q "job 'm2' stopped on an I/O error (io-status nospace)" $out
test "$(job_field m2 io-status)" = nospace
test "$(job_field m2 status)" = paused
test "$(job_field m2 paused)" = true
progress_ok m2
rules dst '[]'
qmp '{"execute": "job-resume", "arguments": {"id": "m2"}}' > /dev/null
test "$(job_field m2 io-status)" = ok
timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait m2 --complete \
    > $out
grep -q "job 'm2' completed" $out
qemu-io -f raw -c 'read -P 0x5a 0 64M' "$uri" | grep -q 'read 67108864'
qmp '{"execute": "query-block-exports"}' |
    jq -e '.return[] | select(.id == "vm1") | ."node-name" == "dst"'
stop_events
stop_nbdgraphd

# ignore: keeps running with what fails still to copy; gets ready once
# the writes work.
start_mirror_daemon
mirror m3 ignore ENOSPC
for i in $(seq 600); do
    [ "$(grep -c '"action":"ignore"' events)" -ge 3 ] && break
    sleep 0.1
done
grep -q '"action":"ignore"' events
test "$(job_field m3 status)" = running
progress_ok m3
qmp '{"execute": "query-jobs"}' |
    jq -e '.return[0] | ."current-progress" <= 67108864 - 1048576'
rules dst '[]'
timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait m3 > $out
grep -q "job 'm3' ready" $out
progress_ok m3
qmp '{"execute": "job-cancel", "arguments": {"id": "m3"}}' > /dev/null
stop_events
stop_nbdgraphd

# ---- block-commit (active) into a base whose writes fail ------------

commit_config="nodes:
  basem: { driver: memory, size: 16M }
  base: { driver: blkdebug, image: basem }
  top: { driver: memory, size: 16M, backing: base }
exports:
  vm1: { node: top, writable: true }"
start_nbdgraphd "$commit_config" vm1
qemu-io -f raw -c 'write -P 0x66 0 16M' "$uri" > /dev/null
# commit ID POLICY: top into base under on-error POLICY, base's writes
# failing with ENOSPC.
commit ()
{
    rules base '[{"iotype": "write", "errno": "ENOSPC"}]'
    qmp "{\"execute\": \"block-commit\", \"arguments\": {
        \"job-id\": \"$1\", \"device\": \"top\", \"base-node\": \"base\",
        \"on-error\": \"$2\", \"auto-dismiss\": false}}" > /dev/null
}
commit c0 report
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait c0 2> $out
grep -q "No space left on device" $out
progress_ok c0
qmp '{"execute": "job-dismiss", "arguments": {"id": "c0"}}' > /dev/null
commit c1 stop
expect_status 1 timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" \
    wait c1 2> $out
grep -q "job 'c1' stopped on an I/O error (io-status nospace)" $out
rules base '[]'
qmp '{"execute": "job-resume", "arguments": {"id": "c1"}}' > /dev/null
timeout 60 "$top_builddir/nbdgraphctl" --socket "$ctl" wait c1 --complete \
    > $out
grep -q "job 'c1' completed" $out
qmp '{"execute": "query-block-exports"}' |
    jq -e '.return[] | select(.id == "vm1") | ."node-name" == "base"'
qemu-io -f raw -c 'read -P 0x66 0 16M' "$uri" | grep -q 'read 16777216'
stop_nbdgraphd

# ---- blockdev-backup: a write whose old data cannot be saved --------

start_nbdgraphd "nodes:
  src: { driver: memory, size: 16M }
  dstm: { driver: memory, size: 16M }
  dst: { driver: blkdebug, image: dstm,
         inject-error: [ { iotype: write, errno: ENOSPC } ] }
exports:
  vm1: { node: src, writable: true }" vm1
qemu-io -f raw -c 'write -P 0x11 0 16M' "$uri" > /dev/null
qmp '{"execute": "blockdev-backup", "arguments": {"job-id": "b0",
    "device": "src", "target": "dst", "sync": "none",
    "on-target-error": "ignore"}}' > /dev/null
if qemu-io -f raw -c 'write -P 0x22 1M 64k' "$uri" > $out 2>&1; then
    ! grep -q 'wrote 65536' $out || fail "a write went through unsaved"
fi
qemu-io -f raw -c 'read -P 0x11 1M 64k' "$uri" | grep -q 'read 65536'
test "$(job_field b0 status)" = running
qmp '{"execute": "job-cancel", "arguments": {"id": "b0"}}' > /dev/null
