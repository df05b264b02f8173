#!/usr/bin/env bash
# tests/test-reload-job.sh: a reload meets a running block job.  The
# model's refresh (in loop turns while the file loads) finds the job's
# claims: a file without the job's target node is refused with the job
# named and the graph unchanged; a file that changes another export only
# is applied, and the job runs on.
source "$srcdir/functions.sh"
set -e -x
requires jq --version

out=$dir/out
start_nbdgraphd "nodes:
  src: { driver: memory, size: 8M }
  dst: { driver: memory, size: 8M }
  m1: { driver: memory, size: 1M }
exports:
  demo: { node: src, writable: true }
  e1: { node: m1 }"
conf=$dir/config.yaml
cp "$conf" "$dir/orig.yaml"

# A mirror holds its claims until it is completed or cancelled.
nbdgraphctl mirror src dst --job-id j0 --speed 64K
jobs () {
    nbdgraphctl qmp '{"execute":"query-block-jobs"}' |
        jq -r '[.return[].device] | join(" ")'
}
[ "$(jobs)" = j0 ]

nbdgraphctl qmp '{"execute":"query-named-block-nodes"}' |
    jq -S '[.return[]."node-name"] | sort' > "$dir/before.json"
grep -v '^  dst:' "$dir/orig.yaml" > "$conf"
cat "$conf"
expect_status 1 nbdgraphctl reload > $out 2>&1
cat $out
grep -q "node 'dst' is in use by job 'j0'; wait for it to end or cancel it" \
    $out || fail "the job was not named"
nbdgraphctl qmp '{"execute":"query-named-block-nodes"}' |
    jq -S '[.return[]."node-name"] | sort' > "$dir/after.json"
cmp "$dir/before.json" "$dir/after.json" || fail "the graph changed"

sed 's|e1: { node: m1 }|e1: { node: m1, description: changed }|' \
    "$dir/orig.yaml" > "$conf"
nbdgraphctl reload > $out 2>&1
cat $out
grep -q "applied 1 step(s)" $out || fail "the other export's change"
[ "$(jobs)" = j0 ] || fail "the job did not run on"
nbdinfo --json "nbd+unix:///e1?socket=$sock" |
    jq -e '.exports[0].description == "changed"' > /dev/null
