"""The blackbox-like HTTP prober: one request, its status, its body, its phases.

Success needs a status in ``valid_status_codes`` (default: any 2xx) and a body that
matches ``body_regex``, does not match ``body_not_regex`` and holds ``json_path``.
An API key from ``api_key_env`` / ``api_key_file`` goes in ``api_key_header``:
``Authorization`` gets ``Bearer <key>``, any other header the bare key.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample
from exporter.checks.httpcommon import (
    HTTP_REASONS,
    USER_AGENT,
    BodyTooLarge,
    RedirectRefused,
    Timing,
    classify_exception,
    client,
    own_deadline,
    read_body,
    scrub,
)

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


async def probe(check: CheckConfig, ctx: ProbeContext) -> Result:
    timing = Timing()
    seen = _Outcome()
    lines: list[str] = []
    secret: str | None = None

    def log(message: str) -> None:
        line = scrub(message, secret)
        lines.append(line)
        ctx.log(line)

    def result(reason: str, error: str) -> Result:
        assert not reason or reason in HTTP_REASONS, reason
        timing.done()
        if reason:
            log(f"failed: {reason}: {error}")
        gauges = (
            Sample(m.PROBE_HTTP_STATUS_CODE, float(seen.status)),
            Sample(m.PROBE_HTTP_VERSION, seen.version),
            Sample(m.PROBE_HTTP_SSL, 1.0 if seen.ssl else 0.0),
            Sample(m.PROBE_HTTP_REDIRECTS, float(seen.redirects)),
            Sample(m.PROBE_HTTP_CONTENT_LENGTH, float(seen.length)),
            *timing.samples(),
        )
        return Result(
            success=not reason,
            duration_seconds=time.perf_counter() - timing.started,
            reason=reason,
            error=scrub(error, secret),
            gauges=gauges,
            details={"http_status": seen.status, "error_type": None, "reason": reason},
            log=tuple(lines),
        )

    headers = {"User-Agent": USER_AGENT, **check.headers}
    if check.has_secret:
        secret = ctx.secret(check)
        if not secret:
            source = check.api_key_env or check.api_key_file
            return result("auth", f"no API key available from {source}; no request sent")
        name = check.api_key_header
        headers[name] = f"Bearer {secret}" if name.lower() == "authorization" else secret

    body = b""
    try:
        async with (
            asyncio.timeout(own_deadline(check)),
            client(check, timing) as session,
            session.request(
                check.method, check.url or "", headers=headers,
                data=check.body.encode() if check.body is not None else None,
                allow_redirects=check.follow_redirects, max_redirects=MAX_REDIRECTS,
            ) as resp,
        ):
            seen.status = resp.status
            seen.version = resp.version.major + resp.version.minor / 10 if resp.version else 0.0
            seen.ssl = resp.url.scheme == "https"
            seen.redirects = len(resp.history)
            log(f"{check.method} {resp.url.with_query(None)} -> HTTP {resp.status} "
                f"after {seen.redirects} redirect(s)")
            if check.method != "HEAD":
                body = await read_body(resp)
            seen.length = len(body)
            timing.done()
    except RedirectRefused as exc:
        return result("redirect_refused", str(exc))
    except aiohttp.TooManyRedirects:
        return result("status_mismatch", f"more than {MAX_REDIRECTS} redirects")
    except BodyTooLarge as exc:
        return result("bad_response", str(exc))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reason, message = classify_exception(exc, timing, streaming=False,
                                             elapsed=time.perf_counter() - timing.started)
        return result(reason, message)

    valid = check.valid_status_codes
    if (seen.status not in valid) if valid else not 200 <= seen.status < 300:
        expected = ", ".join(map(str, valid)) if valid else "2xx"
        return result("status_mismatch", f"HTTP {seen.status}, expected {expected}")
    return result(*_body_problem(check, body))


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
            doc = json.loads(text)
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
