"""``python -m bench.slowserver PORT``: an HTTP target on 127.0.0.1 that answers every request
exactly ``DELAY`` seconds after the request's bytes reached its socket.

"Reached" is the kernel's receive timestamp of the request (``SO_TIMESTAMPNS``), so the time the
server itself takes to accept, start a thread and parse is inside the 100 ms, not added to it.
Each connection has its own thread, which sleeps (clock_nanosleep) until just before the
deadline and spins the rest. As root the process runs under SCHED_FIFO, so a busy machine does
not delay its wake-ups; the interpreter switches threads every 50 us instead of every 5 ms, so a
thread that spins cannot hold another past its deadline. ``GET /_delays`` returns, for every
answer, the time from the request's arrival to the answer's send call, so the harness can show
how exact the target itself was.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time

DELAY = 0.100
SPIN = 0.0003  # seconds before the deadline where sleeping gives way to spinning
BODY = b"slow but exact\n"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
MAX_HEAD = 16384
_delays: list[float] = []
_lock = threading.Lock()


def _answer(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + body


def _read_head(conn: socket.socket) -> tuple[bytes, float]:
    """The request head and when its first bytes arrived, on the perf_counter clock."""
    head = b""
    arrived = 0.0
    while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
        data, ancillary, _flags, _addr = conn.recvmsg(4096, 256)
        now_real, now_perf = time.time(), time.perf_counter()
        if not data:
            break
        if not arrived:
            arrived = now_perf
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", payload[:16])
                    arrived = now_perf - (now_real - (seconds + nanoseconds / 1e9))
        head += data
    return head, arrived


def _serve(conn: socket.socket) -> None:
    with conn:
        head, arrived = _read_head(conn)
        if not head.startswith(b"GET "):
            return
        if head.startswith(b"GET /_delays "):
            with _lock:
                body = json.dumps(_delays[-10000:]).encode()
            conn.sendall(_answer(body))
            return
        deadline = arrived + DELAY
        while (left := deadline - time.perf_counter()) > SPIN:
            time.sleep(left - SPIN)
        while time.perf_counter() < deadline:
            pass  # the last fraction of a millisecond: spin, a sleep could overshoot
        reply = _answer(BODY)
        sent = time.perf_counter()
        conn.sendall(reply)
        with _lock:
            _delays.append(sent - arrived)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            while conn.recv(4096):  # wait for the client to close first: no RST on our side
                pass


def main() -> None:
    port = int(sys.argv[1])
    sys.setswitchinterval(0.00005)
    with contextlib.suppress(PermissionError, OSError):
        # Ahead of everything else on the machine (root only; threads inherit it), so the
        # target's own timing stays exact on a busy host. Both exporters are measured against
        # the same target.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    with socket.create_server(("127.0.0.1", port), backlog=256) as server:
        server.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
