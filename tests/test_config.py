"""The config is strict: every error names its dotted path and line, and all are reported at once."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from exporter import config as cfg
from tests.conftest import EXPORTER

BASE = """\
upstreams:
  claude:
    statuspage: {url: "http://127.0.0.1:1/status"}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_text(textwrap.dedent(text), "c.yml")
    return [str(i) for i in info.value.issues]


HTTP = BASE + "    checks:\n      - {name: h, kind: http, url: 'https://x.test/', "

BAD = [
    ("unknown top-level key",
     "upstreams: {}\nupstream: {}\n",
     "c.yml:2: upstream: unknown key (allowed: control, defaults, modules, upstreams, vantage)"),
    ("duplicate key",
     "defaults: {interval: 30s}\ndefaults: {interval: 10s}\n",
     "c.yml:2: defaults: duplicate key"),
    ("bad duration",
     BASE + "defaults: {interval: 30 seconds}\n",
     'c.yml:4: defaults.interval: must be a duration such as "30s" or "1m30s" (got \'30 seconds\')'),
    ("zero duration",
     BASE + "defaults: {timeout: 0s}\n",
     "c.yml:4: defaults.timeout: must be a positive duration (got '0s')"),
    ("bad url scheme",
     "upstreams:\n  claude:\n    statuspage: {url: ftp://example.com}\n",
     "c.yml:3: upstreams.claude.statuspage.url: must be an http:// or https:// URL with a host "
     "(got 'ftp://example.com')"),
    ("credentials in a url",
     "upstreams:\n  claude:\n    statuspage: {url: 'https://u:p@example.com'}\n",
     "c.yml:3: upstreams.claude.statuspage.url: inline secrets are not allowed: remove the "
     "user:password from the URL and use api_key_env or api_key_file"),
    ("inline api key",
     BASE + "    checks:\n      - {name: api, kind: anthropic, mode: models, api_key: sk-ant-abc}\n",
     "c.yml:5: upstreams.claude.checks[0].api_key: inline secrets are not allowed: use "
     "api_key_env (an environment variable) or api_key_file"),
    ("inline authorization header",
     BASE + "    checks:\n      - name: h\n        kind: http\n        url: http://127.0.0.1/\n"
            "        headers: {Authorization: Bearer abc}\n",
     "c.yml:8: upstreams.claude.checks[0].headers: inline secrets are not allowed: header "
     "Authorization must come from api_key_env or api_key_file (with api_key_header)"),
    ("line break in a header value",
     BASE + "    checks:\n      - name: h\n        kind: http\n        url: http://127.0.0.1/\n"
            '        headers: {X-Team: "sre\\r\\nX-Injected: 1"}\n',
     "c.yml:8: upstreams.claude.checks[0].headers: header X-Team has a line break or NUL in its "
     "value"),
    ("space in a header name",
     BASE + "    checks:\n      - name: h\n        kind: http\n        url: http://127.0.0.1/\n"
            '        headers: {"X Team": sre}\n',
     "c.yml:8: upstreams.claude.checks[0].headers: header name 'X Team' is not a valid HTTP "
     "header name"),
    ("wrong type",
     BASE + "    checks:\n      - {name: i, kind: icmp, target: 127.0.0.1, packets: many}\n",
     "c.yml:5: upstreams.claude.checks[0].packets: must be an integer from 1 to 100 (got 'many')"),
    ("unknown kind",
     BASE + "    checks:\n      - {name: x, kind: gopher}\n",
     "c.yml:5: upstreams.claude.checks[0].kind: must be one of anthropic, openai, http, tcp, tls, "
     "icmp, dns (got 'gopher')"),
    ("key of another kind",
     BASE + "    checks:\n      - {name: t, kind: tcp, target: '127.0.0.1:1', packets: 3}\n",
     "c.yml:5: upstreams.claude.checks[0].packets: unknown key (allowed: component, "
     "degraded_latency, interval, ip_protocol, kind, name, per_address, target, timeout)"),
    ("duplicate check name",
     BASE + "    checks:\n      - {name: a, kind: tcp, target: '127.0.0.1:1'}\n"
            "      - {name: a, kind: tcp, target: '127.0.0.1:2'}\n",
     'c.yml:6: upstreams.claude.checks[1].name: duplicate check name "a" '
     "(also at upstreams.claude.checks[0])"),
    ("reserved upstream name",
     "upstreams:\n  control:\n    statuspage: {url: 'http://127.0.0.1/'}\n",
     'c.yml:2: upstreams.control: "control" is reserved for the control checks; '
     "choose another upstream name"),
    ("missing target",
     BASE + "    checks:\n      - {name: t, kind: tcp}\n",
     "c.yml:5: upstreams.claude.checks[0]: missing required key target for kind tcp"),
    ("bad host:port",
     BASE + "    checks:\n      - {name: t, kind: tcp, target: example.com}\n",
     "c.yml:5: upstreams.claude.checks[0].target: must be \"host:port\" with a port from 1 to "
     "65535 (got 'example.com')"),
    ("timeout above interval",
     BASE + "    checks:\n      - {name: t, kind: tcp, target: '127.0.0.1:1', interval: 5s, "
            "timeout: 10s}\n",
     "c.yml:5: upstreams.claude.checks[0].timeout: must not exceed the interval (10s > 5s)"),
    ("paid mode without a key",
     BASE + "    checks:\n      - {name: m, kind: anthropic, mode: messages, model: m}\n",
     "c.yml:5: upstreams.claude.checks[0].mode: mode messages needs api_key_env or api_key_file"),
    ("module without allowed_targets",
     "modules:\n  http_2xx: {kind: http}\n",
     "c.yml:2: modules.http_2xx: missing required key allowed_targets (a /probe module must say "
     "which targets it may reach)"),
    ("keyed module with a wildcard host",
     "modules:\n  api:\n    kind: anthropic\n    mode: models\n    api_key_env: K\n"
     "    allowed_targets: ['https://*.example.com']\n",
     "c.yml:6: modules.api.allowed_targets[0]: a module that carries an API key may only name "
     "exact hosts, no wildcards"),
    ("bad regex",
     BASE + "    checks:\n      - {name: h, kind: http, url: 'http://127.0.0.1/', body_regex: '('}\n",
     "c.yml:5: upstreams.claude.checks[0].body_regex: is not a valid regular expression: missing ), "
     "unterminated subpattern at position 0"),
    ("invalid YAML",
     "upstreams: {claude: [\n",
     "c.yml:2: invalid YAML: expected the node content, but found '<stream end>'"),
    ("upstream with nothing to watch",
     "upstreams:\n  claude: {}\n",
     "c.yml:2: upstreams.claude: needs a statuspage, checks, or both"),
    # networks and credentials (docs/configuration.md): old flat keys name their new place
    *[(f"flat {key} on {kind}", BASE + f"    checks:\n      - {{name: a, kind: {kind}, {target}, {key}: x}}\n",
       f"c.yml:5: upstreams.claude.checks[0].{key}: has moved: use tls_config.{key}")
      for key in ("ca_file", "insecure_skip_verify", "server_name")
      for kind, target in (("http", "url: 'https://x.test/'"), ("tls", "target: 'x.test:443'"),
                           ("anthropic", "mode: keyless"))],
    ("flat ca_file on a status page",
     "upstreams:\n  claude:\n    statuspage: {url: 'https://x.test', ca_file: c.pem}\n",
     "c.yml:3: upstreams.claude.statuspage.ca_file: has moved: use tls_config.ca_file"),
    ("an inline proxy password",
     HTTP + "proxy: {url: 'http://p.test:3128', username: u, password: hunter22}}\n",
     "c.yml:5: upstreams.claude.checks[0].proxy.password: inline secrets are not allowed: use "
     "password_env or password_file"),
    ("credentials in the proxy url",
     HTTP + "proxy: {url: 'http://u:hunter22@p.test:3128'}}\n",
     "c.yml:5: upstreams.claude.checks[0].proxy.url: inline secrets are not allowed"),
    ("a proxy mode that does not exist",
     HTTP + "proxy: system}\n",
     "c.yml:5: upstreams.claude.checks[0].proxy: must be \"environment\", \"none\" or a mapping"),
    ("a proxy password without a username",
     HTTP + "proxy: {url: 'http://p.test:3128', password_env: PW}}\n",
     "c.yml:5: upstreams.claude.checks[0].proxy: a proxy password needs a username"),
    ("both password sources",
     HTTP + "basic_auth: {username: u, password_env: PW, password_file: pw}}\n",
     "c.yml:5: upstreams.claude.checks[0].basic_auth: needs exactly one of password_env or password_file"),
    ("inline basic auth password",
     HTTP + "basic_auth: {username: u, password: hunter22}}\n",
     "c.yml:5: upstreams.claude.checks[0].basic_auth.password: inline secrets are not allowed"),
    ("inline authorization credentials",
     HTTP + "authorization: {type: Bearer, credentials: hunter22}}\n",
     "c.yml:5: upstreams.claude.checks[0].authorization.credentials: inline secrets are not allowed"),
    ("basic auth and authorization together",
     HTTP + "basic_auth: {username: u, password_env: P}, authorization: {credentials_env: T}}\n",
     "c.yml:5: upstreams.claude.checks[0]: set basic_auth or authorization, not both"),
    ("the key and a gateway token both in Authorization",
     BASE + "    checks:\n      - {name: a, kind: openai, mode: models, api_key_env: K, "
            "authorization: {credentials_env: T}}\n",
     "c.yml:5: upstreams.claude.checks[0]: the API key already goes in the Authorization header"),
    ("a TLS version that does not exist",
     HTTP + "tls_config: {min_version: TLS14}}\n",
     "c.yml:5: upstreams.claude.checks[0].tls_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13"),
    ("min above max",
     HTTP + "tls_config: {min_version: TLS13, max_version: TLS12}}\n",
     "c.yml:5: upstreams.claude.checks[0].tls_config.min_version: must not be above max_version"),
    ("a client certificate without its key",
     HTTP + "tls_config: {cert_file: c.pem}}\n",
     "c.yml:5: upstreams.claude.checks[0].tls_config: cert_file and key_file go together"),
    ("an unknown tls_config key",
     HTTP + "tls_config: {ca: c.pem}}\n",
     "c.yml:5: upstreams.claude.checks[0].tls_config.ca: unknown key"),
    ("an auth_scheme that does not exist",
     BASE + "    checks:\n      - {name: a, kind: anthropic, auth_scheme: basic}\n",
     "c.yml:5: upstreams.claude.checks[0].auth_scheme: must be one of x-api-key, bearer"),
    ("a bad regexp in a list",
     HTTP + "fail_if_body_matches_regexp: [ok, '(']}\n",
     "c.yml:5: upstreams.claude.checks[0].fail_if_body_matches_regexp[1]: is not a valid regular expression"),
    ("a header matcher without a regexp",
     HTTP + "fail_if_header_matches: [{header: Server}]}\n",
     "c.yml:5: upstreams.claude.checks[0].fail_if_header_matches[0]: needs header and regexp"),
    ("a json condition with equals and matches",
     HTTP + "json_conditions: [{path: a, equals: 1, matches: '1'}]}\n",
     "c.yml:5: upstreams.claude.checks[0].json_conditions[0]: set equals or matches, not both"),
    ("an inline proxy password on a witness",
     BASE + "    dependencies:\n      - {name: g, kind: gcp_status, url: 'https://x.test/i.json', "
            "proxy: {url: 'http://p.test:1', username: u, password: hunter22}}\n",
     "c.yml:5: upstreams.claude.dependencies[0].proxy.password: inline secrets are not allowed"),
    ("proxy on a direct kind",
     BASE + "    checks:\n      - {name: a, kind: tcp, target: 'x.test:1', proxy: none}\n",
     "c.yml:5: upstreams.claude.checks[0].proxy: unknown key"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_each_error_names_its_path_and_line(case: str, text: str, expected: str) -> None:
    found = errors(text)
    assert any(e.startswith(expected) for e in found), (case, found)


def test_all_errors_are_reported_at_once() -> None:
    found = errors("""\
        vantage: "bad vantage!"
        upstreams:
          claude:
            statuspage: {url: nope, interval: soon}
            checks:
              - {name: a, kind: tcp}
        control: 5
        """)
    assert [e.split(": ")[0] + ": " + e.split(": ")[1] for e in found] == [
        "c.yml:1: vantage",
        "c.yml:4: upstreams.claude.statuspage.url",
        "c.yml:4: upstreams.claude.statuspage.interval",
        "c.yml:6: upstreams.claude.checks[0]",
        "c.yml:7: control",
    ]


def test_the_bundled_preset_validates() -> None:
    preset = cfg.load_preset()
    claude = preset.upstream("claude")
    assert claude is not None and claude.statuspage is not None
    assert claude.statuspage.summary_url == "https://status.claude.com/api/v2/summary.json"
    assert {c.kind for c in claude.checks} == {"anthropic", "dns", "tcp", "tls", "icmp"}
    assert all(c.mode == "keyless" for c in claude.checks if c.kind == "anthropic")
    assert len(preset.control) >= 2
    assert {d.kind for d in claude.dependencies} == {"aws_health", "gcp_status"}
    assert [c.kind for c in claude.crowd] == ["openrouter"]


def test_network_settings_and_their_defaults() -> None:
    config = cfg.load_text(textwrap.dedent("""\
        defaults: {proxy: none, tls_config: {min_version: TLS12}}
        upstreams:
          claude:
            statuspage: {url: 'https://status.test', proxy: {url: 'http://p.test:3128', username: u,
                         password_file: /run/secrets/proxy}}
            checks:
              - {name: h, kind: http, url: 'https://x.test/', basic_auth: {username: u, password_env: P},
                 tls_config: {ca_file: ca.pem, cert_file: c.pem, key_file: c.key, max_version: TLS13}}
              - {name: t, kind: tls, target: 'x.test:443'}
              - {name: api, kind: anthropic, auth_scheme: bearer, proxy: environment,
                 authorization: {credentials_file: /run/secrets/gw}}
            dependencies:
              - {name: gcp, kind: gcp_status, url: 'https://status.cloud.google.com/incidents.json',
                 tls_config: {ca_file: corp.pem}}
            crowd:
              - {name: openrouter, kind: openrouter, url: 'https://openrouter.ai/api/v1',
                 models: [anthropic/claude-sonnet-4.6], proxy: {url: 'http://p.test:3128'}}
        """), "c.yml")
    page, http, tls, api, gcp, crowd = config.all_checks()
    assert (gcp.proxy, gcp.tls) == (cfg.ProxyConfig("none"), cfg.TlsConfig(ca_file="corp.pem"))
    assert crowd.proxy == cfg.ProxyConfig("url", "http://p.test:3128")
    assert crowd.witness is not None and crowd.witness.proxy == crowd.proxy
    assert page.proxy == cfg.ProxyConfig("url", "http://p.test:3128", "u", None, "/run/secrets/proxy")
    assert page.tls == cfg.TlsConfig(min_version="TLS12")
    assert http.proxy == cfg.ProxyConfig("none")
    assert http.tls == cfg.TlsConfig(ca_file="ca.pem", cert_file="c.pem", key_file="c.key",
                                     max_version="TLS13")  # its own tls_config replaces the default
    assert http.basic_auth == cfg.SecretRef("u", env="P")
    assert tls.tls == cfg.TlsConfig(min_version="TLS12")
    assert (api.proxy.mode, api.auth_scheme, api.authorization) == (
        "environment", "bearer", cfg.SecretRef("Bearer", file="/run/secrets/gw"))


def test_defaults_apply_to_checks_without_their_own() -> None:
    config = cfg.load_text("defaults: {interval: 1m, timeout: 5s}\n" + BASE
                           + "    checks:\n      - {name: t, kind: tcp, target: '127.0.0.1:1'}\n", "c.yml")
    check = config.upstreams[0].checks[0]
    assert (check.interval, check.timeout) == (60.0, 5.0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30.0), ("1m30s", 90.0), ("2h", 7200.0), ("1d", 86400.0), (15, 15.0),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert cfg.parse_duration(text) == seconds


def test_a_secret_value_is_never_echoed_in_an_error() -> None:
    found = errors(BASE + "    checks:\n      - {name: a, kind: anthropic, mode: models, "
                          "token: sk-ant-api03-SECRETVALUE}\n")
    assert found and all("SECRETVALUE" not in e for e in found)


def run_config_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yml"
    path.write_text(text)
    return subprocess.run([EXPORTER, f"--config.file={path}", "--config.check"],
                          capture_output=True, text=True, timeout=30)


def test_config_check_exits_1_and_prints_every_error(tmp_path: Path) -> None:
    proc = run_config_check(tmp_path, "upstreams:\n  control: {}\nbogus: 1\n")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.endswith('upstreams.control: "control" is reserved for the control checks; '
                             "choose another upstream name") for line in lines)
    assert any("bogus: unknown key" in line for line in lines)


def test_config_check_exits_0_for_a_valid_file(tmp_path: Path) -> None:
    proc = run_config_check(tmp_path, BASE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK (1 upstreams, 1 checks, 0 /probe modules)" in proc.stdout


def test_config_check_without_a_file_checks_the_preset() -> None:
    proc = subprocess.run([EXPORTER, "--config.check"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("<claude preset>: OK")



# -- one typed model per kind -------------------------------------------------------------------

KIND_MODELS = [
    ("anthropic", "{kind: anthropic}", cfg.AnthropicCheck),
    ("openai", "{kind: openai}", cfg.OpenAICheck),
    ("http", "{kind: http, url: 'http://127.0.0.1:1/'}", cfg.HttpCheck),
    ("tcp", "{kind: tcp, target: '127.0.0.1:1'}", cfg.TcpCheck),
    ("tls", "{kind: tls, target: '127.0.0.1:1'}", cfg.TlsCheck),
    ("icmp", "{kind: icmp, target: 127.0.0.1}", cfg.IcmpCheck),
    ("dns", "{kind: dns, target: localhost}", cfg.DnsCheck),
]


@pytest.mark.parametrize(("kind", "entry", "model"), KIND_MODELS, ids=[k[0] for k in KIND_MODELS])
def test_each_kind_loads_into_its_own_model(kind: str, entry: str, model: type) -> None:
    text = BASE + "    checks:\n      - " + entry.replace("{", "{name: c, ", 1) + "\n"
    check = cfg.load_text(text, "c.yml").upstreams[0].checks[0]
    assert type(check) is model and check.kind == kind
    assert check.key == ("claude", "c")


@pytest.mark.parametrize(("entry", "field", "default"), [
    ("{kind: icmp, target: 127.0.0.1}", "packets", 3),
    ("{kind: icmp, target: 127.0.0.1}", "payload_size", 56),
    ("{kind: dns, target: localhost}", "valid_rcodes", ("NOERROR",)),
    ("{kind: http, url: 'http://127.0.0.1/'}", "method", "GET"),
    ("{kind: anthropic}", "url", "https://api.anthropic.com"),
    ("{kind: openai}", "url", "https://api.openai.com"),
    ("{kind: anthropic}", "max_tokens", 1),
])
def test_an_unset_key_takes_the_default_its_model_declares(entry: str, field: str,
                                                           default: object) -> None:
    text = BASE + "    checks:\n      - " + entry.replace("{", "{name: c, ", 1) + "\n"
    check = cfg.load_text(text, "c.yml").upstreams[0].checks[0]
    assert getattr(check, field) == default


def test_every_bad_value_of_one_check_is_reported() -> None:
    found = errors(BASE + "    checks:\n      - name: i\n        kind: icmp\n        target: 127.0.0.1\n"
                          "        packets: many\n        payload_size: -1\n        bogus: 1\n")
    assert found == [
        "c.yml:8: upstreams.claude.checks[0].packets: must be an integer from 1 to 100 (got 'many')",
        "c.yml:9: upstreams.claude.checks[0].payload_size: must be an integer from 0 to 1400 (got -1)",
        "c.yml:10: upstreams.claude.checks[0].bogus: unknown key (allowed: component, "
        "degraded_latency, interval, ip_protocol, kind, name, packet_interval, packets, "
        "payload_size, target, timeout)",
    ]


def test_a_module_accepts_neither_a_target_nor_a_name() -> None:
    found = errors("modules:\n  m: {kind: tcp, target: '127.0.0.1:1', name: x, "
                   "allowed_targets: ['127.0.0.1:*']}\n")
    assert sorted(e.split(": ")[1] for e in found) == ["modules.m.name", "modules.m.target"]


def test_a_background_check_does_not_take_allowed_targets() -> None:
    found = errors(BASE + "    checks:\n      - {name: t, kind: tcp, target: '127.0.0.1:1', "
                          "allowed_targets: [x]}\n")
    assert found[0].startswith("c.yml:5: upstreams.claude.checks[0].allowed_targets: unknown key")


def test_a_keyed_module_may_leave_the_port_open_on_an_exact_host() -> None:
    config = cfg.load_text("modules:\n  api:\n    kind: anthropic\n    mode: models\n"
                           "    api_key_env: K\n    allowed_targets: ['https://api.example.com:*']\n",
                           "c.yml")
    assert config.modules["api"].allowed_targets == ("https://api.example.com:*",)


@pytest.mark.parametrize("model", [cfg.HttpCheck, cfg.AnthropicCheck, cfg.OpenAICheck])
def test_a_check_shown_in_a_log_or_traceback_names_no_setting(model: type) -> None:
    check = model(kind="x", name="n", upstream="u", url="https://gw.test/", api_key_env="KEY_VAR",
                  headers={"X-Team": "secret-team"},
                  basic_auth=cfg.SecretRef("user", file="/run/pw"))
    for text in (repr(check), str(check), f"{check!r}"):
        assert text == f"{model.__name__}(u/n, kind=x)"
