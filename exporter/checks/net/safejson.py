"""Upstream JSON, decoded defensively: one loader for every body the exporter reads.

``json.loads`` trusts its input in ways a hostile upstream can exploit:

- 100,000 nested ``[`` raise RecursionError, not a decoding error;
- an integer of more than 4,300 digits raises a plain ValueError, and one past float range
  makes every later ``float()`` raise OverflowError;
- ``NaN`` and ``Infinity`` are accepted, and later written out as invalid JSON;
- a lone surrogate escape (``"\\ud800"``) becomes a str that no UTF-8 encoder accepts, so the
  page, ``/metrics`` and the log line that carries it fail much later, far from the cause.

``loads`` turns all of these into values or into ``json.JSONDecodeError`` (a ValueError):
numbers beyond a float's range and the non-finite constants become None, big integers become
floats, and every lone surrogate becomes U+FFFD. ``clean`` does the last for any text.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
# A \u escape of a surrogate in JSON text: only then can the decoded value hold one (bytes
# are decoded with errors="replace", so raw surrogate bytes never survive).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
MAX_INT_DIGITS = 18  # longer integers are read as floats: past int64 nobody counts that high


def clean(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (encodable as UTF-8)."""
    if text.isascii():
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def _float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _int(text: str) -> int | float | None:
    if len(text) <= MAX_INT_DIGITS:
        return int(text)
    return _float(text)  # float() has no digit limit; past 1e308 it is inf, so None


def _constant(_name: str) -> None:
    return None  # NaN, Infinity, -Infinity


def decode_text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    return data.decode("utf-8-sig", "replace")


def loads(data: bytes | str) -> Any:
    """The JSON value of ``data``; raises json.JSONDecodeError for anything that is not JSON,
    including nesting too deep to decode."""
    text = decode_text(data)
    try:
        value = json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text[:64], 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # defensive: any other decoding refusal is still "not JSON"
        raise json.JSONDecodeError(str(exc)[:100], text[:64], 0) from None
    if _SURROGATE_ESCAPE.search(text):
        value = clean_tree(value)
    return value


def clean_tree(value: Any) -> Any:
    """``value`` with every str in it (dict keys included) passed through ``clean``; iterative,
    so depth costs no stack. Containers are fixed in place."""
    if isinstance(value, str):
        return clean(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, str):
                    node[i] = clean(item)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
        elif isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, item in items:
                if isinstance(item, str):
                    item = clean(item)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
                node[clean(key) if isinstance(key, str) else key] = item
    return value


class SchemaError(ValueError):
    """A payload that decodes (JSON or XML) but is not the document expected: a status page,
    a cloud feed, an endpoints answer. The pollers report it as reason ``schema``."""
