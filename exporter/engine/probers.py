"""The dispatch table: one prober per check kind, one module per protocol or feed."""

from __future__ import annotations

from exporter.checks import anthropic, dns, http, icmp, openai, tcp, tls
from exporter.checks.base import Prober
from exporter.witnesses import statuspage
from exporter.witnesses.probers import crowd_probe, dependency_probe

PROBERS: dict[str, Prober] = {
    "statuspage": statuspage.probe,
    "anthropic": anthropic.probe,
    "openai": openai.probe,
    "http": http.probe,
    "tcp": tcp.probe,
    "tls": tls.probe,
    "icmp": icmp.probe,
    "dns": dns.probe,
    "gcp_status": dependency_probe,
    "aws_health": dependency_probe,
    "azure_status": dependency_probe,
    "openrouter": crowd_probe,
}

