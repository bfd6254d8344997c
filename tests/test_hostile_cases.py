"""Hostile upstreams and bad requests, second round: one table per case of docs/security.md
("Hostile upstreams, second round"), each against real servers on loopback.

The upstream here is ``Upstream``: a threaded server that answers every request with raw
bytes the test sets (so a header can carry bytes that are not UTF-8) and can change its
answer while the exporter runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from conftest import EXPORTER, Exporter, Scrape, build_check, free_port, http_get, http_post, start_exporter

from exporter import metrics
from exporter.checks import httpcommon
from exporter.checks.base import ProbeContext, Result
from exporter.checks.net import retryafter, safejson
from exporter.checks.net import targets as target_policy
from exporter.config import (
    MAX_CONFIG_BYTES,
    MAX_NODES,
    CheckConfig,
    Config,
    ConfigError,
    StatuspageConfig,
    UpstreamConfig,
    load_file,
    load_text,
)
from exporter.engine.probers import PROBERS
from exporter.engine.scheduler import Scheduler
from exporter.engine.state import StateStore
from exporter.engine.verdict import decide
from exporter.exposition.status import json_safe
from exporter.secrets import REDACTED, Secrets, scrub
from exporter.server import webconfig
from exporter.witnesses import statuspage as sp
from exporter.witnesses.statuspage import parse, parse_timestamp, poll

# -- a raw upstream ----------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"application/json"
    delay: float = 0.0

    def raw(self) -> bytes:
        head = [b"HTTP/1.1 %d X" % self.status, b"Content-Type: " + self.content_type,
                b"Content-Length: %d" % len(self.body), b"Connection: close"]
        head += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body


class Upstream:
    """Answers every request on 127.0.0.1 with ``answers[path]`` (else ``answers[""]``)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {"": Answer(404, b"{}")}
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head)
                path = head.split(b" ", 2)[1].decode("latin-1").split("?")[0]
                answer = self.answers.get(path) or self.answers[""]
                if answer.delay:
                    time.sleep(answer.delay)
                conn.sendall(answer.raw())
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def page_json(components: list[dict[str, Any]] | None = None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"page": {"id": "p", "name": "Test", "updated_at":
                                    "2026-01-01T00:00:00Z"},
                           "status": {"indicator": "none"}, "components": components or [],
                           "incidents": [], **extra}
    return json.dumps(doc).encode()


def summary_with(name_field: str, value: str) -> bytes:
    """A page whose component, group or incident name is ``value`` written verbatim into the
    JSON text (so ``\\ud800`` arrives as the escape, as an upstream would send it)."""
    marker = "@@NAME@@"
    components = [{"id": "grp", "name": marker if name_field == "group" else "Group",
                   "group": True, "components": ["api"]},
                  {"id": "api", "name": marker if name_field == "component" else "API",
                   "group_id": "grp", "status": "operational"}]
    incidents = [{"id": "inc", "name": marker if name_field == "incident" else "Incident",
                  "status": "investigating", "impact": "minor", "components": [{"id": "api"}]}]
    text = page_json(components, incidents=incidents).decode()
    return text.replace(json.dumps(marker), '"' + value + '"').encode()


def wait(predicate: Any, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def answers_everywhere(exporter: Exporter, probe_query: str = "") -> dict[str, int]:
    """The status of every endpoint that renders upstream data; /api/v1/status must parse."""
    codes = {}
    for path in ("/metrics", "/", "/api/v1/status", *([probe_query] if probe_query else [])):
        status, body, _ = exporter.get(path)
        codes[path] = status
        if path == "/metrics" and status == 200:
            Scrape.parse(body)
        if path == "/api/v1/status" and status == 200:
            json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in /api/v1/status"))
    return codes


def no_traceback(exporter: Exporter) -> None:
    assert "Traceback (most recent call last)" not in exporter.log(), exporter.log()[-3000:]


# -- case 1: lone surrogates and undecodable header bytes ----------------------------------------

SURROGATES = [
    ("component", "bad \\ud800"), ("component", "\\udfff tail"), ("group", "g \\ud83d"),
    ("incident", "inc \\udc80\\udc81"), ("component", "pair \\ud83d\\ude00 ok \\ud800"),
]


@pytest.mark.parametrize(("where", "value"), SURROGATES)
def test_a_lone_surrogate_in_a_page_breaks_nothing_and_the_verdict_follows(
        tmp_path: Path, upstream: Upstream, where: str, value: str) -> None:
    upstream.answers["/api/v2/summary.json"] = Answer(body=summary_with(where, value))
    exporter = start_exporter(tmp_path, f"""\
upstreams:
  u:
    statuspage: {{url: "{upstream.url}", interval: 1s, timeout: 900ms}}
""")
    try:
        scrape = exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="u") == 1)
        assert answers_everywhere(exporter) == {"/metrics": 200, "/": 200, "/api/v1/status": 200}
        assert "\ufffd" in scrape.text  # replaced, not dropped
        # The poll loop lives on: a later page's change shows in the verdict.
        outage = json.loads(summary_with(where, "ok"))
        outage["components"][1]["status"] = "major_outage"
        upstream.answers["/api/v2/summary.json"] = Answer(body=json.dumps(outage).encode())
        exporter.wait_for(lambda s: s.value("upstream_verdict", upstream="u",
                                            verdict="outage") == 1)
        no_traceback(exporter)
    finally:
        exporter.stop()


