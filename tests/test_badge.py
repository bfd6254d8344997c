"""/badge/{upstream}.svg: the verdict as a flat badge, sized for its text, served by the real
exporter (behind its web config like every page) and rendered by headless Chromium."""

from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ET
from base64 import b64encode
from pathlib import Path

import bcrypt
import pytest
from PIL import Image

from exporter.server import badge
from tests.conftest import require
from tests.test_landing_browser import chromium

SVG = "{http://www.w3.org/2000/svg}"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian fonts-dejavu-core


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[ET.Element]:
    return [t for t in root.iter(SVG + "text") if t.get("aria-hidden") != "true"]


def loopback_config(sim) -> str:  # type: ignore[no-untyped-def]
    return f"""\
defaults: {{interval: 500ms, timeout: 400ms}}
upstreams:
  claude:
    statuspage: {{url: "{sim.statuspage_url}", interval: 1s}}
    checks:
      - {{name: api, kind: anthropic, url: "{sim.anthropic_url}", mode: keyless, component: k8w3r06qmzrp}}
control:
  - {{name: loopback, kind: tcp, target: "{sim.url.removeprefix('http://')}"}}
"""


# -- the SVG itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict", sorted(badge.VERDICTS))
def test_badge_says_the_verdict_in_its_colour(verdict: str) -> None:
    root = parse(badge.render("claude", verdict))
    label, message = (t.text for t in texts(root))
    text, colour = badge.VERDICTS[verdict]
    assert (label, message) == ("claude", text)
    assert colour in {r.get("fill") for r in root.iter(SVG + "rect")}
    assert root.findtext(SVG + "title") == f"claude: {text}"


def test_every_verdict_has_its_own_colour() -> None:
    colours = [c for _, c in badge.VERDICTS.values()]
    assert len(set(colours)) == len(colours)


def test_an_unknown_verdict_renders_as_unknown() -> None:
    assert texts(parse(badge.render("x", "no-such-verdict")))[1].text == "unknown"


@pytest.mark.parametrize(("label", "verdict"), [
    ("a", "outage"), ("claude", "operational"), ("openai-compatible", "local_network"),
    ("WWWWWWWWWWWWWWWW", "maintenance"), ("iiiiiiiiiiiiiiii", "own_quota"),
])
def test_width_is_the_sum_of_both_texts_and_their_padding(label: str, verdict: str) -> None:
    root = parse(badge.render(label, verdict))
    message = badge.VERDICTS[verdict][0]
    left = round(badge.text_width(label) + 2 * badge.PADDING)
    right = round(badge.text_width(message) + 2 * badge.PADDING)
    assert int(root.get("width", "0")) == left + right
    label_el, message_el = texts(root)
    assert float(label_el.get("x", "0")) == left / 2
    assert float(message_el.get("x", "0")) == left + right / 2
    assert float(label_el.get("textLength", "0")) == pytest.approx(badge.text_width(label), abs=0.01)


def test_wider_text_makes_a_wider_badge() -> None:
    narrow = int(parse(badge.render("iiii", "outage")).get("width", "0"))
    wide = int(parse(badge.render("WWWW", "outage")).get("width", "0"))
    difference = 4 * (badge.WIDTHS[ord("W") - 32] - badge.WIDTHS[ord("i") - 32]) / 100
    assert abs((wide - narrow) - difference) <= 1  # each half rounds to whole pixels


@pytest.mark.parametrize("label", ['<script>alert(1)</script>', 'a&b', 'say "hi"', "ünï"])
def test_text_is_escaped_and_the_svg_stays_well_formed(label: str) -> None:
    svg = badge.render(label, "outage")
    assert "<script" not in svg
    root = parse(svg)  # raises on malformed XML
    assert texts(root)[0].text == label
    assert root.findtext(SVG + "title") == f"{label}: outage"


