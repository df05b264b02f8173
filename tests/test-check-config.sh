#!/usr/bin/env bash
# tests/test-check-config.sh: nbdgraphd --check-config finds everything a
# start would refuse — also what only opening the nodes and claiming the
# exports reveals — with file:line:column, and accepts good configs.
set -euo pipefail
cd "${srcdir:-$(dirname "$0")}"
daemon=${NBDGRAPHD:-../build/nbdgraphd}
fail=0

for yaml in configs/bad-open/*.yaml; do
    want=$(cat "${yaml%.yaml}.err")
    if got=$("$daemon" --check-config --config "$yaml" 2>&1); then
        echo "FAIL: $yaml: accepted"; fail=1; continue
    fi
    got=${got#nbdgraphd: }
    if [ "$got" != "$want" ]; then
        printf 'FAIL: %s\n  want: %s\n  got:  %s\n' "$yaml" "$want" "$got"
        fail=1
    fi
done
for yaml in configs/memory-1g.yaml configs/layered.yaml; do
    "$daemon" --check-config --config "$yaml" >/dev/null ||
        { echo "FAIL: $yaml refused"; fail=1; }
done
"$daemon" --check-config >/dev/null ||
    { echo "FAIL: the built-in default refused"; fail=1; }
exit $fail
