"""The dns, tcp, tls and icmp probers, called directly against real servers on loopback.

Names are never looked up through the system resolver here except ``localhost`` (in
/etc/hosts), because any other name would leave the machine; the dns prober's own queries go
to a real dnsmasq in a test namespace. Other namespaced hosts and failure modes are in
test_netns.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exporter import metrics as m
from exporter.checks import dns as dns_probe
from exporter.checks import icmp, tcp, tls
from exporter.checks.base import ProbeContext, Result
from exporter.checks.net import icmp_mode
from exporter.checks.net.resolve import ResolveError, address_hash, resolve, split_host_port
from exporter.config import CheckConfig, ConfigError, RRValidator, TlsConfig, load_text
from exporter.server import probe
from tests import netns
from tests.conftest import build_check, require, require_binary, require_root
from tests.netns import hosts

# -- helpers -----------------------------------------------------------------------------------


def gauge(result: Result, spec: m.MetricSpec, **labels: str) -> float | None:
    found = [s.value for s in result.gauges
             if s.metric == spec and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{spec.name}{labels}: {found}"
    return found[0] if found else None


def counter(result: Result, spec: m.MetricSpec) -> float:
    (value,) = [s.value for s in result.counters if s.metric == spec]
    return value


TLS_KEYS = {f.name for f in dataclasses.fields(TlsConfig)}


def check(kind: str, **options: object) -> CheckConfig:
    """A check; tls_config's keys (ca_file, server_name, ...) may be given flat."""
    tls_options = {k: options.pop(k) for k in list(options) if k in TLS_KEYS}
    if kind in ("tls", "dns"):  # the kinds whose models have tls_config
        options["tls"] = TlsConfig(**tls_options)  # type: ignore[arg-type]
    return build_check(upstream="test", name=f"{kind}-check", kind=kind, timeout=2.0, **options)


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
    ({"ca_file": "/nonexistent/ca.pem"}, "cannot read tls_config.ca_file"),
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


# -- dns: dnsmasq in a namespace, a TLS forwarder and a SERVFAIL responder on loopback ------------

BIG_TXT = [f"x{i:02d}" * 60 for i in range(4)]  # 720 bytes: over 512 without EDNS


@dataclass
class DnsLab:
    """dnsmasq inside a namespace on its veth address (recursive) and on the namespace's own
    127.0.0.2 (authoritative for zone.test, so NS and SOA exist)."""

    host: netns.TestHost
    moving: Path  # a hosts file the change-tracking test rewrites
    proc: subprocess.Popen[bytes]

    @property
    def resolver(self) -> str:
        return f"{self.host.ip}:53"

    def set_moving(self, text: str) -> None:
        """Replace moving.test's addresses and make dnsmasq re-read them (SIGHUP)."""
        self.moving.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            answer = ask(self.host.ip, "moving.test", "A")
            if sorted(r.to_text() for s in answer.answer for r in s) == sorted(text.split()[::2]):
                return
            time.sleep(0.05)
        raise AssertionError("dnsmasq did not pick up the new hosts file")


def ask(address: str, name: str, rdtype: str, port: int = 53) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), address, port=port, timeout=0.5)


@pytest.fixture(scope="module")
def dns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsLab]:
    require_root()
    require_binary("ip")
    binary = require_binary("dnsmasq")
    folder = tmp_path_factory.mktemp("dnsmasq")
    hosts = folder / "hosts"
    hosts.write_text("198.18.0.1 two.test\n198.18.0.2 two.test\n2001:db8::5 v6.test\n"
                     "198.18.0.9 mx1.test\n198.18.0.10 sip.test\n")
    moving = folder / "moving"
    moving.write_text("198.18.1.1 moving.test\n198.18.1.2 moving.test\n")
    with netns.Hosts() as made:
        host = made.new()
        proc = host.spawn(
            binary, "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null", "--port=53",
            f"--listen-address={host.ip}", "--listen-address=127.0.0.2", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--no-poll", "--cache-size=0", f"--addn-hosts={hosts}",
            f"--addn-hosts={moving}", "--local=/test/", "--local=/invalid/", "--user=root",
            "--group=root", "--pid-file=", "--cname=alias.test,two.test",
            "--mx-host=mail.test,mx1.test,10", "--txt-record=txt.test,v=spf1 -all",
            f"--txt-record=big.test,{','.join(BIG_TXT)}", "--srv-host=_sip._udp.test,sip.test,5060,0,10",
            "--auth-zone=zone.test", "--auth-server=ns1.zone.test,127.0.0.2",
            "--host-record=ns1.zone.test,198.18.0.53")
        deadline = time.monotonic() + 10
        while True:  # ready when it answers over the veth
            try:
                ask(host.ip, "two.test", "A")
                break
            except (OSError, dns.exception.Timeout):
                assert proc.poll() is None, "dnsmasq exited"
                assert time.monotonic() < deadline, "dnsmasq did not answer"
        yield DnsLab(host, moving, proc)


