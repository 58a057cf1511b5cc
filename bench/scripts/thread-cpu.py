#!/usr/bin/env python3
"""CPU time and context switches per request, per thread of a running gateway, while N
sequential keep-alive GET requests go through its unix socket; also the requests' p50/p99.
Threads with the same name up to a digit (sled-io-3, sled-io-4, ...) are summed. Linux only
(/proc). Used for the per-thread figures in BENCHMARKS.md.

Usage: thread-cpu.py PID SOCKET PATH [N=300]"""
import collections
import os
import socket
import sys
import time


def snapshot(pid):
    out = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            base = f"/proc/{pid}/task/{tid}"
            name = open(f"{base}/comm").read().strip()
            name = "".join(c for c in name if not c.isdigit()).rstrip("-")
            fields = open(f"{base}/stat").read().rsplit(")", 1)[1].split()
            out[(name, "cpu")] += int(fields[11]) + int(fields[12])
            for line in open(f"{base}/status"):
                if "ctxt_switches" in line:
                    out[(name, "cs")] += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return out


def main():
    pid, sock_path, path = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rb")
    req = f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()

    def one():
        s.sendall(req)
        f.readline()
        length, chunked = 0, False
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
            if k.lower() == "transfer-encoding" and "chunked" in v:
                chunked = True
        if not chunked:
            f.read(length)
            return
        while True:
            size = int(f.readline().strip(), 16)
            f.read(size + 2)
            if size == 0:
                return

    for _ in range(20):
        one()
    before = snapshot(pid)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    after = snapshot(pid)
    times.sort()
    print(f"{path}: {n} requests, p50 {times[n // 2] * 1e6:.0f} us, p99 {times[int(n * 0.99)] * 1e6:.0f} us")
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    for name in sorted({k[0] for k in after}):
        cpu = (after[(name, "cpu")] - before[(name, "cpu")]) * tick / n
        cs = (after[(name, "cs")] - before[(name, "cs")]) / n
        if cpu or cs:
            print(f"  {name:18} {cpu:6.0f} us CPU/request  {cs:5.2f} context switches/request")


if __name__ == "__main__":
    main()
