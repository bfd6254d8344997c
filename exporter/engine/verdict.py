"""The verdict: "is it them or me?", decided per upstream from the three signals.

Rules, first match wins (docs/verdict.md explains them for users):

1. ``unknown``        nothing has run yet.
2. ``local_network``  at least half of the control checks of a network path (direct, or
                      through the proxy) are down and the upstream's API checks take that path,
                      or they fail at the proxy itself: our own network is broken, so nothing
                      we see of the provider can be trusted. Checks on a broken path whose
                      upstream is still reached another way are left out of the rules below
                      (behind a proxy-only network the direct tcp/tls/icmp/dns checks fail by
                      design; docs/network.md).
3. ``maintenance``    a linked component is under maintenance (or a maintenance covering it is
                      in progress).
4. ``own_quota``      an API check's latest answer is 401/402/403 or a spend-limit 429 (or it
                      has been rate limited long enough to count as down) and the page shows
                      nothing wrong with the linked components: our account, not their service.
5. ``outage``         an API-level check is down, or every check of the upstream is down, or
                      the page shows a partial or major outage of a linked component.
6. ``degraded``       a check fails often (failure ratio over the window), runs slower than its
                      ``degraded_latency``, a network-only check is down while the API works,
                      or the page shows a linked component degraded.
7. ``operational``    all is well.

The other witnesses (docs/witnesses.md): the crowd (others' traffic to the same models) alone
raises ``operational`` to ``degraded``, never to ``outage``; our failing API probes plus a crowd
that also sees failures make ``outage`` at once, without the debounce; our failing probes while
the crowd sees the provider's endpoints at 99% or more say so in the signals (it points at us).
Dependencies (the clouds underneath) never change the verdict: open matching incidents are
named in the signals. ``upstream_witness`` reports what each witness says on its own.

"Down" is debounced: a check is down after ``outage_after`` consecutive failed runs and up again
after ``recover_after`` consecutive good runs, so a single failed run changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.checks.net.httpclient import network_path
from exporter.config import CROWD_KINDS, DEPENDENCY_KINDS, Config
from exporter.engine.history import VerdictHistory
from exporter.engine.state import CheckState, StateStore
from exporter.witnesses.dependencies import CloudIncident, open_matching
from exporter.witnesses.openrouter import ModelHealth
from exporter.witnesses.probers import DETAIL_INCIDENTS, DETAIL_MODELS
from exporter.witnesses.statuspage import Incident, Page

API_KINDS = ("anthropic", "openai", "http")
# Answers that prove the API is up and the problem is our account.
OWN_QUOTA_REASONS = frozenset({"auth", "permission", "billing", "spend_limit"})
# Failures where the API answered: not evidence of an outage on their side.
ANSWERED_REASONS = OWN_QUOTA_REASONS | {"rate_limited", "budget_exhausted", "bad_request",
                                         "not_found", "backoff"}
# Failures of our own making (out of file descriptors): like a broken local network.
LOCAL_REASONS = frozenset({"local_resources"})
OUTAGE_STATUSES = ("partial_outage", "major_outage")
VERDICTS = ("operational", "degraded", "outage", "maintenance", "own_quota", "local_network",
            "unknown")
CROWD_HEALTHY = 0.99  # the crowd at or above this while our probes fail points at us
CROWD_WINDOW = "5m"


@dataclass(frozen=True)
class CheckView:
    """What the verdict needs of one check, taken from the state store."""

    name: str
    kind: str
    component: str | None
    ran: bool
    down: bool
    last_success: bool
    last_reason: str
    failure_ratio: float  # failures in the last `window` runs, over the window size
    intermittent: bool  # failure_ratio reached the upstream's degraded_ratio
    slow: bool  # its recent runs are all slower than its degraded_latency
    path: str = "direct"  # direct, or proxy: how its packets leave this host


@dataclass(frozen=True)
class Decision:
    verdict: str
    signals: tuple[str, ...] = ()  # human-readable reasons, most important first
    decided_by: tuple[str, ...] = ()  # which signals: statuspage, probes, control
    unacknowledged: bool = False  # probes see an outage the page does not show
    details: dict[str, Any] = field(default_factory=dict)
    # What each witness says on its own: ok, degraded, down or unknown.
    witnesses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CrowdReading:
    """One provider endpoint's 5-minute uptime as a crowd source reports it."""

    source: str
    model: str
    provider: str
    endpoint: str
    ratio: float


