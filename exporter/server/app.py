"""The HTTP surface: /metrics, /probe, /, /api/v1/status, /badge/{upstream}.svg, /-/healthy,
/-/ready, /-/reload."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from prometheus_client.exposition import choose_encoder

from exporter.runtime import Runtime
from exporter.server import badge as badges
from exporter.server import landing
from exporter.server.probe import ProbeEndpoint

log = logging.getLogger("exporter.web")

RUNTIME_KEY = web.AppKey("runtime", Runtime)
PROBE_KEY = web.AppKey("probe", ProbeEndpoint)
Reloader = Callable[[], tuple[bool, str]]
RELOADERS_KEY = web.AppKey("reloaders", list[Reloader])  # runtime first, then the web config
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GZIP_MIN_BYTES = 4096  # smaller answers are sent as they are: gzip would save next to nothing

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


def gzip_quality(accept_encoding: str) -> float:
    """The quality the client gives gzip in its Accept-Encoding (RFC 9110 section 12.5.3):
    ``gzip`` or ``x-gzip`` by name, else ``*``, else 0; ``gzip;q=0`` means "not gzip"."""
    named: float | None = None
    star: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    quality = 0.0  # a malformed weight accepts nothing
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            named = quality if named is None else max(named, quality)
        elif coding == "*":
            star = quality
    if named is not None:
        return named
    return star if star is not None else 0.0


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics through prometheus_client's building blocks: its content negotiation
    (choose_encoder: OpenMetrics when asked, else the 0.0.4 text), ``name[]=`` filtering
    (restricted_registry) and its writers. The families are built on the event loop from
    memory (a consistent snapshot, no network I/O); writing them, most of a large scrape's
    CPU, runs in a thread so that probes due meanwhile keep their timing; an answer whose
    families did not change since the same request was last answered is not written again
    (collector.Bodies). Compression is gzip when the client gives it a weight above 0:
    prometheus_client.aiohttp's handler writes on the loop and leaves compression to aiohttp,
    which reads ``gzip;q=0`` as gzip."""
    runtime = request.app[RUNTIME_KEY]
    runtime.refresh()
    families = list(runtime.collector.collect())
    names = request.query.getall("name[]", [])
    encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
    body = await asyncio.get_running_loop().run_in_executor(
        None, runtime.collector.bodies.write, families, names, content_type, encoder)
    response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type,
                                                hdrs.VARY: hdrs.ACCEPT_ENCODING})
    if len(body) >= GZIP_MIN_BYTES \
            and gzip_quality(request.headers.get(hdrs.ACCEPT_ENCODING, "")) > 0:
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def handle_probe(request: web.Request) -> web.Response:
    reply = await request.app[PROBE_KEY].answer(request.query,
                         request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
                         ",".join(request.headers.getall(hdrs.ACCEPT, [])))
    return web.Response(status=reply.status, body=reply.body,
                        headers={"Content-Type": reply.content_type})


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
        app[RUNTIME_KEY].state.record_reload(False)
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


async def badge(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    name = request.match_info["upstream"]
    if runtime.config.upstream(name) is None:
        return web.Response(status=404, text="no such upstream\n")
    # no-cache: README viewers and proxies (GitHub's camo too) revalidate instead of showing
    # a verdict that is hours old.
    return web.Response(text=badges.render(name, runtime.verdict(name)),
                        content_type="image/svg+xml",
                        headers={"Cache-Control": "no-cache"})


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


def make_app(runtime: Runtime, guard: SlowClientGuard | None = None) -> web.Application:
    """The exporter's app. Routes are a table: a new endpoint is one more row."""
    middlewares = [limit_body] if guard is None else [guard.middleware]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[RUNTIME_KEY] = runtime
    app[PROBE_KEY] = ProbeEndpoint(runtime)
    app[RELOADERS_KEY] = [runtime.reload]
    gets: list[tuple[str, Handler]] = [("/metrics", metrics),
                                       ("/probe", handle_probe), ("/", index),
                                       ("/api/v1/status", status), ("/badge/{upstream}.svg", badge),
                                       ("/-/healthy", healthy),
                                       ("/-/ready", ready)]
    for path, handler in gets:
        app.router.add_get(path, handler)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    return app


BACKLOG = 1024  # the kernel's queue of connections not yet accepted, per listening socket


def bind(host: str | None, port: int) -> list[socket.socket]:
    """The listening sockets, one per address, each served by its own aiohttp site. No host:
    every address, IPv6 and IPv4, on one socket; a name: every address it resolves to, on one
    port (the first bind picks it when ``port`` is 0). OSError: the caller reports it."""
    if host is None:
        if socket.has_dualstack_ipv6():
            return [socket.create_server(("", port), family=socket.AF_INET6, backlog=BACKLOG,
                                         dualstack_ipv6=True)]
        return [socket.create_server(("", port), backlog=BACKLOG)]
    socks: list[socket.socket] = []
    try:
        for family, _, _, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if any(s.family == family and s.getsockname()[0] == address[0] for s in socks):
                continue  # getaddrinfo may list an address twice
            if port == 0 and socks:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            socks.append(socket.create_server(address, family=family, backlog=BACKLOG))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
