"""GET /probe?module=M&target=T[&debug=true]: one probe, run now, blackbox_exporter style.

Prometheus schedules (and shards) the targets; the exporter runs the module's prober once per
request and answers with a fresh registry holding only this run: ``probe_success``,
``probe_duration_seconds`` and the prober's own series under blackbox_exporter's names, without
the upstream/check/kind labels (Prometheus adds the target's labels). Counters show this run's
increments and histograms this run's observations.

Safety: a module only probes targets that match one of its ``allowed_targets`` globs (``*``
any run of characters, ``?`` one character, nothing else special), so the
endpoint is no open proxy. Before matching, the target must be well formed for the module's
kind, with a strict host (a DNS name of letters, digits, '-', '_' and dots, or an IP literal),
and for URL kinds the host must also match the pattern's host on its own, so that a ``*`` in
a pattern cannot stretch from the path into the host. At most ``MAX_CONCURRENT`` probes run at
once in one process (with ``--web.probe-workers=N``, in each of the N+1 processes); past that
the answer is 429.

Status codes: 400 for a missing or unknown module or a malformed target, 403 for a target the
module does not allow, 429 when busy, 200 otherwise (the probe's own outcome is in
``probe_success``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample, probers
from exporter.config import TARGET_KEY, CheckConfig, parse_host, parse_host_port, parse_url
from exporter.secrets import SECRETS

log = logging.getLogger("exporter.probe")

MAX_CONCURRENT = 64  # simultaneous /probe runs per process; more get 429
TIMEOUT_OFFSET = 0.5  # seconds kept back from Prometheus's scrape timeout, as blackbox does
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IDENTITY_LABELS = {"upstream", "check", "kind"}
OUTCOMES = ("ok", "refused", "unknown_module", "bad_request", "busy")
HOST_NAME = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")

_in_flight = 0
_requests: Counter[tuple[str, str]] = Counter()
# Other processes' counts of their /probe requests, each a callable returning them.
COUNT_SOURCES: list[Callable[[], Mapping[tuple[str, str], int]]] = []


def probe_request_counts() -> dict[tuple[str, str], int]:
    """Requests to /probe by (module, outcome) since start, for exporter_probe_requests_total.

    ``module`` is "" when the request named no known module, so a caller cannot create
    series at will. With /probe workers (exporter/workers.py) their counts are added through
    ``COUNT_SOURCES``.
    """
    total = Counter(_requests)
    for source in COUNT_SOURCES:
        total.update(source())
    return dict(total)


def in_flight() -> int:
    return _in_flight


class TargetError(Exception):
    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


# -- target validation -------------------------------------------------------------------------


def valid_host(host: str, port_follows: bool) -> bool:
    """A DNS name or an IP literal; an IPv6 literal must be in brackets when a port follows."""
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        return _ip_version(inner) == 6
    version = _ip_version(host)
    if version:
        return version == 4 or not port_follows
    return bool(HOST_NAME.match(host))


def _ip_version(text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


def check_target(module: CheckConfig, target: str) -> None:
    """Raise TargetError unless ``target`` is well formed and allowed for ``module``."""
    if not target:
        raise TargetError(400, "bad_request", "target parameter is missing")
    if any(c.isspace() or not c.isprintable() for c in target) or len(target) > 2048:
        raise TargetError(400, "bad_request", "target contains spaces or control characters")
    key = TARGET_KEY[module.kind]
    try:
        if key == "url":
            parse_url(target)
            parts = urlsplit(target)
            host = parts.netloc
            bare = host.rpartition(":")[0] if parts.port is not None else host
        elif module.kind in ("tcp", "tls"):
            parse_host_port(target)
            host = target
            bare = target.rpartition(":")[0]
        else:
            parse_host(target)
            host = bare = target
    except ValueError as exc:
        raise TargetError(400, "bad_request", f"target {exc}") from None
    if not valid_host(bare, port_follows=module.kind != "icmp" and module.kind != "dns"):
        raise TargetError(400, "bad_request", f"target host {bare!r} is not a host name or an "
                                              "IP address")
    for pattern in module.allowed_targets:
        if not glob_match(target, pattern):
            continue
        if key == "url" and not glob_match(host, _pattern_netloc(pattern)):
            continue
        return
    raise TargetError(403, "refused", f"target {target!r} is not allowed for module "
                                      f"{module.name!r}; it must match one of its "
                                      "allowed_targets")


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def glob_match(text: str, pattern: str) -> bool:
    """Shell-style match where only ``*`` (any run) and ``?`` (one character) are special,
    so ``[::1]:*`` means the IPv6 literal, not a character class. Case matters."""
    return _glob(pattern).fullmatch(text) is not None


def _pattern_netloc(pattern: str) -> str:
    rest = pattern.split("://", 1)[-1]
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def probe_timeout(module: CheckConfig, header: str | None) -> float:
    """The module's timeout, shortened to fit Prometheus's scrape timeout when it sends one."""
    timeout = module.timeout
    if header:
        try:
            scrape = float(header)
        except ValueError:
            scrape = 0.0
        if scrape > 0:
            timeout = min(timeout, scrape - TIMEOUT_OFFSET if scrape > 2 * TIMEOUT_OFFSET
                          else scrape / 2)
    return timeout


# -- rendering -----------------------------------------------------------------------------------


def _label_names(spec: m.MetricSpec) -> list[str]:
    return [n for n in spec.labels if n not in IDENTITY_LABELS]


def _families(result: Result) -> Iterator[Metric]:
    success = GaugeMetricFamily(m.PROBE_SUCCESS.name, "1 if the probe succeeded.")
    success.add_metric([], 1.0 if result.success else 0.0)
    yield success
    duration = GaugeMetricFamily(m.PROBE_DURATION.name, "Duration of the probe in seconds.")
    duration.add_metric([], result.duration_seconds)
    yield duration

    grouped: dict[m.MetricSpec, list[Sample]] = defaultdict(list)
    for sample in (*result.gauges, *result.counters):
        grouped[sample.metric].append(sample)
    for spec, samples in grouped.items():
        names = _label_names(spec)
        family: GaugeMetricFamily | CounterMetricFamily
        if spec.type == "counter":
            family = CounterMetricFamily(spec.name, spec.help + " (this probe only)", labels=names)
        else:
            family = GaugeMetricFamily(spec.name, spec.help, labels=names)
        for sample in samples:
            family.add_metric([str(sample.labels.get(n, "")) for n in names], sample.value)
        yield family

    observed: dict[m.MetricSpec, dict[tuple[str, ...], list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for sample in result.observations:
        names = _label_names(sample.metric)
        key = tuple(str(sample.labels.get(n, "")) for n in names)
        observed[sample.metric][key].append(sample.value)
    for spec, series in observed.items():
        names = _label_names(spec)
        hist = HistogramMetricFamily(spec.name, spec.help + " (this probe only)", labels=names)
        for values, observations in series.items():
            buckets = [(repr(float(bound)), float(sum(v <= bound for v in observations)))
                       for bound in spec.buckets]
            buckets.append(("+Inf", float(len(observations))))
            hist.add_metric(list(values), buckets, sum(observations))
        yield hist


class _OneResult:
    def __init__(self, result: Result) -> None:
        self.result = result

    def collect(self) -> Iterator[Metric]:
        return _families(self.result)


def render(result: Result) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneResult(result))
    return generate_latest(registry)


def module_yaml(module: CheckConfig) -> str:
    """The module's settings that differ from the defaults; header values are hidden."""
    defaults = CheckConfig(upstream=module.upstream, name=module.name, kind=module.kind)
    out: dict[str, Any] = {"kind": module.kind}
    for f in dataclasses.fields(module):
        if f.name in ("upstream", "name", "kind"):
            continue
        value = getattr(module, f.name)
        if value == getattr(defaults, f.name):
            continue
        if f.name == "headers":
            value = {k: "<hidden>" for k in value}
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    text: str = yaml.safe_dump({module.name: out}, sort_keys=False, default_flow_style=False)
    return text


