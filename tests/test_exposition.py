"""/metrics and /probe through prometheus_client: content negotiation, OpenMetrics, ``name[]``
filtering, gzip by Accept-Encoding weight, and reason counters that exist from the first scrape.

In process against the real aiohttp app where a table of requests is the point; with the real
console script, promtool and Prometheus 2.42 where the reader is the point.
"""

from __future__ import annotations

import gzip
import importlib
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics as m
from exporter.checks.base import Result, Sample
from exporter.config import POLLED_KINDS, load_text
from exporter.engine.state import StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition.collector import Collector, registry_for
from exporter.runtime import Runtime
from exporter.server import probe
from exporter.server.app import GZIP_MIN_BYTES, gzip_quality, make_app
from tests.conftest import EXPORTER, Acceptor, Exporter, free_port, http_get, require_binary
from tests.promstack import JOB, Prometheus, wait_until

CHECKS = 40  # enough series for an answer over GZIP_MIN_BYTES before any check has run


def many_checks(port: int) -> str:
    lines = ["defaults: {interval: 1h, timeout: 2s}", "upstreams:", "  local:", "    checks:"]
    lines += [f'      - {{name: c{i}, kind: tcp, target: "127.0.0.1:{port}"}}'
              for i in range(CHECKS)]
    lines += ["modules:", '  tcp_connect: {kind: tcp, allowed_targets: ["127.0.0.1:*"]}']
    return "\n".join(lines) + "\n"


@pytest.fixture
def target() -> Iterator[Acceptor]:
    acceptor = Acceptor()
    yield acceptor
    acceptor.close()


@pytest.fixture
async def client(target: Acceptor) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    text = many_checks(target.port)
    runtime = Runtime(lambda: load_text(text, "test"))
    await runtime.start()
    client = TestClient(TestServer(make_app(runtime)))
    await client.start_server()
    yield client
    await client.close()
    await runtime.stop()


# -- content negotiation --------------------------------------------------------------------------

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Prometheus 2.42's own scrape Accept header.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


@pytest.mark.parametrize(("path", "accept", "content_type"), [
    ("/metrics", None, TEXT),
    ("/metrics", "text/plain", TEXT),
    ("/metrics", "*/*", TEXT),
    ("/metrics", "application/openmetrics-text", OPENMETRICS),
    ("/metrics", "application/openmetrics-text; version=1.0.0", OPENMETRICS),
    ("/metrics", PROMETHEUS_ACCEPT, OPENMETRICS),
    ("/probe?module=tcp_connect&target=127.0.0.1:{port}", None, TEXT),
    ("/probe?module=tcp_connect&target=127.0.0.1:{port}", PROMETHEUS_ACCEPT, OPENMETRICS),
])
async def test_the_format_follows_the_accept_header(client: TestClient, target: Acceptor,  # type: ignore[type-arg]
                                                    path: str, accept: str | None,
                                                    content_type: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await client.get(path.format(port=target.port), headers=headers)
    body = await response.text()
    assert response.status == 200, body
    assert response.headers["Content-Type"].startswith(content_type)
    if content_type == OPENMETRICS:
        assert body.endswith("# EOF\n")
        families = {f.name for f in om_families(body)}  # the strict OpenMetrics parser
    else:
        families = {f.name for f in text_string_to_metric_families(body)}
    assert {"probe_success", "probe_duration_seconds"} <= families


# -- gzip by weight -------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "quality"), [
    ("", 0.0),
    ("gzip", 1.0),
    ("GZIP", 1.0),
    ("x-gzip", 1.0),
    ("gzip;q=0", 0.0),
    ("gzip; q=0.0", 0.0),
    ("gzip;q=0.5", 0.5),
    ("deflate, gzip;q=0.2", 0.2),
    ("br, *;q=0.3", 0.3),
    ("*;q=0", 0.0),
    ("gzip;q=0, *", 0.0),  # named wins over the wildcard
    ("identity", 0.0),
    ("gzipped", 0.0),  # not a substring match
    ("gzip;q=nonsense", 0.0),
])
def test_gzip_quality(header: str, quality: float) -> None:
    assert gzip_quality(header) == quality


@pytest.mark.parametrize(("accept_encoding", "gzipped"), [
    (None, False),
    ("gzip", True),
    ("gzip;q=0", False),
    ("gzip;q=0.001, identity", True),
    ("deflate", False),
    ("*", True),
])
async def test_metrics_is_gzipped_only_when_gzip_is_accepted(client: TestClient,  # type: ignore[type-arg]
                                                             accept_encoding: str | None,
                                                             gzipped: bool) -> None:
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding else {}
    response = await client.get("/metrics", headers=headers, auto_decompress=False,
                                skip_auto_headers=() if accept_encoding else ("Accept-Encoding",))
    raw = await response.read()
    assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
    body = gzip.decompress(raw) if gzipped else raw
    assert len(body) >= GZIP_MIN_BYTES
    assert b"\nexporter_build_info{" in body


