"""The HTTP surface: /metrics, /probe, /, /api/v1/status, /-/healthy, /-/ready, /-/reload."""

from __future__ import annotations

import gzip
import json
import logging

from aiohttp import web

from exporter import landing
from exporter.collector import CONTENT_TYPE
from exporter.runtime import Runtime

log = logging.getLogger("exporter.web")

RUNTIME_KEY = web.AppKey("runtime", Runtime)

GZIP_MIN_BYTES = 4096


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME_KEY].metrics()
    headers = {"Content-Type": CONTENT_TYPE}
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("Accept-Encoding", ""):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME_KEY].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: the first round of checks is running.\n")


async def reload(request: web.Request) -> web.Response:
    ok, message = request.app[RUNTIME_KEY].reload()
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


async def probe(request: web.Request) -> web.StreamResponse:
    from exporter.probe import handle_probe  # /probe is optional machinery; load on first use

    return await handle_probe(request)


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/", index)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    return app
