"""The anthropic and openai probers against the fake APIs on loopback: every mode against
every behaviour, the samples they emit, the token budget, and that keys never leak."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter import __version__
from exporter import metrics as m
from exporter.checks import anthropic as anthropic_prober
from exporter.checks import openai as openai_prober
from exporter.checks.base import ProbeContext, Result
from exporter.checks.httpcommon import (
    API_REASONS,
    REDACTED,
    api_url,
    classify_status,
    estimate_tokens,
    parse_duration,
    parse_reset,
    ratelimit_samples,
    retry_after,
    scrub,
)
from exporter.config import CheckConfig
from exporter.metrics import MetricSpec
from exporter.simulator.api import RETRY_AFTER
from tests.conftest import build_check
from tests.test_fake_api import FakeApi, fake_api  # noqa: F401  (fixture)

ANTHROPIC_KEY = "sk-ant-api03-Zx81kQ-known-test-key-7f3a9c2e41d0-AbCd"
OPENAI_KEY = "sk-proj-Qm27-known-test-key-5b8e0d1f9a6c-WxYz"
PROBERS: dict[str, Callable[[CheckConfig, ProbeContext], Awaitable[Result]]] = {
    "anthropic": anthropic_prober.probe, "openai": openai_prober.probe}
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}
KEYS = {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY}
MODES = {"anthropic": ("keyless", "models", "count_tokens", "messages"),
         "openai": ("keyless", "models", "chat")}
STREAMED = ("messages", "chat")
PATHS = {("anthropic", "keyless"): "/anthropic/v1/models",
         ("anthropic", "models"): "/anthropic/v1/models",
         ("anthropic", "count_tokens"): "/anthropic/v1/messages/count_tokens",
         ("anthropic", "messages"): "/anthropic/v1/messages",
         ("openai", "keyless"): "/openai/v1/models", ("openai", "models"): "/openai/v1/models",
         ("openai", "chat"): "/openai/v1/chat/completions"}


def make_check(url: str, kind: str, mode: str, **options: Any) -> CheckConfig:
    defaults: dict[str, Any] = {"model": MODELS[kind], "timeout": 5.0, "interval": 30.0}
    if mode != "keyless":
        defaults["api_key_env"] = "PROBE_TEST_KEY"
    return build_check(upstream="claude", name=f"{kind}-{mode}", kind=kind, url=url, mode=mode,
                       **{**defaults, **options})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Runner:
    """Runs probes like the scheduler does: one context (and memo) per check."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.memos: dict[str, dict[str, Any]] = {}
        self.logger = logging.getLogger("exporter.test.probe")

    async def __call__(self, check: CheckConfig, key: str | None = "default") -> Result:
        secret = KEYS[check.kind] if key == "default" else key
        ctx = ProbeContext(session=self.session, logger=self.logger,
                           memo=self.memos.setdefault(check.name, {}),
                           secret=lambda _check: secret)
        return await PROBERS[check.kind](check, ctx)


@pytest.fixture
def run(session: aiohttp.ClientSession) -> Runner:
    return Runner(session)


