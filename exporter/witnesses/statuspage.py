"""Status pages: Atlassian Statuspage v2 and incident.io's Statuspage-compatible JSON.

Two layers. ``parse(payload, options)`` is pure: it turns a decoded ``summary.json`` (or
``components.json``, ``status.json``, ...) into a ``Page`` and tolerates every missing key
and unknown enum value. ``poll(url, options, ctx)`` fetches the page politely (User-Agent,
conditional requests, bounded redirects, a capped body read, backoff with jitter) and turns
the Page into samples.

Failure reasons, a fixed set:

    timeout      no complete answer within the timeout (slow headers or a slow-drip body)
    dns          the page's host name does not resolve
    connect      refused, reset, unreachable, or the connection closed before the full body
    tls          certificate or handshake failure (or tls_config cannot be loaded)
    proxy        the proxy is unreachable, refused the tunnel, or asks for credentials (407)
    http2_only   the server speaks only HTTP/2
    auth         basic_auth / authorization is configured but its secret cannot be read
    bad_response a response head that is not HTTP/1.1 we accept
    http_status  a non-2xx answer (403/405 challenge, 429, 5xx, ...) or a redirect loop
    not_json     a 2xx answer that is not JSON: HTML, a wrong content type, malformed JSON
    schema       valid JSON, but not a status-page document (no page object naming the page,
                 no status object with an indicator)
    too_large    the body exceeds max_body_bytes (the rest is never read)
    local_resources  out of file descriptors or buffers here: ours, not the page's

Emitted gauges (upstream is filled in by the state store)::

    statuspage_page_updated_timestamp_seconds 1.7e+09
    statuspage_indicator{indicator="none"} 1          # every state, exactly one is 1
    statuspage_component_status{component_id="k8w3r06qmzrp",component="Claude API ...",
        group="",status="operational"} 1              # every state per component
    statuspage_incidents_open{impact="major"} 1       # every impact, 0 where none
    statuspage_incident_info{incident_id=...,name=...,impact=...,status=...,shortlink=...} 1
    statuspage_maintenance_active 0
    statuspage_maintenance_next_start_timestamp_seconds 1.7e+09   # only when one is scheduled
    statuspage_dropped_items{what="components"} 0     # what the page's limits left out

Limits (docs/security.md, case 4): label values are cut at ``max_label_chars``; the exported
page keeps at most ``max_components`` components and ``max_incidents`` open incidents (and as
many maintenances); ``statuspage_dropped_items`` counts what was left out. Text is cleaned of
lone surrogates on the way in (exporter/checks/net/safejson.py), so nothing downstream can fail
to encode it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exporter import metrics
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample
from exporter.checks.net.httpclient import (
    USER_AGENT,
    Timing,
    auth_header,
    classify,
    open_session,
    request_options,
    route,
)
from exporter.checks.net.retryafter import CAP_SECONDS, parse_retry_after
from exporter.checks.net.safejson import SchemaError, clean
from exporter.checks.net.safejson import loads as safe_loads
from exporter.config import PolledCheck, StatuspageConfig

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
BACKOFF_CAP_SECONDS = CAP_SECONDS  # the same cap as any Retry-After
LABEL_MAX_CHARS = 256  # the default of max_label_chars
DROPPED = ("components", "incidents", "maintenances", "labels")  # statuspage_dropped_items

INDICATORS = metrics.STATE_SETS["indicator"]
COMPONENT_STATUSES = metrics.STATE_SETS["component_status"]
IMPACTS = metrics.INCIDENT_IMPACTS
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved", "postmortem")
MAINTENANCE_STATUSES = ("scheduled", "in_progress", "verifying", "completed")
CLOSED_INCIDENT = ("resolved", "postmortem")
ACTIVE_MAINTENANCE = ("in_progress", "verifying")
# incident.io's names for the same states (its owner API and widget use them).
ALIASES = {
    "full_outage": "major_outage",
    "maintenance_scheduled": "scheduled",
    "maintenance_in_progress": "in_progress",
    "maintenance_complete": "completed",
}
TOP_LEVEL_KEYS = ("page", "status", "components", "incidents", "scheduled_maintenances")

# Memo keys: kept between polls of the same check.
MEMO_ETAG = "statuspage_etag"
MEMO_LAST_MODIFIED = "statuspage_last_modified"
MEMO_PAGE = "statuspage_page"  # the last parsed, unfiltered Page (reused on 304)
MEMO_FAILURES = "statuspage_consecutive_failures"


# -- the parsed page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    id: str
    name: str
    group: str  # the group's name, "" when the component is not in a group
    status: str  # one of COMPONENT_STATUSES


@dataclass(frozen=True)
class Incident:
    id: str
    name: str
    impact: str  # one of IMPACTS
    status: str  # one of INCIDENT_STATUSES or "unknown"
    shortlink: str
    component_ids: tuple[str, ...]
    created_at: float | None = None

    @property
    def open(self) -> bool:
        return self.status not in CLOSED_INCIDENT


@dataclass(frozen=True)
class Maintenance:
    id: str
    name: str
    status: str  # one of MAINTENANCE_STATUSES or "unknown"
    scheduled_for: float | None
    scheduled_until: float | None
    component_ids: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_MAINTENANCE


@dataclass(frozen=True)
class Page:
    indicator: str = "unknown"  # one of INDICATORS
    updated_at: float | None = None  # Unix time
    components: Mapping[str, Component] = field(default_factory=dict)  # by id, page order
    incidents: tuple[Incident, ...] = ()
    maintenances: tuple[Maintenance, ...] = ()
    id: str = ""
    name: str = ""
    # What parse() and apply_limits() left out, by DROPPED kind ("labels": values cut short).
    dropped: Mapping[str, int] = field(default_factory=dict)

    def status_of(self, component_id: str) -> str | None:
        component = self.components.get(component_id)
        return component.status if component else None

    def find(self, ref: str) -> Component | None:
        """A component by id, else the first one with that name."""
        if ref in self.components:
            return self.components[ref]
        return next((c for c in self.components.values() if c.name == ref), None)

    @property
    def open_incidents(self) -> tuple[Incident, ...]:
        return tuple(i for i in self.incidents if i.open)

    def incidents_for(self, component_id: str) -> tuple[Incident, ...]:
        return tuple(i for i in self.open_incidents if component_id in i.component_ids)

    @property
    def maintenance_active(self) -> bool:
        return any(m.active for m in self.maintenances)

    @property
    def components_in_maintenance(self) -> frozenset[str]:
        """Components an active maintenance covers, or that say under_maintenance."""
        ids = {cid for m in self.maintenances if m.active for cid in m.component_ids}
        ids.update(c.id for c in self.components.values() if c.status == "under_maintenance")
        return frozenset(ids)

    @property
    def next_maintenance_start(self) -> float | None:
        starts = [m.scheduled_for for m in self.maintenances
                  if m.status == "scheduled" and m.scheduled_for is not None]
        return min(starts) if starts else None


# -- pure parsing ------------------------------------------------------------------------------


def summary_url(url: str) -> str:
    """The JSON URL to poll: a ``.json`` URL as is, otherwise ``<url>/api/v2/summary.json``."""
    if urlsplit(url).path.endswith(".json"):
        return url
    return url.rstrip("/") + "/api/v2/summary.json"


def parse(payload: Any, options: StatuspageConfig | None = None,
          label_chars: int | None = None) -> Page:
    """A Page from a decoded Statuspage v2 (or incident.io compatible) document.

    Raises SchemaError when the document is not a status page: it needs a ``page`` object
    that names the page (id, name or url) or a ``status`` object with an ``indicator``, as
    every endpoint of the v2 API sends. Inside one, anything missing or odd is tolerated.
    ``options`` applies the component filters and the limits; label values are cut at
    ``label_chars`` (default: the options' max_label_chars, else LABEL_MAX_CHARS).
    """
    if not isinstance(payload, dict):
        raise SchemaError(f"expected a JSON object, got {_json_type(payload)}")
    if not any(key in payload for key in TOP_LEVEL_KEYS):
        raise SchemaError("none of the keys page, status, components, incidents or "
                          "scheduled_maintenances is present")
    for key, kind in (("page", dict), ("status", dict), ("components", list),
                      ("incidents", list), ("scheduled_maintenances", list)):
        value = payload.get(key)
        if value is not None and not isinstance(value, kind):
            raise SchemaError(f"{key!r} is {_json_type(value)}, expected "
                              f"{'an object' if kind is dict else 'an array'}")

    page_info = payload.get("page") or {}
    status = payload.get("status") or {}
    names_page = any(isinstance(page_info.get(k), str) and str(page_info[k]).strip()
                     for k in ("id", "name", "url"))
    if not names_page and not isinstance(status.get("indicator"), str):
        raise SchemaError("no page object naming the page (id, name or url) and no status "
                          "object with an indicator: not a status-page document")
    if label_chars is None:
        label_chars = options.max_label_chars if options is not None else LABEL_MAX_CHARS
    cut = _Cutter(label_chars)
    page = Page(
        indicator=_enum(status.get("indicator"), INDICATORS),
        updated_at=parse_timestamp(page_info.get("updated_at")),
        components=_components(payload.get("components") or [], cut),
        incidents=tuple(_incident(i, cut) for i in _objects(payload.get("incidents"))),
        maintenances=tuple(_maintenance(m, cut)
                           for m in _objects(payload.get("scheduled_maintenances"))),
        id=cut(_text(page_info.get("id"))),
        name=cut(_text(page_info.get("name"))),
        dropped={"labels": cut.count} if cut.count else {},
    )
    if options is None:
        return page
    return apply_limits(apply_filters(page, options), options)


def apply_limits(page: Page, options: StatuspageConfig) -> Page:
    """At most max_components components (in page order) and max_incidents open incidents
    and maintenances: a page's series stay bounded whatever it publishes. What is left out
    is counted in ``dropped``."""
    dropped = dict(page.dropped)
    components = page.components
    if len(components) > options.max_components:
        dropped["components"] = len(components) - options.max_components
        components = dict(list(components.items())[: options.max_components])
    incidents = page.incidents
    open_incidents = [i for i in incidents if i.open]
    if len(open_incidents) > options.max_incidents:
        dropped["incidents"] = len(open_incidents) - options.max_incidents
        incidents = tuple(open_incidents[: options.max_incidents])
    maintenances = page.maintenances
    if len(maintenances) > options.max_incidents:
        dropped["maintenances"] = len(maintenances) - options.max_incidents
        maintenances = maintenances[: options.max_incidents]
    if dropped == page.dropped:
        return page
    return replace(page, components=components, incidents=incidents,
                   maintenances=maintenances, dropped=dropped)


def apply_filters(page: Page, options: StatuspageConfig) -> Page:
    """Keep the components the include list names (all when empty), minus the excluded.

    A reference matches a component's id, its name, or its group's name."""
    include, exclude = set(options.components), set(options.exclude_components)
    if not include and not exclude:
        return page

    def refs(c: Component) -> set[str]:
        return {c.id, c.name, c.group} - {""}

    kept = {cid: c for cid, c in page.components.items()
            if (not include or refs(c) & include) and not refs(c) & exclude}
    return replace(page, components=kept)


def unmatched_filters(page: Page, options: StatuspageConfig) -> list[str]:
    """Filter references that match no component (likely a typo in the config)."""
    known: set[str] = set()
    for c in page.components.values():
        known.update((c.id, c.name, c.group))
    return [ref for ref in (*options.components, *options.exclude_components)
            if ref not in known]


def parse_timestamp(value: Any) -> float | None:
    """Unix time from ISO 8601 (offset, Z, with or without fraction), a bare date, or a
    number of seconds (milliseconds when implausibly large). None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer past float range
            return None
        if seconds > 1e11:  # epoch milliseconds
            seconds /= 1000.0
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            parsed_date = date.fromisoformat(text)
            stamp = datetime(parsed_date.year, parsed_date.month, parsed_date.day,
                             tzinfo=UTC).timestamp()
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            stamp = moment.timestamp()
    except (ValueError, OverflowError):
        return None
    return stamp if stamp >= 0 else None  # before 1970, like a negative number: unusable


class _Cutter:
    """Cuts label values at ``limit`` characters, counting how many it cut."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __call__(self, text: str) -> str:
        if len(text) <= self.limit:
            return text
        self.count += 1
        return text[: self.limit - 1] + "…"

    def id(self, text: str) -> str:
        """An id cut like any label, but ending in a hash of the whole id so that long ids
        sharing a prefix stay distinct (an id is a key, not just a label)."""
        if len(text) <= self.limit:
            return text
        self.count += 1
        digest = hashlib.blake2s(text.encode("utf-8", "replace"), digest_size=4).hexdigest()
        return text[: self.limit - 10] + "…" + digest


def _components(rows: list[Any], cut: _Cutter | None = None) -> dict[str, Component]:
    cut = cut or _Cutter(LABEL_MAX_CHARS)
    objects = list(_objects(rows))
    groups: dict[str, str] = {}  # group id -> group name
    child_group: dict[str, str] = {}  # child id -> group id, from the group's own list
    for row in objects:
        if _is_group(row):
            gid = _text(row.get("id"))
            groups[gid] = _text(row.get("name"))
            children = row.get("components")
            for child in children if isinstance(children, list) else ():
                if isinstance(child, str):
                    child_group.setdefault(child, gid)
    out: dict[str, Component] = {}
    for row in objects:
        if _is_group(row):
            continue
        name = _text(row.get("name"))
        raw_id = _text(row.get("id")) or name
        cid = cut.id(raw_id)  # an id is a label value too; the cut one is the key
        if not cid or cid in out:
            continue
        gid = _text(row.get("group_id")) or child_group.get(raw_id, "")
        out[cid] = Component(
            id=cid,
            name=cut(name or raw_id),
            group=cut(groups.get(gid, "")),
            status=_enum(row.get("status"), COMPONENT_STATUSES),
        )
    return out


def _is_group(row: Mapping[str, Any]) -> bool:
    return row.get("group") is True or isinstance(row.get("components"), list)


def _incident(row: Mapping[str, Any], cut: _Cutter) -> Incident:
    return Incident(
        id=cut.id(_text(row.get("id"))),
        name=cut(_text(row.get("name"))),
        impact=_enum(row.get("impact"), IMPACTS),
        status=_enum(row.get("status"), INCIDENT_STATUSES),
        shortlink=cut(_text(row.get("shortlink"))),
        component_ids=_component_ids(row, cut),
        created_at=parse_timestamp(row.get("created_at")),
    )


def _maintenance(row: Mapping[str, Any], cut: _Cutter) -> Maintenance:
    return Maintenance(
        id=cut.id(_text(row.get("id"))),
        name=cut(_text(row.get("name"))),
        status=_enum(row.get("status"), MAINTENANCE_STATUSES),
        scheduled_for=parse_timestamp(row.get("scheduled_for")),
        scheduled_until=parse_timestamp(row.get("scheduled_until")),
        component_ids=_component_ids(row, cut),
    )


def _component_ids(row: Mapping[str, Any], cut: _Cutter) -> tuple[str, ...]:
    """The incident's components, else the components its updates touched."""
    ids = [_text(c.get("id")) for c in _objects(row.get("components"))]
    if not any(ids):
        ids = [_text(a.get("code"))
               for update in _objects(row.get("incident_updates"))
               for a in _objects(update.get("affected_components"))]
    return tuple(dict.fromkeys(cut.id(i) for i in ids if i))


def _objects(value: Any) -> Iterable[Mapping[str, Any]]:
    """The dict items of a list; anything else yields nothing."""
    if isinstance(value, list):
        return (item for item in value if isinstance(item, dict))
    return ()


def _enum(value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        return "unknown"
    word = value.strip().lower()
    word = ALIASES.get(word, word)
    return word if word in allowed else "unknown"


def _text(value: Any) -> str:
    """A str for a text field; lone surrogates become U+FFFD (a caller may hand us JSON
    decoded elsewhere), big numbers are cut before str() would spend time on them."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if -10**18 < value < 10**18 else ""
    return ""


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# -- samples -----------------------------------------------------------------------------------


def gauges(page: Page) -> tuple[Sample, ...]:
    """Every status-page gauge for one (already filtered) page."""
    out: list[Sample] = []
    if page.updated_at is not None:
        out.append(Sample(metrics.STATUSPAGE_PAGE_UPDATED, page.updated_at))
    out.extend(Sample(metrics.STATUSPAGE_INDICATOR, float(state == page.indicator),
                      {"indicator": state}) for state in INDICATORS)
    for c in page.components.values():
        labels = {"component_id": c.id, "component": c.name, "group": c.group}
        out.extend(Sample(metrics.STATUSPAGE_COMPONENT_STATUS, float(state == c.status),
                          {**labels, "status": state}) for state in COMPONENT_STATUSES)
    open_incidents = page.open_incidents
    out.extend(Sample(metrics.STATUSPAGE_INCIDENTS_OPEN,
                      float(sum(i.impact == impact for i in open_incidents)),
                      {"impact": impact}) for impact in IMPACTS)
    seen: set[str] = set()
    for i in open_incidents:
        if i.id in seen:
            continue
        seen.add(i.id)
        out.append(Sample(metrics.STATUSPAGE_INCIDENT_INFO, 1.0, {
            "incident_id": i.id, "name": i.name, "impact": i.impact, "status": i.status,
            "shortlink": i.shortlink}))
    out.append(Sample(metrics.STATUSPAGE_MAINTENANCE_ACTIVE, float(page.maintenance_active)))
    if page.next_maintenance_start is not None:
        out.append(Sample(metrics.STATUSPAGE_MAINTENANCE_NEXT_START, page.next_maintenance_start))
    out.extend(Sample(metrics.STATUSPAGE_DROPPED, float(page.dropped.get(what, 0)),
                      {"what": what}) for what in DROPPED)
    return tuple(out)


# -- fetching ----------------------------------------------------------------------------------



@dataclass
class _Fetched:
    status: int
    url: str
    body: bytes | None  # None on 304
    etag: str | None
    last_modified: str | None


async def probe(check: PolledCheck, ctx: ProbeContext) -> Result:
    """The prober for kind ``statuspage``: the page's own settings travel with the check."""
    options = check.statuspage
    if options is None:  # a check made by hand (tests, /probe): its network settings alone
        options = StatuspageConfig(url=check.url or "", interval=check.interval,
                                   timeout=check.timeout, proxy=check.proxy, tls=check.tls,
                                   basic_auth=check.basic_auth,
                                   authorization=check.authorization)
    return await poll(summary_url(check.url or options.url), options, ctx)


async def poll(url: str, options: StatuspageConfig, ctx: ProbeContext) -> Result:
    """Fetch and parse one status page; never raises for a failing page."""
    start = time.perf_counter()
    first_line = len(ctx.lines)
    # Finish a little before the scheduler's own deadline so the reason is ours.
    budget = max(0.05, options.timeout - min(0.25, options.timeout * 0.1))
    cached = ctx.memo.get(MEMO_PAGE)
    try:
        async with asyncio.timeout(budget):
            fetched = await _fetch(url, options, ctx, conditional=isinstance(cached, Page))
        if fetched.body is None:
            if not isinstance(cached, Page):
                raise ProbeFailure("http_status", "HTTP 304 Not Modified without a cached page")
            page = cached
            ctx.log(f"304 Not Modified from {fetched.url}: reusing the previous page")
        else:
            page = parse(_decode(fetched.body), label_chars=options.max_label_chars)
            ctx.log(f"parsed {len(fetched.body)} bytes from {fetched.url}: indicator "
                    f"{page.indicator}, {len(page.components)} components, "
                    f"{len(page.open_incidents)} open incidents")
    except TimeoutError:
        return _failed(ctx, options, start, first_line, ProbeFailure(
            "timeout", f"no complete answer from {url} within {budget:.3g}s"))
    except ProbeFailure as exc:
        return _failed(ctx, options, start, first_line, exc)
    except SchemaError as exc:
        return _failed(ctx, options, start, first_line, ProbeFailure(
            "schema", f"not a status-page document: {exc}"))

    ctx.memo[MEMO_PAGE] = page
    if fetched.body is not None:  # new content: only its own validators apply
        ctx.memo[MEMO_ETAG] = fetched.etag
        ctx.memo[MEMO_LAST_MODIFIED] = fetched.last_modified
    else:  # a 304 may refresh them
        ctx.memo[MEMO_ETAG] = fetched.etag or ctx.memo.get(MEMO_ETAG)
        ctx.memo[MEMO_LAST_MODIFIED] = fetched.last_modified or ctx.memo.get(MEMO_LAST_MODIFIED)
    ctx.memo[MEMO_FAILURES] = 0
    for ref in unmatched_filters(page, options):
        ctx.log(f"component filter {ref!r} matches no component on the page")
    exported = apply_limits(apply_filters(page, options), options)
    for what, count in sorted(exported.dropped.items()):
        ctx.log(f"limits: {count} {what} left out" if what != "labels"
                else f"limits: {count} label values cut at {options.max_label_chars} characters")
    return Result(
        success=True,
        duration_seconds=time.perf_counter() - start,
        gauges=gauges(exported),
        details={"page": exported, "url": fetched.url, "http_status": fetched.status,
                 "not_modified": fetched.body is None,
                 "body_bytes": len(fetched.body) if fetched.body is not None else 0},
        log=tuple(ctx.lines[first_line:]),
    )


async def _fetch(url: str, options: StatuspageConfig, ctx: ProbeContext,
                 conditional: bool) -> _Fetched:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if conditional:
        if isinstance(etag := ctx.memo.get(MEMO_ETAG), str) and etag:
            headers["If-None-Match"] = etag
        if isinstance(last_modified := ctx.memo.get(MEMO_LAST_MODIFIED), str) and last_modified:
            headers["If-Modified-Since"] = last_modified
    ctx.log(f"GET {url}" + (" (conditional)" if len(headers) > 2 else ""))
    timing = Timing()
    credential, _ = auth_header(options.basic_auth, options.authorization, ctx.secrets)
    if credential is not None:
        headers["Authorization"] = credential
    try:
        via = route(options.proxy, url, ctx.secrets)
        async with (
            open_session(timing, options.tls) as session,
            session.get(url, headers=headers, allow_redirects=True, max_redirects=MAX_REDIRECTS,
                        **request_options(options.tls, via)) as resp,
        ):
            final_url = str(resp.url)
            if resp.history:
                ctx.log(f"followed {len(resp.history)} redirect(s) to {final_url}")
            if resp.status == 304:
                return _Fetched(304, final_url, None, resp.headers.get("ETag"),
                                resp.headers.get("Last-Modified"))
            content_type = resp.headers.get("Content-Type", "")
            if via.proxy is not None and resp.status == 407:
                raise ProbeFailure("proxy", "the proxy asks for credentials (HTTP 407)",
                                  http_status=407)
            if not 200 <= resp.status < 300:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                what = f" ({content_type.split(';')[0]} body)" if content_type else ""
                if resp.status in (403, 405) and "html" in content_type.lower():
                    what += ": a bot challenge or WAF block, not the status JSON"
                raise ProbeFailure("http_status", f"HTTP {resp.status} {resp.reason or ''}"
                                  .rstrip() + what + f" from {final_url}",
                                  retry_after=retry_after, http_status=resp.status)
            if content_type and "json" not in content_type.lower():
                raise ProbeFailure("not_json", f"content type {content_type.split(';')[0]!r} "
                                  f"is not JSON (a challenge or error page?) from {final_url}",
                                  http_status=resp.status)
            body = await _read_capped(resp, options.max_body_bytes)
            return _Fetched(resp.status, final_url, body, resp.headers.get("ETag"),
                            resp.headers.get("Last-Modified"))
    except ProbeFailure:
        raise
    except aiohttp.TooManyRedirects as exc:
        raise ProbeFailure("http_status", f"more than {MAX_REDIRECTS} redirects (a redirect "
                          f"loop?) starting at {url}", http_status=exc.status) from None
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlRedirectClientError) as exc:
        raise ProbeFailure("http_status", f"bad redirect target {exc}") from None
    except aiohttp.ClientPayloadError as exc:
        raise ProbeFailure("connect", f"connection broke off before the full body: "
                          f"{_short(exc)}") from None
    except (aiohttp.ClientError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            raise
        if isinstance(exc, aiohttp.ClientResponseError) and timing.headers_at is not None:
            raise ProbeFailure("http_status", f"bad HTTP response from {url}: {exc.message}",
                              http_status=exc.status or None) from None
        reason, message = classify(exc, timing, elapsed=time.perf_counter() - timing.started)
        if reason == "bad_response" and timing.headers_at is not None:
            reason = "connect"  # the body broke off: the page's documented reason
        raise ProbeFailure(reason, f"{message} ({url})") from None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, streamed, never holding more than ``limit`` bytes of it."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise ProbeFailure("too_large", f"Content-Length {declared} exceeds the "
                          f"{limit}-byte limit", http_status=resp.status)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise ProbeFailure("too_large", f"body exceeds the {limit}-byte limit "
                              "(stopped reading)", http_status=resp.status)
    return bytes(body)


def _decode(body: bytes) -> Any:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        raise ProbeFailure("not_json", "the body is HTML, not JSON (a challenge or error page?)")
    if not head:
        raise ProbeFailure("not_json", "the body is empty")
    try:
        return safe_loads(body)
    except ValueError as exc:
        raise ProbeFailure("not_json", f"malformed JSON: {_short(exc)}") from None


def backoff_seconds(failures: int, interval: float, retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
    """Delay before the next poll after ``failures`` consecutive failures: exponential
    from the interval with equal jitter, capped, and never shorter than Retry-After."""
    exponent = min(max(failures, 1), 16)
    delay = min(BACKOFF_CAP_SECONDS, interval * 2.0 ** exponent)
    delay = delay / 2 + (rng or random).uniform(0.0, delay / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_CAP_SECONDS))
    return delay


def _failed(ctx: ProbeContext, options: StatuspageConfig, start: float, first_line: int,
            failure: ProbeFailure) -> Result:
    before = ctx.memo.get(MEMO_FAILURES)
    failures = (before if isinstance(before, int) else 0) + 1
    ctx.memo[MEMO_FAILURES] = failures
    delay = backoff_seconds(failures, options.interval, failure.retry_after)
    ctx.log(f"poll failed ({failure.reason}): {failure.error}; failure {failures} in a row, "
            f"next poll in {delay:.0f}s")
    details: dict[str, Any] = {"backoff_seconds": delay, "consecutive_failures": failures}
    if failure.retry_after is not None:
        details["retry_after_seconds"] = failure.retry_after
    if failure.http_status is not None:
        details["http_status"] = failure.http_status
    return Result(
        success=False,
        duration_seconds=time.perf_counter() - start,
        reason=failure.reason,
        error=failure.error,
        details=details,
        log=tuple(ctx.lines[first_line:]),
    )


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
