"""The /probe fast lane: plain ``GET /probe`` requests answered without aiohttp's request
machinery, which cost more CPU per /probe than a tcp probe itself (docs/benchmarks.md).

Every connection starts here. The lane reads a request head and answers it itself only when it
is a simple GET of /probe: HTTP/1.0 or 1.1, a request line and headers within aiohttp's limits,
no body, no ``Expect`` or ``Upgrade``, a query that decodes cleanly, and (with basic auth)
credentials the web guard has already verified. Anything else, from the first request on or
after a few fast ones, hands the connection with its unread bytes to aiohttp's handler for the
rest of its life, so every other endpoint, every error page, bcrypt checks, 401s and limits stay
exactly where they were. Both paths call the same ``probe.answer``.

The lane keeps aiohttp's time limits itself: a connection must complete its first request head
within ``--web.read-header-timeout`` and a kept-alive one sends its next within the idle
timeout, or it is closed. Requests pipelined on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote_plus

from aiohttp import web

from exporter import probe

log = logging.getLogger("exporter.fastlane")

MAX_LINE = 8190  # request line and each header, as aiohttp's max_line_size / max_field_size
MAX_HEADERS = 64
MAX_HEAD = MAX_LINE + MAX_HEADERS * (MAX_LINE + 2) + 4
_REASONS = {200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 429: b"Too Many Requests"}
SERVED_BY = "X-Served-By"  # on /probe answers in worker mode: the pid of the process that ran it
_REFUSED_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))


class Request:
    __slots__ = ("authorization", "close", "query", "scrape_timeout")

    def __init__(self, query: dict[str, str], close: bool, scrape_timeout: str | None,
                 authorization: str | None) -> None:
        self.query = query
        self.close = close
        self.scrape_timeout = scrape_timeout
        self.authorization = authorization


def parse(head: bytes) -> Request | None:
    """A request head (without the blank line) the lane can answer, or None."""
    lines = head.split(b"\r\n")
    request_line = lines[0]
    if len(request_line) > MAX_LINE or len(lines) > MAX_HEADERS + 1:
        return None
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    path, _, query_bytes = parts[1].partition(b"?")
    if path != b"/probe" or b"#" in query_bytes:
        return None
    keep_alive = parts[2] == b"HTTP/1.1"
    scrape_timeout = authorization = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or len(line) > MAX_LINE or name != name.strip() \
                or line[:1] in (b" ", b"\t"):
            return None
        name = name.lower()
        value = value.strip()
        if name in _REFUSED_HEADERS:
            if name != b"content-length" or value != b"0":
                return None
        elif name == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
            if b"upgrade" in tokens:
                return None
        elif name == b"x-prometheus-scrape-timeout-seconds":
            scrape_timeout = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    query = decode_query(query_bytes)
    if query is None:
        return None
    return Request(query, not keep_alive, scrape_timeout, authorization)


def decode_query(raw: bytes) -> dict[str, str] | None:
    """``a=1&b=2`` as a dict (the first value of a repeated key wins, as in aiohttp's
    request.query; a key without ``=`` has the value ""), or None when it is not ASCII or
    decodes to invalid UTF-8. What parse_qsl does, minus its cost for the usual plain query."""
    try:
        text = raw.decode("ascii")
        query: dict[str, str] = {}
        for part in text.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            if "%" in part or "+" in part:
                key = unquote_plus(key, errors="strict")
                value = unquote_plus(value, errors="strict")
            if key not in query:
                query[key] = value
    except UnicodeDecodeError:
        return None
    return query


class Lane:
    """What every connection of one listening socket shares."""

    def __init__(self, runtime: Any, server: web.Server, *, read_header_timeout: float,
                 idle_timeout: float, admits: Callable[[str | None], bool] | None = None,
                 extra_headers: Callable[[], dict[str, str]] | None = None,
                 served_by: bool = False) -> None:
        self.runtime = runtime
        self.server = server  # aiohttp's protocol factory, for handed-off connections
        self.read_header_timeout = read_header_timeout
        self.idle_timeout = idle_timeout
        self.admits = admits  # the web guard: None without basic auth
        self.extra_headers = extra_headers
        self.served_by = f"{SERVED_BY}: {os.getpid()}\r\n".encode() if served_by else b""
        self.connections: set[Connection] = set()
        self._date = (0, b"")

    def __call__(self) -> Connection:
        return Connection(self)

    def date(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode())
        return self._date[1]

    def response(self, reply: probe.Answer, close: bool) -> bytes:
        extra = b""
        if self.extra_headers is not None:
            extra = b"".join(f"{k}: {v}\r\n".encode("latin-1")
                             for k, v in self.extra_headers().items())
        return b"".join((
            b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, b"")),
            b"Content-Type: ", reply.content_type.encode(), b"\r\nContent-Length: %d\r\n"
            % len(reply.body), b"Date: ", self.date(), b"\r\n",
            b"Connection: close\r\n" if close else b"", self.served_by, extra, b"\r\n",
            reply.body))

    async def shutdown(self, grace: float) -> None:
        """Let answers in flight finish for up to ``grace`` seconds, then close everything."""
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for conn in list(self.connections):
            conn.abort()


class Connection(asyncio.Protocol):
    """One client connection: served by the lane until it is handed to aiohttp."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.inner: Any = None  # aiohttp's RequestHandler once handed off
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None  # loop time by which the next head must be in
        self.paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.lane.connections.add(self)
        self._wait_for_head(self.lane.read_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
            return
        self.buffer += data
        if self.task is None:
            self._next()

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            result: bool | None = self.inner.eof_received()
            return result
        return None  # the transport closes; an answer in flight is dropped

    def connection_lost(self, exc: Exception | None) -> None:
        self.lane.connections.discard(self)
        self._cancel_timer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
        if self.inner is not None:
            self.inner.connection_lost(exc)
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        if self.inner is not None:
            self.inner.resume_writing()

    # -- the lane ----------------------------------------------------------------------------

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._hand_off()
            return
        request = parse(self.buffer[:end])
        if request is None or (self.lane.admits is not None
                               and not self.lane.admits(request.authorization)):
            self._hand_off()
            return
        self.buffer = self.buffer[end + 4:]
        self._cancel_timer()
        self.task = asyncio.get_running_loop().create_task(self._serve(request))

    async def _serve(self, request: Request) -> None:
        try:
            reply = await probe.answer(self.lane.runtime, request.query, request.scrape_timeout)
        except Exception:  # answer() does not raise; if it ever does, aiohttp would send 500
            log.exception("/probe failed")
            reply = probe.Answer(500, b"internal error\n", probe.TEXT_TYPE)
        self.task = None
        transport = self.transport
        if transport is None:
            return
        transport.write(self.lane.response(reply, request.close))
        if request.close:
            transport.close()
            return
        self._wait_for_head(self.lane.idle_timeout)
        if self.buffer:
            self._next()

    def _hand_off(self) -> None:
        self._cancel_timer()
        assert self.transport is not None
        self.inner = inner = self.lane.server()
        inner.connection_made(self.transport)
        if self.paused:
            inner.pause_writing()
        data, self.buffer = self.buffer, b""
        if data:
            inner.data_received(data)

    def _wait_for_head(self, seconds: float) -> None:
        # One timer, moved lazily: a kept-alive connection's requests do not each create one.
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + seconds
        if self.timer is None:
            self.timer = loop.call_at(self.deadline, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.deadline is None or self.inner is not None:
            return  # a request is being answered, or aiohttp has the connection
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline:
            self.timer = loop.call_at(self.deadline, self._expire)
            return
        log.debug("closing a connection that sent no complete request in time")
        self.abort()

    def _cancel_timer(self) -> None:
        self.deadline = None

    def abort(self) -> None:
        if self.inner is not None:
            return  # aiohttp's own shutdown closes it
        if self.transport is not None:
            self.transport.abort()


def for_runtime(runtime: Any, server: web.Server, read_header_timeout: float, guard: Any,
                served_by: bool = False) -> Lane:
    """The lane of an exporter (or /probe worker) process; ``guard`` is its WebGuard or None."""
    from exporter.web import IDLE_TIMEOUT

    return Lane(runtime, server, read_header_timeout=read_header_timeout,
                idle_timeout=IDLE_TIMEOUT, admits=guard.admits if guard is not None else None,
                extra_headers=guard.response_headers if guard is not None else None,
                served_by=served_by)


BACKLOG = 1024  # the kernel's queue of connections not yet accepted, per listening socket


def bind(host: str | None, port: int) -> list[socket.socket]:
    """The listening sockets (SO_REUSEADDR). No host: every address, IPv6 and IPv4, on one
    socket; a name: every address it resolves to. OSError: the caller reports it."""
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
            if port == 0 and socks:  # one port for every address, chosen by the first bind
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            socks.append(socket.create_server(address, family=family, backlog=BACKLOG))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def listen(lane: Lane, socks: Sequence[socket.socket], ssl_context: Any,
                 accept_batch: int = BACKLOG) -> list[asyncio.Server]:
    """Serve ``socks`` (already bound) through the lane; close the servers to stop accepting.
    ``accept_batch``: connections one process takes per wakeup (asyncio takes its backlog
    argument's worth); the kernel's queue stays BACKLOG long either way."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        for sock in socks:
            servers.append(await loop.create_server(lane, sock=sock, ssl=ssl_context,
                                                    backlog=accept_batch))
            sock.listen(BACKLOG)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