def value(samples: tuple[Any, ...], spec: MetricSpec, **labels: str) -> float | None:
    found = [s.value for s in samples if s.metric == spec and dict(s.labels) == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def error_counts(result: Result) -> dict[str, float]:
    return {s.labels["error_type"]: s.value for s in result.counters if s.metric == m.PROBE_API_ERRORS}


def base(fake: FakeApi, kind: str) -> str:
    return f"{fake.url}/{kind}"


# -- every mode against every behaviour ---------------------------------------------------------

# behaviour -> (reason, HTTP status, counted error_type) for requests with a key
KEYED = {
    "anthropic": {
        "ok": ("", 200, None),
        "overloaded": ("overloaded", 529, "overloaded_error"),
        "server_error": ("http_5xx", 500, "api_error"),
        "rate_limited": ("rate_limited", 429, "rate_limit_error"),
        "rate_limited_no_retry_after": ("rate_limited", 429, "rate_limit_error"),
        "spend_limit": ("spend_limit", 429, "rate_limit_error"),
        "unauthorized": ("auth", 401, "authentication_error"),
        "forbidden": ("permission", 403, "permission_error"),
        "billing": ("billing", 402, "billing_error"),
        "bad_request": ("bad_request", 400, "invalid_request_error"),
        "html": ("bad_response", 200, None),
        "slow_first_token": ("", 200, None),
        "stream_cut": ("", 200, None),
        "stream_error": ("", 200, None),
    },
    "openai": {
        "ok": ("", 200, None),
        "overloaded": ("overloaded", 503, "service_unavailable_error"),
        "server_error": ("http_5xx", 500, "server_error"),
        "rate_limited": ("rate_limited", 429, "other"),  # OpenAI's type is "requests"
        "rate_limited_no_retry_after": ("rate_limited", 429, "other"),
        "spend_limit": ("spend_limit", 429, "insufficient_quota"),
        "unauthorized": ("auth", 401, "invalid_request_error"),
        "forbidden": ("permission", 403, "request_forbidden"),
        "billing": ("billing", 402, "invalid_request_error"),
        "bad_request": ("bad_request", 400, "invalid_request_error"),
        "html": ("bad_response", 200, None),
        "slow_first_token": ("", 200, None),
        "stream_cut": ("", 200, None),
        "stream_error": ("", 200, None),
    },
}
# streamed modes see the stream behaviours; keyless requests only the server-side ones
STREAM_FAILURES = {"anthropic": {"stream_cut": ("stream_error", 200, None),
                                 "stream_error": ("stream_error", 200, "overloaded_error")},
                   "openai": {"stream_cut": ("stream_error", 200, None),
                              "stream_error": ("stream_error", 200, "server_error")}}
SERVER_SIDE = ("overloaded", "server_error", "html")


def expected(kind: str, mode: str, behavior: str) -> tuple[str, int, str | None]:
    if mode == "keyless":
        return KEYED[kind][behavior] if behavior in SERVER_SIDE else ("", 401, None)
    if mode in STREAMED and behavior in STREAM_FAILURES[kind]:
        return STREAM_FAILURES[kind][behavior]
    return KEYED[kind][behavior]


CASES = [(kind, mode, behavior) for kind in ("anthropic", "openai") for mode in MODES[kind]
         for behavior in KEYED[kind]]


@pytest.mark.parametrize(("kind", "mode", "behavior"), CASES)
async def test_mode_against_behaviour(fake_api: FakeApi, run: Runner, kind: str, mode: str,  # noqa: F811
                                      behavior: str) -> None:
    fake_api.set(behavior, slow_seconds=0.2)
    reason, status, error_type = expected(kind, mode, behavior)
    result = await run(make_check(base(fake_api, kind), kind, mode, max_tokens=3))

    assert (result.success, result.reason) == (not reason, reason), result.error
    assert reason in API_REASONS or not reason
    assert value(result.gauges, m.PROBE_HTTP_STATUS_CODE) == status
    assert dict(result.details) | {"backoff_seconds": None} == {
        "http_status": status, "error_type": error_type, "reason": reason,
        "backoff_seconds": None}
    assert error_counts(result) == ({error_type: 1.0} if error_type else {})
    assert fake_api.log.counts[PATHS[(kind, mode)]] == 1, "exactly one request, no retries"
    limit = value(result.gauges, m.PROBE_API_RATELIMIT_LIMIT, resource="requests")
    assert limit == (1000 if kind == "anthropic" else 5000)
    if reason == "rate_limited" and behavior == "rate_limited":
        assert result.details["backoff_seconds"] == RETRY_AFTER
        assert value(result.gauges, m.PROBE_API_RETRY_AFTER) == RETRY_AFTER
    else:
        assert "backoff_seconds" not in result.details
        assert value(result.gauges, m.PROBE_API_RETRY_AFTER) == 0
    assert {s.labels["phase"] for s in result.gauges if s.metric == m.PROBE_HTTP_DURATION} == {
        "resolve", "connect", "tls", "processing", "transfer"}
    if not result.success:
        assert result.error


# -- streamed modes: TTFT, output speed, tokens -------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
@pytest.mark.parametrize(("max_tokens", "speed_reported"), [(1, False), (5, True)])
async def test_stream_timing_and_tokens(fake_api: FakeApi, run: Runner, kind: str,  # noqa: F811
                                        max_tokens: int, speed_reported: bool) -> None:
    mode = "messages" if kind == "anthropic" else "chat"
    result = await run(make_check(base(fake_api, kind), kind, mode, max_tokens=max_tokens))
    assert result.success, result.error
    ttft = [s.value for s in result.observations if s.metric == m.PROBE_API_TTFT]
    assert len(ttft) == 1 and 0 < ttft[0] < result.duration_seconds
    assert value(result.counters, m.PROBE_API_TOKENS, direction="input") == 8  # "ping" on the fake
    assert value(result.counters, m.PROBE_API_TOKENS, direction="output") == max_tokens
    speed = value(result.gauges, m.PROBE_API_OUTPUT_TOKENS_PER_SECOND)
    assert (speed is not None and speed > 0) is speed_reported
    assert value(result.gauges, m.PROBE_API_UPSTREAM_SERVICE_TIME) is not None


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_slow_first_token_shows_in_ttft(fake_api: FakeApi, run: Runner, kind: str) -> None:  # noqa: F811
    fake_api.set("slow_first_token", slow_seconds=0.4)
    mode = "messages" if kind == "anthropic" else "chat"
    result = await run(make_check(base(fake_api, kind), kind, mode))
    assert result.success
    (ttft,) = [s.value for s in result.observations if s.metric == m.PROBE_API_TTFT]
    assert ttft >= 0.4


async def test_cut_stream_still_counts_the_tokens_it_reported(fake_api: FakeApi,  # noqa: F811
                                                              run: Runner) -> None:
    fake_api.set("stream_cut")
    result = await run(make_check(base(fake_api, "anthropic"), "anthropic", "messages"))
    assert result.reason == "stream_error"
    assert value(result.counters, m.PROBE_API_TOKENS, direction="input") == 8
    assert len([s for s in result.observations if s.metric == m.PROBE_API_TTFT]) == 1


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_free_modes_spend_no_tokens(fake_api: FakeApi, run: Runner, kind: str) -> None:  # noqa: F811
    for mode in MODES[kind]:
        if mode not in STREAMED:
            result = await run(make_check(base(fake_api, kind), kind, mode))
            assert result.success
            assert not [s for s in result.counters if s.metric == m.PROBE_API_TOKENS]
            assert not result.observations


# -- what goes on the wire ----------------------------------------------------------------------


async def test_anthropic_request_headers_and_bodies(fake_api: FakeApi, run: Runner) -> None:  # noqa: F811
    url = base(fake_api, "anthropic")
    for mode in MODES["anthropic"]:
        assert (await run(make_check(url, "anthropic", mode, max_tokens=2))).success
    log = fake_api.log
    keyless = {k.lower(): v for k, v in log.headers["/anthropic/v1/models"].items()}
    assert keyless["user-agent"] == f"claude-status-exporter/{__version__}"
    assert keyless["anthropic-version"] == "2023-06-01"
    sent = {k.lower(): v for k, v in log.headers["/anthropic/v1/messages"].items()}
    assert sent["x-api-key"] == ANTHROPIC_KEY
    assert sent["content-type"] == "application/json"
    assert log.bodies["/anthropic/v1/messages"] == {
        "model": "claude-haiku-4-5", "max_tokens": 2, "stream": True,
        "messages": [{"role": "user", "content": "ping"}]}
    assert log.bodies["/anthropic/v1/messages/count_tokens"] == {
        "model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "ping"}]}


async def test_keyless_sends_no_key(fake_api: FakeApi, run: Runner) -> None:  # noqa: F811
    for kind in ("anthropic", "openai"):
        assert (await run(make_check(base(fake_api, kind), kind, "keyless"))).success
        headers = {k.lower() for k in fake_api.log.headers[f"/{kind}/v1/models"]}
        assert not headers & {"x-api-key", "authorization"}


async def test_openai_request(fake_api: FakeApi, run: Runner) -> None:  # noqa: F811
    assert (await run(make_check(base(fake_api, "openai") + "/v1/", "openai", "chat",
                                 max_tokens=2, prompt="hello there"))).success
    sent = {k.lower(): v for k, v in fake_api.log.headers["/openai/v1/chat/completions"].items()}
    assert sent["authorization"] == f"Bearer {OPENAI_KEY}"
    assert fake_api.log.bodies["/openai/v1/chat/completions"] == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
        "max_completion_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}


# -- other failure classes -----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "mode", "options", "reason", "status"), [
    ("anthropic", "count_tokens", {"model": "claude-nonexistent"}, "not_found", 404),
    ("anthropic", "messages", {"model": "claude-nonexistent"}, "not_found", 404),
    ("openai", "chat", {"model": "gpt-nonexistent"}, "not_found", 404),
    ("anthropic", "models", {"anthropic_version": "1999-01-01"}, "bad_request", 400),
])
async def test_config_mistakes(fake_api: FakeApi, run: Runner, kind: str, mode: str,  # noqa: F811
                               options: dict[str, Any], reason: str, status: int) -> None:
    result = await run(make_check(base(fake_api, kind), kind, mode, **options))
    assert (result.reason, result.details["http_status"]) == (reason, status)


