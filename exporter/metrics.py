"""Every metric the exporter serves, defined once: name, type, help text and label names.

Probers and the collector refer to these specs; nothing else spells a metric name.
Label names listed here exclude ``vantage``, which the collector adds to every series
when one is configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram"]

# Latency buckets in seconds: fine below 1 s where API front doors and TLS live,
# coarse up to a minute for streamed generations.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)
# ICMP replies: loopback and LAN round trips are sub-millisecond.
RTT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08,
    0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
)
TTFT_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


CHECK = ("upstream", "check", "kind")
CHECK_NO_KIND = ("upstream", "check")
# API series also carry the model the check probes ("" when its mode sends none), so that a
# dashboard groups per model (the state store fills it from the check's config).
API_MODEL = ("upstream", "check", "model")

# -- status pages -------------------------------------------------------------------------------
STATUSPAGE_POLL_SUCCESS = MetricSpec(
    "statuspage_poll_success", "gauge",
    "1 if the most recent status-page poll fetched and parsed the page.", ("upstream",))
STATUSPAGE_POLLS = MetricSpec(
    "statuspage_polls_total", "counter", "Status-page polls attempted.", ("upstream",))
STATUSPAGE_POLL_FAILURES = MetricSpec(
    "statuspage_poll_failures_total", "counter",
    "Status-page polls that failed, by reason "
    "(timeout, dns, connect, tls, proxy, http2_only, auth, bad_response, http_status, not_json, "
    "schema, too_large).",
    ("upstream", "reason"))
STATUSPAGE_POLL_DURATION = MetricSpec(
    "statuspage_poll_duration_seconds", "gauge",
    "Duration of the most recent status-page poll.", ("upstream",))
STATUSPAGE_LAST_SUCCESS = MetricSpec(
    "statuspage_last_success_timestamp_seconds", "gauge",
    "Unix time of the last successful status-page poll.", ("upstream",))
STATUSPAGE_PAGE_UPDATED = MetricSpec(
    "statuspage_page_updated_timestamp_seconds", "gauge",
    "The page's own updated_at, as Unix time (freshness of the official page).", ("upstream",))
STATUSPAGE_INDICATOR = MetricSpec(
    "statuspage_indicator", "gauge",
    "The page's overall indicator as a state set (one series is 1). It can understate the "
    "components.", ("upstream", "indicator"))
STATUSPAGE_COMPONENT_STATUS = MetricSpec(
    "statuspage_component_status", "gauge",
    "Component status as a state set (one series per status, the current one is 1). "
    "Keyed by component_id; groups are not components.",
    ("upstream", "component_id", "component", "group", "status"))
STATUSPAGE_INCIDENTS_OPEN = MetricSpec(
    "statuspage_incidents_open", "gauge",
    "Unresolved incidents on the page, by impact.", ("upstream", "impact"))
STATUSPAGE_INCIDENT_INFO = MetricSpec(
    "statuspage_incident_info", "gauge",
    "One series per unresolved incident, value 1.",
    ("upstream", "incident_id", "name", "impact", "status", "shortlink"))
STATUSPAGE_DROPPED = MetricSpec(
    "statuspage_dropped_items", "gauge",
    "Items of the last parsed status page left out by its limits, by what: components and "
    "incidents and maintenances beyond max_components and max_incidents, labels cut at "
    "max_label_chars.", ("upstream", "what"))
STATUSPAGE_MAINTENANCE_ACTIVE = MetricSpec(
    "statuspage_maintenance_active", "gauge",
    "1 while a scheduled maintenance is in progress or verifying.", ("upstream",))
STATUSPAGE_MAINTENANCE_NEXT_START = MetricSpec(
    "statuspage_maintenance_next_start_timestamp_seconds", "gauge",
    "Unix time of the next scheduled maintenance start; absent if none.", ("upstream",))

# -- every check kind --------------------------------------------------------------------------
PROBE_SUCCESS = MetricSpec(
    "probe_success", "gauge", "1 if the most recent run of the check succeeded.", CHECK)
PROBE_DURATION = MetricSpec(
    "probe_duration_seconds", "gauge", "Duration of the most recent run of the check.", CHECK)
# /probe answers describe one run, as blackbox_exporter's do: the same two names, these helps.
PROBE_SUCCESS_ONE_RUN_HELP = "1 if the probe succeeded."
PROBE_DURATION_ONE_RUN_HELP = "Duration of the probe in seconds."
PROBE_RUNS = MetricSpec("probe_runs_total", "counter", "Runs of the check.", CHECK)
PROBE_FAILURES = MetricSpec(
    "probe_failures_total", "counter",
    "Failed runs of the check, by reason (see docs/metrics.md for each kind's reasons).",
    (*CHECK, "reason"))
PROBE_LATENCY = MetricSpec(
    "probe_latency_seconds", "histogram", "Duration of every run of the check.", CHECK,
    LATENCY_BUCKETS)
PROBE_LAST_RUN = MetricSpec(
    "probe_last_run_timestamp_seconds", "gauge", "Unix time the most recent run finished.", CHECK)

# -- http, anthropic, openai ---------------------------------------------------------------------
PROBE_HTTP_STATUS_CODE = MetricSpec(
    "probe_http_status_code", "gauge",
    "HTTP status of the most recent run (0 when no response arrived).", CHECK_NO_KIND)
PROBE_HTTP_VERSION = MetricSpec(
    "probe_http_version", "gauge", "HTTP version of the most recent response.", CHECK_NO_KIND)
PROBE_HTTP_SSL = MetricSpec(
    "probe_http_ssl", "gauge", "1 if the final response came over TLS.", CHECK_NO_KIND)
PROBE_HTTP_REDIRECTS = MetricSpec(
    "probe_http_redirects", "gauge", "Redirects followed in the most recent run.",
    CHECK_NO_KIND)
PROBE_HTTP_CONTENT_LENGTH = MetricSpec(
    "probe_http_content_length", "gauge",
    "Content-Length of the most recent response (-1 when it declared none).", CHECK_NO_KIND)
PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH = MetricSpec(
    "probe_http_uncompressed_body_length", "gauge",
    "Body length of the most recent response in bytes, after decompression.", CHECK_NO_KIND)
PROBE_FAILED_DUE_TO_REGEX = MetricSpec(
    "probe_failed_due_to_regex", "gauge",
    "1 if the most recent run failed because a body or header regexp matcher failed.",
    CHECK_NO_KIND)
PROBE_HTTP_DURATION = MetricSpec(
    "probe_http_duration_seconds", "gauge",
    "Phases of the most recent HTTP request (resolve, connect, tls, processing, transfer).",
    (*CHECK_NO_KIND, "phase"))
PROBE_API_ERRORS = MetricSpec(
    "probe_api_errors_total", "counter",
    "Errors the API reported in its own error.type (unknown types as other).",
    (*API_MODEL, "error_type"))
PROBE_API_TTFT = MetricSpec(
    "probe_api_ttft_seconds", "histogram",
    "Time from request to the first text delta of a streamed message.", API_MODEL,
    TTFT_BUCKETS)
PROBE_API_OUTPUT_TOKENS_PER_SECOND = MetricSpec(
    "probe_api_output_tokens_per_second", "gauge",
    "Output speed of the most recent streamed message after its first token.", API_MODEL)
PROBE_API_UPSTREAM_SERVICE_TIME = MetricSpec(
    "probe_api_upstream_service_seconds", "gauge",
    "Server-side time reported by x-envoy-upstream-service-time or openai-processing-ms.",
    CHECK_NO_KIND)
PROBE_API_RATELIMIT_REMAINING = MetricSpec(
    "probe_api_ratelimit_remaining", "gauge",
    "Remaining rate-limit headroom from the most recent response headers.",
    (*CHECK_NO_KIND, "resource"))
PROBE_API_RATELIMIT_LIMIT = MetricSpec(
    "probe_api_ratelimit_limit", "gauge",
    "Rate limit in force from the most recent response headers.", (*CHECK_NO_KIND, "resource"))
PROBE_API_RATELIMIT_RESET = MetricSpec(
    "probe_api_ratelimit_reset_timestamp_seconds", "gauge",
    "Unix time the rate limit is fully replenished.", (*CHECK_NO_KIND, "resource"))
PROBE_API_RETRY_AFTER = MetricSpec(
    "probe_api_retry_after_seconds", "gauge",
    "retry-after of the most recent response; 0 when absent.", CHECK_NO_KIND)
PROBE_API_TOKENS = MetricSpec(
    "probe_api_tokens_total", "counter",
    "Tokens the probes spent, by direction (input, output): the probe bill.",
    (*API_MODEL, "direction"))
PROBE_API_BUDGET_REMAINING = MetricSpec(
    "probe_api_budget_remaining_tokens", "gauge",
    "Tokens left in the check's daily budget; absent when no budget is set.", CHECK_NO_KIND)
PROBE_API_BUDGET_EXHAUSTED = MetricSpec(
    "probe_api_budget_exhausted", "gauge",
    "1 while paid probes are paused because the daily token budget is spent.", CHECK_NO_KIND)

# -- network ----------------------------------------------------------------------------------------
PROBE_DNS_LOOKUP_TIME = MetricSpec(
    "probe_dns_lookup_time_seconds", "gauge", "DNS resolution time of the most recent run.",
    CHECK_NO_KIND)
PROBE_DNS_ANSWERS = MetricSpec(
    "probe_dns_answer_info", "gauge", "One series per address in the most recent answer.",
    (*CHECK_NO_KIND, "address", "family"))
PROBE_DNS_ADDRESS_CHANGES = MetricSpec(
    "probe_dns_address_changes_total", "counter",
    "Times the answer (the addresses, or the records of the asked type) differed from the "
    "previous run.", CHECK_NO_KIND)
PROBE_DNS_DURATION = MetricSpec(
    "probe_dns_duration_seconds", "gauge",
    "Duration of the most recent DNS query by phase (resolve, connect, request).",
    (*CHECK_NO_KIND, "phase"))
PROBE_DNS_QUERY_SUCCEEDED = MetricSpec(
    "probe_dns_query_succeeded", "gauge",
    "1 if the most recent DNS query got a response, whatever its response code.", CHECK_NO_KIND)
PROBE_DNS_ANSWER_RRS = MetricSpec(
    "probe_dns_answer_rrs", "gauge", "Records in the answer section of the most recent response.",
    CHECK_NO_KIND)
PROBE_DNS_AUTHORITY_RRS = MetricSpec(
    "probe_dns_authority_rrs", "gauge",
    "Records in the authority section of the most recent response.", CHECK_NO_KIND)
PROBE_DNS_ADDITIONAL_RRS = MetricSpec(
    "probe_dns_additional_rrs", "gauge",
    "Records in the additional section of the most recent response.", CHECK_NO_KIND)
PROBE_DNS_SERIAL = MetricSpec(
    "probe_dns_serial", "gauge", "Serial number of the zone from the most recent SOA answer.",
    CHECK_NO_KIND)
PROBE_IP_ADDR_HASH = MetricSpec(
    "probe_ip_addr_hash", "gauge",
    "Hash of the resolved address set; a change means the answer changed.", CHECK_NO_KIND)
PROBE_IP_PROTOCOL = MetricSpec(
    "probe_ip_protocol", "gauge", "IP version used by the most recent run (4 or 6).",
    CHECK_NO_KIND)
PROBE_TCP_CONNECT = MetricSpec(
    "probe_tcp_connect_seconds", "gauge", "TCP connect time of the most recent run.",
    CHECK_NO_KIND)
PROBE_TLS_HANDSHAKE = MetricSpec(
    "probe_tls_handshake_seconds", "gauge", "TLS handshake time of the most recent run.",
    CHECK_NO_KIND)
PROBE_TLS_VERSION_INFO = MetricSpec(
    "probe_tls_version_info", "gauge", "TLS version negotiated by the most recent run.",
    (*CHECK_NO_KIND, "version"))
PROBE_SSL_EARLIEST_CERT_EXPIRY = MetricSpec(
    "probe_ssl_earliest_cert_expiry", "gauge",
    "Unix time the earliest-expiring certificate of the presented chain expires.",
    CHECK_NO_KIND)
PROBE_SSL_LAST_CHAIN_EXPIRY = MetricSpec(
    "probe_ssl_last_chain_expiry_timestamp_seconds", "gauge",
    "Unix time the verified certificate chain stops being valid (its earliest expiry).",
    CHECK_NO_KIND)
PROBE_ADDRESS_SUCCESS = MetricSpec(
    "probe_address_success", "gauge",
    "1 if the most recent run reached this resolved address (per_address checks).",
    (*CHECK_NO_KIND, "address"))
PROBE_ICMP_SENT = MetricSpec(
    "probe_icmp_packets_sent_total", "counter", "ICMP echo requests sent.", CHECK_NO_KIND)
PROBE_ICMP_RECEIVED = MetricSpec(
    "probe_icmp_packets_received_total", "counter", "ICMP echo replies received.",
    CHECK_NO_KIND)
PROBE_ICMP_RTT = MetricSpec(
    "probe_icmp_rtt_seconds", "histogram", "Round-trip time of every ICMP echo reply.",
    CHECK_NO_KIND, RTT_BUCKETS)

# -- verdict -----------------------------------------------------------------------------------------
UPSTREAM_VERDICT = MetricSpec(
    "upstream_verdict", "gauge",
    "Combined verdict per upstream as a state set: operational, degraded, outage, maintenance, "
    "own_quota, local_network, unknown.", ("upstream", "verdict"))
UPSTREAM_VERDICT_SINCE = MetricSpec(
    "upstream_verdict_since_timestamp_seconds", "gauge",
    "Unix time the current verdict began.", ("upstream",))
UPSTREAM_OUTAGE_UNACKNOWLEDGED = MetricSpec(
    "upstream_outage_unacknowledged_seconds", "gauge",
    "How long our probes (or the crowd) have seen an outage that the status page does not "
    "show; 0 when none.",
    ("upstream",))

# -- witnesses: the clouds underneath (dependencies) and others' traffic (crowd) ----------------
DEPENDENCY = ("upstream", "dependency")
CROWD = ("upstream", "source")
DEPENDENCY_POLL_SUCCESS = MetricSpec(
    "dependency_poll_success", "gauge",
    "1 if the most recent poll of the dependency's status feed fetched and parsed it.",
    DEPENDENCY)
DEPENDENCY_POLLS = MetricSpec(
    "dependency_polls_total", "counter", "Dependency status-feed polls attempted.", DEPENDENCY)
DEPENDENCY_POLL_FAILURES = MetricSpec(
    "dependency_poll_failures_total", "counter",
    "Dependency status-feed polls that failed, by reason "
    "(timeout, dns, connect, tls, proxy, http2_only, auth, bad_response, http_status, not_json, "
    "schema, too_large).",
    (*DEPENDENCY, "reason"))
DEPENDENCY_INCIDENTS_OPEN = MetricSpec(
    "dependency_incidents_open", "gauge",
    "Open incidents on the dependency's status feed that match its filters, by severity.",
    (*DEPENDENCY, "severity"))
DEPENDENCY_INCIDENT_INFO = MetricSpec(
    "dependency_incident_info", "gauge",
    "One series per open incident that matches the dependency's filters, value 1.",
    (*DEPENDENCY, "incident_id", "name", "service", "region", "severity"))
CROWD_POLL_SUCCESS = MetricSpec(
    "crowd_poll_success", "gauge",
    "1 if the most recent poll of the crowd source fetched and parsed every model.", CROWD)
CROWD_POLLS = MetricSpec("crowd_polls_total", "counter", "Crowd-source polls attempted.", CROWD)
CROWD_POLL_FAILURES = MetricSpec(
    "crowd_poll_failures_total", "counter",
    "Crowd-source polls that failed, by reason "
    "(timeout, dns, connect, tls, proxy, http2_only, auth, bad_response, http_status, not_json, "
    "schema, too_large).", (*CROWD, "reason"))
CROWD_ENDPOINT_UPTIME = MetricSpec(
    "crowd_endpoint_uptime_ratio", "gauge",
    "Share (0-1) of others' requests to the model at this provider endpoint that succeeded, "
    "over the window; absent where the source has no figure.",
    (*CROWD, "model", "provider", "endpoint", "window"))
CROWD_ENDPOINT_STATUS = MetricSpec(
    "crowd_endpoint_status_code", "gauge",
    "The crowd source's own status number for the endpoint (OpenRouter: 0 normal, negative "
    "unhealthy), unread.", (*CROWD, "model", "provider", "endpoint"))
UPSTREAM_WITNESS = MetricSpec(
    "upstream_witness", "gauge",
    "What each witness (statuspage, probes, network, crowd, dependencies, control) says of the "
    "upstream, as a state set: ok, degraded, down, unknown.", ("upstream", "witness", "view"))

# -- the exporter itself -------------------------------------------------------------------------
EXPORTER_BUILD_INFO = MetricSpec(
    "exporter_build_info", "gauge", "Build information, value 1.", ("version", "python"))
EXPORTER_RELOAD_SUCCESS = MetricSpec(
    "exporter_config_last_reload_successful", "gauge",
    "1 if the last configuration reload succeeded (the config file and the web config).")
EXPORTER_RELOAD_SUCCESS_TIMESTAMP = MetricSpec(
    "exporter_config_last_reload_success_timestamp_seconds", "gauge",
    "Unix time of the last successful configuration reload.")
EXPORTER_ICMP_MODE = MetricSpec(
    "exporter_icmp_mode_info", "gauge",
    "ICMP socket mode in use (privileged or unprivileged, or none), value 1.", ("mode",))
EXPORTER_SCHEDULER_LAG = MetricSpec(
    "exporter_scheduler_lag_seconds", "histogram",
    "How late checks start against their schedule: the exporter's own timing error.", (),
    LAG_BUCKETS)
EXPORTER_CHECKS = MetricSpec(
    "exporter_checks", "gauge", "Checks scheduled in the background.")
EXPORTER_ASYNCIO_TASKS = MetricSpec(
    "exporter_asyncio_tasks", "gauge",
    "asyncio tasks alive in the exporter: flat in a healthy exporter, growth is a leak.")
EXPORTER_PROBE_REQUESTS = MetricSpec(
    "exporter_probe_requests_total", "counter",
    "Requests to /probe, by module and outcome (ok, refused, unknown_module, busy).",
    ("module", "outcome"))

EXPORTER_CHECK_CRASHES = MetricSpec(
    "exporter_check_crashes_total", "counter",
    "Runs of a check that failed inside the exporter (a prober, recording or rendering "
    "raised); the check's loop goes on. 0 in a healthy exporter.", CHECK_NO_KIND)

STATE_SETS: dict[str, tuple[str, ...]] = {
    "indicator": ("none", "minor", "major", "critical", "maintenance", "unknown"),
    "component_status": (
        "operational", "degraded_performance", "partial_outage", "major_outage",
        "under_maintenance", "unknown",
    ),
    "verdict": (
        "operational", "degraded", "outage", "maintenance", "own_quota", "local_network",
        "unknown",
    ),
}
DEPENDENCY_SEVERITIES = ("low", "medium", "high", "unknown")
WITNESSES = ("statuspage", "probes", "network", "crowd", "dependencies", "control")
WITNESS_VIEWS = ("ok", "degraded", "down", "unknown")
CROWD_WINDOWS = ("5m", "30m", "1d")
INCIDENT_IMPACTS = ("none", "minor", "major", "critical", "maintenance", "unknown")

# The documented reason set of each kind (docs/metrics.md, "Failure reasons"): every counter with
# a reason label (probe_failures_total, statuspage_poll_failures_total, and the poll counters
# of kinds still to come) is emitted at 0 for each of its kind's reasons from the first scrape,
# so increase() sees the first failure. A new kind declares its set here and gets the same.
POLL_REASONS = ("timeout", "connect", "tls", "http_status", "not_json", "schema", "too_large",
                "local_resources", "dns", "proxy", "http2_only", "auth", "bad_response")
# local_resources: out of file descriptors or buffers, ours rather than the target's.
# proxy and http2_only: the one HTTP client's (exporter/checks/net/httpclient.py).
_TRANSPORT_REASONS = ("dns", "connect", "tls", "timeout", "local_resources", "proxy", "http2_only")
_API_REASONS = (
    *_TRANSPORT_REASONS, "http_5xx", "overloaded", "rate_limited", "spend_limit", "auth",
    "billing", "permission", "not_found", "bad_request", "bad_response", "stream_error",
    "http_status", "budget_exhausted", "backoff",
)
# "internal" (a bug in the exporter) can end a run of every check kind; a polled feed's is
# counted as "schema" (exporter/engine/scheduler.py).
FAILURE_REASONS: dict[str, tuple[str, ...]] = {
    "statuspage": POLL_REASONS,
    "anthropic": (*_API_REASONS, "internal"),
    "openai": (*_API_REASONS, "internal"),
    "http": (*_TRANSPORT_REASONS, "status_mismatch", "body_mismatch", "header_mismatch",
             "bad_response", "auth", "redirect_refused", "internal"),
    "tcp": ("dns", "connect", "timeout", "local_resources", "internal"),
    "tls": ("dns", "connect", "timeout", "tls", "local_resources", "internal"),
    "icmp": ("dns", "timeout", "loss", "unreachable", "permission", "local_resources",
             "internal"),
    "dns": ("dns", "validation", "connect", "tls", "timeout", "local_resources", "internal"),
    # Dependency and crowd feeds, polled like status pages (dependency_poll_failures_total,
    # crowd_poll_failures_total).
    "gcp_status": POLL_REASONS,
    "aws_health": POLL_REASONS,
    "azure_status": POLL_REASONS,
    "openrouter": POLL_REASONS,
}


def reasons_with(kind: str, seen: Iterable[str] = ()) -> list[str]:
    """The reasons to export for ``kind``: its documented set, then any other reason that
    occurred (so an undeclared one is still counted), sorted."""
    return sorted({*FAILURE_REASONS.get(kind, ()), *seen})


def all_specs() -> list[MetricSpec]:
    return [v for v in globals().values() if isinstance(v, MetricSpec)]
