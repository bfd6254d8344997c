"""kind: dns. Ask for ``target``'s records, check the response like blackbox_exporter does, and
track changes of the answer.

The DNS messages are dnspython's. Where the query goes:

- ``resolver: host[:port]``: straight to that server, over ``transport_protocol`` udp (the
  default; a truncated answer is asked again over TCP) or tcp, or over TLS with
  ``dns_over_tls: true`` (port 853 unless given; the certificate is checked against
  ``tls_config.server_name``, by default the resolver's host).
- no ``resolver``, a plain address lookup (``record_type`` a, aaaa or any, and none of the
  message options below): the system resolver (``getaddrinfo``: /etc/hosts, nsswitch, the
  resolv.conf servers), which is what every other program on the machine gets.
- no ``resolver`` otherwise: the nameservers of /etc/resolv.conf, read by dnspython, tried in
  order until one answers.

Checks on a response, in order: its rcode must be one of ``valid_rcodes`` (default NOERROR); a
NOERROR answer must hold a record of the asked type (following the CNAMEs in the answer); then
``validate_answer_rrs``, ``validate_authority_rrs`` and ``validate_additional_rrs``, with
blackbox's four regexp lists over each record in presentation form. ``record_type: any`` asks
for A and AAAA at once and succeeds when either has an address; every check applies to both
responses together.

Failure reasons: dns (an rcode outside valid_rcodes, no record of the asked type, a malformed
response), validation (a validate_*_rrs rule failed), connect (the resolver cannot be reached),
tls (the DNS-over-TLS handshake or certificate failed), timeout (no answer in time).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset

from exporter import metrics as m
from exporter.checks.base import ProbeContext, ProbeFailure, Result, Sample, failure
from exporter.checks.net.resolve import (
    ResolveError,
    address_hash,
    budget,
    family_name,
    ip_version,
    resolve,
    strip_brackets,
)
from exporter.checks.net.resources import REASON as LOCAL_RESOURCES
from exporter.checks.net.resources import local_resource_error
from exporter.config import DnsCheck, RRValidator

REASONS = ("dns", "validation", "connect", "tls", "timeout", "local_resources")
PHASES = ("resolve", "connect", "request")
RDTYPES: dict[str, tuple[dns.rdatatype.RdataType, ...]] = {
    "a": (dns.rdatatype.A,), "aaaa": (dns.rdatatype.AAAA,),
    "any": (dns.rdatatype.A, dns.rdatatype.AAAA), "cname": (dns.rdatatype.CNAME,),
    "mx": (dns.rdatatype.MX,), "txt": (dns.rdatatype.TXT,), "ns": (dns.rdatatype.NS,),
    "soa": (dns.rdatatype.SOA,), "srv": (dns.rdatatype.SRV,), "ptr": (dns.rdatatype.PTR,)}
ADDRESS_TYPES = ("a", "aaaa", "any")
MEMO_KEY = "dns_answer"


@dataclass
class Exchange:
    """What one run learnt: the responses (none for the system resolver) and the phases."""

    records: list[str] = field(default_factory=list)  # the asked type's data, answer section
    responses: list[dns.message.Message] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    seconds: float = 0.0  # the lookup itself: connect + request, or getaddrinfo's time
    server: str = ""  # where the query went, for messages
    notes: list[str] = field(default_factory=list)  # for the probe's log


def uses_messages(check: DnsCheck) -> bool:
    """Whether the check needs the DNS response itself (else getaddrinfo may answer)."""
    return bool(check.resolver or check.record_type not in ADDRESS_TYPES
                or check.valid_rcodes != ("NOERROR",) or check.validate_answer_rrs
                or check.validate_authority_rrs or check.validate_additional_rrs
                or check.transport_protocol != "udp" or check.dns_over_tls)


def query_name(check: DnsCheck) -> dns.name.Name:
    assert check.target is not None, "the config requires a target"
    target = strip_brackets(check.target)
    if check.record_type == "ptr":
        try:  # an address stands for its reverse name
            return dns.reversename.from_address(str(ipaddress.ip_address(target)))
        except ValueError:
            pass
    try:
        return dns.name.from_text(target)
    except (dns.exception.DNSException, UnicodeError):
        raise ProbeFailure("dns", f"{check.target} is not a valid DNS name") from None


# -- where the query goes ---------------------------------------------------------------------


def resolver_address(text: str, default_port: int) -> tuple[str, int]:
    """The host and port of a ``resolver`` value (host, host:port, [v6] or [v6]:port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = text.partition(":")
    return host, int(port) if sep else default_port


async def _servers(check: DnsCheck, exchange: Exchange) -> list[tuple[str, int]]:
    if check.resolver:
        host, port = resolver_address(check.resolver, 853 if check.dns_over_tls else 53)
        try:
            resolved = await resolve(host)
        except ResolveError as exc:
            raise ProbeFailure("connect", f"resolver {exc}") from None
        exchange.phases["resolve"] = resolved.seconds
        return [(resolved.addresses[0], port)]
    try:
        system = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        raise ProbeFailure("connect", "no nameserver in /etc/resolv.conf") from None
    ports = system.nameserver_ports
    return [(str(ns), ports.get(str(ns), system.port)) for ns in system.nameservers]


def _ssl_context(check: DnsCheck) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=check.tls.ca_file)
    context.set_alpn_protocols(["dot"])
    if check.tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _exchange_one(check: DnsCheck, query: dns.message.Message, address: str, port: int,
                        allowed: float, phases: dict[str, float], notes: list[str],
                        ) -> dns.message.Message:
    """One query to one server over the check's transport; the phases are added up."""
    backend = dns.asyncbackend.get_backend("asyncio")
    family = socket.AF_INET6 if ip_version(address) == 6 else socket.AF_INET
    started = time.perf_counter()
    if check.transport_protocol == "udp":
        # A connected socket, unlike dnspython's own on Linux, hears the ICMP "port
        # unreachable" of a resolver that is down, so that reads as connect, not a timeout.
        udp = await backend.make_socket(  # type: ignore[no-untyped-call]
            family, socket.SOCK_DGRAM, 0, None, (address, port))
        async with udp:
            response, over_tcp = await dns.asyncquery.udp_with_fallback(
                query, address, timeout=allowed, port=port, udp_sock=udp, backend=backend,
                # Like a stub resolver, skip datagrams that are not a well-formed answer to
                # this query (spoofed, stray or broken) and wait for the real one.
                ignore_unexpected=True, ignore_errors=True)
        phases["request"] += time.perf_counter() - started
        if over_tcp:
            notes.append(f"{dns.rdatatype.to_text(query.question[0].rdtype)}: the UDP answer "
                         "was truncated, asked again over TCP")
        return response
    context, server_name = None, None
    if check.dns_over_tls:
        context = _ssl_context(check)
        assert check.resolver is not None, "the config requires a resolver for DNS over TLS"
        server_name = check.tls.server_name or resolver_address(check.resolver, port)[0]
    # dnspython's own connect, made here so that the connect phase can be timed apart.
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]
        family, socket.SOCK_STREAM, 0, None, (address, port), allowed, context, server_name)
    connected = time.perf_counter()
    phases["connect"] += connected - started
    async with sock:
        remaining = max(0.001, allowed - (connected - started))
        if check.dns_over_tls:
            response = await dns.asyncquery.tls(query, address, timeout=remaining, port=port,
                                                sock=sock, backend=backend)
        else:
            response = await dns.asyncquery.tcp(query, address, timeout=remaining, port=port,
                                                sock=sock, backend=backend)
    phases["request"] += time.perf_counter() - connected
    return response


