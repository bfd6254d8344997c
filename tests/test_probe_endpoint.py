"""GET /probe: blackbox-compatible one-shot probes, and the allowed_targets fence around them.

Most tests go through the real exporter (console script, real HTTP); the target fence is also
checked as a table against ``check_target`` directly, and the concurrency limit in process,
where the limit can be lowered.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks.net import icmp_mode
from exporter.checks.net import targets as target_policy
from exporter.config import CheckConfig, load_text
from exporter.runtime import Runtime
from exporter.server import probe
from exporter.server.app import PROBE_KEY, make_app
from tests.conftest import ROOT, Exporter, Scrape, build_check, require
from tests.promstack import Prometheus

# -- the target fence, as a table -------------------------------------------------------------


def module(kind: str, *allowed: str) -> CheckConfig:
    return build_check(upstream="probe", name=f"{kind}_mod", kind=kind, allowed_targets=allowed)


HTTP = module("http", "https://*.example.com/*", "http://127.0.0.1:*/health")
TCP = module("tcp", "*.example.com:443", "198.18.*:*", "[::1]:*")
ICMP = module("icmp", "198.18.*", "::1", "*.example.com")


@pytest.mark.parametrize(("mod", "target"), [
    (HTTP, "https://api.example.com/v1"),
    (HTTP, "https://a.b.example.com/"),
    (HTTP, "http://127.0.0.1:8080/health"),
    (TCP, "api.example.com:443"),
    (TCP, "198.18.3.4:22"),
    (TCP, "[::1]:9000"),
    (ICMP, "198.18.0.2"),
    (ICMP, "::1"),
    (ICMP, "www.example.com"),
])
def test_allowed_targets_pass(mod: CheckConfig, target: str) -> None:
    target_policy.check_target(mod, target)


@pytest.mark.parametrize(("mod", "target"), [
    (HTTP, "https://example.com/"),  # the pattern wants a subdomain
    (HTTP, "http://api.example.com/v1"),  # scheme differs
    (HTTP, "https://evil.test/x.example.com/"),  # '*' must not reach from the path into the host
    (HTTP, "https://evil.test/.example.com/"),
    (HTTP, "https://evil.test?.example.com/"),
    (HTTP, "https://evil.test#.example.com/"),
    (HTTP, "https://api.example.com:8443/v1"),  # the pattern names no port
    (HTTP, "http://127.0.0.1:8080/admin"),
    (TCP, "127.0.0.2:443"),
    (TCP, "[::2]:9000"),
    (ICMP, "127.0.0.2"),
])
def test_targets_outside_allowed_targets_are_refused(mod: CheckConfig, target: str) -> None:
    with pytest.raises(target_policy.TargetError) as caught:
        target_policy.check_target(mod, target)
    assert (caught.value.status, caught.value.outcome) == (403, "refused")
    assert "allowed_targets" in caught.value.message


@pytest.mark.parametrize(("mod", "target", "name"), [
    (TCP, "api.example.com:22", "api.example.com"),  # 198.18.*:* or [::1]:* might allow it
    (ICMP, "example.com", "example.com"),  # 198.18.* or ::1 might
])
def test_a_name_under_address_patterns_is_allowed_only_by_its_addresses(
        mod: CheckConfig, target: str, name: str) -> None:
    # Not allowed as written: the caller resolves the name and checks every address
    # (check_resolved; tests/test_hostile_cases.py runs it against real resolvers).
    assert target_policy.check_target(mod, target) == name


@pytest.mark.parametrize(("mod", "target"), [
    (HTTP, ""),
    (HTTP, "ftp://a.example.com/"),
    (HTTP, "https://user:pw@a.example.com/"),  # no userinfo, ever
    (HTTP, "https://a.example.com\\@evil.test/"),
    (HTTP, "https://a.exa%6dple.com/"),
    (HTTP, "https://a.example.com/ x"),
    (TCP, "api.example.com"),  # no port
    (TCP, "::1:443"),  # IPv6 needs brackets before a port
    (TCP, "evil.test:1.example.com:443"),
    (TCP, "[a.example.com]:443"),
    (ICMP, "198.18.0.2/31"),
    (ICMP, "a_b!.example.com"),
    (ICMP, "198.18.0.2\n"),
])
def test_malformed_targets_are_bad_requests(mod: CheckConfig, target: str) -> None:
    with pytest.raises(target_policy.TargetError) as caught:
        target_policy.check_target(mod, target)
    assert (caught.value.status, caught.value.outcome) == (400, "bad_request")


@pytest.mark.parametrize(("header", "expected"), [
    (None, 10.0), ("", 10.0), ("nonsense", 10.0), ("15", 10.0), ("5", 4.5), ("0.8", 0.4),
])
def test_timeout_follows_prometheus_scrape_timeout(header: str | None, expected: float) -> None:
    mod = build_check(upstream="probe", name="m", kind="tcp", timeout=10.0)
    assert probe.probe_timeout(mod, header) == expected


# -- the remembered per-target config (PreparedTargets) -------------------------------------------


def test_prepare_gives_the_run_its_target_timeout_and_identity() -> None:
    keyed = build_check(upstream="u", name="k", kind="http", api_key_env="K",
                        allowed_targets=("http://127.0.0.1:*/",))
    check, logger = probe.PreparedTargets().prepare(keyed, "http://127.0.0.1:9/", 1.5)
    assert (check.url, check.timeout, check.upstream, check.follow_redirects) == (
        "http://127.0.0.1:9/", 1.5, "probe", False)
    assert logger.name == "exporter.probe.k"


@pytest.mark.parametrize(("second", "same"), [
    ((TCP, "198.18.3.4:22", 2.0), True),  # the same request again: remembered
    ((TCP, "198.18.3.4:23", 2.0), False),  # another target
    ((TCP, "198.18.3.4:22", 1.0), False),  # another timeout (the scrape timeout header)
    ((module("tcp", "198.18.*:*"), "198.18.3.4:22", 2.0), False),  # a reload's new module
])
def test_prepare_remembers_only_the_same_module_target_and_timeout(
        second: tuple[CheckConfig, str, float], same: bool) -> None:
    prepared = probe.PreparedTargets()
    first, _ = prepared.prepare(TCP, "198.18.3.4:22", 2.0)
    again, _ = prepared.prepare(*second)
    assert (again is first) == same
    assert (again.target, again.timeout) == second[1:]


def test_prepare_refuses_a_target_every_time() -> None:
    prepared = probe.PreparedTargets()
    for _ in range(2):
        with pytest.raises(target_policy.TargetError):
            prepared.prepare(TCP, "127.0.0.2:443", 2.0)


def test_prepare_remembers_a_bounded_number() -> None:
    prepared = probe.PreparedTargets(limit=8)
    for port in range(1, 21):
        prepared.prepare(TCP, f"198.18.0.1:{port}", 2.0)
    assert len(prepared) == 8
    assert ("tcp_mod", "198.18.0.1:20", 2.0) in prepared  # the newest stay


# -- through the real exporter -------------------------------------------------------------------


@pytest.fixture
async def tcp_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A 'DNS server' that never answers: probes against it run until their timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def config(silent_port: int = 9) -> str:
    return f"""\