@pytest.mark.parametrize(("status", "body", "headers"), [
    (400, b'{"type":"error","error":{"type":"invalid_request_error","message":"bad \\ud800"}}',
     []),
    (500, b'{"error":{"type":"api_error","message":"\\udfff\\ud800"}}', []),
    (401, b'{"type":"error","error":{"type":"authentication_error","message":"no"}}',
     [(b"request-id", b"req-\xff\xfe\xc3"), (b"x-odd", b"\xed\xa0\x80")]),
    (429, b'{"error":{"type":"rate_limit_error","message":"x"}}',
     [(b"request-id", b"\x80\x81"), (b"retry-after", b"\xff")]),
], ids=["surrogate-400", "surrogates-500", "bytes-in-headers-401", "bytes-in-headers-429"])
def test_surrogates_and_bytes_from_an_api_break_no_page_and_no_check_command(
        tmp_path: Path, upstream: Upstream, status: int, body: bytes,
        headers: list[tuple[bytes, bytes]]) -> None:
    upstream.answers[""] = Answer(status, body, headers)
    config = f"""\
upstreams:
  u:
    checks:
      - {{name: api, kind: anthropic, url: "{upstream.url}", interval: 1s, timeout: 900ms}}
modules:
  api: {{kind: anthropic, allowed_targets: ["{upstream.url}"]}}
"""
    exporter = start_exporter(tmp_path, config)
    try:
        exporter.wait_for(lambda s: (s.value("probe_runs_total", upstream="u", check="api",
                                             kind="anthropic") or 0) >= 1)
        query = f"/probe?module=api&target={upstream.url}&debug=true"
        assert answers_everywhere(exporter, query) == {
            "/metrics": 200, "/": 200, "/api/v1/status": 200, query: 200}
        no_traceback(exporter)
    finally:
        exporter.stop()
    path = tmp_path / "check.yml"
    path.write_text(config)
    for output in ("table", "json"):
        proc = subprocess.run([EXPORTER, "check", f"--config.file={path}", f"--output={output}"],
                              capture_output=True, timeout=60)
        assert b"Traceback" not in proc.stdout + proc.stderr, proc.stderr.decode(errors="replace")
        proc.stdout.decode("utf-8")  # valid UTF-8 throughout


@pytest.mark.parametrize(("text", "expected"), [
    ('"a\\ud800b"', "a\ufffdb"), ('"\\ud83d\\ude00"', "\U0001f600"),
    ('{"\\udfff": ["\\ud800", {"k": "\\udbff"}]}', {"\ufffd": ["\ufffd", {"k": "\ufffd"}]}),
    (b'"\xed\xa0\x80"', "\ufffd\ufffd\ufffd"), ('"plain"', "plain"),
])
def test_safe_json_replaces_lone_surrogates(text: str | bytes, expected: Any) -> None:
    value = safejson.loads(text)
    assert value == expected
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # encodable


# -- case 2: address patterns match addresses only ---------------------------------------------


def mod(kind: str, *allowed: str) -> CheckConfig:
    return build_check(upstream="probe", name=f"{kind}_m", kind=kind, allowed_targets=allowed)


@pytest.mark.parametrize(("module", "target", "outcome"), [
    (mod("tcp", "10.0.0.*:443"), "10.0.0.1:443", None),
    (mod("tcp", "10.0.0.*:443"), "10.0.0.evil.test:443", "10.0.0.evil.test"),
    (mod("tcp", "10.0.0.?:443"), "10.0.0.a:443", "10.0.0.a"),
    (mod("http", "http://10.0.0.*:*/*"), "http://10.0.0.evil.test:80/x", "10.0.0.evil.test"),
    (mod("http", "http://10.0.0.*/*"), "https://10.0.0.evil.test/x", 403),  # no address helps
    (mod("icmp", "10.0.0.*"), "10.0.0.evil.test", "10.0.0.evil.test"),
    (mod("dns", "10.0.0.*"), "10.0.0.9", None),
    (mod("tcp", "[fd00::*]:*"), "[fd00::1]:53", None),
    (mod("tcp", "[fd00::*]:*"), "fd00.evil.test:53", "fd00.evil.test"),
    (mod("tcp", "*:443"), "anything.test:443", None),  # a lone * is no address pattern
    (mod("tcp", "*.example.com:443", "10.*:443"), "a.example.com:443", None),
])
def test_address_patterns_never_match_names_as_text(module: CheckConfig, target: str,
                                                    outcome: str | int | None) -> None:
    if outcome == 403:
        with pytest.raises(target_policy.TargetError) as caught:
            target_policy.check_target(module, target)
        assert caught.value.status == 403
    else:
        assert target_policy.check_target(module, target) == outcome


