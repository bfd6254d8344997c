"""Reachability through the real exporter to test hosts in network namespaces.

Each test builds its hosts with tests/netns.py (veth pairs, 198.18.0.0/15), breaks them with
nftables or by taking the link down, and reads the outcome from real scrapes of the real
exporter: on the host for plain reachability, loss and cuts; inside a namespace when the
exporter needs its own resolver (DNS failures) or its own ping_group_range (unprivileged ICMP).
Needs root; under CI=true that is a failure, elsewhere a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.conftest import Exporter, Scrape, free_port, require, require_binary, require_root

pytestmark = pytest.mark.netns

FAST = "interval: 1s, timeout: 900ms"


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    require_root()
    require_binary("ip")
    require_binary("nft")
    with netns.Hosts() as made:
        yield made


def value(scrape: Scrape, name: str, check: str, **labels: str) -> float:
    found = scrape.value(name, check=check, **labels)
    return 0.0 if found is None else found


def runs(scrape: Scrape, check: str) -> float:
    return value(scrape, "probe_runs_total", check)


def reasons(scrape: Scrape, check: str) -> dict[str, float]:
    """The reasons that occurred (every reason of the kind is exported, at 0 until then)."""
    return {dict(labels)["reason"]: v
            for labels, v in scrape.all("probe_failures_total", check=check).items() if v}


def after_runs(exporter: Exporter, checks: list[str], more: int, since: Scrape,
               timeout: float = 20.0) -> Scrape:
    """Scrape once every check has run ``more`` more times than in ``since``."""
    return exporter.wait_for(
        lambda s: all(runs(s, c) >= runs(since, c) + more for c in checks), timeout=timeout)


# -- reachability, loss and cuts: the exporter on the host ------------------------------------


def test_reachability_and_rtt_to_a_namespaced_host(hosts: netns.Hosts, run_exporter: Any) -> None:
    host = hosts.new()
    port = free_port()
    host.serve_tcp(port)
    exporter = run_exporter(f"""\
control:
  - {{name: lab-ping, kind: icmp, target: "{host.ip}", packets: 5, packet_interval: 20ms, {FAST}}}
  - {{name: lab-port, kind: tcp, target: "{host.ip}:{port}", {FAST}}}
""")
    scrape = exporter.wait_for(lambda s: runs(s, "lab-ping") >= 2 and runs(s, "lab-port") >= 2)
    for check in ("lab-ping", "lab-port"):
        assert scrape.value("probe_success", upstream="control", check=check) == 1
    sent = value(scrape, "probe_icmp_packets_sent_total", "lab-ping")
    received = value(scrape, "probe_icmp_packets_received_total", "lab-ping")
    assert sent >= 10 and received == sent
    rtt_count = value(scrape, "probe_icmp_rtt_seconds_count", "lab-ping")
    rtt_sum = value(scrape, "probe_icmp_rtt_seconds_sum", "lab-ping")
    assert rtt_count == received
    assert 0 < rtt_sum / rtt_count < 0.05  # a veth round trip, well under 50 ms
    connect = value(scrape, "probe_tcp_connect_seconds", "lab-port")
    assert 0 < connect < 0.5


def test_thirty_percent_loss_reads_as_about_thirty_percent(hosts: netns.Hosts,
                                                           run_exporter: Any) -> None:
    host = hosts.new()
    host.drop_icmp_echo(3)  # numgen random mod 10 < 3: 30% of the requests vanish
    exporter = run_exporter(f"""\
control:
  - {{name: lossy, kind: icmp, target: "{host.ip}", packets: 100, packet_interval: 10ms,
      interval: 3500ms, timeout: 3400ms}}
""")
    scrape = exporter.wait_for(
        lambda s: value(s, "probe_icmp_packets_sent_total", "lossy") >= 200, timeout=25)
    sent = value(scrape, "probe_icmp_packets_sent_total", "lossy")
    received = value(scrape, "probe_icmp_packets_received_total", "lossy")
    loss = 1 - received / sent
    # 200 packets at p=0.3: one standard deviation is 3.2 points; allow well over four.
    assert 0.15 <= loss <= 0.45, f"loss {loss:.3f} from {received:g}/{sent:g}"
    assert scrape.value("probe_success", check="lossy") == 1  # some replies: the run succeeds


@pytest.mark.parametrize(("cut", "tcp_reasons"), [
    ("drop_all", {"timeout"}),
    # With the far end down, the SYN dies on the veth; once neighbour discovery gives up the
    # kernel says "no route to host" at once.
    ("link_down", {"timeout", "connect"}),
])
def test_a_cut_link_reads_as_total_loss_and_failing_tcp(hosts: netns.Hosts, run_exporter: Any,
                                                        cut: str, tcp_reasons: set[str]) -> None:
    host = hosts.new()
    port = free_port()
    host.serve_tcp(port)
    exporter = run_exporter(f"""\
