"""--runtime.event-loop: the exporter runs, checks and answers /probe on either event loop."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.engine import eventloop
from tests.conftest import EXPORTER

CONFIG = """\
upstreams:
  local:
    checks:
      - {{name: port, kind: tcp, target: "127.0.0.1:{port}", interval: 1s}}
modules:
  tcp_connect: {{kind: tcp, allowed_targets: ["127.0.0.1:*"]}}
"""


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.parametrize(("choice", "expected"), [
    ("asyncio", "asyncio"),
    ("uvloop", "uvloop"),
    ("auto", "uvloop"),  # uvloop is a dependency, so auto finds it
])
def test_the_exporter_runs_checks_and_probes_on_the_chosen_loop(
        run_exporter, listener: int, choice: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(CONFIG.format(port=listener), f"--runtime.event-loop={choice}",
                            "--log.format=json")
    exporter.wait_for(lambda s: s.value("probe_success", upstream="local", check="port") == 1)
    status, body, _ = exporter.get(f"/probe?module=tcp_connect&target=127.0.0.1:{listener}")
    assert status == 200 and "probe_success 1" in body, body
    assert f'"event_loop": "{expected}"' in exporter.log()


@pytest.mark.parametrize(("choice", "message"), [
    ("tokio", "invalid choice: 'tokio'"),
    ("", "invalid choice: ''"),
])
def test_an_unknown_loop_is_refused_at_start(tmp_path: Path, choice: str, message: str) -> None:
    done = subprocess.run([EXPORTER, f"--runtime.event-loop={choice}", "--config.check"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--runtime.event-loop" in done.stderr and message in done.stderr


@pytest.mark.parametrize(("choice", "factory_module"), [
    ("asyncio", None),
    ("uvloop", "uvloop"),
    ("auto", "uvloop"),
])
def test_loop_factory(choice: str, factory_module: str | None) -> None:
    factory = eventloop.loop_factory(choice)
    if factory_module is None:
        assert factory is None
    else:
        assert factory is not None and factory.__module__.startswith(factory_module)


def test_loop_factory_names_the_flag_for_an_unknown_choice() -> None:
    with pytest.raises(ValueError, match=r"--runtime.event-loop must be one of auto, uvloop, "
                                         r"asyncio \(got 'x'\)"):
        eventloop.loop_factory("x")
