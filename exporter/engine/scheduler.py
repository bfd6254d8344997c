"""Runs every check in the background on its own interval.

One task per check. Start times are splayed so checks do not fire together; each run is due at
``first + k * interval`` on the monotonic clock, so there is no drift, and a run that overruns
skips the ticks it missed instead of piling up. A reload cancels only the checks whose config
changed. The logic of one run lives in ``run_once`` so tests can call it directly.

Supervised: whatever fails inside the exporter during a run (the prober, recording the
result, the ``on_result`` hook that renders it) is counted in
``exporter_check_crashes_total{upstream,check}``, logged with its traceback once per distinct
cause (then at debug level), and the check's loop goes on at its next tick.

File descriptors: at most ``run_slots()`` runs hold a socket at once, a few dozen fewer than
the process may open (RLIMIT_NOFILE), so that the HTTP server always has descriptors left to
answer /-/healthy and scrapes. A run that waits its whole timeout for a slot fails with reason
``local_resources``, as one that meets EMFILE does: the fault is ours, not the target's.

Back-off: a run may ask for a pause (``details["backoff_seconds"]``, from Retry-After or a
status page's failure back-off). When a *successful* run asks for longer than the interval,
every tick until the pause ends records a failed run with reason ``backoff`` instead of
leaving the good result on show past its interval: what the check last saw is older than
the check promises, and it says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections.abc import Callable, Iterable

import aiohttp

from exporter.checks.base import Result
from exporter.checks.net.httpclient import Clients
from exporter.checks.net.resources import REASON as LOCAL_RESOURCES
from exporter.config import CheckConfig, Config
from exporter.engine.probers import run_prober
from exporter.engine.state import StateStore
from exporter.secrets import Secrets

log = logging.getLogger("exporter.scheduler")

MIN_SPLAY = 2.0  # seconds over which a small config's first runs are spread
STARTS_PER_SECOND = 500  # a large config spreads its first runs at about this rate
BACKOFF_REASON = "backoff"
MAX_CAUSES = 1000  # distinct crash causes remembered for log-once; then all log at debug
RESERVED_FDS = 32  # kept for the HTTP server, its clients and the log, whatever checks do


def run_slots() -> int | None:
    """How many runs may hold a descriptor at once; None when the limit is out of reach."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1_000_000:
        return None
    return max(1, soft - RESERVED_FDS) if soft > 2 * RESERVED_FDS else max(1, soft // 2)


class Scheduler:
    def __init__(self, state: StateStore, session: aiohttp.ClientSession,
                 on_result: Callable[[CheckConfig, Result], None] | None = None,
                 clients: Clients | None = None, secrets: Secrets | None = None) -> None:
        self.state = state
        self.session = session
        self.clients = clients
        self.secrets = secrets if secrets is not None else Secrets()  # the runtime's, usually
        self.on_result = on_result
        self.tasks: dict[tuple[str, str], tuple[CheckConfig, asyncio.Task[None]]] = {}
        self.memos: dict[tuple[str, str], dict[str, object]] = {}
        self.config: Config | None = None
        self.causes: set[tuple[str, ...]] = set()  # crash causes already logged in full
        slots = run_slots()
        self.slots_total = slots
        self.slots = asyncio.Semaphore(slots) if slots is not None else None

    def apply(self, config: Config) -> None:
        """Start, keep or restart check tasks to match ``config``."""
        self.config = config
        checks = config.all_checks()
        self.state.sync(config)
        wanted = {c.key: c for c in checks}
        for key, (check, task) in list(self.tasks.items()):
            if wanted.get(key) != check:
                task.cancel()
                del self.tasks[key]
                if wanted.get(key) is None or _identity(wanted[key]) != _identity(check):
                    self.memos.pop(key, None)
        new = [c for key, c in wanted.items() if key not in self.tasks]
        splay = max(MIN_SPLAY, len(new) / STARTS_PER_SECOND)
        for i, check in enumerate(new):
            # Reuse the state's CheckConfig object: record() matches results by identity.
            check = self.state.checks[check.key].check
            share = i / max(1, len(new))
            # The first runs come quickly (readiness); later ones spread over the whole interval.
            first, phase = min(check.interval, splay) * share, check.interval * share
            task = asyncio.create_task(self._loop(check, first, phase),
                                       name=f"check:{check.upstream}/{check.name}")
            self.tasks[check.key] = (check, task)

    async def stop(self) -> None:
        tasks = [t for _, t in self.tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()

    def memo_for(self, check: CheckConfig) -> dict[str, object]:
        return self.memos.setdefault(check.key, {})

    async def _loop(self, check: CheckConfig, first: float, phase: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        due = start + first
        anchor = start + phase  # steady state: runs are due at anchor + k * interval
        paused: Result | None = None  # a successful run that asked for a pause past the interval
        paused_until = asked = 0.0
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            backoff = 0.0
            try:
                self.state.observe_lag(loop.time() - due)
                if paused is not None and loop.time() < paused_until:
                    result = backing_off(paused, asked, paused_until - loop.time())
                else:
                    result = await self.run_once(check, self.memo_for(check))
                    backoff = _seconds(result.details.get("backoff_seconds"))
                    paused = None
                    if result.success and backoff > check.interval:
                        paused, paused_until, asked = result, loop.time() + backoff, backoff
                        backoff = 0.0
                self.state.record(check, result)
                if self.on_result is not None:
                    self.on_result(check, result)
            except Exception as exc:  # recording or rendering failed: count it, carry on
                self.crashed(check, "recording", exc)
            now = loop.time()
            # The next tick at least half an interval on (so the move from the quick first run
            # to the steady phase never runs a check twice in a row), skipping ticks that passed
            # while the run or its backoff lasted: no pile-up, no drift.
            earliest = max(due + check.interval / 2, now + backoff)
            due = anchor + max(0, math.ceil((earliest - anchor) / check.interval)) * check.interval

    def crashed(self, check: CheckConfig, where: str, exc: BaseException) -> None:
        """Count a failure inside the exporter and log it in full once per distinct cause."""
        self.state.crashed(check)
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        site = (f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "")
        cause = (check.upstream, check.name, where, type(exc).__name__, site)
        logger = logging.getLogger(f"exporter.check.{check.upstream}.{check.name}")
        if cause in self.causes or len(self.causes) >= MAX_CAUSES:
            logger.debug("%s failed again: %s", where, type(exc).__name__)
            return
        self.causes.add(cause)
        logger.error("%s failed inside the exporter (counted in exporter_check_crashes_total; "
                     "logged once per cause): %s", where, type(exc).__name__, exc_info=exc,
                     extra={"check": check.name})

    async def run_once(self, check: CheckConfig, memo: dict[str, object] | None = None) -> Result:
        """Run one check with its timeout, holding a descriptor slot; never raises except on
        cancellation."""
        logger = logging.getLogger(f"exporter.check.{check.upstream}.{check.name}")
        slots = self.slots
        if slots is not None:
            start = time.perf_counter()
            try:
                async with asyncio.timeout(check.timeout):
                    await slots.acquire()
            except TimeoutError:
                return Result(False, time.perf_counter() - start, LOCAL_RESOURCES,
                              f"no file descriptor free within {check.timeout:g}s: "
                              f"{self.slots_total} runs already hold one (RLIMIT_NOFILE less "
                              f"{RESERVED_FDS} kept for the HTTP server); raise ulimit -n")
        try:  # the wait for a slot is not the target's time: the prober gets a full timeout
            result = await run_prober(check, self.session, logger, secrets=self.secrets,
                                      memo=memo, clients=self.clients,
                                      on_crash=lambda exc: self.crashed(check, "the prober", exc))
        finally:
            if slots is not None:
                slots.release()
        if not result.success:
            logger.debug("check failed", extra={"reason": result.reason,
                                                "error": self.secrets.scrub(result.error)})
        return result


def backing_off(last: Result, asked: float, left: float) -> Result:
    """The run of a tick that falls inside a pause the upstream asked for. Its gauges stay
    those of the last answer (they describe that answer: status code, Retry-After)."""
    error = (f"backing off: the upstream asked for a {asked:.0f}s pause (Retry-After); "
             f"next request in {left:.0f}s")
    return Result(False, 0.0, BACKOFF_REASON, error, gauges=last.gauges,
                  details={"backoff_seconds": left, "backing_off": True})


def _seconds(value: object) -> float:
    try:
        seconds = float(value) if isinstance(value, (int, float, str)) else 0.0
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _identity(check: CheckConfig) -> tuple[str, str | None, str]:
    """What a check's memo (ETag, previous answer, budget) belongs to."""
    return (check.kind, check.address, check.mode)


def keys(checks: Iterable[CheckConfig]) -> set[tuple[str, str]]:
    return {c.key for c in checks}
