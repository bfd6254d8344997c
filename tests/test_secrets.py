"""A known API key never appears in anything the exporter shows: metrics, pages, JSON, probe
debug output or its own debug log, whatever the API answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import EXPORTER, PYTHONPATH_ENV

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
