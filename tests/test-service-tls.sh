#!/usr/bin/env bash
# tests/test-service-tls.sh: a socket handed over by socket activation
# gets the TLS settings of its address in server.listen (here: the same
# TCP port, TLS required with PSK), or, bound to an address the config
# does not name, the settings all listen addresses share: a config that
# asks for TLS never serves plain text because systemd made the socket.
source "$srcdir/functions.sh"
set -e -x
requires systemd-socket-activate --version
requires nbdinfo --version
requires psktool --version
requires python3 --version

port=$(free_port)
mkdir "$dir/psk"
psktool -u alice -p "$dir/psk/keys.psk" >/dev/null
cat > "$dir/c.yaml" <<YAML
server:
  listen:
    - { address: "tcp:127.0.0.1:$port", tls: require, tls-creds: psk }
  control: $dir/ctl.sock
tls-creds:
  psk: { type: psk, dir: $dir/psk }
nodes:
  m: { driver: memory, size: 1M }
exports:
  demo: { node: m }
YAML

# activate SOCKET: run nbdgraphd under systemd-socket-activate on SOCKET.
activate () {
    systemd-socket-activate -l "$1" "$NBDGRAPHD" --foreground \
        --config "$dir/c.yaml" >> "$dir/nbdgraphd.log" 2>&1 &
    nbdgraphd_pid=$!
}
stop () {
    kill -TERM "$nbdgraphd_pid"
    wait "$nbdgraphd_pid"
    nbdgraphd_pid=
}

# The config's own TCP port, handed over.
activate "127.0.0.1:$port"
psk_uri="nbds://alice@127.0.0.1:$port/demo?tls-psk-file=$dir/psk/keys.psk"
for i in $(seq 100); do
    timeout 30 nbdinfo --size "$psk_uri" >/dev/null 2>&1 && break
    sleep 0.2
done
[ "$(timeout 30 nbdinfo --size "$psk_uri")" = 1048576 ]
expect_status 1 timeout 30 nbdinfo --size "nbd://127.0.0.1:$port/demo"
stop

# A Unix socket the config does not name: TLS as every listen address.
activate "$dir/act.sock"
for i in $(seq 100); do [ -S "$dir/act.sock" ] && break; sleep 0.1; done
unix_psk="nbds+unix://alice@/demo?socket=$dir/act.sock&tls-psk-file=$dir/psk/keys.psk"
[ "$(timeout 30 nbdinfo --size "$unix_psk")" = 1048576 ]
expect_status 1 timeout 30 nbdinfo --size "nbd+unix:///demo?socket=$dir/act.sock"
# The listen addresses are systemd's: a reload may not change them.
sed "s|tls: require|tls: allow|" "$dir/c.yaml" > "$dir/allow.yaml"
expect_status 1 "$top_builddir/nbdgraphctl" --socket "$dir/ctl.sock" \
    reload "$dir/allow.yaml" 2> "$dir/err"
grep -q "server: 'listen' cannot change on reload under socket activation" \
    "$dir/err"
stop
cat "$dir/nbdgraphd.log"
