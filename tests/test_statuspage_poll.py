"""poll(): the fetch layer against real aiohttp servers on loopback, one behaviour per test."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import logging
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from conftest import OWN_FIXTURES, build_check, free_port

from exporter import __version__, metrics
from exporter.checks.base import ProbeContext, Result
from exporter.config import StatuspageConfig
from exporter.witnesses.statuspage import (
    BACKOFF_CAP_SECONDS,
    Page,
    backoff_seconds,
    parse_retry_after,
    poll,
    probe,
)

SUMMARY = "/api/v2/summary.json"
PAGE = (OWN_FIXTURES / "statuspage" / "acme-summary-incident-major.json").read_bytes()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve({path: handler})`` → base URL of a real server on 127.0.0.1:0."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None,
                    ) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    async with aiohttp.ClientSession() as session:
        yield ProbeContext(session=session, logger=logging.getLogger("test.statuspage"))


def options(url: str, **kwargs: Any) -> StatuspageConfig:
    return StatuspageConfig(url=url, **{"timeout": 3.0, "interval": 60.0, **kwargs})


async def poll_path(base: str, ctx: ProbeContext, path: str = SUMMARY, **kwargs: Any) -> Result:
    return await poll(base + path, options(base, **kwargs), ctx)


def respond(status: int = 200, body: bytes | str = PAGE,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(status=status, body=data, content_type=content_type,
                            headers=headers)
    return handler


# -- success ------------------------------------------------------------------------------------


async def test_success_sends_user_agent_and_accept(serve: Serve, ctx: ProbeContext) -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        return await respond()(request)

    result = await poll_path(await serve({SUMMARY: handler}), ctx)
    assert result.success and result.reason == ""
    assert seen[0]["User-Agent"] == f"claude-status-exporter/{__version__}"
    assert seen[0]["Accept"] == "application/json"
    assert "If-None-Match" not in seen[0]
    page = result.details["page"]
    assert isinstance(page, Page)
    assert page.status_of("acmeregus001") == "partial_outage"
    indicator = {s.labels["indicator"]: s.value for s in result.gauges
                 if s.metric is metrics.STATUSPAGE_INDICATOR}
    assert indicator == {"none": 0, "minor": 0, "major": 1, "critical": 0, "maintenance": 0,
                         "unknown": 0}
    assert "backoff_seconds" not in result.details


async def test_conditional_request_gets_304_and_reuses_the_page(
        serve: Serve, ctx: ProbeContext) -> None:
    etag, last_modified = 'W/"v1"', "Fri, 25 Nov 2022 15:50:05 GMT"
    seen: list[dict[str, str]] = []
    sent: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        headers = {"ETag": etag, "Last-Modified": last_modified}
        if request.headers.get("If-None-Match") == etag:
            sent.append(0)
            return web.Response(status=304, headers=headers)
        sent.append(len(PAGE))
        return web.Response(body=PAGE, content_type="application/json", headers=headers)

    base = await serve({SUMMARY: handler})
    first = await poll_path(base, ctx)
    second = await poll_path(base, ctx)
    assert first.success and second.success
    assert seen[1]["If-None-Match"] == etag
    assert seen[1]["If-Modified-Since"] == last_modified
    assert sent == [len(PAGE), 0]
    assert second.details["not_modified"] is True and second.details["body_bytes"] == 0
    assert second.gauges == first.gauges
    assert second.details["page"] == first.details["page"]


async def test_a_failure_between_polls_keeps_the_cached_page(
        serve: Serve, ctx: ProbeContext) -> None:
    answers = iter([respond(headers={"ETag": '"a"'}), respond(500, "oops", "text/plain"),
                    respond(304, b"", headers={"ETag": '"a"'})])

    async def handler(request: web.Request) -> web.StreamResponse:
        return await next(answers)(request)

    base = await serve({SUMMARY: handler})
    results = [await poll_path(base, ctx) for _ in range(3)]
    assert [(r.success, r.reason) for r in results] == [
        (True, ""), (False, "http_status"), (True, "")]
    assert results[2].details["not_modified"] is True
    assert results[2].gauges == results[0].gauges


async def test_redirects_are_followed(serve: Serve, ctx: ProbeContext) -> None:
    async def hop(request: web.Request) -> web.StreamResponse:
        target = {"/old": "/moved", "/moved": SUMMARY}[request.path]
        raise web.HTTPFound(target)

    base = await serve({"/old": hop, "/moved": hop, SUMMARY: respond()})
    result = await poll_path(base, ctx, "/old")
    assert result.success
    assert result.details["url"] == base + SUMMARY


async def test_probe_maps_the_base_url_and_applies_filters(
        serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({SUMMARY: respond()})
    check = build_check(upstream="acme", name="statuspage", kind="statuspage", url=base,
                        timeout=3.0,
                        statuspage=StatuspageConfig(url=base, components=("API", "US East")))
    result = await probe(check, ctx)
    assert result.success
    exported = {s.labels["component_id"] for s in result.gauges
                if s.metric is metrics.STATUSPAGE_COMPONENT_STATUS}
    assert exported == {"acmeapi00001", "acmeregus001"}
    assert set(result.details["page"].components) == exported


async def test_gzip_body_and_utf8_bom(serve: Serve, ctx: ProbeContext) -> None:
    body = gzip.compress(b"\xef\xbb\xbf" + PAGE)
    base = await serve({SUMMARY: respond(body=body, headers={"Content-Encoding": "gzip"})})
    result = await poll_path(base, ctx)
    assert result.success, result.error


# -- failures: one reason each ------------------------------------------------------------------

CHALLENGE = "<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>"

FAILURES: list[tuple[str, Handler, str]] = [
    ("403 challenge page", respond(403, CHALLENGE, "text/html"), "http_status"),
    ("405 CloudFront", respond(405, CHALLENGE, "text/html"), "http_status"),
    ("429", respond(429, "slow down", "text/plain"), "http_status"),
    ("500", respond(500, "<h1>500</h1>", "text/html"), "http_status"),
    ("503 json", respond(503, '{"error": "down"}'), "http_status"),
    ("404", respond(404, "not found", "text/plain"), "http_status"),
    ("200 html challenge", respond(200, CHALLENGE, "text/html"), "not_json"),
    ("200 html labelled json", respond(200, "\n  <html>challenge</html>"), "not_json"),
    ("wrong content type", respond(200, PAGE, "text/plain"), "not_json"),
    ("malformed json", respond(200, PAGE[: len(PAGE) // 2]), "not_json"),
    ("empty body", respond(200, b""), "not_json"),
    ("deeply nested json", respond(200, b"[" * 100_000 + b"]" * 100_000), "not_json"),
    ("json array", respond(200, "[1, 2, 3]"), "schema"),
    ("json string", respond(200, '"operational"'), "schema"),
    ("unrelated object", respond(200, '{"data": {"ok": true}}'), "schema"),
    ("components not a list", respond(200, '{"components": {"a": 1}}'), "schema"),
]


@pytest.mark.parametrize(("handler", "reason"), [(h, r) for _, h, r in FAILURES],
                         ids=[name for name, _, _ in FAILURES])
async def test_failure_reason(serve: Serve, ctx: ProbeContext, handler: Handler,
                              reason: str) -> None:
    result = await poll_path(await serve({SUMMARY: handler}), ctx)
    assert (result.success, result.reason) == (False, reason), result.error
    assert result.error
    assert result.gauges == ()
    assert result.details["backoff_seconds"] > 0


async def test_304_without_a_cached_page_is_a_failure(serve: Serve, ctx: ProbeContext) -> None:
    result = await poll_path(await serve({SUMMARY: respond(304, b"")}), ctx)
    assert (result.success, result.reason) == (False, "http_status")


async def test_truncated_transfer(serve: Serve, ctx: ProbeContext) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(PAGE)
        await response.prepare(request)
        await response.write(PAGE[:1000])
        assert request.transport is not None
        request.transport.close()
        return response

    result = await poll_path(await serve({SUMMARY: handler}), ctx)
    assert (result.success, result.reason) == (False, "connect"), result.error


async def test_redirect_loop(serve: Serve, ctx: ProbeContext) -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/b" if request.path == "/a" else "/a")

    started = time.perf_counter()
    result = await poll_path(await serve({"/a": loop, "/b": loop}), ctx, "/a")
    assert (result.success, result.reason) == (False, "http_status")
    assert "redirect" in result.error
    assert time.perf_counter() - started < 2


async def test_redirect_to_another_scheme(serve: Serve, ctx: ProbeContext) -> None:
    async def away(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("ftp://127.0.0.1/summary.json")

    result = await poll_path(await serve({SUMMARY: away}), ctx)
    assert (result.success, result.reason) == (False, "http_status")


async def test_connection_refused(ctx: ProbeContext) -> None:
    result = await poll_path(f"http://127.0.0.1:{free_port()}", ctx)
    assert (result.success, result.reason) == (False, "connect")


async def test_untrusted_certificate(serve: Serve, ctx: ProbeContext) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    result = await poll_path(await serve({SUMMARY: respond()}, server_context), ctx)
    assert (result.success, result.reason) == (False, "tls"), result.error


async def test_https_to_a_plain_http_server(serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({SUMMARY: respond()})
    result = await poll_path(base.replace("http://", "https://"), ctx)
    assert (result.success, result.reason) == (False, "tls"), result.error


# -- time and size bounds -----------------------------------------------------------------------


async def test_slow_headers_time_out(serve: Serve, ctx: ProbeContext) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return await respond()(request)

    started = time.perf_counter()
    result = await poll_path(await serve({SUMMARY: handler}), ctx, timeout=0.5)
    assert (result.success, result.reason) == (False, "timeout")
    assert time.perf_counter() - started < 0.5 + 0.3


async def test_slow_drip_body_times_out_before_the_scheduler(
        serve: Serve, ctx: ProbeContext) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"page": {"name": "')
        for _ in range(100):  # bounded: 20 s at most
            await asyncio.sleep(0.2)
            try:
                await response.write(b"a")
            except ConnectionError:
                break
        return response

    base = await serve({SUMMARY: drip})
    started = time.perf_counter()
    async with asyncio.timeout(1.0):  # what the scheduler wraps around a prober
        result = await poll_path(base, ctx, timeout=1.0)
    elapsed = time.perf_counter() - started
    assert (result.success, result.reason) == (False, "timeout")
    assert elapsed < 1.0


async def test_declared_oversize_is_refused_before_reading(
        serve: Serve, ctx: ProbeContext) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 50 * 2**20
        await response.prepare(request)
        await response.write(b'{"components": [')
        await asyncio.sleep(5)
        return response

    started = time.perf_counter()
    result = await poll_path(await serve({SUMMARY: huge}), ctx)
    assert (result.success, result.reason) == (False, "too_large")
    assert time.perf_counter() - started < 1


async def test_50_mb_body_is_cut_off_with_bounded_memory(
        serve: Serve, ctx: ProbeContext) -> None:
    chunk = b'{"name": "' + b"x" * (64 * 1024 - 20) + b'"},'
    sent = [0]

    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)  # chunked: no Content-Length to refuse early
        await response.write(b'{"components": [')
        for _ in range(50 * 2**20 // len(chunk)):
            try:
                await response.write(chunk)
            except ConnectionError:
                break
            sent[0] += len(chunk)
        return response

    base = await serve({SUMMARY: flood})
    tracemalloc.start()
    try:
        result = await poll_path(base, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.success, result.reason) == (False, "too_large")
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the cap is 5 MiB
    await asyncio.sleep(0.2)
    assert sent[0] < 25 * 2**20  # the rest was never read


async def test_gzip_bomb_is_cut_off(serve: Serve, ctx: ProbeContext) -> None:
    bomb = gzip.compress(b'{"components": ["' + b"0" * (50 * 2**20), compresslevel=9)
    assert len(bomb) < 2**20
    base = await serve({SUMMARY: respond(body=bomb, headers={"Content-Encoding": "gzip"})})
    tracemalloc.start()
    try:
        result = await poll_path(base, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.success, result.reason) == (False, "too_large")
    assert peak < 12 * 2**20 + len(bomb), f"peak {peak / 2**20:.1f} MiB"


async def test_max_body_bytes_is_configurable(serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({SUMMARY: respond()})
    assert (await poll_path(base, ctx, max_body_bytes=len(PAGE))).success
    small = await poll_path(base, ctx, max_body_bytes=len(PAGE) - 1)
    assert (small.success, small.reason) == (False, "too_large")


# -- backoff --------------------------------------------------------------------------------------


async def test_retry_after_seconds_sets_the_backoff(serve: Serve, ctx: ProbeContext) -> None:
    base = await serve({SUMMARY: respond(429, "slow down", "text/plain",
                                         {"Retry-After": "300"})})
    result = await poll_path(base, ctx)
    assert result.reason == "http_status"
    assert result.details["retry_after_seconds"] == 300
    assert result.details["backoff_seconds"] == 300  # above the jittered 60-120 s
    assert result.details["http_status"] == 429


async def test_retry_after_http_date(serve: Serve, ctx: ProbeContext) -> None:
    when = email.utils.formatdate(time.time() + 400, usegmt=True)
    base = await serve({SUMMARY: respond(503, "busy", "text/plain", {"Retry-After": when})})
    result = await poll_path(base, ctx)
    assert result.details["retry_after_seconds"] == pytest.approx(400, abs=2)
    assert result.details["backoff_seconds"] == pytest.approx(400, abs=2)


async def test_backoff_grows_and_resets_on_success(serve: Serve, ctx: ProbeContext) -> None:
    healthy = [False]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await (respond() if healthy[0] else respond(500, "x", "text/plain"))(request)

    base = await serve({SUMMARY: handler})
    delays = [(await poll_path(base, ctx, interval=1.0)).details["backoff_seconds"]
              for _ in range(4)]
    for failures, delay in enumerate(delays, start=1):
        assert 2 ** (failures - 1) <= delay <= 2**failures  # equal jitter below 2^n
    healthy[0] = True
    ok = await poll_path(base, ctx, interval=1.0)
    assert ok.success and "backoff_seconds" not in ok.details
    healthy[0] = False
    again = await poll_path(base, ctx, interval=1.0)
    assert again.details["consecutive_failures"] == 1
    assert 1 <= again.details["backoff_seconds"] <= 2


@pytest.mark.parametrize(("failures", "interval", "retry_after", "low", "high"), [
    (1, 60, None, 60, 120),
    (3, 60, None, 240, 480),
    (30, 60, None, BACKOFF_CAP_SECONDS / 2, BACKOFF_CAP_SECONDS),
    (1, 60, 10, 60, 120),
    (1, 60, 5000, BACKOFF_CAP_SECONDS, BACKOFF_CAP_SECONDS),  # even Retry-After is capped
])
def test_backoff_bounds(failures: int, interval: float, retry_after: float | None,
                        low: float, high: float) -> None:
    for _ in range(50):
        assert low <= backoff_seconds(failures, interval, retry_after) <= high


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), (None, None), ("", None), ("soon", None),
    ("-5", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_failure_details_are_json_serialisable() -> None:
    json.dumps({"backoff_seconds": backoff_seconds(2, 60.0)})
