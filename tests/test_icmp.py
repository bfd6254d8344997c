"""The icmp prober on icmplib's sockets, shared by concurrent runs: real pings to loopback and
to test hosts.

As root the prober uses raw sockets in this process. The datagram ("ping socket") mode runs in
a test namespace whose net.ipv4.ping_group_range admits uid 65534, through a small script run
as that user; so do the cases that need the namespace's own loopback to refuse echo requests.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from icmplib import ICMPReply

from exporter import metrics as m
from exporter.checks import icmp
from exporter.checks.base import ProbeContext, Result
from exporter.checks.net import icmp_mode
from exporter.config import CheckConfig
from tests import netns
from tests.conftest import build_check, require, require_binary, require_root

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
REJECT_ECHO = (  # the namespace answers every echo request with "unreachable"
    "table inet reject_echo {\n"
    "  chain input {\n"
    "    type filter hook input priority 0; policy accept;\n"
    "    icmp type echo-request reject with icmp type host-unreachable\n"
    "    icmpv6 type echo-request reject with icmpv6 type addr-unreachable\n"
    "  }\n"
    "}\n")


def ipv6_loopback_up() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_raw() -> None:
    require(icmp_mode.detect() == "privileged", "raw ICMP sockets need root or CAP_NET_RAW")


def require_target(target: str) -> None:
    require_raw()
    if ":" in target:
        require(ipv6_loopback_up(), "::1 is not configured here")


def icmp_check(target: str, **options: Any) -> CheckConfig:
    options.setdefault("timeout", 2.0)
    return build_check("test", "icmp-check", "icmp", target=target, **options)


def counter(result: Result, spec: m.MetricSpec) -> float:
    (value,) = [s.value for s in result.counters if s.metric == spec]
    return value


def rtts(result: Result) -> list[float]:
    return [s.value for s in result.observations if s.metric == m.PROBE_ICMP_RTT]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


async def run(session: aiohttp.ClientSession, check: CheckConfig) -> tuple[Result, ProbeContext]:
    ctx = ProbeContext(session, logging.getLogger("test.icmp"))
    return await icmp.probe(check, ctx), ctx


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    require_root()
    require_binary("ip")
    require_binary("nft")
    with netns.Hosts() as made:
        yield made


# -- raw sockets in this process ------------------------------------------------------------------


@pytest.mark.parametrize(("target", "packets", "payload_size"), [
    ("127.0.0.1", 1, 56),
    ("127.0.0.1", 3, 0),     # no room for the request's token: matched by sequence alone
    ("127.0.0.1", 2, 7),     # a token cut short, odd length for the checksum
    ("127.0.0.1", 2, 1400),  # the largest payload the config allows
    ("::1", 1, 56),
    ("::1", 3, 0),
    ("::1", 2, 1400),
])
async def test_every_request_gets_its_reply(session: aiohttp.ClientSession, target: str,
                                            packets: int, payload_size: int) -> None:
    require_target(target)
    result, _ = await run(session, icmp_check(target, packets=packets, packet_interval=0.005,
                                              payload_size=payload_size))
    assert result.success, result.error
    assert counter(result, m.PROBE_ICMP_SENT) == packets
    assert counter(result, m.PROBE_ICMP_RECEIVED) == packets
    assert len(rtts(result)) == packets
    assert all(0 <= rtt < 0.5 for rtt in rtts(result))


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
async def test_concurrent_probes_each_get_their_own_replies(session: aiohttp.ClientSession,
                                                            target: str) -> None:
    require_target(target)
    # Two packets each, with payload sizes that differ between neighbours: a reply handed to
    # the wrong probe would leave one probe with 3 and another with 1.
    checks = [icmp_check(target, packets=2, packet_interval=0.001, payload_size=16 + i % 5)
              for i in range(200)]
    results = await asyncio.gather(*(run(session, c) for c in checks))
    received = [counter(r, m.PROBE_ICMP_RECEIVED) for r, _ in results]
    assert received == [2.0] * 200
    assert all(r.success for r, _ in results)


async def test_runs_share_one_socket_while_running_and_leave_nothing_behind(
        session: aiohttp.ClientSession) -> None:
    require_target("::1")
    checks = [icmp_check(t, packets=2, packet_interval=0.01) for t in ("127.0.0.1", "::1")
              for _ in range(50)]
    probes = asyncio.gather(*(run(session, c) for c in checks))
    for _ in range(1000):  # until every run has sent its first request
        if len(icmp.CHANNELS.open) == 2 and all(c.pending for c in icmp.CHANNELS.open.values()):
            break
        await asyncio.sleep(0)
    # A hundred runs at once, on one socket per family.
    shared = list(icmp.CHANNELS.open.values())
    assert sorted((c.version, c.users) for c in shared) == [(4, 50), (6, 50)]
    results = await probes
    assert all(r.success for r, _ in results)
    assert icmp.CHANNELS.open == {}
    for _ in range(100):  # the socket closes once its cancelled reader has unwound
        if all(c.sock.is_closed for c in shared):
            break
        await asyncio.sleep(0)
    assert [c.sock.is_closed for c in shared] == [True, True]
    assert [c.pending for c in shared] == [{}, {}]


async def test_a_probe_creates_no_reference_cycles(session: aiohttp.ClientSession) -> None:
    require_target("127.0.0.1")
    await run(session, icmp_check("127.0.0.1", packets=1))  # imports done
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            result, _ = await run(session, icmp_check("127.0.0.1", packets=2,
                                                      packet_interval=0.001))
            assert result.success
        garbage = gc.collect()  # what only the cycle collector could free
    finally:
        gc.enable()
    assert garbage == 0


async def test_a_failed_socket_fails_its_requests_and_is_replaced(
        session: aiohttp.ClientSession, hosts: netns.Hosts) -> None:
    require_raw()
    host = hosts.new()
    host.drop_all()  # no reply: the probe is still waiting when the socket fails
    probe = asyncio.create_task(run(session, icmp_check(host.ip, packets=1, timeout=5.0)))
    for _ in range(1000):  # let the probe run up to waiting for its reply
        shared = icmp.CHANNELS.open.get((asyncio.get_running_loop(), 4, True))
        if shared is not None and shared.pending:
            break
        await asyncio.sleep(0)
    assert shared is not None and shared.pending
    shared.fail(os.strerror(errno.ENETDOWN))
    result, _ = await probe
    assert (result.success, result.reason) == (False, "unreachable")
    assert os.strerror(errno.ENETDOWN) in result.error
    result, _ = await run(session, icmp_check("127.0.0.1", packets=1))
    assert result.success, result.error


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_probes_on_a_fresh_event_loop_get_a_socket_of_their_own(loop: str) -> None:
    """Each event loop gets its own shared socket; a closed loop leaves none behind."""
    require_target("127.0.0.1")

    async def many() -> list[float]:
        async with aiohttp.ClientSession() as made:
            results = await asyncio.gather(*(run(made, icmp_check("127.0.0.1", packets=1))
                                             for _ in range(50)))
        return [counter(r, m.PROBE_ICMP_RECEIVED) for r, _ in results]

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        assert uvloop.run(many()) == [1.0] * 50
    assert asyncio.run(many()) == [1.0] * 50  # after the loop before it has closed
    assert icmp.CHANNELS.open == {}


# -- which packet answers which request ------------------------------------------------------------


def reply(ident: int, sequence: int, kind: int = 0, code: int = 0) -> ICMPReply:
    """What icmplib's parser makes of a packet: for an error, the quoted request's numbers."""
    return ICMPReply(source="198.18.0.1", family=4, id=ident, sequence=sequence, type=kind,
                     code=code, bytes_received=64, time=time.time())


@pytest.mark.parametrize(("name", "forge", "outcome"), [
    ("the reply itself", lambda ident, seq: reply(ident, seq), "rtt"),
    ("another process's identifier", lambda ident, seq: reply(ident ^ 1, seq), None),
    ("another sequence", lambda ident, seq: reply(ident, seq ^ 1), None),
    ("an echo request seen on loopback", lambda ident, seq: reply(ident, seq, kind=8), None),
    ("a redirect", lambda ident, seq: reply(ident, seq, kind=5), None),
    ("destination unreachable quoting the request",
     lambda ident, seq: reply(ident, seq, kind=3, code=1),
     "Destination host unreachable (ICMP type 3 code 1)"),
    ("time exceeded quoting the request", lambda ident, seq: reply(ident, seq, kind=11),
     "Time to live exceeded (ICMP type 11 code 0)"),
    ("destination unreachable quoting another request",
     lambda ident, seq: reply(ident, seq ^ 1, kind=3, code=1), None),
])
async def test_only_what_quotes_a_request_settles_it(hosts: netns.Hosts, name: str, forge: Any,
                                                     outcome: str | None) -> None:
    require_raw()
    host = hosts.new()
    host.drop_all()  # the real reply never comes; only the forged one can answer
    shared = icmp.CHANNELS.acquire(4, privileged=True)
    pending = icmp.Run()
    try:
        shared.send(pending, host.ip, 56)
        (sequence,) = shared.pending
        shared.deliver(forge(shared.ident, sequence))
        settled = sequence not in shared.pending
        assert settled == (outcome is not None), name
        if outcome == "rtt":
            assert len(pending.rtts) == 1 and pending.errors == []
        elif outcome is not None:
            assert pending.rtts == [] and pending.errors == [outcome]
    finally:
        icmp.CHANNELS.release(shared, pending)


async def test_a_finished_runs_requests_are_forgotten(hosts: netns.Hosts) -> None:
    require_raw()
    host = hosts.new()
    host.drop_all()
    shared = icmp.CHANNELS.acquire(4, privileged=True)
    keeper = icmp.CHANNELS.acquire(4, privileged=True)  # holds the socket open
    gone = icmp.Run()
    try:
        shared.send(gone, host.ip, 56)
        (sequence,) = shared.pending
        icmp.CHANNELS.release(shared, gone)
        shared.deliver(reply(shared.ident, sequence))
        assert gone.rtts == [] and shared.pending == {}
    finally:
        icmp.CHANNELS.release(keeper, icmp.Run())


# -- test hosts: silence and refusals, from this process --------------------------------------------


async def test_a_silent_host_reads_as_loss(session: aiohttp.ClientSession,
                                           hosts: netns.Hosts) -> None:
    require_raw()
    host = hosts.new()
    host.drop_all()
    result, _ = await run(session, icmp_check(host.ip, packets=3, packet_interval=0.01,
                                              timeout=0.5))
    assert (result.success, result.reason) == (False, "loss")
    assert (counter(result, m.PROBE_ICMP_SENT), counter(result, m.PROBE_ICMP_RECEIVED)) == (3, 0)
    assert result.error == f"no reply to 3 echo requests to {host.ip}"


async def test_a_refusing_host_reads_as_unreachable(session: aiohttp.ClientSession,
                                                    hosts: netns.Hosts) -> None:
    require_raw()
    host = hosts.new()
    host.nft(REJECT_ECHO)
    result, _ = await run(session, icmp_check(host.ip, packets=2, packet_interval=0.01))
    assert (result.success, result.reason) == (False, "unreachable")
    assert result.error == (f"no reply to 2 echo requests to {host.ip}: "
                            "Destination host unreachable (ICMP type 3 code 1)")


# -- inside a namespace: ping sockets as uid 65534, and IPv6 refusals --------------------------------

LAB_SCRIPT = """
import asyncio, json, logging, sys
sys.path.insert(0, sys.argv[1])
from exporter.checks.base import ProbeContext
from exporter.checks import icmp
from exporter.config import IcmpCheck

