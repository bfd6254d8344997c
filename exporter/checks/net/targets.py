"""Which targets a ``/probe`` module may reach: the ``allowed_targets`` policy.

A module only probes targets that match one of its ``allowed_targets`` globs (``*`` any run of
characters, ``?`` one character). The target must first be well formed for the module's kind,
with a strict host, and for URL kinds the host must match the pattern's host on its own, so a
``*`` cannot stretch from the path into the host. A pattern whose host is an address matches IP
literals only; a name is allowed by such patterns only when every address it resolves to is
(``check_resolved``). The http prober applies the same policy to each redirect it follows.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from exporter.config import CheckConfig, TargetCheck
from exporter.config.values import parse_host, parse_host_port, parse_url, pattern_host, pattern_netloc

HOST_NAME = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")


class TargetError(Exception):
    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


# -- target validation -------------------------------------------------------------------------


def valid_host(host: str, port_follows: bool) -> bool:
    """A DNS name or an IP literal; an IPv6 literal must be in brackets when a port follows."""
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        return _ip_version(inner) == 6
    version = _ip_version(host)
    if version:
        return version == 4 or not port_follows
    return bool(HOST_NAME.match(host))


def _ip_version(text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


MAX_TARGET_CHARS = 2048
_ADDRESS4_PATTERN = re.compile(r"^[0-9.*?]*[0-9][0-9.*?]*$")
_ADDRESS6_PATTERN = re.compile(r"^\[?[0-9A-Fa-f:.*?]*:[0-9A-Fa-f:.*?]*\]?$")


def _pattern_host_of(module: CheckConfig, pattern: str) -> str:
    return pattern_host(pattern, url=module.TARGET_KEY == "url", has_port=module.kind in ("tcp", "tls"))


def is_address_pattern(host: str) -> bool:
    """A host pattern that spells an address (digits and dots, or hex and colons, with
    wildcards): it stands for addresses only. A lone ``*`` is no address pattern."""
    return bool(_ADDRESS4_PATTERN.match(host) and "." in host) or bool(
        _ADDRESS6_PATTERN.match(host))


def check_target(module: CheckConfig, target: str) -> str | None:
    """Raise TargetError unless ``target`` is well formed and allowed for ``module``.

    Returns None when the target is allowed as written, or a host name that the caller must
    resolve and pass to ``check_resolved``: the name matched nothing, but the module has
    address patterns that its addresses may match."""
    if not target:
        raise TargetError(400, "bad_request", "target parameter is missing")
    if len(target) > MAX_TARGET_CHARS:
        raise TargetError(400, "bad_request", f"target is longer than {MAX_TARGET_CHARS} "
                                              "characters")
    if any(c.isspace() or not c.isprintable() for c in target):
        raise TargetError(400, "bad_request", "target contains spaces or control characters")
    key = module.TARGET_KEY
    try:
        if key == "url":
            parse_url(target)
            parts = urlsplit(target)
            host = parts.netloc
            bare = host.rpartition(":")[0] if parts.port is not None else host
        elif module.kind in ("tcp", "tls"):
            parse_host_port(target)
            host = target
            bare = target.rpartition(":")[0]
        else:
            parse_host(target)
            host = bare = target
    except ValueError as exc:
        raise TargetError(400, "bad_request", f"target {exc}") from None
    if not valid_host(bare, port_follows=module.kind != "icmp" and module.kind != "dns"):
        raise TargetError(400, "bad_request", f"target host {bare!r} is not a host name or an "
                                              "IP address")
    literal = _ip_version(bare.strip("[]")) != 0
    if _allowed(module, target, host, literal):
        return None
    if not literal and _could_resolve_into(module, target, bare):
        return bare
    raise _refused(module, target)


def _could_resolve_into(module: CheckConfig, target: str, name: str) -> bool:
    """Whether some address pattern would allow ``target`` with an address for ``name``:
    the rest of the target (scheme, port, path) must already fit, so that a name no address
    could help is refused without a lookup."""
    for pattern in module.allowed_targets:
        pattern_host = _pattern_host_of(module, pattern)
        if is_address_pattern(pattern_host):
            stand_in = _replace_host(module, target, name, pattern_host)
            host = urlsplit(stand_in).netloc if module.TARGET_KEY == "url" else stand_in
            if glob_match(stand_in, pattern) and (module.TARGET_KEY != "url" or glob_match(
                    host, pattern_netloc(pattern))):
                return True
    return False


def _allowed(module: CheckConfig, target: str, host: str, literal: bool) -> bool:
    key = module.TARGET_KEY
    for pattern in module.allowed_targets:
        if not literal and is_address_pattern(_pattern_host_of(module, pattern)):
            continue  # an address pattern never matches a name as text
        if not glob_match(target, pattern):
            continue
        if key == "url" and not glob_match(host, pattern_netloc(pattern)):
            continue
        return True
    return False


def _refused(module: CheckConfig, target: str, why: str = "") -> TargetError:
    return TargetError(403, "refused", f"target {target!r} is not allowed for module "
                                       f"{module.name!r}; it must match one of its "
                                       f"allowed_targets{why}")


RESOLVE_TIMEOUT = 2.0


async def check_resolved(module: CheckConfig, target: str, name: str) -> None:
    """Raise TargetError unless every address ``name`` resolves to, put in its place in
    ``target``, is allowed by the module's address patterns."""
    loop = asyncio.get_running_loop()
    protocol = module.ip_protocol if isinstance(module, TargetCheck) else "auto"
    family = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}.get(protocol, socket.AF_UNSPEC)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise _refused(module, target, f" (the name {name!r} does not resolve, so its "
                                       "addresses cannot be checked)") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise _refused(module, target, f" ({name!r} resolves to no address)")
    for address in addresses:
        spelled = f"[{address}]" if ":" in address and module.kind not in ("icmp", "dns") \
            else address
        candidate = _replace_host(module, target, name, spelled)
        host = urlsplit(candidate).netloc if module.TARGET_KEY == "url" else candidate
        if not _allowed(module, candidate, host, literal=True):
            raise _refused(module, target, f" ({name!r} resolves to {address}, which no "
                                           "address pattern allows)")


def _replace_host(module: CheckConfig, target: str, name: str, address: str) -> str:
    if module.TARGET_KEY == "url":
        parts = urlsplit(target)
        netloc = address + (f":{parts.port}" if parts.port is not None else "")
        return parts._replace(netloc=netloc).geturl()
    if module.kind in ("tcp", "tls"):
        return address + ":" + target.rpartition(":")[2]
    return address


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def glob_match(text: str, pattern: str) -> bool:
    """Shell-style match where only ``*`` (any run) and ``?`` (one character) are special,
    so ``[::1]:*`` means the IPv6 literal, not a character class. Case matters."""
    return _glob(pattern).fullmatch(text) is not None



