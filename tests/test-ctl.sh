#!/usr/bin/env bash
# tests/test-ctl.sh: nbdgraphctl against the real daemon — list, add and
# delete nodes, splice a filter in and out, the graph as a tree and as
# Graphviz, a refusal, raw QMP, --json, events, exit statuses.
source "$srcdir/functions.sh"
set -e -x
requires jq --version
requires dot -V
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: 64M }
exports:
  demo: { node: mem0, writable: true, description: \"test disk\" }"

out=$dir/out
err=$dir/err

# The table lists the configured node.
nbdgraphctl nodes > $out
cat $out
grep -Eq '^NAME +DRIVER +SIZE +RO +IMPLICIT +CHILDREN$' $out
grep -Eq '^mem0 +memory +64 MiB +no +no +-$' $out

# A dry run changes nothing; the real one adds the node.
nbdgraphctl --dry-run add-node m2 memory size=16M > $out
grep -q 'would succeed' $out
nbdgraphctl nodes > $out
expect_status 1 grep -q '^m2 ' $out
nbdgraphctl add-node m2 memory size=16M
nbdgraphctl nodes > $out
cat $out
grep -Eq '^m2 +memory +16 MiB +no +no +-$' $out

# A filter spliced in above mem0 shows between the export and mem0.
nbdgraphctl insert-filter mem0 nofilter f1
nbdgraphctl graph > $out
cat $out
cat > $dir/expected <<'END'
export demo (writable)
└─ f1 (nofilter)
   └─ filtered: mem0 (memory, 64 MiB)
not exported
└─ m2 (memory, 16 MiB)
END
diff -u $dir/expected $out
nbdgraphctl nodes > $out
grep -Eq '^f1 +nofilter +64 MiB +no +no +filtered=mem0$' $out

# Graphviz takes the --dot output as it is.
nbdgraphctl graph --dot > $dir/g.dot
grep -q '"f1" -> "mem0"' $dir/g.dot
dot -Tsvg $dir/g.dot > $dir/g.svg
grep -q '<svg' $dir/g.svg

# Out again, and the added node deleted.
nbdgraphctl remove-filter f1
nbdgraphctl del-node m2
nbdgraphctl nodes > $out
test "$(tail -n +2 $out | cut -d' ' -f1)" = mem0

# A node in use is refused, dry run or not: message on stderr, exit 1.
expect_status 1 nbdgraphctl --dry-run del-node mem0 2> $err
expect_status 1 nbdgraphctl del-node mem0 2> $err
cat $err
grep -q "^nbdgraphctl: node 'mem0' is in use by export 'demo'$" $err

# Exports: the configured one, one added on m2 and deleted again.
nbdgraphctl exports > $out
cat $out
grep -Eq '^ID +NAME +NODE +WRITABLE +CONNECTIONS +DESCRIPTION$' $out
grep -Eq '^demo +demo +mem0 +yes +0 +test disk$' $out
nbdgraphctl add-node m3 memory size=1M
nbdgraphctl add-export x3 m3 --name third --description "third disk"
nbdgraphctl exports > $out
grep -Eq '^x3 +third +m3 +no +0 +third disk$' $out

# Each export holds a NAC claim on its node.
nbdgraphctl nac > $out
cat $out
grep -Eq '^NODE +HOLDER +KIND +REQUIRE +ALLOW$' $out
grep -Eq '^mem0 +demo +export +[a-z,-]*write-data' $out
grep -Eq '^m3 +x3 +export ' $out
nbdgraphctl del-export x3
nbdgraphctl del-node m3
test "$(nbdgraphctl exports | wc -l)" -eq 2

# Raw QMP prints the whole reply; an error reply exits 1.
nbdgraphctl qmp '{"execute": "query-version"}' > $out
jq -e '.return.qemu.major == 0' $out
expect_status 1 nbdgraphctl qmp '{"execute": "no-such-command"}' > $out
jq -e '.error.class == "CommandNotFound"' $out

# --json is the daemon's JSON.
nbdgraphctl --json nodes > $out
jq -e 'map(.["node-name"]) == ["mem0"]' $out
nbdgraphctl --json graph > $out
jq -e '.["block-backends"][0].root == "mem0"' $out

# Events: each change sends one; make changes until two have come.
nbdgraphctl events --count 2 --timeout 30 > $dir/events &
events_pid=$!
for i in $(seq 50); do
    kill -0 $events_pid 2>/dev/null || break
    nbdgraphctl add-node "e$i" null-co size=1M
    sleep 0.2
done
wait $events_pid
cat $dir/events
test "$(wc -l < $dir/events)" -eq 2
jq -es 'all(.event == "GRAPH_CHANGED")' $dir/events

# Exit statuses: usage errors and an unreachable socket are 2.
expect_status 2 nbdgraphctl no-such-subcommand
expect_status 2 nbdgraphctl add-node onlyname
expect_status 2 nbdgraphctl --dry-run nodes
expect_status 2 "$top_builddir/nbdgraphctl" --socket "$dir/nothing" nodes \
    2> $err
grep -q "$dir/nothing" $err
"$top_builddir/nbdgraphctl" --help | grep -q '^  insert-filter '
