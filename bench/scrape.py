"""``python -m bench.scrape [--interval 1h] [CHECKS ...]``: wall time of a real GET /metrics at
CHECKS tcp checks.

Runs the console script on loopback with CHECKS tcp checks of a local listener (10 upstreams,
every ``--interval``), waits for the first round (/-/ready), then times 10 scrapes without and
10 with gzip and prints the medians and answer sizes. At the default 1 h nothing runs during
the scrapes, so each answer is served again unchanged (collector.Bodies); at ``--interval 1s``
checks run between scrapes and each one is written afresh. Everything stays on 127.0.0.1; the
exporter is stopped on the way out.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.render import config_text

SCRAPES = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(checks: int, workdir: Path, interval: str = "1h") -> list[str]:
    out = []
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as target:
        config = workdir / f"scrape-{checks}.yml"
        config.write_text(config_text(checks, target.getsockname()[1]).replace("15s", interval))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        exe = Path(sys.executable).with_name("claude-status-exporter")
        proc = subprocess.Popen([str(exe), f"--config.file={config}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the exporter did not become ready")
                time.sleep(0.1)
            for gzip in (False, True):
                times, size = [], 0
                for _ in range(SCRAPES):
                    headers = {"Accept-Encoding": "gzip"} if gzip else {}
                    request = urllib.request.Request(url + "/metrics", headers=headers)
                    start = time.perf_counter()
                    with urllib.request.urlopen(request, timeout=60) as resp:
                        size = len(resp.read())
                    times.append(time.perf_counter() - start)
                out.append(f"{checks:>6} checks every {interval}, {'gzip' if gzip else 'plain'}: median "
                           f"{statistics.median(times) * 1000:.1f} ms, {size / 1000:,.0f} kB")
        finally:
            proc.terminate()
            proc.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checks", nargs="*", type=int, default=[100, 1000])
    parser.add_argument("--interval", default="1h", help="the checks' interval (default 1h)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scrape-") as tmp:
        for checks in args.checks:
            print("\n".join(measure(checks, Path(tmp), args.interval)))


if __name__ == "__main__":
    main()