def debug_page(module: CheckConfig, target: str, limit: float, result: Result,
               body: bytes) -> str:
    outcome = "succeeded" if result.success else f"failed (reason {result.reason})"
    lines = [f"Probe of {target} with module {module.name} (timeout {limit:g}s) {outcome} "
             f"after {result.duration_seconds:.6f}s"
             + (f": {result.error}" if result.error else ""),
             "", "Logs for the probe:", *(f"  {line}" for line in result.log), "",
             "Metrics that would have been returned:", body.decode(), "",
             "Module configuration:", module_yaml(module)]
    return SECRETS.scrub("\n".join(lines))


# -- the handler ---------------------------------------------------------------------------------


def _reply(module: str, outcome: str, status: int, text: str) -> web.Response:
    _requests[(module, outcome)] += 1
    return web.Response(status=status, text=text + "\n")


async def run_probe(module: CheckConfig, target: str, limit: float, session: Any) -> Result:
    """Run the module's prober once against ``target``; never raises except on cancel."""
    key = TARGET_KEY[module.kind]
    changes: dict[str, Any] = {key: target, "timeout": limit, "upstream": "probe"}
    if module.has_secret:
        changes["follow_redirects"] = False  # never carry an API key to another host
    check = dataclasses.replace(module, **changes)
    logger = logging.getLogger(f"exporter.probe.{module.name}")
    ctx = ProbeContext(session, logger, {}, secret=SECRETS.get)
    start = time.perf_counter()
    prober = probers().get(module.kind)
    if prober is None:
        return Result(False, 0.0, "internal", f"no prober for kind {module.kind}")
    try:
        async with asyncio.timeout(limit):
            result = await prober(check, ctx)
    except TimeoutError:
        result = Result(False, time.perf_counter() - start, "timeout",
                        f"timed out after {limit:g}s")
    except Exception as exc:
        logger.exception("prober crashed")
        result = Result(False, time.perf_counter() - start, "internal",
                        f"internal error: {exc.__class__.__name__}")
    if ctx.lines and not result.log:
        result = dataclasses.replace(result, log=tuple(ctx.lines))
    return result


async def handle_probe(request: web.Request) -> web.Response:
    global _in_flight
    from exporter.web import RUNTIME_KEY  # web imports this module lazily too

    runtime = request.app[RUNTIME_KEY]
    query = request.query
    module_name = query.get("module", "")
    if not module_name:
        return _reply("", "unknown_module", 400, "module parameter is missing")
    module = runtime.config.modules.get(module_name)
    if module is None:
        return _reply("", "unknown_module", 400, f"unknown module {module_name!r}")
    target = query.get("target", "")
    try:
        check_target(module, target)
    except TargetError as exc:
        return _reply(module_name, exc.outcome, exc.status, exc.message)
    if _in_flight >= MAX_CONCURRENT:
        return _reply(module_name, "busy", 429, f"too many probes running at once (limit "
                                                f"{MAX_CONCURRENT}); retry later")
    timeout = probe_timeout(module, request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
    _in_flight += 1
    try:
        result = await run_probe(module, target, timeout, runtime.session)
    finally:
        _in_flight -= 1
    _requests[(module_name, "ok")] += 1
    log.debug("probe done", extra={"probe_module": module_name, "target": target,
                                   "success": result.success, "reason": result.reason})
    body = render(result)
    if query.get("debug", "").lower() == "true":
        return web.Response(text=debug_page(module, target, timeout, result, body),
                            content_type="text/plain")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
