#!/usr/bin/env bash
# tests/test-stream-finalize.sh: block-stream and an intermediate
# block-commit change the chain at finalize, as QEMU's do
# (stream_prepare, commit_prepare), each in a drained section of its
# own; their run ends with nothing changed for good and nothing drained.
# With auto-finalize false:
#   - a pending stream (qcow2 chain base <- mid <- top, and memory
#     layers) lets a client read and write the exported top; job-cancel
#     is taken (BLOCK_JOB_CANCELLED), the chain stays in the graph and in
#     the top's qcow2 header, the data is the chain's plus the write; a
#     second stream finalized with job-finalize cuts the chain (graph and
#     header), answers once BLOCK_JOB_COMPLETED and `concluded` are out,
#     in QEMU's order, and `qemu-img compare` against a flattened copy
#     and `qemu-img check` are clean.  The old code cut the chain before
#     pending and refused the cancel ("can no longer be cancelled").
#   - a pending intermediate commit does not stall the clients of the
#     active layer (old code: they waited until finalize); cancel leaves
#     the chain, finalize repoints the top at the base.
#   - while the finalize's drained section waits (a client flush held
#     3 s by a delay filter) the job is still pending, a second
#     job-finalize and a job-cancel are refused with the reason, and a
#     SIGTERM then lets the finalize end before the daemon exits.
#   - SIGTERM with a stream pending cancels it: the chain stays in the
#     header.
# A refused cut is not reachable from outside: ng_node_set_backing()
# refuses a driver without live backing changes (checked at the start),
# a loop or too deep a chain (the cut only shortens it) and a change of
# size or caps clients were told of (a format node's do not depend on
# its backing); the jobs' claims keep the nodes from changing meanwhile.
# tests/unit/test-job-finalize.c covers the job layer's side of one.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"

# event_for EVENT ID: EVENT came for job ID.
event_for () { jq -s -e --arg e "$1" --arg id "$2" \
                   'any(.[]; .event == $e and .data.device == $id)' \
                   events > /dev/null; }

# story ID: job ID's events, one line: its statuses and its BLOCK_JOB_*.
story ()
{
    jq -s -c --arg id "$1" '[.[] | select(.data.id == $id or
        .data.device == $id) | if .event == "JOB_STATUS_CHANGE"
        then .data.status else .event end]' events
}

# backing_of NODE: NODE's backing node-name (query-named-block-nodes),
# "null" without one.
backing_of ()
{
    qmp '{"execute": "query-named-block-nodes"}' | jq -r --arg n "$1" \
        '.return[] | select(."node-name" == $n) | (.children // [])
         | map(select(.child == "backing")) | .[0]."node-name" // "null"'
}

# header_backing IMAGE: the backing file IMAGE's header names (its name
# in $dir), or "".
header_backing ()
{
    qemu-img info -U --output=json "$1" |
        jq -r '."backing-filename" // "" | split("/") | last // ""'
}

# stream ID [BASE]: block-stream of top (down to BASE), auto-finalize
# and auto-dismiss off, waited for until pending.
stream ()
{
    qmp "{\"execute\": \"block-stream\", \"arguments\": {\"job-id\": \"$1\",
        \"device\": \"top\" ${2:+, \"base-node\": \"$2\"},
        \"auto-finalize\": false, \"auto-dismiss\": false}}" | jq -e .return
    wait_for "[ \"\$(job_of $1 | jq -r .status)\" = pending ]"
}

# commit ID: an intermediate commit of mid into base, likewise.
commit ()
{
    qmp "{\"execute\": \"block-commit\", \"arguments\": {\"job-id\": \"$1\",
        \"device\": \"top\", \"top-node\": \"mid\", \"base-node\": \"base\",
        \"auto-finalize\": false, \"auto-dismiss\": false}}" | jq -e .return
    wait_for "[ \"\$(job_of $1 | jq -r .status)\" = pending ]"
}

# client_io PATTERN OFFSET: a client writes 64 KiB of PATTERN at OFFSET
# on vm1 and reads it back, within 10 s (a drained export would hold
# it); the write goes into want.raw too.
client_io ()
{
    timeout 10 qemu-io -f raw -c "write -P $1 $2 64k" \
        -c "read -P $1 $2 64k" "$uri" > $out ||
        fail "client I/O stalled or failed while the job was pending"
    test "$(grep -c -e '^wrote 65536' -e '^read 65536' $out)" = 2
    qemu-io -f raw -c "write -P $1 $2 64k" want.raw > /dev/null
}

# same_data: the export reads as want.raw.
same_data () { qemu-img compare -f raw -F raw want.raw "$uri"; }