@pytest.fixture(scope="module")
def acceptor_port() -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0), backlog=256)
    port = sock.getsockname()[1]
    stop = threading.Event()

    def run() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.accept()[0].close()
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(2)
    sock.close()


@pytest.fixture(scope="module")
def fence_exporter(tmp_path_factory: pytest.TempPathFactory, acceptor_port: int,
                   ) -> Iterator[Exporter]:
    # "localhost" resolves from /etc/hosts (127.0.0.1), so no query leaves the machine.
    p = acceptor_port
    exporter = start_exporter(tmp_path_factory.mktemp("fence"), f"""\
modules:
  tcp_ten: {{kind: tcp, allowed_targets: ["10.0.0.*:{p}"]}}
  tcp_loop: {{kind: tcp, allowed_targets: ["127.0.0.*:{p}"]}}
  http_ten: {{kind: http, allowed_targets: ["http://10.0.0.*:{p}/*"]}}
  http_loop: {{kind: http, allowed_targets: ["http://127.0.0.*:{p}/*"]}}
  icmp_ten: {{kind: icmp, allowed_targets: ["10.0.0.*"]}}
  dns_ten: {{kind: dns, allowed_targets: ["10.0.0.*"]}}
""", wait_ready=False)
    yield exporter
    exporter.stop()


@pytest.mark.parametrize(("module", "target", "status", "words"), [
    ("tcp_ten", "localhost:{p}", 403, "resolves to 127.0.0.1"),
    ("tcp_loop", "localhost:{p}", 200, "probe_success 1"),
    ("http_ten", "http://localhost:{p}/x", 403, "resolves to 127.0.0.1"),
    ("http_loop", "http://localhost:{p}/x", 200, "probe_"),
    ("icmp_ten", "localhost", 403, "resolves to 127.0.0.1"),
    ("dns_ten", "localhost", 403, "resolves to 127.0.0.1"),
    ("tcp_ten", "10.0.0.1:1", 403, "allowed_targets"),  # another port
    ("tcp_loop", "127.0.0.1:{p}", 200, "probe_success 1"),
])
def test_a_name_is_checked_against_the_addresses_it_resolves_to(
        fence_exporter: Exporter, acceptor_port: int, module: str, target: str, status: int,
        words: str) -> None:
    got, body, _ = fence_exporter.get(f"/probe?module={module}&target="
                                      + target.format(p=acceptor_port))
    assert (got, words in body) == (status, True), body


def test_an_overlong_target_is_called_too_long(fence_exporter: Exporter) -> None:
    status, body, _ = fence_exporter.get("/probe?module=tcp_ten&target=" + "a" * 3000 + ":1")
    assert status == 400 and "longer than 2048 characters" in body, body


# -- case 3: Retry-After is capped, and a back-off says so ----------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [
    ("86400", 600.0), ("1e308", 600.0), ("inf", None), ("nan", None), ("-1", None),
    ("Fri, 31 Dec 9999 23:59:59 GMT", 600.0), ("12", 12.0), ("1.5", 1.5), ("", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None),
])
def test_retry_after_is_capped(value: str, seconds: float | None) -> None:
    assert retryafter.parse_retry_after(value) == seconds
    assert retryafter.retry_after({"retry-after": value}) == seconds


def test_one_retry_after_parser_serves_both_callers() -> None:
    assert sp.parse_retry_after is retryafter.parse_retry_after
    assert httpcommon.retry_after is retryafter.retry_after
    assert sp.BACKOFF_CAP_SECONDS == retryafter.CAP_SECONDS == 600.0


