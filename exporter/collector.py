"""Renders /metrics from the state store: memory only, no network I/O, no awaits.

The text exposition is written directly rather than through prometheus_client's object model.
Each check's series are rendered to bytes, one chunk per metric family, as soon as the check
has run (``refresh``, called by the scheduler), and kept until its next run; a scrape then
only concatenates chunks, so its cost hardly depends on how many checks ran since the last one
(docs/benchmarks.md has the figures). The output is the Prometheus text format 0.0.4, which
`promtool check metrics` and prometheus_client's parser accept.
"""

from __future__ import annotations

import math
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from exporter import __version__, icmp_mode, probe
from exporter import metrics as m
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
# Dependency and crowd polls: success, polls and failures under their own names, labelled by
# the witness's name (the poll's check name is internal).
_WITNESS_GENERIC = {
    "dependency": (m.DEPENDENCY_POLL_SUCCESS, m.DEPENDENCY_POLLS, m.DEPENDENCY_POLL_FAILURES),
    "crowd": (m.CROWD_POLL_SUCCESS, m.CROWD_POLLS, m.CROWD_POLL_FAILURES),
}
ORDER = {spec.name: i for i, spec in enumerate(m.all_specs())}


def escape(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value  # the common case, checked without building new strings
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_LE: dict[tuple[float, ...], tuple[str, ...]] = {}


def le_strings(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values of a histogram's buckets, +Inf last (computed once per layout)."""
    les = _LE.get(bounds)
    if les is None:
        les = _LE[bounds] = (*(repr(float(b)) for b in bounds), "+Inf")
    return les


def fmt(value: float) -> str:
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Renderer:
    """Formats samples as exposition lines. Label strings are memoised for the renderer's
    lifetime (one scrape or one check), since a check repeats its identity on every series."""

    def __init__(self, vantage: str | None) -> None:
        self.vantage_pair = f'vantage="{escape(vantage)}"' if vantage else ""
        self._pairs: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._labels: dict[tuple[tuple[str, ...], tuple[str, ...], str], str] = {}

    def pairs(self, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        """``a="x",b="y"`` for the given labels, without the vantage."""
        key = (names, values)
        text = self._pairs.get(key)
        if text is None:
            if len(names) != len(values):
                raise ValueError(f"labels {names} do not match values {values}")
            text = self._pairs[key] = ",".join(
                [f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)])
        return text

    def labels(self, names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
        """The whole label set, braces and vantage included ("" when there is none)."""
        key = (tuple(names), tuple(values), extra)
        text = self._labels.get(key)
        if text is None:
            parts = [p for p in (self.pairs(key[0], key[1]), extra, self.vantage_pair) if p]
            text = self._labels[key] = "{" + ",".join(parts) + "}" if parts else ""
        return text

    def sample(self, out: Lines, spec: m.MetricSpec, values: Iterable[str], value: float) -> None:
        out[spec].append(self.line(spec, values, value))

    def line(self, spec: m.MetricSpec, values: Iterable[str], value: float) -> str:
        suffix = "_total" if spec.type == "counter" and not spec.name.endswith("_total") else ""
        return f"{spec.name}{suffix}{self.labels(spec.labels, values)} {fmt(value)}"

    def histogram(self, out: Lines, spec: m.MetricSpec, values: tuple[str, ...],
                  hist: Histogram) -> None:
        self.histogram_lines(out[spec], spec, values, hist)

    def histogram_lines(self, lines: list[str], spec: m.MetricSpec, values: tuple[str, ...],
                        hist: Histogram) -> None:
        inner = self.pairs(spec.labels, tuple(values))
        vantage = "," + self.vantage_pair if self.vantage_pair else ""
        head = f"{spec.name}_bucket{{{inner + ',' if inner else ''}le=\""
        tail = f"\"{vantage}}} "
        running = 0
        for le, n in zip(le_strings(hist.bounds), hist.counts[:-1], strict=False):
            running += n
            lines.append(f"{head}{le}{tail}{running}")  # an int: what fmt() would print
        lines.append(f"{head}+Inf{tail}{hist.count}")
        total = self.labels(spec.labels, values)
        lines.append(f"{spec.name}_sum{total} {fmt(hist.sum)}")
        lines.append(f"{spec.name}_count{total} {hist.count}")


class _Families:
    """A check's lines grouped by metric family, families in order of first appearance.

    Keyed by name: a str caches its hash, a MetricSpec hashes all its fields on every lookup.
    """

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[str, tuple[m.MetricSpec, list[str]]] = {}

    def lines(self, spec: m.MetricSpec) -> list[str]:
        group = self.groups.get(spec.name)
        if group is None:
            group = self.groups[spec.name] = (spec, [])
        return group[1]


def check_lines(r: Renderer, state: CheckState) -> _Families:
    if state.check.witness is not None:
        return witness_lines(r, state)
    out = _Families()
    statuspage = state.check.kind == "statuspage"
    pick = 1 if statuspage else 0
    ident = (state.check.upstream,) if statuspage else state.label_values(m.PROBE_SUCCESS)
    last = state.last

    def add(spec: m.MetricSpec, values: tuple[str, ...], value: float) -> None:
        out.lines(spec).append(r.line(spec, values, value))

    if last is not None:
        add(_GENERIC["success"][pick], ident, 1.0 if last.success else 0.0)
        add(_GENERIC["duration"][pick], ident, last.duration_seconds)
        if statuspage:
            if state.last_success is not None:
                add(m.STATUSPAGE_LAST_SUCCESS, ident, state.last_success.finished_at)
        else:
            add(m.PROBE_LAST_RUN, ident, last.finished_at)
    add(_GENERIC["runs"][pick], ident, float(state.runs))
    for reason, count in sorted(state.failures.items()):
        add(_GENERIC["failures"][pick], (*ident, reason), float(count))
    for sample in state.gauges():
        add(sample.metric, state.label_values(sample.metric, sample), sample.value)
    for (spec, values), total in state.counters.items():
        add(spec, values, total)
    for (spec, values), hist in state.histograms.items():
        r.histogram_lines(out.lines(spec), spec, values, hist)
    return out


def witness_lines(r: Renderer, state: CheckState) -> _Families:
    """A dependency or crowd poll: its generic series and the feed's gauges."""
    out = _Families()
    witness = state.check.witness
    assert witness is not None
    success, polls, failures = _WITNESS_GENERIC[witness.role]
    ident = (state.check.upstream, witness.name)
    if state.last is not None:
        out.lines(success).append(r.line(success, ident, 1.0 if state.last.success else 0.0))
    out.lines(polls).append(r.line(polls, ident, float(state.runs)))
    for reason, count in sorted(state.failures.items()):
        out.lines(failures).append(r.line(failures, (*ident, reason), float(count)))
    for sample in state.gauges():
        out.lines(sample.metric).append(
            r.line(sample.metric, state.label_values(sample.metric, sample), sample.value))
    return out


# A check's rendering: (state version, vantage, family names, one bytes chunk per family).
# Only strings, bytes and ints, so the garbage collector stops tracking it after one pass: with
# 10,000 checks every tracked object costs time in each full collection.
_Rendered = tuple[int, str | None, tuple[str, ...], tuple[bytes, ...]]


class Collector:
    """Turns the state store, the verdicts and the exporter's own facts into exposition text."""

    def __init__(self, state: StateStore, verdicts: Verdicts,
                 extra: Callable[[Renderer, Lines], None] | None = None) -> None:
        self.state = state
        self.verdicts = verdicts
        self.extra = extra
        self.vantage: str | None = None
        self._cache: dict[tuple[str, str], _Rendered] = {}
        self._specs: dict[str, m.MetricSpec] = {}
        self._headers: dict[str, bytes] = {}

    def refresh(self, key: tuple[str, str]) -> None:
        """Render one check now (after it ran), so that the next scrape finds it ready."""
        state = self.state.checks.get(key)
        if state is not None:
            self._cache[key] = self._render_check(state)

    def _render_check(self, state: CheckState) -> _Rendered:
        names: list[str] = []
        chunks: list[bytes] = []
        for spec, lines in check_lines(Renderer(self.vantage), state).groups.values():
            self._specs.setdefault(spec.name, spec)
            names.append(spec.name)
            chunks.append(("\n".join(lines) + "\n").encode())
        return (state.version, self.vantage, tuple(names), tuple(chunks))

    def render(self) -> bytes:
        return b"".join(self.render_chunks())

    def render_chunks(self) -> list[bytes]:
        """The exposition as pieces in order (a snapshot: nothing awaits while it is built)."""
        # Keyed by name: a str caches its hash, a MetricSpec hashes all its fields every time.
        families: dict[str, list[bytes]] = {}
        cache = self._cache
        vantage = self.vantage
        for key, state in self.state.checks.items():
            cached = cache.get(key)
            if cached is None or cached[0] != state.version or cached[1] != vantage:
                cached = cache[key] = self._render_check(state)
            for name, chunk in zip(cached[2], cached[3], strict=True):
                family = families.get(name)
                if family is None:
                    family = families[name] = []
                family.append(chunk)
        if len(cache) > len(self.state.checks):
            for key in set(cache) - set(self.state.checks):
                del cache[key]
        r = Renderer(vantage)
        lines: Lines = defaultdict(list)
        self._verdict_lines(r, lines)
        self._self_lines(r, lines)
        if self.extra is not None:
            self.extra(r, lines)
        specs = self._specs
        for spec, spec_lines in lines.items():
            if spec_lines:
                specs.setdefault(spec.name, spec)
                families.setdefault(spec.name, []).append(("\n".join(spec_lines) + "\n").encode())
        chunks: list[bytes] = []
        for name in sorted(families, key=lambda n: ORDER.get(n, len(ORDER))):
            chunks.append(self._header(specs[name]))
            chunks.extend(families[name])
        return chunks

    def _header(self, spec: m.MetricSpec) -> bytes:
        header = self._headers.get(spec.name)
        if header is None:
            name = spec.name
            if spec.type == "counter" and not name.endswith("_total"):
                name += "_total"
            header = self._headers[spec.name] = (f"# HELP {name} {spec.help}\n"
                                            f"# TYPE {name} {spec.type}\n").encode()
        return header

    def _verdict_lines(self, r: Renderer, out: Lines) -> None:
        now = time.time()
        for upstream, current in self.verdicts.by_upstream.items():
            for verdict in m.STATE_SETS["verdict"]:
                r.sample(out, m.UPSTREAM_VERDICT, (upstream, verdict),
                         1.0 if current.decision.verdict == verdict else 0.0)
            r.sample(out, m.UPSTREAM_VERDICT_SINCE, (upstream,), current.since)
            r.sample(out, m.UPSTREAM_OUTAGE_UNACKNOWLEDGED, (upstream,),
                     self.verdicts.unacknowledged_seconds(upstream, now))
            for witness in m.WITNESSES:
                said = current.decision.witnesses.get(witness, "unknown")
                for view in m.WITNESS_VIEWS:
                    r.sample(out, m.UPSTREAM_WITNESS, (upstream, witness, view),
                             1.0 if said == view else 0.0)

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
