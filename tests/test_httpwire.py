"""The hand-written HTTP/1.1 client under the http prober (exporter/checks/httpwire.py):
response framing and decoding, malformed answers, the requests it writes, redirect policy,
clean-up, and latency taken from the kernel's receive timestamps.

Servers are real and on loopback: an asyncio server that answers canned bytes, and, where the
event loop of the test must not be the server's, a small server in a subprocess.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import logging
import os
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvloop

from exporter import metrics as m
from exporter.checks import ProbeContext, Result
from exporter.checks.http import probe
from exporter.checks.httpcommon import HTTP_REASONS, MAX_BODY_BYTES
from exporter.config import CheckConfig
from tests.conftest import free_port

KEY = "tok-5Rw9-httpwire-test-key-0b1d"

# -- a server that answers canned bytes ---------------------------------------------------------------


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
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Coroutine[Any, Any, Raw]]]:
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
    return CheckConfig(upstream="control", name="wire", kind="http", url=url, **options)


async def run(check: CheckConfig, secret: str | None = None) -> Result:
    ctx = ProbeContext(session=None, logger=logging.getLogger("exporter.test.httpwire"),  # type: ignore[arg-type]
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
    ("deflate, raw", with_length(b"Content-Encoding: deflate\r\n", deflate(b"raw dfl", True)),
     "", 200, b"raw dfl"),
    ("gzip in chunks", OK + b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (gzip.compress(b"split")[:7],
                                                         gzip.compress(b"split")[7:])) + b"0\r\n\r\n",
     "", 200, b"split"),
    ("unknown coding passed through", with_length(b"Content-Encoding: zz\r\n", b"as is"),
     "", 200, b"as is"),
    ("interim 100 and 103 skipped",
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
     + with_length(b"", b"final"), "", 200, b"final"),
    ("204 has no body", b"HTTP/1.1 204 No Content\r\n\r\n", "", 204, b""),
    ("status line without a reason", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "", 200, b"ok"),
    ("malformed status line", b"HTTP/1.1 2x0 OK\r\n\r\n", "bad_response", 0, None),
    ("not HTTP at all", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "bad_response", 0, None),
    ("header line without a colon", OK + b"Content-Length 2\r\n\r\nok", "bad_response", 0, None),
    ("head over 64 KiB", OK + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", "bad_response", 0, None),
    ("conflicting Content-Length", OK + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok",
     "bad_response", 0, None),
    ("bad Content-Length", OK + b"Content-Length: -2\r\n\r\nok", "bad_response", 0, None),
    ("bad chunk size", OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     "bad_response", 200, None),
    ("no CRLF after a chunk", OK + b"Transfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
     "bad_response", 200, None),
    ("body cut short", OK + b"Content-Length: 10\r\n\r\nhalf", "bad_response", 200, None),
    ("chunked body cut short", OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel", "bad_response",
     200, None),
    ("head cut short", OK + b"Content-Len", "bad_response", 0, None),
    ("corrupt gzip", with_length(b"Content-Encoding: gzip\r\n", b"\x1f\x8bnot gzip at all"),
     "bad_response", 200, None),
    ("gzip cut short", with_length(b"Content-Encoding: gzip\r\n", gzip.compress(b"x" * 100)[:-6]),
     "bad_response", 200, None),
    ("gzip decoding past the cap", with_length(b"Content-Encoding: gzip\r\n", BOMB),
     "bad_response", 200, None),
    ("Content-Length past the cap", OK + b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
     "bad_response", 200, None),
    ("closed without a byte", b"", "connect", 0, None),
]


@pytest.mark.parametrize(("answer", "reason", "status", "body"),
                         [pytest.param(*case[1:], id=case[0]) for case in FRAMING])
async def test_response_framing(raw_server: Any, answer: bytes, reason: str, status: int,
                                body: bytes | None) -> None:
    server = await raw_server(lambda _seen: answer)
    result = await run(make_check(server.url + "/"))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == (reason, status), result.error
    assert reason in HTTP_REASONS or not reason
    if body is not None:
        assert gauge(result, m.PROBE_HTTP_CONTENT_LENGTH) == len(body)
        if body:
            check = make_check(server.url + "/", body_regex=f"^{body.decode()}$")
            assert (await run(check)).success


@pytest.mark.parametrize("answer", [
    pytest.param(b"HTTP/1.0 200 OK\r\n\r\nover tls", id="close-delimited"),
    pytest.param(OK + b"Transfer-Encoding: chunked\r\n\r\n8\r\nover tls\r\n0\r\n\r\n", id="chunked"),
    pytest.param(with_length(b"Content-Encoding: gzip\r\n", gzip.compress(b"over tls")), id="gzip"),
])
async def test_framing_over_tls(raw_server: Any, tmp_path: Any, answer: bytes) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = await raw_server(lambda _seen: answer, context)
    url = f"https://127.0.0.1:{server.port}/"
    result = await run(make_check(url, ca_file=str(tmp_path / "ca.pem"), body_regex="^over tls$"))
    assert result.success, result.error
    assert gauge(result, m.PROBE_HTTP_SSL) == 1
    assert phases(result)["tls"] > 0


async def test_version_of_an_http_1_0_answer(raw_server: Any) -> None:
    server = await raw_server(lambda _seen: b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    result = await run(make_check(server.url + "/"))
    assert gauge(result, m.PROBE_HTTP_VERSION) == 1.0


# -- the request it writes ------------------------------------------------------------------------------


def answer_ok(_seen: Seen) -> bytes:
    return with_length(b"", b"ok")


@pytest.mark.parametrize(("options", "expected"), [
    ({}, {"request_line": "GET /path?q=1 HTTP/1.1", "connection": "close",
          "accept-encoding": "gzip, deflate", "content-length": None}),
    ({"method": "POST", "body": "payload"},
     {"request_line": "POST /path?q=1 HTTP/1.1", "content-length": "7", "body": "payload",
      "content-type": "application/octet-stream"}),
    ({"method": "POST"}, {"content-length": "0", "body": ""}),
    ({"headers": {"user-agent": "mine/1", "Host": "virtual.test"}},
     {"user-agent": "mine/1", "host": "virtual.test"}),
    ({"headers": {"Connection": "keep-alive", "Content-Length": "99"}},
     {"connection": "close", "content-length": None}),
])
async def test_request_head(raw_server: Any, options: dict[str, Any], expected: dict[str, Any]) -> None:
    server = await raw_server(answer_ok)
    result = await run(make_check(server.url + "/path?q=1", **options))
    assert result.success, result.error
    (seen,) = server.seen
    assert seen.header("host") == expected.get("host", f"127.0.0.1:{server.port}")
    for name, value in expected.items():
        if name == "request_line":
            assert seen.request_line == value
        elif name == "body":
            assert seen.body.decode() == value
        elif name != "host":
            assert seen.header(name) == value, name
    assert (seen.header("user-agent") or "").startswith(expected.get("user-agent", "claude-status-exporter/"))


async def test_a_path_with_spaces_and_non_ascii_is_percent_encoded(raw_server: Any) -> None:
    server = await raw_server(answer_ok)
    assert (await run(make_check(server.url + "/a b/é"))).success
    assert server.seen[0].request_line == "GET /a%20b/%C3%A9 HTTP/1.1"


# -- redirects -------------------------------------------------------------------------------------------


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
async def test_redirect_method_and_body(raw_server: Any, status: int, method: str, body: str | None,
                                        followed_with: str) -> None:
    server = await raw_server(redirect_to(b"/end", status))
    result = await run(make_check(server.url + "/start", method=method, body=body,
                                  body_regex="^" + followed_with))
    assert result.success, result.error
    assert gauge(result, m.PROBE_HTTP_REDIRECTS) == 1


@pytest.mark.parametrize(("location", "reason", "status", "redirects"), [
    (b"end", "", 200, 1),  # relative to /start/here
    (b"../end?x=1", "", 200, 1),
    (b"ftp://127.0.0.1/x", "bad_response", 0, 1),
    (b"http://[bad", "bad_response", 0, 1),
])
async def test_redirect_locations(raw_server: Any, location: bytes, reason: str, status: int,
                                  redirects: int) -> None:
    server = await raw_server(redirect_to(location))
    result = await run(make_check(server.url + "/start/here"))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == (reason, status), result.error
    assert gauge(result, m.PROBE_HTTP_REDIRECTS) == redirects


async def test_a_redirect_without_location_is_the_answer(raw_server: Any) -> None:
    server = await raw_server(lambda _seen: b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")
    result = await run(make_check(server.url + "/"))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == ("status_mismatch", 302)


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Token"])
@pytest.mark.parametrize("same_origin", [True, False])
async def test_the_key_stays_with_its_origin(raw_server: Any, header: str, same_origin: bool) -> None:
    final = await raw_server(answer_ok)
    target = f"{final.url}/end" if not same_origin else "/end"
    first = await raw_server(redirect_to(target.encode()))
    result = await run(make_check(first.url + "/start", api_key_env="K", api_key_header=header), KEY)
    assert result.success, result.error
    followed = (first.seen if same_origin else final.seen)[-1]
    assert followed.request_line.startswith("GET /end")
    assert (KEY in (followed.header(header) or "")) is same_origin


# -- clean-up -----------------------------------------------------------------------------------------------

SERVER = r"""
import socket, socketserver, struct, time

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        # The request's arrival is the kernel's receive timestamp, so this server's own
        # scheduling delays do not count in the delay it reports.
        self.request.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
        data, received = b"", time.time()
        while b"\r\n\r\n" not in data:
            chunk, ancillary, _, _ = self.request.recvmsg(65536, socket.CMSG_SPACE(16))
            if not chunk:
                return
            data += chunk
            for _level, _kind, stamp in ancillary:
                seconds, nanos = struct.unpack("qq", stamp)
                received = seconds + nanos / 1e9
        path = data.split(b" ", 2)[1].decode()
        if path.startswith("/delay/"):
            until = received + int(path.split("?")[0].split("/")[2]) / 1000
            while time.time() < until - 0.002:
                time.sleep(0.001)
            while time.time() < until:
                pass
        sent = time.time()
        try:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            return  # the client gave up
        print(path, sent - received, flush=True)  # the delay as this server measured it

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

