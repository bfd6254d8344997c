"""Fake Anthropic and OpenAI-compatible APIs, faithful to the wire formats the probes read.

``add_routes(app, prefix, flavor, scenario)`` mounts one flavour under ``prefix``; the
current ``Scenario.api`` decides every answer (see ``API_BEHAVIORS`` in scenarios.py, plus
``EXTRA_BEHAVIORS`` here). What the fakes reproduce:

- Anthropic: ``GET /v1/models`` (paged list), ``GET /v1/models/{id}``,
  ``POST /v1/messages/count_tokens``, ``POST /v1/messages`` (JSON or a real SSE stream with
  ``ping`` events and the padded data lines seen in recorded traffic). Errors are
  ``{"type":"error","error":{...},"request_id":...}`` with the same id in ``request-id``;
  a missing key gets 401 "x-api-key header is required", a missing or unknown
  ``anthropic-version`` a 400, an unknown model a 404. Every response carries
  ``anthropic-ratelimit-*`` headers (RFC 3339 resets) and ``x-envoy-upstream-service-time``.
- OpenAI: ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or ``data:`` chunks
  ending in ``data: [DONE]``, with a usage chunk on ``stream_options.include_usage``);
  errors ``{"error":{message,type,param,code}}``; ``x-ratelimit-*`` headers with duration
  resets; overload is a 503; a rejected key is echoed masked, as OpenAI does.

Server-side failures (slow, html, overloaded, server_error) hit keyless requests too, so a
keyless probe sees an outage; account failures (rate limits, spend limit, 401/402/403)
need a key, as on the real API. Each request is counted per path in ``api_log(app)``.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from exporter.simulator.scenarios import Scenario

# Behaviours beyond scenarios.API_BEHAVIORS, for tests of the remaining failure classes.
EXTRA_BEHAVIORS = (
    "billing",  # 402 billing_error (OpenAI flavour: 429 insufficient_quota is spend_limit)
    "bad_request",  # 400 invalid_request_error to every keyed request
)
ANTHROPIC_VERSIONS = ("2023-06-01", "2023-01-01")
ANTHROPIC_MODELS = (  # newest first, as the real list is
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
)
OPENAI_MODELS = (("gpt-4o-mini", 1721172741), ("gpt-4.1-nano", 1744321707),
                 ("o4-mini", 1744225351))
REPLY = ("Pong", "!", " The", " API", " is", " answering", " normally", ".")
DELTA_GAP = 0.004  # seconds between streamed text pieces
RETRY_AFTER = 7  # seconds, on rate-limited answers
PADDING = (11, 7, 6, 12, 9, 8, 10)  # spaces before the final "}" of data lines


@dataclass
class ApiLog:
    """What the fakes received: requests per path, and the last request's headers and body
    per path (test-only memory; it holds whatever key a client sent)."""

    counts: Counter[str] = field(default_factory=Counter)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    bodies: dict[str, Any] = field(default_factory=dict)


API_LOG = web.AppKey("claude_status_exporter_api_log", ApiLog)


def api_log(app: web.Application) -> ApiLog:
    return app[API_LOG]


def add_routes(app: web.Application, prefix: str, flavor: str,
               scenario: Callable[[], Scenario]) -> None:
    if flavor not in ("anthropic", "openai"):
        raise ValueError(f"unknown API flavour {flavor!r}")
    if API_LOG not in app:
        app[API_LOG] = ApiLog()
    log = app[API_LOG]
    base = prefix.rstrip("/")
    fake = _Anthropic(scenario, log) if flavor == "anthropic" else _OpenAI(scenario, log)
    for method, path, handler in fake.routes():
        app.router.add_route(method, base + path, handler)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(math.ceil(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _padded(payload: dict[str, Any], pad: int) -> str:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return text[:-1] + " " * pad + text[-1]


def _input_tokens(messages: Any) -> int:
    """A stable stand-in for a tokenizer: a quarter token per character plus framing."""
    chars = 0
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            chars += len(content) if isinstance(content, str) else len(json.dumps(content))
    return math.ceil(chars / 4) + 7


class _Fake:
    """What both flavours share: counting, the scenario's server-side failures, delays."""

    request_id_prefix = "req_"

    def __init__(self, scenario: Callable[[], Scenario], log: ApiLog) -> None:
        self.scenario = scenario
        self.log = log

    def routes(self) -> list[tuple[str, str, Handler]]:
        raise NotImplementedError

    def wrap(self, endpoint: Callable[[web.Request, str, dict[str, str]],
                                      Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            started = time.monotonic()
            self.log.counts[request.path] += 1
            self.log.headers[request.path] = dict(request.headers)
            state = self.scenario().api
            if state.behavior == "slow":
                await asyncio.sleep(state.slow_seconds)
            rid = _request_id(self.request_id_prefix)
            headers = self.common_headers(rid, state.behavior, started)
            if state.behavior == "html":
                return web.Response(status=200, content_type="text/html", headers=headers,
                                    text="<!DOCTYPE html><html><head><title>Welcome</title>"
                                         "</head><body>Proxy login required</body></html>")
            failure = self.server_failure(state.behavior, rid, headers)
            if failure is not None:
                return failure
            try:
                return await endpoint(request, rid, headers)
            except ConnectionResetError:
                # The prober hung up mid-stream (its timeout, or a cut test): nothing to report.
                return web.Response(status=499)

        return handler

    def common_headers(self, rid: str, behavior: str, started: float) -> dict[str, str]:
        raise NotImplementedError

    def server_failure(self, behavior: str, rid: str,
                       headers: dict[str, str]) -> web.Response | None:
        raise NotImplementedError

    async def body(self, request: web.Request) -> Any:
        try:
            doc = await request.json()
        except ValueError:
            doc = None
        self.log.bodies[request.path] = doc
        return doc


class _Anthropic(_Fake):
    request_id_prefix = "req_011C"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/v1/models", self.wrap(self.models)),
            ("GET", "/v1/models/{model_id}", self.wrap(self.model)),
            ("POST", "/v1/messages/count_tokens", self.wrap(self.count_tokens)),
            ("POST", "/v1/messages", self.wrap(self.messages)),
        ]

    def common_headers(self, rid: str, behavior: str, started: float) -> dict[str, str]:
        now = time.time()
        limited = behavior in ("rate_limited", "rate_limited_no_retry_after")
        headers = {"request-id": rid,
                   "x-envoy-upstream-service-time": str(max(1, round((time.monotonic() - started) * 1000)))}
        limits = {"requests": (1000, 0 if limited else 999), "tokens": (96000, 96000),
                  "input-tokens": (80000, 80000), "output-tokens": (16000, 16000)}
        reset = _rfc3339(now + (RETRY_AFTER if limited else 1))
        for resource, (limit, remaining) in limits.items():
            headers[f"anthropic-ratelimit-{resource}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{resource}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{resource}-reset"] = reset
        return headers

    def error(self, status: int, etype: str, message: str, rid: str, headers: dict[str, str],
              details: dict[str, str] | None = None) -> web.Response:
        error: dict[str, Any] = {"type": etype, "message": message}
        if details:
            error["details"] = details
        body = {"type": "error", "error": error, "request_id": rid}
        return web.json_response(body, status=status, headers=headers)

    def server_failure(self, behavior: str, rid: str,
                       headers: dict[str, str]) -> web.Response | None:
        if behavior == "overloaded":
            return self.error(529, "overloaded_error", "Overloaded", rid, headers)
        if behavior == "server_error":
            return self.error(500, "api_error", "Internal server error", rid, headers)
        return None

    def refuse(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.Response | None:
        """Authentication, version and account checks, in the API's order."""
        key = request.headers.get("x-api-key", "") or request.headers.get("authorization", "")
        if not key.strip():
            return self.error(401, "authentication_error", "x-api-key header is required",
                              rid, headers)
        version = request.headers.get("anthropic-version")
        if version is None:
            return self.error(400, "invalid_request_error",
                              "anthropic-version: header is required", rid, headers)
        if version not in ANTHROPIC_VERSIONS:
            return self.error(400, "invalid_request_error",
                              f"anthropic-version: invalid version {version!r}", rid, headers)
        behavior = self.scenario().api.behavior
        if behavior == "unauthorized":
            return self.error(401, "authentication_error", "invalid x-api-key", rid, headers)
        if behavior == "forbidden":
            return self.error(403, "permission_error", "Your API key does not have permission "
                              "to use the specified resource.", rid, headers)
        if behavior == "billing":
            return self.error(402, "billing_error", "Your account has a billing problem; "
                              "check your payment details.", rid, headers)
        if behavior == "bad_request":
            return self.error(400, "invalid_request_error", "messages: field required", rid,
                              headers)
        if behavior in ("rate_limited", "rate_limited_no_retry_after"):
            if behavior == "rate_limited":
                headers = {**headers, "retry-after": str(RETRY_AFTER)}
            return self.error(429, "rate_limit_error", "Number of request tokens has exceeded "
                              "your per-minute rate limit; see the response headers for "
                              "current usage.", rid, headers)
        if behavior == "spend_limit":
            return self.error(429, "rate_limit_error", "You have reached your specified API "
                              "usage limits. You will regain access on the 1st of next month.",
                              rid, headers, {"error_code": "enforced_spend_limit_reached"})
        return None

    @staticmethod
    def known(model: Any) -> dict[str, str] | None:
        for model_id, name, created in ANTHROPIC_MODELS:
            if model in (model_id, model_id.rsplit("-", 1)[0]):
                return {"type": "model", "id": model_id, "display_name": name,
                        "created_at": created}
        return None

    async def models(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.StreamResponse:
        if (refused := self.refuse(request, rid, headers)) is not None:
            return refused
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self.error(400, "invalid_request_error",
                              "limit: Input should be between 1 and 1000", rid, headers)
        listed = [m for m in (self.known(i) for i, _, _ in ANTHROPIC_MODELS) if m]
        after = request.query.get("after_id")
        if after is not None:
            ids = [m["id"] for m in listed]
            listed = listed[ids.index(after) + 1:] if after in ids else []
        page = listed[:limit]
        return web.json_response({
            "data": page, "has_more": len(listed) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }, headers=headers)

    async def model(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.StreamResponse:
        if (refused := self.refuse(request, rid, headers)) is not None:
            return refused
        found = self.known(request.match_info["model_id"])
        if found is None:
            return self.error(404, "not_found_error",
                              f"model: {request.match_info['model_id']}", rid, headers)
        return web.json_response(found, headers=headers)

    def invalid_body(self, doc: Any, rid: str, headers: dict[str, str],
                     needs_max_tokens: bool) -> web.Response | None:
        if not isinstance(doc, dict):
            return self.error(400, "invalid_request_error", "body: invalid JSON", rid, headers)
        for name in ("model", "messages", *(("max_tokens",) if needs_max_tokens else ())):
            if name not in doc:
                return self.error(400, "invalid_request_error", f"{name}: Field required", rid,
                                  headers)
        if self.known(doc["model"]) is None:
            return self.error(404, "not_found_error", f"model: {doc['model']}", rid, headers)
        return None

    async def count_tokens(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.StreamResponse:
        if (refused := self.refuse(request, rid, headers)) is not None:
            return refused
        doc = await self.body(request)
        if (invalid := self.invalid_body(doc, rid, headers, needs_max_tokens=False)) is not None:
            return invalid
        return web.json_response({"input_tokens": _input_tokens(doc["messages"])},
                                 headers=headers)

    async def messages(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.StreamResponse:
        if (refused := self.refuse(request, rid, headers)) is not None:
            return refused
        doc = await self.body(request)
        if (invalid := self.invalid_body(doc, rid, headers, needs_max_tokens=True)) is not None:
            return invalid
        max_tokens = doc["max_tokens"]
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.error(400, "invalid_request_error",
                              "max_tokens: Input should be greater than or equal to 1", rid,
                              headers)
        model = self.known(doc["model"])
        assert model is not None
        pieces = REPLY[:max_tokens]
        stop_reason = "max_tokens" if max_tokens < len(REPLY) else "end_turn"
        input_tokens = _input_tokens(doc["messages"])
        message_id = "msg_01" + secrets.token_hex(11)
        if not doc.get("stream"):
            return web.json_response({
                "id": message_id, "type": "message", "role": "assistant", "model": model["id"],
                "content": [{"type": "text", "text": "".join(pieces)}],
                "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": len(pieces),
                          "service_tier": "standard"},
            }, headers=headers)
        return await self.stream(request, headers, model["id"], message_id, pieces, stop_reason,
                                 input_tokens)

    async def stream(self, request: web.Request, headers: dict[str, str], model: str,
                     message_id: str, pieces: tuple[str, ...], stop_reason: str,
                     input_tokens: int) -> web.StreamResponse:
        state = self.scenario().api
        resp = web.StreamResponse(status=200, headers={
            **headers, "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache"})
        await resp.prepare(request)
        pads = iter(PADDING * 4)

        async def send(name: str, payload: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {_padded(payload, next(pads, 8))}\n\n".encode())

        async def ping() -> None:
            await resp.write(b'event: ping\ndata: {"type": "ping"}\n\n')

        await send("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0,
                      "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                         "ephemeral_1h_input_tokens": 0},
                      "output_tokens": 1, "service_tier": "standard"}}})
        await send("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        await ping()
        if state.behavior == "slow_first_token":
            await asyncio.sleep(state.slow_seconds)
        for i, piece in enumerate(pieces):
            await send("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}})
            if i == 0 and state.behavior == "stream_error":
                await resp.write(b'event: error\ndata: {"type": "error", "error": '
                                 b'{"type": "overloaded_error", "message": "Overloaded"}}\n\n')
                await resp.write_eof()
                return resp
            if i == 0 and state.behavior == "stream_cut":
                await asyncio.sleep(DELTA_GAP)
                if request.transport is not None:
                    request.transport.close()
                return resp
            await asyncio.sleep(DELTA_GAP)
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await ping()
        await send("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": len(pieces)}})
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


class _OpenAI(_Fake):
    request_id_prefix = "req_"

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/v1/models", self.wrap(self.models)),
            ("POST", "/v1/chat/completions", self.wrap(self.chat)),
        ]

    def common_headers(self, rid: str, behavior: str, started: float) -> dict[str, str]:
        limited = behavior in ("rate_limited", "rate_limited_no_retry_after")
        return {
            "x-request-id": rid, "openai-version": "2020-10-01",
            "openai-processing-ms": str(max(1, round((time.monotonic() - started) * 1000))),
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "0" if limited else "4999",
            "x-ratelimit-reset-requests": f"{RETRY_AFTER}s" if limited else "12ms",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "1999990",
            "x-ratelimit-reset-tokens": "6m0s",
        }

    def error(self, status: int, etype: str, message: str, code: str | None,
              headers: dict[str, str], param: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    def server_failure(self, behavior: str, rid: str,
                       headers: dict[str, str]) -> web.Response | None:
        if behavior == "overloaded":
            return self.error(503, "service_unavailable_error", "The server is overloaded or "
                              "not ready yet.", "server_is_overloaded", headers)
        if behavior == "server_error":
            return self.error(500, "server_error", "The server had an error while processing "
                              "your request. Sorry about that!", None, headers)
        return None

    def refuse(self, request: web.Request, headers: dict[str, str]) -> web.Response | None:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not key:
            return self.error(401, "invalid_request_error", "You didn't provide an API key. You "
                              "need to provide your API key in an Authorization header using "
                              "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", None, headers)
        behavior = self.scenario().api.behavior
        if behavior == "unauthorized":
            masked = key[:7] + "*" * max(0, len(key) - 11) + key[-4:] if len(key) > 11 else "****"
            return self.error(401, "invalid_request_error", f"Incorrect API key provided: "
                              f"{masked}. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", "invalid_api_key",
                              headers)
        if behavior == "forbidden":
            return self.error(403, "request_forbidden", "Country, region, or territory not "
                              "supported", "unsupported_country_region_territory", headers)
        if behavior == "billing":
            return self.error(402, "invalid_request_error", "Payment required: your account "
                              "has a billing problem.", "billing_hard_limit_reached", headers)
        if behavior == "bad_request":
            return self.error(400, "invalid_request_error", "Missing required parameter: "
                              "'messages'.", "missing_required_parameter", headers, "messages")
        if behavior in ("rate_limited", "rate_limited_no_retry_after"):
            if behavior == "rate_limited":
                headers = {**headers, "retry-after": str(RETRY_AFTER)}
            return self.error(429, "requests", "Rate limit reached for requests per min (RPM): "
                              "Limit 5000, Used 5000, Requested 1.", "rate_limit_exceeded",
                              headers)
        if behavior == "spend_limit":
            return self.error(429, "insufficient_quota", "You exceeded your current quota, "
                              "please check your plan and billing details.",
                              "insufficient_quota", headers)
        return None

    async def models(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.StreamResponse:
        if (refused := self.refuse(request, headers)) is not None:
            return refused
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": created, "owned_by": "system"}
            for model, created in OPENAI_MODELS]}, headers=headers)

    async def chat(self, request: web.Request, rid: str, headers: dict[str, str]) -> web.StreamResponse:
        if (refused := self.refuse(request, headers)) is not None:
            return refused
        doc = await self.body(request)
        if not isinstance(doc, dict):
            return self.error(400, "invalid_request_error", "We could not parse the JSON body "
                              "of your request.", None, headers)
        for name in ("model", "messages"):
            if name not in doc:
                return self.error(400, "invalid_request_error", f"Missing required parameter: "
                                  f"'{name}'.", "missing_required_parameter", headers, name)
        model = doc["model"]
        if model not in {m for m, _ in OPENAI_MODELS}:
            return self.error(404, "invalid_request_error", f"The model `{model}` does not "
                              "exist or you do not have access to it.", "model_not_found",
                              headers)
        limit = doc.get("max_completion_tokens") or doc.get("max_tokens") or len(REPLY)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return self.error(400, "invalid_request_error", "Invalid 'max_completion_tokens': "
                              "expected an integer of at least 1.", "invalid_value", headers,
                              "max_completion_tokens")
        pieces = REPLY[:limit]
        finish = "length" if limit < len(REPLY) else "stop"
        usage = {"prompt_tokens": _input_tokens(doc["messages"]),
                 "completion_tokens": len(pieces)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        if not doc.get("stream"):
            return web.json_response({
                "id": completion_id, "object": "chat.completion", "created": created,
                "model": model, "choices": [{
                    "index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                    "finish_reason": finish}], "usage": usage}, headers=headers)
        options = doc.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return await self.stream(request, headers, completion_id, created, model, pieces,
                                 finish, usage if include_usage else None)

    async def stream(self, request: web.Request, headers: dict[str, str], completion_id: str,
                     created: int, model: str, pieces: tuple[str, ...], finish: str,
                     usage: dict[str, int] | None) -> web.StreamResponse:
        state = self.scenario().api
        resp = web.StreamResponse(status=200, headers={
            **headers, "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache"})
        await resp.prepare(request)

        async def chunk(delta: dict[str, Any], finish_reason: str | None) -> None:
            payload: dict[str, Any] = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_fake0001",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}
            if usage is not None:
                payload["usage"] = None
            await resp.write(f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode())

        await chunk({"role": "assistant", "content": "", "refusal": None}, None)
        if state.behavior == "slow_first_token":
            await asyncio.sleep(state.slow_seconds)
        for i, piece in enumerate(pieces):
            await chunk({"content": piece}, None)
            if i == 0 and state.behavior == "stream_error":
                await resp.write(b'data: {"error":{"message":"The server had an error while '
                                 b'processing your request. Sorry about that!","type":'
                                 b'"server_error","param":null,"code":null}}\n\n')
                await resp.write_eof()
                return resp
            if i == 0 and state.behavior == "stream_cut":
                await asyncio.sleep(DELTA_GAP)
                if request.transport is not None:
                    request.transport.close()
                return resp
            await asyncio.sleep(DELTA_GAP)
        await chunk({}, finish)
        if usage is not None:
            payload = {"id": completion_id, "object": "chat.completion.chunk",
                       "created": created, "model": model, "system_fingerprint": "fp_fake0001",
                       "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
