"""The dispatch table, one prober per check kind (one module per protocol or feed), and
``run_prober``, the one runner both the scheduler and /probe call.

Each prober takes its own kind's model (``tcp.probe(check: TcpCheck, ...)``); ``for_model``
adapts it to the table's common signature, checking the model once per run so a mismatched
table entry reads as an ``internal`` failure, never as a crash or a wrong probe.

The runner looks up the prober, gives it a ``ProbeContext``, enforces the check's timeout and
turns whatever escapes the prober into a failed ``Result``: a timeout is reason ``timeout``,
running out of our own descriptors or buffers ``local_resources`` (the exporter's fault, no
bug), and any other exception is a bug inside the exporter, reason ``internal`` (``schema``
for a polled feed: a page that crashes its parser is a page we cannot read). The caller says
what else a crash means (the scheduler counts it and logs it once per cause).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import aiohttp

from exporter.checks import anthropic, dns, http, icmp, openai, tcp, tls
from exporter.checks.base import ProbeContext, Prober, Result, Sample
from exporter.checks.net.httpclient import Clients
from exporter.checks.net.resources import REASON as LOCAL_RESOURCES
from exporter.checks.net.resources import local_resource_error
from exporter.checks.net.safejson import clean
from exporter.config import (
    POLLED_KINDS,
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
from exporter.secrets import Secrets
from exporter.witnesses import statuspage
from exporter.witnesses.probers import crowd_probe, dependency_probe

M = TypeVar("M", AnthropicCheck, OpenAICheck, HttpCheck, TcpCheck, TlsCheck, IcmpCheck, DnsCheck,
            PolledCheck)


async def _mismatch(check: CheckConfig, model: type[CheckConfig]) -> Result:
    return Result(False, 0.0, "internal", f"kind {check.kind} has a {type(check).__name__}, "
                                          f"not the {model.__name__} its prober takes")


def for_model(model: type[M], prober: Callable[[M, ProbeContext], Awaitable[Result]]) -> Prober:
    # A plain function handing back the prober's own awaitable: no extra coroutine per run.
    def run(check: CheckConfig, ctx: ProbeContext) -> Awaitable[Result]:
        if not isinstance(check, model):
            return _mismatch(check, model)
        return prober(check, ctx)
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


async def run_prober(check: CheckConfig, session: aiohttp.ClientSession | None,
                     logger: logging.Logger, *, secrets: Secrets,
                     memo: dict[str, object] | None = None, clients: Clients | None = None,
                     keep_log: bool = True,
                     on_crash: Callable[[BaseException], None] | None = None) -> Result:
    """Run the prober of ``check`` once within ``check.timeout``; never raises except on
    cancellation.

    ``secrets``: the runtime's, through which the run reads its API key and credentials.
    ``memo`` survives between runs of one check (None: this run only). ``keep_log``: put the
    prober's log lines in the Result when it kept none. ``on_crash`` hears of an exception
    that is a bug inside the exporter; without it the run's logger logs it with its traceback.
    """
    prober = PROBERS.get(check.kind)
    if prober is None:
        return Result(False, 0.0, "internal", f"no prober for kind {check.kind}")
    ctx = ProbeContext(session, logger, memo if memo is not None else {},
                       secret=secrets.get, clients=clients, secrets=secrets)
    start = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout):
            result = await prober(check, ctx)
    except TimeoutError:
        result = Result(False, time.perf_counter() - start, "timeout",
                        f"timed out after {check.timeout:g}s")
    except Exception as exc:  # a prober bug must not kill the caller (a check's loop, a request)
        if (local := local_resource_error(exc)) is not None:  # out of descriptors: ours, no bug
            result = Result(False, time.perf_counter() - start, LOCAL_RESOURCES, local)
        else:
            if on_crash is not None:
                on_crash(exc)
            else:
                logger.exception("prober crashed")
            reason = "schema" if check.kind in POLLED_KINDS else "internal"
            result = Result(False, time.perf_counter() - start, reason,
                            f"internal error: {exc.__class__.__name__}")
    if keep_log and ctx.lines and not result.log:
        result = replace(result, log=tuple(ctx.lines))
    return clean_result(result, labels=True)


def clean_result(result: Result, labels: bool) -> Result:
    """``result`` with lone surrogates replaced in its error, its log and (``labels``) its
    label values, whatever prober made it: such text cannot be encoded, so it would break
    every later rendering. Status pages clean theirs while parsing."""
    changes: dict[str, object] = {}
    if not result.error.isascii() and (error := clean(result.error)) != result.error:
        changes["error"] = error
    if any(not line.isascii() for line in result.log):
        changes["log"] = tuple(clean(line) for line in result.log)
    if labels:
        for name in ("gauges", "counters", "observations"):
            samples: tuple[Sample, ...] = getattr(result, name)
            if any(not v.isascii() for s in samples for v in s.labels.values()):
                changes[name] = tuple(replace(s, labels={k: clean(v) for k, v in
                                                         s.labels.items()}) for s in samples)
    return replace(result, **changes) if changes else result  # type: ignore[arg-type]
