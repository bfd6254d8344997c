"""kind: dns. Resolve a name and report every address, the lookup time and answer changes.

Without ``resolver`` the system resolver answers (``getaddrinfo``: /etc/hosts, nsswitch, the
resolv.conf servers), as it would for every other program on the machine. With
``resolver: host:port`` the prober sends its own queries over UDP to that server (falling
back to TCP for a truncated answer) and reads the A/AAAA records of the answer section, which
includes the ones a CNAME chain leads to. ``record_type`` picks A, AAAA or both (``any``);
``any`` succeeds when either family has an address.

The DNS wire format needed here is small (one question, A/AAAA answers), so it is written
out below instead of adding a dependency.

Failure reasons: dns (NXDOMAIN, no address of the wanted type, SERVFAIL, REFUSED, a
malformed answer), connect (the resolver cannot be reached: port unreachable, no route),
timeout (no answer within the check's timeout).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
import time
from dataclasses import dataclass

from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample, failure
from exporter.checks.resolve import (
    ResolveError,
    address_hash,
    budget,
    family_name,
    resolve,
    split_host_port,
)
from exporter.config import CheckConfig

REASONS = ("dns", "connect", "timeout")
TYPE_A, TYPE_AAAA = 1, 28
QTYPES = {"a": (TYPE_A,), "aaaa": (TYPE_AAAA,), "any": (TYPE_A, TYPE_AAAA)}
TYPE_NAMES = {TYPE_A: "A", TYPE_AAAA: "AAAA"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
RETRANSMIT = 1.0  # seconds before a UDP query is sent again
MAX_UDP = 4096
MEMO_KEY = "dns_addresses"


class DnsError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Answer:
    rcode: int
    truncated: bool
    addresses: tuple[str, ...]


# -- wire format (RFC 1035 section 4) ------------------------------------------------------------


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive query for one name and type."""
    try:
        encoded = name.rstrip(".").encode("idna")
    except UnicodeError:
        raise DnsError("dns", f"{name} is not a valid host name") from None
    question = b""
    for label in encoded.split(b"."):
        if not 0 < len(label) < 64:
            raise DnsError("dns", f"{name} is not a valid host name")
        question += bytes([len(label)]) + label
    question += b"\x00" + struct.pack("!HH", qtype, 1)
    if len(question) > 260:
        raise DnsError("dns", f"{name} is too long for DNS")
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + question


def _skip_name(data: bytes, offset: int) -> int:
    """Offset just past the (possibly compressed) name at ``offset``."""
    for _ in range(128):  # a name has at most 127 labels
        if offset >= len(data):
            raise DnsError("dns", "malformed answer: name runs past the end")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length & 0xC0:
            raise DnsError("dns", "malformed answer: bad label")
        offset += 1 + length
    raise DnsError("dns", "malformed answer: name too long")


def decode_response(data: bytes, qid: int) -> Answer | None:
    """The A/AAAA addresses of a response, or None if it is not the answer to ``qid``."""
    if len(data) < 12:
        return None
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!6H", data[:12])
    if rid != qid or not flags & 0x8000:
        return None
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses: list[str] = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        if offset + 10 > len(data):
            raise DnsError("dns", "malformed answer: truncated record")
        rtype, _, _, rdlength = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        rdata = data[offset:offset + rdlength]
        if len(rdata) != rdlength:
            raise DnsError("dns", "malformed answer: truncated record data")
        offset += rdlength
        if rtype == TYPE_A and rdlength == 4:
            addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPE_AAAA and rdlength == 16:
            addresses.append(str(ipaddress.IPv6Address(rdata)))
    return Answer(flags & 0x000F, bool(flags & 0x0200), tuple(addresses))


# -- transport ---------------------------------------------------------------------------------


async def _query_udp(server: tuple[str, int], query: bytes, qid: int) -> Answer:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(server)  # the kernel then drops datagrams from anyone else
            while True:
                await loop.sock_sendall(sock, query)
                try:
                    async with asyncio.timeout(RETRANSMIT):
                        while True:
                            answer = decode_response(await loop.sock_recv(sock, MAX_UDP), qid)
                            if answer is not None:
                                return answer
                except TimeoutError:
                    continue  # resend; the caller's deadline ends the loop
        except OSError as exc:
            raise DnsError("connect", f"resolver {server[0]} port {server[1]}: "
                                      f"{exc.strerror or exc.__class__.__name__}") from None


