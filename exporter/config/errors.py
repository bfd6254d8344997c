"""One failure type for configuration: every problem with the file, the dotted path and the line."""

from __future__ import annotations

from dataclasses import dataclass

Path_ = tuple[str | int, ...]


class ConfigError(Exception):
    """All problems found in one configuration, each with its location."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class ConfigIssue:
    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def dotted(path: Path_) -> str:
    """("checks", 0, "url") as checks[0].url, the form every error message uses."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out
