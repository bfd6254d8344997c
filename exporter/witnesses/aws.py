"""AWS Health Dashboard feeds, whichever the URL serves (the payload says which):

* ``health.aws.amazon.com/public/currentevents``: a JSON list of events, served as UTF-16 with
  a byte-order mark at times. ``status`` "0" (or 0) is resolved, "1"-"3" open; a summary
  prefixed ``[RESOLVED]`` or an ``end_time`` also closes it.
* the older ``status.aws.amazon.com/data.json``: ``{"current": [...], "archive": [...]}``.
* the RSS feeds (``/rss/all.rss``, per service): every update is its own item, so items are
  grouped by the service slug in their guid and the newest one decides.

Severity: 1 (informational) low, 2 (degraded) medium, 3 (disrupted) high.
"""

from __future__ import annotations

import email.utils
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from exporter.checks.net.safejson import SchemaError
from exporter.witnesses.dependencies import CloudIncident, Ref
from exporter.witnesses.feed import (
    decode_json,
    decode_text,
    decode_xml,
    json_type,
    objects,
    text,
)
from exporter.witnesses.statuspage import parse_timestamp

SEVERITY = {"1": "low", "2": "medium", "3": "high"}
REGION_RE = re.compile(r"^(?P<slug>.+?)-(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)$")
ARN_REGION_RE = re.compile(r"^arn:aws[a-z-]*:health:([a-z0-9-]+):")
RESOLVED = "[RESOLVED]"
# RSS title prefixes, lower case, and what they say.
RSS_STATES = (
    ("service is operating normally", None),
    ("informational message", "low"),
    ("performance issues", "medium"),
    ("service impact", "medium"),
    ("service disruption", "high"),
)
URL = "https://health.aws.amazon.com/health/status"


def parse_body(body: bytes) -> tuple[CloudIncident, ...]:
    if decode_text(body[:4096]).lstrip(" \t\r\n").startswith("<"):
        return parse_rss(decode_xml(body))
    return parse(decode_json(body))


def parse(payload: Any) -> tuple[CloudIncident, ...]:
    """currentevents (a list) or the legacy data.json (current and archive)."""
    if isinstance(payload, list):
        return tuple(_event(row, archived=False) for row in objects(payload))
    if isinstance(payload, dict) and ("current" in payload or "archive" in payload):
        for key in ("current", "archive"):
            if payload.get(key) is not None and not isinstance(payload[key], list):
                raise SchemaError(f"{key!r} is {json_type(payload[key])}, expected an array")
        return (*(_event(row, archived=False) for row in objects(payload.get("current"))),
                *(_event(row, archived=True) for row in objects(payload.get("archive"))))
    raise SchemaError("expected a JSON array of events or an object with current/archive, "
                      f"got {json_type(payload)}")


def split_service(service: str) -> tuple[str, str]:
    """``ec2-us-east-1`` -> (``ec2``, ``us-east-1``); a global service has no region."""
    match = REGION_RE.match(service)
    return (match["slug"], match["region"]) if match else (service, "")


def _event(row: Mapping[str, Any], archived: bool) -> CloudIncident:
    service = text(row.get("service"))
    slug, region = split_service(service)
    arn_region = ARN_REGION_RE.match(text(row.get("arn")))
    if arn_region and not region:
        region = arn_region[1]
    service_name = text(row.get("service_name"))
    region_name = text(row.get("region_name"))
    if not region_name and service_name.endswith(")") and "(" in service_name:
        # data.json: "Amazon Elastic Compute Cloud (Ohio)"
        service_name, _, rest = service_name.rpartition(" (")
        region_name = rest[:-1]
    services: list[Ref] = [(slug, service_name)]
    regions: list[Ref] = [(region, region_name)] if region or region_name else []
    impacted = row.get("impacted_services")
    if isinstance(impacted, dict):
        for key, value in impacted.items():
            sub_slug, sub_region = split_service(text(key))
            name = text(value.get("service_name")) if isinstance(value, dict) else ""
            services.append((sub_slug, name))
            if sub_region and all(sub_region != r[0] for r in regions):
                regions.append((sub_region, ""))
    status = text(row.get("status"))
    summary = text(row.get("summary"))
    resolved = (archived or status == "0" or summary.upper().startswith(RESOLVED)
                or bool(text(row.get("end_time"))))
    arn = text(row.get("arn"))
    return CloudIncident(
        id=arn or f"{service}_{text(row.get('date'))}",
        name=summary,
        severity=SEVERITY.get(status, "unknown"),
        open=not resolved,
        services=tuple(s for s in services if s[0] or s[1]),
        regions=tuple(regions),
        began=parse_timestamp(_number(row.get("date"))),
        url=URL,
    )


def _number(value: Any) -> Any:
    """Epoch seconds sent as a string."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def parse_rss(root: ET.Element) -> tuple[CloudIncident, ...]:
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise SchemaError(f"expected an RSS 2.0 document, got <{root.tag}>")
    newest: dict[str, tuple[float, int, ET.Element]] = {}
    first: dict[str, float] = {}
    for order, item in enumerate(channel.iter("item")):
        guid = _child(item, "guid")
        slug = guid.rpartition("#")[2].rpartition("_")[0] or guid or _child(item, "title")
        when = _rss_date(_child(item, "pubDate"))
        # Newest first by date; at equal dates the feed's own order (newest first) wins.
        rank = (when if when is not None else 0.0, -order, item)
        if slug not in newest or rank[:2] > newest[slug][:2]:
            newest[slug] = rank
        if when is not None:
            first[slug] = min(first.get(slug, when), when)
    out = []
    for slug, (_, _, item) in newest.items():
        title = _child(item, "title")
        lower = title.lower()
        state = next((s for prefix, s in RSS_STATES if lower.startswith(prefix)), "unknown")
        resolved = state is None or RESOLVED.lower() in lower
        name = title.split(":", 1)[1].strip() if ":" in title else title
        service, region = split_service(slug)
        out.append(CloudIncident(
            id=slug, name=name, severity=state or "unknown", open=not resolved,
            services=((service, ""),), regions=((region, ""),) if region else (),
            began=first.get(slug), url=_child(item, "link")))
    return tuple(out)


def _child(item: ET.Element, tag: str) -> str:
    node = item.find(tag)
    return text(node.text) if node is not None and node.text else ""


def _rss_date(value: str) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