@pytest.mark.parametrize("retry_after", ["86400", "1e308", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_long_retry_after_on_an_api_probe_is_capped_and_reported(
        tmp_path: Path, upstream: Upstream, retry_after: str) -> None:
    upstream.answers[""] = Answer(401, b'{"type":"error","error":{"type":'
                                       b'"authentication_error","message":"x-api-key"}}',
                                  [(b"retry-after", retry_after.encode())])
    exporter = start_exporter(tmp_path, f"""\
upstreams:
  u:
    checks:
      - {{name: api, kind: anthropic, url: "{upstream.url}", interval: 1s, timeout: 900ms}}
""")
    try:
        ident = {"upstream": "u", "check": "api"}
        scrape = exporter.wait_for(lambda s: (s.value("probe_failures_total", **ident,
                                                      kind="anthropic", reason="backoff")
                                              or 0) >= 2)
        assert scrape.value("probe_api_retry_after_seconds", **ident) == 600.0
        assert scrape.value("probe_success", **ident, kind="anthropic") == 0  # not a stale 1
        status = json.loads(exporter.get("/api/v1/status")[1])
        [check] = status["upstreams"][0]["checks"]
        assert check["reason"] == "backoff" and 0 < check["backing_off_seconds"] <= 600
        assert len(upstream.requests) == 1  # the pause holds: no request until it ends
    finally:
        exporter.stop()


# -- case 4: a page's cardinality is bounded -----------------------------------------------------


@dataclass
class PageCase:
    components: int
    incidents: int
    options: dict[str, int]
    kept: tuple[int, int]  # components, open incidents exported
    dropped: dict[str, int]
    long_id: bool = False


PAGE_CASES = {
    "defaults": PageCase(5000, 300, {}, (1000, 100),
                         {"components": 4000, "incidents": 200}),
    "small limits": PageCase(40, 30, {"max_components": 10, "max_incidents": 5}, (10, 5),
                             {"components": 30, "incidents": 25}),
    "within limits": PageCase(7, 2, {}, (7, 2), {}),
    "10 KB ids": PageCase(3, 0, {}, (3, 0), {"labels": 6}, long_id=True),
}


def big_page(case: PageCase) -> bytes:
    pad = "x" * 10_000 if case.long_id else ""
    components = [{"id": f"{pad}c{i}", "name": f"{pad}C{i}", "status": "operational"}
                  for i in range(case.components)]
    incidents = [{"id": f"i{i}", "name": f"I{i}", "status": "investigating", "impact": "minor"}
                 for i in range(case.incidents)]
    return page_json(components, incidents=incidents)


@pytest.mark.parametrize("name", sorted(PAGE_CASES))
async def test_a_page_exports_at_most_its_limits(upstream: Upstream, name: str) -> None:
    case = PAGE_CASES[name]
    upstream.answers[""] = Answer(body=big_page(case))
    options = StatuspageConfig(url=upstream.url, timeout=5.0, **case.options)
    async with aiohttp.ClientSession() as session:
        ctx = ProbeContext(session, logging.getLogger("test"))
        result = await poll(upstream.url + "/api/v2/summary.json", options, ctx)
    assert result.success, result.error
    page = result.details["page"]
    assert (len(page.components), len(page.open_incidents)) == case.kept
    assert dict(page.dropped) == case.dropped
    dropped = {s.labels["what"]: s.value for s in result.gauges
               if s.metric is metrics.STATUSPAGE_DROPPED}
    assert dropped == {what: float(case.dropped.get(what, 0)) for what in sp.DROPPED}
    assert all(len(v) <= options.max_label_chars for s in result.gauges for v in s.labels.values())
    assert len({c.id for c in page.components.values()}) == case.kept[0]  # cut ids stay apart


def test_the_landing_page_and_status_say_what_was_left_out(tmp_path: Path,
                                                           upstream: Upstream) -> None:
    upstream.answers[""] = Answer(body=big_page(PAGE_CASES["small limits"]))
    exporter = start_exporter(tmp_path, f"""\
upstreams:
  u:
    statuspage: {{url: "{upstream.url}", interval: 1s, timeout: 900ms, max_components: 10,
                  max_incidents: 5}}
""")
    try:
        scrape = exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="u") == 1)
        assert scrape.value("statuspage_dropped_items", upstream="u", what="components") == 30
        assert len(scrape.all("statuspage_component_status", status="operational")) == 10
        status = json.loads(exporter.get("/api/v1/status")[1])
        assert status["upstreams"][0]["statuspage"]["dropped"]["incidents"] == 25
        assert "30 components" in exporter.get("/")[1]
    finally:
        exporter.stop()


# -- case 5: JSON that is no status page; unknown states ------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"status":{"code":200}}', b'{"page":{}}', b'{"components":[]}', b'{"incidents":[]}',
    b'{"page":{"id":""},"components":[{"id":"a","status":"operational"}]}',
    b'{"status":{"indicator":null},"components":[]}',
])
async def test_json_without_the_page_shape_is_schema(upstream: Upstream, body: bytes) -> None:
    upstream.answers[""] = Answer(body=body)
    async with aiohttp.ClientSession() as session:
        ctx = ProbeContext(session, logging.getLogger("test"))
        result = await poll(upstream.url + "/x.json", StatuspageConfig(url=upstream.url), ctx)
    assert (result.success, result.reason) == (False, "schema")


@pytest.mark.parametrize(("status", "indicator", "verdict"), [
    ("fine", "none", "degraded"), ("OPERATIONAL", "none", "operational"),
    ("operational", "allgood", "operational"), ("", "none", "degraded"),
    (None, "none", "degraded"), ("major_outage", "none", "outage"),
])
def test_an_unknown_component_state_is_never_operational(status: Any, indicator: str,
                                                         verdict: str) -> None:
    page = parse({"page": {"id": "p"}, "status": {"indicator": indicator},
                  "components": [{"id": "a", "name": "A", "status": status}]})
    expected = (status or "").strip().lower()
    assert page.components["a"].status == (expected if expected in sp.COMPONENT_STATUSES
                                           else "unknown")
    assert decide([], [], page).verdict == verdict


