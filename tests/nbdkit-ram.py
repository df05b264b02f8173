# tests/nbdkit-ram.py: a RAM disk for nbdkit's python plugin (API
# version 2), run in process by the nbdkit leaf (tests/test-nbdkit-lang.sh).
# Parameter size=BYTES (default 1 MiB); reads of the last 4 KiB fail
# with EIO through nbdkit.set_error, so the test sees a plugin error.
import errno

import nbdkit

API_VERSION = 2
disk = bytearray(1024 * 1024)


def config(key, value):
    global disk
    if key != "size":
        raise RuntimeError("unknown parameter '%s'" % key)
    disk = bytearray(int(value))


def open(readonly):
    return 1


def get_size(h):
    return len(disk)


def pread(h, buf, offset, flags):
    if offset + len(buf) > len(disk) - 4096:
        nbdkit.set_error(errno.EIO)
        raise RuntimeError("the last 4 KiB are unreadable")
    buf[:] = disk[offset:offset + len(buf)]


def pwrite(h, buf, offset, flags):
    disk[offset:offset + len(buf)] = buf


def flush(h, flags):
    pass
