"""Polling the witnesses against real aiohttp servers on loopback: conditional requests,
backoff, the failure reasons, and their series through the state store and the collector."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import attrs
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__, cli
from exporter.checks.base import ProbeContext, Result
from exporter.config import CheckConfig, Config, load_text
from exporter.engine.state import StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition import status
from exporter.exposition.collector import Collector
from exporter.secrets import Secrets
from exporter.server import landing
from exporter.witnesses.probers import crowd_probe, dependency_probe

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[dict[str, Handler]], Awaitable[str]]

GCP_OPEN = json.dumps([{
    "id": "g1", "external_desc": "Vertex errors", "severity": "high", "begin": "2026-01-01T00:00:00Z",
    "affected_products": [{"title": "Vertex Gemini API", "id": "Z0"}],
    "currently_affected_locations": [{"title": "Columbus (us-east5)", "id": "us-east5"}]}]).encode()


def endpoints(uptime_5m: float | None, status: int = 0) -> bytes:
    return json.dumps({"data": {"id": "anthropic/claude-sonnet-4.6", "endpoints": [
        {"provider_name": "Anthropic", "tag": "anthropic", "status": status,
         "uptime_last_5m": uptime_5m, "uptime_last_30m": 99.5, "uptime_last_1d": None},
        {"provider_name": "Google", "tag": "google-vertex/us-east5", "status": 0,
         "uptime_last_5m": 100, "uptime_last_30m": 100, "uptime_last_1d": 100}]}}).encode()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    async with aiohttp.ClientSession() as session:
        yield ProbeContext(session=session, logger=logging.getLogger("test.witnesses"))


def config(base: str, extra: str = "") -> Config:
    return load_text(f"""
