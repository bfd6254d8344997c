"""TLS settings and credentials to targets against real servers: nginx with a client-certificate
requirement (a private CA made with trustme), TLS-1.2-only and TLS-1.3-only nginx servers
against min_version/max_version, nginx basic auth, and a bearer-token LLM gateway (a small
aiohttp server) for the anthropic kind. No secret may appear in any Result."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from exporter import metrics as m
from exporter.checks import anthropic, http, tls
from exporter.checks.base import ProbeContext, Result
from exporter.config import CheckConfig, ProxyConfig, SecretRef, TlsConfig
from tests.conftest import build_check, free_port, require_binary

BASIC_PASSWORD = "pw-Zq81-basic-auth-secret"
GATEWAY_TOKEN = "gw-Xk27-gateway-token-secret"
API_KEY = "sk-ant-test-Qm55-api-key-secret"
SECRET_TEXTS = (BASIC_PASSWORD, GATEWAY_TOKEN, API_KEY)


@dataclass
class Pki:
    folder: Path
    ca: trustme.CA

    def path(self, name: str) -> str:
        return str(self.folder / name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(folder / "server.pem"), append=True)
    client = ca.issue_cert("probe@example.test")
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    stranger = trustme.CA().issue_cert("probe@example.test")  # signed by a CA nginx does not know
    stranger.private_key_pem.write_to_path(str(folder / "stranger.key"))
    stranger.cert_chain_pems[0].write_to_path(str(folder / "stranger.pem"))
    (folder / "htpasswd").write_text(f"probe:{{PLAIN}}{BASIC_PASSWORD}\n")
    return Pki(folder, ca)


@dataclass
class Nginx:
    mtls: int
    tls12: int
    tls13: int
    basic: int


@pytest.fixture(scope="module")
def nginx(pki: Pki) -> Iterator[Nginx]:
    binary = require_binary("nginx")
    ports = Nginx(free_port(), free_port(), free_port(), free_port())
    folder = pki.folder
    cert = f"ssl_certificate {folder}/server.pem; ssl_certificate_key {folder}/server.key;"
    (folder / "nginx.conf").write_text(f"""\
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fcgi; uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{ports.mtls} ssl; {cert}
        ssl_client_certificate {folder}/ca.pem;
        ssl_verify_client on;
        location / {{ return 200 "client $ssl_client_s_dn_legacy\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{ports.tls12} ssl; {cert}
        ssl_protocols TLSv1.2;
        location / {{ return 200 "tls12\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{ports.tls13} ssl; {cert}
        ssl_protocols TLSv1.3;
        location / {{ return 200 "tls13\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{ports.basic};
        root {folder}/www;  # a static file: "return" would answer before auth_basic runs
        location / {{
            auth_basic "probe";
            auth_basic_user_file {folder}/htpasswd;
        }}
    }}
}}
""")
    (folder / "www").mkdir(exist_ok=True)
    (folder / "www" / "index.html").write_text("welcome\n")
    proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                for port in (ports.mtls, ports.tls12, ports.tls13, ports.basic):
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: "
                                       + (folder / "error.log").read_text()) from None
                time.sleep(0.05)
        yield ports
    finally:
        proc.terminate()
        proc.wait(10)


def check(kind: str, **options: Any) -> CheckConfig:
    options.setdefault("timeout", 3.0)
    if kind != "tls":  # the tls kind never goes through a proxy: its model has no proxy
        options.setdefault("proxy", ProxyConfig(mode="none"))
    return build_check(upstream="test", name=f"{kind}-check", kind=kind, **options)


async def run(kind_module: Any, cfg: CheckConfig, key: str | None = None) -> Result:
    ctx = ProbeContext(session=None, logger=logging.getLogger("exporter.test.credentials"),  # type: ignore[arg-type]
                       secret=lambda _check: key)
    result: Result = await kind_module.probe(cfg, ctx)
    text = repr(result)
    for secret in SECRET_TEXTS:
        assert secret not in text
    return result


def gauge(result: Result, spec: m.MetricSpec, **labels: str) -> float | None:
    found = [s.value for s in result.gauges if s.metric == spec and dict(s.labels) == labels]
    return found[0] if found else None


# -- client certificates ----------------------------------------------------------------------------


@pytest.mark.parametrize(("client", "reason", "status"), [
    ("client", "", 200),
    (None, "status_mismatch", 400),  # nginx answers "400 No required SSL certificate was sent"
    ("stranger", "status_mismatch", 400),  # "400 The SSL certificate error"
])
async def test_client_certificate(pki: Pki, nginx: Nginx, client: str | None, reason: str,
                                  status: int) -> None:
    files = {"cert_file": pki.path(f"{client}.pem"), "key_file": pki.path(f"{client}.key")} if client else {}
    result = await run(http, check("http", url=f"https://localhost:{nginx.mtls}/",
                                   ip_protocol="ip4",
                                   tls=TlsConfig(ca_file=pki.path("ca.pem"), **files)))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == (reason, status), result.error


async def test_an_unreadable_client_key_is_tls_and_shows_no_key(pki: Pki, nginx: Nginx,
                                                               tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n")
    result = await run(http, check("http", url=f"https://localhost:{nginx.mtls}/", ip_protocol="ip4",
                                   tls=TlsConfig(ca_file=pki.path("ca.pem"),
                                                 cert_file=pki.path("client.pem"),
                                                 key_file=str(bad_key))))
    assert result.reason == "tls"
    assert "bm90IGEga2V5" not in repr(result)


# -- TLS versions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "bounds", "reason", "version"), [
    ("tls12", {}, "", "TLS 1.2"),
    ("tls13", {}, "", "TLS 1.3"),
    ("tls12", {"min_version": "TLS13"}, "tls", None),
    ("tls13", {"max_version": "TLS12"}, "tls", None),
    ("tls13", {"min_version": "TLS12", "max_version": "TLS13"}, "", "TLS 1.3"),
])
async def test_tls_versions_against_min_and_max(pki: Pki, nginx: Nginx, server: str,
                                                bounds: dict[str, str], reason: str,
                                                version: str | None) -> None:
    port = getattr(nginx, server)
    settings = TlsConfig(ca_file=pki.path("ca.pem"), **bounds)
    web_result = await run(http, check("http", url=f"https://localhost:{port}/", ip_protocol="ip4",
                                       tls=settings))
    tls_result = await run(tls, check("tls", target=f"127.0.0.1:{port}", tls=settings))
    for result in (web_result, tls_result):
        assert result.reason == reason, result.error
        if version:
            assert gauge(result, m.PROBE_TLS_VERSION_INFO, version=version) == 1


async def test_https_carries_blackbox_tls_series(pki: Pki, nginx: Nginx) -> None:
    result = await run(http, check("http", url=f"https://localhost:{nginx.tls13}/", ip_protocol="ip4",
                                   tls=TlsConfig(ca_file=pki.path("ca.pem"))))
    assert result.success, result.error
    expiry = gauge(result, m.PROBE_SSL_EARLIEST_CERT_EXPIRY)
    assert expiry is not None and expiry > time.time()
    assert gauge(result, m.PROBE_SSL_LAST_CHAIN_EXPIRY) is not None
    assert gauge(result, m.PROBE_IP_PROTOCOL) == 4
    assert gauge(result, m.PROBE_IP_ADDR_HASH) is not None
    assert gauge(result, m.PROBE_DNS_LOOKUP_TIME) is not None
    assert gauge(result, m.PROBE_HTTP_SSL) == 1


async def test_server_name_overrides_sni_and_the_checked_name(pki: Pki, nginx: Nginx) -> None:
    url = f"https://127.0.0.1:{nginx.tls13}/"
    named = await run(http, check("http", url=url, tls=TlsConfig(ca_file=pki.path("ca.pem"),
                                                               server_name="localhost")))
    wrong = await run(http, check("http", url=url, tls=TlsConfig(ca_file=pki.path("ca.pem"),
                                                               server_name="other.test")))
    assert (named.reason, wrong.reason) == ("", "tls"), (named.error, wrong.error)


# -- basic auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "reason", "status"), [
    (BASIC_PASSWORD, "", 200),
    ("not-the-password", "status_mismatch", 401),
    (None, "auth", 0),  # the file is missing: no request is sent
])
async def test_basic_auth(nginx: Nginx, tmp_path: Path, password: str | None, reason: str,
                          status: int) -> None:
    secret_file = tmp_path / "password"
    if password is not None:
        secret_file.write_text(password + "\n")
    result = await run(http, check("http", url=f"http://127.0.0.1:{nginx.basic}/",
                                   basic_auth=SecretRef("probe", file=str(secret_file))))
    assert (result.reason, gauge(result, m.PROBE_HTTP_STATUS_CODE)) == (reason, status), result.error


# -- an LLM gateway that wants a bearer token ---------------------------------------------------------


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {GATEWAY_TOKEN}":
            return web.json_response({"type": "error", "error": {
                "type": "authentication_error", "message": "invalid bearer token"}}, status=401)
        return web.json_response({"data": [{"id": "claude-test", "type": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_the_anthropic_kind_behind_a_bearer_gateway(gateway: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = gateway
    os.environ["CSE_TEST_GATEWAY_TOKEN"] = GATEWAY_TOKEN
    try:
        as_bearer = await run(anthropic, check("anthropic", url=url, mode="models",
                                               api_key_env="CSE_TEST_GATEWAY_TOKEN",
                                               auth_scheme="bearer"), GATEWAY_TOKEN)
        as_x_api_key = await run(anthropic, check("anthropic", url=url, mode="models",
                                                  api_key_env="CSE_TEST_GATEWAY_TOKEN"), GATEWAY_TOKEN)
    finally:
        del os.environ["CSE_TEST_GATEWAY_TOKEN"]
    assert (as_bearer.success, as_bearer.reason) == (True, ""), as_bearer.error
    assert (as_x_api_key.success, as_x_api_key.reason) == (False, "auth")
    assert seen[0]["Authorization"] == f"Bearer {GATEWAY_TOKEN}" and "x-api-key" not in seen[0]
    assert seen[1]["x-api-key"] == GATEWAY_TOKEN and "Authorization" not in seen[1]


async def test_a_gateway_token_from_a_file_and_the_api_key_apart(
        gateway: tuple[str, list[dict[str, str]]], tmp_path: Path) -> None:
    url, seen = gateway
    token_file = tmp_path / "gateway-token"
    token_file.write_text(GATEWAY_TOKEN)
    result = await run(anthropic, check("anthropic", url=url, mode="models", api_key_env="K",
                                        authorization=SecretRef("Bearer", file=str(token_file))),
                       API_KEY)
    assert result.success, result.error
    assert seen[0]["Authorization"] == f"Bearer {GATEWAY_TOKEN}"
    assert seen[0]["x-api-key"] == API_KEY