# -- case 6: hostile API bodies ----------------------------------------------------------------

STREAM = ("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"usage\":"
          "{{\"input_tokens\":{inp},\"output_tokens\":1}}}}}}\n\n"
          "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"delta\":"
          "{{\"type\":\"text_delta\",\"text\":\"p\"}}}}\n\n"
          "event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":"
          "{{\"output_tokens\":{out}}}}}\n\n"
          "event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n")


@pytest.mark.parametrize(("mode", "answer", "reason"), [
    ("keyless", Answer(401, b"[" * 100_000), "bad_response"),
    ("keyless", Answer(401, b'{"type":"error","error":{"type":"authentication_error",'
                            b'"message":' + b"[" * 50_000 + b"}}"), "bad_response"),
    ("models", Answer(200, b'{"data":[{"id":' + b"9" * 5000 + b"}]}"), ""),
    ("models", Answer(200, b'{"data":[{"id":1e999}]}'), ""),
    ("count_tokens", Answer(200, b'{"input_tokens":' + b"9" * 400 + b"}"), "bad_response"),
    ("count_tokens", Answer(200, b'{"input_tokens":-5}'), "bad_response"),
    ("messages", Answer(200, STREAM.format(inp=-1000, out=-50).encode(),
                        content_type=b"text/event-stream"), ""),
    ("messages", Answer(200, STREAM.format(inp="1" + "0" * 400, out="1e400").encode(),
                        content_type=b"text/event-stream"), ""),
    ("messages", Answer(200, ("data: " + "[" * 100_000 + "\n\n").encode(),
                        content_type=b"text/event-stream"), "stream_error"),
])
async def test_hostile_api_bodies_are_failures_not_crashes(
        upstream: Upstream, mode: str, answer: Answer, reason: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.answers[""] = answer
    monkeypatch.setenv("HOSTILE_KEY", "sk-test-0123456789abcdef")
    extra = {} if mode == "keyless" else {"api_key_env": "HOSTILE_KEY"}
    if mode in ("count_tokens", "messages"):
        extra["model"] = "m"
    check = build_check(upstream="u", name="c", kind="anthropic", url=upstream.url, mode=mode,
                        timeout=10.0, daily_token_budget=1000, **extra)  # type: ignore[arg-type]
    state = StateStore()
    state.sync(Config(upstreams=(UpstreamConfig("u", None, (check,)),)))
    async with aiohttp.ClientSession() as session:
        scheduler = Scheduler(state, session)
        memo: dict[str, object] = {}
        for _ in range(2):
            result = await scheduler.run_once(check, memo)
            state.record(state.checks[check.key].check, result)
    assert (result.reason, result.success) == (reason, not reason), result.error
    counters = state.checks[check.key].counters
    assert all(v >= 0 for v in counters.values())
    assert counters[(metrics.EXPORTER_CHECK_CRASHES, ("u", "c"))] == 0
    budget = memo.get("token_budget")
    if isinstance(budget, dict):
        assert budget["spent"] >= 0
        remaining = [s.value for s in result.gauges if s.metric is metrics.PROBE_API_BUDGET_REMAINING]
        assert remaining and remaining[0] <= 1000  # never refilled past the budget


# -- case 7: out of file descriptors -------------------------------------------------------------

FD_LIMIT = 64
SET_LIMIT = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
             f"({FD_LIMIT}, {FD_LIMIT})); os.execv(sys.argv[1], sys.argv[1:])")


def test_at_the_fd_limit_the_fault_is_ours_and_the_server_answers(tmp_path: Path,
                                                                  upstream: Upstream) -> None:
    upstream.answers[""] = Answer(200, b"ok", content_type=b"text/plain", delay=0.6)
    checks = "\n".join(f"      - {{name: c{i}, kind: http, url: \"{upstream.url}/{i}\"}}"
                       for i in range(100))
    config = tmp_path / "fd.yml"
    config.write_text(f"defaults: {{interval: 1s, timeout: 900ms}}\nupstreams:\n  u:\n"
                      f"    checks:\n{checks}\n")
    port = free_port()
    log_path = tmp_path / "fd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", SET_LIMIT, EXPORTER,
                                 f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    exporter = Exporter(proc, f"http://127.0.0.1:{port}", log_path, config)
    try:
        def scrape() -> Scrape | None:
            try:
                status, body, _ = http_get(exporter.url + "/metrics", timeout=3)
            except OSError:
                return None
            return Scrape.parse(body) if status == 200 else None

        found: list[Scrape] = []

        def local_failures_seen() -> bool:
            s = scrape()
            if s is not None:
                found.append(s)
            return s is not None and sum(s.all("probe_failures_total",
                                               reason="local_resources").values()) > 0

        wait(local_failures_seen, 40, "a local_resources failure")
        for s in found:  # the provider is never blamed for our limit
            assert s.value("upstream_verdict", upstream="u", verdict="outage") in (0, None)
        assert found[-1].value("upstream_verdict", upstream="u", verdict="local_network") == 1
        # Descriptors are kept back for the server: every request is answered.
        answers = [http_get(exporter.url + path, timeout=5)[0]
                   for path in ("/-/healthy", "/metrics", "/api/v1/status") * 5]
        assert answers == [200] * 15
        assert proc.poll() is None
    finally:
        exporter.stop()
    log_text = log_path.read_text(errors="replace")
    assert "prober crashed" not in log_text and "failed inside the exporter" not in log_text


