"""--web.listen-address: aiohttp serves every address the listen host resolves to, one site each."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXPORTER, Acceptor, free_port, http_get, require_binary, require_root

from exporter.cli import SHUTDOWN_GRACE


@pytest.fixture
def target() -> Iterator[Acceptor]:
    acceptor = Acceptor()
    yield acceptor
    acceptor.close()


def config(port: int) -> str:
    return f"""\
upstreams:
  local:
    checks:
      - {{name: here, kind: tcp, target: "127.0.0.1:{port}", interval: 15s}}
modules:
  tcp_local: {{kind: tcp, timeout: 2s, allowed_targets: ["127.0.0.1:*"]}}
"""


def listening_inodes(port: int) -> dict[str, int]:
    """The listening sockets on ``port``, by address ("127.0.0.1", "::1"), from /proc/net."""
    found = {}
    # /proc/net prints each 32-bit word of an address in host (little-endian) order
    for table, loopback in (("tcp", "0100007F"), ("tcp6", "0" * 24 + "01000000")):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and fields[3] == "0A" and address == loopback:
                found["127.0.0.1" if table == "tcp" else "::1"] = int(fields[9])
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def test_every_address_of_the_listen_host_is_served(tmp_path: Path, target: Acceptor) -> None:
    """A listen host that resolves to 127.0.0.1 and ::1 (its own /etc/hosts, in a private mount
    namespace) is served on both, by the one exporter process."""
    require_root()
    require_binary("unshare")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 dual.test\n::1 dual.test\n")
    config_file = tmp_path / "config.yml"
    config_file.write_text(config(target.port))
    port = free_port()
    command = (f"mount --bind {hosts} /etc/hosts && exec {EXPORTER} "
               f"--web.listen-address=dual.test:{port} --config.file={config_file}")
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                 "sh", "-c", command], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while len(listening_inodes(port)) < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert set(listening_inodes(port).values()) <= socket_inodes(proc.pid)
        for base in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            status, body, _ = http_get(f"{base}/probe?module=tcp_local&target=127.0.0.1:{target.port}")
            assert status == 200 and "\nprobe_success 1.0" in body, (base, status, body)
            assert http_get(base + "/-/healthy")[0] == 200
        assert log.read_text().count('msg=listening') == 2
    finally:
        proc.terminate()
        proc.wait(SHUTDOWN_GRACE + 5)
