"""Grafana dashboards: structure (no Grafana can run here), PromQL validity with the real
Prometheus 2.42 parser, and data: every panel, variable and annotation query returns data from
a real Prometheus that scrapes the real exporter running its --demo simulator."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from conftest import ROOT, Exporter, http_get, http_post, require_binary, start_exporter
from promstack import (
    Prometheus,
    bare_counters,
    exported_series_names,
    recorded_series_names,
    rules_evaluated_every,
    selector_names,
)

DASHBOARDS = ROOT / "dashboards"
RECORDING_RULES = sorted((ROOT / "alerts").glob("recording.rules.yml"))
# File name -> uid. The uids are part of the interface: links and alert dashboard_urls use them.
UIDS = {
    "overview.json": "claude-status-overview",
    "api.json": "claude-status-api",
    "network.json": "claude-status-network",
    "exporter.json": "claude-status-exporter",
}
DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all", "__value"}
# What Grafana would put in for its macros when the test evaluates a query.
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

# Queries that are legitimately empty while all is well, and the simulator scenario under
# which each must return data. docs/dashboards.md lists the same.
CONDITIONAL = {
    ("claude-status-overview", "Open incidents"): "major_outage",
    ("claude-status-overview", "Open cloud incidents"): "cloud_incident",
    ("claude-status-overview", "annotation: Status-page incidents"): "major_outage",
    ("claude-status-api", "annotation: Status-page incidents"): "major_outage",
    ("claude-status-overview", "annotation: Maintenance in progress"): "maintenance",
    ("claude-status-api", "Failures by reason"): "major_outage",
    ("claude-status-api", "API error types"): "major_outage",
    ("claude-status-exporter", "Status-page poll failures by reason"): "challenge_page",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return panels


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(var: dict[str, Any]) -> str:
    query = var["query"]
    return query["query"] if isinstance(query, dict) else query


def annotation_queries(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in dashboard["annotations"]["list"] if not a.get("builtIn")]


@dataclass(frozen=True)
class Query:
    uid: str
    panel: str  # panel title, or "annotation: <name>"
    ref: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.uid}/{self.panel}/{self.ref}"


def queries(dashboard: dict[str, Any]) -> list[Query]:
    uid = dashboard["uid"]
    found = [Query(uid, p["title"], t["refId"], t["expr"])
             for p in data_panels(dashboard) for t in p["targets"]]
    found += [Query(uid, f"annotation: {a['name']}", a["target"]["refId"], a["target"]["expr"])
              for a in annotation_queries(dashboard)]
    return found


ALL = {name: load(name) for name in sorted(UIDS)}
ALL_QUERIES = [q for d in ALL.values() for q in queries(d)]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana macros and template variables ($name and ${name})."""
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


PLACEHOLDERS = {"upstream": "claude", "vantage": ".*", "check": "api", "job": "claude-status-exporter"}


# -- structure ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(UIDS))
def test_uid_is_the_stable_one(name: str) -> None:
    assert ALL[name]["uid"] == UIDS[name]
    assert len(UIDS[name]) <= 40


def test_uids_and_titles_are_unique() -> None:
    assert len({d["uid"] for d in ALL.values()}) == len(ALL)
    assert len({d["title"] for d in ALL.values()}) == len(ALL)
    assert {p.name for p in DASHBOARDS.glob("*.json")} == set(UIDS)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_top_level(name: str) -> None:
    d = ALL[name]
    assert 39 <= d["schemaVersion"] <= 42
    assert "id" not in d and "version" not in d, "exported ids and versions break imports"
    for key in ("title", "description", "tags", "time", "refresh", "timezone"):
        assert d[key], key
    assert d["graphTooltip"] == 1


@pytest.mark.parametrize("name", sorted(UIDS))
def test_template_variables(name: str) -> None:
    d = ALL[name]
    listed = d["templating"]["list"]
    assert listed[0] == {**listed[0], "name": "datasource", "type": "datasource",
                         "query": "prometheus"}
    vs = variables(d)
    assert {"datasource", "upstream", "vantage"} <= set(vs)
    for var in listed[1:]:
        assert var["type"] == "query"
        assert var["datasource"] == DS
        assert var["includeAll"] and var["multi"]
        assert var["refresh"] == 2, "refresh on time-range change"
        assert re.fullmatch(r"label_values\(.+, \w+\)", variable_query(var))
    # vantage is optional on the exporter side: All must also match series without it
    assert vs["vantage"]["allValue"] == ".*"


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_and_target_uses_the_datasource_variable(name: str) -> None:
    for panel in data_panels(ALL[name]):
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == DS, (panel["title"], t["refId"])
    for annotation in annotation_queries(ALL[name]):
        assert annotation["datasource"] == DS, annotation["name"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_has_a_unit_a_title_and_a_description(name: str) -> None:
    for panel in data_panels(ALL[name]):
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert isinstance(unit, str) and unit, f"{panel['title']}: no unit"
        assert panel["title"] and panel["description"], panel.get("title")


@pytest.mark.parametrize("name", sorted(UIDS))
def test_panel_ids_ref_ids_and_layout(name: str) -> None:
    panels = all_panels(ALL[name])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)) and all(refs), p["title"]


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.id)
def test_query_is_valid_promql_on_real_series(query: Query) -> None:
    defined = set(variables(ALL[next(n for n, u in UIDS.items() if u == query.uid)]))
    used = set(re.findall(r"\$\{?(\w+)", query.expr)) - BUILTIN_VARS
    assert used <= defined, f"undefined variables {used - defined}"
    for window in re.findall(r"\[([^\]]+)\]", query.expr):
        assert window in ("$__rate_interval", "$__range"), f"range [{window}]"
    tree = promql_parser.parse(substitute(query.expr, PLACEHOLDERS))
    known = exported_series_names() | recorded_series_names(RECORDING_RULES)
    assert selector_names(tree) <= known, "a series neither the exporter nor a shipped rule makes"
    assert not bare_counters(tree), "a counter read without rate() or increase()"


