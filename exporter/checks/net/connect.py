"""Connecting to a ``host:port`` target: resolve it, then try its addresses one after the other
or, with ``per_address``, all at once. Shared by the tcp and tls probers, whose connectors do the
per-address work and its own timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from exporter import metrics as m
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample, failure
from exporter.checks.net.resolve import (
    Resolved,
    ResolveError,
    address_hash,
    budget,
    literal,
    resolve,
    split_host_port,
)
from exporter.checks.net.resources import REASON as LOCAL_RESOURCES
from exporter.checks.net.resources import local_resource_error
from exporter.config import TcpCheck, TlsCheck

CLOSE_WAIT = 0.5  # seconds to wait for a polite close before abandoning the connection


@dataclass
class Attempt:
    """One address's outcome, with the phase timings that were reached."""

    address: str
    ok: bool = False
    reason: str = ""
    error: str = ""
    gauges: list[Sample] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)


def describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no route to host" if exc.errno == errno.EHOSTUNREACH else "network unreachable"
    return exc.strerror or exc.__class__.__name__


async def open_tcp(address: str, port: int, limit: float,
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """Connect; returns the stream pair and the connect time, or raises ProbeFailure."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(address, port)
    except OSError as exc:  # TimeoutError included
        raise connect_failure(exc, address, port, limit) from None
    return reader, writer, time.perf_counter() - start


def connect_failure(exc: OSError, address: str, port: int, limit: float) -> ProbeFailure:
    """A failed connect as the phase error both connectors raise."""
    if isinstance(exc, TimeoutError):
        return ProbeFailure("timeout", f"TCP connect to {where(address, port)} timed out after "
                                     f"{limit:.3g}s")
    if (local := local_resource_error(exc)) is not None:  # EMFILE: ours, not the target's
        return ProbeFailure(LOCAL_RESOURCES, local)
    return ProbeFailure("connect", f"TCP connect to {where(address, port)}: "
                                 f"{describe_os_error(exc)}")


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_WAIT):
            await writer.wait_closed()


def where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


C = TypeVar("C", TcpCheck, TlsCheck)


async def run(check: C, ctx: ProbeContext,
              connector: Callable[[C, str, int, float, ProbeContext], Awaitable[Attempt]]) -> Result:
    """Resolve, then run ``connector`` on one address or, with per_address, on all of them.

    Shared by tcp and tls: the connector does the per-address work and its own timing.
    """
    start = time.perf_counter()
    deadline = start + budget(check)
    assert check.target is not None, "the config requires a target"
    host, port = split_host_port(check.target)
    resolved = literal(host, check.ip_protocol)
    if resolved is None:  # a name to look up (or a literal of the wrong family: resolve says so)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                resolved = await resolve(host, check.ip_protocol)
        except ResolveError as exc:
            ctx.log(str(exc))
            return failure(start, "dns", str(exc))
        except TimeoutError:
            message = f"DNS lookup of {host} timed out"
            ctx.log(message)
            return failure(start, "timeout", message)
    if resolved.addresses != (host,):
        ctx.log(f"resolved {host} to {', '.join(resolved.addresses)} "
                f"in {resolved.seconds * 1000:.2f} ms")

    remaining = max(0.0, deadline - time.perf_counter())
    if check.per_address and len(resolved.addresses) > 1:
        attempts = list(await asyncio.gather(
            *(connector(check, address, port, remaining, ctx) for address in resolved.addresses)))
        return _result(check, start, resolved, attempts)
    # One address after the other until one answers; the run reports that one (or, when all
    # fail, the first failure, as the most preferred address's).
    tried: list[Attempt] = []
    for address in resolved.addresses:
        attempt = await connector(check, address, port, remaining, ctx)
        if attempt.ok:
            return _result(check, start, resolved, [attempt])
        tried.append(attempt)
        remaining = max(0.0, deadline - time.perf_counter())
        if attempt.reason == "timeout" or remaining <= 0:
            break
    if len(tried) > 1:
        first = tried[0]
        first.error = (f"all {len(tried)} addresses failed; first: {first.error}")
    return _result(check, start, resolved, tried[:1])


def _lookup_gauges(resolved: Resolved, address: str) -> tuple[Sample, ...]:
    if resolved.seconds == 0.0:  # the same answer every run: build its samples once
        return _fixed_lookup_gauges(resolved.addresses, address)
    return _make_lookup_gauges(resolved.addresses, resolved.seconds, address)


def _make_lookup_gauges(addresses: tuple[str, ...], seconds: float,
                        address: str) -> tuple[Sample, ...]:
    # Addresses are numeric here (resolved or literal): only IPv6 ones hold a colon.
    return (Sample(m.PROBE_DNS_LOOKUP_TIME, seconds),
            Sample(m.PROBE_IP_ADDR_HASH, address_hash(addresses)),
            Sample(m.PROBE_IP_PROTOCOL, 6.0 if ":" in address else 4.0))


@functools.lru_cache(maxsize=1024)
def _fixed_lookup_gauges(addresses: tuple[str, ...], address: str) -> tuple[Sample, ...]:
    return _make_lookup_gauges(addresses, 0.0, address)


def _result(check: TcpCheck | TlsCheck, start: float, resolved: Resolved,
            attempts: list[Attempt]) -> Result:
    primary = attempts[0]
    gauges = [*_lookup_gauges(resolved, primary.address), *primary.gauges]
    if check.per_address:
        gauges.extend(Sample(m.PROBE_ADDRESS_SUCCESS, 1.0 if a.ok else 0.0,
                             {"address": a.address}) for a in attempts)
    failed = [a for a in attempts if not a.ok]
    details: dict[str, object] = {
        "addresses": list(resolved.addresses),
        "failed_addresses": [a.address for a in failed],
        **primary.facts,
    }
    if not failed:
        return Result(True, time.perf_counter() - start, gauges=tuple(gauges),
                      details=details)
    first = failed[0]
    error = first.error
    if len(attempts) > 1:
        error = f"{len(failed)} of {len(attempts)} addresses failed; first: {first.error}"
    return failure(start, first.reason, error, gauges=tuple(gauges), details=details)