async def _ask(check: DnsCheck, server: tuple[str, int], name: dns.name.Name,
               allowed: float, exchange: Exchange) -> None:
    """Every query of the check (A and AAAA at once for ``any``) to one server."""
    address, port = server
    where = f"{address} port {port}"
    phases = [dict.fromkeys(PHASES, 0.0) for _ in RDTYPES[check.record_type]]
    queries = [dns.message.make_query(name, rdtype) for rdtype in RDTYPES[check.record_type]]
    try:
        responses = await asyncio.gather(*(
            _exchange_one(check, q, address, port, allowed, p, exchange.notes)
            for q, p in zip(queries, phases, strict=True)))
    except ssl.SSLError as exc:
        raise ProbeFailure("tls", f"TLS with {where}: {exc.reason or exc}") from None
    except (dns.exception.Timeout, TimeoutError):
        raise ProbeFailure("timeout", f"no answer from {where} in time") from None
    except (EOFError, ConnectionResetError):
        raise ProbeFailure("dns", f"{where} closed the connection before answering") from None
    except OSError as exc:
        if (local := local_resource_error(exc)) is not None:  # EMFILE: ours, not the resolver's
            raise ProbeFailure(LOCAL_RESOURCES, local) from None
        raise ProbeFailure("connect", f"{where}: {exc.strerror or exc.__class__.__name__}") from None
    except dns.exception.DNSException as exc:
        raise ProbeFailure("dns", f"malformed answer from {where}: {exc}") from None
    for phase in ("connect", "request"):  # concurrent queries: the slower one's time
        exchange.phases[phase] = max(p[phase] for p in phases)
    exchange.seconds = exchange.phases["connect"] + exchange.phases["request"]
    exchange.responses = list(responses)
    exchange.server = where