def test_every_query_passes_the_prometheus_parser(tmp_path: Path) -> None:
    """Prometheus 2.42's own parser, through promtool: each query as a recording rule."""
    promtool = require_binary("promtool")
    exprs = [substitute(q.expr, PLACEHOLDERS) for q in ALL_QUERIES]
    for d in ALL.values():
        for var in list(variables(d).values())[1:]:
            selector = re.fullmatch(r"label_values\((.+), \w+\)", variable_query(var))
            assert selector
            exprs.append(substitute(selector.group(1), PLACEHOLDERS))
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# -- data from a real Prometheus scraping the demo ------------------------------------------------

@dataclass
class Stack:
    exporter: Exporter
    prometheus: Prometheus
    scenario_url: str

    def switch(self, scenario: str) -> None:
        status, body = http_post(self.scenario_url, json.dumps({"scenario": scenario}).encode())
        assert status == 200, body

    def expand_variables(self, dashboard: dict[str, Any]) -> dict[str, str]:
        """Every template variable set to all of its values, as Grafana's All does."""
        values: dict[str, str] = {}
        for var in list(variables(dashboard).values())[1:]:
            selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)",
                                           variable_query(var)).groups()  # type: ignore[union-attr]
            found = self.prometheus.label_values(label, substitute(selector, values))
            assert found, f"variable {var['name']}: {variable_query(var)} returned nothing"
            escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in found]
            values[var["name"]] = "(" + "|".join(escaped) + ")"
        return values

    def has_data(self, query: Query, values: dict[str, str]) -> bool:
        result = self.prometheus.query(substitute(query.expr, values))
        return any(r["value"][1] not in ("NaN", "+Inf", "-Inf") for r in result)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("dashboards")
    exporter = start_exporter(tmp, None, "--demo", "--vantage=lab")
    try:
        status, body, _ = http_get(exporter.url + "/api/v1/status")
        assert status == 200, body
        demo = json.loads(body)["demo"]
        target = exporter.url.removeprefix("http://")
        # The shipped recording rules (the availability panels read them), evaluated every
        # second so that the 5-minute groups record something within the test.
        rules = [rules_evaluated_every(p, tmp / p.name, "1s") for p in RECORDING_RULES]
        with Prometheus(tmp / "prometheus", [target], rules) as prometheus:
            yield Stack(exporter, prometheus, demo["simulator_url"] + "/_sim/scenario")
    finally:
        exporter.stop()


def wait_for_queries(stack: Stack, wanted: list[Query], timeout: float) -> list[str]:
    """Poll until every query returns a number; the ids of those that never did."""
    values = {d["uid"]: stack.expand_variables(d) for d in ALL.values()}
    pending = list(wanted)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [q for q in pending if not stack.has_data(q, values[q.uid])]
        if pending:
            time.sleep(1.0)
    return [q.id for q in pending]


def test_every_variable_query_returns_values(stack: Stack) -> None:
    stack.switch("operational")
    stack.prometheus.wait_for_data('up{job="claude-status-exporter"} == 1')
    for dashboard in ALL.values():
        deadline = time.monotonic() + 30
        while True:
            try:
                stack.expand_variables(dashboard)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)


def test_every_panel_query_returns_data_while_operational(stack: Stack) -> None:
    stack.switch("operational")
    unconditional = [q for q in ALL_QUERIES if (q.uid, q.panel) not in CONDITIONAL]
    # The slowest checks run every 10 s: histograms need two runs inside the rate window.
    missing = wait_for_queries(stack, unconditional, timeout=60)
    assert not missing, "queries without data:\n" + "\n".join(missing)


@pytest.mark.parametrize("scenario", sorted(set(CONDITIONAL.values())))
def test_conditional_queries_return_data_under_their_scenario(stack: Stack,
                                                              scenario: str) -> None:
    wanted = [q for q in ALL_QUERIES if CONDITIONAL.get((q.uid, q.panel)) == scenario]
    assert wanted
    stack.switch(scenario)
    try:
        missing = wait_for_queries(stack, wanted, timeout=45)
    finally:
        stack.switch("operational")
    assert not missing, f"queries without data under {scenario}:\n" + "\n".join(missing)


def test_conditional_list_names_real_panels() -> None:
    known = {(q.uid, q.panel) for q in ALL_QUERIES}
    assert set(CONDITIONAL) <= known
