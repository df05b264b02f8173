#!/usr/bin/env bash
# tests/test-reload-live-bitmaps.sh: dirty bitmaps made over QMP
# (block-dirty-bitmap-add) are in the live model.  dump-config writes them
# (granularity, disabled) and reloading the dump is an empty plan; a
# file without them (the daemon's own, unchanged) keeps them, listed as
# "not in the file", as nodes made live are, and only --prune removes
# them.  One removed by block-dirty-bitmap-remove is gone from the dump,
# and a reload of a file naming it adds it back (the file is the truth).
source "$srcdir/functions.sh"
set -e -x
requires jq --version

out=$dir/out

start_nbdgraphd "nodes:
  m0:
    driver: memory
    size: 4M
    bitmaps:
      - { name: b0 }
exports:
  demo: { node: m0, writable: true }"
conf=$dir/config.yaml

qmp_ok () { nbdgraphctl qmp "$1" | jq -e '.return' > /dev/null; }

qmp_ok '{"execute":"block-dirty-bitmap-add","arguments":{"node":"m0",
         "name":"live1","granularity":4096}}'
qmp_ok '{"execute":"block-dirty-bitmap-add","arguments":{"node":"m0",
         "name":"live2","disabled":true}}'
want='[{"name":"b0","granularity":65536,"recording":true},{"name":"live1","granularity":4096,"recording":true},{"name":"live2","granularity":65536,"recording":false}]'
[ "$(bitmaps_of m0)" = "$want" ]

# The dump declares them; reading it back changes nothing.
nbdgraphctl dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q 'name: live1, granularity: 4096' "$dir/dump.yaml"
grep -q 'name: live2, granularity: 65536, disabled: true' "$dir/dump.yaml"
nbdgraphctl reload --dry-run "$dir/dump.yaml" > $out
cat $out
grep -q 'would apply 0 step(s)' $out
if grep -q 'not in the file' $out; then exit 1; fi

# The daemon's own file does not name them: kept, "not in the file".
nbdgraphctl reload --dry-run > $out
cat $out
grep -q "not in the file.*dirty bitmap 'm0/live1'" $out
grep -q "dirty bitmap 'm0/live2'" $out
grep -q 'would apply 0 step(s)' $out
nbdgraphctl reload > $out
cat $out
grep -q 'applied 0 step(s)' $out
[ "$(bitmaps_of m0)" = "$want" ]

# Removed over QMP: gone from the dump too.
qmp_ok '{"execute":"block-dirty-bitmap-remove","arguments":{"node":"m0",
         "name":"live2"}}'
nbdgraphctl dump-config > "$dir/dump2.yaml"
cat "$dir/dump2.yaml"
if grep -q 'live2' "$dir/dump2.yaml"; then exit 1; fi
grep -q 'live1' "$dir/dump2.yaml"
# The first dump names it: a reload of it adds it back, and the file
# owns both now, so the daemon's own file (without them) removes them
# as any bitmap a file drops.
nbdgraphctl reload "$dir/dump.yaml" > $out
cat $out
grep -q "add-bitmap  *m0  *dirty bitmap 'live2' added" $out
[ "$(bitmaps_of m0)" = "$want" ]
nbdgraphctl reload --dry-run > $out
cat $out
grep -q "remove-bitmap  *m0  *dirty bitmap 'live1' removed" $out
if grep -q 'not in the file' $out; then exit 1; fi

# Made live again, then --prune: removed, with a step each.
nbdgraphctl reload > $out
qmp_ok '{"execute":"block-dirty-bitmap-add","arguments":{"node":"m0",
         "name":"live3"}}'
nbdgraphctl reload --prune > $out
cat $out
grep -q "remove-bitmap  *m0  *dirty bitmap 'live3' removed" $out
[ "$(bitmaps_of m0)" = '[{"name":"b0","granularity":65536,"recording":true}]' ]
nbdgraphctl dump-config | grep -q 'name: b0'
stop_nbdgraphd
