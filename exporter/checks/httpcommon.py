"""What the http, anthropic and openai probers share, each done one way only.

The exchange itself (session, proxy, TLS, phases, failure reasons) is
exporter/checks/net/httpclient.py, the one HTTP client of the exporter.
- ``ratelimit_samples``, ``retry_after``, ``upstream_service_seconds``: response headers.
- ``scrub``: keeps API keys out of every text a probe produces.
- ``ApiRun``: one run of an API probe (status, API error types, tokens, TTFT, token budget).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from exporter import metrics as m
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample
from exporter.checks.net.httpclient import PHASES as PHASES
from exporter.checks.net.httpclient import (
    TRANSPORT_REASONS,
    Timing,
    auth_header,
    classify,
    open_session,
    request_options,
    route,
)
from exporter.checks.net.httpclient import USER_AGENT as USER_AGENT
from exporter.checks.net.retryafter import retry_after
from exporter.checks.net.safejson import loads as safe_loads
from exporter.checks.net.sse import Event, SSEError, SSEParser
from exporter.secrets import REDACTED as REDACTED  # re-exported for callers of scrub
from exporter.secrets import scrub as scrub  # the one scrubber, re-exported

if TYPE_CHECKING:
    from exporter.config import ApiCheck, CheckBase

MAX_BODY_BYTES = 10 * 1024 * 1024  # bodies beyond this are not read (http: bad_response)
MAX_ERROR_BODY_BYTES = 256 * 1024

# -- the fixed reason sets (documented in docs/api-probes.md) ------------------------------
API_REASONS = (
    *TRANSPORT_REASONS,  # dns, connect, tls, timeout, proxy, http2_only, bad_response
    "http_5xx",  # 500, 502, 503 (Anthropic), 504 and other 5xx
    "overloaded",  # 529 or error.type overloaded_error; OpenAI 503
    "rate_limited",  # 429 rate_limit_error
    "spend_limit",  # 429 enforced_spend_limit_reached, 400 "...API usage limits"; OpenAI insufficient_quota
    "auth",  # 401 with a key sent, or no key available to send
    "billing",  # 402 billing_error, or 400 "credit balance is too low"
    "permission",  # 403
    "not_found",  # 404 (an unknown model, a wrong base URL)
    "bad_request",  # 400 invalid_request_error
    # bad_response (above): not JSON, the wrong shape, HTML, a keyless probe that got 200
    "stream_error",  # a 200 stream with an error event, cut short, or without its end marker
    "http_status",  # any other unexpected status (3xx, 408, 409, 413, 422, ...)
    "budget_exhausted",  # the daily token budget is spent: no request was sent
)
HTTP_REASONS = (
    *TRANSPORT_REASONS,  # bad_response: a malformed head, a body cut short or too large
    "status_mismatch",  # the status is not in valid_status_codes (default 2xx)
    "body_mismatch",  # a body matcher (regexp lists, json_path, json_conditions) failed
    "header_mismatch",  # fail_if_header_matches / fail_if_header_not_matches
    "auth",  # a configured key or credential could not be read
    "redirect_refused",  # /probe: a redirect led outside the module's allowed_targets
)
# error.type values counted by name in probe_api_errors_total; anything else is "other".
KNOWN_ERROR_TYPES = frozenset({
    # Anthropic (docs "Errors" and the SDK's ErrorType)
    "invalid_request_error", "authentication_error", "billing_error", "permission_error",
    "not_found_error", "conflict_error", "request_too_large", "rate_limit_error",
    "api_error", "timeout_error", "overloaded_error",
    # OpenAI-compatible APIs
    "insufficient_quota", "server_error", "service_unavailable_error", "request_forbidden",
})

def own_deadline(check: CheckBase) -> float:
    """A little under the scheduler's timeout, so the prober reports "timeout" itself."""
    return max(check.timeout * 0.9, check.timeout - 0.5)


def api_url(base: str, path: str) -> str:
    """``base`` may carry a prefix and may already end in /v1 (the OpenAI SDK convention)."""
    root = base.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    return root + path


