"""``python -m exporter.simulator --scenario=NAME --listen=127.0.0.1:PORT``: the simulator alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from exporter.simulator.server import DEFAULT_CYCLE_SECONDS, UnknownScenario, serve


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.simulator",
                                     description="Fake status page and fake APIs on loopback.")
    parser.add_argument("--scenario", default="operational")
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 10530),
                        help="HOST:PORT (default 127.0.0.1:10530)")
    parser.add_argument("--cycle", default="", help="comma-separated scenarios to step through")
    parser.add_argument("--cycle-seconds", type=float, default=DEFAULT_CYCLE_SECONDS)
    parser.add_argument("--slow-seconds", type=float, default=12.0,
                        help="delay of the slow_page scenario")
    parser.add_argument("--retry-after", type=int, default=30,
                        help="Retry-After of the page_rate_limited scenario")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cycle = [name.strip() for name in args.cycle.split(",") if name.strip()] or None
    host, port = args.listen

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(host, port, args.scenario, cycle, args.cycle_seconds,
                        slow_seconds=args.slow_seconds, retry_after=args.retry_after)

    try:
        asyncio.run(run())
    except UnknownScenario as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
