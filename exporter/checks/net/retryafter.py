"""Retry-After, parsed one way for the whole exporter (status pages and API probes).

An upstream may ask for any wait: ``86400``, ``1e308``, a date in the year 9999. Obeying it
would stop the check (and freeze its verdict) for as long as the upstream likes, so every
wait is capped at ``CAP_SECONDS``; the scheduler in addition reports a check that is backing
off instead of showing its last result as if it were fresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

CAP_SECONDS = 600.0


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from one Retry-After value (delta-seconds or an HTTP-date), capped at
    CAP_SECONDS; None when absent or unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds = _seconds(text)
    if seconds is None:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = max(0.0, moment.timestamp() - (time.time() if now is None else now))
    return min(seconds, CAP_SECONDS)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a response asks for: ``retry-after-ms`` (OpenAI) first, else ``Retry-After``;
    capped at CAP_SECONDS."""
    ms = headers.get("retry-after-ms")
    if ms is not None and (value := _seconds(ms.strip())) is not None:
        return min(value / 1000.0, CAP_SECONDS)
    return parse_retry_after(headers.get("retry-after"), now)
