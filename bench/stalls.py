"""``python -m bench.stalls [--seconds N] [--checks N]``: what holds up the exporter's event loop.

Runs the exporter in this process on Python's own event loop (uvloop's C loop cannot be
instrumented) with the accuracy stage's load: 2,000 background checks against nginx plus 50 of
the 100 ms target, and a /metrics scrape every 5 s. Every callback that runs longer than 1 ms
after the warm-up is counted by what it was (a check's run by kind, the verdict ticker, an
HTTP request), with its wall and CPU time; so is every garbage collection over 1 ms. Any of
these delays every probe timing that falls due while it runs, so this is the list to shorten
for goal 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench import accuracy
from bench.common import FULL, Context
from bench.procs import Procs, free_port
from bench.targets import start_nginx, start_slow

THRESHOLD = 0.001  # seconds: a callback or collection longer than this is a stall
WARMUP = 20.0  # seconds: the first round and its one-off collection are not steady state


class Recorder:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.count: Counter[str] = Counter()
        self.wall: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        self.worst: list[tuple[float, str]] = []
        self._gc_start = (0.0, 0.0)

    def steady(self) -> bool:
        return time.perf_counter() - self.started > WARMUP

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.count[name] += 1
        self.wall[name] += wall
        self.cpu[name] += cpu
        self.worst.append((wall, name))

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = (time.perf_counter(), time.thread_time())
            return
        wall = time.perf_counter() - self._gc_start[0]
        if self.steady() and wall > THRESHOLD:
            self.add(f"garbage collection, generation {info['generation']}", wall,
                     time.thread_time() - self._gc_start[1])


def _name(callback: Any) -> str:
    task = getattr(callback, "__self__", None)
    coro = task.get_coro() if task is not None and hasattr(task, "get_coro") else None
    if coro is None:
        return getattr(callback, "__qualname__", repr(callback))
    name: str = getattr(coro, "__qualname__", repr(coro))
    frame = getattr(coro, "cr_frame", None)
    check = frame.f_locals.get("check") if frame is not None else None
    return f"{name} ({check.kind})" if check is not None else name


def instrument(recorder: Recorder) -> None:
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        original(handle)
        wall = time.perf_counter() - wall
        if wall > THRESHOLD and recorder.steady():
            recorder.add(_name(handle._callback), wall,  # type: ignore[attr-defined]
                         time.thread_time() - cpu)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    gc.callbacks.append(recorder.gc_callback)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stalls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=50.0, help="run time, warm-up included")
    parser.add_argument("--checks", type=int, default=FULL.accuracy_background)
    args = parser.parse_args(argv)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-stalls-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    with Procs(workdir) as procs:
        nginx = start_nginx(procs)
        _, slow_url = start_slow(procs)
        sizes = dataclasses.replace(FULL, accuracy_background=args.checks)
        config = workdir / "stalls.yml"
        config.write_text(accuracy.config(Context(procs, sizes, nginx, None), slow_url))
        port = free_port()

        def scrape_every_5s() -> None:
            time.sleep(8)
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    r.read()
                time.sleep(accuracy.SCRAPE_EVERY)

        def stop_later() -> None:
            time.sleep(args.seconds)
            os.kill(os.getpid(), 2)

        threading.Thread(target=scrape_every_5s, daemon=True).start()
        threading.Thread(target=stop_later, daemon=True).start()
        instrument(recorder)
        from exporter import cli

        # SIGINT ends the run: cli.main returns after a graceful shutdown.
        cli.main([f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                  "--log.level=warn", "--runtime.event-loop=asyncio"])
    window = max(0.0, args.seconds - WARMUP)
    print(f"stalls over {THRESHOLD * 1000:g} ms in {window:.0f} s of steady state "
          f"({args.checks:,} background checks):")
    print(f"{'count':>6} {'wall ms':>9} {'cpu ms':>9}  what")
    for name, count in recorder.count.most_common():
        print(f"{count:>6} {recorder.wall[name] * 1000:>9.1f} {recorder.cpu[name] * 1000:>9.1f}  "
              f"{name}")
    busy = sum(recorder.wall.values())
    print(f"the loop was stalled {busy / window * 100 if window else 0:.2f} % of the time; "
          "longest: " + ", ".join(f"{w * 1000:.1f} ms {n}"
                                  for w, n in sorted(recorder.worst, reverse=True)[:5]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
