"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: server.crt                  # relative paths are relative to this file
      key_file: server.key
      min_version: TLS12                      # TLS10 | TLS11 | TLS12 (default) | TLS13
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
    http_server_config:
      headers: {X-Content-Type-Options: nosniff}
    basic_auth_users:
      prometheus: $2b$12$...                  # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':')
    exempt_paths: ["/-/healthy"]              # ours, not the toolkit's: paths served without auth

Parsing is strict like the main config: an unknown key, a duplicate key or a bad value is an
error naming its dotted path and line. With users set, every endpoint asks for basic auth,
``/-/reload`` included, except the ``exempt_paths`` (exact paths; ``/-/reload`` may not be
exempt). A reload (SIGHUP or ``POST /-/reload``) re-reads the file: new certificates, client
CAs, TLS versions, users and headers apply to the next connection or request; a bad file
keeps the running one. TLS cannot be switched on or off by a reload.

Differences from the Go toolkit, all reported as errors rather than silently ignored, except
the three ignored keys (``cipher_suites``, ``prefer_server_cipher_suites``,
``curve_preferences``: Python's ssl module uses OpenSSL's defaults, and TLS 1.3 suites are
not configurable there) and ``http2`` (the server speaks HTTP/1.1 only):
``RequestClientCert`` and ``RequireAnyClientCert`` need "request a certificate but do not
verify it", which Python's ssl module cannot do; inline ``cert``/``key`` and
``client_allowed_sans`` are not supported.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import BasicAuth, web

from exporter.config import ConfigError, ConfigIssue, parse_yaml

log = logging.getLogger("exporter.web")

REALM = "claude-status-exporter"
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
IGNORED_TLS_KEYS = ("cipher_suites", "prefer_server_cipher_suites", "curve_preferences")
# The headers the toolkit lets a web config set, in their canonical spelling.
ALLOWED_HEADERS = {h.lower(): h for h in (
    "Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
    "X-XSS-Protection", "Content-Security-Policy")}
