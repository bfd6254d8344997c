"""Three vantages, one view: each vantage is an exporter in its own network namespace, scraped
by a Prometheus in agent mode in the same namespace that remote-writes (the protocol Mimir,
Thanos and Cortex ingest) to one central Prometheus on the host, which runs the shipped rules.
The central view tells a local problem from a regional one from a global one, and notices a
vantage that stops reporting.

The provider (the simulator) and a control target run on the host; each vantage reaches them,
and the central Prometheus, over its veth. Cutting a vantage drops the new connections it
makes to the provider and control target (nftables); taking its link down silences it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXPORTER, free_port, http_get, http_post, require_binary, require_root
from tests.netns import TCP_SERVER, Hosts, TestHost
from tests.promstack import JOB, Prometheus, rules_evaluated_every, scaled_rules

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "alerts").glob("*.rules.yml"))
LOOKBACK = "10s"  # the central's query lookback: a silent vantage's series vanish this soon


def vantage_config(host: TestHost, sim_port: int, control_port: int) -> str:
    provider = f"{host.host_ip}:{sim_port}"
    return f"""\
defaults: {{interval: 500ms, timeout: 400ms}}
upstreams:
  claude:
    statuspage: {{url: "http://{provider}/status", interval: 1s, timeout: 900ms}}
    checks:
      - {{name: api, kind: anthropic, url: "http://{provider}/anthropic", mode: keyless, component: k8w3r06qmzrp}}
control:
  - {{name: control-a, kind: tcp, target: "{host.host_ip}:{control_port}"}}
  - {{name: control-b, kind: tcp, target: "{host.host_ip}:{control_port}"}}
