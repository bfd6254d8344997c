"""The dispatch table: one prober per check kind, one module per protocol or feed.

Each prober takes its own kind's model (``tcp.probe(check: TcpCheck, ...)``); ``for_model``
adapts it to the table's common signature, checking the model once per run so a mismatched
table entry reads as an ``internal`` failure, never as a crash or a wrong probe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from exporter.checks import anthropic, dns, http, icmp, openai, tcp, tls
from exporter.checks.base import ProbeContext, Prober, Result
from exporter.config import (
    AnthropicCheck,
    CheckConfig,
    DnsCheck,
    HttpCheck,
    IcmpCheck,
    OpenAICheck,
    PolledCheck,
    TcpCheck,
    TlsCheck,
)
from exporter.witnesses import statuspage
from exporter.witnesses.probers import crowd_probe, dependency_probe

M = TypeVar("M", AnthropicCheck, OpenAICheck, HttpCheck, TcpCheck, TlsCheck, IcmpCheck, DnsCheck,
            PolledCheck)


def for_model(model: type[M], prober: Callable[[M, ProbeContext], Awaitable[Result]]) -> Prober:
    async def run(check: CheckConfig, ctx: ProbeContext) -> Result:
        if not isinstance(check, model):
            return Result(False, 0.0, "internal", f"kind {check.kind} has a "
                          f"{type(check).__name__}, not the {model.__name__} its prober takes")
        return await prober(check, ctx)
    run.__qualname__ = f"{prober.__module__}.{prober.__qualname__}"
    return run


PROBERS: dict[str, Prober] = {
    "statuspage": for_model(PolledCheck, statuspage.probe),
    "anthropic": for_model(AnthropicCheck, anthropic.probe),
    "openai": for_model(OpenAICheck, openai.probe),
    "http": for_model(HttpCheck, http.probe),
    "tcp": for_model(TcpCheck, tcp.probe),
    "tls": for_model(TlsCheck, tls.probe),
    "icmp": for_model(IcmpCheck, icmp.probe),
    "dns": for_model(DnsCheck, dns.probe),
    "gcp_status": for_model(PolledCheck, dependency_probe),
    "aws_health": for_model(PolledCheck, dependency_probe),
    "azure_status": for_model(PolledCheck, dependency_probe),
    "openrouter": for_model(PolledCheck, crowd_probe),
}
