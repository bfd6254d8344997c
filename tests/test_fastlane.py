"""The /probe fast lane (exporter/fastlane.py): simple GET /probe requests are answered without
aiohttp; everything else goes, with its connection, to aiohttp unchanged. aiohttp's answers
carry a ``Server`` header and the lane's do not, which tells the tests who answered."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.fastlane import decode_query, parse

HEAD = b"GET /probe?module=tcp&target=127.0.0.1:9 HTTP/1.1\r\nHost: x"

PARSE = [
    ("a plain GET /probe", HEAD, True),
    ("HTTP/1.0", HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"), True),
    ("Content-Length: 0", HEAD + b"\r\nContent-Length: 0", True),
    ("POST", HEAD.replace(b"GET", b"POST"), False),
    ("another path", HEAD.replace(b"/probe?", b"/probex?"), False),
    ("a percent-encoded path", HEAD.replace(b"/probe?", b"/prob%65?"), False),
    ("HTTP/2 in the request line", HEAD.replace(b"HTTP/1.1", b"HTTP/2.0"), False),
    ("a body", HEAD + b"\r\nContent-Length: 3", False),
    ("chunked", HEAD + b"\r\nTransfer-Encoding: chunked", False),
    ("Expect", HEAD + b"\r\nExpect: 100-continue", False),
    ("Upgrade", HEAD + b"\r\nConnection: Upgrade\r\nUpgrade: websocket", False),
    ("an obsolete folded header", HEAD + b"\r\nX-A: 1\r\n  continued", False),
    ("a header without a colon", HEAD + b"\r\nnonsense", False),
    ("a space before the colon", HEAD + b"\r\nHost : x", False),
    ("a non-ASCII query", HEAD.replace(b"9 HTTP", b"9\xc3\xa9 HTTP"), False),
    ("a bad percent escape", HEAD.replace(b"tcp&", b"tcp%ff&"), False),
    ("65 headers", HEAD + b"\r\nX-A: 1" * 64, False),
    ("a header line over 8190 bytes", HEAD + b"\r\nX-A: " + b"a" * 8190, False),
    ("extra spaces in the request line", HEAD.replace(b"GET ", b"GET  "), False),
]


@pytest.mark.parametrize(("case", "head", "taken"), PARSE, ids=[p[0] for p in PARSE])
def test_the_lane_takes_only_simple_probe_requests(case: str, head: bytes, taken: bool) -> None:
    assert (parse(head) is not None) == taken, case


QUERIES = [
    (b"module=tcp&target=127.0.0.1%3A9", {"module": "tcp", "target": "127.0.0.1:9"}),
    (b"module=a&module=b", {"module": "a"}),  # the first value wins, as in aiohttp
    (b"module=&target", {"module": "", "target": ""}),
    (b"target=http%3A%2F%2Fh%2Fa+b", {"target": "http://h/a b"}),
]


@pytest.mark.parametrize(("query", "expected"), QUERIES)
def test_the_query_decodes_as_aiohttp_decodes_it(query: bytes, expected: dict[str, str]) -> None:
    request = parse(b"GET /probe?" + query + b" HTTP/1.1\r\nHost: x")
    assert request is not None and request.query == expected


CONNECTION = [
    (b"HTTP/1.1", b"", False),
    (b"HTTP/1.1", b"\r\nConnection: close", True),
    (b"HTTP/1.0", b"", True),
    (b"HTTP/1.0", b"\r\nConnection: keep-alive", False),
]


@pytest.mark.parametrize(("version", "header", "close"), CONNECTION)
def test_keep_alive_follows_the_version_and_the_connection_header(
        version: bytes, header: bytes, close: bool) -> None:
    request = parse(HEAD.replace(b"HTTP/1.1", version) + header)
    assert request is not None and request.close == close


# -- end to end ----------------------------------------------------------------------------------

CONFIG = """\
upstreams:
  local:
    checks:
      - {{name: port, kind: tcp, target: "127.0.0.1:{port}", interval: 1h}}
modules:
  tcp: {{kind: tcp, allowed_targets: ["127.0.0.1:*"]}}
"""


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server.getsockname()[1]


class Client:
    """A raw HTTP/1.1 connection that reads answers framed by Content-Length."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        return self.sock.recv(1) == b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection"
        self.buffer += data


def get(path: str, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    return f"GET {path} {version}\r\nHost: exporter{extra}\r\n\r\n".encode()


def test_probes_then_another_endpoint_then_probes_again_on_one_connection(
        run_exporter, listener: int) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(CONFIG.format(port=listener))
    client = Client(exporter.url)
    probe = f"/probe?module=tcp&target=127.0.0.1:{listener}"
    served_by_aiohttp = []
    for path in (probe, probe, "/metrics", probe):
        client.send(get(path))
        status, headers, body = client.answer()
        assert status == 200, body
        served_by_aiohttp.append("server" in headers)
        if path == probe:
            assert b"probe_success 1" in body
            assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    # The lane answered until /metrics; from there the connection belongs to aiohttp.
    assert served_by_aiohttp == [False, False, True, True]


def test_pipelined_probes_are_answered_in_order(run_exporter, listener: int) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(CONFIG.format(port=listener))
    client = Client(exporter.url)
    client.send(get(f"/probe?module=tcp&target=127.0.0.1:{listener}")
                + get("/probe?module=nope&target=x")
                + get("/probe?module=tcp&target=127.0.0.2:1"))
    answers = [client.answer() for _ in range(3)]
    assert [a[0] for a in answers] == [200, 400, 403]
    assert b"probe_success 1" in answers[0][2]
    assert answers[1][2] == b"unknown module 'nope'\n"


@pytest.mark.parametrize(("version", "extra", "closes"), [
    ("HTTP/1.0", "", True),
    ("HTTP/1.1", "\r\nConnection: close", True),
    ("HTTP/1.0", "\r\nConnection: keep-alive", False),
])
def test_the_lane_closes_when_the_client_asks(run_exporter, listener: int, version: str,
                                              extra: str, closes: bool) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(CONFIG.format(port=listener))
    client = Client(exporter.url)
    client.send(get(f"/probe?module=tcp&target=127.0.0.1:{listener}", version, extra))
    status, headers, _ = client.answer()
    assert status == 200 and "server" not in headers
    assert (headers.get("connection") == "close") == closes
    if closes:
        assert client.closed()
    else:
        client.send(get("/-/healthy"))
        assert client.answer()[0] == 200


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /probe?module=tcp&target=127.0.0.1:9 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
     405),
    (b"GET /probe?module=nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
])
def test_requests_the_lane_does_not_take_get_aiohttps_answer(
        run_exporter, listener: int, request_bytes: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(CONFIG.format(port=listener))
    client = Client(exporter.url)
    client.send(request_bytes)
    got, headers, _ = client.answer()
    assert got == status and "server" in headers


def test_a_connection_that_never_completes_a_head_is_closed(run_exporter, listener: int) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(CONFIG.format(port=listener), "--web.read-header-timeout=1s")
    client = Client(exporter.url)
    client.send(b"GET /probe?module=tcp HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
    client.sock.settimeout(5)
    assert client.closed()


@given(st.text(alphabet="ab=&%+2F3AcE9é", max_size=40))
@settings(max_examples=400, deadline=None)
def test_decode_query_agrees_with_parse_qsl(text: str) -> None:
    raw = text.encode("utf-8")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        assert decode_query(raw) is None
        return
    expected: dict[str, str] = {}
    for key, value in pairs:
        expected.setdefault(key, value)
    assert decode_query(raw) == expected
