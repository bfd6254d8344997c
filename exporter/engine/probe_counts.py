"""What /probe has been asked since start: owned by the runtime, so that the server counts into
it and the collector reads it without either reaching into the other."""

from __future__ import annotations

from collections import Counter


class ProbeCounts:
    def __init__(self) -> None:
        self._requests: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0  # probes (and their target lookups) running now

    def count(self, module: str, outcome: str) -> None:
        self._requests[(module, outcome)] += 1

    def requests(self) -> dict[tuple[str, str], int]:
        """Requests by (module, outcome), for exporter_probe_requests_total. ``module`` is ""
        when the request named no known module, so a caller cannot create series at will."""
        return dict(self._requests)
