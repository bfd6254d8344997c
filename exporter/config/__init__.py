"""Strict YAML configuration: every error names its dotted path and line, all reported at once.

The loader composes the YAML node tree itself so that it knows each value's line and can
reject duplicate keys (PyYAML silently keeps the last one). Values are validated against
one table of keys per check kind; defaults are declared once, on the dataclasses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

Path_ = tuple[str | int, ...]

RESERVED_UPSTREAM = "control"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SECRET_KEYS = {"api_key", "apikey", "key", "token", "bearer_token", "password", "secret"}
SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
KINDS = ("anthropic", "openai", "http", "tcp", "tls", "icmp", "dns")
MODES = {
    "anthropic": ("keyless", "models", "count_tokens", "messages"),
    "openai": ("keyless", "models", "chat"),
}
DEFAULT_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
# Witnesses beyond the status page and our probes (docs/witnesses.md).
DEPENDENCY_KINDS = ("gcp_status", "aws_health", "azure_status")
CROWD_KINDS = ("openrouter",)
# Kinds polled like a status page: their last good answer stays visible through failed polls.
POLLED_KINDS = ("statuspage", *DEPENDENCY_KINDS, *CROWD_KINDS)
OPENROUTER_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ConfigError(Exception):
    """All problems found in one configuration, each with its location."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class ConfigIssue:
    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(frozen=True)
class WitnessConfig:
    """One entry of an upstream's ``dependencies:`` or ``crowd:`` list."""

    name: str
    kind: str  # one of DEPENDENCY_KINDS or CROWD_KINDS
    url: str
    interval: float = 120.0
    timeout: float = 10.0
    services: tuple[str, ...] = ()  # gcp: products; ids or names
    regions: tuple[str, ...] = ()  # gcp: locations; ids or names
    models: tuple[str, ...] = ()  # crowd: author/slug
    providers: tuple[str, ...] = ()  # crowd: provider names (or endpoint tag prefixes)
    down_below: float = 0.9  # crowd: 5m uptime under this is failing
    max_body_bytes: int = 16 * 1024 * 1024
    # the network path and credentials (docs/configuration.md, "Networks and credentials")
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig())
    tls: TlsConfig = field(default_factory=lambda: TlsConfig())
    basic_auth: SecretRef | None = None
    authorization: SecretRef | None = None

    @property
    def role(self) -> str:
        return "crowd" if self.kind in CROWD_KINDS else "dependency"

    @property
    def check_name(self) -> str:
        """The name of its background poll; the slash keeps it apart from user check names."""
        return f"{'crowd' if self.role == 'crowd' else 'dependencies'}/{self.name}"


@dataclass(frozen=True)
class RRValidator:
    """blackbox_exporter's validate_*_rrs: regular expressions over one section's records, each
    record in presentation form ("name TTL IN TYPE data")."""

    fail_if_matches_regexp: tuple[str, ...] = ()  # fail if any record matches any of them
    fail_if_not_matches_regexp: tuple[str, ...] = ()  # fail if any record misses one of them
    fail_if_all_match_regexp: tuple[str, ...] = ()  # fail if every record matches all of them
    fail_if_none_matches_regexp: tuple[str, ...] = ()  # fail if no record matches any of them

    def __bool__(self) -> bool:
        return any((self.fail_if_matches_regexp, self.fail_if_not_matches_regexp,
                    self.fail_if_all_match_regexp, self.fail_if_none_matches_regexp))


