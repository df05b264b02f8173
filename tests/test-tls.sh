#!/usr/bin/env bash
# tests/test-tls.sh: TLS (x509 and PSK) with STARTTLS, require mode and
# per-export allow: lists, against libnbd (nbdinfo, nbdcopy) and
# qemu-img, with certificates made here by certtool.
#
# A client whose CA is another one, a client certificate from another
# CA and a wrong PSK are refused; a plain client on a require listener
# gets the spec's NBD_REP_ERR_TLS_REQD; an allowed identity reaches its
# exports and nothing else, and the refusal is logged with the identity.
source "$srcdir/functions.sh"
set -e -x
requires certtool --version
requires psktool --version
requires nbdcopy --version
requires qemu-img --version
requires python3 --version

refute () { if "$@"; then echo "$0: '$*' succeeded" >&2; exit 1; fi; }
preq=$(free_port)
pallow=$(free_port)
log=$dir/nbdgraphd.log

# ---- Certificates: a CA, the server, alice and bob; another CA, mallory --

source "$srcdir/tls-certs.sh"
mkca "$dir/ca" "nbdgraph test CA"
mkca "$dir/ca2" "some other CA"
mkcert "$dir/ca" "$dir/server" server localhost
mkcert "$dir/ca" "$dir/alice" client alice
mkcert "$dir/ca" "$dir/bob" client bob
mkcert "$dir/ca2" "$dir/mallory" client alice     # alice's name, wrong CA
cp "$dir/ca/ca-cert.pem" "$dir/mallory/"        # but trusts our server
mkdir "$dir/other-ca"                           # trusts only ca2
cp "$dir/ca2/ca-cert.pem" "$dir/alice/client-cert.pem" \
   "$dir/alice/client-key.pem" "$dir/other-ca/"

# ---- PSK: the server knows alice and carol; "wrong" has alice's name -----

mkdir "$dir/psk"
psktool -u alice -p "$dir/psk/keys.psk" >/dev/null
psktool -u carol -p "$dir/psk/keys.psk" >/dev/null
grep '^alice:' "$dir/psk/keys.psk" > "$dir/alice.psk"
grep '^carol:' "$dir/psk/keys.psk" > "$dir/carol.psk"
psktool -u alice -p "$dir/wrong.psk" >/dev/null

start_nbdgraphd "server:
  listen:
    - unix:@SOCK@
    - { address: tcp:127.0.0.1:$preq, tls: require, tls-creds: x509 }
    - { address: tcp:127.0.0.1:$pallow, tls: allow, tls-creds: psk }
  control: @CONTROL@
  control-group: $(id -gn)
tls-creds:
  x509: { type: x509, dir: @DIR@/server, verify-peer: true }
  psk: { type: psk, dir: @DIR@/psk }
nodes:
  m: { driver: memory, size: 1M }
  a: { driver: memory, size: 32M }
  b: { driver: memory, size: 3M }
  l: { driver: memory, size: 4M }
exports:
  demo: { node: m, writable: true }
  alice: { node: a, writable: true,
           allow: [ 'x509:CN=alice,*', 'psk:alice', unix ] }
  bob: { node: b, allow: [ 'x509:CN=bob,O=nbdgraph test' ] }
  lan: { node: l, allow: [ 'tcp:127.0.0.0/8' ] }"

# A listener that requires TLS is printed with libnbd's nbds:// scheme.
grep -qx "nbds://127.0.0.1:$preq/alice" "$log"
grep -qx "nbd://127.0.0.1:$pallow/alice" "$log"

# The control socket: owner and group, nobody else.
[ "$(stat -c '%a %G' "$ctl")" = "660 $(id -gn)" ]

x509 () { echo "nbds://127.0.0.1:$preq/$1?tls-certificates=$dir/$2"; }
psk () { echo "nbds://$2@127.0.0.1:$pallow/$1?tls-psk-file=$dir/$2.psk"; }

# ---- x509: alice reaches alice (and demo), not bob -----------------------

[ "$(nbdinfo --size "$(x509 alice alice)")" = 33554432 ]
[ "$(nbdinfo --size "$(x509 demo alice)")" = 1048576 ]
# Enough data, in parallel requests, that replies wait for the socket.
head -c 32M /dev/urandom > "$dir/in"
nbdcopy "$dir/in" "$(x509 alice alice)"
nbdcopy "$(uri_for alice)" "$dir/out"          # the same disk, over Unix
cmp "$dir/in" "$dir/out"
rm "$dir/out"
nbdcopy "$(x509 alice alice)" "$dir/out"       # and back over TLS
cmp "$dir/in" "$dir/out"
nbdinfo --list "$(x509 '' alice)" > "$dir/list"
cat "$dir/list"
grep -q '^export="alice"' "$dir/list"
grep -q '^export="demo"' "$dir/list"
refute grep -q '^export="bob"' "$dir/list"
grep -q '^export="lan"' "$dir/list"           # TCP from 127/8: any client
expect_status 1 nbdinfo --size "$(x509 bob alice)"
grep -q "export 'bob' refused to client (x509:CN=alice,O=nbdgraph test)" \
    "$log"
[ "$(nbdinfo --size "$(x509 bob bob)")" = 3145728 ]
expect_status 1 nbdinfo --size "$(x509 alice bob)"

# qemu-img with QEMU's own TLS objects.
qemu-img info --output=json \
    --object "tls-creds-x509,id=tls0,dir=$dir/alice,endpoint=client" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$preq,export=alice,tls-creds=tls0" \
    > "$dir/info"