async def _query_tcp(server: tuple[str, int], query: bytes, qid: int) -> Answer:
    try:
        reader, writer = await asyncio.open_connection(*server)
    except OSError as exc:
        raise DnsError("connect", f"resolver {server[0]} port {server[1]} over TCP: "
                                  f"{exc.strerror or exc.__class__.__name__}") from None
    try:
        writer.write(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        answer = decode_response(await reader.readexactly(length), qid)
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise DnsError("dns", f"resolver {server[0]} closed the TCP answer early: {exc}") from None
    finally:
        writer.close()
    if answer is None:
        raise DnsError("dns", "the TCP answer does not match the query")
    return answer


async def query(server: tuple[str, int], name: str, qtype: int) -> Answer:
    qid = secrets.randbits(16)
    message = encode_query(qid, name, qtype)
    answer = await _query_udp(server, message, qid)
    if answer.truncated:
        answer = await _query_tcp(server, message, qid)
    return answer


async def _resolve_with_server(check: CheckConfig, name: str,
                               ctx: ProbeContext) -> tuple[tuple[str, ...], float]:
    assert check.resolver is not None
    host, port = split_host_port(check.resolver)
    try:
        server_address = (await resolve(host)).addresses[0]
    except ResolveError as exc:
        raise DnsError("connect", f"resolver {exc}") from None
    qtypes = QTYPES[check.record_type]
    start = time.perf_counter()
    answers = await asyncio.gather(*(query((server_address, port), name, t) for t in qtypes))
    seconds = time.perf_counter() - start
    addresses: list[str] = []
    problems: list[str] = []
    for qtype, answer in zip(qtypes, answers, strict=True):
        rcode = RCODES.get(answer.rcode, f"RCODE{answer.rcode}")
        ctx.log(f"{TYPE_NAMES[qtype]} {name} @{check.resolver}: {rcode}, "
                f"{len(answer.addresses)} address(es)")
        if answer.rcode != 0:
            problems.append(f"{TYPE_NAMES[qtype]} {rcode}")
        addresses.extend(a for a in answer.addresses if a not in addresses)
    if not addresses:
        detail = ", ".join(problems) if problems else f"no {'/'.join(TYPE_NAMES[t] for t in qtypes)} records"
        raise DnsError("dns", f"{name} @{check.resolver}: {detail}")
    return tuple(addresses), seconds


async def _resolve_with_system(check: CheckConfig, name: str) -> tuple[tuple[str, ...], float]:
    ip_protocol = {"a": "ip4", "aaaa": "ip6", "any": "auto"}[check.record_type]
    try:
        resolved = await resolve(name, ip_protocol)
    except ResolveError as exc:
        raise DnsError("dns", str(exc)) from None
    return resolved.addresses, resolved.seconds


async def probe(check: CheckConfig, ctx: ProbeContext) -> Result:
    start = time.perf_counter()
    assert check.target is not None, "the config requires a target"
    name = check.target
    try:
        async with asyncio.timeout(budget(check)):
            if check.resolver:
                addresses, seconds = await _resolve_with_server(check, name, ctx)
            else:
                addresses, seconds = await _resolve_with_system(check, name)
    except DnsError as exc:
        ctx.log(exc.message)
        return failure(start, exc.reason, exc.message,
                       gauges=(Sample(m.PROBE_DNS_LOOKUP_TIME, time.perf_counter() - start),),
                       counters=(Sample(m.PROBE_DNS_ADDRESS_CHANGES, 0.0),))
    except TimeoutError:
        where = f" @{check.resolver}" if check.resolver else ""
        message = f"DNS lookup of {name}{where} timed out"
        ctx.log(message)
        return failure(start, "timeout", message,
                       counters=(Sample(m.PROBE_DNS_ADDRESS_CHANGES, 0.0),))

    current = sorted(addresses)
    previous = ctx.memo.get(MEMO_KEY)
    changed = previous is not None and previous != current
    ctx.memo[MEMO_KEY] = current
    ctx.log(f"{name} resolved to {', '.join(addresses)} in {seconds * 1000:.2f} ms"
            + (f" (changed from {', '.join(previous)})" if changed and previous else ""))
    gauges = [Sample(m.PROBE_DNS_LOOKUP_TIME, seconds),
              Sample(m.PROBE_IP_ADDR_HASH, address_hash(current))]
    gauges.extend(Sample(m.PROBE_DNS_ANSWERS, 1.0, {"address": a, "family": family_name(a)})
                  for a in current)
    return Result(True, time.perf_counter() - start, gauges=tuple(gauges),
                  counters=(Sample(m.PROBE_DNS_ADDRESS_CHANGES, 1.0 if changed else 0.0),),
                  details={"addresses": current, "changed": changed})
