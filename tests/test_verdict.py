"""The verdict rules, one behaviour per row: given these signals, this is the answer."""

from __future__ import annotations

import pytest

from exporter.checks.base import Result
from exporter.config import Config, UpstreamConfig, VerdictConfig
from exporter.engine.state import StateStore
from exporter.engine.verdict import CheckView, Verdicts, decide
from exporter.witnesses.statuspage import Component, Incident, Maintenance, Page
from tests.conftest import build_check

API = "k8w3r06qmzrp"


def view(name: str = "api", kind: str = "anthropic", *, down: bool = False, ok: bool = True,
         reason: str = "", intermittent: bool = False, slow: bool = False,
         component: str | None = API, path: str = "direct") -> CheckView:
    return CheckView(name=name, kind=kind, component=component, ran=True, down=down,
                     last_success=ok, last_reason=reason, failure_ratio=0.4 if intermittent else 0.0,
                     intermittent=intermittent, slow=slow, path=path)


def page(status: str = "operational", *, incident: str | None = None,
         maintenance: str | None = None) -> Page:
    incidents = ()
    if incident:
        incidents = (Incident("inc1", "Elevated errors", incident, "investigating", "", (API,)),)
    maintenances = ()
    if maintenance:
        maintenances = (Maintenance("m1", "Planned work", maintenance, None, None, (API,)),)
    return Page(indicator="none", components={API: Component(API, "Claude API", "", status)},
                incidents=incidents, maintenances=maintenances)


GREEN = page()
CONTROL_OK = [view("cf", "tcp", component=None), view("g", "http", component=None)]
CONTROL_CUT = [view("cf", "tcp", down=True, ok=False, reason="timeout", component=None),
               view("g", "http", down=True, ok=False, reason="connect", component=None)]

PROXIED_CONTROL_CUT_DIRECT = [
    view("cf", "tcp", down=True, ok=False, reason="timeout", component=None),
    view("g", "http", component=None, path="proxy")]

CASES = [
    # (name, checks, control, page, expected verdict)
    ("nothing ran yet", [], [], None, "unknown"),
    ("all good", [view()], CONTROL_OK, GREEN, "operational"),
    ("control targets cut", [view(down=True, ok=False, reason="timeout")], CONTROL_CUT, GREEN,
     "local_network"),
    ("one of two control checks down still counts", [view()],
     [CONTROL_CUT[0], CONTROL_OK[1]], GREEN, "local_network"),
    ("maintenance on a linked component", [view(down=True, ok=False, reason="http_5xx")], CONTROL_OK,
     page("under_maintenance"), "maintenance"),
    ("maintenance in progress by schedule", [view()], CONTROL_OK,
     page(maintenance="in_progress"), "maintenance"),
    ("scheduled maintenance is not yet maintenance", [view()], CONTROL_OK,
     page(maintenance="scheduled"), "operational"),
    ("401 with a key while the page is green", [view(ok=False, reason="auth")], CONTROL_OK, GREEN,
     "own_quota"),
    ("spend-limit 429 while the page is green", [view(ok=False, reason="spend_limit")], CONTROL_OK,
     GREEN, "own_quota"),
    ("403 permission while the page is green", [view(ok=False, reason="permission")], CONTROL_OK,
     GREEN, "own_quota"),
    ("page green but the API is overloaded", [view(down=True, ok=False, reason="overloaded")],
     CONTROL_OK, GREEN, "outage"),
    ("page shows a partial outage while probes pass", [view()], CONTROL_OK, page("partial_outage"),
     "outage"),
    ("page shows a major outage", [view()], CONTROL_OK, page("major_outage"), "outage"),
    ("page shows degraded performance", [view()], CONTROL_OK, page("degraded_performance"),
     "degraded"),
    ("an open incident on a linked component", [view()], CONTROL_OK, page(incident="minor"),
     "degraded"),
    ("a single failed run is not down", [view(ok=False, reason="overloaded")], CONTROL_OK, GREEN,
     "operational"),
    ("intermittent failures", [view(intermittent=True)], CONTROL_OK, GREEN, "degraded"),
    ("slower than degraded_latency", [view(slow=True)], CONTROL_OK, GREEN, "degraded"),
    ("only the network check is down while the API answers",
     [view(), view("icmp", "icmp", down=True, ok=False, reason="loss")], CONTROL_OK, GREEN, "degraded"),
    ("every check down without API checks",
     [view("tcp", "tcp", down=True, ok=False, reason="connect")], CONTROL_OK, GREEN, "outage"),
    ("a persistent rate limit is our quota, not an outage",
     [view(down=True, ok=False, reason="rate_limited")], CONTROL_OK, GREEN, "own_quota"),
    ("a single rate-limited run changes nothing", [view(ok=False, reason="rate_limited")], CONTROL_OK,
     GREEN, "operational"),
    ("no status page, probes fine", [view()], CONTROL_OK, None, "operational"),
    ("no control checks configured", [view(down=True, ok=False, reason="connect")], [], GREEN, "outage"),
    # Behind a proxy-only network: the direct path is cut by design, the proxy path works.
    ("proxy-only network, proxied API answers",
     [view(path="proxy"), view("tcp", "tcp", down=True, ok=False, reason="timeout")],
     PROXIED_CONTROL_CUT_DIRECT, GREEN, "operational"),
    ("proxy-only network, proxied API down is an outage",
     [view(down=True, ok=False, reason="http_5xx", path="proxy"),
      view("tcp", "tcp", down=True, ok=False, reason="timeout")],
     PROXIED_CONTROL_CUT_DIRECT, GREEN, "outage"),
    ("the proxy is dead: every path is cut",
     [view(down=True, ok=False, reason="proxy", path="proxy")],
     [*CONTROL_CUT[:1], view("g", "http", down=True, ok=False, reason="proxy", component=None,
                             path="proxy")], GREEN, "local_network"),
    ("the proxy is dead and no control check goes through it",
     [view(down=True, ok=False, reason="proxy", path="proxy")], CONTROL_OK, GREEN, "local_network"),
    ("the proxy path cut while the API goes direct",
     [view()], [CONTROL_OK[0], view("g", "http", down=True, ok=False, reason="proxy",
                                    component=None, path="proxy")], GREEN, "operational"),
]


