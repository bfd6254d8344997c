"""Which event loop runs the exporter: uvloop when it is installed, else asyncio's own.

uvloop's transports and timers are written in C: a /probe answer that opens a connection per
probe costs about half the CPU on it (docs/benchmarks.md). Everything the exporter does works
on either loop; ``--runtime.event-loop=asyncio`` forces the standard one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

CHOICES = ("auto", "uvloop", "asyncio")

UVLOOP: Callable[[], asyncio.AbstractEventLoop] | None  # uvloop's factory; None: not installed
try:
    import uvloop

    UVLOOP = uvloop.new_event_loop
except ImportError:
    UVLOOP = None

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``choice``; None means asyncio's default. Raises ValueError when
    uvloop is asked for by name and is not installed."""
    if choice not in CHOICES:
        raise ValueError(f"--runtime.event-loop must be one of {', '.join(CHOICES)} "
                         f"(got {choice!r})")
    if choice == "asyncio":
        return None
    if UVLOOP is None and choice == "uvloop":
        raise ValueError("--runtime.event-loop=uvloop: uvloop is not installed "
                         "(pip install uvloop)")
    return UVLOOP


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """asyncio.run on the chosen loop."""
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def name() -> str:
    """The running loop's kind, for logs and exporter_build_info-like labels."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
