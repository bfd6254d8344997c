"""parse(): real payloads from public pages, then every odd shape the pages are known to send."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import FIXTURES, OWN_FIXTURES, require_shared

from exporter import metrics
from exporter.config import StatuspageConfig
from exporter.witnesses.statuspage import (
    Page,
    SchemaError,
    apply_filters,
    gauges,
    parse,
    parse_timestamp,
    summary_url,
    unmatched_filters,
)

# Every status-page document names its page; tests of other keys add this.
NAMED: dict[str, Any] = {"page": {"id": "p", "name": "Test page"}}


def load(name: str) -> Any:
    require_shared()
    return json.loads((FIXTURES / name).read_text())


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def one_hot(samples: list[Any], state_label: str, **labels: str) -> str:
    on = [s.labels[state_label] for s in samples
          if all(s.labels.get(k) == v for k, v in labels.items()) and s.value == 1]
    assert len(on) == 1, on
    return on[0]


# -- real payloads ----------------------------------------------------------------------------

# file -> facts read off the payload by hand
FIXTURE_FACTS: dict[str, dict[str, Any]] = {
    "github-summary-incident-major.json": {
        "indicator": "minor",  # while the incident's impact is major: the indicator understates
        "updated_at": "2022-11-25T15:50:05.892+00:00",
        "components": 11,
        "not_operational": {"st3j38cctv9l": ("Packages", "", "partial_outage")},
        "incidents": [("ljwdk6qml8z8", "major", "investigating", "https://stspg.io/33vh8r7z43kh",
                       {"st3j38cctv9l", "vg70hn9s2tyj"})],
        "groups_absent": [],
    },
    "instructure-summary-incident-degraded.json": {
        "indicator": "minor",
        "updated_at": "2021-12-07T11:07:15.773-07:00",
        "components": 21,  # 24 rows minus 3 groups
        "not_operational": {
            "9dlvqx1drp3d": ("Canvas", "Canvas", "degraded_performance"),  # same name as group
            "j7jp6sq831c2": ("Website", "Portfolium", "degraded_performance"),
            "100xy482gkyf": ("Web Application", "Portfolium", "degraded_performance"),
            "c8zkn4rlhvw6": ("EDU Platform", "Portfolium", "degraded_performance"),
            "v6m5nhwgtshj": ("Assessments", "MasteryConnect", "degraded_performance"),
            "jt1kl5fj472f": ("Benchmarks", "MasteryConnect", "degraded_performance"),
            "142661pcf7h1": ("Portal", "MasteryConnect", "degraded_performance"),
            "xwqppk51m3mm": ("Reporting", "MasteryConnect", "degraded_performance"),
        },
        "incidents": [("g1zp3jpycgbz", "minor", "identified", "https://stspg.io/0vf16sb2j8xn",
                       {"v6m5nhwgtshj", "j7jp6sq831c2", "9dlvqx1drp3d", "jt1kl5fj472f",
                        "100xy482gkyf", "142661pcf7h1", "c8zkn4rlhvw6", "xwqppk51m3mm"})],
        "groups_absent": ["41wg86q5vc14", "9c01dg04bfg5", "qw5j90r2w7k1"],
    },
    "linode-components-groups-partial-outage.json": {
        "indicator": "unknown",  # components.json has no status block
        "updated_at": "2021-12-17T22:23:41.237+00:00",
        "components": 62,  # 68 rows minus 6 groups
        "not_operational": {
            cid: (name, "Regions", "partial_outage") for cid, name in (
                ("v8zpnn61fcdm", "US-East (Newark)"), ("s8355f9s5hpx", "US-Central (Dallas)"),
                ("v5mcdxdt9dtv", "US-West (Fremont)"), ("jzjmxld11n92", "EU-West (London)"),
                ("bxcfhjdf5c4k", "EU-Central (Frankfurt)"),
                ("ymhgjx06c93n", "AP-South (Singapore)"),
                ("94q3fkblbvs3", "AP-Northeast-2 (Tokyo 2)"))
        },
        "incidents": [],
        "groups_absent": ["kb0cf2d0rryb"],
    },
    "box-components-groups-degraded.json": {
        "indicator": "unknown",
        "updated_at": "2021-12-27T07:26:27.063-08:00",
        "components": 45,  # 52 rows minus 7 groups
        "not_operational": {
            "mbtpbpfcg6vg": ("Admin Console & Functionality", "Box Web Application",
                             "degraded_performance"),
        },
        "incidents": [],
        "groups_absent": ["l6vzpnn62cgq"],
    },
    "twilio-components-groups-degraded.json": {
        "indicator": "unknown",
        "updated_at": "2021-12-03T02:23:44.199-08:00",
        "components": 75,  # 85 rows minus 10 groups
        "not_operational": {
            "kqr83rygcwwf": ("SMS, Middle East & Africa", "CARRIER NETWORK",
                             "degraded_performance"),
        },
        "incidents": [],
        "groups_absent": ["j8hlnyphbbs0", "s2k3h0mkqnth"],
    },
}


def test_every_fixture_has_facts() -> None:
    require_shared()
    assert {p.name for p in FIXTURES.glob("*.json")} == set(FIXTURE_FACTS)


@pytest.mark.parametrize("name", sorted(FIXTURE_FACTS))
def test_fixture_page_facts(name: str) -> None:
    facts = FIXTURE_FACTS[name]
    page = parse(load(name))
    assert page.indicator == facts["indicator"]
    assert page.updated_at == pytest.approx(ts(facts["updated_at"]))
    assert len(page.components) == facts["components"]
    troubled = {c.id: (c.name, c.group, c.status) for c in page.components.values()
                if c.status != "operational"}
    assert troubled == facts["not_operational"]
    got = [(i.id, i.impact, i.status, i.shortlink, set(i.component_ids)) for i in page.incidents]
    assert got == facts["incidents"]
    for group_id in facts["groups_absent"]:
        assert group_id not in page.components
    assert page.maintenances == ()


@pytest.mark.parametrize("name", sorted(FIXTURE_FACTS))
def test_fixture_groups_label_their_children(name: str) -> None:
    raw = load(name)["components"]
    groups = {r["id"]: r["name"] for r in raw if r.get("group")}
    page = parse(load(name))
    assert not set(groups) & set(page.components)
    for row in raw:
        if row.get("group"):
            continue
        assert page.components[row["id"]].group == groups.get(row["group_id"] or "", "")
        assert page.components[row["id"]].name == row["name"]


def test_box_keeps_duplicate_names_apart() -> None:
    page = parse(load("box-components-groups-degraded.json"))
    logins = [c for c in page.components.values() if c.name == "Login/SSO"]
    assert len(logins) >= 2
    assert len({c.id for c in logins}) == len(logins)
    assert len({c.group for c in logins}) == len(logins)  # told apart by their group


@pytest.mark.parametrize("name", sorted(FIXTURE_FACTS))
def test_fixture_gauges_are_complete_state_sets(name: str) -> None:
    page = parse(load(name))
    samples = list(gauges(page))
    by_metric: dict[str, list[Any]] = {}
    for s in samples:
        by_metric.setdefault(s.metric.name, []).append(s)
    assert one_hot(by_metric["statuspage_indicator"], "indicator") == page.indicator
    assert len(by_metric["statuspage_indicator"]) == len(metrics.STATE_SETS["indicator"])
    component_samples = by_metric["statuspage_component_status"]
    assert len(component_samples) == len(page.components) * len(
        metrics.STATE_SETS["component_status"])
    for c in page.components.values():
        assert one_hot(component_samples, "status", component_id=c.id) == c.status
    open_by_impact = {s.labels["impact"]: s.value for s in by_metric["statuspage_incidents_open"]}
    assert set(open_by_impact) == set(metrics.INCIDENT_IMPACTS)
    assert sum(open_by_impact.values()) == len(page.incidents)
    assert len(by_metric.get("statuspage_incident_info", [])) == len(page.incidents)
    assert [s.value for s in by_metric["statuspage_maintenance_active"]] == [0.0]
    assert "statuspage_maintenance_next_start_timestamp_seconds" not in by_metric
    assert [s.value for s in by_metric["statuspage_page_updated_timestamp_seconds"]] == [
        page.updated_at]


def test_github_incident_info_labels() -> None:
    samples = [s for s in gauges(parse(load("github-summary-incident-major.json")))
               if s.metric is metrics.STATUSPAGE_INCIDENT_INFO]
    assert [dict(s.labels) for s in samples] == [{
        "incident_id": "ljwdk6qml8z8", "name": "Incident with Packages and Pages",
        "impact": "major", "status": "investigating", "shortlink": "https://stspg.io/33vh8r7z43kh",
    }]
    assert samples[0].value == 1.0


def own(name: str) -> Any:
    return json.loads((OWN_FIXTURES / "statuspage" / name).read_text())


def test_own_page_facts() -> None:
    """The project's own page (groups, an open incident, maintenance in progress and upcoming)
    gives the same facts on every machine, with or without ../shared."""
    page = parse(own("acme-summary-incident-major.json"))
    assert page.indicator == "major"
    assert page.updated_at == pytest.approx(ts("2026-11-30T09:12:44.118Z"))
    assert {c.id: (c.name, c.group, c.status) for c in page.components.values()} == {
        "acmeapi00001": ("API", "", "major_outage"),
        "acmeconsole1": ("Console", "", "operational"),
        "acmeregus001": ("US East", "Regions", "partial_outage"),
        "acmeregeu001": ("EU West", "Regions", "degraded_performance"),
        "acmewebhook1": ("Webhooks", "", "under_maintenance"),
    }
    assert [(i.id, i.impact, i.status, set(i.component_ids)) for i in page.incidents] == [
        ("acmeinc00001", "major", "identified", {"acmeapi00001"})]
    samples = {s.metric.name: s.value for s in gauges(page)
               if s.metric.name.startswith("statuspage_maintenance")}
    assert samples == {
        "statuspage_maintenance_active": 1.0,
        "statuspage_maintenance_next_start_timestamp_seconds": ts("2026-12-05T02:00:00.000Z"),
    }


def test_own_calm_page_is_operational() -> None:
    page = parse(own("calm-summary-operational.json"))
    assert page.indicator == "none"
    assert {c.status for c in page.components.values()} == {"operational"}
    assert page.incidents == ()


def test_only_metric_specs_the_prober_owns() -> None:
    """The state store derives poll success, counts, duration and last success itself."""
    names = {s.metric.name for s in gauges(parse(own("acme-summary-incident-major.json")))}
    assert not names & {"statuspage_poll_success", "statuspage_polls_total",
                        "statuspage_poll_failures_total", "statuspage_poll_duration_seconds",
                        "statuspage_last_success_timestamp_seconds"}
    for spec in (metrics.STATUSPAGE_INDICATOR, metrics.STATUSPAGE_COMPONENT_STATUS,
                 metrics.STATUSPAGE_INCIDENTS_OPEN, metrics.STATUSPAGE_INCIDENT_INFO):
        assert spec.name in names


# -- documents that are not status pages -------------------------------------------------------


@pytest.mark.parametrize("payload", [
    None, [], [{"id": "x"}], "summary", 42, True, {}, {"data": []},
    {"components": "all fine"}, {"components": {"id": "x"}}, {"page": []}, {"status": "ok"},
    {"incidents": {}}, {"scheduled_maintenances": "none"},
    # valid JSON without the page's required shape (hostile-input case 5)
    {"status": {"code": 200}}, {"page": {}}, {"components": []}, {"page": {"id": ""}},
    {"components": [{"id": "a", "status": "operational"}], "incidents": []},
], ids=repr)
def test_not_a_status_page_is_a_schema_error(payload: Any) -> None:
    with pytest.raises(SchemaError):
        parse(payload)


# -- tolerance: missing keys and unknown values -------------------------------------------------


@pytest.mark.parametrize(("payload", "indicator"), [
    ({**NAMED, "status": {}}, "unknown"),
    ({**NAMED, "status": None, "components": []}, "unknown"),
    ({"status": {"indicator": "none"}}, "none"),
    ({"status": {"indicator": "maintenance"}}, "maintenance"),
    ({"status": {"indicator": "MAJOR "}}, "major"),
    ({"status": {"indicator": "catastrophic"}}, "unknown"),
    ({**NAMED, "status": {"indicator": 3}}, "unknown"),
    ({"page": {"name": "P"}}, "unknown"),
])
def test_indicator(payload: dict[str, Any], indicator: str) -> None:
    assert parse(payload).indicator == indicator


@pytest.mark.parametrize(("row", "expected"), [
    ({"id": "a", "name": "A", "status": "operational"}, ("a", "A", "", "operational")),
    ({"id": "a", "name": "A"}, ("a", "A", "", "unknown")),
    ({"id": "a", "name": "A", "status": None}, ("a", "A", "", "unknown")),
    ({"id": "a", "name": "A", "status": "full_outage"}, ("a", "A", "", "major_outage")),
    ({"id": "a", "name": "A", "status": "FULL_OUTAGE"}, ("a", "A", "", "major_outage")),
    ({"id": "a", "name": "A", "status": "under_maintenance"},
     ("a", "A", "", "under_maintenance")),
    ({"id": "a", "name": "A", "status": "on_fire"}, ("a", "A", "", "unknown")),
    ({"id": "a", "name": "A", "status": 2}, ("a", "A", "", "unknown")),
    ({"id": "a", "status": "partial_outage"}, ("a", "a", "", "partial_outage")),
    ({"name": "Only a name", "status": "operational"},
     ("Only a name", "Only a name", "", "operational")),
    ({"id": 12345, "name": 7, "status": "operational"}, ("12345", "7", "", "operational")),
    ({"id": "a", "name": "A", "group_id": "missing-group", "status": "operational"},
     ("a", "A", "", "operational")),
    ({"id": "a", "name": "Zürich ☁️ 東京 \"quoted\"\nline", "status": "degraded_performance"},
     ("a", "Zürich ☁️ 東京 \"quoted\"\nline", "", "degraded_performance")),
], ids=lambda v: json.dumps(v, ensure_ascii=True) if isinstance(v, dict) else None)
def test_component_row(row: dict[str, Any], expected: tuple[str, str, str, str]) -> None:
    page = parse({**NAMED, "components": [row]})
    [c] = page.components.values()
    assert (c.id, c.name, c.group, c.status) == expected


def test_rows_without_id_or_name_and_non_objects_are_skipped() -> None:
    page = parse({**NAMED, "components": [None, "x", 5, [], {}, {"status": "major_outage"},
                                 {"id": "ok", "name": "OK", "status": "operational"}]})
    assert list(page.components) == ["ok"]


def test_duplicate_ids_keep_the_first_row() -> None:
    page = parse({**NAMED, "components": [{"id": "a", "name": "first", "status": "operational"},
                                 {"id": "a", "name": "second", "status": "major_outage"}]})
    assert [(c.name, c.status) for c in page.components.values()] == [("first", "operational")]


def test_duplicate_names_are_separate_components() -> None:
    page = parse({**NAMED, "components": [{"id": "a", "name": "Search", "status": "operational"},
                                 {"id": "b", "name": "Search", "status": "major_outage"}]})
    assert {cid: c.status for cid, c in page.components.items()} == {
        "a": "operational", "b": "major_outage"}


@pytest.mark.parametrize("group_row", [
    {"id": "g", "name": "Group", "group": True, "status": "major_outage"},
    {"id": "g", "name": "Group", "status": "major_outage", "components": ["c"]},  # no flag
    {"id": "g", "name": "Group", "group": True, "components": ["c"]},
])
def test_group_rows_are_not_components_but_label_children(group_row: dict[str, Any]) -> None:
    child = {"id": "c", "name": "Child", "status": "operational"}
    if "components" not in group_row:
        child["group_id"] = "g"
    page = parse({**NAMED, "components": [group_row, child]})
    assert list(page.components) == ["c"]
    assert page.components["c"].group == "Group"


def test_a_group_named_like_its_child_stays_out() -> None:
    page = parse({**NAMED, "components": [
        {"id": "g", "name": "Canvas", "group": True, "components": ["c"], "status": "minor"},
        {"id": "c", "name": "Canvas", "group_id": "g", "group": False,
         "status": "degraded_performance"},
    ]})
    assert [(c.id, c.name, c.group) for c in page.components.values()] == [
        ("c", "Canvas", "Canvas")]


def test_incident_with_nothing_but_an_empty_object() -> None:
    [incident] = parse({**NAMED, "incidents": [{}]}).incidents
    assert (incident.id, incident.name, incident.impact, incident.status, incident.shortlink,
            incident.component_ids) == ("", "", "unknown", "unknown", "", ())
    assert incident.open  # an unknown status is not "resolved"


@pytest.mark.parametrize(("impact", "expected"), [
    ("none", "none"), ("minor", "minor"), ("major", "major"), ("critical", "critical"),
    ("maintenance", "maintenance"), ("severe", "unknown"), (None, "unknown"),
])
def test_incident_impact(impact: Any, expected: str) -> None:
    [incident] = parse({**NAMED, "incidents": [{"id": "i", "impact": impact}]}).incidents
    assert incident.impact == expected


def test_incident_quirks_from_real_pages() -> None:
    """reminder_intervals as the string "[]", no started_at, no shortlink, no components."""
    payload = {**NAMED, "incidents": [{
        "id": "i1", "name": "API errors", "status": "monitoring", "impact": "major",
        "reminder_intervals": "[]", "components": None,
        "incident_updates": [
            {"status": "monitoring", "affected_components": None},
            {"status": "identified", "affected_components": [
                {"code": "k8w3r06qmzrp", "name": "old name", "old_status": "partial_outage",
                 "new_status": "partial_outage"}]},
            "not an update",
        ],
    }]}
    [incident] = parse(payload).incidents
    assert incident.component_ids == ("k8w3r06qmzrp",)
    assert incident.shortlink == ""
    assert incident.status == "monitoring"


def test_resolved_incidents_are_not_open() -> None:
    page = parse({**NAMED, "incidents": [
        {"id": "a", "status": "resolved", "impact": "major"},
        {"id": "b", "status": "postmortem", "impact": "critical"},
        {"id": "c", "status": "identified", "impact": "minor"},
    ]})
    assert [i.id for i in page.open_incidents] == ["c"]
    opened = {s.labels["impact"]: s.value for s in gauges(page)
              if s.metric is metrics.STATUSPAGE_INCIDENTS_OPEN}
    assert opened == {"none": 0, "minor": 1, "major": 0, "critical": 0, "maintenance": 0,
                      "unknown": 0}


@pytest.mark.parametrize(("status", "active", "upcoming"), [
    ("scheduled", False, True),
    ("in_progress", True, False),
    ("verifying", True, False),
    ("completed", False, False),
    ("maintenance_in_progress", True, False),  # incident.io's owner-API spelling
    ("maintenance_scheduled", False, True),
    ("paused", False, False),
])
def test_maintenance_status(status: str, active: bool, upcoming: bool) -> None:
    page = parse({**NAMED, "scheduled_maintenances": [{
        "id": "m", "name": "DB upgrade", "status": status, "impact": "maintenance",
        "scheduled_for": "2030-01-01T10:00:00.000Z", "scheduled_until": "2030-01-01T12:00:00Z",
        "components": [{"id": "k8w3r06qmzrp", "name": "Claude API"}],
    }]})
    assert page.maintenance_active is active
    assert page.components_in_maintenance == ({"k8w3r06qmzrp"} if active else set())
    assert page.next_maintenance_start == (ts("2030-01-01T10:00:00+00:00") if upcoming else None)
    by_name = {s.metric.name: s.value for s in gauges(page)}
    assert by_name["statuspage_maintenance_active"] == float(active)
    assert ("statuspage_maintenance_next_start_timestamp_seconds" in by_name) is upcoming


def test_next_maintenance_is_the_earliest_scheduled() -> None:
    page = parse({**NAMED, "scheduled_maintenances": [
        {"id": "late", "status": "scheduled", "scheduled_for": "2030-02-01T00:00:00Z"},
        {"id": "none", "status": "scheduled"},
        {"id": "early", "status": "scheduled", "scheduled_for": "2030-01-01T00:00:00Z"},
    ]})
    assert page.next_maintenance_start == ts("2030-01-01T00:00:00+00:00")


def test_under_maintenance_component_counts_as_in_maintenance() -> None:
    page = parse({**NAMED, "components": [{"id": "a", "name": "A", "status": "under_maintenance"}]})
    assert page.components_in_maintenance == {"a"}
    assert not page.maintenance_active


def test_incidentio_summary_shape() -> None:
    """Flat components with ULIDs, full_outage, no time_zone, no incidents or maintenances."""
    payload = {
        "page": {"id": "01JMDK9XYNY6RXSED6SDWW50WY", "name": "OpenAI",
                 "url": "https://status.openai.com", "updated_at": "2026-09-02T10:11:12Z"},
        "components": [
            {"id": "01JMDK9XYNY6RXSED6SDWW50WA", "name": "APIs", "status": "full_outage",
             "position": 1, "page_id": "01JMDK9XYNY6RXSED6SDWW50WY",
             "created_at": "2025-01-01T00:00:00Z", "updated_at": "2026-09-02T10:11:12Z"},
            {"id": "01JMDK9XYNY6RXSED6SDWW50WB", "name": "ChatGPT", "status": "operational",
             "position": 2, "page_id": "01JMDK9XYNY6RXSED6SDWW50WY",
             "created_at": "2025-01-01T00:00:00Z", "updated_at": "2026-09-02T10:11:12Z"},
        ],
        "status": {"indicator": "major", "description": "Partial System Outage"},
    }
    page = parse(payload)
    assert page.updated_at == ts("2026-09-02T10:11:12+00:00")
    assert page.status_of("01JMDK9XYNY6RXSED6SDWW50WA") == "major_outage"
    assert page.incidents == () and page.maintenances == ()


def test_a_thousand_components_with_unicode_and_duplicate_names() -> None:
    statuses = metrics.STATE_SETS["component_status"][:5]
    rows = [{"id": f"c{i:04d}", "name": f"Región {i % 10} — 東京", "status": statuses[i % 5],
             "group_id": f"g{i % 4}"} for i in range(1000)]
    rows += [{"id": f"g{g}", "name": f"Gruppe {g}", "group": True} for g in range(4)]
    started = time.perf_counter()
    page = parse({**NAMED, "components": rows, "status": {"indicator": "major"}})
    samples = gauges(page)
    assert time.perf_counter() - started < 1.0
    assert len(page.components) == 1000
    assert page.components["c0999"].group == "Gruppe 3"
    assert page.components["c0999"].name == "Región 9 — 東京"
    component_samples = [s for s in samples if s.metric is metrics.STATUSPAGE_COMPONENT_STATUS]
    assert len(component_samples) == 1000 * len(metrics.STATE_SETS["component_status"])
    assert sum(s.value for s in component_samples) == 1000


def test_very_long_names_are_capped() -> None:
    page = parse({**NAMED, "components": [{"id": "a", "name": "x" * 5000, "status": "operational"}],
                  "incidents": [{"id": "i", "name": "y" * 5000}]})
    assert len(page.components["a"].name) == 256
    assert len(page.incidents[0].name) == 256


# -- timestamps ---------------------------------------------------------------------------------

EPOCH = datetime(2021, 12, 7, 18, 7, 15, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "expected"), [
    ("2021-12-07T11:07:15.773-07:00", EPOCH + 0.773),  # millis and a page offset
    ("2021-12-07T18:07:15.773Z", EPOCH + 0.773),
    ("2021-12-07T18:07:15Z", EPOCH),  # incident.io: whole seconds
    ("2021-12-07T18:07:15+00:00", EPOCH),
    ("2021-12-08T03:37:15+09:30", EPOCH),
    ("2021-12-07T18:07:15", EPOCH),  # naive: read as UTC
    ("2021-12-07T18:07:15.773456789Z", EPOCH + 0.773456),  # nanoseconds
    ("2021-12-07", datetime(2021, 12, 7, tzinfo=UTC).timestamp()),  # start_date
    (EPOCH, EPOCH),
    (int(EPOCH * 1000), EPOCH),  # epoch milliseconds
    ("yesterday", None), ("", None), ("2021-13-45T00:00:00Z", None), (None, None),
    (True, None), ([], None), ({}, None), (float("nan"), None),
])
def test_parse_timestamp(value: Any, expected: float | None) -> None:
    got = parse_timestamp(value)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_unparseable_updated_at_omits_the_freshness_gauge() -> None:
    page = parse({"page": {"updated_at": "not a time"}, "status": {"indicator": "none"}})
    assert page.updated_at is None
    assert metrics.STATUSPAGE_PAGE_UPDATED not in {s.metric for s in gauges(page)}


# -- filters and URLs ------------------------------------------------------------------------

FILTER_PAGE = parse({**NAMED, "components": [
    {"id": "g1", "name": "Regions", "group": True},
    {"id": "a", "name": "API", "status": "operational"},
    {"id": "b", "name": "Console", "status": "major_outage"},
    {"id": "c", "name": "Newark", "group_id": "g1", "status": "partial_outage"},
    {"id": "d", "name": "Visit www.example.com for more", "status": "operational"},
]})


@pytest.mark.parametrize(("include", "exclude", "kept"), [
    ((), (), ["a", "b", "c", "d"]),
    (("a",), (), ["a"]),  # by id
    (("Console",), (), ["b"]),  # by name
    (("Regions",), (), ["c"]),  # by group name
    (("a", "Console"), (), ["a", "b"]),
    ((), ("Visit www.example.com for more",), ["a", "b", "c"]),  # drop a pseudo-component
    ((), ("Regions", "b"), ["a", "d"]),
    (("a", "b"), ("b",), ["a"]),  # exclude wins
    (("nothing",), (), []),
])
def test_component_filters(include: tuple[str, ...], exclude: tuple[str, ...],
                           kept: list[str]) -> None:
    options = StatuspageConfig(url="http://127.0.0.1", components=include,
                               exclude_components=exclude)
    assert list(apply_filters(FILTER_PAGE, options).components) == kept
    assert list(parse({**NAMED, "components": [
        {"id": c.id, "name": c.name, "status": c.status} for c in FILTER_PAGE.components.values()
    ] + [{"id": "g1", "name": "Regions", "group": True, "components": ["c"]}]},
        options).components) == kept


def test_unmatched_filters_are_reported() -> None:
    options = StatuspageConfig(url="http://127.0.0.1", components=("a", "typo"),
                               exclude_components=("also-typo",))
    assert unmatched_filters(FILTER_PAGE, options) == ["typo", "also-typo"]


def test_page_lookups() -> None:
    assert isinstance(FILTER_PAGE, Page)
    assert FILTER_PAGE.status_of("b") == "major_outage"
    assert FILTER_PAGE.status_of("zzz") is None
    found = FILTER_PAGE.find("Newark")
    assert found is not None and found.id == "c"
    assert FILTER_PAGE.find("a") is FILTER_PAGE.components["a"]


@pytest.mark.parametrize(("url", "expected"), [
    ("https://status.claude.com", "https://status.claude.com/api/v2/summary.json"),
    ("https://status.claude.com/", "https://status.claude.com/api/v2/summary.json"),
    ("https://anthropic.statuspage.io/api/v2/summary.json",
     "https://anthropic.statuspage.io/api/v2/summary.json"),
    ("http://127.0.0.1:8080/status", "http://127.0.0.1:8080/status/api/v2/summary.json"),
    ("http://127.0.0.1:8080/api/v2/components.json",
     "http://127.0.0.1:8080/api/v2/components.json"),
    ("http://127.0.0.1:8080/x.json?cache=no", "http://127.0.0.1:8080/x.json?cache=no"),
])
def test_summary_url(url: str, expected: str) -> None:
    assert summary_url(url) == expected
    assert StatuspageConfig(url=url).summary_url == expected  # agrees with the config