@pytest.mark.parametrize(("kind", "mode"), [("anthropic", "messages"), ("openai", "models")])
async def test_missing_key_sends_nothing(fake_api: FakeApi, run: Runner, kind: str,  # noqa: F811
                                        mode: str) -> None:
    result = await run(make_check(base(fake_api, kind), kind, mode), key=None)
    assert result.reason == "auth"
    assert "PROBE_TEST_KEY" in result.error
    assert sum(fake_api.log.counts.values()) == 0


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_timeout(fake_api: FakeApi, run: Runner, kind: str) -> None:  # noqa: F811
    fake_api.set("slow", slow_seconds=1.0)
    started = time.perf_counter()
    result = await run(make_check(base(fake_api, kind), kind, "keyless", timeout=0.5))
    assert result.reason == "timeout"
    assert value(result.gauges, m.PROBE_HTTP_STATUS_CODE) == 0
    assert "waiting for the response headers" in result.error
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_connection_refused(run: Runner, kind: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run(make_check(f"http://127.0.0.1:{port}", kind, "keyless"))
    assert result.reason == "connect"
    assert result.details == {"http_status": 0, "error_type": None, "reason": "connect"}


# Small servers that answer what the fake API never would.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: Any, content_type: str = "application/json") -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type=content_type)
    return handler


def _sse(text: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(text.encode())
        await resp.write_eof()
        return resp
    return handler


ODD_ANSWERS: list[tuple[str, str, str, Handler, str]] = [
    ("anthropic", "keyless", "200 to keyless",
     _json(200, {"data": []}), "bad_response"),
    ("anthropic", "keyless", "401 html page",
     _json(401, "<html>denied</html>", "text/html"), "bad_response"),
    ("anthropic", "keyless", "401 of another type",
     _json(401, {"type": "error", "error": {"type": "permission_error", "message": "x"}}),
     "bad_response"),
    ("anthropic", "keyless", "504 timeout_error",
     _json(504, {"type": "error", "error": {"type": "timeout_error", "message": "x"}}),
     "http_5xx"),
    ("anthropic", "keyless", "a redirect",
     _json(302, {}), "http_status"),
    ("anthropic", "models", "list without data",
     _json(200, {"models": []}), "bad_response"),
    ("anthropic", "models", "200 not JSON",
     _json(200, "{oops", "application/json"), "bad_response"),
    ("anthropic", "count_tokens", "no input_tokens",
     _json(200, {"tokens": 3}), "bad_response"),
    ("anthropic", "messages", "JSON instead of a stream",
     _json(200, {"type": "message"}), "bad_response"),
    ("anthropic", "messages", "clean end without message_stop",
     _sse('event: message_start\ndata: {"type":"message_start","message":{}}\n\n'),
     "stream_error"),
    ("anthropic", "messages", "event data not JSON",
     _sse("event: content_block_delta\ndata: {nope\n\n"), "stream_error"),
    ("anthropic", "messages", "unknown error type in stream",
     _sse('event: error\ndata: {"type":"error","error":{"type":"brand_new_error"}}\n\n'),
     "stream_error"),
    ("anthropic", "models", "400 for a customer-set spend limit",
     _json(400, {"type": "error", "error": {"type": "invalid_request_error", "message":
                 "You have reached your specified workspace API usage limits."}}), "spend_limit"),
    ("openai", "keyless", "401 without error object",
     _json(401, {"detail": "no"}), "bad_response"),
    ("openai", "chat", "no [DONE]",
     _sse('data: {"choices":[{"delta":{"content":"x"}}]}\n\n'), "stream_error"),
    ("openai", "models", "429 engine overloaded (older API)",
     _json(429, {"error": {"message": "The engine is currently overloaded", "type": None}}),
     "overloaded"),
]


@pytest.mark.parametrize(("kind", "mode", "name", "handler", "reason"), ODD_ANSWERS,
                         ids=[case[2] for case in ODD_ANSWERS])
async def test_odd_answers(run: Runner, kind: str, mode: str, name: str, handler: Handler,
                           reason: str) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        result = await run(make_check(f"http://{host}:{port}", kind, mode))
    finally:
        await runner.cleanup()
    assert result.reason == reason, result.error
    if name == "unknown error type in stream":
        assert error_counts(result) == {"other": 1.0}


# -- the daily token budget ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_budget_stops_paid_probes(fake_api: FakeApi, run: Runner, kind: str,  # noqa: F811
                                        caplog: pytest.LogCaptureFixture) -> None:
    mode = "messages" if kind == "anthropic" else "chat"
    path = PATHS[(kind, mode)]
    estimate = estimate_tokens("ping", 1)  # 13; a probe really spends 8 + 1
    check = make_check(base(fake_api, kind), kind, mode, daily_token_budget=estimate + 5)
    caplog.set_level(logging.WARNING, logger="exporter.test.probe")

    first = await run(check)
    assert first.success
    assert value(first.gauges, m.PROBE_API_BUDGET_REMAINING) == estimate + 5 - 9
    assert value(first.gauges, m.PROBE_API_BUDGET_EXHAUSTED) == 0

    refused = [await run(check) for _ in range(3)]
    assert fake_api.log.counts[path] == 1, "no request is sent once the budget is spent"
    for result in refused:
        assert (result.success, result.reason) == (False, "budget_exhausted")
        assert value(result.gauges, m.PROBE_API_BUDGET_EXHAUSTED) == 1
        assert value(result.gauges, m.PROBE_API_BUDGET_REMAINING) == estimate + 5 - 9
        assert not [s for s in result.counters if s.metric == m.PROBE_API_TOKENS]
        assert result.details["http_status"] == 0
    warnings = [r for r in caplog.records if "budget" in r.getMessage()]
    assert len(warnings) == 1, "warned once a day, not on every run"

    run.memos[check.name]["token_budget"]["day"] = "2000-01-01"  # a new UTC day
    assert (await run(check)).success
    assert fake_api.log.counts[path] == 2


async def test_budget_is_never_overshot(fake_api: FakeApi, run: Runner) -> None:  # noqa: F811
    budget = 200
    check = make_check(base(fake_api, "anthropic"), "anthropic", "messages", max_tokens=8,
                       daily_token_budget=budget)
    spent = 0.0
    for _ in range(30):
        result = await run(check)
        spent += sum(s.value for s in result.counters if s.metric == m.PROBE_API_TOKENS)
        if result.reason == "budget_exhausted":
            break
    assert result.reason == "budget_exhausted"
    assert budget - estimate_tokens("ping", 8) < spent <= budget


async def test_budget_counts_a_cut_stream_at_its_estimate(fake_api: FakeApi, run: Runner) -> None:  # noqa: F811
    fake_api.set("stream_cut")
    check = make_check(base(fake_api, "openai"), "openai", "chat", daily_token_budget=100)
    result = await run(check)
    assert result.reason == "stream_error"
    assert value(result.gauges, m.PROBE_API_BUDGET_REMAINING) == 100 - estimate_tokens("ping", 1)


async def test_free_modes_ignore_the_budget(fake_api: FakeApi, run: Runner) -> None:  # noqa: F811
    check = make_check(base(fake_api, "anthropic"), "anthropic", "count_tokens",
                       daily_token_budget=1)
    for _ in range(2):
        result = await run(check)
        assert result.success
        assert value(result.gauges, m.PROBE_API_BUDGET_REMAINING) == 1


# -- secrets ------------------------------------------------------------------------------------


async def test_key_never_leaves_the_probe(fake_api: FakeApi, run: Runner,  # noqa: F811
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    for kind, mode, behavior in CASES:
        if mode == "keyless":
            continue
        fake_api.set(behavior, slow_seconds=0.01)
        result = await run(make_check(base(fake_api, kind), kind, mode, daily_token_budget=10**6))
        outputs.append(repr(result))
    with socket.socket() as s:  # transport errors too
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for kind in ("anthropic", "openai"):
        result = await run(make_check(f"http://127.0.0.1:{port}", kind, "models"))
        outputs.append(repr(result))
    everything = "\n".join(outputs) + caplog.text
    for key in (ANTHROPIC_KEY, OPENAI_KEY):
        assert key not in everything
        assert key[12:-4] not in everything
    masked = OPENAI_KEY[:7] + "*"  # OpenAI echoes a masked key in its 401 message
    assert masked not in everything and REDACTED in everything


# -- header parsing and classification, as pure functions ----------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("12ms", 0.012), ("1m30s", 90.0), ("6m0s", 360.0), ("0.5s", 0.5), ("2h", 7200.0),
    ("1h2m3.5s", 3723.5), ("250us", 0.00025), ("", None), ("soon", None), ("12", None),
])
def test_parse_duration(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    assert result == pytest.approx(seconds) if seconds is not None else result is None


def test_parse_reset() -> None:
    now = 1_700_000_000.0
    assert parse_reset("2025-08-21T12:40:59Z", now) == datetime(2025, 8, 21, 12, 40, 59, tzinfo=UTC).timestamp()
    assert parse_reset("1m30s", now) == now + 90
    assert parse_reset("5", now) == now + 5
    assert parse_reset("-1", now) is None
    assert parse_reset("tomorrow", now) is None


def test_ratelimit_samples_from_both_families() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "79000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-priority-output-tokens-remaining": "500",
        "X-RateLimit-Remaining-Requests": "4999",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-limit-requests": "-1",  # Azure sends this; meaningless
        "anthropic-ratelimit-unknown-limit": "5",
    }
    got = {(s.metric.name, s.labels["resource"]): s.value for s in ratelimit_samples(headers, 100.0)}
    assert got == {
        ("probe_api_ratelimit_limit", "input_tokens"): 80000,
        ("probe_api_ratelimit_remaining", "input_tokens"): 79000,
        ("probe_api_ratelimit_reset_timestamp_seconds", "input_tokens"):
            datetime(2025, 8, 21, 12, 40, 59, tzinfo=UTC).timestamp(),
        ("probe_api_ratelimit_remaining", "priority_output_tokens"): 500,
        ("probe_api_ratelimit_remaining", "requests"): 4999,
        ("probe_api_ratelimit_reset_timestamp_seconds", "tokens"): 460.0,
    }


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
    ({"retry-after": format_datetime(datetime.fromtimestamp(1_700_000_030, UTC), usegmt=True)}, 30.0),
    ({"retry-after": "later"}, None),
    ({}, None),
])
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers, 1_700_000_000.0) == seconds


