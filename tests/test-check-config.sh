#!/usr/bin/env bash
# tests/test-check-config.sh: nbdgraphd --check-config finds everything a
# start would refuse — also what only opening the nodes and claiming the
# exports reveals, or looking at the listen and control paths and host
# names — with file:line:column, and accepts good configs; a start that
# fails to listen exits at once with a clear error.
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

# A listen address in a missing directory: the start fails at once (no
# hang with half-started handles) and says which directory is missing.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'server:\n  listen: ["unix:%s/none/nbd.sock"]\n  control: %s/ctl.sock\nnodes:\n  m: { driver: memory, size: 1M }\nexports:\n  e: { node: m }\n' \
    "$tmp" "$tmp" > "$tmp/c.yaml"
if out=$(timeout 30 "$daemon" --foreground --config "$tmp/c.yaml" 2>&1); then
    echo "FAIL: started with a socket in a missing directory"; fail=1
elif [ $? -eq 124 ]; then
    echo "FAIL: a failed start hung"; fail=1
elif ! grep -q "directory '$tmp/none': No such file or directory" <<<"$out"; then
    printf 'FAIL: unclear error for a missing directory:\n%s\n' "$out"; fail=1
fi
[ ! -e "$tmp/ctl.sock" ] || { echo "FAIL: control socket left behind"; fail=1; }

# A host name that does not resolve (.invalid never does, RFC 6761); the
# resolver's own words vary, so only our part of the message is fixed.
printf 'server:\n  listen: ["tcp:nosuch.invalid:10809"]\nnodes:\n  m: { driver: memory, size: 1M }\nexports:\n  e: { node: m }\n' \
    > "$tmp/host.yaml"
want="nbdgraphd: $tmp/host.yaml:2:12: listen address 'tcp:nosuch.invalid:10809': cannot resolve host 'nosuch.invalid': "
if out=$(timeout 60 "$daemon" --check-config --config "$tmp/host.yaml" 2>&1); then
    echo "FAIL: an unresolvable host name accepted"; fail=1
elif [ "${out#"$want"}" = "$out" ]; then
    printf 'FAIL: unclear error for an unresolvable host:\n  want: %s...\n  got:  %s\n' \
        "$want" "$out"; fail=1
fi
exit $fail
