"""The fake status page: Statuspage v2 JSON and incident.io's compatible shape, from a scenario.

``PageModel`` holds the page as it evolves. Applying scenarios one after another behaves
like a real page: an incident keeps its id while it moves from investigating to monitoring,
gains an update (newest first, with ``affected_components``) at every change, and leaves
``summary.json`` when it is resolved, staying in ``incidents.json`` as history. Applying a
scenario that changes nothing changes nothing, so ETag and Last-Modified stay put.

A scenario whose page mode is not ``ok`` (challenge, slow, malformed, ...) changes how the
page answers, not what it says: the model is left as it was.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from exporter.simulator.scenarios import API_COMPONENT, Scenario

PAGE_ID = "tymt9n04zgry"  # the real Claude page's id
PAGE_NAME = "Claude"
INCIDENTIO_PAGE_ID = "01JR3M8K2V6WQ4T9XH5CZ7N0BD"

# The real Claude components (statuspage-formats.md §0): id, name, created_at, and the
# ULID the incident.io-shaped fake uses for the same component.
COMPONENTS = (
    ("rwppv331jlwc", "claude.ai", "2023-07-11T17:58:59.321Z", "01JR3M8K2VA1C0MP0NENT00001"),
    ("0qbwn08sd68x", "Claude Console (platform.claude.com)", "2023-07-11T18:00:14.108Z",
     "01JR3M8K2VA1C0MP0NENT00002"),
    ("k8w3r06qmzrp", "Claude API (api.anthropic.com)", "2023-07-11T18:01:02.655Z",
     "01JR3M8K2VA1C0MP0NENT00003"),
    ("yyzkbfz2thpt", "Claude Code", "2025-02-24T17:33:47.902Z", "01JR3M8K2VA1C0MP0NENT00004"),
    ("bpp5gb3hpjcl", "Claude Cowork", "2026-04-01T16:12:31.514Z", "01JR3M8K2VA1C0MP0NENT00005"),
    ("0scnb50nvy53", "Claude for Government", "2026-02-17T15:45:08.230Z",
     "01JR3M8K2VA1C0MP0NENT00006"),
)
COMPONENT_NAMES = {cid: name for cid, name, _, _ in COMPONENTS}
INCIDENTIO_IDS = {cid: ulid for cid, _, _, ulid in COMPONENTS}

DESCRIPTIONS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major Service Outage",
    "maintenance": "Service Under Maintenance",
}
UPDATE_BODIES = {
    "investigating": "We are currently investigating this issue.",
    "identified": "The issue has been identified and a fix is being implemented.",
    "monitoring": "A fix has been implemented and we are monitoring the results.",
    "resolved": "This incident has been resolved.",
    "scheduled": "We will be undergoing scheduled maintenance during this time.",
    "in_progress": "Scheduled maintenance is currently in progress. We will provide updates "
                   "as necessary.",
    "completed": "The scheduled maintenance has been completed.",
}
HISTORY_LIMIT = 50
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Atlassian endpoints under <base>/api/v2/, each a function of the model.
ATLASSIAN_ENDPOINTS = (
    "summary.json", "status.json", "components.json", "incidents.json",
    "incidents/unresolved.json", "scheduled-maintenances.json",
    "scheduled-maintenances/upcoming.json", "scheduled-maintenances/active.json",
)


def iso_millis(ts: float) -> str:
    """Statuspage style for an Etc/UTC page: ``2026-10-07T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_seconds(ts: float) -> str:
    """incident.io style: whole seconds and ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Thread:
    """An incident or a maintenance as it evolves on the page."""

    kind: str  # incident | maintenance
    id: str
    ulid: str
    name: str
    status: str
    impact: str
    created_at: float
    shortlink: str
    components: list[str]
    updates: list[dict[str, Any]] = field(default_factory=list)  # newest first
    updated_at: float = 0.0
    monitoring_at: float | None = None
    resolved_at: float | None = None
    scheduled_for: float | None = None
    scheduled_until: float | None = None


class PageModel:
    """The page's content; ``version`` changes exactly when the content does."""

    def __init__(self, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.rng = rng or random.Random()
        self.clock = clock
        now = clock()
        self.statuses = {cid: "operational" for cid in COMPONENT_NAMES}
        self.component_updated = dict.fromkeys(COMPONENT_NAMES, now)
        self.indicator = "none"
        self.incident: Thread | None = None
        self.maintenance: Thread | None = None
        self.history: list[Thread] = []  # closed incidents and maintenances, newest first
        self.updated_at = now
        self.version = 0

    # -- ids -------------------------------------------------------------------------------

    def _base36(self) -> str:
        return "".join(self.rng.choice(BASE36) for _ in range(12))

    def _ulid(self, ts: float) -> str:
        millis = int(ts * 1000)
        head = "".join(CROCKFORD[(millis >> shift) & 31] for shift in range(45, -1, -5))
        return head + "".join(self.rng.choice(CROCKFORD) for _ in range(16))

    # -- scenario → content ---------------------------------------------------------------

    def apply(self, scenario: Scenario) -> bool:
        """Move the page to the scenario's state; True if anything changed."""
        state = scenario.page
        if state.mode != "ok":
            return False
        now = self.clock()
        wanted = {cid: state.components.get(cid, "operational") for cid in COMPONENT_NAMES}
        old = dict(self.statuses)
        moved = {cid for cid in wanted if wanted[cid] != old[cid]}
        for cid in moved:
            self.component_updated[cid] = now
        self.statuses = wanted
        changed = bool(moved) | (self.indicator != state.indicator)
        self.indicator = state.indicator

        if state.incident_status is not None:
            changed |= self._incident_step(scenario, old, now)
        elif self.incident is not None:
            self._close(self.incident, "resolved", old, now)
            self.incident = None
            changed = True

        changed |= self._maintenance_step(state.maintenance, old, now)
        if changed:
            self.updated_at = now
            self.version += 1
        return changed

    def _incident_step(self, scenario: Scenario, old: dict[str, str], now: float) -> bool:
        state = scenario.page
        assert state.incident_status is not None
        troubled = [cid for cid, s in self.statuses.items()
                    if s not in ("operational", "under_maintenance")]
        incident = self.incident
        if incident is None:
            components = troubled or [API_COMPONENT]
            names = " and ".join(COMPONENT_NAMES[c] for c in components[:2])
            title = ("Elevated errors on " if state.incident_impact in ("major", "critical")
                     else "Degraded performance on ") + names
            incident = Thread("incident", self._base36(), self._ulid(now), title,
                              state.incident_status, state.incident_impact, now,
                              "https://stspg.io/" + self._base36(), components)
            self.incident = incident
        elif (incident.status == state.incident_status
              and incident.impact == state.incident_impact
              and all(old[c] == self.statuses[c] for c in incident.components)
              and set(troubled) <= set(incident.components)):
            return False
        incident.components += [c for c in troubled if c not in incident.components]
        incident.status = state.incident_status
        incident.impact = state.incident_impact
        if incident.status == "monitoring" and incident.monitoring_at is None:
            incident.monitoring_at = now
        self._add_update(incident, incident.status, old, now)
        return True

    def _maintenance_step(self, wanted: str, old: dict[str, str], now: float) -> bool:
        current = self.maintenance
        if wanted == "none":
            if current is None:
                return False
            if current.status == "in_progress":
                self._close(current, "completed", old, now)
            self.maintenance = None
            return True
        if current is not None and current.status == wanted:
            return False
        if current is None or wanted == "scheduled":
            if current is not None:
                self._close(current, "completed", old, now)
            start = now + (2 * 3600 if wanted == "scheduled" else -600)
            start -= start % 60
            current = Thread(
                "maintenance", self._base36(), self._ulid(now), "Scheduled maintenance of the "
                "Claude API", wanted, "maintenance", now, "https://stspg.io/" + self._base36(),
                [], scheduled_for=start, scheduled_until=start + 2 * 3600)
            self.maintenance = current
        current.status = wanted
        covered = [c for c, s in self.statuses.items() if s == "under_maintenance"]
        current.components = covered or current.components or [API_COMPONENT]
        if wanted == "in_progress" and current.scheduled_for and current.scheduled_for > now:
            current.scheduled_for = now - now % 60
        self._add_update(current, wanted, old, now)
        return True

    def _close(self, thread: Thread, status: str, old: dict[str, str], now: float) -> None:
        thread.status = status
        thread.resolved_at = now
        self._add_update(thread, status, old, now)
        self.history.insert(0, thread)
        del self.history[HISTORY_LIMIT:]

    def _add_update(self, thread: Thread, status: str, old: dict[str, str], now: float) -> None:
        affected = [{"code": cid, "name": COMPONENT_NAMES[cid], "old_status": old[cid],
                     "new_status": self.statuses[cid]} for cid in thread.components]
        thread.updates.insert(0, {
            "id": self._base36(),
            "ulid": self._ulid(now),
            "status": status,
            "body": UPDATE_BODIES.get(status, status),
            "incident_id": thread.id,
            "created_at": now,
            "affected_components": affected or None,
        })
        thread.updated_at = now

    # -- Atlassian Statuspage v2 ----------------------------------------------------------

    def atlassian(self, endpoint: str, page_url: str) -> dict[str, Any]:
        """The document for ``/api/v2/<endpoint>``; KeyError for an unknown endpoint."""
        page = {"id": PAGE_ID, "name": PAGE_NAME, "url": page_url, "time_zone": "Etc/UTC",
                "updated_at": iso_millis(self.updated_at)}
        status = {"indicator": self.indicator, "description": DESCRIPTIONS[self.indicator]}
        incidents = [self.incident] if self.incident else []
        closed_incidents = [t for t in self.history if t.kind == "incident"]
        maintenances = [self.maintenance] if self.maintenance else []
        closed_maintenances = [t for t in self.history if t.kind == "maintenance"]
        incident_docs = [self._incident_doc(t) for t in incidents]
        builders: dict[str, Callable[[], dict[str, Any]]] = {
            "summary.json": lambda: {
                "page": page, "components": self._component_docs(),
                "incidents": incident_docs,
                "scheduled_maintenances": [self._incident_doc(t) for t in maintenances],
                "status": status},
            "status.json": lambda: {"page": page, "status": status},
            "components.json": lambda: {"page": page, "components": self._component_docs()},
            "incidents.json": lambda: {"page": page, "incidents": [
                self._incident_doc(t) for t in (incidents + closed_incidents)[:HISTORY_LIMIT]]},
            "incidents/unresolved.json": lambda: {"page": page, "incidents": incident_docs},
            "scheduled-maintenances.json": lambda: {"page": page, "scheduled_maintenances": [
                self._incident_doc(t)
                for t in (maintenances + closed_maintenances)[:HISTORY_LIMIT]]},
            "scheduled-maintenances/upcoming.json": lambda: {
                "page": page, "scheduled_maintenances": [
                    self._incident_doc(t) for t in maintenances if t.status == "scheduled"]},
            "scheduled-maintenances/active.json": lambda: {
                "page": page, "scheduled_maintenances": [
                    self._incident_doc(t) for t in maintenances
                    if t.status in ("in_progress", "verifying")]},
        }
        return builders[endpoint]()

    def _component_docs(self) -> list[dict[str, Any]]:
        return [self._component_doc(cid, position)
                for position, cid in enumerate(COMPONENT_NAMES, start=1)]

    def _component_doc(self, cid: str, position: int | None = None) -> dict[str, Any]:
        created = next(c for i, _, c, _ in COMPONENTS if i == cid)
        if position is None:
            position = list(COMPONENT_NAMES).index(cid) + 1
        return {
            "id": cid, "name": COMPONENT_NAMES[cid], "status": self.statuses[cid],
            "created_at": created, "updated_at": iso_millis(self.component_updated[cid]),
            "position": position, "description": None, "showcase": True,
            "start_date": created[:10], "group_id": None, "page_id": PAGE_ID, "group": False,
            "only_show_if_degraded": False,
        }

    def _incident_doc(self, t: Thread) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": t.id, "name": t.name, "status": t.status,
            "created_at": iso_millis(t.created_at), "updated_at": iso_millis(t.updated_at),
            "monitoring_at": iso_millis(t.monitoring_at) if t.monitoring_at else None,
            "resolved_at": iso_millis(t.resolved_at) if t.resolved_at else None,
            "impact": t.impact, "shortlink": t.shortlink,
            "started_at": iso_millis(t.created_at), "page_id": PAGE_ID,
            "incident_updates": [{
                "id": u["id"], "status": u["status"], "body": u["body"],
                "incident_id": t.id, "created_at": iso_millis(u["created_at"]),
                "updated_at": iso_millis(u["created_at"]),
                "display_at": iso_millis(u["created_at"]),
                "affected_components": u["affected_components"],
                "deliver_notifications": True, "custom_tweet": None, "tweet_id": None,
            } for u in t.updates],
            "components": [self._component_doc(cid) for cid in t.components],
        }
        if t.kind == "maintenance":
            doc["scheduled_for"] = iso_millis(t.scheduled_for or t.created_at)
            doc["scheduled_until"] = iso_millis(t.scheduled_until or t.created_at)
            doc["reminder_intervals"] = "[]"  # the real page sends this string
        else:
            doc["reminder_intervals"] = None
        return doc

    # -- incident.io compatible ---------------------------------------------------------------

    def incidentio(self, page_url: str) -> dict[str, Any]:
        """incident.io's Statuspage-compatible summary: flat components with ULIDs, no
        time_zone, no scheduled_maintenances key, no incidents key when there are none."""
        doc: dict[str, Any] = {
            "page": {"id": INCIDENTIO_PAGE_ID, "name": PAGE_NAME, "url": page_url,
                     "updated_at": iso_seconds(self.updated_at)},
            "components": [{
                "id": INCIDENTIO_IDS[cid], "name": name,
                "status": "full_outage" if self.statuses[cid] == "major_outage"
                else self.statuses[cid],
                "position": position, "page_id": INCIDENTIO_PAGE_ID,
                "created_at": created[:19] + "Z",
                "updated_at": iso_seconds(self.component_updated[cid]),
            } for position, (cid, name, created, _) in enumerate(COMPONENTS, start=1)],
        }
        if self.incident is not None:
            t = self.incident
            doc["incidents"] = [{
                "id": t.ulid, "name": t.name, "status": t.status, "impact": t.impact,
                "created_at": iso_seconds(t.created_at), "updated_at": iso_seconds(t.updated_at),
                "page_id": INCIDENTIO_PAGE_ID,
                "incident_updates": [{
                    "id": u["ulid"], "status": u["status"], "body": u["body"],
                    "incident_id": t.ulid, "created_at": iso_seconds(u["created_at"]),
                    "updated_at": iso_seconds(u["created_at"]),
                    "display_at": iso_seconds(u["created_at"]),
                } for u in t.updates],
            }]
        doc["status"] = {"indicator": self.indicator,
                         "description": DESCRIPTIONS[self.indicator]}
        return doc


