"""The typed configuration: one frozen model per check kind (blackbox_exporter's one module
type per prober), and the upstream, status-page, witness and verdict settings around them.

Each field declares, once, its YAML key, its default and the parser of its value (the field's
``metadata``); ``validation`` turns those declarations into cattrs structure functions, so
the key tables, required keys, unknown keys and defaults all come from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs

from exporter.config.values import (
    HeaderMatch,
    JsonCondition,
    Parser,
    ProxyConfig,
    RRValidator,
    SecretRef,
    TlsConfig,
    parse_authorization,
    parse_basic_auth,
    parse_bool,
    parse_duration,
    parse_enum,
    parse_env_name,
    parse_header_matches,
    parse_headers,
    parse_host,
    parse_host_port,
    parse_int,
    parse_json_conditions,
    parse_model_list,
    parse_name,
    parse_openrouter_models,
    parse_proxy,
    parse_ratio,
    parse_rcodes,
    parse_record_type,
    parse_regex,
    parse_regex_list,
    parse_resolver,
    parse_rr_validator,
    parse_status_codes,
    parse_str,
    parse_str_list,
    parse_tls_config,
    parse_url,
)

KINDS = ("anthropic", "openai", "http", "tcp", "tls", "icmp", "dns")
MODES = {
    "anthropic": ("keyless", "models", "count_tokens", "messages"),
    "openai": ("keyless", "models", "chat"),
}
DEPENDENCY_KINDS = ("gcp_status", "aws_health", "azure_status")
CROWD_KINDS = ("openrouter",)
# Kinds polled in the background from others' feeds rather than probed: their failures read
# "schema" when a parser crashes (a page we cannot read).
POLLED_KINDS = ("statuspage", *DEPENDENCY_KINDS, *CROWD_KINDS)
IP_PROTOCOLS = ("auto", "ip4", "ip6")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def key(parse: Parser, name: str | None = None, *, module: bool = True,
        check: bool = True) -> dict[str, Any]:
    """A field's declaration for the loader: the parser of its value, the YAML key when it is
    not the field's name, and whether a /probe module and a background check may set it."""
    return {"parse": parse, "key": name, "module": module, "check": check}


INTERNAL: dict[str, Any] = {"internal": True}  # set by the loader, never read from YAML


# -- checks -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CheckBase:
    """What every check kind has. ``upstream`` is filled in by the loader; a /probe module
    has ``upstream`` "probe", its module name as ``name``, and ``allowed_targets``."""

    kind: str = attrs.field(metadata=key(parse_str))
    name: str = attrs.field(default="", metadata=key(parse_name, module=False))  # required for checks
    interval: float = attrs.field(default=30.0, metadata=key(parse_duration))
    timeout: float = attrs.field(default=10.0, metadata=key(parse_duration))
    component: str | None = attrs.field(default=None, metadata=key(parse_str, module=False))
    # a run slower than this counts as degraded
    degraded_latency: float | None = attrs.field(default=None,
                                                 metadata=key(parse_duration, module=False))
    allowed_targets: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_str_list, check=False))
    upstream: str = attrs.field(default="", metadata=INTERNAL)

    # The key that names where a check goes, required for a background check.
    TARGET_KEY: ClassVar[str] = "target"

    @property
    def key(self) -> tuple[str, str]:
        return (self.upstream, self.name)

    @property
    def address(self) -> str | None:
        """Where the check goes: its URL or host[:port]; None for a /probe module."""
        return None

    @property
    def has_secret(self) -> bool:
        return False

    # What generic code (the state store, the status document, the verdict) asks of any check;
    # the kinds that have these hold them as fields.
    @property
    def mode(self) -> str:
        """The API mode; "" for the kinds that are not APIs."""
        return ""

    @property
    def witness(self) -> WitnessConfig | None:
        """The feed a witness poll reads; None for every other check."""
        return None

    def __repr__(self) -> str:  # short and secret-free for logs and tracebacks
        return f"{type(self).__name__}({self.upstream}/{self.name}, kind={self.kind})"


@attrs.frozen(kw_only=True, repr=False)
class TargetCheck(CheckBase):
    """A kind that goes to a host or host:port."""

    target: str | None = attrs.field(default=None, metadata=key(parse_host, module=False))
    ip_protocol: str = attrs.field(default="auto", metadata=key(parse_enum(*IP_PROTOCOLS)))

    @property
    def address(self) -> str | None:
        return self.target


@attrs.frozen(kw_only=True, repr=False)
class TcpCheck(TargetCheck):
    target: str | None = attrs.field(default=None, metadata=key(parse_host_port, module=False))
    per_address: bool = attrs.field(default=False, metadata=key(parse_bool))


