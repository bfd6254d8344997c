"""The one HTTP client: every HTTP exchange of the exporter goes through ``open_session``.

Status pages, API probes, ``http`` checks and ``/probe`` http modules all use it, so they
share one way of doing each thing:

- ``Timing``: the phases of a request (resolve, connect, tls, processing, transfer) from an
  aiohttp ``TraceConfig`` plus a hook on the TLS context that marks where TCP ends and the
  handshake begins.
- ``route``: the network path to a URL, direct or through a proxy (``proxy: environment``
  reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY in either case, as curl does).
  Through a proxy the proxy resolves the target's name.
- ``tls_context``: a check's ``tls_config`` (CA, client certificate, SNI, versions).
- ``auth_header``: ``basic_auth`` or ``authorization`` from a secret in a file or env var.
- ``classify``: a transport failure as one reason of a fixed set, the same for every kind.
- ``MAX_LINE_SIZE`` and friends: how large a response head may be; beyond them the answer is ``bad_response``.
- ``tls_facts``: version, certificate expiry and peer address of the connection in use.

Runs with the same settings share a session (``Clients``), but every request gets a fresh
connection (``force_close``), so every run measures DNS, TCP and TLS, like blackbox_exporter.
"""

from __future__ import annotations

import base64
import calendar
import contextvars
import functools
import os
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from yarl import URL

from exporter import __version__
from exporter import metrics as m
from exporter.checks.base import ProbeFailure, Sample
from exporter.checks.net.resources import REASON as LOCAL_RESOURCES
from exporter.checks.net.resources import local_resource_error
from exporter.config import (
    CheckConfig,
    PolledCheck,
    ProxyConfig,
    SecretRef,
    TlsConfig,
    WebCheck,
)
from exporter.secrets import Secrets

USER_AGENT = f"claude-status-exporter/{__version__}"
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
FAMILIES = {"auto": socket.AF_UNSPEC, "ip4": socket.AF_INET, "ip6": socket.AF_INET6}
# aiohttp's defaults (8190 bytes a line or field, 128 fields) reject heads that real servers
# send and browsers and blackbox accept: a 16 KiB cookie or CSP header, a 70 KiB head.
MAX_LINE_SIZE = 64 * 1024  # the status line, and one header line
MAX_FIELD_SIZE = 64 * 1024  # one header field
MAX_HEADERS = 200  # with 64 KiB a field, a head of at most ~12.5 MiB, near Go's 10 MiB default
# Every kind that reaches a target through this client can fail for these reasons.
TRANSPORT_REASONS = ("dns", "connect", "tls", "timeout", "proxy", "http2_only", "bad_response",
                     LOCAL_RESOURCES)  # out of file descriptors or buffers: ours
PATHS = ("direct", "proxy")
TLS_VERSION_ENUM = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# blackbox_exporter's spelling, so its dashboards keep working.
TLS_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2",
                "TLSv1.3": "TLS 1.3"}
# The first bytes of an HTTP/2 server's answer to an HTTP/1.1 request: a SETTINGS or GOAWAY
# frame header (length, type 0x04 or 0x07, flags, stream 0).
_H2_FRAME_TYPES = (0x04, 0x07)


# -- timing --------------------------------------------------------------------------------------


