"""Turning a check's host into addresses: one way, shared by the tcp, tls and icmp probers.

The system resolver (``getaddrinfo``, so /etc/hosts and nsswitch apply, as for any other
program on the machine) is asked for the families ``ip_protocol`` allows:

- ``auto``: both IPv4 and IPv6, in the resolver's order (glibc sorts by RFC 6724, so IPv6
  comes first only when the machine has a route for it);
- ``ip4`` / ``ip6``: only that family; a name without such an address fails with reason dns.

An IP literal is used as is, without a lookup. Lookup time is measured around the call.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.checks.base import ProbeFailure
from exporter.config import CheckConfig

FAMILIES = {"auto": socket.AF_UNSPEC, "ip4": socket.AF_INET, "ip6": socket.AF_INET6}
# The share of a check's timeout a network prober plans to use, so that it can report
# "timeout" itself (with the phase that ran out) before the scheduler's hard stop.
BUDGET_MARGIN = 0.05


class ResolveError(ProbeFailure):
    """The name did not resolve to a usable address: a ProbeFailure whose reason is dns.
    Its own type because the tcp, tls and dns probers tell it from the failures after it."""

    def __init__(self, error: str) -> None:
        super().__init__("dns", error)


@dataclass(frozen=True)
class Resolved:
    addresses: tuple[str, ...]  # de-duplicated, in the resolver's preference order
    seconds: float  # time the lookup took; 0 for an IP literal


def budget(check: CheckConfig) -> float:
    """Seconds a network prober may spend, a little under the scheduler's timeout."""
    return max(check.timeout * 0.9, check.timeout - BUDGET_MARGIN)


def split_host_port(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to (host, port); the config has validated the form."""
    host, _, port = target.rpartition(":")
    return strip_brackets(host), int(port)


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def address_hash(addresses: Iterable[str]) -> float:
    """A stable 32-bit hash of an address set (order does not matter), exact as a float:
    like blackbox_exporter's probe_ip_addr_hash, a change of value means a new answer."""
    return float(zlib.crc32("\n".join(sorted(addresses)).encode()))


def ip_version(address: str) -> int:
    return ipaddress.ip_address(address).version


def family_name(address: str) -> str:
    return f"ipv{ip_version(address)}"


@functools.lru_cache(maxsize=1024)
def literal(host: str, ip_protocol: str = "auto") -> Resolved | None:
    """resolve()'s answer for an IP literal of a family ``ip_protocol`` allows, at once and
    remembered: callers need neither an await nor a timeout for it. None for a name, or for a
    literal of the other family (resolve() says why)."""
    try:
        address = ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return None
    family = FAMILIES[ip_protocol]
    if family != socket.AF_UNSPEC and address.version != (4 if family == socket.AF_INET else 6):
        return None
    return Resolved((address.compressed,), 0.0)


async def resolve(host: str, ip_protocol: str = "auto") -> Resolved:
    """Addresses of ``host`` for ``ip_protocol``; raises ResolveError when there are none.

    Cancellation (the caller's timeout) propagates; the lookup thread is left to finish.
    """
    found = literal(host, ip_protocol)
    if found is not None:
        return found
    host = strip_brackets(host)
    family = FAMILIES[ip_protocol]
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        parsed = None
    if parsed is not None:  # a literal of the family ip_protocol excludes
        raise ResolveError(f"{host} is an IPv{parsed.version} address but ip_protocol is "
                           f"{ip_protocol}")

    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    try:
        infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    except UnicodeError:
        raise ResolveError(f"cannot resolve {host}: not a valid host name") from None
    seconds = time.perf_counter() - start
    addresses: list[str] = []
    for info_family, _, _, _, sockaddr in infos:
        if info_family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        wanted = {"ip4": "IPv4 ", "ip6": "IPv6 "}.get(ip_protocol, "")
        raise ResolveError(f"{host} has no {wanted}address")
    return Resolved(tuple(addresses), seconds)
