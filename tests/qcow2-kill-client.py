#!/usr/bin/env python3
# tests/qcow2-kill-client.py: test-qcow2-kill.sh's client and checker.
# A bare NBD client (fixed newstyle, NBD_OPT_GO, simple replies: nothing
# to install) writes patterns (each 512-byte sector names the write and
# the sector), write-zeroes and trims at scattered offsets, up to 8 at
# once, never two over one sector, with a flush every few; it keeps, per
# sector, what a crash may leave (what the last flush or FUA write made
# durable, and everything sent since), and kill -9s the daemon at the
# moment MODE names (during-writes, during-flush, after-flush,
# after-fua).
#   run SOCK EXPORT PID SIZE SEED MODE MODEL   (MODEL: a JSON file out)
#   check RAW MODEL        the image, converted to raw, against MODEL
#   header IMAGE PID WANT TIMEOUT
#       kill -9 PID once IMAGE's header names a backing file ending in
#       WANT ('': none); exit 1 if it does not within TIMEOUT seconds
import json, os, random, signal, socket, struct, sys, time

SECTOR = 512


def sector_bytes(wid, s):
    return struct.pack('<QQ', wid, s) + bytes([wid % 251 + 1]) * 496


def payload(wid, off, n):
    s0 = off // SECTOR
    return b''.join(sector_bytes(wid, s0 + i) for i in range(n // SECTOR))


class Nbd:
    def __init__(self, path, name):
        self.sk = socket.socket(socket.AF_UNIX)
        self.sk.connect(path)
        hs = self.recv(18)
        assert hs[:16] == b'NBDMAGICIHAVEOPT', hs
        self.sk.sendall(struct.pack('>I', 3))     # fixed newstyle, no zeroes
        nm = name.encode()
        data = struct.pack('>I', len(nm)) + nm + struct.pack('>H', 0)
        self.sk.sendall(b'IHAVEOPT' + struct.pack('>II', 7, len(data)) + data)
        while True:
            _, _, rtype, rlen = struct.unpack('>QIII', self.recv(20))
            body = self.recv(rlen)
            if rtype == 1:                      # NBD_REP_ACK
                break
            assert rtype & 0x80000000 == 0, 'NBD_OPT_GO refused'
            if rtype == 3 and struct.unpack('>H', body[:2])[0] == 0:
                self.size = struct.unpack('>Q', body[2:10])[0]
        self.handle = 0
        self.pending = {}

    def recv(self, n):
        b = b''
        while len(b) < n:
            c = self.sk.recv(n - len(b))
            if not c:
                raise EOFError('server closed the connection')
            b += c
        return b

    def send(self, cmd, off, n, flags=0, data=b'', tag=None):
        self.handle += 1
        self.pending[self.handle] = tag
        self.sk.sendall(struct.pack('>IHHQQI', 0x25609513, flags, cmd,
                                    self.handle, off, n) + data)
        return self.handle

    def reply(self):
        magic, err, h = struct.unpack('>IIQ', self.recv(16))
        assert magic == 0x67446698, hex(magic)
        tag = self.pending.pop(h)
        if err != 0:
            raise OSError(err, 'NBD error %d on %s' % (err, tag))
        return tag


class Model:
    """Per sector: `stable`, what a crash may leave of what a flush (or
    FUA) made durable; `since`, what was written after it (acknowledged
    or in flight): a crash may leave any of them."""

    def __init__(self):
        self.stable = {}                # sector -> set of write ids
        self.cur = {}                   # sector -> set: what reads give
        self.since = {}

    def written(self, tag):
        """Sent: may land from now on."""
        off, n, kind, wid, _ = tag
        for s in range(off // SECTOR, (off + n) // SECTOR):
            self.since.setdefault(s, set()).add(wid)

    def acked(self, tag):
        off, n, kind, wid, fua = tag
        for s in range(off // SECTOR, (off + n) // SECTOR):
            if kind == 'trim':          # old data or zeroes
                self.cur[s] = self.cur.get(s, {0}) | {0}
            else:
                self.cur[s] = {wid}
            if fua:
                self.stable[s] = set(self.cur[s])
                self.since.pop(s, None)

    def flushed(self):
        for s in self.since:
            self.stable[s] = set(self.cur.get(s, {0}))
        self.since = {}

    def dump(self, path):
        allowed = {}
        for s in set(self.stable) | set(self.since):
            allowed[s] = sorted(self.stable.get(s, {0}) |
                                self.since.get(s, set()))
        with open(path, 'w') as f:
            json.dump(allowed, f)


def run(sock, export, pid, size, seed, mode, model_path):
    rnd = random.Random(seed)
    nbd = Nbd(sock, export)
    m = Model()
    wid = 0
    inflight = []                       # tags: (off, n, kind, wid, fua)
    ops = rnd.randint(150, 600)         # before the kill
    flush_every = rnd.choice([4, 8, 16, 40])
    busy = []

    def one_reply():
        tag = nbd.reply()
        inflight.remove(tag)
        m.acked(tag)

    def drain():
        while inflight:
            one_reply()

    def flush():
        drain()
        nbd.send(3, 0, 0)
        nbd.reply()
        m.flushed()

    def overlaps(off, n):
        return any(off < t[0] + t[1] and t[0] < off + n for t in inflight)

    for i in range(ops):
        kind = rnd.random()
        # Scattered; some again where earlier ones went (in place, COW).
        n = rnd.choice([512, 1536, 4096, 4096, 8192, 65536, 131072])
        if rnd.random() < 0.3 and busy:
            off = rnd.choice(busy)
        else:
            off = rnd.randrange(0, size - n) // SECTOR * SECTOR
        off = min(off, size - n)
        busy.append(off)
        # Up to 8 in flight, never two over one sector (their order
        # would be the server's).
        while overlaps(off, n) or len(inflight) >= 8:
            one_reply()
        fua = rnd.random() < 0.05
        flags = 1 if fua else 0
        if kind < 0.75:
            wid += 1
            tag = (off, n, 'write', wid, fua)
            m.written(tag)
            nbd.send(1, off, n, flags, payload(wid, off, n), tag)
        elif kind < 0.87:
            # Write-zeroes, with NBD_CMD_FLAG_NO_HOLE or without.
            tag = (off, n, 'zero', 0, fua)
            m.written(tag)
            nbd.send(6, off, n, flags | (2 if rnd.random() < 0.5 else 0),
                     b'', tag)
        else:
            tag = (off, n, 'trim', 0, fua)
            m.written(tag)
            nbd.send(4, off, n, flags, b'', tag)
        inflight.append(tag)
        if i % flush_every == flush_every - 1:
            flush()
    # The kill, at the moment MODE names.
    if mode == 'during-flush':
        drain()
        nbd.send(3, 0, 0)
        time.sleep(rnd.random() * 0.002)
    elif mode == 'after-flush':
        flush()
    elif mode == 'after-fua':
        drain()
        wid += 1
        off = rnd.randrange(0, size - 65536) // SECTOR * SECTOR
        tag = (off, 65536, 'write', wid, True)
        m.written(tag)
        nbd.send(1, off, 65536, 1, payload(wid, off, 65536), tag)
        inflight.append(tag)
        one_reply()
    # else 'during-writes': up to 8 in flight
    m.dump(model_path)                  # what we know before the kill
    os.kill(pid, signal.SIGKILL)
    print('%d ops (%d writes), a flush every %d, killed %s' %
          (ops, wid, flush_every, mode))


def check(raw, model_path):
    with open(model_path) as f:
        allowed = {int(k): v for k, v in json.load(f).items()}
    bad = 0
    with open(raw, 'rb') as f:
        data = f.read()
    zero = bytes(SECTOR)
    for s in range(len(data) // SECTOR):
        got = data[s * SECTOR:(s + 1) * SECTOR]
        ok = allowed.get(s, [0])
        if got == zero:
            wid = 0
        else:
            wid, was = struct.unpack('<QQ', got[:16])
            if got == sector_bytes(wid, was) and was != s:
                wid = 'write %d of sector %d' % (wid, was)
            elif got != sector_bytes(wid, s):
                wid = 'garbage'
        if wid not in ok:
            bad += 1
            if bad <= 10:
                print('sector %d (offset %d): read %s, allowed %s' %
                      (s, s * SECTOR, wid, ok))
    if bad:
        print('%d sectors wrong' % bad)
        sys.exit(1)


def backing_name(fd):
    off, n = struct.unpack('>QI', os.pread(fd, 12, 8))
    return os.pread(fd, n, off).decode(errors='replace') if off else ''


def header(image, pid, want, timeout):
    """kill -9 pid once image's header names a backing file ending in
    want ('': none), or after timeout seconds."""
    fd = os.open(image, os.O_RDONLY)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        name = backing_name(fd)
        if name.endswith(want) if want else name == '':
            os.kill(pid, signal.SIGKILL)
            print('killed once the header named %r' % name)
            return
        time.sleep(0.0002)
    os.kill(pid, signal.SIGKILL)
    print('killed after %s s: the header still names %r' %
          (timeout, backing_name(fd)))
    sys.exit(1)


if __name__ == '__main__':
    a = sys.argv
    if a[1] == 'run':
        try:
            run(a[2], a[3], int(a[4]), int(a[5]), int(a[6]), a[7], a[8])
        except (OSError, EOFError) as e:
            sys.exit('a request failed before the kill: %s' % e)
    elif a[1] == 'check':
        check(a[2], a[3])
    elif a[1] == 'header':
        header(a[2], int(a[3]), a[4], float(a[5]))
