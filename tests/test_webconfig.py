"""--web.config.file: strict parsing, then TLS and basic auth on the real exporter, with
certificates made at test time (trustme) and real TLS clients (ssl + urllib)."""

from __future__ import annotations

import base64
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme
from conftest import EXPORTER, free_port

from exporter.config import ConfigError
from exporter.server.webconfig import load, load_text

CONFIG = """\
control:
  - {name: closed, kind: tcp, target: "127.0.0.1:9", interval: 5s, timeout: 1s}
modules:
  tcp: {kind: tcp, allowed_targets: ["127.0.0.1:9"]}
"""


def hashed(password: str, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | trustme.CA | trustme.LeafCert]:
    """A server CA and certificate, and a separate CA for client certificates."""
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(d / "server.crt")
    server.private_key_pem.write_to_path(d / "server.key")
    client_ca.cert_pem.write_to_path(d / "clients-ca.crt")
    return {"dir": d, "ca": ca, "client": client_ca.issue_cert("prometheus"),
            "stranger": other_ca.issue_cert("prometheus")}


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "path", "message"), [
    ("tls_server_config: {cert_file: server.crt, key_file: server.key}\nbogus: 1\n",
     "bogus", "unknown key"),
    ("tls_server_config: {cert_file: server.crt}\n", "tls_server_config",
     "missing required key key_file"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS14}\n",
     "tls_server_config.min_version", "must be one of TLS10, TLS11, TLS12, TLS13"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13, "
     "max_version: TLS12}\n", "tls_server_config.max_version", "must not be lower"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_auth_type: RequireAnyClientCert}\n", "tls_server_config.client_auth_type",
     "is not supported"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_auth_type: RequireAndVerifyClientCert}\n", "tls_server_config.client_auth_type",
     "needs client_ca_file"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_ca_file: clients-ca.crt}\n", "tls_server_config.client_ca_file",
     "client_auth_type is NoClientCert"),
    ("tls_server_config: {cert_file: nope.crt, key_file: server.key}\n",
     "tls_server_config.cert_file", "no such file"),
    ("tls_server_config: {cert_file: server.key, key_file: server.crt}\n",
     "tls_server_config", "cannot load the certificate"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, key: inline}\n",
     "tls_server_config.key", "inline PEM is not supported"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, tls_version: 1}\n",
     "tls_server_config.tls_version", "unknown key"),
    ("http_server_config: {headers: {Set-Cookie: a}}\n",
     "http_server_config.headers.Set-Cookie", "header not allowed"),
    ("http_server_config: {headers: {X-Frame-Options: [deny]}}\n",
     "http_server_config.headers.X-Frame-Options", "must be a one-line string"),
    ("http_server_config: {http2: maybe}\n", "http_server_config.http2", "true or false"),
    ("basic_auth_users: {prom: hunter2}\n", "basic_auth_users.prom", "must be a bcrypt hash"),
    ("basic_auth_users: [prom]\n", "basic_auth_users", "must be a mapping"),
    ('basic_auth_users: {"a:b": "$2b$04$' + "a" * 53 + '"}\n', "basic_auth_users.a:b",
     "contain no ':'"),
    ('basic_auth_users: {prom: "$2b$04$' + "a" * 53 + '"}\nexempt_paths: ["/-/reload"]\n',
     "exempt_paths[0]", "always needs auth"),
    ('basic_auth_users: {prom: "$2b$04$' + "a" * 53 + '"}\nexempt_paths: ["healthy"]\n',
     "exempt_paths[0]", "must be a path starting with /"),
    ('exempt_paths: ["/-/healthy"]\n', "exempt_paths", "has no effect without basic_auth_users"),
    ("basic_auth_users: {}\nbasic_auth_users: {}\n", "basic_auth_users", "duplicate key"),
    ("tls_server_config: [\n", "", "invalid YAML"),
    ("- just\n- a list\n", "", "must be a mapping"),
])
def test_bad_web_config_names_the_key(pki: dict, text: str, path: str, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as err:
        load_text(text, "web.yml", pki["dir"])
    found = [(i.path, i.message) for i in err.value.issues]
    assert any(p == path and message in m for p, m in found), found


def test_a_password_pasted_instead_of_a_hash_is_not_echoed(pki: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as err:
        load_text("basic_auth_users: {prom: correct-horse-battery}\n", "web.yml", pki["dir"])
    assert "correct-horse" not in str(err.value)


def test_good_web_config_resolves_files_next_to_it(pki: dict) -> None:  # type: ignore[type-arg]
    path = pki["dir"] / "web.yml"
    path.write_text(f"""\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  min_version: TLS13
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: clients-ca.crt
  cipher_suites: [TLS_AES_128_GCM_SHA256]
http_server_config:
  headers: {{x-frame-options: deny}}
  http2: false
basic_auth_users:
  prom: "{hashed('pw')}"
exempt_paths: ["/-/healthy"]
""")
    config = load(path)
    assert config.tls is not None and config.tls.cert_file == pki["dir"] / "server.crt"
    ctx = config.ssl_context()
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert config.headers == {"X-Frame-Options": "deny"}
    assert set(config.users) == {"prom"}
    assert config.exempt_paths == {"/-/healthy"}


# -- the running exporter --------------------------------------------------------------------


@dataclass
class Secured:
    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path
    web_config: Path
    ca: trustme.CA | None

    def client_context(self, cert: trustme.LeafCert | None = None,
                       max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        assert self.ca is not None
        self.ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx

    def request(self, path: str, auth: tuple[str, str] | None = None, method: str = "GET",
                ctx: ssl.SSLContext | None = None) -> tuple[int, str, dict[str, str]]:
        headers = {}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(self.base + path, headers=headers, method=method,
                                     data=b"" if method == "POST" else None)
        if ctx is None and self.ca is not None:
            ctx = self.client_context()
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def reload(self, text: str) -> None:
        self.web_config.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def secured(tmp_path: Path, pki: dict) -> Iterator:  # type: ignore[type-arg]
    """Factory: ``secured(web_config_yaml, tls=True)`` → a running exporter."""
    started: list[Secured] = []

    def start(web_yaml: str, tls: bool = True) -> Secured:
        port = free_port()
        web_config = pki["dir"] / f"web-{port}.yml"
        web_config.write_text(web_yaml)
        config = tmp_path / "config.yml"
        config.write_text(CONFIG)
        log_path = tmp_path / f"exporter-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                                     f"--config.file={config}", f"--web.config.file={web_config}",
                                     "--log.level=debug"], stdout=log, stderr=subprocess.STDOUT)
        scheme = "https" if tls else "http"
        server = Secured(proc, f"{scheme}://127.0.0.1:{port}", log_path, web_config,
                         pki["ca"] if tls else None)
        started.append(server)
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, server.log()
            try:
                server.request("/-/healthy", ctx=server.client_context(pki["client"]) if tls else None)
                return server
            except OSError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)

    yield start
    for server in started:
        server.proc.terminate()
        server.proc.wait(10)


