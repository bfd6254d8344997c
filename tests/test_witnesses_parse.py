"""The witnesses' parsers: every real capture in ../shared/fixtures (counts, filters, quirks),
then the project's own payloads for the shapes no capture shows and for hostile input."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
from conftest import SHARED, require
from hypothesis import given, settings

from exporter import metrics
from exporter.checks.base import ProbeFailure
from exporter.config import WitnessConfig
from exporter.witnesses import aws, azure, dependencies, gcp, openrouter
from exporter.witnesses.dependencies import CloudIncident
from exporter.witnesses.feed import SchemaError, decode_xml, text

CLOUD = SHARED / "fixtures"
Parse = Callable[[bytes], tuple[CloudIncident, ...]]


def capture(name: str) -> bytes:
    path = CLOUD / name
    require(path.exists(), f"shared capture {path} is missing (../shared is not here)")
    return path.read_bytes()


def witness(kind: str = "aws_health", **kw: Any) -> WitnessConfig:
    return WitnessConfig(name="dep", kind=kind, url="http://127.0.0.1/", **kw)


# -- real captures: (file, parser, incidents, open, open ids by name, open severities) ---------

CAPTURES: list[tuple[str, Parse, int, int, dict[str, str]]] = [
    ("gcp/gcp-incidents-2022-07-03-calm-157-all-resolved.json", gcp.parse_body, 157, 0, {}),
    ("gcp/gcp-incidents-2020-08-20-legacy-format-4-ongoing.json", gcp.parse_body, 143, 4,
     {"20006": "medium", "20008": "high", "20005": "medium", "20003": "medium"}),
    ("aws/aws-currentevents-2026-09-03-two-open-one-resolved.json", aws.parse_body, 3, 2, {
        "arn:aws:health:me-central-1::event/MULTIPLE_SERVICES/AWS_MULTIPLE_SERVICES_OPERATIONAL"
        "_ISSUE/AWS_MULTIPLE_SERVICES_OPERATIONAL_ISSUE_5E6B8_EF2498889B5": "high",
        "arn:aws:health:me-south-1::event/MULTIPLE_SERVICES/AWS_MULTIPLE_SERVICES_OPERATIONAL"
        "_ISSUE/AWS_MULTIPLE_SERVICES_OPERATIONAL_ISSUE_E6426_01AD72B4E1E": "high"}),
    ("aws/aws-data-json-2022-07-03-calm-current-empty-86-archived.json", aws.parse_body, 86, 0,
     {}),
    # 50 items, three services: the newest item of each decides.
    ("aws/aws-rss-all-2026-08-18-ongoing-me-region-disruptions-50-items.rss", aws.parse_body,
     3, 2, {"multipleservices-me-central-1": "high", "multipleservices-me-south-1": "high"}),
    ("azure/azure-status-feed-2026-07-31-calm-empty-channel.xml", azure.parse_body, 0, 0, {}),
]


@pytest.mark.parametrize(("name", "parse", "total", "open_count", "open_ids"), CAPTURES,
                         ids=[c[0].split("/")[1] for c in CAPTURES])
def test_capture_counts(name: str, parse: Parse, total: int, open_count: int,
                        open_ids: dict[str, str]) -> None:
    incidents = parse(capture(name))
    assert len(incidents) == total
    found = {i.id: i.severity for i in incidents if i.open}
    assert len(found) == open_count
    assert found == open_ids


def test_gcp_stale_last_update_does_not_reopen() -> None:
    """Two ended incidents still say SERVICE_DISRUPTION in their last update: end decides."""
    raw = json.loads(capture("gcp/gcp-incidents-2022-07-03-calm-157-all-resolved.json"))
    stale = {r["id"] for r in raw if r["most_recent_update"].get("status") != "AVAILABLE"}
    assert len(stale) == 2
    by_id = {i.id: i for i in gcp.parse_body(capture(
        "gcp/gcp-incidents-2022-07-03-calm-157-all-resolved.json"))}
    assert not any(by_id[i].open for i in stale)


def test_gcp_products_by_id_and_title() -> None:
    incidents = gcp.parse_body(capture("gcp/gcp-incidents-2022-07-03-calm-157-all-resolved.json"))
    bigquery = next(i for i in incidents if i.id == "TaA75H7XA1DQyM2ReK2f")
    for ref in ("9CcrhHUcFevXPSVaSxkf", "Google BigQuery", "google bigquery"):
        assert dependencies.matches(bigquery, [ref], [])
    assert not dependencies.matches(bigquery, ["Cloud Storage"], [])


@pytest.mark.parametrize(("services", "regions", "expected"), [
    ((), (), 2),
    (("bedrock",), (), 2),  # an impacted service's slug
    (("Amazon Bedrock",), ("me-central-1",), 1),  # its name, one region by code
    ((), ("Bahrain",), 1),  # a region by its name
    (("ec2",), (), 0),
    ((), ("us-west-2",), 0),  # the us-west-2 event is resolved
])
def test_aws_currentevents_filters(services: tuple[str, ...], regions: tuple[str, ...],
                                   expected: int) -> None:
    incidents = aws.parse_body(capture("aws/aws-currentevents-2026-09-03-two-open-one-resolved.json"))
    w = witness(services=services, regions=regions)
    assert len(dependencies.open_matching(incidents, w)) == expected


def test_aws_currentevents_as_utf16_with_bom() -> None:
    raw = capture("aws/aws-currentevents-2026-09-03-two-open-one-resolved.json")
    for codec in ("utf-16", "utf-16-be", "utf-8-sig"):
        body = raw.decode("utf-8").encode(codec)
        if codec == "utf-16-be":
            body = b"\xfe\xff" + body
        assert sum(i.open for i in aws.parse_body(body)) == 2, codec


def test_aws_data_json_regions_from_service_names() -> None:
    incidents = aws.parse_body(capture("aws/aws-data-json-2022-07-03-calm-current-empty-86-archived.json"))
    ohio = [i for i in incidents if ("us-east-2", "Ohio") in i.regions]
    assert ohio and all(not i.open for i in incidents)
    assert all(i.name.startswith("[RESOLVED]") for i in incidents)


def test_aws_rss_pdt_dates_and_regions() -> None:
    incidents = {i.id: i for i in aws.parse_body(capture(
        "aws/aws-rss-all-2026-08-18-ongoing-me-region-disruptions-50-items.rss"))}
    assert not incidents["directconnect-eu-central-1"].open  # "operating normally" is newest
    bahrain = incidents["multipleservices-me-south-1"]
    assert bahrain.regions == (("me-south-1", ""),)
    assert bahrain.began is not None


def test_azure_calm_crlf_channel() -> None:
    body = capture("azure/azure-status-feed-2026-07-31-calm-empty-channel.xml")
    assert b"\r\n" in body
    assert azure.parse_body(body) == ()


# -- OpenRouter --------------------------------------------------------------------------------

OR_CAPTURES = {
    "calm": "openrouter/openrouter-endpoints-anthropic-claude-sonnet-4.6-2026-08-22T2246Z-calm.json",
    "down": "openrouter/openrouter-endpoints-anthropic-claude-sonnet-4.6-2026-08-16T2216Z"
            "-anthropic2-down-status-5.json",
    "bedrock": "openrouter/openrouter-endpoints-anthropic-claude-sonnet-5-2026-08-10T1400Z"
               "-bedrock-claude-on-aws-degraded-status-2.json",
}


@pytest.mark.parametrize(("which", "endpoints", "anthropic"), [
    ("calm", 9, {"anthropic": (0, {"5m": 1.0, "30m": 1.0})}),
    ("down", 9, {"anthropic/2": (-5, {"5m": 0.0, "30m": 0.2305}),
                 "anthropic": (0, {"5m": 1.0, "30m": 0.9995})}),
    ("bedrock", 8, {"anthropic": (0, {"5m": 1.0, "30m": 0.9994})}),
])
def test_openrouter_captures(which: str, endpoints: int,
                             anthropic: dict[str, tuple[int, dict[str, float]]]) -> None:
    health = openrouter.parse_body("anthropic/m")(capture(OR_CAPTURES[which]))
    assert len(health.endpoints) == endpoints
    mine = {e.endpoint: e for e in health.of(["Anthropic"])}
    assert set(mine) == set(anthropic)
    for tag, (status, uptime) in anthropic.items():
        assert mine[tag].status == status
        for window, ratio in uptime.items():
            assert mine[tag].uptime[window] == pytest.approx(ratio, abs=1e-4)


def test_openrouter_null_uptime_stays_absent() -> None:
    health = openrouter.parse_body("anthropic/claude-sonnet-4.6")(capture(OR_CAPTURES["calm"]))
    azure_ep = next(e for e in health.endpoints if e.endpoint == "azure/global")
    assert set(azure_ep.uptime) == {"1d"}
    samples = openrouter.gauges([health], WitnessConfig(name="openrouter", kind="openrouter", url="http://x"))
    assert not [s for s in samples if s.labels.get("endpoint") == "azure/global"
                and s.labels.get("window") in ("5m", "30m")]


def test_openrouter_bedrock_degraded_and_low_uptime_keeps_status() -> None:
    health = openrouter.parse_body("anthropic/claude-sonnet-5")(capture(OR_CAPTURES["bedrock"]))
    by_tag = {e.endpoint: e for e in health.endpoints}
    assert by_tag["amazon-bedrock/claude-on-aws"].status == -2
    assert by_tag["amazon-bedrock/claude-on-aws"].uptime["5m"] == pytest.approx(0.8897, abs=1e-4)
    assert by_tag["azure/global"].status == 0  # 30m at 97% and still status 0
    # A provider named by its tag prefix works as well as by its name.
    assert {e.endpoint for e in health.of(["amazon-bedrock"])} == {
        "amazon-bedrock/claude-on-aws", "amazon-bedrock/global", "amazon-bedrock/us-east-1"}


def test_openrouter_gauges_labels() -> None:
    health = openrouter.parse_body("anthropic/claude-sonnet-4.6")(capture(OR_CAPTURES["down"]))
    w = WitnessConfig(name="openrouter", kind="openrouter", url="http://x", providers=("Anthropic",))
    samples = openrouter.gauges([health], w)
    status = {s.labels["endpoint"]: s.value for s in samples
              if s.metric is metrics.CROWD_ENDPOINT_STATUS}
    assert status == {"anthropic/2": -5.0, "anthropic": 0.0}
    five = [s for s in samples if s.metric is metrics.CROWD_ENDPOINT_UPTIME
            and s.labels["endpoint"] == "anthropic/2" and s.labels["window"] == "5m"]
    assert [s.value for s in five] == [0.0]
    assert five[0].labels["model"] == "anthropic/claude-sonnet-4.6"
    assert five[0].labels["provider"] == "Anthropic"
    assert five[0].labels["source"] == "openrouter"


# -- our own payloads: shapes no capture shows --------------------------------------------------


def _gcp(**row: Any) -> bytes:
    base = {"id": "x1", "external_desc": "Vertex errors", "begin": "2026-01-01T00:00:00+00:00",
            "severity": "high", "affected_products": [{"title": "Vertex Gemini API", "id": "Z0"}],
            "currently_affected_locations": [{"title": "Columbus (us-east5)", "id": "us-east5"}]}
    base.update(row)
    return json.dumps([{k: v for k, v in base.items() if v is not ...}]).encode()


@pytest.mark.parametrize(("row", "is_open"), [
    ({}, True),  # no end key at all
    ({"end": None}, True),
    ({"end": "2026-01-01T01:00:00+00:00"}, False),
    ({"end": "2026-01-01T01:00:00+00:00", "most_recent_update": {"status": "SERVICE_OUTAGE"}},
     False),
])
def test_gcp_open_is_decided_by_end(row: dict[str, Any], is_open: bool) -> None:
    (incident,) = gcp.parse_body(_gcp(**row))
    assert incident.open is is_open


@pytest.mark.parametrize(("products", "locations", "matches"), [
    (["Vertex Gemini API"], ["us-east5"], True),
    (["Z0"], ["Columbus (us-east5)"], True),
    (["Z0"], ["europe-west4"], False),
    (["Cloud Run"], [], False),
])
def test_gcp_filters(products: list[str], locations: list[str], matches: bool) -> None:
    incidents = gcp.parse_body(_gcp())
    w = witness("gcp_status", services=tuple(products), regions=tuple(locations))
    assert bool(dependencies.open_matching(incidents, w)) is matches


@pytest.mark.parametrize(("event", "is_open", "severity"), [
    ({"status": "1"}, True, "low"),
    ({"status": 2}, True, "medium"),  # sometimes an integer
    ({"status": "3"}, True, "high"),
    ({"status": "0"}, False, "unknown"),
    ({"status": "3", "summary": "[RESOLVED] Increased Error Rates"}, False, "high"),
    ({"status": "3", "end_time": "1788480474"}, False, "high"),
])
def test_aws_event_states(event: dict[str, Any], is_open: bool, severity: str) -> None:
    row = {"arn": "arn:aws:health:us-east-1::event/X", "service": "bedrock-us-east-1",
           "service_name": "Amazon Bedrock", "region_name": "N. Virginia",
           "summary": "Increased Error Rates", "date": "1788472198", **event}
    (incident,) = aws.parse_body(json.dumps([row]).encode())
    assert (incident.open, incident.severity) == (is_open, severity)
    assert dependencies.matches(incident, ["bedrock"], ["N. Virginia"])


def test_aws_global_service_counts_for_every_region() -> None:
    row = {"service": "iam", "service_name": "AWS Identity and Access Management",
           "summary": "Sign-in delays", "status": "2", "date": "1"}
    (incident,) = aws.parse_body(json.dumps({"current": [row], "archive": []}).encode())
    assert incident.open and incident.regions == ()
    assert dependencies.matches(incident, ["iam"], ["us-east-1"])


AZURE_ITEMS = """<?xml version="1.0" encoding="utf-8"?>\r
<rss version="2.0"><channel><title>Azure Status</title>\r
<item><title>Azure OpenAI Service - East US - Investigating</title>\r
<description>Customers using Azure OpenAI in East US may see errors.</description>\r
<link>https://azure.status.microsoft/en-us/status/</link>\r
<pubDate>Fri, 31 Jul 2026 00:12:00 Z</pubDate><guid isPermaLink="false">az-1</guid>\r
<category>Azure OpenAI Service</category></item>\r
<item><title>[RESOLVED] Storage - West Europe</title><guid>az-2</guid></item>\r
</channel></rss>\r
"""


@pytest.mark.parametrize(("services", "regions", "expected"), [
    ((), (), ["az-1"]),
    (("Azure OpenAI Service",), (), ["az-1"]),  # its category
    (("openai",), ("east us",), ["az-1"]),  # words of the title
    ((), ("West Europe",), []),  # that item is resolved
    (("Cosmos DB",), (), []),
])
def test_azure_items(services: tuple[str, ...], regions: tuple[str, ...],
                     expected: list[str]) -> None:
    incidents = azure.parse_body(AZURE_ITEMS.encode())
    w = witness("azure_status", services=services, regions=regions)
    assert [i.id for i in dependencies.open_matching(incidents, w)] == expected


def test_dependency_gauges_every_severity_and_bounded_info() -> None:
    rows = [{"id": f"i{n}", "external_desc": f"n{n}", "severity": "medium"} for n in range(80)]
    incidents = gcp.parse_body(json.dumps(rows).encode())
    samples = dependencies.gauges(incidents, witness("gcp_status"))
    opened = {s.labels["severity"]: s.value for s in samples
              if s.metric is metrics.DEPENDENCY_INCIDENTS_OPEN}
    assert opened == {"low": 0.0, "medium": 80.0, "high": 0.0, "unknown": 0.0}
    info = [s for s in samples if s.metric is metrics.DEPENDENCY_INCIDENT_INFO]
    assert len(info) == dependencies.MAX_INFO_SERIES


# -- hostile input: a reason from the status page's set, never a crash ---------------------------

HOSTILE: list[tuple[str, Parse, bytes, str]] = [
    ("gcp html", gcp.parse_body, b"<html>challenge</html>", "not_json"),
    ("gcp empty", gcp.parse_body, b"", "not_json"),
    ("gcp truncated", gcp.parse_body, b'[{"id": "x"', "not_json"),
    ("gcp deep nesting", gcp.parse_body, b"[" * 100_000, "not_json"),
    ("aws garbage bytes", aws.parse_body, b"\xff\xfe\x00\xd8garbage", "not_json"),
    ("azure not xml", azure.parse_body, b'{"items": []}', "not_json"),
    ("azure malformed", azure.parse_body, b"<rss><channel><item></channel>", "not_json"),
    ("azure billion laughs", azure.parse_body,
     b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
     b'"&lol;&lol;&lol;">]><rss><channel><title>&lol2;</title></channel></rss>', "schema"),
    ("azure external entity", azure.parse_body,
     b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss><channel>&x;</channel></rss>',
     "schema"),
]


@pytest.mark.parametrize(("case", "parse", "body", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_payload_is_a_poll_failure(case: str, parse: Parse, body: bytes,
                                           reason: str) -> None:
    with pytest.raises(ProbeFailure) as caught:
        parse(body)
    assert caught.value.reason == reason, case


@pytest.mark.parametrize(("parse", "payload"), [
    (gcp.parse, {"incidents": "nope"}),
    (gcp.parse, 42),
    (aws.parse, {"current": "nope"}),
    (aws.parse, "text"),
    (lambda p: (openrouter.parse(p, "a/b"),), {"data": []}),
    (lambda p: (openrouter.parse(p, "a/b"),), {"data": {"endpoints": {}}}),
    (lambda p: (openrouter.parse(p, "a/b"),), [1, 2]),
    (lambda p: azure.parse(decode_xml(p)), b"<feed/>"),
])
def test_wrong_shape_is_schema(parse: Callable[[Any], Any], payload: Any) -> None:
    with pytest.raises(SchemaError):
        parse(payload)


def test_odd_values_inside_a_document_are_tolerated() -> None:
    rows = [{"id": ["x"], "external_desc": {"a": 1}, "severity": 5, "affected_products": "p",
             "currently_affected_locations": [None, 3, {"id": None}]}, "junk", None]
    (incident,) = gcp.parse_body(json.dumps(rows).encode())
    assert incident.open and incident.severity == "unknown" and incident.name == ""
    ep = {"data": {"endpoints": [{"provider_name": "A", "tag": "a", "status": "bad",
                                  "uptime_last_5m": True, "uptime_last_30m": 250,
                                  "uptime_last_1d": -3}, 7]}}
    (endpoint,) = openrouter.parse(ep, "a/b").endpoints
    assert endpoint.status is None and endpoint.uptime == {"30m": 1.0}


def test_lone_surrogates_are_replaced() -> None:
    body = b'[{"id": "x", "external_desc": "bad \\ud800 text"}]'
    (incident,) = gcp.parse_body(body)
    assert incident.name == "bad \ufffd text"
    incident.name.encode("utf-8")  # a label that encodes: the exposition cannot break on it
    assert text("\udfff") == "\ufffd"


def test_shared_captures_are_all_covered() -> None:
    """Every capture in the shared cloud and crowd folders has a conformance test above."""
    require(CLOUD.exists(), f"{CLOUD} is missing (../shared is not here)")
    covered = {c[0] for c in CAPTURES} | set(OR_CAPTURES.values())
    present = {str(p.relative_to(CLOUD)) for d in ("gcp", "aws", "azure", "openrouter")
               for p in (CLOUD / d).iterdir() if "products" not in p.name}
    assert present <= covered, present - covered


def test_gcp_products_capture_ids_are_stable_keys() -> None:
    """products.json: renamed products keep their id, which is what filters should name."""
    products = json.loads(capture("gcp/gcp-products-2026-212-products-sorted-keys.json"))["products"]
    renamed = [p for p in products if p["title"] != p["current_title"]]
    assert len(products) == 212 and len(renamed) == 17
    row = {"id": "r", "external_desc": "x", "affected_products": [
        {"id": renamed[0]["id"], "title": renamed[0]["title"],
         "current_title": renamed[0]["current_title"]}]}
    (incident,) = gcp.parse_body(json.dumps([row]).encode())
    for ref in (renamed[0]["id"], renamed[0]["title"], renamed[0]["current_title"]):
        assert dependencies.matches(incident, [ref], [])




# -- any JSON at all: a poll failure or a parsed document, never another exception ---------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\ud800\udfff")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "end", "status", "summary", "service", "impacted_services",
                         "affected_products", "currently_affected_locations", "severity",
                         "current", "archive", "data", "endpoints", "tag", "provider_name",
                         "uptime_last_5m", "most_recent_update", "date", "arn"]),
        inner, max_size=6),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_parsed_or_refused(payload: Any) -> None:
    body = json.dumps(payload).encode()
    for parse in (gcp.parse_body, aws.parse_body, openrouter.parse_body("a/b")):
        with contextlib.suppress(ProbeFailure, SchemaError):
            parse(body)
