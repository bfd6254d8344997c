"""Goal 1: /probe throughput, ours against blackbox_exporter, same modules, same load.

wrk keeps a fixed number of connections busy against each exporter's /probe for each module;
only answers that report ``probe_success 1`` count. Rounds alternate which exporter goes first,
and the table shows the median over the rounds. The exporters' CPU time per probe is measured
too: the machine is shared, and blackbox_exporter (Go) uses every core while ours runs on one.
"""

from __future__ import annotations

import sys

from bench.common import Context, Row, median
from bench.load import WrkResult, probe_url, wrk
from bench.procs import Proc
from bench.targets import OUR_MODULES, start_ours

GOAL = 1.5  # ours / blackbox


def targets(ctx: Context) -> dict[str, str]:
    return {
        "http_2xx": ctx.nginx.url,
        "tcp_connect": f"127.0.0.1:{ctx.nginx.port}",
        "icmp": "127.0.0.1",
    }


def run(ctx: Context, blackbox: Proc | None) -> list[Row]:
    ours, ours_url = start_ours(ctx.procs, OUR_MODULES, name="ours-probe")
    variants: dict[str, tuple[str, int]] = {"ours": (ours_url, ours.pid)}
    if ctx.uvloop:
        uv, uv_url = start_ours(ctx.procs, OUR_MODULES, name="ours-uvloop",
                                command=(sys.executable, "-m", "bench.uvloop_main"))
        variants["ours+uvloop"] = (uv_url, uv.pid)
    if blackbox is not None and ctx.blackbox_url is not None:
        variants["blackbox"] = (ctx.blackbox_url, blackbox.pid)
    rows: list[Row] = []
    s = ctx.sizes
    for module, target in targets(ctx).items():
        results: dict[str, list[WrkResult]] = {name: [] for name in variants}
        for round_ in range(s.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                base, pid = variants[name]
                results[name].append(wrk(probe_url(base, module, target), ctx.workdir,
                                         s.wrk_seconds, s.wrk_connections, (pid,)))
        rows.extend(_rows(module, results))
    ctx.procs.stop(ours)
    return rows


def _rows(module: str, results: dict[str, list[WrkResult]]) -> list[Row]:
    def med(name: str, attr: str) -> float | None:
        values = [getattr(r, attr) for r in results.get(name, [])]
        return median([v for v in values if v is not None])

    ours_rate, bb_rate = med("ours", "probes_per_second"), med("blackbox", "probes_per_second")
    failed = sum(r.bad for rs in results.values() for r in rs)
    ratio = ours_rate / bb_rate if ours_rate is not None and bb_rate else None
    rows = [
        Row("1 throughput", f"{module}: probes/s", ours_rate, bb_rate, "/s",
            f">= {GOAL:g}x blackbox", None if ratio is None else ratio >= GOAL,
            f"{failed} answers without probe_success 1" if failed else ""),
        Row("1 throughput", f"{module}: CPU per probe", med("ours", "cpu_us_per_probe"),
            med("blackbox", "cpu_us_per_probe"), "us"),
        Row("1 throughput", f"{module}: latency p99", med("ours", "p99_ms"),
            med("blackbox", "p99_ms"), "ms"),
    ]
    if "ours+uvloop" in results:
        rows.insert(1, Row("1 throughput", f"{module}: probes/s with uvloop",
                           med("ours+uvloop", "probes_per_second"), bb_rate, "/s"))
    return rows