@dataclass(frozen=True)
class CrowdView:
    """What one crowd source says of the upstream's models, as of its last poll."""

    source: str
    ran: bool  # the last poll succeeded
    readings: tuple[CrowdReading, ...] = ()  # the provider's endpoints that have a 5m figure
    down_below: float = 0.9

    @property
    def failing(self) -> tuple[CrowdReading, ...]:
        return tuple(r for r in self.readings if r.ratio < self.down_below)

    @property
    def healthy(self) -> bool:
        return self.ran and bool(self.readings) and all(
            r.ratio >= CROWD_HEALTHY for r in self.readings)

    @property
    def models_down(self) -> tuple[str, ...]:
        """Models whose every endpoint with a figure is failing."""
        models = dict.fromkeys(r.model for r in self.readings)
        return tuple(m for m in models
                     if all(r.ratio < self.down_below for r in self.readings if r.model == m))

    @property
    def view(self) -> str:
        if not self.ran or not self.readings:
            return "unknown"
        if self.models_down:
            return "down"
        return "degraded" if self.failing else "ok"


@dataclass(frozen=True)
class DependencyView:
    name: str
    ran: bool  # some poll succeeded: the incidents are as of the last good one
    incidents: tuple[CloudIncident, ...] = ()  # open and matching the filters

    @property
    def view(self) -> str:
        if not self.ran:
            return "unknown"
        if any(i.severity == "high" for i in self.incidents):
            return "down"
        return "degraded" if self.incidents else "ok"


def check_view(state: CheckState) -> CheckView:
    """The check as the verdict sees it (``Verdicts`` keeps each until the check changes)."""
    last = state.last
    cfg = state.verdict_cfg
    return CheckView(
        name=state.check.name, kind=state.check.kind, component=state.check.component,
        ran=last is not None, down=state.down,
        last_success=bool(last and last.success), last_reason=last.reason if last else "",
        failure_ratio=state.window_failures / cfg.window,
        intermittent=(state.window_failures > 0
                      and state.window_failures / cfg.window >= cfg.degraded_ratio),
        slow=state.slow, path=network_path(state.check),
    )


def broken_paths(control: Sequence[CheckView]) -> dict[str, list[CheckView]]:
    """Network paths whose control checks are at least half down, with those checks."""
    out: dict[str, list[CheckView]] = {}
    for path in sorted({c.path for c in control}):
        ran = [c for c in control if c.ran and c.path == path]
        down = [c for c in ran if c.down]
        if ran and len(down) >= max(1, math.ceil(len(ran) / 2)):
            out[path] = down
    return out


def decide(checks: Sequence[CheckView], control: Sequence[CheckView], page: Page | None,
           page_fresh: bool = True, crowd: Sequence[CrowdView] = (),
           dependencies: Sequence[DependencyView] = (), page_path: str = "direct") -> Decision:
    """The verdict with every witness's own view; dependencies only add signals."""
    decision = _decide(checks, control, page, page_fresh, crowd, page_path)
    signals = list(decision.signals)
    for dep in dependencies:
        for incident in dep.incidents:
            where = ", ".join(x for x in (incident.service_label, incident.region_label) if x)
            signals.append(f"open {dep.name} incident (context): {incident.name or incident.id}"
                           + (f" ({where})" if where else ""))
    return replace(decision, signals=tuple(signals),
                   witnesses=witness_views(checks, control, page, crowd, dependencies))


def _crowd_signal(failing: Sequence[CrowdReading]) -> str:
    return ", ".join(f"{r.model} at {r.provider} {r.endpoint} {r.ratio:.0%}"
                     for r in failing[:5]) + (f" and {len(failing) - 5} more"
                                               if len(failing) > 5 else "")


