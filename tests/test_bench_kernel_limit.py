"""The harness's measure of the kernel's own limit on new TCP connections, and its option to run
in a fresh network namespace with another ephemeral port range (docs/benchmarks.md)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Acceptor, require_binary, require_root

from bench import ceiling
from bench.common import local_port_range
from bench.run import port_range

PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    acceptor = Acceptor(backlog=4096)  # the loop connects faster than one thread accepts
    yield "127.0.0.1", acceptor.port
    acceptor.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_loop_counts_connections_it_really_made(listener: tuple[str, int]) -> None:
    result = ceiling.connect_loop([listener], 0.2)
    assert result["connects_per_second"] > 100 and result["failed"] == 0, result
    assert result["cpu_us_per_connect"] > 0


def test_refused_connections_do_not_count() -> None:
    result = ceiling.connect_loop([("127.0.0.1", closed_port())], 0.1)
    assert result["connects_per_second"] == 0 and result["failed"] > 0, result


def test_targets_are_taken_in_turn(listener: tuple[str, int]) -> None:
    result = ceiling.connect_loop([listener, ("127.0.0.1", closed_port())], 0.1)
    assert result["connects"] > 0 and result["connects"] == result["failed"], result


def test_measure_runs_the_loop_in_its_own_process(listener: tuple[str, int]) -> None:
    result = ceiling.measure([f"{listener[0]}:{listener[1]}"], 0.2)
    assert result["connects_per_second"] > 100 and result["failed"] == 0, result


@pytest.mark.parametrize("text, expected", [
    ("1024-65535", (1024, 65535)),
    ("32768-60999", (32768, 60999)),
    ("5000-5000", (5000, 5000)),
])
def test_port_range_accepts_low_high(text: str, expected: tuple[int, int]) -> None:
    assert port_range(text) == expected


@pytest.mark.parametrize("text", ["1024", "0-100", "1024-70000", "60000-1024", "a-b", "1024:65535", ""])
def test_port_range_rejects_anything_else(text: str) -> None:
    with pytest.raises(Exception, match="LOW-HIGH"):
        port_range(text)


def test_a_wider_port_range_applies_only_inside_a_fresh_namespace(tmp_path: Path) -> None:
    require_root()
    require_binary("ip")
    host_range = PORT_RANGE.read_text()
    out = tmp_path / "results.json"
    # the polite stage alone: the simulator and our exporter, a few seconds
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "polite",
                           "--local-port-range", "20000-40000", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["machine"]["local_ports"] == "20000-40000"
    assert "local_ports=20000-40000" in done.stdout
    assert [r for r in results["rows"] if r["section"] == "5 polite polling"]
    assert PORT_RANGE.read_text() == host_range  # the host's own setting is untouched
    assert local_port_range() == "-".join(host_range.split())


def test_a_bad_port_range_is_refused_before_anything_starts() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "polite",
                           "--local-port-range", "60000-1024"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--local-port-range" in done.stderr and "LOW-HIGH" in done.stderr
