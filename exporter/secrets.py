"""API keys: read from an environment variable or a file, never from the config itself.

A ``Secrets`` remembers every value read (and every value it is told of), so that the log
redaction filter holding it (``RedactingFilter``) cuts them out of each log line, even from an
exception message that happens to quote a header. The runtime owns one and hands it to
whatever reads a secret or shows text that might hold one. Files are re-read on reload.

``scrub`` is the one secret scrubber of the exporter: probes, debug pages, /api/v1/status and
the log all go through it. It removes a known secret, any run of ``MIN_RUN`` or more of its
characters (an upstream that echoes part of a key, "sk-ant-api03-Ab...", or a key cut at a
line end), and anything shaped like an API key.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Set
from pathlib import Path

from exporter.config import CheckConfig, WebCheck

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words
MIN_RUN = 8  # a shared run of this many characters with a secret counts as an echo of it
# Anything that looks like an API key ("sk-ant-...", "sk-proj-...", OpenAI's masked echo
# "sk-abc*****wxyz") is cut out of texts, besides the configured keys themselves.
KEYLIKE = re.compile(r"sk-[A-Za-z0-9_*\-]{4,}")


def _runs(secrets: Iterable[str]) -> set[str]:
    grams: set[str] = set()
    for secret in secrets:
        grams.update(secret[i:i + MIN_RUN] for i in range(len(secret) - MIN_RUN + 1))
    return grams


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` without the secrets, any ``MIN_RUN``-character run of one, or key-like words."""
    known = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    grams = _runs(s for s in known if len(s) >= MIN_RUN)
    if grams and len(text) >= MIN_RUN:
        covered = bytearray(len(text))
        hit = False
        for i in range(len(text) - MIN_RUN + 1):
            if text[i:i + MIN_RUN] in grams:
                covered[i:i + MIN_RUN] = b"\x01" * MIN_RUN
                hit = True
        if hit:
            out: list[str] = []
            i = 0
            while i < len(text):
                if covered[i]:
                    while i < len(text) and covered[i]:
                        i += 1
                    out.append(REDACTED)
                else:
                    out.append(text[i])
                    i += 1
            text = "".join(out)
    return KEYLIKE.sub(REDACTED, text)


class Secrets:
    """The secrets one runtime has read, by source, and every value it knows."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], str | None] = {}
        self._known: set[str] = set()

    @property
    def known(self) -> Set[str]:
        """Every secret value read or remembered so far (kept across reloads)."""
        return self._known

    def remember(self, value: str) -> None:
        """Scrub ``value`` from now on: a secret that did not come through ``lookup`` (a
        proxy password in the environment's proxy URL)."""
        self._known.add(value)

    def clear(self) -> None:
        """Forget cached values so the next use re-reads env vars and files (on reload)."""
        self._cache.clear()

    def get(self, check: CheckConfig) -> str | None:
        if not isinstance(check, WebCheck):  # only the kinds that speak HTTP carry a key
            return None
        return self.lookup(check.api_key_env, check.api_key_file)

    def lookup(self, env: str | None, file: str | None) -> str | None:
        """A secret from an environment variable or a file (proxy and target credentials
        alike); None when neither is set or the source is empty or unreadable."""
        if env:
            key = ("env", env)
        elif file:
            key = ("file", file)
        else:
            return None
        if key not in self._cache:
            self._cache[key] = self._read(*key)
        return self._cache[key]

    def _read(self, source: str, where: str) -> str | None:
        if source == "env":
            # A value set from a file or a heredoc often ends in a newline: not part of the key.
            value = (os.environ.get(where) or "").strip()
        else:
            try:
                value = Path(where).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                logging.getLogger("exporter.secrets").error(
                    "cannot read secret file %s: %s", where, exc.__class__.__name__)
                return None
        if value:
            self._known.add(value)
        return value or None

    def scrub(self, text: str, *extra: str | None) -> str:
        return scrub(text, *self._known, *extra)


class RedactingFilter(logging.Filter):
    """Replaces any secret ``secrets`` knows in a log record's final message."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets.known:
            message = record.getMessage()
            scrubbed = secrets.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
            if record.exc_info:
                record.exc_text = secrets.scrub(
                    logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True