def _decide(checks: Sequence[CheckView], control: Sequence[CheckView], page: Page | None,
            page_fresh: bool, crowd: Sequence[CrowdView], page_path: str = "direct") -> Decision:
    ran = [c for c in checks if c.ran]
    crowd_failing = [r for c in crowd if c.ran for r in c.failing]
    crowd_healthy = any(c.healthy for c in crowd) and not crowd_failing
    if not ran and page is None and not any(c.ran and c.readings for c in crowd):
        return Decision("unknown", ("no check has completed and the status page has not "
                                    "been read yet",))

    broken = broken_paths(control)
    primary_ran = [c for c in ran if c.kind in API_KINDS]
    at_proxy = [c for c in primary_ran if c.down and c.last_reason == "proxy"]
    # The paths the upstream is judged by: its API checks', else its other checks', else the
    # status page's.
    judged = {c.path for c in primary_ran} or {c.path for c in ran} or {page_path}
    if (broken and judged <= set(broken)) or (at_proxy and len(at_proxy) == len(primary_ran)):
        down_controls = [c for path in sorted(judged) for c in broken.get(path, [])]
        names = ", ".join(f"{c.name} ({c.last_reason or 'failing'})"
                          for c in down_controls or at_proxy)
        total = len([c for c in control if c.ran and c.path in judged])
        cause = (f"{len(down_controls)} of {total} control checks are down: {names}"
                 if down_controls else f"the API checks fail at the proxy: {names}")
        return Decision("local_network", (
            f"{cause}; the problem is on this side of the network",), ("control",),
            details={"broken_paths": sorted(broken)})
    if broken:
        # Another path still reaches the upstream: checks on the broken one say nothing.
        checks = [c for c in checks if c.path not in broken]
        ran = [c for c in ran if c.path not in broken]

    control_ran = [c for c in control if c.ran]
    local = [c for c in (*ran, *control_ran) if not c.last_success
             and c.last_reason in LOCAL_REASONS]
    if local:
        names = ", ".join(f"{c.name} ({c.last_reason})" for c in local)
        return Decision("local_network", (
            f"this exporter is out of local resources (file descriptors): {names}; "
            "nothing it sees of the provider can be trusted",), ("probes",))

    linked = linked_components(checks, page)
    states = {cid: page.components[cid].status for cid in linked} if page else {}

    if page is not None:
        active = {cid for m in page.maintenances if m.active for cid in m.component_ids}
        in_maintenance = sorted(cid for cid in linked
                                if states.get(cid) == "under_maintenance" or cid in active)
        if in_maintenance:
            return Decision("maintenance", (
                "maintenance in progress on " + _names(page, in_maintenance),), ("statuspage",))

    page_outage = sorted(cid for cid, st in states.items() if st in OUTAGE_STATUSES)
    page_degraded = sorted(cid for cid, st in states.items() if st == "degraded_performance")
    # A state the page spells in a way we do not know is never read as operational.
    page_unknown = sorted(cid for cid, st in states.items() if st == "unknown")
    incidents = linked_incidents(page, linked)
    page_green = not page_outage and not page_degraded and not incidents and not page_unknown

    # A refusal of our account is definitive at once; a rate limit only once it persists.
    quota = [c for c in ran if c.kind in API_KINDS and not c.last_success
             and (c.last_reason in OWN_QUOTA_REASONS or (c.down and c.last_reason == "rate_limited"))]
    if quota and page_green:
        names = ", ".join(f"{c.name} ({c.last_reason})" for c in quota)
        return Decision("own_quota", (
            f"the API answers but refuses our account: {names}; the status page is green",),
            ("probes", "statuspage") if page else ("probes",))

    primary = [c for c in ran if c.kind in API_KINDS] or ran
    down = [c for c in primary if c.down and c.last_reason not in ANSWERED_REASONS]
    all_down = bool(ran) and all(c.down and c.last_reason not in ANSWERED_REASONS for c in ran)
    probes_outage = bool(down) or all_down
    # Our API probes failing right now (not yet debounced) while the crowd fails too: outage.
    failing_now = [c for c in primary if not c.last_success
                   and c.last_reason not in ANSWERED_REASONS]
    confirmed = bool(crowd_failing) and bool(failing_now) and not probes_outage
    signals: list[str] = []
    decided: list[str] = []
    if probes_outage or confirmed:
        signals.append("our probes fail: " + ", ".join(
            f"{c.name} ({c.last_reason or 'failing'})" for c in (down or failing_now or ran)))
        decided.append("probes")
    if (probes_outage or confirmed) and crowd_failing:
        signals.append("the crowd sees it too: " + _crowd_signal(crowd_failing))
        decided.append("crowd")
    elif probes_outage and crowd_healthy:
        signals.append(f"the crowd sees the provider's endpoints at {CROWD_HEALTHY:.0%} or "
                       "more over 5m: the problem is likely on our side")
    if page_outage and page is not None:
        signals.append("the status page shows " + ", ".join(
            f"{_names(page, [cid])} {states[cid]}" for cid in page_outage))
        decided.append("statuspage")
    if probes_outage or page_outage or confirmed:
        unacknowledged = (probes_outage or confirmed) and page_green
        if unacknowledged:
            signals.append("the status page does not show it yet" if page is not None
                           and page_fresh else "the status page cannot confirm it")
        return Decision("outage", tuple(signals), tuple(decided), unacknowledged)

    intermittent = [c for c in ran if c.intermittent]
    slow = [c for c in ran if c.slow]
    net_down = [c for c in ran if c.down and c not in primary]
    if intermittent:
        signals.append("probes fail intermittently: " + ", ".join(
            f"{c.name} ({c.failure_ratio:.0%} of recent runs)" for c in intermittent))
    if slow:
        signals.append("probes are slower than their degraded_latency: "
                       + ", ".join(c.name for c in slow))
    if net_down:
        signals.append("network checks are down while the API answers: " + ", ".join(
            f"{c.name} ({c.last_reason or 'failing'})" for c in net_down))
    if signals:
        decided.append("probes")
    if (page_degraded or incidents or page_unknown) and page is not None:
        if page_degraded:
            signals.append("the status page shows " + _names(page, page_degraded)
                           + " degraded_performance")
        if page_unknown:
            signals.append("the status page shows " + _names(page, page_unknown)
                           + " in a state this exporter does not know")
        for incident in incidents:
            signals.append(f"open incident: {incident.name} ({incident.impact})")
        decided.append("statuspage")
    if crowd_failing:
        signals.append("the crowd sees failures (5m uptime under "
                       f"{min(c.down_below for c in crowd):.0%}): " + _crowd_signal(crowd_failing))
        decided.append("crowd")
    if signals:
        # The crowd counts towards the unacknowledged time as our probes do.
        return Decision("degraded", tuple(signals), tuple(decided),
                        bool(crowd_failing) and page_green)

    what, sources = [], []
    if ran:
        what.append(f"{len(ran)} checks pass")
        sources.append("probes")
    if page is not None:
        what.append("the status page shows the linked components operational")
        sources.append("statuspage")
    if crowd_healthy:
        what.append("the crowd sees the provider's endpoints healthy")
        sources.append("crowd")
    return Decision("operational", ("; ".join(what),), tuple(sources))