# $2a$, $2b$ or $2y$, a cost, 22 characters of salt and 31 of hash. $2$ and $2x$ are old,
# broken variants that the bcrypt library refuses at login time (a 500): refused here.
BCRYPT_RE = re.compile(r"^\$2[aby]\$(\d\d)\$([./A-Za-z0-9]{22})[./A-Za-z0-9]{31}$")
BCRYPT_COSTS = (4, 20)  # bcrypt allows 4-31; past 20 one login takes minutes (a self-DoS)
BCRYPT_MAX_PASSWORD = 72  # bcrypt only ever uses the first 72 bytes
BCRYPT_THREADS = 2  # verifications at once, off the event loop
BCRYPT_QUEUE = 64  # verifications waiting beyond that are answered 429 at once
CACHE_MAX = 1024  # remembered good credentials; cleared when full and on every reload
NEVER_EXEMPT = ("/-/reload",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Reloader = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED

    def context(self) -> ssl.SSLContext:
        """A server context; raises OSError or ssl.SSLError for unusable files."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        ctx.maximum_version = self.max_version
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            ctx.load_verify_locations(cafile=self.client_ca_file)
        ctx.verify_mode = CLIENT_AUTH[self.client_auth_type]
        return ctx


@dataclass(frozen=True)
class WebConfig:
    source: str = "<none>"
    tls: TLSSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    exempt_paths: frozenset[str] = frozenset()
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.context


# -- parsing ---------------------------------------------------------------------------------------


def load(path: str | Path) -> WebConfig:
    """Read and check a web config file, certificates included; raises ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError([ConfigIssue(str(p), None, "",
                                       f"cannot read: {exc.__class__.__name__}: {reason}")]) from None
    return load_text(text, str(p), p.resolve().parent)


def load_text(text: str, source: str, base_dir: Path) -> WebConfig:
    try:
        # A web config needs no YAML aliases; refusing them rules out "billion laughs".
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError([ConfigIssue(source, None, "", "YAML aliases (*name) are not "
                                                             "allowed in a web config")])
        data, doc = parse_yaml(text, source)
    except (yaml.YAMLError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            problem = "nested too deeply"
        else:
            problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise ConfigError([ConfigIssue(source, None, "", f"invalid YAML: {problem}")]) from None
    if doc.issues:
        raise ConfigError(doc.issues)
    p = _Parser(doc.error, base_dir)
    top = p.mapping(data, (), ("tls_server_config", "http_server_config", "basic_auth_users",
                               "exempt_paths"))
    tls = p.tls(top["tls_server_config"]) if "tls_server_config" in top else None
    headers = p.http(top.get("http_server_config"))
    users = p.users(top.get("basic_auth_users"))
    exempt = p.exempt(top.get("exempt_paths"))
    if exempt and "basic_auth_users" not in top:
        doc.error(("exempt_paths",), "has no effect without basic_auth_users")
    context = None
    if tls is not None and not doc.issues:
        try:
            context = tls.context()
        except (OSError, ssl.SSLError, ValueError) as exc:
            doc.error(("tls_server_config",), f"cannot load the certificate, key or client CA: "
                                              f"{getattr(exc, 'strerror', None) or exc}")
    if doc.issues:
        raise ConfigError(doc.issues)
    return WebConfig(source, tls, users, headers, exempt, context)


class _Parser:
    def __init__(self, error: Callable[[tuple[str | int, ...], str], None], base_dir: Path) -> None:
        self.error = error
        self.base_dir = base_dir

    def mapping(self, value: Any, path: tuple[str, ...], allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping (got {_show(value)})")
            return {}
        for key in value:
            if key not in allowed:
                self.error((*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return {k: v for k, v in value.items() if k in allowed}

    def file(self, raw: dict[str, Any], key: str, path: tuple[str, ...]) -> Path | None:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            self.error((*path, key), f"must be a file path (got {_show(value)})")
            return None
        file = self.base_dir / value
        if not file.is_file():
            self.error((*path, key), f"no such file: {file}")
            return None
        return file

    def tls(self, value: Any) -> TLSSettings | None:
        path = ("tls_server_config",)
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping with cert_file and key_file (got {_show(value)})")
            return None
        raw = self.mapping(value, path, ("cert_file", "key_file", "client_auth_type",
                                         "client_ca_file", "min_version", "max_version",
                                         *IGNORED_TLS_KEYS, "cert", "key", "client_allowed_sans"))
        for key in ("cert", "key"):
            if key in raw:
                self.error((*path, key), f"inline PEM is not supported: use {key}_file")
        if "client_allowed_sans" in raw:
            self.error((*path, "client_allowed_sans"), "is not supported")
        for key in IGNORED_TLS_KEYS:
            if key in raw:
                log.warning("web config key ignored: Python's ssl uses OpenSSL's defaults",
                            extra={"key": f"tls_server_config.{key}"})
        missing = [k for k in ("cert_file", "key_file") if k not in raw]
        for key in missing:
            self.error(path, f"missing required key {key}")
        cert = self.file(raw, "cert_file", path) if "cert_file" in raw else None
        key_file = self.file(raw, "key_file", path) if "key_file" in raw else None
        auth = raw.get("client_auth_type", "NoClientCert")
        if auth in UNSUPPORTED_CLIENT_AUTH:
            self.error((*path, "client_auth_type"),
                       f"{auth} (ask for a certificate without verifying it) is not supported; "
                       "use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
            auth = None
        elif auth not in CLIENT_AUTH:
            self.error((*path, "client_auth_type"),
                       f"must be one of {', '.join(CLIENT_AUTH)} (got {_show(auth)})")
            auth = None
        ca = self.file(raw, "client_ca_file", path) if "client_ca_file" in raw else None
        if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and "client_ca_file" not in raw:
            self.error((*path, "client_auth_type"), f"{auth} needs client_ca_file")
        if auth == "NoClientCert" and "client_ca_file" in raw:
            self.error((*path, "client_ca_file"), "is set but client_auth_type is NoClientCert; "
                                                  "set client_auth_type too")
        low, high, bad_version = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED, False
        for key in ("min_version", "max_version"):
            if key not in raw:
                continue
            if raw[key] not in TLS_VERSIONS:
                self.error((*path, key), f"must be one of {', '.join(TLS_VERSIONS)} (got {_show(raw[key])})")
                bad_version = True
            elif key == "min_version":
                low = TLS_VERSIONS[raw[key]]
            else:
                high = TLS_VERSIONS[raw[key]]
        if "max_version" in raw and not bad_version and high < low:
            self.error((*path, "max_version"), "must not be lower than min_version")
            bad_version = True
        if cert is None or key_file is None or auth is None or bad_version:
            return None
        return TLSSettings(cert, key_file, auth, ca, low, high)

    def http(self, value: Any) -> dict[str, str]:
        path = ("http_server_config",)
        raw = self.mapping(value, path, ("headers", "http2"))
        if "http2" in raw and not isinstance(raw["http2"], bool):
            self.error((*path, "http2"), f"must be true or false (got {_show(raw['http2'])})")
        headers: dict[str, str] = {}
        hpath = (*path, "headers")
        given = raw.get("headers")
        if given is None:
            return headers
        if not isinstance(given, dict):
            self.error(hpath, f"must be a mapping of header names to values (got {_show(given)})")
            return headers
        for name, value in given.items():
            canonical = ALLOWED_HEADERS.get(str(name).lower())
            if canonical is None:
                self.error((*hpath, name), f"header not allowed (allowed: {', '.join(ALLOWED_HEADERS.values())})")
            elif not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
                self.error((*hpath, name), f"must be a one-line string (got {_show(value)})")
            else:
                headers[canonical] = value
        return headers

    def users(self, value: Any) -> dict[str, bytes]:
        path = ("basic_auth_users",)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping of user names to bcrypt hashes (got {_show(value)})")
            return {}
        users: dict[str, bytes] = {}
        for user, hashed in value.items():
            if not user or ":" in user:
                self.error((*path, user), "a user name must be non-empty and contain no ':'")
            elif not isinstance(hashed, str) or not _valid_bcrypt(hashed):
                # Never echo the value: it may be a password pasted in by mistake.
                self.error((*path, user), "must be a bcrypt hash ($2a$, $2b$ or $2y$, cost "
                                          f"{BCRYPT_COSTS[0]} to {BCRYPT_COSTS[1]}, 60 "
                                          "characters), for example from htpasswd -nBC 12")
            else:
                users[user] = hashed.encode()
        return users

    def exempt(self, value: Any) -> frozenset[str]:
        path = ("exempt_paths",)
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            self.error(path, f"must be a list of paths (got {_show(value)})")
            return frozenset()
        out = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.startswith("/"):
                self.error((*path, i), f"must be a path starting with / (got {_show(item)})")
            elif item in NEVER_EXEMPT:
                self.error((*path, i), f"{item} changes the exporter's state and always needs auth")
            else:
                out.add(item)
        return frozenset(out)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- serving --------------------------------------------------------------------------------------


class WebGuard:
    """The running web config: basic auth, response headers, and a TLS context whose
    certificates and client CAs a reload can replace without closing the listener."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = load(self.path)  # raises ConfigError: the caller reports it
        # The listener keeps one context for its life. Its SNI callback (called for every
        # handshake, with or without SNI) moves the connection onto the newest context;
        # verify mode and versions are set on the listener's own context too, because a
        # handshake reads those before the callback runs.
        self._listener = self.config.ssl_context()
        if self._listener is not None:
            self._listener.sni_callback = self._pick_context
        self._current = self._listener
        self._cache_key = os.urandom(32)
        self._verified: set[bytes] = set()
        self._bcrypt = asyncio.Semaphore(BCRYPT_THREADS)
        self._waiting = 0
        self._dummies: dict[int, bytes] = {}
        self.routes: set[str] | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self._listener

    def install(self, app: web.Application) -> None:
        """Auth on every route, the configured headers on every response."""
        self.routes = {r.canonical for r in app.router.resources()}
        self._check_routes(self.config)
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._add_headers)

    def reload(self) -> tuple[bool, str]:
        try:
            new = load(self.path)
            self._check_routes(new)
            if (new.tls is None) != (self._listener is None):
                raise ConfigError([ConfigIssue(str(self.path), None, "tls_server_config",
                                               "TLS cannot be switched on or off by a reload; "
                                               "restart the exporter")])
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("web config reload failed; keeping the running one",
                          extra={"issue": str(issue)})
            return False, f"web config: {exc}"
        if self._listener is not None and new.context is not None:
            self._listener.minimum_version = new.context.minimum_version
            self._listener.maximum_version = new.context.maximum_version
            self._listener.verify_mode = new.context.verify_mode
            self._current = new.context
        self.config = new
        self._verified.clear()
        log.info("web config reloaded", extra={"users": len(new.users), "tls": new.tls is not None})
        return True, "web config reloaded"

    def _check_routes(self, config: WebConfig) -> None:
        if self.routes is None:
            return
        unknown = sorted(config.exempt_paths - self.routes)
        if unknown:
            raise ConfigError([ConfigIssue(config.source, None, "exempt_paths",
                                           f"no such endpoint: {', '.join(unknown)}")])

    def _pick_context(self, sslobj: ssl.SSLObject, server_name: str | None,
                      _: ssl.SSLContext) -> None:
        current = self._current
        if current is not None and current is not self._listener:
            sslobj.context = current

    async def _add_headers(self, _: web.Request, response: web.StreamResponse) -> None:
        for name, value in self.config.headers.items():
            response.headers[name] = value

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        config = self.config
        if config.users and not self._exempt(request, config):
            refusal = await self._refusal(request, config)
            if refusal is not None:
                return refusal
        return await handler(request)

    @staticmethod
    def _exempt(request: web.Request, config: WebConfig) -> bool:
        # The route the router matched, not the raw path: no spelling of a path can reach
        # another endpoint through an exemption.
        resource = request.match_info.route.resource
        return resource is not None and resource.canonical in config.exempt_paths

    def _credentials(self, header: str, config: WebConfig,
                     ) -> tuple[bytes, bytes | None, bytes, str] | None:
        """(password, its user's hash or None, the cache digest, login), or None when the
        header holds no basic credentials."""
        try:
            creds = BasicAuth.decode(header, encoding="utf-8") if header else None
        except ValueError:
            creds = None
        if creds is None:
            return None
        password = creds.password.encode("utf-8", "surrogatepass")[:BCRYPT_MAX_PASSWORD]
        hashed = config.users.get(creds.login)
        digest = hmac.new(self._cache_key, b"\0".join(
            (creds.login.encode("utf-8", "surrogatepass"), password, hashed or b"")),
            hashlib.sha256).digest()
        return password, hashed, digest, creds.login

    async def _refusal(self, request: web.Request, config: WebConfig) -> web.Response | None:
        """None when the request carries good credentials, else the 401 (or 429) to send."""
        credentials = self._credentials(request.headers.get("Authorization", ""), config)
        if credentials is None:
            return _unauthorized()
        password, hashed, digest, _ = credentials
        if hashed is not None and digest in self._verified:
            return None
        if self._waiting >= BCRYPT_QUEUE:
            return web.Response(status=429, text="Too many authentications in progress.\n",
                                headers={"Retry-After": "1"})
        self._waiting += 1
        try:
            async with self._bcrypt:
                # An unknown user costs the same bcrypt run as a known one: no timing
                # difference tells which user names exist.
                ok = await asyncio.to_thread(self._verify, password, hashed, config)
        finally:
            self._waiting -= 1
        if not ok or hashed is None:
            log.debug("unauthorized request", extra={"path": request.path, "remote": request.remote})
            return _unauthorized()
        if self.config is config:  # not a reload in between
            if len(self._verified) >= CACHE_MAX:
                self._verified.clear()
            self._verified.add(digest)
        return None

    def _verify(self, password: bytes, hashed: bytes | None, config: WebConfig) -> bool:
        """bcrypt, in a worker thread. An unknown user is checked against a hash of a random
        password at the users' cost, made once per cost."""
        if hashed is None:
            cost = max(int(h[4:6]) for h in config.users.values())
            hashed = self._dummies.get(cost)
            if hashed is None:
                hashed = self._dummies[cost] = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(cost))
            bcrypt.checkpw(password, hashed)
            return False
        try:
            return bool(bcrypt.checkpw(password, hashed))
        except ValueError:
            return False


def _valid_bcrypt(hashed: str) -> bool:
    """A hash bcrypt will accept at login: its shape, a sane cost, and a salt the library
    decodes (tried at the cheapest cost, about a millisecond)."""
    match = BCRYPT_RE.match(hashed)
    if match is None or not BCRYPT_COSTS[0] <= int(match.group(1)) <= BCRYPT_COSTS[1]:
        return False
    try:
        bcrypt.hashpw(b"", f"$2b$04${match.group(2)}".encode())
    except ValueError:
        return False
    return True


def _unauthorized() -> web.Response:
    return web.Response(status=401, text="Unauthorized\n",
                        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