upstreams:
  claude:
    checks: [{{name: api, kind: http, url: "{base}/api"}}]
    dependencies:
      - {{name: gcp, kind: gcp_status, url: "{base}/incidents.json", products: [Z0],
         locations: [us-east5], timeout: 2s}}
    crowd:
      - {{name: openrouter, kind: openrouter, url: "{base}/api/v1",
         models: [anthropic/claude-sonnet-4.6], providers: [Anthropic], timeout: 2s}}
{extra}""", "test.yml")


def witness_check(cfg: Config, kind: str) -> CheckConfig:
    return next(c for c in cfg.all_checks() if c.kind == kind)


def respond(body: bytes, status: int = 200, content_type: str = "application/json",
            headers: dict[str, str] | None = None, seen: list[web.Request] | None = None
            ) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request)
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(status=status, body=body, content_type=content_type,
                            headers={"ETag": '"v1"', **(headers or {})})
    return handler


async def test_conditional_poll_reuses_the_parsed_feed(serve: Serve, ctx: ProbeContext) -> None:
    seen: list[web.Request] = []
    base = await serve({"/incidents.json": respond(GCP_OPEN, seen=seen)})
    check = witness_check(config(base), "gcp_status")
    first = await dependency_probe(check, ctx)
    second = await dependency_probe(check, ctx)
    assert first.success and second.success
    assert seen[0].headers["User-Agent"] == f"claude-status-exporter/{__version__}"
    assert "If-None-Match" not in seen[0].headers
    assert seen[1].headers["If-None-Match"] == '"v1"'
    assert second.gauges == first.gauges
    assert any(s.labels.get("incident_id") == "g1" for s in second.gauges)


async def test_crowd_fetches_each_model_endpoints_path(serve: Serve, ctx: ProbeContext) -> None:
    seen: list[web.Request] = []
    base = await serve({"/api/v1/models/anthropic/claude-sonnet-4.6/endpoints":
                        respond(endpoints(0.0, -5), seen=seen)})
    result = await crowd_probe(witness_check(config(base), "openrouter"), ctx)
    assert result.success, result.error
    assert [r.path for r in seen] == ["/api/v1/models/anthropic/claude-sonnet-4.6/endpoints"]
    tags = {s.labels["endpoint"] for s in result.gauges}
    assert tags == {"anthropic"}  # providers: [Anthropic]


@pytest.mark.parametrize(("handler", "reason"), [
    (respond(b"<html>blocked</html>", 403, "text/html"), "http_status"),
    (respond(b"<html>hi</html>", 200, "text/html"), "not_json"),
    (respond(b'{"incidents": 3}'), "schema"),
    (respond(b"[" + b" " * 40_000 + b"]", headers={"X-Pad": "1"}), "too_large"),
])
async def test_failure_reasons(serve: Serve, ctx: ProbeContext, handler: Handler,
                               reason: str) -> None:
    base = await serve({"/incidents.json": handler})
    cfg = config(base)
    check = witness_check(cfg, "gcp_status")
    assert check.witness is not None
    small = attrs.evolve(check, witness=attrs.evolve(check.witness, max_body_bytes=32_768))
    result = await dependency_probe(small, ctx)
    assert (result.success, result.reason) == (False, reason), result.error
    assert result.details["backoff_seconds"] > 0


async def test_retry_after_sets_the_backoff(serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({"/incidents.json": respond(b"busy", 429, "text/plain",
                                                   {"Retry-After": "900"})})
    result = await dependency_probe(witness_check(config(base), "gcp_status"), ctx)
    assert result.reason == "http_status"
    assert result.details["backoff_seconds"] == 600  # Retry-After, capped like status pages


async def test_connection_refused(ctx: ProbeContext) -> None:
    result = await dependency_probe(witness_check(config("http://127.0.0.1:9"), "gcp_status"),
                                    ctx)
    assert result.reason == "connect"


async def test_series_through_state_and_collector(serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({"/incidents.json": respond(GCP_OPEN),
                        "/api/v1/models/anthropic/claude-sonnet-4.6/endpoints":
                        respond(endpoints(50.0))})
    cfg = config(base)
    state = StateStore()
    state.sync(cfg)
    for kind, prober in (("gcp_status", dependency_probe), ("openrouter", crowd_probe)):
        check = state.checks[witness_check(cfg, kind).key].check
        state.record(check, await prober(check, ctx))
    verdicts = Verdicts()
    verdicts.refresh(state, cfg)
    text = Collector(state, verdicts).render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in families.values() for s in f.samples}

    def value(metric: str, **labels: str) -> float:
        return values[(metric, tuple(sorted(labels.items())))]

    assert value("dependency_poll_success", upstream="claude", dependency="gcp") == 1
    assert value("dependency_polls_total", upstream="claude", dependency="gcp") == 1
    assert value("dependency_incidents_open", upstream="claude", dependency="gcp",
                 severity="high") == 1
    assert value("dependency_incident_info", upstream="claude", dependency="gcp",
                 incident_id="g1", name="Vertex errors", service="Vertex Gemini API",
                 region="Columbus (us-east5)", severity="high") == 1
    assert value("crowd_poll_success", upstream="claude", source="openrouter") == 1
    assert value("crowd_endpoint_uptime_ratio", upstream="claude", source="openrouter",
                 model="anthropic/claude-sonnet-4.6", provider="Anthropic",
                 endpoint="anthropic", window="5m") == 0.5
    assert value("crowd_endpoint_status_code", upstream="claude", source="openrouter",
                 model="anthropic/claude-sonnet-4.6", provider="Anthropic",
                 endpoint="anthropic") == 0
    # 1d is null at the source: absent, not 0.
    assert not [k for k in values if k[0] == "crowd_endpoint_uptime_ratio"
                and ("window", "1d") in k[1]]
    witness = {dict(k[1])["witness"]: dict(k[1])["view"] for k, v in values.items()
               if k[0] == "upstream_witness" and v == 1}
    assert witness["crowd"] == "down" and witness["dependencies"] == "down"
    assert witness["probes"] == "unknown"
    # The crowd alone raises the verdict to degraded, and names the open cloud incident.
    decision = verdicts.by_upstream["claude"].decision
    assert decision.verdict == "degraded"
    assert "crowd" in decision.decided_by
    assert any("gcp incident" in s for s in decision.signals)
    # The crowd counts towards the unacknowledged time, as our probes do.
    since = verdicts.by_upstream["claude"].unacknowledged_since
    assert since is not None
    assert verdicts.unacknowledged_seconds("claude", since + 30) == 30


async def test_a_failed_poll_keeps_the_last_good_incidents(serve: Serve,
                                                           ctx: ProbeContext) -> None:
    answers = [GCP_OPEN, b"<html>oops</html>"]

    async def flip(request: web.Request) -> web.StreamResponse:
        return web.Response(body=answers.pop(0), content_type="application/json")

    base = await serve({"/incidents.json": flip})
    cfg = config(base)
    state = StateStore()
    state.sync(cfg)
    check = state.checks[witness_check(cfg, "gcp_status").key].check
    results: list[Result] = [await dependency_probe(check, ctx) for _ in range(2)]
    for result in results:
        state.record(check, result)
    text = Collector(state, Verdicts()).render().decode()
    assert 'dependency_poll_success{dependency="gcp",upstream="claude"} 0.0' in text
    assert 'dependency_poll_failures_total{dependency="gcp",reason="not_json",upstream="claude"} 1.0' in text
    assert 'incident_id="g1"' in text


async def test_status_landing_and_check_show_witnesses_side_by_side(
        serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({"/incidents.json": respond(GCP_OPEN),
                        "/api/v1/models/anthropic/claude-sonnet-4.6/endpoints":
                        respond(endpoints(50.0))})
    cfg = config(base)
    state = StateStore()
    state.sync(cfg)
    for kind, prober in (("gcp_status", dependency_probe), ("openrouter", crowd_probe)):
        check = state.checks[witness_check(cfg, kind).key].check
        state.record(check, await prober(check, ctx))
    verdicts = Verdicts()
    verdicts.refresh(state, cfg)
    doc = status.build(cfg, state, verdicts, ready=True, secrets=Secrets())
    (up,) = doc["upstreams"]
    assert [(w["witness"], w["view"], w["decided"]) for w in up["witnesses"]] == [
        ("statuspage", "unknown", False), ("probes", "unknown", False),
        ("network", "unknown", False), ("crowd", "down", True),
        ("dependencies", "down", False), ("control", "unknown", False)]
    assert [c["name"] for c in up["checks"]] == ["api"]  # witnesses are not probes
    (dep,) = up["dependencies"]
    assert dep["name"] == "gcp" and dep["incidents"][0]["id"] == "g1"
    (source,) = up["crowd"]
    assert source["endpoints"] == [{"model": "anthropic/claude-sonnet-4.6",
                                    "provider": "Anthropic", "endpoint": "anthropic",
                                    "uptime_5m": 0.5, "failing": True}]
    json.dumps(doc)  # serialisable as /api/v1/status
    page = landing.render(doc)
    assert "the crowd" in page and "Vertex errors" in page and "50.0%" in page
    table = cli.format_table(doc)
    assert "crowd=down*" in table and "dependencies=down " in table
    assert "crowd/openrouter" not in table and "openrouter" in table