def tls_yaml(extra: str = "", users: str = "") -> str:
    return f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}{users}"


ENDPOINTS = [("GET", "/metrics"), ("GET", "/"), ("GET", "/api/v1/status"), ("GET", "/-/ready"),
             ("GET", "/-/healthy"), ("GET", "/probe?module=tcp&target=127.0.0.1:9"),
             ("POST", "/-/reload"), ("GET", "/no/such/page")]


def test_every_endpoint_needs_auth_when_users_are_set(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n', tls=False)
    for method, path in ENDPOINTS:
        status, _, headers = server.request(path, method=method)
        assert status == 401, (method, path)
        assert headers["WWW-Authenticate"].startswith('Basic realm="claude-status-exporter"')
    for method, path in ENDPOINTS[:-1]:
        status, body, _ = server.request(path, auth=("prom", "s3cret"), method=method)
        assert status == 200, (method, path, body)
    assert server.request("/no/such/page", auth=("prom", "s3cret"))[0] == 404


@pytest.mark.parametrize("auth", [("prom", "wrong"), ("nobody", "s3cret"), ("prom", ""),
                                  ("prom", "s3cret" + "x" * 100), ("", "")])
def test_bad_credentials_get_401(secured, auth: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n', tls=False)
    status, _, headers = server.request("/metrics", auth=auth)
    assert status == 401
    assert "WWW-Authenticate" in headers
    assert "s3cret" not in server.log()


def test_malformed_authorization_headers_get_401(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n', tls=False)
    for value in ("Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(),
                  "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Basic"):
        req = urllib.request.Request(server.base + "/metrics", headers={"Authorization": value})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401, value


def test_exempt_paths_skip_auth_and_nothing_else(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n'
                     'exempt_paths: ["/-/healthy"]\n', tls=False)
    assert server.request("/-/healthy")[0] == 200
    for path in ("/metrics", "/-/healthy/../metrics", "/-/healthy%2F..%2Fmetrics", "//-/healthy/x"):
        assert server.request(path)[0] == 401, path


def test_an_exempt_path_must_be_an_endpoint(tmp_path: Path, pki: dict) -> None:  # type: ignore[type-arg]
    web = pki["dir"] / "web-typo.yml"
    web.write_text(f'basic_auth_users: {{prom: "{hashed("s")}"}}\nexempt_paths: ["/-/healty"]\n')
    config = tmp_path / "c.yml"
    config.write_text(CONFIG)
    done = subprocess.run([EXPORTER, f"--config.file={config}", f"--web.config.file={web}",
                           f"--web.listen-address=127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert "exempt_paths: no such endpoint: /-/healty" in done.stderr


def test_headers_are_sent_on_every_response(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n'
                     "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                     "    Strict-Transport-Security: max-age=31536000\n", tls=False)
    for auth in (None, ("prom", "s3cret")):
        _, _, headers = server.request("/metrics", auth=auth)
        assert headers["X-Frame-Options"] == "deny"
        assert headers["Strict-Transport-Security"] == "max-age=31536000"


def test_good_credentials_are_verified_once_then_cached(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret", cost=12)}"}}\n', tls=False)
    started = time.perf_counter()
    assert server.request("/metrics", auth=("prom", "s3cret"))[0] == 200
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(20):
        assert server.request("/metrics", auth=("prom", "s3cret"))[0] == 200
    rest = (time.perf_counter() - started) / 20
    # bcrypt at cost 12 takes ~0.2 s on these machines; a cached check costs nothing.
    assert first > 0.05
    assert rest < first / 4, (first, rest)


def test_tls_serves_with_the_generated_certificate(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(tls_yaml())
    status, body, _ = server.request("/metrics")
    assert status == 200 and "exporter_build_info" in body
    untrusting = ssl.create_default_context()  # no trust in the test CA
    with pytest.raises(urllib.error.URLError):
        server.request("/metrics", ctx=untrusting)


def test_tls_min_version_is_enforced(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(tls_yaml("  min_version: TLS13\n"))
    assert server.request("/-/healthy")[0] == 200
    with pytest.raises(urllib.error.URLError) as err:
        server.request("/-/healthy", ctx=server.client_context(max_version=ssl.TLSVersion.TLSv1_2))
    assert isinstance(err.value.reason, ssl.SSLError)


def test_client_certificate_required(secured, pki: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    server = secured(tls_yaml("  client_auth_type: RequireAndVerifyClientCert\n"
                              "  client_ca_file: clients-ca.crt\n"))
    assert server.request("/metrics", ctx=server.client_context(pki["client"]))[0] == 200
    for cert in (None, pki["stranger"]):
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            server.request("/metrics", ctx=server.client_context(cert))


def test_tls_and_basic_auth_together(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(tls_yaml(users=f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n'))
    assert server.request("/metrics")[0] == 401
    assert server.request("/metrics", auth=("prom", "s3cret"))[0] == 200


def test_reload_swaps_users(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("old")}"}}\n', tls=False)
    assert server.request("/metrics", auth=("prom", "old"))[0] == 200  # now cached
    server.web_config.write_text(f'basic_auth_users: {{prom: "{hashed("new")}"}}\n')
    status, body, _ = server.request("/-/reload", auth=("prom", "old"), method="POST")
    assert status == 200, body
    assert "web config reloaded" in body
    assert server.request("/metrics", auth=("prom", "old"))[0] == 401
    assert server.request("/metrics", auth=("prom", "new"))[0] == 200


def test_a_bad_web_config_on_reload_keeps_the_running_one(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n', tls=False)
    server.web_config.write_text("basic_auth_users: {prom: not-a-hash}\n")
    status, body, _ = server.request("/-/reload", auth=("prom", "s3cret"), method="POST")
    assert status == 500
    assert "web config" in body and "basic_auth_users.prom" in body
    server.reload("basic_auth_users: [broken\n")  # SIGHUP too
    assert server.proc.poll() is None
    assert server.request("/metrics")[0] == 401
    status, body, _ = server.request("/metrics", auth=("prom", "s3cret"))
    assert status == 200
    assert "\nexporter_config_last_reload_successful 0.0\n" in body
    assert "web config reload failed" in server.log()
    server.web_config.write_text(f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n')
    assert server.request("/-/reload", auth=("prom", "s3cret"), method="POST")[0] == 200
    body = server.request("/metrics", auth=("prom", "s3cret"))[1]
    assert "\nexporter_config_last_reload_successful 1.0\n" in body


def test_reload_rotates_the_certificate_and_client_ca(secured, pki: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    server = secured(tls_yaml())
    assert server.request("/metrics")[0] == 200
    d = pki["dir"]
    new_ca, new_client_ca = trustme.CA(), trustme.CA()
    leaf = new_ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(d / "rotated.crt")
    leaf.private_key_pem.write_to_path(d / "rotated.key")
    new_client_ca.cert_pem.write_to_path(d / "rotated-clients.crt")
    server.reload("tls_server_config:\n  cert_file: rotated.crt\n  key_file: rotated.key\n"
                  "  client_auth_type: RequireAndVerifyClientCert\n"
                  "  client_ca_file: rotated-clients.crt\n  min_version: TLS13\n")
    server.ca = new_ca
    client = new_client_ca.issue_cert("prometheus")
    assert server.request("/metrics", ctx=server.client_context(client))[0] == 200
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        server.request("/metrics", ctx=server.client_context(pki["client"]))  # the old client CA
    with pytest.raises(urllib.error.URLError):
        server.request("/metrics", ctx=server.client_context(
            client, max_version=ssl.TLSVersion.TLSv1_2))
    server.ca = pki["ca"]
    with pytest.raises(urllib.error.URLError):  # the old server certificate is gone
        server.request("/metrics", ctx=server.client_context(client))


def test_tls_cannot_be_switched_off_by_reload(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(tls_yaml())
    server.reload("http_server_config: {headers: {X-Frame-Options: deny}}\n")
    assert server.request("/-/healthy")[0] == 200  # still TLS
    assert "TLS cannot be switched on or off" in server.log()


def test_web_config_errors_stop_startup(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n")
    config = tmp_path / "c.yml"
    config.write_text(CONFIG)
    done = subprocess.run([EXPORTER, f"--web.config.file={web}", f"--config.file={config}",
                           f"--web.listen-address=127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert "tls_server_config.cert_file: no such file" in done.stderr


def test_probe_answers_only_good_credentials_with_the_configured_headers(secured) -> None:  # type: ignore[no-untyped-def]
    server = secured(tls_yaml(users=f'basic_auth_users: {{prom: "{hashed("s3cret")}"}}\n'
                                    "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"))
    probe = "/probe?module=tcp&target=127.0.0.1:9"
    answers = [server.request(probe, auth=auth)
               for auth in (("prom", "s3cret"), ("prom", "s3cret"), ("prom", "wrong"), None)]
    assert [status for status, _, _ in answers] == [200, 200, 401, 401]
    assert all(headers.get("X-Frame-Options") == "deny" for _, _, headers in answers)
