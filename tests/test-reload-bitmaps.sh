#!/usr/bin/env bash
# tests/test-reload-bitmaps.sh: dirty bitmaps in the config file.  Nodes
# declare bitmaps (bitmaps: [ { name, granularity, disabled } ]), exports
# offer them (bitmaps: as block-export-add's, names or {node, name}), and
# nbdinfo --map=qemu:dirty-bitmap:b0 shows exactly the written ranges.  A
# reload adds and removes them (a busy one's removal refused with the
# reason, a failing step undone), dump-config writes them so dump ->
# reload is an empty plan, and an export made over QMP with bitmaps keeps
# them through a reload and in the dump.  Bad entries are refused with
# file:line:column.
source "$srcdir/functions.sh"
set -e -x
requires jq --version
requires qemu-io --version
requires nbdinfo --version

out=$dir/out
err=$dir/err
K=1024

start_nbdgraphd "nodes:
  m0:
    driver: memory
    size: 4M
    bitmaps:
      - { name: b0 }
      - { name: b1, granularity: 4K, disabled: true }
exports:
  demo: { node: m0, writable: true }
  inc: { node: m0, bitmaps: [ b0 ] }"
conf=$dir/config.yaml
inc=$(uri_for inc)

[ "$(bitmaps_of m0)" = '[{"name":"b0","granularity":65536,"recording":true},{"name":"b1","granularity":4096,"recording":false}]' ]

# Writes through demo; the map of b0 on inc is exactly what was written,
# at b0's granularity (64K).
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 4k' "$uri"
nbdinfo --map=qemu:dirty-bitmap:b0 "$inc" > $out
cat $out
diff - <(awk '{ print $1, $2, $3 }' $out) <<EOF
0 65536 1
65536 983040 0
1048576 65536 1
1114112 3080192 0
EOF

# dump -> reload is an empty plan; the dump declares the bitmaps.
nbdgraphctl dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q 'b1' "$dir/dump.yaml"
grep -q '  inc: { node: m0, writable: false, bitmaps: \[ b0 \] }' \
    "$dir/dump.yaml"
nbdgraphctl reload --dry-run "$dir/dump.yaml" > $out
grep -q 'would apply 0 step(s)' $out
nbdgraphctl reload > $out
grep -q 'applied 0 step(s)' $out

# A reload adds a bitmap and an export offering it ({node, name} form):
# only writes from then on are in it.
sed -e 's/^      - { name: b0 }$/      - { name: b0 }\n      - { name: b2, granularity: 512 }/' \
    "$conf" > "$dir/b2.yaml"
echo '  inc2: { node: m0, bitmaps: [ { node: m0, name: b2 } ] }' \
    >> "$dir/b2.yaml"
nbdgraphctl reload "$dir/b2.yaml" > $out
cat $out
grep -q '^1 *add-bitmap *m0 *dirty bitmap .b2. added' $out
grep -q '^2 *add-export *inc2 ' $out
qemu-io -f raw -c 'write -P 3 2M 512' "$uri"
nbdinfo --map=qemu:dirty-bitmap:b2 "$(uri_for inc2)" |
    awk '$3 == 1 { print $1, $2 }' > $out
[ "$(cat $out)" = "2097152 512" ]
[ "$(bitmaps_of m0 | jq -c 'map(.name)')" = '["b0","b1","b2"]' ]

# A failing step (an export naming a bitmap nobody declares) undoes the
# bitmap added before it.
graph_state () {
    nbdgraphctl qmp '{"execute":"query-named-block-nodes"}' |
        jq -S '[.return[] | {"node-name", "dirty-bitmaps"}]'
    nbdgraphctl dump-config
}
graph_state > "$dir/before"
sed -e 's/^      - { name: b0 }$/      - { name: b0 }\n      - { name: b3 }/' \
    "$dir/b2.yaml" > "$dir/undo.yaml"
echo '  inc3: { node: m0, bitmaps: [ nosuch ] }' >> "$dir/undo.yaml"
expect_status 1 nbdgraphctl reload "$dir/undo.yaml" 2> $err
cat $err
grep -q "dirty bitmap 'nosuch'" $err
grep -q "rolled back; nothing changed" $err
grep -q "undid add-bitmap 'm0'" "$dir/nbdgraphd.log"
graph_state > "$dir/after"
diff "$dir/before" "$dir/after"

