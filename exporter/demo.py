"""`--demo`: the built-in simulator on loopback, and a config that watches only it.

Everything the demo touches is on 127.0.0.1: the fake status pages, the fake Claude and
OpenAI-compatible APIs, and the network checks. The paid `messages` probe uses a throwaway
key that only the simulator accepts, so the demo shows every metric without a real key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from exporter.checks.net.icmp_mode import detect
from exporter.simulator import Simulator
from exporter.simulator.scenarios import SCENARIOS
from exporter.simulator.server import DEMO_CERT

DEMO_KEY_ENV = "CLAUDE_STATUS_EXPORTER_DEMO_KEY"
DEMO_KEY = "demo-key-for-the-loopback-simulator"


@dataclass
class Demo:
    simulator: Simulator
    config_text: str

    def describe(self) -> dict[str, Any]:
        base = self.simulator.base_url
        return {
            "simulator_url": base,
            "scenario_url": base + "/_sim/scenario",
            "scenario": self.simulator.scenario.name,
            "scenarios": sorted(SCENARIOS),
        }

    async def stop(self) -> None:
        await self.simulator.stop()


def config_text(sim: Simulator, icmp: bool) -> str:
    host_port = urlsplit(sim.base_url).netloc
    icmp_checks = ("      - {name: api-icmp, kind: icmp, target: 127.0.0.1, packets: 3, "
                   "packet_interval: 50ms, component: k8w3r06qmzrp}\n") if icmp else ""
    icmp_control = "  - {name: loopback-icmp, kind: icmp, target: 127.0.0.1, packets: 2}\n" if icmp else ""
    return f"""\
defaults: {{interval: 5s, timeout: 4s}}
upstreams:
  claude:
    statuspage: {{url: "{sim.statuspage_url}", interval: 5s}}
    checks:
      - {{name: api, kind: anthropic, url: "{sim.anthropic_url}", mode: keyless, component: k8w3r06qmzrp, degraded_latency: 2s}}
      - {{name: api-messages, kind: anthropic, url: "{sim.anthropic_url}", mode: messages, model: claude-haiku-4-5, api_key_env: {DEMO_KEY_ENV}, max_tokens: 8, interval: 10s, component: k8w3r06qmzrp, daily_token_budget: 200000}}
      - {{name: api-count-tokens, kind: anthropic, url: "{sim.anthropic_url}", mode: count_tokens, model: claude-haiku-4-5, api_key_env: {DEMO_KEY_ENV}, component: k8w3r06qmzrp}}
      - {{name: api-dns, kind: dns, target: localhost, record_type: a, component: k8w3r06qmzrp}}
      - {{name: api-tcp, kind: tcp, target: "{host_port}", component: k8w3r06qmzrp}}
      - {{name: api-tls, kind: tls, target: "{sim.tls_address}", tls_config: {{server_name: localhost, ca_file: "{DEMO_CERT}"}}, component: k8w3r06qmzrp}}
{icmp_checks}    dependencies:
      - {{name: aws, kind: aws_health, url: "{sim.base_url}/aws/currentevents", interval: 10s, services: [bedrock], regions: [us-east-1, us-east-2, us-west-2]}}
      - {{name: gcp, kind: gcp_status, url: "{sim.base_url}/gcp/incidents.json", interval: 10s, products: [sdXM79fz1FS6ekNpu37K], locations: [us-east5, europe-west1, global]}}
      - {{name: azure, kind: azure_status, url: "{sim.base_url}/azure/status/feed/", interval: 10s}}
    crowd:
      - {{name: openrouter, kind: openrouter, url: "{sim.openrouter_url}", interval: 5s, models: [anthropic/claude-haiku-4.5, anthropic/claude-sonnet-4.5], providers: [Anthropic]}}
  openai-compatible:
    statuspage: {{url: "{sim.incidentio_url}", interval: 10s}}
    checks:
      - {{name: api, kind: openai, url: "{sim.openai_url}", mode: keyless}}
      - {{name: chat, kind: openai, url: "{sim.openai_url}", mode: chat, model: gpt-4o-mini, api_key_env: {DEMO_KEY_ENV}, interval: 10s}}
control:
  - {{name: loopback-tcp, kind: tcp, target: "{host_port}"}}
  - {{name: loopback-http, kind: http, url: "{sim.base_url}/_sim/scenario"}}
{icmp_control}modules:
  http_2xx: {{kind: http, allowed_targets: ["http://127.0.0.1:*", "http://localhost:*"]}}
  tcp_connect: {{kind: tcp, allowed_targets: ["127.0.0.1:*", "localhost:*"]}}
  icmp: {{kind: icmp, allowed_targets: ["127.0.0.1", "localhost"]}}
"""


async def start(scenario: str = "operational") -> Demo:
    os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)
    sim = Simulator(scenario)
    await sim.start("127.0.0.1", 0)
    return Demo(sim, config_text(sim, icmp=detect() != "none"))