class Timing:
    """Durations of the phases of one request, summed over redirects (as blackbox does)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.durations = dict.fromkeys(PHASES, 0.0)
        self.sent: float | None = None  # the request (headers and body) was written
        self.first_sent: float | None = None
        self.headers_at: float | None = None  # the final response's headers arrived
        self.ended: float | None = None
        self.resolved = False  # a local DNS lookup happened (not through a proxy)
        # The latest connection's TLS object and peer address, kept for tls_facts: aiohttp
        # may release (and close) a connection as soon as a short body has arrived.
        self.ssl_object: ssl.SSLObject | None = None
        self.peer: str | None = None
        self._dns_start: float | None = None
        self._conn_start: float | None = None
        self._after_dns: float | None = None
        self._tls_start: float | None = None
        self._done = False

    def dns_start(self) -> None:
        self._dns_start = time.perf_counter()

    def dns_end(self) -> None:
        now = time.perf_counter()
        if self._dns_start is not None:
            self.durations["resolve"] += now - self._dns_start
            self.resolved = True
        self._after_dns = now

    def conn_start(self) -> None:
        self._conn_start = time.perf_counter()
        self._after_dns = None
        self._tls_start = None
        self.ssl_object = None  # a new hop: the previous connection's TLS is not its

    def conn_end(self) -> None:
        now = time.perf_counter()
        base = self._after_dns or self._conn_start or now
        if self._tls_start is not None:
            self.durations["connect"] += max(0.0, self._tls_start - base)
            self.durations["tls"] += now - self._tls_start
        else:
            self.durations["connect"] += now - base

    def request_sent(self) -> None:
        self.sent = time.perf_counter()
        if self.first_sent is None:
            self.first_sent = self.sent

    def answered(self) -> None:
        now = time.perf_counter()
        if self.sent is not None:
            self.durations["processing"] += now - self.sent
        self.headers_at = now
        self.sent = None

    def tls_started(self) -> None:
        self._tls_start = time.perf_counter()

    def done(self) -> None:
        """The body has been read (or reading it failed): ends the transfer phase."""
        if not self._done:
            self.ended = time.perf_counter()
            if self.headers_at is not None:
                self.durations["transfer"] += self.ended - self.headers_at
        self._done = True

    def samples(self) -> list[Sample]:
        return [Sample(m.PROBE_HTTP_DURATION, self.durations[p], {"phase": p}) for p in PHASES]

    def describe_wait(self) -> str:
        """Which part of the exchange a timeout interrupted."""
        if self.headers_at is not None:
            return "reading the response body"
        if self.first_sent is not None:
            return "waiting for the response headers"
        if self._tls_start is not None:
            return "in the TLS handshake"
        if self._after_dns is not None:
            return "connecting"
        return "resolving or connecting"


# The run whose connection is being set up; asyncio creates the TLS object inside the
# awaiting task, so the hook below finds the right Timing even with shared SSL contexts.
_CURRENT: contextvars.ContextVar[Timing | None] = contextvars.ContextVar(
    "claude_status_exporter_timing", default=None)


def _hook(mark: Callable[[Timing], None]) -> Callable[..., Awaitable[None]]:
    """An aiohttp trace callback that marks the current run's Timing. The run is found
    through ``_CURRENT``, so one TraceConfig serves every session (sessions are shared by
    runs, see ``Clients``)."""

    async def callback(_s: aiohttp.ClientSession, _c: SimpleNamespace, _p: object) -> None:
        timing = _CURRENT.get()
        if timing is not None:
            mark(timing)

    return callback


def trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_dns_resolvehost_start.append(_hook(Timing.dns_start))
    tc.on_dns_resolvehost_end.append(_hook(Timing.dns_end))
    tc.on_connection_create_start.append(_hook(Timing.conn_start))
    tc.on_connection_create_end.append(_hook(Timing.conn_end))
    sent = _hook(Timing.request_sent)
    tc.on_request_headers_sent.append(sent)
    tc.on_request_chunk_sent.append(sent)
    answered = _hook(Timing.answered)
    tc.on_request_redirect.append(answered)
    tc.on_request_end.append(answered)
    tc.freeze()
    return tc


def _new_socket(info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket factory: notes the peer address for the run that connects."""
    family, kind, proto, _, address = info
    timing = _CURRENT.get()
    if timing is not None:
        timing.peer = str(address[0])  # the last socket made is the connection that stands
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    return sock


