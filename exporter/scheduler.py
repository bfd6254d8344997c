"""Runs every check in the background on its own interval.

One task per check. Start times are splayed so checks do not fire together; each run is due at
``first + k * interval`` on the monotonic clock, so there is no drift, and a run that overruns
skips the ticks it missed instead of piling up. A reload cancels only the checks whose config
changed. The logic of one run lives in ``run_once`` so tests can call it directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import aiohttp

from exporter.checks import ProbeContext, Result, probers
from exporter.config import POLLED_KINDS, CheckConfig, Config
from exporter.secrets import SECRETS
from exporter.state import StateStore

log = logging.getLogger("exporter.scheduler")

MIN_SPLAY = 2.0  # seconds over which a small config's first runs are spread
STARTS_PER_SECOND = 500  # a large config spreads its first runs at about this rate


class Scheduler:
    def __init__(self, state: StateStore, session: aiohttp.ClientSession,
                 on_result: Callable[[CheckConfig, Result], None] | None = None) -> None:
        self.state = state
        self.session = session
        self.on_result = on_result
        self.tasks: dict[tuple[str, str], tuple[CheckConfig, asyncio.Task[None]]] = {}
        self.memos: dict[tuple[str, str], dict[str, object]] = {}
        self.config: Config | None = None

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
        memo = self.memos.setdefault(check.key, {})
        if check.kind == "statuspage" and self.config is not None:
            upstream = self.config.upstream(check.upstream)
            if upstream is not None:
                memo["statuspage_options"] = upstream.statuspage
        return memo

    async def _loop(self, check: CheckConfig, first: float, phase: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        due = start + first
        anchor = start + phase  # steady state: runs are due at anchor + k * interval
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.state.observe_lag(loop.time() - due)
            result = await self.run_once(check, self.memo_for(check))
            self.state.record(check, result)
            if self.on_result is not None:
                self.on_result(check, result)
            now = loop.time()
            backoff = float(result.details.get("backoff_seconds") or 0.0)
            # The next tick at least half an interval on (so the move from the quick first run
            # to the steady phase never runs a check twice in a row), skipping ticks that passed
            # while the run or its backoff lasted: no pile-up, no drift.
            earliest = max(due + check.interval / 2, now + backoff)
            due = anchor + max(0, math.ceil((earliest - anchor) / check.interval)) * check.interval

    async def run_once(self, check: CheckConfig, memo: dict[str, object] | None = None) -> Result:
        """Run one check with its timeout; never raises except on cancellation."""
        logger = logging.getLogger(f"exporter.check.{check.upstream}.{check.name}")
        ctx = ProbeContext(self.session, logger, memo if memo is not None else {},
                           secret=SECRETS.get)
        prober = probers().get(check.kind)
        start = time.perf_counter()
        if prober is None:
            return Result(False, 0.0, "internal", f"no prober for kind {check.kind}")
        try:
            async with asyncio.timeout(check.timeout):
                result = await prober(check, ctx)
        except TimeoutError:
            result = Result(False, time.perf_counter() - start, "timeout",
                            f"timed out after {check.timeout:g}s")
        except Exception as exc:  # a prober bug must not kill the check's loop
            logger.exception("prober crashed", extra={"check": check.name})
            # A page that crashes the parser is a page we cannot read: "schema" in the SPEC's set.
            reason = "schema" if check.kind in POLLED_KINDS else "internal"
            result = Result(False, time.perf_counter() - start, reason,
                            f"internal error: {exc.__class__.__name__}")
        if ctx.lines and not result.log:
            result = replace(result, log=tuple(ctx.lines))
        if not result.success:
            logger.debug("check failed", extra={"reason": result.reason,
                                                "error": SECRETS.scrub(result.error)})
        return result


def _identity(check: CheckConfig) -> tuple[str, str | None, str | None, str]:
    """What a check's memo (ETag, previous answer, budget) belongs to."""
    return (check.kind, check.url, check.target, check.mode)


def keys(checks: Iterable[CheckConfig]) -> set[tuple[str, str]]:
    return {c.key for c in checks}
