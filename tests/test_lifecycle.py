"""Start, reload, stop: the real exporter's lifecycle under faults.

SIGTERM with probes hanging on a server that never answers, a storm of SIGHUPs while the
config changes, startup with every upstream unreachable, sockets that must not leak, and a
short soak against the simulator cycling through every scenario (bench/soak.py).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Exporter, free_port, http_get

from bench.soak import format_report, run_soak
from exporter.cli import SHUTDOWN_GRACE

# Messages Python and aiohttp print for resources left behind at exit.
LEFTOVERS = ("Traceback", "Task was destroyed", "Unclosed", "ResourceWarning",
             "Exception ignored", "never awaited")


class Silent:
    """A loopback server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    def wait_for(self, connections: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.held) < connections:
            assert time.monotonic() < deadline, f"only {len(self.held)} connections arrived"
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def hanging_config(port: int) -> str:
    return f"""\
upstreams:
  hanging:
    statuspage: {{url: "http://127.0.0.1:{port}/", interval: 60s, timeout: 30s}}
    checks:
      - {{name: http, kind: http, url: "http://127.0.0.1:{port}/", interval: 60s, timeout: 30s}}
      - {{name: tls, kind: tls, target: "127.0.0.1:{port}", interval: 60s, timeout: 30s}}
      - {{name: api, kind: anthropic, url: "http://127.0.0.1:{port}", interval: 60s, timeout: 30s}}
modules:
  hang: {{kind: http, timeout: 30s, allowed_targets: ["http://127.0.0.1:{port}/*"]}}
"""


def stop_and_time(exporter: Exporter) -> float:
    started = time.monotonic()
    exporter.proc.send_signal(signal.SIGTERM)
    exporter.proc.wait(SHUTDOWN_GRACE + 10)
    return time.monotonic() - started


def assert_clean_exit(exporter: Exporter) -> None:
    assert exporter.proc.returncode == 0, exporter.log()
    log = exporter.log()
    for word in LEFTOVERS:
        assert word not in log, f"{word!r} in the log:\n{log[-3000:]}"
    port = int(exporter.url.rsplit(":", 1)[1])
    with socket.socket() as s:  # nothing listens there any more: the port binds at once
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
        s.bind(("127.0.0.1", port))


DEV_MODE = {"PYTHONDEVMODE": "1", "PYTHONWARNINGS": "always"}  # report every leftover resource


def test_sigterm_cancels_hanging_checks_at_once(run_exporter, silent: Silent) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(hanging_config(silent.port), wait_ready=False, env=DEV_MODE)
    silent.wait_for(4)  # the status page and three checks are all stuck mid-request
    took = stop_and_time(exporter)
    assert took < 2.0, f"SIGTERM took {took:.2f}s"
    assert_clean_exit(exporter)
    assert "shutting down" in exporter.log()


def test_sigterm_waits_for_an_inflight_probe_only_for_the_grace(run_exporter, silent: Silent) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(hanging_config(silent.port), wait_ready=False, env=DEV_MODE)
    silent.wait_for(4)
    answers: list[object] = []

    def probe() -> None:
        try:
            answers.append(http_get(f"{exporter.url}/probe?module=hang&target="
                                    f"http://127.0.0.1:{silent.port}/x", timeout=30)[0])
        except OSError as exc:  # the connection closes without an answer: also fine
            answers.append(exc)

    client = threading.Thread(target=probe)
    client.start()
    silent.wait_for(5)  # the probe's own connection is in
    took = stop_and_time(exporter)
    client.join(5)
    assert not client.is_alive() and answers
    assert took < SHUTDOWN_GRACE + 2.0, f"SIGTERM took {took:.2f}s"
    assert_clean_exit(exporter)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_abandoned_and_broken_connections_leak_no_descriptors(run_exporter, silent: Silent) -> None:  # type: ignore[no-untyped-def]
    config = f"""\
control:
  - {{name: loopback, kind: tcp, target: "127.0.0.1:{silent.port}", interval: 1s, timeout: 500ms}}
modules:
  hang: {{kind: http, timeout: 1s, allowed_targets: ["http://127.0.0.1:{silent.port}/*"]}}
"""
    exporter = run_exporter(config)
    host, port = "127.0.0.1", int(exporter.url.rsplit(":", 1)[1])
    for _ in range(3):
        exporter.scrape()
    baseline = fds(exporter.proc.pid)
    for i in range(60):
        with socket.create_connection((host, port)) as s:
            if i % 3 == 0:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a request, then gone
            elif i % 3 == 1:
                s.sendall(b"GET /probe?module=hang&target=http://127.0.0.1:%d/ HTTP/1.1\r\n"
                          b"Host: x\r\n\r\n" % silent.port)  # leave during the probe
            else:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # reset, not closed
    deadline = time.monotonic() + 10
    while fds(exporter.proc.pid) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fds(exporter.proc.pid) <= baseline + 2, (baseline, os.listdir(f"/proc/{exporter.proc.pid}/fd"))
    assert exporter.scrape().value("exporter_build_info") == 1


