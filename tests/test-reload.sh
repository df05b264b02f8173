#!/usr/bin/env bash
# tests/test-reload.sh: reload as an admin meets it.  Every bad file is
# refused with the message --check-config gives and the graph stays as it
# was; a step failing half-way rolls back; a NAC conflict with a live
# holder is refused before anything changes; --dry-run prints the plan;
# what the control channel made is kept ("not in the file") unless
# --prune; SIGHUP reloads the daemon's file and a RELOAD event says so;
# dump-config read back is an empty plan.
source "$srcdir/functions.sh"
set -e -x
requires jq --version

server="server:
  listen: [ \"unix:@SOCK@\" ]
  control: \"@CONTROL@\""
start_nbdgraphd "$server
throttle-groups:
  g1: { iops-total: 100000 }
nodes:
  m0: { driver: memory, size: 4M }
  m1: { driver: memory, size: 4M }
exports:
  demo: { node: m0, writable: true, throttle-group: g1 }
  e1: { node: m1, detect-zeroes: on }"

out=$dir/out
err=$dir/err
conf=$dir/config.yaml
# The daemon's server: section, for files written here.
head -3 "$conf" > "$dir/server.yaml"

graph_state () {
    nbdgraphctl qmp '{"execute":"query-graph"}' | jq -S .return
    nbdgraphctl dump-config
}
graph_state > "$dir/before"

# The unchanged file is an empty plan.
nbdgraphctl reload > $out
grep -q 'reload-1: applied 0 step(s)' $out

# Every bad file: refused with --check-config's message, nothing changed.
# Files that only fail when opened get the daemon's server: section (a
# different one is refused first, for its own reason: see the end).
for yaml in "$srcdir"/configs/bad/*.yaml "$srcdir"/configs/bad-open/*.yaml
do
    f=$dir/$(basename "$yaml")
    case $yaml in
    */bad-open/*) { cat "$dir/server.yaml"; grep -v -e '^server:' \
                        -e '^  listen:' -e '^  control:' "$yaml"; } > "$f" ;;
    *) cp "$yaml" "$f" ;;
    esac
    if want=$("$NBDGRAPHD" --check-config --config "$f" 2>&1); then
        # Its fault was in the server: section replaced above; a reload
        # refuses any change there for its own reason.
        case $yaml in */bad-open/*) continue ;; esac
        echo "FAIL: --check-config accepts $f"; exit 1
    fi
    want=${want#nbdgraphd: }
    expect_status 1 nbdgraphctl reload "$f" 2> $err
    got=$(grep "^nbdgraphctl: " $err)
    got=${got#nbdgraphctl: }
    case $got in
    "$want"|"$want (reload-"*" rolled back; nothing changed)") ;;
    *) printf 'FAIL: %s\n  want: %s\n  got:  %s\n' "$f" "$want" "$got"
       exit 1 ;;
    esac
    graph_state > "$dir/after"
    diff "$dir/before" "$dir/after"
done

# A step failing half-way (an open that fails, after a group and a node
# were added; a group retune and new exports would follow) rolls back:
# the graph is exactly as before.
{ cat "$dir/server.yaml"; cat <<'EOF'
throttle-groups:
  g1: { iops-total: 90000 }
  g2: { iops-total: 5000 }
nodes:
  m0: { driver: memory, size: 4M }
  m1: { driver: memory, size: 4M }
  m2: { driver: memory, size: 1M }
  r2: { driver: raw, file: m2, offset: 512K, size: 1M }
exports:
  demo: { node: m0, writable: true, throttle-group: g1 }
  e1: { node: m1, detect-zeroes: unmap }
  e2: { node: m2 }
  e3: { node: r2 }
EOF
} > "$dir/half.yaml"
expect_status 1 nbdgraphctl reload "$dir/half.yaml" 2> $err
grep -q "half.yaml:11:3: node 'r2': offset 524288 plus size 1048576 exceeds" $err
grep -q "rolled back; nothing changed" $err
graph_state > "$dir/after"
diff "$dir/before" "$dir/after"
grep -q "undid add-node 'm2'" "$dir/nbdgraphd.log"
grep -q "undid add-group 'g2'" "$dir/nbdgraphd.log"

# A NAC conflict with a live holder: a writable export made over the
# control channel, and a file asking for a second writer of its node.
nbdgraphctl add-node c0 memory size=1M
nbdgraphctl add-export ce c0 --writable
graph_state > "$dir/before"
{ cat "$conf"; echo "  e4: { node: m1, writable: true }"; } > "$dir/nac.yaml"
sed -i 's/^nodes:/nodes:\n  c0: { driver: memory, size: 1M }/' "$dir/nac.yaml"
echo "  e5: { node: c0, writable: true }" >> "$dir/nac.yaml"
expect_status 1 nbdgraphctl reload --dry-run "$dir/nac.yaml" 2> $err
grep -q "export 'e5': node 'c0': export 'e5' requires write-data, which export 'ce' does not allow" $err
graph_state > "$dir/after"
diff "$dir/before" "$dir/after"

# --dry-run prints the plan and changes nothing; what the control channel
# made is kept and listed.
sed -i '/^  e5:/d' "$dir/nac.yaml"
nbdgraphctl reload --dry-run "$dir/nac.yaml" > $out
cat $out
grep -q '^STEP  ACTION ' $out
grep -q '^1     add-export  e4 ' $out
grep -qx "not in the file (kept; --prune removes them): export 'ce'" $out
grep -q 'dry run, would apply 1 step(s)' $out
graph_state > "$dir/after"
diff "$dir/before" "$dir/after"
nbdgraphctl --json reload --dry-run "$dir/nac.yaml" > $out
jq -e '.steps[0] == {"step": 1, "action": "add-export", "object": "e4",
        "change": "added", "exports": "e4", "clients": 0}' $out

# A splice made live survives a reload of the file; dump-config read back
# is an empty plan.
nbdgraphctl insert-filter m0 nofilter f1
nbdgraphctl reload > $out
grep -q 'applied 0 step(s)' $out
nbdgraphctl dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -qx '  f1: { driver: nofilter, file: m0 }' "$dir/dump.yaml"
grep -qx '  demo: { node: f1, writable: true, throttle-group: g1 }' \
    "$dir/dump.yaml"
nbdgraphctl reload --dry-run "$dir/dump.yaml" > $out
grep -q 'would apply 0 step(s)' $out
! grep 'not in the file' $out ||
    fail "reload of its own dump found something not in the file"

# --prune removes what the file does not name: the export and node made
# live, and the splice (re-linking the export to m0, its client kept).
nbdgraphctl reload --prune > $out
cat $out
grep -q 'remove-export  ce ' $out
grep -q 'remove-node    c0 ' $out
grep -q 'remove-node    f1 ' $out
nbdgraphctl dump-config > "$dir/dump.yaml"
grep -qx '  demo: { node: m0, writable: true, throttle-group: g1 }' \
    "$dir/dump.yaml"
! grep -e c0 -e f1 "$dir/dump.yaml" || fail "--prune left c0 or f1"

# SIGHUP reloads the daemon's own file; the RELOAD event tells.
nbdgraphctl events --count 1 --timeout 20 > "$dir/events" &
events_pid=$!
sleep 0.5
sed -i 's/detect-zeroes: on/detect-zeroes: unmap/' "$conf"
kill -HUP "$nbdgraphd_pid"
wait $events_pid
cat "$dir/events"
jq -e 'select(.event == "RELOAD") | .data.result == "applied" and
       .data.steps == 1' "$dir/events"
nbdgraphctl dump-config | grep -qx '  e1: { node: m1, writable: false, detect-zeroes: unmap }'

# server: changes apply live.  A client connected through nbd.sock
# stays while that address goes: qemu-io reads commands from a FIFO.
mkfifo "$dir/cmds"
qemu-io -f raw "$uri" < "$dir/cmds" > "$dir/kept" 2>&1 &
kept_pid=$!
exec 7> "$dir/cmds"
for i in $(seq 100); do
    nbdgraphctl qmp '{"execute":"query-block-exports"}' |
        jq -e '.return[] | select(.id == "demo") | .connections == 1' \
        >/dev/null && break
    sleep 0.1
done
other=$dir/other.sock
sed "s|\\[ \"unix:$sock\" \\]|[ \"unix:$sock\", \"unix:$other\" ]|" \
    "$conf" > "$dir/both.yaml"
sed -i 's|^  control:|  max-connections: 1\n  control:|' "$dir/both.yaml"
nbdgraphctl reload --dry-run "$dir/both.yaml" > $out
grep -q "add-listen.*unix:$other" $out
grep -q 'retune-server.*max-connections 0 -> 1' $out
nbdgraphctl reload "$dir/both.yaml" > $out
# max-connections 1 holds at once: the kept client is the one.
! timeout 10 nbdinfo --size "nbd+unix:///demo?socket=$other" 2>/dev/null ||
    fail "a second client got past max-connections 1"
grep -q 'the maximum (max-connections)' "$dir/nbdgraphd.log"
sed 's|^  max-connections: 1$|  max-connections: 5|' "$dir/both.yaml" \
    > "$dir/wide.yaml"
nbdgraphctl reload "$dir/wide.yaml" > $out
timeout 10 nbdinfo --size "nbd+unix:///demo?socket=$other"
# Drop the first address: new clients cannot use it, the kept one stays.
sed "s|\"unix:$sock\", ||" "$dir/wide.yaml" > "$dir/moved.yaml"
nbdgraphctl reload "$dir/moved.yaml" > $out
grep -q "remove-listen.*unix:$sock" $out
[ ! -e "$sock" ]
echo 'read 0 4096' >&7
exec 7>&-
wait $kept_pid
grep -q 'read 4096/4096 bytes at offset 0' "$dir/kept"
timeout 10 nbdinfo --size "nbd+unix:///demo?socket=$other"

# The control socket carries the reload: moving it is refused, with the
# alternative.
sed "s|control: \"$ctl\"|control: \"$dir/ctl2.sock\"|" "$dir/moved.yaml" \
    > "$dir/ctl.yaml"
expect_status 1 nbdgraphctl reload "$dir/ctl.yaml" 2> $err
grep -q "ctl.yaml:.*server: 'control' cannot change on reload (this reload came through it); restart nbdgraphd to move it" $err
sock=$other

stop_nbdgraphd
