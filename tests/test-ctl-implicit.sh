#!/usr/bin/env bash
# tests/test-ctl-implicit.sh: what a new user of nbdgraphctl meets around
# implicit filters and exports — a refusal names the option that
# overrides it (--explicit, --hard), --explicit goes through,
# blockdev-reconfigure of an implicit filter needs "explicit": true like
# every command naming one, and insert-filter --export takes the export
# ID, as del-export does.
source "$srcdir/functions.sh"
set -e -x
requires jq --version
requires qemu-io --version
start_nbdgraphd "nodes:
  mem0: { driver: memory, size: 16M }
  mem1: { driver: memory, size: 16M }
exports:
  demo: { node: mem0, writable: true, throttle: { iops-total: 10000 } }"

out=$dir/out
err=$dir/err

# Refused without --explicit; nbdgraphctl names its option, raw QMP keeps
# the QMP argument.
expect_status 1 nbdgraphctl remove-filter demo.throttle 2> $err
cat $err
grep -qx "nbdgraphctl: node 'demo.throttle' is an implicit filter of export 'demo'; pass --explicit to change it" $err
expect_status 1 nbdgraphctl qmp '{"execute": "blockdev-remove-filter",
    "arguments": {"node-name": "demo.throttle"}}' > $out
jq -e '.error.desc | endswith("pass \"explicit\": true to change it")' $out

# Reconfiguring an implicit filter is refused the same way without
# "explicit": true, and works with it.
limits='"options": {"limits": {"iops-total": 800}}'
expect_status 1 nbdgraphctl qmp '{"execute": "blockdev-reconfigure",
    "arguments": {"node-name": "demo.throttle", '"$limits"'}}' > $out
jq -e '.error.desc | contains("implicit filter of export '\''demo'\''")' $out
nbdgraphctl qmp '{"execute": "blockdev-reconfigure", "arguments":
    {"node-name": "demo.throttle", "explicit": true, '"$limits"'}}' > $out
jq -e '.return == {}' $out

# --explicit: a dry run, then for real; queries refuse it.
nbdgraphctl --dry-run --explicit remove-filter demo.throttle > $out
grep -q 'would succeed' $out
nbdgraphctl --explicit remove-filter demo.throttle
nbdgraphctl --json graph > $out
jq -e '.["block-backends"][0].root == "mem0"' $out
expect_status 2 nbdgraphctl --explicit nodes

# insert-filter --export takes the export ID (here not the NBD name).
nbdgraphctl add-export x1 mem1 --name disk1
nbdgraphctl insert-filter mem1 nofilter f1 --export x1
nbdgraphctl --json graph > $out
jq -e '.["block-backends"][] | select(.name == "disk1") | .root == "f1"' $out
expect_status 1 nbdgraphctl insert-filter mem1 nofilter f2 --export disk1 \
    2> $err
grep -qx "nbdgraphctl: export ID 'disk1' not found" $err
nbdgraphctl remove-filter f1

# del-export of an export with a client: the hint names --hard.
mkfifo $dir/fifo
qemu-io -r -f raw "$(uri_for disk1)" < $dir/fifo > /dev/null &
qemu_pid=$!
exec 3> $dir/fifo                # qemu-io waits for commands meanwhile
for i in $(seq 300); do
    nbdgraphctl --json exports > $out
    jq -e '.[] | select(.id == "x1") | .connections == 1' $out && break
    sleep 0.1
done
expect_status 1 nbdgraphctl del-export x1 2> $err
cat $err
grep -qx "nbdgraphctl: export 'x1' has 1 client(s) connected; use --hard to disconnect them" $err
nbdgraphctl del-export --hard x1
exec 3>&-
wait $qemu_pid || true
nbdgraphctl --json exports > $out
jq -e 'map(.id) == ["demo"]' $out
