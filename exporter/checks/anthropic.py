"""The Anthropic API prober: four modes, cheapest first.

- ``keyless``: ``GET /v1/models`` without a key. Success is exactly a well-formed JSON 401
  ``authentication_error``: DNS, TLS, the edge and the API front door answered. Free.
- ``models``: ``GET /v1/models?limit=1`` with the key. Free; proves the key works.
- ``count_tokens``: ``POST /v1/messages/count_tokens``. Free; exercises model routing.
- ``messages``: a streamed ``POST /v1/messages`` with ``max_tokens`` from the config. Paid;
  the only mode that proves generation works. Times the first text delta (TTFT) and the
  output speed, counts the tokens spent and respects ``daily_token_budget``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp

from exporter.checks.base import ProbeContext, ProbeFailure, Result
from exporter.checks.httpcommon import USER_AGENT, ApiRun
from exporter.checks.net.safejson import loads as safe_loads
from exporter.checks.net.sse import Event

if TYPE_CHECKING:
    from exporter.config import AnthropicCheck

PAID_MODES = frozenset({"messages"})


async def probe(check: AnthropicCheck, ctx: ProbeContext) -> Result:
    run = ApiRun(check, ctx, "anthropic", paid=check.mode in PAID_MODES)
    headers = {"user-agent": USER_AGENT, "anthropic-version": check.anthropic_version,
               "accept": "application/json", **check.headers}
    if (refused := run.credentials(headers)) is not None:
        return refused
    if check.mode == "keyless":
        return await run.send("GET", "/v1/models", headers, None,
                              lambda resp: _keyless(run, resp))
    run.secret = ctx.secret(check)
    if not run.secret:
        return run.no_key()
    run.send_key(headers, "x-api-key")
    if check.mode == "models":
        return await run.send("GET", "/v1/models?limit=1", headers, None,
                              run.expect_models)
    messages = [{"role": "user", "content": check.prompt}]
    if check.mode == "count_tokens":
        return await run.send("POST", "/v1/messages/count_tokens", headers,
                              {"model": check.model, "messages": messages},
                              lambda resp: _count_tokens(run, resp))
    headers["accept"] = "text/event-stream"
    payload = {"model": check.model, "max_tokens": check.max_tokens, "messages": messages,
               "stream": True}
    return await run.send("POST", "/v1/messages", headers, payload,
                          lambda resp: run.expect_stream(resp, lambda event: _event(run, event)))


async def _keyless(run: ApiRun, resp: aiohttp.ClientResponse) -> Result:
    if resp.status != 401:
        if resp.status == 200:
            return run.fail("bad_response", "HTTP 200 to a request without a key: "
                                            "not the Anthropic API, or auth is not enforced")
        return await run.reject(resp)
    try:
        doc = await run.read_json(resp)
    except json.JSONDecodeError:
        return run.fail("bad_response", "HTTP 401 whose body is not JSON (a proxy or an edge "
                                        "page, not the API)")
    error = doc.get("error") if isinstance(doc, dict) else None
    if (not isinstance(doc, dict) or doc.get("type") != "error" or not isinstance(error, dict)
            or error.get("type") != "authentication_error"):
        return run.fail("bad_response", "HTTP 401 without an authentication_error body")
    if isinstance(doc.get("request_id"), str):
        run.log(f"request_id={doc['request_id']}")
    return run.succeed()


async def _count_tokens(run: ApiRun, resp: aiohttp.ClientResponse) -> Result:
    if resp.status != 200:
        return await run.reject(resp)
    doc = await run.read_json(resp)
    count = doc.get("input_tokens") if isinstance(doc, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return run.fail("bad_response", "count_tokens answer without input_tokens")
    run.log(f"input_tokens={count}")
    return run.succeed()


def _event(run: ApiRun, event: Event) -> bool:
    """Handle one stream event; True at message_stop."""
    if event.event == "ping":
        return False
    try:
        data: Any = safe_loads(event.data)
    except ValueError:
        raise ProbeFailure("stream_error", f"event {event.event!r} carries data that is not JSON") from None
    if not isinstance(data, dict):
        raise ProbeFailure("stream_error", f"event {event.event!r} carries data that is not an object")
    kind = data.get("type") or event.event
    if kind == "error":
        raise run.stream_error(data.get("error"))
    if kind == "message_start":
        message = data.get("message")
        _usage(run, message.get("usage") if isinstance(message, dict) else None)
    elif kind == "content_block_delta":
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta" and delta.get("text"):
            run.text_arrived()
    elif kind == "message_delta":
        _usage(run, data.get("usage"))
    elif kind == "message_stop":
        return True
    return False


def _usage(run: ApiRun, usage: Any) -> None:
    """message_start and message_delta carry cumulative counts: keep the latest."""
    if not isinstance(usage, dict):
        return
    parts = [usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens",
                                    "cache_read_input_tokens")]
    counts = [p for p in parts if isinstance(p, int) and not isinstance(p, bool)]
    if counts:
        run.input_tokens = sum(counts)
    output = usage.get("output_tokens")
    if isinstance(output, int) and not isinstance(output, bool):
        run.output_tokens = output