# cancel_in_pending ID: job-cancel is taken: BLOCK_JOB_CANCELLED, no
# COMPLETED, "Operation canceled".
cancel_in_pending ()
{
    qmp "{\"execute\": \"job-cancel\", \"arguments\": {\"id\": \"$1\"}}" |
        jq -e .return
    wait_for "[ \"\$(job_of $1 | jq -r .status)\" = concluded ]"
    job_of $1 | jq -e '.error == "Operation canceled"'
    wait_for "event_for BLOCK_JOB_CANCELLED $1"
    ! event_for BLOCK_JOB_COMPLETED $1 || fail "$1 cancelled and completed"
    qmp "{\"execute\": \"job-dismiss\", \"arguments\": {\"id\": \"$1\"}}" \
        > /dev/null
}

# finalize ID: job-finalize answers once the job has concluded, events
# in QEMU's order.
finalize ()
{
    qmp "{\"execute\": \"job-finalize\", \"arguments\": {\"id\": \"$1\"}}" |
        jq -e .return
    job_of $1 | jq -e '.status == "concluded" and (has("error") | not)'
    wait_for "story $1 | grep -q concluded"
    story $1 | grep -q '"pending","BLOCK_JOB_COMPLETED","concluded"\]$'
    qmp "{\"execute\": \"job-dismiss\", \"arguments\": {\"id\": \"$1\"}}" \
        > /dev/null
}

qcow2_config="nodes:
  base: { driver: qcow2, backing: null,
          file: { driver: file, filename: @DIR@/base.qcow2 } }
  mid: { driver: qcow2, backing: base,
         file: { driver: file, filename: @DIR@/mid.qcow2 } }
  top: { driver: qcow2, backing: mid,
         file: { driver: file, filename: @DIR@/top.qcow2 } }
  evm: { driver: memory, size: 1M }
  ev: { driver: blkdebug, image: evm }
exports:
  vm1: { node: top, writable: true }"
chain="base=0x11@0:16M mid=0x22@4M:4M top=0x33@12M:1M"

# 1. qcow2 stream: pending, client I/O; cancelled: the chain stays.
make_qcow2_chain 16M $chain
start_nbdgraphd "$qcow2_config" vm1
start_events ev '{"inject-error": []}'
stream s0
timeout 30 "$top_builddir/nbdgraphctl" --socket "$ctl" wait s0 > $out
grep -qx "job 's0' pending" $out
nbdgraphctl jobs | grep -E -q '^s0 +stream +pending'
test "$(backing_of top)" = mid
qmp '{"execute": "query-named-block-nodes"}' |
    jq -e 'all(.return[]; ."node-name" != "stream-s0")'
client_io 0xab 1M
cancel_in_pending s0
test "$(backing_of top)" = mid
test "$(header_backing top.qcow2)" = mid.qcow2
same_data

# 2. Streamed again, finalized: the chain cut in the graph and header.
stream s1
client_io 0xcd 2M
test "$(backing_of top)" = mid
finalize s1
test "$(backing_of top)" = null
test "$(header_backing top.qcow2)" = ""
client_io 0xef 3M
same_data
stop_events
stop_nbdgraphd
qemu-img check top.qcow2
qemu-img compare -f raw -F qcow2 want.raw top.qcow2

# 3. An intermediate commit of mid into base: the active layer's
# clients run in pending; cancelled, the chain stays; finalized, top's
# backing is base, in the graph and the header.
make_qcow2_chain 16M $chain
start_nbdgraphd "$qcow2_config" vm1
start_events ev '{"inject-error": []}'
commit c0
test "$(backing_of top)" = mid
client_io 0xab 1M
cancel_in_pending c0
test "$(backing_of top)" = mid
test "$(header_backing top.qcow2)" = mid.qcow2
same_data
commit c1
client_io 0xcd 2M
finalize c1
test "$(backing_of top)" = base
test "$(header_backing top.qcow2)" = base.qcow2
same_data
stop_events
stop_nbdgraphd
qemu-img check top.qcow2
qemu-img check base.qcow2
qemu-img compare -f raw -F qcow2 want.raw top.qcow2
# base holds mid's data now, under what only base had.
qemu-io -f qcow2 -r -c 'read -P 0x11 0 4M' -c 'read -P 0x22 4M 4M' \
    -c 'read -P 0x11 8M 8M' base.qcow2 > $out
test "$(grep -c '^read' $out)" = 3

# 4. SIGTERM with a stream pending: cancelled, the header keeps the
# chain, the data reads the same.
make_qcow2_chain 16M $chain
start_nbdgraphd "$qcow2_config" vm1
stream s2
client_io 0xab 1M
stop_within 15
test "$(header_backing top.qcow2)" = mid.qcow2
qemu-img check top.qcow2
qemu-img compare -f raw -F qcow2 want.raw top.qcow2

