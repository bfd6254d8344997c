"""Azure's status feed: ``https://azure.status.microsoft/en-us/status/feed/``, RSS 2.0.

The channel is empty when all is calm; every item is a current event. No real capture with
items exists, so items are read by the RSS 2.0 standard: title, description, link, pubDate,
guid, category. Services are the item's categories; a service or region filter also matches
when its text appears in the title or description (items name no machine-readable region).
"""

from __future__ import annotations

import email.utils
import xml.etree.ElementTree as ET

from exporter.checks.net.safejson import SchemaError
from exporter.witnesses.dependencies import CloudIncident
from exporter.witnesses.feed import decode_xml, text

CLOSED_WORDS = ("[resolved]", "resolved:", "mitigated")


def parse_body(body: bytes) -> tuple[CloudIncident, ...]:
    return parse(decode_xml(body))


def parse(root: ET.Element) -> tuple[CloudIncident, ...]:
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise SchemaError(f"expected an RSS 2.0 document, got <{root.tag}>")
    out = []
    for item in channel.iter("item"):
        title = _child(item, "title")
        description = _child(item, "description")
        categories = [text(c.text) for c in item.findall("category") if c.text]
        lower = title.lower()
        out.append(CloudIncident(
            id=_child(item, "guid") or _child(item, "link") or title,
            name=title,
            severity="unknown",
            open=not any(word in lower for word in CLOSED_WORDS),
            services=tuple((c, "") for c in categories if c),
            regions=(),
            free_text=f"{title}\n{description}",
            began=_date(_child(item, "pubDate")),
            url=_child(item, "link"),
        ))
    return tuple(out)


def _child(item: ET.Element, tag: str) -> str:
    node = item.find(tag)
    return text(node.text) if node is not None and node.text else ""


def _date(value: str) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
