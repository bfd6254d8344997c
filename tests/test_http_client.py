"""The one HTTP client (exporter/checks/net/httpclient.py) under the http prober, against servers
that answer raw bytes: what a user agent must accept (obs-fold, bare LF, big heads), what it
must refuse (and with which reason), HTTP/2-only servers, redirects and credentials."""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trustme

from exporter import metrics as m
from exporter.checks.base import ProbeContext, Result
from exporter.checks.http import probe
from exporter.checks.httpcommon import HTTP_REASONS, MAX_BODY_BYTES
from exporter.config import CheckConfig, TlsConfig
from tests.conftest import build_check

KEY = "tok-5Rw9-httpclient-test-key-0b1d"

# -- a server that answers canned bytes ------------------------------------------------------------


@dataclass
class Seen:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return None


@dataclass
class Raw:
    """Answers every request with ``answer(request)`` and closes; records the requests."""

    answer: Callable[[Seen], bytes]
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            seen = Seen(head, b"")
            length = int(seen.header("content-length") or 0)
            seen.body = await reader.readexactly(length) if length else b""
            self.seen.append(seen)
            writer.write(self.answer(seen))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


RawFactory = Callable[..., Coroutine[Any, Any, Raw]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawFactory]:
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[Seen], bytes], tls: ssl.SSLContext | None = None) -> Raw:
        raw = Raw(answer)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=tls)
        raw.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return raw

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def make_check(url: str, **options: Any) -> CheckConfig:
    options.setdefault("timeout", 3.0)
    return build_check(upstream="control", name="wire", kind="http", url=url, **options)


async def run(check: CheckConfig, secret: str | None = None) -> Result:
    ctx = ProbeContext(session=None, logger=logging.getLogger("exporter.test.httpclient"),  # type: ignore[arg-type]
                       secret=lambda _check: secret)
    return await probe(check, ctx)


def gauge(result: Result, spec: m.MetricSpec, **labels: str) -> float:
    (found,) = [s.value for s in result.gauges if s.metric == spec and dict(s.labels) == labels]
    return found


def phases(result: Result) -> dict[str, float]:
    return {s.labels["phase"]: s.value for s in result.gauges if s.metric == m.PROBE_HTTP_DURATION}


# -- framing, decoding and malformed answers ----------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\n"
BOMB = gzip.compress(b"\0" * (MAX_BODY_BYTES + 1))


def deflate(data: bytes, raw: bool) -> bytes:
    packer = zlib.compressobj(wbits=-15 if raw else 15)
    return packer.compress(data) + packer.flush()


def with_length(headers: bytes, body: bytes) -> bytes:
    return OK + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


MANY_HEADERS = b"".join(b"X-Filler-%03d: %s\r\n" % (i, b"f" * 1000) for i in range(70))  # 70 KiB

