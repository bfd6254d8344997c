"""Verdict history: the bounded record of each upstream's verdict changes, in /api/v1/status and
as the landing page's 24-hour timeline (checked in headless Chromium)."""

from __future__ import annotations

import itertools
import json
import re
import time
from html import unescape
from pathlib import Path

import pytest

from exporter.engine.history import VerdictHistory
from exporter.server import landing
from tests.test_landing_browser import chromium

DAY = 86400.0


def verdicts(history: VerdictHistory, upstream: str = "claude", now: float = 1e9) -> list[str]:
    return [p.verdict for p in history.periods(upstream, now)]


# -- the object -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "expected"), [
    ([], []),
    (["operational"], ["operational"]),
    (["unknown", "operational", "outage", "operational"], ["unknown", "operational", "outage", "operational"]),
    (["operational", "operational", "outage", "outage"], ["operational", "outage"]),  # no change is no entry
])
def test_history_keeps_each_change_once(changes: list[str], expected: list[str]) -> None:
    history = VerdictHistory()
    for i, verdict in enumerate(changes):
        history.record("claude", verdict, 1e9 - 100 + i, ("probes",), ("why",))
    assert verdicts(history) == expected


def test_each_period_ends_where_the_next_begins() -> None:
    history = VerdictHistory()
    for at, verdict in [(100.0, "unknown"), (105.0, "operational"), (200.0, "outage")]:
        history.record("claude", verdict, at, ("probes",), (f"{verdict} because",))
    periods = history.periods("claude", 300.0)
    assert [(p.since, p.until) for p in periods] == [(100.0, 105.0), (105.0, 200.0), (200.0, None)]
    assert periods[2].as_dict() == {"verdict": "outage", "since": 200.0, "until": None,
                                    "decided_by": ["probes"], "signals": ["outage because"]}


def test_history_is_bounded_by_count() -> None:
    history = VerdictHistory(max_changes=1000)
    for i in range(2500):
        history.record("claude", ("operational", "outage")[i % 2], 1e9 - 3000 + i, (), ())
    periods = history.periods("claude", 1e9)
    assert len(periods) == 1000
    assert periods[-1].since == 1e9 - 3000 + 2499  # the newest are kept


@pytest.mark.parametrize(("ended_ago", "kept"), [(8 * DAY, False), (7 * DAY + 1, False),
                                                  (7 * DAY - 1, True), (60.0, True)])
def test_history_forgets_periods_that_ended_over_seven_days_ago(ended_ago: float, kept: bool) -> None:
    now = 1e9
    history = VerdictHistory()
    history.record("claude", "outage", now - ended_ago - 600, (), ())
    history.record("claude", "operational", now - ended_ago, (), ())
    assert verdicts(history, now=now) == (["outage", "operational"] if kept else ["operational"])


def test_the_current_verdict_is_kept_however_old() -> None:
    history = VerdictHistory()
    history.record("claude", "operational", 1e9 - 30 * DAY, (), ())
    assert verdicts(history) == ["operational"]


def test_upstreams_have_their_own_history_and_can_be_forgotten() -> None:
    history = VerdictHistory()
    history.record("a", "outage", 1.0, (), ())
    history.record("b", "operational", 1.0, (), ())
    history.forget("a")
    assert verdicts(history, "a") == [] and verdicts(history, "b") == ["operational"]


# -- the landing page's timeline ------------------------------------------------------------------

def timeline_spans(html: str) -> list[tuple[str, float, float, str]]:
    """(verdict, left %, width %, title) of each stretch of the timeline."""
    found = re.findall(r'<span class="v-([a-z_]+)" title="([^"]*)" style="right:([\d.]+)%;width:([\d.]+)%',
                       html)
    return [(v, 100 - float(right) - float(width), float(width), unescape(t))
            for v, t, right, width in found]


def status_with(history: list[dict], now: float) -> dict:  # type: ignore[type-arg]
    return {"version": "test", "generated_at": now, "ready": True, "control": [], "upstreams": [{
        "name": "claude", "verdict": history[-1]["verdict"] if history else "unknown",
        "since": None, "signals": [], "decided_by": [], "statuspage": None, "checks": [],
        "history": history}]}