control:
  - {{name: cut-ping, kind: icmp, target: "{host.ip}", packets: 5, packet_interval: 20ms, {FAST}}}
  - {{name: cut-port, kind: tcp, target: "{host.ip}:{port}", {FAST}}}
""")
    checks = ["cut-ping", "cut-port"]
    healthy = exporter.wait_for(lambda s: all(runs(s, c) >= 1 for c in checks))
    assert all(healthy.value("probe_success", check=c) == 1 for c in checks)
    getattr(host, cut)()
    straddling = after_runs(exporter, checks, 1, healthy)  # a run may have begun before the cut
    cut_off = after_runs(exporter, checks, 2, straddling)
    sent = value(cut_off, "probe_icmp_packets_sent_total", "cut-ping") - \
        value(straddling, "probe_icmp_packets_sent_total", "cut-ping")
    received = value(cut_off, "probe_icmp_packets_received_total", "cut-ping") - \
        value(straddling, "probe_icmp_packets_received_total", "cut-ping")
    assert sent >= 10 and received == 0
    assert cut_off.value("probe_success", check="cut-ping") == 0
    assert set(reasons(cut_off, "cut-ping")) <= {"loss", "unreachable"}
    assert cut_off.value("probe_success", check="cut-port") == 0
    new_failures = {r for r, n in reasons(cut_off, "cut-port").items()
                    if n > reasons(straddling, "cut-port").get(r, 0)}
    assert new_failures and new_failures <= tcp_reasons


def test_probe_endpoint_reaches_an_allowed_namespaced_host(hosts: netns.Hosts,
                                                           run_exporter: Any) -> None:
    host = hosts.new()
    exporter = run_exporter(f"""\
modules:
  lab_icmp: {{kind: icmp, packets: 3, packet_interval: 10ms, allowed_targets: ["{host.ip}"]}}
""")
    status, body, _ = exporter.get(f"/probe?module=lab_icmp&target={host.ip}")
    assert status == 200
    probed = Scrape.parse(body)
    assert probed.value("probe_success") == 1
    assert probed.value("probe_icmp_packets_received_total") == 3
    # The host's own end of the link is just as reachable, but not allowed.
    status, body, _ = exporter.get(f"/probe?module=lab_icmp&target={host.host_ip}")
    assert status == 403 and "allowed_targets" in body


# -- failure reasons: the exporter inside a namespace with its own resolver -----------------------


@pytest.fixture
def resolver_lab(hosts: netns.Hosts) -> tuple[netns.TestHost, Exporter, int]:
    """A namespace with dnsmasq as its resolver and the exporter inside, as root."""
    require_binary("dnsmasq")
    lab = hosts.new()
    lab.serve_dns("127.0.0.1 two.test\n127.0.0.2 two.test\n")
    port = free_port()
    lab.serve_tcp(port, "127.0.0.1")  # on 127.0.0.1 only: 127.0.0.2 refuses
    closed = free_port()
    blackholed = 9
    # Requests to the host's end of the link on port 9 are dropped on their way out.
    lab.nft("table inet blackhole {\n"
            "  chain output {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {lab.host_ip} tcp dport {blackholed} drop\n"
            "  }\n"
            "}\n")
    exporter = lab.start_exporter(f"""\
upstreams:
  lab:
    checks:
      - {{name: refused, kind: tcp, target: "127.0.0.1:{closed}", {FAST}}}
      - {{name: blackholed, kind: tcp, target: "{lab.host_ip}:{blackholed}", {FAST}}}
      - {{name: no-such-name, kind: tcp, target: "nothing.invalid:80", {FAST}}}
      - {{name: both-addresses, kind: tcp, target: "two.test:{port}", per_address: true,
          ip_protocol: ip4, {FAST}}}
      - {{name: lookup, kind: dns, target: two.test, record_type: a, {FAST}}}
      - {{name: lookup-nx, kind: dns, target: nothing.invalid, resolver: "127.0.0.1:53", {FAST}}}
