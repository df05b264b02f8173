# tests/tls-certs.sh: x509 test certificates made with certtool (bash),
# for tests that source it after tests/functions.sh:
#   mkca DIR NAME                a CA: DIR/ca-key.pem, DIR/ca-cert.pem
#   mkcert CA-DIR OUT-DIR server|client CN
#                                OUT-DIR/ROLE-key.pem, ROLE-cert.pem
#                                signed by the CA, and its ca-cert.pem;
#                                a server's names localhost and 127.0.0.1
# Valid for two days: enough for any test run.
mkca () {   # DIR NAME
    mkdir -p "$1"
    certtool --generate-privkey --outfile "$1/ca-key.pem" 2>/dev/null
    printf 'cn = %s\nca\ncert_signing_key\nexpiration_days = 2\n' "$2" \
        > "$1/ca.info"
    certtool --generate-self-signed --load-privkey "$1/ca-key.pem" \
        --template "$1/ca.info" --outfile "$1/ca-cert.pem" 2>/dev/null
}
mkcert () {  # CA-DIR OUT-DIR server|client CN
    local ca=$1 out=$2 role=$3 cn=$4
    mkdir -p "$out"
    cp "$ca/ca-cert.pem" "$out/ca-cert.pem"
    certtool --generate-privkey --outfile "$out/$role-key.pem" 2>/dev/null
    {
        printf 'cn = %s\norganization = nbdgraph test\n' "$cn"
        printf 'expiration_days = 2\nsigning_key\nencryption_key\n'
        if [ "$role" = server ]; then
            printf 'dns_name = localhost\nip_address = 127.0.0.1\n'
            printf 'tls_www_server\n'
        else
            printf 'tls_www_client\n'
        fi
    } > "$out/$role.info"
    certtool --generate-certificate --load-privkey "$out/$role-key.pem" \
        --load-ca-certificate "$ca/ca-cert.pem" \
        --load-ca-privkey "$ca/ca-key.pem" --template "$out/$role.info" \
        --outfile "$out/$role-cert.pem" 2>/dev/null
}
