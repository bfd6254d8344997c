"""The blackbox-like HTTP prober: one request, its status, its headers, its body, its phases.

Success needs a status in ``valid_status_codes`` (default: any 2xx), headers that pass
``fail_if_header_matches`` / ``fail_if_header_not_matches``, and a body that passes
``fail_if_body_matches_regexp``, ``fail_if_body_not_matches_regexp`` (``body_not_regex`` and
``body_regex`` are one-item forms of them), ``json_path`` and ``json_conditions``.
An API key from ``api_key_env`` / ``api_key_file`` goes in ``api_key_header``
(``Authorization`` gets ``Bearer <key>``); ``basic_auth`` and ``authorization`` send
credentials from a secret.

The exchange is the one HTTP client (exporter/checks/net/httpclient.py); this module adds the
policy: redirects (at most 10, each hop checked against a /probe module's allowed_targets
before it is followed, credentials dropped when the origin changes), the matchers, and
blackbox_exporter's series.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from exporter import metrics as m
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample
from exporter.checks.httpcommon import (
    HTTP_REASONS,
    MAX_BODY_BYTES,
    USER_AGENT,
    BodyTooLarge,
    own_deadline,
    read_body,
    scrub,
)
from exporter.checks.net.httpclient import (
    Route,
    Timing,
    TlsFacts,
    auth_header,
    classify,
    connection_facts,
    open_session,
    request_options,
    route,
)
from exporter.checks.net.resolve import address_hash
from exporter.checks.net.safejson import loads as safe_loads
from exporter.checks.net.targets import TargetError, check_target

if TYPE_CHECKING:
    from exporter.config import HttpCheck, JsonCondition

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class _Outcome:
    """What one run saw, for the gauges; filled in as the exchange proceeds."""

    def __init__(self) -> None:
        self.status = 0
        self.version = 0.0
        self.ssl = False
        self.redirects = 0
        self.content_length = -1.0  # blackbox: -1 when the answer declares none
        self.body_length = 0
        self.regex_failed = False
        self.facts = TlsFacts()
        self.path = "direct"


async def probe(check: HttpCheck, ctx: ProbeContext) -> Result:
    timing = Timing()
    seen = _Outcome()
    lines: list[str] = []
    secrets: list[str | None] = []

    def log(message: str) -> None:
        line = scrub(message, *secrets)
        lines.append(line)
        ctx.log(line)

    def result(reason: str, error: str) -> Result:
        assert not reason or reason in HTTP_REASONS, reason
        timing.done()
        if reason:
            log(f"failed: {reason}: {error}")
        return Result(
            success=not reason,
            duration_seconds=(timing.ended or time.perf_counter()) - timing.started,
            reason=reason,
            error=scrub(error, *secrets),
            gauges=_gauges(seen, timing),
            details={"http_status": seen.status, "error_type": None, "reason": reason},
            log=tuple(lines),
        )

    headers = dict(check.headers)
    if not any(name.lower() == "user-agent" for name in headers):
        headers["User-Agent"] = USER_AGENT
    key_header = ""
    if check.has_secret:
        secret = ctx.secret(check)
        if not secret:
            source = check.api_key_env or check.api_key_file
            return result("auth", f"no API key available from {source}; no request sent")
        secrets.append(secret)
        key_header = check.api_key_header
        for name in [n for n in headers if n.lower() == key_header.lower()]:
            del headers[name]
        headers[key_header] = f"Bearer {secret}" if key_header.lower() == "authorization" else secret
    try:
        credential, credential_secret = auth_header(check.basic_auth, check.authorization,
                                                    ctx.secrets)
    except ProbeFailure as exc:
        return result(exc.reason, exc.error)
    if credential is not None:
        secrets.append(credential_secret)
        headers["Authorization"] = credential

    method = check.method
    body = check.body.encode() if check.body is not None else None
    url = check.url or ""  # the config has validated it
    try:
        async with (
            asyncio.timeout(own_deadline(check)),
            open_session(timing, check.tls, ip_protocol=check.ip_protocol,
                         clients=ctx.clients) as session,
        ):
            while True:
                via = route(check.proxy, url, ctx.secrets)
                seen.path = via.path
                async with session.request(method, url, headers=headers, data=body,
                                           allow_redirects=False,
                                           **request_options(check.tls, via)) as resp:
                    _note_response(seen, resp, timing)
                    location = resp.headers.get("Location")
                    if (check.follow_redirects and resp.status in REDIRECT_STATUSES
                            and location):
                        url, method, body = _next_hop(check, url, resp.status, location, method,
                                                      body, headers, key_header, seen)
                        continue
                    if via.proxy is not None and resp.status == 407:
                        return result("proxy", "the proxy asks for credentials (HTTP 407)")
                    content = b"" if method == "HEAD" else await read_body(resp, MAX_BODY_BYTES)
                    timing.done()
                    response_headers = resp.headers
                    break
    except ProbeFailure as exc:  # a redirect this run will not follow, a proxy it cannot use
        return result(exc.reason, exc.error)
    except BodyTooLarge as exc:
        return result("bad_response", str(exc))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reason, message = classify(exc, timing, elapsed=time.perf_counter() - timing.started)
        return result(reason, message)

    seen.body_length = len(content)
    log(f"{check.method} {_without_query(url)} -> HTTP {seen.status} "
        f"after {seen.redirects} redirect(s) via {_via_text(via)}")
    valid = check.valid_status_codes
    if (seen.status not in valid) if valid else not 200 <= seen.status < 300:
        expected = ", ".join(map(str, valid)) if valid else "2xx"
        return result("status_mismatch", f"HTTP {seen.status}, expected {expected}")
    problem = _header_problem(check, response_headers)
    if not problem[0]:
        problem = _body_problem(check, content)
    if problem[0] and problem[2]:
        seen.regex_failed = True
    return result(problem[0], problem[1])


def _note_response(seen: _Outcome, resp: aiohttp.ClientResponse, timing: Timing) -> None:
    seen.status = resp.status
    seen.version = float(f"{resp.version.major}.{resp.version.minor}") if resp.version else 0.0
    seen.ssl = resp.url.scheme == "https"
    seen.content_length = float(resp.content_length) if resp.content_length is not None else -1.0
    seen.facts = connection_facts(timing)


def _via_text(via: Route) -> str:
    if via.proxy is None:
        return "direct"
    return f"proxy {via.proxy.host}:{via.proxy.port}"


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _gauges(seen: _Outcome, timing: Timing) -> tuple[Sample, ...]:
    out = [
        Sample(m.PROBE_HTTP_STATUS_CODE, float(seen.status)),
        Sample(m.PROBE_HTTP_VERSION, seen.version),
        Sample(m.PROBE_HTTP_SSL, 1.0 if seen.ssl else 0.0),
        Sample(m.PROBE_HTTP_REDIRECTS, float(seen.redirects)),
        Sample(m.PROBE_HTTP_CONTENT_LENGTH, seen.content_length),
        Sample(m.PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, float(seen.body_length)),
        Sample(m.PROBE_FAILED_DUE_TO_REGEX, 1.0 if seen.regex_failed else 0.0),
        Sample(m.PROBE_DNS_LOOKUP_TIME, timing.durations["resolve"]),
        *timing.samples(),
    ]
    facts = seen.facts
    if facts.peer is not None:
        out.append(Sample(m.PROBE_IP_PROTOCOL, 6.0 if ":" in facts.peer else 4.0))
        out.append(Sample(m.PROBE_IP_ADDR_HASH, address_hash([facts.peer])))
    if facts.version is not None:
        out.append(Sample(m.PROBE_TLS_VERSION_INFO, 1.0, {"version": facts.version}))
    if facts.earliest_expiry is not None:
        out.append(Sample(m.PROBE_SSL_EARLIEST_CERT_EXPIRY, facts.earliest_expiry))
    if facts.last_chain_expiry is not None:
        out.append(Sample(m.PROBE_SSL_LAST_CHAIN_EXPIRY, facts.last_chain_expiry))
    return tuple(out)


def _next_hop(check: HttpCheck, url: str, status: int, location: str, method: str,
              body: bytes | None, headers: dict[str, str], key_header: str,
              seen: _Outcome) -> tuple[str, str, bytes | None]:
    """The request a redirect asks for, after the checks aiohttp and blackbox make."""
    try:
        target = urljoin(url, location)
    except ValueError:
        target = location
    if check.allowed_targets:
        try:
            check_target(check, target)
        except TargetError:
            raise ProbeFailure("redirect_refused", f"redirect to {target[:200]!r} refused: not in "
                                               "allowed_targets") from None
    seen.redirects += 1
    if seen.redirects >= MAX_REDIRECTS:  # as aiohttp and Go count: the 10th is not followed
        raise ProbeFailure("status_mismatch", f"more than {MAX_REDIRECTS} redirects (last: HTTP "
                                          f"{status})")
    try:
        following = URL(target)
    except ValueError:
        following = None
    if following is None or following.scheme not in ("http", "https") or not following.host:
        raise ProbeFailure("bad_response", f"HTTP {status} redirect to {target[:200]!r}, "
                                       "which is not an http(s) URL")
    if following.origin() != URL(url).origin():  # credentials stay with the origin they were for
        for name in [n for n in headers if n.lower() in ("authorization", "cookie", "host")
                     or (key_header and n.lower() == key_header.lower())]:
            del headers[name]
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
    return target, method, body


def _header_problem(check: HttpCheck, headers: Any) -> tuple[str, str, bool]:
    """(reason, message, a regexp failed) for the header matchers; ("", "", False) if fine."""
    for spec in check.fail_if_header_matches:
        values = headers.getall(spec.header, [])
        if not values and not spec.allow_missing:
            return "header_mismatch", f"header {spec.header} is missing", False
        if any(re.search(spec.regexp, v) for v in values):
            return ("header_mismatch", f"header {spec.header} matches {spec.regexp!r}", True)
    for spec in check.fail_if_header_not_matches:
        values = headers.getall(spec.header, [])
        if not values:
            if spec.allow_missing:
                continue
            return "header_mismatch", f"header {spec.header} is missing", False
        if not any(re.search(spec.regexp, v) for v in values):
            return ("header_mismatch", f"header {spec.header} does not match "
                                       f"{spec.regexp!r}", True)
    return "", "", False


def _body_problem(check: HttpCheck, body: bytes) -> tuple[str, str, bool]:
    """(reason, message, a regexp failed) for the body matchers; ("", "", False) if fine."""
    must_not = (*check.fail_if_body_matches_regexp,
                *((check.body_not_regex,) if check.body_not_regex else ()))
    must = (*check.fail_if_body_not_matches_regexp,
            *((check.body_regex,) if check.body_regex else ()))
    if not must_not and not must and check.json_path is None and not check.json_conditions:
        return "", "", False
    text = body.decode("utf-8", "replace")
    for pattern in must_not:
        if re.search(pattern, text):
            return "body_mismatch", f"body matches {pattern!r}", True
    for pattern in must:
        if not re.search(pattern, text):
            return "body_mismatch", f"body does not match {pattern!r}", True
    if check.json_path is None and not check.json_conditions:
        return "", "", False
    try:
        doc = safe_loads(text)
    except (ValueError, RecursionError):
        return "body_mismatch", "body is not JSON, so the JSON conditions cannot hold", False
    if check.json_path is not None and not json_path_exists(doc, check.json_path):
        return "body_mismatch", f"json_path {check.json_path!r} is not in the body", False
    for condition in check.json_conditions:
        if (failed := json_condition_fails(doc, condition)) is not None:
            return "body_mismatch", failed, condition.matches is not None
    return "", "", False


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
_MISSING = object()


def json_value(doc: Any, path: str) -> Any:
    """The value at a dotted path with optional ``$.`` prefix and list indices
    (``data.0.id``, ``$.data[0].id``); ``_MISSING`` when it is not there."""
    path = path.removeprefix("$").removeprefix(".")
    node = doc
    for index, key in _PATH_PART.findall(path):
        part = index or key
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def json_path_exists(doc: Any, path: str) -> bool:
    """A key whose value is null still exists."""
    return json_value(doc, path) is not _MISSING


def json_condition_fails(doc: Any, condition: JsonCondition) -> str | None:
    """Why ``condition`` does not hold of ``doc``, or None when it holds."""
    value = json_value(doc, condition.path)
    if value is _MISSING:
        return f"json_conditions: {condition.path!r} is not in the body"
    if condition.has_equals:
        # JSON equality: 1 == 1.0, but true is not 1.
        same = (type(value) is bool) == (type(condition.equals) is bool) and value == condition.equals
        if not same:
            return (f"json_conditions: {condition.path!r} is {_shown(value)}, not "
                    f"{_shown(condition.equals)}")
    if condition.matches is not None:
        text = value if isinstance(value, str) else json.dumps(value)
        if not re.search(condition.matches, text):
            return f"json_conditions: {condition.path!r} does not match {condition.matches!r}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."

