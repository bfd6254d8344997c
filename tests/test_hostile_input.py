"""Hostile input, property-based (hypothesis): whatever a network or a config file sends, the
result is a value or the module's own clear error, never another exception.

- the status-page parser, on arbitrary JSON values and on mutated real pages, and everything
  it feeds: gauges, the state store, the verdicts and the /metrics text (which must parse);
- the SSE parser, on arbitrary bytes in arbitrary chunks (and chunking never changes the events);
- the config loader and the web-config loader, on arbitrary text and on mutated valid configs;
- /probe, through the real HTTP endpoint, with arbitrary module, target and debug values;
- round 2 shapes: lone surrogates (in the page properties' text), nesting depth, huge numbers,
  a page's cardinality against its limits, and addresses in allowed_targets patterns.

CI runs these with hypothesis' default settings; ``python -m bench.fuzz --minutes N`` runs the
same properties for longer (docs/security.md has the last figures).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlencode

import pytest
import yaml
from conftest import FIXTURES, OWN_FIXTURES, Exporter, build_check, free_port, http_get, raw_exchange, start_exporter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks.base import Result
from exporter.checks.net import safejson
from exporter.checks.net import targets as target_policy
from exporter.checks.net.sse import Event, SSEError, SSEParser
from exporter.config import (
    Config,
    ConfigError,
    StatuspageConfig,
    UpstreamConfig,
    load_text,
)
from exporter.engine.state import StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition import status as status_json
from exporter.exposition.collector import Collector
from exporter.secrets import Secrets
from exporter.server import webconfig
from exporter.witnesses.statuspage import (
    DROPPED,
    SchemaError,
    apply_limits,
    gauges,
    parse,
    parse_timestamp,
    unmatched_filters,
)

SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])

# -- JSON values shaped like status pages ---------------------------------------------------------

PAGE_KEYS = ("page", "status", "components", "incidents", "scheduled_maintenances", "id", "name",
             "status", "indicator", "description", "updated_at", "created_at", "group",
             "group_id", "impact", "shortlink", "scheduled_for", "scheduled_until",
             "started_at", "resolved_at", "incident_updates", "position", "only_show_if_degraded")
# Text with lone surrogates, as json.loads makes of "\ud800" (case 1 of round 2).
SURROGATE_TEXT = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
                         | st.characters(), max_size=20)
HUGE = st.integers(-10**400, 10**400) | st.sampled_from([10**400, -(10**400), 2**1024, 1e308])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | SURROGATE_TEXT | HUGE
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["operational", "major_outage", "partial_outage", "under_maintenance",
                              "degraded_performance", "critical", "minor", "none", "resolved",
                              "in_progress", "investigating", "2024-05-01T10:00:00Z",
                              "2024-13-45T99:99:99+25:00", "", "\n", '"}\n# HELP x', "\\", "\x00"])
           | st.text(max_size=40))
json_values = st.recursive(
    SCALARS,
    lambda inner: (st.lists(inner, max_size=6)
                   | st.dictionaries(st.sampled_from(PAGE_KEYS) | st.text(max_size=12), inner,
                                     max_size=8)),
    max_leaves=60)
page_like = st.fixed_dictionaries({}, optional={key: json_values for key in (
    "page", "status", "components", "incidents", "scheduled_maintenances")})


def exercise_page(payload: Any) -> None:
    """Parse ``payload`` as a status page and push the result all the way to /metrics text."""
    options = StatuspageConfig(url="http://127.0.0.1/", components=("api", "Group"),
                               exclude_components=("x",))
    try:
        page = parse(payload)
        filtered = parse(payload, options)
    except SchemaError:
        return
    unmatched_filters(page, options)
    samples = gauges(filtered)
    for sample in samples:
        assert isinstance(sample.value, float)
        assert all(isinstance(v, str) for v in sample.labels.values())
    config = Config(upstreams=(UpstreamConfig("x", StatuspageConfig(url="http://127.0.0.1/"), ()),))
    state = StateStore()
    state.sync(config)
    check = state.checks[("x", "statuspage")].check
    state.record(check, Result(True, 0.01, gauges=samples, details={"page": filtered}))
    verdicts = Verdicts()
    verdicts.refresh(state, config)
    text = Collector(state, verdicts).render().decode()
    status = status_json.build(config, state, verdicts, ready=True, secrets=Secrets())
    json.dumps(status, allow_nan=False, ensure_ascii=False).encode("utf-8")  # valid, encodable
    seen = set()
    for family in text_string_to_metric_families(text):  # must parse, whatever the page said
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in seen, f"duplicate series {key}"
            seen.add(key)
    assert sum(1 for name, _ in seen if name == "statuspage_indicator") == 6


@given(json_values)
@example({"components": [{"group": True, "components": 5, "id": "g"}]})
@example({"components": [{"id": "a", "name": 'x"}\n# EOF', "status": "major_outage"}]})
def test_statuspage_parser_on_any_json_value(payload: Any) -> None:
    exercise_page(payload)


@given(page_like)
def test_statuspage_parser_on_page_shaped_objects(payload: dict[str, Any]) -> None:
    exercise_page(payload | {"page": {"id": "p"}})  # named: the inside is what is explored


# The project's own pages always; the real captures too where ../shared is present.
FIXTURE_PAGES = {p.name: json.loads(p.read_text())
                 for p in sorted([*(OWN_FIXTURES / "statuspage").glob("*.json"), *FIXTURES.glob("*.json")])}


def mutate(value: Any, draw: Any, depth: int = 0) -> Any:
    """One random edit somewhere in a JSON tree: replace, delete, duplicate or retype."""
    if isinstance(value, (dict, list)) and value and depth < 8 and draw(st.integers(0, 3)) > 0:
        if isinstance(value, dict):
            key = draw(st.sampled_from(sorted(value)))
            out = dict(value)
            action = draw(st.sampled_from(["descend", "delete", "descend"]))
            if action == "delete":
                del out[key]
            else:
                out[key] = mutate(value[key], draw, depth + 1)
            return out
        index = draw(st.integers(0, len(value) - 1))
        items = list(value)
        action = draw(st.sampled_from(["descend", "delete", "duplicate", "descend"]))
        if action == "delete":
            del items[index]
        elif action == "duplicate":
            items.append(items[index])
        else:
            items[index] = mutate(items[index], draw, depth + 1)
        return items
    return draw(json_values)


@SLOW
@given(st.sampled_from(sorted(FIXTURE_PAGES)), st.integers(1, 6), st.data())
def test_statuspage_parser_on_mutated_real_pages(name: str, edits: int, data: st.DataObject) -> None:
    payload = FIXTURE_PAGES[name]
    for _ in range(edits):
        payload = mutate(payload, data.draw)
    exercise_page(payload)


# -- SSE ----------------------------------------------------------------------------------------------

SSE_PIECES = st.sampled_from([b"data: ", b"data:", b"event: ", b"id: ", b"id: \x00", b": c",
                              b"retry: 9", b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", b"{}", b"x",
                              b"\xff\xfe", b"message_stop", b" "])
sse_bytes = st.lists(SSE_PIECES | st.binary(max_size=12), max_size=60).map(b"".join) | st.binary(max_size=400)


def feed(chunks: list[bytes], max_line: int = 1 << 20) -> list[Event]:
    parser = SSEParser(max_line=max_line)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    _ = parser.pending
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(sse_bytes, st.lists(st.integers(0, 10_000), max_size=20))
def test_sse_chunking_never_changes_the_events(data: bytes, cuts: list[int]) -> None:
    whole = feed([data])
    assert feed(split(data, cuts)) == whole
    assert feed([bytes([b]) for b in data]) == whole
    for event in whole:
        assert isinstance(event.event, str) and isinstance(event.data, str)


@given(sse_bytes, st.lists(st.integers(0, 10_000), max_size=20), st.integers(1, 64))
def test_sse_line_limit_is_a_clear_error(data: bytes, cuts: list[int], max_line: int) -> None:
    with contextlib.suppress(SSEError):
        feed(split(data, cuts), max_line=max_line)


# -- config files ---------------------------------------------------------------------------------

VALID_CONFIG = """\
vantage: home
defaults: {interval: 30s, timeout: 10s}
upstreams:
  claude:
    statuspage: {url: "http://127.0.0.1:1/", interval: 60s, components: [api]}
    verdict: {outage_after: 3, window: 10}
    checks:
      - {name: api, kind: anthropic, url: "http://127.0.0.1:1", mode: keyless, component: api}
      - {name: msg, kind: anthropic, mode: messages, model: m, api_key_env: KEY, max_tokens: 4}
      - {name: web, kind: http, url: "http://127.0.0.1:1/", valid_status_codes: [200], body_regex: "ok"}
      - {name: tcp, kind: tcp, target: "127.0.0.1:1", per_address: true}
      - {name: tls, kind: tls, target: "127.0.0.1:1", tls_config: {server_name: x}}
      - {name: ping, kind: icmp, target: 127.0.0.1, packets: 3}
      - {name: dns, kind: dns, target: localhost, resolver: "127.0.0.1:53"}