@dataclass(frozen=True)
class ProxyConfig:
    """``mode`` environment (HTTPS_PROXY & co.), none, or url (this proxy)."""

    mode: str = "environment"
    url: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class TlsConfig:
    """blackbox_exporter's tls_config keys; versions as TLS10..TLS13."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None


@dataclass(frozen=True)
class SecretRef:
    """A credential: ``name`` is the basic-auth username or the authorization type; the
    secret itself is read at run time from ``env`` or ``file``, never stored here."""

    name: str
    env: str | None = None
    file: str | None = None

    def __repr__(self) -> str:
        return f"SecretRef({self.name!r})"


@dataclass(frozen=True)
class HeaderMatch:
    header: str
    regexp: str
    allow_missing: bool = False


@dataclass(frozen=True)
class JsonCondition:
    path: str
    equals: Any = None
    matches: str | None = None
    has_equals: bool = False


@dataclass(frozen=True)
class CheckConfig:
    """One check (or one /probe module, then with ``allowed_targets`` and no target)."""

    upstream: str
    name: str
    kind: str
    interval: float = 30.0
    timeout: float = 10.0
    component: str | None = None
    degraded_latency: float | None = None  # a run slower than this counts as degraded
    # where
    url: str | None = None
    target: str | None = None
    ip_protocol: str = "auto"  # auto | ip4 | ip6
    per_address: bool = False
    # http-like
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    valid_status_codes: tuple[int, ...] = ()  # empty: any 2xx
    body_regex: str | None = None  # fail unless the body matches
    body_not_regex: str | None = None  # fail if the body matches
    json_path: str | None = None  # dotted path that must exist in a JSON body
    follow_redirects: bool = True
    fail_if_body_matches_regexp: tuple[str, ...] = ()
    fail_if_body_not_matches_regexp: tuple[str, ...] = ()
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    json_conditions: tuple[JsonCondition, ...] = ()
    # the network path and credentials to the target (docs/configuration.md)
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig())
    tls: TlsConfig = field(default_factory=lambda: TlsConfig())
    basic_auth: SecretRef | None = None  # username + password
    authorization: SecretRef | None = None  # type + credentials
    auth_scheme: str = ""  # anthropic/openai: x-api-key | bearer; "" = the kind's default
    # APIs
    mode: str = "keyless"
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_header: str = "Authorization"  # http kind: header that carries the key
    model: str | None = None
    # anthropic count_tokens/messages: one probe per model (expanded into one check each,
    # named "<name>/<model>", sharing the check's daily_token_budget evenly)
    models: tuple[str, ...] = ()
    max_tokens: int = 1
    prompt: str = "ping"
    daily_token_budget: int | None = None
    anthropic_version: str = "2023-06-01"
    # icmp
    packets: int = 3
    packet_interval: float = 0.2
    payload_size: int = 56
    # dns
    resolver: str | None = None  # host or host:port; None: the system's resolver
    record_type: str = "any"  # one of RECORD_TYPES; any = both A and AAAA
    valid_rcodes: tuple[str, ...] = ("NOERROR",)
    validate_answer_rrs: RRValidator = field(default_factory=lambda: RRValidator())
    validate_authority_rrs: RRValidator = field(default_factory=lambda: RRValidator())
    validate_additional_rrs: RRValidator = field(default_factory=lambda: RRValidator())
    transport_protocol: str = "udp"  # udp (TCP when truncated) | tcp
    dns_over_tls: bool = False
    # /probe modules
    allowed_targets: tuple[str, ...] = ()
    # dependencies and crowd polls (kinds in DEPENDENCY_KINDS and CROWD_KINDS)
    witness: WitnessConfig | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.upstream, self.name)

    @property
    def has_secret(self) -> bool:
        return bool(self.api_key_env or self.api_key_file)

    def __repr__(self) -> str:  # short and secret-free for logs and tracebacks
        return f"CheckConfig({self.upstream}/{self.name}, kind={self.kind})"


@dataclass(frozen=True)
class StatuspageConfig:
    url: str
    interval: float = 60.0
    timeout: float = 10.0
    components: tuple[str, ...] = ()  # include filter: ids or names; empty = all
    exclude_components: tuple[str, ...] = ()
    max_body_bytes: int = 5 * 1024 * 1024
    # Cardinality limits (docs/security.md, case 4): what one page may add to /metrics.
    max_components: int = 1000
    max_incidents: int = 100  # open incidents, and maintenances, each
    max_label_chars: int = 256
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig())
    tls: TlsConfig = field(default_factory=lambda: TlsConfig())
    basic_auth: SecretRef | None = None
    authorization: SecretRef | None = None

    @property
    def summary_url(self) -> str:
        if urlsplit(self.url).path.endswith(".json"):
            return self.url
        return self.url.rstrip("/") + "/api/v2/summary.json"


@dataclass(frozen=True)
class VerdictConfig:
    outage_after: int = 3  # consecutive failed runs before a check counts as down
    recover_after: int = 2  # consecutive good runs before a down check counts as up again
    window: int = 10  # runs looked at for the failure ratio
    degraded_ratio: float = 0.3  # share of failed runs in the window that makes a check "degraded"


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    statuspage: StatuspageConfig | None
    checks: tuple[CheckConfig, ...]
    verdict: VerdictConfig = VerdictConfig()
    dependencies: tuple[WitnessConfig, ...] = ()
    crowd: tuple[WitnessConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    upstreams: tuple[UpstreamConfig, ...] = ()
    control: tuple[CheckConfig, ...] = ()
    modules: Mapping[str, CheckConfig] = field(default_factory=dict)
    vantage: str | None = None
    source: str = "<preset>"
    control_verdict: VerdictConfig = VerdictConfig()  # the control checks' debounce

    def all_checks(self) -> list[CheckConfig]:
        """Every background check, status pages included (as kind 'statuspage')."""
        out: list[CheckConfig] = []
        for up in self.upstreams:
            if up.statuspage is not None:
                sp = up.statuspage
                out.append(CheckConfig(upstream=up.name, name="statuspage", kind="statuspage",
                                       interval=sp.interval, timeout=sp.timeout, url=sp.url,
                                       proxy=sp.proxy, tls=sp.tls, basic_auth=sp.basic_auth,
                                       authorization=sp.authorization))
            out.extend(up.checks)
            out.extend(CheckConfig(upstream=up.name, name=w.check_name, kind=w.kind,
                                   interval=w.interval, timeout=w.timeout, url=w.url, witness=w,
                                   proxy=w.proxy, tls=w.tls, basic_auth=w.basic_auth,
                                   authorization=w.authorization)
                       for w in (*up.dependencies, *up.crowd))
        out.extend(self.control)
        return out

    def upstream(self, name: str) -> UpstreamConfig | None:
        return next((u for u in self.upstreams if u.name == name), None)


# -- YAML with lines and duplicate-key detection ---------------------------------------------


class _Doc:
    """A plain Python value tree plus the line of every path in it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.issues: list[ConfigIssue] = []
        self.nodes = 0

    def error(self, path: Path_, message: str) -> None:
        line = None
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line:
                break
        self.issues.append(ConfigIssue(self.source, line, dotted(path), message))


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class _TooLarge(Exception):
    """The document expands past MAX_NODES (an alias bomb, or simply far too big)."""


MAX_NODES = 200_000  # a config with thousands of checks stays far below this
# The largest config file read (docs/security.md, case 8): far above any real config (10,000
# checks take about 1 MiB) and small enough that a reload parses in seconds, not minutes.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# The shortest interval per kind (docs/configuration.md): a typo such as 1ms must not hammer
# a shared public status page or a target. Labs poll a local simulator every second.
MIN_INTERVAL = {"statuspage": 1.0}
MIN_PROBE_INTERVAL = 0.1