# Removing a bitmap an export that stays offers: refused, with the reason.
grep -v '^      - { name: b0 }$' "$dir/b2.yaml" > "$dir/nob0.yaml"
expect_status 1 nbdgraphctl reload "$dir/nob0.yaml" 2> $err
cat $err
grep -q "node 'm0': dirty bitmap 'b0' is in use by a job or an export and cannot be removed" $err
graph_state > "$dir/after"
diff "$dir/before" "$dir/after"
# With the export gone in the same reload, it goes.
grep -v -e '^      - { name: b0 }$' -e '^  inc:' "$dir/b2.yaml" > "$dir/nob0.yaml"
nbdgraphctl reload "$dir/nob0.yaml" > $out
cat $out
grep -q 'remove-export *inc ' $out
grep -q 'remove-bitmap *m0 *dirty bitmap .b0. removed' $out
[ "$(bitmaps_of m0 | jq -c 'map(.name)')" = '["b1","b2"]' ]

# A bitmap's granularity cannot change on a reload: refused, the way round
# named.
sed 's/granularity: 512/granularity: 1K/' "$dir/nob0.yaml" > "$dir/gran.yaml"
expect_status 1 nbdgraphctl reload --dry-run "$dir/gran.yaml" 2> $err
grep -q "gran.yaml:[0-9]*:[0-9]*: node 'm0': dirty bitmap 'b2' cannot change its granularity" $err

# An export made over QMP with a bitmap keeps it through a reload, and the
# dump says so.
add_dirty_bitmap m0 q0 > /dev/null
nbdgraphctl qmp '{"execute":"block-export-add","arguments":{"type":"nbd",
                  "id":"qx","node-name":"m0","bitmaps":["q0"]}}' > /dev/null
nbdgraphctl reload "$dir/nob0.yaml" > $out
grep -q 'applied 0 step(s)' $out
# q0 was made over QMP as well: kept too, as a bitmap not in the file.
grep -qx "not in the file (kept; --prune removes them): export 'qx', dirty bitmap 'm0/q0'" $out
qemu-io -f raw -c 'write -P 4 3M 4k' "$uri"
nbdinfo --map=qemu:dirty-bitmap:q0 "$(uri_for qx)" |
    awk '$3 == 1 { print $1, $2 }' > $out
[ "$(cat $out)" = "3145728 65536" ]
nbdgraphctl dump-config > "$dir/dump.yaml"
grep -qx '  qx: { node: m0, writable: false, bitmaps: \[ q0 \] }' \
    "$dir/dump.yaml"

stop_nbdgraphd

# Bad entries: refused at load, with where they are.
bad () {
    printf 'server:\n  listen: [ "unix:%s/bad.sock" ]\n%s\n' "$dir" "$1" \
        > "$dir/bad.yaml"
    expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/bad.yaml" \
        2> $err
    cat $err
    grep -q "$2" $err
}
bad 'nodes:
  m0: { driver: memory, size: 1M, bitmaps: [ { name: b0, granularity: 1000 } ] }' \
    "bad.yaml:4:71: node 'm0': dirty bitmap 'b0': granularity must be a power of two from 512 to 64M"
bad 'nodes:
  m0: { driver: memory, size: 1M, bitmaps: [ { name: b0, recording: true } ] }' \
    "bad.yaml:4:.*: node 'm0': unknown key 'recording' in a dirty bitmap"
bad 'nodes:
  m0: { driver: memory, size: 1M, bitmaps: [ { name: b0 }, { name: b0 } ] }' \
    "node 'm0': dirty bitmap 'b0' declared twice"
bad 'nodes:
  m0: { driver: memory, size: 1M, bitmaps: [ { name: b0 } ] }
  m1: { driver: memory, size: 1M }
exports:
  e: { node: m1, bitmaps: [ { node: m0, name: b0 } ] }' \
    "bad.yaml:7:.*: export 'e': dirty bitmap 'b0' is on node 'm0'; only bitmaps of the exported node 'm1' can be exported"
bad 'nodes:
  m0: { driver: memory, size: 1M }
exports:
  e: { node: m0, bitmaps: [ b9 ] }' \
    "bad.yaml:6:3: export 'e': dirty bitmap 'b9' not found on node 'm0'"