# -- name[] ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("names", "expected"), [
    (["probe_runs_total"], {"probe_runs_total"}),
    (["probe_runs_total", "exporter_checks"], {"probe_runs_total", "exporter_checks"}),
    (["probe_latency_seconds_count"], {"probe_latency_seconds_count"}),
    (["no_such_metric"], set()),
])
async def test_name_filter_returns_only_the_named_samples(client: TestClient,  # type: ignore[type-arg]
                                                          names: list[str],
                                                          expected: set[str]) -> None:
    response = await client.get("/metrics", params=[("name[]", n) for n in names])
    body = await response.text()
    samples = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples == expected


# -- reason counters from the first scrape --------------------------------------------------------

ONE_OF_EACH = """\
upstreams:
  u:
    statuspage: {url: "http://127.0.0.1:9/"}
    checks:
      - {name: a, kind: anthropic, url: "http://127.0.0.1:9"}
      - {name: o, kind: openai, url: "http://127.0.0.1:9"}
      - {name: h, kind: http, url: "http://127.0.0.1:9/"}
      - {name: t, kind: tcp, target: "127.0.0.1:9"}
      - {name: s, kind: tls, target: "127.0.0.1:9"}
      - {name: i, kind: icmp, target: "127.0.0.1"}
      - {name: d, kind: dns, target: "example.test"}
    dependencies:
      - {name: aws, kind: aws_health, url: "http://127.0.0.1:9/"}
    crowd:
      - {name: openrouter, kind: openrouter, url: "http://127.0.0.1:9/api/v1",
         models: [anthropic/claude-sonnet-4.6]}
"""


def before_any_run() -> dict[str, Any]:
    config = load_text(ONE_OF_EACH, "test")
    state = StateStore()
    state.sync(config)
    text = generate_latest(registry_for(Collector(state, Verdicts()))).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize("kind", sorted(k for k in m.FAILURE_REASONS if k not in POLLED_KINDS))
def test_probe_failures_exist_at_zero_for_every_reason_before_the_first_run(kind: str) -> None:
    family = before_any_run()["probe_failures"]
    reasons = {s.labels["reason"]: s.value for s in family.samples if s.labels["kind"] == kind}
    assert reasons == dict.fromkeys(m.FAILURE_REASONS[kind], 0.0)


@pytest.mark.parametrize("family", ["statuspage_poll_failures", "dependency_poll_failures",
                                    "crowd_poll_failures"])
def test_poll_failures_exist_at_zero_for_every_reason_before_the_first_poll(family: str) -> None:
    samples = before_any_run()[family].samples
    assert {s.labels["reason"]: s.value for s in samples} == dict.fromkeys(m.POLL_REASONS, 0.0)


@pytest.mark.parametrize(("kind", "seen", "expected"), [
    ("tcp", {}, ["connect", "dns", "internal", "local_resources", "timeout"]),
    ("tcp", {"connect": 2}, ["connect", "dns", "internal", "local_resources", "timeout"]),
    ("tcp", {"surprise": 1}, ["connect", "dns", "internal", "local_resources", "surprise",
                              "timeout"]),
    ("a_kind_without_a_set", {"timeout": 1}, ["timeout"]),
])
def test_reasons_to_export(kind: str, seen: dict[str, int], expected: list[str]) -> None:
    assert m.reasons_with(kind, seen) == expected


@pytest.mark.parametrize(("kind", "module", "constant"), [
    ("tcp", "exporter.checks.tcp", "REASONS"),
    ("tls", "exporter.checks.tls", "REASONS"),
    ("icmp", "exporter.checks.icmp", "REASONS"),
    ("dns", "exporter.checks.dns", "REASONS"),
    ("http", "exporter.checks.httpcommon", "HTTP_REASONS"),
    ("anthropic", "exporter.checks.httpcommon", "API_REASONS"),
    ("openai", "exporter.checks.httpcommon", "API_REASONS"),
])
def test_every_reason_a_prober_declares_is_in_its_kinds_documented_set(
        kind: str, module: str, constant: str) -> None:
    declared = getattr(importlib.import_module(module), constant, None)
    if declared is None:
        pytest.skip(f"{module} declares no {constant}")
    assert set(declared) <= set(m.FAILURE_REASONS[kind])


# -- real readers: promtool and Prometheus 2.42 ---------------------------------------------------


@pytest.fixture
def exporter(run_exporter: Any, target: Acceptor) -> Exporter:
    return run_exporter(many_checks(target.port))  # type: ignore[no-any-return]


