"""A known API key never appears in anything the exporter shows: metrics, pages, JSON, probe
debug output or its own debug log, whatever the API answers."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import logs
from exporter.checks.net.httpclient import route
from exporter.config import ProxyConfig, load_text
from exporter.runtime import Runtime
from exporter.secrets import RedactingFilter, Secrets
from tests.conftest import EXPORTER, PYTHONPATH_ENV, free_port

KEY = "sk-ant-api03-TESTSECRET-9f8e7d6c5b4a39281706"
KEY_ENV = "SECRET_TEST_KEY"


def config(sim, key_source: str) -> str:
    haiku = "model: claude-haiku-4-5"
    return f"""\
defaults: {{interval: 500ms, timeout: 400ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim.statuspage_url}", interval: 1s}}
    checks:
      - {{name: models, kind: anthropic, url: "{sim.anthropic_url}", mode: models, {key_source}}}
      - {{name: messages, kind: anthropic, url: "{sim.anthropic_url}", mode: messages, {haiku}, {key_source}}}
      - {{name: count, kind: anthropic, url: "{sim.anthropic_url}", mode: count_tokens, {haiku}, {key_source}}}
      - {{name: chat, kind: openai, url: "{sim.openai_url}", mode: chat, model: gpt-4o-mini, {key_source}}}
      - {{name: http, kind: http, url: "{sim.anthropic_url}/v1/models", api_key_header: x-api-key, {key_source}}}
control:
  - {{name: loopback, kind: tcp, target: "{sim.url.removeprefix('http://')}"}}
modules:
  api_models:
    kind: anthropic
    mode: models
    {key_source}
    allowed_targets: ["{sim.anthropic_url}"]
"""


SCENARIOS = ["operational", "unauthorized", "spend_limit", "stream_error", "stream_cut"]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("source", ["env", "file"])
def test_the_key_appears_nowhere(run_simulator, run_exporter, tmp_path: Path, scenario: str, source: str) -> None:
    sim = run_simulator(scenario)
    if source == "env":
        key_source, env = f"api_key_env: {KEY_ENV}", {KEY_ENV: KEY}
    else:
        key_file = tmp_path / "key"
        key_file.write_text(KEY + "\n")
        key_source, env = f"api_key_file: {key_file}", {}
    exporter = run_exporter(config(sim, key_source), env=env)
    exporter.wait_for(lambda s: (s.value("probe_runs_total", upstream="claude", check="chat", kind="openai") or 0) >= 2)
    outputs = {
        "metrics": exporter.get("/metrics")[1],
        "landing": exporter.get("/")[1],
        "status": exporter.get("/api/v1/status")[1],
        "probe": exporter.get(f"/probe?module=api_models&target={sim.anthropic_url}&debug=true")[1],
        "probe-metrics": exporter.get(f"/probe?module=api_models&target={sim.anthropic_url}")[1],
    }
    assert "probe_success" in outputs["probe-metrics"]
    exporter.stop()
    outputs["log"] = exporter.log()  # --log.level=debug: the most verbose the exporter gets
    leaked = [name for name, text in outputs.items() if KEY in text or KEY[-20:] in text]
    assert leaked == []


def test_check_command_output_never_shows_the_key(run_simulator, tmp_path: Path) -> None:
    sim = run_simulator("unauthorized")
    path = tmp_path / "c.yml"
    path.write_text(config(sim, f"api_key_env: {KEY_ENV}"))
    for output in ("table", "json"):
        proc = subprocess.run([EXPORTER, "check", f"--config.file={path}", f"--output={output}", "--log.level=debug"],
                              capture_output=True, text=True, timeout=60,
                              env={KEY_ENV: KEY, "PATH": "/usr/bin:/bin", **PYTHONPATH_ENV})
        assert KEY not in proc.stdout + proc.stderr
        assert "auth" in proc.stdout


# -- the log filter scrubs with the runtime's secrets ---------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """logs.setup replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_secret_a_check_reads_is_redacted_in_every_log_record(
        root_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        ) -> None:
    # As the cli wires it: one Secrets for the log handler and the runtime. The check reads
    # the key (the connection is refused afterwards: the key was read all the same).
    monkeypatch.setenv("LOG_TEST_KEY", KEY)
    secrets = Secrets()
    logs.setup("debug", "logfmt", secrets)
    text = f"""\
defaults: {{interval: 1h, timeout: 2s}}
upstreams:
  u:
    checks:
      - {{name: api, kind: http, url: "http://127.0.0.1:{free_port()}/", api_key_env: LOG_TEST_KEY}}
"""
    runtime = Runtime(lambda: load_text(text, "t.yml"), secrets=secrets)
    assert KEY not in secrets.known  # nothing read yet
    await runtime.start()
    try:
        for _ in range(100):
            if runtime.state.all_ran():
                break
            await asyncio.sleep(0.05)
        assert runtime.state.all_ran()
    finally:
        await runtime.stop()
    assert KEY in secrets.known
    log = logging.getLogger("exporter.test.secrets")
    log.error("the upstream echoed %s", f"x-api-key: {KEY}")
    try:
        raise RuntimeError(f"a library quoted the header: Bearer {KEY}")
    except RuntimeError:
        log.exception("something failed")
    err = capsys.readouterr().err
    assert "the upstream echoed" in err and "a library quoted the header" in err
    assert KEY not in err and KEY[-20:] not in err
    assert "[REDACTED]" in err


def test_a_proxy_password_from_the_environment_becomes_known(
        monkeypatch: pytest.MonkeyPatch) -> None:
    password = "proxy-pw-Vb62-not-in-any-config"
    monkeypatch.setenv("HTTPS_PROXY", f"http://someone:{password}@127.0.0.1:3128")
    for name in ("https_proxy", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    secrets = Secrets()
    via = route(ProxyConfig(mode="environment"), "https://api.example.test/v1", secrets)
    assert via.proxy_auth is not None and via.proxy is not None
    assert password not in str(via.proxy)
    assert password in secrets.known
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "proxy said %s", (password,), None)
    assert RedactingFilter(secrets).filter(record) and password not in record.getMessage()
    other = logging.LogRecord("t", logging.ERROR, __file__, 1, "proxy said %s", (password,), None)
    RedactingFilter(Secrets()).filter(other)  # another runtime's secrets know nothing of it
    assert password in other.getMessage()
