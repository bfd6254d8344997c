"""GET /probe?module=M&target=T[&debug=true]: one probe, run now, blackbox_exporter style.

Prometheus schedules (and shards) the targets; the exporter runs the module's prober once per
request and answers with that run alone: ``probe_success``, ``probe_duration_seconds`` and
the prober's own series under blackbox_exporter's names, from a fresh prometheus_client
registry per request in the format the scrape negotiated, without
the upstream/check/kind labels (Prometheus adds the target's labels). Counters show this run's
increments and histograms this run's observations.

Safety: a module only probes targets that match one of its ``allowed_targets`` globs (``*``
any run of characters, ``?`` one character, nothing else special), so the
endpoint is no open proxy. Before matching, the target must be well formed for the module's
kind, with a strict host (a DNS name of letters, digits, '-', '_' and dots, or an IP literal),
and for URL kinds the host must also match the pattern's host on its own, so that a ``*`` in
a pattern cannot stretch from the path into the host. A pattern whose host is an address
(``10.0.0.*:443``, ``[fd00::*]:*``) matches IP literals only, never a name that happens to
start with digits (``10.0.0.evil.test:443``); a name is allowed by such patterns only when
every address it resolves to is (``check_resolved``, run per request). At most
``MAX_CONCURRENT`` probes run at once; past that the answer is 429. More /probe capacity
comes from more replicas behind a Service, sharded by Prometheus's hashmod relabelling
(docs/deploy.md).

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
import socket
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from exporter import metrics as m
from exporter.checks import ProbeContext, Result, probers
from exporter.checks.httpclient import Clients
from exporter.checks.resources import REASON as LOCAL_RESOURCES
from exporter.checks.resources import local_resource_error
from exporter.collector import Families, histogram_buckets
from exporter.config import (
    TARGET_KEY,
    CheckConfig,
    parse_host,
    parse_host_port,
    parse_url,
)
from exporter.scheduler import clean_result
from exporter.secrets import SECRETS
from exporter.state import Histogram

log = logging.getLogger("exporter.probe")

MAX_CONCURRENT = 64  # simultaneous /probe runs per process; more get 429
TIMEOUT_OFFSET = 0.5  # seconds kept back from Prometheus's scrape timeout, as blackbox does
TEXT_TYPE = "text/plain; charset=utf-8"  # refusals and the debug page
IDENTITY_LABELS = {"upstream", "check", "kind", "model"}
OUTCOMES = ("ok", "refused", "unknown_module", "bad_request", "busy")
HOST_NAME = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")

_in_flight = 0
_requests: Counter[tuple[str, str]] = Counter()


def probe_request_counts() -> dict[tuple[str, str], int]:
    """Requests to /probe by (module, outcome) since start, for exporter_probe_requests_total.

    ``module`` is "" when the request named no known module, so a caller cannot create
    series at will.
    """
    return dict(_requests)


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


MAX_TARGET_CHARS = 2048
_ADDRESS4_PATTERN = re.compile(r"^[0-9.*?]*[0-9][0-9.*?]*$")
_ADDRESS6_PATTERN = re.compile(r"^\[?[0-9A-Fa-f:.*?]*:[0-9A-Fa-f:.*?]*\]?$")


def _split_host(netloc: str, has_port: bool) -> str:
    """The host of ``host:port`` (``[v6]:port``), or of a bare host when ``has_port`` is
    false."""
    if not has_port:
        return netloc
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    return netloc.rpartition(":")[0] if ":" in netloc else netloc


def _pattern_host_of(module: CheckConfig, pattern: str) -> str:
    key = TARGET_KEY[module.kind]
    if key == "url":
        return _split_host(_pattern_netloc(pattern), True)
    return _split_host(pattern, module.kind in ("tcp", "tls"))


def is_address_pattern(host: str) -> bool:
    """A host pattern that spells an address (digits and dots, or hex and colons, with
    wildcards): it stands for addresses only. A lone ``*`` is no address pattern."""
    return bool(_ADDRESS4_PATTERN.match(host) and "." in host) or bool(
        _ADDRESS6_PATTERN.match(host))


def check_target(module: CheckConfig, target: str) -> str | None:
    """Raise TargetError unless ``target`` is well formed and allowed for ``module``.

    Returns None when the target is allowed as written, or a host name that the caller must
    resolve and pass to ``check_resolved``: the name matched nothing, but the module has
    address patterns that its addresses may match."""
    if not target:
        raise TargetError(400, "bad_request", "target parameter is missing")
    if len(target) > MAX_TARGET_CHARS:
        raise TargetError(400, "bad_request", f"target is longer than {MAX_TARGET_CHARS} "
                                              "characters")
    if any(c.isspace() or not c.isprintable() for c in target):
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
    literal = _ip_version(bare.strip("[]")) != 0
    if _allowed(module, target, host, literal):
        return None
    if not literal and _could_resolve_into(module, target, bare):
        return bare
    raise _refused(module, target)


def _could_resolve_into(module: CheckConfig, target: str, name: str) -> bool:
    """Whether some address pattern would allow ``target`` with an address for ``name``:
    the rest of the target (scheme, port, path) must already fit, so that a name no address
    could help is refused without a lookup."""
    for pattern in module.allowed_targets:
        pattern_host = _pattern_host_of(module, pattern)
        if is_address_pattern(pattern_host):
            stand_in = _replace_host(module, target, name, pattern_host)
            host = urlsplit(stand_in).netloc if TARGET_KEY[module.kind] == "url" else stand_in
            if glob_match(stand_in, pattern) and (TARGET_KEY[module.kind] != "url" or glob_match(
                    host, _pattern_netloc(pattern))):
                return True
    return False


def _allowed(module: CheckConfig, target: str, host: str, literal: bool) -> bool:
    key = TARGET_KEY[module.kind]
    for pattern in module.allowed_targets:
        if not literal and is_address_pattern(_pattern_host_of(module, pattern)):
            continue  # an address pattern never matches a name as text
        if not glob_match(target, pattern):
            continue
        if key == "url" and not glob_match(host, _pattern_netloc(pattern)):
            continue
        return True
    return False


def _refused(module: CheckConfig, target: str, why: str = "") -> TargetError:
    return TargetError(403, "refused", f"target {target!r} is not allowed for module "
                                       f"{module.name!r}; it must match one of its "
                                       f"allowed_targets{why}")


RESOLVE_TIMEOUT = 2.0


async def check_resolved(module: CheckConfig, target: str, name: str) -> None:
    """Raise TargetError unless every address ``name`` resolves to, put in its place in
    ``target``, is allowed by the module's address patterns."""
    loop = asyncio.get_running_loop()
    family = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}.get(module.ip_protocol,
                                                                  socket.AF_UNSPEC)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise _refused(module, target, f" (the name {name!r} does not resolve, so its "
                                       "addresses cannot be checked)") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise _refused(module, target, f" ({name!r} resolves to no address)")
    for address in addresses:
        spelled = f"[{address}]" if ":" in address and module.kind not in ("icmp", "dns") \
            else address
        candidate = _replace_host(module, target, name, spelled)
        host = urlsplit(candidate).netloc if TARGET_KEY[module.kind] == "url" else candidate
        if not _allowed(module, candidate, host, literal=True):
            raise _refused(module, target, f" ({name!r} resolves to {address}, which no "
                                           "address pattern allows)")


