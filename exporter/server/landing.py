"""The landing page: the verdict per upstream at a glance, why, and every check's last result.

One self-contained HTML document (inline CSS, no scripts, no external assets) rendered from the
same status structure as /api/v1/status. It refreshes itself every 15 seconds."""

from __future__ import annotations

import time
from html import escape
from typing import Any

COLOURS = {
    "operational": ("#1a7f37", "Operational"),
    "degraded": ("#bf8700", "Degraded"),
    "outage": ("#cf222e", "Outage"),
    "maintenance": ("#0969da", "Maintenance"),
    "own_quota": ("#8250df", "Our account / quota"),
    "local_network": ("#6e4c13", "Our network"),
    "unknown": ("#57606a", "Unknown"),
}
ANSWERS = {
    "operational": "No. It is working, from here and according to the provider.",
    "degraded": "Partly: it works, but slowly or not every time.",
    "outage": "Yes, it is down for us, and the cause is on the provider's side.",
    "maintenance": "The provider is doing planned maintenance.",
    "own_quota": "It is us: the API answers but refuses our account (key, billing or quota).",
    "local_network": "It is us: our own network cannot reach independent control targets.",
    "unknown": "Not known yet: the first checks are still running.",
}
# An outage our probes see while others' traffic to the same models succeeds and the page is
# green: the verdict stays outage (we cannot reach it), but the answer must not blame them.
OUTAGE_LIKELY_OURS = ("Yes, it is down for us, but others' traffic to the same models succeeds: "
                      "the cause is likely on our side (our path, proxy or account).")


def answer(up: dict[str, Any]) -> str:
    """The banner's one-line answer to "is it them or me?" for one upstream."""
    verdict = up.get("verdict", "")
    views = {w.get("witness"): w.get("view") for w in up.get("witnesses") or []}
    if verdict == "outage" and views.get("crowd") == "ok" and views.get("statuspage") == "ok":
        return OUTAGE_LIKELY_OURS
    return ANSWERS.get(verdict, "")


