"""The simulator: every scenario reads back through the real parser; wire shapes; ETag; control."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import EXPORTER, ROOT, http_get
from multidict import CIMultiDict

from exporter.checks.base import ProbeContext, Result
from exporter.config import StatuspageConfig
from exporter.simulator import LIFECYCLE, Simulator, serve
from exporter.simulator.scenarios import API_COMPONENT, INCIDENT_LIFECYCLE, SCENARIOS
from exporter.simulator.statuspage import COMPONENT_NAMES, INCIDENTIO_IDS
from exporter.witnesses.statuspage import Page, parse, poll

MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SECONDS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
BASE36_ID = re.compile(r"^[0-9a-z]{12}$")
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
OK_SCENARIOS = sorted(n for n, s in SCENARIOS.items() if s.page.mode == "ok")
SUMMARY = "/api/v2/summary.json"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(slow_seconds=1.0, retry_after=7, seed=1)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def new_ctx(session: aiohttp.ClientSession) -> ProbeContext:
    return ProbeContext(session=session, logger=logging.getLogger("test.simulator"))


async def fetch(session: aiohttp.ClientSession, url: str,
                **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.get(url, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def document(session: aiohttp.ClientSession, url: str) -> Any:
    status, _, body = await fetch(session, url)
    assert status == 200, body
    return json.loads(body)


async def poll_page(session: aiohttp.ClientSession, base: str, limit: float = 3.0,
                    ctx: ProbeContext | None = None) -> Result:
    return await poll(base + SUMMARY, StatuspageConfig(url=base, timeout=limit),
                      ctx or new_ctx(session))


# -- every scenario reads back to its intended states ------------------------------------------


@pytest.mark.parametrize("name", OK_SCENARIOS)
async def test_scenario_reads_back_through_the_parser(
        sim: Simulator, session: aiohttp.ClientSession, name: str) -> None:
    sim.set_scenario(name)
    state = SCENARIOS[name].page
    result = await poll_page(session, sim.statuspage_url)
    assert result.success, result.error
    page: Page = result.details["page"]
    assert page.indicator == state.indicator
    assert {cid: page.status_of(cid) for cid in COMPONENT_NAMES} == {
        cid: state.components.get(cid, "operational") for cid in COMPONENT_NAMES}
    opened = [(i.status, i.impact) for i in page.open_incidents]
    assert opened == ([(state.incident_status, state.incident_impact)]
                      if state.incident_status else [])
    assert page.maintenance_active is (state.maintenance == "in_progress")
    if state.maintenance == "in_progress":
        assert API_COMPONENT in page.components_in_maintenance
    if state.maintenance == "scheduled":
        assert page.next_maintenance_start is not None
        assert page.next_maintenance_start > time.time()
    else:
        assert page.next_maintenance_start is None


@pytest.mark.parametrize("name", OK_SCENARIOS)
async def test_incidentio_flavour_reads_back(
        sim: Simulator, session: aiohttp.ClientSession, name: str) -> None:
    sim.set_scenario(name)
    state = SCENARIOS[name].page
    result = await poll_page(session, sim.incidentio_url)
    assert result.success, result.error
    page: Page = result.details["page"]
    assert page.indicator == state.indicator
    assert {cid: page.status_of(INCIDENTIO_IDS[cid]) for cid in COMPONENT_NAMES} == {
        cid: state.components.get(cid, "operational") for cid in COMPONENT_NAMES}
    assert [i.status for i in page.open_incidents] == (
        [state.incident_status] if state.incident_status else [])
    assert page.maintenances == ()  # incident.io's compatible JSON has no maintenances


@pytest.mark.parametrize(("name", "reason", "status"), [
    ("challenge_page", "http_status", 403),
    ("malformed_page", "not_json", 200),
    ("page_rate_limited", "http_status", 429),
    ("page_http_500", "http_status", 500),
])
async def test_page_modes_fail_the_poll(sim: Simulator, session: aiohttp.ClientSession,
                                        name: str, reason: str, status: int) -> None:
    sim.set_scenario(name)
    for base in (sim.statuspage_url, sim.incidentio_url):
        result = await poll_page(session, base)
        assert (result.success, result.reason) == (False, reason), result.error
        assert result.details.get("http_status", status) == status


async def test_challenge_is_an_html_403(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.set_scenario("challenge_page")
    status, headers, body = await fetch(session, sim.statuspage_url + SUMMARY)
    assert status == 403
    assert headers["Content-Type"].startswith("text/html")
    assert body.lstrip().startswith(b"<!DOCTYPE html>")


async def test_rate_limited_page_sends_retry_after(
        sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.set_scenario("page_rate_limited")
    result = await poll_page(session, sim.statuspage_url)
    assert result.details["retry_after_seconds"] == 7


async def test_slow_page_times_out_then_answers_with_patience(
        sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.set_scenario("slow_page")
    started = time.perf_counter()
    quick = await poll_page(session, sim.statuspage_url, limit=0.3)
    assert (quick.success, quick.reason) == (False, "timeout")
    assert time.perf_counter() - started < 0.6
    patient = await poll_page(session, sim.statuspage_url, limit=3.0)
    assert patient.success
    assert patient.duration_seconds >= 1.0


async def test_page_modes_keep_the_page_content(sim: Simulator) -> None:
    sim.set_scenario("major_outage")
    version = sim.model.version
    sim.set_scenario("challenge_page")
    assert sim.model.version == version
    assert sim.model.statuses[API_COMPONENT] == "major_outage"


# -- faithful wire shapes -------------------------------------------------------------------------

ATLASSIAN_COMPONENT_KEYS = {
    "id", "name", "status", "created_at", "updated_at", "position", "description", "showcase",
    "start_date", "group_id", "page_id", "group", "only_show_if_degraded"}
INCIDENT_KEYS = {
    "id", "name", "status", "created_at", "updated_at", "monitoring_at", "resolved_at",
    "impact", "shortlink", "started_at", "page_id", "incident_updates", "components"}
UPDATE_KEYS = {
    "id", "status", "body", "incident_id", "created_at", "updated_at", "display_at",
    "affected_components", "deliver_notifications", "custom_tweet", "tweet_id"}


async def test_atlassian_summary_shape(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.set_scenario("partial_outage")
    doc = await document(session, sim.statuspage_url + SUMMARY)
    assert list(doc) == ["page", "components", "incidents", "scheduled_maintenances", "status"]
    assert doc["page"]["id"] == "tymt9n04zgry" and doc["page"]["time_zone"] == "Etc/UTC"
    assert MILLIS_Z.match(doc["page"]["updated_at"])
    assert [(c["id"], c["name"]) for c in doc["components"]] == list(COMPONENT_NAMES.items())
    for component in doc["components"]:
        assert set(component) == ATLASSIAN_COMPONENT_KEYS
        assert MILLIS_Z.match(component["created_at"]) and MILLIS_Z.match(component["updated_at"])
    [incident] = doc["incidents"]
    assert set(incident) >= INCIDENT_KEYS
    assert BASE36_ID.match(incident["id"])
    assert re.match(r"^https://stspg\.io/[0-9a-z]+$", incident["shortlink"])
    assert incident["reminder_intervals"] is None
    [update] = incident["incident_updates"]
    assert set(update) == UPDATE_KEYS
    assert update["incident_id"] == incident["id"]
    assert {a["code"]: a["new_status"] for a in update["affected_components"]} == {
        API_COMPONENT: "partial_outage", "yyzkbfz2thpt": "degraded_performance"}
    assert {c["id"] for c in incident["components"]} == {API_COMPONENT, "yyzkbfz2thpt"}
    assert doc["status"] == {"indicator": "major", "description": "Partial System Outage"}


async def test_maintenance_shape(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.set_scenario("maintenance")
    doc = await document(session, sim.statuspage_url + SUMMARY)
    [maintenance] = doc["scheduled_maintenances"]
    assert maintenance["status"] == "in_progress" and maintenance["impact"] == "maintenance"
    assert maintenance["reminder_intervals"] == "[]"  # the string, as the real page sends it
    assert MILLIS_Z.match(maintenance["scheduled_for"])
    assert maintenance["scheduled_for"] < maintenance["scheduled_until"]
    assert [c["id"] for c in maintenance["components"]] == [API_COMPONENT]
    assert doc["incidents"] == []


async def test_incidentio_shape(sim: Simulator, session: aiohttp.ClientSession) -> None:
    green = await document(session, sim.incidentio_url + SUMMARY)
    assert "incidents" not in green and "scheduled_maintenances" not in green
    assert "time_zone" not in green["page"]
    sim.set_scenario("major_outage")
    doc = await document(session, sim.incidentio_url + SUMMARY)
    assert "scheduled_maintenances" not in doc
    assert ULID.match(doc["page"]["id"]) and SECONDS_Z.match(doc["page"]["updated_at"])
    for component in doc["components"]:
        assert set(component) == {"id", "name", "status", "position", "page_id", "created_at",
                                  "updated_at"}
        assert ULID.match(component["id"])
        assert SECONDS_Z.match(component["updated_at"])
    statuses = {c["id"]: c["status"] for c in doc["components"]}
    assert statuses[INCIDENTIO_IDS[API_COMPONENT]] == "full_outage"
    [incident] = doc["incidents"]
    assert ULID.match(incident["id"])
    assert not {"components", "shortlink", "started_at", "monitoring_at",
                "resolved_at"} & set(incident)
    assert "affected_components" not in incident["incident_updates"][0]


@pytest.mark.parametrize(("scenario", "endpoint", "key", "count"), [
    ("operational", "status.json", "status", None),
    ("operational", "components.json", "components", 6),
    ("degraded", "incidents/unresolved.json", "incidents", 1),
    ("operational", "incidents/unresolved.json", "incidents", 0),
    ("degraded", "incidents.json", "incidents", 1),
    ("maintenance_scheduled", "scheduled-maintenances/upcoming.json",
     "scheduled_maintenances", 1),
    ("maintenance_scheduled", "scheduled-maintenances/active.json", "scheduled_maintenances", 0),
    ("maintenance", "scheduled-maintenances/active.json", "scheduled_maintenances", 1),
    ("maintenance", "scheduled-maintenances/upcoming.json", "scheduled_maintenances", 0),
    ("maintenance", "scheduled-maintenances.json", "scheduled_maintenances", 1),
])
async def test_other_endpoints(sim: Simulator, session: aiohttp.ClientSession, scenario: str,
                               endpoint: str, key: str, count: int | None) -> None:
    sim.set_scenario(scenario)
    doc = await document(session, f"{sim.statuspage_url}/api/v2/{endpoint}")
    assert list(doc) == ["page", key]
    if count is not None:
        assert len(doc[key]) == count
    parse(doc)  # the parser reads every endpoint


# -- the incident lifecycle ---------------------------------------------------------------------


async def test_incident_lifecycle_keeps_one_incident(
        sim: Simulator, session: aiohttp.ClientSession) -> None:
    seen: list[tuple[str, str, int]] = []
    for name in INCIDENT_LIFECYCLE[1:-1]:
        sim.set_scenario(name)
        [incident] = (await document(session, sim.statuspage_url + SUMMARY))["incidents"]
        seen.append((incident["id"], incident["status"], len(incident["incident_updates"])))
    assert len({incident_id for incident_id, _, _ in seen}) == 1
    assert [(status, n) for _, status, n in seen] == [
        ("investigating", 1), ("identified", 2), ("monitoring", 3)]

    sim.set_scenario("incident_resolved")
    assert (await document(session, sim.statuspage_url + SUMMARY))["incidents"] == []
    [resolved] = (await document(session, sim.statuspage_url + "/api/v2/incidents.json")
                  )["incidents"]
    assert resolved["id"] == seen[0][0]
    assert resolved["status"] == "resolved" and MILLIS_Z.match(resolved["resolved_at"])
    assert MILLIS_Z.match(resolved["monitoring_at"])
    updates = resolved["incident_updates"]
    assert [u["status"] for u in updates] == [
        "resolved", "monitoring", "identified", "investigating"]
    identified = updates[2]["affected_components"]
    assert identified == [{"code": API_COMPONENT, "name": COMPONENT_NAMES[API_COMPONENT],
                           "old_status": "degraded_performance",
                           "new_status": "partial_outage"}]


async def test_lifecycle_pseudo_scenario_cycles(session: aiohttp.ClientSession) -> None:
    simulator = Simulator(LIFECYCLE, cycle_seconds=0.1)
    await simulator.start()
    try:
        seen = {simulator.scenario.name}
        deadline = time.monotonic() + 5
        while len(seen) < len(INCIDENT_LIFECYCLE) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            seen.add(simulator.scenario.name)
        assert seen == set(INCIDENT_LIFECYCLE)
        body = (await fetch(session, simulator.base_url + "/_sim/scenario"))[2]
        assert json.loads(body)["cycle"] == list(INCIDENT_LIFECYCLE)
        simulator.set_scenario("degraded")  # taking control stops the cycle
        await asyncio.sleep(0.3)
        assert simulator.scenario.name == "degraded"
    finally:
        await simulator.stop()


# -- conditional requests and stats -------------------------------------------------------------


async def test_etag_and_last_modified_answer_304(
        sim: Simulator, session: aiohttp.ClientSession) -> None:
    url = sim.statuspage_url + SUMMARY
    status, headers, _ = await fetch(session, url)
    assert status == 200 and headers["ETag"].startswith('W/"')
    etag, last_modified = headers["ETag"], headers["Last-Modified"]

    status, headers, again = await fetch(session, url, **{"If-None-Match": etag})
    assert (status, again) == (304, b"")
    assert headers["ETag"] == etag
    assert (await fetch(session, url, **{"If-Modified-Since": last_modified}))[0] == 304
    earlier = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert (await fetch(session, url, **{"If-Modified-Since": earlier}))[0] == 200
    assert (await fetch(session, url, **{"If-None-Match": '"other"',
                                         "If-Modified-Since": last_modified}))[0] == 200

    sim.set_scenario("operational")  # the same content: the ETag stays
    assert (await fetch(session, url))[1]["ETag"] == etag
    sim.set_scenario("degraded")
    status, headers, _ = await fetch(session, url, **{"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag

    stats = sim.stats[url.removeprefix(sim.base_url)]
    assert stats["requests"] == 7
    assert (stats["responses_200"], stats["responses_304"]) == (5, 2)


async def test_an_unchanged_page_costs_no_body(
        sim: Simulator, session: aiohttp.ClientSession) -> None:
    ctx = new_ctx(session)
    results = [await poll_page(session, sim.statuspage_url, ctx=ctx) for _ in range(3)]
    assert [r.details["not_modified"] for r in results] == [False, True, True]
    stats = sim.stats["/status/api/v2/summary.json"]
    assert stats["requests"] == 3 and stats["responses_304"] == 2
    assert stats["body_bytes"] == results[0].details["body_bytes"] > 0
    sim.set_scenario("degraded")
    changed = await poll_page(session, sim.statuspage_url, ctx=ctx)
    assert changed.details["not_modified"] is False
    assert changed.details["page"].status_of(API_COMPONENT) == "degraded_performance"


async def test_stats_count_paths_not_control_calls(
        sim: Simulator, session: aiohttp.ClientSession) -> None:
    await fetch(session, sim.base_url + "/_sim/scenario")
    await fetch(session, sim.base_url + "/no/such/path")
    await fetch(session, sim.incidentio_url + SUMMARY)
    stats = sim.stats
    assert set(stats) == {"(unmatched)", "/incidentio/api/v2/summary.json"}
    assert stats["(unmatched)"]["status_codes"] == {"404": 1}
    status, _, body = await fetch(session, sim.base_url + "/_sim/stats")
    assert status == 200 and json.loads(body) == stats
    async with session.post(sim.base_url + "/_sim/stats/reset") as resp:
        assert resp.status == 200
    assert sim.stats == {}


# -- control API --------------------------------------------------------------------------------


async def test_control_get_lists_scenarios(sim: Simulator, session: aiohttp.ClientSession,
                                           ) -> None:
    doc = await document(session, sim.base_url + "/_sim/scenario")
    assert doc["scenario"] == "operational"
    assert set(doc["scenarios"]) == {*SCENARIOS, LIFECYCLE}


@pytest.mark.parametrize(("query", "body"), [
    ("?name=major_outage", None),
    ("", {"scenario": "major_outage"}),
])
async def test_control_post_switches(sim: Simulator, session: aiohttp.ClientSession,
                                     query: str, body: Any) -> None:
    async with session.post(f"{sim.base_url}/_sim/scenario{query}", json=body) as resp:
        assert resp.status == 200
        assert (await resp.json())["scenario"] == "major_outage"
    assert sim.scenario.name == "major_outage"


@pytest.mark.parametrize(("query", "data", "message"), [
    ("?name=nope", None, "unknown scenario 'nope'; choose one of: operational, degraded"),
    ("", b'{"scenario": "nope"}', "unknown scenario 'nope'"),
    ("", b"{not json", "the body must be JSON"),
    ("", b'{"name": "degraded"}', "the body must be JSON"),
    ("", None, "name the scenario"),
])
async def test_control_post_rejects(sim: Simulator, session: aiohttp.ClientSession, query: str,
                                    data: bytes | None, message: str) -> None:
    async with session.post(f"{sim.base_url}/_sim/scenario{query}", data=data) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert sim.scenario.name == "operational"


def test_unknown_scenario_in_code() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        Simulator("nope")


async def test_serve_runs_until_cancelled() -> None:
    ready: list[Simulator] = []
    task = asyncio.create_task(serve("127.0.0.1", 0, LIFECYCLE, None, 60.0,
                                     on_ready=ready.append))
    for _ in range(200):
        if ready:
            break
        await asyncio.sleep(0.01)
    assert ready and ready[0].scenario.name == INCIDENT_LIFECYCLE[0]
    status, _, _ = await asyncio.to_thread(http_get, ready[0].base_url + "/_sim/scenario")
    assert status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the simulator as its own process -----------------------------------------------------------


def test_subprocess_simulator(run_simulator: Any) -> None:
    sim = run_simulator("degraded")
    status, body, _ = http_get(sim.statuspage_url + SUMMARY)
    assert status == 200
    assert parse(json.loads(body)).status_of(API_COMPONENT) == "degraded_performance"
    sim.set_scenario("operational")
    assert parse(json.loads(http_get(sim.incidentio_url + SUMMARY)[1])).indicator == "none"
    stats = sim.stats()
    assert stats["/status/api/v2/summary.json"]["responses_200"] == 1
    assert stats["/incidentio/api/v2/summary.json"]["requests"] == 1
    sim.stop()
    assert sim.proc.returncode == 0


def test_subprocess_rejects_an_unknown_scenario() -> None:
    done = subprocess.run([sys.executable, "-m", "exporter.simulator", "--scenario=nope",
                           "--listen=127.0.0.1:0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "unknown scenario 'nope'" in done.stderr


@pytest.mark.parametrize("command", [
    [EXPORTER, "--demo", "--demo.scenario=nope"],
    [EXPORTER, "check", "--demo", "--demo.scenario=nope"],
])
def test_an_unknown_demo_scenario_is_a_usage_error_not_a_crash(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
