"""Goal 5: an unchanged status page costs no body bytes.

Our exporter polls the simulator's status page every second for a while; halfway through the
page changes once (the scenario switches to an incident). The simulator's own counters
(GET /_sim/stats) then say how many polls got a full 200 answer with a body and how many a
304 Not Modified without one: ideally two 200s (first poll, the change) and 304s otherwise.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

from bench.common import Context, Row, python_env
from bench.procs import free_port, wait_http
from bench.targets import start_ours


def run(ctx: Context) -> list[Row]:
    port = free_port()
    sim = ctx.procs.start("simulator-polite", [sys.executable, "-m", "exporter.simulator",
                                               f"--listen=127.0.0.1:{port}"], env=python_env())
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/_sim/scenario", sim)
    text = (f"upstreams:\n  claude:\n    statuspage: {{url: \"{base}/status\", interval: 1s, "
            f"timeout: 1s}}\n    checks: []\n")
    ours, _ = start_ours(ctx.procs, text, name="ours-polite")
    half = ctx.sizes.polite_seconds / 2
    time.sleep(half)
    _post(base + "/_sim/scenario", {"scenario": "major_outage"})
    time.sleep(half)
    ctx.procs.stop(ours)
    with urllib.request.urlopen(base + "/_sim/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    ctx.procs.stop(sim)
    page = {k: v for k, v in stats.items() if k.startswith("/status")}
    full = sum(v.get("responses_200", 0) for v in page.values())
    not_modified = sum(v.get("responses_304", 0) for v in page.values())
    body = sum(v.get("body_bytes", 0) for v in page.values())
    polls = sum(v.get("requests", 0) for v in page.values())
    per_page = body / full if full else 0.0
    return [
        Row("5 polite polling", "status page polls: 304 Not Modified", float(not_modified), None, "",
            "every unchanged poll", polls > 0 and full <= 2 and full + not_modified == polls,
            f"{polls} polls in {ctx.sizes.polite_seconds:g} s, {full} with a body (first poll, "
            f"one change); paths {', '.join(sorted(page))}"),
        Row("5 polite polling", "status page body bytes received", float(body), None, "B",
            note=f"without conditional requests: {polls * per_page:,.0f} B"),
    ]


def _post(url: str, payload: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
