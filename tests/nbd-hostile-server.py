#!/usr/bin/env python3
# tests/nbd-hostile-server.py: an NBD server (stdlib only) that serves a
# RAM disk right, except that on a connection without structured replies
# (the nbd driver's data connection, whose transmission phase is our own
# code) a request at the trigger offset gets a bad reply.
#
#   nbd-hostile-server.py SOCKET SIZE MODEFILE LOG
#
# MODEFILE holds "MODE OFFSET [once] [any]", read at each request (an
# absent or empty file: behave).  With "once" the file is emptied when
# the fault fires, so the retry on a new connection is served right;
# with "any" the fault is on every connection (libnbd's too).
# Modes (read requests unless said):
#   badmagic  the reply's magic is wrong
#   badcookie the reply names a cookie that was never sent
#   short     half the data, then the socket is closed
#   dup       the reply, data and all, twice
#   long      the reply's data has 4096 bytes too many
#   enospc    a write there fails with NBD_ENOSPC (28)
#   err999    a read or write there fails with an unknown error (999)
#   early     a write there is answered once its header is in, before
#             its data (which is read afterwards)
# LOG gets one line per connection and per fault fired.
#
# Handshake: fixed newstyle, no zeroes; NBD_OPT_STRUCTURED_REPLY is
# honoured, SET_META_CONTEXT selects nothing, INFO and GO answer
# NBD_INFO_EXPORT with flush, FUA and multi-conn; other options get
# NBD_REP_ERR_UNSUP.
import os
import socket
import struct
import sys
import threading

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST = 1, 2, 3
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, 0x80000001
FLAG_HAS_FLAGS, FLAG_SEND_FLUSH, FLAG_SEND_FUA = 1, 4, 8
FLAG_CAN_MULTI_CONN = 0x100
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CHUNK_NONE, CHUNK_OFFSET_DATA, CHUNK_ERROR = 0, 1, 0x8001
EINVAL = 22

sock_path, size, mode_file, log_path = (sys.argv[1], int(sys.argv[2]),
                                        sys.argv[3], sys.argv[4])
disk = bytearray(size)
lock = threading.Lock()
log_lock = threading.Lock()
nconn = 0


def log(msg):
    with log_lock, open(log_path, "a") as f:
        f.write(msg + "\n")


def recvall(c, n):
    buf = bytearray()
    while len(buf) < n:
        b = c.recv(n - len(buf))
        if not b:
            raise EOFError
        buf += b
    return bytes(buf)


def fault(offset, kinds, structured):
    """The mode if it applies to a request at offset, else None."""
    try:
        with open(mode_file) as f:
            words = f.read().split()
    except FileNotFoundError:
        return None
    if len(words) < 2 or words[0] not in kinds or int(words[1]) != offset:
        return None
    if structured and "any" not in words[2:]:
        return None
    if "once" in words[2:]:
        open(mode_file, "w").close()
    return words[0]


def opt_reply(c, opt, rtype, data=b""):
    c.sendall(struct.pack(">QIII", OPT_REPLY_MAGIC, opt, rtype, len(data))
              + data)


def handshake(c):
    """Options until GO or EXPORT_NAME; returns (structured, flags)."""
    flags = (FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA |
             FLAG_CAN_MULTI_CONN)
    structured = False
    c.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT, 1 | 2))
    cflags, = struct.unpack(">I", recvall(c, 4))
    while True:
        magic, opt, length = struct.unpack(">QII", recvall(c, 16))
        if magic != IHAVEOPT:
            raise EOFError
        recvall(c, length)
        if opt == OPT_EXPORT_NAME:
            c.sendall(struct.pack(">QH", size, flags) +
                      (b"" if cflags & 2 else b"\0" * 124))
            return structured
        if opt == OPT_ABORT:
            opt_reply(c, opt, REP_ACK)
            raise EOFError
        if opt == OPT_STRUCTURED_REPLY:
            structured = True
            opt_reply(c, opt, REP_ACK)
        elif opt == 10:                 # SET_META_CONTEXT: none chosen
            opt_reply(c, opt, REP_ACK)
        elif opt in (OPT_INFO, OPT_GO):
            opt_reply(c, opt, REP_INFO, struct.pack(">HQH", 0, size, flags))
            opt_reply(c, opt, REP_ACK)
            if opt == OPT_GO:
                return structured
        else:
            opt_reply(c, opt, REP_ERR_UNSUP)