class _TimedSSLContext(ssl.SSLContext):
    """asyncio calls wrap_bio once the TCP connection stands: the start of the handshake."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        timing = _CURRENT.get()
        ssl_object = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if timing is not None:
            timing.tls_started()
            timing.ssl_object = ssl_object
        return ssl_object


# -- TLS -----------------------------------------------------------------------------------------


class TLSConfigError(OSError):
    """A file named in tls_config cannot be used: reported as reason tls."""


class TLSContexts:
    """Built contexts by settings and file versions: loading a CA store costs ~15 ms of CPU,
    so checks with the same tls_config share one; a changed file (new mtime) gets a new one."""

    MAX = 64

    def __init__(self) -> None:
        # (settings, the files' mtimes, ALPN offered) -> context
        self._built: dict[tuple[TlsConfig, tuple[int, ...], bool], ssl.SSLContext] = {}

    def get(self, tls: TlsConfig, alpn: bool = True) -> ssl.SSLContext:
        files = [f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f]
        stamps = []
        for name in files:
            try:
                stamps.append(os.stat(name).st_mtime_ns)
            except OSError as exc:
                raise TLSConfigError(f"cannot read {_which(tls, name)} {name}: "
                                     f"{exc.strerror or exc}") from None
        key = (tls, tuple(stamps), alpn)
        if (ctx := self._built.get(key)) is not None:
            return ctx
        ctx = _build_context(tls, alpn)
        if len(self._built) >= self.MAX:
            self._built.clear()
        self._built[key] = ctx
        return ctx


def _which(tls: TlsConfig, name: str) -> str:
    if name == tls.ca_file:
        return "tls_config.ca_file"
    return "tls_config.cert_file" if name == tls.cert_file else "tls_config.key_file"


def _build_context(tls: TlsConfig, alpn: bool) -> ssl.SSLContext:
    ctx = _TimedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if alpn:
        # Only HTTP/1.1 is spoken: a server that accepts nothing else says so in the
        # handshake (reason http2_only) instead of answering frames we cannot read.
        ctx.set_alpn_protocols(["http/1.1"])
    if tls.min_version:
        ctx.minimum_version = TLS_VERSION_ENUM[tls.min_version]
    if tls.max_version:
        ctx.maximum_version = TLS_VERSION_ENUM[tls.max_version]
    if tls.min_version in ("TLS10", "TLS11") or tls.max_version in ("TLS10", "TLS11"):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL refuses TLS < 1.2 at level 1+
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif tls.ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError too
            raise TLSConfigError(f"cannot load tls_config.ca_file {tls.ca_file}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file and tls.key_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ValueError) as exc:
            # The library's text is not shown: it might quote the key file's contents.
            what = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "unusable"
            raise TLSConfigError(f"cannot load the client certificate {tls.cert_file} with "
                                 f"its key {tls.key_file}: {what}") from None
    return ctx


_CONTEXTS = TLSContexts()  # a cache: written only here, through tls_context


def tls_context(tls: TlsConfig, alpn: bool = True) -> ssl.SSLContext:
    """The context for ``tls``; ``alpn``: offer http/1.1 (the tls kind offers nothing)."""
    return _CONTEXTS.get(tls, alpn)


# -- proxies and credentials ---------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How a request reaches its URL: directly, or through ``proxy``."""

    proxy: URL | None = None
    proxy_auth: aiohttp.BasicAuth | None = None

    @property
    def path(self) -> str:
        return "direct" if self.proxy is None else "proxy"


DIRECT = Route()


def environment_proxy(url: URL) -> URL | None:
    """The proxy the environment names for ``url``, as curl and pip read it: the scheme's own
    variable (https_proxy, http_proxy), else all_proxy; lower case wins; NO_PROXY exempts."""
    # urllib reads (and lower-cases) the whole environment on every call, a tenth of a
    # probe's CPU: the answer is remembered by the few variables it depends on.
    scheme = url.scheme
    key = (tuple(os.environ.get(name) for name in _proxy_variables(scheme)),
           scheme, url.host, url.port)
    if key in _ENV_PROXIES:
        return _ENV_PROXIES[key]
    found = _environment_proxy(url)
    if len(_ENV_PROXIES) >= 4096:
        _ENV_PROXIES.clear()
    _ENV_PROXIES[key] = found
    return found


@functools.lru_cache(maxsize=16)
def _proxy_variables(scheme: str) -> tuple[str, ...]:
    """The variables urllib's answer for ``scheme`` depends on (REQUEST_METHOD: in a CGI
    context it ignores HTTP_PROXY)."""
    names = [f"{scheme}_proxy", "all_proxy", "no_proxy"]
    return (*names, *(n.upper() for n in names), "REQUEST_METHOD")


_ENV_PROXIES: dict[tuple[object, ...], URL | None] = {}


def _environment_proxy(url: URL) -> URL | None:
    proxies = urllib.request.getproxies_environment()
    host = url.host or ""
    # On POSIX proxy_bypass is the NO_PROXY test of the environment (host, host:port,
    # domain suffixes, "*").
    if host and (urllib.request.proxy_bypass(host)
                 or (url.port is not None and urllib.request.proxy_bypass(f"{host}:{url.port}"))):
        return None
    chosen = proxies.get(url.scheme) or proxies.get("all")
    if not chosen:
        return None
    if "://" not in chosen:
        chosen = "http://" + chosen
    return URL(chosen)


