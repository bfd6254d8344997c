"""The kernel's own limit on new TCP connections: a bare connect() + close() loop, no exporter.

``python -m bench.ceiling --seconds 5 127.0.0.1:8080 [127.0.0.1:8081 ...]`` prints one JSON
line: connections per second and CPU microseconds per connection. The targets are taken in
turn, as the tcp throughput rows take them. On loopback most of a connect() is kernel time
(both ends of the handshake run in the caller's system call), and once every local port to a
destination sits in TIME_WAIT each connect() first searches for one it may reuse: this loop
shows how many connections a second that leaves for *any* prober, whatever it is written in.
It runs in its own process so its CPU time is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import time

from bench.common import python_env

CONNECT_TIMEOUT = 1.0  # a full accept queue drops SYNs: never wait the kernel's minutes


def connect_loop(targets: list[tuple[str, int]], seconds: float) -> dict[str, float]:
    made = failed = 0
    started_cpu = _cpu()
    started = time.monotonic()
    deadline = started + seconds
    new_socket = socket.socket
    while time.monotonic() < deadline:
        for _ in range(50):  # the clock is read every 50 connections, not every one
            for address in targets:
                sock = new_socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(CONNECT_TIMEOUT)
                if sock.connect_ex(address) == 0:
                    made += 1
                else:
                    failed += 1
                sock.close()
    elapsed = time.monotonic() - started
    cpu = _cpu() - started_cpu
    return {"connects_per_second": made / elapsed, "connects": made, "failed": failed,
            "cpu_us_per_connect": cpu / made * 1e6 if made else 0.0}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(targets: list[str], seconds: float) -> dict[str, float]:
    """Run the loop in a child process (this one may hold other threads and sockets)."""
    done = subprocess.run([sys.executable, "-m", "bench.ceiling", "--seconds", str(seconds),
                           *targets], capture_output=True, text=True, timeout=seconds + 30,
                          check=False, env=python_env())
    if done.returncode != 0:
        raise RuntimeError(f"bench.ceiling failed ({done.returncode}): {done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("targets", nargs="+", type=_address, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    print(json.dumps(connect_loop(args.targets, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
