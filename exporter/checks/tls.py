"""kind: tls. Everything tcp does, then a TLS handshake on the open connection.

SNI and the name the certificate must match is ``server_name`` or else the target's host.
The certificate chain is verified against the system CAs, or ``ca_file`` when set;
``insecure_skip_verify`` turns verification off (the handshake and the expiry are still
measured). ``probe_ssl_earliest_cert_expiry`` is the earliest notAfter among the
certificates the server presented, read from their DER encoding, so it works with and
without verification.

Failure reasons: dns, connect, timeout (as tcp), tls (handshake or verification failed).
"""

from __future__ import annotations

import asyncio
import calendar
import ssl
import time

from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample
from exporter.checks.httpcommon import ssl_context
from exporter.checks.resolve import split_host_port
from exporter.checks.tcp import (
    Attempt,
    PhaseError,
    close_quietly,
    describe_os_error,
    open_tcp,
    run,
)
from exporter.config import CheckConfig

REASONS = ("dns", "connect", "timeout", "tls", "local_resources")
# blackbox_exporter's spelling, so its dashboards keep working.
TLS_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2",
                "TLSv1.3": "TLS 1.3"}


async def _handshake(check: CheckConfig, address: str, port: int, limit: float,
                     ctx: ProbeContext) -> Attempt:
    attempt = Attempt(address)
    assert check.target is not None
    host, _ = split_host_port(check.target)
    server_name = check.server_name or host
    deadline = time.perf_counter() + limit
    try:
        context = ssl_context(check)
    except (OSError, ssl.SSLError) as exc:
        attempt.reason, attempt.error = "tls", f"cannot load ca_file {check.ca_file}: {exc}"
        ctx.log(attempt.error)
        return attempt
    try:
        _, writer, connect_seconds = await open_tcp(address, port, limit)
    except PhaseError as exc:
        attempt.reason, attempt.error = exc.reason, exc.message
        ctx.log(exc.message)
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


def peer_chain(ssl_object: ssl.SSLObject | None) -> list[bytes]:
    """DER of every certificate the peer presented, leaf first (the leaf alone if the
    Python version cannot tell more)."""
    if ssl_object is None:
        return []
    chain = None
    public = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        chain = public()
    else:
        private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
        if private is not None:
            chain = private()
    if chain:
        out = []
        for cert in chain:
            if isinstance(cert, bytes):
                out.append(cert)
            else:
                out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        return out
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


# -- just enough DER to find a certificate's notAfter ------------------------------------------


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    offset = start
    while offset < end:
        tag, content_start, content_end = _tlv(data, offset)
        out.append((tag, content_start, content_end))
        offset = content_end
    return out


def not_after(der: bytes) -> float:
    """Unix time of an X.509 certificate's notAfter (RFC 5280 section 4.1)."""
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, tbs_start, tbs_end = _tlv(der, start)
    if tag != 0x30:
        raise ValueError("no TBSCertificate")
    fields = _children(der, tbs_start, tbs_end)
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity
    if len(fields) < 4 or fields[3][0] != 0x30:
        raise ValueError("no validity")
    validity = _children(der, fields[3][1], fields[3][2])
    if len(validity) != 2:
        raise ValueError("malformed validity")
    tag, value_start, value_end = validity[1]
    return _der_time(tag, der[value_start:value_end].decode("ascii"))


def _der_time(tag: int, text: str) -> float:
    if not text.endswith("Z"):
        raise ValueError(f"time without Z: {text!r}")
    digits = text[:-1]
    if tag == 0x17 and len(digits) == 12:  # UTCTime YYMMDDHHMMSS
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000
        rest = digits[2:]
    elif tag == 0x18 and len(digits) == 14:  # GeneralizedTime YYYYMMDDHHMMSS
        year = int(digits[:4])
        rest = digits[4:]
    else:
        raise ValueError(f"unsupported time {text!r}")
    if not rest.isdigit():
        raise ValueError(f"unsupported time {text!r}")
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


async def probe(check: CheckConfig, ctx: ProbeContext) -> Result:
    return await run(check, ctx, _handshake)