def test_width_table_matches_the_font_file() -> None:
    """WIDTHS is measured, not guessed: the font's own advance widths at 11px."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        require(False, "fonttools is not installed (pip install -e '.[test]')")
    require(FONT.exists(), f"{FONT} is missing (apt-get install fonts-dejavu-core)")
    font = TTFont(FONT)
    scale = badge.FONT_SIZE / font["head"].unitsPerEm
    cmap, hmtx = font.getBestCmap(), font["hmtx"]
    measured = tuple(round(hmtx[cmap[c]][0] * scale * 100) for c in range(32, 127))
    assert measured == badge.WIDTHS
    assert max(measured) == badge.WIDE


# -- served by the real exporter ------------------------------------------------------------------

def test_exporter_serves_the_badge_of_the_current_verdict(run_simulator, run_exporter) -> None:  # type: ignore[no-untyped-def]
    sim = run_simulator("major_outage")
    exporter = run_exporter(loopback_config(sim))
    exporter.wait_for(lambda s: s.value("upstream_verdict", upstream="claude", verdict="outage") == 1)
    status, body, headers = exporter.get("/badge/claude.svg")
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == "image/svg+xml"
    assert headers["Cache-Control"] == "no-cache"
    assert [t.text for t in texts(parse(body))] == ["claude", "outage"]


@pytest.mark.parametrize("path", ["/badge/nope.svg", "/badge/control.svg", "/badge/claude.png",
                                  "/badge/claude", "/badge/.svg"])
def test_unknown_upstreams_and_other_paths_are_404(run_simulator, run_exporter, path: str) -> None:  # type: ignore[no-untyped-def]
    sim = run_simulator("operational")
    exporter = run_exporter(loopback_config(sim))
    assert exporter.get(path)[0] == 404


def test_the_badge_needs_the_same_auth_as_every_page(run_simulator, run_exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim = run_simulator("operational")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f'basic_auth_users: {{prom: "{hashed}"}}\nexempt_paths: [/-/healthy]\n')
    exporter = run_exporter(loopback_config(sim), f"--web.config.file={web}", wait_ready=False)
    assert exporter.get("/badge/claude.svg")[0] == 401
    token = b64encode(b"prom:s3cret").decode()
    status, body, _ = exporter.get("/badge/claude.svg", Authorization=f"Basic {token}")
    assert status == 200 and "<svg" in body
    assert exporter.get("/badge/claude.svg", Authorization="Basic " + b64encode(b"prom:no").decode())[0] == 401


def test_badges_can_be_made_public_with_exempt_paths(run_simulator, run_exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim = run_simulator("operational")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f'basic_auth_users: {{prom: "{hashed}"}}\n'
                   'exempt_paths: [/-/healthy, "/badge/{upstream}.svg"]\n')
    exporter = run_exporter(loopback_config(sim), f"--web.config.file={web}", wait_ready=False)
    assert exporter.get("/badge/claude.svg")[0] == 200
    assert exporter.get("/api/v1/status")[0] == 401


def test_the_demo_serves_a_badge_per_upstream(run_exporter) -> None:  # type: ignore[no-untyped-def]
    exporter = run_exporter(None, "--demo")
    names = [u["name"] for u in json.loads(exporter.get("/api/v1/status")[1])["upstreams"]]
    assert names
    for name in names:
        status, body, _ = exporter.get(f"/badge/{name}.svg")
        assert status == 200 and texts(parse(body))[0].text == name


# -- rendered by Chromium -------------------------------------------------------------------------

MEASURE = """<!doctype html><html><body>{svgs}<pre id="out"></pre><script>
const out = [];
for (const svg of document.querySelectorAll("svg")) {{
  for (const t of svg.querySelectorAll("text:not([aria-hidden])")) {{
    const want = parseFloat(t.getAttribute("textLength"));
    t.removeAttribute("textLength"); t.removeAttribute("lengthAdjust");
    out.push([t.textContent, want, t.getComputedTextLength(), getComputedStyle(t).fontFamily]);
  }}
}}
document.getElementById("out").textContent = JSON.stringify(out);
</script></body></html>"""


def test_chromium_draws_the_text_as_wide_as_computed(run_simulator, run_exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without textLength, the browser's own layout of each text (DejaVu Sans where it is
    installed, as on these machines) is within a pixel of the width the table computes."""
    require(FONT.exists(), f"{FONT} is missing (apt-get install fonts-dejavu-core)")
    sim = run_simulator("operational")
    exporter = run_exporter(loopback_config(sim))
    exporter.wait_for(lambda s: s.value("upstream_verdict", upstream="claude", verdict="operational") == 1)
    svgs = [exporter.get("/badge/claude.svg")[1]] + [badge.render(label, v) for label, v in [
        ("openai-compatible", "local_network"), ("WWWWMMMM", "own_quota"), ("a.b_c-9", "maintenance")]]
    page = tmp_path / "measure.html"
    page.write_text(MEASURE.format(svgs="".join(svgs)))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    start = dom.index('<pre id="out">') + len('<pre id="out">')
    measured = json.loads(dom[start:dom.index("</pre>", start)].replace("&quot;", '"'))
    assert len(measured) == 2 * len(svgs)
    for text, want, got, _family in measured:
        assert abs(got - want) <= 1.0, f"{text!r}: computed {want}px, Chromium drew {got:.2f}px"


def test_chromium_renders_the_badge_image(run_simulator, run_exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim = run_simulator("major_outage")
    exporter = run_exporter(loopback_config(sim))
    exporter.wait_for(lambda s: s.value("upstream_verdict", upstream="claude", verdict="outage") == 1)
    svg = tmp_path / "claude.svg"
    with urllib.request.urlopen(exporter.url + "/badge/claude.svg", timeout=5) as resp:
        svg.write_bytes(resp.read())
    page = tmp_path / "badge.html"
    page.write_text(f'<!doctype html><body style="margin:0;background:#fff"><img src="{svg.as_uri()}"></body>')
    shot = tmp_path / "badge.png"
    chromium(tmp_path, "--hide-scrollbars", "--window-size=300,40", f"--screenshot={shot}", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The badge's message half is red: the outage colour appears in the picture.
    assert _has_colour(shot, badge.VERDICTS["outage"][1])


def _has_colour(png: Path, colour: str) -> bool:
    """Whether a pixel of (nearly) this colour is in the picture."""
    want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
        return any(all(abs(rgb[i] - want[i]) <= 12 for i in range(3)) for _, rgb in colours)


def test_badges_inlined_in_one_page_do_not_share_a_clip_of_another_width() -> None:
    """Two badges in one HTML page share one id space: a clip named once for every badge
    would cut the wider badge to the first one's width."""
    clips = {}
    for label in ("a", "openai-compatible"):
        root = parse(badge.render(label, "maintenance"))
        clip = next(root.iter(SVG + "clipPath"))
        clips[clip.get("id")] = next(clip.iter(SVG + "rect")).get("width")
    assert len(clips) == 2
