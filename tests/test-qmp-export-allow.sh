#!/usr/bin/env bash
# tests/test-qmp-export-allow.sh: block-export-add takes the config's
# per-export allow: list, with the same semantics: a client no entry
# matches sees the export neither in LIST nor in GO, a bad entry is
# refused before the export exists, and dump-config writes the list back
# so that reloading the dump is an empty plan.
source "$srcdir/functions.sh"
set -e -x
requires jq --version

start_nbdgraphd '
nodes:
  m: { driver: memory, size: 1M }
  n: { driver: memory, size: 2M }
  o: { driver: memory, size: 3M }
exports:
  demo: { node: m }
'

# Only TCP clients from 10/8: a Unix socket client is not one of them.
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"lan",
      "node-name":"n","allow":["tcp:10.0.0.0/8"]}}' | jq -e '.return'
expect_status 1 nbdinfo --size "$(uri_for lan)"
grep -q "export 'lan' refused to client" "$dir/nbdgraphd.log"
exports=$(nbdinfo --list "$(uri_for demo)")
! grep lan <<<"$exports" || fail "export 'lan' is listed to a Unix client"
# "unix" admits Unix socket clients.
qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"local",
      "node-name":"o","allow":["unix"]}}' | jq -e '.return'
[ "$(nbdinfo --size "$(uri_for local)")" = 3145728 ]

# A bad entry: refused with the config's message, no export made.
expect_status 1 nbdgraphctl qmp '{"execute":"block-export-add","arguments":{
      "type":"nbd","id":"bad","node-name":"o","allow":["bogus"]}}' \
      > "$dir/bad.out" 2>&1
cat "$dir/bad.out"
grep -q "bad allow entry 'bogus'" "$dir/bad.out"
qmp '{"execute":"query-block-exports"}' |
    jq -e '[.return[].id] | index("bad") == null'

# The dump carries the lists; reloading it changes nothing.
nbdgraphctl dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q 'lan: {.*allow: \[.*tcp:10.0.0.0/8' "$dir/dump.yaml"
nbdgraphctl reload "$dir/dump.yaml" | grep -q 'applied 0 step(s)'
expect_status 1 nbdinfo --size "$(uri_for lan)"
stop_nbdgraphd