@pytest.mark.parametrize(("flavor", "status", "error", "reason"), [
    ("anthropic", 529, {"type": "overloaded_error"}, "overloaded"),
    ("anthropic", 500, {"type": "overloaded_error"}, "overloaded"),
    ("anthropic", 503, None, "http_5xx"),
    ("anthropic", 504, {"type": "timeout_error"}, "http_5xx"),
    ("anthropic", 429, {"type": "rate_limit_error"}, "rate_limited"),
    ("anthropic", 429, {"type": "rate_limit_error", "details": {"error_code": "enforced_spend_limit_reached"}},
     "spend_limit"),
    ("anthropic", 400, {"type": "invalid_request_error", "message": "Your credit balance is too low"}, "billing"),
    ("anthropic", 400, {"type": "invalid_request_error"}, "bad_request"),
    ("anthropic", 400, {"type": "invalid_request_error",
                        "message": "You have reached your specified API usage limits. You will regain "
                                   "access on 2026-01-01 at 00:00 UTC."}, "spend_limit"),
    ("anthropic", 400, {"type": "invalid_request_error",
                        "message": "You have reached your specified workspace API usage limits."},
     "spend_limit"),
    ("anthropic", 401, {"type": "authentication_error"}, "auth"),
    ("anthropic", 402, {"type": "billing_error"}, "billing"),
    ("anthropic", 403, None, "permission"),
    ("anthropic", 404, {"type": "not_found_error"}, "not_found"),
    ("anthropic", 409, {"type": "conflict_error"}, "http_status"),
    ("anthropic", 413, {"type": "request_too_large"}, "http_status"),
    ("anthropic", 200, None, "bad_response"),
    ("openai", 503, {"type": "service_unavailable_error"}, "overloaded"),
    ("openai", 429, {"type": "insufficient_quota", "code": "insufficient_quota"}, "spend_limit"),
    ("openai", 429, {"type": "requests", "code": "rate_limit_exceeded"}, "rate_limited"),
])
def test_classify_status(flavor: str, status: int, error: dict[str, Any] | None, reason: str) -> None:
    assert classify_status(flavor, status, error) == reason


