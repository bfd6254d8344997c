"""The simulator's other witnesses, in the real formats (written here, from the formats'
documentation and the shapes the shared captures show):

    /gcp/incidents.json                    Google Cloud incidents (today's shape)
    /aws/currentevents                     AWS Health current events, UTF-16 with a BOM
    /aws/data.json                         the legacy AWS dashboard (current and archive)
    /aws/rss/all.rss                       the legacy AWS RSS feed (one item per update)
    /azure/status/feed/                    Azure's RSS 2.0 feed, CRLF, empty when calm
    /openrouter/api/v1/models/{author}/{slug}/endpoints   OpenRouter endpoint health

The scenario's ``witnesses`` state says whether a cloud incident is open (in one region) and
what uptime the crowd sees at the provider's own endpoints. Every feed sends an ETag and
answers 304 to a matching If-None-Match, as the real ones do.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from email.utils import formatdate

from aiohttp import web

from exporter.simulator.scenarios import Scenario

# The incident a cloud_incident scenario opens: Bedrock in one AWS region, and Claude on
# Vertex in one Google Cloud location.
AWS_REGION, AWS_REGION_NAME = "us-east-1", "N. Virginia"
GCP_LOCATION, GCP_LOCATION_NAME = "us-east5", "Columbus (us-east5)"
GCP_PRODUCT, GCP_PRODUCT_NAME = "sdXM79fz1FS6ekNpu37K", "Vertex AI Online Prediction"
BEGAN = 1_780_000_000  # a fixed start, so the feeds are stable between polls


def add_routes(app: web.Application, scenario: Callable[[], Scenario]) -> None:
    feeds = Feeds(scenario)
    app.router.add_get("/gcp/incidents.json", feeds.gcp)
    app.router.add_get("/aws/currentevents", feeds.aws_current)
    app.router.add_get("/aws/data.json", feeds.aws_data)
    app.router.add_get("/aws/rss/all.rss", feeds.aws_rss)
    app.router.add_get("/azure/status/feed/", feeds.azure)
    app.router.add_get("/openrouter/api/v1/models/{author}/{slug}/endpoints", feeds.openrouter)


class Feeds:
    def __init__(self, scenario: Callable[[], Scenario]) -> None:
        self.scenario = scenario

    @property
    def incident(self) -> bool:
        return self.scenario().witnesses.cloud_incident

    async def gcp(self, request: web.Request) -> web.StreamResponse:
        rows: list[dict[str, object]] = [{
            "id": "SimResolved0001", "number": "1000", "begin": "2026-01-01T10:00:00+00:00",
            "created": "2026-01-01T10:05:00+00:00", "end": "2026-01-01T11:00:00+00:00",
            "modified": "2026-01-01T11:00:00+00:00",
            "external_desc": "Simulated: an earlier, resolved incident",
            "updates": [], "most_recent_update": {"status": "SERVICE_DISRUPTION", "text": ""},
            "severity": "medium", "status_impact": "SERVICE_DISRUPTION",
            "service_key": GCP_PRODUCT, "service_name": GCP_PRODUCT_NAME,
            "affected_products": [{"title": GCP_PRODUCT_NAME, "id": GCP_PRODUCT}],
            "currently_affected_locations": [], "uri": "incidents/SimResolved0001"}]
        if self.incident:
            rows.insert(0, {
                "id": "SimVertexUsEast5", "number": "1001",
                "begin": "2026-06-01T10:00:00+00:00", "created": "2026-06-01T10:05:00+00:00",
                "modified": "2026-06-01T10:05:00+00:00",
                "external_desc": "Simulated: elevated error rates for Vertex AI in us-east5",
                "updates": [], "most_recent_update": {"status": "SERVICE_DISRUPTION",
                                                      "text": "We are investigating."},
                "severity": "medium", "status_impact": "SERVICE_DISRUPTION",
                "service_key": GCP_PRODUCT, "service_name": GCP_PRODUCT_NAME,
                "affected_products": [{"title": GCP_PRODUCT_NAME, "id": GCP_PRODUCT}],
                "currently_affected_locations": [{"title": GCP_LOCATION_NAME,
                                                  "id": GCP_LOCATION}],
                "previously_affected_locations": [], "uri": "incidents/SimVertexUsEast5"})
        # Google sends one compact line with Go-style escapes; json.dumps is close enough.
        return _answer(request, json.dumps(rows, separators=(",", ":")).encode(),
                       "application/json")

    def _aws_events(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = [{
            "date": str(BEGAN - 86_400), "status": "0", "region_name": "Oregon",
            "arn": "arn:aws:health:us-west-2::event/BEDROCK/AWS_BEDROCK_OPERATIONAL_ISSUE/SIM0",
            "service": "bedrock-us-west-2", "service_name": "Amazon Bedrock",
            "summary": "[RESOLVED] Simulated: increased latency", "end_time": str(BEGAN - 80_000),
            "event_log": [{"summary": "Increased latency", "message": "Resolved.", "status": 0,
                           "timestamp": BEGAN - 80_000}],
            "impacted_services": {"bedrock-us-west-2": {"service_name": "Amazon Bedrock",
                                                        "current": "0", "max": "2"}}}]
        if self.incident:
            events.append({
                "date": str(BEGAN), "status": "2", "region_name": AWS_REGION_NAME,
                "arn": f"arn:aws:health:{AWS_REGION}::event/BEDROCK/"
                       "AWS_BEDROCK_OPERATIONAL_ISSUE/SIM1",
                "service": f"bedrock-{AWS_REGION}", "service_name": "Amazon Bedrock",
                "summary": "Simulated: increased error rates for Anthropic models",
                "event_log": [{"summary": "Increased error rates", "status": 2,
                               "message": "We are investigating increased error rates.",
                               "timestamp": BEGAN}],
                "impacted_services": {f"bedrock-{AWS_REGION}": {
                    "service_name": "Amazon Bedrock", "current": "2", "max": "2"}}})
        return events

    async def aws_current(self, request: web.Request) -> web.StreamResponse:
        # Served as UTF-16 with a byte-order mark, as AWS has served it.
        body = json.dumps(self._aws_events(), indent=1).encode("utf-16")
        return _answer(request, body, "application/json")

    async def aws_data(self, request: web.Request) -> web.StreamResponse:
        events = self._aws_events()
        current = [{"service_name": f"Amazon Bedrock ({e['region_name']})",
                    "summary": e["summary"], "date": e["date"], "status": e["status"],
                    "details": "", "description": "<div>Simulated.</div>",
                    "service": e["service"]} for e in events if e["status"] != "0"]
        archive = [{"service_name": f"Amazon Bedrock ({e['region_name']})",
                    "summary": e["summary"], "date": e["date"], "status": "1", "details": "",
                    "description": "<div>Simulated.</div>", "service": e["service"]}
                   for e in events if e["status"] == "0"]
        return _answer(request, json.dumps({"archive": archive, "current": current}).encode(),
                       "application/json")

    async def aws_rss(self, request: web.Request) -> web.StreamResponse:
        items = []
        for e in reversed(self._aws_events()):  # newest first
            when = int(str(e["date"]))
            title = ("Service is operating normally: " + str(e["summary"])
                     if e["status"] == "0" else "Service impact: " + str(e["summary"]))
            items.append(
                f"<item><title><![CDATA[{title}]]></title>"
                "<link>https://status.aws.amazon.com/</link>"
                f"<pubDate>{formatdate(when, usegmt=True)}</pubDate>"
                f'<guid isPermaLink="false">https://status.aws.amazon.com/#{e["service"]}_{when}'
                "</guid><description><![CDATA[Simulated.]]></description></item>")
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
                "<title><![CDATA[Amazon Web Services Service Status]]></title>"
                "<link>https://status.aws.amazon.com/</link>"
                f"<lastBuildDate>{formatdate(BEGAN, usegmt=True)}</lastBuildDate>"
                + "".join(items) + "</channel></rss>\n")
        return _answer(request, body.encode(), "application/rss+xml")

    async def azure(self, request: web.Request) -> web.StreamResponse:
        # The calm state, as Azure sends it: an empty channel, CRLF line endings.
        lines = ['<?xml version="1.0" encoding="utf-8"?>',
                 '<rss xmlns:a10="http://www.w3.org/2005/Atom"', '  version="2.0">',
                 "  <channel>", "    <title>Azure Status</title>",
                 "    <link>https://azure.status.microsoft/en-us/status/</link>",
                 "    <description>Azure Status</description>",
                 "    <language>en-us</language>",
                 "    <lastBuildDate>" + time.strftime("%a, %d %b %Y %H:%M:00 Z",
                                                       time.gmtime(BEGAN)) + "</lastBuildDate>",
                 "  </channel>", "</rss>"]
        return _answer(request, "\r\n".join(lines).encode(), "application/rss+xml")

    async def openrouter(self, request: web.Request) -> web.StreamResponse:
        model = f"{request.match_info['author']}/{request.match_info['slug']}"
        crowd = self.scenario().witnesses
        own, status = crowd.provider_uptime, crowd.provider_status
        endpoints = [
            _endpoint(model, "Anthropic", "anthropic", status, own, own, 99.9),
            _endpoint(model, "Anthropic", "anthropic/2", status, own, own, 99.9),
            _endpoint(model, "Amazon Bedrock", "amazon-bedrock/us-east-1", 0, 100.0, 99.98,
                      99.95),
            _endpoint(model, "Google", "google-vertex/us-east5", 0, None, None, 100.0),
        ]
        body = {"data": {"id": model, "name": model, "created": BEGAN,
                         "description": "Simulated.", "architecture": {},
                         "endpoints": endpoints}}
        return _answer(request, json.dumps(body).encode(), "application/json")


def _endpoint(model: str, provider: str, tag: str, status: int, five: float | None,
              thirty: float | None, day: float | None) -> dict[str, object]:
    return {"name": f"{provider} | {model}", "model_id": model, "model_name": model,
            "context_length": 200_000, "pricing": {"prompt": "0.000003",
                                                   "completion": "0.000015", "discount": 0},
            "provider_name": provider, "tag": tag, "quantization": "unknown",
            "max_completion_tokens": 64_000, "max_prompt_tokens": None,
            "supported_parameters": ["max_tokens"], "status": status,
            "uptime_last_5m": five, "uptime_last_30m": thirty, "uptime_last_1d": day,
            "supports_implicit_caching": True, "supports_voice_cloning": False,
            "latency_last_30m": None, "throughput_last_30m": None}


def _answer(request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, headers={"ETag": etag, "Content-Type": content_type,
                                            "Cache-Control": "max-age=30"})