@attrs.frozen(kw_only=True, repr=False)
class TlsCheck(TargetCheck):
    target: str | None = attrs.field(default=None, metadata=key(parse_host_port, module=False))
    per_address: bool = attrs.field(default=False, metadata=key(parse_bool))
    tls: TlsConfig = attrs.field(factory=TlsConfig, metadata=key(parse_tls_config, "tls_config"))


@attrs.frozen(kw_only=True, repr=False)
class IcmpCheck(TargetCheck):
    packets: int = attrs.field(default=3, metadata=key(parse_int(1, 100)))
    packet_interval: float = attrs.field(default=0.2, metadata=key(parse_duration))
    payload_size: int = attrs.field(default=56, metadata=key(parse_int(0, 1400)))


@attrs.frozen(kw_only=True, repr=False)
class DnsCheck(TargetCheck):
    resolver: str | None = attrs.field(default=None, metadata=key(parse_resolver))  # None: the system's
    record_type: str = attrs.field(default="any", metadata=key(parse_record_type))  # any = A and AAAA
    valid_rcodes: tuple[str, ...] = attrs.field(default=("NOERROR",), metadata=key(parse_rcodes))
    validate_answer_rrs: RRValidator = attrs.field(factory=RRValidator,
                                                   metadata=key(parse_rr_validator))
    validate_authority_rrs: RRValidator = attrs.field(factory=RRValidator,
                                                      metadata=key(parse_rr_validator))
    validate_additional_rrs: RRValidator = attrs.field(factory=RRValidator,
                                                       metadata=key(parse_rr_validator))
    transport_protocol: str = attrs.field(default="udp", metadata=key(parse_enum("udp", "tcp")))
    dns_over_tls: bool = attrs.field(default=False, metadata=key(parse_bool))
    tls: TlsConfig = attrs.field(factory=TlsConfig, metadata=key(parse_tls_config, "tls_config"))
    ip_protocol: str = attrs.field(default="auto", metadata=INTERNAL)  # the resolver decides


@attrs.frozen(kw_only=True, repr=False)
class WebCheck(CheckBase):
    """A kind that speaks HTTP: a URL and the network path and credentials to it
    (docs/configuration.md, "Networks and credentials")."""

    TARGET_KEY: ClassVar[str] = "url"

    url: str | None = attrs.field(default=None, metadata=key(parse_url, module=False))
    headers: Mapping[str, str] = attrs.field(factory=dict, metadata=key(parse_headers))
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig, metadata=key(parse_proxy))
    tls: TlsConfig = attrs.field(factory=TlsConfig, metadata=key(parse_tls_config, "tls_config"))
    basic_auth: SecretRef | None = attrs.field(default=None, metadata=key(parse_basic_auth))
    authorization: SecretRef | None = attrs.field(default=None, metadata=key(parse_authorization))
    api_key_env: str | None = attrs.field(default=None, metadata=key(parse_env_name))
    api_key_file: str | None = attrs.field(default=None, metadata=key(parse_str))

    @property
    def address(self) -> str | None:
        return self.url

    @property
    def has_secret(self) -> bool:
        return bool(self.api_key_env or self.api_key_file)


@attrs.frozen(kw_only=True, repr=False)
class HttpCheck(WebCheck):
    method: str = attrs.field(default="GET", metadata=key(parse_enum(*HTTP_METHODS)))
    body: str | None = attrs.field(default=None, metadata=key(parse_str))
    valid_status_codes: tuple[int, ...] = attrs.field(default=(),  # empty: any 2xx
                                                      metadata=key(parse_status_codes))
    body_regex: str | None = attrs.field(default=None, metadata=key(parse_regex))  # must match
    body_not_regex: str | None = attrs.field(default=None, metadata=key(parse_regex))  # must not
    json_path: str | None = attrs.field(default=None, metadata=key(parse_str))  # must exist
    follow_redirects: bool = attrs.field(default=True, metadata=key(parse_bool))
    fail_if_body_matches_regexp: tuple[str, ...] = attrs.field(default=(),
                                                               metadata=key(parse_regex_list))
    fail_if_body_not_matches_regexp: tuple[str, ...] = attrs.field(default=(),
                                                                   metadata=key(parse_regex_list))
    fail_if_header_matches: tuple[HeaderMatch, ...] = attrs.field(
        default=(), metadata=key(parse_header_matches))
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = attrs.field(
        default=(), metadata=key(parse_header_matches))
    json_conditions: tuple[JsonCondition, ...] = attrs.field(default=(),
                                                             metadata=key(parse_json_conditions))
    api_key_header: str = attrs.field(default="Authorization",  # the header that carries the key
                                      metadata=key(parse_str))
    ip_protocol: str = attrs.field(default="auto", metadata=key(parse_enum(*IP_PROTOCOLS)))


