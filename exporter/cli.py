"""Command line, Prometheus exporter style: dotted long flags, plus `check` and `simulate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from attrs import evolve

from exporter import __version__, logs
from exporter import demo as demo_mod
from exporter.config import (
    Config,
    ConfigError,
    ConfigIssue,
    VerdictConfig,
    load_file,
    load_preset,
    load_text,
    parse_duration,
)
from exporter.engine import eventloop
from exporter.engine.scheduler import Scheduler
from exporter.engine.state import StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition.status import build
from exporter.runtime import Runtime, new_session
from exporter.secrets import Secrets
from exporter.server.app import (
    RELOADERS_KEY,
    SERVER_LIMITS,
    SlowClientGuard,
    bind,
    make_app,
    reload_everything,
)
from exporter.server.webconfig import WebGuard
from exporter.simulator import serve as sim_serve
from exporter.simulator.scenarios import SCENARIOS

log = logging.getLogger("exporter")

DEFAULT_LISTEN = ":10529"
DEMO_SCENARIOS = [*SCENARIOS, "incident_lifecycle"]
SHUTDOWN_GRACE = 5.0  # seconds SIGTERM waits for in-flight requests before closing
REMOVED_WORKERS = (
    "--web.probe-workers was removed: one exporter is one process. Scale /probe with more "
    "replicas behind a Service and shard targets across them with Prometheus's hashmod "
    "relabelling (docs/deploy.md, \"Scaling /probe\").")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="YAML config; without it the bundled Claude preset runs")
    parser.add_argument("--log.level", dest="log_level", default="info",
                        choices=["debug", "info", "warn", "error"])
    parser.add_argument("--log.format", dest="log_format", default="logfmt",
                        choices=["logfmt", "json"])
    parser.add_argument("--vantage", metavar="NAME",
                        help='adds vantage="NAME" to every series (overrides the config)')


def exporter_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-status-exporter",
        description="Is Claude down, degraded, or is it just me? A Prometheus exporter. "
                    "Subcommands: check (one round, verdict table), simulate (fake status page "
                    "and API for fire drills).")
    _common(parser)
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the config, print every error, exit 0 or 1")
    parser.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN,
                        metavar="HOST:PORT", help=f"default {DEFAULT_LISTEN}")
    parser.add_argument("--web.config.file", dest="web_config", metavar="PATH",
                        help="TLS and basic auth, exporter-toolkit web-config format")
    parser.add_argument("--web.read-header-timeout", dest="read_header_timeout", default="10s",
                        metavar="DURATION", help="close a connection that has not sent a "
                                                 "complete request this long after connecting")
    parser.add_argument("--web.probe-workers", dest="probe_workers", default=None,
                        help=argparse.SUPPRESS)  # removed: refused with a pointer (REMOVED_WORKERS)
    parser.add_argument("--runtime.event-loop", dest="event_loop", default="auto",
                        choices=list(eventloop.CHOICES),
                        help="auto (default): uvloop when installed, else asyncio's own loop")
    parser.add_argument("--demo", action="store_true",
                        help="run the built-in simulator on loopback and watch it: live "
                             "metrics with no network and no key")
    parser.add_argument("--demo.scenario", dest="demo_scenario", default="operational",
                        choices=DEMO_SCENARIOS, metavar="SCENARIO",
                        help="the simulator's starting scenario in --demo: one of "
                             + ", ".join(DEMO_SCENARIOS))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_listen(address: str) -> tuple[str | None, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--web.listen-address must be HOST:PORT or :PORT (got {address!r})")
    host = host.strip("[]")
    return (host or None), int(port)


def config_loader(path: str | None) -> Callable[[], Config]:
    if path is None:
        return load_preset
    return lambda: load_file(path)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "check":
        return check_main(args_list[1:])
    if args_list and args_list[0] == "simulate":
        return simulate_main(args_list[1:])
    args = exporter_parser().parse_args(args_list)
    secrets = Secrets()  # the runtime's: what the checks read, the log never shows
    logs.setup(args.log_level, args.log_format, secrets)
    if args.config_check:
        return config_check(args.config_file)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.probe_workers is not None:
        print(REMOVED_WORKERS, file=sys.stderr)
        return 2
    try:
        eventloop.loop_factory(args.event_loop)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        eventloop.run(serve(args, host, port, secrets), args.event_loop)
    except ConfigError as exc:
        print(f"invalid config, not starting:\n{exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def config_check(path: str | None) -> int:
    try:
        config = config_loader(path)()
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue)
        print(f"{len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    checks = config.all_checks()
    print(f"{config.source}: OK ({len(config.upstreams)} upstreams, {len(checks)} checks, "
          f"{len(config.modules)} /probe modules)")
    return 0


async def serve(args: argparse.Namespace, host: str | None, port: int,
                secrets: Secrets) -> None:
    try:
        slow_clients = SlowClientGuard(parse_duration(args.read_header_timeout))
    except ValueError as exc:
        raise ConfigError([ConfigIssue("--web.read-header-timeout", None, "", str(exc))]) from None
    web_guard = None
    if args.web_config:
        web_guard = WebGuard(args.web_config)  # raises ConfigError, reported like the config's
    ssl_context = web_guard.ssl_context if web_guard is not None else None
    demo = None
    loader = config_loader(args.config_file)
    if args.demo:
        demo = await demo_mod.start(args.demo_scenario)
        text = demo.config_text
        loader = lambda: load_text(text, "<demo>")  # noqa: E731
    runtime = Runtime(loader, args.vantage, secrets)
    if demo is not None:
        runtime.extra_status["demo"] = demo.describe()
    app = make_app(runtime, slow_clients)
    if web_guard is not None:
        web_guard.install(app)  # raises ConfigError for an exempt path that is no endpoint
        app[RELOADERS_KEY].append(web_guard.reload)
    sockets = bind(host, port)  # OSError: reported by main
    await runtime.start()
    runner = web.AppRunner(app, handle_signals=False, access_log=logging.getLogger("aiohttp.access"),
                           # aiohttp waits this long twice (for handlers to finish, then
                           # after cancelling them): a hanging /probe holds exit to the grace.
                           shutdown_timeout=SHUTDOWN_GRACE / 2, **SERVER_LIMITS)
    await runner.setup()
    assert runner.server is not None
    watcher = asyncio.create_task(slow_clients.watch(runner.server), name="slow-client-guard")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[tuple[bool, str]]] = set()  # held until done (asyncio keeps weak refs)

    def on_sighup() -> None:
        task = asyncio.create_task(reload_everything(app), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        for sock in sockets:  # one aiohttp site per address the listen host resolves to
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            log.info("listening", extra={"address": site.name})
        if demo is not None:
            log.info("demo simulator running", extra={"simulator": demo.simulator.base_url})
        await stop.wait()
        log.info("shutting down")
    finally:
        watcher.cancel()
        await runner.cleanup()
        for sock in sockets:
            sock.close()
        await runtime.stop()
        if demo is not None:
            await demo.stop()


# -- check ---------------------------------------------------------------------------------

EXIT_FOR = {"operational": 0, "maintenance": 0, "degraded": 1, "outage": 1, "unknown": 1,
            "own_quota": 2, "local_network": 2}
ANSI = {"operational": "32", "degraded": "33", "outage": "31", "maintenance": "34",
        "own_quota": "35", "local_network": "35", "unknown": "37"}


def check_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="claude-status-exporter check",
        description="Run every check once, print a verdict per upstream. Exit 0 operational, "
                    "1 degraded or outage, 2 a local problem (our network or our account).")
    _common(parser)
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("--demo", action="store_true", help="check the built-in simulator")
    parser.add_argument("--demo.scenario", dest="demo_scenario", default="operational",
                        choices=DEMO_SCENARIOS, metavar="SCENARIO")
    args = parser.parse_args(argv)
    secrets = Secrets()
    logs.setup(args.log_level if args.log_level != "info" else "warn", args.log_format, secrets)
    try:
        status = asyncio.run(_check_once(args, secrets))
    except ConfigError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(status, indent=2))
    else:
        print(format_table(status, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    verdicts = [u["verdict"] for u in status["upstreams"]] or ["unknown"]
    return max(EXIT_FOR.get(v, 1) for v in verdicts)


async def _check_once(args: argparse.Namespace, secrets: Secrets) -> dict[str, Any]:
    demo = None
    if args.demo:
        demo = await demo_mod.start(args.demo_scenario)
        config = load_text(demo.config_text, "<demo>")
    else:
        config = config_loader(args.config_file)()
    if args.vantage:
        config = evolve(config, vantage=args.vantage)
    # One run decides: no debounce in a one-shot check.
    one_shot = VerdictConfig(outage_after=1, recover_after=1, window=1, degraded_ratio=1.0)
    config = evolve(config, upstreams=tuple(evolve(u, verdict=one_shot) for u in config.upstreams),
                     control_verdict=one_shot)
    state = StateStore()
    state.sync(config)
    session = new_session()
    try:
        scheduler = Scheduler(state, session, secrets=secrets)
        scheduler.config = config

        async def one(key: tuple[str, str]) -> None:
            check = state.checks[key].check
            state.record(check, await scheduler.run_once(check, scheduler.memo_for(check)))

        await asyncio.gather(*(one(key) for key in list(state.checks)))
    finally:
        await session.close()
        if demo is not None:
            await demo.stop()
    verdicts = Verdicts()
    verdicts.refresh(state, config)
    return build(config, state, verdicts, ready=True, secrets=secrets)


def format_table(status: dict[str, Any], colour: bool = False) -> str:
    def paint(text: str, verdict: str) -> str:
        return f"\033[1;{ANSI.get(verdict, '37')}m{text}\033[0m" if colour else text

    lines = []
    for up in status["upstreams"]:
        verdict = up["verdict"]
        lines.append(f"{up['name']}: {paint(verdict.upper(), verdict)}")
        for signal_text in up["signals"]:
            lines.append(f"  - {signal_text}")
        if up.get("witnesses"):
            lines.append("  witnesses: " + "  ".join(
                f"{w['witness']}={w['view']}{'*' if w.get('decided') else ''}"
                for w in up["witnesses"]) + "   (* decided)")
        rows = list(up["checks"])
        rows.extend(up.get("dependencies") or [])
        rows.extend(up.get("crowd") or [])
        if up.get("statuspage"):
            rows.insert(0, up["statuspage"])
        lines.extend(_rows(rows))
        lines.append("")
    if status.get("control"):
        lines.append("control targets:")
        lines.extend(_rows(status["control"]))
    return "\n".join(lines).rstrip() + "\n"


def _rows(rows: list[dict[str, Any]]) -> list[str]:
    out = [f"  {'CHECK':<22} {'KIND':<11} {'RESULT':<7} {'TIME':>9}  DETAIL"]
    for c in rows:
        took = f"{c['duration_seconds'] * 1000:.0f}ms" if c.get("duration_seconds") is not None else "-"
        if c["result"] == "failed":
            detail = c["reason"] + (": " + c["error"] if c.get("error") else "")
        else:
            detail = c["target"]
        out.append(f"  {c['name']:<22} {c['kind']:<11} {c['result']:<7} {took:>9}  {detail}")
    return out


# -- simulate --------------------------------------------------------------------------------


def simulate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="claude-status-exporter simulate",
        description="Serve a fake status page and fake Claude/OpenAI APIs on loopback for fire "
                    "drills. Switch scenarios at run time with POST /_sim/scenario.")
    parser.add_argument("--scenario", default="operational",
                        help="one of: " + ", ".join([*SCENARIOS, "incident_lifecycle"]))
    parser.add_argument("--listen", default="127.0.0.1:10530", metavar="HOST:PORT")
    parser.add_argument("--cycle", default="", help="comma-separated scenarios to cycle through")
    parser.add_argument("--cycle-seconds", type=float, default=60.0)
    parser.add_argument("--log.level", dest="log_level", default="info",
                        choices=["debug", "info", "warn", "error"])
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    if args.scenario not in SCENARIOS and args.scenario != "incident_lifecycle":
        parser.error(f"unknown scenario {args.scenario!r}")
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    cycle = [s for s in args.cycle.split(",") if s] or None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(sim_serve(host or "127.0.0.1", port, args.scenario, cycle, args.cycle_seconds))
    return 0
