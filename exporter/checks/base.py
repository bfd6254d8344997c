"""The prober contract: a prober is a plain async function ``(check, ctx) -> Result``.

A prober never raises for a failing target: it returns ``Result(success=False, reason=...)``.
The runner (``engine.probers.run_prober``, for the scheduler and /probe alike) enforces the
timeout and turns an unexpected exception into a failure with reason ``internal``. The
generic series (probe_success, probe_duration_seconds, runs, failures, latency) are derived
from the Result by the state store; probers only add their protocol-specific samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.checks.net.safejson import clean
from exporter.metrics import MetricSpec
from exporter.secrets import Secrets

if TYPE_CHECKING:
    import aiohttp

    from exporter.checks.net.httpclient import Clients
    from exporter.config import CheckConfig


@dataclass(frozen=True)
class Sample:
    """One value for one metric. ``labels`` holds only the labels beyond the check identity
    (upstream, check, kind), which the state store fills in from the spec's label names."""

    metric: MetricSpec
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    success: bool
    duration_seconds: float
    reason: str = ""  # one word from the kind's fixed set; "" on success
    error: str = ""  # human-readable, never contains a secret
    gauges: tuple[Sample, ...] = ()  # replaced by the next run
    counters: tuple[Sample, ...] = ()  # increments, accumulated across runs
    observations: tuple[Sample, ...] = ()  # histogram observations, accumulated
    details: Mapping[str, object] = field(default_factory=dict)  # structured facts for the verdict
    log: tuple[str, ...] = ()  # the probe's own log lines, for debug output
    finished_at: float = field(default_factory=time.time)


@dataclass
class ProbeContext:
    """What a prober may use besides its config. ``memo`` survives between runs of the same
    check (ETags, the previous DNS answer, the token budget) and is dropped when the check's
    config changes."""

    session: aiohttp.ClientSession | None  # the runtime's (None outside one)
    logger: logging.Logger
    memo: dict[str, object] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    # The check's API key, resolved at run time so it never lives in config objects or logs.
    secret: Callable[[CheckConfig], str | None] = lambda _check: None
    # The runtime's shared HTTP sessions; None: each run makes its own.
    clients: Clients | None = None
    # The runtime's secrets, for the credentials a run reads (basic_auth, authorization, a
    # proxy's password): the log filter scrubs what they know. A context of its own by default.
    secrets: Secrets = field(default_factory=Secrets)

    def log(self, message: str) -> None:
        """Record a debug line for /probe?debug=true and the debug log."""
        message = clean(message)  # a header's undecodable bytes must not break either
        self.lines.append(message)
        self.logger.debug(message)


Prober = Callable[["CheckConfig", ProbeContext], Awaitable[Result]]


class ProbeFailure(Exception):
    """The one failure type of probers: what went wrong, already classified. ``reason`` is one
    word of the kind's set and ``error`` is safe to show. Raised between a prober's own
    functions and the shared pieces in ``net/``; the prober turns it into a failing Result at
    its edge, so it never reaches the runner. ``retry_after`` and ``http_status`` carry what
    an upstream said about the failure (a status page's 429 and Retry-After)."""

    def __init__(self, reason: str, error: str, *, retry_after: float | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.retry_after = retry_after
        self.http_status = http_status


def failure(start: float, reason: str, error: str, *, gauges: tuple[Sample, ...] = (),
            counters: tuple[Sample, ...] = (), details: Mapping[str, object] | None = None,
            ) -> Result:
    """A failed Result timed from ``start`` (a time.perf_counter() value)."""
    return Result(
        success=False,
        duration_seconds=time.perf_counter() - start,
        reason=reason,
        error=error,
        gauges=gauges,
        counters=counters,
        details=details if details is not None else {},
    )
