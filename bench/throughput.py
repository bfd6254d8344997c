"""Goal 1: /probe throughput, ours against blackbox_exporter, same modules, same load.

wrk keeps a fixed number of connections busy against each exporter's /probe for each module;
only answers that report ``probe_success 1`` count. Rounds alternate which exporter goes first,
and the table shows the median over the rounds. The exporters' CPU time per probe is measured
too: the machine is shared. blackbox_exporter (Go) uses every core; ours is one process (one
event loop, aiohttp serving, prometheus_client writing each answer from a fresh registry). More
/probe capacity comes from more replicas (docs/deploy.md), so the goal is judged per process.
"""

from __future__ import annotations

from bench import ceiling
from bench.common import Context, Row, median
from bench.load import WrkResult, probe_url, wrk
from bench.procs import Proc
from bench.targets import OUR_MODULES, start_ours

GOAL = 1.0  # ours (one process) / blackbox


def targets(ctx: Context) -> dict[str, list[str]]:
    """Per row: the module and the targets its probes take in turn. Beyond the goal's three,
    tcp again over nginx's nine ports: at over 10,000 connections a second to one address and
    port, every local port is soon in TIME_WAIT for that destination and each connect() pays
    the kernel's search for a free one (docs/benchmarks.md); nine destinations spread it."""
    ports = [ctx.nginx.port, *ctx.nginx.extra_ports]
    return {
        "http_2xx": [ctx.nginx.url],
        "tcp_connect": [f"127.0.0.1:{ctx.nginx.port}"],
        "icmp": ["127.0.0.1"],
        f"tcp_connect over {len(ports)} target ports": [f"127.0.0.1:{p}" for p in ports],
    }


def run(ctx: Context, blackbox: Proc | None) -> list[Row]:
    ours, ours_url = start_ours(ctx.procs, OUR_MODULES, name="ours-probe")
    variants: dict[str, tuple[str, tuple[int, ...]]] = {"ours": (ours_url, (ours.pid,))}
    if ctx.plain_asyncio:
        plain, plain_url = start_ours(ctx.procs, OUR_MODULES, name="ours-asyncio",
                                      extra=("--runtime.event-loop=asyncio",))
        variants["ours+asyncio"] = (plain_url, (plain.pid,))
    if blackbox is not None and ctx.blackbox_url is not None:
        variants["blackbox"] = (ctx.blackbox_url, (blackbox.pid,))
    rows: list[Row] = []
    s = ctx.sizes
    for row, target_list in targets(ctx).items():
        module = row.split()[0]
        results: dict[str, list[WrkResult]] = {name: [] for name in variants}
        bare: list[float] = []  # tcp rows: the kernel's limit, measured between the same runs
        for round_ in range(s.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            if module == "tcp_connect":
                order.insert(round_ % (len(order) + 1), "bare")
            for name in order:
                if name == "bare":
                    bare.append(ceiling.measure(target_list, s.wrk_seconds)["connects_per_second"])
                    continue
                base, pids = variants[name]
                urls = [probe_url(base, module, t) for t in target_list]
                paths = [u[len(base):] for u in urls] if len(urls) > 1 else None
                results[name].append(wrk(urls[0], ctx.workdir, s.wrk_seconds,
                                         s.wrk_connections, pids, paths))
        rows.extend(_rows(row, results, goal=row == module))
        if bare:
            rows.append(_ceiling_row(row, median(bare), results))
    ctx.procs.stop(ours)
    return rows


def _ceiling_row(label: str, rate: float | None, results: dict[str, list[WrkResult]]) -> Row:
    """What the kernel allows: if it is below GOAL x blackbox, no prober can meet the goal."""
    rates = {name: median([r.probes_per_second for r in rs]) for name, rs in results.items()}
    bb = rates.get("blackbox")
    parts = []
    ours = rates.get("ours")
    if rate and ours:
        parts.append(f"ours, one process, runs at {ours / rate:.0%} of it")
    if rate and bb:
        parts.append(f"{GOAL:g}x blackbox would need {GOAL * bb:,.0f} /s "
                     f"({GOAL * bb / rate:.0%} of it)")
    return Row("1 throughput", f"{label}: kernel limit, a bare connect()+close() loop, "
               "no HTTP, no exporter", rate, None, "/s", note="; ".join(parts))


def _rows(module: str, results: dict[str, list[WrkResult]], goal: bool = True) -> list[Row]:
    def med(name: str, attr: str) -> float | None:
        values = [getattr(r, attr) for r in results.get(name, [])]
        return median([v for v in values if v is not None])

    bb_rate = med("blackbox", "probes_per_second")
    ours_rate = med("ours", "probes_per_second")
    failed = sum(r.bad for rs in results.values() for r in rs)
    ratio = ours_rate / bb_rate if ours_rate is not None and bb_rate else None
    rows = [
        Row("1 throughput", f"{module}: probes/s, one process", ours_rate, bb_rate, "/s",
            f">= {GOAL:g}x blackbox" if goal else "",
            None if ratio is None or not goal else ratio >= GOAL,
            f"{failed} answers without probe_success 1" if failed else ""),
        Row("1 throughput", f"{module}: CPU per probe, one process", med("ours", "cpu_us_per_probe"),
            med("blackbox", "cpu_us_per_probe"), "us"),
        Row("1 throughput", f"{module}: latency p99, one process", med("ours", "p99_ms"),
            med("blackbox", "p99_ms"), "ms"),
    ]
    if "ours+asyncio" in results:
        rows.insert(1, Row("1 throughput", f"{module}: probes/s, one process on plain asyncio",
                           med("ours+asyncio", "probes_per_second"), bb_rate, "/s"))
        rows.insert(3, Row("1 throughput", f"{module}: CPU per probe, one process on plain asyncio",
                           med("ours+asyncio", "cpu_us_per_probe"),
                           med("blackbox", "cpu_us_per_probe"), "us"))
    return rows
