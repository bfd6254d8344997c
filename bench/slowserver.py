"""``python -m bench.slowserver PORT``: an HTTP target on 127.0.0.1 that answers every request
exactly ``DELAY`` seconds after it has read it.

One thread per connection and ``time.sleep`` (clock_nanosleep) then a short spin keep the server's own error to
tens of microseconds, far below what the benchmark looks for. ``GET /_delays`` returns the
delays actually slept, so the harness can show the target itself was on time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = 0.100
SPIN = 0.0005  # seconds before the deadline where sleeping gives way to spinning
BODY = b"slow but exact\n"
_slept: list[float] = []
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/_delays":
            with _lock:
                body = json.dumps(_slept[-10000:]).encode()
            self._reply(body)
            return
        start = time.perf_counter()
        end = start + DELAY
        while (left := end - time.perf_counter()) > SPIN:
            time.sleep(left - SPIN)
        while time.perf_counter() < end:
            pass  # the last fraction of a millisecond: spin, sleeping could overshoot
        with _lock:
            _slept.append(time.perf_counter() - start)
        self._reply(BODY)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1])
    with contextlib.suppress(PermissionError):
        # Ahead of everything else on the machine, so that the target's own timing stays exact
        # on a busy host (root only); both exporters are measured against the same target.
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
