#!/usr/bin/env bash
# tests/test-qcow2-backing-header.sh: after block-commit and block-stream
# on a live qcow2 chain, the top image's header names its new backing
# (or none), so qemu-img follows the same chain the daemon served, and a
# daemon restarted on the top image alone (opened by its header chain)
# serves the same data.
source "$srcdir/functions.sh"
set -e -x
requires qemu-img --version
requires qemu-io --version
requires jq --version

out=$dir/out
cd "$dir"
make_qcow2_chain 4M base=0x11@0:4M mid=0x22@1M:1M top=0x33@2M:1M
# What the chain holds, flat, with the write below.
qemu-io -f raw -c 'write -P 0x44 3M 512K' want.raw > /dev/null

start_nbdgraphd "nodes:
  base: { driver: qcow2, file: { driver: file, filename: @DIR@/base.qcow2 },
          backing: null }
  mid: { driver: qcow2, file: { driver: file, filename: @DIR@/mid.qcow2 },
         backing: base }
  top: { driver: qcow2, file: { driver: file, filename: @DIR@/top.qcow2 },
         backing: mid }
exports:
  vm1: { node: top, writable: true }" vm1
qemu-io -f raw -c 'write -P 0x44 3M 512K' "$uri" > /dev/null

# Commit mid into base: top's header names base now.  A rate limit
# keeps each job there until wait follows it.
nbdgraphctl commit top --top mid --base base --job-id c0 --speed 512K
nbdgraphctl wait c0 > $out
grep -q "job 'c0' completed" $out
# The header goes to disk by the write-back: a flush behind it waits.
qemu-io -f raw -c flush "$uri"
qemu-img info -U --output=json top.qcow2 > $out
cat $out
jq -e --arg b "$dir/base.qcow2" '."backing-filename" == $b and
    ."backing-filename-format" == "qcow2"' $out
stop_nbdgraphd
qemu-img check top.qcow2
qemu-img compare -f qcow2 -F raw top.qcow2 want.raw
qemu-img info --backing-chain top.qcow2 | grep -c '^image:' | grep -qx 2

# The top image alone: its header brings base along.
start_nbdgraphd "nodes:
  top: { driver: qcow2, file: { driver: file, filename: @DIR@/top.qcow2 } }
exports:
  vm1: { node: top, writable: true }" vm1
qemu-img compare -f raw -F raw "$uri" want.raw
nbdgraphctl --json nodes |
    jq -e '.[] | select(."node-name" == "top") | .children | length == 2'

# Stream the rest into top: its header names no backing.
nbdgraphctl stream top --job-id s0 --speed 4M
nbdgraphctl wait s0 > $out
grep -q "job 's0' completed" $out
qemu-io -f raw -c flush "$uri"
qemu-img info -U --output=json top.qcow2 > $out
cat $out
jq -e 'has("backing-filename") | not' $out
stop_nbdgraphd
qemu-img check top.qcow2
qemu-img compare -f qcow2 -F raw top.qcow2 want.raw
qemu-img info --backing-chain top.qcow2 | grep -c '^image:' | grep -qx 1
