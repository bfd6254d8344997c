"""Scenarios through the real exporter and the simulator: the verdict a person would give."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tests.conftest import EXPORTER, PYTHONPATH_ENV, Scrape

KEY_ENV = "VERDICT_TEST_KEY"
KEY = "sk-ant-test-verdict-0123456789abcdef"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim, *, api_mode: str = "keyless", control_target: str | None = None,
           link_api: bool = True) -> str:
    host_port = sim.url.removeprefix("http://")
    key = f", api_key_env: {KEY_ENV}" if api_mode != "keyless" else ""
    component = ", component: k8w3r06qmzrp" if link_api else ""
    return f"""\
defaults: {{interval: 500ms, timeout: 400ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim.statuspage_url}", interval: 1s}}
    checks:
      - {{name: api, kind: anthropic, url: "{sim.anthropic_url}", mode: {api_mode}{key}{component}}}
      - {{name: tcp, kind: tcp, target: "{host_port}", component: k8w3r06qmzrp}}
control:
  - {{name: control-a, kind: tcp, target: "{control_target or host_port}"}}
  - {{name: control-b, kind: tcp, target: "{control_target or host_port}"}}
"""


def verdict(scrape: Scrape) -> str | None:
    on = [dict(lbl)["verdict"] for lbl, v in scrape.all("upstream_verdict", upstream="claude").items() if v == 1]
    return on[0] if on else None


SCENARIOS = [
    # (simulator scenario, probe mode, verdict)
    ("operational", "keyless", "operational"),
    ("api_outage_unacknowledged", "keyless", "outage"),
    ("major_outage", "keyless", "outage"),
    ("maintenance", "keyless", "maintenance"),
    ("spend_limit", "models", "own_quota"),
    ("unauthorized", "models", "own_quota"),
    ("degraded", "keyless", "degraded"),
]


@pytest.mark.parametrize(("scenario", "mode", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario_verdict(run_simulator, run_exporter, scenario: str, mode: str, expected: str) -> None:
    sim = run_simulator(scenario)
    exporter = run_exporter(config(sim, api_mode=mode), env={KEY_ENV: KEY})
    scrape = exporter.wait_for(lambda s: verdict(s) == expected, timeout=15)
    assert verdict(scrape) == expected


def test_page_green_and_api_overloaded_is_an_unacknowledged_outage_that_grows(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim))
    exporter.wait_for(lambda s: verdict(s) == "operational")
    sim.set_scenario("api_outage_unacknowledged")
    first = exporter.wait_for(lambda s: (s.value("upstream_outage_unacknowledged_seconds", upstream="claude") or 0) > 0)
    later = exporter.wait_for(lambda s: s.value("upstream_outage_unacknowledged_seconds", upstream="claude")
                              > first.value("upstream_outage_unacknowledged_seconds", upstream="claude") + 1)
    assert verdict(later) == "outage"
    status = json.loads(exporter.get("/api/v1/status")[1])["upstreams"][0]
    assert status["decided_by"] == ["probes"]
    assert status["signals"][-1] == "the status page does not show it yet"
    # The page catches up: the outage is acknowledged and the unacknowledged time returns to 0.
    sim.set_scenario("major_outage")
    done = exporter.wait_for(lambda s: s.value("upstream_outage_unacknowledged_seconds", upstream="claude") == 0)
    assert verdict(done) == "outage"


def test_page_shows_a_partial_outage_while_our_probes_pass(run_simulator, run_exporter) -> None:
    # Only the TCP check stands for the API component; it keeps passing while the page says
    # partial outage: the page alone decides.
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim, link_api=False))
    exporter.wait_for(lambda s: verdict(s) == "operational")
    sim.set_scenario("partial_outage")
    scrape = exporter.wait_for(lambda s: verdict(s) in ("outage",))
    assert scrape.value("probe_success", upstream="claude", check="tcp", kind="tcp") == 1


def test_failing_control_targets_mean_local_network(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim, control_target=f"127.0.0.1:{closed_port()}"))
    scrape = exporter.wait_for(lambda s: verdict(s) == "local_network")
    assert scrape.value("probe_success", upstream="control", check="control-a", kind="tcp") == 0


CHECK_EXIT = [("operational", 0, "OPERATIONAL"), ("major_outage", 1, "OUTAGE"), ("unauthorized", 2, "OWN_QUOTA")]


@pytest.mark.parametrize(("scenario", "code", "word"), CHECK_EXIT, ids=[c[0] for c in CHECK_EXIT])
def test_check_command_prints_a_table_and_exits_by_verdict(run_simulator, tmp_path, scenario: str, code: int,
                                                           word: str) -> None:
    sim = run_simulator(scenario)
    path = tmp_path / "c.yml"
    path.write_text(config(sim, api_mode="models"))
    proc = subprocess.run([EXPORTER, "check", f"--config.file={path}"], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin", KEY_ENV: KEY, **PYTHONPATH_ENV})
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"claude: {word}\n")
    assert "control targets:" in proc.stdout
    assert KEY not in proc.stdout + proc.stderr


def test_check_command_json_output(run_simulator, tmp_path) -> None:
    sim = run_simulator("operational")
    path = tmp_path / "c.yml"
    path.write_text(config(sim))
    proc = subprocess.run([EXPORTER, "check", f"--config.file={path}", "--output=json"], capture_output=True,
                          text=True, timeout=30)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0
    assert data["upstreams"][0]["verdict"] == "operational"
    assert {c["name"] for c in data["upstreams"][0]["checks"]} == {"api", "tcp"}


def test_check_command_local_network_exits_2(run_simulator, tmp_path) -> None:
    sim = run_simulator("operational")
    path = tmp_path / "c.yml"
    path.write_text(config(sim, control_target=f"127.0.0.1:{closed_port()}"))
    proc = subprocess.run([EXPORTER, "check", f"--config.file={path}"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout.startswith("claude: LOCAL_NETWORK")
