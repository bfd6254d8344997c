"""The running exporter, end to end: real console script, real simulator, real scrapes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Exporter, Scrape, raw_exchange, require_binary


def refused_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim_url: str, *, interval: str = "1s", extra_checks: str = "", vantage: str = "") -> str:
    return (f"vantage: {vantage}\n" if vantage else "") + f"""\
defaults: {{interval: {interval}, timeout: 900ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim_url}/status", interval: 1s}}
    checks:
      - {{name: front-door, kind: tcp, target: "{sim_url.removeprefix('http://')}"}}
{extra_checks}control:
  - {{name: loopback, kind: tcp, target: "{sim_url.removeprefix('http://')}"}}
"""


def test_metrics_come_from_a_real_scrape_and_pass_promtool(run_simulator, run_exporter, tmp_path: Path) -> None:
    sim = run_simulator("operational")
    exporter: Exporter = run_exporter(config(sim.url))
    scrape = exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="claude") == 1)
    assert scrape.value("probe_success", upstream="claude", check="front-door", kind="tcp") == 1
    assert scrape.value("probe_success", upstream="control", check="loopback", kind="tcp") == 1
    assert scrape.one_hot("statuspage_indicator", "indicator", upstream="claude") == "none"
    assert scrape.one_hot("upstream_verdict", "verdict", upstream="claude") == "operational"
    assert scrape.value("exporter_config_last_reload_successful") == 1
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], input=scrape.text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_health_and_readiness(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url))
    assert exporter.get("/-/healthy")[0] == 200
    assert exporter.get("/-/ready")[0] == 200  # run_exporter waited for it: first round done


def test_a_failing_upstream_does_not_stop_the_exporter(run_exporter) -> None:
    dead = f"http://127.0.0.1:{refused_port()}"
    exporter = run_exporter(config(dead))
    scrape = exporter.wait_for(lambda s: (s.value("statuspage_polls_total", upstream="claude") or 0) >= 2)
    assert scrape.value("statuspage_poll_success", upstream="claude") == 0
    assert scrape.value("statuspage_poll_failures_total", upstream="claude", reason="connect") >= 1
    assert scrape.value("probe_failures_total", upstream="claude", check="front-door", kind="tcp",
                        reason="connect") >= 1
    assert exporter.get("/-/healthy")[0] == 200


def test_a_bad_reload_keeps_the_old_config(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url))
    assert exporter.config_path is not None
    exporter.config_path.write_text("upstreams: {claude: {checks: [{name: x, kind: tcp}]}}\n")
    status, body = exporter.post("/-/reload")
    assert status == 500
    assert "upstreams.claude.checks[0]: missing required key target for kind tcp" in body
    scrape = exporter.wait_for(lambda s: s.value("exporter_config_last_reload_successful") == 0)
    runs = scrape.value("probe_runs_total", upstream="claude", check="front-door", kind="tcp")
    later = exporter.wait_for(
        lambda s: s.value("probe_runs_total", upstream="claude", check="front-door", kind="tcp") > runs)
    assert later.value("probe_success", upstream="claude", check="front-door", kind="tcp") == 1


def test_a_reload_drops_removed_checks_and_keeps_counters_of_the_rest(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    target = sim.url.removeprefix("http://")
    extra = f'      - {{name: second, kind: tcp, target: "{target}"}}\n'
    exporter = run_exporter(config(sim.url, extra_checks=extra))
    before = exporter.wait_for(
        lambda s: (s.value("probe_runs_total", upstream="claude", check="second", kind="tcp") or 0) >= 1)
    runs_before = before.value("probe_runs_total", upstream="claude", check="front-door", kind="tcp")
    assert exporter.config_path is not None
    exporter.config_path.write_text(config(sim.url))
    exporter.proc.send_signal(signal.SIGHUP)
    after = exporter.wait_for(
        lambda s: s.value("probe_runs_total", upstream="claude", check="second", kind="tcp") is None)
    assert after.all("probe_success", check="second") == {}
    assert after.value("probe_runs_total", upstream="claude", check="front-door", kind="tcp") >= runs_before
    assert after.value("exporter_config_last_reload_successful") == 1


def test_vantage_labels_every_series(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url), "--vantage=eu-west")
    scrape = exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="claude") == 1)
    unlabelled = [name for (name, labels) in scrape.samples if ("vantage", "eu-west") not in labels]
    assert unlabelled == []


def test_status_json_and_landing_page_explain_the_verdict(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url))
    exporter.wait_for(lambda s: s.value("upstream_verdict", upstream="claude", verdict="operational") == 1)
    status, body, headers = exporter.get("/api/v1/status")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    claude = data["upstreams"][0]
    assert (claude["name"], claude["verdict"]) == ("claude", "operational")
    assert claude["decided_by"] == ["probes", "statuspage"]
    assert claude["checks"][0]["name"] == "front-door" and claude["checks"][0]["result"] == "ok"
    assert claude["statuspage"]["indicator"] == "none"
    assert data["control"][0]["name"] == "loopback"
    status, html, headers = exporter.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "claude: Operational" in html and "front-door" in html and "Control targets" in html


def test_logs_in_json(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url), "--log.format=json")
    exporter.stop()
    records = [json.loads(line) for line in exporter.log().splitlines() if line.startswith("{")]
    assert {"started", "listening", "shutting down"} <= {r["msg"] for r in records}
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


def test_sigterm_stops_cleanly(run_simulator, run_exporter) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url))
    assert exporter.stop(signal.SIGTERM) == 0
    assert "Traceback" not in exporter.log()


def test_a_scrape_parses_with_the_reference_parser(run_simulator, run_exporter) -> None:
    sim = run_simulator("major_outage")
    exporter = run_exporter(config(sim.url))
    scrape: Scrape = exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="claude") == 1)
    states = scrape.all("statuspage_component_status", upstream="claude", component_id="k8w3r06qmzrp")
    assert len(states) == 6 and sum(states.values()) == 1
    assert scrape.one_hot("statuspage_component_status", "status", component_id="k8w3r06qmzrp") == "major_outage"


BAD_REQUESTS = [
    b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n",  # not a method
    bytes.fromhex("160301002e010000") + b"\r\n\r\n",  # a TLS record on the plain port
    b"GET /metrics HTTP/1.1\r\n\r\n",  # no Host header
    b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",  # spaces in the target
    b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\nGET \x01 HTTP/1.1\r\nHost: x\r\n\r\n",  # 2nd broken
]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_a_bad_request_is_the_clients_fault_not_an_error_in_our_log(run_simulator, run_exporter,
                                                                    level: str) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim.url), f"--log.level={level}")
    for raw in BAD_REQUESTS:
        reply = raw_exchange(exporter.url, raw)  # our side open: it answers, then closes
        # aiohttp answers a request it could not parse as HTTP/1.0
        assert reply.startswith(b"HTTP/1.") and re.search(rb"HTTP/1\.[01] 400 ", reply), (raw, reply)
    assert exporter.get("/-/healthy")[0] == 200
    exporter.stop()
    log = exporter.log()
    assert "level=error" not in log and "Traceback" not in log
    bad = [line for line in log.splitlines() if 'msg="bad request from 127.0.0.1: ' in line]
    if level == "info":
        assert not bad
    else:  # one line each, level debug, saying why
        assert len(bad) == len(BAD_REQUESTS) and all("level=debug" in line for line in bad), bad
        assert any("Host" in line for line in bad)
