"""The fake Anthropic and OpenAI APIs on loopback: wire formats as a raw client sees them.

``FakeApi`` / ``fake_api`` are also used by test_api_probes.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter.checks.net.sse import Event, SSEParser
from exporter.simulator.api import ANTHROPIC_MODELS, RETRY_AFTER, ApiLog, add_routes, api_log
from exporter.simulator.scenarios import ApiState, Scenario

KEY = "sk-ant-api03-fake-test-key-0123456789"


@dataclass
class FakeApi:
    """Both fakes on one loopback server; ``set`` switches the scenario's API behaviour."""

    url: str = ""
    state: ApiState = field(default_factory=ApiState)
    app: web.Application = field(default_factory=web.Application)

    def scenario(self) -> Scenario:
        return Scenario("test", "set by the test", api=self.state)

    def set(self, behavior: str, slow_seconds: float = 0.3) -> None:
        self.state = ApiState(behavior, slow_seconds)

    @property
    def log(self) -> ApiLog:
        return api_log(self.app)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    add_routes(api.app, "/anthropic", "anthropic", api.scenario)
    add_routes(api.app, "/openai", "openai", api.scenario)
    runner = web.AppRunner(api.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    api.url = f"http://{host}:{port}"
    yield api
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 3,
           "messages": [{"role": "user", "content": "ping"}], "stream": True}
CHAT = {"model": "gpt-4o-mini", "max_completion_tokens": 3, "stream": True,
        "messages": [{"role": "user", "content": "ping"}],
        "stream_options": {"include_usage": True}}


async def read_stream(resp: aiohttp.ClientResponse) -> tuple[list[Event], bytes, list[float]]:
    """Events, raw bytes and the arrival time of each event."""
    parser, events, raw, times = SSEParser(), [], b"", []
    async for chunk in resp.content.iter_any():
        raw += chunk
        for event in parser.feed(chunk):
            events.append(event)
            times.append(time.monotonic())
    return events, raw, times


# -- Anthropic ----------------------------------------------------------------------------------


