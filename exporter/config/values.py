"""The value of one key: each parser returns the value or raises ValueError with the message
that the loader puts after the key's dotted path and line.

The small values that a key holds (a proxy, tls_config, a credential reference, matchers)
are defined here beside their parsers; the models of whole checks are in ``models``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from exporter.config.errors import Path_

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SECRET_KEYS = {"api_key", "apikey", "key", "token", "bearer_token", "password", "secret"}
SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}


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


Parser = Callable[[Any], Any]


class NestedError(ValueError):
    """A problem with a part of the value: ``where`` extends the key's dotted path."""

    def __init__(self, where: Path_, message: str) -> None:
        super().__init__(message)
        self.where = where


def parse_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f'must be a duration such as "30s" or "1m30s" (got {show(value)})')
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if not DURATION_RE.match(text):
            raise ValueError(f'must be a duration such as "30s" or "1m30s" (got {show(value)})')
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in DURATION_PART_RE.findall(text))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration (got {show(value)})")
    return seconds


def parse_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a URL string (got {show(value)})")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {show(value)})")
    if parts.username or parts.password:
        raise ValueError("inline secrets are not allowed: remove the user:password from the "
                         "URL and use api_key_env or api_key_file")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"has an invalid port (got {show(value)})") from None
    return value


def parse_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string (got {show(value)})")
    return value


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', ':' or '-', "
                         f"starting with a letter or digit (got {show(value)})")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {show(value)})")
    return value


def parse_int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high} (got {show(value)})")
        return value
    return parse


def parse_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"must be a number from 0 to 1 (got {show(value)})")
    return float(value)


def parse_enum(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {show(value)})")
        return str(value)
    return parse


def parse_str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"must be a list of strings (got {show(value)})")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(str(v) for v in value)


def parse_status_codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in value
    ):
        raise ValueError(f"must be a list of HTTP status codes 100-599 (got {show(value)})")
    return tuple(value)


HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def parse_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of header names to values (got {show(value)})")
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
            raise ValueError(f"must be model ids such as claude-haiku-4-5 (got {show(model)})")
    return models



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
        raise ValueError(f'must be "host:port" with a port from 1 to 65535 (got {show(value)})')
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"has an unbalanced IPv6 bracket (got {show(value)})")
    return text


def parse_host(value: Any) -> str:
    text = parse_str(value)
    if any(c in text for c in "/ ?#@"):
        raise ValueError(f"must be a host name or IP address (got {show(value)})")
    return text


RECORD_TYPES = ("a", "aaaa", "any", "cname", "mx", "txt", "ns", "soa", "srv", "ptr")
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
          "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE")
RR_VALIDATOR_KEYS = tuple(f.name for f in fields(RRValidator))


def parse_record_type(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in RECORD_TYPES:
        raise ValueError(f"must be one of {', '.join(RECORD_TYPES)} (got {show(value)})")
    return value.lower()


def parse_rcodes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of DNS response codes (got {show(value)})")
    out: list[str] = []
    for i, code in enumerate(value):
        if not isinstance(code, str) or code.upper() not in RCODES:
            raise NestedError((i,), f"must be one of {', '.join(RCODES)} (got {show(code)})")
        out.append(code.upper())
    return tuple(out)


def parse_rr_validator(value: Any) -> RRValidator:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping with {', '.join(RR_VALIDATOR_KEYS)} "
                         f"(got {show(value)})")
    lists: dict[str, tuple[str, ...]] = {}
    for key, patterns in value.items():
        if key not in RR_VALIDATOR_KEYS:
            raise NestedError((key,), f"unknown key (allowed: {', '.join(RR_VALIDATOR_KEYS)})")
        if isinstance(patterns, str) or not isinstance(patterns, list):
            raise NestedError((key,), f"must be a list of regular expressions "
                                           f"(got {show(patterns)})")
        for i, pattern in enumerate(patterns):
            try:
                parse_regex(pattern)
            except ValueError as exc:
                raise NestedError((key, i), str(exc)) from None
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
                         f"(got {show(value)})")
    return parse_host_port(text) if ":" in text else parse_host(text)


def parse_env_name(value: Any) -> str:
    text = parse_str(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise ValueError(f"must be an environment variable name (got {show(value)})")
    return text


TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")


def _sub_mapping(value: Any, allowed: tuple[str, ...], what: str,
                 secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of {what} (got {show(value)})")
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
                         f"(got {show(value)})")
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
        raise NestedError(("type",), f"must be one word such as Bearer (got {show(kind)})")
    env, file = _one_secret(raw, "credentials")
    return SecretRef(kind, env, file)


def parse_regex_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of regular expressions (got {show(value)})")
    return tuple(_sub(parse_regex, dict(enumerate(value)), i) for i in range(len(value)))  # type: ignore[arg-type]


def parse_header_matches(value: Any) -> tuple[HeaderMatch, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {{header, regexp}} (got {show(value)})")
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
        raise ValueError(f"must be a list of {{path, equals | matches}} (got {show(value)})")
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


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


OPENROUTER_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:-]*$")


def parse_openrouter_models(value: Any) -> tuple[str, ...]:
    models = parse_str_list(value)
    if not models:
        raise ValueError("must name at least one model")
    if len(models) > 50:
        raise ValueError(f"at most 50 models (got {len(models)})")
    for model in models:
        if not OPENROUTER_MODEL_RE.match(model):
            raise ValueError(f'must be OpenRouter model ids such as "anthropic/claude-sonnet-4.6" '
                             f"(got {show(model)})")
    return models


# -- the host of an allowed_targets pattern ----------------------------------------------------


def pattern_netloc(pattern: str) -> str:
    """``host[:port]`` of a URL pattern (its scheme, path, query and fragment cut off)."""
    rest = pattern.split("://", 1)[-1]
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def split_host(netloc: str, has_port: bool) -> str:
    """The host of ``host:port`` (``[v6]:port``), or of a bare host when ``has_port`` is
    false."""
    if not has_port:
        return netloc
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    return netloc.rpartition(":")[0] if ":" in netloc else netloc


def pattern_host(pattern: str, url: bool, has_port: bool) -> str:
    """The host part of an allowed_targets pattern: of a URL for the kinds that take one,
    of ``host:port`` for tcp and tls, the whole pattern for icmp and dns."""
    return split_host(pattern_netloc(pattern), True) if url else split_host(pattern, has_port)
