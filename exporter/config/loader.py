"""Strict YAML configuration: every error names its dotted path and line, all reported at once.

The document is read with lines (``yamldoc``), each mapping is structured into its typed model
by cattrs (``validation``), and the rules that span several keys are checked here. A file
with any problem yields a ConfigError listing them all, never a partial config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from exporter.config.errors import ConfigError, ConfigIssue, Path_, dotted
from exporter.config.models import (
    CHECK_MODELS,
    CROWD_KINDS,
    DEPENDENCY_KINDS,
    KINDS,
    WITNESS_INTERVALS,
    WITNESS_KEYS,
    AnthropicCheck,
    ApiCheck,
    CheckBase,
    CheckConfig,
    Config,
    DnsCheck,
    HttpCheck,
    StatuspageConfig,
    UpstreamConfig,
    VerdictConfig,
    WitnessConfig,
)
from exporter.config.validation import ANY, CHECK, INLINE_SECRET, MODULE, Structurer, key_table
from exporter.config.values import (
    SECRET_KEYS,
    Parser,
    parse_duration,
    parse_name,
    parse_proxy,
    parse_tls_config,
    pattern_host,
    show,
)
from exporter.config.yamldoc import MAX_CONFIG_BYTES, Document, parse_yaml

RESERVED_UPSTREAM = "control"
# The shortest intervals (docs/configuration.md): a typo such as 1ms must not hammer a shared
# public status page or a target. Labs poll a local simulator every second.
MIN_STATUSPAGE_INTERVAL = 1.0
MIN_PROBE_INTERVAL = 0.1
# What `defaults:` may set for every check, status page and witness that does not set it.
DEFAULT_KEYS: dict[str, Parser] = {"interval": parse_duration, "timeout": parse_duration,
                                   "proxy": parse_proxy, "tls_config": parse_tls_config}


class _Loader:
    """One load: the document, its ``defaults:`` and the structurer."""

    def __init__(self, doc: Document, structurer: Structurer) -> None:
        self.doc = doc
        self.structurer = structurer
        self.defaults: dict[str, Any] = {}

    # -- plumbing -------------------------------------------------------------------------------

    def mapping(self, value: Any, path: Path_, allowed: set[str] | dict[str, Any]) -> dict[str, Any]:
        """A mapping of known keys (the top level and upstreams, which have no model)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.doc.error(path, f"must be a mapping (got {show(value)})")
            return {}
        out = {}
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS and key not in allowed:
                self.doc.error((*path, key), INLINE_SECRET)
            elif key not in allowed:
                self.doc.error((*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
            else:
                out[key] = item
        return out

    def value(self, raw: dict[str, Any], key: str, path: Path_, parser: Parser) -> Any:
        try:
            return parser(raw[key])
        except ValueError as exc:
            self.doc.error((*path, key), str(exc))
            return None

    def with_defaults(self, parsed: CheckBase | StatuspageConfig | WitnessConfig,
                      raw: dict[str, Any], scope: str = ANY,
                      interval: float | None = None) -> dict[str, Any]:
        """The fields of ``parsed`` that ``defaults:`` sets where ``raw`` does not: proxy and
        tls_config where the model has them, ``interval`` (the checks' default or a witness
        role's), and a timeout that never exceeds the interval. Defaults are parsed values,
        so they go in after structuring."""
        table = key_table(type(parsed), scope)
        out: dict[str, Any] = {}
        for key, field_name in (("proxy", "proxy"), ("tls_config", "tls")):
            if key in table.fields and key not in raw and key in self.defaults:
                out[field_name] = self.defaults[key]
        own = parsed.interval
        if "interval" not in raw and interval is not None:
            out["interval"] = own = interval
        if "timeout" not in raw:
            out["timeout"] = min(self.defaults.get("timeout", parsed.timeout), own)
        return out

    # -- checks ---------------------------------------------------------------------------------

    def check(self, raw_value: Any, path: Path_, upstream: str, module: str | None = None) -> CheckConfig | None:
        """One check, or one /probe module when ``module`` names it."""
        doc = self.doc
        if not isinstance(raw_value, dict):
            doc.error(path, f"must be a mapping with at least name and kind (got {show(raw_value)})")
            return None
        kind = raw_value.get("kind")
        if kind is None:
            doc.error(path, "missing required key kind")
            return None
        if kind not in KINDS:
            doc.error((*path, "kind"), f"must be one of {', '.join(KINDS)} (got {show(kind)})")
            return None
        model = CHECK_MODELS[kind]
        scope = MODULE if module else CHECK
        before = len(doc.issues)
        if module is None and "name" not in raw_value:
            doc.error(path, "missing required key name")
        target_key = model.TARGET_KEY
        if module is None and target_key not in raw_value and not _has_default(model, target_key):
            doc.error(path, f"missing required key {target_key} for kind {kind}")
        parsed = self.structurer.structure(raw_value, model, key_table(model, scope), path, doc)
        if parsed is None or len(doc.issues) > before:
            return None
        check: CheckConfig = attrs.evolve(  # type: ignore[assignment]
            parsed, upstream=upstream, name=module or parsed.name,
            **self.with_defaults(parsed, raw_value, scope, self.defaults.get("interval")))
        self.check_rules(check, raw_value, path, module is not None)
        if len(doc.issues) > before:
            return None
        if isinstance(check, DnsCheck) and check.dns_over_tls:
            check = attrs.evolve(check, transport_protocol="tcp")
        return check

    def check_rules(self, check: CheckConfig, raw: dict[str, Any], path: Path_, module: bool) -> None:
        """The rules that span keys."""
        doc, kind = self.doc, check.kind
        if not module and check.interval < MIN_PROBE_INTERVAL:
            doc.error((*path, "interval"), f"must be at least {MIN_PROBE_INTERVAL:g}s for "
                      f"kind {kind} (got {check.interval:g}s)")
        if not module and check.timeout > check.interval:
            doc.error((*path, "timeout"), "must not exceed the interval "
                      f"({check.timeout:g}s > {check.interval:g}s)")
        has_key = "api_key_env" in raw or "api_key_file" in raw
        if isinstance(check, HttpCheck | ApiCheck):
            key_in_authorization = has_key and (
                (isinstance(check, HttpCheck) and check.api_key_header.lower() == "authorization")
                or (isinstance(check, ApiCheck) and (check.auth_scheme or _own_scheme(kind)) == "bearer"))
            if key_in_authorization and (check.basic_auth or check.authorization):
                doc.error(path, "the API key already goes in the Authorization header; basic_auth "
                                "or authorization would replace it (use api_key_header or "
                                "auth_scheme: x-api-key)")
            if check.basic_auth and check.authorization:
                doc.error(path, "set basic_auth or authorization, not both (each is an "
                                "Authorization header)")
            if check.api_key_env and check.api_key_file:
                doc.error(path, "set api_key_env or api_key_file, not both")
        if isinstance(check, ApiCheck):
            self.api_rules(check, path, has_key)
        if isinstance(check, DnsCheck):
            self.dns_rules(check, raw, path)
        if module:
            self.module_rules(check, path, has_key)

    def api_rules(self, check: ApiCheck, path: Path_, has_key: bool) -> None:
        doc, mode = self.doc, check.mode
        if mode != "keyless" and not has_key:
            doc.error((*path, "mode"), f"mode {mode} needs api_key_env or api_key_file")
        models = check.models if isinstance(check, AnthropicCheck) else ()
        if mode in ("count_tokens", "messages", "chat") and not (check.model or models):
            doc.error((*path, "mode"), f"mode {mode} needs a model")
        if models and check.model:
            doc.error((*path, "models"), "set model or models, not both")
        if models and mode not in ("count_tokens", "messages"):
            doc.error((*path, "models"), "models (one probe per model) is for modes "
                                         "count_tokens and messages")
        if mode == "keyless" and has_key:
            doc.error((*path, "mode"), "keyless mode sends no key: remove api_key_env/api_key_file "
                                       "or pick another mode")

    def dns_rules(self, check: DnsCheck, raw: dict[str, Any], path: Path_) -> None:
        if check.dns_over_tls:
            if raw.get("transport_protocol") == "udp":
                self.doc.error((*path, "transport_protocol"),
                               "DNS over TLS runs over TCP: set tcp or leave it out")
            if check.resolver is None:
                self.doc.error((*path, "dns_over_tls"), "needs a resolver: the server to reach over TLS")
        elif "tls_config" in raw:  # a tls_config from defaults: is not an error here
            self.doc.error((*path, "tls_config"), "only applies with dns_over_tls: true")

    def module_rules(self, check: CheckConfig, path: Path_, has_key: bool) -> None:
        if not check.allowed_targets:
            self.doc.error(path, "missing required key allowed_targets (a /probe module must say "
                                 "which targets it may reach)")
        elif has_key:
            for i, pattern in enumerate(check.allowed_targets):
                host = pattern_host(pattern, url=check.TARGET_KEY == "url",
                                    has_port=check.kind in ("tcp", "tls"))
                if "*" in host or "?" in host:
                    self.doc.error((*path, "allowed_targets", i),
                                   "a module that carries an API key may only name exact hosts, "
                                   "no wildcards")

    def check_list(self, raw: Any, path: Path_, upstream: str) -> list[CheckConfig]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.doc.error(path, f"must be a list of checks (got {show(raw)})")
            return []
        checks: list[CheckConfig] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            check = self.check(item, (*path, i), upstream)
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                if name in seen:
                    self.doc.error((*path, i, "name"), f'duplicate check name "{name}" '
                                                       f"(also at {dotted((*path, seen[name]))})")
                    continue
                if name == "statuspage" and upstream != RESERVED_UPSTREAM:
                    self.doc.error((*path, i, "name"), '"statuspage" is reserved for the status-page poll')
                    continue
                seen[name] = i
            if check is not None:
                checks.extend(per_model(check))
        return checks

    # -- what others say ------------------------------------------------------------------------

    def statuspage(self, raw_value: Any, path: Path_) -> StatuspageConfig | None:
        if not isinstance(raw_value, dict):
            self.doc.error(path, f"must be a mapping (got {show(raw_value)})")
            return None
        before = len(self.doc.issues)
        parsed = self.structurer.structure(raw_value, StatuspageConfig, key_table(StatuspageConfig),
                                           path, self.doc)
        if parsed is None or len(self.doc.issues) > before:
            return None
        sp = attrs.evolve(parsed, **self.with_defaults(parsed, raw_value))
        if sp.interval < MIN_STATUSPAGE_INTERVAL:
            self.doc.error((*path, "interval"), f"must be at least {MIN_STATUSPAGE_INTERVAL:g}s "
                           f"for a status page (got {sp.interval:g}s)")
            return None
        if sp.timeout > sp.interval:
            self.doc.error((*path, "timeout"), "must not exceed the interval "
                           f"({sp.timeout:g}s > {sp.interval:g}s)")
            return None
        return sp

    def witness_list(self, raw: Any, path: Path_, kinds: tuple[str, ...]) -> list[WitnessConfig]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.doc.error(path, f"must be a list of {{name, kind, url, ...}} entries (got {show(raw)})")
            return []
        out: list[WitnessConfig] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            item_path = (*path, i)
            if not isinstance(item, dict):
                self.doc.error(item_path, f"must be a mapping with name, kind and url (got {show(item)})")
                continue
            kind = item.get("kind")
            if kind not in kinds:
                self.doc.error((*item_path, "kind") if "kind" in item else item_path,
                               f"must be one of {', '.join(kinds)} (got {show(kind)})"
                               if "kind" in item else "missing required key kind")
                continue
            before = len(self.doc.issues)
            table = key_table(WitnessConfig, ANY, tuple(WITNESS_KEYS[kind].items()))
            if kind in CROWD_KINDS and "models" not in item:
                self.doc.error(item_path, "missing required key models")
            parsed = self.structurer.structure(item, WitnessConfig, table, item_path, self.doc)
            name = item.get("name")
            if isinstance(name, str):
                if name in seen:
                    self.doc.error((*item_path, "name"), f'duplicate name "{name}" '
                                                         f"(also at {dotted((*path, seen[name]))})")
                seen[name] = i
            if parsed is None or len(self.doc.issues) > before:
                continue
            role = "crowd" if kind in CROWD_KINDS else "dependency"
            witness = attrs.evolve(parsed, **self.with_defaults(parsed, item,
                                                                interval=WITNESS_INTERVALS[role]))
            if witness.basic_auth and witness.authorization:
                self.doc.error(item_path, "set basic_auth or authorization, not both (each is an "
                                          "Authorization header)")
                continue
            if witness.timeout > witness.interval:
                self.doc.error((*item_path, "timeout"), "must not exceed the interval "
                               f"({witness.timeout:g}s > {witness.interval:g}s)")
                continue
            out.append(witness)
        return out

    def verdict(self, raw_value: Any, path: Path_) -> VerdictConfig:
        if raw_value is None:
            return VerdictConfig()
        if not isinstance(raw_value, dict):
            self.doc.error(path, f"must be a mapping (got {show(raw_value)})")
            return VerdictConfig()
        verdict = self.structurer.structure(raw_value, VerdictConfig, key_table(VerdictConfig),
                                            path, self.doc)
        if verdict is None:
            return VerdictConfig()
        if verdict.outage_after > verdict.window:
            self.doc.error((*path, "outage_after"), f"must not exceed window ({verdict.window})")
        return verdict

    # -- the file -------------------------------------------------------------------------------

    def config(self, data: Any) -> Config | None:
        doc = self.doc
        top = self.mapping(data, (), {"vantage", "defaults", "upstreams", "control", "modules"})
        vantage = self.value(top, "vantage", (), parse_name) if "vantage" in top else None
        raw_defaults = self.mapping(top.get("defaults"), ("defaults",), DEFAULT_KEYS)
        for key in raw_defaults:
            parsed = self.value(raw_defaults, key, ("defaults",), DEFAULT_KEYS[key])
            if parsed is not None:
                self.defaults[key] = parsed

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
            up = self.mapping(up_raw, path, {"statuspage", "checks", "verdict", "dependencies",
                                             "crowd"})
            statuspage = (self.statuspage(up["statuspage"], (*path, "statuspage"))
                          if "statuspage" in up else None)
            checks = self.check_list(up.get("checks", []), (*path, "checks"), up_name)
            verdict = self.verdict(up.get("verdict"), (*path, "verdict"))
            if statuspage is None and not checks and "statuspage" not in up and "checks" not in up:
                doc.error(path, "needs a statuspage, checks, or both")
            dependencies = self.witness_list(up.get("dependencies"), (*path, "dependencies"),
                                             DEPENDENCY_KINDS)
            crowd = self.witness_list(up.get("crowd"), (*path, "crowd"), CROWD_KINDS)
            upstreams.append(UpstreamConfig(up_name, statuspage, tuple(checks), verdict,
                                            tuple(dependencies), tuple(crowd)))

        control = self.check_list(top.get("control", []), ("control",), RESERVED_UPSTREAM)
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
            mod = self.check(mod_raw, ("modules", mod_name), "probe", module=mod_name)
            if mod is not None:
                modules[mod_name] = mod
        if doc.issues:
            return None
        return Config(tuple(upstreams), tuple(control), modules, vantage, doc.source)


def _has_default(model: type[CheckBase], field_name: str) -> bool:
    """Whether a kind fills in its address itself (the APIs' well-known URLs)."""
    default = attrs.fields_dict(model)[field_name].default
    return default is not None and default is not attrs.NOTHING


def _own_scheme(kind: str) -> str:
    return "bearer" if kind == "openai" else "x-api-key"


def per_model(check: CheckConfig) -> list[CheckConfig]:
    """A check with ``models:`` as one check per model, sharing its daily token budget."""
    if not isinstance(check, AnthropicCheck) or not check.models:
        return [check]
    budget = check.daily_token_budget
    share = None if budget is None else max(1, budget // len(check.models))
    return [attrs.evolve(check, name=f"{check.name}/{model}", model=model, models=(),
                         daily_token_budget=share) for model in check.models]


# The structure functions cattrs generates (about 1 ms a model) are kept across loads, so a
# reload of a small config costs its parse, not code generation. Written only here.
_STRUCTURER = Structurer()


def build_config(data: Any, doc: Document) -> Config | None:
    return _Loader(doc, _STRUCTURER).config(data)


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
    return attrs.evolve(config, vantage=vantage) if vantage else config
