"""The landing page in a real browser: headless Chromium renders it, with no external asset."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_binary

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("chromium")
    profile = tmp_path / "profile"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


def test_the_landing_page_renders_the_verdict_in_chromium(run_simulator, run_exporter, tmp_path: Path) -> None:
    sim = run_simulator("major_outage")
    exporter = run_exporter(f"""\
defaults: {{interval: 500ms, timeout: 400ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim.statuspage_url}", interval: 1s}}
    checks:
      - {{name: api, kind: anthropic, url: "{sim.anthropic_url}", mode: keyless, component: k8w3r06qmzrp}}
control:
  - {{name: loopback, kind: tcp, target: "{sim.url.removeprefix('http://')}"}}
""")
    exporter.wait_for(lambda s: s.value("upstream_verdict", upstream="claude", verdict="outage") == 1)
    dom = chromium(tmp_path, "--dump-dom", exporter.url + "/").stdout
    assert "claude: Outage" in dom
    assert "Yes, it is down for us, and the cause is on the provider's side." in dom
    assert "Claude API (api.anthropic.com)" in dom and "major_outage" in dom
    # Nothing is loaded from anywhere else: no scripts, no stylesheets, no images by URL.
    html = exporter.get("/")[1]
    assert "<script" not in html and "<link" not in html and "src=" not in html
    shot = tmp_path / "landing.png"
    chromium(tmp_path, "--hide-scrollbars", "--window-size=1000,800", f"--screenshot={shot}", exporter.url + "/")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
