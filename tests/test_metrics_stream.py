"""A large /metrics answer is streamed in pieces (web.STREAM_PIECE_BYTES) and stays one
consistent, valid exposition, with and without gzip."""

from __future__ import annotations

import gzip
import socket
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.web import STREAM_PIECE_BYTES
from tests.conftest import Scrape, require_binary

CHECKS = 300  # about 2.6 KB of series each: three pieces or more


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0), backlog=512) as server:
        yield server.getsockname()[1]


def config(port: int) -> str:
    lines = ["defaults: {interval: 1h, timeout: 2s}", "upstreams:", "  local:", "    checks:"]
    lines += [f'      - {{name: c{i}, kind: tcp, target: "127.0.0.1:{port}"}}'
              for i in range(CHECKS)]
    return "\n".join(lines) + "\n"


def fetch(url: str, gzipped: bool) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(response.headers), response.read()


@pytest.mark.parametrize(("gzipped", "encoding"), [(False, None), (True, "gzip")])
def test_a_large_scrape_is_complete_and_valid(run_exporter, listener: int, gzipped: bool,
                                              encoding: str | None) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(config(listener))  # ready: every check has run once
    headers, raw = fetch(exporter.url + "/metrics", gzipped)
    assert headers.get("Content-Encoding") == encoding
    body = gzip.decompress(raw) if gzipped else raw
    if not gzipped:
        assert int(headers["Content-Length"]) == len(body)
    assert len(body) > 2 * STREAM_PIECE_BYTES
    text = body.decode()
    assert text.endswith("\n")
    scrape = Scrape.parse(text)
    assert len(scrape.all("probe_success", upstream="local")) == CHECKS
    assert len(scrape.all("probe_latency_seconds_count", upstream="local")) == CHECKS
    promtool = require_binary("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_streamed_scrape_equals_the_same_scrape_in_one_piece(run_exporter,
                                                               listener: int) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(config(listener))
    _, plain = fetch(exporter.url + "/metrics", gzipped=False)
    _, packed = fetch(exporter.url + "/metrics", gzipped=True)
    # Nothing runs between the two scrapes (1h interval) except the exporter's own request
    # counters, so only exporter_* lines may differ.
    def series(body: bytes) -> list[str]:
        return [line for line in body.decode().splitlines() if not line.startswith("exporter_")]

    assert series(gzip.decompress(packed)) == series(plain)
