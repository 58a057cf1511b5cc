#!/usr/bin/env python3
"""GET /_ping requests/s through a gateway's unix socket: N processes, each one keep-alive
connection sending requests back to back for D seconds. A rough end-to-end figure (the
client shares the machine's cores with the gateway); used for the audit figures in
BENCHMARKS.md. Usage: ping-load.py SOCKET [PROCS=4] [SECONDS=10]"""
import multiprocessing as mp
import socket
import sys
import time

REQ = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"


def worker(path, seconds, out):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    n, buf, end = 0, b"", time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(REQ)
        # /_ping answers "OK" with a Content-Length: read until the body is complete.
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if len(rest) >= length:
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise SystemExit(f"unexpected answer: {head[:80]!r}")
                    buf = rest[length:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            buf += chunk
        n += 1
    out.put(n)


if __name__ == "__main__":
    path = sys.argv[1]
    procs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10
    q = mp.Queue()
    ps = [mp.Process(target=worker, args=(path, seconds, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    print(f"{total} requests in {seconds:.0f} s over {procs} connections: {total / seconds:,.0f} requests/s")
