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

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import yaml
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from exporter import metrics as m
from exporter.checks.base import Result
from exporter.checks.net.targets import TargetError, check_resolved, check_target
from exporter.config import CheckConfig, HttpCheck
from exporter.engine.probers import run_prober
from exporter.engine.state import Histogram
from exporter.exposition.collector import Families, histogram_buckets
from exporter.runtime import Runtime
from exporter.secrets import Secrets

log = logging.getLogger("exporter.probe")

MAX_CONCURRENT = 64  # simultaneous /probe runs per process; more get 429
TIMEOUT_OFFSET = 0.5  # seconds kept back from Prometheus's scrape timeout, as blackbox does
TEXT_TYPE = "text/plain; charset=utf-8"  # refusals and the debug page
IDENTITY_LABELS = {"upstream", "check", "kind", "model"}
OUTCOMES = ("ok", "refused", "unknown_module", "bad_request", "busy")

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
    defaults = type(module)(upstream=module.upstream, name=module.name, kind=module.kind)
    out: dict[str, Any] = {"kind": module.kind}
    # The secrets' sources are names and paths, never the secrets themselves.
    for f in attrs.fields(type(module)):
        if f.name in ("upstream", "name", "kind") or f.metadata.get("internal"):
            continue
        value = getattr(module, f.name)
        if value == getattr(defaults, f.name):
            continue
        if f.name == "headers":
            value = {k: "<hidden>" for k in value}
        out[f.metadata.get("key") or f.name] = _plain(value)
    text: str = yaml.safe_dump({module.name: out}, sort_keys=False, default_flow_style=False)
    return text


def debug_page(module: CheckConfig, target: str, limit: float, result: Result,
               body: bytes, secrets: Secrets) -> str:
    outcome = "succeeded" if result.success else f"failed (reason {result.reason})"
    lines = [f"Probe of {target} with module {module.name} (timeout {limit:g}s) {outcome} "
             f"after {result.duration_seconds:.6f}s"
             + (f": {result.error}" if result.error else ""),
             "", "Logs for the probe:", *(f"  {line}" for line in result.log), "",
             "Metrics that would have been returned:", body.decode(), "",
             "Module configuration:", module_yaml(module)]
    return secrets.scrub("\n".join(lines))


# -- the handler ---------------------------------------------------------------------------------

def probe_check(module: CheckConfig, target: str, limit: float) -> CheckConfig:
    """The module's config for one run against ``target`` within ``limit`` seconds."""
    changes: dict[str, Any] = {module.TARGET_KEY: target, "timeout": limit, "upstream": "probe"}
    if isinstance(module, HttpCheck) and module.has_secret:
        changes["follow_redirects"] = False  # never carry an API key to another host
    return attrs.evolve(module, **changes)


class PreparedTargets:
    """The config of each (module name, target, time limit) Prometheus asks for, remembered.

    Prometheus asks for the same few targets again and again: validating the target and copying
    the module once per combination instead of once per request saves about a tenth of a tcp
    probe's CPU. An entry counts only while its module is the very object the running config
    holds, so a reload takes effect at once. The oldest entries go first past ``limit``.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._entries: dict[tuple[str, str, float],
                            tuple[CheckConfig, CheckConfig, logging.Logger, str | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, str, float]) -> bool:
        return key in self._entries

    def prepare(self, module: CheckConfig, target: str, limit: float,
                ) -> tuple[CheckConfig, logging.Logger]:
        """Check ``target`` (raises TargetError), then the run's config and logger."""
        check, logger, _ = self.prepare_with_name(module, target, limit)
        return check, logger

    def prepare_with_name(self, module: CheckConfig, target: str, limit: float,
                          ) -> tuple[CheckConfig, logging.Logger, str | None]:
        """``prepare`` plus the host name the caller must resolve and check (check_resolved),
        or None when the target is allowed as written."""
        key = (module.name, target, limit)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is module:
            return hit[1], hit[2], hit[3]
        name = check_target(module, target)
        check = probe_check(module, target, limit)
        logger = logging.getLogger(f"exporter.probe.{module.name}")
        if len(self._entries) >= self.limit and key not in self._entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (module, check, logger, name)
        return check, logger, name


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


class ProbeEndpoint:
    """The /probe handler's own state: the remembered targets and the limit on runs at once.
    The request counts live in the runtime's ProbeCounts, which /metrics reads."""

    def __init__(self, runtime: Runtime, max_concurrent: int = MAX_CONCURRENT) -> None:
        self.runtime = runtime
        self.max_concurrent = max_concurrent
        self.prepared = PreparedTargets()

    def _refusal(self, module: str, outcome: str, status: int, text: str) -> Answer:
        self.runtime.probe_counts.count(module, outcome)
        return Answer(status, (text + "\n").encode(), TEXT_TYPE)

    async def answer(self, query: Mapping[str, str], scrape_timeout: str | None,
                     accept: str = "") -> Answer:
        """The whole /probe request: ``query`` is the decoded query string, ``scrape_timeout``
        the X-Prometheus-Scrape-Timeout-Seconds header, ``accept`` the Accept header."""
        runtime, counts = self.runtime, self.runtime.probe_counts
        module_name = query.get("module", "")
        if not module_name:
            return self._refusal("", "unknown_module", 400, "module parameter is missing")
        module = runtime.config.modules.get(module_name)
        if module is None:
            return self._refusal("", "unknown_module", 400, f"unknown module {module_name!r}")
        target = query.get("target", "")
        timeout = probe_timeout(module, scrape_timeout)
        try:
            check, logger, name = self.prepared.prepare_with_name(module, target, timeout)
        except TargetError as exc:
            return self._refusal(module_name, exc.outcome, exc.status, exc.message)
        if counts.in_flight >= self.max_concurrent:
            return self._refusal(module_name, "busy", 429, f"too many probes running at once "
                                 f"(limit {self.max_concurrent}); retry later")
        debug = query.get("debug", "").lower() == "true"
        counts.in_flight += 1  # a lookup counts as a probe running: lookups are bounded the same way
        try:
            if name is not None:  # allowed only if its addresses are: resolved on every request
                await check_resolved(module, target, name)
            result = await run_prober(check, runtime.session, logger, secrets=runtime.secrets,
                                      clients=runtime.clients, keep_log=debug)
        except TargetError as exc:
            return self._refusal(module_name, exc.outcome, exc.status, exc.message)
        finally:
            counts.in_flight -= 1
        counts.count(module_name, "ok")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("probe done", extra={"probe_module": module_name, "target": target,
                                           "success": result.success, "reason": result.reason})
        if debug:
            body, _ = render(result)
            page = debug_page(module, target, timeout, result, body, runtime.secrets)
            return Answer(200, page.encode(), TEXT_TYPE)
        body, content_type = render(result, accept)
        return Answer(200, body, content_type)
