"""The state store: the latest Result of every check plus cumulative counters and histograms.

Everything runs on the event loop and writes are synchronous (no await between a read and its
write), so no locks are needed. The collector reads it without copying; checks removed by a
reload are dropped so their series disappear.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from exporter import metrics as m
from exporter.checks.base import Result, Sample
from exporter.config import POLLED_KINDS, ApiCheck, CheckConfig, Config, VerdictConfig

LabelValues = tuple[str, ...]


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if value != value:  # NaN: in no bucket, and a NaN _sum is refused by OpenMetrics readers
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class CheckState:
    check: CheckConfig
    last: Result | None = None
    last_success: Result | None = None
    runs: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    counters: dict[tuple[m.MetricSpec, LabelValues], float] = field(default_factory=dict)
    histograms: dict[tuple[m.MetricSpec, LabelValues], Histogram] = field(default_factory=dict)
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    # The verdict's debounce, kept up to date run by run (O(1) per run).
    verdict_cfg: VerdictConfig = field(default_factory=VerdictConfig)
    down: bool = False
    window: deque[bool] = field(default_factory=deque)  # True = failed, last `window` runs
    window_failures: int = 0
    slow_streak: int = 0
    version: int = 0  # bumped on every change, for cached renderings and verdict views

    def debounce(self, result: Result) -> None:
        cfg = self.verdict_cfg
        if result.success:
            if self.down and self.consecutive_successes >= cfg.recover_after:
                self.down = False
            threshold = self.check.degraded_latency
            slow = threshold is not None and result.duration_seconds > threshold
            self.slow_streak = self.slow_streak + 1 if slow else 0
        else:
            if self.consecutive_failures >= cfg.outage_after:
                self.down = True
            self.slow_streak = 0
        self.window.append(not result.success)
        self.window_failures += not result.success
        while len(self.window) > cfg.window:
            self.window_failures -= self.window.popleft()

    @property
    def slow(self) -> bool:
        return self.slow_streak >= self.verdict_cfg.outage_after

    def verdict_inputs(self) -> tuple[object, ...]:
        """Everything of this check the verdict reads (verdict.check_view): a run that leaves
        it unchanged, the usual case, need not recompute its upstream's verdict."""
        last = self.last
        return (last is not None, self.down, bool(last and last.success),
                last.reason if last else "", self.window_failures, self.slow)

    def label_values(self, spec: m.MetricSpec, sample: Sample | None = None) -> LabelValues:
        extra = sample.labels if sample is not None else {}
        values = []
        for name in spec.labels:
            if name == "upstream":
                values.append(self.check.upstream)
            elif name == "check":
                values.append(self.check.name)
            elif name == "kind":
                values.append(self.check.kind)
            elif name == "model":
                model = self.check.model if isinstance(self.check, ApiCheck) else None
                values.append(str(extra.get("model") or model or ""))
            else:
                values.append(str(extra.get(name, "")))
        return tuple(values)

    def gauges(self) -> tuple[Sample, ...]:
        """Gauges to serve: a failed poll of a status page (or a dependency or crowd feed)
        keeps the last good answer visible."""
        if self.check.kind in POLLED_KINDS:
            return self.last_success.gauges if self.last_success else ()
        return self.last.gauges if self.last else ()


