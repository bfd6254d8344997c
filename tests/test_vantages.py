"""Two vantages, one with its link cut, scraped by a real Prometheus: the recording rules tell a
local problem from a regional one from a global one.

The provider (the simulator) runs on the host; each vantage is an exporter inside its own
network namespace that reaches the provider and a control target over its veth. Cutting a
vantage drops every new connection it makes; Prometheus' scrapes come in and still work.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXPORTER, free_port, http_post, require_binary, require_root
from tests.netns import TCP_SERVER, Hosts, TestHost
from tests.promstack import Prometheus

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "recording.rules.yml"


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


def cut(host: TestHost, port: int | None = None) -> None:
    """Drop new outgoing connections from the vantage: all of them, or only to ``port``."""
    match = f"tcp dport {port} " if port else ""
    host.nft("table inet cut {\n"
             "  chain output {\n"
             "    type filter hook output priority 0; policy accept;\n"
             f"    {match}ct state new drop\n"
             "  }\n"
             "}\n")


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


def test_recording_rules_tell_local_regional_and_global_apart(provider, tmp_path: Path) -> None:
    require_root()
    require_binary("prometheus")
    require_binary("nft")
    sim_url, sim_port, control_port = provider
    with Hosts() as hosts:
        a, b = hosts.new(), hosts.new()
        exporter_a = a.start_exporter(vantage_config(a, sim_port, control_port), "--vantage=a")
        exporter_b = b.start_exporter(vantage_config(b, sim_port, control_port), "--vantage=b")
        targets = [e.url.removeprefix("http://") for e in (exporter_a, exporter_b)]
        with Prometheus(tmp_path / "prom", targets, [RULES]) as prom:
            reporting = 'upstream:vantages_reporting:count{upstream="claude"}'
            outage = 'upstream:vantages_outage:count{upstream="claude"}'
            ratio = 'upstream:vantages_outage:ratio{upstream="claude"}'
            local = 'sum by (upstream) (upstream_verdict{upstream="claude", verdict="local_network"})'

            # Both vantages see a healthy provider.
            wait_value(prom, reporting, 2)
            wait_value(prom, outage, 0)

            # Vantage a loses its network: a local problem, not the provider's.
            cut(a)
            wait_value(prom, local, 1)
            wait_value(prom, reporting, 1)
            wait_value(prom, outage, 0)

            # Only a's path to the provider breaks (its control target still answers): a sees an
            # outage, b does not: down from one place.
            a.clear_rules()
            cut(a, sim_port)
            wait_value(prom, outage, 1)
            wait_value(prom, reporting, 2)
            wait_value(prom, ratio, 0.5)

            # The provider itself fails: every vantage sees it, down everywhere.
            a.clear_rules()
            status, _ = http_post(sim_url + "/_sim/scenario", b'{"scenario": "api_outage_unacknowledged"}')
            assert status == 200
            wait_value(prom, outage, 2)
            wait_value(prom, ratio, 1)
