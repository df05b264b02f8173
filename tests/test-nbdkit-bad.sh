#!/usr/bin/env bash
# tests/test-nbdkit-bad.sh: the nbdkit leaf's bad input and faults.  At
# open (config file:line:column, QMP errors): a missing plugin, .config
# rejecting a value or a key, an API version we do not speak, a plugin
# that needs an nbdkit function we lack, args that are not a map, a
# loaded plugin asked for with other args.  At run time: a plugin's
# errors reach that node's clients as EIO, and only them.  And a plugin
# is unloaded with its last node, so it can be loaded anew.
source "$srcdir/functions.sh"
source "$srcdir/nbdkit.sh"
set -e -x
requires qemu-io --version
requires jq --version
plugins=$top_builddir/tests

# check NODE-LINE MESSAGE: --check-config on a config with that one node
# fails with exactly "config:4:3: node 'm': MESSAGE".
check ()
{
    printf 'server:\n  listen: [ "unix:%s/x.sock" ]\nnodes:\n  %s\nexports:\n  e: { node: m }\n' \
        "$dir" "$1" > $dir/bad.yaml
    if out=$("$NBDGRAPHD" --check-config --config $dir/bad.yaml 2>&1); then
        echo "FAIL: accepted: $1"; exit 1
    fi
    [ "$out" = "nbdgraphd: $dir/bad.yaml:4:3: node 'm': $2" ] ||
        { printf 'FAIL: %s\n  want: %s\n  got:  %s\n' "$1" "$2" "$out"; exit 1; }
}

check "m: { driver: nbdkit, plugin: nosuch }" \
      "plugin 'nosuch' not found: $plugindir/nbdkit-nosuch-plugin.so: No such file or directory"
check "m: { driver: nbdkit, plugin: memory, args: { size: bogus } }" \
      "plugin 'memory': parameter 'size': could not parse size string (bogus)"
check "m: { driver: nbdkit, plugin: memory, args: { size: 1M, colour: red } }" \
      "plugin 'memory': parameter 'colour': unknown parameter 'colour'"
check "m: { driver: nbdkit, plugin: memory, args: [ size ] }" \
      "'args' must be a map of plugin parameters"
check "m: { driver: nbdkit, plugin: '$plugins/nbdkit-ngbadversion-plugin.so' }" \
      "plugin '$plugins/nbdkit-ngbadversion-plugin.so' uses nbdkit API version 99; only versions 1 and 2 are supported"
check "m: { driver: nbdkit, plugin: '$plugins/nbdkit-ngneedsym-plugin.so' }" \
      "plugin '$plugins/nbdkit-ngneedsym-plugin.so' needs an nbdkit function nbdgraphd does not provide: $(realpath $plugins/nbdkit-ngneedsym-plugin.so): undefined symbol: nbdkit_no_such_function"

# One daemon: a plugin that fails reads from 512K on, a memory node
# beside it.
start_nbdgraphd "nodes:
  t: { driver: nbdkit, plugin: '$plugins/nbdkit-ngtest-plugin.so',
       args: { fail-offset: 512K } }
  mem: { driver: nbdkit, plugin: memory, args: { size: 1M } }
exports:
  demo: { node: t, writable: true }
  mem: { node: mem, writable: true }"

# Run time: EIO for the failing range, the rest of that node and the
# other node serve on.
qemu-io -f raw "$uri" -c 'write -P 0x11 0 64k' -c 'read -P 0x11 0 64k'
qemu-io -f raw "$uri" -c 'read 600k 4k' > $dir/out 2>&1 || true
cat $dir/out
grep -q 'read failed: Input/output error' $dir/out
qemu-io -f raw "$uri" -c 'read -P 0x11 0 64k'
qemu-io -f raw "$(uri_for mem)" -c 'write -P 0x22 0 1M' -c 'read -P 0x22 0 1M'
grep -q "node 't': read failed (Input/output error): injected read error at 614400" \
    $dir/nbdgraphd.log

# QMP: a missing plugin, and memory again with other args: refused, the
# graph unchanged.
qmp_add ()
{
    nbdgraphctl qmp "{\"execute\": \"blockdev-add\", \"arguments\": $1}"
}
expect_status 1 qmp_add '{"node-name": "x", "driver": "nbdkit", "plugin": "nosuch"}' \
    > $dir/err 2>&1
grep -q "node 'x': plugin 'nosuch' not found" $dir/err
expect_status 1 qmp_add '{"node-name": "m2", "driver": "nbdkit", "plugin": "memory", "args": {"size": "2M"}}' \
    > $dir/err 2>&1
cat $dir/err
grep -q "node 'm2': plugin 'memory' is already loaded with other args" $dir/err
# A load that failed left nothing behind: the same plugin loads anew.
# (pattern: its globals are all set again by .config, as they must be
# when a sanitizer build keeps plugins mapped.)
expect_status 1 qmp_add '{"node-name": "d", "driver": "nbdkit", "plugin": "pattern", "args": {"size": "bogus"}}' \
    > $dir/err 2>&1
grep -q "node 'd': plugin 'pattern': parameter 'size'" $dir/err
qmp_add '{"node-name": "d", "driver": "nbdkit", "plugin": "pattern", "args": {"size": "4096"}}'
nbdgraphctl del-node d
# The same args share the loaded plugin (and, as under nbdkit, its data).
qmp_add '{"node-name": "m2", "driver": "nbdkit", "plugin": "memory", "args": {"size": "1M"}}'
nbdgraphctl nodes > $dir/out
cat $dir/out
grep -q '^m2 ' $dir/out
expect_status 1 grep -q '^x ' $dir/out

# With its last node the plugin goes, so other args load it anew.
nbdgraphctl del-export mem
nbdgraphctl del-node mem
expect_status 1 qmp_add '{"node-name": "m3", "driver": "nbdkit", "plugin": "memory", "args": {"size": "2M"}}' \
    > /dev/null 2>&1
nbdgraphctl del-node m2
qmp_add '{"node-name": "m3", "driver": "nbdkit", "plugin": "memory", "args": {"size": "2M"}}'
nbdgraphctl nodes > $dir/out
cat $dir/out
grep -Eq '^m3 +nbdkit +2 MiB ' $dir/out

stop_nbdgraphd
