"""The blackbox-like HTTP prober: one request, its status, its body, its phases.

Success needs a status in ``valid_status_codes`` (default: any 2xx) and a body that
matches ``body_regex``, does not match ``body_not_regex`` and holds ``json_path``.
An API key from ``api_key_env`` / ``api_key_file`` goes in ``api_key_header``:
``Authorization`` gets ``Bearer <key>``, any other header the bare key.

The exchange itself is exporter/checks/httpwire.py (one fresh connection per hop, phases from
kernel receive timestamps); this module adds the policy: redirects (at most 10, each hop
checked against a /probe module's allowed_targets before it is followed), the status and
body rules, and the Result.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample
from exporter.checks.httpcommon import (
    HTTP_REASONS,
    MAX_BODY_BYTES,
    USER_AGENT,
    CAFileError,
    own_deadline,
    scrub,
    ssl_context,
)
from exporter.checks.httpwire import (
    REDIRECT_STATUSES,
    Clock,
    Response,
    Url,
    WireError,
    build_request,
    fetch,
)
from exporter.checks.safejson import loads as safe_loads

if TYPE_CHECKING:
    from exporter.config import CheckConfig

MAX_REDIRECTS = 10


class _Outcome:
    """What one run saw, for the gauges; filled in as the exchange proceeds."""

    def __init__(self) -> None:
        self.status = 0
        self.version = 0.0
        self.ssl = False
        self.redirects = 0
        self.length = 0


class _Refused(Exception):
    """A redirect this run will not follow; carries the reason and message for the Result."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def probe(check: CheckConfig, ctx: ProbeContext) -> Result:
    clock = Clock()
    seen = _Outcome()
    lines: list[str] = []
    secret: str | None = None

    def log(message: str) -> None:
        line = scrub(message, secret)
        lines.append(line)
        ctx.log(line)

    def result(reason: str, error: str) -> Result:
        assert not reason or reason in HTTP_REASONS, reason
        if reason:
            log(f"failed: {reason}: {error}")
        # Ends at the kernel's arrival time of the last byte when there was an answer, so
        # time spent judging the body (or a stalled loop) does not count.
        ended = clock.ended if clock.ended is not None else time.perf_counter()
        return Result(
            success=not reason,
            duration_seconds=ended - clock.started,
            reason=reason,
            error=scrub(error, secret),
            gauges=(
                Sample(m.PROBE_HTTP_STATUS_CODE, float(seen.status)),
                Sample(m.PROBE_HTTP_VERSION, seen.version),
                Sample(m.PROBE_HTTP_SSL, 1.0 if seen.ssl else 0.0),
                Sample(m.PROBE_HTTP_REDIRECTS, float(seen.redirects)),
                Sample(m.PROBE_HTTP_CONTENT_LENGTH, float(seen.length)),
                *(Sample(m.PROBE_HTTP_DURATION, value, {"phase": phase})
                  for phase, value in clock.phases()),
            ),
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
        key_header = check.api_key_header
        for name in [n for n in headers if n.lower() == key_header.lower()]:
            del headers[name]
        headers[key_header] = f"Bearer {secret}" if key_header.lower() == "authorization" else secret

    method = check.method
    body = check.body.encode() if check.body is not None else None
    url = Url.parse(check.url or "")  # the config has validated it
    deadline = asyncio.get_running_loop().time() + own_deadline(check)
    try:
        while True:
            context = ssl_context(check) if url.tls else None
            resp = await fetch(url, build_request(method, url, headers, body), tls=context,
                               ip_protocol=check.ip_protocol, deadline=deadline, clock=clock,
                               limit=MAX_BODY_BYTES, head_only=method == "HEAD",
                               stop_at_redirect=check.follow_redirects)
            location = resp.headers.get("location")
            if not check.follow_redirects or resp.status not in REDIRECT_STATUSES or not location:
                break
            url, method, body = _next_hop(check, url, resp, location, method, body, headers,
                                          key_header, seen)
    except WireError as exc:
        if exc.status:
            seen.status, seen.version, seen.ssl = exc.status, exc.version, url.tls
        return result(exc.reason, str(exc))
    except CAFileError as exc:
        return result("tls", str(exc))
    except _Refused as exc:
        return result(exc.reason, str(exc))

    seen.status = resp.status
    seen.version = resp.version
    seen.ssl = url.tls
    seen.length = len(resp.body)
    log(f"{check.method} {url.without_query()} -> HTTP {resp.status} "
        f"after {seen.redirects} redirect(s)")
    valid = check.valid_status_codes
    if (seen.status not in valid) if valid else not 200 <= seen.status < 300:
        expected = ", ".join(map(str, valid)) if valid else "2xx"
        return result("status_mismatch", f"HTTP {seen.status}, expected {expected}")
    return result(*_body_problem(check, resp.body))


def _next_hop(check: CheckConfig, url: Url, resp: Response, location: str, method: str,
              body: bytes | None, headers: dict[str, str], key_header: str,
              seen: _Outcome) -> tuple[Url, str, bytes | None]:
    """The request a redirect asks for, after the checks aiohttp and blackbox make."""
    # Header bytes were read as latin-1; a Location is UTF-8 in practice.
    location = location.encode("latin-1").decode("utf-8", "replace")
    try:
        target = urljoin(url.url, location)
    except ValueError:
        target = location
    if check.allowed_targets:
        from exporter.probe import TargetError, check_target  # probe imports the probers

        try:
            check_target(check, target)
        except TargetError:
            raise _Refused("redirect_refused", f"redirect to {target[:200]!r} refused: not in "
                                               "allowed_targets") from None
    seen.redirects += 1
    if seen.redirects >= MAX_REDIRECTS:  # as aiohttp and Go count: the 10th is not followed
        raise _Refused("status_mismatch", f"more than {MAX_REDIRECTS} redirects")
    try:
        following = Url.parse(target)
    except ValueError:
        raise _Refused("bad_response", f"HTTP {resp.status} redirect to {target[:200]!r}, "
                                       "which is not an http(s) URL") from None
    if following.origin() != url.origin():  # credentials stay with the origin they were for
        for name in [n for n in headers if n.lower() in ("authorization", "cookie", "host")
                     or (key_header and n.lower() == key_header.lower())]:
            del headers[name]
    if (resp.status == 303 and method != "HEAD") or (resp.status in (301, 302) and method == "POST"):
        method, body = "GET", None
    return following, method, body


def _body_problem(check: CheckConfig, body: bytes) -> tuple[str, str]:
    """("", "") when the body passes every configured condition."""
    if check.body_regex is None and check.body_not_regex is None and check.json_path is None:
        return "", ""
    text = body.decode("utf-8", "replace")
    if check.body_regex is not None and not re.search(check.body_regex, text):
        return "body_mismatch", f"body does not match body_regex {check.body_regex!r}"
    if check.body_not_regex is not None and re.search(check.body_not_regex, text):
        return "body_mismatch", f"body matches body_not_regex {check.body_not_regex!r}"
    if check.json_path is not None:
        try:
            doc = safe_loads(text)
        except ValueError:
            return "body_mismatch", "body is not JSON, so json_path cannot hold"
        if not json_path_exists(doc, check.json_path):
            return "body_mismatch", f"json_path {check.json_path!r} is not in the body"
    return "", ""


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def json_path_exists(doc: Any, path: str) -> bool:
    """Dotted path with optional ``$.`` prefix and list indices: ``data.0.id``,
    ``$.data[0].id``. A key whose value is null still exists."""
    path = path.removeprefix("$").removeprefix(".")
    node = doc
    for index, key in _PATH_PART.findall(path):
        part = index or key
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True
