"""The landing page's one-line answer to "is it them or me?" follows the witnesses."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.server import landing


def upstream(verdict: str, **views: str) -> dict[str, Any]:
    return {"verdict": verdict, "witnesses": [{"witness": w, "view": v} for w, v in views.items()]}


@pytest.mark.parametrize(("up", "expected"), [
    (upstream("outage", probes="down", crowd="down", statuspage="ok"), landing.ANSWERS["outage"]),
    (upstream("outage", probes="down", crowd="ok", statuspage="down"), landing.ANSWERS["outage"]),
    (upstream("outage", probes="down", crowd="unknown", statuspage="ok"), landing.ANSWERS["outage"]),
    (upstream("outage", probes="down", crowd="ok", statuspage="ok"), landing.OUTAGE_LIKELY_OURS),
    (upstream("operational", probes="ok", crowd="ok", statuspage="ok"),
     landing.ANSWERS["operational"]),
    (upstream("local_network"), landing.ANSWERS["local_network"]),
    ({"verdict": "outage"}, landing.ANSWERS["outage"]),
])
def test_answer(up: dict[str, Any], expected: str) -> None:
    assert landing.answer(up) == expected