async def test_anthropic_missing_key_is_a_json_401_with_request_id(
        fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    async with http.get(fake_api.url + "/anthropic/v1/models") as resp:
        body = await resp.json()
        assert resp.status == 401
        assert resp.content_type == "application/json"
        assert body == {"type": "error", "error": {"type": "authentication_error",
                                                   "message": "x-api-key header is required"},
                        "request_id": resp.headers["request-id"]}
        assert body["request_id"].startswith("req_")


@pytest.mark.parametrize(("behavior", "status", "error_type", "retry_after"), [
    ("overloaded", 529, "overloaded_error", None),
    ("server_error", 500, "api_error", None),
    ("rate_limited", 429, "rate_limit_error", str(RETRY_AFTER)),
    ("rate_limited_no_retry_after", 429, "rate_limit_error", None),
    ("spend_limit", 429, "rate_limit_error", None),
    ("unauthorized", 401, "authentication_error", None),
    ("forbidden", 403, "permission_error", None),
    ("billing", 402, "billing_error", None),
    ("bad_request", 400, "invalid_request_error", None),
])
async def test_anthropic_error_answers(fake_api: FakeApi, http: aiohttp.ClientSession,
                                       behavior: str, status: int, error_type: str,
                                       retry_after: str | None) -> None:
    fake_api.set(behavior)
    async with http.get(fake_api.url + "/anthropic/v1/models", headers=ANTHROPIC_HEADERS) as resp:
        body = await resp.json()
        assert resp.status == status
        assert body["type"] == "error" and body["error"]["type"] == error_type
        assert body["request_id"] == resp.headers["request-id"]
        assert resp.headers.get("retry-after") == retry_after
        if behavior == "spend_limit":
            assert body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
        if behavior.startswith("rate_limited"):
            assert resp.headers["anthropic-ratelimit-requests-remaining"] == "0"


@pytest.mark.parametrize(("method", "path", "headers", "body"), [
    ("GET", "/v1/models", {}, None),
    ("GET", "/v1/models?limit=1", ANTHROPIC_HEADERS, None),
    ("GET", "/v1/models/claude-opus-4-1", ANTHROPIC_HEADERS, None),
    ("POST", "/v1/messages/count_tokens", ANTHROPIC_HEADERS, {"model": "claude-haiku-4-5", "messages": []}),
    ("POST", "/v1/messages", ANTHROPIC_HEADERS, MESSAGE),
])
async def test_anthropic_ratelimit_headers_on_every_response(
        fake_api: FakeApi, http: aiohttp.ClientSession, method: str, path: str,
        headers: dict[str, str], body: Any) -> None:
    async with http.request(method, fake_api.url + "/anthropic" + path, headers=headers,
                            json=body) as resp:
        await resp.read()
        for resource in ("requests", "tokens", "input-tokens", "output-tokens"):
            assert int(resp.headers[f"anthropic-ratelimit-{resource}-limit"]) > 0
            assert int(resp.headers[f"anthropic-ratelimit-{resource}-remaining"]) >= 0
            reset = datetime.fromisoformat(resp.headers[f"anthropic-ratelimit-{resource}-reset"])
            assert reset.tzinfo is not None and abs(reset.timestamp() - time.time()) < 10
        assert int(resp.headers["x-envoy-upstream-service-time"]) >= 1
        assert resp.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(("headers", "body", "status", "message"), [
    ({"x-api-key": KEY}, MESSAGE, 400, "anthropic-version: header is required"),
    ({**ANTHROPIC_HEADERS, "anthropic-version": "2099-01-01"}, MESSAGE, 400,
     "anthropic-version: invalid version '2099-01-01'"),
    (ANTHROPIC_HEADERS, {**MESSAGE, "model": "claude-nonexistent"}, 404, "model: claude-nonexistent"),
    (ANTHROPIC_HEADERS, {k: v for k, v in MESSAGE.items() if k != "max_tokens"}, 400,
     "max_tokens: Field required"),
])
async def test_anthropic_rejects_bad_requests(fake_api: FakeApi, http: aiohttp.ClientSession,
                                              headers: dict[str, str], body: Any, status: int,
                                              message: str) -> None:
    async with http.post(fake_api.url + "/anthropic/v1/messages", headers=headers,
                         json=body) as resp:
        assert resp.status == status
        assert (await resp.json())["error"]["message"] == message


async def test_anthropic_models_pages(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    url = fake_api.url + "/anthropic/v1/models"
    async with http.get(url, params={"limit": "1"}, headers=ANTHROPIC_HEADERS) as resp:
        first = await resp.json()
    assert [m["id"] for m in first["data"]] == [ANTHROPIC_MODELS[0][0]]
    assert first["has_more"] is True and first["first_id"] == first["last_id"]
    assert set(first["data"][0]) == {"type", "id", "display_name", "created_at"}
    async with http.get(url, params={"limit": "5", "after_id": first["last_id"]},
                        headers=ANTHROPIC_HEADERS) as resp:
        rest = await resp.json()
    assert [m["id"] for m in rest["data"]] == [m[0] for m in ANTHROPIC_MODELS[1:]]
    assert rest["has_more"] is False


async def test_anthropic_count_tokens(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    async with http.post(fake_api.url + "/anthropic/v1/messages/count_tokens",
                         headers=ANTHROPIC_HEADERS,
                         json={"model": "claude-haiku-4-5",
                               "messages": [{"role": "user", "content": "ping"}]}) as resp:
        assert await resp.json() == {"input_tokens": 8}


async def test_anthropic_stream_framing(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    async with http.post(fake_api.url + "/anthropic/v1/messages", headers=ANTHROPIC_HEADERS,
                         json=MESSAGE) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        events, raw, _ = await read_stream(resp)
    names = [e.event for e in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop", "ping",
                     "message_delta", "message_stop"]
    assert b'data: {"type": "ping"}\n\n' in raw
    assert re.search(rb"\} {6,}\}\n\n", raw), "data lines carry the recorded padding"
    data = [json.loads(e.data) for e in events]
    assert [d["type"] for d in data] == names
    assert data[0]["message"]["usage"]["input_tokens"] == 8
    assert "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta") == "Pong! The"
    assert data[-2]["delta"]["stop_reason"] == "max_tokens"
    assert data[-2]["usage"]["output_tokens"] == 3


async def test_anthropic_message_without_stream_is_json(fake_api: FakeApi,
                                                        http: aiohttp.ClientSession) -> None:
    async with http.post(fake_api.url + "/anthropic/v1/messages", headers=ANTHROPIC_HEADERS,
                         json={**MESSAGE, "stream": False, "max_tokens": 100}) as resp:
        body = await resp.json()
    assert body["type"] == "message" and body["stop_reason"] == "end_turn"
    assert body["content"] == [{"type": "text", "text": "Pong! The API is answering normally."}]
    assert body["usage"]["output_tokens"] == 8


async def test_anthropic_stream_error_event_after_200(fake_api: FakeApi,
                                                      http: aiohttp.ClientSession) -> None:
    fake_api.set("stream_error")
    async with http.post(fake_api.url + "/anthropic/v1/messages", headers=ANTHROPIC_HEADERS,
                         json=MESSAGE) as resp:
        assert resp.status == 200
        events, _, _ = await read_stream(resp)
    assert events[-1].event == "error"
    assert json.loads(events[-1].data) == {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}
    assert "message_stop" not in [e.event for e in events]


@pytest.mark.parametrize(("flavor", "path", "headers", "body"), [
    ("anthropic", "/v1/messages", ANTHROPIC_HEADERS, MESSAGE),
    ("openai", "/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, CHAT),
])
async def test_stream_cut_closes_the_connection(fake_api: FakeApi, http: aiohttp.ClientSession,
                                                flavor: str, path: str, headers: dict[str, str],
                                                body: Any) -> None:
    fake_api.set("stream_cut")
    async with http.post(f"{fake_api.url}/{flavor}{path}", headers=headers, json=body) as resp:
        assert resp.status == 200
        parser, seen = SSEParser(), []
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                seen.extend(parser.feed(chunk))
    assert seen, "some events arrive before the cut"
    assert all(e.event != "message_stop" and e.data != "[DONE]" for e in seen)


@pytest.mark.parametrize(("flavor", "path", "headers", "body"), [
    ("anthropic", "/v1/messages", ANTHROPIC_HEADERS, MESSAGE),
    ("openai", "/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, CHAT),
])
async def test_slow_first_token(fake_api: FakeApi, http: aiohttp.ClientSession, flavor: str,
                                path: str, headers: dict[str, str], body: Any) -> None:
    fake_api.set("slow_first_token", slow_seconds=0.3)
    started = time.monotonic()
    async with http.post(f"{fake_api.url}/{flavor}{path}", headers=headers, json=body) as resp:
        headers_after = time.monotonic() - started
        events, _, times = await read_stream(resp)
    first_text = next(i for i, e in enumerate(events)
                      if '"text_delta"' in e.data or '"content":"P' in e.data)
    assert headers_after < 0.25, "headers and message_start come at once"
    assert times[first_text] - started >= 0.3


async def test_slow_delays_every_answer(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    fake_api.set("slow", slow_seconds=0.3)
    started = time.monotonic()
    async with http.get(fake_api.url + "/anthropic/v1/models") as resp:
        assert resp.status == 401
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("flavor", ["anthropic", "openai"])
async def test_html_behaviour_is_a_proxy_page(fake_api: FakeApi, http: aiohttp.ClientSession,
                                              flavor: str) -> None:
    fake_api.set("html")
    async with http.get(f"{fake_api.url}/{flavor}/v1/models") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "<html>" in await resp.text()


# -- OpenAI -------------------------------------------------------------------------------------


async def test_openai_missing_key(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    async with http.get(fake_api.url + "/openai/v1/models") as resp:
        body = await resp.json()
    assert resp.status == 401
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert resp.headers["x-request-id"].startswith("req_")


async def test_openai_models_and_ratelimit_headers(fake_api: FakeApi,
                                                   http: aiohttp.ClientSession) -> None:
    async with http.get(fake_api.url + "/openai/v1/models",
                        headers={"authorization": f"Bearer {KEY}"}) as resp:
        body = await resp.json()
    assert body["object"] == "list"
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    assert resp.headers["x-ratelimit-limit-requests"] == "5000"
    assert resp.headers["x-ratelimit-reset-requests"] == "12ms"
    assert resp.headers["x-ratelimit-reset-tokens"] == "6m0s"
    assert resp.headers["openai-version"] == "2020-10-01"
    assert int(resp.headers["openai-processing-ms"]) >= 1


@pytest.mark.parametrize("include_usage", [True, False])
async def test_openai_chat_stream(fake_api: FakeApi, http: aiohttp.ClientSession,
                                  include_usage: bool) -> None:
    body = CHAT if include_usage else {k: v for k, v in CHAT.items() if k != "stream_options"}
    async with http.post(fake_api.url + "/openai/v1/chat/completions",
                         headers={"authorization": f"Bearer {KEY}"}, json=body) as resp:
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        events, raw, _ = await read_stream(resp)
    assert b"event:" not in raw
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Pong! The"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 3,
                                       "total_tokens": 11}
    else:
        assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize(("behavior", "status", "error_type", "code"), [
    ("overloaded", 503, "service_unavailable_error", "server_is_overloaded"),
    ("server_error", 500, "server_error", None),
    ("rate_limited", 429, "requests", "rate_limit_exceeded"),
    ("spend_limit", 429, "insufficient_quota", "insufficient_quota"),
    ("unauthorized", 401, "invalid_request_error", "invalid_api_key"),
    ("forbidden", 403, "request_forbidden", "unsupported_country_region_territory"),
])
async def test_openai_error_answers(fake_api: FakeApi, http: aiohttp.ClientSession,
                                    behavior: str, status: int, error_type: str,
                                    code: str | None) -> None:
    fake_api.set(behavior)
    async with http.post(fake_api.url + "/openai/v1/chat/completions",
                         headers={"authorization": f"Bearer {KEY}"}, json=CHAT) as resp:
        body = await resp.json()
    assert resp.status == status
    assert body["error"]["type"] == error_type and body["error"]["code"] == code
    if behavior == "unauthorized":  # OpenAI echoes the key masked, never whole
        assert KEY not in body["error"]["message"]
        assert KEY[:7] + "*" in body["error"]["message"]


async def test_openai_stream_error_chunk(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    fake_api.set("stream_error")
    async with http.post(fake_api.url + "/openai/v1/chat/completions",
                         headers={"authorization": f"Bearer {KEY}"}, json=CHAT) as resp:
        events, _, _ = await read_stream(resp)
    assert json.loads(events[-1].data)["error"]["type"] == "server_error"
    assert all(e.data != "[DONE]" for e in events)


async def test_openai_unknown_model_is_404(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    async with http.post(fake_api.url + "/openai/v1/chat/completions",
                         headers={"authorization": f"Bearer {KEY}"},
                         json={**CHAT, "model": "gpt-none"}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "model_not_found"


# -- bookkeeping --------------------------------------------------------------------------------


async def test_requests_are_counted_per_path(fake_api: FakeApi, http: aiohttp.ClientSession) -> None:
    for path in ("/anthropic/v1/models", "/anthropic/v1/models", "/openai/v1/models"):
        async with http.get(fake_api.url + path + "?limit=1") as resp:
            await resp.read()
    assert fake_api.log.counts == {"/anthropic/v1/models": 2, "/openai/v1/models": 1}
    assert "x-api-key" not in {k.lower() for k in fake_api.log.headers["/anthropic/v1/models"]}


def test_unknown_flavour_is_refused() -> None:
    with pytest.raises(ValueError, match="flavour"):
        add_routes(web.Application(), "/x", "gemini", lambda: Scenario("t", "t"))


async def test_scenario_switches_take_effect_at_once(fake_api: FakeApi,
                                                     http: aiohttp.ClientSession) -> None:
    statuses = []
    for behavior in ("ok", "overloaded", "ok"):
        fake_api.set(behavior)
        async with http.get(fake_api.url + "/anthropic/v1/models") as resp:
            statuses.append(resp.status)
    assert statuses == [401, 529, 401]
