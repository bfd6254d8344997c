"""The other witnesses: the clouds an upstream runs on (``dependencies:``) and other people's
live traffic to the same models (``crowd:``). Each is polled like a status page; the probers
here return a Result whose ``details`` carry the parsed feed for the verdict.

One module per feed: gcp, aws, azure (dependencies), openrouter (crowd). ``feed`` holds the
one HTTP fetch and the shared polling path.
"""

from __future__ import annotations

from exporter.checks.base import ProbeContext, Result, Sample
from exporter.checks.net.httpclient import Transport
from exporter.config import PolledCheck, WitnessConfig
from exporter.witnesses import aws, azure, dependencies, feed, gcp, openrouter

DEPENDENCY_PARSERS = {"gcp_status": gcp.parse_body, "aws_health": aws.parse_body,
                      "azure_status": azure.parse_body}
DETAIL_INCIDENTS = "incidents"  # details key: tuple of the open CloudIncidents (unfiltered)
DETAIL_MODELS = "models"  # details key: tuple of ModelHealth, one per configured model


def _witness(check: PolledCheck) -> WitnessConfig:
    if check.witness is None:  # only a hand-made PolledCheck lacks it
        return WitnessConfig(name=check.name, kind=check.kind, url=check.url or "",
                             interval=check.interval, timeout=check.timeout)
    return check.witness


def transport_of(witness: WitnessConfig) -> Transport:
    return Transport(witness.proxy, witness.tls, witness.basic_auth, witness.authorization)


async def dependency_probe(check: PolledCheck, ctx: ProbeContext) -> Result:
    """The prober for the dependency kinds: one feed, filtered by services and regions."""
    witness = _witness(check)
    accept = feed.ACCEPT_JSON if witness.kind == "gcp_status" else (
        feed.ACCEPT_XML if witness.kind == "azure_status"
        else f"{feed.ACCEPT_JSON}, {feed.ACCEPT_XML}")
    parse = DEPENDENCY_PARSERS[witness.kind]

    def open_only(body: bytes) -> tuple[dependencies.CloudIncident, ...]:
        # Only open incidents are kept between polls: a feed's history can be megabytes.
        return tuple(i for i in parse(body) if i.open)

    request = feed.Request(witness.url, accept, open_only)

    def samples(parsed: list[tuple[dependencies.CloudIncident, ...]]) -> tuple[Sample, ...]:
        incidents = parsed[0]
        found = dependencies.open_matching(incidents, witness)
        ctx.log(f"{len(incidents)} open incidents, {len(found)} matching the filters")
        return dependencies.gauges(incidents, witness)

    return await feed.poll(ctx, [request], interval=witness.interval, time_limit=witness.timeout,
                           max_bytes=witness.max_body_bytes, samples=samples,
                           details=lambda parsed: {DETAIL_INCIDENTS: parsed[0]},
                           transport=transport_of(witness))


async def crowd_probe(check: PolledCheck, ctx: ProbeContext) -> Result:
    """The prober for kind ``openrouter``: one request per configured model."""
    witness = _witness(check)
    requests = [feed.Request(openrouter.endpoints_url(witness.url, model), feed.ACCEPT_JSON,
                             openrouter.parse_body(model)) for model in witness.models]

    def samples(parsed: list[openrouter.ModelHealth]) -> tuple[Sample, ...]:
        return openrouter.gauges(parsed, witness)

    return await feed.poll(ctx, requests, interval=witness.interval, time_limit=witness.timeout,
                           max_bytes=witness.max_body_bytes, samples=samples,
                           details=lambda parsed: {DETAIL_MODELS: tuple(parsed)},
                           transport=transport_of(witness))