# 5. Memory layers; the export on a delay filter above top, whose
# flushes can be made slow, under a log filter that says when a request
# has come in.
memory_config="nodes:
  base: { driver: memory, size: 16M }
  mid: { driver: memory, size: 16M, backing: base }
  top: { driver: memory, size: 16M, backing: mid }
  slow: { driver: delay, file: top }
  lg: { driver: log, file: slow, logfile: @DIR@/requests.log }
exports:
  vm1: { node: lg, writable: true }
  b: { node: base, writable: true }
  m: { node: mid, writable: true }"

# memory_chain: base, mid and top filled as the qcow2 chain was, the
# exports of base and mid gone (a stream claims them).
memory_chain ()
{
    start_nbdgraphd "$memory_config" vm1
    qemu-io -f raw -c 'write -P 0x11 0 16M' "$(uri_for b)" > /dev/null
    qemu-io -f raw -c 'write -P 0x22 4M 4M' "$(uri_for m)" > /dev/null
    qemu-io -f raw -c 'write -P 0x33 12M 1M' "$uri" > /dev/null
    qmp '{"execute": "block-export-del", "arguments": {"id": "b"}}'
    qmp '{"execute": "block-export-del", "arguments": {"id": "m"}}'
    wait_for '[ "$(qmp "{\"execute\": \"query-block-exports\"}" |
                   jq ".return | length")" = 1 ]'
    qemu-img convert -f raw -O raw "$uri" want.raw
    qemu-io -f raw -r -c 'read -P 0x11 0 4M' -c 'read -P 0x22 4M 4M' \
        -c 'read -P 0x11 8M 4M' -c 'read -P 0x33 12M 1M' want.raw > $out
    test "$(grep -c '^read' $out)" = 4
    start_events slow '{}'
}

# flushes_in: how many flushes have come in on vm1 (the log filter's
# lines for their arrival).
flushes_in () { grep ' flush ' requests.log | grep -c -v 'return=' || true; }

# slow_flush: a client flush that the delay filter holds 3 s, in the
# background (pid in $flusher), in the daemon.
slow_flush ()
{
    local before
    qmp '{"execute": "blockdev-reconfigure", "arguments": {
        "node-name": "slow", "options": {"delay-flush": "3s"}}}' > /dev/null
    before=$(flushes_in)
    timeout 30 qemu-io -f raw -c flush "$uri" > flush &
    flusher=$!
    wait_for "[ \$(flushes_in) -gt $before ]"
}

# finalize_waits ID: job-finalize of ID in the background (its answer
# in fin1) and a second one (fin2); once one is refused as "being
# finalized already", the finalize's drained section waits for the
# held flush: the job is still pending and job-cancel is refused.
finalize_waits ()
{
    local i
    for i in 1 2; do
        nbdgraphctl qmp "{\"execute\": \"job-finalize\",
            \"arguments\": {\"id\": \"$1\"}}" > fin$i 2>&1 &
        eval fin${i}_pid=\$!
    done
    wait_for 'grep -q "being finalized already" fin1 fin2'
    job_of $1 | jq -e '.status == "pending"'
    expect_status 1 nbdgraphctl qmp "{\"execute\": \"job-cancel\",
        \"arguments\": {\"id\": \"$1\"}}" > $out 2>&1
    grep -q "job '$1' is being finalized and can no longer be cancelled" \
        $out
    kill -0 $flusher || fail "the flush ended before the finalize's drain"
}

# finalize_answers: of the two job-finalize calls, one answered {}
# (after the job concluded), the other was refused.
finalize_answers ()
{
    local rc1=0 rc2=0
    wait $fin1_pid || rc1=$?
    wait $fin2_pid || rc2=$?
    test $((rc1 + rc2)) = 1
    grep -q '"return": {}' fin1 fin2
}

memory_chain
stream s3
client_io 0xab 1M
cancel_in_pending s3
test "$(backing_of top)" = mid
same_data
stream s4
client_io 0xcd 2M
slow_flush
finalize_waits s4
wait $flusher
finalize_answers
job_of s4 | jq -e '.status == "concluded" and (has("error") | not)'
story s4 | grep -q '"pending","BLOCK_JOB_COMPLETED","concluded"\]$'
test "$(backing_of top)" = null
same_data

# 6. SIGTERM while the finalize's section waits: the finalize ends (the
# layers dropped), then the daemon exits.
stop_events
stop_nbdgraphd
memory_chain
commit c2
client_io 0xab 1M
slow_flush
finalize_waits c2
stop_within 20
wait $flusher
finalize_answers
wait $events_pid || true
story c2 | grep -q '"pending","BLOCK_JOB_COMPLETED","concluded"'
! event_for BLOCK_JOB_CANCELLED c2 || fail "c2 completed and cancelled"