@attrs.frozen(kw_only=True, repr=False)
class ApiCheck(WebCheck):
    """An LLM API probed the way a client calls it (docs/probes.md)."""

    mode: str = attrs.field(default="keyless", metadata=key(parse_str))
    model: str | None = attrs.field(default=None, metadata=key(parse_str))
    max_tokens: int = attrs.field(default=1, metadata=key(parse_int(1, 4096)))
    prompt: str = attrs.field(default="ping", metadata=key(parse_str))
    daily_token_budget: int | None = attrs.field(default=None, metadata=key(parse_int(1, 10**12)))
    # x-api-key | bearer; "" = the kind's own
    auth_scheme: str = attrs.field(default="", metadata=key(parse_enum("x-api-key", "bearer")))


@attrs.frozen(kw_only=True, repr=False)
class AnthropicCheck(ApiCheck):
    url: str | None = attrs.field(default="https://api.anthropic.com",
                                  metadata=key(parse_url, module=False))
    mode: str = attrs.field(default="keyless", metadata=key(parse_enum(*MODES["anthropic"])))
    anthropic_version: str = attrs.field(default="2023-06-01", metadata=key(parse_str))
    # count_tokens/messages: one probe per model, expanded by the loader into one check each
    # ("<name>/<model>") sharing daily_token_budget evenly
    models: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_model_list, module=False))


@attrs.frozen(kw_only=True, repr=False)
class OpenAICheck(ApiCheck):
    url: str | None = attrs.field(default="https://api.openai.com",
                                  metadata=key(parse_url, module=False))
    mode: str = attrs.field(default="keyless", metadata=key(parse_enum(*MODES["openai"])))


CHECK_MODELS: dict[str, type[CheckBase]] = {
    "anthropic": AnthropicCheck,
    "openai": OpenAICheck,
    "http": HttpCheck,
    "tcp": TcpCheck,
    "tls": TlsCheck,
    "icmp": IcmpCheck,
    "dns": DnsCheck,
}


# -- what others say ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StatuspageConfig:
    url: str = attrs.field(metadata=key(parse_url))
    interval: float = attrs.field(default=60.0, metadata=key(parse_duration))
    timeout: float = attrs.field(default=10.0, metadata=key(parse_duration))
    # include filter: ids or names; empty = all
    components: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_str_list))
    exclude_components: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_str_list))
    max_body_bytes: int = attrs.field(default=5 * 1024 * 1024, metadata=key(parse_int(1024, 1024**3)))
    # Cardinality limits (docs/security.md, case 4): what one page may add to /metrics.
    max_components: int = attrs.field(default=1000, metadata=key(parse_int(1, 100_000)))
    # open incidents, and maintenances, each
    max_incidents: int = attrs.field(default=100, metadata=key(parse_int(1, 10_000)))
    # state names are up to 20 characters
    max_label_chars: int = attrs.field(default=256, metadata=key(parse_int(32, 4096)))
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig, metadata=key(parse_proxy))
    tls: TlsConfig = attrs.field(factory=TlsConfig, metadata=key(parse_tls_config, "tls_config"))
    basic_auth: SecretRef | None = attrs.field(default=None, metadata=key(parse_basic_auth))
    authorization: SecretRef | None = attrs.field(default=None, metadata=key(parse_authorization))

    @property
    def summary_url(self) -> str:
        if urlsplit(self.url).path.endswith(".json"):
            return self.url
        return self.url.rstrip("/") + "/api/v2/summary.json"


@attrs.frozen(kw_only=True)
class WitnessConfig:
    """One entry of an upstream's ``dependencies:`` or ``crowd:`` list. One model for the four
    feed kinds; which keys each accepts (and what gcp calls products and locations) is in
    WITNESS_KEYS."""

    name: str = attrs.field(metadata=key(parse_name))
    kind: str = attrs.field(metadata=key(parse_str))  # one of DEPENDENCY_KINDS or CROWD_KINDS
    url: str = attrs.field(metadata=key(parse_url))
    interval: float = attrs.field(default=120.0, metadata=key(parse_duration))
    timeout: float = attrs.field(default=10.0, metadata=key(parse_duration))
    services: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_str_list))  # ids or names
    regions: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_str_list))  # ids or names
    models: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_openrouter_models))
    # crowd: provider names (or endpoint tag prefixes)
    providers: tuple[str, ...] = attrs.field(default=(), metadata=key(parse_str_list))
    # crowd: a 5-minute uptime under this is failing
    down_below: float = attrs.field(default=0.9, metadata=key(parse_ratio))
    max_body_bytes: int = attrs.field(default=16 * 1024 * 1024, metadata=key(parse_int(1024, 1024**3)))
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig, metadata=key(parse_proxy))
    tls: TlsConfig = attrs.field(factory=TlsConfig, metadata=key(parse_tls_config, "tls_config"))
    basic_auth: SecretRef | None = attrs.field(default=None, metadata=key(parse_basic_auth))
    authorization: SecretRef | None = attrs.field(default=None, metadata=key(parse_authorization))

    @property
    def role(self) -> str:
        return "crowd" if self.kind in CROWD_KINDS else "dependency"

    @property
    def check_name(self) -> str:
        """The name of its background poll; the slash keeps it apart from user check names."""
        return f"{'crowd' if self.role == 'crowd' else 'dependencies'}/{self.name}"


