"""The one prober runner (engine.probers.run_prober), which the scheduler and /probe share:
what escapes a prober becomes a failed Result with the same reason, whoever called."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.checks.base import ProbeContext, Result
from exporter.config import CheckConfig
from exporter.engine.probers import PROBERS, run_prober
from exporter.secrets import Secrets
from tests.conftest import build_check

LOG = logging.getLogger("exporter.test.runner")


async def run(check: CheckConfig, **options: Any) -> Result:
    return await run_prober(check, None, LOG, secrets=Secrets(), **options)


async def sleeps(check: CheckConfig, ctx: ProbeContext) -> Result:
    ctx.log("about to sleep")
    await asyncio.sleep(10)
    return Result(True, 10.0)


async def out_of_descriptors(check: CheckConfig, ctx: ProbeContext) -> Result:
    raise OSError(errno.EMFILE, "Too many open files")


async def buggy(check: CheckConfig, ctx: ProbeContext) -> Result:
    raise ZeroDivisionError("a bug")


async def logs(check: CheckConfig, ctx: ProbeContext) -> Result:
    ctx.log("line one")
    ctx.log("line \udcff two")  # a lone surrogate from an undecodable header
    return Result(True, 0.0, error="")


@pytest.fixture
def kinds() -> Iterator[None]:
    added = {"test_sleeps": sleeps, "test_emfile": out_of_descriptors, "test_buggy": buggy,
             "test_logs": logs}
    PROBERS.update(added)
    yield
    for kind in added:
        del PROBERS[kind]


def check(kind: str, timeout: float = 0.2) -> CheckConfig:
    return build_check("u", "c", kind, timeout=timeout)


async def test_a_prober_past_its_timeout_fails_with_timeout(kinds: None) -> None:
    result = await run(check("test_sleeps"))
    assert (result.success, result.reason, result.error) == (False, "timeout",
                                                            "timed out after 0.2s")
    assert 0.2 <= result.duration_seconds < 1.0
    assert result.log == ("about to sleep",)  # what it said before the timeout is kept


async def test_running_out_of_descriptors_is_ours_and_no_crash(kinds: None) -> None:
    crashes: list[BaseException] = []
    result = await run(check("test_emfile"), on_crash=crashes.append)
    assert result.reason == "local_resources" and "EMFILE" in result.error
    assert crashes == []


async def test_a_crash_is_internal_and_logged_with_its_traceback(
        kinds: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        result = await run(check("test_buggy"))
    assert (result.reason, result.error) == ("internal", "internal error: ZeroDivisionError")
    (record,) = caplog.records
    assert record.getMessage() == "prober crashed" and record.exc_info is not None


async def test_a_crash_goes_to_the_callers_hook_instead(
        kinds: None, caplog: pytest.LogCaptureFixture) -> None:
    crashes: list[BaseException] = []
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        result = await run(check("test_buggy"), on_crash=crashes.append)
    assert result.reason == "internal"
    assert [type(e) for e in crashes] == [ZeroDivisionError] and caplog.records == []


async def test_a_polled_feed_whose_parser_crashes_is_unreadable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROBERS, "statuspage", buggy)
    result = await run(check("statuspage"), on_crash=lambda _exc: None)
    assert result.reason == "schema"


async def test_an_unknown_kind_fails_without_running_anything() -> None:
    result = await run(check("no_such_kind"))
    assert (result.success, result.reason) == (False, "internal")


async def test_log_lines_are_kept_on_request_and_cleaned(kinds: None) -> None:
    kept = await run(check("test_logs"))
    assert kept.log == ("line one", "line \ufffd two")
    assert (await run(check("test_logs"), keep_log=False)).log == ()


async def test_the_memo_is_the_callers(kinds: None) -> None:
    async def remembers(check: CheckConfig, ctx: ProbeContext) -> Result:
        ctx.memo["runs"] = int(ctx.memo.get("runs", 0)) + 1
        return Result(True, 0.0)

    PROBERS["test_remembers"] = remembers
    try:
        memo: dict[str, object] = {}
        for _ in range(3):
            await run(check("test_remembers"), memo=memo)
        assert memo == {"runs": 3}
    finally:
        del PROBERS["test_remembers"]


async def test_the_run_reads_its_secrets_from_the_callers(
        kinds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str | None, Secrets]] = []

    async def reads(check: CheckConfig, ctx: ProbeContext) -> Result:
        seen.append((ctx.secret(check), ctx.secrets))
        return Result(True, 0.0)

    monkeypatch.setitem(PROBERS, "http", reads)
    monkeypatch.setenv("RUNNER_TEST_KEY", "sk-runner-test-0123456789")
    secrets = Secrets()
    with_key = build_check("u", "c", "http", url="http://127.0.0.1:9/",
                           api_key_env="RUNNER_TEST_KEY")
    await run_prober(with_key, None, LOG, secrets=secrets)
    assert seen == [("sk-runner-test-0123456789", secrets)]
    assert "sk-runner-test-0123456789" in secrets.known
