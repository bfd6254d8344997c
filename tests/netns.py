"""Test hosts in network namespaces: a veth pair, 198.18.0.0/15 addresses, real servers inside.

Each ``TestHost`` is a namespace ``cse<pid>-<hex>`` joined to the host by a veth pair: the
host side gets ``198.18.N.1/30`` and the namespace side ``198.18.N.2/30`` for a /30 no other
interface uses. Servers run *inside* the namespace (``ip netns exec``); packets are dropped or
cut with nftables inside it, so nothing on the host changes except the veth. Cutting the link
takes the namespace's end down: the host keeps its connected route (flagged linkdown), so test
packets die on the veth and never follow the default route anywhere else.

``Hosts`` is a context manager that deletes every namespace it made, kills what it started
there and removes its /etc/netns files; it first deletes namespaces left behind by test runs
whose process is gone. Everything here needs root (``tests.conftest.require_root``).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import EXPORTER, Exporter, free_port, http_get

PREFIX = "cse"
NETNS_ETC = Path("/etc/netns")
SUBNETS = 1 << 15  # /30s in 198.18.0.0/15
NAME_RE = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+$")
TCP_SERVER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n"
)

# Sends one query for "ready.test" to 127.0.0.1:53 and exits 0 on any answer.
DNS_READY = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)\n"
    "s.sendto(bytes.fromhex('abcd01000001000000000000') + b'\\x05ready\\x04test\\x00'"
    " + bytes.fromhex('00010001'), ('127.0.0.1', 53))\n"
    "s.recv(512)\n"
)


def sh(*cmd: str, check: bool = True, timeout: float = 10.0,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def subnet_address(index: int, host: int) -> str:
    """Address ``host`` (1 or 2) of the ``index``-th /30 in 198.18.0.0/15."""
    value = (198 << 24) + (18 << 16) + index * 4 + host
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def addresses_in_use() -> set[str]:
    out = sh("ip", "-o", "-4", "addr", "show").stdout
    return set(re.findall(r"inet (198\.1[89]\.\d+\.\d+)/", out))


def cleanup_stale() -> None:
    """Delete namespaces a dead test process left behind (never a live run's)."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAME_RE.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _delete_netns(name)


def _delete_netns(name: str) -> None:
    pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", name, check=False)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only if no other namespace has files there


@dataclass
class TestHost:
    """One namespace; ``ip`` is its address, ``host_ip`` the host's end of the link."""

    __test__ = False  # not a pytest test class

    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def exec(self, *cmd: str, check: bool = True, stdin: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *cmd, check=check, stdin=stdin)

    def spawn(self, *cmd: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a background process inside the namespace; killed on cleanup."""
        out = log.open("wb") if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], stdout=out,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def serve_tcp(self, port: int, address: str | None = None) -> subprocess.Popen[bytes]:
        """A TCP listener on ``address:port`` (default: the host's ``ip``) inside the namespace
        that accepts and closes."""
        address = address or self.ip
        proc = self.spawn(sys.executable, "-c", TCP_SERVER, address, str(port))
        self.wait_tcp(port, proc, address)
        return proc

    def wait_tcp(self, port: int, proc: subprocess.Popen[bytes], address: str | None = None,
                 timeout: float = 10.0) -> None:
        """Wait until ``address:port`` accepts (from inside the namespace when it is not the
        host's veth address, since loopback addresses there are the namespace's own)."""
        address = address or self.ip
        probe = (f"import socket; socket.create_connection(({address!r}, {port}), 0.5)")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server in {self.ns} exited with {proc.returncode}")
            if address == self.ip:
                with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
                    return
            elif self.exec(sys.executable, "-c", probe, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {address}:{port} after {timeout}s")
            time.sleep(0.05)

    def serve_dns(self, hosts: str) -> subprocess.Popen[bytes]:
        """dnsmasq on 127.0.0.1:53 inside the namespace, made its resolver through
        /etc/netns/<ns>/resolv.conf. It answers the names in ``hosts`` (hosts-file lines),
        NXDOMAIN for other names under .test and .invalid, and forwards nothing anywhere."""
        binary = shutil.which("dnsmasq")
        if binary is None:
            raise RuntimeError("dnsmasq is not installed (see scripts/apt-packages.txt)")
        folder = Path(tempfile.mkdtemp(prefix=f"{self.ns}-dns-"))
        self.dirs.append(folder)
        (folder / "hosts").write_text(hosts)
        self.etc_file("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        proc = self.spawn(binary, "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null",
                          "--port=53", "--listen-address=127.0.0.1", "--bind-interfaces",
                          "--no-resolv", "--no-hosts", "--no-poll", "--cache-size=0",
                          f"--addn-hosts={folder / 'hosts'}", "--local=/test/",
                          "--local=/invalid/", "--user=root", "--group=root", "--pid-file=")
        deadline = time.monotonic() + 10
        while self.exec(sys.executable, "-c", DNS_READY, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq in {self.ns} did not start")
            time.sleep(0.05)
        return proc

    def nft(self, ruleset: str) -> None:
        self.exec("nft", "-f", "-", stdin=ruleset)

    def drop_icmp_echo(self, tenths: int) -> None:
        """Drop ``tenths``/10 of the echo requests that reach the host, at random."""
        self.nft("table inet loss {\n"
                 "  chain input {\n"
                 "    type filter hook input priority 0; policy accept;\n"
                 f"    icmp type echo-request numgen random mod 10 < {tenths} drop\n"
                 "  }\n"
                 "}\n")

    def drop_all(self) -> None:
        """A silent partition: every packet in or out of the namespace is dropped."""
        self.nft("table inet cut {\n"
                 "  chain input { type filter hook input priority 0; policy drop; }\n"
                 "  chain output { type filter hook output priority 0; policy drop; }\n"
                 "}\n")

    def clear_rules(self) -> None:
        self.exec("nft", "flush", "ruleset")

    def link_down(self) -> None:
        sh("ip", "-n", self.ns, "link", "set", self.ns_if, "down")

    def link_up(self) -> None:
        sh("ip", "-n", self.ns, "link", "set", self.ns_if, "up")

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl (e.g. net.ipv4.ping_group_range) in this namespace only."""
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def etc_file(self, name: str, text: str) -> None:
        """A file that `ip netns exec` bind-mounts over /etc/<name> inside the namespace."""
        folder = NETNS_ETC / self.ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    def start_exporter(self, config: str, *args: str, wrapper: Sequence[str] = (),
                       ready_timeout: float = 20.0) -> Exporter:
        """The real exporter inside the namespace, listening on ``ip`` (reached over the veth),
        started through ``wrapper`` (e.g. setpriv to drop privileges) when given. Its config
        and log live in a world-readable temporary folder, removed on cleanup."""
        port = free_port()
        folder = Path(tempfile.mkdtemp(prefix=f"{self.ns}-"))
        self.dirs.append(folder)
        folder.chmod(0o755)
        config_path = folder / "config.yml"
        config_path.write_text(config)
        config_path.chmod(0o644)
        cmd = [EXPORTER, f"--config.file={config_path}", f"--web.listen-address={self.ip}:{port}",
               "--log.level=debug", *args]
        cmd = [*wrapper, *cmd]
        log_path = folder / "exporter.log"
        proc = self.spawn(*cmd, log=log_path)
        exporter = Exporter(proc, f"http://{self.ip}:{port}", log_path, config_path)
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"exporter exited with {proc.returncode}:\n{exporter.log()}")
            with contextlib.suppress(OSError):
                if http_get(exporter.url + "/-/ready", timeout=1.0)[0] == 200:
                    return exporter
            if time.monotonic() > deadline:
                raise AssertionError(f"exporter not ready within {ready_timeout}s:\n"
                                     f"{exporter.log()}")
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        _delete_netns(self.ns)
        sh("ip", "link", "del", self.host_if, check=False)  # gone with the namespace already
        for folder in self.dirs:
            shutil.rmtree(folder, ignore_errors=True)


class Hosts:
    """Creates test hosts on demand and removes them all on exit."""

    def __init__(self) -> None:
        self.hosts: list[TestHost] = []

    def __enter__(self) -> Hosts:
        cleanup_stale()
        return self

    def __exit__(self, *_: object) -> None:
        for host in reversed(self.hosts):
            host.close()
        self.hosts.clear()

    def new(self) -> TestHost:
        suffix = secrets.token_hex(3)
        ns = f"{PREFIX}{os.getpid()}-{suffix}"
        host_if, ns_if = f"{PREFIX}h{suffix}", f"{PREFIX}n{suffix}"
        used = addresses_in_use()
        for _ in range(100):
            index = random.randrange(SUBNETS)
            host_ip, ip = subnet_address(index, 1), subnet_address(index, 2)
            if host_ip not in used and ip not in used:
                break
        else:
            raise RuntimeError("no free /30 in 198.18.0.0/15")
        host = TestHost(ns, host_if, ns_if, host_ip, ip)
        self.hosts.append(host)  # cleaned up even if a step below fails
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return host


@contextlib.contextmanager
def hosts() -> Iterator[Hosts]:
    with Hosts() as made:
        yield made
