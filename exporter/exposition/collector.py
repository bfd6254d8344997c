"""The /metrics collector: client_python's Collector protocol over the state store.

``Collector.collect()`` builds fresh metric families from a snapshot of memory on every
scrape (no network I/O, no awaits), as client_python's custom-collector docs and the "Writing
exporters" page ask; prometheus_client writes them in whichever format the scrape negotiated
(exporter/server/app.py). Series of checks removed by a reload disappear with their state.

A counter with a ``reason`` label is emitted at 0 for every reason of its kind's documented set
(``metrics.FAILURE_REASONS``) from the first scrape on, so ``increase()`` and the alerts see the
first failure too. A kind added later gets this by declaring its reason set there.

Example (abridged)::

    # HELP probe_success 1 if the most recent run of the check succeeded.
    # TYPE probe_success gauge
    probe_success{check="api",kind="anthropic",upstream="claude"} 1.0
    # HELP probe_failures_total Failed runs of the check, by reason (...)
    # TYPE probe_failures_total counter
    probe_failures_total{check="api",kind="anthropic",reason="auth",upstream="claude"} 0.0
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

from prometheus_client import registry as client_registry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter import metrics as m
from exporter.checks.net import icmp_mode
from exporter.engine.state import CheckState, Histogram, StateStore
from exporter.engine.verdict import Verdicts

ORDER = {spec.name: i for i, spec in enumerate(m.all_specs())}

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

_LE: dict[tuple[float, ...], tuple[str, ...]] = {}


def le_strings(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` values of a histogram's buckets as prometheus_client writes its own, +Inf last
    (computed once per layout)."""
    les = _LE.get(bounds)
    if les is None:
        les = _LE[bounds] = (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]
    return les


