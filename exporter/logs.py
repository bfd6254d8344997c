"""Logging in logfmt or JSON, the two formats Prometheus exporters use."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from exporter.secrets import RedactingFilter, Secrets

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["exception"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        out["exception"] = record.exc_text
    return out


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


class BadRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a 400: a scanner, TLS on the plain port, a broken
    client) at error level with a traceback. That is the client's fault and our answer already
    tells it so: keep one debug line saying who and why, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 0) < 500:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        reason = " ".join(str(exc.message).split())[:200]  # the parser's message spans lines
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # aiohttp's own args are (remote,)
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "bad request from %s: %s", (remote, reason)
        record.exc_info, record.exc_text = None, None
        return True


def setup(level: str = "info", fmt: str = "logfmt", secrets: Secrets | None = None) -> None:
    """Log to stderr at ``level`` in ``fmt``; every line is scrubbed of what ``secrets`` knows
    (the runtime's: give it whenever the process may read a secret)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    if secrets is not None:
        handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(BadRequestFilter())
    # aiohttp's access log is noise at info; keep it for debug.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING)