# -- response headers ---------------------------------------------------------------------------

_ANTHROPIC_RATELIMIT = re.compile(
    r"^anthropic-(ratelimit|priority)-(requests|tokens|input-tokens|output-tokens)-"
    r"(limit|remaining|reset)$")
_OPENAI_RATELIMIT = re.compile(r"^x-ratelimit-(limit|remaining|reset)-(requests|tokens)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|s|m|h)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|s|m|h))+$")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
                   "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """Go-style durations as OpenAI sends them: "12ms", "1m30s", "6m0s", "0.5s"."""
    text = text.strip()
    if not _DURATION.match(text):
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def parse_reset(text: str, now: float) -> float | None:
    """A reset header as Unix time: RFC 3339 (Anthropic) or a duration from now (OpenAI)."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    seconds = parse_duration(text)
    if seconds is None:
        try:
            seconds = float(text)
        except ValueError:
            return None
    return now + seconds if math.isfinite(seconds) and seconds >= 0 else None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def ratelimit_samples(headers: Mapping[str, str], now: float) -> list[Sample]:
    """probe_api_ratelimit_{limit,remaining,reset_timestamp_seconds}{resource} from either
    header family; values that do not parse (or are negative, as some proxies send) are
    left out."""
    specs = {"limit": m.PROBE_API_RATELIMIT_LIMIT, "remaining": m.PROBE_API_RATELIMIT_REMAINING,
             "reset": m.PROBE_API_RATELIMIT_RESET}
    found: dict[tuple[str, str], float] = {}
    for name, value in headers.items():
        lname = name.lower()
        if match := _ANTHROPIC_RATELIMIT.match(lname):
            family, resource, field = match.groups()
            resource = resource.replace("-", "_")
            if family == "priority":
                resource = "priority_" + resource
        elif match := _OPENAI_RATELIMIT.match(lname):
            field, resource = match.groups()
        else:
            continue
        parsed = parse_reset(value, now) if field == "reset" else _number(value)
        if parsed is not None:
            found[(field, resource)] = parsed
    return [Sample(specs[field], value, {"resource": resource})
            for (field, resource), value in sorted(found.items())]


def upstream_service_seconds(headers: Mapping[str, str]) -> float | None:
    for name in ("x-envoy-upstream-service-time", "openai-processing-ms"):
        raw = headers.get(name)
        if raw is not None and (value := _number(raw)) is not None:
            return value / 1000.0
    return None


# -- the daily token budget ------------------------------------------------------------------------


def estimate_tokens(prompt: str, max_tokens: int) -> int:
    """A deliberately high guess of what one paid probe spends: about 3 bytes per token for
    the prompt, 10 tokens of message framing, and every allowed output token."""
    return math.ceil(len(prompt.encode("utf-8")) / 3) + 10 + max_tokens


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def budget_entry(ctx: ProbeContext) -> dict[str, Any]:
    """The spend of the current UTC day, kept in the check's memo."""
    entry = ctx.memo.get("token_budget")
    if not isinstance(entry, dict):
        entry = ctx.memo["token_budget"] = {}
    today = _today()
    if entry.get("day") != today:
        entry.clear()
        entry.update(day=today, spent=0, warned=False)
    return entry


# -- one run of an API probe -------------------------------------------------------------------------


