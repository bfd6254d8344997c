"""The collector's fast paths: its samples are those prometheus_client's own metric families
build, and its per-check cache never serves a series a fresh collector would not.

The oracles are prometheus_client itself (``add_metric`` of its family classes) and a fresh
Collector over the same state (nothing cached), compared byte for byte in both formats, and
after the text parser read both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics as m
from exporter.checks.base import Result, Sample
from exporter.config import CheckConfig, load_text
from exporter.engine.state import Histogram, StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition.collector import (
    Bodies,
    Collector,
    Families,
    Snapshot,
    histogram_buckets,
    registry_for,
)

# -- samples as prometheus_client's families build them -------------------------------------------

GAUGE = m.PROBE_HTTP_DURATION
COUNTER = m.PROBE_API_TOKENS
HISTOGRAM = m.PROBE_API_TTFT


def observed(*values: float) -> Histogram:
    hist = Histogram(HISTOGRAM.buckets)
    for value in values:
        hist.observe(value)
    return hist


@pytest.mark.parametrize("vantage", [(), (("vantage", "eu-1"),)])
@pytest.mark.parametrize(("spec", "values", "value"), [
    (GAUGE, ("u", "c", "connect"), 0.25),
    (GAUGE, ("u", 'quote " and \\ back\nslash', "tls"), float("nan")),
    (COUNTER, ("u", "c", "claude-x", "input"), 12.0),
    (COUNTER, ("u", "c", "", "output"), 0.0),
    (HISTOGRAM, ("u", "c", "claude-x"), observed()),
    (HISTOGRAM, ("u", "c", "claude-x"), observed(0.05, 0.3, 3.0, 99.0)),
])
def test_families_build_the_samples_add_metric_builds(
        vantage: tuple[tuple[str, str], ...], spec: m.MetricSpec, values: tuple[str, ...],
        value: float | Histogram) -> None:
    names = [*spec.labels, *(n for n, _ in vantage)]
    label_values = [*values, *(v for _, v in vantage)]
    ours = Families(vantage)
    reference: Metric
    if isinstance(value, Histogram):
        ours.histogram(spec, values, value)
        reference = HistogramMetricFamily(spec.name, spec.help, labels=names)
        reference.add_metric(label_values, histogram_buckets(value), value.sum)
    elif spec.type == "counter":
        ours.add(spec, values, value)
        reference = CounterMetricFamily(spec.name, spec.help, labels=names)
        reference.add_metric(label_values, value)
    else:
        ours.add(spec, values, value)
        reference = GaugeMetricFamily(spec.name, spec.help, labels=names)
        reference.add_metric(label_values, value)
    [family] = list(ours)
    # repr: NaN is never equal to itself, its repr is
    assert repr(family) == repr(reference)
    assert generate_latest(registry_for(Snapshot([family]))) \
        == generate_latest(registry_for(Snapshot([reference])))



# -- the per-check cache against a fresh collector -----------------------------------------------

CONFIG = """\
upstreams:
  u:
    statuspage: {url: "http://127.0.0.1:9/"}
    checks:
      - {name: a, kind: anthropic, url: "http://127.0.0.1:9"}
      - {name: t, kind: tcp, target: "127.0.0.1:9"}
      - {name: h, kind: http, url: "http://127.0.0.1:9/"}
    crowd:
      - {name: openrouter, kind: openrouter, url: "http://127.0.0.1:9/api/v1",
         models: [anthropic/claude-sonnet-4.6]}