def simple(c, err, cookie, data=b"", magic=SIMPLE_MAGIC):
    c.sendall(struct.pack(">IIQ", magic, err, cookie) + data)


def structured_reply(c, err, cookie, offset, data):
    if err:
        c.sendall(struct.pack(">IHHQIIH", STRUCT_MAGIC, 1, CHUNK_ERROR,
                              cookie, 6, err, 0))
    elif data:
        c.sendall(struct.pack(">IHHQIQ", STRUCT_MAGIC, 1, CHUNK_OFFSET_DATA,
                              cookie, 8 + len(data), offset) + data)
    else:
        c.sendall(struct.pack(">IHHQI", STRUCT_MAGIC, 1, CHUNK_NONE,
                              cookie, 0))


def hostile_read(c, mode, cookie, data):
    """The bad reply to a read; False when the connection is to end."""
    if mode == "badmagic":
        simple(c, 0, cookie, data, magic=0x12345678)
    elif mode == "badcookie":
        simple(c, 0, cookie ^ 0x5A5A5A5A5A5A5A5A, data)
    elif mode == "short":
        simple(c, 0, cookie, data[:len(data) // 2])
        return False
    elif mode == "dup":
        simple(c, 0, cookie, data)
        simple(c, 0, cookie, data)
    elif mode == "long":
        simple(c, 0, cookie, data + b"\xee" * 4096)
    elif mode == "err999":
        simple(c, 999, cookie)
    return True


def transmission(c, structured, n):
    while True:
        magic, flags, cmd, cookie, offset, length = struct.unpack(
            ">IHHQQI", recvall(c, 28))
        if magic != REQ_MAGIC:
            raise EOFError
        kinds = {CMD_READ: ("badmagic", "badcookie", "short", "dup",
                            "long", "err999"),
                 CMD_WRITE: ("enospc", "err999", "early")}.get(cmd, ())
        mode = fault(offset, kinds, structured)
        if mode is not None:
            log("conn %d: %s at %d" % (n, mode, offset))
        if cmd == CMD_DISC:
            return
        if offset + length > size and cmd in (CMD_READ, CMD_WRITE):
            err, data = EINVAL, b""
            if cmd == CMD_WRITE:
                recvall(c, length)
        elif cmd == CMD_READ:
            with lock:
                data = bytes(disk[offset:offset + length])
            err = 0
            if mode is not None:
                if not hostile_read(c, mode, cookie, data):
                    return
                continue
        elif cmd == CMD_WRITE:
            if mode == "early":
                simple(c, 0, cookie)
            payload = recvall(c, length)
            data = b""
            if mode in ("enospc", "err999"):
                err = 28 if mode == "enospc" else 999
            else:
                err = 0
                with lock:
                    disk[offset:offset + length] = payload
            if mode == "early":
                continue
        else:
            err, data = 0, b""          # flush (and anything else)
        if structured:
            structured_reply(c, err, cookie, offset, data)
        else:
            simple(c, err, cookie, data)


def serve(c, n):
    try:
        structured = handshake(c)
        log("conn %d: transmission, structured=%d" % (n, structured))
        transmission(c, structured, n)
    except (EOFError, OSError):
        pass
    finally:
        c.close()


def main():
    global nconn
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path + ".tmp")
    s.listen(16)
    os.rename(sock_path + ".tmp", sock_path)  # ready once it is there
    while True:
        c, _ = s.accept()
        nconn += 1
        threading.Thread(target=serve, args=(c, nconn), daemon=True).start()


main()