def test_promtool_accepts_the_text_form(exporter: Exporter) -> None:
    status, body, headers = http_get(exporter.url + "/metrics", Accept="text/plain")
    assert status == 200 and headers["Content-Type"].startswith(TEXT)
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_openmetrics_form_parses_strictly_with_the_same_samples(exporter: Exporter) -> None:
    # promtool 2.42's check metrics reads only the 0.0.4 text format; the OpenMetrics form is
    # checked by prometheus_client's strict OpenMetrics parser here and by Prometheus's own
    # OpenMetrics parser in the scrape test below.
    _, text, _ = http_get(exporter.url + "/metrics?name[]=probe_runs_total&name[]=exporter_checks")
    _, om, headers = http_get(exporter.url + "/metrics?name[]=probe_runs_total&name[]=exporter_checks",
                              Accept="application/openmetrics-text; version=1.0.0")
    assert headers["Content-Type"].startswith(OPENMETRICS)

    def samples(families: Any) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for f in families for s in f.samples}

    assert samples(om_families(om)) == samples(text_string_to_metric_families(text))
    assert len(samples(om_families(om))) == CHECKS + 1


def scrape_config(prom: Prometheus, jobs: list[dict[str, Any]]) -> None:
    """Replace the helper's scrape config with ``jobs`` (written before Prometheus starts)."""
    config = yaml.safe_load(prom.config_path.read_text())
    config["scrape_configs"] = jobs
    prom.config_path.write_text(yaml.safe_dump(config))


def test_prometheus_stores_every_family_and_scrapes_through_name_filters(
        exporter: Exporter, tmp_path: Path) -> None:
    address = exporter.url.removeprefix("http://")
    _, text, _ = http_get(exporter.url + "/metrics")
    ours = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    prom = Prometheus(tmp_path, [address])
    scrape_config(prom, [
        {"job_name": JOB, "static_configs": [{"targets": [address]}]},
        {"job_name": "filtered", "params": {"name[]": ["probe_success", "exporter_checks"]},
         "static_configs": [{"targets": [address]}]},
    ])
    with prom:
        def stored() -> set[str] | None:
            names = set(prom.label_values("__name__", f'{{job="{JOB}"}}'))
            return names if ours <= names else None

        stored_names = wait_until(stored, 30, "every sample name stored by Prometheus")
        assert ours <= stored_names
        filtered = wait_until(
            lambda: set(prom.label_values("__name__", '{job="filtered"}')) - {
                "up", "scrape_duration_seconds", "scrape_samples_scraped",
                "scrape_samples_post_metric_relabeling", "scrape_series_added"} or None,
            30, "the filtered job's samples")
        assert filtered == {"probe_success", "exporter_checks"}


class HeldServer:
    """An HTTP server that answers 500 to everything, but only once released."""

    def __init__(self) -> None:
        released = self.released = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                released.wait(60)
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_prometheus_counts_the_first_failure(run_exporter: Any, tmp_path: Path) -> None:
    held = HeldServer()
    try:
        config = f"""\
upstreams:
  held:
    statuspage: {{url: "{held.url}", interval: 1h, timeout: 30s}}
    checks:
      - {{name: web, kind: http, url: "{held.url}", interval: 1h, timeout: 30s}}
"""
        exporter = run_exporter(config, wait_ready=False)
        prom = Prometheus(tmp_path, [exporter.url.removeprefix("http://")])
        with prom:
            zero = ('probe_failures_total{check="web",reason="status_mismatch"} == 0 '
                    'and on() statuspage_poll_failures_total{reason="http_status"} == 0')
            prom.wait_for_data(zero)  # Prometheus has seen both counters at 0 ...
            held.released.set()  # ... before the first run fails
            for expr in ('increase(probe_failures_total{check="web",reason="status_mismatch"}[1m]) > 0',
                         'increase(statuspage_poll_failures_total{reason="http_status"}[1m]) > 0'):
                assert prom.wait_for_data(expr), expr
    finally:
        held.close()


