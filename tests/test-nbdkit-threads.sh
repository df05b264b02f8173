#!/usr/bin/env bash
# tests/test-nbdkit-threads.sh: the nbdkit leaf keeps a plugin's thread
# model.  The test plugin (tests/nbdkit-test-plugin.c) takes its model
# from thread-model= through .thread_model, sleeps in each read and
# records, at .unload, the most reads that were inside it at once; the
# clients keep 16 reads in flight on each export.
source "$srcdir/functions.sh"
source "$srcdir/nbdkit.sh"
set -e -x
requires nbdcopy --version
plugin=$top_builddir/tests/nbdkit-ngtest-plugin.so

# run MODEL NODES: a daemon with NODES nodes of the plugin in MODEL (the
# same args, so they share it), parallel reads on all; prints the most
# reads inside the plugin at once.
run ()
{
    local model=$1 nodes=$2 text="nodes:" i
    for i in $(seq $nodes); do
        text+="
  n$i: { driver: nbdkit, plugin: '$plugin', args: { thread-model: $model,
         delay-ms: 20, stats: '$dir/stats' } }"
    done
    text+="
exports:"
    for i in $(seq $nodes); do
        text+="
  e$i: { node: n$i }"
    done
    rm -f $dir/stats
    start_nbdgraphd "$text" e1 >&2
    for i in $(seq $nodes); do
        nbdcopy --requests=16 --request-size=65536 "$(uri_for e$i)" \
            null: &
    done
    wait $(jobs -p | grep -v "^$nbdgraphd_pid$") 2>/dev/null || true
    stop_nbdgraphd >&2
    cat $dir/stats
}

# Parallel: reads overlap.
[ "$(run parallel 1)" -gt 1 ]
# One request at a time per connection (node), even with 16 sent.
[ "$(run serialize_requests 1)" -eq 1 ]
# One request at a time in the whole plugin, across two nodes.
[ "$(run serialize_all_requests 2)" -eq 1 ]
[ "$(run serialize_connections 1)" -eq 1 ]

# Serialized connections: a second node is refused, with a reason.
printf 'server:\n  listen: [ "unix:%s/x.sock" ]\nnodes:\n  a: { driver: nbdkit, plugin: %s, args: { thread-model: serialize_connections } }\n  b: { driver: nbdkit, plugin: %s, args: { thread-model: serialize_connections } }\nexports:\n  e: { node: a }\n' \
    "$dir" "$plugin" "$plugin" > $dir/two.yaml
expect_status 1 "$NBDGRAPHD" --check-config --config $dir/two.yaml \
    2> $dir/err
cat $dir/err
grep -q "node 'b': plugin '.*' serializes connections: only one node may use it" \
    $dir/err

# The worker pool wakes no extra thread for fast work (graph/threads.c):
# the threads already running take it.  A piece that then blocks must
# not hold back the queue behind it.  Reads without delay teach the pool
# that this plugin is fast; then the read at 64k waits in the plugin
# until another read comes in (the plugin fails it after 5 s), and that
# other read is queued behind it: only the pool's stall check brings a
# thread for it.
start_nbdgraphd "nodes:
  n1: { driver: nbdkit, plugin: '$plugin', args: { block-offset: 64k } }
exports:
  e1: { node: n1 }" e1
warm=()
for i in $(seq 64); do warm+=(-c "read $((i % 16 * 4))k 4k"); done
qemu-io -r -f raw "$(uri_for e1)" "${warm[@]}" >/dev/null
qemu-io -r -f raw "$(uri_for e1)" -c 'aio_read 64k 4k' -c 'aio_read 0 4k' \
    -c 'aio_flush' > $dir/qemu-io.out 2>&1
cat $dir/qemu-io.out
stop_nbdgraphd
if ! grep -q "read 4096/4096 bytes at offset 65536" $dir/qemu-io.out; then
    echo "a read queued behind a blocked one was held back" >&2
    exit 1
fi
grep -q "read 4096/4096 bytes at offset 0" $dir/qemu-io.out

# Fast reads with one slow one keep the thread model all the same, with
# the stall check's extra threads: many 4 KiB reads in flight, the read
# at 512k sleeping 50 ms.
for model in serialize_requests serialize_all_requests; do
    rm -f $dir/stats
    start_nbdgraphd "nodes:
  n1: { driver: nbdkit, plugin: '$plugin', args: { thread-model: $model,
        delay-ms: 50, delay-offset: 512k, stats: '$dir/stats' } }
exports:
  e1: { node: n1 }" e1
    for i in 1 2 3; do
        nbdcopy --requests=64 --request-size=4096 "$(uri_for e1)" null:
    done
    stop_nbdgraphd
    [ "$(cat $dir/stats)" -eq 1 ]
done
