"""Goal 3: 10,000 background checks at a 15 s interval in one process.

tcp checks to nginx's loopback listeners, in 10 upstreams. After the first round (/-/ready),
for one window: Prometheus-like scrapes (gzip) every 5 s, then the scheduler lag over the
window from exporter_scheduler_lag_seconds, the RSS at the end and its peak, and the CPU used.
In-process figures (bench.render) show how render time and memory grow with the series count.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request

from bench.common import Context, Row, bucket_quantile, buckets, median, ms, python_env, scrape
from bench.procs import cpu_seconds, peak_rss_mb, rss_mb, wait_http
from bench.targets import start_ours

LAG_GOAL_MS = 50.0
RSS_GOAL_MB = 200.0
RENDER_GOAL_MS = 100.0
UPSTREAMS = 10


def config(ctx: Context) -> str:
    ports = [ctx.nginx.port, *ctx.nginx.extra_ports]
    checks = ctx.sizes.scale_checks
    per = max(1, checks // UPSTREAMS)
    lines = [f"defaults: {{interval: {ctx.sizes.scale_interval:g}s, timeout: 2s}}", "upstreams:"]
    for i in range(checks):
        if i % per == 0:
            lines += [f"  u{i // per}:", "    checks:"]
        lines.append(f'      - {{name: t{i}, kind: tcp, target: "127.0.0.1:{ports[i % len(ports)]}"}}')
    return "\n".join(lines) + "\n"


def timed_scrape(url: str, gzip: bool) -> tuple[float, int]:
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    request = urllib.request.Request(url + "/metrics", headers=headers)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        size = len(resp.read())
    return time.perf_counter() - start, size


def run(ctx: Context) -> list[Row]:
    s = ctx.sizes
    ours, url = start_ours(ctx.procs, config(ctx), name="ours-scale", timeout=120)
    wait_http(url + "/-/ready", ours, timeout=s.scale_interval * 3 + 60)
    time.sleep(min(5.0, s.scale_interval))  # past the first round's end
    text = scrape(url + "/metrics")
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    before = buckets(text, "exporter_scheduler_lag_seconds")
    cpu0, t0 = cpu_seconds(ours.pid), time.monotonic()
    plain: list[float] = []
    zipped: list[float] = []
    zipped_size = 0
    end = t0 + s.scale_window
    while time.monotonic() < end:
        took, zipped_size = timed_scrape(url, gzip=True)
        zipped.append(took)
        time.sleep(max(0.0, min(5.0, end - time.monotonic())))
    took, _ = timed_scrape(url, gzip=False)
    plain.append(took)
    after_text = scrape(url + "/metrics")
    cpu = (cpu_seconds(ours.pid) - cpu0) / (time.monotonic() - t0)
    after = buckets(after_text, "exporter_scheduler_lag_seconds")
    rss = rss_mb(ours.pid)
    peak = peak_rss_mb(ours.pid)
    ctx.procs.stop(ours)
    lag50 = bucket_quantile(0.5, before, after)
    lag99 = bucket_quantile(0.99, before, after)
    runs = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    n = s.scale_checks
    scrape_ms = median(zipped)
    rows = [
        Row("3 scale", "checks in one process", float(n), None, "",
            note=f"{series:,} series, {len(text) / 1e6:.1f} MB of text, {zipped_size / 1e6:.1f} MB gzipped; "
                 f"{runs:.0f} runs in the {s.scale_window:g} s window"),
        Row("3 scale", "scheduler lag p50", ms(lag50), None, "ms"),
        Row("3 scale", "scheduler lag p99", ms(lag99), None, "ms", f"< {LAG_GOAL_MS:g} ms",
            None if lag99 is None else lag99 * 1000 < LAG_GOAL_MS),
        Row("3 scale", "RSS after the window (peak)", rss, None, "MB", f"< {RSS_GOAL_MB:g} MB",
            rss < RSS_GOAL_MB, f"peak {peak:.0f} MB"),
        Row("3 scale", "GET /metrics with gzip, median", ms(scrape_ms), None, "ms",
            f"< {RENDER_GOAL_MS:g} ms", None if scrape_ms is None else scrape_ms * 1000 < RENDER_GOAL_MS,
            f"{len(zipped)} scrapes; without gzip {plain[0] * 1000:.0f} ms"),
        Row("3 scale", "CPU used by the exporter", cpu * 100, None, "% of a core"),
    ]
    return rows + render_rows(ctx)


def render_rows(ctx: Context) -> list[Row]:
    """bench.render in a fresh process: render time against the number of series."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.render", "--json", "--history",
         *map(str, ctx.sizes.render_checks)],
        capture_output=True, text=True, timeout=600, check=True, cwd=ctx.workdir,
        env=python_env())
    rows = []
    for fig in json.loads(done.stdout):
        note = f"{fig['bytes'] / 1e6:.1f} MB; after every check ran {fig['cold_ms']:.0f} ms"
        if fig.get("state_bytes_per_check"):
            note += (f"; state after {fig['history']} runs per check "
                     f"{fig['state_bytes_per_check'] / 1024:.1f} KiB per check")
        rows.append(Row("3 scale", f"render {fig['series']:,} series ({fig['checks']:,} checks)",
                        fig["warm_ms"], None, "ms", note=note))
    return rows
