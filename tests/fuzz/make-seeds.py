#!/usr/bin/env python3
# tests/fuzz/make-seeds.py: (re)write the seed corpora in tests/fuzz/corpus/
# from the protocol's layout (the NBD spec's doc/proto.md, QEMU's QMP) and
# the example configs in tests/configs/.  Run from the source tree; commit
# what it writes.  Findings are added by hand as corpus/NAME/crash-*, with
# a line in tests/fuzz/README.md, and never rewritten here.
import glob
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

OPT_MAGIC = b"IHAVEOPT"
REQ_MAGIC = 0x25609513
EXT_REQ_MAGIC = 0x21e41c71
C_FIXED, C_NO_ZEROES = 1, 2
(OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_PEEK, OPT_STARTTLS, OPT_INFO,
 OPT_GO, OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META,
 OPT_EXTENDED) = range(1, 12)
(CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE,
 CMD_WRITE_ZEROES, CMD_BLOCK_STATUS) = range(8)
F_FUA, F_NO_HOLE, F_DF, F_REQ_ONE, F_FAST_ZERO, F_PAYLOAD_LEN = (
    1, 2, 4, 8, 16, 32)


def option(opt, data=b""):
    return OPT_MAGIC + struct.pack(">II", opt, len(data)) + data


def name_field(name):
    return struct.pack(">I", len(name)) + name


def info_go(opt, name, infos=()):
    return option(opt, name_field(name) + struct.pack(">H", len(infos)) +
                  b"".join(struct.pack(">H", i) for i in infos))


def meta(opt, name, queries):
    data = name_field(name) + struct.pack(">I", len(queries))
    data += b"".join(name_field(q) for q in queries)
    return option(opt, data)


def request(cmd, offset=0, length=0, flags=0, handle=1, payload=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, offset,
                       length) + payload


def ext_request(cmd, offset=0, length=0, flags=0, handle=1, payload=b""):
    """An extended (32-byte) request; a payload sets PAYLOAD_LEN."""
    if payload:
        flags |= F_PAYLOAD_LEN
    return struct.pack(">IHHQQQ", EXT_REQ_MAGIC, flags, cmd, handle, offset,
                       length) + payload


def flags(no_zeroes=True):
    return struct.pack(">I", C_FIXED | (C_NO_ZEROES if no_zeroes else 0))


DISC = request(CMD_DISC, handle=99)
EXT_DISC = ext_request(CMD_DISC, handle=99)

HANDSHAKES = {
    "go-default": flags() + info_go(OPT_GO, b"") + DISC,
    "go-disk-infos": flags() + option(OPT_STRUCTURED) +
        info_go(OPT_INFO, b"disk", (1, 2, 3)) +
        info_go(OPT_GO, b"disk", (0, 1, 2, 3)) +
        request(CMD_READ, 0, 4096) + DISC,
    "export-name": flags(False) + option(OPT_EXPORT_NAME, b"disk") +
        request(CMD_FLUSH) + DISC,
    "export-name-no-zeroes": flags() + option(OPT_EXPORT_NAME, b"ro") + DISC,
    "export-name-unknown": flags() + option(OPT_EXPORT_NAME, b"nope"),
    "list": flags() + option(OPT_LIST) + option(OPT_LIST, b"x") +
        option(OPT_ABORT),
    "meta": flags() + option(OPT_STRUCTURED) +
        meta(OPT_LIST_META, b"disk", []) +
        meta(OPT_LIST_META, b"disk", [b"base:", b"qemu:dirty-bitmap:x"]) +
        meta(OPT_SET_META, b"disk", [b"base:allocation"]) +
        meta(OPT_SET_META, b"img", [b"base:allocation"]) +
        info_go(OPT_GO, b"img") +
        request(CMD_BLOCK_STATUS, 0, 1 << 20, F_REQ_ONE) + DISC,
    "meta-unstructured": flags() +
        meta(OPT_SET_META, b"disk", [b"base:allocation"]) +
        option(OPT_ABORT),
    "malformed": flags() + option(OPT_INFO, b"\0\0\0\xff") +
        option(OPT_GO, b"") + option(OPT_STRUCTURED, b"x") +
        meta(OPT_SET_META, b"disk", [b"a" * 5000]) +
        option(OPT_STARTTLS) + option(OPT_PEEK) + option(77, b"abc") +
        info_go(OPT_GO, b"nope") + info_go(OPT_GO, b"d\0sk") +
        option(OPT_ABORT),
    "bad-magic": flags() + b"IHAVEOPX" + struct.pack(">II", OPT_LIST, 0),
    "bad-flags": struct.pack(">I", 0x80000001),
    "huge-option": flags() + OPT_MAGIC +
        struct.pack(">II", OPT_GO, 1 << 20),
    "partial": flags() + option(OPT_GO, name_field(b"disk"))[:20],
    "extended": flags() + option(OPT_STRUCTURED) + option(OPT_EXTENDED) +
        option(OPT_STRUCTURED) +
        meta(OPT_SET_META, b"img", [b"base:allocation"]) +
        info_go(OPT_GO, b"img", (3,)) +
        ext_request(CMD_WRITE, 0, 512, payload=b"\x5a" * 512) +
        ext_request(CMD_READ, 0, 4096, handle=2) +
        ext_request(CMD_BLOCK_STATUS, 0, 1 << 40, handle=3) + EXT_DISC,
    "extended-export-name": flags() + option(OPT_EXTENDED, b"x") +
        option(OPT_EXTENDED) + option(OPT_EXPORT_NAME, b"disk"),
}

