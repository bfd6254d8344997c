"""kind: tcp. Resolve the target, then open a TCP connection to it and close it again.

Without ``per_address`` the resolved addresses are tried in the resolver's order until one
connects, as a client (and the http kind) would: a refused ``::1`` falls back to 127.0.0.1.
With ``per_address`` every resolved address is tried at the same time; the run succeeds only
when all of them connect, and ``probe_address_success{address}`` tells which did.

Failure reasons: dns (the name does not resolve), connect (refused, unreachable, reset),
timeout (no answer within the check's timeout).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time

from exporter import metrics as m
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample
from exporter.checks.net.connect import Attempt, connect_failure, run, where
from exporter.config import TcpCheck

REASONS = ("dns", "connect", "timeout", "local_resources")


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


async def connect_and_close(address: str, port: int, limit: float) -> float:
    """Open a TCP connection and close it again; returns the connect time or raises
    ProbeFailure.

    A bare non-blocking socket, no transport or streams: a check that only connects needs
    none, and each asyncio transport leaves a reference cycle for the garbage collector to
    clear, which with thousands of checks meant long collector pauses (docs/benchmarks.md).
    A connection the kernel completes within connect() itself (loopback, and many local
    targets) is done without a trip through the event loop.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                         socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        start = time.perf_counter()
        err = sock.connect_ex((address, port))
        if err == 0 or (err == errno.EINPROGRESS and _connected(sock)):
            return time.perf_counter() - start
        if err != errno.EINPROGRESS:
            raise OSError(err, os.strerror(err))
        async with asyncio.timeout(limit):
            # connect() again reports EALREADY until the handshake ends: the loop waits.
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        return time.perf_counter() - start
    except OSError as exc:  # TimeoutError included
        raise connect_failure(exc, address, port, limit) from None
    finally:
        sock.close()


async def _connect_only(check: TcpCheck, address: str, port: int, limit: float,
                        ctx: ProbeContext) -> Attempt:
    attempt = Attempt(address)
    try:
        seconds = await connect_and_close(address, port, limit)
    except ProbeFailure as exc:
        attempt.reason, attempt.error = exc.reason, exc.error
        ctx.log(exc.error)
        return attempt
    attempt.gauges.append(Sample(m.PROBE_TCP_CONNECT, seconds))
    ctx.log(f"connected to {where(address, port)} in {seconds * 1000:.2f} ms")
    attempt.ok = True
    return attempt


async def probe(check: TcpCheck, ctx: ProbeContext) -> Result:
    return await run(check, ctx, _connect_only)
