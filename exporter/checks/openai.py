"""The prober for OpenAI-compatible APIs (OpenAI, Anthropic's compatibility layer, gateways).

- ``keyless``: ``GET /v1/models`` without a key; success is a JSON 401 with an ``error``
  object. Free.
- ``models``: ``GET /v1/models`` with ``Authorization: Bearer``. Free.
- ``chat``: a streamed ``POST /v1/chat/completions`` (``max_completion_tokens`` from
  ``max_tokens``, ``stream_options.include_usage``) that must end with ``data: [DONE]``.
  Paid; times the first content delta and counts the tokens of the usage chunk.
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
    from exporter.config import OpenAICheck

PAID_MODES = frozenset({"chat"})


async def probe(check: OpenAICheck, ctx: ProbeContext) -> Result:
    run = ApiRun(check, ctx, "openai", paid=check.mode in PAID_MODES)
    headers = {"user-agent": USER_AGENT, "accept": "application/json", **check.headers}
    if (refused := run.credentials(headers)) is not None:
        return refused
    if check.mode == "keyless":
        return await run.send("GET", "/v1/models", headers, None,
                              lambda resp: _keyless(run, resp))
    run.secret = ctx.secret(check)
    if not run.secret:
        return run.no_key()
    run.send_key(headers, "bearer")
    if check.mode == "models":
        return await run.send("GET", "/v1/models", headers, None, run.expect_models)
    headers["accept"] = "text/event-stream"
    payload = {
        "model": check.model,
        "messages": [{"role": "user", "content": check.prompt}],
        "max_completion_tokens": check.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return await run.send("POST", "/v1/chat/completions", headers, payload,
                          lambda resp: run.expect_stream(resp, lambda event: _chunk(run, event)))


async def _keyless(run: ApiRun, resp: aiohttp.ClientResponse) -> Result:
    if resp.status != 401:
        if resp.status == 200:
            return run.fail("bad_response", "HTTP 200 to a request without a key: "
                                            "auth is not enforced here")
        return await run.reject(resp)
    try:
        doc = await run.read_json(resp)
    except json.JSONDecodeError:
        return run.fail("bad_response", "HTTP 401 whose body is not JSON")
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return run.fail("bad_response", "HTTP 401 without an error object")
    return run.succeed()


def _chunk(run: ApiRun, event: Event) -> bool:
    """Handle one ``data:`` line; True at ``[DONE]``."""
    if event.data.strip() == "[DONE]":
        return True
    try:
        data: Any = safe_loads(event.data)
    except ValueError:
        raise ProbeFailure("stream_error", "stream chunk is not JSON") from None
    if not isinstance(data, dict):
        raise ProbeFailure("stream_error", "stream chunk is not an object")
    if "error" in data:
        raise run.stream_error(data["error"])
    choices = data.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
                run.text_arrived()
    usage = data.get("usage")
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            run.input_tokens = prompt
        if isinstance(completion, int) and not isinstance(completion, bool):
            run.output_tokens = completion
    return False