def dns_check(lab: DnsLab | None, name: str, record_type: str, **options: object) -> CheckConfig:
    if lab is not None:
        options.setdefault("resolver", lab.resolver)
    return check("dns", target=name, record_type=record_type, **options)


def records(result: Result) -> list[str]:
    key = "addresses" if "addresses" in result.details else "records"
    found: list[str] = result.details[key]
    return found


@pytest.mark.parametrize(("name", "record_type", "expected"), [
    ("two.test", "a", ["198.18.0.1", "198.18.0.2"]),
    ("two.test", "any", ["198.18.0.1", "198.18.0.2"]),
    ("v6.test", "aaaa", ["2001:db8::5"]),
    ("v6.test", "any", ["2001:db8::5"]),
    ("alias.test", "a", ["198.18.0.1", "198.18.0.2"]),  # through the CNAME
    ("alias.test", "cname", ["two.test."]),
    ("mail.test", "mx", ["10 mx1.test."]),
    ("txt.test", "txt", ['"v=spf1 -all"']),
    ("_sip._udp.test", "srv", ["0 10 5060 sip.test."]),
    ("zone.test", "ns", ["ns1.zone.test."]),
    ("zone.test", "soa", [r"ns1\.zone\.test\. hostmaster\.ns1\.zone\.test\. \d+ 1200 180 1209600 600"]),
    ("198.18.0.1", "ptr", ["two.test."]),  # an address stands for its reverse name
    ("1.0.18.198.in-addr.arpa", "ptr", ["two.test."]),
    ("BIG.test.", "txt", [" ".join(f'"{s}"' for s in BIG_TXT)]),  # truncated: asked over TCP
])
async def test_dns_reports_each_record_type(ctx: ProbeContext, dns_lab: DnsLab, name: str,
                                            record_type: str, expected: list[str]) -> None:
    result = await dns_probe.probe(dns_check(dns_lab, name, record_type), ctx)
    assert result.success, result.error
    got = records(result)
    assert len(got) == len(expected) and all(
        re.fullmatch(pattern if record_type == "soa" else re.escape(pattern), value)
        for pattern, value in zip(expected, got, strict=True)), got
    assert gauge(result, m.PROBE_DNS_QUERY_SUCCEEDED) == 1
    answer_rrs = gauge(result, m.PROBE_DNS_ANSWER_RRS)
    assert answer_rrs is not None and answer_rrs >= len(expected)
    if record_type in ("a", "aaaa", "any"):
        assert gauge(result, m.PROBE_IP_ADDR_HASH) == address_hash(expected)
        assert {s.labels["address"] for s in result.gauges if s.metric == m.PROBE_DNS_ANSWERS} \
            == set(expected)
    if record_type == "soa":
        serial = gauge(result, m.PROBE_DNS_SERIAL)
        assert serial is not None and serial > 0
    truncated = any("truncated" in line for line in ctx.lines)
    assert truncated == (name == "BIG.test.")


