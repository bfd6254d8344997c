"""In-process: how /metrics render time and memory grow with the number of series.

``python -m bench.render [CHECKS ...]`` fills a real Runtime (config, state store, verdicts,
collector) with CHECKS tcp checks whose results come from one real tcp probe of a loopback
listener, then times a render (the collector's families written by prometheus_client) after
every check ran since the last scrape, as when Prometheus scrapes every 15 s ("cold"), and
one after nothing ran ("warm"). It also times the collect alone, cold and warm: the part of
a scrape that holds the event loop (web.metrics writes in a thread).
``--history`` also records a full run history per check and reports the state's steady-state memory with tracemalloc.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
import tracemalloc
from dataclasses import dataclass, replace

from exporter.config import load_text
from exporter.engine.scheduler import Scheduler
from exporter.runtime import Runtime, new_session

HISTORY = 100  # runs per check before the state counts as steady (counters, histograms, caches)


@dataclass
class RenderFigures:
    checks: int
    series: int
    bytes: int
    cold_ms: float  # every check has a new result
    warm_ms: float  # no check ran since the previous render
    loop_cold_ms: float = 0.0  # collect() alone (on the event loop), every check ran
    loop_warm_ms: float = 0.0  # collect() alone, nothing ran
    state_bytes_per_check: float | None = None  # with a full run history, from tracemalloc
    history: int = HISTORY


def config_text(checks: int, port: int, upstreams: int = 10) -> str:
    lines = ["defaults: {interval: 15s, timeout: 5s}", "upstreams:"]
    per = max(1, checks // upstreams)
    for i in range(checks):
        if i % per == 0:
            lines += [f"  u{i // per}:", "    checks:"]
        lines.append(f'      - {{name: t{i}, kind: tcp, target: "127.0.0.1:{port}"}}')
    return "\n".join(lines) + "\n"


async def _fill(checks: int, runs: int) -> Runtime:
    server = await asyncio.start_server(_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    text = config_text(checks, port)
    runtime = Runtime(lambda: load_text(text, "<bench>"))
    runtime.state.sync(runtime.config)
    session = new_session()
    try:
        scheduler = Scheduler(runtime.state, session, secrets=runtime.secrets)
        first = next(iter(runtime.state.checks.values())).check
        template = await scheduler.run_once(first, {})
        assert template.success, template.error
        rng = random.Random(1)
        for _ in range(runs):
            for state in runtime.state.checks.values():
                seconds = rng.uniform(0.0001, 0.02)
                runtime.state.record(state.check, replace(template, duration_seconds=seconds,
                                                          finished_at=time.time()))
    finally:
        await session.close()
        server.close()
    return runtime


async def _hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def _touch_all(runtime: Runtime) -> None:
    """Record one more run for every check, as 15 s of background checks would."""
    for state in runtime.state.checks.values():
        last = state.last
        assert last is not None
        runtime.state.record(state.check, replace(last, finished_at=time.time()))


def measure(checks: int, rounds: int = 3, history: bool = False) -> RenderFigures:
    runtime = asyncio.run(_fill(checks, 2))
    body = runtime.metrics()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    cold, warm, loop_cold, loop_warm = [], [], [], []
    for _ in range(rounds):
        _touch_all(runtime)
        gc.collect()
        start = time.perf_counter()
        runtime.metrics()
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        runtime.metrics()
        warm.append(time.perf_counter() - start)
        _touch_all(runtime)
        gc.collect()
        for into in (loop_cold, loop_warm):
            start = time.perf_counter()
            runtime.refresh()
            list(runtime.collector.collect())
            into.append(time.perf_counter() - start)
    figures = RenderFigures(checks, series, len(body), statistics.median(cold) * 1000,
                            statistics.median(warm) * 1000, statistics.median(loop_cold) * 1000,
                            statistics.median(loop_warm) * 1000)
    if history:
        figures.state_bytes_per_check = state_memory(min(checks, 2000))
    return figures


def state_memory(checks: int) -> float:
    """Bytes per check held by the state store once every check has
    run HISTORY times (the steady state of a long-running exporter)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    runtime = asyncio.run(_fill(checks, HISTORY))
    runtime.metrics()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del runtime
    return (after - before) / checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checks", nargs="*", type=int, default=[32, 320, 3200, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(n, args.rounds, args.history and n == max(args.checks)) for n in args.checks]
    if args.json:
        print(json.dumps([r.__dict__ for r in rows]))
        return
    for r in rows:
        extra = (f"  state {r.state_bytes_per_check / 1024:.1f} KiB/check"
                 if r.state_bytes_per_check else "")
        print(f"{r.checks:>6} checks {r.series:>8} series {r.bytes / 1e6:7.1f} MB  "
              f"cold {r.cold_ms:8.1f} ms  warm {r.warm_ms:7.1f} ms  "
              f"loop cold {r.loop_cold_ms:6.1f} ms  warm {r.loop_warm_ms:5.1f} ms{extra}")


if __name__ == "__main__":
    main()
