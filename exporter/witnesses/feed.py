"""Fetching and decoding the witnesses' feeds, politely, as status pages are fetched.

``fetch`` is the one function here that speaks HTTP (through the exporter's one HTTP client,
exporter/checks/net/httpclient.py, with the witness's proxy and TLS settings); everything else is
pure. ``poll`` wraps it with what every feed needs: conditional
requests (ETag, Last-Modified) remembered per URL, a bounded body, the status page's failure
reasons (timeout, connect, tls, http_status, not_json, schema, too_large), and backoff with
Retry-After. A payload that cannot be read becomes a failed Result, never an exception.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from exporter import __version__
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample
from exporter.checks.net.httpclient import (
    DEFAULT_TRANSPORT,
    Timing,
    Transport,
    auth_header,
    classify,
    open_session,
    request_options,
    route,
)
from exporter.checks.net.retryafter import parse_retry_after
from exporter.checks.net.safejson import SchemaError
from exporter.checks.net.safejson import loads as safe_loads
from exporter.secrets import Secrets
from exporter.witnesses.statuspage import backoff_seconds

USER_AGENT = f"claude-status-exporter/{__version__}"
MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
LABEL_MAX_CHARS = 256
MEMO_FAILURES = "witness_consecutive_failures"
ACCEPT_JSON = "application/json"
ACCEPT_XML = "application/rss+xml, application/xml;q=0.9, text/xml;q=0.8"

_SURROGATE = re.compile("[\ud800-\udfff]")
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class Fetched:
    status: int
    url: str
    body: bytes | None  # None on 304 Not Modified
    etag: str | None
    last_modified: str | None


async def fetch(url: str, *, accept: str, time_limit: float, max_bytes: int, secrets: Secrets,
                etag: str | None = None, last_modified: str | None = None,
                transport: Transport = DEFAULT_TRANSPORT) -> Fetched:
    """GET one feed; raises ProbeFailure with a reason from the status page's set. The
    transport's credentials are read through ``secrets``."""
    headers = {"User-Agent": USER_AGENT, "Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    timing = Timing()
    credential, _ = auth_header(transport.basic_auth, transport.authorization, secrets)
    if credential is not None:
        headers["Authorization"] = credential
    try:
        via = route(transport.proxy, url, secrets)
        async with (
            asyncio.timeout(time_limit),
            open_session(timing, transport.tls) as session,
            session.get(url, headers=headers, allow_redirects=True, max_redirects=MAX_REDIRECTS,
                        **request_options(transport.tls, via)) as resp,
        ):
            final = str(resp.url)
            if resp.status == 304:
                return Fetched(304, final, None, resp.headers.get("ETag"),
                               resp.headers.get("Last-Modified"))
            if via.proxy is not None and resp.status == 407:
                raise ProbeFailure("proxy", "the proxy asks for credentials (HTTP 407)",
                                  http_status=407)
            if not 200 <= resp.status < 300:
                raise ProbeFailure("http_status", f"HTTP {resp.status} from {final}",
                                  retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                                  http_status=resp.status)
            declared = resp.content_length
            if declared is not None and declared > max_bytes:
                raise ProbeFailure("too_large", f"Content-Length {declared} exceeds the "
                                  f"{max_bytes}-byte limit", http_status=resp.status)
            body = bytearray()
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                body += chunk
                if len(body) > max_bytes:
                    raise ProbeFailure("too_large", f"body exceeds the {max_bytes}-byte limit "
                                      "(stopped reading)", http_status=resp.status)
            return Fetched(resp.status, final, bytes(body), resp.headers.get("ETag"),
                           resp.headers.get("Last-Modified"))
    except ProbeFailure:
        raise
    except aiohttp.TooManyRedirects:
        raise ProbeFailure("http_status", f"more than {MAX_REDIRECTS} redirects from {url}") \
            from None
    except aiohttp.ClientPayloadError as exc:
        raise ProbeFailure("connect", f"connection broke off before the full body: "
                          f"{short(exc)}") from None
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlRedirectClientError) as exc:
        raise ProbeFailure("http_status", f"bad HTTP exchange with {url}: "
                          f"{type(exc).__name__}") from None
    except (aiohttp.ClientError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            raise
        if isinstance(exc, aiohttp.ClientResponseError) and timing.headers_at is not None:
            raise ProbeFailure("http_status", f"bad HTTP exchange with {url}: "
                              f"{type(exc).__name__}") from None
        reason, message = classify(exc, timing, elapsed=time.perf_counter() - timing.started)
        if reason == "bad_response" and timing.headers_at is not None:
            reason = "connect"  # the body broke off: the status page's reason for it
        raise ProbeFailure(reason, f"{message} ({url})") from None


# -- decoding -------------------------------------------------------------------------------


def decode_text(body: bytes) -> str:
    """Text from a BOM-marked UTF-8/UTF-16/UTF-32 body, else UTF-8; bad bytes replaced."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):
        if body.startswith(bom):
            return body.decode(codec, errors="replace")
    return body.decode("utf-8", errors="replace")


def decode_json(body: bytes) -> Any:
    text = decode_text(body).lstrip(" \t\r\n")
    if not text:
        raise ProbeFailure("not_json", "the body is empty")
    if text.startswith("<"):
        raise ProbeFailure("not_json", "the body is HTML or XML, not JSON")
    try:
        return safe_loads(text)  # surrogates, depth, huge numbers: see safejson
    except ValueError as exc:
        raise ProbeFailure("not_json", f"malformed JSON: {short(exc)}") from None


def decode_xml(body: bytes) -> ET.Element:
    """The root element. A DTD is refused outright: no feed needs one, and entity
    declarations are how XML payloads expand (billion laughs) or reach outside."""
    text = decode_text(body)
    head = text.lstrip(" \t\r\n")
    if not head.startswith("<"):
        raise ProbeFailure("not_json", "the body is not XML")
    if _DTD.search(text.encode("utf-8", errors="replace")):
        raise ProbeFailure("schema", "the XML declares a DTD or entities (refused)")
    # The text is already decoded: drop the declaration so its encoding cannot disagree.
    head = re.sub(r"^<\?xml[^>]*\?>", "", head, count=1)
    try:
        return ET.fromstring(head)
    except (ET.ParseError, RecursionError, ValueError) as exc:
        raise ProbeFailure("not_json", f"malformed XML: {short(exc)}") from None


def text(value: Any) -> str:
    """A label-safe string: numbers as text, lone surrogates replaced, long text cut."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        out = str(value)
    elif isinstance(value, str):
        out = _SURROGATE.sub("\ufffd", value).strip()
    else:
        return ""
    return out if len(out) <= LABEL_MAX_CHARS else out[: LABEL_MAX_CHARS - 1] + "…"


def objects(value: Any) -> list[Mapping[str, Any]]:
    """The dict items of a list; anything else gives none."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def short(exc: BaseException) -> str:
    out = str(exc) or type(exc).__name__
    return out if len(out) <= 200 else out[:197] + "..."


# -- one poll -------------------------------------------------------------------------------


T = TypeVar("T")  # what a feed's parser makes of a body


@dataclass(frozen=True)
class Request(Generic[T]):
    url: str
    accept: str
    parse: Callable[[bytes], T]  # body -> parsed document; raises ProbeFailure/SchemaError


async def get_parsed(ctx: ProbeContext, req: Request[T], time_limit: float,
                     max_bytes: int, transport: Transport = DEFAULT_TRANSPORT) -> T:
    """The parsed document at ``req.url``: fetched conditionally, or the cached one on 304."""
    memo_key = f"witness:{req.url}"
    cached = ctx.memo.get(memo_key)
    etag = last_modified = None
    if isinstance(cached, tuple):
        _, etag, last_modified = cached
    ctx.log(f"GET {req.url}" + (" (conditional)" if etag or last_modified else ""))
    got = await fetch(req.url, accept=req.accept, time_limit=time_limit + 1.0,
                      max_bytes=max_bytes, secrets=ctx.secrets, etag=etag,
                      last_modified=last_modified, transport=transport)
    if got.body is None:
        if not isinstance(cached, tuple):
            raise ProbeFailure("http_status", "HTTP 304 Not Modified without a cached answer")
        ctx.log(f"304 Not Modified from {got.url}: reusing the previous answer")
        document: T = cached[0]  # what req.parse made of this URL's last body
        ctx.memo[memo_key] = (document, got.etag or etag, got.last_modified or last_modified)
        return document
    try:
        parsed = req.parse(got.body)
    except SchemaError as exc:
        raise ProbeFailure("schema", f"not the expected document: {exc}") from None
    except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # A parser bug on a strange payload is still a payload we cannot read.
        raise ProbeFailure("schema", f"unreadable document: {type(exc).__name__}") from None
    ctx.log(f"parsed {len(got.body)} bytes from {got.url}")
    ctx.memo[memo_key] = (parsed, got.etag, got.last_modified)
    return parsed


async def poll(ctx: ProbeContext, requests: list[Request[T]], *, interval: float,
               time_limit: float, max_bytes: int, samples: Callable[[list[T]], tuple[Sample, ...]],
               details: Callable[[list[T]], Mapping[str, object]],
               transport: Transport = DEFAULT_TRANSPORT) -> Result:
    """Fetch every request in turn; success only when all parsed. ``samples`` and ``details``
    turn the parsed documents (in request order) into gauges and facts for the verdict."""
    start = time.perf_counter()
    first_line = len(ctx.lines)
    # Finish a little before the scheduler's own deadline so the reason is ours.
    budget = max(0.05, time_limit - min(0.25, time_limit * 0.1))
    parsed: list[T] = []
    try:
        async with asyncio.timeout(budget):
            for req in requests:
                parsed.append(await get_parsed(ctx, req, time_limit, max_bytes, transport))
    except TimeoutError:
        failure = ProbeFailure("timeout", f"no complete answer within {budget:.3g}s")
    except ProbeFailure as exc:
        failure = exc
    else:
        ctx.memo[MEMO_FAILURES] = 0
        return Result(success=True, duration_seconds=time.perf_counter() - start,
                      gauges=samples(parsed), details=details(parsed),
                      log=tuple(ctx.lines[first_line:]))
    before = ctx.memo.get(MEMO_FAILURES)
    failures = (before if isinstance(before, int) else 0) + 1
    ctx.memo[MEMO_FAILURES] = failures
    delay = backoff_seconds(failures, interval, failure.retry_after)
    ctx.log(f"poll failed ({failure.reason}): {failure.error}; failure {failures} in a row, "
            f"next poll in {delay:.0f}s")
    facts: dict[str, Any] = {"backoff_seconds": delay, "consecutive_failures": failures}
    if failure.http_status is not None:
        facts["http_status"] = failure.http_status
    return Result(success=False, duration_seconds=time.perf_counter() - start,
                  reason=failure.reason, error=failure.error, details=facts,
                  log=tuple(ctx.lines[first_line:]))
