#!/usr/bin/env bash
# contrib/check-layers.sh [TOP_SRCDIR]: refuse an #include that points up
# the layers of DESIGN.md ("Layers"): each folder may include only itself
# and the folders below it,
#
#     nac < graph < filters < config < server
#
# and nac/ stays a pure library (no libuv).  Prints each offending line as
# file:line: and exits 1; the build runs it after every `make` (all-local
# in Makefile.am), so a backward include fails the build.  Backward calls
# fail to link in tests/unit/test-layer-link-* (each layer's library
# linked whole, with nothing above it).
set -euo pipefail
top=${1:-$(dirname "$0")/..}
cd "$top"

# Folders each layer may include from, itself first.
declare -A allowed=(
    [nac]="nac"
    [graph]="graph nac"
    [filters]="filters graph nac"
    [config]="config filters graph nac"
    [server]="server config filters graph nac"
)
bad=0
inc='^[[:space:]]*#[[:space:]]*include[[:space:]]*'

for layer in nac graph filters config server; do
    for f in "$layer"/*.[ch]; do
        [ -e "$f" ] || continue
        while IFS=: read -r line text; do
            dir=$(sed -n "s/$inc\"\([^/\"]*\)\/.*/\1/p" <<<"$text")
            [ -n "$dir" ] || continue
            case " ${allowed[$layer]} " in
            *" $dir "*) ;;
            *)
                echo "$f:$line: $layer/ may not include $dir/ (layers:" \
                     "nac < graph < filters < config < server)" >&2
                bad=1
                ;;
            esac
        done < <(grep -n "$inc\"" "$f" || true)
    done
done

if grep -n "$inc<uv\\.h>" nac/*.[ch] >&2; then
    echo "nac/ is a pure library: no libuv" >&2
    bad=1
fi
exit $bad