def storm_config(i: int) -> str:
    return f"""\
defaults: {{interval: {1 + i % 3}s, timeout: 500ms}}
control:
  - {{name: gen-{i}, kind: tcp, target: "127.0.0.1:{free_port()}"}}
  - {{name: steady, kind: tcp, target: "127.0.0.1:9"}}
"""


def test_a_storm_of_sighups_leaves_the_last_config(run_exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(storm_config(0))
    assert exporter.config_path is not None
    for i in range(1, 51):
        if i % 2:
            exporter.config_path.write_text(storm_config(i))  # in place: a reload may see half
        else:
            tmp = tmp_path / "next.yml"
            tmp.write_text(storm_config(i))
            tmp.replace(exporter.config_path)  # atomic, as a ConfigMap update is
        exporter.proc.send_signal(signal.SIGHUP)
        if i % 10 == 0:
            time.sleep(0.01)

    def settled(scrape) -> bool:  # type: ignore[no-untyped-def]
        checks = {dict(lbl)["check"] for lbl in scrape.all("probe_runs_total")}
        return checks == {"gen-50", "steady"} and scrape.value(
            "exporter_config_last_reload_successful") == 1

    scrape = exporter.wait_for(settled, timeout=10)
    assert exporter.proc.poll() is None
    assert scrape.value("exporter_checks") == 2
    status, body, _ = exporter.get("/api/v1/status")
    assert status == 200 and "gen-50" in body and "gen-49" not in body
    assert "Traceback" not in exporter.log()


def test_startup_with_every_upstream_unreachable(run_exporter) -> None:  # type: ignore[no-untyped-def]
    closed = free_port()
    config = f"""\
upstreams:
  claude:
    statuspage: {{url: "http://127.0.0.1:{closed}/", interval: 2s, timeout: 1s}}
    checks:
      - {{name: api, kind: anthropic, url: "http://127.0.0.1:{closed}", interval: 2s, timeout: 1s}}
      - {{name: tcp, kind: tcp, target: "127.0.0.1:{closed}", interval: 2s, timeout: 1s}}
      - {{name: tls, kind: tls, target: "127.0.0.1:{closed}", interval: 2s, timeout: 1s}}
control:
  - {{name: local, kind: tcp, target: "127.0.0.1:{closed}", interval: 2s, timeout: 1s}}
"""
    exporter = run_exporter(config)  # waits for /-/ready: the first round is done
    scrape = exporter.scrape()
    assert scrape.value("statuspage_poll_success", upstream="claude") == 0
    for check in ("api", "tcp", "tls"):
        assert scrape.value("probe_success", check=check) == 0
    assert scrape.value("probe_failures_total", check="tcp", reason="connect") == 1
    assert exporter.get("/-/healthy")[0] == 200
    assert exporter.get("/")[0] == 200
    assert exporter.proc.poll() is None


def test_short_soak_keeps_counters_monotonic_and_resources_flat(tmp_path: Path) -> None:
    report = run_soak(20.0, tmp_path, cycle_seconds=0.8, scrape_interval=0.5, reload_every=3.0)
    summary = format_report(report)
    assert report.scrapes >= 10, summary
    assert not report.errors, summary
    assert not report.violations, summary
    assert report.reloads >= 4, summary
    assert report.scenarios_seen >= 10, summary
    growth = report.growth()
    assert growth["fds"][1] - growth["fds"][0] <= 8, summary
    assert growth["tasks"][1] - growth["tasks"][0] <= 8, summary