def _replace_host(module: CheckConfig, target: str, name: str, address: str) -> str:
    if TARGET_KEY[module.kind] == "url":
        parts = urlsplit(target)
        netloc = address + (f":{parts.port}" if parts.port is not None else "")
        return parts._replace(netloc=netloc).geturl()
    if module.kind in ("tcp", "tls"):
        return address + ":" + target.rpartition(":")[2]
    return address


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
#
# Each answer comes from a fresh CollectorRegistry holding only this run, as blackbox_exporter
# does, written by prometheus_client in the format the scrape asked for.

THIS_PROBE_ONLY = " (this probe only)"  # appended to the help of counters and histograms
# blackbox_exporter's help texts for the two series every /probe answer carries.
SUCCESS_HELP = m.PROBE_SUCCESS_ONE_RUN_HELP
DURATION_HELP = m.PROBE_DURATION_ONE_RUN_HELP


def _own_labels(spec: m.MetricSpec) -> tuple[str, ...]:
    """A spec's label names without the check identity (Prometheus adds the target's labels)."""
    return tuple(n for n in spec.labels if n not in IDENTITY_LABELS)


class RunCollector:
    """client_python Collector for one /probe run: probe_success, probe_duration_seconds, then
    the prober's series; counters show this run's increments, histograms its observations."""

    def __init__(self, result: Result) -> None:
        self.result = result

    def collect(self) -> Iterator[Metric]:
        result = self.result
        yield GaugeMetricFamily(m.PROBE_SUCCESS.name, SUCCESS_HELP,
                                value=1.0 if result.success else 0.0)
        yield GaugeMetricFamily(m.PROBE_DURATION.name, DURATION_HELP,
                                value=result.duration_seconds)
        out = Families()
        for sample in (*result.gauges, *result.counters):
            spec = sample.metric
            names = _own_labels(spec)
            help_text = spec.help if spec.type == "gauge" else spec.help + THIS_PROBE_ONLY
            family = out.family(spec, help_text, names)
            family.add_metric([str(sample.labels.get(n, "")) for n in names],  # type: ignore[attr-defined]
                              sample.value)
        observed: dict[tuple[m.MetricSpec, tuple[str, ...]], Histogram] = {}
        for sample in result.observations:
            spec = sample.metric
            values = tuple(str(sample.labels.get(n, "")) for n in _own_labels(spec))
            hist = observed.get((spec, values))
            if hist is None:
                hist = observed[(spec, values)] = Histogram(spec.buckets)
            hist.observe(sample.value)
        for (spec, values), hist in observed.items():
            family = out.family(spec, spec.help + THIS_PROBE_ONLY, _own_labels(spec))
            family.add_metric(list(values), histogram_buckets(hist), hist.sum)  # type: ignore[attr-defined]
        yield from out