def _build(node: yaml.Node, path: Path_, doc: _Doc, constructor: yaml.SafeLoader) -> Any:
    doc.nodes += 1
    if doc.nodes > MAX_NODES:
        raise _TooLarge
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        constructor.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                doc.lines[path] = key_node.start_mark.line + 1
                doc.error(path, "mapping keys must be plain strings")
                continue
            key = str(constructor.construct_scalar(key_node))
            child = (*path, key)
            if key in result:
                doc.lines[child] = key_node.start_mark.line + 1
                doc.error(child, "duplicate key")
                continue
            result[key] = _build(value_node, child, doc, constructor)
            doc.lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, stopping once the document holds more than MAX_NODES nodes as
    written: without it PyYAML composes the whole node graph (a gigabyte and most of a minute
    for 4 MiB of ``[1,1,...]``) before _build could count a single value."""

    composed = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Values only, as _build counts them: a mapping's keys are composed with index None.
        if not (isinstance(parent, yaml.MappingNode) and index is None):
            self.composed += 1
        if self.composed > MAX_NODES:
            raise _TooLarge
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def parse_yaml(text: str, source: str) -> tuple[Any, _Doc]:
    doc = _Doc(source)
    loader = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return {}, doc
        return _build(node, (), doc, loader), doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        doc.issues.append(ConfigIssue(source, line, "", f"invalid YAML: {problem}"))
    except RecursionError:
        doc.issues.append(ConfigIssue(source, None, "", "invalid YAML: nested too deeply"))
    except _TooLarge:
        # Only blame aliases when the document has some (an anchor is how they start).
        why = (" once aliases are expanded" if "&" in text and "*" in text else "")
        doc.issues.append(ConfigIssue(source, None, "", f"too large: more than {MAX_NODES} "
                                                        f"values{why}"))
    finally:
        if loader is not None:
            loader.dispose()
    return None, doc


# -- value parsers: each returns the parsed value or raises ValueError with the message -------

Parser = Callable[[Any], Any]


def parse_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f'must be a duration such as "30s" or "1m30s" (got {_show(value)})')
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if not DURATION_RE.match(text):
            raise ValueError(f'must be a duration such as "30s" or "1m30s" (got {_show(value)})')
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in DURATION_PART_RE.findall(text))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration (got {_show(value)})")
    return seconds


def parse_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a URL string (got {_show(value)})")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {_show(value)})")
    if parts.username or parts.password:
        raise ValueError("inline secrets are not allowed: remove the user:password from the "
                         "URL and use api_key_env or api_key_file")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"has an invalid port (got {_show(value)})") from None
    return value


def parse_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string (got {_show(value)})")
    return value


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', ':' or '-', "
                         f"starting with a letter or digit (got {_show(value)})")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {_show(value)})")
    return value


def parse_int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high} (got {_show(value)})")
        return value
    return parse


def parse_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"must be a number from 0 to 1 (got {_show(value)})")
    return float(value)


def parse_enum(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {_show(value)})")
        return str(value)
    return parse


def parse_str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"must be a list of strings (got {_show(value)})")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(str(v) for v in value)


def parse_status_codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in value
    ):
        raise ValueError(f"must be a list of HTTP status codes 100-599 (got {_show(value)})")
    return tuple(value)


HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def parse_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of header names to values (got {_show(value)})")
    out: dict[str, str] = {}
    for name, header_value in value.items():
        if not isinstance(header_value, (str, int)) or isinstance(header_value, bool):
            raise ValueError(f"header {name} must have a string value")
        if name.lower() in SECRET_HEADERS:
            raise ValueError(f"inline secrets are not allowed: header {name} must come from "
                             "api_key_env or api_key_file (with api_key_header)")
        text = str(header_value)
        if not HEADER_NAME.fullmatch(str(name)):
            raise ValueError(f"header name {str(name)[:64]!r} is not a valid HTTP header name")
        if any(c in text for c in "\r\n\0"):
            # The value is not shown: it may be a secret.
            raise ValueError(f"header {name} has a line break or NUL in its value")
        out[str(name)] = text
    return out


def parse_model_list(value: Any) -> tuple[str, ...]:
    models = parse_str_list(value)
    if not models or len(models) > 20:
        raise ValueError(f"must list 1 to 20 models (got {len(models)})")
    if len(set(models)) != len(models):
        raise ValueError("lists a model twice")
    for model in models:
        if not NAME_RE.match(model):
            raise ValueError(f"must be model ids such as claude-haiku-4-5 (got {_show(model)})")
    return models


def per_model(check: CheckConfig) -> list[CheckConfig]:
    """A check with ``models:`` as one check per model, sharing its daily token budget."""
    if not check.models:
        return [check]
    budget = check.daily_token_budget
    share = None if budget is None else max(1, budget // len(check.models))
    return [replace(check, name=f"{check.name}/{model}", model=model, models=(),
                    daily_token_budget=share) for model in check.models]


def parse_regex(value: Any) -> str:
    text = parse_str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None
    return text


def parse_host_port(value: Any) -> str:
    text = parse_str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'must be "host:port" with a port from 1 to 65535 (got {_show(value)})')
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"has an unbalanced IPv6 bracket (got {_show(value)})")
    return text


def parse_host(value: Any) -> str:
    text = parse_str(value)
    if any(c in text for c in "/ ?#@"):
        raise ValueError(f"must be a host name or IP address (got {_show(value)})")
    return text


class NestedValueError(ValueError):
    """A ValueError about a part of the value: ``sub`` extends the key's dotted path."""

    def __init__(self, sub: Path_, message: str) -> None:
        super().__init__(message)
        self.sub = sub


RECORD_TYPES = ("a", "aaaa", "any", "cname", "mx", "txt", "ns", "soa", "srv", "ptr")
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
          "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE")
RR_VALIDATOR_KEYS = tuple(f.name for f in fields(RRValidator))


def parse_record_type(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in RECORD_TYPES:
        raise ValueError(f"must be one of {', '.join(RECORD_TYPES)} (got {_show(value)})")
    return value.lower()


def parse_rcodes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of DNS response codes (got {_show(value)})")
    out: list[str] = []
    for i, code in enumerate(value):
        if not isinstance(code, str) or code.upper() not in RCODES:
            raise NestedValueError((i,), f"must be one of {', '.join(RCODES)} (got {_show(code)})")
        out.append(code.upper())
    return tuple(out)


def parse_rr_validator(value: Any) -> RRValidator:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping with {', '.join(RR_VALIDATOR_KEYS)} "
                         f"(got {_show(value)})")
    lists: dict[str, tuple[str, ...]] = {}
    for key, patterns in value.items():
        if key not in RR_VALIDATOR_KEYS:
            raise NestedValueError((key,), f"unknown key (allowed: {', '.join(RR_VALIDATOR_KEYS)})")
        if isinstance(patterns, str) or not isinstance(patterns, list):
            raise NestedValueError((key,), f"must be a list of regular expressions "
                                           f"(got {_show(patterns)})")
        for i, pattern in enumerate(patterns):
            try:
                parse_regex(pattern)
            except ValueError as exc:
                raise NestedValueError((key, i), str(exc)) from None
        lists[key] = tuple(patterns)
    return RRValidator(**lists)


