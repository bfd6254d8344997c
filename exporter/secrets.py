"""API keys: read from an environment variable or a file, never from the config itself.

Every value read is registered with the log redaction filter, so even an exception message
that happens to quote a header cannot leak it into a log line. Files are re-read on reload.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from exporter.config import CheckConfig

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words


class Secrets:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], str | None] = {}
        self.known: set[str] = set()

    def clear(self) -> None:
        """Forget cached values so the next use re-reads env vars and files (on reload)."""
        self._cache.clear()

    def get(self, check: CheckConfig) -> str | None:
        if check.api_key_env:
            key = ("env", check.api_key_env)
        elif check.api_key_file:
            key = ("file", check.api_key_file)
        else:
            return None
        if key not in self._cache:
            self._cache[key] = self._read(*key)
        return self._cache[key]

    def _read(self, source: str, where: str) -> str | None:
        if source == "env":
            value = os.environ.get(where)
        else:
            try:
                value = Path(where).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                logging.getLogger("exporter.secrets").error(
                    "cannot read api_key_file %s: %s", where, exc.__class__.__name__)
                return None
        if value:
            self.known.add(value)
        return value or None

    def scrub(self, text: str) -> str:
        for secret in self.known:
            if len(secret) >= MIN_SECRET_LENGTH and secret in text:
                text = text.replace(secret, REDACTED)
        return text


SECRETS = Secrets()


class RedactingFilter(logging.Filter):
    """Replaces any known secret in a log record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if SECRETS.known:
            message = record.getMessage()
            scrubbed = SECRETS.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
            if record.exc_info:
                record.exc_text = SECRETS.scrub(
                    logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True