grep -q '"virtual-size": 33554432' "$dir/info"

# ---- x509: wrong certificates ---------------------------------------------

# The client trusts another CA: it refuses our server.
expect_status 1 nbdinfo --size "$(x509 demo other-ca)"
# A client certificate from another CA, with alice's name: we refuse it.
expect_status 1 nbdinfo --size "$(x509 demo mallory)"
# (GnuTLS clients send no certificate the server's CA did not sign.)
grep -q "TLS handshake failed: Certificate is required" "$log"
# No client certificate at all (verify-peer): refused too.
mkdir "$dir/anon"
cp "$dir/ca/ca-cert.pem" "$dir/anon/"
expect_status 1 nbdinfo --size "$(x509 demo anon)"

# ---- require mode: plain clients get NBD_REP_ERR_TLS_REQD -----------------

expect_status 1 nbdinfo --size "nbd://127.0.0.1:$preq/demo" 2> "$dir/err"
cat "$dir/err"
grep -q "server requires TLS encryption first" "$dir/err"
expect_status 1 qemu-img info \
    --image-opts "driver=nbd,host=127.0.0.1,port=$preq,export=demo" \
    2> "$dir/err"
cat "$dir/err"
grep -q "TLS negotiation required before option 7 (go)" "$dir/err"

# ---- PSK on the allow listener ---------------------------------------------

[ "$(nbdinfo --size "$(psk alice alice)")" = 33554432 ]
expect_status 1 nbdinfo --size "$(psk alice carol)"
grep -q "export 'alice' refused to client (psk:carol)" "$log"
[ "$(nbdinfo --size "$(psk demo carol)")" = 1048576 ]
# A wrong key for alice: the handshake fails.
expect_status 1 nbdinfo --size \
    "nbds://alice@127.0.0.1:$pallow/demo?tls-psk-file=$dir/wrong.psk"
grep -q "TLS handshake failed" "$log"
# qemu-img with tls-creds-psk (dir/keys.psk, username).
mkdir "$dir/qpsk"
cp "$dir/alice.psk" "$dir/qpsk/keys.psk"
qemu-img info --output=json \
    --object "tls-creds-psk,id=tls0,dir=$dir/qpsk,username=alice,endpoint=client" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$pallow,export=alice,tls-creds=tls0" \
    > "$dir/info"
grep -q '"virtual-size": 33554432' "$dir/info"

# ---- plain TCP on the allow listener: address ranges ------------------------

[ "$(nbdinfo --size "nbd://127.0.0.1:$pallow/lan")" = 4194304 ]
[ "$(nbdinfo --size "nbd://127.0.0.1:$pallow/demo")" = 1048576 ]
expect_status 1 nbdinfo --size "nbd://127.0.0.1:$pallow/alice"
grep -q "export 'alice' refused to client (no TLS)" "$log"
# lan admits TCP from 127/8 only: not Unix socket clients.
expect_status 1 nbdinfo --size "$(uri_for lan)"
[ "$(nbdinfo --size "$(uri_for alice)")" = 33554432 ]

# ---- reload: a changed allow: list holds at once ---------------------------

sed -i "s/allow: \[ 'x509:CN=bob,O=nbdgraph test' \]/allow: [ 'x509:CN=bob,O=nbdgraph test', 'psk:carol' ]/" \
    "$dir/config.yaml"
grep -q "'psk:carol' ]" "$dir/config.yaml"
"$top_builddir/nbdgraphctl" --socket "$ctl" reload
[ "$(nbdinfo --size "$(psk bob carol)")" = 3145728 ]
expect_status 1 nbdinfo --size "$(psk bob alice)"
expect_status 1 nbdinfo --size "$(x509 bob alice)"
[ "$(nbdinfo --size "$(x509 bob bob)")" = 3145728 ]

# ---- reload: TLS settings and credentials change for new clients ----------

# New PSK keys (carol's only), and the allow listener now requires TLS.
mkdir "$dir/psk2"
cp "$dir/carol.psk" "$dir/psk2/keys.psk"
sed -i -e "s|dir: $dir/psk }|dir: $dir/psk2 }|" \
    -e "s|tls: allow, tls-creds: psk|tls: require, tls-creds: psk|" \
    "$dir/config.yaml"
grep -q "psk2 }" "$dir/config.yaml"
"$top_builddir/nbdgraphctl" --socket "$ctl" reload > "$dir/reload.out"
grep -q 'load-tls-creds.*psk' "$dir/reload.out"
grep -q "retune-listen.*tcp:127.0.0.1:$pallow" "$dir/reload.out"
expect_status 1 nbdinfo --size "nbd://127.0.0.1:$pallow/demo"
expect_status 1 nbdinfo --size "$(psk demo alice)"
[ "$(nbdinfo --size "$(psk bob carol)")" = 3145728 ]

# The dump keeps the server: section's TLS and the credentials: reloading
# it changes nothing, and TLS is still required.
"$top_builddir/nbdgraphctl" --socket "$ctl" dump-config > "$dir/dump.yaml"
cat "$dir/dump.yaml"
grep -q "tls-creds:" "$dir/dump.yaml"
"$top_builddir/nbdgraphctl" --socket "$ctl" reload "$dir/dump.yaml" |
    grep -q 'applied 0 step(s)'
expect_status 1 nbdinfo --size "nbd://127.0.0.1:$pallow/demo"

stop_nbdgraphd
