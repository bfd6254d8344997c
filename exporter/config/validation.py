"""Mapping -> model, by cattrs, with every problem as an issue at its dotted path and line.

cattrs structures each YAML mapping into its model from the fields' declarations
(``models.key``): it renames keys, applies the declared defaults, refuses unknown keys and
collects every failing field of a mapping at once (detailed validation). This module turns
cattrs' exception groups back into the loader's messages: "unknown key (allowed: ...)",
"missing required key ...", and each value parser's own words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from exporter.config.errors import Path_
from exporter.config.values import SECRET_KEYS, NestedError
from exporter.config.yamldoc import Document

T = TypeVar("T", bound=attrs.AttrsInstance)

# Where a key is read: a background check, a /probe module, or any other mapping.
CHECK, MODULE, ANY = "check", "module", "any"
# Keys that moved under tls_config: a clear error instead of "unknown key".
MOVED_TLS_KEYS = ("ca_file", "insecure_skip_verify", "server_name")
INLINE_SECRET = ("inline secrets are not allowed: use api_key_env (an environment variable) "
                 "or api_key_file")


@attrs.frozen(eq=False)
class KeyTable:
    """The YAML keys one model accepts in one place: key -> field name. Made once per model
    and place (``key_table`` is cached), so it can key the structure functions."""

    fields: Mapping[str, str]
    moved: tuple[str, ...]  # old keys that now live under tls_config

    def allowed(self) -> list[str]:
        return sorted({*self.fields, *self.moved})


_TABLES: dict[tuple[type[attrs.AttrsInstance], str, tuple[tuple[str, str | None], ...] | None], KeyTable] = {}


def key_table(model: type[attrs.AttrsInstance], scope: str = ANY,
              only: tuple[tuple[str, str | None], ...] | None = None) -> KeyTable:
    """The keys of ``model`` in ``scope``; ``only`` (field, key or None) pairs narrow them to
    one witness kind's fields and names."""
    table = _TABLES.get((model, scope, only))
    if table is None:
        table = _TABLES[(model, scope, only)] = _key_table(model, scope, only)
    return table


def _key_table(model: type[attrs.AttrsInstance], scope: str,
               only: tuple[tuple[str, str | None], ...] | None) -> KeyTable:
    narrow = dict(only) if only is not None else None
    out: dict[str, str] = {}
    for field in attrs.fields(model):
        meta = field.metadata
        if meta.get("internal") or "parse" not in meta:
            continue
        if (scope == CHECK and not meta["check"]) or (scope == MODULE and not meta["module"]):
            continue
        if narrow is not None:
            if field.name not in narrow:
                continue
            name = narrow[field.name] or meta["key"] or field.name
        else:
            name = meta["key"] or field.name
        out[name] = field.name
    moved = MOVED_TLS_KEYS if "tls_config" in out else ()
    return KeyTable(out, moved)


def _hook(parse: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda value, _type: parse(value)


class Structurer:
    """One cattrs converter and the structure function of each (model, key table)."""

    def __init__(self) -> None:
        self._converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
        self._functions: dict[tuple[type[attrs.AttrsInstance], KeyTable], Callable[[Mapping[str, Any], Any], Any]] = {}

    def _function(self, model: type[attrs.AttrsInstance], table: KeyTable) -> Callable[[Mapping[str, Any], Any], Any]:
        fn = self._functions.get((model, table))
        if fn is None:
            keys = {field: key for key, field in table.fields.items()}
            overrides = {}
            for field in attrs.fields(model):
                if field.name not in keys:
                    overrides[field.name] = override(omit=True)  # its declared default
                else:
                    overrides[field.name] = override(rename=keys[field.name],
                                                     struct_hook=_hook(field.metadata["parse"]))
            fn = make_dict_structure_fn(model, self._converter, _cattrs_forbid_extra_keys=True,
                                        **overrides)  # type: ignore[arg-type]  # field -> override
            self._functions[(model, table)] = fn
        return fn

    def structure(self, raw: Mapping[str, Any], model: type[T], table: KeyTable, path: Path_,
                  doc: Document) -> T | None:
        """``raw`` as a ``model``, or None with every problem reported to ``doc``."""
        moved = [k for k in raw if k in table.moved]
        for k in moved:
            doc.error((*path, k), f"has moved: use tls_config.{k} (see docs/configuration.md)")
        if moved:
            raw = {k: v for k, v in raw.items() if k not in table.moved}
        try:
            value: T = self._function(model, table)(raw, model)
        except ClassValidationError as group:
            found: list[tuple[Path_, str]] = []
            for exc in group.exceptions:
                found.extend(_problems(exc, path, table))
            found.sort(key=lambda item: doc.line(item[0]) or 0)
            for where, message in found:
                doc.error(where, message)
            return None
        return None if moved else value


def _problems(exc: BaseException, path: Path_, table: KeyTable) -> list[tuple[Path_, str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        out = []
        for extra in sorted(exc.extra_fields, key=str):
            if str(extra).lower() in SECRET_KEYS:
                out.append(((*path, extra), INLINE_SECRET))
            else:
                out.append(((*path, extra), f"unknown key (allowed: {', '.join(table.allowed())})"))
        return out
    field = next((note.name for note in getattr(exc, "__notes__", ())
                  if isinstance(note, AttributeValidationNote)), None)
    keys = {f: k for k, f in table.fields.items()}
    name = keys.get(field, field) if field is not None else None
    if isinstance(exc, KeyError) and name is not None:
        return [(path, f"missing required key {name}")]
    where: Path_ = path if name is None else (*path, name)
    if isinstance(exc, NestedError):
        return [((*where, *exc.where), str(exc))]
    if isinstance(exc, ValueError):
        return [(where, str(exc))]
    # Not a parser's message: say what went wrong without showing the value (it may be a secret).
    return [(where, f"invalid value ({type(exc).__name__})")]