EXHAUST = """\
import asyncio, json, logging, resource, socket, sys
from exporter.checks.net.resources import local_resource_error
from exporter.config import AnthropicCheck, DnsCheck, HttpCheck, TcpCheck, TlsCheck
from exporter.engine.scheduler import Scheduler
from exporter.engine.state import StateStore
import aiohttp

from exporter.engine.probers import PROBERS
PROBERS  # import every prober module while files can still be opened

async def main(url):
    async with aiohttp.ClientSession() as session:
        scheduler = Scheduler(StateStore(), session)
        scheduler.slots = None  # let every run meet the limit itself
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        hoard = []
        try:
            while True:
                hoard.append(socket.socket())
        except OSError as exc:
            assert local_resource_error(exc), exc
        checks = [TcpCheck(upstream="u", name="tcp", kind="tcp", target=url[7:]),
                  HttpCheck(upstream="u", name="http", kind="http", url=url),
                  TlsCheck(upstream="u", name="tls", kind="tls", target=url[7:]),
                  AnthropicCheck(upstream="u", name="api", kind="anthropic", url=url),
                  DnsCheck(upstream="u", name="dns", kind="dns", target="localhost",
                           resolver=url[7:])]
        reasons = {c.kind: (await scheduler.run_once(c)).reason for c in checks}
        print(json.dumps(reasons))

asyncio.run(main(sys.argv[1]))
"""


