"""Goal 4: idle RSS with the bundled preset, against an idle blackbox_exporter.

The preset watches the real internet, so it never runs here as is. Two faithful stand-ins:

- the preset itself, unchanged, inside a network namespace whose only interface is its own
  loopback (root only): nothing can leave it, every check fails fast at DNS or connect;
- a loopback copy with the same checks (same kinds, same count, same options) pointed at the
  simulator (status page, keyless API) and at nginx over TLS, so every code path runs and
  succeeds: parsing a real page, TLS handshakes, ICMP replies.

Both are read after the first round (/-/ready) and a settle time. blackbox_exporter is measured
fresh, after one probe per module, the same settle time later.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from bench.common import Context, Row, python_env
from bench.load import probe_url
from bench.procs import free_port, get, rss_mb, wait_http
from bench.targets import start_blackbox, start_ours

GOAL_MB = 50.0  # issue 14: the preset idle, with every library the exporter stands on


def loopback_preset(ctx: Context, sim: str) -> str:
    """exporter/config/presets/claude.yml's structure, every target on 127.0.0.1."""
    tls = f"127.0.0.1:{ctx.nginx.tls_port}"
    ca = ctx.nginx.ca_file
    tcp2 = f"127.0.0.1:{ctx.nginx.extra_ports[0] if ctx.nginx.extra_ports else ctx.nginx.port}"
    return f"""\
defaults: {{interval: 30s, timeout: 10s}}
upstreams:
  claude:
    statuspage:
      url: {sim}/status
      interval: 60s
    checks:
      - {{name: api, kind: anthropic, url: "{sim}/anthropic", mode: keyless, component: k8w3r06qmzrp,
         degraded_latency: 3s}}
      - {{name: api-dns, kind: dns, target: localhost, component: k8w3r06qmzrp}}
      - {{name: api-tcp, kind: tcp, target: "{tls}", component: k8w3r06qmzrp}}
      - {{name: api-tls, kind: tls, target: "{tls}", tls_config: {{ca_file: "{ca}"}}, component: k8w3r06qmzrp}}
      - {{name: api-icmp, kind: icmp, target: 127.0.0.1, packets: 5, component: k8w3r06qmzrp}}
control:
  - {{name: cloudflare-dns-tcp, kind: tcp, target: "127.0.0.1:{ctx.nginx.port}"}}
  - {{name: google-dns-tcp, kind: tcp, target: "{tcp2}"}}
  - {{name: google-204, kind: http, url: "https://{tls}/generate_204", tls_config: {{ca_file: "{ca}"}},
     valid_status_codes: [204]}}
  - {{name: quad9-icmp, kind: icmp, target: 127.0.0.1, packets: 3}}
"""


def can_use_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def netns_get(ns: str, url: str) -> bytes:
    code = f"import sys,urllib.request;sys.stdout.buffer.write(urllib.request.urlopen({url!r},timeout=5).read())"
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                          capture_output=True, check=True, timeout=30).stdout


def wait_netns_ready(ns: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            netns_get(ns, url + "/-/ready")
            return
        except subprocess.CalledProcessError:
            time.sleep(0.5)
    raise RuntimeError(f"the preset in namespace {ns} was not ready within {timeout:g}s")


def run(ctx: Context) -> list[Row]:
    settle = ctx.sizes.footprint_settle
    rows: list[Row] = []
    bb_rss = None
    if ctx.blackbox_url is not None:
        bb, bb_url = start_blackbox(ctx.procs, name="blackbox-idle")
        for module, target in (("http_2xx", ctx.nginx.url), ("icmp", "127.0.0.1"),
                               ("tcp_connect", f"127.0.0.1:{ctx.nginx.port}")):
            get(probe_url(bb_url, module, target))
    sim_port = free_port()
    sim = ctx.procs.start("simulator-footprint", [sys.executable, "-m", "exporter.simulator",
                                                  f"--listen=127.0.0.1:{sim_port}"], env=python_env())
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_http(sim_url + "/_sim/scenario", sim)
    copy, copy_url = start_ours(ctx.procs, loopback_preset(ctx, sim_url), name="ours-preset-loopback")
    preset = None
    ns = None
    if can_use_netns():
        ns = ctx.procs.add_netns(f"bench{os.getpid()}")
        ctx.namespaces.append(ns)
        preset, preset_url = start_ours(ctx.procs, None, name="ours-preset-netns", wait=None,
                                        prefix=("ip", "netns", "exec", ns))
        wait_netns_ready(ns, preset_url, 60)
    wait_http(copy_url + "/-/ready", copy, timeout=60)
    time.sleep(settle)
    copy_rss = rss_mb(copy.pid)
    checks, good = _check_count(get(copy_url + "/metrics").decode())
    if ctx.blackbox_url is not None:
        bb_rss = rss_mb(bb.pid)
        ctx.procs.stop(bb)
    rows.append(Row("4 footprint", "idle RSS, preset copy on loopback", copy_rss, bb_rss, "MB",
                    f"<= {GOAL_MB:g} MB", copy_rss <= GOAL_MB,
                    f"{checks} checks, {good} succeeding; blackbox: idle after one probe per module"))
    if preset is not None and ns is not None:
        preset_rss = rss_mb(preset.pid)
        checks, good = _check_count(netns_get(ns, preset_url + "/metrics").decode())
        rows.append(Row("4 footprint", "idle RSS, bundled preset in an isolated netns", preset_rss,
                        bb_rss, "MB", f"<= {GOAL_MB:g} MB", preset_rss <= GOAL_MB,
                        f"{checks} checks, {good} succeeding: no link leaves the namespace"))
        ctx.procs.stop(preset)
        ctx.procs.delete_netns(ns)
    else:
        ctx.notes.append("the bundled preset in a network namespace needs root and iproute2: skipped")
    ctx.procs.stop(copy)
    ctx.procs.stop(sim)
    return rows


def _check_count(text: str) -> tuple[int, int]:
    """(checks, checks whose last run succeeded) from a scrape."""
    checks = good = 0
    for line in text.splitlines():
        if line.startswith("exporter_checks"):
            checks = int(float(line.split()[-1]))
        elif line.startswith(("probe_success{", "statuspage_poll_success{")):
            good += float(line.split()[-1]) == 1
    return checks, good
