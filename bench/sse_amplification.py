# Memory check for event streams (docs/BENCHMARKS.md, "Allocations per publication"): STREAMS
# laptimes event streams that do not read, and one WebSocket client sending COUNT change notices
# of about 50 KB with 50 000 line breaks between their JSON tokens (each becomes about 350 KB of
# `data:` lines); prints the server's RSS growth. Talks to 127.0.0.1 only and stops by itself.
#
#   switchboard --systems laptimes --laptimes-port PORT --rate-per-sec 0 &
#   python3 bench/sse_amplification.py PORT SERVER_PID [COUNT] [STREAMS]
import base64
import os
import socket
import struct
import sys
import time

port, pid = int(sys.argv[1]), int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 10
n_streams = int(sys.argv[4]) if len(sys.argv) > 4 else 200


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


streams = []
for _ in range(n_streams):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    streams.append(s)
time.sleep(1)
for s in streams:
    s.settimeout(5)
    assert b" 200 " in s.recv(4096).split(b"\r\n")[0]

ws = socket.create_connection(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
ws.sendall(
    f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
)
ws.settimeout(5)
assert b" 101 " in ws.recv(4096).split(b"\r\n")[0]

before = rss_kib()
notice = ('{"table":"x"' + "\n" * 50000 + ',"operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z"}').encode()
mask = os.urandom(4)
frame = struct.pack("!BBH", 0x81, 0x80 | 126, len(notice)) + mask
frame += bytes(c ^ mask[i % 4] for i, c in enumerate(notice))
for _ in range(count):
    ws.sendall(frame)
time.sleep(2)
after = rss_kib()
lines = len(notice) + 6 * notice.count(b"\n") + 6
print(
    f"{count} notices of {len(notice)} bytes ({lines} bytes as data: lines) to {n_streams} "
    f"streams that do not read: server RSS {before} -> {after} KiB (+{after - before} KiB)"
)
