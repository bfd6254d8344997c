"""What the stages share: the run's settings, result rows, statistics and scrape parsing."""

from __future__ import annotations

import math
import os
import statistics
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Procs
from bench.targets import Nginx


@dataclass(frozen=True)
class Sizes:
    """How big each stage is: the full run, or the CI smoke run (--quick)."""

    rounds: int = 3  # medians over this many rounds
    wrk_seconds: float = 5.0
    wrk_connections: int = 16
    accuracy_background: int = 2000
    accuracy_probes: int = 400  # per exporter
    scale_checks: int = 10_000
    scale_interval: float = 15.0
    scale_window: float = 30.0
    render_checks: tuple[int, ...] = (100, 1_000, 10_000)  # about 3.8k, 37k, 370k series
    footprint_settle: float = 20.0
    polite_seconds: float = 20.0


FULL = Sizes()
QUICK = Sizes(rounds=1, wrk_seconds=1.0, wrk_connections=8, accuracy_background=200,
              accuracy_probes=30, scale_checks=300, scale_interval=3.0, scale_window=4.0,
              render_checks=(32, 320), footprint_settle=4.0, polite_seconds=4.0)


@dataclass
class Row:
    """One line of the results table. ``ours``/``blackbox`` are numbers in ``unit``."""

    section: str
    metric: str
    ours: float | None
    blackbox: float | None = None
    unit: str = ""
    goal: str = ""
    met: bool | None = None  # None: no goal, or not measurable here
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.blackbox in (None, 0):
            return None
        assert self.blackbox is not None
        return self.ours / self.blackbox


@dataclass
class Context:
    procs: Procs
    sizes: Sizes
    nginx: Nginx
    blackbox_url: str | None  # None when blackbox_exporter is not installed
    plain_asyncio: bool = False  # also measure throughput on the standard asyncio loop
    notes: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # network namespaces it created

    @property
    def workdir(self) -> Path:
        return self.procs.workdir


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def scrape(url: str, timeout: float = 60.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
    return body.decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name`` (full sample name, e.g. ``x_bucket``) in an exposition."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), float(s.value)))
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    for found, v in samples(text, name):
        if all(found.get(k) == want for k, want in labels.items()):
            return v
    return None


def buckets(text: str, name: str) -> dict[float, float]:
    """A label-less histogram's cumulative buckets, ``le`` as float (+Inf included)."""
    return {float(lbl["le"]): v for lbl, v in samples(text, name + "_bucket")}


def bucket_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """histogram_quantile over the increase between two scrapes (linear within a bucket)."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # as Prometheus does: the highest finite bound
            span = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / span if span else 1.0)
        lower_le, lower_count = le, count
    return None


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    import platform

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "local_ports": local_port_range(),
    }


PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")  # this network namespace's


def local_port_range() -> str:
    """The ephemeral ports connect() picks from, as ``low-high``: a tcp prober's ceiling."""
    try:
        low, high = PORT_RANGE_FILE.read_text().split()
    except (OSError, ValueError):
        return "unknown"
    return f"{low}-{high}"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def python_env() -> dict[str, str]:
    """The environment for a Python child that must import ``bench`` and ``exporter``."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
