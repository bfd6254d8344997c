"""tcp's connect_and_close on both event loops: the outcome, and what a run leaves behind.

connect_and_close uses a bare non-blocking socket on both loops (a loopback connect completes
inside connect() itself; the others wait on the loop); each row runs one outcome on one loop,
then repeats it with the
garbage collector off: no run may leave a reference cycle (thousands of background checks
would make the collector's pauses long) or an open descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import Iterator

import pytest

from exporter.checks import tcp
from exporter.checks.base import ProbeFailure
from exporter.engine import eventloop

LOOPS = ("asyncio", "uvloop")
RUNS = 50


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def listener() -> Iterator[int]:
    """Accepts (the kernel does: nobody calls accept, the queue is long enough)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4096)
        yield int(s.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A listener whose accept queue is full: the kernel drops new SYNs, connects hang."""
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(socket.socket())
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = int(s.getsockname()[1])
        for _ in range(2):  # backlog 0 still queues one; the second fills the SYN side
            c = stack.enter_context(socket.socket())
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
        yield port


async def outcome(port: int, limit: float) -> str:
    try:
        seconds = await tcp.connect_and_close("127.0.0.1", port, limit)
    except ProbeFailure as exc:
        return exc.reason
    assert 0 < seconds < limit
    return "ok"


async def repeated(port: int, limit: float) -> tuple[list[str], int, int]:
    """The outcomes of RUNS runs, the objects only the collector could free, fds left open."""
    await outcome(port, limit)  # imports, caches, the loop's own lazy setup
    await asyncio.sleep(0.01)
    gc.collect()
    before = open_fds()
    gc.disable()
    try:
        outcomes = [await outcome(port, limit) for _ in range(RUNS)]
        await asyncio.sleep(0.01)  # uvloop closes handles on a later iteration
        garbage = gc.collect()
    finally:
        gc.enable()
    return outcomes, garbage, open_fds() - before


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(("server", "limit", "expected"), [
    ("listener", 5.0, "ok"),
    ("closed_port", 5.0, "connect"),
    ("full_listener", 0.05, "timeout"),
])
def test_connect_and_close_outcome_without_garbage_or_leaks(
        request: pytest.FixtureRequest, loop: str, server: str, limit: float,
        expected: str) -> None:
    port: int = request.getfixturevalue(server)
    outcomes, garbage, leaked_fds = eventloop.run(repeated(port, limit), loop)
    assert set(outcomes) == {expected}
    assert garbage == 0
    assert leaked_fds == 0
