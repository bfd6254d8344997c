"""Child processes of the benchmark: started in their own process group, killed on the way out.

Every child gets ``PR_SET_PDEATHSIG`` (SIGKILL), so even a harness killed with SIGKILL leaves
nothing behind; a normal exit, an exception or SIGINT/SIGTERM stops them politely first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of a live process, in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def peak_rss_mb(pid: int) -> float:
    """The highest resident set size the process has had (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` ."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Procs:
    """Owns every child the benchmark starts; ``close()`` (or the ``with`` block) ends them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Proc] = []
        self.netns: list[str] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=self.workdir, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        proc = Proc(name, popen, log)
        self.children.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait()
        if proc in self.children:
            self.children.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.children)):
            self.stop(proc)
        for name in list(self.netns):
            self.delete_netns(name)

    # -- network namespaces (root only) -------------------------------------------------------

    def add_netns(self, name: str) -> str:
        """A namespace whose only interface is its own loopback: no traffic can leave it."""
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.netns.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        return name

    def delete_netns(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        if name in self.netns:
            self.netns.remove(name)


def enter_fresh_netns(port_range: tuple[int, int]) -> None:
    """Move this process, and so every child it starts from now on, into a new network
    namespace with only its own loopback, and set that namespace's ephemeral port range.
    Nothing outside changes: the host's sockets, TIME_WAIT entries and sysctls stay as they
    are. Call it before any thread starts (a namespace belongs to the calling thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise RuntimeError(f"a new network namespace needs root: {os.strerror(errno)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
    # /proc/sys/net shows the namespace of whoever opens it: this thread's, now the new one
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(f"{port_range[0]} {port_range[1]}")


def wait_http(url: str, proc: Proc | None = None, timeout: float = 30.0,
              ok: Sequence[int] = (200,)) -> None:
    """Poll ``url`` until it answers with a status in ``ok``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    tail = proc.tail() if proc is not None else ""
    raise RuntimeError(f"{url} not up within {timeout:g}s ({last})\n{tail}")


def wait_tcp(port: int, proc: Proc | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
