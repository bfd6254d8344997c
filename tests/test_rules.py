"""Alert and recording rules, their unit tests, runbooks and the Alertmanager example, checked
with the real promtool 2.42 and amtool 0.25 (Debian packages `prometheus`,
`prometheus-alertmanager`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from conftest import ROOT, require_binary
from promstack import bare_counters, exported_series_names, selector_names

ALERTS_DIR = ROOT / "alerts"
RULE_FILES = sorted(ALERTS_DIR.glob("*.rules.yml"))
UNIT_TESTS = sorted((ALERTS_DIR / "tests").glob("*.test.yml"))
AM_EXAMPLE = ALERTS_DIR / "alertmanager.example.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTS_DOC = ROOT / "docs" / "alerts.md"
RUNBOOK_BASE = ("https://github.com/claude-status-exporter/claude-status-exporter/blob/main/"
                "docs/runbooks.md#")
PREFIX = "ClaudeStatus"
SEVERITIES = {"critical", "warning", "info"}
SCOPES = {"provider", "account", "local", "control", "exporter", "maintenance"}
RECEIVER_BY_SEVERITY = {"critical": "pager", "warning": "ticket", "info": "null"}


# Pages that rest on the exporter's own debounce (outage_after failed runs in a row): their
# `for:` only rides out a late scrape, so it may be as short as their group's evaluation
# interval (docs/alerts.md, time to page).
DEBOUNCED_BY_THE_EXPORTER = {"ClaudeStatusUpstreamOutage", "ClaudeStatusOutageGlobal",
                             "ClaudeStatusOutageLocalized"}


def group_interval(alertname: str) -> float | None:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            if any(r.get("alert") == alertname for r in group["rules"]):
                return duration_seconds(group["interval"]) if "interval" in group else None
    return None


def load_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


ALERT_RULES = [r for r in load_rules() if "alert" in r]
RECORDING_RULES = [r for r in load_rules() if "record" in r]
ALERT_NAMES = sorted({r["alert"] for r in ALERT_RULES})


def rule_id(rule: dict[str, Any]) -> str:
    name = rule.get("alert") or rule["record"]
    extra = rule.get("labels", {}).get("severity") or rule.get("labels", {}).get("quantile")
    return f"{name}[{extra}]" if extra else name


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ALERTS_DIR)


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", text))


# -- promtool -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_passes_promtool_lint(path: Path) -> None:
    promtool = require_binary("promtool")
    result = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    promtool = require_binary("promtool")
    result = run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """The suite above is only worth something if promtool fails on a wrong expectation."""
    promtool = require_binary("promtool")
    source = ALERTS_DIR / "tests" / "exporter.test.yml"
    text = source.read_text().replace("severity: critical, scope: exporter, job",
                                      "severity: warning, scope: exporter, job", 1)
    text = text.replace("../", f"{ALERTS_DIR}/")
    broken = tmp_path / "broken.test.yml"
    broken.write_text(text)
    result = run(promtool, "test", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def unit_test_cases() -> list[dict[str, Any]]:
    cases = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


@pytest.mark.parametrize("alertname", ALERT_NAMES)
def test_every_alert_has_firing_and_quiet_unit_tests(alertname: str) -> None:
    cases = [c for c in unit_test_cases() if c["alertname"] == alertname]
    firing = [c for c in cases if c.get("exp_alerts")]
    quiet = [c for c in cases if not c.get("exp_alerts")]
    assert firing, f"no unit test where {alertname} fires"
    assert quiet, f"no unit test where {alertname} stays quiet"
    severities = {r["labels"]["severity"] for r in ALERT_RULES if r["alert"] == alertname}
    tested = {a["exp_labels"]["severity"] for c in firing for a in c["exp_alerts"]}
    assert severities <= tested, f"{alertname}: severities {severities - tested} never fire"


# -- conventions --------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_alert_follows_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(PREFIX + r"(?:[A-Z][a-z0-9]+)+", name), name
    labels, notes = rule["labels"], rule["annotations"]
    assert labels["severity"] in SEVERITIES
    assert labels["scope"] in SCOPES
    assert set(notes) == {"summary", "description", "runbook_url"}
    summary = notes["summary"]
    assert "{{" not in summary, "summary must be a static sentence"
    assert summary[0].isupper() and summary.endswith("."), summary
    assert "{{" in notes["description"], "description must be templated"
    assert notes["runbook_url"] == RUNBOOK_BASE + name.lower()
    hold = duration_seconds(rule.get("for", "0s"))
    if name in DEBOUNCED_BY_THE_EXPORTER:
        interval = group_interval(name)
        assert interval is not None and interval <= 15, "evaluated at a fixed, short interval"
        assert hold >= interval, "for: at least one evaluation interval"
    elif labels["severity"] != "info":
        assert hold >= 60, "for: must be at least 1m"


@pytest.mark.parametrize("rule", RECORDING_RULES, ids=rule_id)
def test_recording_rule_name_is_level_metric_operation(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


@pytest.mark.parametrize("rule", load_rules(), ids=rule_id)
def test_rule_reads_only_series_that_exist(rule: dict[str, Any]) -> None:
    """Every metric a rule reads is exported by the exporter (exporter/metrics.py), is `up`,
    or is recorded by another rule."""
    known = exported_series_names() | {r["record"] for r in RECORDING_RULES}
    used = selector_names(promql_parser.parse(rule["expr"]))
    assert used, "no selector found"
    assert used <= known, f"unknown series: {sorted(used - known)}"


@pytest.mark.parametrize("rule", load_rules(), ids=rule_id)
def test_rule_reads_counters_only_through_rate_or_increase(rule: dict[str, Any]) -> None:
    assert not bare_counters(promql_parser.parse(rule["expr"]))


# -- runbooks and docs -------------------------------------------------------------------------

def runbook_sections() -> dict[str, str]:
    """Level-2 headings of docs/runbooks.md by GitHub anchor, with their text."""
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            current = re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


@pytest.mark.parametrize("alertname", ALERT_NAMES)
def test_runbook_has_a_section_for_the_alert(alertname: str) -> None:
    sections = runbook_sections()
    anchor = alertname.lower()
    assert anchor in sections, f"docs/runbooks.md has no '## {alertname}'"
    text = sections[anchor]
    for part in ("**Meaning**", "**Confirm**", "**Act**"):
        assert part in text, f"{alertname}: runbook section lacks {part}"


def test_runbook_has_no_section_without_an_alert() -> None:
    orphans = set(runbook_sections()) - {n.lower() for n in ALERT_NAMES}
    assert not orphans


def test_alerts_doc_names_every_alert_and_recording_rule() -> None:
    text = ALERTS_DOC.read_text()
    missing = [n for n in ALERT_NAMES + [r["record"] for r in RECORDING_RULES] if n not in text]
    assert not missing


# -- Alertmanager example ----------------------------------------------------------------------

def test_alertmanager_example_passes_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    result = run(amtool, "check-config", str(AM_EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def route(labels: dict[str, str]) -> str:
    amtool = require_binary("amtool")
    pairs = [f"{k}={v}" for k, v in labels.items()]
    result = run(amtool, "config", "routes", "test", f"--config.file={AM_EXAMPLE}", *pairs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(("labels", "receiver"), [
    ({"alertname": "ClaudeStatusUpstreamOutage", "severity": "critical"}, "pager"),
    ({"alertname": "ClaudeStatusPageUnreachable", "severity": "warning"}, "ticket"),
    ({"alertname": "ClaudeStatusUpstreamMaintenance", "severity": "info"}, "null"),
    ({"alertname": "SomethingElse"}, "ticket"),
    ({"alertname": "SomethingElse", "severity": "none"}, "ticket"),
])
def test_alertmanager_routes_by_severity(labels: dict[str, str], receiver: str) -> None:
    assert route(labels) == receiver


def test_alertmanager_route_verification_fails_on_a_wrong_receiver() -> None:
    amtool = require_binary("amtool")
    result = run(amtool, "config", "routes", "test", f"--config.file={AM_EXAMPLE}",
                 "--verify.receivers=pager", "severity=warning")
    assert result.returncode != 0


@pytest.mark.parametrize("rule", ALERT_RULES, ids=rule_id)
def test_every_alert_reaches_the_receiver_of_its_severity(rule: dict[str, Any]) -> None:
    amtool = require_binary("amtool")
    labels = {"alertname": rule["alert"], **rule["labels"], "upstream": "claude"}
    expected = RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]
    result = run(amtool, "config", "routes", "test", f"--config.file={AM_EXAMPLE}",
                 f"--verify.receivers={expected}", *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
