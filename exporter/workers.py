"""``--web.probe-workers=N``: answer /probe from N more processes, so probes use every core.

The main process binds the listening sockets itself (one per address the listen host resolves
to) and starts N worker processes (``python -m exporter.workers``) that inherit them; every
process accepts on the same sockets and the kernel spreads the connections. The main process
runs the exporter exactly as without workers (background checks, /metrics, reload) and answers
everything, /probe included, on the shared sockets. A worker answers GET /probe itself, with
the modules of the same config file, and forwards every other request unchanged to the main
process over a unix socket in a private directory (mode 0700), so /metrics, the status page and
/-/ready always show the main process's state. The same app construction
(``exporter.web.make_app``) builds both, so the web config (TLS, basic auth), the body limit
and the slow-client guard apply in workers too.

Reload (SIGHUP or POST /-/reload): the main process reloads, then sends SIGHUP to each worker,
which re-reads the config file and the web config (a bad one keeps the old). SIGTERM to the
main process stops the workers too (SIGTERM, then SIGKILL after the grace). A worker that dies
is logged and replaced, at most ``RESTARTS_PER_MINUTE`` times a minute. A worker dies with the
main process (``PR_SET_PDEATHSIG``).

Each worker writes its /probe request counts to the private directory every
``COUNTS_EVERY`` seconds; the main process adds them to ``exporter_probe_requests_total``, so
that counter covers every process, up to a second late. The /probe concurrency limit
(``exporter.probe.MAX_CONCURRENT``) holds per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from exporter import eventloop, fastlane, probe

log = logging.getLogger("exporter.workers")

RESTARTS_PER_MINUTE = 5  # replacements of dead workers; more wait for the minute to pass
SUPERVISE_EVERY = 0.25  # seconds between checks that every worker is alive
COUNTS_EVERY = 1.0  # seconds between a worker's writes of its /probe request counts
# Connections a process accepts per wakeup of the shared socket. asyncio accepts up to its
# backlog argument in one go, so one process would take a whole burst of new connections (and
# keep them, with keep-alive); one at a time lets every idle process take its share. uvloop
# (libuv) ignores this and accepts until the queue is empty, yet every woken process races for
# the burst: measured with wrk -c16 and 2 workers, each of 8 rounds spread the 16 connections
# over at least two of the three processes, as on asyncio (docs/benchmarks.md).
ACCEPT_BATCH = 1
SERVED_BY = fastlane.SERVED_BY
# Not forwarded either way: they describe one connection, not the request.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "content-length"})
PR_SET_PDEATHSIG = 1


async def served_by(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/probe":
        response.headers[SERVED_BY] = str(os.getpid())


def _counts_file(directory: Path, pid: int) -> Path:
    return directory / f"probe-counts-{pid}.json"


def _read_counts(path: Path) -> Counter[tuple[str, str]]:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return Counter()
    return Counter({(str(module), str(outcome)): int(count) for module, outcome, count in rows})


class WorkerPool:
    """The main process's side: the shared socket, the unix socket, the workers."""

    def __init__(self, args: argparse.Namespace, host: str | None, port: int, count: int,
                 config_text: str | None = None) -> None:
        self.args = args
        self.host, self.port, self.count = host, port, count
        self.dir = Path(tempfile.mkdtemp(prefix="claude-status-exporter-"))  # mode 0700
        self.unix_path = self.dir / "main.sock"
        self.config_file: str | None = args.config_file
        if config_text is not None:  # --demo: the workers read the same config from a file
            path = self.dir / "demo.yml"
            path.write_text(config_text)
            self.config_file = str(path)
        self.socks: list[socket.socket] = []
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.retired: Counter[tuple[str, str]] = Counter()  # counts of workers that exited
        self.restarts: deque[float] = deque()
        self._supervisor: asyncio.Task[None] | None = None

    def install(self, app: web.Application) -> None:
        """Before the app starts: name the serving pid on /probe, pass reloads on, count."""
        from exporter.web import RELOADERS_KEY

        app.on_response_prepare.append(served_by)
        app[RELOADERS_KEY].append(self.reload)
        probe.COUNT_SOURCES.append(self.request_counts)

    async def start(self, runner: web.AppRunner, lane: fastlane.Lane,
                    ssl_context: Any) -> list[asyncio.Server]:
        """Listen on the shared sockets (the servers returned) and the unix socket; start the
        workers."""
        self.socks = fastlane.bind(self.host, self.port)  # OSError: the caller reports it
        servers = await fastlane.listen(lane, self.socks, ssl_context, ACCEPT_BATCH)
        await web.UnixSite(runner, str(self.unix_path)).start()
        os.chmod(self.unix_path, 0o600)
        self.workers = [self._spawn() for _ in range(self.count)]
        self._supervisor = asyncio.create_task(self._supervise(), name="probe-workers")
        return servers

    def _spawn(self) -> subprocess.Popen[bytes]:
        a = self.args
        fds = tuple(sock.fileno() for sock in self.socks)
        argv = [sys.executable, "-m", "exporter.workers", *(f"--fd={fd}" for fd in fds),
                f"--forward={self.unix_path}", f"--counts={self.dir}", f"--parent={os.getpid()}",
                f"--web.read-header-timeout={a.read_header_timeout}",
                f"--log.level={a.log_level}", f"--log.format={a.log_format}",
                f"--runtime.event-loop={getattr(a, 'event_loop', 'auto')}"]
        if self.config_file:
            argv.append(f"--config.file={self.config_file}")
        if a.web_config:
            argv.append(f"--web.config.file={a.web_config}")
        if a.vantage:
            argv.append(f"--vantage={a.vantage}")
        # Its own session: a Ctrl-C in the terminal reaches the main process, which stops it.
        proc = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.info("probe worker started", extra={"pid": proc.pid})
        return proc

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_EVERY)
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > 60:
                self.restarts.popleft()
            for slot, proc in enumerate(self.workers):
                if proc is not None and proc.poll() is None:
                    continue
                if proc is not None:
                    log.error("probe worker exited; replacing it",
                              extra={"pid": proc.pid, "code": proc.returncode})
                    self._retire(proc.pid)
                    self.workers[slot] = None
                if len(self.restarts) >= RESTARTS_PER_MINUTE:
                    continue  # tried again on a later pass, once the minute has moved on
                self.restarts.append(now)
                self.workers[slot] = self._spawn()

    def _retire(self, pid: int) -> None:
        path = _counts_file(self.dir, pid)
        self.retired.update(_read_counts(path))
        with contextlib.suppress(OSError):
            path.unlink()

    def pids(self) -> list[int]:
        return [p.pid for p in self.workers if p is not None and p.poll() is None]

    def reload(self) -> tuple[bool, str]:
        """After the main process's own reload: each worker re-reads the config itself."""
        told = 0
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
                told += 1
        return True, f"{told} /probe worker(s) told to reload"

    def request_counts(self) -> Counter[tuple[str, str]]:
        total = Counter(self.retired)
        for pid in self.pids():
            total.update(_read_counts(_counts_file(self.dir, pid)))
        return total

    async def stop(self, grace: float) -> None:
        """Stop supervising, SIGTERM every worker, SIGKILL what is left after ``grace``."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        live = [p for p in self.workers if p is not None and p.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for _ in range(int(grace / 0.05)):
            if all(p.poll() is not None for p in live):
                break
            await asyncio.sleep(0.05)
        for proc in live:
            if proc.poll() is None:
                log.warning("probe worker did not stop in time; killing it",
                            extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        with contextlib.suppress(ValueError):
            probe.COUNT_SOURCES.remove(self.request_counts)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the worker ----------------------------------------------------------------------------------


class Forwarder:
    """Sends a request on to the main process over its unix socket and returns its answer."""

    def __init__(self, unix_path: str) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=unix_path), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            async with self.session.request(
                    request.method, URL("http://main" + request.raw_path, encoded=True),
                    headers=headers, data=body or None, allow_redirects=False,
                    skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent",
                                       "Content-Type")) as answer:
                payload = await answer.read()
                out = CIMultiDict((k, v) for k, v in answer.headers.items()
                                  if k.lower() not in HOP_BY_HOP)
                return web.Response(status=answer.status, reason=answer.reason, headers=out,
                                    body=payload)
        except aiohttp.ClientError as exc:
            log.warning("the main process did not answer a forwarded request",
                        extra={"error": exc.__class__.__name__})
            return web.Response(status=502, text="the main process did not answer\n")


async def _write_counts(directory: Path) -> None:
    path = _counts_file(directory, os.getpid())
    written: dict[tuple[str, str], int] = {}
    while True:
        counts = dict(probe._requests)  # this process's own, not COUNT_SOURCES
        if counts != written:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps([[m, o, n] for (m, o), n in counts.items()]))
            os.replace(tmp, path)
            written = counts
        await asyncio.sleep(COUNTS_EVERY)


async def serve_worker(opts: argparse.Namespace) -> None:
    from exporter import cli
    from exporter.config import ConfigError, ConfigIssue, parse_duration
    from exporter.runtime import Runtime, new_session
    from exporter.web import RELOADERS_KEY, SERVER_LIMITS, SlowClientGuard, make_app, reload_all

    try:
        slow_clients = SlowClientGuard(parse_duration(opts.read_header_timeout))
    except ValueError as exc:
        raise ConfigError([ConfigIssue("--web.read-header-timeout", None, "", str(exc))]) from None
    # A Runtime that never starts: the config's modules and a session, no background checks.
    runtime = Runtime(cli.config_loader(opts.config_file), opts.vantage)
    runtime.session = new_session()
    forwarder = Forwarder(opts.forward)
    app = make_app(runtime, slow_clients, forward=forwarder.handle)
    app.on_response_prepare.append(served_by)
    ssl_context = None
    guard = None
    if opts.web_config:
        from exporter.webconfig import WebGuard

        guard = WebGuard(opts.web_config)
        guard.install(app)
        app[RELOADERS_KEY].append(guard.reload)
        ssl_context = guard.ssl_context
    runner = web.AppRunner(app, handle_signals=False,
                           access_log=logging.getLogger("aiohttp.access"),
                           shutdown_timeout=cli.SHUTDOWN_GRACE / 2, **SERVER_LIMITS)
    await runner.setup()
    assert runner.server is not None
    tasks = [asyncio.create_task(slow_clients.watch(runner.server), name="slow-client-guard"),
             asyncio.create_task(_write_counts(Path(opts.counts)), name="probe-counts")]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_all, app)
    lane = fastlane.for_runtime(runtime, runner.server, slow_clients.timeout, guard,
                                served_by=True)
    listening: list[asyncio.Server] = []
    try:
        socks = [socket.socket(fileno=fd) for fd in opts.fd]
        listening = await fastlane.listen(lane, socks, ssl_context, ACCEPT_BATCH)
        log.info("probe worker serving", extra={"pid": os.getpid()})
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for server in listening:
            server.close()
        await lane.shutdown(cli.SHUTDOWN_GRACE / 2)
        await runner.cleanup()
        await forwarder.session.close()
        await runtime.session.close()
        with contextlib.suppress(OSError):  # the last counts, for the main process to keep
            path = _counts_file(Path(opts.counts), os.getpid())
            path.write_text(json.dumps([[m, o, n] for (m, o), n in probe._requests.items()]))


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m exporter.workers",
                                     description="A /probe worker; started by the exporter "
                                                 "with --web.probe-workers, not by hand.")
    parser.add_argument("--fd", type=int, action="append", required=True,
                        help="an inherited listening socket (one per address)")
    parser.add_argument("--forward", required=True, help="the main process's unix socket")
    parser.add_argument("--counts", required=True, help="where to write /probe counts")
    parser.add_argument("--parent", type=int, required=True, help="the main process's pid")
    parser.add_argument("--config.file", dest="config_file")
    parser.add_argument("--web.config.file", dest="web_config")
    parser.add_argument("--web.read-header-timeout", dest="read_header_timeout", default="10s")
    parser.add_argument("--log.level", dest="log_level", default="info")
    parser.add_argument("--log.format", dest="log_format", default="logfmt")
    parser.add_argument("--vantage")
    parser.add_argument("--runtime.event-loop", dest="event_loop", default="auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from exporter import logs
    from exporter.config import ConfigError

    opts = worker_parser().parse_args(argv)
    # Die with the main process, even if it is killed outright.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != opts.parent:
        return 1  # it died before the line above
    logs.setup(opts.log_level, opts.log_format)
    try:
        eventloop.run(serve_worker(opts), opts.event_loop)
    except ConfigError as exc:
        log.error("probe worker: invalid config, not starting", extra={"error": str(exc)})
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
