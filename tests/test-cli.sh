#!/usr/bin/env bash
# tests/test-cli.sh: nodes and exports on the command line, in
# qemu-storage-daemon's syntax (--blockdev, --export), merged with
# --config: they serve, meet every check a file's nodes meet (errors
# located --blockdev:N:COL), and a reload of the file keeps them as "not
# in the file".
source "$srcdir/functions.sh"
set -e -x
requires jq --version
requires qemu-io --version

truncate -s 8M "$dir/x.raw"
cli=(--blockdev "driver=file,node-name=d0,filename=$dir/x.raw,cache.direct=off"
     --blockdev driver=raw,node-name=r0,file=d0,offset=1M,size=2M
     --export type=nbd,id=e0,node-name=r0,writable=on,description=a,,b
     --export type=nbd,id=e1,node-name=d0,throttle.iops-total=1000)
# start_nbdgraphd runs $NBDGRAPHD with --config: add ours behind it.
real=$NBDGRAPHD
printf '#!/bin/sh\nexec "%s" "$@" %s\n' "$real" "$(printf '%q ' "${cli[@]}")" \
    > "$dir/wrap"
chmod +x "$dir/wrap"
NBDGRAPHD=$dir/wrap
start_nbdgraphd "nodes:
  m0: { driver: memory, size: 4M }
exports:
  demo: { node: m0, writable: true }" e0
NBDGRAPHD=$real

out=$dir/out
err=$dir/err

qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'read -P 0x5a 0 1M' "$uri"
nbdinfo --json "$uri" | jq -e '.exports[0].description == "a,b"'
nbdinfo --json "$(uri_for e0)" | jq -e '.exports[0]."export-size" == 2097152'
nbdgraphctl nodes | grep -q '^e1.throttle '
nbdgraphctl dump-config > $out
grep -qx '  e0: { node: r0, writable: true, description: "a,b" }' $out
grep -qx '  e1: { node: d0, writable: false, throttle: { iops-total: 1000 } }' $out
grep -qx '  r0: { driver: raw, file: d0, offset: 1M, size: 2M }' $out

# A reload of the file keeps what the command line made.
nbdgraphctl reload > $out
grep -qx "not in the file (kept; --prune removes them): node 'd0', node 'r0', export 'e0', export 'e1'" $out
grep -q 'applied 0 step(s)' $out

# Errors name the option and the column.
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/config.yaml" \
    --blockdev driver=file,node-name=d1,filenme=x.raw 2> $err
grep -qx "nbdgraphd: --blockdev:1:26: node 'd1': unknown option 'filenme' for driver 'file' (expected filename, cache.direct, aio, locking)" $err
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/config.yaml" \
    --blockdev driver=memory,node-name=m0,size=1M 2> $err
grep -qx "nbdgraphd: --blockdev:1:15: duplicate node name 'm0' (also at $dir/config.yaml:5:3)" $err
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/config.yaml" \
    --export type=nbd,id=e9,node-name=nothing 2> $err
grep -qx "nbdgraphd: --export:1:16: export 'e9': unknown node 'nothing'" $err
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/config.yaml" \
    --export type=vhost-user-blk,id=e9,node-name=m0 2> $err
grep -qx "nbdgraphd: --export:1:1: export type 'vhost-user-blk' is not supported (only 'nbd')" $err
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/config.yaml" \
    --export id=e9,node-name=m0 2> $err
grep -qx "nbdgraphd: --export:1:1: --export needs 'type='" $err
expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/config.yaml" \
    --blockdev driver 2> $err
grep -qx "nbdgraphd: --blockdev:1:1: expected KEY=VALUE, not 'driver'" $err

stop_nbdgraphd
