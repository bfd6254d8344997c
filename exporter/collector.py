"""Renders /metrics from the state store: memory only, no network I/O, no awaits.

The text exposition is written directly rather than through prometheus_client's object model:
every check's lines are cached until its next run, so a scrape of 10,000 checks costs a join,
not a rebuild (docs/benchmarks.md has the figures). The output is the Prometheus text format
0.0.4, which `promtool check metrics` and prometheus_client's parser accept.
"""

from __future__ import annotations

import math
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from exporter import __version__, icmp_mode, probe
from exporter import metrics as m
from exporter.checks import Sample
from exporter.state import CheckState, Histogram, StateStore
from exporter.verdict import Verdicts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Lines = dict[m.MetricSpec, list[str]]

# The generic per-run series: check kinds use blackbox's names, status pages their own.
_GENERIC = {
    "success": (m.PROBE_SUCCESS, m.STATUSPAGE_POLL_SUCCESS),
    "duration": (m.PROBE_DURATION, m.STATUSPAGE_POLL_DURATION),
    "runs": (m.PROBE_RUNS, m.STATUSPAGE_POLLS),
    "failures": (m.PROBE_FAILURES, m.STATUSPAGE_POLL_FAILURES),
}
ORDER = {spec.name: i for i, spec in enumerate(m.all_specs())}


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def fmt(value: float) -> str:
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Renderer:
    def __init__(self, vantage: str | None) -> None:
        self.vantage_pair = f'vantage="{escape(vantage)}"' if vantage else ""

    def labels(self, names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
        pairs = [f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)]
        if extra:
            pairs.append(extra)
        if self.vantage_pair:
            pairs.append(self.vantage_pair)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def sample(self, out: Lines, spec: m.MetricSpec, values: Iterable[str], value: float) -> None:
        suffix = "_total" if spec.type == "counter" and not spec.name.endswith("_total") else ""
        out[spec].append(f"{spec.name}{suffix}{self.labels(spec.labels, values)} {fmt(value)}")

    def histogram(self, out: Lines, spec: m.MetricSpec, values: tuple[str, ...],
                  hist: Histogram) -> None:
        lines = out[spec]
        for le, count in hist.cumulative():
            bucket_labels = self.labels(spec.labels, values, 'le="' + le + '"')
            lines.append(f"{spec.name}_bucket{bucket_labels} {fmt(count)}")
        tail = self.labels(spec.labels, values)
        lines.append(f"{spec.name}_sum{tail} {fmt(hist.sum)}")
        lines.append(f"{spec.name}_count{tail} {fmt(hist.count)}")


def check_lines(r: Renderer, state: CheckState) -> Lines:
    out: Lines = defaultdict(list)
    statuspage = state.check.kind == "statuspage"
    pick = 1 if statuspage else 0
    identity = state.label_values(m.PROBE_SUCCESS)
    sp_identity = (state.check.upstream,)
    ident = sp_identity if statuspage else identity
    last = state.last
    if last is not None:
        r.sample(out, _GENERIC["success"][pick], ident, 1.0 if last.success else 0.0)
        r.sample(out, _GENERIC["duration"][pick], ident, last.duration_seconds)
        if statuspage:
            if state.last_success is not None:
                r.sample(out, m.STATUSPAGE_LAST_SUCCESS, ident, state.last_success.finished_at)
        else:
            r.sample(out, m.PROBE_LAST_RUN, ident, last.finished_at)
    r.sample(out, _GENERIC["runs"][pick], ident, float(state.runs))
    for reason, count in sorted(state.failures.items()):
        r.sample(out, _GENERIC["failures"][pick], (*ident, reason), float(count))
    for sample in state.gauges():
        _sample(r, out, state, sample)
    for (spec, values), total in state.counters.items():
        r.sample(out, spec, values, total)
    for (spec, values), hist in state.histograms.items():
        r.histogram(out, spec, values, hist)
    return out


def _sample(r: Renderer, out: Lines, state: CheckState, sample: Sample) -> None:
    r.sample(out, sample.metric, state.label_values(sample.metric, sample), sample.value)


class Collector:
    """Turns the state store, the verdicts and the exporter's own facts into exposition text."""

    def __init__(self, state: StateStore, verdicts: Verdicts,
                 extra: Callable[[Renderer, Lines], None] | None = None) -> None:
        self.state = state
        self.verdicts = verdicts
        self.extra = extra
        self.vantage: str | None = None
        self._cache: dict[tuple[str, str], tuple[int, str | None, Lines]] = {}

    def render(self) -> bytes:
        r = Renderer(self.vantage)
        families: Lines = defaultdict(list)
        live = set()
        for key, state in self.state.checks.items():
            live.add(key)
            cached = self._cache.get(key)
            if cached is None or cached[0] != state.version or cached[1] != self.vantage:
                cached = (state.version, self.vantage, check_lines(r, state))
                self._cache[key] = cached
            for spec, lines in cached[2].items():
                families[spec].extend(lines)
        for key in set(self._cache) - live:
            del self._cache[key]
        self._verdict_lines(r, families)
        self._self_lines(r, families)
        if self.extra is not None:
            self.extra(r, families)
        chunks: list[str] = []
        for spec in sorted(families, key=lambda s: ORDER.get(s.name, len(ORDER))):
            lines = families[spec]
            if not lines:
                continue
            name = spec.name
            if spec.type == "counter" and not name.endswith("_total"):
                name += "_total"
            chunks.append(f"# HELP {name} {spec.help}\n# TYPE {name} {spec.type}\n")
            chunks.append("\n".join(lines))
            chunks.append("\n")
        return "".join(chunks).encode()

    def _verdict_lines(self, r: Renderer, out: Lines) -> None:
        now = time.time()
        for upstream, current in self.verdicts.by_upstream.items():
            for verdict in m.STATE_SETS["verdict"]:
                r.sample(out, m.UPSTREAM_VERDICT, (upstream, verdict),
                         1.0 if current.decision.verdict == verdict else 0.0)
            r.sample(out, m.UPSTREAM_VERDICT_SINCE, (upstream,), current.since)
            r.sample(out, m.UPSTREAM_OUTAGE_UNACKNOWLEDGED, (upstream,),
                     self.verdicts.unacknowledged_seconds(upstream, now))

    def _self_lines(self, r: Renderer, out: Lines) -> None:
        r.sample(out, m.EXPORTER_BUILD_INFO, (__version__, platform.python_version()), 1.0)
        r.sample(out, m.EXPORTER_RELOAD_SUCCESS, (), self.state.reload_success)
        r.sample(out, m.EXPORTER_RELOAD_SUCCESS_TIMESTAMP, (),
                 self.state.reload_success_timestamp)
        r.sample(out, m.EXPORTER_CHECKS, (), float(len(self.state.checks)))
        r.histogram(out, m.EXPORTER_SCHEDULER_LAG, (), self.state.scheduler_lag)
        r.sample(out, m.EXPORTER_ICMP_MODE, (icmp_mode.detect(),), 1.0)
        for (module, outcome), count in sorted(probe.probe_request_counts().items()):
            r.sample(out, m.EXPORTER_PROBE_REQUESTS, (module, outcome), float(count))