@pytest.mark.parametrize(("case", "checks", "control", "pg", "expected"), CASES, ids=[c[0] for c in CASES])
def test_verdict(case: str, checks: list[CheckView], control: list[CheckView], pg: Page | None,
                 expected: str) -> None:
    assert decide(checks, control, pg).verdict == expected, case


def test_an_outage_the_page_does_not_show_is_unacknowledged() -> None:
    decision = decide([view(down=True, ok=False, reason="overloaded")], CONTROL_OK, GREEN)
    assert decision.unacknowledged
    assert decision.decided_by == ("probes",)
    assert decide([view(down=True, ok=False, reason="overloaded")], CONTROL_OK,
                  page("major_outage")).unacknowledged is False


def test_signals_name_the_failing_checks() -> None:
    decision = decide([view(down=True, ok=False, reason="overloaded")], CONTROL_OK, GREEN)
    assert decision.signals[0] == "our probes fail: api (overloaded)"


def test_own_quota_yields_to_a_real_outage_on_the_page() -> None:
    assert decide([view(ok=False, reason="auth")], CONTROL_OK, page("major_outage")).verdict == "outage"


def run(success: bool, reason: str = "", duration: float = 0.01) -> Result:
    return Result(success=success, duration_seconds=duration, reason="" if success else reason)


DEFAULT_VERDICT = VerdictConfig()


def store_with(results: list[Result], cfg: VerdictConfig = DEFAULT_VERDICT,
               degraded_latency: float | None = None) -> tuple[StateStore, Config]:
    check = build_check("claude", "api", "anthropic", interval=1, timeout=1,
                        degraded_latency=degraded_latency)
    config = Config(upstreams=(UpstreamConfig("claude", None, (check,), cfg),))
    state = StateStore()
    state.sync(config)
    check = state.checks[check.key].check
    for result in results:
        state.record(check, result)
    return state, config


def verdict_after(results: list[Result], **kwargs: object) -> str:
    state, config = store_with(results, **kwargs)  # type: ignore[arg-type]
    verdicts = Verdicts()
    verdicts.refresh(state, config)
    return verdicts.by_upstream["claude"].decision.verdict


