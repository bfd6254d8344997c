"""The crowd: OpenRouter's per-model endpoint health, ``GET {url}/models/{author}/{slug}/endpoints``.

No key is needed. The answer is ``{"data": {"id", "name", "endpoints": [...]}}``; each endpoint
has ``provider_name``, ``tag`` (one provider may have several: ``anthropic``, ``anthropic/2``),
``status`` (an open set of integers, 0 normal, negative unhealthy; exported unread) and
``uptime_last_5m``/``_30m``/``_1d`` in percent of live requests that succeeded, ``null`` when
there was too little traffic. Percent becomes a 0-1 ratio; ``null`` stays absent.

Emitted gauges (upstream is filled in by the state store)::

    crowd_endpoint_uptime_ratio{source="openrouter",model="anthropic/claude-sonnet-4.6",
        provider="Anthropic",endpoint="anthropic/2",window="5m"} 0
    crowd_endpoint_status_code{source=...,model=...,provider=...,endpoint=...} -5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter import metrics
from exporter.checks.base import Sample
from exporter.checks.net.safejson import SchemaError
from exporter.config import WitnessConfig
from exporter.witnesses.feed import decode_json, json_type, objects, text

WINDOWS = metrics.CROWD_WINDOWS
UPTIME_KEYS = {"5m": "uptime_last_5m", "30m": "uptime_last_30m", "1d": "uptime_last_1d"}
MAX_ENDPOINTS = 100  # per model: bounds the series a hostile answer can create


@dataclass(frozen=True)
class Endpoint:
    provider: str
    endpoint: str  # the source's own id: OpenRouter's tag
    status: int | None
    uptime: Mapping[str, float] = field(default_factory=dict)  # window -> 0-1 ratio


@dataclass(frozen=True)
class ModelHealth:
    model: str  # the model id as configured (author/slug)
    endpoints: tuple[Endpoint, ...]

    def of(self, providers: Sequence[str]) -> tuple[Endpoint, ...]:
        """The endpoints of the named providers (names or tag prefixes, any case); all when
        no provider is named."""
        if not providers:
            return self.endpoints
        wanted = {p.casefold() for p in providers}
        return tuple(e for e in self.endpoints
                     if e.provider.casefold() in wanted
                     or e.endpoint.split("/", 1)[0].casefold() in wanted)


def endpoints_url(base: str, model: str) -> str:
    return f"{base.rstrip('/')}/models/{model}/endpoints"


def parse_body(model: str) -> Callable[[bytes], ModelHealth]:
    """The parser of one model's endpoints document."""
    def parse_one(body: bytes) -> ModelHealth:
        return parse(decode_json(body), model)
    return parse_one


def parse(payload: Any, model: str) -> ModelHealth:
    if not isinstance(payload, dict):
        raise SchemaError(f"expected a JSON object, got {json_type(payload)}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise SchemaError(f"'data' is {json_type(data)}, expected an object")
    rows = data.get("endpoints")
    if not isinstance(rows, list):
        raise SchemaError(f"'data.endpoints' is {json_type(rows)}, expected an array")
    out: list[Endpoint] = []
    seen: set[str] = set()
    for row in objects(rows)[:MAX_ENDPOINTS]:
        provider = text(row.get("provider_name"))
        tag = text(row.get("tag")) or text(row.get("name")) or provider
        if not tag or tag in seen:
            continue
        seen.add(tag)
        uptime = {w: ratio for w, key in UPTIME_KEYS.items()
                  if (ratio := _ratio(row.get(key))) is not None}
        out.append(Endpoint(provider, tag, _status(row.get("status")), uptime))
    return ModelHealth(model, tuple(out))


def _ratio(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return min(float(value), 100.0) / 100.0


def _status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def gauges(models: Sequence[ModelHealth], witness: WitnessConfig) -> tuple[Sample, ...]:
    out: list[Sample] = []
    for health in models:
        for e in health.of(witness.providers):
            labels = {"source": witness.name, "model": health.model, "provider": e.provider,
                      "endpoint": e.endpoint}
            for window in WINDOWS:
                if window in e.uptime:
                    out.append(Sample(metrics.CROWD_ENDPOINT_UPTIME, e.uptime[window],
                                      {**labels, "window": window}))
            if e.status is not None:
                out.append(Sample(metrics.CROWD_ENDPOINT_STATUS, float(e.status), labels))
    return tuple(out)
