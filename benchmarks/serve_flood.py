#!/usr/bin/env python3
"""Attacks a run served by `fum run --serve` the way a hostile client without the token can, for
benchmarks/serve_flood.sh: FLOODERS connections send every kind of read and refused command as
fast as the server takes them (and read everything sent back), while SLOW connections never
finish their Hello (three bytes of a length, then nothing; reconnecting when cut off).
Runs until the server goes away, then prints what it did.

The wire format is docs/viewer.md's "Wire protocol": a u32 little-endian length, then the
postcard encoding (varint variant indices and integers).
Usage: serve_flood.py HOST:PORT [flooders, default 4] [slow connections, default 50]"""
import socket
import struct
import sys
import threading


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def message(payload):
    return struct.pack("<I", len(payload)) + payload


def request(index, fields=b""):
    return message(b"\x01" + varint(index) + fields)  # ClientMessage::Request(Request::index)


def ids(n):
    return varint(n) + b"".join(varint(i) for i in range(n))


HELLO = message(b"\x00" + varint(1) + b"\x00")  # Hello { protocol: 1, token: None }
REQUESTS = b"".join([
    request(0),  # Info
    request(1, ids(1024)),  # Membrane(0..1024)
    request(2, ids(16)),  # Watch(0..16): as many as the server traces for clients without the token
    request(3, varint(0) + varint(1024)),  # WeightHistogram { projection: 0, bins: 1024 }
    request(4),  # Pause (refused: no token)
    request(8, varint(0) + struct.pack("<d", 0.0)),  # SetPoissonRate (refused)
    message(b"\xff\xff\xff"),  # does not decode
])

stats = {"flood_bytes_sent": 0, "flood_bytes_received": 0, "slow_connections": 0, "refused": 0}
lock = threading.Lock()


def count(key, n=1):
    with lock:
        stats[key] += n


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)))


def drain(sock):
    while True:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return
        if not data:
            return
        count("flood_bytes_received", len(data))


def flood(addr):
    sock = connect(addr)
    sock.sendall(HELLO)
    reader = threading.Thread(target=drain, args=(sock,), daemon=True)
    reader.start()
    try:
        while True:
            sock.sendall(REQUESTS)
            count("flood_bytes_sent", len(REQUESTS))
    except OSError:
        pass
    reader.join()


def slow(addr):
    while True:
        try:
            sock = connect(addr)
        except OSError:
            return  # the run has ended
        count("slow_connections")
        try:
            sock.sendall(b"\x10\x00\x00")
            if not sock.recv(1):
                pass  # closed by the server: at its handshake deadline, or beyond its cap
        except OSError:
            count("refused")
        sock.close()


def main():
    addr = sys.argv[1]
    flooders = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    slows = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    threads = [threading.Thread(target=slow, args=(addr,)) for _ in range(slows)]
    threads += [threading.Thread(target=flood, args=(addr,)) for _ in range(flooders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(" ".join(f"{k}={v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