FAIL, OK = run(False, "overloaded"), run(True)

DEBOUNCE = [
    ("two failures are not yet an outage (outage_after=3)", [OK, FAIL, FAIL], "operational"),
    ("three failures in a row are", [OK, FAIL, FAIL, FAIL], "outage"),
    ("one success after an outage is not recovery (recover_after=2)", [FAIL] * 3 + [OK], "outage"),
    ("two successes recover", [FAIL] * 3 + [OK, OK], "degraded"),
    ("a failure every fifth run never changes the verdict", ([OK] * 4 + [FAIL]) * 4, "operational"),
    ("recovered and quiet for a full window is operational", [FAIL] * 3 + [OK] * 10, "operational"),
]


@pytest.mark.parametrize(("case", "results", "expected"), DEBOUNCE, ids=[d[0] for d in DEBOUNCE])
def test_debounce(case: str, results: list[Result], expected: str) -> None:
    assert verdict_after(results) == expected, case


def test_flapping_single_failures_keep_the_verdict_operational_throughout() -> None:
    state, config = store_with([])
    check = next(iter(state.checks.values())).check
    verdicts = Verdicts()
    seen = set()
    for result in ([OK] * 4 + [FAIL]) * 6:
        state.record(check, result)
        verdicts.refresh(state, config)
        seen.add(verdicts.by_upstream["claude"].decision.verdict)
    assert seen == {"operational"}


def test_slow_runs_degrade_only_after_a_streak() -> None:
    slow = run(True, duration=5.0)
    assert verdict_after([OK, slow, slow], degraded_latency=2.0) == "operational"
    assert verdict_after([OK, slow, slow, slow], degraded_latency=2.0) == "degraded"


def test_unacknowledged_time_grows_while_the_outage_lasts_and_resets_after() -> None:
    state, config = store_with([FAIL] * 3)
    verdicts = Verdicts()
    verdicts.refresh(state, config, now=1000.0)
    assert verdicts.unacknowledged_seconds("claude", now=1030.0) == 30.0
    check = next(iter(state.checks.values())).check
    for _ in range(2):
        state.record(check, OK)
    verdicts.refresh(state, config, now=1040.0)
    assert verdicts.unacknowledged_seconds("claude", now=1050.0) == 0.0


def test_since_changes_only_when_the_verdict_does() -> None:
    state, config = store_with([OK])
    verdicts = Verdicts()
    verdicts.refresh(state, config, now=100.0)
    check = next(iter(state.checks.values())).check
    state.record(check, OK)
    verdicts.refresh(state, config, now=200.0)
    assert verdicts.by_upstream["claude"].since == 100.0


DIRTY = [
    ("the first run", [], OK, True),
    ("another success changes nothing the verdict reads", [OK], OK, False),
    ("a first failure changes the window", [OK], FAIL, True),
    ("a failure for the same reason inside a full window of failures", [FAIL] * 12, FAIL, False),
    ("a different reason", [FAIL] * 12, run(False, "timeout"), True),
    ("a slower success than before, under degraded_latency", [OK], run(True, duration=1.5), False),
]


@pytest.mark.parametrize(("case", "before", "result", "dirty"), DIRTY, ids=[d[0] for d in DIRTY])
def test_a_run_marks_its_upstream_for_a_verdict_refresh_only_when_the_verdict_inputs_change(
        case: str, before: list[Result], result: Result, dirty: bool) -> None:
    state, _ = store_with(before, degraded_latency=2.0)
    state.dirty.clear()
    state.record(next(iter(state.checks.values())).check, result)
    assert ("claude" in state.dirty) == dirty, case


@pytest.mark.parametrize("seed", range(20))
def test_the_refreshed_verdict_equals_a_full_recomputation_after_every_run(seed: int) -> None:
    import random

    rng = random.Random(seed)
    choices = [OK, OK, OK, FAIL, run(False, "timeout"), run(True, duration=5.0)]
    state, config = store_with([], degraded_latency=2.0)
    check = next(iter(state.checks.values())).check
    incremental = Verdicts()
    for _ in range(60):
        state.record(check, rng.choice(choices))
        incremental.refresh(state, config)
        full = Verdicts()
        full.refresh(state, config)  # a new Verdicts evaluates every upstream
        assert incremental.by_upstream["claude"].decision == full.by_upstream["claude"].decision


