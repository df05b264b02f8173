#!/usr/bin/env bash
# tests/test-luks-4k.sh: LUKS2 segments of 512 to 4096-byte sectors
# (4096 is what `cryptsetup luksFormat --type luks2` makes on a file),
# checked against tools that share no code with nbdgraphd.  dm-crypt is
# not at hand (cryptsetup open needs it) and QEMU 7.2 has no LUKS2, so
# the volume key comes from `cryptsetup luksDump --dump-master-key` and
# the sectors are en- and decrypted with python3's cryptography (OpenSSL's
# AES-XTS; `openssl enc` refuses XTS).  The IV of a sector is its number
# in sector_size units, plus iv_tweak (which counts 512-byte sectors):
# sectors 0 and 1000 both, so an IV in the wrong unit fails.  Then a
# header whose iv_tweak is not 0, and sector sizes and tweaks refused.
source "$srcdir/functions.sh"
set -euxo pipefail
requires cryptsetup --version
requires qemu-io --version
# Debian's python3-cryptography, for AES-XTS.
python_with "from cryptography.hazmat.primitives.ciphers import modes; modes.XTS"

printf %s hunter2-luks4k > "$dir/pw"
chmod 600 "$dir/pw"

# xts encrypt|decrypt KEYHEX SECTOR_SIZE FIRST < IN > OUT: AES-XTS of IN,
# sector by sector, the first one's IV FIRST (plain64: little-endian,
# zero padded to 16 bytes).
cat > "$dir/xts.py" <<'EOF'
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
op, key, size, sector = sys.argv[1], bytes.fromhex(sys.argv[2]), \
    int(sys.argv[3]), int(sys.argv[4])
data, out = sys.stdin.buffer.read(), bytearray()
assert len(data) % size == 0
for off in range(0, len(data), size):
    c = Cipher(algorithms.AES(key), modes.XTS(sector.to_bytes(16, "little")))
    x = c.encryptor() if op == "encrypt" else c.decryptor()
    out += x.update(data[off:off + size]) + x.finalize()
    sector += 1
sys.stdout.buffer.write(out)
EOF
xts () { "$py" "$dir/xts.py" "$@"; }

# patch_json IMG OLD NEW: OLD replaced by NEW (as long) in the JSON of
# both LUKS2 header copies, their SHA-256 checksums made right again.
cat > "$dir/patch.py" <<'EOF'
import hashlib, sys
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
assert len(old) == len(new)
with open(path, "r+b") as f:
    size = int.from_bytes(f.read(16)[8:16], "big")
    for at in (0, size):
        f.seek(at)
        hdr = bytearray(f.read(size))
        assert hdr.count(old) == 1, (at, old)
        hdr = hdr.replace(old, new)
        hdr[0x1c0:0x200] = bytes(64)
        hdr[0x1c0:0x1e0] = hashlib.sha256(hdr).digest()
        f.seek(at)
        f.write(hdr)
EOF

luks_config ()
{
    cat <<EOF
secrets:
  sec0: { file: "$dir/pw" }
nodes:
  img: { driver: file, filename: "$1" }
  disk: { driver: luks, key-secret: sec0, file: img }
exports:
  demo: { node: disk, writable: true }
EOF
}

# The volume key and the payload's offset in bytes, as cryptsetup says.
volume_key ()
{
    cryptsetup luksDump -q --dump-master-key --key-file "$dir/pw" "$1" |
        sed -n '/^MK dump:/,/^[^[:space:]]/p' | sed 's/^MK dump://' |
        grep -v '^[^[:space:]]' | tr -dc '0-9a-f'
}
payload_offset ()
{
    cryptsetup luksDump "$1" |
        sed -n 's/^[[:space:]]*offset: \([0-9]*\) \[bytes\]$/\1/p'
}

# pattern BYTE LEN: LEN bytes of BYTE (hex, as qemu-io's -P).
pattern () { head -c "$2" /dev/zero | tr '\0' "\\$(printf %o "0x$1")"; }

# sector_of IMG SIZE N: the N-th payload sector of IMG, as on disk.
sector_of ()
{
    dd if="$1" bs="$2" skip=$(( $(payload_offset "$1") / $2 + $3 )) count=1 \
        status=none
}

