#!/usr/bin/env bash
# tests/test-drv-nbd-tls.sh: the nbd driver's tls-creds against nbdkit
# --tls=require, with certificates made here by certtool and keys by
# psktool: x509 (the server's certificate checked against our CA, with
# and without a client certificate the server asks for) and PSK.  Data
# written through the node is read back from nbdkit directly.  A wrong
# CA, a wrong key and no TLS at all are refused at open with the reason;
# client credentials are refused on a listener, unknown ones and
# tls-hostname at open.
source "$srcdir/functions.sh"
source "$srcdir/nbd-remote.sh"
set -e -x
requires nbdkit --version
requires certtool --version
requires psktool --version
requires nbdcopy --version
requires nbdinfo --version
requires qemu-io --version

source "$srcdir/tls-certs.sh"
mkca "$dir/ca" "nbdgraph test CA"
mkca "$dir/ca2" "some other CA"
mkcert "$dir/ca" "$dir/server" server localhost
mkcert "$dir/ca" "$dir/alice" client alice      # our CA, a client cert
mkdir "$dir/anon" "$dir/wrong-ca"
cp "$dir/ca/ca-cert.pem" "$dir/anon/"           # our CA, no cert
cp "$dir/ca2/ca-cert.pem" "$dir/wrong-ca/"      # trusts only ca2
mkdir "$dir/psk" "$dir/psk-wrong"
psktool -u alice -p "$dir/psk/keys.psk" >/dev/null
psktool -u alice -p "$dir/psk-wrong/keys.psk" >/dev/null   # other key

port=$(free_port)

# Three remotes requiring TLS: x509 on TCP (its certificate names
# 127.0.0.1), x509 asking for a client certificate, PSK.
start_remote --tcp "$port" --tls x509 --tls-certificates="$dir/server" \
    memory 16M
start_remote --tls x509v --tls-certificates="$dir/server" --tls-verify-peer \
    memory 16M
start_remote --tls psk --tls-psk="$dir/psk/keys.psk" memory 16M
direct_psk="nbds+unix://alice@/?socket=$dir/psk.sock&tls-psk-file=$dir/psk/keys.psk"

