"""The HTTP surface: /metrics, /probe, /, /api/v1/status, /-/healthy, /-/ready, /-/reload."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

from exporter import landing
from exporter.collector import CONTENT_TYPE
from exporter.probe import handle_probe
from exporter.runtime import Runtime

log = logging.getLogger("exporter.web")

RUNTIME_KEY = web.AppKey("runtime", Runtime)
Reloader = Callable[[], tuple[bool, str]]
RELOADERS_KEY = web.AppKey("reloaders", list[Reloader])  # runtime first, then the web config

GZIP_MIN_BYTES = 4096
# A larger /metrics answer is sent in pieces of about this size, with the event loop free in
# between: one 25 MB write (10,000 checks) would hold up every probe's timing for tens of ms.
STREAM_PIECE_BYTES = 256 * 1024

# Limits of the HTTP surface (docs/security.md). No endpoint reads a request body.
MAX_BODY_BYTES = 64 * 1024  # a larger declared Content-Length is answered 413
READ_HEADER_TIMEOUT = 10.0  # seconds from connect to a complete first request head
IDLE_TIMEOUT = 60.0  # keep-alive: idle connections (and slow later requests) close after this
SERVER_LIMITS: dict[str, Any] = {  # aiohttp server (RequestHandler) settings, for AppRunner
    "max_line_size": 8190,  # request line: longer is a 400
    "max_field_size": 8190,  # one header: longer is a 400
    "max_headers": 64,
    "keepalive_timeout": IDLE_TIMEOUT,
}


async def metrics(request: web.Request) -> web.StreamResponse:
    chunks = request.app[RUNTIME_KEY].metrics_chunks()
    size = sum(map(len, chunks))
    compress = size >= GZIP_MIN_BYTES and "gzip" in request.headers.get("Accept-Encoding", "")
    headers = {"Content-Type": CONTENT_TYPE}
    if size <= STREAM_PIECE_BYTES:
        body = b"".join(chunks)
        if compress:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)
    response = web.StreamResponse(headers=headers)
    if compress:
        response.headers["Content-Encoding"] = "gzip"
    else:
        response.content_length = size
    await response.prepare(request)
    gzipper = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if compress else None
    for piece in _pieces(chunks):
        data = gzipper.compress(piece) if gzipper else piece
        if data:
            await response.write(data)
        await asyncio.sleep(0)  # let waiting callbacks (probe timings) run between pieces
    if gzipper:
        await response.write(gzipper.flush())
    await response.write_eof()
    return response


def _pieces(chunks: list[bytes]) -> Iterator[bytes]:
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= STREAM_PIECE_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME_KEY].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: the first round of checks is running.\n")


def reload_all(app: web.Application) -> tuple[bool, str]:
    """Reload everything reloadable (SIGHUP and POST /-/reload); each part keeps its old
    settings when its new ones are bad."""
    results = [reloader() for reloader in app[RELOADERS_KEY]]
    ok = all(ok for ok, _ in results)
    if not ok:  # the config file may have been fine: the web config's failure shows here too
        app[RUNTIME_KEY].state.reload_success = 0.0
    return ok, "\n".join(message for _, message in results)


async def reload_everything(app: web.Application) -> tuple[bool, str]:
    """``reload_all`` with the config parsed off the event loop first: a large config must
    not freeze /-/healthy. Reloads queue on the runtime's lock and never interleave."""
    runtime = app[RUNTIME_KEY]
    async with runtime.reload_lock:
        await runtime.preload()
        return reload_all(app)


async def reload(request: web.Request) -> web.Response:
    ok, message = await reload_everything(request.app)
    if ok:
        return web.Response(text=message + "\n")
    return web.Response(status=500, text="failed to reload config, keeping the old one:\n"
                                         + message + "\n")


async def status(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(request.app[RUNTIME_KEY].status(), indent=2),
                        content_type="application/json")


async def index(request: web.Request) -> web.Response:
    return web.Response(text=landing.render(request.app[RUNTIME_KEY].status()),
                        content_type="text/html")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _too_large(request: web.Request) -> web.Response | None:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return web.Response(status=413, text=f"request body larger than {MAX_BODY_BYTES} "
                                             "bytes; no endpoint takes a body\n")
    return None


@web.middleware
async def limit_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    return _too_large(request) or await handler(request)


class SlowClientGuard:
    """Closes connections that have not sent a complete request head ``timeout`` seconds
    after connecting (slowloris). aiohttp's keepalive_timeout bounds the wait for a later
    request on a reused connection; nothing in aiohttp before 3.14.4 bounds the first."""

    def __init__(self, timeout: float = READ_HEADER_TIMEOUT) -> None:
        self.timeout = timeout
        self._since: dict[object, float] = {}  # connection -> when first seen
        self._served: set[object] = set()  # connections that completed a request head

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Notes the connection as served, and limits the body as ``limit_body`` does: one
        middleware instead of two, as each costs every request a call and a coroutine."""
        self._served.add(request.protocol)
        return _too_large(request) or await handler(request)

    async def watch(self, server: web.Server) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.1, self.timeout / 5))
            now = loop.time()
            live = set(server.connections)
            for conn in live:
                since = self._since.setdefault(conn, now)
                if conn not in self._served and now - since > self.timeout:
                    log.debug("closing a connection that sent no complete request in time",
                              extra={"timeout": self.timeout})
                    conn.force_close()
            for gone in set(self._since) - live:
                del self._since[gone]
            self._served &= live


def make_app(runtime: Runtime, guard: SlowClientGuard | None = None,
             forward: Handler | None = None) -> web.Application:
    """The exporter's app. With ``forward`` (a /probe worker, exporter/workers.py) only
    GET /probe is answered here; every other request, unknown paths and methods included, goes
    to ``forward`` unchanged. The middlewares and limits are the same either way."""
    middlewares = [limit_body] if guard is None else [guard.middleware]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[RUNTIME_KEY] = runtime
    app[RELOADERS_KEY] = [runtime.reload]
    app.router.add_get("/probe", handle_probe)
    gets: list[tuple[str, Handler]] = [("/metrics", metrics), ("/", index),
                                       ("/api/v1/status", status), ("/-/healthy", healthy),
                                       ("/-/ready", ready)]
    for path, handler in gets:
        app.router.add_get(path, forward or handler)
    app.router.add_post("/-/reload", forward or reload)
    app.router.add_put("/-/reload", forward or reload)
    if forward is not None:
        app.router.add_route("*", "/{tail:.*}", forward)
    return app