def route(proxy: ProxyConfig, url: str | URL, secrets: Secrets) -> Route:
    """The path to ``url``; raises ProbeFailure (reason proxy) for a proxy whose password is missing.
    The proxy's password comes from (or is made known to) ``secrets``."""
    target = url if isinstance(url, URL) else URL(url)
    if proxy.mode == "none":
        return DIRECT
    if proxy.mode == "environment":
        found = environment_proxy(target)
        if found is None:
            return DIRECT
        if found.user is not None:
            # http://user:password@proxy:3128 in the environment, as curl accepts it: the
            # credentials go in Proxy-Authorization and are scrubbed from every output.
            if found.password:
                secrets.remember(found.password)
            return Route(found.with_user(None), aiohttp.BasicAuth(found.user, found.password or ""))
        return Route(found)
    assert proxy.url is not None, "the config requires url"
    auth = None
    if proxy.username is not None:
        password = ""
        if proxy.password_env or proxy.password_file:
            secret = secrets.lookup(proxy.password_env, proxy.password_file)
            if secret is None:
                source = proxy.password_env or proxy.password_file
                raise ProbeFailure("proxy", f"no proxy password available from {source}; "
                                       "no request sent")
            password = secret
        auth = aiohttp.BasicAuth(proxy.username, password)
    return Route(URL(proxy.url), auth)


def network_path(check: CheckConfig) -> str:
    """``direct`` or ``proxy``: the path a check's packets take, for the verdict and
    /api/v1/status. Only kinds that speak HTTP can go through a proxy."""
    if not isinstance(check, WebCheck | PolledCheck) or not check.url:
        return "direct"
    return _path_of(check.url, check.proxy)


@functools.lru_cache(maxsize=4096)
def _path_of(url: str, proxy: ProxyConfig) -> str:
    # The environment is read once per URL: the verdict asks on every refresh.
    if proxy.mode != "environment":
        return "direct" if proxy.mode == "none" else "proxy"
    try:
        return "direct" if environment_proxy(URL(url)) is None else "proxy"
    except ValueError:
        return "direct"


@dataclass(frozen=True)
class Transport:
    """The network settings of one poller that is not a check (the witnesses' feeds)."""

    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    basic_auth: SecretRef | None = None
    authorization: SecretRef | None = None


DEFAULT_TRANSPORT = Transport()


def auth_header(basic: SecretRef | None, authorization: SecretRef | None, secrets: Secrets,
                ) -> tuple[str | None, str | None]:
    """(Authorization header value, the secret in it) from basic_auth or authorization, the
    secret read through ``secrets``."""
    ref = basic or authorization
    if ref is None:
        return None, None
    secret = secrets.lookup(ref.env, ref.file)
    if secret is None:
        what = "basic_auth password" if basic else "authorization credentials"
        raise ProbeFailure("auth", f"no {what} available from {ref.env or ref.file}; no request sent")
    if basic is not None:
        token = base64.b64encode(f"{basic.name}:{secret}".encode()).decode("ascii")
        return f"Basic {token}", secret
    return f"{ref.name} {secret}", secret


# -- the session -----------------------------------------------------------------------------------


def _session(context: ssl.SSLContext, ip_protocol: str, auto_decompress: bool,
             ) -> aiohttp.ClientSession:
    # force_close: a fresh connection per request, closed after it, so every run measures
    # DNS, TCP and TLS for real instead of riding a warm keep-alive connection.
    connector = aiohttp.TCPConnector(
        ssl=context, family=FAMILIES.get(ip_protocol, socket.AF_UNSPEC),
        force_close=True, use_dns_cache=False, limit=0, socket_factory=_new_socket,
    )
    return aiohttp.ClientSession(
        connector=connector, trace_configs=[trace_config()],
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False, auto_decompress=auto_decompress, max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS,
    )


class Clients:
    """Sessions shared by the runs with the same TLS context, IP protocol and decompression.

    Making a ClientSession and its connector per run cost about a tenth of an http probe's
    CPU; shared, each request still gets a connection of its own (``force_close``), and the
    phase hooks find their run through ``_CURRENT``. Owned by the runtime, closed with it."""

    MAX = 64  # beyond this many distinct settings, runs get a session of their own

    def __init__(self) -> None:
        self._sessions: dict[tuple[ssl.SSLContext, str, bool], aiohttp.ClientSession] = {}

    def get(self, context: ssl.SSLContext, ip_protocol: str, auto_decompress: bool,
            ) -> aiohttp.ClientSession | None:
        key = (context, ip_protocol, auto_decompress)
        session = self._sessions.get(key)
        if session is None or session.closed:
            if len(self._sessions) >= self.MAX:
                return None  # closing a shared one could cut another run's request
            session = self._sessions[key] = _session(context, ip_protocol, auto_decompress)
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