async def _query(check: DnsCheck, exchange: Exchange, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    name = query_name(check)
    servers = await _servers(check, exchange)
    if not servers:
        raise ProbeFailure("connect", "no nameserver in /etc/resolv.conf")
    for index, server in enumerate(servers):
        remaining = deadline - loop.time()
        last = index == len(servers) - 1
        # Each server of resolv.conf gets an equal share of what is left; the last gets it all.
        timeout = remaining if last else remaining / (len(servers) - index)
        try:
            await _ask(check, server, name, max(0.001, timeout), exchange)
            return
        except ProbeFailure as exc:
            if last or exc.reason not in ("connect", "timeout"):
                raise


async def _system(check: DnsCheck, exchange: Exchange) -> None:
    assert check.target is not None, "the config requires a target"
    ip_protocol = {"a": "ip4", "aaaa": "ip6", "any": "auto"}[check.record_type]
    resolved = await resolve(check.target, ip_protocol)  # a ResolveError is reason dns
    exchange.records = list(resolved.addresses)
    exchange.seconds = exchange.phases["request"] = resolved.seconds
    exchange.server = "the system resolver"


# -- checks on the response --------------------------------------------------------------------


def _lines(sections: Sequence[Sequence[dns.rrset.RRset]]) -> list[str]:
    """Each record in presentation form, one per line, as the validators see them."""
    return [line for section in sections for rrset in section
            for line in rrset.to_text().splitlines()]


def validate_rrs(lines: list[str], rules: RRValidator) -> str | None:
    """blackbox_exporter's rules for one section; the first broken one, or None."""
    if not lines and rules.fail_if_not_matches_regexp:
        return "no records, but fail_if_not_matches_regexp is set"
    if not lines and rules.fail_if_none_matches_regexp:
        return "no records, but fail_if_none_matches_regexp is set"
    for pattern in rules.fail_if_matches_regexp:
        hit = next((line for line in lines if re.search(pattern, line)), None)
        if hit is not None:
            return f"{hit!r} matches fail_if_matches_regexp {pattern!r}"
    for pattern in rules.fail_if_not_matches_regexp:
        miss = next((line for line in lines if not re.search(pattern, line)), None)
        if miss is not None:
            return f"{miss!r} does not match fail_if_not_matches_regexp {pattern!r}"
    if rules.fail_if_all_match_regexp and lines and all(
            re.search(pattern, line) for line in lines
            for pattern in rules.fail_if_all_match_regexp):
        return "every record matches fail_if_all_match_regexp"
    if rules.fail_if_none_matches_regexp and not any(
            re.search(pattern, line) for line in lines
            for pattern in rules.fail_if_none_matches_regexp):
        return "no record matches fail_if_none_matches_regexp"
    return None


def _records(response: dns.message.Message, rdtype: dns.rdatatype.RdataType) -> list[str]:
    return [rdata.to_text() for rrset in response.answer if rrset.rdtype == rdtype
            for rdata in rrset]


def _check(check: DnsCheck, exchange: Exchange) -> None:
    """Raise ProbeFailure unless the responses pass every check; fills ``exchange.records``."""
    wanted = RDTYPES[check.record_type]
    rcodes: list[str] = []
    for rdtype, response in zip(wanted, exchange.responses, strict=True):
        rcode = dns.rcode.to_text(response.rcode())
        rcodes.append(rcode)
        if rcode not in check.valid_rcodes:
            raise ProbeFailure("dns", f"{dns.rdatatype.to_text(rdtype)} {query_name(check)} "
                                  f"@{exchange.server}: {rcode} (valid: "
                                  f"{', '.join(check.valid_rcodes)})")
        exchange.records.extend(r for r in _records(response, rdtype)
                                if r not in exchange.records)
    if not exchange.records and "NOERROR" in rcodes:
        kinds = "/".join(dns.rdatatype.to_text(t) for t in wanted)
        raise ProbeFailure("dns", f"{query_name(check)} @{exchange.server}: no {kinds} records")
    for section, rules in (("answer", check.validate_answer_rrs),
                           ("authority", check.validate_authority_rrs),
                           ("additional", check.validate_additional_rrs)):
        if not rules:
            continue
        broken = validate_rrs(_lines([getattr(r, section) for r in exchange.responses]), rules)
        if broken is not None:
            raise ProbeFailure("validation", f"validate_{section}_rrs: {broken}")


# -- the prober ----------------------------------------------------------------------------------


def _message_gauges(exchange: Exchange, succeeded: bool) -> list[Sample]:
    gauges = [Sample(m.PROBE_DNS_DURATION, exchange.phases[p], {"phase": p}) for p in PHASES]
    gauges.append(Sample(m.PROBE_DNS_QUERY_SUCCEEDED, 1.0 if succeeded else 0.0))
    responses = exchange.responses
    if responses:
        gauges += [Sample(m.PROBE_DNS_ANSWER_RRS, float(sum(len(s) for r in responses
                                                                for s in r.answer))),
                   Sample(m.PROBE_DNS_AUTHORITY_RRS, float(sum(len(s) for r in responses
                                                                   for s in r.authority))),
                   Sample(m.PROBE_DNS_ADDITIONAL_RRS, float(sum(len(s) for r in responses
                                                                    for s in r.additional)))]
        serials = [rdata.serial for r in responses for rrset in r.answer
                   if rrset.rdtype == dns.rdatatype.SOA for rdata in rrset]
        if serials:
            gauges.append(Sample(m.PROBE_DNS_SERIAL, float(serials[0])))
    return gauges


async def probe(check: DnsCheck, ctx: ProbeContext) -> Result:
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget(check)
    exchange = Exchange()
    no_change = (Sample(m.PROBE_DNS_ADDRESS_CHANGES, 0.0),)
    try:
        async with asyncio.timeout(max(0.0, deadline - loop.time())):
            if uses_messages(check):
                await _query(check, exchange, deadline)
                for note in exchange.notes:
                    ctx.log(note)
                for response in exchange.responses:
                    ctx.log(f"response from {exchange.server}:\n{response.to_text()}")
                _check(check, exchange)
            else:
                await _system(check, exchange)
    except ProbeFailure as exc:
        ctx.log(exc.error)
        gauges = [Sample(m.PROBE_DNS_LOOKUP_TIME, exchange.seconds
                         or time.perf_counter() - start),
                  *_message_gauges(exchange, bool(exchange.responses))]
        return failure(start, exc.reason, exc.error, gauges=tuple(gauges), counters=no_change)
    except TimeoutError:
        where = f" @{check.resolver}" if check.resolver else ""
        message = f"DNS lookup of {check.target}{where} timed out"
        ctx.log(message)
        return failure(start, "timeout", message,
                       gauges=tuple(_message_gauges(exchange, False)), counters=no_change)

    current = sorted(exchange.records)
    remembered = ctx.memo.get(MEMO_KEY)
    previous = remembered if isinstance(remembered, list) else None
    changed = previous is not None and previous != current
    ctx.memo[MEMO_KEY] = current
    ctx.log(f"{check.target} ({check.record_type}) @{exchange.server}: {', '.join(current)} in "
            f"{exchange.seconds * 1000:.2f} ms"
            + (f" (changed from {', '.join(previous)})" if changed and previous else ""))
    gauges = [Sample(m.PROBE_DNS_LOOKUP_TIME, exchange.seconds),
              *_message_gauges(exchange, True)]
    if check.record_type in ADDRESS_TYPES:
        gauges.append(Sample(m.PROBE_IP_ADDR_HASH, address_hash(current)))
        gauges.extend(Sample(m.PROBE_DNS_ANSWERS, 1.0, {"address": a, "family": family_name(a)})
                      for a in current)
    key = "addresses" if check.record_type in ADDRESS_TYPES else "records"
    return Result(True, time.perf_counter() - start, gauges=tuple(gauges),
                  counters=(Sample(m.PROBE_DNS_ADDRESS_CHANGES, 1.0 if changed else 0.0),),
                  details={key: current, "changed": changed})
