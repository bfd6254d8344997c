"""The exporter's own HTTP surface under abuse: oversized requests, slow clients, many clients.

Every test runs the real console script and talks to it over raw loopback sockets or urllib.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import Exporter, Scrape, free_port, http_get

from exporter.server.app import MAX_BODY_BYTES
from exporter.server.probe import MAX_CONCURRENT

HEADER_TIMEOUT = 2.0  # --web.read-header-timeout for these tests


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback server that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def exporter(run_exporter, silent_port: int) -> Exporter:  # type: ignore[no-untyped-def]
    config = f"""\
control:
  - {{name: loopback, kind: tcp, target: "127.0.0.1:{free_port()}", interval: 5s, timeout: 1s}}
modules:
  silent: {{kind: http, timeout: 3s, allowed_targets: ["http://127.0.0.1:{silent_port}/*"]}}
"""
    return run_exporter(config, f"--web.read-header-timeout={HEADER_TIMEOUT:g}s")  # type: ignore[no-any-return]


def raw(exporter: Exporter, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    host, port = exporter.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(("name", "request_bytes"), [pytest.param(*case, id=case[0]) for case in [
    ("one header over 8 KiB", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"),
    ("a request line over 8 KiB", b"GET /metrics?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("more than 64 headers", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-H%d: 1\r\n" % i for i in range(80)) + b"\r\n"),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n"),
]])
def test_oversized_or_malformed_requests_are_4xx(exporter: Exporter, name: str,
                                                 request_bytes: bytes) -> None:
    response = raw(exporter, request_bytes)
    assert 400 <= status_of(response) < 500, (name, response[:200])
    assert exporter.scrape().value("exporter_build_info") == 1  # still serving


def test_a_body_over_the_limit_is_413_and_does_nothing(exporter: Exporter) -> None:
    before = exporter.scrape().value("exporter_config_last_reload_success_timestamp_seconds")
    body = b"x" * (MAX_BODY_BYTES + 1)
    head = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    response = raw(exporter, head % len(body) + body)
    assert status_of(response) == 413
    time.sleep(0.05)
    assert exporter.scrape().value("exporter_config_last_reload_success_timestamp_seconds") == before


def test_a_body_within_the_limit_is_ignored(exporter: Exporter) -> None:
    status, text = exporter.post("/-/reload", b"x" * 1000)
    assert status == 200, text


def slowloris(exporter: Exporter, request: bytes, period: float, limit: float) -> tuple[float, int]:
    """Send ``request`` one byte per ``period``; return (seconds until the server closed
    the connection, bytes sent by then)."""
    host, port = exporter.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(period)
    started = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - started < limit:
            try:
                s.send(request[sent % len(request):][:1])
                sent += 1
                if s.recv(1024) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        return time.monotonic() - started, sent
    finally:
        s.close()


def test_a_client_sending_headers_one_byte_at_a_time_is_cut_off(exporter: Exporter) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 200
    took, sent = slowloris(exporter, request, period=0.25, limit=HEADER_TIMEOUT + 8)
    assert took < HEADER_TIMEOUT + 2, f"still connected after {took:.1f}s ({sent} bytes)"
    assert sent > 3  # it really was dripping, not refused at once


def test_a_client_that_sends_nothing_is_cut_off(exporter: Exporter) -> None:
    host, port = exporter.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HEADER_TIMEOUT + 8) as s:
        started = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 2


def test_slow_clients_do_not_block_scrapes(exporter: Exporter) -> None:
    host, port = exporter.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(200)]
    try:
        for s in idle:
            s.send(b"GET /metrics HTTP/1.1\r\nHo")
        started = time.monotonic()
        assert exporter.scrape().value("exporter_build_info") == 1
        assert time.monotonic() - started < 1.0
    finally:
        for s in idle:
            s.close()


def test_keep_alive_connections_are_reused_within_the_header_timeout(exporter: Exporter) -> None:
    """A scraper that keeps its connection open between scrapes is not cut by the
    header timeout: it completed a request, so only the idle timeout applies."""
    host, port = exporter.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_TIMEOUT + 0.8)
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_hundred_parallel_scrapes_are_all_served(exporter: Exporter) -> None:
    def scrape(_: int) -> Scrape:
        status, body, _ = http_get(exporter.url + "/metrics", timeout=20)
        assert status == 200
        return Scrape.parse(body)

    with ThreadPoolExecutor(100) as pool:
        scrapes = list(pool.map(scrape, range(100)))
    assert len(scrapes) == 100
    for s in scrapes:
        assert s.value("exporter_build_info") == 1
        assert s.value("probe_runs_total", check="loopback") is not None


def test_probes_past_the_concurrency_limit_get_429(exporter: Exporter, silent_port: int) -> None:
    extra = 16
    url = f"{exporter.url}/probe?module=silent&target=http://127.0.0.1:{silent_port}/x"

    def one(_: int) -> tuple[int, str]:
        status, body, _ = http_get(url, timeout=20)
        return status, body

    with ThreadPoolExecutor(MAX_CONCURRENT + extra) as pool:
        results = list(pool.map(one, range(MAX_CONCURRENT + extra)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) <= MAX_CONCURRENT
    assert statuses.count(429) >= extra
    busy = next(body for status, body in results if status == 429)
    assert "too many probes" in busy
    assert http_get(url.replace("/x", "/y"), timeout=10)[0] == 200  # free again afterwards


def test_error_pages_carry_no_internals(exporter: Exporter) -> None:
    """Error pages carry no traceback or internals."""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(exporter.url + "/probe?module=%ff%fe&target=%00", timeout=5)
    body = err.value.read().decode(errors="replace")
    assert err.value.code == 400
    assert "Traceback" not in body and "File \"" not in body


# -- malformed request heads: aiohttp's parser answers 400, and nothing hidden in them runs -----

RELOAD = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("path", [b"/probe?module=silent&target=x", b"/metrics", b"/-/healthy"])
@pytest.mark.parametrize(("name", "head"), [pytest.param(*case, id=case[0]) for case in [
    ("HTTP/1.1 without Host", b"GET {path} HTTP/1.1\r\n\r\n"),
    ("two Host headers", b"GET {path} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("a space in a header name", b"GET {path} HTTP/1.1\r\nHost: x\r\nX Y: 1\r\n\r\n"),
    ("a control byte in a header name", b"GET {path} HTTP/1.1\r\nHost: x\r\nX\x01Y: 1\r\n\r\n"),
    ("bare LF line endings", b"GET {path} HTTP/1.1\nHost: x\n\n"),
]])
def test_malformed_request_heads_are_400(exporter: Exporter, name: str, head: bytes,
                                         path: bytes) -> None:
    response = raw(exporter, head.replace(b"{path}", path))
    assert status_of(response) == 400, (name, response[:300])


@pytest.mark.parametrize(("name", "smuggled"), [pytest.param(*case, id=case[0]) for case in [
    ("after a bare-LF head", b"GET /-/healthy HTTP/1.1\nHost: x\n\n" + RELOAD),
    ("behind a bare LF inside the head", b"GET /-/healthy HTTP/1.1\r\nHost: x\nX: 1\r\n\r\n" + RELOAD),
    ("in a body the head does not declare", b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n"
                                            b"Transfer-Encoding: chunked\nX: 1\r\n\r\n0\r\n\r\n"
                                            + RELOAD),
]])
def test_a_reload_hidden_in_a_malformed_request_does_not_run(exporter: Exporter, name: str,
                                                             smuggled: bytes) -> None:
    before = exporter.scrape().value("exporter_config_last_reload_success_timestamp_seconds")
    response = raw(exporter, smuggled)
    assert status_of(response) == 400, (name, response[:300])
    assert b"config reloaded" not in response
    time.sleep(0.05)  # a reload would have happened by now: it is synchronous once parsed
    after = exporter.scrape().value("exporter_config_last_reload_success_timestamp_seconds")
    assert after == before, name
    assert "config reloaded" not in exporter.log()


def test_pipelined_requests_behind_a_slow_probe_are_held_back(exporter: Exporter,
                                                             silent_port: int) -> None:
    """Requests pipelined behind a /probe that takes its whole timeout are not all read and
    queued: aiohttp stops reading the connection, so the sender's writes back up while the
    exporter keeps serving other connections."""
    host, port = exporter.url.removeprefix("http://").split(":")
    slow = (f"GET /probe?module=silent&target=http://127.0.0.1:{silent_port}/x HTTP/1.1\r\n"
            "Host: x\r\n\r\n").encode()
    filler = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" * 1000  # 38 KB per write
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        conn.sendall(slow)
        conn.setblocking(False)
        sent = 0
        for _ in range(2000):  # at most 76 MB: far more than the kernel's buffers hold
            try:
                sent += conn.send(filler)
            except BlockingIOError:
                break
        else:
            pytest.fail(f"the exporter read {sent} pipelined bytes without pausing")
        # Another connection is served while this one is held back.
        status, body, _ = http_get(exporter.url + "/-/healthy", timeout=5)
        assert status == 200 and body == "Healthy.\n"
    assert exporter.scrape().value("exporter_build_info") == 1
