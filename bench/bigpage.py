"""``python -m bench.bigpage``: the figures of docs/security.md, "Hostile upstreams, second
round": peak RSS and scrape time with the largest status page now accepted, and the time to
reload the largest config accepted.

- page: a loopback server answers a page of ``max_body_bytes`` (5 MiB by default) made of as
  many components and open incidents as fit. The exporter polls it with the default limits
  (1000 components, 100 incidents); the bench scrapes ``/metrics`` and reports the exporter's
  peak RSS (VmHWM) and the scrape times.
- reload: the exporter starts small, its config is replaced by one of about MAX_NODES values
  (about 33,000 tcp checks), and ``POST /-/reload`` is timed while ``/-/healthy`` is asked
  every 20 ms; the slowest of those answers is the longest the event loop stood still.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import http_get, http_post, start_exporter  # noqa: E402

from exporter.config import MAX_NODES  # noqa: E402

MAX_BODY = 5 * 1024 * 1024


def page_body(limit: int = MAX_BODY) -> tuple[bytes, int, int]:
    """A page as close to ``limit`` bytes as whole components and incidents allow."""
    components, incidents = [], []
    size, i = 200, 0
    while True:
        row = {"id": f"c{i:07d}", "name": f"Component {i} in region {i % 97}",
               "status": ("operational", "degraded_performance")[i % 2], "group_id": None}
        incident = {"id": f"i{i:07d}", "name": f"Incident {i}", "status": "investigating",
                    "impact": "minor", "components": [{"id": row["id"]}]}
        grow = len(json.dumps(row)) + (len(json.dumps(incident)) if i % 10 == 0 else 0) + 4
        if size + grow > limit:
            break
        components.append(row)
        if i % 10 == 0:
            incidents.append(incident)
        size += grow
        i += 1
    doc = {"page": {"id": "big", "name": "Big", "updated_at": "2026-01-01T00:00:00Z"},
           "status": {"indicator": "minor"}, "components": components, "incidents": incidents}
    body = json.dumps(doc).encode()
    return body, len(components), len(incidents)


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_page(workdir: Path, scrapes: int, limits: str) -> dict[str, float]:
    body, components, incidents = page_body()
    server = serve(body)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    exporter = start_exporter(workdir, f"upstreams:\n  big:\n    statuspage: "
                                       f"{{url: \"{url}\", interval: 10s, timeout: 9s{limits}}}\n")
    try:
        exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="big") == 1,
                          timeout=60)
        times, size = [], 0
        for _ in range(scrapes):
            started = time.perf_counter()
            status, text, _ = http_get(exporter.url + "/metrics", timeout=30)
            times.append((time.perf_counter() - started) * 1000)
            size = len(text)
            assert status == 200
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        return {"body_bytes": len(body), "components_on_page": components,
                "incidents_on_page": incidents, "series": series, "metrics_bytes": size,
                "scrape_ms_median": statistics.median(times), "scrape_ms_max": max(times),
                "peak_rss_mib": peak_rss_mib(exporter.proc.pid)}
    finally:
        exporter.stop()
        server.shutdown()


def largest_config(port: int) -> str:
    """About as many checks as MAX_NODES allows (each check is 6 values with its path)."""
    rows = [f"      - {{name: c{i}, kind: tcp, target: \"127.0.0.1:{port}\", interval: 1h}}"
            for i in range(MAX_NODES // 6 - 100)]
    return "upstreams:\n  big:\n    checks:\n" + "\n".join(rows) + "\n"


def bench_reload(workdir: Path) -> dict[str, float]:
    exporter = start_exporter(workdir, "control:\n  - {name: t, kind: tcp, target: "
                                       "\"127.0.0.1:9\", interval: 1h}\n")
    try:
        assert exporter.config_path is not None
        text = largest_config(9)
        exporter.config_path.write_text(text)
        result: list[tuple[int, str]] = []
        thread = threading.Thread(target=lambda: result.append(
            http_post(exporter.url + "/-/reload", timeout=600)))
        started = time.perf_counter()
        thread.start()
        slowest = 0.0
        while thread.is_alive():
            asked = time.perf_counter()
            http_get(exporter.url + "/-/healthy", timeout=60)
            slowest = max(slowest, time.perf_counter() - asked)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        assert result and result[0][0] == 200, result
        return {"config_bytes": len(text.encode()), "checks": text.count("kind: tcp"),
                "reload_seconds": seconds, "healthy_slowest_ms": slowest * 1000,
                "peak_rss_mib": peak_rss_mib(exporter.proc.pid)}
    finally:
        exporter.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bigpage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--only", choices=["page", "reload"])
    parser.add_argument("--max-components", type=int, help="the page's limit (default 1000)")
    parser.add_argument("--max-incidents", type=int, help="the page's limit (default 100)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bigpage-") as tmp:
        if args.only in (None, "page"):
            limits = "".join(f", {key}: {value}" for key, value in (
                ("max_components", args.max_components), ("max_incidents", args.max_incidents))
                if value)
            for key, value in bench_page(Path(tmp), args.scrapes, limits).items():
                print(f"page    {key:<22} {value:,.1f}")
        if args.only in (None, "reload"):
            for key, value in bench_reload(Path(tmp)).items():
                print(f"reload  {key:<22} {value:,.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