def parse_resolver(value: Any) -> str:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (the port defaults by transport)."""
    text = parse_str(value)
    if text.startswith("[") and text.endswith("]"):
        parse_host(text[1:-1])
        return text
    if text.count(":") > 1 and not text.startswith("["):
        raise ValueError(f"an IPv6 address needs brackets: [address] or [address]:port "
                         f"(got {_show(value)})")
    return parse_host_port(text) if ":" in text else parse_host(text)


def parse_env_name(value: Any) -> str:
    text = parse_str(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise ValueError(f"must be an environment variable name (got {_show(value)})")
    return text


class NestedError(ValueError):
    """A problem inside a nested mapping: ``where`` is the path below the key."""

    def __init__(self, where: Path_, message: str) -> None:
        super().__init__(message)
        self.where = where


TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")


def _sub_mapping(value: Any, allowed: tuple[str, ...], what: str,
                 secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of {what} (got {_show(value)})")
    for key in value:
        if secrets and key in secrets:
            raise NestedError((key,), f"inline secrets are not allowed: use {secrets[key]}")
        if key not in allowed:
            raise NestedError((key,), f"unknown key (allowed: {', '.join(allowed)})")
    return value


def _sub(parser: Parser, raw: dict[str, Any], key: str) -> Any:
    try:
        return parser(raw[key])
    except NestedError as exc:
        raise NestedError((key, *exc.where), str(exc)) from None
    except ValueError as exc:
        raise NestedError((key,), str(exc)) from None


def _one_secret(raw: dict[str, Any], base: str) -> tuple[str | None, str | None]:
    """``<base>_env`` or ``<base>_file``: exactly one."""
    env_key, file_key = f"{base}_env", f"{base}_file"
    if (env_key in raw) == (file_key in raw):
        raise ValueError(f"needs exactly one of {env_key} or {file_key}")
    if env_key in raw:
        return _sub(parse_env_name, raw, env_key), None
    return None, _sub(parse_str, raw, file_key)


def parse_proxy(value: Any) -> ProxyConfig:
    if value in ("environment", "none"):
        return ProxyConfig(mode=str(value))
    if not isinstance(value, dict):
        raise ValueError('must be "environment", "none" or a mapping with url '
                         f"(got {_show(value)})")
    raw = _sub_mapping(value, ("url", "username", "password_env", "password_file"), "proxy "
                       "settings", {"password": "password_env or password_file"})
    if "url" not in raw:
        raise ValueError("missing required key url")
    if isinstance(raw["url"], str) and "@" in urlsplit(raw["url"]).netloc:
        raise NestedError(("url",), "inline secrets are not allowed: remove the user:password "
                                    "from the URL and use username with password_env or "
                                    "password_file")
    url = _sub(parse_url, raw, "url")
    username = _sub(parse_str, raw, "username") if "username" in raw else None
    env = file = None
    if "password_env" in raw or "password_file" in raw:
        env, file = _one_secret(raw, "password")
        if username is None:
            raise ValueError("a proxy password needs a username")
    return ProxyConfig(mode="url", url=url, username=username, password_env=env,
                       password_file=file)


def parse_tls_config(value: Any) -> TlsConfig:
    raw = _sub_mapping(value, ("ca_file", "cert_file", "key_file", "server_name",
                               "insecure_skip_verify", "min_version", "max_version"),
                       "TLS settings")
    out: dict[str, Any] = {}
    for key in ("ca_file", "cert_file", "key_file", "server_name"):
        if key in raw:
            out[key] = _sub(parse_str, raw, key)
    if "insecure_skip_verify" in raw:
        out["insecure_skip_verify"] = _sub(parse_bool, raw, "insecure_skip_verify")
    for key in ("min_version", "max_version"):
        if key in raw:
            out[key] = _sub(parse_enum(*TLS_VERSIONS), raw, key)
    if ("cert_file" in out) != ("key_file" in out):
        raise ValueError("cert_file and key_file go together (a client certificate and its key)")
    low, high = out.get("min_version"), out.get("max_version")
    if low and high and TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high):
        raise NestedError(("min_version",), f"must not be above max_version ({low} > {high})")
    return TlsConfig(**out)


def parse_basic_auth(value: Any) -> SecretRef:
    raw = _sub_mapping(value, ("username", "password_env", "password_file"), "basic auth "
                       "settings", {"password": "password_env or password_file"})
    if "username" not in raw:
        raise ValueError("missing required key username")
    username = _sub(parse_str, raw, "username")
    if ":" in username:
        raise NestedError(("username",), "must not contain ':' (RFC 7617)")
    env, file = _one_secret(raw, "password")
    return SecretRef(username, env, file)


def parse_authorization(value: Any) -> SecretRef:
    raw = _sub_mapping(value, ("type", "credentials_env", "credentials_file"), "authorization "
                       "settings", {"credentials": "credentials_env or credentials_file"})
    kind = _sub(parse_str, raw, "type") if "type" in raw else "Bearer"
    if not HEADER_NAME.fullmatch(kind):
        raise NestedError(("type",), f"must be one word such as Bearer (got {_show(kind)})")
    env, file = _one_secret(raw, "credentials")
    return SecretRef(kind, env, file)


def parse_regex_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of regular expressions (got {_show(value)})")
    return tuple(_sub(parse_regex, dict(enumerate(value)), i) for i in range(len(value)))  # type: ignore[arg-type]


def parse_header_matches(value: Any) -> tuple[HeaderMatch, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {{header, regexp}} (got {_show(value)})")
    out = []
    for i, item in enumerate(value):
        try:
            raw = _sub_mapping(item, ("header", "regexp", "allow_missing"), "header, regexp "
                               "and allow_missing")
            if "header" not in raw or "regexp" not in raw:
                raise ValueError("needs header and regexp")
            out.append(HeaderMatch(_sub(parse_str, raw, "header"), _sub(parse_regex, raw, "regexp"),
                                   _sub(parse_bool, raw, "allow_missing")
                                   if "allow_missing" in raw else False))
        except NestedError as exc:
            raise NestedError((i, *exc.where), str(exc)) from None
        except ValueError as exc:
            raise NestedError((i,), str(exc)) from None
    return tuple(out)


def parse_json_conditions(value: Any) -> tuple[JsonCondition, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {{path, equals | matches}} (got {_show(value)})")
    out = []
    for i, item in enumerate(value):
        try:
            raw = _sub_mapping(item, ("path", "equals", "matches"), "path and equals or matches")
            if "path" not in raw:
                raise ValueError("missing required key path")
            if ("equals" in raw) and ("matches" in raw):
                raise ValueError("set equals or matches, not both")
            equals = raw.get("equals")
            if isinstance(equals, (dict, list)):
                raise NestedError(("equals",), "must be a string, number, boolean or null")
            out.append(JsonCondition(_sub(parse_str, raw, "path"), equals,
                                     _sub(parse_regex, raw, "matches") if "matches" in raw else None,
                                     "equals" in raw))
        except NestedError as exc:
            raise NestedError((i, *exc.where), str(exc)) from None
        except ValueError as exc:
            raise NestedError((i,), str(exc)) from None
    return tuple(out)


def moved(new_place: str) -> Parser:
    """A key that has a new home: a clear error instead of a silent ignore."""
    def parse(_value: Any) -> Any:
        raise ValueError(f"has moved: use {new_place} (see docs/configuration.md)")
    return parse


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


COMMON_KEYS: dict[str, Parser] = {
    "name": parse_name,
    "kind": parse_enum(*KINDS),
    "interval": parse_duration,
    "timeout": parse_duration,
    "component": parse_str,
    "degraded_latency": parse_duration,
}
# Keys every kind that speaks HTTP accepts (docs/configuration.md, "Networks and credentials").
NETWORK_KEYS: dict[str, Parser] = {
    "proxy": parse_proxy,
    "tls_config": parse_tls_config,
    "basic_auth": parse_basic_auth,
    "authorization": parse_authorization,
}
MOVED_TLS_KEYS: dict[str, Parser] = {
    "ca_file": moved("tls_config.ca_file"),
    "insecure_skip_verify": moved("tls_config.insecure_skip_verify"),
    "server_name": moved("tls_config.server_name"),
}
_API_KEYS: dict[str, Parser] = {
    "url": parse_url,
    "api_key_env": parse_env_name,
    "api_key_file": parse_str,
    "model": parse_str,
    "max_tokens": parse_int(1, 4096),
    "prompt": parse_str,
    "daily_token_budget": parse_int(1, 10**12),
    "headers": parse_headers,
    "auth_scheme": parse_enum("x-api-key", "bearer"),
    **NETWORK_KEYS,
    **MOVED_TLS_KEYS,
}
KIND_KEYS: dict[str, dict[str, Parser]] = {
    "anthropic": {
        **_API_KEYS, "mode": parse_enum(*MODES["anthropic"]), "anthropic_version": parse_str,
        "models": parse_model_list,
    },
    "openai": {**_API_KEYS, "mode": parse_enum(*MODES["openai"])},
    "http": {
        "url": parse_url,
        "method": parse_enum("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"),
        "headers": parse_headers,
        "body": parse_str,
        "valid_status_codes": parse_status_codes,
        "body_regex": parse_regex,
        "body_not_regex": parse_regex,
        "json_path": parse_str,
        "follow_redirects": parse_bool,
        "fail_if_body_matches_regexp": parse_regex_list,
        "fail_if_body_not_matches_regexp": parse_regex_list,
        "fail_if_header_matches": parse_header_matches,
        "fail_if_header_not_matches": parse_header_matches,
        "json_conditions": parse_json_conditions,
        **NETWORK_KEYS,
        **MOVED_TLS_KEYS,
        "api_key_env": parse_env_name,
        "api_key_file": parse_str,
        "api_key_header": parse_str,
        "ip_protocol": parse_enum("auto", "ip4", "ip6"),
    },
    "tcp": {
        "target": parse_host_port, "ip_protocol": parse_enum("auto", "ip4", "ip6"),
        "per_address": parse_bool,
    },
    "tls": {
        "target": parse_host_port, "tls_config": parse_tls_config, **MOVED_TLS_KEYS,
        "ip_protocol": parse_enum("auto", "ip4", "ip6"),
        "per_address": parse_bool,
    },
    "icmp": {
        "target": parse_host, "packets": parse_int(1, 100), "packet_interval": parse_duration,
        "payload_size": parse_int(0, 1400), "ip_protocol": parse_enum("auto", "ip4", "ip6"),
    },
    "dns": {
        "target": parse_host, "resolver": parse_resolver, "record_type": parse_record_type,
        "valid_rcodes": parse_rcodes, "validate_answer_rrs": parse_rr_validator,
        "validate_authority_rrs": parse_rr_validator,
        "validate_additional_rrs": parse_rr_validator,
        "transport_protocol": parse_enum("udp", "tcp"), "dns_over_tls": parse_bool,
        "tls_config": parse_tls_config, **MOVED_TLS_KEYS,
    },
}
# The address key each kind needs (url kinds may default it).
TARGET_KEY = {"anthropic": "url", "openai": "url", "http": "url", "tcp": "target",
              "tls": "target", "icmp": "target", "dns": "target"}


class _Validator:
    def __init__(self, doc: _Doc) -> None:
        self.doc = doc

    def mapping(self, value: Any, path: Path_, allowed: set[str] | dict[str, Any]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.doc.error(path, f"must be a mapping (got {_show(value)})")
            return {}
        out = {}
        for key, item in value.items():
            if key.lower() in SECRET_KEYS and key not in allowed:
                self.doc.error((*path, key), "inline secrets are not allowed: use api_key_env "
                                             "(an environment variable) or api_key_file")
            elif key not in allowed:
                self.doc.error((*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
            else:
                out[key] = item
        return out

    def field(self, raw: dict[str, Any], key: str, path: Path_, parser: Parser) -> Any:
        try:
            return parser(raw[key])
        except NestedValueError as exc:
            self.doc.error((*path, key, *exc.sub), str(exc))
        except NestedError as exc:
            self.doc.error((*path, key, *exc.where), str(exc))
            return None
        except ValueError as exc:
            self.doc.error((*path, key), str(exc))
            return None

    def check(self, raw_value: Any, path: Path_, upstream: str, defaults: dict[str, Any],
              module: bool = False) -> CheckConfig | None:
        if not isinstance(raw_value, dict):
            self.doc.error(path, f"must be a mapping with at least name and kind (got {_show(raw_value)})")
            return None
        kind = raw_value.get("kind")
        if kind is None:
            self.doc.error(path, "missing required key kind")
            return None
        if kind not in KINDS:
            self.doc.error((*path, "kind"), f"must be one of {', '.join(KINDS)} (got {_show(kind)})")
            return None
        allowed = {**COMMON_KEYS, **KIND_KEYS[kind]}
        if module:
            allowed.pop("name")
            allowed.pop("component")
            allowed.pop("degraded_latency")
            allowed.pop(TARGET_KEY[kind], None)
            allowed.pop("models", None)  # one /probe answer is one run of one model
            allowed["allowed_targets"] = parse_str_list
        raw = self.mapping(raw_value, path, allowed)
        before = len(self.doc.issues)
        values: dict[str, Any] = {}
        for key in raw:
            parsed = self.field(raw, key, path, allowed[key])
            if parsed is not None:
                values[key] = parsed
        if not module and "name" not in raw:
            self.doc.error(path, "missing required key name")
        if "tls_config" in values:
            values["tls"] = values.pop("tls_config")
        for key, field_name in (("proxy", "proxy"), ("tls_config", "tls")):
            if key in allowed and key in defaults and key not in raw:
                values[field_name] = defaults[key]
        values.setdefault("interval", defaults["interval"])
        # An unset timeout never exceeds the check's own interval.
        values.setdefault("timeout", min(defaults["timeout"], values["interval"]))
        target_key = TARGET_KEY[kind]
        if not module and target_key not in raw:
            if kind in DEFAULT_URLS:
                values["url"] = DEFAULT_URLS[kind]
            else:
                self.doc.error(path, f"missing required key {target_key} for kind {kind}")
        if len(self.doc.issues) > before:
            return None
        if values["interval"] < MIN_PROBE_INTERVAL and not module:
            self.doc.error((*path, "interval"), f"must be at least {MIN_PROBE_INTERVAL:g}s for "
                           f"kind {kind} (got {values['interval']:g}s)")
        if values["timeout"] > values["interval"] and not module:
            self.doc.error((*path, "timeout"), "must not exceed the interval "
                           f"({values['timeout']:g}s > {values['interval']:g}s)")
        has_key = "api_key_env" in values or "api_key_file" in values
        key_in_authorization = has_key and (
            (kind == "http" and str(values.get("api_key_header", "Authorization")).lower() == "authorization")
            or (kind in MODES and values.get("auth_scheme", "bearer" if kind == "openai" else "x-api-key")
                == "bearer"))
        if key_in_authorization and ("basic_auth" in values or "authorization" in values):
            self.doc.error(path, "the API key already goes in the Authorization header; basic_auth "
                                 "or authorization would replace it (use api_key_header or "
                                 "auth_scheme: x-api-key)")
        if "basic_auth" in values and "authorization" in values:
            self.doc.error(path, "set basic_auth or authorization, not both (each is an "
                                 "Authorization header)")
        if "api_key_env" in values and "api_key_file" in values:
            self.doc.error(path, "set api_key_env or api_key_file, not both")
        mode = values.get("mode", "keyless")
        if kind in MODES and mode != "keyless" and not ("api_key_env" in values or "api_key_file" in values):
            self.doc.error((*path, "mode"), f"mode {mode} needs api_key_env or api_key_file")
        if mode in ("count_tokens", "messages", "chat") and not (
                "model" in values or "models" in values):
            self.doc.error((*path, "mode"), f"mode {mode} needs a model")
        if "models" in values and "model" in values:
            self.doc.error((*path, "models"), "set model or models, not both")
        if "models" in values and mode not in ("count_tokens", "messages"):
            self.doc.error((*path, "models"), "models (one probe per model) is for modes "
                                              "count_tokens and messages")
        if kind == "dns":
            self._dns_rules(values, path, own_tls="tls_config" in raw)
        if kind in MODES and mode == "keyless" and ("api_key_env" in values or "api_key_file" in values):
            self.doc.error((*path, "mode"), "keyless mode sends no key: remove api_key_env/api_key_file "
                                            "or pick another mode")
        if module:
            targets = values.get("allowed_targets")
            if not targets:
                self.doc.error(path, "missing required key allowed_targets (a /probe module "
                                     "must say which targets it may reach)")
            elif "api_key_env" in values or "api_key_file" in values:
                for i, pattern in enumerate(targets):
                    if "*" in _pattern_host(pattern) or "?" in _pattern_host(pattern):
                        self.doc.error((*path, "allowed_targets", i),
                                       "a module that carries an API key may only name exact "
                                       "hosts, no wildcards")
        if len(self.doc.issues) > before:
            return None
        name = values.pop("name", None) or path[-1]
        values.pop("kind", None)
        return CheckConfig(upstream=upstream, name=str(name), kind=kind, **values)

    def _dns_rules(self, values: dict[str, Any], path: Path_, own_tls: bool = False) -> None:
        if values.get("dns_over_tls"):
            if values.get("transport_protocol") == "udp":
                self.doc.error((*path, "transport_protocol"),
                               "DNS over TLS runs over TCP: set tcp or leave it out")
            if "resolver" not in values:
                self.doc.error((*path, "dns_over_tls"),
                               "needs a resolver: the server to reach over TLS")
            values["transport_protocol"] = "tcp"
        else:
            if own_tls:  # a tls_config from defaults: is not an error here
                self.doc.error((*path, "tls_config"), "only applies with dns_over_tls: true")


def _pattern_host(pattern: str) -> str:
    rest = pattern.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def build_config(data: Any, doc: _Doc) -> Config | None:
    v = _Validator(doc)
    top = v.mapping(data, (), {"vantage", "defaults", "upstreams", "control", "modules"})
    vantage = None
    if "vantage" in top:
        vantage = v.field(top, "vantage", (), parse_name)
    defaults: dict[str, Any] = {"interval": 30.0, "timeout": 10.0}
    default_parsers: dict[str, Parser] = {"interval": parse_duration, "timeout": parse_duration,
                                          "proxy": parse_proxy, "tls_config": parse_tls_config}
    raw_defaults = v.mapping(top.get("defaults"), ("defaults",), default_parsers)
    for key in raw_defaults:
        parsed = v.field(raw_defaults, key, ("defaults",), default_parsers[key])
        if parsed is not None:
            defaults[key] = parsed

    upstreams: list[UpstreamConfig] = []
    raw_upstreams = top.get("upstreams", {})
    if not isinstance(raw_upstreams, dict):
        doc.error(("upstreams",), "must be a mapping of upstream names to their settings")
        raw_upstreams = {}
    for up_name, up_raw in raw_upstreams.items():
        path: Path_ = ("upstreams", up_name)
        if up_name == RESERVED_UPSTREAM:
            doc.error(path, f'"{RESERVED_UPSTREAM}" is reserved for the control checks; '
                            "choose another upstream name")
            continue
        try:
            parse_name(up_name)
        except ValueError as exc:
            doc.error(path, f"upstream name {exc}")
            continue
        up = v.mapping(up_raw, path, {"statuspage", "checks", "verdict", "dependencies",
                                      "crowd"})
        statuspage = _statuspage(v, up, path, defaults)
        checks = _check_list(v, up.get("checks", []), (*path, "checks"), up_name, defaults)
        verdict = _verdict(v, up.get("verdict"), (*path, "verdict"))
        if statuspage is None and not checks and "statuspage" not in up and "checks" not in up:
            doc.error(path, "needs a statuspage, checks, or both")
        dependencies = _witness_list(v, up.get("dependencies"), (*path, "dependencies"),
                                     DEPENDENCY_KINDS, defaults)
        crowd = _witness_list(v, up.get("crowd"), (*path, "crowd"), CROWD_KINDS, defaults)
        upstreams.append(UpstreamConfig(up_name, statuspage, tuple(checks), verdict,
                                        tuple(dependencies), tuple(crowd)))

    control = _check_list(v, top.get("control", []), ("control",), RESERVED_UPSTREAM, defaults)
    modules: dict[str, CheckConfig] = {}
    raw_modules = top.get("modules", {})
    if not isinstance(raw_modules, dict):
        doc.error(("modules",), "must be a mapping of module names to their settings")
        raw_modules = {}
    for mod_name, mod_raw in raw_modules.items():
        try:
            parse_name(mod_name)
        except ValueError as exc:
            doc.error(("modules", mod_name), f"module name {exc}")
            continue
        mod = v.check(mod_raw, ("modules", mod_name), "probe", defaults, module=True)
        if mod is not None:
            modules[mod_name] = replace(mod, name=mod_name)
    if doc.issues:
        return None
    return Config(tuple(upstreams), tuple(control), modules, vantage, doc.source)


def _statuspage(v: _Validator, up: dict[str, Any], path: Path_,
                defaults: dict[str, Any]) -> StatuspageConfig | None:
    if "statuspage" not in up:
        return None
    sp_path = (*path, "statuspage")
    parsers: dict[str, Parser] = {
        "url": parse_url, "interval": parse_duration, "timeout": parse_duration,
        "components": parse_str_list, "exclude_components": parse_str_list,
        "max_body_bytes": parse_int(1024, 1024**3),
        "max_components": parse_int(1, 100_000), "max_incidents": parse_int(1, 10_000),
        "max_label_chars": parse_int(32, 4096),  # state names are up to 20
        **NETWORK_KEYS, **MOVED_TLS_KEYS,
    }
    raw = v.mapping(up["statuspage"], sp_path, parsers)
    before = len(v.doc.issues)
    values = {k: v.field(raw, k, sp_path, parsers[k]) for k in raw}
    if "tls_config" in values:
        values["tls"] = values.pop("tls_config")
    for key, field_name in (("proxy", "proxy"), ("tls_config", "tls")):
        if key in defaults and key not in raw:
            values[field_name] = defaults[key]
    if "url" not in raw:
        v.doc.error(sp_path, "missing required key url")
    if len(v.doc.issues) > before:
        return None
    values.setdefault("timeout", min(defaults["timeout"], values.get("interval", 60.0)))
    sp = StatuspageConfig(**values)
    if sp.interval < MIN_INTERVAL["statuspage"]:
        v.doc.error((*sp_path, "interval"), f"must be at least {MIN_INTERVAL['statuspage']:g}s "
                    f"for a status page (got {sp.interval:g}s)")
        return None
    if sp.timeout > sp.interval:
        v.doc.error((*sp_path, "timeout"), f"must not exceed the interval ({sp.timeout:g}s > {sp.interval:g}s)")
        return None
    return sp


def parse_openrouter_models(value: Any) -> tuple[str, ...]:
    models = parse_str_list(value)
    if not models:
        raise ValueError("must name at least one model")
    if len(models) > 50:
        raise ValueError(f"at most 50 models (got {len(models)})")
    for model in models:
        if not OPENROUTER_MODEL_RE.match(model):
            raise ValueError(f'must be OpenRouter model ids such as "anthropic/claude-sonnet-4.6" '
                             f"(got {_show(model)})")
    return models


# Keys of each witness kind, mapped to the WitnessConfig field they fill.
_WITNESS_COMMON: dict[str, tuple[str, Parser]] = {
    "name": ("name", parse_name), "kind": ("kind", parse_str), "url": ("url", parse_url),
    "interval": ("interval", parse_duration), "timeout": ("timeout", parse_duration),
    "max_body_bytes": ("max_body_bytes", parse_int(1024, 1024**3)),
    "proxy": ("proxy", parse_proxy), "tls_config": ("tls", parse_tls_config),
    "basic_auth": ("basic_auth", parse_basic_auth),
    "authorization": ("authorization", parse_authorization),
}
WITNESS_KEYS: dict[str, dict[str, tuple[str, Parser]]] = {
    "gcp_status": {**_WITNESS_COMMON, "products": ("services", parse_str_list),
                   "locations": ("regions", parse_str_list)},
    "aws_health": {**_WITNESS_COMMON, "services": ("services", parse_str_list),
                   "regions": ("regions", parse_str_list)},
    "azure_status": {**_WITNESS_COMMON, "services": ("services", parse_str_list),
                     "regions": ("regions", parse_str_list)},
    "openrouter": {**_WITNESS_COMMON, "models": ("models", parse_openrouter_models),
                   "providers": ("providers", parse_str_list),
                   "down_below": ("down_below", parse_ratio)},
}
WITNESS_INTERVALS = {"dependency": 120.0, "crowd": 60.0}


def _witness_list(v: _Validator, raw: Any, path: Path_, kinds: tuple[str, ...],
                  defaults: dict[str, Any]) -> list[WitnessConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        v.doc.error(path, f"must be a list of {{name, kind, url, ...}} entries (got {_show(raw)})")
        return []
    out: list[WitnessConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        item_path = (*path, i)
        if not isinstance(item, dict):
            v.doc.error(item_path, f"must be a mapping with name, kind and url (got {_show(item)})")
            continue
        kind = item.get("kind")
        if kind not in kinds:
            v.doc.error((*item_path, "kind") if "kind" in item else item_path,
                        f"must be one of {', '.join(kinds)} (got {_show(kind)})"
                        if "kind" in item else "missing required key kind")
            continue
        keys = WITNESS_KEYS[kind]
        before = len(v.doc.issues)
        values: dict[str, Any] = {}
        fields_raw = v.mapping(item, item_path, keys)
        for key in fields_raw:
            parsed = v.field(fields_raw, key, item_path, keys[key][1])
            if parsed is not None:
                values[keys[key][0]] = parsed
        for required in ("name", "url", *(("models",) if kind in CROWD_KINDS else ())):
            if required not in item:
                v.doc.error(item_path, f"missing required key {required}")
        name = values.get("name")
        if isinstance(name, str):
            if name in seen:
                v.doc.error((*item_path, "name"), f'duplicate name "{name}" '
                                                  f"(also at {dotted((*path, seen[name]))})")
            seen[name] = i
        if len(v.doc.issues) > before:
            continue
        role = "crowd" if kind in CROWD_KINDS else "dependency"
        for key, field_name in (("proxy", "proxy"), ("tls_config", "tls")):
            if key in defaults and key not in item:
                values[field_name] = defaults[key]
        if "basic_auth" in values and "authorization" in values:
            v.doc.error(item_path, "set basic_auth or authorization, not both (each is an "
                                   "Authorization header)")
            continue
        values.setdefault("interval", WITNESS_INTERVALS[role])
        values.setdefault("timeout", min(defaults["timeout"], values["interval"]))
        if values["timeout"] > values["interval"]:
            v.doc.error((*item_path, "timeout"), "must not exceed the interval "
                        f"({values['timeout']:g}s > {values['interval']:g}s)")
            continue
        out.append(WitnessConfig(**values))
    return out


def _verdict(v: _Validator, raw_value: Any, path: Path_) -> VerdictConfig:
    raw = v.mapping(raw_value, path, {"outage_after", "recover_after", "window", "degraded_ratio"})
    parsers: dict[str, Parser] = {
        "outage_after": parse_int(1, 100), "recover_after": parse_int(1, 100),
        "window": parse_int(1, 1000), "degraded_ratio": parse_ratio,
    }
    values = {k: v.field(raw, k, path, parsers[k]) for k in raw}
    values = {k: x for k, x in values.items() if x is not None}
    verdict = VerdictConfig(**values)
    if verdict.outage_after > verdict.window:
        v.doc.error((*path, "outage_after"), f"must not exceed window ({verdict.window})")
    return verdict


def _check_list(v: _Validator, raw: Any, path: Path_, upstream: str,
                defaults: dict[str, Any]) -> list[CheckConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        v.doc.error(path, f"must be a list of checks (got {_show(raw)})")
        return []
    checks: list[CheckConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        check = v.check(item, (*path, i), upstream, defaults)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                v.doc.error((*path, i, "name"), f'duplicate check name "{name}" '
                                                f"(also at {dotted((*path, seen[name]))})")
                continue
            if name == "statuspage" and upstream != RESERVED_UPSTREAM:
                v.doc.error((*path, i, "name"), '"statuspage" is reserved for the status-page poll')
                continue
            seen[name] = i
        if check is not None:
            checks.extend(per_model(check))
    return checks


def load_text(text: str, source: str) -> Config:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigIssue(source, None, "", f"too large: more than the limit of "
                                       f"{MAX_CONFIG_BYTES} characters")])
    data, doc = parse_yaml(text, source)
    if data is None and doc.issues:  # a syntax error leaves nothing to validate
        raise ConfigError(doc.issues)
    config = build_config(data, doc)
    if config is None:
        raise ConfigError(doc.issues)
    return config


def load_file(path: str | Path) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError([ConfigIssue(str(p), None, "", f"too large: the file exceeds the "
                                           f"limit of {MAX_CONFIG_BYTES} bytes "
                                           f"({MAX_CONFIG_BYTES // (1024 * 1024)} MiB)")])
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(p), None, "", f"cannot read: {exc.__class__.__name__}: "
                                                          f"{getattr(exc, 'strerror', None) or exc}")]) from None
    return load_text(text, str(p))


PRESET_PATH = Path(__file__).parent / "presets" / "claude.yml"


def load_preset() -> Config:
    return load_text(PRESET_PATH.read_text(encoding="utf-8"), "<claude preset>")


def with_vantage(config: Config, vantage: str | None) -> Config:
    return replace(config, vantage=vantage) if vantage else config


def field_names() -> list[str]:
    return [f.name for f in fields(CheckConfig)]
