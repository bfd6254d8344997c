"""The running exporter: config, scheduler, state, verdicts and collector wired together, with
reload. A reload parses the new config in a worker thread (``preload``), so that a large
config never freezes the event loop (/-/healthy, scrapes), then swaps synchronously; reloads
queue on one lock, so a storm of SIGHUPs cannot interleave. A bad new config is rejected
whole and the old one keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.exposition import generate_latest

from exporter import __version__
from exporter.checks.net import icmp_mode
from exporter.checks.net.httpclient import Clients
from exporter.config import Config, ConfigError, with_vantage
from exporter.engine import eventloop
from exporter.engine.probe_counts import ProbeCounts
from exporter.engine.scheduler import Scheduler
from exporter.engine.state import StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition import status as status_json
from exporter.exposition.collector import Collector, asyncio_tasks, registry_for
from exporter.secrets import Secrets

log = logging.getLogger("exporter")

VERDICT_TICK = 0.5  # seconds between verdict refreshes, the resolution of "since"
# With thousands of checks a refresh takes tens of milliseconds; the ticker then waits this many
# times as long as the last refresh took, so the verdict engine keeps to ~2% of the event loop.
VERDICT_SHARE = 50
# Garbage collection with thousands of checks (docs/benchmarks.md has the profile). Every run
# allocates objects that live until the next run; with CPython's default young threshold (700)
# so many reached the old generation that a full collection, 300+ ms with 10,000 checks, ran
# every few seconds and stalled every check due meanwhile. A higher threshold makes full
# collections rare, and once every check has run the long-lived objects (configs, check tasks,
# states) are frozen out of the collector's sight (gc.freeze), so a full collection only walks
# what changed since. Frozen objects are still freed by reference counting; a reload unfreezes
# so that the old config's cycles can be collected, and freezes again after the new first round.
GC_YOUNG_THRESHOLD = 10_000


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim). Start-up (imports,
    the config, the first round) frees more than it keeps, and glibc holds on to it: about 1 MB
    of idle RSS with the bundled preset (docs/benchmarks.md, goal 4). Elsewhere, nothing."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, say): nothing to do
        ctypes.CDLL(None).malloc_trim(0)


class Runtime:
    def __init__(self, load: Callable[[], Config], vantage: str | None = None,
                 secrets: Secrets | None = None) -> None:
        self.load = load
        self.vantage_flag = vantage
        self.config = with_vantage(load(), vantage)  # raises ConfigError: caller reports it
        # Every secret the checks read; the log filter scrubs with it (cli hands it to both).
        self.secrets = secrets if secrets is not None else Secrets()
        self.state = StateStore()
        self.verdicts = Verdicts()
        self.probe_counts = ProbeCounts()
        self.collector = Collector(self.state, self.verdicts, self.probe_counts.requests,
                                        extra=[asyncio_tasks])
        self.collector.vantage = self.config.vantage
        self.registry = registry_for(self.collector)
        self.session: aiohttp.ClientSession | None = None
        self.clients: Clients | None = None  # the probers' shared HTTP sessions
        self.scheduler: Scheduler | None = None
        self.extra_status: dict[str, Any] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._ready = False
        self._gc_threshold: tuple[int, int, int] | None = None
        self._gc_frozen = False
        self.started_at = time.time()
        self.reload_lock = asyncio.Lock()
        self._preloaded: Config | ConfigError | None = None

    async def start(self) -> None:
        icmp_mode.detect()  # once, at startup: it logs clearly if ICMP cannot work here
        self.session = new_session()
        self.clients = Clients()
        self.scheduler = Scheduler(self.state, self.session, clients=self.clients,
                                   secrets=self.secrets)
        gc.collect()  # the config parse's garbage, now rather than as a pause between checks
        self._gc_threshold = gc.get_threshold()
        young, *older = self._gc_threshold
        gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
        self.scheduler.apply(self.config)
        self._ticker = asyncio.create_task(self._tick(), name="verdict-ticker")
        log.info("started", extra={"version": __version__, "event_loop": eventloop.name(),
                                   "checks": len(self.state.checks),
                                   "config": self.config.source})

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.session is not None:
            await self.session.close()
        if self.clients is not None:
            await self.clients.close()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        self._thaw()

    async def preload(self) -> None:
        """Parse the config for the next ``reload`` in a worker thread (hold reload_lock)."""
        self._preloaded = await asyncio.to_thread(self._load_or_error)

    def _load_or_error(self) -> Config | ConfigError:
        try:
            return self.load()
        except ConfigError as exc:
            return exc

    def reload(self) -> tuple[bool, str]:
        preloaded, self._preloaded = self._preloaded, None
        try:
            if isinstance(preloaded, ConfigError):
                raise preloaded
            new = with_vantage(preloaded or self.load(), self.vantage_flag)
        except ConfigError as exc:
            self.state.record_reload(False)
            for issue in exc.issues:
                log.error("config reload failed; keeping the running config",
                          extra={"issue": str(issue)})
            return False, str(exc)
        self.secrets.clear()  # api_key_file contents are re-read on reload
        self.config = new
        self.collector.vantage = new.vantage
        if self.scheduler is not None:
            self.scheduler.apply(new)
        self._thaw()
        self.verdicts.refresh(self.state, new)
        self.state.record_reload(True)
        log.info("config reloaded", extra={"checks": len(self.state.checks)})
        return True, "config reloaded"

    @property
    def ready(self) -> bool:
        # Latched: checks added by a later reload must not take a serving pod out of rotation.
        if not self._ready:
            self._ready = self.scheduler is not None and self.state.all_ran()
        return self._ready

    def refresh(self) -> None:
        """Bring the verdicts up to date (memory only), before a scrape reads them."""
        self.verdicts.refresh(self.state, self.config)

    def metrics(self) -> bytes:
        """/metrics in the text format, as a plain scrape gets it."""
        self.refresh()
        return generate_latest(self.registry)

    def status(self) -> dict[str, Any]:
        self.verdicts.refresh(self.state, self.config)
        return status_json.build(self.config, self.state, self.verdicts, ready=self.ready,
                                 secrets=self.secrets, extra=self.extra_status)

    def verdict(self, upstream: str) -> str:
        """The upstream's current verdict (``unknown`` before it has one)."""
        self.verdicts.refresh(self.state, self.config)
        current = self.verdicts.by_upstream.get(upstream)
        return current.decision.verdict if current else "unknown"

    async def _tick(self) -> None:
        wait = VERDICT_TICK
        while True:
            await asyncio.sleep(wait)
            start = time.perf_counter()
            self.verdicts.refresh(self.state, self.config)
            wait = max(VERDICT_TICK, (time.perf_counter() - start) * VERDICT_SHARE)
            if not self._gc_frozen and self.ready:
                gc.collect()
                gc.freeze()
                self._gc_frozen = True
                release_free_heap()

    def _thaw(self) -> None:
        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False


def new_session() -> aiohttp.ClientSession:
    # A fresh connection per probe, like blackbox_exporter: every run measures DNS, TCP and
    # TLS for real instead of riding a warm keep-alive connection.
    connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False, limit=0)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 timeout=aiohttp.ClientTimeout(total=None))