"""


def cut(host: TestHost, port: int | None = None, spare: int | None = None) -> None:
    """Drop new outgoing connections from the vantage: all of them, or only to ``port``; the
    agent's scrapes inside the namespace (loopback) and its connections to the central
    Prometheus (port ``spare``) keep working."""
    match = f"tcp dport {port} " if port else ""
    keep = f"    oif lo accept\n    tcp dport {spare} accept\n" if spare else ""
    host.nft("table inet cut {\n"
             "  chain output {\n"
             "    type filter hook output priority 0; policy accept;\n"
             f"{keep}"
             f"    {match}ct state new drop\n"
             "  }\n"
             "}\n")


def start_agent(host: TestHost, exporter_url: str, central: str, workdir: Path) -> None:
    """A Prometheus in agent mode inside the vantage's namespace: it scrapes the exporter there
    and remote-writes everything to ``central``."""
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [
            {"targets": [exporter_url.removeprefix("http://")]}]}],
        "remote_write": [{"url": f"{central}/api/v1/write", "queue_config": {
            "batch_send_deadline": "500ms", "min_backoff": "100ms", "max_backoff": "1s"}}],
    }
    (workdir / "agent.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = host.spawn(binary, "--enable-feature=agent", f"--config.file={workdir / 'agent.yml'}",
                      f"--storage.agent.path={workdir / 'wal'}",
                      f"--web.listen-address={host.ip}:{port}", "--log.level=warn",
                      log=workdir / "agent.log")
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (workdir / "agent.log").read_text()
        try:
            if http_get(f"http://{host.ip}:{port}/-/ready", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "agent not ready:\n" + (workdir / "agent.log").read_text()
        time.sleep(0.1)


def central_rules(tmp_path: Path) -> list[Path]:
    """The shipped rules with every for: divided by 60 and every group evaluated each second;
    expressions, thresholds and windows as shipped."""
    out = []
    for path in RULE_FILES:
        scaled = scaled_rules(path, tmp_path / f"scaled-{path.name}", 60)
        out.append(rules_evaluated_every(scaled, tmp_path / path.name, "1s"))
    return out


def firing(prom: Prometheus, alertname: str) -> list[dict[str, str]]:
    return prom.firing(alertname)


def wait_firing(prom: Prometheus, alertname: str, timeout: float = 45.0, **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while not [a for a in firing(prom, alertname) if labels.items() <= a.items()]:
        assert time.monotonic() < deadline, f"{alertname} {labels} never fired"
        time.sleep(0.25)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """The simulator and a control listener on every host address (the veths reach them)."""
    sim_port, control_port = free_port(), free_port()
    log = (tmp_path / "sim.log").open("wb")
    procs = [
        subprocess.Popen([EXPORTER, "simulate", "--scenario=operational", f"--listen=0.0.0.0:{sim_port}"],
                         stdout=log, stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "-c", TCP_SERVER, "0.0.0.0", str(control_port)]),
    ]
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _ = http_post(f"http://127.0.0.1:{sim_port}/_sim/scenario", b'{"scenario": "operational"}')
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sim_port}", sim_port, control_port
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


def wait_value(prom: Prometheus, expr: str, want: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := value(prom, expr)) != want:
        assert time.monotonic() < deadline, f"{expr} = {got}, wanted {want}"
        time.sleep(0.25)


def test_three_vantages_remote_write_one_view(provider, tmp_path: Path) -> None:
    require_root()
    require_binary("prometheus")
    require_binary("nft")
    sim_url, sim_port, control_port = provider
    with Hosts() as hosts, Prometheus(
            tmp_path / "central", [], central_rules(tmp_path), listen_host="0.0.0.0",
            extra_args=("--web.enable-remote-write-receiver",
                        f"--query.lookback-delta={LOOKBACK}")) as prom:
        vantages = {name: hosts.new() for name in ("a", "b", "c")}
        for name, host in vantages.items():
            exporter = host.start_exporter(vantage_config(host, sim_port, control_port),
                                           f"--vantage={name}")
            start_agent(host, exporter.url, f"http://{host.host_ip}:{prom.port}", tmp_path / f"agent-{name}")
        a, c = vantages["a"], vantages["c"]
        reporting = 'upstream:vantages_reporting:count{upstream="claude"}'
        outage = 'upstream:vantages_outage:count{upstream="claude"}'
        ratio = 'upstream:vantages_outage:ratio{upstream="claude"}'
        local = 'sum by (upstream) (upstream_verdict{upstream="claude", verdict="local_network"})'

        # Every vantage reaches the central Prometheus, each with its own label.
        wait_value(prom, 'count(group by (vantage) (upstream_verdict{upstream="claude"}))', 3)
        wait_value(prom, reporting, 3)
        wait_value(prom, outage, 0)

        # Vantage a loses its network: a local problem, not the provider's; the others
        # still report.
        cut(a, spare=prom.port)
        wait_value(prom, local, 1)
        wait_value(prom, reporting, 2)
        wait_value(prom, outage, 0)

        # Only a's path to the provider breaks (its control target still answers): down from
        # one place of three, a regional problem.
        a.clear_rules()
        cut(a, sim_port, spare=prom.port)
        wait_value(prom, outage, 1)
        wait_value(prom, reporting, 3)
        wait_value(prom, ratio, 1 / 3)
        wait_firing(prom, "ClaudeStatusOutageLocalized", upstream="claude")
        assert not firing(prom, "ClaudeStatusOutageGlobal")

        # The provider itself fails: every vantage sees it, down everywhere.
        a.clear_rules()
        status, _ = http_post(sim_url + "/_sim/scenario", b'{"scenario": "api_outage_unacknowledged"}')
        assert status == 200
        wait_value(prom, outage, 3)
        wait_value(prom, ratio, 1)
        wait_firing(prom, "ClaudeStatusOutageGlobal", upstream="claude")

        # Vantage c goes silent (its link is down: neither its checks nor its agent get
        # through). The view does not take that as fine: one vantage fewer reports, and an
        # alert names the silent one.
        status, _ = http_post(sim_url + "/_sim/scenario", b'{"scenario": "operational"}')
        assert status == 200
        wait_value(prom, outage, 0)
        c.link_down()
        wait_value(prom, 'count(group by (vantage) (upstream_verdict{upstream="claude"}))', 2)
        wait_value(prom, reporting, 2)
        wait_firing(prom, "ClaudeStatusVantageSilent", vantage="c")
        assert {x["vantage"] for x in firing(prom, "ClaudeStatusVantageSilent")} == {"c"}