def test_the_verdicts_keep_each_checks_view_until_the_check_changes() -> None:
    state, _ = store_with([OK])
    st = next(iter(state.checks.values()))
    verdicts = Verdicts()
    first = verdicts.view(st)
    assert verdicts.view(st) is first  # nothing changed: the kept view
    state.record(st.check, FAIL)
    assert verdicts.view(st) is not first and not verdicts.view(st).last_success
    # A reload that changes the kind makes a new state: the old state's view is never served.
    changed = build_check("claude", "api", "http", url="https://api.example.test/",
                          interval=1, timeout=1)
    state.sync(Config(upstreams=(UpstreamConfig("claude", None, (changed,)),)))
    fresh = state.checks[changed.key]
    assert fresh is not st
    assert (verdicts.view(fresh).kind, verdicts.view(fresh).ran) == ("http", False)
    # A reload that drops the check: its view goes at the next refresh.
    empty = Config(upstreams=(UpstreamConfig("claude", None, ()),))
    state.sync(empty)
    verdicts.refresh(state, empty)
    assert verdicts._views == {}


# -- the other witnesses: the crowd and the dependencies ----------------------------------------

from exporter.engine.verdict import CrowdReading, CrowdView, DependencyView  # noqa: E402
from exporter.witnesses.dependencies import CloudIncident  # noqa: E402


def crowd(*ratios: float, ran: bool = True, model: str = "anthropic/claude-sonnet-4.6"
          ) -> list[CrowdView]:
    readings = tuple(CrowdReading("openrouter", model, "Anthropic", f"anthropic/{i}", r)
                     for i, r in enumerate(ratios))
    return [CrowdView("openrouter", ran, readings)]


def cloud(severity: str = "medium") -> list[DependencyView]:
    return [DependencyView("aws", True, (CloudIncident(
        "e1", "Increased Error Rates", severity, True, (("bedrock", "Amazon Bedrock"),),
        (("us-east-1", ""),)),))]


CALM = [DependencyView("aws", True)]
FAIL_NOW = view(ok=False, reason="overloaded")  # one failed run: not yet down
DOWN = view(down=True, ok=False, reason="overloaded")

WITNESS_CASES = [
    # (name, checks, control, page, crowd, dependencies, verdict, decided_by has, unacknowledged)
    ("crowd healthy, all good", [view()], CONTROL_OK, GREEN, crowd(1.0), CALM,
     "operational", "crowd", False),
    ("the crowd alone raises to degraded", [view()], CONTROL_OK, GREEN, crowd(0.5, 1.0), CALM,
     "degraded", "crowd", True),
    ("the crowd sees the whole model down: still only degraded", [view()], CONTROL_OK, GREEN,
     crowd(0.0, 0.1), CALM, "degraded", "crowd", True),
    ("the crowd alone, with no probes and no page", [], [], None, crowd(0.2), [],
     "degraded", "crowd", True),
    ("crowd at exactly down_below is not failing", [view()], CONTROL_OK, GREEN, crowd(0.9),
     CALM, "operational", "probes", False),
    ("one failed run plus a failing crowd: outage at once", [FAIL_NOW], CONTROL_OK, GREEN,
     crowd(0.3), CALM, "outage", "crowd", True),
    ("one failed run with a healthy crowd changes nothing", [FAIL_NOW], CONTROL_OK, GREEN,
     crowd(1.0), CALM, "operational", "probes", False),
    ("our probes down, crowd also failing", [DOWN], CONTROL_OK, GREEN, crowd(0.4), CALM,
     "outage", "crowd", True),
    ("our probes down while the crowd is healthy: still outage, pointing at us", [DOWN],
     CONTROL_OK, GREEN, crowd(0.995, 1.0), CALM, "outage", "probes", True),
    ("an answered failure plus a failing crowd is not an outage",
     [view(ok=False, reason="rate_limited")], CONTROL_OK, GREEN, crowd(0.3), CALM,
     "degraded", "crowd", True),
    ("local network wins over the crowd", [DOWN], CONTROL_CUT, GREEN, crowd(0.1), CALM,
     "local_network", "control", False),
    ("maintenance wins over the crowd", [view()], CONTROL_OK, page("under_maintenance"),
     crowd(0.1), CALM, "maintenance", "statuspage", False),
    ("a failing crowd with the page already showing it is acknowledged", [view()], CONTROL_OK,
     page("degraded_performance"), crowd(0.5), CALM, "degraded", "statuspage", False),
    ("a crowd whose poll failed says nothing", [view()], CONTROL_OK, GREEN,
     crowd(0.1, ran=False), CALM, "operational", "probes", False),
    ("an open dependency incident never changes the verdict", [view()], CONTROL_OK, GREEN,
     [], cloud("high"), "operational", "probes", False),
    ("a dependency incident during our outage stays context", [DOWN], CONTROL_OK, GREEN,
     [], cloud(), "outage", "probes", True),
]


