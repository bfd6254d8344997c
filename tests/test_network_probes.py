"""The dns, tcp, tls and icmp probers, called directly against real servers on loopback.

Names are never looked up through the system resolver here except ``localhost`` (in
/etc/hosts), because any other name would leave the machine; the dns prober's own queries go
to a real dnsmasq on loopback. Namespaced hosts and failure modes that need them are in
test_netns.py.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exporter import icmp_mode
from exporter import metrics as m
from exporter.checks import ProbeContext, Result, dns, icmp, tcp, tls
from exporter.checks.resolve import ResolveError, address_hash, resolve, split_host_port
from exporter.config import CheckConfig
from tests.conftest import free_port, require, require_binary

# -- helpers -----------------------------------------------------------------------------------


def gauge(result: Result, spec: m.MetricSpec, **labels: str) -> float | None:
    found = [s.value for s in result.gauges
             if s.metric == spec and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{spec.name}{labels}: {found}"
    return found[0] if found else None


def counter(result: Result, spec: m.MetricSpec) -> float:
    (value,) = [s.value for s in result.counters if s.metric == spec]
    return value


def check(kind: str, **options: object) -> CheckConfig:
    return CheckConfig(upstream="test", name=f"{kind}-check", kind=kind, timeout=2.0,
                       **options)  # type: ignore[arg-type]


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    async with aiohttp.ClientSession() as session:
        yield ProbeContext(session, logging.getLogger("test.network"))


@pytest.fixture
async def tcp_port() -> AsyncIterator[int]:
    """A loopback listener that accepts and closes."""
    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on: a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


# -- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "ip_protocol", "addresses"), [
    ("127.0.0.1", "auto", ("127.0.0.1",)),
    ("127.0.0.1", "ip4", ("127.0.0.1",)),
    ("::1", "ip6", ("::1",)),
    ("[::1]", "auto", ("::1",)),
    ("localhost", "ip4", ("127.0.0.1",)),
])
async def test_resolve_returns_addresses(host: str, ip_protocol: str,
                                         addresses: tuple[str, ...]) -> None:
    resolved = await resolve(host, ip_protocol)
    assert resolved.addresses == addresses
    assert resolved.seconds >= 0


@pytest.mark.parametrize(("host", "ip_protocol"), [("127.0.0.1", "ip6"), ("::1", "ip4")])
async def test_resolve_refuses_a_literal_of_the_wrong_family(host: str, ip_protocol: str) -> None:
    with pytest.raises(ResolveError, match="ip_protocol"):
        await resolve(host, ip_protocol)


@pytest.mark.parametrize(("target", "expected"), [
    ("example.test:443", ("example.test", 443)),
    ("[2001:db8::1]:8443", ("2001:db8::1", 8443)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
])
def test_split_host_port(target: str, expected: tuple[str, int]) -> None:
    assert split_host_port(target) == expected


def test_address_hash_ignores_order_and_sees_changes() -> None:
    assert address_hash(["198.18.0.1", "198.18.0.2"]) == address_hash(["198.18.0.2", "198.18.0.1"])
    assert address_hash(["198.18.0.1"]) != address_hash(["198.18.0.2"])
    assert 0 <= address_hash(["::1"]) < 2**32


# -- tcp ----------------------------------------------------------------------------------------


async def test_tcp_connects_and_times_phases(ctx: ProbeContext, tcp_port: int) -> None:
    result = await tcp.probe(check("tcp", target=f"127.0.0.1:{tcp_port}"), ctx)
    assert result.success, result.error
    assert result.reason == ""
    connect = gauge(result, m.PROBE_TCP_CONNECT)
    assert connect is not None and 0 < connect < result.duration_seconds
    assert gauge(result, m.PROBE_IP_PROTOCOL) == 4
    assert gauge(result, m.PROBE_DNS_LOOKUP_TIME) == 0  # a literal needs no lookup
    assert any("connected to 127.0.0.1" in line for line in ctx.lines)


async def test_tcp_refused_is_reason_connect(ctx: ProbeContext) -> None:
    result = await tcp.probe(check("tcp", target=f"127.0.0.1:{closed_port()}"), ctx)
    assert not result.success
    assert result.reason == "connect"
    assert "connection refused" in result.error
    assert gauge(result, m.PROBE_TCP_CONNECT) is None


async def test_tcp_over_ipv6(ctx: ProbeContext) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "::1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await tcp.probe(check("tcp", target=f"[::1]:{port}"), ctx)
    finally:
        server.close()
    assert result.success, result.error
    assert gauge(result, m.PROBE_IP_PROTOCOL) == 6


async def test_tcp_ip_protocol_mismatch_is_reason_dns(ctx: ProbeContext, tcp_port: int) -> None:
    result = await tcp.probe(check("tcp", target=f"127.0.0.1:{tcp_port}", ip_protocol="ip6"), ctx)
    assert (result.success, result.reason) == (False, "dns")


async def test_tcp_per_address_reports_each_address(ctx: ProbeContext, tcp_port: int) -> None:
    result = await tcp.probe(check("tcp", target=f"localhost:{tcp_port}", ip_protocol="ip4",
                                   per_address=True), ctx)
    assert result.success, result.error
    assert gauge(result, m.PROBE_ADDRESS_SUCCESS, address="127.0.0.1") == 1
    assert result.details["failed_addresses"] == []


# -- tls ------------------------------------------------------------------------------------------


@dataclass
class TlsServer:
    port: int
    ca: trustme.CA
    ca_file: Path
    chain: list[x509.Certificate]


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


async def start_tls_server(leaf: trustme.LeafCert, versions: tuple[ssl.TLSVersion, ...] = (),
                           ) -> asyncio.Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    if versions:
        context.minimum_version, context.maximum_version = versions[0], versions[-1]

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


@pytest.fixture
async def tls_server(ca: tuple[trustme.CA, Path]) -> AsyncIterator[TlsServer]:
    authority, path = ca
    intermediate = authority.create_child_ca()
    leaf = intermediate.issue_cert("probe.test", "127.0.0.1",
                                   not_after=datetime.datetime(2031, 5, 6, 7, 8, 9))
    server = await start_tls_server(leaf)
    chain = [x509.load_pem_x509_certificate(p.bytes()) for p in leaf.cert_chain_pems]
    yield TlsServer(int(server.sockets[0].getsockname()[1]), authority, path, chain)
    server.close()


async def test_tls_handshake_version_and_earliest_expiry(ctx: ProbeContext,
                                                         tls_server: TlsServer) -> None:
    result = await tls.probe(check("tls", target=f"127.0.0.1:{tls_server.port}",
                                   server_name="probe.test", ca_file=str(tls_server.ca_file)),
                             ctx)
    assert result.success, result.error
    handshake = gauge(result, m.PROBE_TLS_HANDSHAKE)
    assert handshake is not None and handshake > 0
    assert gauge(result, m.PROBE_TLS_VERSION_INFO, version="TLS 1.3") == 1
    assert len(tls_server.chain) == 2  # leaf and intermediate are both presented
    earliest = min(c.not_valid_after_utc for c in tls_server.chain).timestamp()
    assert gauge(result, m.PROBE_SSL_EARLIEST_CERT_EXPIRY) == earliest
    assert earliest == datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC).timestamp()


async def test_tls_reports_the_negotiated_version(ctx: ProbeContext,
                                                  ca: tuple[trustme.CA, Path]) -> None:
    authority, path = ca
    server = await start_tls_server(authority.issue_cert("127.0.0.1"),
                                    (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
    try:
        port = server.sockets[0].getsockname()[1]
        result = await tls.probe(check("tls", target=f"127.0.0.1:{port}", ca_file=str(path)), ctx)
    finally:
        server.close()
    assert result.success, result.error
    assert gauge(result, m.PROBE_TLS_VERSION_INFO, version="TLS 1.2") == 1


@pytest.mark.parametrize(("options", "message"), [
    ({}, "unable to get local issuer certificate"),  # the system CAs do not know the test CA
    ({"server_name": "other.test", "ca_file": "CA"}, "Hostname mismatch"),
    ({"ca_file": "/nonexistent/ca.pem"}, "cannot load ca_file"),
])
async def test_tls_verification_failure_is_reason_tls(ctx: ProbeContext, tls_server: TlsServer,
                                                      options: dict[str, str],
                                                      message: str) -> None:
    if options.get("ca_file") == "CA":
        options = {**options, "ca_file": str(tls_server.ca_file)}
    result = await tls.probe(check("tls", target=f"127.0.0.1:{tls_server.port}", **options), ctx)
    assert (result.success, result.reason) == (False, "tls")
    assert message in result.error


async def test_tls_expired_certificate_fails_verification_but_not_when_skipped(
        ctx: ProbeContext, ca: tuple[trustme.CA, Path]) -> None:
    authority, path = ca
    expired = datetime.datetime(2020, 2, 3, 4, 5, 6)
    server = await start_tls_server(authority.issue_cert("127.0.0.1", not_after=expired))
    try:
        port = server.sockets[0].getsockname()[1]
        verified = await tls.probe(check("tls", target=f"127.0.0.1:{port}", ca_file=str(path)),
                                   ctx)
        skipped = await tls.probe(check("tls", target=f"127.0.0.1:{port}",
                                        insecure_skip_verify=True), ctx)
    finally:
        server.close()
    assert (verified.success, verified.reason) == (False, "tls")
    assert "expired" in verified.error
    assert skipped.success, skipped.error
    assert gauge(skipped, m.PROBE_SSL_EARLIEST_CERT_EXPIRY) == \
        expired.replace(tzinfo=datetime.UTC).timestamp()


async def test_tls_against_a_plain_tcp_server_is_reason_tls(ctx: ProbeContext,
                                                            tcp_port: int) -> None:
    result = await tls.probe(check("tls", target=f"127.0.0.1:{tcp_port}"), ctx)
    assert (result.success, result.reason) == (False, "tls")


async def test_tls_refused_is_reason_connect(ctx: ProbeContext) -> None:
    result = await tls.probe(check("tls", target=f"127.0.0.1:{closed_port()}"), ctx)
    assert (result.success, result.reason) == (False, "connect")


@pytest.mark.parametrize("year", [2031, 2049, 2050, 2999])  # UTCTime until 2049, then Generalized
def test_not_after_reads_both_der_time_forms(ca: tuple[trustme.CA, Path], year: int) -> None:
    authority, _ = ca
    leaf = authority.issue_cert("x.test", not_after=datetime.datetime(year, 12, 31, 23, 59, 58))
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
        Encoding.DER)
    expected = datetime.datetime(year, 12, 31, 23, 59, 58, tzinfo=datetime.UTC).timestamp()
    assert tls.not_after(der) == expected


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"\x02\x01\x00", b"\x30\x84"])
def test_not_after_rejects_garbage(der: bytes) -> None:
    with pytest.raises(ValueError):
        tls.not_after(der)


# -- dns ------------------------------------------------------------------------------------------


@dataclass
class Dnsmasq:
    port: int
    hosts: Path
    proc: subprocess.Popen[bytes]

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_hosts(self, text: str) -> None:
        """Replace the served names and make dnsmasq re-read them (SIGHUP)."""
        self.hosts.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)


MANY = 60  # more A records than fit in a 512-byte UDP answer: forces the TCP fallback


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    binary = require_binary("dnsmasq")
    hosts = tmp_path / "hosts"
    many = "".join(f"198.18.{i // 250}.{i % 250 + 1} many.test\n" for i in range(MANY))
    hosts.write_text("198.18.0.1 two.test\n198.18.0.2 two.test\n2001:db8::5 v6.test\n" + many)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--keep-in-foreground", "--no-daemon", f"--port={port}",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
         "--no-poll", f"--addn-hosts={hosts}", "--local=/test/", "--local=/invalid/",
         "--user=root", "--group=root", "--pid-file=", "--cache-size=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Dnsmasq(port, hosts, proc)
    deadline = time.monotonic() + 10
    while True:  # ready when it answers a query
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(dns.encode_query(1, "two.test", dns.TYPE_A), ("127.0.0.1", port))
            try:
                s.recv(512)
                break
            except OSError:
                pass
        assert proc.poll() is None, "dnsmasq exited"
        assert time.monotonic() < deadline, "dnsmasq did not answer"
    yield server
    proc.terminate()
    proc.wait(5)


@pytest.mark.parametrize(("name", "record_type", "addresses"), [
    ("two.test", "a", ["198.18.0.1", "198.18.0.2"]),
    ("two.test", "any", ["198.18.0.1", "198.18.0.2"]),
    ("v6.test", "aaaa", ["2001:db8::5"]),
    ("v6.test", "any", ["2001:db8::5"]),
])
async def test_dns_with_resolver_reports_every_answer(ctx: ProbeContext, dnsmasq: Dnsmasq,
                                                      name: str, record_type: str,
                                                      addresses: list[str]) -> None:
    result = await dns.probe(check("dns", target=name, resolver=dnsmasq.resolver,
                                   record_type=record_type), ctx)
    assert result.success, result.error
    answers = {s.labels["address"]: s.labels["family"] for s in result.gauges
               if s.metric == m.PROBE_DNS_ANSWERS}
    assert sorted(answers) == addresses
    assert set(answers.values()) == {"ipv6" if ":" in addresses[0] else "ipv4"}
    assert gauge(result, m.PROBE_IP_ADDR_HASH) == address_hash(addresses)
    lookup = gauge(result, m.PROBE_DNS_LOOKUP_TIME)
    assert lookup is not None and 0 < lookup < 1


async def test_dns_truncated_answer_falls_back_to_tcp(ctx: ProbeContext, dnsmasq: Dnsmasq) -> None:
    result = await dns.probe(check("dns", target="many.test", resolver=dnsmasq.resolver,
                                   record_type="a"), ctx)
    assert result.success, result.error
    assert len(result.details["addresses"]) == MANY


@pytest.mark.parametrize(("name", "record_type", "message"), [
    ("nothing.invalid", "any", "NXDOMAIN"),
    ("v6.test", "a", "no A records"),
    ("two.test", "aaaa", "no AAAA records"),
])
async def test_dns_without_answer_is_reason_dns(ctx: ProbeContext, dnsmasq: Dnsmasq, name: str,
                                                record_type: str, message: str) -> None:
    result = await dns.probe(check("dns", target=name, resolver=dnsmasq.resolver,
                                   record_type=record_type), ctx)
    assert (result.success, result.reason) == (False, "dns")
    assert message in result.error


async def test_dns_silent_resolver_is_reason_timeout(ctx: ProbeContext, silent_udp: int) -> None:
    start = time.monotonic()
    result = await dns.probe(CheckConfig("test", "d", "dns", target="two.test", timeout=0.5,
                                         resolver=f"127.0.0.1:{silent_udp}"), ctx)
    assert (result.success, result.reason) == (False, "timeout")
    assert time.monotonic() - start < 0.6


async def test_dns_closed_resolver_port_is_reason_connect(ctx: ProbeContext) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await dns.probe(check("dns", target="two.test", resolver=f"127.0.0.1:{port}"), ctx)
    assert (result.success, result.reason) == (False, "connect")


async def test_dns_counts_address_changes(ctx: ProbeContext, dnsmasq: Dnsmasq) -> None:
    probe_check = check("dns", target="two.test", resolver=dnsmasq.resolver, record_type="a")
    first = await dns.probe(probe_check, ctx)
    same = await dns.probe(probe_check, ctx)
    dnsmasq.set_hosts("198.18.0.1 two.test\n198.18.0.3 two.test\n")
    changed = await dns.probe(probe_check, ctx)
    assert [counter(r, m.PROBE_DNS_ADDRESS_CHANGES) for r in (first, same, changed)] == [0, 0, 1]
    assert gauge(first, m.PROBE_IP_ADDR_HASH) == gauge(same, m.PROBE_IP_ADDR_HASH)
    assert gauge(changed, m.PROBE_IP_ADDR_HASH) != gauge(first, m.PROBE_IP_ADDR_HASH)
    assert gauge(changed, m.PROBE_DNS_ANSWERS, address="198.18.0.3") == 1
    assert gauge(changed, m.PROBE_DNS_ANSWERS, address="198.18.0.2") is None


async def test_dns_system_resolver_reads_hosts(ctx: ProbeContext) -> None:
    result = await dns.probe(check("dns", target="localhost", record_type="a"), ctx)
    assert result.success, result.error
    assert gauge(result, m.PROBE_DNS_ANSWERS, address="127.0.0.1", family="ipv4") == 1


@pytest.mark.parametrize("name", ["two.test", "Two.Test.", "a-b.c_d.test"])
def test_dns_query_encoding_round_trips_through_the_decoder(name: str) -> None:
    query = dns.encode_query(0x1234, name, dns.TYPE_AAAA)
    # A query is not a response: the decoder must not take it for one.
    assert dns.decode_response(query, 0x1234) is None
    response = bytes([0x12, 0x34, 0x81, 0x80]) + query[4:]
    answer = dns.decode_response(response, 0x1234)
    assert answer is not None and answer.addresses == () and answer.rcode == 0
    assert dns.decode_response(response, 0x4321) is None  # another query's answer


@pytest.mark.parametrize("name", ["a" * 64 + ".test", "bad..name", "x" * 300])
def test_dns_rejects_names_dns_cannot_carry(name: str) -> None:
    with pytest.raises(dns.DnsError):
        dns.encode_query(1, name, dns.TYPE_A)


# -- icmp -----------------------------------------------------------------------------------------


def require_icmp() -> None:
    require(icmp_mode.detect() != "none", "no ICMP socket may be opened here (root or "
                                          "net.ipv4.ping_group_range needed)")


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
async def test_icmp_counts_packets_and_observes_each_rtt(ctx: ProbeContext, target: str) -> None:
    require_icmp()
    result = await icmp.probe(check("icmp", target=target, packets=5, packet_interval=0.01), ctx)
    assert result.success, result.error
    assert counter(result, m.PROBE_ICMP_SENT) == 5
    assert counter(result, m.PROBE_ICMP_RECEIVED) == 5
    rtts = [s.value for s in result.observations if s.metric == m.PROBE_ICMP_RTT]
    assert len(rtts) == 5
    assert all(0 < rtt < 0.5 for rtt in rtts)
    assert gauge(result, m.PROBE_IP_PROTOCOL) == (6 if ":" in target else 4)


async def test_icmp_sends_on_schedule(ctx: ProbeContext) -> None:
    require_icmp()
    start = time.monotonic()
    result = await icmp.probe(check("icmp", target="127.0.0.1", packets=4,
                                    packet_interval=0.1), ctx)
    elapsed = time.monotonic() - start
    assert result.success
    assert 0.3 <= elapsed < 0.6  # three gaps; no waiting once every reply is in


async def test_icmp_stops_sending_at_the_timeout(ctx: ProbeContext) -> None:
    require_icmp()
    result = await icmp.probe(CheckConfig("test", "i", "icmp", target="127.0.0.1", packets=50,
                                          packet_interval=0.05, timeout=0.5), ctx)
    sent = counter(result, m.PROBE_ICMP_SENT)
    assert 5 <= sent < 50
    assert counter(result, m.PROBE_ICMP_RECEIVED) == sent
    assert result.duration_seconds < 0.5
    assert any("timeout left time" in line for line in ctx.lines)


async def test_icmp_wrong_family_literal_is_reason_dns(ctx: ProbeContext) -> None:
    require_icmp()
    result = await icmp.probe(check("icmp", target="127.0.0.1", ip_protocol="ip6"), ctx)
    assert (result.success, result.reason) == (False, "dns")
    assert counter(result, m.PROBE_ICMP_SENT) == 0
