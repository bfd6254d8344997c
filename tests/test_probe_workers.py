"""--web.probe-workers: /probe answered by several real processes sharing one listening socket.

Every test runs the real console script with two workers on loopback. The target is a tcp
listener in this test that accepts and closes. Processes are found through /proc (the
workers are the main process's children).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import EXPORTER, Acceptor, Exporter, free_port, require_binary, require_root

from exporter.cli import SHUTDOWN_GRACE

WORKERS = 2


@pytest.fixture
def target() -> Iterator[Acceptor]:
    acceptor = Acceptor()
    yield acceptor
    acceptor.close()


def config(port: int, module: str = "tcp_local") -> str:
    return f"""\
upstreams:
  local:
    checks:
      - {{name: here, kind: tcp, target: "127.0.0.1:{port}", interval: 15s}}
modules:
  {module}: {{kind: tcp, timeout: 2s, allowed_targets: ["127.0.0.1:*"]}}
"""


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def get(url: str, **headers: str) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Connection": "close", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def probe_many(exporter: Exporter, query: str, count: int) -> list[tuple[int, str, str]]:
    """``count`` probes, 16 at a time, each on a new connection: (status, body, pid)."""
    def one(_: int) -> tuple[int, str, str]:
        status, body, headers = get(f"{exporter.url}/probe?{query}")
        return status, body, headers.get("X-Served-By", "")

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def start(run_exporter: Any, text: str, *args: str) -> tuple[Exporter, set[int]]:
    exporter: Exporter = run_exporter(text, f"--web.probe-workers={WORKERS}", *args)
    deadline = time.monotonic() + 20
    while len(workers := children(exporter.proc.pid)) < WORKERS:
        assert time.monotonic() < deadline, f"workers did not start:\n{exporter.log()}"
        time.sleep(0.05)
    serving = time.monotonic() + 20
    while exporter.log().count("probe worker serving") < WORKERS:
        assert time.monotonic() < serving, f"workers did not serve:\n{exporter.log()}"
        time.sleep(0.05)
    return exporter, workers


def test_parallel_probes_all_succeed_across_processes(run_exporter: Any, target: Acceptor) -> None:
    exporter, workers = start(run_exporter, config(target.port))
    results = probe_many(exporter, f"module=tcp_local&target=127.0.0.1:{target.port}", 300)
    assert all(status == 200 and "\nprobe_success 1" in body for status, body, _ in results)
    pids = {int(pid) for _, _, pid in results}
    assert pids <= workers | {exporter.proc.pid}
    assert len(pids) > 1, f"every probe served by {pids}"
    # exporter_probe_requests_total adds the workers' counts (written every second).
    exporter.wait_for(lambda s: s.value("exporter_probe_requests_total", module="tcp_local",
                                        outcome="ok") == 300, timeout=10)


def test_other_paths_answered_by_the_main_process(run_exporter: Any, target: Acceptor) -> None:
    exporter, _ = start(run_exporter, config(target.port))
    for _ in range(20):  # many connections: the kernel hands some to each worker
        status, body, headers = get(exporter.url + "/metrics")
        # Only the main process runs the background check: a worker has no such series.
        assert status == 200 and 'probe_success{upstream="local",check="here"' in body
        assert "X-Served-By" not in headers
        assert get(exporter.url + "/-/ready")[0] == 200  # a worker's runtime is never ready
        status, body, _ = get(exporter.url + "/api/v1/status")
        assert status == 200 and '"here"' in body
        assert get(exporter.url + "/")[0] == 200
        assert get(exporter.url + "/no-such-page")[0] == 404
        status, _, headers = get(exporter.url + "/metrics", **{"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in headers  # nothing added on the way


def test_reload_reaches_the_workers(run_exporter: Any, target: Acceptor) -> None:
    exporter, _ = start(run_exporter, config(target.port))
    query = f"module=renamed&target=127.0.0.1:{target.port}"
    assert {status for status, _, _ in probe_many(exporter, query, 40)} == {400}
    assert exporter.config_path is not None
    exporter.config_path.write_text(config(target.port, module="renamed"))
    status, body = exporter.post("/-/reload")
    assert status == 200 and f"{WORKERS} /probe worker(s) told to reload" in body, body
    deadline = time.monotonic() + 10
    while True:  # SIGHUP is asynchronous: the workers take a moment
        results = probe_many(exporter, query, 60)
        if {status for status, _, _ in results} == {200}:
            break
        assert time.monotonic() < deadline, f"workers kept the old modules:\n{exporter.log()}"
        time.sleep(0.1)
    assert len({pid for _, _, pid in results}) > 1


def test_sigterm_leaves_no_process_behind(run_exporter: Any, target: Acceptor) -> None:
    exporter, workers = start(run_exporter, config(target.port))
    started = time.monotonic()
    assert exporter.stop(signal.SIGTERM, timeout=SHUTDOWN_GRACE + 5) == 0
    while any(alive(pid) for pid in workers):
        assert time.monotonic() - started < SHUTDOWN_GRACE + 2, "a worker outlived the exporter"
        time.sleep(0.05)
    assert "Traceback" not in exporter.log()


def test_a_killed_worker_is_replaced(run_exporter: Any, target: Acceptor) -> None:
    exporter, workers = start(run_exporter, config(target.port))
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        now = children(exporter.proc.pid)
        if len(now) == WORKERS and victim not in now:
            break
        assert time.monotonic() < deadline, f"no replacement:\n{exporter.log()}"
        time.sleep(0.05)
    assert f"pid={victim}" in exporter.log() and "probe worker exited" in exporter.log()
    replacement = (now - workers).pop()
    query = f"module=tcp_local&target=127.0.0.1:{target.port}"
    deadline = time.monotonic() + 15
    while str(replacement) not in {pid for _, _, pid in probe_many(exporter, query, 60)}:
        assert time.monotonic() < deadline, "the replacement serves no /probe"
    # The dead worker's counts written before it died are kept.
    exporter.wait_for(lambda s: s.value("exporter_probe_requests_total", module="tcp_local",
                                        outcome="ok") >= 60, timeout=10)


def test_basic_auth_applies_in_the_workers(run_exporter: Any, target: Acceptor,
                                           tmp_path: Path) -> None:
    import base64

    import bcrypt

    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(4)).decode()
    web.write_text(f'basic_auth_users: {{prom: "{hashed}"}}\nexempt_paths: ["/-/ready"]\n')
    exporter, _ = start(run_exporter, config(target.port), f"--web.config.file={web}")
    query = f"module=tcp_local&target=127.0.0.1:{target.port}"
    refused = probe_many(exporter, query, 40)
    assert {status for status, _, _ in refused} == {401}
    assert len({pid for _, _, pid in refused}) > 1  # refused by the workers themselves
    token = base64.b64encode(b"prom:hunter2").decode()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get(f"{exporter.url}/probe?{query}",
                                              Authorization=f"Basic {token}"), range(40)))
    assert {status for status, _, _ in answers} == {200}
    assert len({headers["X-Served-By"] for _, _, headers in answers}) > 1
    for _ in range(10):  # forwarded: the main process checks the credentials too
        assert get(exporter.url + "/metrics")[0] == 401
        assert get(exporter.url + "/metrics", Authorization=f"Basic {token}")[0] == 200


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


@pytest.mark.parametrize("workers", [0, WORKERS], ids=["one process", "with workers"])
def test_every_address_of_the_listen_host_is_served(tmp_path: Path, target: Acceptor,
                                                    workers: int) -> None:
    """A listen host that resolves to 127.0.0.1 and ::1 (its own /etc/hosts, in a private mount
    namespace) is served on both, by the main process and by every worker."""
    require_root()
    require_binary("unshare")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 dual.test\n::1 dual.test\n")
    config_file = tmp_path / "config.yml"
    config_file.write_text(config(target.port))
    port = free_port()
    command = (f"mount --bind {hosts} /etc/hosts && exec {EXPORTER} "
               f"--web.listen-address=dual.test:{port} --config.file={config_file} "
               f"--web.probe-workers={workers}")
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                 "sh", "-c", command], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while len(listening_inodes(port)) < 2 or len(children(proc.pid)) < workers or (
                log.read_text().count("probe worker serving") < workers):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        inodes = listening_inodes(port)
        for pid in {proc.pid, *children(proc.pid)}:
            assert set(inodes.values()) <= socket_inodes(pid), (pid, inodes)
        for base in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            query = f"module=tcp_local&target=127.0.0.1:{target.port}"
            for _ in range(20):
                status, body, _ = get(f"{base}/probe?{query}")
                assert status == 200 and "\nprobe_success 1" in body, (base, status, body)
            assert get(base + "/-/ready")[0] == 200
    finally:
        proc.terminate()
        proc.wait(SHUTDOWN_GRACE + 5)