class ApiRun:
    """Collects everything one API probe run learns, and turns it into a Result.

    ``send`` performs the single request (no retries: a retry would hide the failure being
    measured) and hands the response to a mode's handler, which returns ``self.succeed()``
    or ``self.fail(...)``; ``reject`` classifies an error response.
    """

    def __init__(self, check: ApiCheck, ctx: ProbeContext, flavor: str, *, paid: bool) -> None:
        self.check = check
        self.ctx = ctx
        self.flavor = flavor
        self.paid = paid
        self.secret: str | None = None
        self.credential: str | None = None  # from basic_auth / authorization
        self.timing = Timing()
        self.lines: list[str] = []
        self.status = 0
        self.error_type: str | None = None
        self.error_counts: dict[str, int] = {}
        self.backoff: float | None = None
        self.header_samples: list[Sample] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.estimate = estimate_tokens(check.prompt, check.max_tokens) if paid else 0

    # logging and error types
    def log(self, message: str) -> None:
        line = scrub(message, self.secret, self.credential)
        self.lines.append(line)
        self.ctx.log(line)

    def api_error(self, error: Any) -> None:
        """Count the API's own error.type (unknown types as "other")."""
        raw = error.get("type") if isinstance(error, dict) else None
        if not isinstance(raw, str) or not raw:
            return
        kind = raw if raw in KNOWN_ERROR_TYPES else "other"
        self.error_type = kind
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1

    # the exchange
    async def send(self, method: str, path: str, headers: dict[str, str],
                   payload: Mapping[str, Any] | None,
                   handle: Callable[[aiohttp.ClientResponse], Awaitable[Result]]) -> Result:
        if self.paid and (refused := self._budget_refuses()) is not None:
            return refused
        url = api_url(self.check.url or "", path)
        streaming = bool(payload and payload.get("stream"))
        check = self.check
        try:
            via = route(check.proxy, url, self.ctx.secrets)
            async with (
                asyncio.timeout(own_deadline(check)),
                open_session(self.timing, check.tls) as session,
                session.request(method, url, headers=headers, json=payload,
                                allow_redirects=False, **request_options(check.tls, via)) as resp,
            ):
                self._read_headers(resp)
                try:
                    return await handle(resp)
                finally:
                    self.timing.done()
        except ProbeFailure as exc:  # the stream broke, or the proxy cannot be used
            return self.fail(exc.reason, exc.error)
        except json.JSONDecodeError:
            return self.fail("bad_response", "response is not JSON")
        except BodyTooLarge as exc:
            return self.fail("bad_response", str(exc))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            elapsed = time.perf_counter() - self.timing.started
            reason, message = classify(exc, self.timing, streaming=streaming, elapsed=elapsed)
            return self.fail(reason, message)
        except SSEError as exc:
            return self.fail("stream_error", f"malformed event stream: {exc}")

    def credentials(self, headers: dict[str, str]) -> Result | None:
        """Add basic_auth / authorization to ``headers``; a Result when it cannot be read."""
        try:
            value, self.credential = auth_header(self.check.basic_auth, self.check.authorization,
                                                  self.ctx.secrets)
        except ProbeFailure as exc:
            return self.fail(exc.reason, exc.error)
        if value is not None:
            headers["authorization"] = value
        return None

    def send_key(self, headers: dict[str, str], default_scheme: str) -> None:
        """The API key as ``auth_scheme`` says: x-api-key, or Authorization: Bearer."""
        assert self.secret is not None
        if (self.check.auth_scheme or default_scheme) == "bearer":
            headers["authorization"] = f"Bearer {self.secret}"
        else:
            headers["x-api-key"] = self.secret

    def _read_headers(self, resp: aiohttp.ClientResponse) -> None:
        self.status = resp.status
        headers = resp.headers
        now = time.time()
        request_id = headers.get("request-id") or headers.get("x-request-id")
        self.log(f"{resp.method} {resp.url.path} -> HTTP {resp.status}"
                 + (f" request-id={request_id}" if request_id else ""))
        self.header_samples.extend(ratelimit_samples(headers, now))
        wait = retry_after(headers, now)
        if wait is not None:
            self.backoff = wait
            self.log(f"retry-after {wait:g}s")
        service = upstream_service_seconds(headers)
        if service is not None:
            self.header_samples.append(Sample(m.PROBE_API_UPSTREAM_SERVICE_TIME, service))

    async def read_json(self, resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> Any:
        """The body as JSON; raises json.JSONDecodeError (→ bad_response) if it is not."""
        body = await read_body(resp, limit)
        return safe_loads(body) if body else None

    async def reject(self, resp: aiohttp.ClientResponse) -> Result:
        """A response that is not the success the mode expects: classify it."""
        try:
            body = await read_body(resp, MAX_ERROR_BODY_BYTES)
            doc = safe_loads(body)
        except (ValueError, BodyTooLarge):
            doc = None
        error = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(error, dict):
            error = None
        if isinstance(doc, dict) and isinstance(doc.get("request_id"), str):
            self.log(f"request_id={doc['request_id']}")
        self.api_error(error)
        reason = classify_status(self.flavor, resp.status, error)
        shown = f"HTTP {resp.status}"
        if error is not None:
            shown += f" {error.get('type') or ''}: {str(error.get('message') or '')[:200]}"
        elif doc is None:
            shown += " (not JSON)" if resp.status != 200 else " with a body that is not JSON"
        return self.fail(reason, shown.strip())

    def no_key(self) -> Result:
        source = self.check.api_key_env or self.check.api_key_file or "api_key_env"
        return self.fail("auth", f"no API key available from {source}; no request sent")

    async def expect_models(self, resp: aiohttp.ClientResponse) -> Result:
        """A models list: a JSON object whose ``data`` is a list of objects with an id."""
        if resp.status != 200:
            return await self.reject(resp)
        doc = await self.read_json(resp)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not all(isinstance(x, dict) and "id" in x for x in data):
            return self.fail("bad_response", "models list without a data array of models")
        return self.succeed()

    async def expect_stream(self, resp: aiohttp.ClientResponse,
                            on_event: Callable[[Event], bool]) -> Result:
        """A 200 event stream that ``on_event`` sees through to its end marker."""
        if resp.status != 200:
            return await self.reject(resp)
        if resp.content_type != "text/event-stream":
            return self.fail("bad_response", f"HTTP 200 with {resp.content_type or 'no content type'}"
                                             ", not an event stream")
        await self._consume_sse(resp, on_event)
        return self.succeed()

    def stream_error(self, error: Any) -> ProbeFailure:
        """An error the API reported inside a 200 stream: counted, and a failure to raise."""
        self.api_error(error)
        etype = error.get("type") if isinstance(error, dict) else None
        message = str(error.get("message") or "")[:200] if isinstance(error, dict) else ""
        return ProbeFailure("stream_error", f"error in the stream after HTTP 200: {etype or 'unknown'}: {message}")

    async def _consume_sse(self, resp: aiohttp.ClientResponse,
                           on_event: Callable[[Event], bool]) -> None:
        parser = SSEParser()
        received = 0
        async for chunk in resp.content.iter_any():
            received += len(chunk)
            if received > MAX_BODY_BYTES:
                raise ProbeFailure("stream_error", f"stream larger than {MAX_BODY_BYTES} bytes")
            for event in parser.feed(chunk):
                if on_event(event):
                    return
        raise ProbeFailure("stream_error", "stream ended before its end marker"
                            + (" (mid-event)" if parser.pending else ""))

    def text_arrived(self) -> None:
        now = time.perf_counter()
        if self.first_text_at is None:
            self.first_text_at = now
        self.last_text_at = now

    # the budget
    def _budget_refuses(self) -> Result | None:
        budget = self.check.daily_token_budget
        if budget is None:
            return None
        entry = budget_entry(self.ctx)
        if entry["spent"] + self.estimate <= budget:
            return None
        if not entry["warned"]:
            entry["warned"] = True
            self.ctx.logger.warning(
                "check %s/%s: daily token budget of %d tokens is spent (%d used); paid probes "
                "pause until 00:00 UTC", self.check.upstream, self.check.name, budget,
                entry["spent"])
        return self.fail("budget_exhausted",
                         f"daily token budget spent ({entry['spent']} of {budget} tokens); "
                         "no request sent")

    def _spend(self) -> None:
        if not self.paid or self.status != 200:
            return  # error answers are not billed
        if self.input_tokens is None and self.output_tokens is None:
            spent = self.estimate  # a cut stream: assume the worst
        else:
            # An upstream's negative count must not refill the budget.
            spent = max(0, self.input_tokens or 0) + max(0, self.output_tokens or 0)
        if self.check.daily_token_budget is not None:
            budget_entry(self.ctx)["spent"] += spent

    # results
    def succeed(self) -> Result:
        return self._result(True, "", "")

    def fail(self, reason: str, error: str) -> Result:
        return self._result(False, reason, error)

    def _result(self, success: bool, reason: str, error: str) -> Result:
        assert reason in API_REASONS or success, reason
        self.timing.done()
        self._spend()
        if reason:
            self.log(f"failed: {reason}: {error}")
        gauges = [Sample(m.PROBE_HTTP_STATUS_CODE, float(self.status)),
                  Sample(m.PROBE_API_RETRY_AFTER, self.backoff or 0.0),
                  *self.timing.samples(), *self.header_samples]
        observations: list[Sample] = []
        start = self.timing.first_sent or self.timing.started
        if self.first_text_at is not None:
            observations.append(Sample(m.PROBE_API_TTFT, self.first_text_at - start))
            span = (self.last_text_at or self.first_text_at) - self.first_text_at
            if success and self.output_tokens and self.output_tokens > 1 and span > 0:
                gauges.append(Sample(m.PROBE_API_OUTPUT_TOKENS_PER_SECOND,
                                     (self.output_tokens - 1) / span))
        budget = self.check.daily_token_budget
        if budget is not None:
            entry = budget_entry(self.ctx)
            gauges.append(Sample(m.PROBE_API_BUDGET_REMAINING,
                                 float(max(0, budget - entry["spent"]))))
            gauges.append(Sample(m.PROBE_API_BUDGET_EXHAUSTED,
                                 1.0 if reason == "budget_exhausted" else 0.0))
        counters = [Sample(m.PROBE_API_ERRORS, float(n), {"error_type": t})
                    for t, n in sorted(self.error_counts.items())]
        for direction, tokens in (("input", self.input_tokens), ("output", self.output_tokens)):
            if tokens and tokens > 0:  # a negative count from upstream is no spend
                counters.append(Sample(m.PROBE_API_TOKENS, float(tokens), {"direction": direction}))
        details: dict[str, Any] = {"http_status": self.status, "error_type": self.error_type,
                                   "reason": reason}
        if self.backoff is not None:
            details["backoff_seconds"] = self.backoff
        return Result(
            success=success,
            duration_seconds=time.perf_counter() - self.timing.started,
            reason=reason,
            error=scrub(error, self.secret, self.credential),
            gauges=tuple(gauges),
            counters=tuple(counters),
            observations=tuple(observations),
            details=details,
            log=tuple(self.lines),
        )


def classify_status(flavor: str, status: int, error: Mapping[str, Any] | None) -> str:
    """One reason for an HTTP answer that is not the expected success."""
    error = error or {}
    etype = str(error.get("type") or "")
    details = error.get("details")
    code = str(details.get("error_code") or "") if isinstance(details, dict) else ""
    code = code or str(error.get("code") or "")
    message = str(error.get("message") or "").lower()
    if code in ("enforced_spend_limit_reached", "insufficient_quota") or etype == "insufficient_quota":
        return "spend_limit"
    if status == 529 or etype == "overloaded_error":
        return "overloaded"
    if flavor == "openai" and (status == 503 or (status == 429 and "overloaded" in message)):
        return "overloaded"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "http_5xx"
    if status == 400 and "credit balance" in message:
        return "billing"
    if status == 400 and "api usage limits" in message:
        # A spend limit the customer set on the organization or a workspace (Anthropic's
        # errors page): our account, like the 429 enforced_spend_limit_reached.
        return "spend_limit"
    by_status = {401: "auth", 402: "billing", 403: "permission", 404: "not_found",
                 400: "bad_request"}
    if status == 200:
        return "bad_response"
    return by_status.get(status, "http_status")


class BodyTooLarge(Exception):
    """The body exceeds the limit the caller set; it was not read to the end."""


async def read_body(resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