class StateStore:
    def __init__(self) -> None:
        self.checks: dict[tuple[str, str], CheckState] = {}
        self.scheduler_lag = Histogram(m.EXPORTER_SCHEDULER_LAG.buckets)
        self.reload_success = 1.0
        self.reload_success_timestamp = time.time()
        self.dirty: set[str] = set()  # upstreams whose verdict needs recomputing
        self._by_upstream: dict[str, list[CheckState]] | None = None  # rebuilt after a sync

    def record_reload(self, ok: bool) -> None:
        """The outcome of the latest reload of any part (config file or web config)."""
        self.reload_success = 1.0 if ok else 0.0
        if ok:
            self.reload_success_timestamp = time.time()

    def sync(self, config: Config) -> None:
        """Adopt a new config: keep counters of checks that stay, drop removed ones."""
        wanted = {c.key: c for c in config.all_checks()}
        cfgs = {u.name: u.verdict for u in config.upstreams}
        for key in list(self.checks):
            if key not in wanted or self.checks[key].check.kind != wanted[key].kind:
                del self.checks[key]
        for key, check in wanted.items():
            state = self.checks.get(key)
            if state is None:
                state = self.checks[key] = CheckState(check)
            elif state.check != check:
                state.check = check  # a changed check restarts; an equal one keeps running
            # Present from the start at 0, so a rate() over it works before the first crash.
            state.counters.setdefault(
                (m.EXPORTER_CHECK_CRASHES, state.label_values(m.EXPORTER_CHECK_CRASHES)), 0.0)
            state.verdict_cfg = cfgs.get(check.upstream, config.control_verdict)
            state.version += 1
        self.dirty.update(u.name for u in config.upstreams)
        self._by_upstream = None

    def record(self, check: CheckConfig, result: Result) -> CheckState | None:
        state = self.checks.get(check.key)
        if state is None or state.check is not check:
            return None  # the check was removed or replaced by a reload while it ran
        before = state.verdict_inputs()
        state.last = result
        state.runs += 1
        state.version += 1
        if result.success:
            state.last_success = result
            state.consecutive_successes += 1
            state.consecutive_failures = 0
        else:
            state.failures[result.reason or "unknown"] += 1
            state.consecutive_failures += 1
            state.consecutive_successes = 0
        state.debounce(result)
        if check.kind in POLLED_KINDS or state.verdict_inputs() != before:
            if check.upstream == "control":
                self.dirty.update(u for (u, _) in self.checks if u != "control")
            else:
                self.dirty.add(check.upstream)
        if check.kind not in POLLED_KINDS:
            hist_key = (m.PROBE_LATENCY, state.label_values(m.PROBE_LATENCY))
            hist = state.histograms.get(hist_key)
            if hist is None:
                hist = state.histograms[hist_key] = Histogram(m.PROBE_LATENCY.buckets)
            hist.observe(result.duration_seconds)
        for sample in result.counters:
            if not 0.0 <= sample.value < math.inf:  # counters only go up, whatever a prober says
                continue
            key = (sample.metric, state.label_values(sample.metric, sample))
            state.counters[key] = state.counters.get(key, 0.0) + sample.value
        for sample in result.observations:
            if not math.isfinite(sample.value):
                continue
            key = (sample.metric, state.label_values(sample.metric, sample))
            hist = state.histograms.get(key)
            if hist is None:
                hist = state.histograms[key] = Histogram(sample.metric.buckets)
            hist.observe(sample.value)
        return state

    def crashed(self, check: CheckConfig) -> None:
        """Count a run that failed inside the exporter (exporter_check_crashes_total)."""
        state = self.checks.get(check.key)
        if state is None:
            return
        key = (m.EXPORTER_CHECK_CRASHES, state.label_values(m.EXPORTER_CHECK_CRASHES))
        state.counters[key] = state.counters.get(key, 0.0) + 1.0
        state.version += 1

    def observe_lag(self, seconds: float) -> None:
        self.scheduler_lag.observe(max(0.0, seconds))

    def for_upstream(self, upstream: str) -> list[CheckState]:
        """The upstream's checks in config order (indexed: the verdict asks twice a second)."""
        if self._by_upstream is None:
            index: dict[str, list[CheckState]] = {}
            for state in self.checks.values():
                index.setdefault(state.check.upstream, []).append(state)
            self._by_upstream = index
        return list(self._by_upstream.get(upstream, ()))

    def all_ran(self) -> bool:
        return all(s.runs > 0 for s in self.checks.values())
