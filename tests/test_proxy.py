"""Behind a corporate proxy, for real: the exporter runs in a network namespace whose only way
out is a forward proxy (Debian's tinyproxy); nftables there drops every packet that is not for
the proxy. The targets (the project's simulator: a status page and the Anthropic API) live in
another namespace. Proxied witnesses must get through, from the environment and from
``proxy:``, with proxy credentials from a file; direct kinds fail by design and must not turn
the verdict into local_network; a stopped proxy must; NO_PROXY is honoured; the proxy
password appears in no output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import Exporter, Scrape, free_port, require_binary, require_root
from tests.netns import Hosts, TestHost, hosts

pytestmark = pytest.mark.netns

PROXY_USER = "probe"
PROXY_PASSWORD = "pxy-Vb73-proxy-password-secret"


@dataclass
class Lab:
    hosts: Hosts
    exporter_ns: TestHost  # only the proxy is reachable from here
    targets: TestHost
    sim: str  # http://<targets>:<port>, the simulator
    proxy_port: int
    folder: Path

    @property
    def proxy_ip(self) -> str:
        return self.exporter_ns.host_ip  # the host's end of the exporter's veth

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy_ip}:{self.proxy_port}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root()
    require_binary("tinyproxy")
    require_binary("nft")
    with hosts() as made:
        targets = made.new()
        port = free_port()
        sim = targets.spawn(sys.executable, "-m", "exporter.simulator", "--scenario=operational",
                            f"--listen={targets.ip}:{port}", log=tmp_path / "sim.log")
        targets.wait_tcp(port, sim)
        inside = made.new()
        # A default route exists, so nothing fails fast; nftables drops all but the proxy.
        inside.exec("ip", "route", "add", "default", "via", inside.host_ip)
        inside.nft("table inet egress {\n"
                   "  chain output {\n"
                   "    type filter hook output priority 0; policy drop;\n"
                   "    oif lo accept\n"
                   f"    ip daddr {inside.host_ip} accept\n"
                   "  }\n"
                   "}\n")
        yield Lab(made, inside, targets, f"http://{targets.ip}:{port}", free_port(), tmp_path)


@contextlib.contextmanager
def tinyproxy(lab: Lab, auth: bool) -> Iterator[subprocess.Popen[bytes]]:
    """tinyproxy on the host's end of the exporter's link; with ``auth`` it wants BasicAuth."""
    conf = lab.folder / f"tinyproxy-{auth}.conf"
    conf.write_text(f"Port {lab.proxy_port}\nListen {lab.proxy_ip}\nTimeout 10\n"
                    f"Allow {lab.exporter_ns.ip}\nLogLevel Info\n"
                    + (f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n" if auth else ""))
    log = (lab.folder / "tinyproxy.log").open("ab")
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((lab.proxy_ip, lab.proxy_port), 0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tinyproxy did not start") from None
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(5)
        log.close()


def config(lab: Lab, proxy: str = "", extra_checks: str = "", modules: str = "") -> str:
    """The upstream as a user behind a proxy would write it: status page, API probe, an http
    check, a direct tcp check; control checks that follow the same proxy setting."""
    proxy_line = f", proxy: {proxy}" if proxy else ""
    return f"""
defaults: {{interval: 1s, timeout: 900ms}}
upstreams:
  claude:
    statuspage: {{url: "{lab.sim}/status", interval: 1s{proxy_line}}}
    verdict: {{outage_after: 2, recover_after: 1}}
    checks:
      - {{name: api, kind: anthropic, url: "{lab.sim}/anthropic", mode: keyless{proxy_line}}}
      - {{name: page-http, kind: http, url: "{lab.sim}/status/api/v2/summary.json"{proxy_line}}}
      - {{name: api-tcp, kind: tcp, target: "{lab.sim.removeprefix('http://')}"}}
{extra_checks}    dependencies:
      - {{name: gcp, kind: gcp_status, url: "{lab.sim}/gcp/incidents.json", interval: 1s{proxy_line}}}
    crowd:
      - {{name: openrouter, kind: openrouter, url: "{lab.sim}/openrouter/api/v1", interval: 1s,
         models: [anthropic/claude-haiku-4.5]{proxy_line}}}
