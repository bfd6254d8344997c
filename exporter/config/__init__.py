"""The configuration: YAML with lines (``yamldoc``), the value parsers (``values``), one typed
model per check kind (``models``), structuring by cattrs (``validation``) and the loader that
checks the rules across keys (``loader``). Everything the rest of the exporter uses is here."""

from __future__ import annotations

from exporter.config.errors import ConfigError, ConfigIssue, Path_, dotted
from exporter.config.loader import (
    MIN_PROBE_INTERVAL,
    MIN_STATUSPAGE_INTERVAL,
    PRESET_PATH,
    RESERVED_UPSTREAM,
    build_config,
    load_file,
    load_preset,
    load_text,
    per_model,
    with_vantage,
)
from exporter.config.models import (
    CHECK_MODELS,
    CROWD_KINDS,
    DEPENDENCY_KINDS,
    KINDS,
    MODES,
    POLLED_KINDS,
    WITNESS_INTERVALS,
    AnthropicCheck,
    ApiCheck,
    CheckBase,
    CheckConfig,
    Config,
    DnsCheck,
    HttpCheck,
    IcmpCheck,
    OpenAICheck,
    PolledCheck,
    StatuspageConfig,
    TargetCheck,
    TcpCheck,
    TlsCheck,
    UpstreamConfig,
    VerdictConfig,
    WebCheck,
    WitnessConfig,
)
from exporter.config.values import (
    RCODES,
    RECORD_TYPES,
    TLS_VERSIONS,
    HeaderMatch,
    JsonCondition,
    NestedError,
    ProxyConfig,
    RRValidator,
    SecretRef,
    TlsConfig,
    parse_duration,
    parse_url,
)
from exporter.config.yamldoc import MAX_CONFIG_BYTES, MAX_NODES, Document, parse_yaml

__all__ = [
    "CHECK_MODELS", "CROWD_KINDS", "DEPENDENCY_KINDS", "KINDS", "MAX_CONFIG_BYTES", "MAX_NODES",
    "MIN_PROBE_INTERVAL", "MIN_STATUSPAGE_INTERVAL", "MODES", "POLLED_KINDS", "PRESET_PATH",
    "RCODES", "RECORD_TYPES", "RESERVED_UPSTREAM", "TLS_VERSIONS", "WITNESS_INTERVALS",
    "AnthropicCheck", "ApiCheck", "CheckBase", "CheckConfig", "Config", "ConfigError",
    "ConfigIssue", "DnsCheck", "Document", "HeaderMatch", "HttpCheck", "IcmpCheck",
    "JsonCondition", "NestedError", "OpenAICheck", "Path_", "PolledCheck", "ProxyConfig",
    "RRValidator", "SecretRef", "StatuspageConfig", "TargetCheck", "TcpCheck", "TlsCheck",
    "TlsConfig", "UpstreamConfig", "VerdictConfig", "WebCheck", "WitnessConfig", "build_config",
    "dotted", "load_file", "load_preset", "load_text", "parse_duration", "parse_url", "parse_yaml",
    "per_model", "with_vantage",
]