def histogram_buckets(hist: Histogram) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs of ``hist``, the form HistogramMetricFamily takes."""
    out: list[tuple[str, float]] = []
    running = 0
    for le, n in zip(le_strings(hist.bounds), hist.counts, strict=False):
        running += n
        out.append((le, float(running)))
    out[-1] = ("+Inf", float(hist.count))
    return out


class Names:
    """The sample names and label names of one spec's family, worked out once per (spec,
    vantage label): the same names prometheus_client's own metric families give their
    samples (a counter's family name loses its ``_total``, its sample keeps it)."""

    __slots__ = ("bucket", "count", "family", "labels", "sum", "value")

    def __init__(self, spec: m.MetricSpec, label_names: tuple[str, ...]) -> None:
        base = spec.name[:-6] if spec.type == "counter" and spec.name.endswith("_total") \
            else spec.name
        self.family = base
        self.value = base + "_total" if spec.type == "counter" else base
        self.bucket, self.count, self.sum = base + "_bucket", base + "_count", base + "_sum"
        self.labels = label_names


# A series' label dicts by (family name, label values): the series' own, then one per bucket.
LabelSets = dict[tuple[str, tuple[str, ...]], tuple[dict[str, str], ...]]


class Series:
    """Samples of some families, grouped by spec in first-use order.

    Samples are built as the families' own ``add_metric`` builds them (same names, same label
    dicts, same values), straight into ``Sample`` tuples: ``add_metric`` re-zips the label
    names and, for a histogram, rebuilds a list per bucket, most of a collect's time.
    ``extra_labels`` (the vantage) are appended to every series; ``names`` may be shared by
    every Series with the same extra label names. ``labels`` keeps the label dicts used, by
    (family name, label values): a check's next Series reuses those of its previous one
    (``previous``), so that a new result allocates new samples but not new label sets (a
    histogram has one per bucket); sets no longer used are dropped with the old Series.
    """

    def __init__(self, extra_labels: Sequence[tuple[str, str]] = (),
                 names: dict[str, Names] | None = None,
                 previous: LabelSets | None = None) -> None:
        self._extra_names = tuple(n for n, _ in extra_labels)
        self._extra_values = tuple(v for _, v in extra_labels)
        self._names = {} if names is None else names
        self.labels: LabelSets = {}
        self._previous: LabelSets = {} if previous is None else previous
        # By name: a spec's own (dataclass) hash would be recomputed on every lookup.
        self.by_spec: dict[str, tuple[m.MetricSpec, list[Sample]]] = {}

    def names(self, spec: m.MetricSpec) -> Names:
        names = self._names.get(spec.name)
        if names is None:
            names = self._names[spec.name] = Names(spec, (*spec.labels, *self._extra_names))
        return names

    def _samples(self, spec: m.MetricSpec) -> list[Sample]:
        entry = self.by_spec.get(spec.name)
        if entry is None:
            entry = self.by_spec[spec.name] = (spec, [])
        return entry[1]

    def _labels(self, names: Names, values: Sequence[str],
                les: tuple[str, ...] = ()) -> tuple[dict[str, str], ...]:
        """The series' label set, then one per ``le`` (for a histogram's buckets)."""
        key = (names.family, tuple(values))
        sets = self.labels.get(key) or self._previous.get(key)
        if sets is None or len(sets) != len(les) + 1:
            base = dict(zip(names.labels, (*values, *self._extra_values), strict=False))
            sets = (base, *({**base, "le": le} for le in les))
        self.labels[key] = sets
        return sets

    def add(self, spec: m.MetricSpec, values: Sequence[str], value: float) -> None:
        names = self.names(spec)
        self._samples(spec).append(Sample(names.value, self._labels(names, values)[0], value))

    def histogram(self, spec: m.MetricSpec, values: Sequence[str], hist: Histogram) -> None:
        names = self.names(spec)
        les = le_strings(hist.bounds)
        labels, *buckets = self._labels(names, values, les)
        samples = self._samples(spec)
        bucket = names.bucket
        running = 0
        for le_labels, n in zip(buckets[:-1], hist.counts, strict=False):
            running += n
            samples.append(Sample(bucket, le_labels, float(running)))
        count = float(hist.count)
        samples.append(Sample(bucket, buckets[-1], count))
        if float(les[0]) >= 0:  # as HistogramMetricFamily: no sum and count under 0
            samples.append(Sample(names.count, labels, count))
            samples.append(Sample(names.sum, labels, hist.sum))


class Families(Series):
    """Metric families being built for one collect(), one per spec, keyed by name; they come
    out in the order metrics.py defines their specs."""

    def __init__(self, extra_labels: Sequence[tuple[str, str]] = (),
                 names: dict[str, Names] | None = None) -> None:
        super().__init__(extra_labels, names)
        self._families: dict[str, Metric] = {}

    def family(self, spec: m.MetricSpec, help_text: str | None = None,
               label_names: Sequence[str] | None = None) -> Metric:
        family = self._families.get(spec.name)
        if family is None:
            names = [*(spec.labels if label_names is None else label_names), *self._extra_names]
            text = spec.help if help_text is None else help_text
            if spec.type == "counter":
                family = CounterMetricFamily(spec.name, text, labels=names)
            elif spec.type == "histogram":
                family = HistogramMetricFamily(spec.name, text, labels=names)
            else:
                family = GaugeMetricFamily(spec.name, text, labels=names)
            self._families[spec.name] = family
        return family

    def _samples(self, spec: m.MetricSpec) -> list[Sample]:
        return self.family(spec).samples

    def extend(self, spec: m.MetricSpec, samples: list[Sample]) -> None:
        """Samples built earlier (by a Series with the same extra labels)."""
        self.family(spec).samples.extend(samples)

    def __iter__(self) -> Iterator[Metric]:
        # By spec name: a counter family's own name has lost its _total.
        order = sorted(self._families, key=lambda name: ORDER.get(name, len(ORDER)))
        return iter([self._families[name] for name in order])


class CheckSeries(NamedTuple):
    """One check's samples as of one version of its state (and one vantage)."""

    state: CheckState
    version: int
    vantage: str | None
    by_spec: tuple[tuple[m.MetricSpec, list[Sample]], ...]
    labels: LabelSets


def add_check(out: Series, state: CheckState) -> None:
    """Every series of one check (or status page) from its state."""
    if state.check.witness is not None:
        add_witness(out, state)
        return
    statuspage = state.check.kind == "statuspage"
    pick = 1 if statuspage else 0
    ident = (state.check.upstream,) if statuspage else state.label_values(m.PROBE_SUCCESS)
    last = state.last
    if last is not None:
        out.add(_GENERIC["success"][pick], ident, 1.0 if last.success else 0.0)
        out.add(_GENERIC["duration"][pick], ident, last.duration_seconds)
        if statuspage:
            if state.last_success is not None:
                out.add(m.STATUSPAGE_LAST_SUCCESS, ident, state.last_success.finished_at)
        else:
            out.add(m.PROBE_LAST_RUN, ident, last.finished_at)
    out.add(_GENERIC["runs"][pick], ident, float(state.runs))
    failures = _GENERIC["failures"][pick]
    for reason in m.reasons_with(state.check.kind, state.failures):
        out.add(failures, (*ident, reason), float(state.failures.get(reason, 0)))
    for sample in state.gauges():
        out.add(sample.metric, state.label_values(sample.metric, sample), sample.value)
    for (spec, values), total in state.counters.items():
        out.add(spec, values, total)
    for (spec, values), hist in state.histograms.items():
        out.histogram(spec, values, hist)


def add_witness(out: Series, state: CheckState) -> None:
    """A dependency or crowd poll: its generic series and the feed's gauges."""
    witness = state.check.witness
    assert witness is not None
    success, polls, failures = _WITNESS_GENERIC[witness.role]
    ident = (state.check.upstream, witness.name)
    if state.last is not None:
        out.add(success, ident, 1.0 if state.last.success else 0.0)
    out.add(polls, ident, float(state.runs))
    for reason in m.reasons_with(state.check.kind, state.failures):
        out.add(failures, (*ident, reason), float(state.failures.get(reason, 0)))
    for sample in state.gauges():
        out.add(sample.metric, state.label_values(sample.metric, sample), sample.value)


Extra = Callable[[Families], None]


class Collector:
    """client_python Collector: the state store, the verdicts and the exporter's own facts.

    ``probe_requests`` returns /probe's request counts by (module, outcome); ``extra`` are
    more producers (the running exporter adds its task count), each called on every collect.
    """

    def __init__(self, state: StateStore, verdicts: Verdicts,
                 probe_requests: Callable[[], dict[tuple[str, str], int]] = dict,
                 extra: Iterable[Extra] = ()) -> None:
        self.state = state
        self.verdicts = verdicts
        self.probe_requests = probe_requests
        self.extra = list(extra)
        self.vantage: str | None = None
        self.bodies = Bodies()
        # Each check's samples, rebuilt only when its state changed since the last collect:
        # between two scrapes most checks ran once at most, and none ran for a second scraper.
        self._series: dict[tuple[str, str], CheckSeries] = {}
        self._names: tuple[str | None, dict[str, Names]] = (None, {})

    def collect(self) -> Iterator[Metric]:
        extra = (("vantage", self.vantage),) if self.vantage else ()
        if self._names[0] != self.vantage:  # the label names gained or lost "vantage"
            self._names = (self.vantage, {})
        names = self._names[1]
        out = Families(extra, names)
        fresh: dict[tuple[str, str], CheckSeries] = {}
        for key, state in self.state.checks.items():
            entry = self._series.get(key)
            same = entry is not None and entry.state is state and entry.vantage == self.vantage
            if entry is None or not same or entry.version != state.version:
                series = Series(extra, names, entry.labels if entry is not None and same else None)
                add_check(series, state)
                entry = CheckSeries(state, state.version, self.vantage,
                                    tuple(series.by_spec.values()), series.labels)
            fresh[key] = entry
            for spec, samples in entry.by_spec:
                out.extend(spec, samples)
        self._series = fresh  # removed checks leave with their samples
        self._verdicts(out)
        self._self(out)
        for produce in self.extra:
            produce(out)
        return iter(out)

    def render(self) -> bytes:
        """The text format of one collect(), for tools and tests (the web handler negotiates)."""
        return generate_latest(registry_for(self))

    def _verdicts(self, out: Families) -> None:
        now = time.time()
        for upstream, current in self.verdicts.by_upstream.items():
            for verdict in m.STATE_SETS["verdict"]:
                out.add(m.UPSTREAM_VERDICT, (upstream, verdict),
                        1.0 if current.decision.verdict == verdict else 0.0)
            out.add(m.UPSTREAM_VERDICT_SINCE, (upstream,), current.since)
            out.add(m.UPSTREAM_OUTAGE_UNACKNOWLEDGED, (upstream,),
                    self.verdicts.unacknowledged_seconds(upstream, now))
            for witness in m.WITNESSES:
                said = current.decision.witnesses.get(witness, "unknown")
                for view in m.WITNESS_VIEWS:
                    out.add(m.UPSTREAM_WITNESS, (upstream, witness, view),
                            1.0 if said == view else 0.0)

    def _self(self, out: Families) -> None:
        out.add(m.EXPORTER_BUILD_INFO, (__version__, platform.python_version()), 1.0)
        out.add(m.EXPORTER_RELOAD_SUCCESS, (), self.state.reload_success)
        out.add(m.EXPORTER_RELOAD_SUCCESS_TIMESTAMP, (), self.state.reload_success_timestamp)
        out.add(m.EXPORTER_CHECKS, (), float(len(self.state.checks)))
        out.histogram(m.EXPORTER_SCHEDULER_LAG, (), self.state.scheduler_lag)
        out.add(m.EXPORTER_ICMP_MODE, (icmp_mode.detect(),), 1.0)
        for (module, outcome), count in sorted(self.probe_requests().items()):
            out.add(m.EXPORTER_PROBE_REQUESTS, (module, outcome), float(count))


def asyncio_tasks(out: Families) -> None:
    """exporter_asyncio_tasks, for a collector that runs on the event loop (the web handler)."""
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # collected outside a running loop (a test, a tool): nothing to count
        return
    out.add(m.EXPORTER_ASYNCIO_TASKS, (), float(tasks))


class Snapshot:
    """Families already built (by Collector.collect on the event loop), as a Collector:
    writing them out can then happen off the loop without touching live state."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


Encoder = Callable[[client_registry.Collector], bytes]  # as choose_encoder gives them


def same_families(a: Sequence[Metric], b: Sequence[Metric]) -> bool:
    """Whether ``a`` and ``b`` would be written out byte for byte alike. ``==`` first (in C,
    and a cached check's samples are the very same objects); then every sample that is not
    the same object by its written value, since ``==`` takes -0.0 for 0.0."""
    if len(a) != len(b) or list(a) != list(b):
        return False
    for fa, fb in zip(a, b, strict=True):
        for sa, sb in zip(fa.samples, fb.samples, strict=True):
            if sa is not sb and floatToGoString(sa.value) != floatToGoString(sb.value):  # type: ignore[no-untyped-call]
                return False
    return True


class Bodies:
    """The last answer written per (content type, ``name[]`` filter), served again while the
    families it was written from stay the same: a second scraper (an HA pair), or a scrape
    between two runs of long-interval checks, then costs a comparison instead of a write.
    At most ``size`` answers are kept (a large one is megabytes): one per format by default."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._last: dict[tuple[str, tuple[str, ...]], tuple[list[Metric], bytes]] = {}

    def write(self, families: list[Metric], names: Sequence[str], content_type: str,
              encoder: Encoder) -> bytes:
        """The answer for ``families`` in ``encoder``'s format; safe to call from a thread
        (the families are not changed after collect, the dict is only replaced whole)."""
        key = (content_type, tuple(names))
        last = self._last.get(key)
        if last is not None and same_families(last[0], families):
            return last[1]
        registry = registry_for(Snapshot(families))
        body = encoder(registry.restricted_registry(names) if names else registry)
        kept = {k: v for k, v in self._last.items() if k != key}
        while len(kept) >= self.size:
            del kept[next(iter(kept))]
        kept[key] = (families, body)
        self._last = kept
        return body


def registry_for(collector: Collector | Snapshot) -> CollectorRegistry:
    """A registry of its own (never the global REGISTRY) serving only ``collector``; the
    collector names no metrics up front, so ``name[]`` filtering must ask it at each scrape."""
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(collector)
    return registry