FRAMING: list[tuple[str, bytes, str, int, bytes | None]] = [
    # (case, the whole answer, reason, probe_http_status_code, the body it must yield)
    ("content-length", with_length(b"", b"hello"), "", 200, b"hello"),
    ("chunked with extension and trailer",
     OK + b"Transfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
     "", 200, b"hello world"),
    ("close-delimited", b"HTTP/1.0 200 OK\r\n\r\nhello to the end", "", 200, b"hello to the end"),
    ("gzip", with_length(b"Content-Encoding: gzip\r\n", gzip.compress(b"zipped")), "", 200, b"zipped"),
    ("deflate, zlib-wrapped", with_length(b"Content-Encoding: deflate\r\n", deflate(b"dfl", False)),
     "", 200, b"dfl"),
    ("interim 100 skipped", b"HTTP/1.1 100 Continue\r\n\r\n" + with_length(b"", b"final"),
     "", 200, b"final"),
    ("204 has no body", b"HTTP/1.1 204 No Content\r\n\r\n", "", 204, b""),
    ("status line without a reason", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "", 200, b"ok"),
    # RFC 9112 section 5.2: a user agent must accept a folded line (obs-fold).
    ("obs-fold", OK + b"X-Folded: one\r\n two\r\nContent-Length: 2\r\n\r\nok", "", 200, b"ok"),
    # RFC 9112 section 2.2: a recipient may accept a bare LF as a line end; browsers do.
    ("bare LF", b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok", "", 200, b"ok"),
    ("a 70 KiB head", OK + MANY_HEADERS + b"Content-Length: 2\r\n\r\nok", "", 200, b"ok"),
    ("a 16 KiB header", OK + b"Set-Cookie: c=" + b"a" * 16 * 1024 + b"\r\nContent-Length: 2\r\n\r\nok",
     "", 200, b"ok"),
    ("a header over the 64 KiB limit", OK + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
     "bad_response", 0, None),
    ("more than 200 header fields", OK + b"".join(b"X-%d: 1\r\n" % i for i in range(201))
     + b"Content-Length: 2\r\n\r\nok", "bad_response", 0, None),
    ("malformed status line", b"HTTP/1.1 2x0 OK\r\n\r\n", "bad_response", 0, None),
    ("not HTTP at all", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "bad_response", 0, None),
    ("conflicting Content-Length", OK + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok",
     "bad_response", 0, None),
    ("body cut short", OK + b"Content-Length: 10\r\n\r\nhalf", "bad_response", 200, None),
    ("chunked body cut short", OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel", "bad_response",
     200, None),
    ("corrupt gzip", with_length(b"Content-Encoding: gzip\r\n", b"\x1f\x8bnot gzip at all"),
     "bad_response", 200, None),
    ("gzip decoding past the cap", with_length(b"Content-Encoding: gzip\r\n", BOMB),
     "bad_response", 200, None),
    ("closed without a byte", b"", "connect", 0, None),
]


@pytest.mark.parametrize(("answer", "reason", "status", "body"),
                         [pytest.param(*case[1:], id=case[0]) for case in FRAMING])
async def test_response_framing(raw_server: RawFactory, answer: bytes, reason: str, status: int,
                                body: bytes | None) -> None:
    server = await raw_server(lambda _seen: answer)
    result = await run(make_check(server.url + "/"))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == (reason, status), result.error
    assert reason in HTTP_REASONS or not reason
    if body is not None:
        assert gauge(result, m.PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH) == len(body)
        if body:
            check = make_check(server.url + "/", body_regex=f"^{body.decode()}$")
            assert (await run(check)).success


async def test_version_of_an_http_1_0_answer(raw_server: RawFactory) -> None:
    server = await raw_server(lambda _seen: b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    result = await run(make_check(server.url + "/"))
    assert gauge(result, m.PROBE_HTTP_VERSION) == 1.0


# -- HTTP/2-only servers ------------------------------------------------------------------------------


def h2_answer(_seen: Seen) -> bytes:
    """What an h2 server sends to an HTTP/1.1 request: its SETTINGS, then GOAWAY."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn.close_connection(error_code=1)
    return conn.data_to_send()


async def h2_handshake_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real h2 server loop (the h2 package): it reads the client's bytes and answers them."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    try:
        data = await asyncio.wait_for(reader.read(65536), 2)
        try:
            conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            conn.close_connection(error_code=1)
        writer.write(conn.data_to_send())
        await writer.drain()
    except (ConnectionError, TimeoutError, ssl.SSLError):
        pass
    finally:
        writer.close()


@pytest.fixture
def h2_tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["h2"])  # offers only HTTP/2
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return context, str(tmp_path / "ca.pem")


async def test_an_http2_only_server_over_tls_is_http2_only(h2_tls: tuple[ssl.SSLContext, str]) -> None:
    context, ca_file = h2_tls
    server = await asyncio.start_server(h2_handshake_only, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await run(make_check(f"https://127.0.0.1:{port}/", tls=TlsConfig(ca_file=ca_file)))
    finally:
        server.close()
        await server.wait_closed()
    assert (result.success, result.reason) == (False, "http2_only"), result.error
    assert "HTTP/2" in result.error


async def test_an_http2_prior_knowledge_server_is_http2_only(raw_server: RawFactory) -> None:
    server = await raw_server(h2_answer)
    result = await run(make_check(server.url + "/"))
    assert (result.success, result.reason) == (False, "http2_only"), result.error


# -- redirects ------------------------------------------------------------------------------------------


def redirect_to(location: bytes, status: int = 302) -> Callable[[Seen], bytes]:
    def answer(seen: Seen) -> bytes:
        if seen.request_line.split()[1] in ("/start", "/start/here"):
            return b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location)
        return with_length(b"", seen.request_line.encode() + b" " + seen.body)
    return answer


@pytest.mark.parametrize(("status", "method", "body", "followed_with"), [
    (302, "GET", None, "GET /end "),
    (303, "POST", "data", "GET /end "),  # a 303 becomes a GET without the body
    (302, "POST", "data", "GET /end "),  # as browsers and aiohttp do
    (301, "PUT", "data", "PUT /end HTTP/1.1 data"),
    (307, "POST", "data", "POST /end HTTP/1.1 data"),
    (308, "POST", "data", "POST /end HTTP/1.1 data"),
])
async def test_redirect_method_and_body(raw_server: RawFactory, status: int, method: str,
                                        body: str | None, followed_with: str) -> None:
    server = await raw_server(redirect_to(b"/end", status))
    result = await run(make_check(server.url + "/start", method=method, body=body,
                                  body_regex="^" + followed_with))
    assert result.success, result.error
    assert gauge(result, m.PROBE_HTTP_REDIRECTS) == 1


@pytest.mark.parametrize(("location", "reason", "status"), [
    (b"end", "", 200),  # relative to /start/here
    (b"../end?x=1", "", 200),
    (b"ftp://127.0.0.1/x", "bad_response", 302),
])
async def test_redirect_locations(raw_server: RawFactory, location: bytes, reason: str,
                                  status: int) -> None:
    server = await raw_server(redirect_to(location))
    result = await run(make_check(server.url + "/start/here"))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == (reason, status), result.error


async def test_a_redirect_loop_reports_the_last_status(raw_server: RawFactory) -> None:
    server = await raw_server(lambda _seen: b"HTTP/1.1 302 Found\r\nLocation: /again\r\n"
                                            b"Content-Length: 0\r\n\r\n")
    result = await run(make_check(server.url + "/"))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == ("status_mismatch", 302)
    assert gauge(result, m.PROBE_HTTP_REDIRECTS) == 10


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Token"])
@pytest.mark.parametrize("same_origin", [True, False])
async def test_the_key_stays_with_its_origin(raw_server: RawFactory, header: str,
                                             same_origin: bool) -> None:
    final = await raw_server(lambda _seen: with_length(b"", b"ok"))
    target = f"{final.url}/end" if not same_origin else "/end"
    first = await raw_server(redirect_to(target.encode()))
    result = await run(make_check(first.url + "/start", api_key_env="K", api_key_header=header), KEY)
    assert result.success, result.error
    followed = (first.seen if same_origin else final.seen)[-1]
    assert followed.request_line.startswith("GET /end")
    assert (KEY in (followed.header(header) or "")) is same_origin


# -- clean-up ---------------------------------------------------------------------------------------


async def test_a_cancelled_probe_closes_its_connection() -> None:
    """The scheduler cancels a run at its timeout: the connection must not outlive it."""
    closed = asyncio.Event()
    arrived = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await reader.read()  # returns b"" once the client closes
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        task = asyncio.ensure_future(run(make_check(f"http://127.0.0.1:{port}/", timeout=30.0)))
        await asyncio.wait_for(arrived.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