@pytest.mark.parametrize(("name", "record_type", "options", "reason", "message"), [
    ("nothing.test", "any", {}, "dns", "NXDOMAIN (valid: NOERROR)"),
    ("v6.test", "a", {}, "dns", "no A records"),
    ("two.test", "aaaa", {}, "dns", "no AAAA records"),
    ("two.test", "mx", {}, "dns", "no MX records"),
    ("two.test", "a", {"valid_rcodes": ["NXDOMAIN"]}, "dns", "NOERROR (valid: NXDOMAIN)"),
    ("nothing.test", "a", {"valid_rcodes": ["NXDOMAIN"]}, "", ""),
    ("nothing.test", "a", {"valid_rcodes": ["NOERROR", "NXDOMAIN"]}, "", ""),
])
async def test_dns_response_codes(ctx: ProbeContext, dns_lab: DnsLab, name: str,
                                  record_type: str, options: dict[str, object], reason: str,
                                  message: str) -> None:
    if "valid_rcodes" in options:
        options["valid_rcodes"] = tuple(options["valid_rcodes"])  # type: ignore[arg-type]
    result = await dns_probe.probe(dns_check(dns_lab, name, record_type, **options), ctx)
    assert (result.success, result.reason) == (not reason, reason)
    assert message in result.error
    assert gauge(result, m.PROBE_DNS_QUERY_SUCCEEDED) == 1  # an answer came, whatever it said


RULES = ("fail_if_matches_regexp", "fail_if_not_matches_regexp", "fail_if_all_match_regexp",
         "fail_if_none_matches_regexp")


@pytest.mark.parametrize(("name", "record_type", "section", "rule", "patterns", "passes"), [
    ("two.test", "a", "answer", "fail_if_matches_regexp", [r"198\.18\.0\.2$"], False),
    ("two.test", "a", "answer", "fail_if_matches_regexp", [r"10\.0\.0\.1$"], True),
    ("two.test", "a", "answer", "fail_if_not_matches_regexp", [r"198\.18\.0\.[12]$"], True),
    ("two.test", "a", "answer", "fail_if_not_matches_regexp", [r"198\.18\.0\.1$"], False),
    ("two.test", "a", "answer", "fail_if_all_match_regexp", [r"\sIN\s+A\s"], False),
    ("two.test", "a", "answer", "fail_if_all_match_regexp", [r"198\.18\.0\.1$"], True),
    ("two.test", "a", "answer", "fail_if_none_matches_regexp", [r"198\.18\.0\.2$"], True),
    ("two.test", "a", "answer", "fail_if_none_matches_regexp", [r"10\.0\.0\.1$"], False),
    ("zone.test", "soa", "authority", "fail_if_none_matches_regexp",
     [r"^zone\.test\. \d+ IN NS ns1\.zone\.test\.$"], True),
    ("two.test", "a", "authority", "fail_if_not_matches_regexp", [".*"], False),  # none there
    ("two.test", "a", "authority", "fail_if_matches_regexp", [".*"], True),
    ("mail.test", "mx", "additional", "fail_if_matches_regexp", [r"IN A 198\.18\.0\.9$"], False),
    ("mail.test", "mx", "additional", "fail_if_none_matches_regexp", [r"^mx1\.test\."], True),
])
async def test_dns_validators(ctx: ProbeContext, dns_lab: DnsLab, name: str, record_type: str,
                              section: str, rule: str, patterns: list[str], passes: bool) -> None:
    validator = RRValidator(**{rule: tuple(patterns)})
    result = await dns_probe.probe(dns_check(dns_lab, name, record_type,
                                       **{f"validate_{section}_rrs": validator}), ctx)
    assert result.success == passes, result.error
    if not passes:
        assert result.reason == "validation"
        assert result.error.startswith(f"validate_{section}_rrs: ")


@pytest.fixture
def dot_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    ca_file = tmp_path / "dot-ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return authority, ca_file