def test_timeline_places_each_period_on_the_last_24_hours() -> None:
    now = 1e9
    history = [
        {"verdict": "operational", "since": now - 2 * DAY, "until": now - 12 * 3600,
         "decided_by": ["probes"], "signals": ["1 checks pass"]},
        {"verdict": "outage", "since": now - 12 * 3600, "until": now - 6 * 3600,
         "decided_by": ["probes"], "signals": ["our probes fail: api (connect)"]},
        {"verdict": "operational", "since": now - 6 * 3600, "until": None,
         "decided_by": ["probes"], "signals": ["1 checks pass"]},
    ]
    spans = timeline_spans(landing.render(status_with(history, now)))
    assert [(v, round(left), round(width)) for v, left, width, _ in spans] == [
        ("operational", 0, 50), ("outage", 50, 25), ("operational", 75, 25)]
    assert "our probes fail: api (connect)" in spans[1][3]
    assert "decided by probes" in spans[1][3]


def test_timeline_leaves_out_what_ended_before_the_window() -> None:
    now = 1e9
    history = [{"verdict": "outage", "since": now - 3 * DAY, "until": now - 2 * DAY,
                "decided_by": [], "signals": []},
               {"verdict": "operational", "since": now - 2 * DAY, "until": None,
                "decided_by": [], "signals": []}]
    assert [s[0] for s in timeline_spans(landing.render(status_with(history, now)))] == ["operational"]


def test_timeline_escapes_the_reason() -> None:
    now = 1e9
    history = [{"verdict": "outage", "since": now - 60, "until": None, "decided_by": ["probes"],
                "signals": ['open incident: <b>"Elevated" & errors</b>']}]
    html = landing.render(status_with(history, now))
    assert '<b>"Elevated"' not in html
    assert 'open incident: <b>"Elevated" & errors</b>' in timeline_spans(html)[0][3]


# -- the real exporter ----------------------------------------------------------------------------

def config(sim) -> str:  # type: ignore[no-untyped-def]
    return f"""\
defaults: {{interval: 300ms, timeout: 250ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim.statuspage_url}", interval: 1s}}
    checks:
      - {{name: api, kind: anthropic, url: "{sim.anthropic_url}", mode: keyless, component: k8w3r06qmzrp}}
control:
  - {{name: loopback, kind: tcp, target: "{sim.url.removeprefix('http://')}"}}
"""


def history_of(exporter, upstream: str = "claude") -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    status = json.loads(exporter.get("/api/v1/status")[1])
    return next(u["history"] for u in status["upstreams"] if u["name"] == upstream)


def wait_history(exporter, want: list[str], timeout: float = 30.0) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    """Wait until the verdicts in the history are ``want`` in this order (others, such as a
    passing `degraded` on recovery, may come between)."""
    deadline = time.monotonic() + timeout
    while True:
        history = history_of(exporter)
        got = [p["verdict"] for p in history]
        rest = iter(got)
        if got and got[-1] == want[-1] and all(w in rest for w in want):
            return history
        assert time.monotonic() < deadline, f"history {got}, wanted it to end with {want}"
        time.sleep(0.2)


def test_status_and_landing_page_show_the_changes(run_simulator, run_exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim = run_simulator("operational")
    exporter = run_exporter(config(sim))
    wait_history(exporter, ["operational"])
    sim.set_scenario("major_outage")
    wait_history(exporter, ["operational", "outage"])
    sim.set_scenario("operational")
    history = wait_history(exporter, ["operational", "outage", "operational"])

    for earlier, later in itertools.pairwise(history):
        assert earlier["until"] == later["since"]
    assert history[-1]["until"] is None
    outage = next(p for p in history if p["verdict"] == "outage")
    assert set(outage) == {"verdict", "since", "until", "decided_by", "signals"}
    assert "statuspage" in outage["decided_by"]
    assert any("major_outage" in s for s in outage["signals"])

    dom = chromium(tmp_path, "--dump-dom", exporter.url + "/").stdout
    spans = timeline_spans(dom)
    assert [s[0] for s in spans] == [p["verdict"] for p in history]
    drawn_outage = next(s for s in spans if s[0] == "outage")
    assert "major_outage" in drawn_outage[3]  # the reason, on hover
    assert "<script" not in exporter.get("/")[1]
    shot = tmp_path / "timeline.png"
    chromium(tmp_path, "--hide-scrollbars", "--window-size=1100,700", f"--screenshot={shot}", exporter.url + "/")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
