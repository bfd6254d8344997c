"""The scheduler: quick first runs, steady spacing on the monotonic clock, no pile-up, backoff,
and reloads that restart only what changed. Real TCP listeners on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from exporter.config import load_text
from exporter.engine.scheduler import MIN_SPLAY, Scheduler
from exporter.engine.state import StateStore
from exporter.runtime import new_session


@pytest.fixture
async def listener() -> AsyncIterator[str]:
    async def accept(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """A port that accepts TCP but where a TLS handshake never gets an answer."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def config(checks: str) -> str:
    return f"upstreams:\n  u:\n    checks:\n{checks}"


def tcp(name: str, target: str, **options: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in options.items())
    return f'      - {{name: {name}, kind: tcp, target: "{target}"{extra}}}\n'


def tls(name: str, target: str, **options: str) -> str:
    return tcp(name, target, **options).replace("kind: tcp", "kind: tls")


async def run_for(seconds: float, text: str) -> StateStore:
    state = StateStore()
    session = new_session()
    scheduler = Scheduler(state, session)
    scheduler.apply(load_text(text, "t.yml"))
    await asyncio.sleep(seconds)
    await scheduler.stop()
    await session.close()
    return state


async def test_first_runs_are_spread_but_quick(listener: str) -> None:
    checks = "".join(tcp(f"c{i}", listener, interval="60s") for i in range(20))
    state = await run_for(MIN_SPLAY + 0.5, config(checks))
    finished = sorted(s.last.finished_at for s in state.checks.values() if s.last)
    assert len(finished) == 20, "every check ran once within the splay"
    assert finished[-1] - finished[0] > MIN_SPLAY / 2, "not all at once"


async def test_runs_keep_their_interval_without_drift(listener: str) -> None:
    state = await run_for(3.1, config(tcp("c", listener, interval="250ms", timeout="200ms")))
    check = state.checks[("u", "c")]
    # first run within the splay, then every 250 ms: 12 or 13 runs in 3.1 s
    assert 11 <= check.runs <= 13
    assert state.scheduler_lag.count == check.runs
    assert state.scheduler_lag.sum / state.scheduler_lag.count < 0.05


async def test_a_run_that_overruns_skips_ticks_instead_of_piling_up(silent: str) -> None:
    # Each run takes its whole 400 ms timeout on a 500 ms interval: never two at once.
    state = await run_for(2.6, config(tls("c", silent, interval="500ms", timeout="400ms")))
    check = state.checks[("u", "c")]
    assert check.failures["timeout"] == check.runs
    assert 3 <= check.runs <= 6


async def test_backoff_delays_the_next_run() -> None:
    # A status page that refuses connections backs off: far fewer polls than intervals.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = f'upstreams:\n  u:\n    statuspage: {{url: "http://127.0.0.1:{port}/", interval: 1s, timeout: 150ms}}\n'
    state = await run_for(4.5, text)
    polls = state.checks[("u", "statuspage")].runs
    # Without backoff 4 or 5 polls; with it the waits grow 1-2 s, then 2-4 s.
    assert 1 <= polls <= 3, f"{polls} polls in 4.5 s at a 1 s interval: backoff ignored"


async def test_a_reload_restarts_changed_checks_and_keeps_the_others(listener: str) -> None:
    state = StateStore()
    session = new_session()
    scheduler = Scheduler(state, session)
    keep = tcp("keep", listener, interval="200ms")
    scheduler.apply(load_text(config(keep + tcp("change", listener, interval="200ms")), "a"))
    await asyncio.sleep(MIN_SPLAY + 0.3)
    kept_task = scheduler.tasks[("u", "keep")][1]
    changed_task = scheduler.tasks[("u", "change")][1]
    runs_before = state.checks[("u", "keep")].runs
    scheduler.apply(load_text(config(keep + tcp("change", listener, interval="300ms")), "b"))
    await asyncio.sleep(0.05)
    assert scheduler.tasks[("u", "keep")][1] is kept_task and not kept_task.done()
    assert changed_task.cancelled() or changed_task.done()
    assert scheduler.tasks[("u", "change")][1] is not changed_task
    scheduler.apply(load_text(config(keep), "c"))
    await asyncio.sleep(0.5)
    assert ("u", "change") not in state.checks and ("u", "change") not in scheduler.tasks
    assert state.checks[("u", "keep")].runs > runs_before
    await scheduler.stop()
    await session.close()


async def test_stop_cancels_every_task(silent: str) -> None:
    state = StateStore()
    session = new_session()
    scheduler = Scheduler(state, session)
    scheduler.apply(load_text(config(tls("c", silent, interval="10s", timeout="9s")), "t"))
    await asyncio.sleep(0.2)
    tasks = [t for _, t in scheduler.tasks.values()]
    started = time.monotonic()
    await scheduler.stop()
    assert time.monotonic() - started < 1 and all(t.done() for t in tasks)
    await session.close()
