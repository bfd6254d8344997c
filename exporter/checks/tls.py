"""kind: tls. Everything tcp does, then a TLS handshake on the open connection.

Its ``tls_config`` is the one of http checks: SNI and the name the certificate must match
is ``server_name`` or else the target's host; the chain is verified against the system CAs,
or ``ca_file`` when set; ``insecure_skip_verify`` turns verification off (the handshake and
the expiry are still measured); ``cert_file``/``key_file`` present a client certificate;
``min_version``/``max_version`` bound the protocol. ``probe_ssl_earliest_cert_expiry`` is
the earliest notAfter among the certificates the server presented, read from their DER encoding, so it works with and
without verification.

Failure reasons: dns, connect, timeout (as tcp), tls (handshake or verification failed).
"""

from __future__ import annotations

import asyncio
import ssl
import time

from exporter import metrics as m
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample
from exporter.checks.net.connect import (
    Attempt,
    close_quietly,
    describe_os_error,
    open_tcp,
    run,
)
from exporter.checks.net.httpclient import (
    TLS_VERSIONS,
    TLSConfigError,
    not_after,
    peer_chain,
    tls_context,
)
from exporter.checks.net.resolve import split_host_port
from exporter.config import TlsCheck

REASONS = ("dns", "connect", "timeout", "tls", "local_resources")
__all__ = ["TLS_VERSIONS", "not_after", "peer_chain", "probe"]


async def _handshake(check: TlsCheck, address: str, port: int, limit: float,
                     ctx: ProbeContext) -> Attempt:
    attempt = Attempt(address)
    assert check.target is not None
    host, _ = split_host_port(check.target)
    server_name = check.tls.server_name or host
    deadline = time.perf_counter() + limit
    try:
        context = tls_context(check.tls, alpn=False)
    except TLSConfigError as exc:
        attempt.reason, attempt.error = "tls", str(exc)
        ctx.log(attempt.error)
        return attempt
    try:
        _, writer, connect_seconds = await open_tcp(address, port, limit)
    except ProbeFailure as exc:
        attempt.reason, attempt.error = exc.reason, exc.error
        ctx.log(exc.error)
        return attempt
    attempt.gauges.append(Sample(m.PROBE_TCP_CONNECT, connect_seconds))
    ctx.log(f"connected to {address} port {port} in {connect_seconds * 1000:.2f} ms")
    start = time.perf_counter()
    try:
        remaining = max(0.001, deadline - start)
        async with asyncio.timeout(remaining):
            await writer.start_tls(context, server_hostname=server_name,
                                   ssl_handshake_timeout=remaining + 1)
    except TimeoutError:
        attempt.reason = "timeout"
        attempt.error = f"TLS handshake with {server_name} ({address}) timed out"
    except ssl.SSLCertVerificationError as exc:
        attempt.reason = "tls"
        attempt.error = (f"TLS certificate of {server_name} ({address}) not accepted: "
                         f"{exc.verify_message or exc.reason}")
    except ssl.SSLError as exc:
        attempt.reason = "tls"
        attempt.error = (f"TLS handshake with {server_name} ({address}) failed: "
                         f"{exc.reason or exc}")
    except (OSError, EOFError) as exc:
        attempt.reason = "tls"
        detail = describe_os_error(exc) if isinstance(exc, OSError) else "connection closed"
        attempt.error = f"TLS handshake with {server_name} ({address}) failed: {detail}"
    if attempt.reason:
        ctx.log(attempt.error)
        writer.transport.abort()
        return attempt
    handshake_seconds = time.perf_counter() - start
    ssl_object = writer.get_extra_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else None
    version_label = TLS_VERSIONS.get(version or "", version or "unknown")
    attempt.gauges.append(Sample(m.PROBE_TLS_HANDSHAKE, handshake_seconds))
    attempt.gauges.append(Sample(m.PROBE_TLS_VERSION_INFO, 1.0, {"version": version_label}))
    ctx.log(f"TLS handshake with {server_name} done in {handshake_seconds * 1000:.2f} ms, "
            f"{version_label}")
    expiries = []
    for der in peer_chain(ssl_object):
        try:
            expiries.append(not_after(der))
        except ValueError as exc:
            ctx.log(f"cannot read a certificate's expiry: {exc}")
    if expiries:
        earliest = min(expiries)
        attempt.gauges.append(Sample(m.PROBE_SSL_EARLIEST_CERT_EXPIRY, earliest))
        attempt.facts["cert_expiry"] = earliest
        ctx.log(f"earliest certificate expiry: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(earliest))}")
    attempt.facts["tls_version"] = version_label
    await close_quietly(writer)
    attempt.ok = True
    return attempt


async def probe(check: TlsCheck, ctx: ProbeContext) -> Result:
    return await run(check, ctx, _handshake)
