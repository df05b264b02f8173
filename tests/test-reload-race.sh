#!/usr/bin/env bash
# tests/test-reload-race.sh: the control channel changes the graph while
# a reload is being planned on a worker thread (made to take 2 s by the
# NBDGRAPH_TEST_RELOAD_PLAN_DELAY_MS test hook).  The changes are made at
# once (their QMP commands succeed), the model records them when the plan
# is back, the reload plans again against them and applies the file;
# dump-config meanwhile (the second plan, on a worker too, as well) is
# refused with the reason.  After it, the live node and export are in the
# model as "not in the file", and the file's own changes are in the
# graph.  The daemon stopped while a reload is planned exits cleanly.
source "$srcdir/functions.sh"
set -e -x
requires jq --version

out=$dir/out
export NBDGRAPH_TEST_RELOAD_PLAN_DELAY_MS=2000

start_nbdgraphd "nodes:
  m0: { driver: memory, size: 4M }
exports:
  demo: { node: m0, writable: true }"
conf=$dir/config.yaml

qmp_ok () { nbdgraphctl qmp "$1" | jq -e '.return' > /dev/null; }

# The file adds m1 and its export e1.
cat >> "$conf" <<EOF
  e1: { node: m1 }
EOF
sed -i 's|^exports:|  m1: { driver: memory, size: 1M }\nexports:|' "$conf"
cat "$conf"

nbdgraphctl reload > "$dir/reload.out" 2>&1 &
reload=$!
# The file loads in a moment; the plan then takes 2 s, the model the
# worker's meanwhile.
sleep 0.5
qmp_ok '{"execute":"blockdev-add","arguments":{"driver":"memory",
         "node-name":"x0","size":1048576}}'
qmp_ok '{"execute":"block-export-add","arguments":{"type":"nbd","id":"ex0",
         "node-name":"x0"}}'
expect_status 1 nbdgraphctl dump-config > $out 2>&1 ||
    fail "dump-config while the plan is made did not fail"
cat $out
grep -q "reload-1 is being planned; try again" $out ||
    fail "dump-config gave no reason"
# The second plan is made on a worker too (another 2 s): the model is
# still the worker's, and dump-config still refused.
for i in $(seq 300); do
    grep -q "reload-1: the graph changed while it was planned; planning again" \
        "$dir/nbdgraphd.log" && break
    sleep 0.1
done
grep -q "reload-1: the graph changed while it was planned; planning again" \
    "$dir/nbdgraphd.log" || fail "no second plan"
expect_status 1 nbdgraphctl dump-config > $out 2>&1 ||
    fail "dump-config while the second plan is made did not fail"
grep -q "reload-1 is being planned; try again" $out ||
    fail "the second plan was not made on a worker"
wait $reload || fail "the reload failed"
cat "$dir/reload.out"
grep -q "applied 2 step(s)" "$dir/reload.out" || fail "not the file's 2 steps"

# Both sides' changes are there.
nbdgraphctl qmp '{"execute":"query-block-exports"}' |
    jq -r '[.return[].id] | sort | join(" ")' > $out
[ "$(cat $out)" = "demo e1 ex0" ] || fail "exports: $(cat $out)"
nbdgraphctl dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q '^  x0:' "$dir/dump.yaml" || fail "x0 not in the model"
grep -q '^  ex0:' "$dir/dump.yaml" || fail "ex0 not in the model"
grep -q '^  m1:' "$dir/dump.yaml" || fail "m1 not in the model"
nbdgraphctl reload --dry-run > $out
cat $out
grep -q "would apply 0 step(s)" $out || fail "the file is not applied"
grep -q "not in the file.*node 'x0'" $out || fail "x0 not kept as live"
grep -q "export 'ex0'" $out || fail "ex0 not kept as live"

# The daemon stops while a reload is planned: the run is orphaned, ends
# when the worker is done, and the daemon exits 0 (an ASan build checks
# that nothing leaks), within stop_nbdgraphd's bound.
nbdgraphctl reload > "$dir/reload2.out" 2>&1 &
reload=$!
sleep 0.5
stop_nbdgraphd || fail "the daemon did not stop cleanly during a reload"
wait $reload || true
cat "$dir/reload2.out"