@asynccontextmanager
async def open_session(timing: Timing, tls: TlsConfig | None, *, ip_protocol: str = "auto",
                       auto_decompress: bool = True, clients: Clients | None = None,
                       ) -> AsyncIterator[aiohttp.ClientSession]:
    """A session for one run with the check's TLS settings (``tls`` None: no https expected,
    a default context all the same), taken from ``clients`` when given, else made for the
    run and closed after it. Every request gets a fresh connection. Proxies are passed per
    request."""
    context = tls_context(tls or TlsConfig())
    token = _CURRENT.set(timing)
    try:
        shared = clients.get(context, ip_protocol, auto_decompress) if clients else None
        if shared is not None:
            yield shared
        else:
            async with _session(context, ip_protocol, auto_decompress) as session:
                yield session
    finally:
        _CURRENT.reset(token)


def request_options(tls: TlsConfig, via: Route) -> dict[str, Any]:
    """Per-request keyword arguments for aiohttp: the proxy and the SNI override."""
    options: dict[str, Any] = {}
    if via.proxy is not None:
        options["proxy"] = via.proxy
        if via.proxy_auth is not None:
            options["proxy_auth"] = via.proxy_auth
    if tls.server_name:
        options["server_hostname"] = tls.server_name
    return options


# -- classifying failures -----------------------------------------------------------------------------


def classify(exc: BaseException, timing: Timing, *, elapsed: float, streaming: bool = False,
             ) -> tuple[str, str]:
    """``(reason, message)`` for an exception raised while talking to the target.

    Exceptions that are not about the target (programming errors) are not classified: they
    are re-raised and the scheduler reports reason ``internal``.
    """
    if (local := local_resource_error(exc)) is not None:
        return LOCAL_RESOURCES, local
    if isinstance(exc, TimeoutError):
        return "timeout", f"timed out after {elapsed:.2f}s {timing.describe_wait()}"
    if isinstance(exc, TLSConfigError):
        return "tls", str(exc)
    if isinstance(exc, ProbeFailure):
        return exc.reason, exc.error
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        what = "asks for credentials (407)" if exc.status == 407 else f"answered {exc.status}"
        return "proxy", f"the proxy refused the tunnel: it {what} {exc.message or ''}".rstrip()
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return "proxy", f"cannot reach the proxy {exc.host}:{exc.port}: {_os_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        os_error = exc.os_error
        if isinstance(exc, aiohttp.ClientSSLError) or isinstance(os_error, ssl.SSLError):
            return _tls_failure(exc, f"TLS handshake with {where} failed")
        if isinstance(os_error, socket.gaierror):
            return "dns", f"cannot resolve {exc.host}: {os_error.strerror or os_error}"
        return "connect", f"cannot connect to {where}: {_os_text(os_error)}"
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return _tls_failure(exc, "TLS failed")
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "bad_response", f"too many redirects ({len(exc.history)})"
    if isinstance(exc, aiohttp.ClientResponseError) and timing.headers_at is None:
        # The server answered, but not with an HTTP/1.1 head we accept.
        detail = str(exc.message or exc)
        if looks_like_http2(detail):
            return "http2_only", ("the server answered in HTTP/2 framing: it speaks only "
                                  "HTTP/2 (this exporter speaks HTTP/1.1)")
        return "bad_response", f"malformed response head: {_short(detail)}"
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        what = exc.__class__.__name__
        detail = _short(str(exc) or "no detail")
        if timing.headers_at is None:
            return "connect", f"connection failed before a response ({what}: {detail})"
        if streaming:
            return "stream_error", f"stream broken after {elapsed:.2f}s ({what}: {detail})"
        return "bad_response", f"response body cut short ({what}: {detail})"
    raise exc


def _tls_failure(exc: BaseException, prefix: str) -> tuple[str, str]:
    text = _ssl_text(exc)
    if "NO_APPLICATION_PROTOCOL" in text.upper() or "no application protocol" in text.lower():
        return "http2_only", (f"{prefix}: the server accepts no protocol this exporter speaks "
                              "(ALPN offered http/1.1): it speaks only HTTP/2")
    return "tls", f"{prefix}: {text}"


def looks_like_http2(detail: str) -> bool:
    """An HTTP/1.1 parser's complaint about bytes that are an HTTP/2 frame header."""
    raw = detail.encode("latin-1", "replace")
    for marker in (b"\\x00\\x00", b"\x00\x00"):
        at = raw.find(marker)
        if at < 0:
            continue
        rest = raw[at:]
        if marker == b"\x00\x00" and len(rest) >= 4 and rest[3] in _H2_FRAME_TYPES:
            return True
        if marker != b"\x00\x00" and (b"\\x00\\x00\\x12\\x04" in rest or b"\\x04\\x00" in rest[:24]
                                      or b"\\x07\\x00" in rest[:24]):
            return True
    return "PRI * HTTP/2" in detail


