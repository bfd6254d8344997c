"""The benchmark harness in its smallest mode (`python -m bench.run --quick`), so it cannot rot.

It runs the real thing: nginx, blackbox_exporter, wrk, the simulator and our exporter, all on
127.0.0.1. Nothing here judges speed (CI machines are shared and noisy); it checks that every
stage produced figures, that both exporters' probes really succeeded under load, that polite
polling shows in the simulator's counters, and that nothing the harness started outlives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, require_binary

pytestmark = pytest.mark.slow

STAGES = {"1 throughput", "2 accuracy", "3 scale", "4 footprint", "5 polite polling"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for binary in ("nginx", "wrk", "prometheus-blackbox-exporter"):
        require_binary(binary)
    work = tmp_path_factory.mktemp("bench")
    out = work / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--json", str(out),
                           "--workdir", str(work / "run")],
                          cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.read_text())
    results["stdout"] = done.stdout
    results["workdir"] = str(work / "run")
    return results


def rows(results: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in results["rows"] if r["section"] == section}


def test_every_stage_reports_figures_in_one_table(quick_run: dict[str, Any]) -> None:
    assert {r["section"] for r in quick_run["rows"]} == STAGES
    assert "ours/bb" in quick_run["stdout"]
    assert quick_run["machine"]["nproc"] and quick_run["machine"]["python"]


@pytest.mark.parametrize("module", ["http_2xx", "tcp_connect", "icmp"])
def test_both_exporters_succeed_under_load(quick_run: dict[str, Any], module: str) -> None:
    found = {name: row for name, row in rows(quick_run, "1 throughput").items()
             if name.startswith(f"{module}: probes/s")}
    assert set(found) == {f"{module}: probes/s, one process"}, found
    for row in found.values():
        assert row["ours"] > 0 and row["blackbox"] > 0, row  # only probe_success 1 counts
        assert row["ratio"] == pytest.approx(row["ours"] / row["blackbox"])
        assert not row["note"], row["note"]  # every answer said probe_success 1


def test_tcp_rows_show_the_kernels_own_limit(quick_run: dict[str, Any]) -> None:
    limits = {name: row for name, row in rows(quick_run, "1 throughput").items()
              if "kernel limit" in name}
    assert {name.split(":")[0] for name in limits} == {
        "tcp_connect", "tcp_connect over 9 target ports"}, limits
    for row in limits.values():  # a bare connect()+close() loop against the same targets
        assert row["ours"] > 0 and row["blackbox"] is None, row
        assert "of it" in row["note"], row


def test_accuracy_measures_both_exporters_against_the_100ms_target(quick_run: dict[str, Any]) -> None:
    found = rows(quick_run, "2 accuracy")
    p99 = found["100 ms target via /probe: error p99"]
    assert p99["ours"] is not None and p99["blackbox"] is not None
    assert 0 <= p99["ours"] < 1000 and 0 <= p99["blackbox"] < 1000  # milliseconds, not seconds
    target = found["the target's own delay error p99, ours running"]
    assert 0 <= target["ours"] < 1000 and 0 <= target["blackbox"] < 1000, target
    assert found["100 ms target as background check: error p99"]["ours"] is not None
    assert found["scheduler lag p99 (200 background checks)"]["ours"] is not None


def test_scale_reports_lag_memory_and_render_time(quick_run: dict[str, Any]) -> None:
    found = rows(quick_run, "3 scale")
    assert found["checks in one process"]["ours"] == 300
    for metric in ("scheduler lag p99", "RSS after the window (peak)", "GET /metrics with gzip, median"):
        assert found[metric]["ours"] is not None and found[metric]["ours"] > 0, metric
    assert any(name.startswith("render ") for name in found)


def test_footprint_compares_idle_rss(quick_run: dict[str, Any]) -> None:
    found = rows(quick_run, "4 footprint")
    copy = found["idle RSS, preset copy on loopback"]
    assert 10 < copy["ours"] < 1000 and 1 < copy["blackbox"] < 1000
    assert "10 checks, " in copy["note"]
    if os.geteuid() == 0:  # ICMP works, and the preset can run in a namespace
        assert "10 checks, 10 succeeding" in copy["note"]
        assert "idle RSS, bundled preset in an isolated netns" in found


def test_unchanged_status_page_polls_cost_no_body(quick_run: dict[str, Any]) -> None:
    found = rows(quick_run, "5 polite polling")
    not_modified = found["status page polls: 304 Not Modified"]
    assert not_modified["ours"] >= 1 and not_modified["met"] is True, not_modified


def test_nothing_outlives_the_harness(quick_run: dict[str, Any]) -> None:
    workdir = quick_run["workdir"]
    leftovers = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if workdir in cmdline:
            leftovers.append(cmdline)
    assert not leftovers
    if quick_run["namespaces"]:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=False).stdout.split()
        assert not set(quick_run["namespaces"]) & set(listed)
