"""pyproject's runtime dependencies are exactly the third-party distributions exporter/ imports.

Every import in exporter/ (top of module or inside a function, plain or ``from``) is read with
ast; its top-level name is mapped to the distribution that provides it through the installed
metadata (importlib.metadata.packages_distributions). Imports under ``if TYPE_CHECKING:``
count too: they need the distribution for type checking only, and every such import here is
also made at run time somewhere.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "exporter"


def imported_top_names(root: Path) -> dict[str, set[str]]:
    """Top-level module name -> the files importing it (absolute imports only)."""
    names: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module]
            else:
                continue
            for name in found:
                names.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return names


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirement = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
    out = set()
    for spec in project["dependencies"]:
        match = requirement.match(spec)
        assert match, spec
        out.add(normalise(match.group(1)))
    return out


def third_party_imports() -> dict[str, set[str]]:
    """Distribution -> files, for every import that is neither ours nor the standard library."""
    providers = packages_distributions()
    out: dict[str, set[str]] = {}
    for name, files in imported_top_names(PACKAGE).items():
        if name == "exporter" or name in sys.stdlib_module_names or name == "__future__":
            continue
        dists = providers.get(name)
        assert dists, f"import {name!r} ({', '.join(sorted(files))}) comes from no installed " \
                      "distribution"
        for dist in dists:
            out.setdefault(normalise(dist), set()).update(files)
    return out


def test_every_third_party_import_is_declared() -> None:
    undeclared = {d: sorted(f) for d, f in third_party_imports().items() if d not in declared()}
    assert not undeclared, f"imported by exporter/ but not in pyproject dependencies: {undeclared}"


def test_every_declared_dependency_is_imported() -> None:
    unused = declared() - set(third_party_imports())
    assert not unused, f"in pyproject dependencies but never imported by exporter/: {unused}"


def test_the_import_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("import os\n\ndef f():\n    import yaml.nodes\n"
                                   "    from aiohttp import web\n    from . import x\n")
    assert imported_top_names(tmp_path) == {"os": {"m.py"}, "yaml": {"m.py"},
                                            "aiohttp": {"m.py"}}
