"""The simulator's HTTP server: fake status pages, fake APIs and a control API on one port.

    /status/api/v2/*.json              Atlassian Statuspage v2 (summary, status, components, ...)
    /incidentio/api/v2/summary.json    incident.io's Statuspage-compatible summary
    /anthropic/..., /openai/...        fake APIs (exporter.simulator.api, when present)
    /gcp/..., /aws/..., /azure/...     cloud status feeds (exporter.simulator.witnesses)
    /openrouter/api/v1/...             OpenRouter's per-model endpoint health (the crowd)
    GET  /_sim/scenario                current scenario and the list of scenarios
    POST /_sim/scenario                switch: {"scenario": "name"} or ?name=name
    GET  /_sim/stats                   per-path counters: requests, 200s, 304s, body bytes
                                       (streamed answers count bytes written, framing included)
    POST /_sim/stats/reset             zero the counters
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.simulator import api, witnesses
from exporter.simulator.scenarios import INCIDENT_LIFECYCLE, SCENARIOS, Scenario
from exporter.simulator.statuspage import PageModel, PageServer, PageSettings

log = logging.getLogger("exporter.simulator")

LIFECYCLE = "incident_lifecycle"  # a pseudo-scenario: cycles through INCIDENT_LIFECYCLE
DEFAULT_CYCLE_SECONDS = 30.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UnknownScenario(ValueError):
    def __init__(self, name: str) -> None:
        choices = ", ".join([*SCENARIOS, LIFECYCLE])
        super().__init__(f"unknown scenario {name!r}; choose one of: {choices}")


def check_scenario(name: str) -> str:
    if name not in SCENARIOS and name != LIFECYCLE:
        raise UnknownScenario(name)
    return name


DEMO_CERT = Path(__file__).parent / "demo-tls.crt"
DEMO_KEY = Path(__file__).parent / "demo-tls.key"


class Simulator:
    """A running simulator. ``start()`` binds (port 0 picks a free one), ``stop()`` ends it."""

    def __init__(self, scenario: str = "operational", *, slow_seconds: float = 12.0,
                 retry_after: int = 30, cycle_seconds: float = DEFAULT_CYCLE_SECONDS,
                 seed: int | None = None) -> None:
        self._scenario = SCENARIOS["operational"]
        self.model = PageModel(random.Random(seed))
        self.settings = PageSettings(slow_seconds=slow_seconds, retry_after=retry_after)
        self.cycle_seconds = cycle_seconds
        self._cycle: list[str] | None = None
        self._cycle_task: asyncio.Task[None] | None = None
        self._stats: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.tls_address = ""  # host:port of the TLS listener
        self.app = self._build_app()
        self.set_scenario(scenario)

    # -- addresses -------------------------------------------------------------------------

    @property
    def statuspage_url(self) -> str:
        return self.base_url + "/status"

    @property
    def incidentio_url(self) -> str:
        return self.base_url + "/incidentio"

    @property
    def anthropic_url(self) -> str:
        return self.base_url + "/anthropic"

    @property
    def openai_url(self) -> str:
        return self.base_url + "/openai"

    @property
    def openrouter_url(self) -> str:
        return self.base_url + "/openrouter/api/v1"

    # -- state -----------------------------------------------------------------------------

    @property
    def scenario(self) -> Scenario:
        return self._scenario

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        return json.loads(json.dumps(self._stats))  # type: ignore[no-any-return]

    def reset_stats(self) -> None:
        self._stats.clear()

    def set_scenario(self, name: str) -> None:
        """Switch to a scenario now (stopping any cycle); ``incident_lifecycle`` starts one."""
        check_scenario(name)
        self._stop_cycle()
        if name == LIFECYCLE:
            self.start_cycle(list(INCIDENT_LIFECYCLE), self.cycle_seconds)
        else:
            self._switch(name)

    def start_cycle(self, names: Sequence[str], seconds: float) -> None:
        """Step through ``names`` every ``seconds``, round and round, until set_scenario."""
        for name in names:
            if name not in SCENARIOS:
                raise UnknownScenario(name)
        if not names or seconds <= 0:
            raise ValueError("a cycle needs at least one scenario and a positive period")
        self._stop_cycle()
        self._cycle = list(names)
        self._switch(self._cycle[0])
        with contextlib.suppress(RuntimeError):  # no running loop yet: start() begins it
            self._cycle_task = asyncio.get_running_loop().create_task(
                self._run_cycle(self._cycle, seconds))
        self.cycle_seconds = seconds

    def _switch(self, name: str) -> None:
        self._scenario = SCENARIOS[name]
        changed = self.model.apply(self._scenario)
        log.info("scenario %s%s", name, "" if changed else " (page content unchanged)")

    async def _run_cycle(self, names: list[str], seconds: float) -> None:
        index = 0
        while True:
            await asyncio.sleep(seconds)
            index = (index + 1) % len(names)
            self._switch(names[index])

    def _stop_cycle(self) -> None:
        if self._cycle_task is not None:
            self._cycle_task.cancel()
            self._cycle_task = None
        self._cycle = None

    # -- server ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.base_url = f"http://{shown}:{bound[1]}"
        # The same routes over TLS on a second port, for tls checks in the demo. The certificate
        # is a public, self-signed one for localhost/127.0.0.1 shipped with the package.
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(DEMO_CERT, DEMO_KEY)
        await web.TCPSite(self._runner, host, 0, ssl_context=tls).start()
        self.tls_address = f"{shown}:{self._runner.addresses[1][1]}"
        if self._cycle is not None and self._cycle_task is None:
            self._cycle_task = asyncio.get_running_loop().create_task(
                self._run_cycle(self._cycle, self.cycle_seconds))

    async def stop(self) -> None:
        task = self._cycle_task
        self._stop_cycle()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        PageServer(self.model, lambda: self._scenario, self.settings).add_routes(app)
        app.router.add_get("/_sim/scenario", self._get_scenario)
        app.router.add_post("/_sim/scenario", self._post_scenario)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_post("/_sim/stats/reset", self._reset_stats)
        app.router.add_get("/", self._index)
        witnesses.add_routes(app, lambda: self._scenario)
        api.add_routes(app, "/anthropic", "anthropic", lambda: self._scenario)
        api.add_routes(app, "/openai", "openai", lambda: self._scenario)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "(unmatched)"
        if path.startswith("/_sim/") or path == "/":
            return await handler(request)
        counters = self._stats.setdefault(path, {
            "requests": 0, "responses_200": 0, "responses_304": 0, "body_bytes": 0,
            "status_codes": {}})
        counters["requests"] += 1
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._record(counters, exc.status, len(exc.body or b"")
                         if isinstance(exc.body, bytes) else 0)
            raise
        if response.prepared:  # streamed by the handler itself
            size = response.body_length
        else:
            body = getattr(response, "body", None)
            size = len(body) if isinstance(body, (bytes, bytearray)) else 0
        self._record(counters, response.status, size)
        return response

    @staticmethod
    def _record(counters: dict[str, Any], status: int, size: int) -> None:
        counters["status_codes"][str(status)] = counters["status_codes"].get(str(status), 0) + 1
        if status == 200:
            counters["responses_200"] += 1
        elif status == 304:
            counters["responses_304"] += 1
        counters["body_bytes"] += size

    # -- control API -------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        return {
            "scenario": self._scenario.name,
            "description": self._scenario.description,
            "cycle": self._cycle,
            "cycle_seconds": self.cycle_seconds if self._cycle else None,
            "scenarios": {name: s.description for name, s in SCENARIOS.items()}
            | {LIFECYCLE: "Cycles through " + " → ".join(INCIDENT_LIFECYCLE) + "."},
        }

    async def _get_scenario(self, request: web.Request) -> web.Response:
        return web.json_response(self._describe())

    async def _post_scenario(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        if name is None and request.can_read_body:
            try:
                payload = await request.json()
            except ValueError:
                return _bad_request('the body must be JSON such as {"scenario": "degraded"}')
            if not isinstance(payload, dict) or not isinstance(payload.get("scenario"), str):
                return _bad_request('the body must be JSON such as {"scenario": "degraded"}')
            name = payload["scenario"]
        if name is None:
            return _bad_request('name the scenario: ?name=degraded or {"scenario": "degraded"}')
        try:
            self.set_scenario(name)
        except UnknownScenario as exc:
            return _bad_request(str(exc))
        return web.json_response(self._describe())

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats)

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({})

    async def _index(self, request: web.Request) -> web.Response:
        lines = [
            f"claude-status-exporter simulator: scenario {self._scenario.name}",
            "",
            f"status page (Statuspage v2)   {self.statuspage_url}/api/v2/summary.json",
            f"status page (incident.io)     {self.incidentio_url}/api/v2/summary.json",
            f"fake Anthropic API            {self.anthropic_url}",
            f"fake OpenAI API               {self.openai_url}",
            f"control                       {self.base_url}/_sim/scenario, /_sim/stats",
        ]
        return web.Response(text="\n".join(lines) + "\n")


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def serve(host: str = "127.0.0.1", port: int = 0, scenario: str = "operational",
                cycle: list[str] | None = None, cycle_seconds: float = DEFAULT_CYCLE_SECONDS,
                *, slow_seconds: float = 12.0, retry_after: int = 30,
                on_ready: Callable[[Simulator], None] | None = None) -> None:
    """Run a simulator until cancelled. ``scenario="incident_lifecycle"`` (or a ``cycle``)
    steps through scenarios every ``cycle_seconds``. Raises UnknownScenario for a bad name."""
    check_scenario(scenario)
    for name in cycle or ():
        check_scenario(name)
    if scenario == LIFECYCLE and not cycle:
        cycle = list(INCIDENT_LIFECYCLE)
    simulator = Simulator(cycle[0] if cycle else scenario, slow_seconds=slow_seconds,
                          retry_after=retry_after, cycle_seconds=cycle_seconds)
    await simulator.start(host, port)
    try:
        if cycle:
            simulator.start_cycle(cycle, cycle_seconds)
        log.info("simulator listening on %s (scenario %s%s)", simulator.base_url,
                 simulator.scenario.name, f", cycling every {cycle_seconds:g}s" if cycle else "")
        log.info("status page: %s/api/v2/summary.json", simulator.statuspage_url)
        if on_ready is not None:
            on_ready(simulator)
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
