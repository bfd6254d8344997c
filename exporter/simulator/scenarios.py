"""Named scenarios for the simulator: one state of the fake status page and the fake APIs.

The status-page fake (``simulator/statuspage.py``) reads ``Scenario.page``; the fake APIs
(``simulator/api.py``) read ``Scenario.api``. A scenario is switched at run time through
``POST /_sim/scenario`` so a test or a fire drill can move from one state to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# How the status page answers at the HTTP level.
PAGE_MODES = (
    "ok",          # well-formed Statuspage v2 JSON
    "challenge",   # a 403 HTML bot-challenge page (CloudFront/Cloudflare style)
    "slow",        # answers, but only after a long delay
    "malformed",   # 200 application/json with a truncated, invalid body
    "http_500",    # origin error
    "rate_limited",  # 429 with Retry-After
)

# How the fake Anthropic / OpenAI APIs answer.
API_BEHAVIORS = (
    "ok",                       # 401 to keyless, 200 with a key, well-formed stream
    "overloaded",               # 529 overloaded_error (OpenAI flavour: 503)
    "rate_limited",             # 429 rate_limit_error with retry-after
    "rate_limited_no_retry_after",
    "spend_limit",              # 429 with error.details.error_code enforced_spend_limit_reached
    "unauthorized",             # 401 authentication_error even with a key
    "forbidden",                # 403 permission_error
    "server_error",             # 500 api_error
    "slow",                     # every response delayed by slow_seconds
    "slow_first_token",         # stream: first text delta after slow_seconds
    "stream_cut",               # stream: connection closed before message_stop
    "stream_error",             # stream: an error event (overloaded_error) after HTTP 200
    "html",                     # 200 text/html from a misconfigured proxy
)


@dataclass(frozen=True)
class PageState:
    mode: str = "ok"
    indicator: str = "none"  # none | minor | major | critical | maintenance
    # component id -> status, for components not operational
    components: dict[str, str] = field(default_factory=dict)
    # incident status (investigating, identified, monitoring) and impact, or None
    incident_status: str | None = None
    incident_impact: str = "none"
    maintenance: str = "none"  # none | scheduled | in_progress


@dataclass(frozen=True)
class ApiState:
    behavior: str = "ok"
    slow_seconds: float = 3.0


@dataclass(frozen=True)
class WitnessState:
    """The other witnesses (simulator/witnesses.py): the clouds underneath and the crowd."""

    cloud_incident: bool = False  # an open incident in one AWS region and one GCP location
    provider_uptime: float = 100.0  # percent the crowd sees at the provider's own endpoints
    provider_status: int = 0  # OpenRouter's status number for them (negative: unhealthy)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    page: PageState = PageState()
    api: ApiState = ApiState()
    witnesses: WitnessState = WitnessState()


API_COMPONENT = "k8w3r06qmzrp"  # "Claude API (api.anthropic.com)" on the real page
CLAUDE_AI_COMPONENT = "rwppv331jlwc"
CODE_COMPONENT = "yyzkbfz2thpt"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("operational", "All systems operational; the API answers normally."),
        Scenario(
            "degraded", "The API component shows degraded performance and answers slowly.",
            PageState(indicator="minor", components={API_COMPONENT: "degraded_performance"},
                      incident_status="investigating", incident_impact="minor"),
            ApiState("slow", slow_seconds=3.0),
        ),
        Scenario(
            "partial_outage", "A partial outage of the API; some requests are overloaded.",
            PageState(indicator="major", components={API_COMPONENT: "partial_outage",
                                                     CODE_COMPONENT: "degraded_performance"},
                      incident_status="identified", incident_impact="major"),
            ApiState("overloaded"),
        ),
        Scenario(
            "major_outage", "A major outage: the page says so and the API fails with 5xx.",
            PageState(indicator="critical", components={API_COMPONENT: "major_outage",
                                                        CLAUDE_AI_COMPONENT: "major_outage"},
                      incident_status="investigating", incident_impact="critical"),
            ApiState("server_error"),
        ),
        Scenario(
            "maintenance", "A scheduled maintenance is in progress on the API.",
            PageState(indicator="maintenance", components={API_COMPONENT: "under_maintenance"},
                      maintenance="in_progress"),
        ),
        Scenario(
            "maintenance_scheduled", "A maintenance is scheduled for later; all is operational.",
            PageState(maintenance="scheduled"),
        ),
        Scenario(
            "incident_investigating", "Incident lifecycle 1/4: investigating, API degraded.",
            PageState(indicator="minor", components={API_COMPONENT: "degraded_performance"},
                      incident_status="investigating", incident_impact="minor"),
        ),
        Scenario(
            "incident_identified", "Incident lifecycle 2/4: identified, partial outage.",
            PageState(indicator="major", components={API_COMPONENT: "partial_outage"},
                      incident_status="identified", incident_impact="major"),
            ApiState("overloaded"),
        ),
        Scenario(
            "incident_monitoring", "Incident lifecycle 3/4: fix deployed, monitoring.",
            PageState(indicator="minor", incident_status="monitoring", incident_impact="minor"),
        ),
        Scenario(
            "incident_resolved", "Incident lifecycle 4/4: resolved; the incident leaves the page.",
        ),
        Scenario(
            "api_outage_unacknowledged",
            "The page is all green but the API is overloaded (the page lags the outage); the "
            "crowd's traffic to the same models fails too.",
            api=ApiState("overloaded"),
            witnesses=WitnessState(provider_uptime=0.0, provider_status=-5),
        ),
        Scenario("api_rate_limited", "The page is green; our key is rate limited.",
                 api=ApiState("rate_limited")),
        Scenario("spend_limit", "The page is green; our account hit its monthly spend limit.",
                 api=ApiState("spend_limit")),
        Scenario("unauthorized", "The page is green; our key is rejected.",
                 api=ApiState("unauthorized")),
        Scenario("slow_first_token", "The page is green; streamed messages start slowly.",
                 api=ApiState("slow_first_token", slow_seconds=2.0)),
        Scenario("stream_cut", "The page is green; streams are cut before message_stop.",
                 api=ApiState("stream_cut")),
        Scenario("stream_error", "The page is green; streams carry an overloaded error event.",
                 api=ApiState("stream_error")),
        Scenario("challenge_page", "The status page answers with a 403 HTML bot challenge.",
                 PageState(mode="challenge")),
        Scenario("slow_page", "The status page answers only after a long delay.",
                 PageState(mode="slow")),
        Scenario("malformed_page", "The status page sends truncated JSON.",
                 PageState(mode="malformed")),
        Scenario("page_rate_limited", "The status page answers 429 with Retry-After.",
                 PageState(mode="rate_limited")),
        Scenario("page_http_500", "The status page's origin fails with HTTP 500.",
                 PageState(mode="http_500")),
        Scenario("cloud_incident",
                 "All is well with Claude, but AWS (Bedrock, us-east-1) and Google Cloud "
                 "(Vertex AI, us-east5) each have an open incident in one region.",
                 witnesses=WitnessState(cloud_incident=True)),
        Scenario("crowd_sees_model_down",
                 "The page is green and the API's front door answers, but the crowd sees the "
                 "provider's own endpoints for the models failing.",
                 witnesses=WitnessState(provider_uptime=0.0, provider_status=-5)),
        Scenario("crowd_healthy_probes_fail",
                 "Our API probes fail (overloaded) while the crowd sees the same models "
                 "healthy: the problem is likely on our side.",
                 api=ApiState("overloaded")),
    )
}

# The incident lifecycle in order, for fire drills (`simulate --scenario=incident_lifecycle`
# cycles through these).
INCIDENT_LIFECYCLE = (
    "operational", "incident_investigating", "incident_identified", "incident_monitoring",
    "incident_resolved",
)
