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
