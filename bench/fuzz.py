"""``python -m bench.fuzz --minutes 5``: the properties of tests/test_hostile_input.py, run for
a time budget instead of hypothesis' default 100 examples.

Each property gets an equal share of the budget and runs in rounds of ``--round`` examples
with fresh random data (no example database), until its share is spent. The /probe property
talks to a real exporter started here on loopback. The round-2 shapes (lone surrogates,
nesting depth, huge numbers, a page's cardinality, addresses in allowed_targets patterns) are
properties of the same module and run here like the others. A failure is shrunk by hypothesis and
reported with its falsifying example; the exit status is 1 if any property failed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    name: str
    examples: int = 0
    rounds: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def properties(module: Any) -> dict[str, Callable[..., None]]:
    return {name: fn for name, fn in vars(module).items()
            if name.startswith("test_") and hasattr(fn, "hypothesis")}


def run(minutes: float, per_round: int, only: list[str], workdir: Path) -> list[Outcome]:
    # The profile must be loaded before the test module builds its own settings objects,
    # which inherit whatever is the default at that moment.
    settings.register_profile("fuzz", max_examples=per_round, deadline=None, database=None,
                              suppress_health_check=list(HealthCheck), print_blob=True)
    settings.load_profile("fuzz")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import conftest
    import test_hostile_input as props

    chosen = {n: f for n, f in properties(props).items() if not only or any(o in n for o in only)}
    exporter = None
    if any(needs_exporter(f) for f in chosen.values()):
        closed = conftest.free_port()
        exporter = conftest.start_exporter(workdir, props.probe_config(closed))
        exporter.closed_port = closed
    outcomes = []
    try:
        share = minutes * 60 / max(1, len(chosen))
        for name, fn in chosen.items():
            outcome = Outcome(name)
            outcomes.append(outcome)
            counted = _count(fn, outcome)
            kwargs = {"probe_exporter": exporter} if needs_exporter(fn) else {}
            started = time.monotonic()
            while time.monotonic() - started < share and not outcome.failures:
                out = io.StringIO()
                try:
                    with contextlib.redirect_stdout(out):
                        counted(**kwargs)
                except Exception as exc:  # a falsified property: keep its report
                    notes = "\n".join(getattr(exc, "__notes__", []))
                    outcome.failures.append(f"{exc.__class__.__name__}: {exc}\n{notes}\n"
                                            f"{out.getvalue()}{traceback.format_exc(limit=-3)}")
                outcome.rounds += 1
            outcome.seconds = time.monotonic() - started
            print(row(outcome), flush=True)
    finally:
        if exporter is not None:
            logged = [line for line in exporter.log().splitlines() if "Traceback (most recent call last)" in line]
            if logged:  # shown in full: the log goes with the temporary directory
                outcomes.append(Outcome("probe exporter log", failures=[
                    f"the exporter logged {len(logged)} traceback(s); the first:\n"
                    + logged[0].replace("\\n", "\n")]))
            exporter.stop()
    return outcomes


def needs_exporter(fn: Callable[..., None]) -> bool:
    """A property that talks to the real exporter started here (the ``probe_exporter`` fixture)."""
    return "probe_exporter" in fn.__code__.co_varnames


def _count(fn: Callable[..., None], outcome: Outcome) -> Callable[..., None]:
    inner = fn.hypothesis.inner_test  # type: ignore[attr-defined]

    @functools.wraps(inner)
    def counting(*args: Any, **kwargs: Any) -> None:
        outcome.examples += 1
        inner(*args, **kwargs)

    fn.hypothesis.inner_test = counting  # type: ignore[attr-defined]
    return fn


HEADER = f"{'property':<56} {'examples':>9} {'rounds':>6} {'seconds':>8} {'failures':>8}"


def row(o: Outcome) -> str:
    return f"{o.name:<56} {o.examples:>9} {o.rounds:>6} {o.seconds:>8.0f} {len(o.failures):>8}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="total budget (default 5)")
    parser.add_argument("--round", type=int, default=500, help="examples per round (default 500)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only properties whose name contains TEXT (repeatable)")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        outcomes = run(args.minutes, args.round, args.only, Path(tmp))
    total = sum(o.examples for o in outcomes)
    failed = [o for o in outcomes if o.failures]
    print(f"\n{total} examples in {sum(o.seconds for o in outcomes):.0f}s, "
          f"{len(failed)} propert{'y' if len(failed) == 1 else 'ies'} falsified")
    for o in failed:
        print(f"\n--- {o.name}\n{o.failures[0][:4000]}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
