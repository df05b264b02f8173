#!/usr/bin/env python3
# tests/nbdkit-http-server.py DIR PORTFILE: serve DIR over HTTP on
# 127.0.0.1 with byte-range requests (nbdkit's curl plugin needs them and
# python3 -m http.server has none), on a free port written to PORTFILE.
# Stops when its parent test kills it, by PID.
import http.server
import os
import re
import sys


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass                        # the test's log stays readable

    def send_head(self):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if m is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        end = min(end, size - 1)
        if start > end:
            self.send_error(416)
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.remaining = end - start + 1
        return f

    def end_headers(self):
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def copyfile(self, source, outputfile):
        n = getattr(self, "remaining", None)
        if n is None:
            return super().copyfile(source, outputfile)
        while n > 0:
            chunk = source.read(min(n, 65536))
            if not chunk:
                break
            outputfile.write(chunk)
            n -= len(chunk)


def main():
    directory, portfile = sys.argv[1], sys.argv[2]
    os.chdir(directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()


if __name__ == "__main__":
    main()