def test_removed_probe_workers_flag_says_how_to_scale(tmp_path: Path) -> None:
    done = subprocess.run([EXPORTER, "--web.probe-workers=4",
                           f"--web.listen-address=127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--web.probe-workers was removed" in done.stderr
    assert "replicas" in done.stderr and "hashmod" in done.stderr


def test_metrics_answers_while_a_check_waits_on_the_network(run_exporter: Any) -> None:
    """/metrics reads memory only: a check stuck on a silent server does not hold it up."""
    held = HeldServer()
    try:
        exporter = run_exporter(f"""\
upstreams:
  held:
    checks:
      - {{name: web, kind: http, url: "{held.url}", interval: 1h, timeout: 30s}}
""", wait_ready=False)
        status, body, _ = http_get(exporter.url + "/metrics", timeout=5)
        assert status == 200
        assert 'probe_runs_total{check="web",kind="http",upstream="held"} 0.0' in body
    finally:
        held.close()


# -- the /probe answer: one run, from a fresh registry -------------------------------------------

RUN = Result(
    False, 0.25, "timeout",
    gauges=(Sample(m.PROBE_HTTP_STATUS_CODE, 503.0),
            Sample(m.PROBE_HTTP_DURATION, 0.01, {"phase": "connect"}),
            Sample(m.PROBE_HTTP_DURATION, 0.2, {"phase": "processing"})),
    counters=(Sample(m.PROBE_API_ERRORS, 1.0, {"error_type": "overloaded_error"}),),
    observations=(Sample(m.PROBE_ICMP_RTT, 0.0003), Sample(m.PROBE_ICMP_RTT, 0.002),
                  Sample(m.PROBE_ICMP_RTT, float("nan"))),
)


def probe_answer(accept: str = "") -> dict[str, Any]:
    body, content_type = probe.render(RUN, accept)
    parse = om_families if content_type.startswith("application/openmetrics-text") \
        else text_string_to_metric_families
    return {f.name: f for f in parse(body.decode())}


@pytest.mark.parametrize("accept", ["", PROMETHEUS_ACCEPT])
@pytest.mark.parametrize(("family", "labels", "value"), [
    ("probe_success", {}, 0.0),
    ("probe_duration_seconds", {}, 0.25),
    ("probe_http_status_code", {}, 503.0),  # no upstream/check/kind: Prometheus adds the target's
    ("probe_http_duration_seconds", {"phase": "processing"}, 0.2),
    ("probe_api_errors", {"error_type": "overloaded_error"}, 1.0),
])
def test_probe_answer_values(accept: str, family: str, labels: dict[str, str],
                             value: float) -> None:
    samples = {tuple(sorted(s.labels.items())): s.value for s in probe_answer(accept)[family].samples
               if not s.name.endswith("_created")}
    assert samples[tuple(sorted(labels.items()))] == value


@pytest.mark.parametrize(("family", "help_text"), [
    ("probe_success", "1 if the probe succeeded."),  # blackbox_exporter's own help texts
    ("probe_duration_seconds", "Duration of the probe in seconds."),
    ("probe_http_status_code", m.PROBE_HTTP_STATUS_CODE.help),
    ("probe_api_errors", m.PROBE_API_ERRORS.help + probe.THIS_PROBE_ONLY),
    ("probe_icmp_rtt_seconds", m.PROBE_ICMP_RTT.help + probe.THIS_PROBE_ONLY),
])
def test_probe_answer_help(family: str, help_text: str) -> None:
    assert probe_answer()[family].documentation == help_text


def test_probe_answer_histogram_holds_this_runs_observations() -> None:
    samples = {(s.name, s.labels.get("le")): s.value
               for s in probe_answer()["probe_icmp_rtt_seconds"].samples}
    assert samples[("probe_icmp_rtt_seconds_bucket", "0.0005")] == 1.0
    assert samples[("probe_icmp_rtt_seconds_bucket", "0.0025")] == 2.0
    assert samples[("probe_icmp_rtt_seconds_bucket", "+Inf")] == 2.0  # a NaN is not observed
    assert samples[("probe_icmp_rtt_seconds_count", None)] == 2.0
    assert samples[("probe_icmp_rtt_seconds_sum", None)] == pytest.approx(0.0023)


def test_promtool_accepts_the_probe_answer() -> None:
    promtool = require_binary("promtool")
    body, _ = probe.render(RUN)
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_nan_from_a_prober_does_not_break_the_openmetrics_form() -> None:
    """A NaN observation or counter increment is not recorded: OpenMetrics readers refuse a
    NaN histogram sum or counter, which would fail every later scrape of the exporter."""
    config = load_text(ONE_OF_EACH, "test")
    state = StateStore()
    state.sync(config)
    check = state.checks[("u", "i")].check
    state.record(check, Result(True, 0.01, counters=(Sample(m.PROBE_ICMP_SENT, float("nan")),),
                               observations=(Sample(m.PROBE_ICMP_RTT, float("nan")),
                                             Sample(m.PROBE_ICMP_RTT, 0.001))))
    registry = registry_for(Collector(state, Verdicts()))
    body = openmetrics_latest(registry).decode()
    families = {f.name: f for f in om_families(body)}
    rtt = {s.name: s.value for s in families["probe_icmp_rtt_seconds"].samples}
    assert rtt["probe_icmp_rtt_seconds_count"] == 1.0
    assert "probe_icmp_packets_sent" not in families
