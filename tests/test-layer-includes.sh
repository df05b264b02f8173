#!/usr/bin/env bash
# tests/test-layer-includes.sh: contrib/check-layers.sh accepts the tree
# and refuses each kind of backward include, naming file, line and the
# layer it points to.  It works on a copy of the sources, planting one bad
# line per case.
set -euo pipefail
top=${top_srcdir:-$(dirname "$0")/..}
check=$top/contrib/check-layers.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nglayers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

bash "$check" "$top" || { echo "FAIL: the tree itself is refused"; fail=1; }

# plant FILE LINE WANT: a copy whose FILE has LINE, must be refused with a
# message containing WANT.
plant ()
{
    rm -rf "$tmp/src"
    mkdir "$tmp/src"
    cp -r "$top"/{nac,graph,filters,config,server} "$tmp/src/"
    printf '%s\n' "$2" >> "$tmp/src/$1"
    if out=$(bash "$check" "$tmp/src" 2>&1); then
        echo "FAIL: $1: '$2' accepted"; fail=1
    elif [[ $out != *"$3"* ]]; then
        printf 'FAIL: %s\n  want: %s\n  got:  %s\n' "$1" "$3" "$out"
        fail=1
    fi
}

plant graph/graph.c '#include "filters/filters.h"' \
    "graph/graph.c:"
plant graph/drain.c '#include "config/config.h"' \
    "graph/ may not include config/"
plant filters/throttle.c '#include "config/config.h"' \
    "filters/ may not include config/"
plant config/nodes.c '#include "server/exports.h"' \
    "config/ may not include server/"
plant nac/nac.c '#include "graph/graph.h"' \
    "nac/ may not include graph/"
plant nac/nac.h '#include <uv.h>' \
    "nac/ is a pure library: no libuv"
exit $fail