STATUS_DOT = {
    "operational": "#1a7f37", "degraded_performance": "#bf8700", "partial_outage": "#e16f24",
    "major_outage": "#cf222e", "under_maintenance": "#0969da", "unknown": "#57606a",
}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f8fa;color:#1f2328}
header{background:#24292f;color:#fff;padding:14px 24px;display:flex;justify-content:space-between;align-items:center}
header h1{font-size:18px;margin:0}header a{color:#9ecbff;margin-left:14px}
main{max-width:1100px;margin:0 auto;padding:20px}
.up{background:#fff;border:1px solid #d0d7de;border-radius:10px;margin-bottom:22px;overflow:hidden}
.banner{color:#fff;padding:16px 20px;display:flex;justify-content:space-between;align-items:baseline;gap:16px}
.banner h2{margin:0;font-size:24px}.banner .q{font-size:16px;opacity:.95}
.body{padding:14px 20px}
ul.sig{margin:6px 0 12px 18px;padding:0}
table{border-collapse:collapse;width:100%;margin:8px 0 14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eaeef2;font-size:14px;vertical-align:top}
th{color:#57606a;font-weight:600}
.ok{color:#1a7f37;font-weight:600}.failed{color:#cf222e;font-weight:600}.pending{color:#57606a}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px}
.muted{color:#57606a}.err{font-family:ui-monospace,monospace;font-size:12px;color:#57606a}
h3{font-size:15px;margin:14px 0 4px}
.glance{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 20px}
.pill{color:#fff;text-decoration:none;border-radius:8px;padding:10px 16px;min-width:170px}
.pill b{display:block;font-size:13px;opacity:.9;font-weight:500}.pill span{font-size:19px;font-weight:700}
td.nowrap{white-space:nowrap}
.tl{position:relative;height:22px;border-radius:4px;overflow:hidden;margin:6px 0 2px;
background:repeating-linear-gradient(45deg,#eaeef2 0 6px,#f6f8fa 6px 12px)}
.tl span{position:absolute;top:0;bottom:0;min-width:2px}
.tl span:hover{filter:brightness(1.15)}
.axis{display:flex;justify-content:space-between;font-size:12px;color:#57606a;margin-bottom:10px}
"""
TIMELINE_SECONDS = 86400.0  # the landing page draws the last 24 hours of the history


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _since(ts: float | None) -> str:
    if not ts:
        return ""
    return "since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _checks_table(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return '<p class="muted">No checks.</p>'
    rows = []
    for c in checks:
        result = c["result"]
        detail = c["reason"] + (": " + c["error"] if c.get("error") else "") if result == "failed" else ""
        duration = f'{c["duration_seconds"] * 1000:.1f} ms' if c.get("duration_seconds") is not None else ""
        rows.append(
            f'<tr><td>{escape(c["name"])}</td><td>{escape(c["kind"])}'
            f'{" / " + escape(c["mode"]) if c.get("mode") else ""}</td>'
            f'<td class="err">{escape(c["target"])}</td>'
            f'<td class="{result}">{escape(result)}</td><td class="nowrap">{duration}</td>'
            f'<td class="nowrap">{_age(c.get("age_seconds"))}</td><td class="err">{escape(detail)}</td></tr>')
    return ("<table><tr><th>check</th><th>kind</th><th>target</th><th>last result</th>"
            "<th>took</th><th>age</th><th>error</th></tr>" + "".join(rows) + "</table>")


def _is_link(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _page(sp: dict[str, Any]) -> str:
    parts = [f'<h3>Official status page <span class="muted">({escape(sp.get("url", ""))})</span></h3>']
    poll = "ok" if sp.get("success") else ("pending" if sp.get("success") is None else "failed")
    poll_text = {"ok": "read", "pending": "not read yet",
                 "failed": f"poll failing ({sp.get('reason', '')}): showing the last good read"}[poll]
    parts.append(f'<p>Indicator: <b>{escape(str(sp.get("indicator", "unknown")))}</b> · '
                 f'<span class="{poll}">{escape(poll_text)}</span> · {_age(sp.get("age_seconds"))}</p>')
    incidents = sp.get("incidents") or []
    if incidents:
        items = "".join(
            f'<li><b>{escape(i["name"])}</b> — {escape(i["impact"])}, {escape(i["status"])}'
            + (f' · <a href="{escape(i["shortlink"])}">details</a>' if _is_link(i.get("shortlink")) else "")
            + "</li>" for i in incidents)
        parts.append(f"<p><b>Open incidents</b></p><ul>{items}</ul>")
    comps = sp.get("components") or []
    if comps:
        cells = "".join(
            f'<tr><td><span class="dot" style="background:{STATUS_DOT.get(c["status"], "#57606a")}"></span>'
            f'{escape(c["name"])}</td><td class="muted">{escape(c["group"])}</td>'
            f'<td>{escape(c["status"])}</td></tr>' for c in comps)
        parts.append("<table><tr><th>component</th><th>group</th><th>status</th></tr>"
                     + cells + "</table>")
    dropped = {k: v for k, v in (sp.get("dropped") or {}).items() if v}
    if dropped:  # the page's limits (max_components, max_incidents, max_label_chars) at work
        parts.append('<p class="muted">Not shown, beyond this page\'s limits: '
                     + escape(", ".join(f"{n} {what}" if what != "labels" else f"{n} labels cut short"
                                        for what, n in dropped.items())) + "</p>")
    return "".join(parts)


WITNESS_COLOURS = {"ok": "#1a7f37", "degraded": "#bf8700", "down": "#cf222e",
                   "unknown": "#57606a"}
WITNESS_TITLES = {"statuspage": "status page", "probes": "our API probes",
                  "network": "network checks", "crowd": "the crowd", "dependencies": "clouds",
                  "control": "control targets"}


def _witnesses(up: dict[str, Any]) -> str:
    """Every witness side by side; the ones that decided the verdict are marked."""
    cells = "".join(
        f'<td><span class="dot" style="background:{WITNESS_COLOURS.get(w["view"], "#57606a")}">'
        f'</span>{escape(w["view"])}{" ★" if w.get("decided") else ""}</td>'
        for w in up.get("witnesses") or [])
    if not cells:
        return ""
    heads = "".join(f"<th>{escape(WITNESS_TITLES.get(w['witness'], w['witness']))}</th>"
                    for w in up["witnesses"])
    return (f'<table class="witnesses"><tr>{heads}</tr><tr>{cells}</tr></table>'
            '<p class="muted">★ decided the verdict</p>')


def _crowd_and_clouds(up: dict[str, Any]) -> str:
    parts = []
    for source in up.get("crowd") or []:
        rows = "".join(
            f'<tr><td>{escape(e["model"])}</td><td>{escape(e["provider"])}</td>'
            f'<td class="err">{escape(e["endpoint"])}</td>'
            f'<td class="{"failed" if e["failing"] else "ok"}">{e["uptime_5m"]:.1%}</td></tr>'
            for e in source.get("endpoints") or [])
        parts.append(f'<h3>The crowd: {escape(source["name"])} '
                     f'<span class="muted">({escape(source["target"])}, '
                     f'{escape(source.get("view", "unknown"))})</span></h3>'
                     + (f"<table><tr><th>model</th><th>provider</th><th>endpoint</th>"
                        f"<th>others' 5m uptime</th></tr>{rows}</table>" if rows else
                        '<p class="muted">No figures yet.</p>'))
    for dep in up.get("dependencies") or []:
        items = "".join(
            f'<li><b>{escape(i["name"] or i["id"])}</b> — {escape(i["severity"])}'
            f'{" · " + escape(i["service"]) if i.get("service") else ""}'
            f'{" · " + escape(i["region"]) if i.get("region") else ""}'
            + (f' · <a href="{escape(i["url"])}">details</a>' if _is_link(i.get("url")) else "")
            + "</li>" for i in dep.get("incidents") or [])
        parts.append(f'<h3>Cloud underneath: {escape(dep["name"])} '
                     f'<span class="muted">({escape(dep["kind"])}, '
                     f'{escape(dep.get("view", "unknown"))})</span></h3>'
                     + (f"<ul>{items}</ul>" if items else
                        '<p class="muted">No open incident matches the filters.</p>'))
    return "".join(parts)


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _timeline(history: list[dict[str, Any]], now: float) -> str:
    """The last 24 hours as one bar: a coloured stretch per verdict, its reason on hover (the
    title attribute, no script); hatched where the exporter was not running yet."""
    start = now - TIMELINE_SECONDS
    spans = []
    for period in history:
        begin, end = max(period["since"], start), period["until"] or now
        if end <= start:
            continue
        colour, title = COLOURS.get(period["verdict"], COLOURS["unknown"])
        tip = (f"{title} from {_clock(period['since'])} "
               + (f"to {_clock(period['until'])}" if period["until"] else "until now")
               + (": " + "; ".join(period["signals"]) if period["signals"] else "")
               + (f" (decided by {', '.join(period['decided_by'])})" if period["decided_by"] else ""))
        # Anchored on the right (now), so that a stretch too short to see still shows as
        # its min-width, growing into the past rather than off the edge.
        right = (now - end) / TIMELINE_SECONDS * 100
        width = (end - begin) / TIMELINE_SECONDS * 100
        spans.append(f'<span class="v-{escape(period["verdict"])}" title="{escape(tip)}" '
                     f'style="right:{right:.3f}%;width:{width:.3f}%;background:{colour}"></span>')
    changes = sum(1 for p in history if p["since"] >= start)
    return (f'<h3>Last 24 hours <span class="muted">({changes} verdict change'
            f'{"" if changes == 1 else "s"}; hover for why)</span></h3>'
            f'<div class="tl" role="img" aria-label="verdict timeline">{"".join(spans)}</div>'
            '<div class="axis"><span>24h ago</span><span>18h</span><span>12h</span>'
            '<span>6h</span><span>now</span></div>')


def _pill(name: str, colour: str, title: str) -> str:
    return (f'<a class="pill" href="#{escape(name)}" style="background:{colour}">'
            f"<b>{escape(name)}</b><span>{escape(title)}</span></a>")


def render(status: dict[str, Any]) -> str:
    sections = []
    for up in status["upstreams"]:
        colour, title = COLOURS.get(up["verdict"], COLOURS["unknown"])
        signals = "".join(f"<li>{escape(s)}</li>" for s in up["signals"])
        unack = ""
        if up.get("unacknowledged_outage_seconds"):
            unack = (f'<p><b>Unacknowledged:</b> our probes (or the crowd) have seen this for '
                     f'{up["unacknowledged_outage_seconds"]:.0f}s before the status page.</p>')
        decided = ", ".join(up["decided_by"]) or "nothing yet"
        sections.append(
            f'<section class="up" id="{escape(up["name"])}">'
            f'<div class="banner" style="background:{colour}"><h2>{escape(up["name"])}: {title}</h2>'
            f'<span class="q">{escape(answer(up))}</span></div>'
            f'<div class="body"><p class="muted">{_since(up.get("since"))} · decided by: {escape(decided)}</p>'
            f'<ul class="sig">{signals}</ul>{unack}' + _witnesses(up)
            + _timeline(up.get("history") or [], status.get("generated_at") or time.time())
            + (_page(up["statuspage"]) if up.get("statuspage") else "")
            + "<h3>Our probes</h3>" + _checks_table(up["checks"]) + _crowd_and_clouds(up)
            + "</div></section>")
    control = status.get("control") or []
    sections.append(
        '<section class="up" id="control"><div class="banner" style="background:#424a53"><h2>Control targets</h2>'
        '<span class="q">Independent endpoints: if these fail too, the problem is ours.</span></div>'
        f'<div class="body">{_checks_table(control)}</div></section>')
    pills = "".join(_pill(up["name"], *COLOURS.get(up["verdict"], COLOURS["unknown"]))
                    for up in status["upstreams"])
    control_failing = sum(1 for c in control if c.get("result") == "failed")
    control_colour = "#1a7f37" if not control_failing else "#6e4c13"
    pills += (f'<a class="pill" href="#control" style="background:{control_colour}"><b>control targets</b>'
              f'<span>{len(control) - control_failing} of {len(control)} reachable</span></a>') if control else ""
    vantage = f" · vantage {escape(status['vantage'])}" if status.get("vantage") else ""
    ready = "" if status.get("ready") else ' · <span class="pending">first round running</span>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta http-equiv="refresh" content="15">'
        f"<title>Is it them or me? · claude-status-exporter</title><style>{CSS}</style></head><body>"
        '<header><h1>Is it them or me?</h1><nav>'
        '<a href="/metrics">metrics</a><a href="/api/v1/status">status JSON</a>'
        '<a href="/-/healthy">health</a></nav></header><main>'
        f'<p class="muted">claude-status-exporter {escape(status["version"])}{vantage}{ready}</p>'
        + f'<div class="glance">{pills}</div>' + "".join(sections) + "</main></body></html>")
