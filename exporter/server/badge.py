"""The status badge: an upstream's verdict as a flat SVG badge, the style README badges use.

The width of each half is computed from the text: WIDTHS holds the advance width of every
printable ASCII character of DejaVu Sans at 11px, measured from the font file itself
(scripts/badge-widths prints the table; tests/test_badge.py checks it against the font).
Verdana, the usual badge font, is not free to install on the machines this is built on;
DejaVu Sans comes first in the font list so that where it is installed the text renders
exactly as measured, and ``textLength`` makes any other font (Verdana on macOS and Windows)
fit the computed width too.
"""

from __future__ import annotations

from html import escape

FONT_FAMILY = "DejaVu Sans,Verdana,Geneva,sans-serif"
FONT_SIZE = 11
HEIGHT = 20
PADDING = 6  # pixels each side of a text
LABEL_COLOUR = "#555"

WIDTHS = (  # hundredths of a pixel, chr(32) .. chr(126)
    350, 441, 506, 922, 700, 1045, 858, 302, 429, 429, 550, 922, 350, 397, 350, 371,
    700, 700, 700, 700, 700, 700, 700, 700, 700, 700, 371, 371, 922, 922, 922, 584,
    1100, 752, 755, 768, 847, 695, 633, 852, 827, 324, 324, 721, 613, 949, 823, 866,
    663, 866, 764, 698, 672, 805, 752, 1088, 754, 672, 754, 429, 371, 429, 922, 550,
    550, 674, 698, 605, 698, 677, 387, 698, 697, 306, 306, 637, 306, 1072, 697, 673,
    698, 698, 452, 573, 431, 697, 651, 900, 651, 651, 577, 700, 371, 700, 922,
)
WIDE = 1100  # any other character: as wide as the widest ASCII one ('@'), so it never overflows

# Verdict -> (text, colour): the colours badge users know (green good, red down, grey unknown).
VERDICTS = {
    "operational": ("operational", "#2e8a0f"),
    "degraded": ("degraded", "#b08800"),
    "outage": ("outage", "#d73a2c"),
    "maintenance": ("maintenance", "#0366d6"),
    "own_quota": ("own quota", "#8250df"),
    "local_network": ("local network", "#8a6116"),
    "unknown": ("unknown", "#6a737d"),
}


def text_width(text: str) -> float:
    """Pixels ``text`` takes in DejaVu Sans at 11px (advance widths, no kerning)."""
    return sum(WIDTHS[o - 32] if 32 <= (o := ord(ch)) < 127 else WIDE for ch in text) / 100


def render(label: str, verdict: str) -> str:
    message, colour = VERDICTS.get(verdict, VERDICTS["unknown"])
    label_text, message_text = text_width(label), text_width(message)
    left = round(label_text + 2 * PADDING)
    right = round(message_text + 2 * PADDING)
    total = left + right
    title = escape(f"{label}: {message}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{HEIGHT}" '
        f'role="img" aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        # The clip's id names its width: badges inlined in one page share ids, and only
        # badges of the same width may share this one. The gradient is the same for all.
        f'<clipPath id="r{total}"><rect width="{total}" height="{HEIGHT}" rx="3" fill="#fff"/>'
        f'</clipPath><g clip-path="url(#r{total})"><rect width="{left}" height="{HEIGHT}" fill="{LABEL_COLOUR}"/>'
        f'<rect x="{left}" width="{right}" height="{HEIGHT}" fill="{colour}"/>'
        f'<rect width="{total}" height="{HEIGHT}" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" font-family="{FONT_FAMILY}" '
        f'font-size="{FONT_SIZE}">'
        + _text(left / 2, label, label_text) + _text(left + right / 2, message, message_text)
        + "</g></svg>")


def _text(centre: float, text: str, width: float) -> str:
    """The text twice: a faint shadow one pixel down, then the text itself."""
    body = escape(text)
    common = f'x="{centre:g}" textLength="{width:.2f}" lengthAdjust="spacingAndGlyphs"'
    return (f'<text {common} y="15" fill="#010101" fill-opacity=".3" aria-hidden="true">{body}</text>'
            f'<text {common} y="14">{body}</text>')
