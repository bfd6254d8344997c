"""Metric definitions follow the SPEC and the Prometheus naming rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED, require_shared

from exporter import metrics

SPECS = metrics.all_specs()
RESERVED = {"service", "job", "instance", "namespace", "pod", "endpoint", "type", "vantage"}
# The SPEC's witness table names these labels itself (docs/witnesses.md says how they read
# behind a Kubernetes ServiceMonitor: as exported_service and exported_endpoint).
SPEC_NAMED = {"dependency_incident_info": {"service"},
              "crowd_endpoint_uptime_ratio": {"endpoint"}, "crowd_endpoint_status_code": {"endpoint"}}


def test_names_are_unique() -> None:
    names = [s.name for s in SPECS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_naming_rules(spec: metrics.MetricSpec) -> None:
    assert spec.name.endswith("_total") == (spec.type == "counter")
    clash = RESERVED & set(spec.labels) - SPEC_NAMED.get(spec.name, set())
    assert not clash, "clashes with Kubernetes target labels or vantage"
    assert spec.help.endswith(".")
    if spec.type == "histogram":
        assert list(spec.buckets) == sorted(spec.buckets) and spec.buckets


def test_every_metric_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert [s.name for s in SPECS if f"`{s.name}`" not in doc] == []


def test_the_spec_names_are_all_defined() -> None:
    require_shared()
    spec_md = (SHARED / "SPEC.md").read_text()
    defined = {s.name for s in SPECS}
    for name in ("statuspage_component_status", "statuspage_incident_info", "probe_api_ttft_seconds",
                 "probe_icmp_rtt_seconds", "upstream_verdict", "upstream_outage_unacknowledged_seconds",
                 "exporter_icmp_mode_info", "exporter_scheduler_lag_seconds", "probe_ssl_earliest_cert_expiry"):
        assert f"`{name}`" in spec_md and name in defined