# -- HTTP -----------------------------------------------------------------------------------

CHALLENGE_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Just a moment...</title>
<meta name="robots" content="noindex,nofollow"></head>
<body><h1>Checking your browser before accessing the status page.</h1>
<p>This process is automatic. Enable JavaScript and cookies to continue.</p>
<noscript>JavaScript is required.</noscript></body></html>
"""
ERROR_HTML = "<html><body><h1>500 Internal Server Error</h1></body></html>\n"


@dataclass
class PageSettings:
    slow_seconds: float = 12.0  # longer than the default 10 s timeout
    retry_after: int = 30


class PageServer:
    """aiohttp handlers for both page flavours; bodies are rendered once per model version."""

    def __init__(self, model: PageModel, scenario: Callable[[], Scenario],
                 settings: PageSettings) -> None:
        self.model = model
        self.scenario = scenario
        self.settings = settings
        self._cache: dict[tuple[str, str, str], tuple[int, bytes, str]] = {}

    def add_routes(self, app: web.Application) -> None:
        for endpoint in ATLASSIAN_ENDPOINTS:
            app.router.add_get(f"/status/api/v2/{endpoint}", self._atlassian_handler(endpoint))
        app.router.add_get("/incidentio/api/v2/summary.json", self._incidentio)

    def body(self, flavor: str, endpoint: str, page_url: str) -> tuple[bytes, str]:
        """The rendered body and its ETag for the model's current version."""
        key = (flavor, endpoint, page_url)
        cached = self._cache.get(key)
        if cached is None or cached[0] != self.model.version:
            doc = (self.model.atlassian(endpoint, page_url) if flavor == "atlassian"
                   else self.model.incidentio(page_url))
            body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            etag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            cached = (self.model.version, body, etag)
            self._cache[key] = cached
        return cached[1], cached[2]

    def _atlassian_handler(self, endpoint: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._answer(request, "atlassian", endpoint, "/status")
        return handler

    async def _incidentio(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "incidentio", "summary.json", "/incidentio")

    async def _answer(self, request: web.Request, flavor: str, endpoint: str,
                      prefix: str) -> web.StreamResponse:
        mode = self.scenario().page.mode
        if mode == "slow":
            await asyncio.sleep(self.settings.slow_seconds)
        elif mode == "challenge":
            return web.Response(status=403, text=CHALLENGE_HTML, content_type="text/html",
                                headers={"Cache-Control": "no-store"})
        elif mode == "http_500":
            return web.Response(status=500, text=ERROR_HTML, content_type="text/html")
        elif mode == "rate_limited":
            return web.Response(status=429, text="Too Many Requests\n",
                                headers={"Retry-After": str(self.settings.retry_after)})
        body, etag = self.body(flavor, endpoint, f"{request.url.origin()}{prefix}")
        if mode == "malformed":
            return web.Response(body=body[: len(body) // 2], content_type="application/json")
        last_modified = email.utils.formatdate(self.model.updated_at, usegmt=True)
        headers = {"ETag": etag, "Last-Modified": last_modified,
                   "Cache-Control": "max-age=0, private, must-revalidate"}
        if not_modified(request, etag, self.model.updated_at):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", charset="utf-8",
                            headers=headers)


def not_modified(request: web.Request, etag: str, updated_at: float) -> bool:
    """RFC 9110 conditional GET: If-None-Match (weak comparison) wins over If-Modified-Since."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            moment = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(updated_at) <= moment.timestamp()
    return False
