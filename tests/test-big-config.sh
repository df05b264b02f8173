#!/usr/bin/env bash
# tests/test-big-config.sh: a config of 100k nodes and 20k exports loads
# (issue 8 item 6: loading was quadratic, 200k nodes took minutes), and
# loads right: every parent comes before its child in the file, so the
# loader must reorder them all; the lookups by name still find
# duplicates and unknown names at the end of the file; and the daemon
# serves the first and the last export with the sizes the file gives.
# No time is asserted; the timeouts only bound a hang.
#
# Under the sanitizers (NG_SANITIZERS, set by tests/local.mk) the config
# is a quarter the size: a load is then ~5x the plain build's CPU, nearly
# all of it in ASan's malloc and free (callgrind of the plain build: no
# quadratic part; 60k instructions a node, half of them in the YAML
# parser and value trees), and five loads of 100k nodes did not fit the
# time limit on a loaded machine.  The plain build's 100k nodes still
# catch a quadratic loader (it took 210 s here, past the 150 s bound);
# the sanitizer run checks the same paths, reordering, lookups and
# messages for memory errors and leaks.
source "$srcdir/functions.sh"
set -euo pipefail

nodes=100000
exports=20000
if [ -n "${NG_SANITIZERS-}" ]; then
    nodes=25000
    exports=5000
fi
# A node name to repeat at the end: even (a null-co), well inside.
dup=$((nodes * 7 / 9 / 2 * 2))

# gen_config FILE [EXTRA-NODE-LINE [EXTRA-EXPORT-LINE]]: nodes
# n0..n$((nodes - 1)), pairs of "raw slice of null-co" written parent
# first, node nI on line 4 + I (odd I) or 5 + I (even I); export eJ on the
# raw node n(2J+1), whose size is (J % 1000 + 1) KiB; every 100th export
# with an implicit detect-zeroes filter.
gen_config ()
{
    awk -v n=$nodes -v e=$exports -v sock="$dir/nbd.sock" \
        -v extra_node="${2-}" -v extra_export="${3-}" 'BEGIN {
        printf "server:\n  listen: [ \"unix:%s\" ]\nnodes:\n", sock;
        for (i = 1; i < n; i += 2) {
            printf "  n%d: { driver: raw, file: n%d, size: %dK }\n",
                i, i - 1, (i - 1) / 2 % 1000 + 1;
            printf "  n%d: { driver: null-co, size: 1M }\n", i - 1;
        }
        if (extra_node != "") print extra_node;
        print "exports:";
        for (j = 0; j < e; j++)
            printf "  e%d: { node: n%d%s }\n", j, 2 * j + 1,
                j % 100 == 0 ? ", detect-zeroes: on" : "";
        if (extra_export != "") print extra_export;
    }' > "$1"
}

# 150 s: a liveness bound, not a speed check (the quadratic loader took
# 210 s on this config; ASan on a loaded 2-core machine about 2 min).
check_config ()
{
    timeout 150 "$NBDGRAPHD" --check-config --config "$1" 2>&1
}

# Refused, with exactly this message.
expect_refused ()
{
    local file=$1 want=$2 out rc=0

    out=$(check_config "$file") || rc=$?
    if [ $rc -ne 1 ] || [ "$out" != "nbdgraphd: $want" ]; then
        printf 'FAIL: %s: exit %s\n  want: %s\n  got:  %s\n' \
            "$file" "$rc" "nbdgraphd: $want" "$out" >&2
        exit 1
    fi
}

gen_config "$dir/big.yaml"
out=$(check_config "$dir/big.yaml") || {
    echo "FAIL: --check-config on the big config: $out" >&2; exit 1; }
[ "$out" = "$dir/big.yaml: configuration is valid" ] || {
    echo "FAIL: unexpected output: $out" >&2; exit 1; }

# Line 4 + nodes (100004) is the first line after the nodes; exports
# take the lines from 5 + nodes on.
after_nodes=$((4 + nodes))
gen_config "$dir/dup.yaml" "  n$dup: { driver: null-co, size: 1M }"
expect_refused "$dir/dup.yaml" \
    "$dir/dup.yaml:$after_nodes:3: duplicate key 'n$dup' (first at $((5 + dup)):3)"
gen_config "$dir/inline.yaml" \
    "  x: { driver: raw, file: { driver: null-co, size: 1M, node-name: n5 } }"
expect_refused "$dir/inline.yaml" \
    "$dir/inline.yaml:$after_nodes:67: node 'x': duplicate node name 'n5' (also at 8:3)"
gen_config "$dir/unknown.yaml" "" "  late: { node: n$nodes }"
expect_refused "$dir/unknown.yaml" \
    "$dir/unknown.yaml:$((5 + nodes + exports)):17: export 'late': unknown node 'n$nodes'"

# start_nbdgraphd shows the config it starts: keep the log readable.
start_nbdgraphd --config "$dir/big.yaml" e0 2> >(tail -n 40 >&2)
[ "$(nbdinfo --size "$uri")" = 1024 ] ||
    { echo "FAIL: export e0 is not 1 KiB" >&2; exit 1; }
last=$((exports - 1))
[ "$(nbdinfo --size "$(uri_for e$last)")" = $(((last % 1000 + 1) * 1024)) ] ||
    { echo "FAIL: export e$last is not $((last % 1000 + 1)) KiB" >&2; exit 1; }
stop_nbdgraphd
