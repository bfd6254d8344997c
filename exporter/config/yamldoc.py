"""YAML with a line for every value and duplicate keys refused.

PyYAML silently keeps the last of two equal keys and forgets where each value was; this
composes the node tree itself so that every later error can name its line.
"""

from __future__ import annotations

from typing import Any

import yaml

from exporter.config.errors import ConfigIssue, Path_, dotted


class Document:
    """A plain Python value tree plus the line of every path in it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.issues: list[ConfigIssue] = []
        self.nodes = 0

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of the nearest mapping above it that has one."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line:
                return line
        return None

    def error(self, path: Path_, message: str) -> None:
        self.issues.append(ConfigIssue(self.source, self.line(path), dotted(path), message))


class _TooLarge(Exception):
    """The document expands past MAX_NODES (an alias bomb, or simply far too big)."""


MAX_NODES = 200_000  # a config with thousands of checks stays far below this
# The largest config file read (docs/security.md, case 8): far above any real config (10,000
# checks take about 1 MiB) and small enough that a reload parses in seconds, not minutes.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _build(node: yaml.Node, path: Path_, doc: Document, constructor: yaml.SafeLoader) -> Any:
    doc.nodes += 1
    if doc.nodes > MAX_NODES:
        raise _TooLarge
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        constructor.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                doc.lines[path] = key_node.start_mark.line + 1
                doc.error(path, "mapping keys must be plain strings")
                continue
            key = str(constructor.construct_scalar(key_node))
            child = (*path, key)
            if key in result:
                doc.lines[child] = key_node.start_mark.line + 1
                doc.error(child, "duplicate key")
                continue
            result[key] = _build(value_node, child, doc, constructor)
            doc.lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, stopping once the document holds more than MAX_NODES nodes as
    written: without it PyYAML composes the whole node graph (a gigabyte and most of a minute
    for 4 MiB of ``[1,1,...]``) before _build could count a single value."""

    composed = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Values only, as _build counts them: a mapping's keys are composed with index None.
        if not (isinstance(parent, yaml.MappingNode) and index is None):
            self.composed += 1
        if self.composed > MAX_NODES:
            raise _TooLarge
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def parse_yaml(text: str, source: str) -> tuple[Any, Document]:
    doc = Document(source)
    loader = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return {}, doc
        return _build(node, (), doc, loader), doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        doc.issues.append(ConfigIssue(source, line, "", f"invalid YAML: {problem}"))
    except RecursionError:
        doc.issues.append(ConfigIssue(source, None, "", "invalid YAML: nested too deeply"))
    except _TooLarge:
        # Only blame aliases when the document has some (an anchor is how they start).
        why = (" once aliases are expanded" if "&" in text and "*" in text else "")
        doc.issues.append(ConfigIssue(source, None, "", f"too large: more than {MAX_NODES} "
                                                        f"values{why}"))
    finally:
        if loader is not None:
            loader.dispose()
    return None, doc
