"""The simulator's cloud feeds and OpenRouter answer, read by the exporter's own parsers, and
the witness scenarios as the verdict sees them (through the real pollers)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest

from exporter import demo
from exporter.cli import _check_once
from exporter.config import load_text
from exporter.secrets import Secrets
from exporter.simulator import Simulator
from exporter.witnesses import aws, azure, gcp, openrouter
from exporter.witnesses.feed import decode_text


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator("operational")
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


async def get(url: str, **headers: str) -> tuple[int, bytes, Mapping[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers.copy()


@pytest.mark.parametrize(("scenario", "open_count"), [("operational", 0),
                                                      ("cloud_incident", 1)])
@pytest.mark.parametrize(("path", "parse"), [
    ("/gcp/incidents.json", gcp.parse_body),
    ("/aws/currentevents", aws.parse_body),
    ("/aws/data.json", aws.parse_body),
    ("/aws/rss/all.rss", aws.parse_body),
])
async def test_cloud_feeds_parse(sim: Simulator, scenario: str, open_count: int, path: str,
                                 parse: object) -> None:
    sim.set_scenario(scenario)
    status, body, _ = await get(sim.base_url + path)
    assert status == 200
    assert callable(parse)
    incidents = parse(body)
    assert sum(i.open for i in incidents) == open_count
    assert len(incidents) >= 1  # a resolved one is always there: closed must read as closed


async def test_formats_keep_their_quirks(sim: Simulator) -> None:
    _, current, _ = await get(sim.base_url + "/aws/currentevents")
    assert current.startswith(b"\xff\xfe") or current.startswith(b"\xfe\xff")  # UTF-16 BOM
    _, feed, _ = await get(sim.base_url + "/azure/status/feed/")
    assert b"\r\n" in feed and b"<item>" not in feed
    assert azure.parse_body(feed) == ()
    assert decode_text(current).lstrip().startswith("[")


async def test_feeds_answer_304_to_their_etag(sim: Simulator) -> None:
    _, _, headers = await get(sim.base_url + "/gcp/incidents.json")
    status, body, _ = await get(sim.base_url + "/gcp/incidents.json",
                                **{"If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")


@pytest.mark.parametrize(("scenario", "anthropic_5m", "status"), [
    ("operational", 1.0, 0), ("crowd_sees_model_down", 0.0, -5),
    ("crowd_healthy_probes_fail", 1.0, 0)])
async def test_openrouter_answer(sim: Simulator, scenario: str, anthropic_5m: float,
                                 status: int) -> None:
    sim.set_scenario(scenario)
    _, body, _ = await get(sim.openrouter_url + "/models/anthropic/claude-haiku-4.5/endpoints")
    health = openrouter.parse_body("anthropic/claude-haiku-4.5")(body)
    mine = health.of(["Anthropic"])
    assert {e.endpoint for e in mine} == {"anthropic", "anthropic/2"}
    assert {(e.uptime["5m"], e.status) for e in mine} == {(anthropic_5m, status)}
    vertex = next(e for e in health.endpoints if e.provider == "Google")
    assert "5m" not in vertex.uptime  # null stays absent


@pytest.mark.parametrize(("scenario", "verdict", "decided", "signal"), [
    ("cloud_incident", "operational", None, "open aws incident (context)"),
    ("crowd_sees_model_down", "degraded", "crowd", "the crowd sees failures"),
    ("crowd_healthy_probes_fail", "outage", "probes", "likely on our side"),
])
async def test_demo_scenarios_show_each_witness(scenario: str, verdict: str,
                                                decided: str | None, signal: str) -> None:
    """One round of every demo check, as `check --demo --demo.scenario=...` runs it."""
    args = argparse.Namespace(demo=True, demo_scenario=scenario, config_file=None, vantage=None)
    doc = await _check_once(args, Secrets())
    claude = next(u for u in doc["upstreams"] if u["name"] == "claude")
    assert claude["verdict"] == verdict, claude["signals"]
    if decided:
        assert decided in claude["decided_by"]
    assert any(signal in s for s in claude["signals"]), claude["signals"]
    views = {w["witness"]: w["view"] for w in claude["witnesses"]}
    assert views["crowd"] != "unknown" and views["dependencies"] != "unknown"


def test_demo_config_watches_all_three_clouds_and_the_crowd() -> None:
    sim = Simulator("operational")
    sim.base_url, sim.tls_address = "http://127.0.0.1:1", "127.0.0.1:2"
    cfg = load_text(demo.config_text(sim, icmp=False), "<demo>")
    claude = cfg.upstream("claude")
    assert claude is not None
    assert {d.kind for d in claude.dependencies} == {"aws_health", "gcp_status", "azure_status"}
    assert [c.kind for c in claude.crowd] == ["openrouter"]