modules:
  tcp_local: {{kind: tcp, timeout: 2s, allowed_targets: ["127.0.0.1:*"]}}
  icmp_local: {{kind: icmp, packets: 3, packet_interval: 10ms, allowed_targets: ["127.0.0.1"]}}
  dns_silent:
    kind: dns
    timeout: 10s
    resolver: "127.0.0.1:{silent_port}"
    allowed_targets: ["*.test"]
  api_keyed:
    kind: http
    timeout: 2s
    api_key_env: PROBE_TEST_KEY
    headers: {{X-Team: platform}}
    allowed_targets: ["http://127.0.0.1:9/ping"]
"""


SECRET = "sk-test-0123456789abcdef"


@pytest.fixture
def exporter(run_exporter, silent_udp: int) -> Exporter:  # type: ignore[no-untyped-def]
    result: Exporter = run_exporter(config(silent_udp), env={"PROBE_TEST_KEY": SECRET})
    return result


def probe_url(module_name: str, target: str, **extra: str) -> str:
    query = f"module={quote(module_name)}&target={quote(target, safe='')}"
    return "/probe?" + query + "".join(f"&{k}={v}" for k, v in extra.items())


def test_probe_refuses_a_target_outside_allowed_targets(exporter: Exporter) -> None:
    status, body, _ = exporter.get(probe_url("tcp_local", "198.18.0.1:22"))
    assert status == 403
    assert "not allowed for module 'tcp_local'" in body
    assert "probe_success" not in body


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/probe?target=127.0.0.1:1", 400, "module parameter is missing"),
    ("/probe?module=nope&target=127.0.0.1:1", 400, "unknown module 'nope'"),
    ("/probe?module=tcp_local", 400, "target parameter is missing"),
    ("/probe?module=tcp_local&target=127.0.0.1", 400, "host:port"),
])
def test_probe_bad_requests(exporter: Exporter, path: str, status: int, text: str) -> None:
    got_status, body, _ = exporter.get(path)
    assert (got_status, text in body) == (status, True), body


def test_probe_answers_with_blackbox_names_and_no_check_labels(exporter: Exporter,
                                                               tcp_port: int) -> None:
    status, body, headers = exporter.get(probe_url("tcp_local", f"127.0.0.1:{tcp_port}"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    scrape = Scrape.parse(body)
    assert scrape.value("probe_success") == 1
    assert scrape.value("probe_ip_protocol") == 4
    connect = scrape.value("probe_tcp_connect_seconds")
    duration = scrape.value("probe_duration_seconds")
    assert connect is not None and duration is not None and 0 < connect <= duration
    assert all(not {"upstream", "check", "kind"} & {k for k, _ in labels}
               for (_, labels) in scrape.samples)


def test_probe_of_a_failing_target_is_200_with_success_0(exporter: Exporter) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, body, _ = exporter.get(probe_url("tcp_local", f"127.0.0.1:{port}"))
    assert status == 200
    assert Scrape.parse(body).value("probe_success") == 0


def test_probe_renders_one_runs_counters_and_histogram(exporter: Exporter) -> None:
    require(icmp_mode.detect() != "none", "ICMP needs root or net.ipv4.ping_group_range")
    status, body, _ = exporter.get(probe_url("icmp_local", "127.0.0.1"))
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["probe_icmp_packets_sent"].type == "counter"
    assert families["probe_icmp_packets_sent"].samples[0].value == 3
    rtt = families["probe_icmp_rtt_seconds"]
    assert rtt.type == "histogram"
    count = [s.value for s in rtt.samples if s.name == "probe_icmp_rtt_seconds_count"]
    inf = [s.value for s in rtt.samples if s.labels.get("le") == "+Inf"]
    assert count == inf == [3]


def test_probe_timeout_follows_the_scrape_timeout_header(exporter: Exporter) -> None:
    start = time.monotonic()
    status, body, _ = exporter.get(probe_url("dns_silent", "a.test", debug="true"),
                                   **{"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
    elapsed = time.monotonic() - start
    assert status == 200
    assert "(timeout 1s) failed (reason timeout)" in body
    assert 0.8 < elapsed < 3  # the module's own timeout is 10s


def test_probe_debug_shows_log_metrics_and_config_without_secrets(exporter: Exporter,
                                                                   tcp_port: int) -> None:
    status, body, headers = exporter.get(probe_url("tcp_local", f"127.0.0.1:{tcp_port}",
                                                   debug="true"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "Logs for the probe:" in body
    assert f"connected to 127.0.0.1:{tcp_port}" in body
    assert "Metrics that would have been returned:" in body
    assert "probe_success 1.0" in body
    assert body.endswith("Module configuration:\ntcp_local:\n  kind: tcp\n  timeout: 2.0\n"
                         "  allowed_targets:\n  - 127.0.0.1:*\n")

    status, body, _ = exporter.get(probe_url("api_keyed", "http://127.0.0.1:9/ping",
                                             debug="true"))
    assert status == 200
    assert SECRET not in body
    assert "api_key_env: PROBE_TEST_KEY" in body
    assert "X-Team: <hidden>" in body
    assert "platform" not in body


# -- in process: the concurrency limit and the request counts -----------------------------------


@pytest.fixture
async def client(silent_udp: int) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    runtime = Runtime(lambda: load_text(config(silent_udp), "test"))
    await runtime.start()
    client = TestClient(TestServer(make_app(runtime)))
    await client.start_server()
    yield client
    await client.close()
    await runtime.stop()


def endpoint_of(client: TestClient) -> probe.ProbeEndpoint:  # type: ignore[type-arg]
    return client.server.app[PROBE_KEY]


async def test_probes_past_the_limit_get_429(client: TestClient) -> None:  # type: ignore[type-arg]
    endpoint = endpoint_of(client)
    endpoint.max_concurrent = 1
    counts = endpoint.runtime.probe_counts
    before = counts.requests()
    slow = asyncio.create_task(client.get(probe_url("dns_silent", "a.test"),
                                          headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"}))
    for _ in range(100):  # until the slow probe is running
        if counts.in_flight:
            break
        await asyncio.sleep(0.01)
    busy = await client.get(probe_url("dns_silent", "b.test"))
    assert busy.status == 429
    assert "too many probes" in await busy.text()
    assert (await slow).status == 200
    after = counts.requests()
    assert after.get(("dns_silent", "busy"), 0) - before.get(("dns_silent", "busy"), 0) == 1
    assert after.get(("dns_silent", "ok"), 0) - before.get(("dns_silent", "ok"), 0) == 1
    assert counts.in_flight == 0


async def test_request_counts_by_outcome(client: TestClient) -> None:  # type: ignore[type-arg]
    counts = endpoint_of(client).runtime.probe_counts
    before = counts.requests()
    for path in ("/probe?module=nope&target=x", "/probe?module=tcp_local&target=198.18.0.1:1",
                 "/probe?module=tcp_local&target=bad", "/probe?module=tcp_local&target=127.0.0.1:9"):
        await (await client.get(path)).read()
    after = counts.requests()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert delta == {("", "unknown_module"): 1, ("tcp_local", "refused"): 1,
                     ("tcp_local", "bad_request"): 1, ("tcp_local", "ok"): 1}


# -- the documented scrape config, run by a real Prometheus ---------------------------------------


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[int]:
    """A TLS server on loopback, in a thread so that it answers while a sync test blocks."""
    leaf = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError), context.wrap_socket(self.request, server_side=True):
                pass

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield int(server.server_address[1])
        server.shutdown()


def documented_scrape_config() -> dict[str, Any]:
    text = (ROOT / "docs" / "network.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    (block,) = [b for b in blocks if "job_name: edge-tls" in b]
    config: dict[str, Any] = yaml.safe_load(block)
    return config


def test_documented_scrape_config_probes_through_a_real_prometheus(
        run_exporter: Any, tmp_path: Path, tls_port: int) -> None:
    exporter = run_exporter("""\
modules:
  tls_edge: {kind: tls, tls_config: {insecure_skip_verify: true}, allowed_targets: ["127.0.0.1:*"]}
""")
    config = documented_scrape_config()
    job = config["scrape_configs"][0]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    target = f"127.0.0.1:{tls_port}"
    job["static_configs"] = [{"targets": [target]}]
    job["relabel_configs"][-1]["replacement"] = exporter.url.removeprefix("http://")
    prometheus = Prometheus(tmp_path / "prometheus", [])
    prometheus.config_path.write_text(yaml.safe_dump(config))
    with prometheus:
        series = prometheus.wait_for_data(f'probe_success{{job="edge-tls",instance="{target}"}}')
        assert series[0]["value"][1] == "1"
        version = prometheus.wait_for_data(f'probe_tls_version_info{{instance="{target}"}}')
        assert version[0]["metric"]["version"] == "TLS 1.3"
