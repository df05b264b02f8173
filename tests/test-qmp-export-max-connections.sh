#!/usr/bin/env bash
# tests/test-qmp-export-max-connections.sh: block-export-add takes the
# config's per-export max-connections, with the same semantics and log
# line: one client more than the limit is refused at NBD_OPT_GO
# (NBD_REP_ERR_POLICY) while the others are served, a freed place is
# taken again; a value out of the config's range is refused with its
# message before the export exists; dump-config writes the limit back,
# and reloading the dump changes nothing.
source "$srcdir/functions.sh"
set -e -x
requires jq --version
requires qemu-io --version

start_nbdgraphd '
nodes:
  m: { driver: memory, size: 1M }
  n: { driver: memory, size: 2M }
exports:
  demo: { node: m }
'

qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"one",
      "node-name":"n","max-connections":1}}' | jq -e '.return'

# A client holding one place on EXPORT: qemu-io waits for commands on
# a stdin that stays open.  Sets $holder.
hold () {
    qemu-io -r -f raw "$(uri_for "$1")" < <(sleep 60) >/dev/null &
    holder=$!
    wait_export_connections "$1" 1
}
hold one

# A second one is refused, with the config's log line; others still work.
expect_status 1 nbdinfo --size "$(uri_for one)"
grep -q "export 'one' is at its max-connections (1); refused" \
    "$dir/nbdgraphd.log"
[ "$(nbdinfo --size "$(uri_for demo)")" = 1048576 ]

# Once the first has gone, the place is free again.
kill $holder
wait $holder || :
wait_export_connections one 0
[ "$(nbdinfo --size "$(uri_for one)")" = 2097152 ]

# Out of range: the config's message, no export made.
for bad in -1 1000001; do
    expect_status 1 nbdgraphctl qmp '{"execute":"block-export-add","arguments":{
          "type":"nbd","id":"bad","node-name":"m",
          "max-connections":'$bad'}}' > "$dir/bad.out" 2>&1
    cat "$dir/bad.out"
    grep -q "'max-connections' must be between 0 and 1000000" "$dir/bad.out"
done
qmp '{"execute":"query-block-exports"}' |
    jq -e '[.return[].id] | index("bad") == null'

# The dump carries the limit; reloading it changes nothing.
nbdgraphctl dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q 'one: {.*max-connections: 1' "$dir/dump.yaml"
nbdgraphctl reload "$dir/dump.yaml" | grep -q 'applied 0 step(s)'

# An export a reload adds keeps its limit too.
sed 's|^  one: .*|&\n  two: { node: m, max-connections: 1 }|' "$dir/dump.yaml" \
    > "$dir/two.yaml"
nbdgraphctl reload "$dir/two.yaml"
hold two
expect_status 1 nbdinfo --size "$(uri_for two)"
grep -q "export 'two' is at its max-connections (1); refused" \
    "$dir/nbdgraphd.log"
kill $holder
wait $holder || :
stop_nbdgraphd
