"""Each upstream's verdict changes since the exporter started, for /api/v1/status and the
landing page's timeline. Bounded both ways: the last ``max_changes`` changes per upstream,
and none that ended more than ``max_age`` seconds ago, whichever keeps fewer."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_CHANGES = 1000
MAX_AGE = 7 * 86400.0


@dataclass
class Period:
    """One verdict from the change that started it to the next one (None: still current)."""

    verdict: str
    since: float
    until: float | None
    decided_by: tuple[str, ...]
    signals: tuple[str, ...]  # why, as the verdict said at the change

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "since": self.since, "until": self.until,
                "decided_by": list(self.decided_by), "signals": list(self.signals)}


class VerdictHistory:
    def __init__(self, max_changes: int = MAX_CHANGES, max_age: float = MAX_AGE) -> None:
        self.max_changes = max_changes
        self.max_age = max_age
        self._periods: dict[str, deque[Period]] = {}

    def record(self, upstream: str, verdict: str, at: float, decided_by: tuple[str, ...],
               signals: tuple[str, ...]) -> None:
        """The upstream's verdict became ``verdict`` at ``at``; the same verdict again is no
        change."""
        periods = self._periods.setdefault(upstream, deque(maxlen=self.max_changes))
        if periods and periods[-1].verdict == verdict:
            return
        if periods:
            periods[-1].until = at
        periods.append(Period(verdict, at, None, decided_by, signals))
        self._prune(periods, at)

    def forget(self, upstream: str) -> None:
        self._periods.pop(upstream, None)

    def periods(self, upstream: str, now: float) -> list[Period]:
        periods = self._periods.get(upstream)
        if not periods:
            return []
        self._prune(periods, now)
        return list(periods)

    def _prune(self, periods: deque[Period], now: float) -> None:
        oldest = now - self.max_age
        while periods and periods[0].until is not None and periods[0].until < oldest:
            periods.popleft()