with Server(("127.0.0.1", 0), Handler) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
"""


@pytest.fixture(scope="module")
def delay_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A server in its own process, so a blocked event loop here cannot delay it; it prints
    each path and how long its answer took from reading the request to writing the response."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}", proc
    proc.kill()
    proc.wait()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_probes_leave_no_descriptors_and_no_reference_cycles(
        delay_server: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = delay_server
    checks = [make_check(url + "/"), make_check(f"http://127.0.0.1:{free_port()}/"),
              make_check(url + "/delay/3000", timeout=0.2)]
    for check in checks:  # warm up (imports, caches)
        await run(check)
    gc.collect()
    before = open_fds()
    gc.disable()
    try:
        results = [await run(check) for _ in range(10) for check in checks]
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert [r.reason for r in results[:3]] == ["", "connect", "timeout"]
    assert unreachable == 0
    assert open_fds() == before


async def test_a_cancelled_probe_closes_its_connection(
        delay_server: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = delay_server
    before = open_fds()
    task = asyncio.ensure_future(run(make_check(url + "/delay/3000")))
    await asyncio.sleep(0.1)  # the request is out, the answer is far away
    assert open_fds() == before + 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_fds() == before


# -- timing from kernel receive timestamps ---------------------------------------------------------

DELAY_MS = 50
STALL = 0.040  # the event loop is blocked from 30 ms to 70 ms: across the answer at ~50 ms


@dataclass
class Stalled:
    result: Result
    started: float
    wall: float  # seconds the probe took by the clock on the wall
    stall: tuple[float, float]  # when the event loop was blocked


async def probe_through_a_stall(url: str) -> Stalled:
    window: list[float] = []

    def block() -> None:
        window.append(time.perf_counter())
        time.sleep(STALL)
        window.append(time.perf_counter())

    asyncio.get_running_loop().call_later(0.030, block)
    started = time.perf_counter()
    result = await run(make_check(url))
    wall = time.perf_counter() - started
    await asyncio.sleep(STALL)  # the stall is over whatever happened
    return Stalled(result, started, wall, (window[0], window[1]))


def served_delay(proc: subprocess.Popen[str], path: str) -> float:
    assert proc.stdout is not None
    while True:
        seen, delay = proc.stdout.readline().split()
        if seen == path:
            return float(delay)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_blocked_event_loop_does_not_inflate_the_latency(
        delay_server: tuple[str, subprocess.Popen[str]], loop: str) -> None:
    url, proc = delay_server
    runner = asyncio.run if loop == "asyncio" else uvloop.run
    for attempt in range(5):  # a busy machine may delay the server past the stall: try again
        path = f"/delay/{DELAY_MS}?loop={loop}&attempt={attempt}"
        outcome = runner(probe_through_a_stall(url + path))
        served = served_delay(proc, path)
        answered = outcome.started + outcome.result.duration_seconds
        if outcome.stall[0] < answered < outcome.stall[1]:
            break
    else:
        pytest.fail("the answer never arrived while the event loop was blocked")
    assert outcome.result.success, outcome.result.error
    waited = phases(outcome.result)["processing"]
    assert abs(waited - served) < 0.002, (waited, served)
    # The probe's wall time grew by the rest of the stall; the reported duration did not.
    assert outcome.wall > outcome.result.duration_seconds + 0.010, (outcome.wall, outcome.result.duration_seconds)
    assert outcome.result.duration_seconds < served + 0.010, (outcome.result.duration_seconds, served)
