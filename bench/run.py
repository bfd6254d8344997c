"""``python -m bench.run [--quick]``: claude-status-exporter side by side with blackbox_exporter.

Everything runs on 127.0.0.1 (the bundled preset only in a network namespace without links) and
every stage is bounded in time and count. Prints one table of figures and ratios (ours /
blackbox) measured in this run; ``--json`` and ``--markdown`` write it to files as well.
Every child process is stopped on the way out, even on Ctrl-C.

Stages (``--only`` picks some): throughput (goal 1), accuracy (2), scale (3), footprint (4),
polite (5). The full run takes a few minutes; ``--quick`` is the CI smoke variant (under a
minute, tiny sizes, no claims about speed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import accuracy, footprint, polite, scale, throughput
from bench.common import FULL, QUICK, Context, Row, machine
from bench.procs import Procs, enter_fresh_netns
from bench.targets import blackbox_binary, start_blackbox, start_nginx

STAGES = ("throughput", "accuracy", "scale", "footprint", "polite")


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        if shutil.which(argv[0]) is None:
            return "not installed"
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"

    import aiohttp

    from exporter import __version__

    bb = blackbox_binary()
    return {
        "claude-status-exporter": __version__,
        "aiohttp": aiohttp.__version__,
        "blackbox_exporter": first_line([bb, "--version"]) if bb else "not installed",
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "--version"]),
    }


@contextlib.contextmanager
def signals_as_exit() -> Iterator[None]:
    """SIGTERM/SIGINT unwind the stack, so the ``with Procs`` block stops every child."""
    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, leave) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run(stages: tuple[str, ...], quick: bool, workdir: Path,
        plain_asyncio: bool) -> tuple[list[Row], Context]:
    sizes = QUICK if quick else FULL
    with Procs(workdir) as procs:
        need_tls = "footprint" in stages
        nginx = start_nginx(procs, extra_listeners=8, tls=need_tls)
        blackbox = None
        blackbox_url = None
        if blackbox_binary() is not None and {"throughput", "accuracy"} & set(stages):
            blackbox, blackbox_url = start_blackbox(procs)
        ctx = Context(procs, sizes, nginx, blackbox_url, plain_asyncio=plain_asyncio)
        if blackbox_binary() is None:
            ctx.notes.append("prometheus-blackbox-exporter is not installed: no ratios")
        steps: dict[str, Callable[[], list[Row]]] = {
            "throughput": lambda: throughput.run(ctx, blackbox),
            "accuracy": lambda: accuracy.run(ctx),
            "scale": lambda: scale.run(ctx),
            "footprint": lambda: footprint.run(ctx),
            "polite": lambda: polite.run(ctx),
        }
        rows: list[Row] = []
        for name in stages:
            started = time.monotonic()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            rows.extend(steps[name]())
            print(f"   {name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows, ctx


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row], markdown: bool = False) -> str:
    head = ("goal", "measure", "ours", "blackbox", "ours/bb", "target", "met", "notes")
    body = []
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r.met]
        unit = f" {r.unit}" if r.unit else ""
        body.append((r.section, r.metric, _num(r.ours) + unit,
                     _num(r.blackbox) + unit if r.blackbox is not None else "",
                     f"{r.ratio:.2f}x" if r.ratio is not None else "", r.goal, met, r.note))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]
    out = []
    for row in [head, *body]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        out.append("  ".join(cells) + "  " + row[-1])
    return "\n".join(out)


def port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        pair = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH, e.g. 1024-65535") from None
    if not sep or not 1 <= pair[0] <= pair[1] <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH within 1-65535")
    return pair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the CI smoke run: tiny, < 1 min")
    parser.add_argument("--only", default=",".join(STAGES),
                        help="comma-separated stages to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--asyncio", action="store_true",
                        help="add throughput rows for our exporter on the standard asyncio loop "
                             "(it runs on uvloop by default)")
    parser.add_argument("--local-port-range", type=port_range, metavar="LOW-HIGH",
                        help="run everything in a fresh network namespace (root) whose "
                             "ephemeral ports are LOW-HIGH, e.g. 1024-65535; the kernel's "
                             "default, 32768-60999, caps new connections to one address")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--workdir", type=Path,
                        help="where configs and logs go (kept); default: a temporary directory")
    args = parser.parse_args(argv)
    stages = tuple(s for s in args.only.split(",") if s)
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; pick from {', '.join(STAGES)}")
    if args.local_port_range is not None:
        enter_fresh_netns(args.local_port_range)
    keep = args.keep or args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with signals_as_exit():
            rows, ctx = run(stages, args.quick, workdir, args.asyncio)
    finally:
        if keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    took = time.monotonic() - started
    facts = {"machine": machine(), "versions": versions(), "quick": args.quick,
             "seconds": round(took), "notes": ctx.notes, "namespaces": ctx.namespaces}
    print()
    print(" ".join(f"{k}={v}" for k, v in facts["machine"].items()))
    print(table(rows))
    for note in ctx.notes:
        print(f"note: {note}")
    print(f"({'quick' if args.quick else 'full'} run, {took:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({**facts, "rows": [
            {**r.__dict__, "ratio": r.ratio} for r in rows]}, indent=2))
    if args.markdown:
        args.markdown.write_text(table(rows, markdown=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
