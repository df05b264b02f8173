#!/usr/bin/env bash
# contrib/build.sh [BUILDDIR [CONFIGURE-ARGS...]]: install what nbdgraph
# needs on Debian 12, then configure and build in BUILDDIR (default
# build/; the sanitizer build uses build-san/).  Safe to run again: each
# step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

build_deps=(build-essential autoconf automake pkg-config
            libuv1-dev libyaml-dev libjansson-dev libnbd-dev
            libgnutls28-dev
            libsystemd-dev      # server/log.c: --log=journal
            librbd-dev          # graph/drv-rbd.c: Ceph RBD
            libargon2-dev       # graph/luks2.c: argon2 LUKS2 keyslots
            zlib1g-dev          # qcow2 compressed clusters
            liburing-dev        # graph/file-uring.c: file aio=io_uring
            nbdkit-plugin-dev)  # the nbdkit leaf
test_deps=(qemu-utils libnbd-bin nbdkit fio jq graphviz gnutls-bin
           groff-base man-db systemd python3 clang libclang-rt-14-dev
           ceph-mon ceph-osd ceph-common   # tests/test-drv-rbd.sh
           cryptsetup-bin       # tests/test-luks.sh: LUKS images
           python3-cryptography # tests/test-luks-4k.sh: AES-XTS
           nbdkit-plugin-python # the nbdkit leaf's python test
           iproute2             # tests/test-live-move.sh: netns
           python3-libnbd)      # tests/test-poll.sh: libnbd in Python

missing=()
for p in "${build_deps[@]}" "${test_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "build.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        "${missing[@]}" >/dev/null
fi

builddir=${1:-build}
[ $# -gt 0 ] && shift
top=$PWD
[ -x configure ] && [ configure -nt configure.ac ] || autoreconf -i
mkdir -p "$builddir"
cd "$builddir"
[ -f Makefile ] || "$top/configure" "$@"
make -j"$(nproc)"