# Transmission seeds: a selector byte (see fuzz-nbd-transmission.c), then
# requests.
EXPORT = {"disk": 0, "ro": 1, "img": 2, "faulty": 3, "zero": 4}
STRUCTURED, META, EXPORT_NAME, NO_ZEROES, HANG_UP = 8, 16, 32, 64, 128
EXTENDED = STRUCTURED | EXPORT_NAME     # NBD_OPT_EXTENDED_HEADERS, then GO


def sel(export, *bits):
    return bytes([EXPORT[export] | sum(bits)])


def rw_mix(size=1 << 20):
    data = bytes(range(256)) * 16
    return (request(CMD_WRITE, 0, 4096, payload=data) +
            request(CMD_WRITE, 8192, 4096, F_FUA, 2, data) +
            request(CMD_READ, 0, 8192, handle=3) +
            request(CMD_READ, size - 512, 512, F_DF, 4) +
            request(CMD_TRIM, 4096, 4096, handle=5) +
            request(CMD_WRITE_ZEROES, 0, 65536, F_NO_HOLE, 6) +
            request(CMD_WRITE_ZEROES, 65536, 65536, F_FAST_ZERO, 7) +
            request(CMD_CACHE, 0, size, handle=8) +
            request(CMD_FLUSH, handle=9) +
            request(CMD_BLOCK_STATUS, 0, size, handle=10) +
            request(CMD_BLOCK_STATUS, 0, size, F_REQ_ONE, 11))


def ext_rw_mix(size=1 << 20):
    data = bytes(range(256)) * 16
    return (ext_request(CMD_WRITE, 0, 4096, payload=data) +
            ext_request(CMD_WRITE, 8192, 4096, F_FUA, 2, data) +
            ext_request(CMD_READ, 0, 8192, handle=3) +
            ext_request(CMD_READ, size - 512, 512, F_DF, 4) +
            ext_request(CMD_TRIM, 4096, 4096, handle=5) +
            ext_request(CMD_WRITE_ZEROES, 0, 65536, F_NO_HOLE, 6) +
            ext_request(CMD_WRITE_ZEROES, 0, size, F_FAST_ZERO, 7) +
            ext_request(CMD_CACHE, 0, size, handle=8) +
            ext_request(CMD_FLUSH, handle=9) +
            ext_request(CMD_BLOCK_STATUS, 0, size, handle=10) +
            ext_request(CMD_BLOCK_STATUS, 0, size, F_REQ_ONE, 11))