# check_image IMG SIZE TWEAK: with IMG made with SIZE-byte sectors and its
# iv_tweak TWEAK (512-byte units), what nbdgraphd writes decrypts right,
# and what is encrypted into the file reads back through nbdgraphd.
check_image ()
{
    local img=$1 ss=$2 base=$(( $3 / ($2 / 512) )) key far=1000

    key=$(volume_key "$img")
    test ${#key} = 128                          # aes-256-xts: 512 bits
    start_nbdgraphd "$(luks_config "$img")"
    test "$(nbdinfo --size "$uri")" = $(( (32 << 20) - (16 << 20) ))
    # Sector 0, sector 1000, and sector 1001 written unaligned inside
    # (the core's read-modify-write around our sectors).
    qemu-io -f raw "$uri" -c "write -P 0x4a 0 $ss" \
        -c "write -P 0x4b $((far * ss)) $ss" \
        -c "write -P 0x44 $(((far + 1) * ss)) $ss" \
        -c "write -P 0x33 $(((far + 1) * ss + 100)) 200"
    stop_nbdgraphd
    sector_of "$img" "$ss" 0 | xts decrypt "$key" "$ss" "$base" |
        cmp - <(pattern 4a "$ss")
    sector_of "$img" "$ss" $far | xts decrypt "$key" "$ss" $((base + far)) |
        cmp - <(pattern 4b "$ss")
    sector_of "$img" "$ss" $((far + 1)) |
        xts decrypt "$key" "$ss" $((base + far + 1)) |
        cmp - <(pattern 44 100; pattern 33 200; pattern 44 $((ss - 300)))
    # No plaintext in the file.
    if sector_of "$img" "$ss" $far | cmp -s - <(pattern 4b "$ss"); then
        exit 1
    fi

    # Encrypted by python into sectors 2 and 1002, read through nbdgraphd.
    local first=$(( $(payload_offset "$img") / ss ))
    pattern 5e "$ss" | xts encrypt "$key" "$ss" $((base + 2)) |
        dd of="$img" bs="$ss" seek=$((first + 2)) conv=notrunc status=none
    pattern 5f "$ss" | xts encrypt "$key" "$ss" $((base + far + 2)) |
        dd of="$img" bs="$ss" seek=$((first + far + 2)) conv=notrunc \
            status=none
    start_nbdgraphd "$(luks_config "$img")"
    qemu-io -r -f raw "$uri" -c "read -P 0x5e $((2 * ss)) $ss" \
        -c "read -P 0x5f $(((far + 2) * ss)) $ss" \
        -c "read -P 0x5e $((2 * ss + 10)) 100" \
        -c "read -P 0x4a 0 $ss" -c "read -P 0x4b $((far * ss)) $ss"
    stop_nbdgraphd
}

# --- cryptsetup's default sector size on a file: 4096.
img=$dir/luks2.img
truncate -s 32M "$img"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 --key-file "$dir/pw" "$img"
cryptsetup luksDump "$img" | grep -E '^[[:space:]]*sector: 4096 \[bytes\]$'
test "$(payload_offset "$img")" = $((16 << 20))
check_image "$img" 4096 0

# The same image with iv_tweak 8 (512-byte sectors: one 4096-byte
# sector), as a reencryption leaves it: every IV one more.
patch_json () { "$py" "$dir/patch.py" "$@"; }
patch_json "$img" '"iv_tweak":"0"' '"iv_tweak":"8"'
cryptsetup luksDump "$img" >/dev/null            # still a good header
check_image "$img" 4096 8

# --- The other sizes cryptsetup makes.
for ss in 512 1024 2048; do
    truncate -s 0 "$img"
    truncate -s 32M "$img"
    cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --sector-size $ss \
        --pbkdf-force-iterations 1000 --key-file "$dir/pw" "$img"
    cryptsetup luksDump "$img" | grep -E "^[[:space:]]*sector: $ss \[bytes\]$"
    check_image "$img" $ss 0
done

# --- Refused at open, with the reason: a sector size LUKS2 does not
# have, and an iv_tweak that is not a whole 2048-byte sector.
refused ()
{
    local out

    luks_config "$1" > "$dir/bad.yaml"
    printf 'server:\n  listen: [ "unix:%s" ]\n' "$dir/bad.sock" \
        >> "$dir/bad.yaml"
    if out=$("$NBDGRAPHD" --check-config --config "$dir/bad.yaml" 2>&1); then
        echo "$0: $1 accepted" >&2
        exit 1
    fi
    grep -F "$2" <<<"$out"
}
cp "$img" "$dir/bad.img"
patch_json "$dir/bad.img" '"sector_size":2048' '"sector_size":8192'
refused "$dir/bad.img" \
    "node 'disk': LUKS2 sector size 8192 is not supported (512, 1024, 2048 or"
cp "$img" "$dir/bad.img"
patch_json "$dir/bad.img" '"iv_tweak":"0"' '"iv_tweak":"3"'
refused "$dir/bad.img" "node 'disk': LUKS2 header is damaged: segment 0's \
iv_tweak 3 is not a whole number of its 2048-byte sectors"