def witness_views(checks: Sequence[CheckView], control: Sequence[CheckView], page: Page | None,
                  crowd: Sequence[CrowdView], dependencies: Sequence[DependencyView]
                  ) -> dict[str, str]:
    """What each witness says on its own, side by side (``upstream_witness``)."""

    def of_checks(views: Sequence[CheckView], all_for_down: bool) -> str:
        ran = [c for c in views if c.ran]
        if not ran:
            return "unknown"
        down = [c for c in ran if c.down and c.last_reason not in ANSWERED_REASONS]
        if down and (not all_for_down or len(down) == len(ran)):
            return "down"
        if down or any(c.intermittent or c.slow or not c.last_success for c in ran
                       if c.last_reason not in ANSWERED_REASONS):
            return "degraded"
        return "ok"

    api = [c for c in checks if c.kind in API_KINDS]
    network = [c for c in checks if c.kind not in API_KINDS]
    control_ran = [c for c in control if c.ran]
    control_down = [c for c in control_ran if c.down]
    if not control_ran:
        control_view = "unknown"
    elif set(broken_paths(control)) >= {c.path for c in control_ran}:  # every path is cut
        control_view = "down"
    else:
        control_view = "degraded" if control_down else "ok"

    page_view = "unknown"
    if page is not None:
        linked = linked_components(checks, page)
        states = {page.components[cid].status for cid in linked}
        if states & set(OUTAGE_STATUSES):
            page_view = "down"
        elif ("degraded_performance" in states or "under_maintenance" in states
              or linked_incidents(page, linked)):
            page_view = "degraded"
        else:
            page_view = "ok"

    crowd_views = [c.view for c in crowd]
    dep_views = [d.view for d in dependencies]
    return {
        "statuspage": page_view,
        "probes": of_checks(api, all_for_down=False),
        "network": of_checks(network, all_for_down=True),
        "crowd": _worst(crowd_views),
        "dependencies": _worst(dep_views),
        "control": control_view,
    }


def _worst(views: Sequence[str]) -> str:
    known = [v for v in views if v != "unknown"]
    for view in ("down", "degraded", "ok"):
        if view in known:
            return view
    return "unknown"


def crowd_view(state: CheckState) -> CrowdView:
    """A crowd source's last poll as the verdict reads it (a failed poll knows nothing)."""
    witness = state.check.witness
    name = witness.name if witness else state.check.name
    last = state.last
    if witness is None or last is None or not last.success:
        return CrowdView(name, False)
    models = last.details.get(DETAIL_MODELS)
    readings = tuple(
        CrowdReading(name, health.model, e.provider, e.endpoint, e.uptime[CROWD_WINDOW])
        for health in (models if isinstance(models, tuple) else ())
        if isinstance(health, ModelHealth)
        for e in health.of(witness.providers) if CROWD_WINDOW in e.uptime)
    return CrowdView(name, True, readings, witness.down_below)