"""
WITHOUT_T = CONFIG.replace('      - {name: t, kind: tcp, target: "127.0.0.1:9"}\n', "")


@dataclass
class World:
    state: StateStore
    collector: Collector  # long-lived: its cache sees every step

    def check(self, name: str) -> CheckConfig:
        return next(s.check for s in self.state.checks.values() if s.check.name == name)


def ok(gauges: tuple[Sample, ...] = (), counters: tuple[Sample, ...] = (),
       observations: tuple[Sample, ...] = ()) -> Result:
    return Result(True, 0.12, gauges=gauges, counters=counters, observations=observations,
                  finished_at=1_700_000_000.0)


def run(world: World, name: str, result: Result) -> None:
    world.state.record(world.check(name), result)


STEPS: list[tuple[str, Callable[[World], None]]] = [
    ("nothing ran yet", lambda w: None),
    ("a run succeeds", lambda w: run(w, "t", ok())),
    ("a run fails", lambda w: run(w, "t", Result(False, 2.0, "refused", finished_at=1.0))),
    ("gauges, counters and observations", lambda w: run(w, "a", ok(
        gauges=(Sample(m.PROBE_API_OUTPUT_TOKENS_PER_SECOND, 55.0),),
        counters=(Sample(m.PROBE_API_TOKENS, 7.0, {"direction": "input"}),),
        observations=(Sample(m.PROBE_API_TTFT, 0.4),)))),
    ("a gauge label value changes", lambda w: run(w, "h", ok(
        gauges=(Sample(m.PROBE_HTTP_DURATION, 0.01, {"phase": "connect"}),)))),
    ("another one", lambda w: run(w, "h", ok(
        gauges=(Sample(m.PROBE_HTTP_DURATION, 0.02, {"phase": "tls"}),)))),
    ("a check crashes", lambda w: w.state.crashed(w.check("h"))),
    ("a vantage is set", lambda w: setattr(w.collector, "vantage", "eu-1")),
    ("the vantage changes", lambda w: setattr(w.collector, "vantage", "us-2")),
    ("a reload drops a check", lambda w: w.state.sync(load_text(WITHOUT_T, "test"))),
    ("it comes back with the same name", lambda w: w.state.sync(load_text(CONFIG, "test"))),
    ("the vantage goes", lambda w: setattr(w.collector, "vantage", None)),
    ("the returned check runs", lambda w: run(w, "t", ok())),
]


def test_a_long_lived_collector_serves_what_a_fresh_one_would() -> None:
    state = StateStore()
    state.sync(load_text(CONFIG, "test"))
    world = World(state, Collector(state, Verdicts()))
    for step, change in STEPS:
        change(world)
        fresh = Collector(state, Verdicts())
        fresh.vantage = world.collector.vantage
        for write in (generate_latest, openmetrics_latest):
            cached_body = write(registry_for(world.collector))
            assert cached_body == write(registry_for(fresh)), step
        parsed = [(f.name, f.type, f.samples) for f in
                  text_string_to_metric_families(generate_latest(registry_for(fresh)).decode())]
        assert parsed == [(f.name, f.type, f.samples) for f in text_string_to_metric_families(
            generate_latest(registry_for(world.collector)).decode())], step


# -- answers kept while their families stay the same ----------------------------------------------

def gauges(*values: float, name: str = "g", help_text: str = "A gauge.") -> list[Metric]:
    family = GaugeMetricFamily(name, help_text, labels=["i"])
    for i, value in enumerate(values):
        family.add_metric([str(i)], value)
    return [family]


ZERO = gauges(0.0, 1.0)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.mark.parametrize(("accept", "names"), [("", ()), (OPENMETRICS, ()), ("", ("g",)),
                                                ("", ("g", "other"))])
@pytest.mark.parametrize(("second", "kept"), [
    (ZERO, True),  # the very same families
    (gauges(0.0, 1.0), True),  # equal, rebuilt
    (gauges(float("nan"), 1.0), False),
    (gauges(-0.0, 1.0), False),  # == says equal, the writers do not
    (gauges(0.0, 2.0), False),
    (gauges(0.0, 1.0, 2.0), False),
    (gauges(0.0, 1.0, help_text="Other help."), False),
    (gauges(0.0, 1.0, name="h"), False),
    ([], False),
])
def test_bodies_serve_what_the_writer_writes_now(accept: str, names: tuple[str, ...],
                                                 second: list[Metric], kept: bool) -> None:
    encoder, content_type = choose_encoder(accept)
    bodies = Bodies()
    first = bodies.write(ZERO, list(names), content_type, encoder)
    again = bodies.write(second, list(names), content_type, encoder)
    registry = registry_for(Snapshot(second))
    assert again == encoder(registry.restricted_registry(names) if names else registry)
    assert (again is first) == kept


def test_bodies_keep_one_answer_per_format() -> None:
    text, text_type = choose_encoder("")
    om, om_type = choose_encoder(OPENMETRICS)
    bodies = Bodies()
    first_text = bodies.write(ZERO, [], text_type, text)
    first_om = bodies.write(ZERO, [], om_type, om)
    assert bodies.write(ZERO, [], text_type, text) is first_text
    assert bodies.write(ZERO, [], om_type, om) is first_om
