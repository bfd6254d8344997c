"""models: [...] on anthropic checks: one probe per model, the model as a label on the API
series, and the check's daily token budget shared between them."""

from __future__ import annotations

import os

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import ConfigError, load_text
from exporter.engine.scheduler import Scheduler
from exporter.engine.state import StateStore
from exporter.engine.verdict import Verdicts
from exporter.exposition.collector import Collector
from tests.test_fake_api import KEY, FakeApi, fake_api  # noqa: F401  (fixture)

MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5")


def config_text(url: str, mode: str = "messages", extra: str = "") -> str:
    return f"""
upstreams:
  claude:
    checks:
      - {{name: api, kind: anthropic, url: "{url}", mode: {mode}, api_key_env: PER_MODEL_KEY,
         models: [{", ".join(MODELS)}], daily_token_budget: 1000, max_tokens: 2{extra}}}
"""


def test_one_check_per_model_with_the_budget_shared() -> None:
    cfg = load_text(config_text("http://127.0.0.1:1"), "c.yml")
    checks = cfg.all_checks()
    assert [(c.name, c.model, c.daily_token_budget) for c in checks] == [
        ("api/claude-haiku-4-5", "claude-haiku-4-5", 500),
        ("api/claude-sonnet-4-5", "claude-sonnet-4-5", 500)]


@pytest.mark.parametrize(("text", "expected"), [
    (config_text("http://127.0.0.1:1", "keyless").replace("api_key_env: PER_MODEL_KEY,", ""),
     "models (one probe per model) is for modes count_tokens and messages"),
    (config_text("http://127.0.0.1:1", extra=", model: claude-haiku-4-5"),
     "set model or models, not both"),
    (config_text("http://127.0.0.1:1").replace(", claude-sonnet-4-5", ", claude-haiku-4-5"),
     "lists a model twice"),
])
def test_bad_models(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "c.yml")
    assert any(expected in str(i) and "checks[0]" in str(i) for i in caught.value.issues), \
        caught.value.issues


@pytest.mark.parametrize("mode", ["messages", "count_tokens"])
async def test_each_model_probed_and_labelled(fake_api: FakeApi, mode: str,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PER_MODEL_KEY", KEY)
    cfg = load_text(config_text(fake_api.url + "/anthropic", mode), "c.yml")
    state = StateStore()
    state.sync(cfg)
    sent: list[str] = []
    async with aiohttp.ClientSession() as session:
        scheduler = Scheduler(state, session)
        for key in list(state.checks):
            check = state.checks[key].check
            result = await scheduler.run_once(check, scheduler.memo_for(check))
            path = "/anthropic/v1/messages" + ("" if mode == "messages" else "/count_tokens")
            sent.append(fake_api.log.bodies[path]["model"])
            assert result.success, result.error
            state.record(check, result)
    assert sent == list(MODELS)
    text = Collector(state, Verdicts()).render().decode()
    series = [(s.name, s.labels) for f in text_string_to_metric_families(text) for s in f.samples]
    success = {labels["check"] for name, labels in series if name == "probe_success"}
    assert success == {f"api/{m}" for m in MODELS}
    if mode == "messages":
        tokens = {(labels["check"], labels["model"]) for name, labels in series
                  if name == "probe_api_tokens_total" and labels["direction"] == "output"}
        assert tokens == {(f"api/{m}", m) for m in MODELS}
        assert {labels["model"] for name, labels in series
                if name == "probe_api_ttft_seconds_count"} == set(MODELS)
    assert os.environ["PER_MODEL_KEY"] not in text
