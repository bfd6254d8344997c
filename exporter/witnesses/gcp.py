"""Google Cloud's status feed: ``https://status.cloud.google.com/incidents.json``.

A JSON list of incidents, newest first. Two shapes are read: today's (``id``,
``affected_products``, ``currently_affected_locations``, ``most_recent_update``) and the
legacy one (hyphenated ``most-recent-update``, integer ``number``, ``service_key`` slugs and
``"end": null`` while ongoing). An incident is open while it has no ``end``; the last
update's status is never used, since ended incidents are known to keep a stale one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.checks.net.safejson import SchemaError
from exporter.witnesses.dependencies import SEVERITIES, CloudIncident, Ref
from exporter.witnesses.feed import decode_json, json_type, objects, text
from exporter.witnesses.statuspage import parse_timestamp

BASE = "https://status.cloud.google.com/"


def parse_body(body: bytes) -> tuple[CloudIncident, ...]:
    return parse(decode_json(body))


def parse(payload: Any) -> tuple[CloudIncident, ...]:
    if isinstance(payload, dict) and isinstance(payload.get("incidents"), list):
        payload = payload["incidents"]  # tolerated: a wrapped list
    if not isinstance(payload, list):
        raise SchemaError(f"expected a JSON array of incidents, got {json_type(payload)}")
    return tuple(_incident(row) for row in objects(payload))


def _incident(row: Mapping[str, Any]) -> CloudIncident:
    services: list[Ref] = [(text(p.get("id")), text(p.get("title")))
                           for p in objects(row.get("affected_products"))]
    services.extend((text(p.get("id")), text(p.get("current_title")))
                    for p in objects(row.get("affected_products")) if p.get("current_title"))
    key, name = text(row.get("service_key")), text(row.get("service_name"))
    if key or name:
        services.append((key, name))
    latest = row.get("most_recent_update") or row.get("most-recent-update")
    locations = objects(row.get("currently_affected_locations"))
    if not locations and isinstance(latest, dict):
        locations = objects(latest.get("affected_locations"))
    regions = tuple((text(loc.get("id")), text(loc.get("title"))) for loc in locations)
    severity = text(row.get("severity")).lower()
    uri = text(row.get("uri")).lstrip("/")
    return CloudIncident(
        id=text(row.get("id")) or text(row.get("number")) or uri,
        name=text(row.get("external_desc")),
        severity=severity if severity in SEVERITIES else "unknown",
        open=row.get("end") in (None, ""),
        services=tuple(s for s in services if s[0] or s[1]),
        regions=tuple(r for r in regions if r[0] or r[1]),
        began=parse_timestamp(row.get("begin")),
        url=BASE + uri if uri else "",
    )