@pytest.fixture
async def dot_forwarder(dns_lab: DnsLab, dot_ca: tuple[trustme.CA, Path]) -> AsyncIterator[int]:
    """DNS over TLS on loopback: each framed query goes to dnsmasq over TCP, as a DoT
    front end would forward it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    dot_ca[0].issue_cert("dot.test", "127.0.0.1").configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(dns_lab.host.ip, 53)
            try:
                while True:
                    length = await reader.readexactly(2)
                    upstream_writer.write(length + await reader.readexactly(
                        int.from_bytes(length, "big")))
                    answer_length = await upstream_reader.readexactly(2)
                    writer.write(answer_length + await upstream_reader.readexactly(
                        int.from_bytes(answer_length, "big")))
            finally:
                upstream_writer.close()
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(("transport", "record_type"), [
    ("udp", "a"), ("tcp", "a"), ("tls", "a"), ("udp", "any"), ("tcp", "any"), ("tls", "mx"),
])
async def test_dns_transports(ctx: ProbeContext, dns_lab: DnsLab, dot_forwarder: int,
                              dot_ca: tuple[trustme.CA, Path], transport: str,
                              record_type: str) -> None:
    name = "mail.test" if record_type == "mx" else "two.test"
    options: dict[str, object] = {"transport_protocol": "tcp" if transport != "udp" else "udp"}
    if transport == "tls":
        options.update(resolver=f"127.0.0.1:{dot_forwarder}", dns_over_tls=True,
                       server_name="dot.test", ca_file=str(dot_ca[1]))
    result = await dns_probe.probe(dns_check(dns_lab, name, record_type, **options), ctx)
    assert result.success, result.error
    assert records(result) == (["10 mx1.test."] if record_type == "mx"
                               else ["198.18.0.1", "198.18.0.2"])
    connect = gauge(result, m.PROBE_DNS_DURATION, phase="connect")
    request = gauge(result, m.PROBE_DNS_DURATION, phase="request")
    assert connect is not None and request is not None and request > 0
    assert (connect > 0) == (transport != "udp")  # UDP has no connection to make


@pytest.mark.parametrize(("options", "message"), [
    ({"server_name": "other.test"}, "CERTIFICATE_VERIFY_FAILED"),  # not the certificate's name
    ({}, "CERTIFICATE_VERIFY_FAILED"),  # the system's CAs do not know the test CA
])
async def test_dns_over_tls_checks_the_certificate(ctx: ProbeContext, dns_lab: DnsLab,
                                                   dot_forwarder: int,
                                                   dot_ca: tuple[trustme.CA, Path],
                                                   options: dict[str, object],
                                                   message: str) -> None:
    if options:
        options["ca_file"] = str(dot_ca[1])
    result = await dns_probe.probe(dns_check(dns_lab, "two.test", "a",
                                       resolver=f"127.0.0.1:{dot_forwarder}", dns_over_tls=True,
                                       transport_protocol="tcp", **options), ctx)
    assert (result.success, result.reason) == (False, "tls")
    assert message in result.error


def servfail_answer(query: bytes) -> bytes:
    response = dns.message.make_response(dns.message.from_wire(query))
    response.set_rcode(dns.rcode.SERVFAIL)
    return bytes(response.to_wire())


class Responder(asyncio.DatagramProtocol):
    """A tiny UDP resolver that answers every query with ``answer(query)``."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.answer(data), addr)


async def start_responder(answer: Callable[[bytes], bytes]) -> asyncio.DatagramTransport:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Responder(answer), local_addr=("127.0.0.1", 0))
    return transport


@pytest.fixture
async def servfail() -> AsyncIterator[int]:
    """A resolver that answers SERVFAIL to every query, as one with a dead upstream does."""
    transport = await start_responder(servfail_answer)
    yield int(transport.get_extra_info("sockname")[1])
    transport.close()


def other_id(query: bytes) -> bytes:
    wrong = bytes([query[0] ^ 0xFF]) + query[1:]
    return servfail_answer(wrong)


