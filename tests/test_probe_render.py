"""The /probe answer's text writer (exporter.probe.render) against prometheus_client.

The answer used to go through a prometheus_client registry per request; it is now written
directly. Each row below renders one Result both ways and wants the same bytes; promtool (the
Prometheus parser) must accept the new text too.
"""

from __future__ import annotations

import math
import subprocess
from collections import defaultdict
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter import metrics as m
from exporter import probe
from exporter.checks import Result, Sample
from tests.conftest import require_binary

# -- the reference: the answer as prometheus_client wrote it --------------------------------------


def _names(spec: m.MetricSpec) -> list[str]:
    return [n for n in spec.labels if n not in probe.IDENTITY_LABELS]


def _reference_families(result: Result) -> Iterator[Metric]:
    success = GaugeMetricFamily(m.PROBE_SUCCESS.name, probe.SUCCESS_HELP)
    success.add_metric([], 1.0 if result.success else 0.0)
    yield success
    duration = GaugeMetricFamily(m.PROBE_DURATION.name, probe.DURATION_HELP)
    duration.add_metric([], result.duration_seconds)
    yield duration
    grouped: dict[m.MetricSpec, list[Sample]] = defaultdict(list)
    for sample in (*result.gauges, *result.counters):
        grouped[sample.metric].append(sample)
    for spec, samples in grouped.items():
        names = _names(spec)
        family: GaugeMetricFamily | CounterMetricFamily
        if spec.type == "counter":
            family = CounterMetricFamily(spec.name, spec.help + probe.THIS_PROBE_ONLY,
                                         labels=names)
        else:
            family = GaugeMetricFamily(spec.name, spec.help, labels=names)
        for sample in samples:
            family.add_metric([str(sample.labels.get(n, "")) for n in names], sample.value)
        yield family
    observed: dict[m.MetricSpec, dict[tuple[str, ...], list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for sample in result.observations:
        key = tuple(str(sample.labels.get(n, "")) for n in _names(sample.metric))
        observed[sample.metric][key].append(sample.value)
    for spec, series in observed.items():
        hist = HistogramMetricFamily(spec.name, spec.help + probe.THIS_PROBE_ONLY,
                                     labels=_names(spec))
        for values, points in series.items():
            buckets = [(repr(float(bound)), float(sum(v <= bound for v in points)))
                       for bound in spec.buckets]
            buckets.append(("+Inf", float(len(points))))
            hist.add_metric(list(values), buckets, sum(points))
        yield hist


class _Reference:
    def __init__(self, result: Result) -> None:
        self.result = result

    def collect(self) -> Iterator[Metric]:
        return _reference_families(self.result)


def reference(result: Result) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reference(result))
    return generate_latest(registry)


# -- the table ----------------------------------------------------------------------------------

# Specs the exporter does not define, to reach label layouts that no /probe prober emits today:
# several extra labels around "le", a counter named without _total, a help text with a
# backslash and a newline.
SORTED_AROUND_LE = m.MetricSpec("test_layout_seconds", "histogram", "Layout test.",
                                ("upstream", "zone", "address", "kind"), (0.5, 1.0, 1e7))
COUNTER_NO_TOTAL = m.MetricSpec("test_events", "counter", "Events.", ("upstream", "event"))
ODD_HELP = m.MetricSpec("test_odd_help", "gauge", 'Back\\slash, "quotes"\nand a newline.')

CASES: dict[str, Result] = {
    "success only": Result(True, 0.000123),
    "failure, whole-number duration": Result(False, 2.0, "timeout", "timed out"),
    "gauges of a tcp run": Result(True, 0.0012, gauges=(
        Sample(m.PROBE_DNS_LOOKUP_TIME, 0.0),
        Sample(m.PROBE_IP_ADDR_HASH, 3_619_153_832.0),
        Sample(m.PROBE_IP_PROTOCOL, 4.0),
        Sample(m.PROBE_TCP_CONNECT, 6.5e-05),
    )),
    "labelled gauges, interleaved specs": Result(True, 0.5, gauges=(
        Sample(m.PROBE_HTTP_DURATION, 0.001, {"phase": "connect"}),
        Sample(m.PROBE_HTTP_STATUS_CODE, 200.0),
        Sample(m.PROBE_HTTP_DURATION, 0.002, {"phase": "processing"}),
        Sample(m.PROBE_HTTP_DURATION, 0.0, {}),  # a missing label renders as ""
    )),
    "several extra labels, sorted by name": Result(True, 0.1, gauges=(
        Sample(m.PROBE_DNS_ANSWERS, 1.0, {"family": "ipv6", "address": "::1"}),
        Sample(m.PROBE_DNS_ANSWERS, 1.0, {"family": "ipv4", "address": "127.0.0.1"}),
    )),
    "label values needing escapes": Result(True, 0.1, gauges=(
        Sample(m.PROBE_TLS_VERSION_INFO, 1.0, {"version": 'a"b\\c\nd'}),
        Sample(m.PROBE_ADDRESS_SUCCESS, 0.0, {"address": "é ünïcode ☃"}),
    )),
    "counters get _total": Result(True, 0.02, counters=(
        Sample(m.PROBE_ICMP_SENT, 3.0),
        Sample(m.PROBE_ICMP_RECEIVED, 2),  # an int value is written as a float
        Sample(m.PROBE_API_TOKENS, 12.0, {"direction": "input"}),
        Sample(m.PROBE_API_TOKENS, 40.0, {"direction": "output"}),
        Sample(COUNTER_NO_TOTAL, 1.0, {"event": "x"}),
    )),
    "a spec among gauges and counters": Result(True, 0.02, gauges=(
        Sample(m.PROBE_API_ERRORS, 1.0, {"error_type": "overloaded"}),),
        counters=(Sample(m.PROBE_API_ERRORS, 2.0, {"error_type": "other"}),)),
    "NaN and infinities": Result(False, math.inf, gauges=(
        Sample(m.PROBE_HTTP_CONTENT_LENGTH, math.nan),
        Sample(m.PROBE_API_RETRY_AFTER, -math.inf),
        Sample(m.PROBE_API_OUTPUT_TOKENS_PER_SECOND, math.inf),
    )),
    "Go's exponent rules": Result(True, 1e-07, gauges=(
        Sample(m.PROBE_SSL_EARLIEST_CERT_EXPIRY, 1_767_225_600.0),
        Sample(m.PROBE_HTTP_CONTENT_LENGTH, 123456.0),
        Sample(m.PROBE_API_RATELIMIT_REMAINING, 1234567.5, {"resource": "tokens"}),
        Sample(m.PROBE_API_RATELIMIT_LIMIT, 1e22, {"resource": "tokens"}),
        Sample(m.PROBE_API_RATELIMIT_RESET, -2.5e-9, {"resource": "requests"}),
        Sample(m.PROBE_API_UPSTREAM_SERVICE_TIME, 0.1 + 0.2),
        Sample(ODD_HELP, 1.0),
    )),
    "one histogram observation": Result(True, 0.0003, observations=(
        Sample(m.PROBE_ICMP_RTT, 4.2e-05),)),
    "histogram: edges, beyond the last bucket, several series": Result(
        True, 0.3, counters=(Sample(m.PROBE_ICMP_SENT, 4.0),), observations=(
            Sample(m.PROBE_ICMP_RTT, 0.0005),  # exactly a bound: counted in it
            Sample(m.PROBE_ICMP_RTT, 9.0),  # above every bound: only in +Inf
            Sample(m.PROBE_ICMP_RTT, 0.0),
            Sample(m.PROBE_API_TTFT, 0.4),
            Sample(SORTED_AROUND_LE, 0.7, {"zone": 'q"z', "address": "a"}),
            Sample(SORTED_AROUND_LE, 2e7, {"zone": "b", "address": "a"}),
            Sample(SORTED_AROUND_LE, 0.1, {"zone": 'q"z', "address": "a"}),
        )),
    "histogram: NaN and infinite observations": Result(True, 0.3, observations=(
        Sample(m.PROBE_ICMP_RTT, math.nan),
        Sample(m.PROBE_ICMP_RTT, 0.003),
        Sample(m.PROBE_ICMP_RTT, math.inf),
        Sample(m.PROBE_API_TTFT, -math.inf),
        Sample(m.PROBE_API_TTFT, 0.2),
    )),
}


@pytest.mark.parametrize("result", CASES.values(), ids=CASES.keys())
def test_render_writes_what_prometheus_client_wrote(result: Result) -> None:
    assert probe.render(result).decode() == reference(result).decode()


@pytest.mark.parametrize("result", CASES.values(), ids=CASES.keys())
def test_promtool_accepts_the_answer(result: Result) -> None:
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=probe.render(result),
                             capture_output=True, timeout=30, check=False)
    # promtool's lint may warn (exit 3, e.g. a counter without _total in its help name); a
    # parse error exits 1 and says "error while linting".
    assert checked.returncode in (0, 3), checked.stderr.decode()
    assert b"error while linting" not in checked.stderr


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1.0"), (0.0, "0.0"), (-0.0, "-0.0"), (3, "3.0"), (0.25, "0.25"),
    (123456.0, "123456.0"), (1234567.0, "1.234567e+06"), (1e6, "1e+06"),
    (12345678.9, "1.23456789e+07"), (-1234567.0, "-1234567.0"), (1e22, "1e+22"),
    (1e-07, "1e-07"), (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
])
def test_go_float(value: float, text: str) -> None:
    assert probe.go_float(value) == text