start_nbdgraphd "tls-creds:
  ca: { type: x509, dir: \"@DIR@/anon\", endpoint: client }
  wrongca: { type: x509, dir: \"@DIR@/wrong-ca\", endpoint: client }
  anon-nv:
    { type: x509, dir: \"@DIR@/anon\", endpoint: client, verify-peer: false }
  alice-nv:
    { type: x509, dir: \"@DIR@/alice\", endpoint: client, verify-peer: false }
  pskc: { type: psk, dir: \"@DIR@/psk\", endpoint: client, username: alice }
  pskw:
    { type: psk, dir: \"@DIR@/psk-wrong\", endpoint: client, username: alice }
nodes:
  mem: { driver: memory, size: 1M }
  rx: { driver: nbd, server: { type: inet, host: 127.0.0.1, port: \"$port\" },
        tls-creds: ca }
  rv: { driver: nbd, server: { type: unix, path: \"@DIR@/x509v.sock\" },
        tls-creds: alice-nv }
  rp: { driver: nbd, server: { type: unix, path: \"@DIR@/psk.sock\" },
        tls-creds: pskc }
exports:
  demo: { node: mem, writable: true }
  x509: { node: rx, writable: true }
  x509v: { node: rv, writable: true }
  psk: { node: rp, writable: true }"
out=$dir/out

# Data through each TLS node, read back through it from the remote, and
# for PSK straight from the remote too.
head -c 4M /dev/urandom > "$dir/src"
for e in x509 x509v psk; do
    nbdcopy "$dir/src" "$(uri_for $e)"
    nbdcopy "$(uri_for $e)" "$dir/back-$e"
    cmp <(head -c 4M "$dir/back-$e") "$dir/src"
done
nbdcopy "$direct_psk" "$dir/direct-psk"
cmp <(head -c 4M "$dir/direct-psk") "$dir/src"
qemu-io -f raw "$(uri_for psk)" -c 'write -P 0x5a 8M 64k' \
    -c 'read -P 0x5a 8M 64k' | grep -q 'read 65536/65536'

# Refused at open, with the reason: a server certificate from another
# CA, a client certificate the server wants but does not get, another
# key, no TLS at all, a certificate check libnbd cannot make.
refused () {    # MESSAGE ADD-NODE-ARG...
    local msg=$1
    shift
    expect_status 1 nbdgraphctl add-node bad nbd "$@" 2> $out
    cat $out
    grep -q "$msg" $out
}
refused "node 'bad': cannot .* 127.0.0.1:$port: .*certificate verification" \
    server.type=inet server.host=127.0.0.1 server.port="$port" \
    tls-creds=wrongca
refused "node 'bad': cannot talk to unix:$dir/x509v.sock" \
    server.type=unix server.path="$dir/x509v.sock" tls-creds=anon-nv
refused "node 'bad': cannot talk to unix:$dir/psk.sock" \
    server.type=unix server.path="$dir/psk.sock" tls-creds=pskw
refused "node 'bad': " server.type=unix server.path="$dir/psk.sock"
refused "cannot check the server's certificate on a Unix socket" \
    server.type=unix server.path="$dir/x509v.sock" tls-creds=ca
refused "tls-creds 'nosuch': no such client credentials" \
    server.type=unix server.path="$dir/psk.sock" tls-creds=nosuch
refused "tls-hostname is not supported" server.type=inet \
    server.host=127.0.0.1 server.port="$port" tls-creds=ca \
    tls-hostname=localhost
nodes=$(nbdgraphctl nodes)
! grep '^bad ' <<<"$nodes" || fail "a refused node 'bad' is in the graph"
# The good nodes still work after all that; a good one is added live.
nbdcopy "$(uri_for x509)" "$dir/again"
cmp <(head -c 4M "$dir/again") "$dir/src"
nbdgraphctl add-node late nbd server.type=inet server.host=127.0.0.1 \
    server.port="$port" tls-creds=ca
nbdgraphctl del-node late
# Client credentials are read at start only: a reload adding some is
# refused, and changes nothing.
cp "$dir/config.yaml" "$dir/config.orig"
sed -i "s|^tls-creds:|&\\n  extra: { type: psk, dir: \"$dir/psk\", endpoint: client, username: alice }|" \
    "$dir/config.yaml"
grep -q '^  extra:' "$dir/config.yaml"
expect_status 1 nbdgraphctl reload 2> $out
cat $out
grep -q "tls-creds 'extra': credentials with endpoint client are read at start only" $out
cp "$dir/config.orig" "$dir/config.yaml"
nbdcopy "$(uri_for psk)" "$dir/again-psk"
stop_nbdgraphd

# Config errors: client credentials on a listener; a username for x509;
# a missing CA file; a PSK file without the username.
check () {   # CONFIG-TEXT EXPECTED-MESSAGE
    printf '%s\n' "$1" > "$dir/bad.yaml"
    expect_status 1 "$NBDGRAPHD" --check-config --config "$dir/bad.yaml" \
        2> $out
    cat $out
    grep -q "$2" $out
}
check "server:
  listen: [ { address: \"unix:$dir/l.sock\", tls-creds: anon } ]
tls-creds:
  anon: { type: x509, dir: \"$dir/anon\", endpoint: client }" \
    "tls-creds 'anon' has endpoint client"
check "server: { listen: [ \"unix:$dir/l.sock\" ] }
tls-creds:
  anon: { type: x509, dir: \"$dir/anon\", endpoint: client, username: a }" \
    "username is for type psk with endpoint client only"
check "server: { listen: [ \"unix:$dir/l.sock\" ] }
tls-creds:
  c: { type: x509, dir: \"$dir/psk\", endpoint: client }" \
    "tls-creds 'c': .*/psk/ca-cert.pem: No such file"
check "server: { listen: [ \"unix:$dir/l.sock\" ] }
tls-creds:
  c: { type: psk, dir: \"$dir/psk\", endpoint: client, username: bob }" \
    "no key for username 'bob'"
check "server: { listen: [ \"unix:$dir/l.sock\" ] }
tls-creds:
  c: { type: psk, dir: \"$dir/psk\", endpoint: elsewhere }" \
    "bad endpoint 'elsewhere'"