# Over UDP, what is not a well-formed answer to the query is skipped, as a stub resolver does,
# and the probe waits for the real answer until its timeout.
@pytest.mark.parametrize(("answer", "reason"), [
    (lambda query: b"\x00" * 3, "timeout"),  # shorter than a DNS header
    (lambda query: query[:2] + b"\x81\x80" + b"\x00\x01\x00\x05" + b"\x00" * 4,
     "timeout"),  # records announced, none there
    (lambda query: query, "timeout"),  # our own query echoed back: not a response
    (other_id, "timeout"),  # an answer to another query (a spoofing attempt)
])
async def test_dns_hostile_answers_fail_cleanly(ctx: ProbeContext,
                                                answer: Callable[[bytes], bytes],
                                                reason: str) -> None:
    transport = await start_responder(answer)
    try:
        port = int(transport.get_extra_info("sockname")[1])
        result = await dns_probe.probe(build_check("test", "d", "dns", target="two.test",
                                                   timeout=0.5, resolver=f"127.0.0.1:{port}"),
                                       ctx)
    finally:
        transport.close()
    assert (result.success, result.reason) == (False, reason), result.error


@pytest.mark.parametrize(("valid_rcodes", "success"), [(("NOERROR",), False),
                                                      (("SERVFAIL",), True)])
async def test_dns_servfail(ctx: ProbeContext, servfail: int, valid_rcodes: tuple[str, ...],
                            success: bool) -> None:
    result = await dns_probe.probe(dns_check(None, "two.test", "a", resolver=f"127.0.0.1:{servfail}",
                                       valid_rcodes=valid_rcodes), ctx)
    assert result.success == success, result.error
    if not success:
        assert result.reason == "dns" and "SERVFAIL (valid: NOERROR)" in result.error


@pytest.mark.parametrize(("reply", "message"), [
    (b"\x00\x03abc", "malformed answer"),  # a framed message too short to be DNS
    (b"", "closed the connection before answering"),
    (b"\x00\x40abc", "closed the connection before answering"),  # cut off mid-message
])
async def test_dns_hostile_tcp_answers_are_reason_dns(ctx: ProbeContext, reply: bytes,
                                                      message: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(length)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = int(server.sockets[0].getsockname()[1])
        result = await dns_probe.probe(check("dns", target="two.test", transport_protocol="tcp",
                                             resolver=f"127.0.0.1:{port}"), ctx)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.success, result.reason) == (False, "dns"), result.error
    assert message in result.error


async def test_dns_silent_resolver_is_reason_timeout(ctx: ProbeContext, silent_udp: int) -> None:
    result = await dns_probe.probe(build_check("test", "d", "dns", target="two.test", timeout=0.5,
                                         resolver=f"127.0.0.1:{silent_udp}"), ctx)
    assert (result.success, result.reason) == (False, "timeout")
    assert gauge(result, m.PROBE_DNS_QUERY_SUCCEEDED) == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_closed_resolver_port_is_reason_connect(ctx: ProbeContext,
                                                          transport: str) -> None:
    result = await dns_probe.probe(check("dns", target="two.test", transport_protocol=transport,
                                   resolver=f"127.0.0.1:{closed_port()}"), ctx)
    assert (result.success, result.reason) == (False, "connect")


async def test_dns_counts_answer_changes(ctx: ProbeContext, dns_lab: DnsLab) -> None:
    probe_check = dns_check(dns_lab, "moving.test", "a")
    try:
        first = await dns_probe.probe(probe_check, ctx)
        same = await dns_probe.probe(probe_check, ctx)
        dns_lab.set_moving("198.18.1.1 moving.test\n198.18.1.3 moving.test\n")
        changed = await dns_probe.probe(probe_check, ctx)
    finally:
        dns_lab.set_moving("198.18.1.1 moving.test\n198.18.1.2 moving.test\n")
    assert [counter(r, m.PROBE_DNS_ADDRESS_CHANGES) for r in (first, same, changed)] == [0, 0, 1]
    assert gauge(first, m.PROBE_IP_ADDR_HASH) == gauge(same, m.PROBE_IP_ADDR_HASH)
    assert gauge(changed, m.PROBE_IP_ADDR_HASH) != gauge(first, m.PROBE_IP_ADDR_HASH)
    assert gauge(changed, m.PROBE_DNS_ANSWERS, address="198.18.1.3") == 1
    assert gauge(changed, m.PROBE_DNS_ANSWERS, address="198.18.1.2") is None