def render(result: Result, accept: str = "") -> tuple[bytes, str]:
    """The /probe answer for one run and its content type, negotiated from ``accept``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(result))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


# Fields whose config key is spelled otherwise (the secrets' sources are names and paths,
# never the secrets themselves).
CONFIG_KEYS = {"tls": "tls_config"}


def _plain(value: Any) -> Any:
    """A config value as YAML can show it: nested settings as mappings without unset keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) not in (None, False, ())}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
        out[CONFIG_KEYS.get(f.name, f.name)] = _plain(value)
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

PREPARED_MAX = 1024  # remembered (module, target, timeout) combinations; the oldest go first
# (module name, target, time limit) -> (the module, its checked config for the run, its logger).
# Prometheus asks for the same few targets again and again: validating the target and copying
# the module (dataclasses.replace) once per combination instead of once per request saves
# about a tenth of a tcp probe's CPU. An entry counts only while its module is the very object
# the running config holds, so a reload takes effect at once.
_prepared: dict[tuple[str, str, float],
                tuple[CheckConfig, CheckConfig, logging.Logger, str | None]] = {}


def probe_check(module: CheckConfig, target: str, limit: float) -> CheckConfig:
    """The module's config for one run against ``target`` within ``limit`` seconds."""
    changes: dict[str, Any] = {TARGET_KEY[module.kind]: target, "timeout": limit,
                               "upstream": "probe"}
    if module.has_secret:
        changes["follow_redirects"] = False  # never carry an API key to another host
    return dataclasses.replace(module, **changes)


def prepare(module: CheckConfig, target: str, limit: float,
            ) -> tuple[CheckConfig, logging.Logger]:
    """Check ``target`` (raises TargetError), then the run's config and logger, remembered."""
    check, logger, _ = prepare_with_name(module, target, limit)
    return check, logger


