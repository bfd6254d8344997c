"""A small HTTP/1.1 client for the http prober: one request on one fresh connection.

Supported: ``http://`` and ``https://`` URLs; TLS through ``ssl.SSLObject`` over memory BIOs,
so plain and TLS connections share one engine; one request per connection with
``Connection: close``, as blackbox_exporter does; bodies framed by Content-Length, by chunked
transfer coding or by the end of the connection; gzip and deflate Content-Encoding decoded
(``Accept-Encoding: gzip, deflate`` is sent, as aiohttp did); interim 1xx answers skipped;
caps on the size of the response head and of the decoded body.

Not supported: HTTP/2, proxies (the http kind has no proxy setting and never used the
environment's), keep-alive or pooling, cookies, ``Expect: 100-continue``, other content
codings (passed through undecoded); trailers are read and dropped. Redirects are left to the
caller (exporter/checks/http.py), which checks every hop before following it.

Timing: the socket has SO_TIMESTAMPNS on and is read with ``recvmsg``, so the arrival of the
first and of the last response byte are the kernel's receive timestamps (CLOCK_REALTIME, moved
into the ``time.perf_counter()`` domain at read time), not the moment the event loop got round
to us: a stalled loop delays our callbacks, not the latency we report. The request counts as
sent just before the send call that hands its last byte to the kernel. Without a timestamp the
callback time is used.

The engine drives the non-blocking socket with ``loop.add_reader`` / ``add_writer`` callbacks
and completes one future per exchange; ``close`` drops the socket, the TLS object and the
timer, so a probe leaves no reference cycle for the garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from exporter.checks.resolve import ResolveError, literal, resolve
from exporter.checks.resources import REASON as LOCAL_RESOURCES
from exporter.checks.resources import local_resource_error

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it
_CMSG_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
_TIMESPEC = struct.Struct("qq")
READ_SIZE = 256 * 1024
MAX_HEAD = 64 * 1024  # status line and headers of one response
MAX_LINE = 4096  # a chunk-size or trailer line
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_NO_BODY_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "DELETE", "TRACE"))
_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d) (\d{3})(?: [^\r\n]*)?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~-._"  # left as is in the request target; the rest is %-encoded
_ours = frozenset(("content-length", "transfer-encoding", "connection"))

# parser modes
_HEAD, _LENGTH, _CLOSE, _SIZE, _CHUNK, _CRLF, _TRAILER, _DONE = range(8)


class WireError(Exception):
    """The exchange failed; ``reason`` is one of dns, connect, tls, timeout, bad_response."""

    def __init__(self, reason: str, message: str, status: int = 0, version: float = 0.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status  # of a response whose body then failed; 0 before the head
        self.version = version


class _Bad(Exception):
    """The response is not valid HTTP/1.x or breaks a limit: reason bad_response."""


class Clock:
    """Phase durations of one probe in seconds (summed over redirect hops, except transfer,
    which is the last response's) and where the probe stands, for timeout messages."""

    __slots__ = ("connect", "ended", "processing", "resolve", "stage", "started", "tls",
                 "transfer")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.resolve = self.connect = self.tls = self.processing = self.transfer = 0.0
        self.ended: float | None = None  # the last byte of the final response arrived
        self.stage = "resolving or connecting"

    def phases(self) -> tuple[tuple[str, float], ...]:
        return (("resolve", self.resolve), ("connect", self.connect), ("tls", self.tls),
                ("processing", self.processing), ("transfer", self.transfer))


class Response:
    __slots__ = ("body", "headers", "status", "version")

    def __init__(self, status: int, version: float, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.version = version
        self.headers = headers  # names in lower case; repeated fields joined with ", "
        self.body = body  # decoded; empty for HEAD and for a redirect left unread


class Url:
    """The parts of an http(s) URL a request needs. Raises ValueError for anything else."""

    __slots__ = ("authority", "host", "port", "target", "tls", "url")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"not an http(s) URL: {url[:200]!r}")
        self.url = url
        self.tls = parts.scheme == "https"
        default = 443 if self.tls else 80
        self.port = parts.port or default  # ValueError for a bad port
        self.host = host
        path = parts.path or "/"
        target = f"{path}?{parts.query}" if parts.query else path
        self.target = target if target.isascii() and " " not in target else quote(target, _TARGET_SAFE)
        name = host if host.isascii() else host.encode("idna").decode("ascii")  # UnicodeError
        if ":" in name:
            name = f"[{name}]"
        self.authority = name if self.port == default else f"{name}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Url:
        """Url(url), remembered: a check probes the same URL run after run."""
        found = _URLS.get(url)
        if found is None:
            if len(_URLS) >= 1024:
                _URLS.clear()
            found = _URLS[url] = cls(url)
        return found

    def origin(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)

    def without_query(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}{self.target.split('?', 1)[0]}"


_URLS: dict[str, Url] = {}


def build_request(method: str, url: Url, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request head and body. Caller headers replace the defaults (case-insensitively);
    framing and Connection are ours. A header that would break the framing raises ValueError."""
    given = {name.lower() for name in headers}
    lines = [f"{method} {url.target} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {url.authority}")
    if "accept" not in given:
        lines.append("Accept: */*")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: gzip, deflate")
    for name, value in headers.items():
        if name.lower() in _ours:
            continue
        if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name[:100]!r} has a name or value that cannot be sent")
        lines.append(f"{name}: {value}")
    if body is not None or method not in _NO_BODY_METHODS:
        if body is not None and "content-type" not in given:
            lines.append("Content-Type: application/octet-stream")
        lines.append(f"Content-Length: {len(body or b'')}")
    lines.append("Connection: close\r\n\r\n")
    head = "\r\n".join(lines).encode()
    return head + body if body else head


async def fetch(url: Url, request: bytes, *, tls: ssl.SSLContext | None, ip_protocol: str,
                deadline: float, clock: Clock, limit: int, head_only: bool,
                stop_at_redirect: bool) -> Response:
    """One exchange on a fresh connection; raises WireError. ``deadline`` is in loop time.

    ``stop_at_redirect``: a redirect with a Location is complete once its head is read."""
    loop = asyncio.get_running_loop()
    clock.ended, clock.transfer = None, 0.0  # the previous hop's, if any
    found = literal(url.host, ip_protocol)
    if found is not None:
        addresses = found.addresses
    else:
        clock.stage = f"resolving {url.host}"
        try:
            async with asyncio.timeout_at(deadline):
                resolved = await resolve(url.host, ip_protocol)
        except ResolveError as exc:
            raise WireError("dns", str(exc)) from None
        except TimeoutError:
            raise WireError("timeout", f"timed out after {time.perf_counter() - clock.started:.2f}s "
                                       f"resolving {url.host}") from None
        clock.resolve += resolved.seconds
        addresses = resolved.addresses
    parser = _Parser(head_only, stop_at_redirect, limit)
    for index, address in enumerate(addresses):
        try:
            conn = _Conn(loop, url, address, tls, request, parser, clock, deadline)
        except OSError as exc:  # no socket to be had (EMFILE, ENOBUFS): ours, not the target's
            local = local_resource_error(exc)
            raise WireError(LOCAL_RESOURCES if local else "connect",
                            local or f"cannot open a socket: {exc.strerror or exc}") from None
        try:
            await conn.future
        finally:
            conn.close()
        if conn.error is None:
            assert parser.status is not None and parser.headers is not None
            return Response(parser.status, parser.version, parser.headers, parser.body())
        reason, message = conn.error
        if conn.connected_at is not None or reason != "connect" or index == len(addresses) - 1:
            raise WireError(reason, message, parser.status or 0, parser.version)
    raise AssertionError("unreachable: resolve() returns at least one address")


class _Conn:
    """One connection driven by loop callbacks; ``future`` completes once, with ``error`` set
    on failure. Instants are in the time.perf_counter() domain."""

    __slots__ = ("_clock", "_connect_at", "_fd", "_first_at", "_handshaking", "_in", "_last",
                 "_last_at", "_loop", "_out", "_parser", "_pending", "_reading", "_request",
                 "_sent_at", "_sock", "_timer", "_tls", "_url", "_where", "_writing",
                 "connected_at", "error", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, url: Url, address: str,
                 context: ssl.SSLContext | None, request: bytes, parser: _Parser, clock: Clock,
                 deadline: float) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)  # first: an OSError here leaves nothing
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # without timestamps, callback times are used
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.error: tuple[str, str] | None = None
        self.connected_at: float | None = None
        self._url = url
        self._request = request
        self._parser = parser
        self._clock = clock
        self._pending = b""
        self._last = False  # _pending ends with the request's last byte
        self._reading = self._writing = False
        self._sent_at: float | None = None
        self._first_at: float | None = None
        self._last_at: float | None = None  # the latest response bytes arrived
        self._where = f"[{url.host}]:{url.port}" if ":" in url.host else f"{url.host}:{url.port}"
        self._tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._handshaking = context is not None
        clock.stage = "connecting"
        self._timer: asyncio.TimerHandle | None = loop.call_at(deadline, self._expire)
        self._connect_at = time.perf_counter()
        code = sock.connect_ex((address, url.port))
        if code not in (0, errno.EINPROGRESS):
            self._os_error(OSError(code, os.strerror(code)))
            return
        # Sending straight away saves a loop turn: on loopback the handshake is usually done
        # already; if not, send() says EAGAIN and we wait for writability.
        if context is None:
            self._queue(request, last=True)
        else:
            self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
            try:
                self._tls = context.wrap_bio(self._in, self._out, server_hostname=url.host)
            except (ssl.SSLError, ValueError) as exc:
                self._fail("tls", f"TLS setup for {self._where} failed: {_ssl_text(exc)}")
                return
            self._handshake(None)

    # -- sending -----------------------------------------------------------------------------

    def _queue(self, data: bytes, last: bool = False) -> None:
        self._pending += data
        self._last = self._last or last
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        sock = self._sock
        if sock is None:
            return
        data = self._pending
        before = time.perf_counter()
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._os_error(exc)
            return
        if sent and self.connected_at is None:
            self._connected(before)
        if sent == len(data):
            self._pending = b""
            if self._writing:
                self._loop.remove_writer(self._fd)
                self._writing = False
            if self._last:
                self._last = False
                self._sent_at = before
                self._clock.stage = "waiting for the response headers"
        else:
            self._pending = data[sent:]
            if not self._writing:
                self._loop.add_writer(self._fd, self._on_writable)
                self._writing = True

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        if self.connected_at is None:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._os_error(OSError(code, os.strerror(code)))
                return
            self._connected(time.perf_counter())
        self._flush()

    def _connected(self, at: float) -> None:
        self.connected_at = at
        self._clock.connect += at - self._connect_at
        if self._handshaking:
            self._clock.stage = "in the TLS handshake"
        self._loop.add_reader(self._fd, self._on_readable)
        self._reading = True

    # -- receiving ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, ancillary, _flags, _address = sock.recvmsg(READ_SIZE, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._os_error(exc)
            return
        arrived = self._arrival(ancillary)
        if self._tls is None:
            self._plain(data, arrived)
            return
        assert self._in is not None
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        if self._handshaking and not self._handshake(arrived):
            return
        self._decrypt(arrived)

    def _arrival(self, ancillary: list[tuple[int, int, bytes]]) -> float:
        """When the bytes just read reached the machine: the kernel's receive timestamp,
        kept between the previous instant we know of and now."""
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                seconds: int
                nanos: int
                seconds, nanos = _TIMESPEC.unpack_from(payload)
                wall, now = time.time_ns(), time.perf_counter_ns()
                at = (seconds * 1_000_000_000 + nanos - wall + now) / 1e9
                floor = self._sent_at or self.connected_at or 0.0
                return min(now / 1e9, max(at, floor))
        return time.perf_counter()

    def _plain(self, data: bytes, arrived: float) -> None:
        if not data:
            self._eof()
            return
        self._take(data, arrived)

    def _take(self, data: bytes, arrived: float) -> None:
        """Response bytes (after TLS) that arrived at ``arrived``."""
        if self._first_at is None:
            self._first_at = arrived
            if self._sent_at is None:  # answered before the request was out: no wait at all
                self._sent_at = arrived
        self._last_at = arrived
        parser = self._parser
        try:
            done = parser.feed(data)
        except _Bad as exc:
            self._fail("bad_response", str(exc))
            return
        if parser.status is not None:
            self._clock.stage = "reading the response body"
        if done:
            self._finish(arrived)

    def _eof(self) -> None:
        if self._first_at is None:
            self._fail("connect", f"connection to {self._where} closed by the server before "
                                  "a response")
            return
        try:
            self._parser.eof()
        except _Bad as exc:
            self._fail("bad_response", str(exc))
            return
        self._finish(self._last_at or time.perf_counter())

    def _finish(self, at: float) -> None:
        clock = self._clock
        assert self._first_at is not None and self._sent_at is not None
        clock.processing += self._first_at - self._sent_at
        clock.transfer = at - self._first_at
        clock.ended = at
        self._done()

    # -- TLS ---------------------------------------------------------------------------------

    def _handshake(self, arrived: float | None) -> bool:
        """One step of the handshake; True once it is complete and the request is queued."""
        tls, out = self._tls, self._out
        assert tls is not None and out is not None
        began = time.perf_counter()
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            if out.pending:
                self._queue(out.read())
            return False
        except (ssl.SSLError, ValueError) as exc:  # a certificate error is both
            self._fail("tls", f"TLS handshake with {self._where} failed: {_ssl_text(exc)}")
            return False
        self._handshaking = False
        # The handshake ended when its last flight arrived plus the time we took for it.
        now = time.perf_counter()
        done = now if arrived is None else min(now, arrived + (now - began))
        if self.connected_at is not None:
            self._clock.tls += done - self.connected_at
        tls.write(self._request)  # goes out with the client's Finished, in one send
        self._queue(out.read(), last=True)
        return self._sock is not None

    def _decrypt(self, arrived: float) -> None:
        tls, out = self._tls, self._out
        assert tls is not None and out is not None
        while self._sock is not None:
            try:
                data = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            except ssl.SSLError as exc:
                self._fail("tls", f"TLS failed: {_ssl_text(exc)}")
                return
            if not data:
                self._eof()
                return
            self._take(data, arrived)
        if out.pending and self._sock is not None:
            self._queue(out.read())

    # -- ending ------------------------------------------------------------------------------

    def _expire(self) -> None:
        self._timer = None
        elapsed = time.perf_counter() - self._clock.started
        self._fail("timeout", f"timed out after {elapsed:.2f}s {self._clock.stage}")

    def _os_error(self, exc: OSError) -> None:
        detail = os.strerror(exc.errno) if exc.errno else str(exc) or exc.__class__.__name__
        if self.connected_at is None:
            self._fail("connect", f"cannot connect to {self._where}: {detail}")
        elif self._handshaking:
            self._fail("tls", f"TLS handshake with {self._where} failed: {detail}")
        elif self._first_at is None:
            self._fail("connect", f"connection failed before a response "
                                  f"({exc.__class__.__name__}: {detail})")
        else:
            self._fail("bad_response", f"response cut short ({exc.__class__.__name__}: {detail})")

    def _fail(self, reason: str, message: str) -> None:
        if self.error is None and not self.future.done():
            self.error = (reason, message)
        self._done()

    def _done(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
        self.close()

    def close(self) -> None:
        """Release everything; safe to call more than once."""
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        if self._reading:
            self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tls, out = self._tls, self._out
        if tls is not None and out is not None and not self._handshaking and self.error is None:
            with contextlib.suppress(ssl.SSLError, ValueError):  # a polite close_notify,
                tls.unwrap()  # best effort, never waited for
            try:
                if out.pending:
                    sock.send(out.read())
            except OSError:
                pass
        sock.close()
        self._tls = self._in = self._out = None
        self._pending = self._request = b""


def _ssl_text(exc: BaseException) -> str:
    return str(getattr(exc, "verify_message", None) or exc or exc.__class__.__name__)


class _Parser:
    """An incremental HTTP/1.x response parser: ``feed`` until it returns True, ``eof`` when
    the peer closed. Raises _Bad for anything malformed or over a limit."""

    __slots__ = ("_buf", "_chunks", "_coding", "_decoder", "_left", "_mode", "_seen", "_size",
                 "head_only", "headers", "limit", "status", "stop_at_redirect", "version")

    def __init__(self, head_only: bool, stop_at_redirect: bool, limit: int) -> None:
        self.head_only = head_only
        self.stop_at_redirect = stop_at_redirect
        self.limit = limit
        self.status: int | None = None
        self.version = 0.0
        self.headers: dict[str, str] | None = None
        self._mode = _HEAD
        self._buf = b""
        self._left = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._seen = 0  # body bytes as sent, before decoding
        self._decoder: zlib._Decompress | None = None
        self._coding = ""

    def body(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    def feed(self, data: bytes) -> bool:
        if self._buf:
            data, self._buf = self._buf + data, b""
        pos, end = 0, len(data)
        while True:
            mode = self._mode
            if mode in (_LENGTH, _CHUNK):
                take = min(self._left, end - pos)
                if take:
                    self._body(data[pos:pos + take] if take < end or pos else data)
                    self._left -= take
                    pos += take
                if self._left:
                    return False
                if mode == _LENGTH:
                    return self._complete()
                self._mode = _CRLF
            elif mode == _HEAD:
                stop = data.find(b"\r\n\r\n", pos)
                if stop < 0 or stop - pos > MAX_HEAD:
                    if end - pos > MAX_HEAD:
                        raise _Bad(f"response head larger than {MAX_HEAD} bytes")
                    self._buf = data[pos:]
                    return False
                self._head(data[pos:stop].decode("latin-1"))
                pos = stop + 4
            elif mode == _CLOSE:
                if pos < end:
                    self._body(data[pos:] if pos else data)
                return False
            elif mode == _CRLF:
                if end - pos < 2:
                    self._buf = data[pos:]
                    return False
                if data[pos:pos + 2] != b"\r\n":
                    raise _Bad("malformed chunked body: no CRLF after a chunk")
                pos += 2
                self._mode = _SIZE
            elif mode in (_SIZE, _TRAILER):
                stop = data.find(b"\r\n", pos)
                if stop < 0:
                    if end - pos > MAX_LINE:
                        raise _Bad("malformed chunked body: a line too long")
                    self._buf = data[pos:]
                    return False
                line = data[pos:stop]
                pos = stop + 2
                if mode == _TRAILER:
                    if not line:
                        return self._complete()
                    continue
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise _Bad(f"malformed chunked body: chunk size {line[:40]!r}")
                self._left = int(size, 16)
                self._mode = _CHUNK if self._left else _TRAILER
            else:
                return True

    def _head(self, text: str) -> None:
        status_line, _, rest = text.partition("\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise _Bad(f"malformed status line {status_line[:80]!r}")
        major, minor, code = match.groups()
        status = int(code)
        headers: dict[str, str] = {}
        for line in rest.split("\r\n") if rest else ():
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                raise _Bad(f"malformed header line {line[:80]!r}")
            key = name.lower()
            value = value.strip(" \t")
            if key not in headers:
                headers[key] = value
            elif key == "content-length":
                if headers[key] != value:
                    raise _Bad("conflicting Content-Length headers")
            else:
                headers[key] += ", " + value
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        length = headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            raise _Bad(f"malformed Content-Length {length[:40]!r}")
        # A well-formed head: from here on the answer counts, even if its body fails.
        self.status, self.version, self.headers = status, int(major) + int(minor) / 10, headers
        if (self.head_only or status in (101, 204, 304)
                or (self.stop_at_redirect and status in REDIRECT_STATUSES and "location" in headers)):
            self._mode = _DONE
            return
        coding = headers.get("content-encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._coding = coding  # zlib-wrapped or raw: decided by the first byte
        transfer = headers.get("transfer-encoding")
        if transfer is not None:  # it overrides Content-Length (RFC 9112 6.3)
            chunked = transfer.rsplit(",", 1)[-1].strip().lower() == "chunked"
            self._mode = _SIZE if chunked else _CLOSE
        elif length is None:
            self._mode = _CLOSE
        else:
            self._left = int(length)
            if self._left > self.limit:
                raise _Bad(f"body larger than {self.limit} bytes")
            self._mode = _LENGTH if self._left else _DONE

    def _body(self, data: bytes) -> None:
        self._seen += len(data)
        if self._coding and self._decoder is None:  # deflate: zlib header, else raw
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS if data[0] & 0x0F == 8
                                               else -zlib.MAX_WBITS)
        decoder = self._decoder
        if decoder is not None:
            if self._seen > self.limit:
                raise _Bad(f"body larger than {self.limit} bytes")
            try:
                data = decoder.decompress(data, self.limit - self._size + 1)
            except zlib.error as exc:
                raise _Bad(f"cannot decode the body: {exc}") from None
        self._size += len(data)
        if self._size > self.limit:
            raise _Bad(f"body larger than {self.limit} bytes")
        if data:
            self._chunks.append(data)

    def _complete(self) -> bool:
        self._mode = _DONE
        decoder = self._decoder
        if decoder is not None and self._seen:
            try:
                self._body_tail(decoder.flush())
            except zlib.error as exc:
                raise _Bad(f"cannot decode the body: {exc}") from None
            if not decoder.eof:
                raise _Bad("compressed body cut short")
        return True

    def _body_tail(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limit:
            raise _Bad(f"body larger than {self.limit} bytes")
        if data:
            self._chunks.append(data)

    def eof(self) -> None:
        """The peer closed the connection: the end of a close-delimited body, else a cut."""
        if self._mode == _DONE:
            return
        if self._mode == _CLOSE:
            self._complete()
            return
        if self.status is None:
            raise _Bad("response head cut short")
        raise _Bad("response body cut short")