control:
  - {{name: control-http, kind: http, url: "{lab.sim}/_sim/scenario"{proxy_line}}}
  - {{name: control-tcp, kind: tcp, target: "{lab.sim.removeprefix('http://')}"}}
{modules}
"""


def start(lab: Lab, text: str, env: dict[str, str] | None = None) -> Exporter:
    wrapper = ["env", *(f"{k}={v}" for k, v in (env or {}).items())]
    return lab.exporter_ns.start_exporter(text, wrapper=wrapper)


def verdict(scrape: Scrape) -> str | None:
    on = [dict(lbl)["verdict"] for lbl, v in scrape.all("upstream_verdict", upstream="claude").items()
          if v == 1]
    return on[0] if len(on) == 1 else None


def succeeded(scrape: Scrape, *checks: str) -> bool:
    """Each ``upstream/check`` (or ``upstream/dependencies/name``, ``upstream/crowd/name``)
    succeeded in its last run."""
    def ok(name: str) -> bool:
        upstream, check = name.split("/", 1)
        role, _, witness = check.partition("/")
        if role == "dependencies":
            return scrape.value("dependency_poll_success", upstream=upstream, dependency=witness) == 1
        if role == "crowd":
            return scrape.value("crowd_poll_success", upstream=upstream, source=witness) == 1
        return scrape.value("probe_success", upstream=upstream, check=check) == 1
    return all(ok(name) for name in checks)


def paths(exporter: Exporter) -> dict[str, str]:
    status, body, _ = exporter.get("/api/v1/status")
    assert status == 200, body
    doc = json.loads(body)
    out = {}
    for upstream in doc["upstreams"]:
        for item in upstream["checks"]:
            out[f"{upstream['name']}/{item['name']}"] = item["path"]
        for role in ("dependencies", "crowd"):
            for item in upstream[role]:
                out[f"{upstream['name']}/{role}/{item['name']}"] = item["path"]
        if upstream["statuspage"]:
            out[f"{upstream['name']}/statuspage"] = upstream["statuspage"]["path"]
    for item in doc["control"]:
        out[f"control/{item['name']}"] = item["path"]
    return out


PROXIED = ("claude/api", "claude/page-http", "claude/dependencies/gcp", "claude/crowd/openrouter",
           "control/control-http")


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_every_witness_gets_through_a_proxy_from_the_environment(lab: Lab, variable: str) -> None:
    with tinyproxy(lab, auth=False):
        exporter = start(lab, config(lab), {variable: lab.proxy_url})
        try:
            scrape = exporter.wait_for(lambda s: succeeded(s, *PROXIED)
                                       and s.value("statuspage_poll_success", upstream="claude") == 1
                                       and verdict(s) == "operational", timeout=30)
            # the direct kinds fail by design, and that is no local_network
            assert scrape.value("probe_success", upstream="claude", check="api-tcp") == 0
            assert scrape.value("probe_success", upstream="control", check="control-tcp") == 0
            assert paths(exporter) == {
                "claude/statuspage": "proxy", "claude/api": "proxy", "claude/page-http": "proxy",
                "claude/api-tcp": "direct", "claude/dependencies/gcp": "proxy",
                "claude/crowd/openrouter": "proxy", "control/control-http": "proxy",
                "control/control-tcp": "direct"}
        finally:
            exporter.stop()


def test_an_explicit_proxy_with_a_password_file_and_its_death(lab: Lab) -> None:
    password_file = lab.folder / "proxy-password"
    password_file.write_text(PROXY_PASSWORD + "\n")
    password_file.chmod(0o600)
    proxy = (f"{{url: \"{lab.proxy_url}\", username: {PROXY_USER}, "
             f"password_file: \"{password_file}\"}}")
    modules = (f"modules:\n  web: {{kind: http, proxy: {proxy}, "
               f"allowed_targets: [\"{lab.sim}/*\"]}}\n")
    with tinyproxy(lab, auth=True) as proc:
        exporter = start(lab, config(lab, proxy, modules=modules))
        try:
            exporter.wait_for(lambda s: succeeded(s, *PROXIED) and verdict(s) == "operational",
                              timeout=30)
            status, debug, _ = exporter.get(f"/probe?module=web&target={lab.sim}/_sim/scenario"
                                            "&debug=true")
            assert status == 200 and "probe_success 1" in debug, debug + exporter.log()[-3000:]
            outputs = [debug, exporter.scrape().text, exporter.get("/")[1],
                       exporter.get("/api/v1/status")[1]]
            proc.terminate()
            proc.wait(5)
            scrape = exporter.wait_for(lambda s: verdict(s) == "local_network", timeout=30)
            assert scrape.value("probe_failures_total", upstream="claude", check="api",
                                kind="anthropic", reason="proxy")
            outputs += [scrape.text, exporter.get("/api/v1/status")[1], exporter.log()]
        finally:
            exporter.stop()
    for text in outputs:
        assert PROXY_PASSWORD not in text


def test_a_proxy_that_wants_credentials_is_reason_proxy(lab: Lab) -> None:
    with tinyproxy(lab, auth=True):
        exporter = start(lab, config(lab), {"http_proxy": lab.proxy_url})
        try:
            scrape = exporter.wait_for(lambda s: (s.value(
                "probe_failures_total", upstream="claude", check="page-http", kind="http",
                reason="proxy") or 0) >= 1 and verdict(s) == "local_network", timeout=30)
            assert scrape.value("probe_success", upstream="claude", check="api") == 0
        finally:
            exporter.stop()


@contextlib.contextmanager
def no_via_server(host: str) -> Iterator[str]:
    """An aiohttp server in a thread: 200 to a request that came directly, 418 to one a proxy
    forwarded (tinyproxy adds Via)."""
    loop = asyncio.new_event_loop()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=418 if "Via" in request.headers else 200)

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, host, 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_no_proxy_is_honoured(lab: Lab) -> None:
    with no_via_server(lab.proxy_ip) as local:
        run_no_proxy(lab, local)


def run_no_proxy(lab: Lab, local: str) -> None:
    # NO_PROXY names the local server by its address: "exempt" goes direct. "proxied" uses the
    # same URL with an explicit proxy, which NO_PROXY does not touch; "forced-direct" says none.
    extra = (f"      - {{name: exempt, kind: http, url: \"{local}\"}}\n"
             f"      - {{name: proxied, kind: http, url: \"{local}\", valid_status_codes: [418],"
             f" proxy: {{url: \"{lab.proxy_url}\"}}}}\n"
             f"      - {{name: forced-direct, kind: http, url: \"{local}\", proxy: none}}\n")
    with tinyproxy(lab, auth=False):
        exporter = start(lab, config(lab, extra_checks=extra),
                         {"HTTPS_PROXY": lab.proxy_url, "HTTP_PROXY": lab.proxy_url,
                          "NO_PROXY": f"localhost,{lab.proxy_ip}"})
        try:
            exporter.wait_for(lambda s: succeeded(s, "claude/exempt", "claude/proxied",
                                                  "claude/forced-direct", *PROXIED), timeout=30)
            found = paths(exporter)
            assert (found["claude/exempt"], found["claude/proxied"], found["claude/forced-direct"],
                    found["claude/api"]) == ("direct", "proxy", "direct", "proxy")
        finally:
            exporter.stop()


def test_the_lab_drops_direct_packets(lab: Lab) -> None:
    """The premise: from the exporter's namespace a target cannot be reached directly."""
    probe = (f"import socket; socket.create_connection(({lab.targets.ip!r}, "
             f"{lab.sim.rsplit(':', 1)[1]}), 1)")
    assert lab.exporter_ns.exec(sys.executable, "-c", probe, check=False).returncode != 0


def test_proxy_credentials_in_the_environment_url(lab: Lab) -> None:
    """http_proxy=http://user:password@host:port, as curl takes it: sent as Proxy-Authorization,
    shown nowhere."""
    url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@{lab.proxy_ip}:{lab.proxy_port}"
    with tinyproxy(lab, auth=True):
        exporter = start(lab, config(lab), {"http_proxy": url})
        try:
            scrape = exporter.wait_for(lambda s: succeeded(s, *PROXIED) and verdict(s) == "operational",
                                       timeout=30)
            outputs = [scrape.text, exporter.get("/")[1], exporter.get("/api/v1/status")[1],
                       exporter.log()]
        finally:
            exporter.stop()
    for text in outputs:
        assert PROXY_PASSWORD not in text