def test_a_probe_at_the_descriptor_limit_fails_with_local_resources(upstream: Upstream) -> None:
    # A real EMFILE: the process holds every descriptor it may open, then each kind runs.
    proc = subprocess.run([sys.executable, "-c", EXHAUST, upstream.url], capture_output=True,
                          timeout=60, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == dict.fromkeys(
        ("tcp", "http", "tls", "anthropic", "dns"), "local_resources")
    assert "Traceback" not in proc.stderr


# -- case 8: big configs -------------------------------------------------------------------------


def test_a_config_over_the_size_limit_names_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_text("# filler\n" * (MAX_CONFIG_BYTES // 9 + 1))
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert f"limit of {MAX_CONFIG_BYTES} bytes" in str(caught.value)


@pytest.mark.parametrize(("text", "aliases"), [
    ("a: [" + "1, " * (MAX_NODES + 10) + "1]\n", False),
    ("x: &x [" + "1, " * 1000 + "1]\n" + "y: [" + "*x, " * 300 + "*x]\n", True),
])
def test_too_many_values_blames_aliases_only_when_there_are_some(text: str,
                                                                 aliases: bool) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "t")
    message = str(caught.value)
    assert f"more than {MAX_NODES} values" in message
    assert ("aliases" in message) == aliases


def largest_config(port: int) -> str:
    """About as many checks as MAX_NODES allows (each check is 6 values plus its path)."""
    rows = [f"      - {{name: c{i}, kind: tcp, target: \"127.0.0.1:{port}\", interval: 1h}}"
            for i in range(MAX_NODES // 6 - 100)]
    return "upstreams:\n  big:\n    checks:\n" + "\n".join(rows) + "\n"


def test_reloading_the_largest_config_keeps_healthy_answering(tmp_path: Path) -> None:
    exporter = start_exporter(tmp_path, "control:\n  - {name: t, kind: tcp, target: "
                                        "\"127.0.0.1:9\", interval: 1h}\n")
    try:
        assert exporter.config_path is not None
        exporter.config_path.write_text(largest_config(9))
        done: list[tuple[int, str]] = []
        thread = threading.Thread(target=lambda: done.append(
            http_post(exporter.url + "/-/reload", timeout=300)))
        thread.start()
        during = 0  # answers that came back while the reload was still running
        while thread.is_alive():
            status, _, _ = http_get(exporter.url + "/-/healthy", timeout=60)
            during += status == 200 and thread.is_alive()
            time.sleep(0.05)
        thread.join()
        assert done and done[0][0] == 200, done
        # A loop frozen by the parse answers nothing until the reload is done; this one
        # answered again and again meanwhile (bench.bigpage measures how fast).
        assert during >= 3
    finally:
        exporter.stop()


# -- case 9: the smaller ones --------------------------------------------------------------------


@pytest.mark.parametrize("updated_at", [1e400, -1e400, "1e400", 10**400, float("nan")])
def test_status_json_never_holds_infinity_or_nan(tmp_path: Path, upstream: Upstream,
                                                 updated_at: Any) -> None:
    text = page_json([{"id": "a", "name": "A", "status": "operational"}]).decode()
    value = {1e400: "1e400", -1e400: "-1e400"}.get(updated_at, json.dumps(updated_at)) \
        if not isinstance(updated_at, float) or updated_at == updated_at else "NaN"
    upstream.answers[""] = Answer(body=text.replace('"2026-01-01T00:00:00Z"', value).encode())
    exporter = start_exporter(tmp_path, f"""\
upstreams:
  u:
    statuspage: {{url: "{upstream.url}", interval: 1s, timeout: 900ms}}
""")
    try:
        exporter.wait_for(lambda s: s.value("statuspage_poll_success", upstream="u") == 1)
        assert answers_everywhere(exporter)["/api/v1/status"] == 200
    finally:
        exporter.stop()


def test_json_safe_turns_non_finite_numbers_into_null() -> None:
    assert json_safe({"a": [float("inf"), float("nan"), 1.5, "x\ud800"]}) == {
        "a": [None, None, 1.5, "x\ufffd"]}


GOOD_HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()


@pytest.mark.parametrize(("hashed", "ok"), [
    (GOOD_HASH, True),
    ("$2$10$" + GOOD_HASH[7:], False),  # the original, broken variant
    ("$2x$04$" + GOOD_HASH[7:], False),
    (GOOD_HASH.replace("$04$", "$99$"), False),
    (GOOD_HASH.replace("$04$", "$03$"), False),
    (GOOD_HASH.replace("$04$", "$21$"), False),  # valid for bcrypt, but minutes per login
    (GOOD_HASH[:28] + "z" + GOOD_HASH[29:], False),  # a salt bcrypt cannot decode
    (GOOD_HASH[:-1], False),
])
def test_bcrypt_hashes_are_checked_when_the_web_config_loads(tmp_path: Path, hashed: str,
                                                            ok: bool) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f'basic_auth_users:\n  u: "{hashed}"\n')
    if ok:
        webconfig.load(path)
    else:
        with pytest.raises(ConfigError) as caught:
            webconfig.load(path)
        assert "bcrypt hash" in str(caught.value) and hashed not in str(caught.value)


@pytest.mark.parametrize("value", ["sk-key-0123456789\n", "  sk-key-0123456789\t\n",
                                   "\nsk-key-0123456789"])
@pytest.mark.parametrize("source", ["env", "file"])
def test_api_key_values_are_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     value: str, source: str) -> None:
    secrets = Secrets()
    if source == "env":
        monkeypatch.setenv("KEY_WITH_NEWLINE", value)
        check = build_check(upstream="u", name="c", kind="anthropic", api_key_env="KEY_WITH_NEWLINE")
    else:
        (tmp_path / "key").write_text(value)
        check = build_check(upstream="u", name="c", kind="anthropic",
                            api_key_file=str(tmp_path / "key"))
    assert secrets.get(check) == "sk-key-0123456789"


KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@pytest.mark.parametrize(("text", "expected"), [
    (f"the key {KEY} leaked", f"the key {REDACTED} leaked"),
    (f"echo {KEY[:8]} only", f"echo {REDACTED} only"),  # 8 characters: an echo
    (f"echo {KEY[5:20]}...", f"echo {REDACTED}..."),  # a run from the middle
    (f"short {KEY[:7]} is fine", f"short {KEY[:7]} is fine"),  # 7: could be anything
    (f"{KEY[:10]}…{KEY[-10:]}", f"{REDACTED}…{REDACTED}"),  # a masked echo
    ("Incorrect API key provided: sk-proj-****WxYz.", f"Incorrect API key provided: {REDACTED}."),
    ("nothing to hide", "nothing to hide"),
])
def test_one_scrubber_cuts_any_eight_character_run_of_a_secret(text: str, expected: str) -> None:
    assert scrub(text, KEY) == expected
    assert httpcommon.scrub is scrub  # the API probes use this very function


def test_an_echoed_fragment_of_the_key_appears_nowhere(tmp_path: Path, upstream: Upstream,
                                                       ) -> None:
    key = "sk-ant-api03-" + "Zq8Wm3Rt5Yu7Io9Pa2Sd4Fg6Hj"
    fragment = key[14:30]
    upstream.answers[""] = Answer(401, json.dumps({"type": "error", "error": {
        "type": "authentication_error", "message": f"invalid key ...{fragment}..."}}).encode())
    exporter = start_exporter(tmp_path, f"""\
upstreams:
  u:
    checks:
      - {{name: api, kind: anthropic, mode: models, url: "{upstream.url}", api_key_env: ECHO_KEY,
          interval: 1s, timeout: 900ms}}
modules:
  api: {{kind: anthropic, mode: models, api_key_env: ECHO_KEY, allowed_targets: ["{upstream.url}"]}}
""", env={"ECHO_KEY": key})
    try:
        exporter.wait_for(lambda s: (s.value("probe_runs_total", upstream="u", check="api",
                                             kind="anthropic") or 0) >= 1)
        texts = [exporter.get(p)[1] for p in (
            "/metrics", "/", "/api/v1/status", f"/probe?module=api&target={upstream.url}&debug=true")]
    finally:
        exporter.stop()
    texts.append(exporter.log())
    assert [fragment in t for t in texts] == [False] * len(texts)
    assert "auth" in texts[2]


@pytest.mark.parametrize(("snippet", "error"), [
    ("statuspage: {url: 'http://127.0.0.1:9/', interval: 1ms}", "at least 1s for a status page"),
    ("statuspage: {url: 'http://127.0.0.1:9/', interval: 999ms, timeout: 500ms}", "at least 1s"),
    ("checks: [{name: c, kind: tcp, target: '127.0.0.1:9', interval: 1ms}]",
     "at least 0.1s for kind tcp"),
    ("checks: [{name: c, kind: anthropic, interval: 50ms}]", "at least 0.1s for kind anthropic"),
])
def test_intervals_have_a_floor_per_kind(snippet: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(f"upstreams:\n  u:\n    {snippet}\n", "t")
    assert error in str(caught.value) and "interval" in str(caught.value)


@pytest.mark.parametrize("snippet", [
    "statuspage: {url: 'http://127.0.0.1:9/', interval: 1s, timeout: 500ms}",
    "checks: [{name: c, kind: tcp, target: '127.0.0.1:9', interval: 100ms, timeout: 50ms}]",
])
def test_intervals_at_the_floor_are_accepted(snippet: str) -> None:
    load_text(f"upstreams:\n  u:\n    {snippet}\n", "t")


@pytest.mark.parametrize(("value", "expected"), [
    ("1969-12-31T23:59:59Z", None), ("0001-01-01T00:00:00+00:00", None), ("1900-01-01", None),
    (-1, None), (-1e12, None), ("1970-01-01T00:00:00Z", 0.0), (10**400, None), (1e400, None),
    ("2026-01-01T00:00:00Z", 1767225600.0),
])
def test_timestamps_before_1970_or_out_of_range_are_dropped(value: Any,
                                                            expected: float | None) -> None:
    assert parse_timestamp(value) == expected


# -- supervision: the scheduler's loop survives whatever fails inside it -------------------------


async def exploding(check: CheckConfig, ctx: ProbeContext) -> Result:
    """A test-only prober kind, registered in the public prober table: it fails inside the
    exporter the way a bug would."""
    raise ZeroDivisionError("a bug in a prober")


@pytest.fixture
def exploding_kind() -> Iterator[str]:
    PROBERS["test_exploding"] = exploding
    yield "test_exploding"
    del PROBERS["test_exploding"]


async def test_a_crashing_prober_is_counted_logged_once_and_the_loop_goes_on(
        exploding_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    check = build_check(upstream="u", name="boom", kind=exploding_kind, interval=0.1, timeout=0.1)
    config = Config(upstreams=(UpstreamConfig("u", None, (check,)),))
    state = StateStore()
    async with aiohttp.ClientSession() as session:
        scheduler = Scheduler(state, session)
        scheduler.apply(config)
        crashes_key = (metrics.EXPORTER_CHECK_CRASHES, ("u", "boom"))
        assert state.checks[check.key].counters[crashes_key] == 0  # present from the start
        with caplog.at_level(logging.DEBUG):
            for _ in range(100):
                await asyncio.sleep(0.1)
                if state.checks[check.key].runs >= 5:
                    break
        await scheduler.stop()
    s = state.checks[check.key]
    assert s.runs >= 5 and s.failures["internal"] == s.runs
    assert s.counters[crashes_key] == s.runs
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once per distinct cause


async def test_a_failing_result_hook_is_counted_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture, acceptor_port: int) -> None:
    check = build_check(upstream="u", name="t", kind="tcp", target=f"127.0.0.1:{acceptor_port}",
                        interval=0.1, timeout=0.1)
    state = StateStore()
    calls: list[int] = []

    def render(_check: CheckConfig, result: Result) -> None:
        calls.append(1)
        "\ud800".encode()  # what rendering a lone surrogate did before round 2

    async with aiohttp.ClientSession() as session:
        scheduler = Scheduler(state, session, on_result=render)
        scheduler.apply(Config(upstreams=(UpstreamConfig("u", None, (check,)),)))
        with caplog.at_level(logging.DEBUG):
            for _ in range(100):
                await asyncio.sleep(0.1)
                if len(calls) >= 4:
                    break
        await scheduler.stop()
    s = state.checks[check.key]
    assert len(calls) >= 4 and s.runs >= 4
    assert s.counters[(metrics.EXPORTER_CHECK_CRASHES, ("u", "t"))] == len(calls)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
