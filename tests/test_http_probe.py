"""The blackbox-like http prober against small real servers on loopback (plain and TLS)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from exporter import metrics as m
from exporter.checks.base import ProbeContext, Result
from exporter.checks.http import json_path_exists, probe
from exporter.checks.httpcommon import HTTP_REASONS, MAX_BODY_BYTES
from exporter.checks.net.httpclient import PHASES, Clients
from exporter.config import CheckConfig, HeaderMatch, JsonCondition, TlsConfig
from tests.conftest import ROOT, build_check, require, require_binary

KEY = "tok-7Hq2-known-http-test-key-91c4e0"


@dataclass
class Server:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)  # request headers, in order


def build_app(seen: list[dict[str, str]]) -> web.Application:
    async def record(request: web.Request) -> None:
        seen.append(dict(request.headers))

    async def status(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def text(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="hello world OK")

    async def doc(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"data": [{"id": "x", "v": None}], "status": "ok"})

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(text="arrived")
        raise web.HTTPFound(f"/redirect/{left - 1}")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def echo(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text=f"{request.method}:{await request.text()}")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)  # twice the test's timeout
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        block = b"x" * (1 << 20)
        for _ in range(MAX_BODY_BYTES // len(block) + 2):
            await resp.write(block)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/text", text)
    app.router.add_get("/json", doc)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    return app


async def serve(ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, Server]:
    seen: list[dict[str, str]] = []
    runner = web.AppRunner(build_app(seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    return runner, Server(f"{scheme}://localhost:{port}", seen)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    runner, srv = await serve()
    yield srv
    await runner.cleanup()


@dataclass
class TLS:
    server: Server
    ca_file: str
    other_ca_file: str


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[TLS]:
    ca, other = trustme.CA(), trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    runner, srv = await serve(server_ctx)
    yield TLS(srv, str(tmp_path / "ca.pem"), str(tmp_path / "other.pem"))
    await runner.cleanup()


def make_check(url: str, **options: Any) -> CheckConfig:
    options.setdefault("timeout", 5.0)
    # localhost is in /etc/hosts as 127.0.0.1 only; ip4 keeps the probe off ::1
    options.setdefault("ip_protocol", "ip4")
    return build_check(upstream="control", name="web", kind="http", url=url, **options)


async def run(check: CheckConfig, secret: str | None = None) -> Result:
    async with aiohttp.ClientSession() as session:
        ctx = ProbeContext(session=session, logger=logging.getLogger("exporter.test.http"),
                           secret=lambda _check: secret)
        return await probe(check, ctx)


def gauge(result: Result, spec: m.MetricSpec, **labels: str) -> float:
    (found,) = [s.value for s in result.gauges if s.metric == spec and dict(s.labels) == labels]
    return found


def assert_reason(result: Result, reason: str) -> None:
    assert (result.success, result.reason) == (not reason, reason), result.error
    assert not reason or reason in HTTP_REASONS


@pytest.mark.parametrize(("path", "options", "reason", "status"), [
    ("/status/200", {}, "", 200),
    ("/status/204", {}, "", 204),
    ("/status/404", {}, "status_mismatch", 404),
    ("/status/500", {}, "status_mismatch", 500),
    ("/status/404", {"valid_status_codes": (404,)}, "", 404),
    ("/status/200", {"valid_status_codes": (204,)}, "status_mismatch", 200),
    ("/text", {"body_regex": "OK$"}, "", 200),
    ("/text", {"body_regex": "^nope"}, "body_mismatch", 200),
    ("/text", {"body_not_regex": "hello"}, "body_mismatch", 200),
    ("/text", {"body_not_regex": "error"}, "", 200),
    ("/json", {"json_path": "data.0.id"}, "", 200),
    ("/json", {"json_path": "$.data[0].v"}, "", 200),  # present even though null
    ("/json", {"json_path": "data.1"}, "body_mismatch", 200),
    ("/json", {"json_path": "data.0.missing"}, "body_mismatch", 200),
    ("/text", {"json_path": "data"}, "body_mismatch", 200),  # not JSON at all
    ("/redirect/3", {}, "", 200),
    ("/redirect/3", {"follow_redirects": False}, "status_mismatch", 302),
    ("/redirect/3", {"follow_redirects": False, "valid_status_codes": (302,)}, "", 302),
    ("/loop", {}, "status_mismatch", 302),  # the last status, as blackbox reports it
    ("/echo", {"method": "POST", "body": "payload", "body_regex": "^POST:payload$"}, "", 200),
    ("/text", {"method": "HEAD"}, "", 200),
    ("/big", {}, "bad_response", 200),
    # blackbox's matchers, as lists
    ("/text", {"fail_if_body_matches_regexp": ("nope", "hello")}, "body_mismatch", 200),
    ("/text", {"fail_if_body_matches_regexp": ("nope", "error")}, "", 200),
    ("/text", {"fail_if_body_not_matches_regexp": ("hello", "OK$")}, "", 200),
    ("/text", {"fail_if_body_not_matches_regexp": ("hello", "^nope")}, "body_mismatch", 200),
    ("/text", {"fail_if_header_matches": (HeaderMatch("Content-Type", "^text/"),)},
     "header_mismatch", 200),
    ("/text", {"fail_if_header_matches": (HeaderMatch("X-Missing", "x"),)}, "header_mismatch", 200),
    ("/text", {"fail_if_header_matches": (HeaderMatch("X-Missing", "x", allow_missing=True),)},
     "", 200),
    ("/text", {"fail_if_header_not_matches": (HeaderMatch("Content-Type", "^text/plain"),)}, "", 200),
    ("/text", {"fail_if_header_not_matches": (HeaderMatch("Content-Type", "json"),)},
     "header_mismatch", 200),
    ("/json", {"json_conditions": (JsonCondition("status", "ok", has_equals=True),)}, "", 200),
    ("/json", {"json_conditions": (JsonCondition("status", "down", has_equals=True),)},
     "body_mismatch", 200),
    ("/json", {"json_conditions": (JsonCondition("data[0].v", None, has_equals=True),)}, "", 200),
    ("/json", {"json_conditions": (JsonCondition("data.0.id", matches="^x$"),)}, "", 200),
    ("/json", {"json_conditions": (JsonCondition("data.0.id", matches="^y"),)}, "body_mismatch", 200),
    ("/json", {"json_conditions": (JsonCondition("data.5", matches="."),)}, "body_mismatch", 200),
])
async def test_status_and_body_rules(server: Server, path: str, options: dict[str, Any],
                                     reason: str, status: int) -> None:
    result = await run(make_check(server.url + path, **options))
    assert_reason(result, reason)
    assert gauge(result, m.PROBE_HTTP_STATUS_CODE) == status
    assert result.details == {"http_status": status, "error_type": None, "reason": reason}


@pytest.mark.parametrize(("options", "flag"), [
    ({"fail_if_body_matches_regexp": ("hello",)}, 1),
    ({"fail_if_header_not_matches": (HeaderMatch("Content-Type", "json"),)}, 1),
    ({"valid_status_codes": (204,)}, 0),  # a status mismatch is no regexp failure
    ({}, 0),
])
async def test_failed_due_to_regex(server: Server, options: dict[str, Any], flag: int) -> None:
    result = await run(make_check(server.url + "/text", **options))
    assert gauge(result, m.PROBE_FAILED_DUE_TO_REGEX) == flag


async def test_response_gauges(server: Server) -> None:
    result = await run(make_check(server.url + "/redirect/2"))
    assert result.success
    assert gauge(result, m.PROBE_HTTP_REDIRECTS) == 2
    assert gauge(result, m.PROBE_HTTP_VERSION) == 1.1
    assert gauge(result, m.PROBE_HTTP_SSL) == 0
    assert gauge(result, m.PROBE_HTTP_CONTENT_LENGTH) == len("arrived")
    assert gauge(result, m.PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH) == len("arrived")
    phases = {p: gauge(result, m.PROBE_HTTP_DURATION, phase=p) for p in PHASES}
    assert phases["tls"] == 0
    assert phases["resolve"] > 0 and phases["connect"] > 0 and phases["processing"] > 0
    assert sum(phases.values()) <= result.duration_seconds


async def test_head_has_no_body(server: Server) -> None:
    result = await run(make_check(server.url + "/text", method="HEAD"))
    assert gauge(result, m.PROBE_HTTP_CONTENT_LENGTH) == len("hello world OK")  # as declared
    assert gauge(result, m.PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH) == 0


@pytest.mark.parametrize(("header", "sent"), [
    ("Authorization", f"Bearer {KEY}"),
    ("X-Api-Token", KEY),
])
async def test_api_key_header(server: Server, header: str, sent: str) -> None:
    result = await run(make_check(server.url + "/echo", api_key_env="HTTP_TEST_KEY",
                                  api_key_header=header, headers={"X-Extra": "1"}), KEY)
    assert result.success
    assert server.seen[-1][header] == sent
    assert server.seen[-1]["X-Extra"] == "1"
    assert server.seen[-1]["User-Agent"].startswith("claude-status-exporter/")
    assert KEY not in repr(result)


async def test_missing_key_sends_nothing(server: Server) -> None:
    result = await run(make_check(server.url + "/echo", api_key_file="/nonexistent/key"), None)
    assert_reason(result, "auth")
    assert server.seen == []


async def test_key_is_scrubbed_from_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a key that also appears in the URL (a user mistake) must not leak through the error
    result = await run(make_check(f"http://127.0.0.1:{port}/?k={KEY}", api_key_env="K"), KEY)
    assert result.reason == "connect"
    assert KEY not in repr(result) and KEY not in caplog.text


# -- TLS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "reason"), [
    ({}, "tls"),  # the test CA is not in the system store
    ({"ca_file": "CA"}, ""),
    ({"ca_file": "OTHER"}, "tls"),
    ({"insecure_skip_verify": True}, ""),
    ({"ca_file": "/nonexistent/ca.pem"}, "tls"),
])
async def test_tls_verification(tls: TLS, options: dict[str, Any], reason: str) -> None:
    files = {"CA": tls.ca_file, "OTHER": tls.other_ca_file}
    options = {k: files.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    result = await run(make_check(tls.server.url + "/text", tls=TlsConfig(**options)))
    assert_reason(result, reason)
    if reason == "tls":
        assert gauge(result, m.PROBE_HTTP_STATUS_CODE) == 0
        assert "TLS" in result.error or "tls_config.ca_file" in result.error


async def test_tls_phases(tls: TLS) -> None:
    result = await run(make_check(tls.server.url + "/text", tls=TlsConfig(ca_file=tls.ca_file)))
    assert result.success
    assert gauge(result, m.PROBE_HTTP_SSL) == 1
    tls_time = gauge(result, m.PROBE_HTTP_DURATION, phase="tls")
    connect_time = gauge(result, m.PROBE_HTTP_DURATION, phase="connect")
    assert tls_time > 0 and connect_time > 0


async def test_tls_hostname_mismatch(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.test").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    runner, srv = await serve(server_ctx)
    try:
        result = await run(make_check(srv.url + "/text", tls=TlsConfig(ca_file=str(tmp_path / "ca.pem"))))
    finally:
        await runner.cleanup()
    assert_reason(result, "tls")
    assert "hostname" in result.error.lower() or "mismatch" in result.error.lower()


# -- transport failures ---------------------------------------------------------------------------


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run(make_check(f"http://127.0.0.1:{port}/"))
    assert_reason(result, "connect")
    assert gauge(result, m.PROBE_HTTP_STATUS_CODE) == 0
    assert {s.labels["phase"] for s in result.gauges if s.metric == m.PROBE_HTTP_DURATION} == set(PHASES)


async def test_timeout(server: Server) -> None:
    result = await run(make_check(server.url + "/slow", timeout=0.5))
    assert_reason(result, "timeout")
    assert result.duration_seconds < 1.0
    assert "waiting for the response headers" in result.error


DNS_SCRIPT = """
import asyncio, json, logging, aiohttp
from exporter.checks.base import ProbeContext
from exporter.checks.http import probe
from exporter.config import HttpCheck