async def test_dns_system_resolver_reads_hosts(ctx: ProbeContext) -> None:
    result = await dns_probe.probe(check("dns", target="localhost", record_type="a"), ctx)
    assert result.success, result.error
    assert gauge(result, m.PROBE_DNS_ANSWERS, address="127.0.0.1", family="ipv4") == 1


def test_dns_without_resolver_asks_the_resolv_conf_servers(dns_lab: DnsLab) -> None:
    """The exporter inside the namespace, whose /etc/resolv.conf names dnsmasq: an MX lookup
    with no resolver goes there through dnspython, an address lookup through getaddrinfo."""
    dns_lab.host.etc_file("resolv.conf", f"nameserver {dns_lab.host.ip}\n")
    exporter = dns_lab.host.start_exporter("""\
control:
  - {name: mx, kind: dns, target: mail.test, record_type: mx, interval: 1s, timeout: 900ms}
  - {name: addresses, kind: dns, target: two.test, record_type: a, interval: 1s, timeout: 900ms}
  - {name: nx, kind: dns, target: nothing.test, record_type: txt, valid_rcodes: [NXDOMAIN],
     interval: 1s, timeout: 900ms}
""")
    scrape = exporter.wait_for(lambda s: all(
        (s.value("probe_runs_total", check=c) or 0) >= 1 for c in ("mx", "addresses", "nx")))
    for name in ("mx", "addresses", "nx"):
        assert scrape.value("probe_success", check=name) == 1, exporter.log()
    assert scrape.value("probe_dns_answer_rrs", check="mx") == 1
    assert scrape.value("probe_dns_query_succeeded", check="nx") == 1
    answers = scrape.all("probe_dns_answer_info", check="addresses")
    assert sorted(dict(labels)["address"] for labels in answers) == ["198.18.0.1", "198.18.0.2"]


@pytest.mark.parametrize(("entry", "path", "message"), [
    ("record_type: AAAAA", "record_type", "must be one of a, aaaa, any"),
    ("valid_rcodes: [NOERROR, NOPE]", "valid_rcodes[1]", "must be one of NOERROR"),
    ("valid_rcodes: []", "valid_rcodes", "non-empty list"),
    ("validate_answer_rrs: {fail_if_matches_regexp: ['(']}",
     "validate_answer_rrs.fail_if_matches_regexp[0]", "not a valid regular expression"),
    ("validate_additional_rrs: {fail_if_matches: ['x']}",
     "validate_additional_rrs.fail_if_matches", "unknown key"),
    ("validate_authority_rrs: {fail_if_none_matches_regexp: x}",
     "validate_authority_rrs.fail_if_none_matches_regexp", "must be a list"),
    ("transport_protocol: quic", "transport_protocol", "must be one of udp, tcp"),
    ("{dns_over_tls: true, resolver: '127.0.0.1', transport_protocol: udp}",
     "transport_protocol", "DNS over TLS runs over TCP"),
    ("dns_over_tls: true", "dns_over_tls", "needs a resolver"),
    ("tls_config: {server_name: dot.test}", "tls_config", "only applies with dns_over_tls"),
    ("resolver: '2001:db8::1'", "resolver", "needs brackets"),
    ("resolver: '127.0.0.1:99999'", "resolver", "port from 1 to 65535"),
])
def test_dns_config_errors_name_their_path(entry: str, path: str, message: str) -> None:
    options = entry[1:-1] if entry.startswith("{") else entry
    text = ("control:\n"
            f"  - {{name: d, kind: dns, target: two.test, {options}}}\n")
    with pytest.raises(ConfigError) as raised:
        load_text(text, "test.yml")
    (issue,) = raised.value.issues
    assert (issue.path, issue.line) == (f"control[0].{path}", 2)
    assert message in issue.message