@pytest.mark.parametrize(
    ("case", "checks", "control", "pg", "crowd_views", "deps", "expected", "decider", "unack"),
    WITNESS_CASES, ids=[c[0] for c in WITNESS_CASES])
def test_verdict_with_witnesses(case: str, checks: list[CheckView], control: list[CheckView],
                                pg: Page | None, crowd_views: list[CrowdView],
                                deps: list[DependencyView], expected: str, decider: str,
                                unack: bool) -> None:
    decision = decide(checks, control, pg, crowd=crowd_views, dependencies=deps)
    assert decision.verdict == expected, decision.signals
    assert decider in decision.decided_by, decision.decided_by
    assert decision.unacknowledged is unack
    assert "dependencies" not in decision.decided_by


def test_healthy_crowd_while_we_fail_says_it_points_at_us() -> None:
    decision = decide([DOWN], CONTROL_OK, GREEN, crowd=crowd(1.0))
    assert any("likely on our side" in s for s in decision.signals)
    assert "crowd" not in decision.decided_by


def test_dependency_incident_is_named_in_the_signals() -> None:
    decision = decide([view()], CONTROL_OK, GREEN, dependencies=cloud())
    assert decision.signals[-1] == ("open aws incident (context): Increased Error Rates "
                                    "(Amazon Bedrock, us-east-1)")


WITNESS_VIEWS = [
    # (name, checks, control, page, crowd, deps, {witness: view})
    ("nothing known", [], [], None, [], [],
     dict.fromkeys(("statuspage", "probes", "network", "crowd", "dependencies", "control"),
                   "unknown")),
    ("all ok", [view(), view("tcp", "tcp")], CONTROL_OK, GREEN, crowd(1.0), CALM,
     {"statuspage": "ok", "probes": "ok", "network": "ok", "crowd": "ok", "dependencies": "ok",
      "control": "ok"}),
    ("each one failing", [DOWN, view("tcp", "tcp", down=True, ok=False, reason="connect")],
     CONTROL_CUT, page("major_outage"), crowd(0.0), cloud("high"),
     {"statuspage": "down", "probes": "down", "network": "down", "crowd": "down",
      "dependencies": "down", "control": "down"}),
    ("each one partly", [view(intermittent=True), view("tcp", "tcp"),
                         view("icmp", "icmp", down=True, ok=False, reason="loss")],
     [CONTROL_OK[0], CONTROL_OK[1], view("q", "icmp", down=True, ok=False, reason="loss",
                                         component=None)],
     page(incident="minor"), crowd(0.5, 1.0), cloud("low"),
     {"statuspage": "degraded", "probes": "degraded", "network": "degraded",
      "crowd": "degraded", "dependencies": "degraded", "control": "degraded"}),
]


@pytest.mark.parametrize(("case", "checks", "control", "pg", "crowd_views", "deps", "views"),
                         WITNESS_VIEWS, ids=[c[0] for c in WITNESS_VIEWS])
def test_witness_views(case: str, checks: list[CheckView], control: list[CheckView],
                       pg: Page | None, crowd_views: list[CrowdView], deps: list[DependencyView],
                       views: dict[str, str]) -> None:
    assert decide(checks, control, pg, crowd=crowd_views, dependencies=deps).witnesses == views
