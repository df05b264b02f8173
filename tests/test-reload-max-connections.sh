#!/usr/bin/env bash
# tests/test-reload-max-connections.sh: a reload changes an existing
# export's max-connections live (one retune-export step, no replace):
# lowered below the clients connected, those clients stay connected and
# keep reading while a new one is refused at NBD_OPT_GO; raised (or the
# limit removed), new clients are accepted again.  dump-config writes
# the new limit and reloading the dump is an empty plan.
source "$srcdir/functions.sh"
set -e -x
requires jq --version
requires qemu-io --version

start_nbdgraphd '
nodes:
  m: { driver: memory, size: 1M }
exports:
  demo: { node: m }
  e: { node: m, max-connections: 3 }
'
ctl_ () { "$top_builddir/nbdgraphctl" --socket "$ctl" "$@"; }
conf=$dir/config.yaml
out=$dir/out

wait_connections () { wait_export_connections e "$1"; }
# Clients of e that stay: qemu-io reads a block now and then from a FIFO
# we keep open, and we can ask it for one more read later.
holders=()
hold () {
    local fifo=$dir/hold$1
    mkfifo "$fifo"
    qemu-io -r -f raw "$(uri_for e)" < "$fifo" > "$dir/hold$1.out" 2>&1 &
    holders+=($!)
    exec {fd}> "$fifo"
    eval "hold_fd$1=$fd"
}
read_through () {           # holder N reads one block, still connected
    local fd_var=hold_fd$1 n
    n=$(grep -c 'read 4096/4096' "$dir/hold$1.out" || :)
    echo "read -v 0 4096" >&${!fd_var}
    for i in $(seq 300); do
        [ "$(grep -c 'read 4096/4096' "$dir/hold$1.out" || :)" -gt "$n" ] &&
            return 0
        sleep 0.1
    done
    cat "$dir/hold$1.out"
    return 1
}
set_limit () {              # the file with e's max-connections $1 (or none)
    local keys=${1:+, max-connections: $1}
    sed -i "s|^  e: .*|  e: { node: m$keys }|" "$conf"
}

hold 1
hold 2
wait_connections 2
read_through 1

# Lowered below the clients there: a live step, nobody disconnected.
set_limit 1
ctl_ reload --dry-run > $out
cat $out
grep -q 'retune-export  *e  *max-connections 3 -> 1' $out
if grep -q 'replace-export' $out; then exit 1; fi
ctl_ reload > $out
cat $out
grep -q 'applied 1 step(s)' $out
wait_connections 2
read_through 1
read_through 2
# A new one is refused, with the log line; the other export still serves.
expect_status 1 nbdinfo --size "$(uri_for e)"
grep -q "export 'e' is at its max-connections (1); refused" \
    "$dir/nbdgraphd.log"
[ "$(nbdinfo --size "$(uri_for demo)")" = 1048576 ]

# The dump has the new limit; reading it back changes nothing.
ctl_ dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q '  e: {.*max-connections: 1' "$dir/dump.yaml"
ctl_ reload "$dir/dump.yaml" | grep -q 'applied 0 step(s)'

# Raised: a new client is accepted while the two stay.
set_limit 4
ctl_ reload | grep -q 'applied 1 step(s)'
[ "$(nbdinfo --size "$(uri_for e)")" = 1048576 ]
wait_connections 2
read_through 2

# Back to 2 (full), then the limit removed: no limit at all.
set_limit 2
ctl_ reload | grep -q 'applied 1 step(s)'
expect_status 1 nbdinfo --size "$(uri_for e)"
set_limit ""
ctl_ reload | grep -q 'applied 1 step(s)'
[ "$(nbdinfo --size "$(uri_for e)")" = 1048576 ]
ctl_ dump-config > "$dir/dump.yaml"
if grep -q '  e: {.*max-connections' "$dir/dump.yaml"; then exit 1; fi
ctl_ reload "$dir/dump.yaml" | grep -q 'applied 0 step(s)'
read_through 1
read_through 2

for fd_var in hold_fd1 hold_fd2; do eval "exec ${!fd_var}>&-"; done
for p in "${holders[@]}"; do wait "$p" || :; done
stop_nbdgraphd