@pytest.mark.parametrize(("options", "expected"), [
    ("resolver: '[::1]'", {"resolver": "[::1]"}),
    ("resolver: 'dns.test'", {"resolver": "dns.test"}),
    ("{dns_over_tls: true, resolver: '127.0.0.1'}",
     {"dns_over_tls": True, "transport_protocol": "tcp"}),
    ("valid_rcodes: [nxdomain]", {"valid_rcodes": ("NXDOMAIN",)}),
    ("record_type: MX", {"record_type": "mx"}),
])
def test_dns_config_accepts(options: str, expected: dict[str, object]) -> None:
    text = f"control:\n  - {{name: d, kind: dns, target: two.test, {options.strip('{}')}}}\n"
    (parsed,) = load_text(text, "test.yml").control
    assert {k: getattr(parsed, k) for k in expected} == expected


def test_dns_module_with_validators_shows_in_probe_debug_output() -> None:
    """/probe?debug=true prints the module's settings as YAML; validators are mappings."""
    module = build_check("probe", "dns_mx", "dns", record_type="mx", valid_rcodes=("NXDOMAIN",),
                         validate_answer_rrs=RRValidator(fail_if_matches_regexp=(r"\.evil\.$",)))
    assert yaml.safe_load(probe.module_yaml(module)) == {"dns_mx": {
        "kind": "dns", "record_type": "mx", "valid_rcodes": ["NXDOMAIN"],
        "validate_answer_rrs": {"fail_if_matches_regexp": [r"\.evil\.$"]}}}


@pytest.mark.parametrize(("text", "port", "expected"), [
    ("127.0.0.1", 53, ("127.0.0.1", 53)), ("127.0.0.1:5353", 53, ("127.0.0.1", 5353)),
    ("[::1]", 853, ("::1", 853)), ("[::1]:8853", 853, ("::1", 8853)),
    ("dns.test", 853, ("dns.test", 853)),
])
def test_dns_resolver_address(text: str, port: int, expected: tuple[str, int]) -> None:
    assert dns_probe.resolver_address(text, port) == expected


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
    result = await icmp.probe(build_check("test", "i", "icmp", target="127.0.0.1", packets=50,
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


# -- every resolved address, in order ----------------------------------------------------------------

FALLBACK_SCRIPT = """
import asyncio, json, logging, socket, ssl, sys
import trustme
from exporter.checks.base import ProbeContext
from exporter.checks import tcp, tls
from exporter.config import TcpCheck, TlsCheck, TlsConfig

async def accept(reader, writer):
    writer.close()

async def main():
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("dual.test").configure_cert(context)
    ca.cert_pem.write_to_path(sys.argv[1])
    plain = await asyncio.start_server(accept, "127.0.0.1", 0)  # IPv4 only: ::1 refuses
    secure = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=context)
    order = [i[4][0] for i in socket.getaddrinfo("dual.test", 1, type=socket.SOCK_STREAM)]
    ctx = ProbeContext(session=None, logger=logging.getLogger("t"))
    out = {"order": order}
    for kind, server, extra in (("tcp", plain, {}), ("tls", secure, {"tls": TlsConfig(ca_file=sys.argv[1])})):
        port = server.sockets[0].getsockname()[1]
        model = TcpCheck if kind == "tcp" else TlsCheck
        check = model(upstream="u", name=kind, kind=kind, target=f"dual.test:{port}",
                      timeout=3.0, **extra)
        result = await (tcp if kind == "tcp" else tls).probe(check, ctx)
        out[kind] = [result.success, result.reason, result.error]
    print(json.dumps(out))

asyncio.run(main())
"""


def test_tcp_and_tls_try_every_resolved_address(tmp_path: Path) -> None:
    """A name whose first address (::1) refuses: tcp and tls fall back to the next (127.0.0.1),
    as http does. Runs in a namespace whose /etc/hosts names dual.test twice."""
    require_root()
    with hosts() as made:
        host = made.new()
        host.etc_file("hosts", "::1 dual.test\n127.0.0.1 dual.test\n")
        proc = host.exec(sys.executable, "-c", FALLBACK_SCRIPT, str(tmp_path / "ca.pem"), check=False)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["order"][:2] == ["::1", "127.0.0.1"], outcome  # the premise
    assert outcome["tcp"][:2] == [True, ""], outcome
    assert outcome["tls"][:2] == [True, ""], outcome