async def main():
    check = HttpCheck(upstream="u", name="n", kind="http", url="http://probe-test.invalid/",
                      timeout=5.0)
    async with aiohttp.ClientSession() as session:
        result = await probe(check, ProbeContext(session=session, logger=logging.getLogger("t")))
    print(json.dumps({"reason": result.reason, "error": result.error}))

asyncio.run(main())
"""


def test_dns_failure_in_an_isolated_network_namespace() -> None:
    """A name that cannot resolve → reason dns. The probe runs under ``unshare --net`` (a
    namespace with no routes), so the lookup never leaves the machine."""
    unshare = require_binary("unshare")
    require(os.geteuid() == 0, "unshare --net needs root")
    proc = subprocess.run([unshare, "--net", sys.executable, "-c", DNS_SCRIPT], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["reason"] == "dns", outcome
    assert "probe-test.invalid" in outcome["error"]


@pytest.mark.parametrize(("path", "exists"), [
    ("data", True), ("data.0.id", True), ("$.data[0].id", True), ("data[-1].v", True),
    ("data.0.v", True), ("data.1.id", False), ("data.x", False), ("status.inner", False),
    ("nothing", False),
])
def test_json_path_exists(path: str, exists: bool) -> None:
    assert json_path_exists({"data": [{"id": "x", "v": None}], "status": "ok"}, path) is exists


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("concurrent", [False, True])
async def test_shared_sessions_open_a_connection_per_run(tmp_path: Path, scheme: str,
                                                         concurrent: bool) -> None:
    """Runs that share a session (the runtime's Clients) still connect afresh each time and
    each measures its own phases and TLS facts, one after another or at the same time."""
    peers: list[object] = []

    async def answer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    server_ctx = None
    tls = TlsConfig()
    if scheme == "https":
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        tls = TlsConfig(ca_file=str(tmp_path / "ca.pem"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    check = make_check(f"{scheme}://localhost:{runner.addresses[0][1]}/", tls=tls)
    clients = Clients()
    try:
        async with aiohttp.ClientSession() as session:
            def ctx() -> ProbeContext:
                return ProbeContext(session=session, logger=logging.getLogger("t"),
                                    clients=clients)

            if concurrent:
                results = await asyncio.gather(*(probe(check, ctx()) for _ in range(3)))
            else:
                results = [await probe(check, ctx()) for _ in range(3)]
    finally:
        await clients.close()
        await runner.cleanup()
    assert [r.reason for r in results] == ["", "", ""]
    assert len(set(peers)) == 3  # three connections, none reused
    for result in results:
        assert gauge(result, m.PROBE_HTTP_DURATION, phase="connect") > 0
        assert gauge(result, m.PROBE_HTTP_DURATION, phase="processing") > 0
        assert gauge(result, m.PROBE_IP_PROTOCOL) == 4
        assert (gauge(result, m.PROBE_HTTP_DURATION, phase="tls") > 0) == (scheme == "https")
        assert gauge(result, m.PROBE_HTTP_SSL) == (scheme == "https")