# Per witness kind: which fields it accepts, under which key (None: the field's own name).
_FEED_KEYS: dict[str, str | None] = {
    "name": None, "kind": None, "url": None, "interval": None, "timeout": None,
    "max_body_bytes": None, "proxy": None, "tls": "tls_config", "basic_auth": None,
    "authorization": None,
}
WITNESS_KEYS: dict[str, dict[str, str | None]] = {
    "gcp_status": {**_FEED_KEYS, "services": "products", "regions": "locations"},
    "aws_health": {**_FEED_KEYS, "services": None, "regions": None},
    "azure_status": {**_FEED_KEYS, "services": None, "regions": None},
    "openrouter": {**_FEED_KEYS, "models": None, "providers": None, "down_below": None},
}
WITNESS_INTERVALS = {"dependency": 120.0, "crowd": 60.0}


@attrs.frozen(kw_only=True, repr=False)
class PolledCheck(CheckBase):
    """A background poll of what others say: the status page (kind statuspage) or one
    witness feed. Built by Config.all_checks from the upstream's settings, never from YAML."""

    TARGET_KEY: ClassVar[str] = "url"

    url: str = attrs.field(default="", metadata=INTERNAL)
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig, metadata=INTERNAL)
    tls: TlsConfig = attrs.field(factory=TlsConfig, metadata=INTERNAL)
    basic_auth: SecretRef | None = attrs.field(default=None, metadata=INTERNAL)
    authorization: SecretRef | None = attrs.field(default=None, metadata=INTERNAL)
    statuspage: StatuspageConfig | None = attrs.field(default=None, metadata=INTERNAL)
    witness: WitnessConfig | None = attrs.field(default=None, metadata=INTERNAL)

    @property
    def address(self) -> str | None:
        return self.url


# Every check the scheduler runs: one model per kind.
CheckConfig = (AnthropicCheck | OpenAICheck | HttpCheck | TcpCheck | TlsCheck | IcmpCheck
               | DnsCheck | PolledCheck)


# -- upstreams and the whole file ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class VerdictConfig:
    # consecutive failed runs before a check counts as down
    outage_after: int = attrs.field(default=3, metadata=key(parse_int(1, 100)))
    # consecutive good runs before a down check counts as up again
    recover_after: int = attrs.field(default=2, metadata=key(parse_int(1, 100)))
    window: int = attrs.field(default=10, metadata=key(parse_int(1, 1000)))  # runs in the ratio
    # share of failed runs in the window that makes a check "degraded"
    degraded_ratio: float = attrs.field(default=0.3, metadata=key(parse_ratio))


@attrs.frozen
class UpstreamConfig:
    name: str
    statuspage: StatuspageConfig | None
    checks: tuple[CheckConfig, ...]
    verdict: VerdictConfig = VerdictConfig()
    dependencies: tuple[WitnessConfig, ...] = ()
    crowd: tuple[WitnessConfig, ...] = ()


@attrs.frozen
class Config:
    upstreams: tuple[UpstreamConfig, ...] = ()
    control: tuple[CheckConfig, ...] = ()
    modules: Mapping[str, CheckConfig] = attrs.field(factory=dict)
    vantage: str | None = None
    source: str = "<preset>"
    control_verdict: VerdictConfig = VerdictConfig()  # the control checks' debounce

    def all_checks(self) -> list[CheckConfig]:
        """Every background check, the status pages and witness feeds included."""
        out: list[CheckConfig] = []
        for up in self.upstreams:
            if up.statuspage is not None:
                sp = up.statuspage
                out.append(PolledCheck(upstream=up.name, name="statuspage", kind="statuspage",
                                       interval=sp.interval, timeout=sp.timeout, url=sp.url,
                                       proxy=sp.proxy, tls=sp.tls, basic_auth=sp.basic_auth,
                                       authorization=sp.authorization, statuspage=sp))
            out.extend(up.checks)
            out.extend(PolledCheck(upstream=up.name, name=w.check_name, kind=w.kind,
                                   interval=w.interval, timeout=w.timeout, url=w.url, witness=w,
                                   proxy=w.proxy, tls=w.tls, basic_auth=w.basic_auth,
                                   authorization=w.authorization)
                       for w in (*up.dependencies, *up.crowd))
        out.extend(self.control)
        return out

    def upstream(self, name: str) -> UpstreamConfig | None:
        return next((u for u in self.upstreams if u.name == name), None)

