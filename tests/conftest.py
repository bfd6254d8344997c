"""Shared fixtures: the real exporter as a subprocess, real scrapes, free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import CHECK_MODELS, CheckConfig, PolledCheck

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "statuspage"  # real captures: conformance tests only
OWN_FIXTURES = ROOT / "tests" / "fixtures"  # written by this project, in the real formats
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXPORTER = shutil.which("claude-status-exporter", path=str(Path(sys.executable).parent)) or "claude-status-exporter"
# For a subprocess given a bare environment: PYTHONPATH, when set, picks the checkout under test
# (the console script otherwise imports whichever checkout the package was installed from).
PYTHONPATH_ENV = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def require(condition: bool, why: str) -> None:
    """Skip locally when a real component is missing; under CI=true that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required component missing under CI: {why}")
    pytest.skip(why)


def require_shared() -> None:
    """Conformance tests read others' real captures from ../shared: required in CI, skipped
    with one line on a machine that has only the project."""
    require(SHARED.is_dir(), f"{SHARED} is absent: the conformance tests on real captures need it")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (see scripts/apt-packages.txt)")
    assert path is not None
    return path


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, raw sockets)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0, **headers: str) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers)


class Acceptor:
    """A loopback tcp target: accepts every connection and closes it."""

    def __init__(self, backlog: int = 512) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.accept()[0].close()
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def raw_exchange(url: str, raw: bytes, half_close: bool = False, timeout: float = 5.0) -> bytes:
    """Send ``raw`` bytes to the server at ``url`` and read until it closes the connection.
    ``half_close``: end our side right after sending, as a client that has nothing more to say."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reply = b""
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
    return reply


def http_post(url: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@dataclass
class Scrape:
    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                scrape.samples[(s.name, frozenset(s.labels.items()))] = s.value
        return scrape

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample whose labels include ``labels``; None if absent."""
        found = self.all(name, **labels)
        if not found:
            return None
        assert len(found) == 1, f"{name}{labels} matches {len(found)} series: {found}"
        return next(iter(found.values()))

    def all(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        want = set(labels.items())
        return {lbl: v for (n, lbl), v in self.samples.items() if n == name and want <= lbl}

    def one_hot(self, name: str, state_label: str, **labels: str) -> str:
        """The state whose series is 1 in a state set; asserts exactly one is."""
        on = [dict(lbl)[state_label] for lbl, v in self.all(name, **labels).items() if v == 1]
        assert len(on) == 1, f"{name}{labels}: expected one state at 1, got {on}"
        return on[0]


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    config_path: Path | None

    def scrape(self) -> Scrape:
        status, body, _ = http_get(self.url + "/metrics")
        assert status == 200, body
        return Scrape.parse(body)

    def get(self, path: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        return http_get(self.url + path, **headers)

    def post(self, path: str, body: bytes = b"") -> tuple[int, str]:
        return http_post(self.url + path, body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate, timeout: float = 20.0, interval: float = 0.1) -> Scrape:  # type: ignore[no-untyped-def]
        """Scrape until ``predicate(scrape)`` is true; fail with the last scrape otherwise."""
        deadline = time.monotonic() + timeout
        scrape = self.scrape()
        while not predicate(scrape):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; last scrape:\n"
                                     f"{scrape.text[-4000:]}\nlog:\n{self.log()[-3000:]}")
            time.sleep(interval)
            scrape = self.scrape()
        return scrape

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_exporter(tmp_path: Path, config: str | None = None, *args: str,
                   env: dict[str, str] | None = None, wait_ready: bool = True,
                   ready_timeout: float = 20.0) -> Exporter:
    """Run the real console script on a free loopback port."""
    port = free_port()
    cmd = [EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--log.level=debug"]
    config_path = None
    if config is not None:
        config_path = tmp_path / f"config-{port}.yml"
        config_path.write_text(config)
        cmd.append(f"--config.file={config_path}")
    cmd.extend(args)
    log_path = tmp_path / f"exporter-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    exporter = Exporter(proc, f"http://127.0.0.1:{port}", log_path, config_path)
    deadline = time.monotonic() + ready_timeout
    path = "/-/ready" if wait_ready else "/-/healthy"
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited with {proc.returncode}:\n{exporter.log()}")
        try:
            status, _, _ = http_get(exporter.url + path, timeout=1.0)
            if status == 200:
                return exporter
        except OSError:
            pass
        if time.monotonic() > deadline:
            exporter.stop(signal.SIGKILL)
            raise AssertionError(f"exporter not ready within {ready_timeout}s:\n{exporter.log()}")
        time.sleep(0.05)


@pytest.fixture
def run_exporter(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Factory: ``run_exporter(config_yaml, *extra_args, env=...)`` → Exporter; all stopped at the end."""
    started: list[Exporter] = []

    def factory(config: str | None = None, *args: str, **kwargs) -> Exporter:  # type: ignore[no-untyped-def]
        exporter = start_exporter(tmp_path, config, *args, **kwargs)
        started.append(exporter)
        return exporter

    yield factory
    for exporter in started:
        exporter.stop()


# -- the simulator as a subprocess (python -m exporter.simulator) --------------------------------


@dataclass
class SimulatorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def statuspage_url(self) -> str:
        return self.url + "/status"

    @property
    def incidentio_url(self) -> str:
        return self.url + "/incidentio"

    @property
    def anthropic_url(self) -> str:
        return self.url + "/anthropic"

    @property
    def openai_url(self) -> str:
        return self.url + "/openai"

    def set_scenario(self, name: str) -> None:
        status, body = http_post(f"{self.url}/_sim/scenario?name={name}")
        assert status == 200, body

    def stats(self) -> dict:  # type: ignore[type-arg]
        import json

        status, body, _ = http_get(self.url + "/_sim/stats")
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_simulator(tmp_path: Path, scenario: str = "operational", *args: str,
                    ready_timeout: float = 20.0) -> SimulatorProcess:
    port = free_port()
    log_path = tmp_path / f"simulator-{port}.log"
    cmd = [sys.executable, "-m", "exporter.simulator", f"--scenario={scenario}",
           f"--listen=127.0.0.1:{port}", *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    sim = SimulatorProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"simulator exited with {proc.returncode}:\n{sim.log()}")
        try:
            if http_get(sim.url + "/_sim/scenario", timeout=1.0)[0] == 200:
                return sim
        except OSError:
            pass
        if time.monotonic() > deadline:
            sim.stop()
            raise AssertionError(f"simulator not ready within {ready_timeout}s:\n{sim.log()}")
        time.sleep(0.05)


@pytest.fixture
def run_simulator(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Factory: ``run_simulator("degraded", "--slow-seconds=2")`` → SimulatorProcess; all
    stopped at the end."""
    started: list[SimulatorProcess] = []

    def factory(scenario: str = "operational", *args: str) -> SimulatorProcess:
        sim = start_simulator(tmp_path, scenario, *args)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


def build_check(upstream: str, name: str, kind: str, **fields: object) -> CheckConfig:
    """A check of ``kind`` made by hand: the kind's own model (PolledCheck for the status page
    and the witness feeds), as the loader would build it."""
    model = CHECK_MODELS.get(kind, PolledCheck)
    return model(upstream=upstream, name=name, kind=kind, **fields)  # type: ignore[arg-type, return-value]