def _os_text(os_error: OSError) -> str:
    if os_error.errno:
        return os.strerror(os_error.errno)
    return str(os_error.strerror or os_error)


def _ssl_text(exc: BaseException) -> str:
    inner = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    verify = getattr(inner, "verify_message", None)
    return str(verify or getattr(inner, "reason", None) or inner or inner.__class__.__name__)


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."


# -- what the connection in use tells ---------------------------------------------------------------


@dataclass
class TlsFacts:
    """Facts of a response's connection, read while it is still open."""

    peer: str | None = None  # the address connected to (the proxy's, through a proxy)
    version: str | None = None  # "TLS 1.3"
    earliest_expiry: float | None = None
    last_chain_expiry: float | None = None


def connection_facts(timing: Timing) -> TlsFacts:
    """What the latest connection of ``timing``'s run showed."""
    facts = TlsFacts(peer=timing.peer)
    ssl_object = timing.ssl_object
    if ssl_object is not None and ssl_object.version() is not None:
        version = ssl_object.version()
        facts.version = TLS_VERSIONS.get(version or "", version or "unknown")
        presented = expiries(peer_chain(ssl_object))
        if presented:
            facts.earliest_expiry = min(presented)
        verified = expiries(verified_chain(ssl_object))
        if verified:
            facts.last_chain_expiry = min(verified)
        elif presented:
            facts.last_chain_expiry = facts.earliest_expiry
    return facts


def expiries(chain: list[bytes]) -> list[float]:
    out = []
    for der in chain:
        try:
            out.append(not_after(der))
        except ValueError:
            continue
    return out


def _chain(ssl_object: ssl.SSLObject | None, name: str) -> list[bytes] | None:
    if ssl_object is None:
        return []
    getter = getattr(ssl_object, name, None)  # Python 3.13+
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), name, None)
    if getter is None:
        return None
    chain = getter()
    if not chain:
        return []
    out = []
    for cert in chain:
        if isinstance(cert, bytes):
            out.append(cert)
        else:
            out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out


def peer_chain(ssl_object: ssl.SSLObject | None) -> list[bytes]:
    """DER of every certificate the peer presented, leaf first (the leaf alone if the
    Python version cannot tell more)."""
    chain = _chain(ssl_object, "get_unverified_chain")
    if chain:
        return chain
    leaf = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return [leaf] if leaf else []


def verified_chain(ssl_object: ssl.SSLObject | None) -> list[bytes]:
    """The chain as verified up to a trusted root; empty without verification."""
    return _chain(ssl_object, "get_verified_chain") or []


# -- just enough DER to find a certificate's notAfter ----------------------------------------------


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    offset = start
    while offset < end:
        tag, content_start, content_end = _tlv(data, offset)
        out.append((tag, content_start, content_end))
        offset = content_end
    return out


def not_after(der: bytes) -> float:
    """Unix time of an X.509 certificate's notAfter (RFC 5280 section 4.1)."""
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, tbs_start, tbs_end = _tlv(der, start)
    if tag != 0x30:
        raise ValueError("no TBSCertificate")
    fields = _children(der, tbs_start, tbs_end)
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity
    if len(fields) < 4 or fields[3][0] != 0x30:
        raise ValueError("no validity")
    validity = _children(der, fields[3][1], fields[3][2])
    if len(validity) != 2:
        raise ValueError("malformed validity")
    tag, value_start, value_end = validity[1]
    return _der_time(tag, der[value_start:value_end].decode("ascii"))


def _der_time(tag: int, text: str) -> float:
    if not text.endswith("Z"):
        raise ValueError(f"time without Z: {text!r}")
    digits = text[:-1]
    if tag == 0x17 and len(digits) == 12:  # UTCTime YYMMDDHHMMSS
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000
        rest = digits[2:]
    elif tag == 0x18 and len(digits) == 14:  # GeneralizedTime YYYYMMDDHHMMSS
        year = int(digits[:4])
        rest = digits[4:]
    else:
        raise ValueError(f"unsupported time {text!r}")
    if not rest.isdigit():
        raise ValueError(f"unsupported time {text!r}")
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))