def prepare_with_name(module: CheckConfig, target: str, limit: float,
                      ) -> tuple[CheckConfig, logging.Logger, str | None]:
    """``prepare`` plus the host name the caller must resolve and check (check_resolved),
    or None when the target is allowed as written."""
    key = (module.name, target, limit)
    hit = _prepared.get(key)
    if hit is not None and hit[0] is module:
        return hit[1], hit[2], hit[3]
    name = check_target(module, target)
    check = probe_check(module, target, limit)
    logger = logging.getLogger(f"exporter.probe.{module.name}")
    if len(_prepared) >= PREPARED_MAX and key not in _prepared:
        del _prepared[next(iter(_prepared))]
    _prepared[key] = (module, check, logger, name)
    return check, logger, name


async def run_probe(check: CheckConfig, limit: float, session: Any, logger: logging.Logger,
                    keep_log: bool = True, clients: Clients | None = None) -> Result:
    """Run the prober of ``check`` (from probe_check) once; never raises except on cancel.
    ``keep_log``: put the prober's log lines in the Result (copying it) if it did not."""
    ctx = ProbeContext(session, logger, {}, secret=SECRETS.get, clients=clients)
    start = time.perf_counter()
    prober = probers().get(check.kind)
    if prober is None:
        return Result(False, 0.0, "internal", f"no prober for kind {check.kind}")
    try:
        async with asyncio.timeout(limit):
            result = await prober(check, ctx)
    except TimeoutError:
        result = Result(False, time.perf_counter() - start, "timeout",
                        f"timed out after {limit:g}s")
    except Exception as exc:
        if (local := local_resource_error(exc)) is not None:  # out of fds: ours, no bug
            result = Result(False, time.perf_counter() - start, LOCAL_RESOURCES, local)
        else:
            logger.exception("prober crashed")
            result = Result(False, time.perf_counter() - start, "internal",
                            f"internal error: {exc.__class__.__name__}")
    result = clean_result(result, labels=True)
    if keep_log and ctx.lines and not result.log:
        result = dataclasses.replace(result, log=tuple(ctx.lines))
    return result


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def _refusal(module: str, outcome: str, status: int, text: str) -> Answer:
    _requests[(module, outcome)] += 1
    return Answer(status, (text + "\n").encode(), TEXT_TYPE)


async def answer(runtime: Any, query: Mapping[str, str], scrape_timeout: str | None,
                 accept: str = "") -> Answer:
    """The whole /probe request: ``query`` is the decoded query string, ``scrape_timeout`` the
    X-Prometheus-Scrape-Timeout-Seconds header, ``accept`` the Accept header."""
    global _in_flight
    module_name = query.get("module", "")
    if not module_name:
        return _refusal("", "unknown_module", 400, "module parameter is missing")
    module = runtime.config.modules.get(module_name)
    if module is None:
        return _refusal("", "unknown_module", 400, f"unknown module {module_name!r}")
    target = query.get("target", "")
    timeout = probe_timeout(module, scrape_timeout)
    try:
        check, logger, name = prepare_with_name(module, target, timeout)
    except TargetError as exc:
        return _refusal(module_name, exc.outcome, exc.status, exc.message)
    if _in_flight >= MAX_CONCURRENT:
        return _refusal(module_name, "busy", 429, f"too many probes running at once (limit "
                                                  f"{MAX_CONCURRENT}); retry later")
    debug = query.get("debug", "").lower() == "true"
    _in_flight += 1  # a lookup counts as a probe running: lookups are bounded the same way
    try:
        if name is not None:  # allowed only if its addresses are: resolved on every request
            await check_resolved(module, target, name)
        result = await run_probe(check, timeout, runtime.session, logger, keep_log=debug,
                                 clients=getattr(runtime, "clients", None))
    except TargetError as exc:
        return _refusal(module_name, exc.outcome, exc.status, exc.message)
    finally:
        _in_flight -= 1
    _requests[(module_name, "ok")] += 1
    if log.isEnabledFor(logging.DEBUG):
        log.debug("probe done", extra={"probe_module": module_name, "target": target,
                                       "success": result.success, "reason": result.reason})
    if debug:
        body, _ = render(result)
        return Answer(200, debug_page(module, target, timeout, result, body).encode(), TEXT_TYPE)
    body, content_type = render(result, accept)
    return Answer(200, body, content_type)
