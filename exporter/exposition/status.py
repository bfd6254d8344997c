"""The explanation of every verdict as plain data: /api/v1/status, the landing page and the
`check` command all render this one structure. It never carries a secret: targets are URLs and
host names from the config (which rejects credentials in URLs) and errors are scrubbed.
Whatever an upstream sent, the structure is valid JSON: no NaN or Infinity (``json_safe``
turns them into null) and no lone surrogates."""

from __future__ import annotations

import math
import time
from typing import Any

from exporter import __version__
from exporter.checks.net.httpclient import network_path
from exporter.checks.net.safejson import clean
from exporter.config import POLLED_KINDS, Config
from exporter.engine.state import CheckState, StateStore
from exporter.engine.verdict import DependencyView, Verdicts, crowd_view, dependency_view
from exporter.metrics import WITNESSES
from exporter.secrets import Secrets
from exporter.witnesses.statuspage import DROPPED, Page


def check_status(state: CheckState, now: float, secrets: Secrets) -> dict[str, Any]:
    check = state.check
    last = state.last
    out: dict[str, Any] = {
        "name": check.name,
        "kind": check.kind,
        "target": check.address or "",
        "component": check.component,
        "interval_seconds": check.interval,
        "runs": state.runs,
        "failures": dict(state.failures),
        "down": state.down,
        "path": network_path(check),  # direct, or proxy (docs/network.md)
    }
    if check.mode:
        out["mode"] = check.mode
    if last is None:
        out.update(result="pending", success=None, reason="", error="", age_seconds=None,
                   duration_seconds=None)
    else:
        out.update(
            result="ok" if last.success else "failed",
            success=last.success,
            reason=last.reason,
            error=secrets.scrub(last.error),
            duration_seconds=round(last.duration_seconds, 6),
            age_seconds=round(max(0.0, now - last.finished_at), 3),
            last_run=last.finished_at,
        )
        if last.details.get("backing_off"):
            out["backing_off_seconds"] = last.details.get("backoff_seconds")
    return out


def page_status(state: CheckState, now: float, secrets: Secrets) -> dict[str, Any]:
    out = check_status(state, now, secrets)
    page = state.last_success.details.get("page") if state.last_success else None
    if isinstance(page, Page):
        out["indicator"] = page.indicator
        out["page_updated_at"] = page.updated_at
        out["components"] = [
            {"id": c.id, "name": c.name, "group": c.group, "status": c.status}
            for c in page.components.values()
        ]
        out["incidents"] = [
            {"id": i.id, "name": i.name, "impact": i.impact, "status": i.status,
             "shortlink": i.shortlink, "components": list(i.component_ids)}
            for i in page.open_incidents
        ]
        out["maintenances"] = [
            {"id": mt.id, "name": mt.name, "status": mt.status,
             "scheduled_for": mt.scheduled_for, "scheduled_until": mt.scheduled_until}
            for mt in page.maintenances
        ]
        # The page's limits at work (statuspage_dropped_items): what is not shown above.
        out["dropped"] = {what: page.dropped.get(what, 0) for what in DROPPED}
    return out


def witness_status(state: CheckState, now: float, secrets: Secrets) -> dict[str, Any]:
    """A dependency or crowd poll: its last result and what it says."""
    out = check_status(state, now, secrets)
    witness = state.check.witness
    if witness is None:
        return out
    out["name"] = witness.name
    if witness.role == "crowd":
        view = crowd_view(state)
        out["view"] = view.view
        out["models"] = list(witness.models)
        out["providers"] = list(witness.providers)
        out["down_below"] = witness.down_below
        out["endpoints"] = [
            {"model": r.model, "provider": r.provider, "endpoint": r.endpoint,
             "uptime_5m": round(r.ratio, 6), "failing": r.ratio < witness.down_below}
            for r in view.readings]
    else:
        dep: DependencyView = dependency_view(state)
        out["view"] = dep.view
        out["services"] = list(witness.services)
        out["regions"] = list(witness.regions)
        out["incidents"] = [
            {"id": i.id, "name": i.name, "severity": i.severity, "service": i.service_label,
             "region": i.region_label, "began": i.began, "url": i.url} for i in dep.incidents]
    return out


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and text free of lone surrogates."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build(config: Config, state: StateStore, verdicts: Verdicts, *, ready: bool,
          secrets: Secrets, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status document; errors are scrubbed of what ``secrets`` knows (the runtime's)."""
    now = time.time()
    upstreams = []
    for up in config.upstreams:
        current = verdicts.by_upstream.get(up.name)
        states = state.for_upstream(up.name)
        page = next((s for s in states if s.check.kind == "statuspage"), None)
        entry: dict[str, Any] = {
            "name": up.name,
            "verdict": current.decision.verdict if current else "unknown",
            "since": current.since if current else None,
            "signals": list(current.decision.signals) if current else [],
            "decided_by": list(current.decision.decided_by) if current else [],
            "unacknowledged_outage_seconds": round(verdicts.unacknowledged_seconds(up.name, now), 3),
            "statuspage": page_status(page, now, secrets) if page else None,
            "checks": [check_status(s, now, secrets) for s in states
                       if s.check.kind not in POLLED_KINDS],
            # Every witness side by side, and whether it decided the verdict.
            "witnesses": [
                {"witness": w,
                 "view": current.decision.witnesses.get(w, "unknown") if current else "unknown",
                 "decided": current is not None and w in current.decision.decided_by}
                for w in WITNESSES],
            "dependencies": [witness_status(s, now, secrets) for s in states
                             if s.check.witness is not None and s.check.witness.role != "crowd"],
            "crowd": [witness_status(s, now, secrets) for s in states
                      if s.check.witness is not None and s.check.witness.role == "crowd"],
            "history": [p.as_dict() for p in verdicts.history.periods(up.name, now)],
        }
        if up.statuspage is not None and entry["statuspage"] is not None:
            entry["statuspage"]["url"] = up.statuspage.url
        upstreams.append(entry)
    out: dict[str, Any] = {
        "version": __version__,
        "vantage": config.vantage,
        "ready": ready,
        "generated_at": now,
        "config": {
            "source": config.source,
            "last_reload_successful": bool(state.reload_success),
            "last_reload_success_timestamp": state.reload_success_timestamp,
        },
        "upstreams": upstreams,
        "control": [check_status(s, now, secrets) for s in state.for_upstream("control")],
    }
    if extra:
        out.update(extra)
    return json_safe(out)  # type: ignore[no-any-return]