""")
    return lab, exporter, port


@pytest.mark.parametrize(("check", "reason"), [
    ("refused", "connect"),
    ("blackholed", "timeout"),
    ("no-such-name", "dns"),
    ("lookup-nx", "dns"),
])
def test_refused_timeout_and_dns_failure_have_their_own_reasons(
        resolver_lab: tuple[netns.TestHost, Exporter, int], check: str, reason: str) -> None:
    _, exporter, _ = resolver_lab
    scrape = exporter.wait_for(lambda s: runs(s, check) >= 2)
    assert scrape.value("probe_success", check=check) == 0
    assert reasons(scrape, check) == {reason: runs(scrape, check)}


def test_dns_check_lists_every_address_from_the_system_resolver(
        resolver_lab: tuple[netns.TestHost, Exporter, int]) -> None:
    _, exporter, _ = resolver_lab
    scrape = exporter.wait_for(lambda s: runs(s, "lookup") >= 1)
    assert scrape.value("probe_success", check="lookup") == 1
    answers = scrape.all("probe_dns_answer_info", check="lookup")
    assert sorted(dict(labels)["address"] for labels in answers) == ["127.0.0.1", "127.0.0.2"]


def test_per_address_tells_which_address_failed(
        resolver_lab: tuple[netns.TestHost, Exporter, int]) -> None:
    _, exporter, _ = resolver_lab
    scrape = exporter.wait_for(lambda s: runs(s, "both-addresses") >= 1)
    check = "both-addresses"
    assert scrape.value("probe_address_success", check=check, address="127.0.0.1") == 1
    assert scrape.value("probe_address_success", check=check, address="127.0.0.2") == 0
    assert scrape.value("probe_success", check=check) == 0
    assert set(reasons(scrape, check)) == {"connect"}


# -- ICMP without root -----------------------------------------------------------------------------


NOBODY = 65534
WRAPPERS = {
    "non-root user": ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
    "root without CAP_NET_RAW": ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"],
}


def wrapper_for(host: netns.TestHost, who: str) -> list[str]:
    wrapper = WRAPPERS[who]
    require_binary("setpriv")
    if who == "non-root user":
        probe = host.exec(*wrapper, netns.EXPORTER, "--help", check=False)
        require(probe.returncode == 0, f"uid {NOBODY} cannot run {netns.EXPORTER}: "
                                       f"{probe.stderr.strip()[:200]}")
    return wrapper


@pytest.mark.parametrize("who", list(WRAPPERS))
def test_unprivileged_icmp_works_where_ping_group_range_allows(hosts: netns.Hosts,
                                                               who: str) -> None:
    host = hosts.new()
    host.sysctl("net.ipv4.ping_group_range", "0 2147483647")  # this namespace only
    exporter = host.start_exporter(f"""\
control:
  - {{name: own-loopback, kind: icmp, target: 127.0.0.1, packets: 3, packet_interval: 20ms, {FAST}}}
  - {{name: over-veth, kind: icmp, target: "{host.host_ip}", packets: 3, packet_interval: 20ms,
      {FAST}}}
""", wrapper=wrapper_for(host, who))
    scrape = exporter.wait_for(lambda s: runs(s, "own-loopback") >= 1 and runs(s, "over-veth") >= 1)
    assert "ICMP checks use unprivileged sockets" in exporter.log()
    for check in ("own-loopback", "over-veth"):
        assert scrape.value("probe_success", check=check) == 1
        assert value(scrape, "probe_icmp_packets_received_total", check) == \
            value(scrape, "probe_icmp_packets_sent_total", check) >= 3
    assert scrape.value("exporter_icmp_mode_info", mode="unprivileged") == 1


def test_without_any_icmp_permission_checks_fail_with_reason_permission(
        hosts: netns.Hosts) -> None:
    host = hosts.new()  # a new namespace starts with ping_group_range "1 0": nobody may
    exporter = host.start_exporter(f"""\
control:
  - {{name: no-icmp, kind: icmp, target: 127.0.0.1, {FAST}}}
""", wrapper=wrapper_for(host, "root without CAP_NET_RAW"))
    scrape = exporter.wait_for(lambda s: runs(s, "no-icmp") >= 1)
    assert reasons(scrape, "no-icmp") == {"permission": runs(scrape, "no-icmp")}
    assert "net.ipv4.ping_group_range" in exporter.log()
    assert scrape.value("exporter_icmp_mode_info", mode="none") == 1


def test_hosts_clean_up_after_themselves() -> None:
    require_root()
    with netns.Hosts() as made:
        host = made.new()
        host.serve_tcp(free_port())
        host.etc_file("resolv.conf", "nameserver 127.0.0.1\n")
        name, pids = host.ns, [p.pid for p in host.procs]
    listed = netns.sh("ip", "netns", "list").stdout
    assert name not in listed
    assert not (netns.NETNS_ETC / name).exists()
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]  # zombies are dead
    assert alive == []