TRANSMISSIONS = {
    "disk-simple": sel("disk") + rw_mix() + DISC,
    "disk-structured": sel("disk", STRUCTURED, META) + rw_mix() + DISC,
    "img-structured": sel("img", STRUCTURED, META) + rw_mix() + DISC,
    "img-no-disc": sel("img", STRUCTURED) + rw_mix(),
    "ro-writes": sel("ro", STRUCTURED, META) + rw_mix() + DISC,
    "faulty": sel("faulty", STRUCTURED, META) +
        request(CMD_READ, 65536, 4096) +
        request(CMD_WRITE, 131072, 512, payload=b"\xaa" * 512) +
        request(CMD_BLOCK_STATUS, 0, 4096, handle=3) + DISC,
    "zero-export-name": sel("zero", EXPORT_NAME, NO_ZEROES) +
        request(CMD_WRITE, 0, 4096, payload=b"\0" * 4096) +
        request(CMD_WRITE, 4096, 4096, payload=b"\1" * 4096) +
        request(CMD_BLOCK_STATUS, 0, 8192) + DISC,
    "errors": sel("disk", STRUCTURED) +
        request(CMD_READ, 1 << 20, 1) +
        request(CMD_READ, 0, 0, handle=2) +
        request(CMD_READ, 0, 33 << 20, handle=3) +
        request(CMD_WRITE, (1 << 20) - 2, 4, handle=4, payload=b"abcd") +
        request(CMD_FLUSH, 1, 0, handle=5) +
        request(CMD_BLOCK_STATUS, 0, 512, handle=6) +
        request(CMD_READ, 0, 512, 0x8000, 7) +
        request(42, 0, 512, handle=8) +
        request(CMD_WRITE, 0, 40 << 20, handle=9) + DISC,
    "bad-magic": sel("disk") +
        struct.pack(">IHHQQI", REQ_MAGIC + 1, 0, CMD_READ, 1, 0, 512),
    "short-write": sel("disk") + request(CMD_WRITE, 0, 65536, payload=b"x" * 100),
    "img-hang-up": sel("img", STRUCTURED, META, HANG_UP) + rw_mix() +
        b"".join(request(CMD_READ, 0, 1 << 20, handle=20 + i)
                 for i in range(4)),
    "disk-hang-up": sel("disk", HANG_UP) + rw_mix() +
        request(CMD_READ, 0, 1 << 20, handle=20),
    "disk-extended": sel("disk", EXTENDED, META) + ext_rw_mix() + EXT_DISC,
    "img-extended": sel("img", EXTENDED, META) + ext_rw_mix() +
        ext_request(CMD_READ, 0, 1 << 20, handle=12) + EXT_DISC,
    "extended-errors": sel("disk", EXTENDED, META) +
        ext_request(CMD_WRITE, 0, 4096, handle=1) +
        ext_request(CMD_TRIM, 0, 512, handle=2, payload=b"x" * 512) +
        ext_request(CMD_BLOCK_STATUS, 0, 512, handle=3,
                    payload=struct.pack(">QI", 512, 1)) +
        ext_request(CMD_READ, 0, 1 << 33, handle=4) +
        ext_request(CMD_TRIM, 0, 1 << 40, handle=5) +
        ext_request(CMD_BLOCK_STATUS, 1 << 20, 1, handle=6) +
        request(CMD_READ, 0, 512, handle=7) + b"\0\0\0\0" +
        EXT_DISC,
    "extended-big-payload": sel("disk", EXTENDED) +
        struct.pack(">IHHQQQ", EXT_REQ_MAGIC, F_PAYLOAD_LEN, CMD_WRITE, 1,
                    0, 1 << 40),
    "ro-extended-hang-up": sel("ro", EXTENDED, META, HANG_UP) +
        ext_rw_mix(),
    # export 5 is export 0 ("disk") again, and makes the hang-up a reset
    "disk-reset": bytes([5 | STRUCTURED | HANG_UP]) + rw_mix() +
        request(CMD_READ, 0, 1 << 20, handle=20),
}