async def main():
    out = []
    for case in json.loads(sys.argv[2]):
        check = IcmpCheck(upstream="lab", name="icmp", kind="icmp", target=case["target"],
                          packets=case["packets"], packet_interval=0.005,
                          payload_size=case.get("payload_size", 56), timeout=1.0)
        results = await asyncio.gather(*(
            icmp.probe(check, ProbeContext(None, logging.getLogger("lab")))
            for _ in range(case.get("concurrency", 1))))
        out.append([{"reason": r.reason, "error": r.error, "details": dict(r.details),
                     "rtts": len(r.observations)} for r in results])
    print(json.dumps(out))

asyncio.run(main())
"""


def in_lab(host: netns.TestHost, cases: list[dict[str, Any]], as_nobody: bool,
           ) -> list[list[dict[str, Any]]]:
    wrapper = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] \
        if as_nobody else []
    proc = host.exec(*wrapper, sys.executable, "-c", LAB_SCRIPT, str(REPO), json.dumps(cases),
                     check=False)
    require(proc.returncode == 0 or "Traceback" in proc.stderr,
            f"cannot run Python in the namespace as uid {NOBODY}: {proc.stderr[:200]}")
    assert proc.returncode == 0, proc.stderr
    parsed: list[list[dict[str, Any]]] = json.loads(proc.stdout)
    return parsed


@pytest.fixture
def lab(hosts: netns.Hosts) -> netns.TestHost:
    require_binary("setpriv")
    host = hosts.new()
    host.sysctl("net.ipv4.ping_group_range", "0 2147483647")  # this namespace only
    return host


@pytest.mark.parametrize("target", ["127.0.0.1", "::1", "host"])
def test_ping_sockets_answer_every_request(lab: netns.TestHost, target: str) -> None:
    target = lab.host_ip if target == "host" else target
    (runs,) = in_lab(lab, [{"target": target, "packets": 3}], as_nobody=True)
    assert [(r["reason"], r["details"]["mode"], r["rtts"]) for r in runs] == \
        [("", "unprivileged", 3)]


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_ping_sockets_give_concurrent_probes_their_own_replies(lab: netns.TestHost,
                                                               target: str) -> None:
    (runs,) = in_lab(lab, [{"target": target, "packets": 2, "concurrency": 200}],
                     as_nobody=True)
    assert [r["details"]["packets_received"] for r in runs] == [2] * 200


@pytest.mark.parametrize(("target", "as_nobody", "error"), [
    ("127.0.0.1", True, "Destination host unreachable (ICMP type 3 code 1)"),  # error queue
    ("::1", True, "Address unreachable (ICMP type 1 code 3)"),
    ("::1", False, "Address unreachable (ICMP type 1 code 3)"),  # raw ICMPv6
    # No route at all (the namespace has none beyond its link): the kernel refuses to send.
    ("198.19.255.254", True, os.strerror(errno.ENETUNREACH)),
])
def test_refused_requests_read_as_unreachable(lab: netns.TestHost, target: str,
                                              as_nobody: bool, error: str) -> None:
    lab.nft(REJECT_ECHO)
    (runs,) = in_lab(lab, [{"target": target, "packets": 2}], as_nobody=as_nobody)
    assert [r["reason"] for r in runs] == ["unreachable"]
    assert error in runs[0]["error"]
    assert runs[0]["details"]["packets_sent"] == 2


# -- the real exporter inside a namespace, both modes, with loss made by nftables ------------------

LOSSY = (  # 30% of the echo requests leaving the namespace vanish
    "table inet lossy {\n"
    "  chain output {\n"
    "    type filter hook output priority 0; policy accept;\n"
    "    icmp type echo-request numgen random mod 10 < 3 drop\n"
    "  }\n"
    "}\n")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.mark.parametrize(("mode", "wrapper"), [("privileged", []), ("unprivileged", AS_NOBODY)])
def test_the_exporter_counts_loss_in_either_mode(lab: netns.TestHost, mode: str,
                                                 wrapper: list[str]) -> None:
    if wrapper:
        probe = lab.exec(*wrapper, netns.EXPORTER, "--help", check=False)
        require(probe.returncode == 0, f"uid {NOBODY} cannot run {netns.EXPORTER}: "
                                       f"{probe.stderr.strip()[:200]}")
    lab.nft(LOSSY)
    exporter = lab.start_exporter(f"""\
control:
  - {{name: lossy, kind: icmp, target: "{lab.host_ip}", packets: 100, packet_interval: 5ms,
      interval: 2s, timeout: 1900ms}}
""", wrapper=wrapper)
    scrape = exporter.wait_for(
        lambda s: (s.value("probe_icmp_packets_sent_total", check="lossy") or 0) >= 100)
    assert scrape.value("exporter_icmp_mode_info", mode=mode) == 1
    sent = scrape.value("probe_icmp_packets_sent_total", check="lossy")
    received = scrape.value("probe_icmp_packets_received_total", check="lossy")
    assert sent is not None and received is not None
    # At p=0.3 per packet, 100 requests all arriving or all lost is out of reach (< 1e-15).
    assert 0 < received < sent, (received, sent)
    assert scrape.value("probe_icmp_rtt_seconds_count", check="lossy") == received
    assert scrape.value("probe_success", check="lossy") == 1