def dependency_view(state: CheckState) -> DependencyView:
    """A dependency's open matching incidents as of its last good poll."""
    witness = state.check.witness
    name = witness.name if witness else state.check.name
    good = state.last_success
    if witness is None or good is None:
        return DependencyView(name, False)
    incidents = good.details.get(DETAIL_INCIDENTS)
    found = open_matching([i for i in incidents if isinstance(i, CloudIncident)]
                          if isinstance(incidents, tuple) else (), witness)
    return DependencyView(name, True, tuple(found))


def linked_components(checks: Iterable[CheckView], page: Page | None) -> list[str]:
    """Component ids the upstream's checks stand for; all of them if no check names one."""
    if page is None:
        return []
    refs = {c.component for c in checks if c.component}
    if not refs:
        return list(page.components)
    found = (page.find(ref) for ref in refs)
    return [c.id for c in found if c is not None]


def linked_incidents(page: Page | None, linked: Sequence[str]) -> list[Incident]:
    """Open incidents that touch a linked component (or name no component at all)."""
    if page is None:
        return []
    wanted = set(linked)
    return [i for i in page.open_incidents
            if i.impact != "none" and (not i.component_ids or wanted & set(i.component_ids))]


def _names(page: Page, ids: Iterable[str]) -> str:
    return ", ".join(page.components[cid].name if cid in page.components else cid
                     for cid in ids)


@dataclass
class UpstreamVerdict:
    decision: Decision
    since: float  # Unix time the verdict began
    unacknowledged_since: float | None = None  # Unix time our probes first saw it


class Verdicts:
    """The current verdict of every upstream, recomputed only for upstreams whose checks ran."""

    def __init__(self) -> None:
        self.by_upstream: dict[str, UpstreamVerdict] = {}
        self.history = VerdictHistory()
        # Each check's view with the state and version it was taken from: a refresh of a
        # large upstream rebuilds only the views of checks that changed (a run, a reload).
        self._views: dict[tuple[str, str], tuple[CheckState, int, CheckView]] = {}

    def view(self, state: CheckState) -> CheckView:
        """``check_view(state)``, taken again only when the check has changed since."""
        key = state.check.key
        cached = self._views.get(key)
        if cached is not None and cached[0] is state and cached[1] == state.version:
            return cached[2]
        view = check_view(state)
        self._views[key] = (state, state.version, view)
        return view

    def refresh(self, state: StateStore, config: Config, now: float | None = None) -> None:
        now = time.time() if now is None else now
        names = [u.name for u in config.upstreams]
        for gone in set(self.by_upstream) - set(names):
            del self.by_upstream[gone]
            self.history.forget(gone)
        if len(self._views) > len(state.checks):  # checks removed by a reload
            self._views = {k: v for k, v in self._views.items() if state.checks.get(k) is v[0]}
        control = [self.view(s) for s in state.for_upstream("control")]
        for name in names:
            if name in self.by_upstream and name not in state.dirty:
                continue
            decision = evaluate(state, name, control, self.view)
            current = self.by_upstream.get(name)
            if current is None or current.decision.verdict != decision.verdict:
                current = self.by_upstream[name] = UpstreamVerdict(decision, now)
                self.history.record(name, decision.verdict, now, decision.decided_by,
                                    decision.signals)
            else:
                current.decision = decision
            if decision.unacknowledged:
                current.unacknowledged_since = current.unacknowledged_since or now
            else:
                current.unacknowledged_since = None
        state.dirty.clear()

    def unacknowledged_seconds(self, upstream: str, now: float | None = None) -> float:
        current = self.by_upstream.get(upstream)
        if current is None or current.unacknowledged_since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - current.unacknowledged_since)


def evaluate(state: StateStore, upstream: str, control: Sequence[CheckView],
             view: Callable[[CheckState], CheckView] = check_view) -> Decision:
    page, fresh, page_path = None, False, "direct"
    checks = []
    crowd: list[CrowdView] = []
    dependencies: list[DependencyView] = []
    for s in state.for_upstream(upstream):
        if s.check.kind == "statuspage":
            fresh = bool(s.last and s.last.success)
            page_path = network_path(s.check)
            if s.last_success is not None:
                page = s.last_success.details.get("page")
        elif s.check.kind in CROWD_KINDS:
            crowd.append(crowd_view(s))
        elif s.check.kind in DEPENDENCY_KINDS:
            dependencies.append(dependency_view(s))
        else:
            checks.append(view(s))
    return decide(checks, control, page if isinstance(page, Page) else None, fresh, crowd,
                  dependencies, page_path)