@pytest.mark.parametrize(("base_url", "url"), [
    ("https://api.anthropic.com", "https://api.anthropic.com/v1/models"),
    ("https://api.anthropic.com/", "https://api.anthropic.com/v1/models"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1/models"),
    ("https://api.anthropic.com/v1/", "https://api.anthropic.com/v1/models"),
    ("http://127.0.0.1:8080/anthropic", "http://127.0.0.1:8080/anthropic/v1/models"),
])
def test_api_url(base_url: str, url: str) -> None:
    assert api_url(base_url, "/v1/models") == url


def test_scrub() -> None:
    assert scrub("key abc123 here", "abc123") == f"key {REDACTED} here"
    assert scrub("Incorrect API key provided: sk-proj-****WxYz.", None) == (
        f"Incorrect API key provided: {REDACTED}.")
    assert scrub("nothing secret", None) == "nothing secret"


# -- end to end: the real exporter against the simulator subprocess --------------------------------

E2E_KEY = "sk-ant-api03-e2e-Rq9x-known-scan-key-4d2c81f0b7"


def e2e_config(sim_url: str) -> str:
    anthropic, openai_url = sim_url + "/anthropic", sim_url + "/openai"
    return f"""\
defaults: {{interval: 1s, timeout: 900ms}}
upstreams:
  claude:
    checks:
      - {{name: keyless, kind: anthropic, url: "{anthropic}", mode: keyless}}
      - {{name: models, kind: anthropic, url: "{anthropic}", mode: models, api_key_env: E2E_KEY}}
      - {{name: count, kind: anthropic, url: "{anthropic}", mode: count_tokens,
          model: claude-haiku-4-5, api_key_env: E2E_KEY}}
      - {{name: messages, kind: anthropic, url: "{anthropic}", mode: messages,
          model: claude-haiku-4-5, api_key_env: E2E_KEY, max_tokens: 4, daily_token_budget: 1000000}}
  gpt:
    checks:
      - {{name: keyless, kind: openai, url: "{openai_url}", mode: keyless}}
      - {{name: chat, kind: openai, url: "{openai_url}", mode: chat, model: gpt-4o-mini,
          api_key_env: E2E_KEY, max_tokens: 4}}
modules:
  claude_models: {{kind: anthropic, mode: models, api_key_env: E2E_KEY, allowed_targets: ["{anthropic}"]}}
"""


KINDS = {"claude": "anthropic", "gpt": "openai"}
E2E_CHECKS = [("claude", "keyless"), ("claude", "models"), ("claude", "count"),
              ("claude", "messages"), ("gpt", "keyless"), ("gpt", "chat")]
KEYED_CHECKS = [c for c in E2E_CHECKS if c[1] != "keyless"]
# scenario -> the failure reason each check must report (absent: the check must succeed)
E2E_STEPS: list[tuple[str, dict[tuple[str, str], str]]] = [
    ("operational", {}),
    ("api_outage_unacknowledged", dict.fromkeys(E2E_CHECKS, "overloaded")),
    ("major_outage", dict.fromkeys(E2E_CHECKS, "http_5xx")),
    ("unauthorized", dict.fromkeys(KEYED_CHECKS, "auth")),
    ("spend_limit", dict.fromkeys(KEYED_CHECKS, "spend_limit")),
    ("stream_cut", {("claude", "messages"): "stream_error", ("gpt", "chat"): "stream_error"}),
    ("stream_error", {("claude", "messages"): "stream_error", ("gpt", "chat"): "stream_error"}),
    ("api_rate_limited", dict.fromkeys(KEYED_CHECKS, "rate_limited")),  # last: retry-after 7s
]


def test_every_failure_class_through_the_exporter(run_simulator: Any, run_exporter: Any) -> None:
    sim = run_simulator("operational")
    exporter = run_exporter(e2e_config(sim.url), env={"E2E_KEY": E2E_KEY})

    def ids(upstream: str, check: str) -> dict[str, str]:
        return {"upstream": upstream, "check": check, "kind": KINDS[upstream]}

    for scenario, failing in E2E_STEPS:
        sim.set_scenario(scenario)
        before = exporter.scrape()

        def settled(scrape: Any, before: Any = before, failing: dict = failing) -> bool:  # type: ignore[type-arg]
            for upstream, check in E2E_CHECKS:
                labels = ids(upstream, check)
                reason = failing.get((upstream, check))
                if reason:  # a failure of this reason was counted after the switch
                    name, labels = "probe_failures_total", {**labels, "reason": reason}
                    if (scrape.value(name, **labels) or 0) <= (before.value(name, **labels) or 0):
                        return False
                # the last run must be one that started after the switch
                elif (scrape.value("probe_runs_total", **labels) or 0) < (
                        before.value("probe_runs_total", **labels) or 0) + 2:
                    return False
                if scrape.value("probe_success", **ids(upstream, check)) != (0 if reason else 1):
                    return False
            return True

        exporter.wait_for(settled, timeout=20)

    scrape = exporter.scrape()
    claude_messages = {"upstream": "claude", "check": "messages"}
    assert scrape.value("probe_api_tokens_total", direction="input", **claude_messages) >= 8
    assert scrape.value("probe_api_tokens_total", direction="output", **claude_messages) >= 4
    assert scrape.value("probe_api_ttft_seconds_count", **claude_messages) >= 1
    assert scrape.value("probe_api_ttft_seconds_count", upstream="gpt", check="chat") >= 1
    assert scrape.value("probe_api_errors_total", error_type="overloaded_error", **claude_messages) >= 2
    assert scrape.value("probe_api_errors_total", error_type="insufficient_quota",
                        upstream="gpt", check="chat") >= 1
    assert scrape.value("probe_http_status_code", upstream="claude", check="models") == 429
    assert scrape.value("probe_api_retry_after_seconds", upstream="claude", check="models") == RETRY_AFTER
    assert scrape.value("probe_api_ratelimit_remaining", resource="requests", upstream="claude",
                        check="models") == 0
    assert scrape.value("probe_http_status_code", upstream="claude", check="keyless") == 401
    assert scrape.value("probe_api_budget_exhausted", **claude_messages) == 0

    # the key never shows: metrics, status JSON, landing page, /probe debug output, the log
    status, debug, _ = exporter.get(f"/probe?module=claude_models&target={sim.url}/anthropic&debug=true")
    assert status == 200 and "probe_http_status_code 429" in debug
    outputs = [scrape.text, exporter.get("/api/v1/status")[1], exporter.get("/")[1], debug,
               exporter.log()]
    for text in outputs:
        assert E2E_KEY not in text
        assert E2E_KEY[14:-6] not in text