control:
  - {name: c, kind: tcp, target: "127.0.0.1:2"}
modules:
  http_2xx: {kind: http, allowed_targets: ["http://127.0.0.1:*"]}
"""
YAML_TOKENS = st.sampled_from(["a", ":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&x ", "*x",
                               "!!python/object:os.system", "!!binary", "'", '"', "#", "---",
                               "...", "? ", "|", ">", "%YAML 1.1", "upstreams", "checks", "kind",
                               "name", "url", "30s", "-1", "1e999", ".nan", "~", "<<: ", "\t"])
yaml_text = st.lists(YAML_TOKENS | st.text(max_size=8), max_size=80).map("".join) | st.text()
yaml_scalars = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.text(max_size=20)
                | st.floats(allow_nan=True) | st.sampled_from(["30s", "0s", "-5s", "1h", "http://x",
                                                               "127.0.0.1:1", "", "*"]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def load_or_config_error(text: str) -> None:
    try:
        config = load_text(text, "fuzz.yml")
    except ConfigError as exc:
        assert exc.issues and all(str(issue) for issue in exc.issues)
        return
    assert isinstance(config, Config)


@SLOW  # the explicit deep-nesting examples run into the recursion limit, which takes ~1 s
@given(yaml_text)
@example("")
@example("a: &a [1]\nb: *a\n")
@example("!!python/object/apply:os.system ['true']")
@example("\x1f")  # a control character: PyYAML's reader refuses it before parsing starts
@example("a: &a [*a]\n")  # a recursive alias
@example("[" * 3000)  # deeper than Python's recursion limit
@example("upstreams: " + "{a: " * 2000 + "1" + "}" * 2000)
def test_config_loader_on_any_text(text: str) -> None:
    load_or_config_error(text)


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("loader", ["exporter.config", "exporter.server.webconfig"])
def test_alias_bombs_are_refused_quickly(loader: str) -> None:
    """9 levels of 9 aliases would be 387 million values: a clear error, in a subprocess so
    that a regression costs a timeout, not the test run's memory."""
    code = (f"import sys; from pathlib import Path; from {loader} import load_text\n"
            "from exporter.config import ConfigError\n"
            "args = (Path('.'),) if 'web' in __import__('sys').argv[1] else ()\n"
            "try:\n    load_text(sys.stdin.read(), 'bomb.yml', *args)\n"
            "except ConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, loader], input=alias_bomb(9),
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bomb.yml" in done.stdout


@SLOW
@given(st.data())
def test_config_loader_on_mutated_valid_configs(data: st.DataObject) -> None:
    tree = yaml.safe_load(VALID_CONFIG)
    for _ in range(data.draw(st.integers(1, 4))):
        tree = mutate_tree(tree, data)
    load_or_config_error(yaml.safe_dump(tree))


def mutate_tree(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    if isinstance(value, (dict, list)) and value and data.draw(st.integers(0, 4)) > 0:
        if isinstance(value, dict):
            key = data.draw(st.sampled_from(sorted(value, key=str)))
            out = dict(value)
            if data.draw(st.booleans()):
                out[key] = mutate_tree(value[key], data, depth + 1)
            elif data.draw(st.booleans()):
                del out[key]
            else:
                out[data.draw(st.text(max_size=10))] = data.draw(yaml_values)
            return out
        items = list(value)
        index = data.draw(st.integers(0, len(items) - 1))
        items[index] = mutate_tree(items[index], data, depth + 1)
        return items
    return data.draw(yaml_values)


WEB_TOKENS = st.sampled_from(["tls_server_config", "cert_file", "key_file", "client_auth_type",
                              "RequireAndVerifyClientCert", "min_version", "TLS13", "TLS12",
                              "basic_auth_users", "$2b$04$" + "a" * 53, "exempt_paths", "/-/reload",
                              "http_server_config", "headers", "X-Frame-Options", ":", " ", "\n",
                              "  ", "- ", "{", "}", "[", "]", ",", "&a ", "*a"])


@given(st.lists(WEB_TOKENS | st.text(max_size=6), max_size=60).map("".join) | st.text())
def test_web_config_loader_on_any_text(text: str) -> None:
    try:
        config = webconfig.load_text(text, "web.yml", Path("/nonexistent"))
    except ConfigError as exc:
        assert exc.issues
        return
    assert isinstance(config, webconfig.WebConfig)


# -- /probe parameters, through the real endpoint ------------------------------------------------------


def probe_config(closed: int) -> str:
    """Modules whose only allowed targets are a closed loopback port (and loopback names).

    Only name patterns: under an address pattern a name target is allowed by what it
    resolves to, and a random name would send a DNS query off this machine."""
    return f"""\
control:
  - {{name: local, kind: tcp, target: "127.0.0.1:{closed}", interval: 30s, timeout: 1s}}
modules:
  http_2xx: {{kind: http, timeout: 1s, allowed_targets: ["http://localhost:{closed}/*"]}}
  tcp_connect: {{kind: tcp, timeout: 1s, allowed_targets: ["localhost:{closed}"]}}
  icmp: {{kind: icmp, timeout: 1s, allowed_targets: ["localhost"]}}
  dns: {{kind: dns, timeout: 1s, resolver: "127.0.0.1:{closed}", allowed_targets: ["localhost"]}}
"""


@pytest.fixture(scope="module")
def probe_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    closed = free_port()
    exporter = start_exporter(tmp_path_factory.mktemp("probe"), probe_config(closed))
    exporter.closed_port = closed  # type: ignore[attr-defined]
    yield exporter
    exporter.stop()


MODULES = st.sampled_from(["http_2xx", "tcp_connect", "icmp", "dns", "", "HTTP_2XX", "nope"]) | st.text(max_size=20)


def targets(closed: int) -> st.SearchStrategy[str]:
    near = st.sampled_from([f"http://127.0.0.1:{closed}/", f"127.0.0.1:{closed}", "127.0.0.1",
                            f"http://localhost:{closed}/", f"localhost:{closed}",
                            f"http://127.0.0.1:{closed}@evil.test/", f"http://[::1]:{closed}/",
                            "[::1]:1", "::1", "localhost", f"http://127.0.0.1:{closed}/%00",
                            f"http://127.0.0.1:{closed}/..%2f..%2f"])
    return (near | near.flatmap(lambda t: st.text(max_size=20).map(lambda s: t + s))
            | st.text(max_size=60))


def probe_query(module: str, target: str, debug: str) -> str:
    return urlencode({"module": module, "target": target, "debug": debug}, errors="surrogatepass")


@SLOW
@given(st.data())
def test_probe_parameters_never_cause_a_server_error(probe_exporter: Exporter, data: st.DataObject) -> None:
    closed = probe_exporter.closed_port  # type: ignore[attr-defined]
    module = data.draw(MODULES)
    target = data.draw(targets(closed))
    debug = data.draw(st.sampled_from(["true", "TRUE", "false", "", "1"]) | st.text(max_size=5))
    if data.draw(st.booleans()):
        query = probe_query(module, target, debug)
    else:  # raw bytes: bad percent-escapes, invalid UTF-8, repeated keys
        raw = data.draw(st.binary(max_size=40))
        query = f"module={quote(module, errors='surrogatepass')}&target={quote_from_bytes(raw)}&target=x&debug"
    status, body, _ = http_get(f"{probe_exporter.url}/probe?{query}", timeout=10)
    assert status < 500, (query, status, body[:500])
    assert status in (200, 400, 403, 429), (query, status)
    if status == 200 and "debug=true" not in query.lower():
        families = {f.name for f in text_string_to_metric_families(body)}
        assert "probe_success" in families


REQUEST_PIECES = st.sampled_from([
    b"GET ", b"POST ", b"/probe?", b"/metrics", b"module=tcp_connect&target=127.0.0.1%3A1",
    b"&debug=true", b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b"\r\n", b"\n", b"\r\n\r\n",
    b"Host: x\r\n", b"Content-Length: 3\r\n", b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"Connection: close\r\n",
    b"Connection: keep-alive\r\n", b"Expect: 100-continue\r\n", b"Upgrade: h2c\r\n",
    b" ", b":", b"%", b"%zz", b"\x00", b"\xff", b"\xc3\xa9",
])
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@SLOW
@given(st.lists(REQUEST_PIECES | st.binary(max_size=8), max_size=30).map(b"".join))
@example(b"GET /probe?module=tcp_connect&target=127.0.0.1%3A1 HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n")
@example(b"GET /probe?module=tcp_connect HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
def test_raw_request_bytes_never_cause_a_server_error(probe_exporter: Exporter, raw: bytes) -> None:
    """Whatever arrives on the socket, pipelined or cut short, the answers are HTTP with a
    status under 500 (or none, for bytes that never form a request), and the connection ends
    when the client's does."""
    reply = raw_exchange(probe_exporter.url, raw, half_close=True)
    statuses = [int(m.group(1)) for m in STATUS_LINE.finditer(reply)]
    assert not reply or reply.startswith(b"HTTP/1."), (raw, reply[:300])
    assert all(status < 500 for status in statuses), (raw, statuses, reply[:500])


def test_probe_exporter_survived(probe_exporter: Exporter) -> None:
    """After every property above, the same exporter still serves and never logged a crash."""
    assert probe_exporter.scrape().value("exporter_build_info") == 1
    # the full phrase: a fuzzed module may be called "Traceback" (hypothesis borrows literals)
    assert "Traceback (most recent call last)" not in probe_exporter.log()
    assert math.isfinite(probe_exporter.scrape().value("exporter_checks") or 0)


def test_probe_redirects_cannot_leave_allowed_targets(run_exporter) -> None:  # type: ignore[no-untyped-def]
    """An allowed target that redirects elsewhere must not carry the probe to a target the
    module does not allow: the forbidden server must see no request."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Forbidden(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    forbidden = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    forbidden_url = f"http://127.0.0.1:{forbidden.server_address[1]}/internal"

    class Redirector(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", forbidden_url)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    allowed = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    servers = [forbidden, allowed]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        allowed_port = allowed.server_address[1]
        exporter = run_exporter(f"""\
control:
  - {{name: c, kind: tcp, target: "127.0.0.1:{allowed_port}", interval: 30s, timeout: 1s}}
modules:
  http_2xx: {{kind: http, timeout: 2s, allowed_targets: ["http://127.0.0.1:{allowed_port}/*"]}}
""")
        assert exporter.get(f"/probe?module=http_2xx&target={quote(forbidden_url)}")[0] == 403
        status, body, _ = exporter.get(f"/probe?module=http_2xx&target=http://127.0.0.1:{allowed_port}/go")
        assert status == 200
        assert "probe_success 0" in body
        assert hits == [], f"the probe followed a redirect to a forbidden target: {hits}"
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


# -- round 2: nesting, huge numbers, cardinality, addresses in patterns ----------------------------


@given(st.integers(1, 200_000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]),
       st.booleans())
@example(100_000, "[", False)
def test_safe_json_on_any_nesting_depth(depth: int, opener: str, closed: bool) -> None:
    closer = {"[": "]", "{\"a\":": "}", "[{\"b\":": "}]"}[opener]
    text = opener * depth + ("1" + closer * depth if closed else "")
    try:
        value = safejson.loads(text)
    except json.JSONDecodeError:
        return
    exercise_page(value)


@given(st.lists(st.sampled_from(["1", "9" * 400, "-" + "9" * 5000, "1e400", "-1e999", "NaN",
                                 "Infinity", "2.5", '"\\ud800"', '"\\udfff x"', "1E308"]),
                max_size=8))
def test_safe_json_on_huge_numbers_and_escapes(items: list[str]) -> None:
    rows = ",".join(f'{{"id": {v}, "name": {v}, "status": "operational"}}' for v in items)
    first = items[0] if items else "0"
    doc = f'{{"page": {{"id": "p", "updated_at": {first}}}, "components": [{rows}]}}'
    value = safejson.loads(doc)
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    for item in items:
        stamp = parse_timestamp(safejson.loads(item))
        assert stamp is None or (math.isfinite(stamp) and stamp >= 0)
    exercise_page(value)


@given(st.integers(0, 3000), st.integers(0, 400), st.integers(1, 2000), st.integers(1, 300),
       st.integers(32, 300))
def test_a_page_never_exports_more_than_its_limits(components: int, incidents: int,
                                                   max_components: int, max_incidents: int,
                                                   max_label_chars: int) -> None:
    options = StatuspageConfig(url="http://127.0.0.1/", max_components=max_components,
                               max_incidents=max_incidents, max_label_chars=max_label_chars)
    payload = {"page": {"id": "p"},
               "components": [{"id": f"c{i}" * (1 + i % 50), "name": "n" * (i % 400),
                               "status": "operational"} for i in range(components)],
               "incidents": [{"id": f"i{i}", "status": "investigating"} for i in range(incidents)]}
    page = parse(payload, options)
    assert len(page.components) == min(components, max_components)
    assert len(page.open_incidents) == min(incidents, max_incidents)
    assert page.dropped.get("components", 0) == max(0, components - max_components)
    assert page.dropped.get("incidents", 0) == max(0, incidents - max_incidents)
    assert set(page.dropped) <= set(DROPPED)
    assert all(len(value) <= max_label_chars for sample in gauges(page)
               for value in sample.labels.values())
    assert apply_limits(page, options) == page  # bounded once is bounded


OCTET = st.sampled_from(["*", "?", "1", "10", "0", "255", "1*", "??"])
ADDRESS_PATTERN = st.lists(OCTET, min_size=2, max_size=4).map(".".join).filter(
    target_policy.is_address_pattern)  # digits in it: "*.*" is a name pattern
LABEL = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
NAME = st.tuples(st.lists(st.from_regex(r"[0-9]{1,3}", fullmatch=True), min_size=1, max_size=4),
                 st.lists(LABEL, min_size=1, max_size=3)).map(
    lambda parts: ".".join(parts[0] + parts[1]))


@given(st.sampled_from(["tcp", "icmp", "dns", "http"]), st.lists(ADDRESS_PATTERN, min_size=1,
                                                                 max_size=3),
       NAME | st.ip_addresses(v=4).map(str))
@example("tcp", ["10.0.0.*"], "10.0.0.evil.test")
def test_an_address_pattern_never_lets_a_name_through_as_text(kind: str, hosts: list[str],
                                                              host: str) -> None:
    def spell(h: str) -> str:
        return {"tcp": f"{h}:443", "http": f"http://{h}:443/x"}.get(kind, h)

    module = build_check(upstream="probe", name="m", kind=kind,
                         allowed_targets=tuple(spell(h) + ("*" if kind == "http" else "")
                                               for h in hosts))
    literal = target_policy._ip_version(host) != 0
    try:
        outcome = target_policy.check_target(module, spell(host))
    except target_policy.TargetError as exc:
        assert exc.status in (400, 403)
        return
    if literal:
        assert outcome is None  # allowed as written, and only a literal may be
        assert any(target_policy.glob_match(host, h) for h in hosts)
    else:
        assert outcome is not None  # a name waits for its addresses, never passes as text
