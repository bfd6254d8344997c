"""Dependencies: the clouds an upstream runs on, read from their public status feeds.

Each feed module (gcp, aws, azure) turns its payload into ``CloudIncident`` values; this module
filters them by service and region and turns the open ones into samples. Context only: the
verdict names an open matching incident in its signals but never changes because of one.

Emitted gauges (upstream is filled in by the state store)::

    dependency_incidents_open{dependency="aws",severity="high"} 2     # every severity, 0 where none
    dependency_incident_info{dependency="aws",incident_id=...,name=...,service=...,region=...,
        severity="high"} 1                                            # one per open match
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter import metrics
from exporter.checks.base import Sample
from exporter.config import WitnessConfig

SEVERITIES = metrics.DEPENDENCY_SEVERITIES
MAX_INFO_SERIES = 50  # a feed that opens thousands of incidents must not explode cardinality

Ref = tuple[str, str]  # (stable id, display name); either may be ""


@dataclass(frozen=True)
class CloudIncident:
    id: str
    name: str
    severity: str  # one of SEVERITIES
    open: bool
    services: tuple[Ref, ...] = ()
    regions: tuple[Ref, ...] = ()  # empty: the feed names none (a global service)
    began: float | None = None
    url: str = ""
    # Prose to search when the feed has no structured services or regions (Azure's items).
    free_text: str = ""

    @property
    def service_label(self) -> str:
        return _join(self.services)

    @property
    def region_label(self) -> str:
        return _join(self.regions)


def _join(refs: Iterable[Ref]) -> str:
    names = list(dict.fromkeys(name or ident for ident, name in refs if ident or name))
    out = ", ".join(names)
    return out if len(out) <= 256 else out[:255] + "…"


def _refs(refs: Iterable[Ref]) -> set[str]:
    return {part.casefold() for ref in refs for part in ref if part}


def matches(incident: CloudIncident, services: Sequence[str], regions: Sequence[str]) -> bool:
    """Whether the incident concerns the configured services and regions (ids or names, any
    case). An incident that names no region counts for every region: global services."""
    prose = incident.free_text.casefold()
    if (services and not _refs(incident.services) & {s.casefold() for s in services}
            and not (prose and any(s.casefold() in prose for s in services))):
        return False
    if regions and incident.regions:
        return bool(_refs(incident.regions) & {r.casefold() for r in regions})
    if regions and prose:
        return any(r.casefold() in prose for r in regions)
    return True


def open_matching(incidents: Iterable[CloudIncident], witness: WitnessConfig
                  ) -> list[CloudIncident]:
    seen: set[str] = set()
    out = []
    for incident in incidents:
        if incident.open and incident.id not in seen and matches(
                incident, witness.services, witness.regions):
            seen.add(incident.id)
            out.append(incident)
    return out


def gauges(incidents: Iterable[CloudIncident], witness: WitnessConfig) -> tuple[Sample, ...]:
    found = open_matching(incidents, witness)
    dep = {"dependency": witness.name}
    out = [Sample(metrics.DEPENDENCY_INCIDENTS_OPEN,
                  float(sum(i.severity == severity for i in found)),
                  {**dep, "severity": severity}) for severity in SEVERITIES]
    out.extend(Sample(metrics.DEPENDENCY_INCIDENT_INFO, 1.0, {
        **dep, "incident_id": i.id, "name": i.name, "service": i.service_label,
        "region": i.region_label, "severity": i.severity}) for i in found[:MAX_INFO_SERIES])
    return tuple(out)