QMP_COMMANDS = [
    {"execute": "query-version", "id": 1},
    {"execute": "query-commands"},
    {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    {"execute": "query-graph", "arguments": {"format": "dot"}},
    {"execute": "query-graph"},
    {"execute": "query-block-exports"},
    {"execute": "query-nac"},
    {"execute": "blockdev-add", "arguments":
        {"driver": "memory", "node-name": "m1", "size": "4M"}},
    {"execute": "blockdev-add", "arguments":
        {"driver": "raw", "node-name": "r1", "file": "m1", "offset": 4096}},
    {"execute": "blockdev-add", "arguments":
        {"driver": "blkdebug", "node-name": "b1", "image":
            {"driver": "null-co", "size": 1024},
         "inject-error": [{"iotype": "read", "errno": "EIO"}]}},
    {"execute": "block-export-add", "arguments":
        {"type": "nbd", "id": "e1", "node-name": "r1", "writable": True,
         "throttle": {"iops-total": 10}, "copy-on-read": True,
         "detect-zeroes": "on", "description": "x"}},
    {"execute": "blockdev-insert-filter", "arguments":
        {"node": "part0", "filter": {"driver": "nofilter",
                                     "node-name": "f1"},
         "job-id": "j1"}},
    {"execute": "blockdev-reconfigure", "arguments":
        {"node-name": "vm1.throttle", "explicit": True,
         "options": {"limits": {"iops-total": 800}}}},
    {"execute": "throttle-group-add", "arguments":
        {"group": "g2", "limits": {"bps-read": 1000}}},
    {"execute": "throttle-group-set", "arguments":
        {"group": "tenants", "limits": {"iops-total": 4000}}},
    {"execute": "throttle-group-del", "arguments": {"group": "g2"}},
    {"execute": "block_resize", "arguments":
        {"node-name": "m1", "size": 8388608}},
    {"execute": "blockdev-remove-filter", "arguments": {"node-name": "f1"}},
    {"execute": "block-export-del", "arguments": {"id": "e1",
                                                  "mode": "hard"}},
    {"execute": "block-export-del", "arguments": {"id": "vm2",
                                                  "dry-run": True}},
    {"execute": "blockdev-del", "arguments": {"node-name": "r1"}},
    {"execute": "blockdev-del", "arguments": {"node-name": "disk0"}},
]

QMP_BAD = [
    b'{"execute":"nope"}',
    b'{"execute":1}',
    b'{"execute":"blockdev-del","arguments":[]}',
    b'{"execute":"blockdev-del","arguments":{"node-name":5}}',
    b'{"execute":"blockdev-del","arguments":{"nodename":"x"}}',
    b'{"execute":"query-version","extra":1}',
    b'[1,2,3]',
    b'{"execute":"query-version"',
    b'{"a":"\\u00zz"}',
    b'"string"',
    b'{"execute":"qmp_capabilities"}',
    b'{} {} {}',
]


def qmp_text(cmds):
    return b"".join(json.dumps(c).encode() + b"\r\n" for c in cmds)


QMPS = {
    "all-commands": b"\1" + qmp_text(QMP_COMMANDS),
    "not-negotiated": b"\0" + qmp_text(QMP_COMMANDS[:2]),
    "bad-input": b"\1" + b"\n".join(QMP_BAD) + b"\n",
    "split": b"\1" + qmp_text(QMP_COMMANDS[7:12]).replace(b"\r\n", b" "),
}


def write(name, seeds):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for f in glob.glob(os.path.join(d, "seed-*")):
        os.remove(f)
    for key, data in seeds.items():
        with open(os.path.join(d, "seed-" + key), "wb") as fp:
            fp.write(data)


def config_seeds():
    top = os.path.dirname(os.path.dirname(HERE))
    seeds = {}
    for path in sorted(glob.glob(os.path.join(top, "tests/configs/**/*.yaml"),
                                 recursive=True)):
        rel = os.path.relpath(path, os.path.join(top, "tests/configs"))
        with open(path, "rb") as fp:
            seeds[rel.replace("/", "-")] = fp.read()
    return seeds


write("fuzz-nbd-handshake", HANDSHAKES)
write("fuzz-nbd-transmission", TRANSMISSIONS)
write("fuzz-qmp", QMPS)
write("fuzz-config", config_seeds())
